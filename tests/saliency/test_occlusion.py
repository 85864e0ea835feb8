"""Occlusion against brute-force loops (ours and PAIR's)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.saliency import occlusion as occlusion_lib

_A = np.random.default_rng(0).normal(size=(9, 7, 2)).astype(np.float32)


def _f(x):
  return jnp.stack([jnp.sum(jnp.tanh(x * _A)), jnp.sum(jnp.sin(2 * x) * _A)])


def _f_np(x):
  return np.array([np.sum(np.tanh(x * _A)), np.sum(np.sin(2 * x) * _A)])


def _image():
  return np.random.default_rng(1).uniform(-1, 1, _A.shape).astype(np.float32)


def _starts(n, k, s):
  return sorted(set(range(0, n - k + 1, s)) | {n - k})


def _brute_force(x, target, window, stride, value, reduce):
  h, w, _ = x.shape
  total, count = np.zeros((h, w)), np.zeros((h, w))
  f0 = _f_np(x.astype(np.float64))[target]
  for r in _starts(h, window[0], stride[0]):
    for c in _starts(w, window[1], stride[1]):
      occluded = x.astype(np.float64)
      occluded[r:r + window[0], c:c + window[1]] = value
      total[r:r + window[0], c:c + window[1]] += f0 - _f_np(occluded)[target]
      count[r:r + window[0], c:c + window[1]] += 1
  out = total / count if reduce == "mean" else total
  return np.repeat(out[..., None], x.shape[-1], -1)


def _pair_occlusion(x, target, size, value):
  """PAIR saliency 0.2.1 ``Occlusion.GetMask``, transcribed (stride 1, sum)."""
  window = np.full((size, size, x.shape[2]), value)
  scores = np.zeros_like(x, dtype=np.float64)
  original = _f_np(x.astype(np.float64))[target]
  for row in range(1 + x.shape[0] - size):
    for col in range(1 + x.shape[1] - size):
      occluded = np.array(x, dtype=np.float64)
      occluded[row:row + size, col:col + size, :] = window
      scores[row:row + size, col:col + size, :] += (
          original - _f_np(occluded)[target])
  return scores


@pytest.mark.parametrize("window,stride", [(3, 1), (3, 2), ((4, 2), (3, 2)),
                                           ((5, 4), 4), ((9, 7), 5)])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_occlusion_equals_brute_force(window, stride, reduce):
  x = _image()
  pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
  got = occlusion_lib.occlusion(_f, x, 1, window=window, stride=stride,
                                value=0.5, reduce=reduce, batch_size=4,
                                strategy="vectorized")
  want = _brute_force(x, 1, pair(window), pair(stride), 0.5, reduce)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_occlusion_sum_matches_pair():
  x = _image()
  got = occlusion_lib.occlusion(_f, x, 0, window=4, stride=1, value=0.0,
                                reduce="sum")
  np.testing.assert_allclose(got, _pair_occlusion(x, 0, 4, 0.0), rtol=1e-4,
                             atol=1e-4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(window=10), "larger than the image"),
    (dict(window=0), "window must be a positive integer"),
    (dict(stride=(1, 2, 3)), "stride must be an int or a pair"),
    (dict(reduce="max"), "reduce must be one of"),
    (dict(window=3, value="black"), "value must be a number"),
])
def test_occlusion_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    occlusion_lib.occlusion(_f, _image(), 0, **kwargs)
