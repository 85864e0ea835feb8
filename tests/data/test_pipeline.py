"""TFDS round trip without TensorFlow, and pure-JAX batching and augmentation."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.data import pipeline, synthetic

TINY = dict(image_size=32, num_train=6, num_validation=4, num_test=3, seed=11)


def test_tfds_round_trip_is_bit_exact(tmp_path):
  data_dir = str(tmp_path)
  ranges = synthetic.split_ranges(TINY["num_train"], TINY["num_validation"], TINY["num_test"])
  for split, (start, count) in ranges.items():
    got = pipeline.load_split("synthetic_cxr", split, data_dir=data_dir, **TINY)
    want = synthetic.generate(TINY["seed"], start, count, image_size=TINY["image_size"])
    assert got.keys() == want.keys()
    for k in want:
      assert got[k].dtype == want[k].dtype, k
      np.testing.assert_array_equal(got[k], want[k], err_msg=f"{split}/{k}")
  assert "tensorflow" not in sys.modules


def test_other_config_gets_its_own_files(tmp_path):
  data_dir = str(tmp_path)
  first = pipeline.load_split("synthetic_cxr", "train", data_dir=data_dir, **TINY)
  files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
  other = pipeline.load_split("synthetic_cxr", "train", data_dir=data_dir,
                              **dict(TINY, prevalence=0.9))
  variants = sorted(p.name for p in (tmp_path / "synthetic_cxr").iterdir()
                    if not p.name.startswith("."))
  assert variants == ["s32-n6-4-3-p0.5-noshortcut-seed11", "s32-n6-4-3-p0.9-noshortcut-seed11"]
  assert not np.array_equal(first["label"], other["label"])
  want = synthetic.generate(11, 0, 6, image_size=32, prevalence=0.9)
  np.testing.assert_array_equal(other["label"], want["label"])
  np.testing.assert_array_equal(other["image"], want["image"])
  # Reading the first config again reuses its files and gives its data back.
  again = pipeline.load_split("synthetic_cxr", "train", data_dir=data_dir, **TINY)
  np.testing.assert_array_equal(again["image"], first["image"])
  assert all(p.exists() for p in files)


def test_load_split_rejects_bad_names(tmp_path):
  with pytest.raises(ValueError, match="config.dataset='mnist'.*synthetic_cxr"):
    pipeline.load_split("mnist", "train", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="unknown builder options.*'colour'"):
    pipeline.load_split("synthetic_cxr", "train", data_dir=str(tmp_path), colour=1)
  with pytest.raises(ValueError, match="no split 'test'"):
    pipeline.load_split("synthetic_cxr", "test", data_dir=str(tmp_path),
                        **dict(TINY, num_test=0))


def test_epoch_indices_cover_every_example_once():
  n, b = 23, 5
  indices, valid = pipeline.epoch_indices(jax.random.key(0), n, b)
  assert indices.shape == valid.shape == (5, 5) and indices.dtype == jnp.int32
  assert int(valid.sum()) == n
  np.testing.assert_array_equal(np.sort(np.asarray(indices)[np.asarray(valid)]), np.arange(n))
  assert not np.asarray(indices)[~np.asarray(valid)].any()  # padding is index 0
  assert not np.array_equal(np.asarray(indices).ravel()[:n], np.arange(n))  # shuffled
  other, _ = pipeline.epoch_indices(jax.random.key(1), n, b)
  assert not np.array_equal(other, indices)

  plain, _ = pipeline.epoch_indices(jax.random.key(0), n, b, shuffle=False)
  np.testing.assert_array_equal(np.asarray(plain).ravel()[:n], np.arange(n))

  full, full_valid = pipeline.epoch_indices(jax.random.key(0), n, b, drop_remainder=True)
  assert full.shape == (4, 5) and bool(full_valid.all())
  assert len(np.unique(np.asarray(full))) == 20


def test_batch_at_step_is_a_function_of_key_and_step():
  key, n, b = jax.random.key(3), 22, 4  # 5 steps per epoch, 2 examples dropped
  steps = [np.asarray(pipeline.batch_at_step(key, t, n, b)) for t in range(10)]
  for epoch in range(2):
    seen = np.concatenate(steps[5 * epoch:5 * epoch + 5])
    assert len(np.unique(seen)) == 20 and seen.max() < n  # at most once per epoch
    rows, _ = pipeline.epoch_indices(jax.random.fold_in(key, epoch), n, b,
                                     drop_remainder=True)
    np.testing.assert_array_equal(np.stack(steps[5 * epoch:5 * epoch + 5]), rows)
  assert not np.array_equal(steps[0], steps[5])  # a new permutation each epoch

  traced = jax.jit(lambda t: pipeline.batch_at_step(key, t, n, b))
  for t in (0, 7, 123):
    np.testing.assert_array_equal(traced(jnp.int32(t)), pipeline.batch_at_step(key, t, n, b))
  with pytest.raises(ValueError, match="batch_size"):
    pipeline.batch_at_step(key, 0, 3, 4)


def test_augment_keeps_format_and_is_deterministic():
  images = jnp.asarray(synthetic.generate(0, 0, 4, image_size=32)["image"])
  out = pipeline.augment(jax.random.key(0), images)
  assert out.shape == images.shape and out.dtype == images.dtype
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  np.testing.assert_array_equal(out, pipeline.augment(jax.random.key(0), images))
  assert not np.array_equal(out, pipeline.augment(jax.random.key(1), images))
  # Small: a few percent of intensity and a few pixels of shift.
  assert float(jnp.abs(out.mean() - images.mean())) < 0.05
  np.testing.assert_allclose(
      pipeline.augment(jax.random.key(0), images, max_shift=0, brightness=0.0, contrast=0.0),
      images, atol=1e-6)


def test_augment_translates_with_edge_padding():
  images = jax.random.uniform(jax.random.key(1), (6, 10, 12, 1))
  out = np.asarray(pipeline.augment(jax.random.key(2), images, max_shift=3, brightness=0.0,
                                    contrast=0.0))
  # gain 1 and offset 0 still round (x - mean) + mean: compare to float32 precision.
  m = 3
  for image, result in zip(np.asarray(images), out):
    padded = np.pad(image, ((m, m), (m, m), (0, 0)), mode="edge")
    shifts = [(dy, dx) for dy in range(-m, m + 1) for dx in range(-m, m + 1)
              if np.allclose(result, padded[m - dy:m - dy + 10, m - dx:m - dx + 12], atol=1e-6)]
    assert shifts, "output is not an edge-padded translate of the input"
  assert len({tuple(np.asarray(r).ravel()[:5]) for r in out}) > 1  # per-image keys
