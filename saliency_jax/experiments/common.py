"""What the experiments share: trained models, evaluation images, maps, scores.

The loop over methods and model states, the parts and ``results.csv`` live
in :mod:`saliency_jax.experiments.runner` and :mod:`saliency_jax.results`.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import data as data_lib
from saliency_jax import devices
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import rng
from saliency_jax import train
from saliency_jax import workdir as workdir_lib
from saliency_jax.metrics import scoring
from saliency_jax.saliency import postprocess
from saliency_jax.saliency import presets
from saliency_jax.saliency import xrai as xrai_lib

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
  config = training_config(config, tag, **overrides)
  directory = training_directory(config, workdir, tag)
  summary_path = os.path.join(directory, train.SUMMARY)
  if not os.path.exists(summary_path):
    if config.get("trained_dir") and tag == "trained":
      raise errors.ConfigError(f"config.trained_dir={directory!r}: no "
                               f"{train.SUMMARY} there (train it first)")
    if devices.is_writer():
      logging.info("training %s (%s) into %s", tag, config.model, directory)
      train.train_and_evaluate(config, directory)
    else:
      wait_for(summary_path, f"process 0 to train {tag}")
  summary = io_utils.read_json(summary_path)
  model = train.restore_model(config, directory, in_channels)
  # What this workdir's results will be computed from: a model retrained or
  # replaced between a kill and the rerun is refused, not mixed in.
  workdir_lib.record_inputs(workdir, {f"model/{tag}": model_fingerprint(model, summary)})
  return model, summary


def wait_for(path: str, what: str, *, poll_seconds: float = 2.0) -> None:
  """Blocks until ``path`` exists: process i > 0 of a multi-process run
  waiting for process 0's data or model (files on a shared filesystem; no
  collective, which would time out during hours of training; a process 0
  that dies ends the run through JAX's coordination service)."""
  start = last = time.monotonic()
  while not os.path.exists(path):
    if time.monotonic() - last > 60:
      last = time.monotonic()
      logging.info("waiting for %s (%s, %.0f min)", what, path, (last - start) / 60)
    time.sleep(poll_seconds)


def training_config(config: ml_collections.ConfigDict, tag: str = "trained",
                    **overrides: Any) -> ml_collections.ConfigDict:
  """The config ``tag``'s model is trained with: ``config`` resolved, with
  ``overrides``; ``model_weights`` and ``init_from`` kept for 'trained' only."""
  # 'auto' fixed once, so every model of the run takes the same input map.
  config = ml_collections.ConfigDict(config_lib.resolve(config).to_dict())
  if tag != "trained":
    config.update(model_weights=None, init_from=None)
  config.update(overrides)
  return config


def training_directory(config: ml_collections.ConfigDict, workdir: str,
                       tag: str) -> str:
  """Where model ``tag`` of ``config`` (a :func:`training_config`) is trained:
  ``config.trained_dir`` for 'trained' when set, else ``models_dir/tag``."""
  # A study runs several tests in sub-folders; they share its models.
  models_dir = config.get("models_dir") or os.path.join(workdir, "models")
  return (config.trained_dir if config.get("trained_dir") and tag == "trained"
          else os.path.join(models_dir, tag))


def model_fingerprint(model: nnx.Module, training: dict[str, Any]) -> dict[str, Any]:
  """Training steps and the SHA-256 of every variable (sorted by path)."""
  variables = sorted(nnx.to_flat_state(nnx.state(model)), key=lambda kv: str(kv[0]))
  return {"model": training.get("model"), "steps": training.get("steps"),
          "params_sha256": io_utils.sha256_arrays(
              (path, np.asarray(value.get_value())) for path, value in variables)}


def check_controls(config: ml_collections.ConfigDict, allowed: Sequence[str]) -> None:
  """``config.controls``: not empty, each one of ``allowed``, none also a method."""
  if not config.controls:
    raise errors.ConfigError(f"config.controls is empty; expected some of {tuple(allowed)}")
  for name in config.controls:
    if name not in allowed:
      raise errors.ConfigError(f"config.controls: {name!r} is not allowed; expected "
                               f"one of {tuple(allowed)}")
  both = sorted(set(config.controls) & set(config.methods))
  if both:
    raise errors.ConfigError(f"config.controls: {both} also in config.methods; "
                             "list each map once")


