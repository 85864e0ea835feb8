"""Shortcut learning: do post-hoc maps reveal a spurious signal the model uses?

Adebayo et al. (ICLR 2022, "Post hoc explanations may be ineffective for
detecting unknown spurious correlation") plant a signal that co-occurs with
the label, confirm the model relies on it, and ask whether the maps show it.
Here the signal is a laterality-tag-like 'L' in a random corner of the
synthetic phantoms (``synthetic.phantom(shortcut=p)``: on a positive with
probability p, on a negative otherwise); the dataset stores its exact pixels
(``marker_mask``) and the opacities' (``opacity_mask``).

Two models are trained with the same seed (same initialization, same batch
order): ``shortcut`` on the data with the marker, ``clean`` on the same
phantoms without it. Then:

1. *Does the model use the marker?* Test accuracy and AUC of both models on
   the test split as drawn, with the marker removed (the same phantoms drawn
   with ``shortcut=None``) and flipped (drawn with rate 1 - p: the
   association reversed, the marker at the same corner of each image). The
   shortcut model *uses the marker* when its accuracy as drawn minus flipped
   (paired over the test images) has a 95% bootstrap interval above 0.
2. *Where do the maps put their mass?* Every method of ``config.methods`` and
   every control explains, under both models, the evaluated test positives
   that carry the marker. Each post-processed map ``s`` (|.|, channel sum,
   99th percentile clip, [0, 1], as every experiment) gets
   ``mass(M) = sum(s * M) / sum(s)`` on the marker mask and on the opacity
   mask, the same divided by the mask's area share ``|M| / (H W)`` (1 =
   chance; Arras et al.'s relevance mass accuracy, normalized), and the
   pointing game on the marker (``metrics.localization.pointing_game`` with
   ``config.metric_options.pointing_game``).
3. *Would a reader notice?* The detection AUROC of a method is the
   probability that the marker mass of the shortcut model's map of a random
   evaluated image exceeds that of the clean model's map of another random
   evaluated image (ties count 1/2): with ``a_i``, ``b_j`` the two models'
   marker masses on images ``i, j = 1..n``,
   ``AUROC = 1/n^2 sum_i sum_j [a_i > b_j] + 1/2 [a_i = b_j]``. 0.5: the maps
   cannot tell the models apart; 1: every shortcut map puts more mass on the
   marker than every clean map.

A method *reveals the shortcut* when its detection AUROC's 95% interval lies
above 0.5 and the shortcut model's normalized marker mass's interval lies
above 1. Intervals: 95% percentile bootstrap over the evaluated images
(``config.bootstrap_resamples``, seed from ``rng.STATS``). A method whose
logits or maps were not finite is INVALID (never a verdict); an image whose
map sums to 0 has no mass (NaN), excluded and counted.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import results
from saliency_jax import rng
from saliency_jax import saliency
from saliency_jax.data import synthetic
from saliency_jax.experiments import common
from saliency_jax.experiments import runner
from saliency_jax.metrics import classification
from saliency_jax.metrics import localization as localization_metrics
from saliency_jax.metrics import stats
from saliency_jax.report import shortcut_report

EXPERIMENT = "shortcut"
CONTROLS = ("random", "edge", "center_prior", "random_cam")
# The two training runs (workdir/models/<tag>), in the order of the states.
MODELS = ("shortcut", "clean")
# Test-split renderings of the accuracy check.
VARIANTS = ("as_drawn", "removed", "flipped")
# Per-image map scores (summary keys), each per model.
SCORES = ("marker_mass", "marker_mass_normalized", "opacity_mass",
          "opacity_mass_normalized", "pointing_game_marker")
REVEALS, MISSES = "REVEALS", "MISSES"
# Rows of results.csv: the runner's localization metrics against the marker.
ROW_METRICS = ("relevance_mass_accuracy", "pointing_game")


def validate(config: ml_collections.ConfigDict) -> None:
  """The keys this experiment needs: synthetic data with a marker rate, controls."""
  common.check_controls(config, CONTROLS)
  if config.dataset != "synthetic_cxr":
    raise errors.ConfigError(f"config.dataset={config.dataset!r}: the shortcut study "
                             "draws its marker on the phantoms; expected 'synthetic_cxr'")
  rate = config.synthetic.shortcut
  if rate is None or not 0.5 < rate <= 1.0:
    raise errors.ConfigError(f"config.synthetic.shortcut={rate!r}: expected the "
                             "marker's rate with the positive label in (0.5, 1] "
                             "(0.5 or less is no shortcut to learn)")
  for key in ("trained_dir", "model_weights", "init_from"):
    if config.get(key):
      raise errors.ConfigError(f"config.{key}={config.get(key)!r}: the shortcut "
                               "study trains both of its models itself; unset it")


# ------------------------------------------------------------------ data ---

def clean_overrides() -> dict[str, Any]:
  """The clean model's training data: the same phantoms without the marker."""
  return {"synthetic": {"shortcut": None}}


