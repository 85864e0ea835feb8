"""`synthetic_cxr`: the synthetic chest phantoms as a TFDS dataset, written without TensorFlow.

Stored as `array_record` and read with ``builder.as_data_source()``. Pixels are
a float32 ``Tensor`` (``tfds.features.Image`` needs TensorFlow to encode PNGs).
Every generation parameter is a field of the builder config and part of its
name, so two settings never share a cache directory. Examples are written in
index order (``disable_shuffling``), so record ``i`` of a split is phantom
``start + i``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from saliency_jax import progress
from saliency_jax.data import synthetic


@dataclasses.dataclass(eq=False)
class SyntheticCxrConfig(tfds.core.BuilderConfig):
  """Generation parameters of one `synthetic_cxr` variant (see `synthetic.phantom`)."""

  image_size: int = 128
  num_train: int = 2000
  num_validation: int = 250
  num_test: int = 250
  prevalence: float = 0.5
  shortcut: float | None = None
  seed: int = 0


def config_name(*, image_size: int, num_train: int, num_validation: int,
                num_test: int, prevalence: float, shortcut: float | None,
                seed: int) -> str:
  """E.g. ``s128-n2000-250-250-p0.5-noshortcut-seed0``."""
  marker = "noshortcut" if shortcut is None else f"shortcut{float(shortcut):g}"
  return (f"s{image_size}-n{num_train}-{num_validation}-{num_test}"
          f"-p{float(prevalence):g}-{marker}-seed{seed}")


def _parameters(config: SyntheticCxrConfig) -> dict[str, Any]:
  return dict(image_size=config.image_size, num_train=config.num_train,
              num_validation=config.num_validation, num_test=config.num_test,
              prevalence=config.prevalence, shortcut=config.shortcut, seed=config.seed)


def _new_config(**params: Any) -> SyntheticCxrConfig:
  return SyntheticCxrConfig(name=config_name(**params),
                            description=json.dumps(params, sort_keys=True), **params)


_DEFAULT = _new_config(image_size=128, num_train=2000, num_validation=250, num_test=250,
                       prevalence=0.5, shortcut=None, seed=0)


def make_config(*, image_size: int = 128, num_train: int = 2000, num_validation: int = 250,
                num_test: int = 250, prevalence: float = 0.5, shortcut: float | None = None,
                seed: int = 0) -> SyntheticCxrConfig:
  """The config for these parameters (TFDS wants the predefined object for a predefined name)."""
  params = dict(image_size=int(image_size), num_train=int(num_train),
                num_validation=int(num_validation), num_test=int(num_test),
                prevalence=float(prevalence),
                shortcut=None if shortcut is None else float(shortcut), seed=int(seed))
  for name, value in params.items():
    if name.startswith("num_") and value < 0:
      raise ValueError(f"synthetic_cxr: {name} must be >= 0, got {value}")
  if not 0.0 <= params["prevalence"] <= 1.0:
    raise ValueError(f"synthetic_cxr: prevalence must be in [0, 1], got {prevalence}")
  if shortcut is not None and not 0.0 <= params["shortcut"] <= 1.0:
    raise ValueError(f"synthetic_cxr: shortcut must be None or in [0, 1], got {shortcut}")
  if _DEFAULT.name == config_name(**params):
    return _DEFAULT
  return _new_config(**params)


class SyntheticCxr(tfds.core.GeneratorBasedBuilder):
  """Procedural frontal chest films; positives carry 1-3 boxed lung opacities."""

  # Bump when `synthetic.phantom` changes its output, so stale caches are not reused.
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": ("The shortcut marker sits in a random corner (was: top right); "
                "features marker_mask and opacity_mask. Data without the "
                "shortcut is unchanged."),
  }
  BUILDER_CONFIGS = [_DEFAULT]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    size = config.image_size
    params = _parameters(config)
    return self.dataset_info_from_configs(
        description=(
            "Synthetic frontal chest radiographs (saliency_jax.data.synthetic). "
            "Boxes are (x, y, width, height) in pixels, (x, y) the top-left corner; "
            "mask is the union of the boxes; marker_mask the pixels the shortcut "
            "marker set (all False without one); opacity_mask the union of the "
            "opacities' own masks. Splits are disjoint index ranges "
            f"(train, validation, test) of one seed. Parameters: {json.dumps(params)}"),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.float32),
            "label": tfds.features.ClassLabel(names=["normal", "opacity"]),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            "mask": tfds.features.Tensor(shape=(size, size), dtype=np.bool_),
            "marker_mask": tfds.features.Tensor(shape=(size, size), dtype=np.bool_),
            "opacity_mask": tfds.features.Tensor(shape=(size, size), dtype=np.bool_),
            "id": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(generator=params),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    c = self.builder_config
    ranges = synthetic.split_ranges(c.num_train, c.num_validation, c.num_test)
    return {split: self._generate_examples(start, count, split)
            for split, (start, count) in ranges.items() if count > 0}

  def _generate_examples(self, start: int, count: int, split: str
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    c = self.builder_config
    for index in progress.track(range(start, start + count),
                                f"synthetic_cxr {split} phantoms", unit="img"):
      e = synthetic.phantom(c.seed, index, image_size=c.image_size,
                            prevalence=c.prevalence, shortcut=c.shortcut)
      # Integer keys: with disable_shuffling, records are stored in key order.
      yield index, dict(image=e["image"], label=e["label"], boxes=e["boxes"],
                        mask=e["mask"], marker_mask=e["marker_mask"],
                        opacity_mask=e["opacity_mask"], id=e["id"])
