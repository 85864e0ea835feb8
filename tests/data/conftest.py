"""Builds manual-download datasets from mock trees into a per-test TFDS data dir."""

from __future__ import annotations

import pytest

from saliency_jax.data import manual, pipeline


@pytest.fixture
def build(tmp_path):
  """``build(name, manual_dir, **options)`` -> {split: arrays}, plus the dataset metadata."""
  counter = iter(range(1000))

  def _build(name, manual_dir, *, fresh=True, **options):
    options.setdefault("num_workers", 0)
    options.setdefault("image_size", 64)
    data_dir = str(tmp_path / f"tfds{next(counter) if fresh else 0}")
    splits = {s: pipeline.load_split(name, s, data_dir=data_dir, manual_dir=str(manual_dir),
                                     **options) for s in manual.SPLITS}
    meta = pipeline.dataset_metadata(name, data_dir=data_dir, manual_dir=str(manual_dir),
                                     **options)
    return splits, meta

  return _build