def accuracy_variants(config: ml_collections.ConfigDict) -> dict[str, dict[str, np.ndarray]]:
  """The test split drawn as in the data, without the marker and flipped.

  ``removed``: ``shortcut=None`` (the same patients and findings, no
  marker); ``flipped``: rate ``1 - p`` (the same draw per image decides,
  so at p = 1 exactly the negatives carry it).
  """
  s = config.synthetic
  start, count = synthetic.split_ranges(s.num_train, s.num_validation,
                                        s.num_test)["test"]
  rates = {"as_drawn": s.shortcut, "removed": None, "flipped": 1.0 - s.shortcut}
  return {name: synthetic.generate(s.seed, start, count, image_size=config.image_size,
                                   prevalence=s.prevalence, shortcut=rate)
          for name, rate in rates.items()}


def marked_positives(config: ml_collections.ConfigDict,
                     workdir: str) -> tuple[dict[str, np.ndarray], int]:
  """The evaluated test positives (``common.evaluation_images``) that carry
  the marker, and how many chosen positives had none."""
  images = common.evaluation_images(config, workdir=workdir)
  keep = images["marker_mask"].any(axis=(1, 2))
  if keep.sum() < 2:
    raise errors.ConfigError(
        f"config.synthetic.shortcut={config.synthetic.shortcut!r}: {int(keep.sum())} "
        f"of the {keep.size} evaluated test positives carry the marker; the study "
        "needs at least 2 (raise config.num_images or the rate)")
  return {k: v[keep] for k, v in images.items()}, int((~keep).sum())


# ---------------------------------------------------------------- scores ---

