"""Cascading (or independent) model-weight randomization test.

Adebayo et al. (NeurIPS 2018) and Arun et al. (Radiology: AI 2021): re-initialize
the model's blocks top-down, one more per stage, and compare each stage's
maps with the trained model's maps (similarity) and with the boxes
(localization). A method whose maps survive randomization explains the image,
not the model. It passes when its similarity to the original maps at full
randomization falls below the similarity between maps of two different images
from the trained model.

``config.cascade.mode='bottom_up'`` re-initializes the same declared blocks
from the input side first (Hedström et al., "Sanity checks revisited", 2023);
with every block randomized its last stage is the same fully re-initialized
model as the cascade's, so the same verdict applies to it. Beside the
similarities, every stage gets eMPRT against the trained model's maps
(``emprt``: the relative rise of the maps' histogram entropy,
:mod:`saliency_jax.metrics.randomization`) and, with
``config.cascade.smprt.enabled``, each method's sMPRT maps (averaged over
noisy copies of the input) go through the same test as method
``smprt_<method>``.

Every stage uses the same targets (the trained model's predicted classes) and
the same noise key, so stage-to-stage changes come from the weights alone.

Null baselines (``config.null_baselines``; Binder et al., CVPR 2023, show
that noise-like maps pass the top-down cascade) go through the same stages
and comparisons as methods named ``null_<name>``, with their own verdicts
(``summary['null_verdicts']``), never among the methods':

- ``null_noise``: uniform noise (the ``random`` control) drawn with a fresh
  key at every stage, so its stage-to-stage similarity is that of two
  independent noise maps: where a map that ignores model and image sits;
- ``null_random_cam``: RandomCAM, one key (the same random channel weights)
  at every stage, so it changes only as the GradCAM layer's activations do.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import randomization
from saliency_jax import results
from saliency_jax import rng
from saliency_jax import saliency
from saliency_jax import train
from saliency_jax.experiments import common
from saliency_jax.experiments import runner
from saliency_jax.metrics import randomization as metrics_randomization
from saliency_jax.report import cascade_report

EXPERIMENT = "cascade"
MODES = ("cascade", "bottom_up", "independent")
# Modes whose last stage re-initializes every block of the (num_blocks) order,
# where the different-image verdict applies.
VERDICT_MODES = ("cascade", "bottom_up")
# sMPRT's maps: method column 'smprt_<method>' (config.cascade.smprt).
SMPRT_PREFIX = "smprt_"
# A null baseline's method column: 'null_<name>' (config.null_baselines).
NULL_PREFIX = "null_"
# null baseline -> the map it is ('random': uniform noise; see module doc).
NULL_METHODS = {"noise": "random", "random_cam": "random_cam"}


def validate(config: ml_collections.ConfigDict) -> None:
  """The keys only this experiment has (``config.cascade``)."""
  if config.cascade.mode not in MODES:
    raise errors.ConfigError(f"config.cascade.mode={config.cascade.mode!r} is not "
                             f"allowed; expected one of {MODES}")
  if config.cascade.num_blocks is not None and config.cascade.num_blocks < 1:
    raise errors.ConfigError(f"config.cascade.num_blocks={config.cascade.num_blocks}: "
                             "expected None (all blocks) or a positive count")
  _validate_emprt_smprt(config)


def _validate_emprt_smprt(config: ml_collections.ConfigDict) -> None:
  emprt = config.cascade.get("emprt", True)
  if not isinstance(emprt, bool):
    raise errors.ConfigError(f"config.cascade.emprt={emprt!r}: expected True or False")
  smprt = config.cascade.get("smprt") or {}
  unknown = sorted(set(smprt) - {"enabled", "samples", "noise"})
  if unknown:
    raise errors.ConfigError(f"config.cascade.smprt.{unknown[0]}: unknown key; "
                             "expected enabled, samples, noise")
  enabled = smprt.get("enabled", False)
  if not isinstance(enabled, bool):
    raise errors.ConfigError(f"config.cascade.smprt.enabled={enabled!r}: expected "
                             "True or False")
  samples = smprt.get("samples", 50)
  if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
    raise errors.ConfigError(f"config.cascade.smprt.samples={samples!r}: expected a "
                             "positive number of noisy copies (Quantus: 50)")
  noise = smprt.get("noise", 0.1)
  if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
    raise errors.ConfigError(f"config.cascade.smprt.noise={noise!r}: expected a noise "
                             "level >= 0, relative to each image's range (Quantus: 0.1)")


def states(config: ml_collections.ConfigDict, model, in_channels: int
           ) -> tuple[list[runner.ModelState], list[list[str]]]:
  """One state per stage (stage 0 the trained model) and each stage's blocks.

  ``config.cascade.num_blocks`` = n randomizes n blocks of
  ``model.cascade_order`` (top-down, logits first): its first n (the top
  ones) for ``cascade`` and ``independent``, its last n (the n blocks nearest
  the input) for ``bottom_up``; None: every block.
  """
  explainee = saliency.from_model(model)
  fresh_config = ml_collections.ConfigDict(config.to_dict())
  fresh_config.seed = rng.integer_seed(config.seed, rng.FRESH)
  fresh = train.create_model(fresh_config, in_channels=in_channels)
  fresh.eval()
  order = tuple(model.cascade_order)
  if config.cascade.num_blocks is not None:
    n = min(config.cascade.num_blocks, len(order))
    order = order[len(order) - n:] if config.cascade.mode == "bottom_up" else order[:n]
  fresh_state = randomization.reinitialized(model, fresh,
                                            batch_stats=config.cascade.batch_stats)
  stacked, blocks = randomization.stages(explainee.state, fresh_state, order,
                                         mode=config.cascade.mode)
  return [runner.ModelState(name=f"stage{s}", model=config.model, seed=config.seed,
                            stage=s,
                            explainee=explainee.with_state(randomization.unstack(stacked, s)))
          for s in range(len(blocks))], blocks


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the test for every method in ``config.methods``; see module doc."""
  images_np = common.evaluation_images(config, workdir=workdir)
  in_channels = images_np["image"].shape[-1]
  model, training = common.trained_model(config, workdir, in_channels=in_channels)
  stage_states, blocks = states(config, model, in_channels)
  nulls = null_names(config)
  pair_metrics = ("emprt",) if config.cascade.get("emprt", True) else ()
  # Every stage explains the trained model's targets: changes come from the
  # weights. The nulls come after the methods and their sMPRT maps, so that
  # these keep their noise keys (fold_in of the index) with or without
  # nulls; the noise null alone draws a fresh key per stage (the methods'
  # noise is the same at every stage on purpose, the noise null's must not be).
  outcome = runner.run_methods(
      config, workdir, experiment=EXPERIMENT, images_np=images_np,
      states=stage_states, comparisons=[runner.Comparison(s, 0, metrics=pair_metrics)
                                        for s in range(len(stage_states))],
      shared_targets=True, names=list(config.methods) + smprt_names(config) + nulls,
      method_for=lambda name: _method_for(config, name),
      key_per_state=[f"{NULL_PREFIX}noise"])
  summary = _summarize(config, workdir, outcome, blocks, training, len(images_np["id"]))
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  cascade_report.write(workdir, config, summary, outcome.examples, images_np)
  return summary


