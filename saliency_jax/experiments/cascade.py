"""Cascading (or independent) model-weight randomization test.

Adebayo et al. (NeurIPS 2018) and Arun et al. (Radiology: AI 2021): re-initialize
the model's blocks top-down, one more per stage, and compare each stage's
maps with the trained model's maps (similarity) and with the boxes
(localization). A method whose maps survive randomization explains the image,
not the model. It passes when its similarity to the original maps at full
randomization falls below the similarity between maps of two different images
from the trained model.

Every stage uses the same targets (the trained model's predicted classes) and
the same noise key, so stage-to-stage changes come from the weights alone.
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
from saliency_jax.report import cascade_report

EXPERIMENT = "cascade"
MODES = ("cascade", "independent")


def validate(config: ml_collections.ConfigDict) -> None:
  """The keys only this experiment has (``config.cascade``)."""
  if config.cascade.mode not in MODES:
    raise errors.ConfigError(f"config.cascade.mode={config.cascade.mode!r} is not "
                             f"allowed; expected one of {MODES}")
  if config.cascade.num_blocks is not None and config.cascade.num_blocks < 1:
    raise errors.ConfigError(f"config.cascade.num_blocks={config.cascade.num_blocks}: "
                             "expected None (all blocks) or a positive count")


def states(config: ml_collections.ConfigDict, model, in_channels: int
           ) -> tuple[list[runner.ModelState], list[list[str]]]:
  """One state per stage (stage 0 the trained model) and each stage's blocks."""
  explainee = saliency.from_model(model)
  fresh_config = ml_collections.ConfigDict(config.to_dict())
  fresh_config.seed = rng.integer_seed(config.seed, rng.FRESH)
  fresh = train.create_model(fresh_config, in_channels=in_channels)
  fresh.eval()
  order = tuple(model.cascade_order)
  if config.cascade.num_blocks is not None:
    order = order[:config.cascade.num_blocks]
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
  # Every stage explains the trained model's targets: changes come from the weights.
  outcome = runner.run_methods(
      config, workdir, experiment=EXPERIMENT, images_np=images_np,
      states=stage_states, comparisons=[runner.Comparison(s, 0)
                                        for s in range(len(stage_states))],
      shared_targets=True)
  summary = _summarize(config, workdir, outcome, blocks, training, len(images_np["id"]))
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  cascade_report.write(workdir, config, summary, outcome.examples, images_np)
  return summary


def _summarize(config, workdir, outcome, blocks, training, num_images) -> dict[str, Any]:
  last = len(blocks) - 1

  def scores(method, metric):
    return (results.values(outcome.rows, method=method, stage=last, metric=metric),
            results.values(outcome.rows, method=method,
                           metric=f"{metric}{runner.BASELINE_SUFFIX}"))

  # Only the full cascade ends in a fully randomized model; an independent
  # stage re-initializes one block, where "passing" would mean nothing.
  verdicts = (runner.verdicts(config, outcome, scores, expect="below", rule="mean")
              if config.cascade.mode == "cascade" else {})
  return {
      **runner.summary_header(config, EXPERIMENT, outcome, num_images, workdir),
      "mode": config.cascade.mode, "num_blocks": config.cascade.num_blocks,
      "batch_stats": config.cascade.batch_stats,
      "stages": [{"stage": s, "randomized_blocks": b} for s, b in enumerate(blocks)],
      "training": training,
      "verdict_metric": config.verdict_metric,
      "verdicts": verdicts,
      "aggregates": runner.aggregates(config, outcome.rows),
  }