def mass(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
  r"""Share of each map's total on its mask: :math:`\sum_p s_p M_p / \sum_p s_p`.

  Args:
    maps: (..., H, W) non-negative maps.
    masks: (..., H, W) bool, broadcast against ``maps``.

  Returns:
    (...) float64; NaN where a map sums to 0 or a mask is empty.
  """
  maps = np.asarray(maps, np.float64)
  masks = np.broadcast_to(np.asarray(masks, bool), maps.shape)
  total = maps.sum(axis=(-2, -1))
  inside = (maps * masks).sum(axis=(-2, -1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where((total > 0) & masks.any(axis=(-2, -1)), inside / total, np.nan)


def area_share(masks: np.ndarray) -> np.ndarray:
  """:math:`|M| / (H W)`: the mass a uniform map would put on the mask."""
  return np.asarray(masks, bool).mean(axis=(-2, -1), dtype=np.float64)


def map_scores(maps: np.ndarray, marker: np.ndarray, opacity: np.ndarray,
               tolerance: int) -> dict[str, np.ndarray]:
  """Per-image scores of post-processed maps (S models, N, H, W).

  Returns:
    ``SCORES`` -> (S, N): masses on the marker and opacity masks, the same
    divided by the mask's area share, the pointing game on the marker.
  """
  scores = {}
  for name, masks in (("marker", marker), ("opacity", opacity)):
    m = mass(maps, masks[None])
    scores[f"{name}_mass"] = m
    scores[f"{name}_mass_normalized"] = m / area_share(masks)[None]
  point = jax.vmap(jax.vmap(lambda s, k: localization_metrics.pointing_game(
      s, k, tolerance=tolerance)), in_axes=(0, None))
  scores["pointing_game_marker"] = np.asarray(
      point(jnp.asarray(maps), jnp.asarray(marker)), np.float64)
  return scores


def detection_auroc(shortcut: np.ndarray, clean: np.ndarray) -> float:
  """P(a_i > b_j) + P(a_i = b_j) / 2 over all image pairs (see module doc)."""
  n = len(shortcut)
  return classification.roc_auc(np.concatenate([shortcut, clean]),
                                np.arange(2 * n) < n)


def paired_interval(statistic, columns: tuple[np.ndarray, ...], *, seed: int,
                    num_resamples: int) -> list[float]:
  """(estimate, low, high) of ``statistic(*columns)`` by a bootstrap over images.

  The images are resampled together in every column (paired); an image with
  a NaN in any column is left out first.
  """
  keep = np.all([np.isfinite(c) for c in columns], axis=0)
  kept = [np.asarray(c, np.float64)[keep] for c in columns]
  rows = np.arange(int(keep.sum()), dtype=np.float64)
  return list(stats.bootstrap_ci(
      rows, seed=seed, num_resamples=num_resamples,
      statistic=lambda r: statistic(*(c[r.astype(int)] for c in kept))))


# ------------------------------------------------------------- accuracy ---

@jax.jit
def _positive_probability(explainee: saliency.Explainee, images: jax.Array) -> jax.Array:
  return jax.nn.softmax(jax.vmap(explainee.logits)(images), axis=-1)[:, 1]


def probabilities(explainee: saliency.Explainee, images: np.ndarray,
                  batch_size: int = 64) -> np.ndarray:
  """P(label 1) of every image, ``batch_size`` at a time (one host transfer)."""
  out = [_positive_probability(explainee, jnp.asarray(images[i:i + batch_size]))
         for i in range(0, len(images), batch_size)]
  return np.asarray(jnp.concatenate(out), np.float64)


def accuracy_check(config: ml_collections.ConfigDict,
                   explainees: dict[str, saliency.Explainee],
                   variants: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
  """Accuracy and AUC (with 95% intervals) of each model on each variant, and
  whether the shortcut model uses the marker (module doc, step 1)."""
  seed = rng.integer_seed(config.seed, rng.STATS)
  resamples = config.bootstrap_resamples
  labels = variants["as_drawn"]["label"].astype(bool)
  out: dict[str, Any] = {"models": {}}
  correct = {}
  for model, explainee in explainees.items():
    out["models"][model] = {}
    for variant, data in variants.items():
      p = probabilities(explainee, data["image"])
      hit = ((p >= 0.5) == labels).astype(np.float64)
      finite = np.isfinite(p)
      hit[~finite] = np.nan
      correct[model, variant] = hit
      out["models"][model][variant] = {
          "accuracy": paired_interval(np.mean, (hit,), seed=seed, num_resamples=resamples),
          "auc": paired_interval(lambda q, y: classification.roc_auc(q, y > 0.5),
                                 (np.where(finite, p, np.nan), labels.astype(np.float64)),
                                 seed=seed, num_resamples=resamples),
          "nonfinite": int((~finite).sum()),
          "markers": int(data["marker_mask"].any(axis=(1, 2)).sum()),
      }
  drops = {}
  for variant in ("removed", "flipped"):
    drops[variant] = paired_interval(
        lambda a, b: float(np.mean(a - b)),
        (correct["shortcut", "as_drawn"], correct["shortcut", variant]),
        seed=seed, num_resamples=resamples)
  nonfinite = sum(v["nonfinite"] for m in out["models"].values() for v in m.values())
  low = drops["flipped"][1]
  out.update(num_images=int(labels.size), accuracy_drop=drops,
             uses_marker=None if nonfinite or not np.isfinite(low) else bool(low > 0))
  return out


# ------------------------------------------------------------------- run ---

def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains both models, checks the shortcut is used, scores every map; see module doc."""
  images_np, unmarked = marked_positives(config, workdir)
  in_channels = images_np["image"].shape[-1]
  trained = {
      "shortcut": common.trained_model(config, workdir, tag="shortcut",
                                       in_channels=in_channels),
      "clean": common.trained_model(config, workdir, tag="clean",
                                    in_channels=in_channels, **clean_overrides()),
  }
  explainees = {tag: saliency.from_model(model) for tag, (model, _) in trained.items()}
  usage = accuracy_check(config, explainees, accuracy_variants(config))
  states = [runner.ModelState(name=tag, explainee=explainees[tag],
                              model=f"{config.model}-{tag}", seed=config.seed)
            for tag in MODELS]
  n = len(images_np["id"])
  # The runner scores its maps against the marker (rows of results.csv) and
  # keeps every map as an example, for the scores below.
  scored = ml_collections.ConfigDict(config.to_dict())
  scored.localization = ROW_METRICS
  scored.report.example_images = n
  outcome = runner.run_methods(
      scored, workdir, experiment=EXPERIMENT,
      images_np={**images_np, "mask": images_np["marker_mask"]}, states=states,
      names=list(config.methods) + list(config.controls))
  summary = summarize(scored, workdir, outcome, images_np, usage, unmarked,
                      {tag: t for tag, (_, t) in trained.items()})
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  shortcut_report.write(workdir, config, summary, outcome.examples, images_np)
  return summary


def tolerance_of(config: ml_collections.ConfigDict) -> int:
  return int(common.resolved_metric_options(
      ["pointing_game"], config.get("metric_options"))["pointing_game"]["tolerance"])


def summarize(config: ml_collections.ConfigDict, workdir: str,
              outcome: runner.Outcome, images_np: dict[str, np.ndarray],
              usage: dict[str, Any], unmarked: int,
              training: dict[str, Any]) -> dict[str, Any]:
  """summary.json: the header, the accuracy check (:func:`accuracy_check`),
  per map each of ``SCORES`` per model as (mean, low, high), the excluded
  counts, the detection AUROC (estimate, low, high) and the verdict."""
  seed = rng.integer_seed(config.seed, rng.STATS)
  resamples = config.bootstrap_resamples
  tolerance = tolerance_of(config)
  names = list(config.methods) + list(config.controls)
  ids = [str(i) for i in images_np["id"]]
  per_map = {}
  for name in names:
    bad = unscored(outcome, config, name, ids)
    scores = map_scores(np.asarray(outcome.examples[name], np.float64),
                        images_np["marker_mask"], images_np["opacity_mask"], tolerance)
    # Images whose logits or raw maps were not finite (the runner's NaN rows).
    scores = {k: np.where(bad, np.nan, v) for k, v in scores.items()}
    entry: dict[str, Any] = {
        k: {tag: paired_interval(np.mean, (v[s],), seed=seed, num_resamples=resamples)
            for s, tag in enumerate(MODELS)} for k, v in scores.items()}
    entry["excluded"] = {k: {tag: int(np.isnan(v[s]).sum()) for s, tag in enumerate(MODELS)}
                         for k, v in scores.items()}
    entry["detection_auroc"] = paired_interval(
        detection_auroc, (scores["marker_mass"][0], scores["marker_mass"][1]),
        seed=seed, num_resamples=resamples)
    entry["invalid"] = outcome.invalid.get(name)
    entry["verdict"] = verdict(entry)
    per_map[name] = entry
  return {
      **runner.summary_header(config, EXPERIMENT, outcome, len(images_np["id"]), workdir),
      "controls": list(config.controls),
      "shortcut_rate": config.synthetic.shortcut,
      "evaluated_positives_without_marker": unmarked,
      "pointing_tolerance": tolerance,
      "training": training,
      "uses_marker": usage["uses_marker"],
      "accuracy": usage,
      "maps": per_map,
      "verdicts": {m: per_map[m]["verdict"] for m in config.methods},
      "reveals": [m for m in config.methods if per_map[m]["verdict"] == REVEALS],
  }


def unscored(outcome: runner.Outcome, config: ml_collections.ConfigDict, name: str,
             ids: list[str]) -> np.ndarray:
  """(models, N) bool: the images whose logits or raw map of ``name`` were not
  finite (the runner's NaN rows; every evaluated image has a marker, so its
  pointing game is NaN for no other reason)."""
  return np.stack([np.isnan(results.values(
      outcome.rows, ids, method=name, metric="pointing_game",
      model=f"{config.model}-{tag}")) for tag in MODELS])


def verdict(entry: dict[str, Any]) -> str:
  """REVEALS / MISSES / INVALID (module doc); INVALID on any non-finite bound."""
  auroc_low = entry["detection_auroc"][1]
  mass_low = entry["marker_mass_normalized"]["shortcut"][1]
  if entry["invalid"] or not (np.isfinite(auroc_low) and np.isfinite(mass_low)):
    return stats.INVALID
  return REVEALS if auroc_low > 0.5 and mass_low > 1.0 else MISSES
