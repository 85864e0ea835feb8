"""The CheXlocalize protocol as an option of the localization experiment.

Saporta et al., "Benchmarking saliency methods for chest X-ray
interpretation", Nature Machine Intelligence 2022: each map of a test
positive is upsampled to its mask, min-max scaled, binarized (Otsu, or a
threshold tuned on the validation split's positives over 0.2, ..., 0.8),
optionally gated by the predicted probability p(positive) > c (c tuned on
validation over 0, 0.1, ..., 0.8), and scored by IoU and hit (the map's
maximum inside the mask); mIoU and hit rate with 95% bootstrap intervals
(:mod:`saliency_jax.metrics.chexlocalize`). The maps are the localization
experiment's own (post-processed as every map here: |.|, channel sum, 99th
percentile clip, [0, 1]; the min-max scaling makes the last step moot), the
validation maps computed with the same method, hyper-parameters and target
rule. Ground truth: the experiment's masks (boxes rasterized, or the
``image_folder`` dataset's masks), one class (``config.chexlocalize.class_name``).

Each map name's result is one verified part (``localization-chexlocalize-
<name>``: per test image ``chexlocalize_iou`` and ``chexlocalize_hit``; the
tuned threshold, cutoff and intervals in its manifest) with its predicted
masks beside it as CheXlocalize's COCO-RLE JSON (``chexlocalize/<name>.json``,
``{image_id: {class: rle}}``, its SHA-256 in the manifest), so a rerun
resumes and the masks feed CheXlocalize's own ``eval.py``. A non-finite test
or validation map or logit makes the name's numbers INVALID (NaN, never
computed from NaN).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import results
from saliency_jax import rng
from saliency_jax import saliency
from saliency_jax import workdir as workdir_lib
from saliency_jax.data import coco_rle
from saliency_jax.experiments import common
from saliency_jax.metrics import chexlocalize as protocol

KEY = "chexlocalize"
METRICS = ("chexlocalize_iou", "chexlocalize_hit")
THRESHOLDS = ("otsu", "tuned")
KEYS = ("enabled", "threshold", "gate", "quantize", "num_resamples", "class_name")
# The class name CheXlocalize-style files carry, per dataset (else 'opacity').
CLASS_NAMES = {"rsna_pneumonia": "Lung Opacity",
               "siim_acr_pneumothorax": "Pneumothorax"}
DEFAULT_CLASS = "opacity"
POSITIVE = 1  # the positive class's index (label 1)
VALIDATION = "validation"
_VALIDATION_KEY = 1  # fold_in of a method's map key for its validation maps


# ------------------------------------------------------------- validation ---

def enabled(config: ml_collections.ConfigDict) -> bool:
  block = config.get(KEY)
  return bool(block is not None and block.get("enabled"))


def validate(config: ml_collections.ConfigDict) -> None:
  """``config.chexlocalize.*``: each key's type and range (absent: disabled)."""
  block = config.get(KEY)
  if block is None:
    return
  unknown = sorted(set(block.keys()) - set(KEYS))
  if unknown:
    raise errors.ConfigError(f"config.{KEY}: unknown key(s) {unknown}; expected "
                             f"some of {KEYS}")

  def bad(key: str, expected: str) -> errors.ConfigError:
    return errors.ConfigError(f"config.{KEY}.{key}={block.get(key)!r}: expected {expected}")
  for key in ("enabled", "gate", "quantize"):
    if not isinstance(block.get(key, False), bool):
      raise bad(key, "True or False")
  if block.get("threshold", "otsu") not in THRESHOLDS:
    raise bad("threshold", f"one of {THRESHOLDS} (Otsu's, or tuned on the validation "
              "split from 0.2 to 0.8)")
  if block.get("quantize", False) and block.get("threshold", "otsu") != "otsu":
    raise bad("quantize", "False with threshold='tuned' (8-bit levels apply to Otsu's "
              "threshold only)")
  resamples = block.get("num_resamples")
  if resamples is not None and (isinstance(resamples, bool) or not isinstance(resamples, int)
                                or resamples < 1):
    raise bad("num_resamples", "None (config.bootstrap_resamples) or a positive integer")
  name = block.get("class_name")
  if name is not None and (not isinstance(name, str) or not name.strip()):
    raise bad("class_name", "None (the dataset's class) or a non-empty string")


def settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The protocol's settings as they run (defaults resolved), for summary.json."""
  block = config[KEY]
  threshold = block.get("threshold", "otsu")
  gate = bool(block.get("gate", False))
  resamples = block.get("num_resamples")
  return {
      "threshold": threshold, "gate": gate, "quantize": bool(block.get("quantize", False)),
      "num_resamples": int(config.bootstrap_resamples if resamples is None else resamples),
      "class_name": block.get("class_name") or CLASS_NAMES.get(config.dataset,
                                                               DEFAULT_CLASS),
      "thresholds": list(protocol.THRESHOLDS) if threshold == "tuned" else None,
      "cutoffs": list(protocol.CUTOFFS) if gate else None,
      # The reference's two evaluations: true positives only without a gate.
      "true_positives_only": not gate,
      "tuned_on": VALIDATION if threshold == "tuned" or gate else None,
  }


def masks_path(workdir: str, name: str) -> str:
  """Predicted masks of map ``name``: CheXlocalize's ``{image_id: {class: rle}}``."""
  return os.path.join(workdir, KEY, f"{name}.json")


# ----------------------------------------------------------------- scores ---

def score(maps: np.ndarray, masks: np.ndarray, *, threshold: str | float,
          quantize: bool, seed: int, num_resamples: int,
          probabilities: np.ndarray | None = None, cutoff: float | None = None,
          validation: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
  """The protocol on one map name's test maps, tuning on ``validation`` first.

  Args:
    maps: (N, H, W) test maps; masks: (N, H, W) their ground truth.
    threshold: 'otsu', or 'tuned' (:func:`protocol.tune_threshold` on the
      validation maps), or a number.
    quantize, seed, num_resamples: as :func:`protocol.evaluate`.
    probabilities: (N,) test p(positive) with ``cutoff``: the gate; cutoff
      'tuned': :func:`protocol.tune_cutoff` on the validation maps at the
      threshold used.
    validation: ``maps``, ``masks`` and (gated) ``probabilities`` of the
      validation positives.

  Returns:
    :func:`protocol.evaluate`'s dict plus ``threshold`` and ``cutoff`` used
    and the validation mIoU of each candidate (``tuning``).
  """
  tuning = {}
  if threshold == "tuned":
    threshold, mious = protocol.tune_threshold(validation["maps"], validation["masks"])
    tuning["threshold_miou"] = mious.tolist()
  if cutoff == "tuned":
    cutoff, mious = protocol.tune_cutoff(validation["maps"], validation["masks"],
                                         validation["probabilities"], threshold=threshold)
    tuning["cutoff_miou"] = mious.tolist()
  out = protocol.evaluate(maps, masks, threshold=threshold, quantize=quantize,
                          probabilities=probabilities, cutoff=cutoff, seed=seed,
                          num_resamples=num_resamples)
  return {**out, "threshold": threshold, "cutoff": cutoff, "tuning": tuning}


@jax.jit
def _logits(explainee: saliency.Explainee, images: jax.Array) -> jax.Array:
  return jax.vmap(explainee.logits)(images)


def _model_outputs(config, explainee, images_np) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(targets, p(positive), finite logits) per image, targets by ``config.targets``."""
  logits = _logits(explainee, jnp.asarray(images_np["image"]))
  finite = np.asarray(jnp.isfinite(logits).all(axis=-1))
  targets = (np.asarray(images_np["label"]) if config.targets == "true"
             else np.asarray(jnp.argmax(logits, axis=-1)))
  return targets, np.asarray(jax.nn.softmax(logits, axis=-1)[:, POSITIVE]), finite


# ------------------------------------------------------------------- run ---

MethodFor = Callable[[str], tuple[str, dict[str, Any]]]


def run(config: ml_collections.ConfigDict, workdir: str, *, experiment: str,
        explainee: saliency.Explainee, images_np: dict[str, np.ndarray],
        outcome: Any, names: Sequence[str], method_for: MethodFor
        ) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
  """Every name's CheXlocalize numbers from the runner's kept test maps.

  Args:
    outcome: :func:`runner.run_methods`'s, with ``keep_maps=True``.
    names: the map names in the runner's order (their index keys the maps).
    method_for: name -> (method, hyper-parameters), as the runner's.

  Returns:
    (the summary's ``chexlocalize`` block, the parts' rows).
  """
  setup = settings(config)
  ids = [str(i) for i in images_np["id"]]
  masks = np.asarray(images_np["mask"]).astype(bool)
  seed = rng.integer_seed(config.seed, rng.STATS)
  tuned = setup["tuned_on"] is not None
  test_p = _model_outputs(config, explainee, images_np)[1] if setup["gate"] else None
  validation_np = (common.evaluation_images(config, VALIDATION) if tuned else None)
  inputs = results.fingerprint_of(
      config.to_json_best_effort(sort_keys=True), workdir_lib.recorded_inputs(workdir),
      experiment, KEY, ids,
      io_utils.sha256_arrays((k, validation_np[k]) for k in ("id", "image", "mask", "label"))
      if tuned else None)
  validation_model = (_model_outputs(config, explainee, validation_np) if tuned else None)
  key = rng.key(config.seed, rng.SALIENCY)
  block, parts = {}, []
  for m, name in enumerate(names):
    part_name = f"{experiment}-{KEY}-{name}"
    maps = np.asarray(outcome.maps[name][0])
    fingerprint = results.fingerprint_of(
        inputs, name, io_utils.sha256_arrays([(name, maps)]), outcome.invalid.get(name))
    path = masks_path(workdir, name)
    found = results.verified_part(workdir, part_name, fingerprint)
    if found is not None and found[1].get("masks_sha256") and not (
        os.path.exists(path) and io_utils.sha256_file(path) == found[1]["masks_sha256"]):
      logging.warning("%s: missing or not the masks of its part; computing it again", path)
      found = None
    if found is None:
      validation = None
      if tuned:
        validation = _validation(config, explainee, validation_np, validation_model,
                                 name, method_for, jax.random.fold_in(key, m))
      part, record = _compute(config, workdir, experiment, name, maps, masks, ids,
                              setup, seed, test_p, validation, outcome.invalid.get(name))
      results.write_part(workdir, part_name, part, fingerprint=fingerprint, **record)
    else:
      part, record = found
    parts.append(part)
    block[name] = {k: record[k] for k in RECORD}
    if record["invalid"]:
      logging.warning("%s %s %s: INVALID, %s", experiment, KEY, name, record["invalid"])
  return {"settings": setup,
          "num_validation_images": len(validation_np["id"]) if tuned else 0,
          "methods": block}, parts


RECORD = ("miou", "hit_rate", "num_scored", "num_not_scored", "threshold", "cutoff",
          "tuning", "masks", "invalid")


def _validation(config, explainee, validation_np, model_outputs, name, method_for,
                key) -> dict[str, Any]:
  """The validation positives' maps of ``name`` (same method, hparams, targets)."""
  targets, probabilities, finite_logits = model_outputs
  method, hparams = method_for(name)
  images = jnp.asarray(validation_np["image"])
  raw = saliency.explain(explainee, images, jnp.asarray(targets), method=method,
                         key=jax.random.fold_in(key, _VALIDATION_KEY),
                         batch_size=config.get("batch_size"), strategy=config.get("strategy"),
                         per_image=common.segments_for(method, validation_np["image"]),
                         **hparams)
  finite = np.asarray(jnp.isfinite(raw).all(axis=(-3, -2, -1))) & finite_logits
  return {"maps": np.asarray(common.postprocess_batch(raw)),
          "masks": np.asarray(validation_np["mask"]).astype(bool),
          "probabilities": probabilities, "nonfinite": int((~finite).sum())}


def _compute(config, workdir, experiment, name, maps, masks, ids, setup, seed, test_p,
             validation, invalid) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """(rows, manifest record) of one name; INVALID rather than computed from NaN."""
  reasons = [f"test: {invalid}"] if invalid else []
  if validation is not None and validation["nonfinite"]:
    reasons.append(f"validation: {validation['nonfinite']} maps or logits were not finite")
  if test_p is not None and not np.isfinite(test_p).all():
    reasons.append("test: predicted probabilities were not finite")
  nan = float("nan")
  record: dict[str, Any] = {
      "invalid": "; ".join(reasons) or None, "masks": None, "tuning": {},
      "threshold": setup["threshold"] if setup["threshold"] == "otsu" else None,
      "cutoff": None, "miou": [nan] * 3, "hit_rate": [nan] * 3,
      "num_scored": {"iou": 0, "hit": 0},
      "num_not_scored": {"iou": len(ids), "hit": len(ids)}}
  scores = {k: np.full(len(ids), np.nan) for k in METRICS}
  if not reasons:
    out = score(maps, masks, threshold=setup["threshold"], quantize=setup["quantize"],
                seed=seed, num_resamples=setup["num_resamples"], probabilities=test_p,
                cutoff="tuned" if setup["gate"] else None, validation=validation)
    path = masks_path(workdir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    coco_rle.write_masks(path, {i: {setup["class_name"]: p}
                                for i, p in zip(ids, out["predicted"])})
    scores = {"chexlocalize_iou": out["iou"], "chexlocalize_hit": out["hit"]}
    record.update(
        threshold=out["threshold"], cutoff=out["cutoff"], tuning=out["tuning"],
        miou=list(out["miou"]), hit_rate=list(out["hit_rate"]),
        num_scored=out["num_scored"],
        num_not_scored={k: len(ids) - v for k, v in out["num_scored"].items()},
        masks=os.path.relpath(path, workdir), masks_sha256=io_utils.sha256_file(path))
  part = results.rows(experiment=experiment, dataset=config.dataset, model=config.model,
                      seed=config.seed, stage=0, method=name, image_ids=ids,
                      scores=scores)
  return part, record
