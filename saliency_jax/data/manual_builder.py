"""The TFDS side the three manual-download builders share: one config, one info.

Kept apart from `manual` so that decoding workers never import TFDS.
"""

from __future__ import annotations

import contextlib

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds

from saliency_jax.data import manual


@dataclasses.dataclass(eq=False)
class ManualConfig(tfds.core.BuilderConfig):
  """Build options of a manual-download dataset (see ``config.real_data``)."""

  image_size: int = 320
  classes: str | None = None  # RSNA only
  split_seed: int = 0
  split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
  split_dir: str | None = None
  on_bad_input: str = "error"
  num_workers: int | None = None


def make_config(*, manual_dir: str, label_files: Sequence[tuple[str, str]],
                image_size: int = 320, classes: str | None = None, split_seed: int = 0,
                split_fractions=(0.8, 0.1, 0.1), split_dir: str | None = None,
                on_bad_input: str = "error", num_workers: int | None = None,
                stamp_extra: str = "") -> ManualConfig:
  """A config named by its options and a fingerprint of the label and split files.

  ``label_files`` are ``(file name in manual_dir, what it should hold)``; a
  missing one is an error naming it. Editing a label or split file changes the
  name, so a stale build is never reused. ``num_workers`` is not in the name:
  it does not change the data.
  """
  manual.Problems(on_bad_input)  # validates the mode
  paths = [manual.require_file(os.path.join(manual_dir, name), what)
           for name, what in label_files]
  split_files = ([os.path.join(split_dir, f"{s}.txt") for s in manual.SPLITS]
                 if split_dir else [])
  for path in split_files:
    manual.require_file(path, "one id per line (config.real_data.split_dir)")
  fractions = tuple(float(f) for f in split_fractions)
  splits = "files" if split_dir else "-".join(f"{100 * f:g}" for f in fractions)
  stamp = manual.fingerprint(paths + split_files, extra=stamp_extra)
  params = dict(image_size=int(image_size), classes=classes, split_seed=int(split_seed),
                split_fractions=fractions, split_dir=split_dir, on_bad_input=on_bad_input)
  name = "-".join(p for p in (f"s{image_size}", classes, f"split{split_seed}", splits,
                              f"labels{stamp}", on_bad_input) if p)
  return ManualConfig(name=name, description=json.dumps(params), num_workers=num_workers,
                      **params)


def info(builder: tfds.core.GeneratorBasedBuilder, *, description: str,
         label_names: Sequence[str], text_fields: Sequence[str] = (),
         homepage: str | None = None) -> tfds.core.DatasetInfo:
  """The DatasetInfo every manual builder returns; skip counts go into its metadata."""
  return builder.dataset_info_from_configs(
      description=description,
      features=manual.features(builder.builder_config.image_size, label_names, text_fields),
      metadata=tfds.core.MetadataDict(),
      # Records in key order (sorted ids within a split): reproducible files.
      disable_shuffling=True,
      homepage=homepage,
  )


def split_generators(builder: tfds.core.GeneratorBasedBuilder,
                     tasks: dict[str, list[manual.Task]], problems: manual.Problems,
                     *, manual_dir: str, **metadata) -> dict:
  """Checks no split is empty, records the metadata so far, returns the generators.

  The metadata holds ``metadata``, the skip counts of ``problems`` and the
  positives without a mask pixel (:class:`manual.EmptyMasks`), updated as the
  splits are written.
  """
  manual.check_nonempty({s: len(t) for s, t in tasks.items()},
                        f"{manual_dir} ({builder.name})")
  empty = manual.EmptyMasks(builder.builder_config.image_size)
  builder.info.metadata.update(metadata, **problems.metadata(), **empty.metadata())
  return {split: _generate(builder, split, split_tasks, problems, empty, manual_dir)
          for split, split_tasks in tasks.items()}


def _generate(builder: tfds.core.GeneratorBasedBuilder, split: str,
              tasks: Sequence[manual.Task], problems: manual.Problems,
              empty: manual.EmptyMasks, manual_dir: str
              ) -> Iterator[tuple[int, dict[str, Any]]]:
  """``(index, record)`` for the tasks that decode; the others go to ``problems``.

  Raises when every example of the split was skipped; the metadata is
  updated after each split, before TFDS writes it at the end of the build.
  """
  count = 0
  # Closed here when a bad input stops the build: its worker pool then shuts
  # down now, not at interpreter exit (where that fails with a traceback).
  with contextlib.closing(manual.parallel_map(
      manual.load_example, tasks, num_workers=builder.builder_config.num_workers,
      desc=f"{builder.name} {split}")) as results:
    for index, result in enumerate(results):
      if isinstance(result, manual.Bad):
        problems.record(result.kind, result.where, result.what)
        continue
      count += 1
      empty.record(split, result)
      yield index, result.record
  if count == 0:
    raise manual.BadInputError(
        f"{manual_dir} ({builder.name}): split {split!r} is empty after skipping all "
        f"{len(tasks)} of its images; first problems: {problems.examples[:3]}")
  builder.info.metadata.update(problems.metadata(), **empty.metadata())
