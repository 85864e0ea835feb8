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
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from saliency_jax import data as data_lib
from saliency_jax import io_utils
from saliency_jax import saliency
from saliency_jax.experiments import common
from saliency_jax.metrics import stats
from saliency_jax.report import localization_report
from saliency_jax.saliency import postprocess

EXPERIMENT = "localization"
MEAN_MASK = "mean_training_mask"
# Control maps (Arun et al. 2021; Adebayo et al. 2018), in report order.
CONTROLS = ("random", "edge", "center_prior", MEAN_MASK)
ALPHA = 0.05


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Scores every method and control on the test positives; see module doc."""
  images_np = common.evaluation_images(config, workdir=workdir)
  in_channels = images_np["image"].shape[-1]
  model, training = common.trained_model(config, workdir, in_channels=in_channels)
  explainee = saliency.from_model(model)
  images = jnp.asarray(images_np["image"])
  masks = jnp.asarray(images_np["mask"])
  ids = [str(i) for i in images_np["id"]]
  targets = (jnp.asarray(images_np["label"]) if config.targets == "true"
             else common.predicted_classes(explainee, images))
  key = jax.random.fold_in(jax.random.key(config.seed), common.SALIENCY_KEY)
  names = list(config.methods) + list(config.controls)
  progress = common.Progress(EXPERIMENT, len(names) * len(ids))
  maps_dir = os.path.join(workdir, "maps")
  examples: dict[str, np.ndarray] = {}
  prior = None
  for m, name in enumerate(names):
    path = os.path.join(maps_dir, f"{name}.npy")
    if common.has_part(workdir, f"{EXPERIMENT}-{name}"):
      progress.update(len(ids), f"{name} done earlier, skipped")
      examples[name] = np.load(path)
      continue
    if name == MEAN_MASK and prior is None:
      prior, _ = mean_training_mask(config)
    maps = _maps(name, explainee, images, targets, config,
                 key=jax.random.fold_in(key, m), prior=prior)
    scores = common.localization_scores(maps, masks, config.localization)
    part = common.rows(config, experiment=EXPERIMENT, stage=0, method=name,
                       image_ids=ids, scores=scores)
    examples[name] = np.asarray(maps[:config.report.example_images])
    os.makedirs(maps_dir, exist_ok=True)
    np.save(path, examples[name])
    common.write_part(workdir, f"{EXPERIMENT}-{name}", part)
    progress.update(len(ids), name)

  all_rows = common.write_results(workdir, [f"{EXPERIMENT}-{n}" for n in names])
  summary = _summarize(config, all_rows, training, ids)
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  localization_report.write(workdir, config, summary, examples, images_np)
  return summary


def mean_training_mask(config: ml_collections.ConfigDict) -> tuple[np.ndarray, int]:
  r"""Mean of the training split's masks over its positives (the average box).

  :math:`\bar M = \frac{1}{|P|} \sum_{i \in P} M_i` over the training
  positives P (label 1 with a box or mask pixel, as
  ``common.evaluation_images`` selects test positives). Arun et al. (2021)
  used it as the baseline a saliency map should beat.

  Returns:
    (mean mask (H, W) float32 in [0, 1], number of positives averaged).
  """
  train = data_lib.load(config, "train")
  positive = (train["label"] == 1) & train["mask"].any(axis=(1, 2))
  if not positive.any():
    raise ValueError(f"config.dataset={config.dataset!r}: the training split "
                     "has no positive image with a box or mask, so there is "
                     f"no {MEAN_MASK}; drop it from config.controls")
  mean = train["mask"][positive].mean(axis=0, dtype=np.float64)
  return mean.astype(np.float32), int(positive.sum())


def _maps(name: str, explainee: saliency.Explainee, images: jax.Array,
          targets: jax.Array, config: ml_collections.ConfigDict, *,
          key: jax.Array, prior: np.ndarray | None) -> jax.Array:
  """Post-processed maps (N, H, W) of a method or a control."""
  if name != MEAN_MASK:
    return common.saliency_maps(explainee, images, targets, name, config, key=key,
                                per_image=common.segments_for(name, np.asarray(images)))
  # center_prior returns the given prior (resized to the images if needed).
  raw = saliency.explain(explainee, images, targets, method="center_prior",
                         prior=jnp.asarray(prior))
  return jax.jit(jax.vmap(postprocess.postprocess))(raw)


# ---------------------------------------------------------------- summary ---

def _summarize(config, all_rows, training, ids) -> dict[str, Any]:
  seed = common.seed_for(config, common.STATS_KEY)
  aggregates = common.aggregate(all_rows, seed=seed,
                                num_resamples=config.bootstrap_resamples)
  means = {(a["method"], a["metric"]): a["mean"] for a in aggregates}
  per_image = _per_image(all_rows, ids)
  comparisons = {metric: compare_to_controls(
      {n: per_image[n, metric] for n in config.methods},
      {n: per_image[n, metric] for n in config.controls},
      {n: means[n, metric] for n in list(config.methods) + list(config.controls)})
                 for metric in config.localization}
  primary = comparisons[config.primary_metric]
  return {
      "experiment": EXPERIMENT,
      "model": config.model, "width": config.width, "dataset": config.dataset,
      "data": data_lib.provenance(config),
      "image_size": config.image_size, "seed": config.seed,
      "targets": config.targets, "num_images": len(ids),
      "num_images_requested": config.num_images, "preset": config.preset,
      "methods": list(config.methods), "controls": list(config.controls),
      "localization": list(config.localization),
      "primary_metric": config.primary_metric, "alpha": ALPHA,
      "training": training,
      "better_than_controls": {m: primary[m]["better_than_controls"]
                               for m in config.methods},
      "comparisons": comparisons,
      "aggregates": aggregates,
  }


def _per_image(all_rows, ids) -> dict[tuple[str, str], np.ndarray]:
  """(name, metric) -> scores in the order of ``ids`` (NaN where missing)."""
  position = {image_id: i for i, image_id in enumerate(ids)}
  out: dict[tuple[str, str], np.ndarray] = {}
  for r in all_rows:
    values = out.setdefault((r["method"], r["metric"]), np.full(len(ids), np.nan))
    values[position[r["image_id"]]] = r["value"]
  return out


def compare_to_controls(methods: dict[str, np.ndarray],
                        controls: dict[str, np.ndarray],
                        means: dict[str, float]) -> dict[str, dict[str, Any]]:
  """Each method against the best control: beats every control, Wilcoxon, Holm.

  The family is the M comparisons method vs best control (not every pair of
  maps), so Holm adjusts over M p-values. A method is better than the
  controls when its mean exceeds every control's mean and the two-sided
  paired Wilcoxon p, Holm-adjusted, is below ``ALPHA``.

  Args:
    methods: method -> per-image scores (same image order everywhere).
    controls: control -> per-image scores.
    means: name -> mean score (NaNs dropped), for methods and controls.

  Returns:
    method -> ``best_control``, ``best_control_mean``, ``mean``,
    ``controls_beaten`` (names), ``beats_every_control``, ``statistic``,
    ``p``, ``p_holm``, ``better_than_controls``.
  """
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
        # NaN p compares False: an untestable method is not called better.
        "better_than_controls": bool(beats_all and p_holm < ALPHA),
    }
  return out