def null_names(config: ml_collections.ConfigDict) -> list[str]:
  """The method column of each of ``config.null_baselines``: ``null_<name>``."""
  return [f"{NULL_PREFIX}{name}" for name in config.get("null_baselines", ())]


def smprt_names(config: ml_collections.ConfigDict) -> list[str]:
  """``smprt_<method>`` for every method when ``config.cascade.smprt.enabled``."""
  if not (config.cascade.get("smprt") or {}).get("enabled", False):
    return []
  return [f"{SMPRT_PREFIX}{m}" for m in config.methods]


def _method_for(config: ml_collections.ConfigDict, name: str
                ) -> tuple[str, dict[str, Any]]:
  """(method, hyper-parameters) of a method, a null baseline or an sMPRT map
  (``smprt_<method>``: the method averaged over ``config.cascade.smprt``'s
  noisy copies, :func:`metrics.randomization.smoothed`)."""
  if name.startswith(NULL_PREFIX):
    return NULL_METHODS[name[len(NULL_PREFIX):]], {}
  if name.startswith(SMPRT_PREFIX):
    base, smprt = name[len(SMPRT_PREFIX):], config.cascade.get("smprt") or {}
    return (metrics_randomization.smoothed(
        saliency.METHODS[base], int(smprt.get("samples", 50)),
        float(smprt.get("noise", 0.1))), common.method_hparams(config, base))
  return name, common.method_hparams(config, name)


def _summarize(config, workdir, outcome, blocks, training, num_images) -> dict[str, Any]:
  last = len(blocks) - 1

  def scores(method, metric):
    return (results.values(outcome.rows, method=method, stage=last, metric=metric),
            results.values(outcome.rows, method=method,
                           metric=f"{metric}{runner.BASELINE_SUFFIX}"))

  # The cascade and bottom-up end in the same model, every declared block
  # re-initialized (num_blocks None: fully random); an independent stage
  # re-initializes one block, where "passing" would mean nothing.
  cascade = config.cascade.mode in VERDICT_MODES
  metrics = runner.similarity_names(config)
  verdicts = (runner.verdicts(config, outcome, scores, expect="below", rule="mean",
                              metrics=metrics) if cascade else {})
  # The nulls' own verdicts, apart: independent noise is expected to pass,
  # which shows how little passing alone proves (Binder et al. 2023).
  null_verdicts = (runner.verdicts(config, outcome, scores, expect="below",
                                   rule="mean", names=null_names(config),
                                   metrics=metrics) if cascade else {})
  return {
      **runner.summary_header(config, EXPERIMENT, outcome, num_images, workdir),
      "mode": config.cascade.mode, "num_blocks": config.cascade.num_blocks,
      "batch_stats": config.cascade.batch_stats,
      "emprt": ({"bins": 100, "abs": False, "normalise": False,
                 **dict((config.get("metric_options") or {}).get("emprt", {}))}
                if config.cascade.get("emprt", True) else None),
      "smprt": (dict(config.cascade.smprt) if smprt_names(config) else None),
      "smprt_methods": smprt_names(config),
      "stages": [{"stage": s, "randomized_blocks": b} for s, b in enumerate(blocks)],
      "training": training,
      "verdict_metric": config.verdict_metric,
      "verdicts": verdicts,
      "null_baselines": null_names(config),
      "null_verdicts": null_verdicts,
      "aggregates": runner.aggregates(config, outcome.rows),
  }
