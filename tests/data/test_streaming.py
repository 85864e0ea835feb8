"""Streamed splits: the same batches and rows as the in-memory ones, bounded memory."""

from __future__ import annotations

import os
import threading
import tracemalloc

import jax
import numpy as np
import pytest

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import rng
from saliency_jax.data import mock_downloads, pipeline, streaming
from saliency_jax.experiments import common

TINY = dict(image_size=32, num_train=40, num_validation=8, num_test=24, seed=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


def _assert_same_arrays(got, want):
  assert sorted(got) == sorted(want)
  for k in want:
    assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_training_order_is_batch_at_step():
  key = jax.random.key(7)
  n, b = 23, 5  # 4 steps an epoch, 3 left out of each
  got = list(streaming.training_order(key, 2, 14, n, b))
  assert len(got) == 12
  for step, indices in zip(range(2, 14), got):
    np.testing.assert_array_equal(indices, pipeline.batch_at_step(key, step, n, b))
  with pytest.raises(ValueError, match="batch_size=24 exceeds num_examples=23"):
    next(streaming.training_order(key, 0, 1, n, 24))


def test_reads_equal_the_whole_splits_rows_and_the_index_is_cached(data_dir, monkeypatch):
  whole = pipeline.load_split("synthetic_cxr", "test", data_dir=data_dir, **TINY)
  split = streaming.Split("synthetic_cxr", "test", data_dir=data_dir, **TINY)
  rows = np.array([5, 0, 17, 5])
  _assert_same_arrays(split.read(rows, exact=True), {k: v[rows] for k, v in whole.items()})
  only = split.read(rows, fields=("image", "label"))
  _assert_same_arrays(only, {k: whole[k][rows] for k in ("image", "label")})
  index = split.index()
  np.testing.assert_array_equal(index.label, whole["label"])
  np.testing.assert_array_equal(index.annotated, whole["mask"].any(axis=(1, 2)))
  path = streaming.index_path(split._builder, "test")  # pylint: disable=protected-access
  assert io_utils.read_json(path)["build"] == split._builder.info.full_name  # pylint: disable=protected-access
  # A later process reads the file, not the records.
  monkeypatch.setattr(streaming, "_INDEX_CACHE", {})
  monkeypatch.setattr(streaming, "_index_pass", lambda *a: pytest.fail("index recomputed"))
  again = streaming.Split("synthetic_cxr", "test", data_dir=data_dir, **TINY).index()
  np.testing.assert_array_equal(again.annotated, index.annotated)
  with pytest.raises(IndexError, match=r"record indices must lie in \[0, 24\)"):
    split.read([24])


def test_reads_of_a_real_data_layout_equal_its_rows(tmp_path):
  # uint16 images, header strings of several lengths, RSNA's class column.
  root = tmp_path / "rsna"
  mock_downloads.write_rsna(str(root), num_patients=40, image_size=32)
  options = dict(data_dir=str(tmp_path / "tfds"), manual_dir=str(root), image_size=32,
                 num_workers=0, classes="all")
  whole = pipeline.load_split("rsna_pneumonia", "train", **options)
  split = streaming.Split("rsna_pneumonia", "train", num_examples=10, **options)
  assert split.num_examples == 10 and split.image_bytes == 10 * 32 * 32 * 4
  rows = np.array([9, 2, 3])
  _assert_same_arrays(split.read(rows, exact=True), {k: v[rows] for k, v in whole.items()})
  np.testing.assert_array_equal(split.index().label, whole["label"][:10])


def test_evaluation_images_are_those_chosen_from_the_whole_split(data_dir):
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "localization.py"),
                                "quick")
  config.data_dir = data_dir
  config.image_size = TINY["image_size"]
  config.synthetic.update(num_train=TINY["num_train"], num_validation=TINY["num_validation"],
                          num_test=TINY["num_test"], seed=TINY["seed"])
  # What evaluation_images chose when it decoded the whole split.
  whole = pipeline.load_split("synthetic_cxr", "test", data_dir=data_dir, **TINY)
  positive = np.flatnonzero((whole["label"] == 1) & whole["mask"].any(axis=(1, 2)))
  assert positive.size >= 4
  config.num_images = positive.size - 2  # a proper subset: the choice matters
  generator = np.random.default_rng(rng.integer_seed(config.seed, rng.SUBSET))
  chosen = np.sort(generator.choice(positive, size=config.num_images, replace=False))
  _assert_same_arrays(common.evaluation_images(config),
                      {k: v[chosen] for k, v in whole.items()})


def test_streamed_batches_hold_a_few_batches_not_the_split(tmp_path):
  size, batch_size = 48, 8
  options = dict(TINY, image_size=size, num_train=384, num_validation=2, num_test=2)
  split = streaming.Split("synthetic_cxr", "train", data_dir=str(tmp_path), **options)
  labels = split.index().label
  batch_bytes = batch_size * size * size * 4
  key = jax.random.key(0)
  steps = split.num_examples // batch_size  # one epoch: every record read once

  def stream():
    total = 0.0
    with streaming.training_batches(split, labels, key, 0, steps, batch_size) as batches:
      for images, _ in batches:
        total += float(images[0, 0, 0, 0])
    return total

  stream()  # compiles the permutation and the transfers outside the measurement
  tracemalloc.start()
  try:
    stream()
    _, streamed_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    chunk = split.read(range(8 * batch_size), fields=("image",))
    _, chunk_peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  print(f"split {split.image_bytes / 2**20:.2f} MiB, batch {batch_bytes / 2**20:.3f} MiB, "
        f"peak streamed {streamed_peak / 2**20:.3f} MiB")
  assert chunk_peak >= chunk["image"].nbytes == 8 * batch_bytes  # numpy's memory is traced
  # The prefetch queue (4), the batch in use and the one being read, with slack.
  assert streamed_peak < 10 * batch_bytes
  assert streamed_peak < split.image_bytes / 4


def test_prefetcher_keeps_order_raises_at_the_bad_item_and_stops_early():
  with streaming.Prefetcher(lambda i: i * i, range(50), depth=2) as p:
    assert list(p) == [i * i for i in range(50)]

  def read(i):
    if i == 3:
      raise OSError("record 3 is damaged")
    return i

  got = []
  with pytest.raises(OSError, match="record 3 is damaged"):
    with streaming.Prefetcher(read, range(10)) as p:
      for value in p:
        got.append(value)
  assert got == [0, 1, 2]
  before = threading.active_count()
  with streaming.Prefetcher(lambda i: i, range(10**9), depth=2) as p:
    assert next(iter(p)) == 0
  assert threading.active_count() <= before


def test_data_in_memory_setting():
  limit = streaming.IN_MEMORY_LIMIT_BYTES
  assert streaming.keep_in_memory("auto", limit - 1)
  assert not streaming.keep_in_memory("auto", limit)
  assert streaming.keep_in_memory(True, 10 * limit)
  assert not streaming.keep_in_memory(False, 1)
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "train.py"), "quick")
  assert config.train.data_in_memory == "auto"
  config_lib.validate(config)
  config.train.data_in_memory = False
  config_lib.validate(config)
  config.train.data_in_memory = "yes"
  with pytest.raises(errors.ConfigError, match=r"^config\.train\.data_in_memory='yes'"):
    config_lib.validate(config)
