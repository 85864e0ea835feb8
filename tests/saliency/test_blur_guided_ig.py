"""Tests for saliency_jax.saliency.blur_ig and .guided_ig."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from saliency_jax import models
from saliency_jax.saliency import blur_ig as blur_ig_lib
from saliency_jax.saliency import guided_ig as guided_ig_lib
from saliency_jax.saliency.explainee import from_model
from saliency_jax.saliency.integrated_gradients import baseline_for


def _pair_guided_ig(x_input, x_baseline, grad_func, steps, fraction, max_dist):
  """PAIR saliency 0.2.1 `guided_ig_impl`, literally (float64 NumPy)."""
  x_input = np.asarray(x_input, np.float64)
  x_baseline = np.asarray(x_baseline, np.float64)
  x = x_baseline.copy()
  l1_total = np.abs(x_input - x_baseline).sum()
  attr = np.zeros_like(x_input)
  total_diff = x_input - x_baseline
  if l1_total == 0:
    return attr
  for step in range(steps):
    grad_actual = grad_func(x)
    grad = grad_actual.copy()
    alpha = (step + 1.0) / steps
    alpha_min = max(alpha - max_dist, 0.0)
    alpha_max = min(alpha + max_dist, 1.0)
    x_min = x_baseline + total_diff * alpha_min
    x_max = x_baseline + total_diff * alpha_max
    l1_target = l1_total * (1 - (step + 1) / steps)
    gamma = np.inf
    while gamma > 1.0:
      x_old = x.copy()
      with np.errstate(divide="ignore", invalid="ignore"):
        x_alpha = np.where(total_diff != 0, (x - x_baseline) / total_diff,
                           np.nan)
      x_alpha[np.isnan(x_alpha)] = alpha_max
      x[x_alpha < alpha_min] = x_min[x_alpha < alpha_min]
      l1_current = np.abs(x - x_input).sum()
      if math.isclose(l1_target, l1_current, rel_tol=1e-9, abs_tol=1e-9):
        attr += (x - x_old) * grad_actual
        break
      grad[x == x_max] = np.inf
      threshold = np.quantile(np.abs(grad), fraction, method="lower")
      s = np.logical_and(np.abs(grad) <= threshold, grad != np.inf)
      l1_s = (np.abs(x - x_max) * s).sum()
      gamma = (l1_current - l1_target) / l1_s if l1_s > 0 else np.inf
      if gamma > 1.0:
        x[s] = x_max[s]
      else:
        assert gamma > 0, gamma
        x[s] = (x + (x_max - x) * gamma)[s]
      attr += (x - x_old) * grad_actual
  return attr


def _analytic(w):
  """f(x) = [sum(w tanh(x) + 0.1 x^2), 0] and its gradient, in JAX and NumPy."""
  def logits(x):
    return jnp.stack([jnp.sum(w * jnp.tanh(x) + 0.1 * x ** 2), 0.0 * x.sum()])

  def grad(x):
    return np.asarray(w) / np.cosh(x) ** 2 + 0.2 * x
  return logits, grad


def test_guided_ig_linear_model_equals_ig():
  # A linear f has a constant gradient w, so any path from x' to x gives
  # sum_k (x_k - x_{k-1}) w = (x - x') w: Guided IG must return exactly IG.
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(8, 8, 2)), jnp.float32)
  x = jnp.asarray(rng.uniform(-1, 1, (8, 8, 2)), jnp.float32)

  def f(z):
    return jnp.stack([jnp.sum(w * z), -jnp.sum(w * z)])

  for baseline in ("zeros", "black", 0.3):
    attr = guided_ig_lib.guided_ig(f, x, 1, steps=20, baseline=baseline)
    x0 = baseline_for(x, baseline)
    np.testing.assert_allclose(attr, -w * (x - x0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fraction,max_dist", [(0.25, 0.02), (0.1, 0.2)])
def test_guided_ig_matches_pair_float64(fraction, max_dist):
  rng = np.random.default_rng(1)
  w = rng.normal(size=(6, 7, 2))
  x = rng.uniform(-2, 2, (6, 7, 2))
  x[0, 0, 0] = 0.0  # a feature equal to the baseline
  logits, grad = _analytic(w)
  want = _pair_guided_ig(x, np.zeros_like(x), grad, 30, fraction, max_dist)
  with jax.enable_x64(True):
    got = guided_ig_lib.guided_ig(logits, jnp.asarray(x), 0, steps=30,
                                  fraction=fraction, max_dist=max_dist)
    assert got.dtype == jnp.float64
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
  # And it is not just IG: the guided path differs from the straight one.
  assert np.abs(want - x * grad(0.5 * x)).max() > 1e-2


@pytest.fixture(scope="module")
def cnn():
  return from_model(models.create("small_cnn", num_classes=2, in_channels=1,
                                  width=0.125, rngs=nnx.Rngs(0)))


def _smooth_images(n, size=32, seed=0):
  """Sums of random Gaussian bumps in [-1, 1]: what a blur path can explain."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size] / size
  out = np.zeros((n, size, size, 1), np.float32)
  for i in range(n):
    for cy, cx, r, v in rng.uniform(0, 1, (5, 4)):
      out[i, ..., 0] += (2 * v - 1) * np.exp(
          -((yy - cy) ** 2 + (xx - cx) ** 2) / (0.01 + 0.05 * r))
  return jnp.asarray(np.clip(out, -1, 1))


