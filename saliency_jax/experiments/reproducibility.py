"""Reproducibility test: do two architectures explain the same image alike?

Arun et al. (Radiology: AI 2021) compared the saliency maps of an
InceptionV3 and a DenseNet121 trained on the same data (SSIM) with those of
two InceptionV3 replicates: a method whose maps depend on the architecture
shows the architecture, not the abnormality. Here ``config.model`` (A) and
``config.other_model`` at ``config.other_width`` (B) are trained with the
same seed and data; each explains its own predicted class with the same
noise key.

The intra-architecture reference is A's second replicate (seed
``config.seed + 1``) when one is available: among this run's models
(``config.models_dir``, else ``workdir/models``, where the repeatability
experiment puts it), or in the repeatability run ``config.replicates_dir``
(its training settings must match), or trained here when
``config.intra_replicate`` is 'train'. Without one, the different-image
similarity (computed in any case) is the only reference.

Verdict, as repeatability's: a method is *reproducible* under a similarity
metric when the lower 95% bootstrap bound of the mean inter-architecture
similarity exceeds the mean similarity between maps of two different images
from A. See ``repeatability`` for the shared machinery and the row format.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from absl import logging

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import train
from saliency_jax.experiments import common
from saliency_jax.experiments import repeatability

EXPERIMENT = "reproducibility"
ARCHITECTURES = "architectures"  # the pair A, B
# Keys whose values define a training run: a reused replicate must match them.
TRAINING_KEYS = ("dataset", "image_size", "synthetic", "manual_dir", "real_data",
                 "on_bad_input", "model", "width", "num_classes", "model_weights",
                 "train", "seed")


def validate(config: ml_collections.ConfigDict) -> None:
  """The keys only this experiment has (the other architecture, its replicate)."""
  if config.other_model not in config_lib.MODELS:
    raise errors.ConfigError(f"config.other_model={config.other_model!r} is not "
                             f"allowed; expected one of {config_lib.MODELS}")
  if not config.other_width > 0:
    raise errors.ConfigError(f"config.other_width={config.other_width!r}: expected "
                             "a positive number")
  if (config.other_model, config.other_width) == (config.model, config.width):
    raise errors.ConfigError(
        f"config.other_model={config.other_model!r} at config.other_width="
        f"{config.other_width} is config.model itself; use "
        "--config=repeatability for replicates")
  if config.intra_replicate not in ("reuse", "train"):
    raise errors.ConfigError(f"config.intra_replicate={config.intra_replicate!r} is "
                             "not allowed; expected 'reuse' or 'train'")


def architecture_labels(config: ml_collections.ConfigDict) -> tuple[str, str]:
  """The ``model`` column of A and B: names, with widths when the names agree."""
  if config.model != config.other_model:
    return config.model, config.other_model
  return (f"{config.model}_w{config.width:g}",
          f"{config.other_model}_w{config.other_width:g}")


def check_same_training(config: ml_collections.ConfigDict, directory: str) -> None:
  """Raises ConfigError unless ``directory``'s run trains A as ``config`` does."""
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    raise errors.ConfigError(f"config.replicates_dir={directory!r}: no config.json "
                             "there (expected a repeatability workdir)")
  theirs = io_utils.read_json(path)
  ours = config.to_dict()
  for key in TRAINING_KEYS:
    if _comparable(theirs.get(key)) != _comparable(ours.get(key)):
      raise errors.ConfigError(
          f"config.replicates_dir={directory!r}: its run trained with "
          f"config.{key}={theirs.get(key)!r}, this one with {ours.get(key)!r}")


def _comparable(value: Any) -> Any:
  """JSON's view of a value (tuples are lists there); decoding workers do not matter."""
  value = json.loads(json.dumps(value, sort_keys=True))
  if isinstance(value, dict):
    value.pop("num_workers", None)
  return value


def models_root(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Where this run's models live (as ``common.trained_model`` puts them)."""
  return config.get("models_dir") or os.path.join(workdir, "models")


def _replicates_root(config: ml_collections.ConfigDict) -> str | None:
  """Where the models of ``config.replicates_dir``'s run live, if it is set."""
  if not config.replicates_dir:
    return None
  theirs = io_utils.read_json(os.path.join(config.replicates_dir, "config.json"))
  return theirs.get("models_dir") or os.path.join(config.replicates_dir, "models")


def _finished(root: str | None, tag: str) -> bool:
  return bool(root) and os.path.exists(os.path.join(root, tag, train.SUMMARY))


def reuse_overrides(config: ml_collections.ConfigDict, workdir: str,
                    tag: str) -> dict[str, Any] | None:
  """Config overrides that load A's finished training ``tag``, else None.

  ``{}`` when this run has it (its ``models_dir`` or ``workdir/models``:
  e.g. the repeatability experiment ran with the same models), ``models_dir``
  of ``config.replicates_dir``'s run when that has it.
  """
  if _finished(models_root(config, workdir), tag):
    return {}
  if _finished(_replicates_root(config), tag):
    return {"models_dir": _replicates_root(config)}
  return None


def _intra_replicate(config: ml_collections.ConfigDict, workdir: str, label: str,
                     in_channels: int) -> repeatability.Member | None:
  """A's replicate of seed ``config.seed + 1``, if available or to be trained."""
  seed = config.seed + 1
  tag = repeatability.replicate_tag(config, seed)
  overrides = reuse_overrides(config, workdir, tag)
  if overrides is None and config.intra_replicate != "train":
    logging.info("%s: no replicate %s of %s in %s or config.replicates_dir; the "
                 "different-image similarity is the only reference", EXPERIMENT,
                 tag, config.model, models_root(config, workdir))
    return None
  return repeatability.trained_member(
      config, workdir, name=f"{label}_seed{seed}", label=label, tag=tag,
      in_channels=in_channels, seed=seed, **(overrides or {}))


def architectures(config: ml_collections.ConfigDict, workdir: str, in_channels: int
                  ) -> tuple[list[repeatability.Member], list[repeatability.Pair]]:
  """A, B and (if available) A's second replicate; the pairs to compare."""
  if config.replicates_dir:  # checked up front: a typo must not pass silently
    check_same_training(config, config.replicates_dir)
  label_a, label_b = architecture_labels(config)
  # A is the 'trained' model the other experiments share (or config.trained_dir).
  first = repeatability.trained_member(
      config, workdir, name=label_a, label=label_a, tag="trained",
      in_channels=in_channels, **(reuse_overrides(config, workdir, "trained") or {}))
  other = repeatability.trained_member(
      config, workdir, name=label_b, label=label_b, tag=other_tag(label_b),
      in_channels=in_channels, model=config.other_model, width=config.other_width)
  members = [first, other]
  pairs = [repeatability.Pair(0, 1, ARCHITECTURES)]
  replicate = _intra_replicate(config, workdir, label_a, in_channels)
  if replicate is not None:
    members.append(replicate)
    pairs.append(repeatability.Pair(0, 2, repeatability.REPLICATES))
  return members, pairs


def other_tag(label: str) -> str:
  """B's folder under ``workdir/models`` (never 'trained' or 'seed<k>')."""
  return f"other_{label}"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains both architectures and compares their maps; see module doc."""
  images_np = common.evaluation_images(config, workdir=workdir)
  members, pairs = architectures(config, workdir, images_np["image"].shape[-1])
  return repeatability.finish(config, workdir, EXPERIMENT, members, pairs,
                              ARCHITECTURES, images_np)