# ----------------------------------------------------------------- images ---

def evaluation_images(config: ml_collections.ConfigDict, split: str = "test", *,
                      workdir: str | None = None) -> dict[str, np.ndarray]:
  """``config.num_images`` random positive images of ``split`` (keyed subset).

  Arun et al. evaluated 100 random positive test images. A positive here is
  an image with at least one box (or mask pixel). With ``workdir`` the chosen
  images are also listed in its ``images.csv`` (:func:`write_image_table`).
  Only the chosen records are decoded: which are positive comes from the
  split's index (:mod:`saliency_jax.data.streaming`, cached with the build);
  the arrays equal those rows of the whole split's (``data_lib.load``).
  """
  source = data_lib.source(config, split)
  index = source.index()
  positive = np.flatnonzero((index.label == 1) & index.annotated)
  if positive.size < 2:
    # Before any model is trained: the different-image baseline needs two.
    raise errors.ConfigError(
        f"config.dataset={config.dataset!r}: split {split!r} has {positive.size} "
        "positive image(s) with a box or mask; the experiments need at least 2 "
        "(the different-image baseline compares two images' maps)")
  count = min(config.num_images, positive.size)
  if count < config.num_images:
    logging.warning("config.num_images=%d but split %s has only %d positives; "
                    "using %d", config.num_images, split, positive.size, count)
  generator = np.random.default_rng(rng.integer_seed(config.seed, rng.SUBSET))
  chosen = np.sort(generator.choice(positive, size=count, replace=False))
  images = source.read(chosen, exact=True)
  if workdir is not None:
    workdir_lib.record_inputs(workdir, {"dataset": {
        "build": data_lib.build_name(config),
        "evaluated_images_sha256": io_utils.sha256_arrays(
            (name, images[name]) for name in ("id", "image", "mask", "label"))}})
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


# ------------------------------------------------------------------- maps ---

def method_hparams(config: ml_collections.ConfigDict, method: str) -> dict[str, Any]:
  """The preset's settings of ``method`` with ``config.hparams.<method>`` on top."""
  overrides = config.get("hparams", {}).get(method, {})
  return presets.hparams_for(config.get("preset"), method, **dict(overrides))


def segments_for(method: str, images: np.ndarray) -> dict[str, np.ndarray]:
  """Per-image inputs that depend only on the image (XRAI's segments), once."""
  if method != "xrai":
    return {}
  return {"segments": xrai_lib.batch_segments(images)}


@jax.jit
def postprocess_batch(raw: jax.Array) -> jax.Array:
  """Maps (N, H, W) as Arun et al.: |.|, channel sum, 99th percentile clip, [0, 1]."""
  return jax.vmap(postprocess.postprocess)(raw)


@jax.jit
def signed_postprocess_batch(raw: jax.Array) -> jax.Array:
  r"""Signed (diverging) maps (N, H, W): :math:`s = \sum_c m_c / \max |\sum_c m_c|`.

  Adebayo et al. (NeurIPS 2018) also compare maps without the absolute
  value; their ``diverging_norm`` of a 2-D map divides by its largest
  magnitude, so zero stays zero and the ranks are those of the channel sum.
  No percentile clip (PAIR's ``VisualizeImageDiverging`` clips the top 1%,
  which would tie those pixels' ranks): the signed Spearman is exactly the
  Spearman of the channel-summed raw maps.
  """
  return jax.vmap(lambda m: postprocess.postprocess(
      m, reduce="sum", clip_percentile=None, normalize="signed"))(raw)


# ----------------------------------------------------------------- scores ---

# Metrics by name over batches, from the one registry (saliency_jax.metrics).
localization_scores = scoring.localization_scores
similarity_scores = scoring.similarity_scores
# metric -> every option it runs with (config.metric_options over the defaults).
resolved_metric_options = scoring.resolved_options
