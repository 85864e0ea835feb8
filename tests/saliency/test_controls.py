"""Control maps: random, Sobel edges (vs scipy), center prior."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import ndimage

from saliency_jax.saliency import controls


def _image(shape=(13, 11, 3)):
  return np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(13, 11, 3), (8, 8, 1)])
def test_edge_equals_scipy_sobel_magnitude(shape):
  x = _image(shape)
  want = np.stack([np.hypot(ndimage.sobel(x[..., c].astype(np.float64), 0),
                            ndimage.sobel(x[..., c].astype(np.float64), 1))
                   for c in range(shape[-1])], -1)
  got = controls.edge(None, x, 0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Channel-summed, as the abs_sum reduction of postprocess gives it.
  np.testing.assert_allclose(np.sum(got, -1), want.sum(-1), rtol=1e-5,
                             atol=1e-5)


def test_random_is_uniform_and_reproducible_per_key():
  x = _image((64, 64, 3))
  a = controls.random(None, x, 0, key=jax.random.key(0))
  assert a.shape == x.shape and a.dtype == x.dtype
  assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
  assert abs(float(a.mean()) - 0.5) < 0.01
  np.testing.assert_array_equal(a, controls.random(None, x, 0,
                                                   key=jax.random.key(0)))
  assert not np.allclose(a, controls.random(None, x, 0, key=jax.random.key(1)))
  with pytest.raises(ValueError, match="needs a `key`"):
    controls.random(None, x, 0)


def test_center_prior_is_a_centered_gaussian_or_the_given_prior():
  x = _image((9, 13, 2))
  m = np.asarray(controls.center_prior(None, x, 0, sigma=0.2))
  assert m.shape == x.shape
  assert np.unravel_index(np.argmax(m[..., 0]), (9, 13)) == (4, 6)
  np.testing.assert_allclose(m, m[::-1, ::-1], rtol=1e-6)  # symmetric
  # One sigma (0.2 x 13 columns) away from the center: exp(-1/2).
  cols = np.arange(13) - 6
  np.testing.assert_allclose(m[4, :, 0], np.exp(-0.5 * (cols / 2.6) ** 2),
                             rtol=1e-5)
  prior = np.random.default_rng(1).uniform(size=(9, 13)).astype(np.float32)
  np.testing.assert_allclose(controls.center_prior(None, x, 0, prior=prior),
                             np.repeat(prior[..., None], 2, -1))
  small = controls.center_prior(None, x, 0, prior=np.ones((3, 4, 1)))
  np.testing.assert_allclose(small, 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="prior must be a map"):
    controls.center_prior(None, x, 0, prior=np.ones((9, 13, 2)))
  with pytest.raises(ValueError, match="sigma must be a positive"):
    controls.center_prior(None, x, 0, sigma=0)
