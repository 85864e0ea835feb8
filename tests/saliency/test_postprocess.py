"""Post-processing against NumPy."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from saliency_jax.saliency import postprocess as pp


def _map(seed=0, shape=(12, 10, 3)):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("how,fn", [
    ("abs_sum", lambda m: np.abs(m).sum(-1)), ("sum", lambda m: m.sum(-1)),
    ("max", lambda m: m.max(-1)), ("abs_max", lambda m: np.abs(m).max(-1))])
def test_reduce_channels_matches_numpy(how, fn):
  m = _map()
  np.testing.assert_allclose(pp.reduce_channels(m, how), fn(m), rtol=1e-6)


@pytest.mark.parametrize("percentile", [99.0, 90.0, 50.0])
def test_percentile_clips_equal_numpy(percentile):
  m = _map()[..., 0]
  np.testing.assert_allclose(
      pp.percentile_clip(m, percentile),
      np.clip(m, None, np.percentile(m, percentile)), rtol=1e-5)
  span = np.percentile(np.abs(m), percentile)
  np.testing.assert_allclose(pp.abs_percentile_clip(m, percentile),
                             np.clip(m, -span, span), rtol=1e-5)


def test_normalizations_hit_their_ranges():
  m = _map()[..., 0]
  unit = np.asarray(pp.normalize_unit(m))
  assert unit.min() == 0.0 and abs(unit.max() - 1.0) < 1e-6
  np.testing.assert_allclose(unit, (m - m.min()) / (m.max() - m.min()),
                             rtol=1e-5, atol=1e-7)
  signed = np.asarray(pp.normalize_signed(m))
  assert abs(np.abs(signed).max() - 1.0) < 1e-6
  np.testing.assert_array_equal(np.sign(signed), np.sign(m))
  np.testing.assert_array_equal(pp.normalize_unit(np.full((3, 3), 2.0)), 0.0)
  np.testing.assert_array_equal(pp.normalize_signed(np.zeros((3, 3))), 0.0)


def test_postprocess_default_is_arun_pipeline_and_vmaps():
  m = _map(1)
  r = np.abs(m).sum(-1)
  r = np.clip(r, None, np.percentile(r, 99))
  want = (r - r.min()) / (r.max() - r.min())
  got = pp.postprocess(m)
  assert got.shape == (12, 10)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  batch = np.stack([_map(s) for s in range(3)])
  np.testing.assert_allclose(jax.vmap(pp.postprocess)(batch)[1], got,
                             rtol=1e-6)
  signed = pp.postprocess(m, reduce="sum", normalize="signed", size=(6, 5))
  assert signed.shape == (6, 5) and float(np.abs(signed).max()) <= 1.0 + 1e-6
  assert float(signed.min()) < 0 < float(signed.max())


@pytest.mark.parametrize("kwargs,match", [
    (dict(reduce="mean"), "reduce must be one of"),
    (dict(normalize="minmax"), "normalize must be one of"),
    (dict(clip_percentile=120.0), "percentile must be in"),
])
def test_postprocess_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pp.postprocess(_map(), **kwargs)
