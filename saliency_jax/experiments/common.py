"""What every experiment shares: trained models, evaluation images, maps, scores, results.

Results are long-format rows (DESIGN.md): ``experiment, dataset, model, seed,
stage, method, image_id, metric, value``. Each finished unit of work (a
method, a model) is written atomically as one part file under
``workdir/parts/``; a rerun skips the parts that exist, and ``results.csv``
is assembled from them.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import data as data_lib
from saliency_jax import io_utils
from saliency_jax import saliency
from saliency_jax import train
from saliency_jax.metrics import localization
from saliency_jax.metrics import similarity
from saliency_jax.metrics import stats
from saliency_jax.saliency import postprocess
from saliency_jax.saliency import presets
from saliency_jax.saliency import xrai as xrai_lib

FIELDS = ("experiment", "dataset", "model", "seed", "stage", "method",
          "image_id", "metric", "value")
# Similarity metrics computed on the host (not jittable).
_HOST_SIMILARITY = ("hog_spearman",)
# Sub-keys of the config seed used by experiments (train.py uses 0-3).
SALIENCY_KEY, FRESH_KEY, SUBSET_KEY, STATS_KEY = 10, 11, 12, 13


def seed_for(config: ml_collections.ConfigDict, stream: int) -> int:
  """An integer seed for NumPy-side randomness, derived from the config seed."""
  return int(np.random.SeedSequence([config.seed, stream]).generate_state(1)[0])


# ----------------------------------------------------------------- models ---

def trained_model(config: ml_collections.ConfigDict, workdir: str, *,
                  tag: str = "trained", in_channels: int = 1,
                  **overrides: Any) -> tuple[nnx.Module, dict[str, Any]]:
  """The model of ``config`` (with ``overrides``) trained into ``workdir/models/tag``.

  Trains (resuming from any checkpoint there) unless the training summary
  exists; ``config.trained_dir`` points at an existing training run instead.
  ``config.model_weights`` (imported weights, evaluated as they are) and
  ``config.init_from`` (where training starts) concern the 'trained' model
  only: replicates, the other architecture and the randomized-label model
  are trained here from scratch.

  Returns:
    (model in eval mode, training summary).
  """
  # 'auto' fixed once, so every model of the run takes the same input map.
  config = ml_collections.ConfigDict(config_lib.resolve(config).to_dict())
  if tag != "trained":
    config.update(model_weights=None, init_from=None)
  config.update(overrides)
  # A study runs several tests in sub-folders; they share its models.
  models_dir = config.get("models_dir") or os.path.join(workdir, "models")
  directory = (config.trained_dir if config.get("trained_dir") and tag == "trained"
               else os.path.join(models_dir, tag))
  summary_path = os.path.join(directory, train.SUMMARY)
  if not os.path.exists(summary_path):
    if config.get("trained_dir") and tag == "trained":
      raise FileNotFoundError(f"config.trained_dir={directory!r}: no "
                              f"{train.SUMMARY} there (train it first)")
    logging.info("training %s (%s) into %s", tag, config.model, directory)
    train.train_and_evaluate(config, directory)
  summary = io_utils.read_json(summary_path)
  return train.restore_model(config, directory, in_channels), summary


# ----------------------------------------------------------------- images ---

def evaluation_images(config: ml_collections.ConfigDict, split: str = "test", *,
                      workdir: str | None = None) -> dict[str, np.ndarray]:
  """``config.num_images`` random positive images of ``split`` (keyed subset).

  Arun et al. evaluated 100 random positive test images. A positive here is
  an image with at least one box (or mask pixel). With ``workdir`` the chosen
  images are also listed in its ``images.csv`` (:func:`write_image_table`).
  """
  data = data_lib.load(config, split)
  positive = np.flatnonzero((data["label"] == 1) & data["mask"].any(axis=(1, 2)))
  if positive.size == 0:
    raise ValueError(f"config.dataset={config.dataset!r}: split {split!r} has "
                     "no positive image with a box or mask")
  count = min(config.num_images, positive.size)
  if count < config.num_images:
    logging.warning("config.num_images=%d but split %s has only %d positives; "
                    "using %d", config.num_images, split, positive.size, count)
  rng = np.random.default_rng(seed_for(config, SUBSET_KEY))
  chosen = np.sort(rng.choice(positive, size=count, replace=False))
  images = {k: v[chosen] for k, v in data.items()}
  if workdir is not None:
    write_image_table(workdir, images)
  return images


IMAGE_FIELDS = ("label", "num_boxes", "mask_fraction", "patient_id", "view_position",
                "sex", "age", "class")


def write_image_table(workdir: str, images: dict[str, np.ndarray]) -> None:
  """``images.csv``: one row per evaluated image with what subgroup analyses join on.

  ``image_id`` matches ``results.csv``; the real datasets add the DICOM
  header fields (view position, sex, age) and RSNA's class.
  """
  mask_fraction = images["mask"].reshape(len(images["mask"]), -1).mean(axis=1)
  columns = {"image_id": images["id"], "mask_fraction": mask_fraction,
             **{k: images[k] for k in IMAGE_FIELDS if k in images}}
  names = ["image_id"] + [k for k in IMAGE_FIELDS if k in columns]
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(names)
  for row in zip(*(columns[k] for k in names)):
    writer.writerow([f"{v:.6g}" if isinstance(v, (float, np.floating)) else v for v in row])
  io_utils.write_text(os.path.join(workdir, "images.csv"), buffer.getvalue())


@jax.jit
def predicted_classes(explainee: saliency.Explainee, images: jax.Array) -> jax.Array:
  """argmax of the logits: both papers explained the predicted class."""
  return jnp.argmax(jax.vmap(explainee.logits)(images), axis=-1)


# ------------------------------------------------------------------- maps ---

def method_hparams(config: ml_collections.ConfigDict, method: str) -> dict[str, Any]:
  """The preset's settings of ``method`` with ``config.hparams.<method>`` on top."""
  overrides = config.get("hparams", {}).get(method, {})
  return presets.hparams_for(config.get("preset"), method, **dict(overrides))