def test_guided_ig_without_deviation_is_left_riemann_ig(cnn):
  # max_dist = 0 pins every feature to the straight line: step k moves all of
  # them from alpha = k/n to (k+1)/n, i.e. IG with the left Riemann sum.
  x = _smooth_images(1)[0]
  got = guided_ig_lib.guided_ig(cnn, x, 0, steps=32, max_dist=0.0)
  grad = jax.jit(jax.vmap(jax.grad(lambda z: cnn.logits(z)[0])))(
      jnp.arange(32.0)[:, None, None, None] / 32 * x)
  np.testing.assert_allclose(got, x * grad.mean(0), rtol=1e-4, atol=1e-6)


def test_guided_ig_completeness_on_cnn(cnn):
  # Selected features jump up to 2 max_dist in alpha per step whatever the
  # step count, with the gradient of the step's start: the sum misses
  # f(x) - f(x') by O(max_dist) (on this random ReLU net, most of the gap at
  # PAIR's 0.02), and closes in as the path straightens.
  x = _smooth_images(2)[1]
  gap = cnn.logits(x)[0] - cnn.logits(jnp.zeros_like(x))[0]
  assert abs(gap) > 0.05
  errors = [abs(guided_ig_lib.guided_ig(cnn, x, 0, steps=100,
                                        max_dist=d).sum() - gap) / abs(gap)
            for d in (0.02, 0.005, 0.002)]
  assert errors[0] > errors[1] > errors[2]
  assert errors[2] < 0.02


def test_guided_ig_completeness_on_smooth_separable_model():
  # Without interactions between features the big jumps cost only O(step^2)
  # per feature: PAIR's defaults then keep completeness to ~1%.
  rng = np.random.default_rng(1)
  logits, _ = _analytic(rng.normal(size=(6, 7, 2)))
  x = jnp.asarray(rng.uniform(-2, 2, (6, 7, 2)), jnp.float32)
  attr = guided_ig_lib.guided_ig(logits, x, 0)
  gap = logits(x)[0] - logits(jnp.zeros_like(x))[0]
  np.testing.assert_allclose(attr.sum(), gap, rtol=0.01)


def test_guided_ig_vmap_equals_per_image(cnn):
  xs = _smooth_images(3)

  def run(x, t):
    return guided_ig_lib.guided_ig(cnn, x, t, steps=32)

  targets = jnp.array([0, 1, 0])
  attrs = jax.jit(jax.vmap(run))(xs, targets)
  for x, t, attr in zip(xs, targets, attrs):
    assert jnp.all(jnp.isfinite(attr)) and jnp.any(attr != 0)
    np.testing.assert_allclose(attr, run(x, t), rtol=1e-4, atol=1e-6)


def _pair_blur_ig(x, grad_func, max_sigma, steps, grad_step):
  """PAIR saliency 0.2.1 `BlurIG.GetMask` (batch_size=1), literally."""
  def blur(image, sigma):
    if sigma == 0:
      return image
    return ndimage.gaussian_filter(image, sigma=[sigma, sigma, 0],
                                   mode="constant")
  sigmas = [float(i) * max_sigma / float(steps) for i in range(steps + 1)]
  total = np.zeros_like(x)
  for i in range(steps):
    x_step = blur(x, sigmas[i])
    gaussian_gradient = (blur(x, sigmas[i] + grad_step) - x_step) / grad_step
    total += (sigmas[i + 1] - sigmas[i]) * gaussian_gradient * grad_func(x_step)
  return -total


@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.2, 0.5, 1.3, 7.0, 50.0])
def test_blur_matches_scipy_gaussian_filter(sigma):
  x = np.random.default_rng(0).normal(size=(40, 27, 2)).astype(np.float32)
  radius = blur_ig_lib._radius(sigma)
  got = blur_ig_lib._blur(jnp.asarray(x), jnp.float32(sigma), radius, 201)
  want = ndimage.gaussian_filter(x.astype(np.float64), [sigma, sigma, 0],
                                 mode="constant")
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_blur_ig_matches_pair():
  rng = np.random.default_rng(2)
  w = rng.normal(size=(12, 10, 2))
  x = rng.uniform(-1, 1, (12, 10, 2))
  logits, grad = _analytic(w)
  want = _pair_blur_ig(x, grad, 20.0, 25, 0.01)
  for strategy, batch_size in (("vectorized", None), ("scan", 7),
                               ("dispatch", 4)):
    got = blur_ig_lib.blur_ig(logits, jnp.asarray(x, jnp.float32), 0,
                              max_sigma=20.0, steps=25, strategy=strategy,
                              batch_size=batch_size)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_blur_ig_completeness_on_cnn(cnn):
  x = _smooth_images(1, seed=2)[0]
  attr = blur_ig_lib.blur_ig(cnn, x, 0, steps=200, strategy="vectorized")
  blurred = ndimage.gaussian_filter(np.asarray(x), [50, 50, 0], mode="constant")
  gap = cnn.logits(x)[0] - cnn.logits(jnp.asarray(blurred))[0]
  assert jnp.all(jnp.isfinite(attr)) and abs(gap) > 0.03
  np.testing.assert_allclose(attr.sum(), gap, rtol=0.02)


def test_bad_arguments_raise():
  logits, _ = _analytic(np.ones((4, 4, 1)))
  x = jnp.zeros((4, 4, 1))
  with pytest.raises(ValueError, match="max_sigma"):
    blur_ig_lib.blur_ig(logits, x, 0, max_sigma=0)
  with pytest.raises(ValueError, match="steps"):
    blur_ig_lib.blur_ig(logits, x, 0, steps=0)
  with pytest.raises(ValueError, match="fraction"):
    guided_ig_lib.guided_ig(logits, x, 0, fraction=0.0)
  with pytest.raises(ValueError, match="baseline"):
    guided_ig_lib.guided_ig(logits, x, 0, baseline="grey")
  with pytest.raises(ValueError, match="one image"):
    guided_ig_lib.guided_ig(logits, x[..., 0], 0)
