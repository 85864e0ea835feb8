"""Localization utility: do a method's maps find the abnormality better than controls?

Arun et al. (Radiology: AI 2021) scored every map against the union mask of
its image's boxes (AUPRC) and compared the methods with baselines that know
nothing about the model; Adebayo et al. (NeurIPS 2018) added model-free
control maps. Here every method in ``config.methods`` and every control in
``config.controls`` is scored with ``config.localization`` on the same test
positives:

- ``random``: uniform noise (keyed), the floor;
- ``edge``: the Sobel magnitude of the image, what an image-only map finds;
- ``center_prior``: a centered Gaussian, the position prior of a chest film;
- ``mean_training_mask``: the mean of the training split's masks over its
  positives, Arun et al.'s "average box" baseline.

A method *localizes better than the controls* when its mean on
``config.primary_metric`` beats every control's and a paired Wilcoxon test
against the best control, Holm-adjusted over the methods, gives p < 0.05.

Every map goes through the same post-processing (|.|, channel sum, 99th
percentile clip, [0, 1]); it keeps the order of a control's pixels (the top
1% tie), so ranking metrics such as AUPRC score the controls as they are.

With ``config.chexlocalize.enabled`` the same maps also go through the
CheXlocalize protocol (Saporta et al. 2022: mIoU and hit rate, thresholds
tuned on the validation split; :mod:`saliency_jax.experiments.chexlocalize`).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from saliency_jax import data as data_lib
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import results
from saliency_jax import saliency
from saliency_jax.experiments import chexlocalize
from saliency_jax.experiments import common
from saliency_jax.experiments import runner
from saliency_jax.metrics import stats
from saliency_jax.report import localization_report

EXPERIMENT = "localization"
MEAN_MASK = "mean_training_mask"
# Control maps (Arun et al. 2021; Adebayo et al. 2018), in report order.
CONTROLS = ("random", "edge", "center_prior", MEAN_MASK)
ALPHA = 0.05


def validate(config: ml_collections.ConfigDict) -> None:
  """The keys only this experiment has (``controls``, ``primary_metric``,
  ``chexlocalize.*``)."""
  common.check_controls(config, CONTROLS)
  chexlocalize.validate(config)
  if config.primary_metric not in config.localization:
    raise errors.ConfigError(
        f"config.primary_metric={config.primary_metric!r} must be one of "
        f"config.localization={tuple(config.localization)}")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Scores every method and control on the test positives; see module doc."""
  images_np = common.evaluation_images(config, workdir=workdir)
  in_channels = images_np["image"].shape[-1]
  model, training = common.trained_model(config, workdir, in_channels=in_channels)
  state = runner.ModelState(name="trained", explainee=saliency.from_model(model),
                            model=config.model, seed=config.seed)

  def method_for(name: str) -> tuple[str, dict[str, Any]]:
    if name != MEAN_MASK:
      return name, common.method_hparams(config, name)
    # center_prior returns the given prior (resized to the images if needed).
    return "center_prior", {"prior": mean_training_mask(config)[0]}

  names = list(config.methods) + list(config.controls)
  protocol = chexlocalize.enabled(config)
  outcome = runner.run_methods(
      config, workdir, experiment=EXPERIMENT, images_np=images_np, states=[state],
      names=names, method_for=method_for, keep_maps=protocol)
  ids = [str(i) for i in images_np["id"]]
  summary = _summarize(config, workdir, outcome, training, ids)
  if protocol:
    summary[chexlocalize.KEY], parts = chexlocalize.run(
        config, workdir, experiment=EXPERIMENT, explainee=state.explainee,
        images_np=images_np, outcome=outcome, names=names, method_for=method_for)
    # results.csv holds every part's rows, the protocol's per-image scores too.
    results.write_results(workdir, [outcome.rows, *parts])
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  examples = {name: maps[0] for name, maps in outcome.examples.items()}
  localization_report.write(workdir, config, summary, examples, images_np)
  return summary


_MASK_CHUNK = 256  # training masks read at once