def segments_for(method: str, images: np.ndarray) -> dict[str, np.ndarray]:
  """Per-image inputs that depend only on the image (XRAI's segments), once."""
  if method != "xrai":
    return {}
  masks = [xrai_lib.xrai_segments(np.asarray(x), max_segments=None) for x in images]
  most = max(m.shape[0] for m in masks)
  padded = np.zeros((len(masks), most) + masks[0].shape[1:], bool)
  for i, m in enumerate(masks):
    padded[i, :m.shape[0]] = m
  return {"segments": padded}


def saliency_maps(explainee: saliency.Explainee, images: jax.Array,
                  targets: jax.Array, method: str,
                  config: ml_collections.ConfigDict, *, key: jax.Array,
                  per_image: dict[str, Any] | None = None) -> jax.Array:
  """Post-processed maps (N, H, W) as Arun et al.: |.|, channel sum, 99th
  percentile clip, [0, 1]."""
  raw = saliency.explain(
      explainee, images, targets, method=method, key=key,
      batch_size=config.get("batch_size"), strategy=config.get("strategy"),
      per_image=per_image, **method_hparams(config, method))
  return _postprocess_batch(raw)


@jax.jit
def _postprocess_batch(raw: jax.Array) -> jax.Array:
  return jax.vmap(postprocess.postprocess)(raw)


# ----------------------------------------------------------------- scores ---

def localization_scores(maps: jax.Array, masks: jax.Array,
                        names: Sequence[str]) -> dict[str, np.ndarray]:
  """Each metric of ``names`` for maps (..., N, H, W) against masks (N, H, W)."""
  return {name: np.asarray(_batched_localization(name, maps.ndim)(maps, masks))
          for name in names}


@functools.lru_cache(maxsize=None)
def _batched_localization(name: str, ndim: int):
  """One jitted program per (metric, rank): fresh jits would recompile."""
  per_image = jax.vmap(localization.LOCALIZATION[name])
  for _ in range(ndim - 3):
    per_image = jax.vmap(per_image, in_axes=(0, None))
  return jax.jit(per_image)


@functools.lru_cache(maxsize=None)
def _batched_similarity(name: str, ndim: int):
  batched = similarity.SIMILARITY[name]
  for _ in range(ndim - 2):
    batched = jax.vmap(batched)
  return jax.jit(batched)


