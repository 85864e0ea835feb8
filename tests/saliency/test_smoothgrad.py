"""SmoothGrad (and its variants, and SmoothGrad-IG) against known answers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import models
from saliency_jax.saliency import gradient as gradient_lib
from saliency_jax.saliency import gradient_x_input as gxi_lib
from saliency_jax.saliency import integrated_gradients as ig_lib
from saliency_jax.saliency import smoothgrad as sg_lib
from saliency_jax.saliency import smoothgrad_ig as sgig_lib


@functools.lru_cache(maxsize=None)
def _model():
  return models.create("small_cnn", num_classes=3, in_channels=3, width=0.125,
                       rngs=nnx.Rngs(0))


def _image(seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (16, 16, 3)).astype(
      np.float32)


WEIGHTS = np.random.default_rng(0).normal(size=(2, 16 * 16 * 3)).astype(
    np.float32)


def _linear(x):
  return jnp.asarray(WEIGHTS) @ x.reshape(-1)


def test_zero_noise_gives_the_gradient_its_square_and_zero_variance():
  x = _image()
  grad = np.asarray(gradient_lib.gradient(_model(), x, 1))
  assert np.abs(grad).max() > 0
  kw = dict(num_samples=4, noise_level=0.0)
  np.testing.assert_allclose(sg_lib.smoothgrad(_model(), x, 1, **kw), grad,
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
      sg_lib.smoothgrad(_model(), x, 1, squared=True, **kw), grad ** 2,
      rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(
      sg_lib.smoothgrad(_model(), x, 1, vargrad=True, **kw), 0.0,
      atol=1e-6 * float(np.max(grad ** 2)))
  np.testing.assert_allclose(
      sgig_lib.smoothgrad_ig(_model(), x, 1, steps=5, **kw),
      ig_lib.integrated_gradients(_model(), x, 1, steps=5), rtol=1e-5,
      atol=1e-7)


def test_noise_is_deterministic_per_key_and_differs_across_keys():
  x = _image()
  run = functools.partial(sg_lib.smoothgrad, _model(), x, 0, num_samples=5)
  a = run(key=jax.random.key(0))
  np.testing.assert_array_equal(a, run(key=jax.random.key(0)))
  assert not np.allclose(a, run(key=jax.random.key(1)))
  assert not np.allclose(a, gradient_lib.gradient(_model(), x, 0))


def test_smoothgrad_is_mean_and_vargrad_is_variance_of_noisy_maps():
  # On a linear model the noisy gradient x input is (x + e_j) * w: SmoothGrad
  # returns (x + mean e) * w and VarGrad var(e) * w^2 with the same noise.
  x, w = _image(), WEIGHTS[1].reshape(16, 16, 3)
  key = jax.random.key(3)
  run = functools.partial(sg_lib.smoothgrad, _linear, x, 1, key=key,
                          num_samples=64, noise_level=0.2,
                          base="gradient_x_input")
  mean_noise = run() / w - x
  var = run(vargrad=True)
  sigma = 0.2 * (x.max() - x.min())
  assert abs(float(jnp.std(mean_noise)) - sigma / 8) < 0.1 * sigma / 8
  assert abs(float(jnp.mean(var / w ** 2)) - sigma ** 2) < 0.1 * sigma ** 2
  squared = run(squared=True)
  np.testing.assert_allclose(squared, var + run() ** 2, rtol=1e-3,
                             atol=1e-5 * float(np.max(squared)))


def test_smoothgrad_ig_adds_noise_to_the_image_not_the_baseline():
  # Linear model: IG(x + e; b) = (x + e - b) w, and the clean image's minimum
  # stays the baseline, so SmoothGrad-IG = SmoothGrad(gradient x input) - b w.
  x, w = _image(), WEIGHTS[0].reshape(16, 16, 3)
  kw = dict(key=jax.random.key(7), num_samples=6, noise_level=0.3)
  got = sgig_lib.smoothgrad_ig(_linear, x, 0, steps=3, baseline="black", **kw)
  want = sg_lib.smoothgrad(_linear, x, 0, base=gxi_lib.gradient_x_input,
                           **kw) - x.min() * w
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The generic wrapper with the *name* 'black' re-reads the noisy minimum.
  noisy_min = sg_lib.smoothgrad(_linear, x, 0, base="integrated_gradients",
                                steps=3, baseline="black", **kw)
  assert not np.allclose(got, noisy_min, rtol=1e-3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(noise_level=0.1), "needs a `key`"),
    (dict(key=jax.random.key(0), squared=True, vargrad=True), "exclusive"),
    (dict(key=jax.random.key(0), num_samples=0), "num_samples"),
    (dict(key=jax.random.key(0), noise_level=-0.1), "noise_level"),
    (dict(key=jax.random.key(0), base="magic"), "unknown base method"),
])
def test_smoothgrad_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    sg_lib.smoothgrad(_linear, _image(), 0, **kwargs)