def mean_training_mask(config: ml_collections.ConfigDict) -> tuple[np.ndarray, int]:
  r"""Mean of the training split's masks over its positives (the average box).

  :math:`\bar M = \frac{1}{|P|} \sum_{i \in P} M_i` over the training
  positives P (label 1 with a box or mask pixel, as
  ``common.evaluation_images`` selects test positives). Arun et al. (2021)
  used it as the baseline a saliency map should beat.

  Returns:
    (mean mask (H, W) float32 in [0, 1], number of positives averaged).
  """
  train = data_lib.source(config, "train")
  index = train.index()
  positive = np.flatnonzero((index.label == 1) & index.annotated)
  if not positive.size:
    raise errors.ConfigError(
        f"config.dataset={config.dataset!r}: the training split has no positive "
        f"image with a box or mask, so there is no {MEAN_MASK}; drop it from "
        "config.controls")
  # In chunks: only masks are decoded, never the whole split's images at once.
  total = np.zeros(train.image_shape[:2], np.float64)
  for start in range(0, positive.size, _MASK_CHUNK):
    masks = train.read(positive[start:start + _MASK_CHUNK], fields=("mask",))["mask"]
    total += masks.sum(axis=0, dtype=np.float64)
  return (total / positive.size).astype(np.float32), int(positive.size)


# ---------------------------------------------------------------- summary ---

def _summarize(config, workdir, outcome, training, ids) -> dict[str, Any]:
  aggregates = runner.aggregates(config, outcome.rows)
  means = {(a["method"], a["metric"]): a["mean"] for a in aggregates}
  names = list(config.methods) + list(config.controls)

  def per_image(name, metric):
    return results.values(outcome.rows, ids, method=name, metric=metric)

  comparisons = {metric: compare_to_controls(
      {n: per_image(n, metric) for n in config.methods},
      {n: per_image(n, metric) for n in config.controls},
      {n: means[n, metric] for n in names}, invalid=outcome.invalid)
                 for metric in config.localization}
  primary = comparisons[config.primary_metric]
  return {
      **runner.summary_header(config, EXPERIMENT, outcome, len(ids), workdir),
      "controls": list(config.controls),
      "primary_metric": config.primary_metric, "alpha": ALPHA,
      "training": training,
      "better_than_controls": {m: primary[m]["better_than_controls"]
                               for m in config.methods},
      "verdicts": {m: primary[m]["verdict"] for m in config.methods},
      "comparisons": comparisons,
      "aggregates": aggregates,
  }


def compare_to_controls(methods: dict[str, np.ndarray],
                        controls: dict[str, np.ndarray],
                        means: dict[str, float], *,
                        invalid: dict[str, str] | None = None
                        ) -> dict[str, dict[str, Any]]:
  """Each method against the best control: beats every control, Wilcoxon, Holm.

  The family is the M comparisons method vs best control (not every pair of
  maps), so Holm adjusts over M p-values. A method is better than the
  controls when its mean exceeds every control's mean and the two-sided
  paired Wilcoxon p, Holm-adjusted, is below ``ALPHA``.

  Args:
    methods: method -> per-image scores (same image order everywhere).
    controls: control -> per-image scores.
    means: name -> mean score (NaNs dropped), for methods and controls.
    invalid: name -> why its maps cannot be trusted (non-finite); such a
      method, and every method when a control is invalid, is INVALID.

  Returns:
    method -> ``best_control``, ``best_control_mean``, ``mean``,
    ``controls_beaten`` (names), ``beats_every_control``, ``statistic``,
    ``p``, ``p_holm``, ``better_than_controls``, ``verdict`` ('PASS',
    'FAIL' or 'INVALID'), ``invalid`` (the reason or None).
  """
  invalid = invalid or {}
  broken = [f"control {c}: {invalid[c]}" for c in controls if c in invalid]
  finite = {c: means[c] for c in controls if np.isfinite(means[c])}
  best = max(finite, key=finite.get) if finite else None
  tests = {m: (stats.paired_wilcoxon(v, controls[best]) if best else
               (float("nan"), float("nan"))) for m, v in methods.items()}
  adjusted = stats.holm(np.array([p for _, p in tests.values()], np.float64))
  out = {}
  for (method, (statistic, p)), p_holm in zip(tests.items(), adjusted):
    beaten = [c for c in controls if means[method] > means[c]]
    beats_all = bool(finite) and len(beaten) == len(controls)
    out[method] = {
        "best_control": best,
        "best_control_mean": finite.get(best, float("nan")),
        "mean": means[method], "controls_beaten": beaten,
        "beats_every_control": beats_all, "statistic": statistic, "p": p,
        "p_holm": float(p_holm),
    }
    reason = invalid.get(method) or "; ".join(broken) or None
    # NaN p compares False: an untestable method is not called better.
    better = bool(beats_all and p_holm < ALPHA and not reason)
    out[method].update(better_than_controls=better, passed=better, invalid=reason,
                       verdict=(stats.INVALID if reason else
                                stats.PASS if better else stats.FAIL))
  return out