def similarity_scores(a: jax.Array, b: jax.Array,
                      names: Sequence[str]) -> dict[str, np.ndarray]:
  """Each similarity of ``names`` between maps a (..., H, W) and b (same shape)."""
  out = {}
  for name in names:
    fn = similarity.SIMILARITY[name]
    if name in _HOST_SIMILARITY:
      a_np, b_np = np.asarray(a), np.asarray(b)
      flat = [fn(x, y) for x, y in zip(a_np.reshape(-1, *a_np.shape[-2:]),
                                       b_np.reshape(-1, *b_np.shape[-2:]))]
      out[name] = np.asarray(flat, np.float64).reshape(a_np.shape[:-2])
      continue
    out[name] = np.asarray(_batched_similarity(name, a.ndim)(a, b))
  return out


def different_image_similarity(maps: jax.Array, names: Sequence[str], *,
                               pairs_per_image: int, seed: int) -> dict[str, np.ndarray]:
  """Similarity of maps of two different images (the test's baseline), per pair."""
  i, j = stats.different_image_pairs(maps.shape[0], pairs_per_image, seed=seed)
  return similarity_scores(maps[i], maps[j], names)


# ---------------------------------------------------------------- results ---

def rows(config: ml_collections.ConfigDict, *, experiment: str, stage: int,
         method: str, image_ids: Iterable[str], scores: dict[str, np.ndarray],
         model: str | None = None) -> list[dict[str, Any]]:
  """Long-format rows, one per (image, metric) of ``scores`` (each (N,))."""
  image_ids = list(image_ids)
  out = []
  for metric, values in scores.items():
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size != len(image_ids):
      raise ValueError(f"{metric}: {values.size} values for {len(image_ids)} images")
    for image_id, value in zip(image_ids, values):
      out.append(dict(experiment=experiment, dataset=config.dataset,
                      model=model or config.model, seed=config.seed,
                      stage=int(stage), method=method, image_id=image_id,
                      metric=metric, value=float(value)))
  return out


def part_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, "parts", f"{name}.csv")


def has_part(workdir: str, name: str) -> bool:
  return os.path.exists(part_path(workdir, name))


def write_part(workdir: str, name: str, part_rows: list[dict[str, Any]]) -> None:
  io_utils.write_text(part_path(workdir, name), _csv_text(part_rows))


def read_rows(path: str) -> list[dict[str, Any]]:
  with open(path, newline="") as f:
    return [dict(r, stage=int(r["stage"]), seed=int(r["seed"]),
                 value=float(r["value"])) for r in csv.DictReader(f)]


def write_results(workdir: str, part_names: Sequence[str]) -> list[dict[str, Any]]:
  """``results.csv`` from the named parts, in order; returns all rows."""
  all_rows = [r for name in part_names for r in read_rows(part_path(workdir, name))]
  io_utils.write_text(os.path.join(workdir, "results.csv"), _csv_text(all_rows))
  return all_rows


def _csv_text(part_rows: list[dict[str, Any]]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
  writer.writeheader()
  writer.writerows(part_rows)
  return buffer.getvalue()


def aggregate(all_rows: list[dict[str, Any]], *, seed: int,
              num_resamples: int = 1000) -> list[dict[str, Any]]:
  """Mean and 95% bootstrap interval per (experiment, model, stage, method, metric)."""
  groups: dict[tuple, list[float]] = {}
  for r in all_rows:
    key = (r["experiment"], r["model"], r["stage"], r["method"], r["metric"])
    groups.setdefault(key, []).append(r["value"])
  out = []
  for (experiment, model, stage, method, metric), values in sorted(groups.items()):
    mean, low, high = stats.bootstrap_ci(np.asarray(values), seed=seed,
                                         num_resamples=num_resamples)
    out.append(dict(experiment=experiment, model=model, stage=stage,
                    method=method, metric=metric, mean=mean, low=low, high=high,
                    n=len(values) - stats.count_excluded(values),
                    excluded=stats.count_excluded(values)))
  return out


# --------------------------------------------------------------- progress ---

class Progress:
  """Logs units done, rate and ETA; at least one line per unit of work."""

  def __init__(self, what: str, total: int, unit: str = "images"):
    self.what, self.total, self.unit = what, total, unit
    self.done, self.start = 0, time.time()

  def update(self, count: int, detail: str) -> None:
    self.done += count
    elapsed = max(time.time() - self.start, 1e-9)
    rate = self.done / elapsed
    eta = (self.total - self.done) / rate if rate > 0 else float("nan")
    logging.info("%s: %s  %d/%d %s  %.2f %s/s  ETA %.0fs", self.what, detail,
                 self.done, self.total, self.unit, rate, self.unit, eta)
