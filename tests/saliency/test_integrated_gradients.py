"""Gradient, gradient x input and Integrated Gradients against known answers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import models
from saliency_jax.saliency import gradient as gradient_lib
from saliency_jax.saliency import gradient_x_input as gxi_lib
from saliency_jax.saliency import integrated_gradients as ig_lib

SHAPE = (6, 5, 2)
WEIGHTS = np.random.default_rng(0).normal(size=(4, np.prod(SHAPE))).astype(
    np.float32)


def _linear(x):
  return jnp.asarray(WEIGHTS) @ x.reshape(-1)


def _image(seed=1, shape=SHAPE):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _cube(x):
  return jnp.sum(x ** 3)[None]


@pytest.mark.parametrize("target", [0, 3])
def test_gradient_of_linear_model_is_its_weights(target):
  x = _image()
  w = WEIGHTS[target].reshape(SHAPE)
  np.testing.assert_allclose(gradient_lib.gradient(_linear, x, target), w,
                             rtol=1e-6)
  np.testing.assert_allclose(gxi_lib.gradient_x_input(_linear, x, target),
                             x * w, rtol=1e-6)


BASELINES = ["zeros", "black", "white", 0.3,
             np.random.default_rng(2).normal(size=SHAPE).astype(np.float32),
             np.linspace(-1, 1, SHAPE[-1], dtype=np.float32)]


@pytest.mark.parametrize("quadrature", ig_lib.QUADRATURES)
@pytest.mark.parametrize("baseline", BASELINES,
                         ids=["zeros", "black", "white", "const", "array",
                              "broadcast"])
def test_ig_of_linear_model_is_difference_times_weights(quadrature, baseline):
  x = _image()
  b = {"zeros": 0.0, "black": x.min(), "white": x.max()}.get(
      baseline, baseline) if isinstance(baseline, str) else baseline
  got = ig_lib.integrated_gradients(_linear, x, 2, steps=7, baseline=baseline,
                                    quadrature=quadrature)
  np.testing.assert_allclose(got, (x - b) * WEIGHTS[2].reshape(SHAPE),
                             rtol=1e-5, atol=1e-6)


def _pair_ig_numpy(grad_fn, x, baseline, steps):
  """PAIR saliency 0.2.1 ``IntegratedGradients.GetMask``, transcribed."""
  x_diff = x - baseline
  total = np.zeros_like(x)
  for alpha in np.linspace(0, 1, steps):
    total += grad_fn(baseline + alpha * x_diff)
  return total * x_diff / steps


@pytest.mark.parametrize("steps", [2, 5, 25])
def test_pair_quadrature_matches_pair_loop_and_closed_form(steps):
  x = _image(3).astype(np.float64)
  b = np.full_like(x, -0.5)
  got = ig_lib.integrated_gradients(_cube, x.astype(np.float32), 0,
                                    steps=steps, baseline=-0.5,
                                    quadrature="pair")
  want = _pair_ig_numpy(lambda z: 3 * z ** 2, x, b, steps)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # By hand: mean(alpha) = 1/2, mean(alpha^2) = (2n - 1) / (6 (n - 1)).
  d = x - b
  mean_square = (2 * steps - 1) / (6 * (steps - 1))
  closed = 3 * d * (b ** 2 + b * d + d ** 2 * mean_square)
  np.testing.assert_allclose(got, closed, rtol=1e-5, atol=1e-6)
  # ... which is not the integral (x^3 - b^3): PAIR's rule overweights.
  assert not np.allclose(got, x ** 3 - b ** 3, rtol=1e-3)


def test_trapezoid_is_the_trapezoid_rule_and_gauss_legendre_is_exact():
  alphas, weights = ig_lib.path_quadrature("riemann_trapezoid", 5)
  np.testing.assert_allclose(weights, [0.125, 0.25, 0.25, 0.25, 0.125])
  x = _image(4)
  got = ig_lib.integrated_gradients(_cube, x, 0, steps=5, baseline="zeros",
                                    quadrature="riemann_trapezoid")
  grads = np.stack([3 * (a * x.astype(np.float64)) ** 2 for a in alphas])
  np.testing.assert_allclose(got, x * np.trapezoid(grads, alphas, axis=0),
                             rtol=1e-5)
  # A quadratic integrand: 2-point Gauss-Legendre integrates it exactly.
  got = ig_lib.integrated_gradients(_cube, x, 0, steps=2, baseline="zeros",
                                    quadrature="gauss_legendre")
  np.testing.assert_allclose(got, x ** 3, rtol=1e-5, atol=1e-6)
  for q in ig_lib.QUADRATURES:
    np.testing.assert_allclose(ig_lib.path_quadrature(q, 9)[1].sum(), 1.0)


def _smooth_cnn():
  """conv -> softplus -> conv -> tanh -> mean -> dense: smooth, nonlinear."""
  rng = np.random.default_rng(0)
  k1 = jnp.asarray(rng.normal(0, 0.5, (3, 3, 3, 8)), jnp.float32)
  k2 = jnp.asarray(rng.normal(0, 0.3, (3, 3, 8, 8)), jnp.float32)
  dense = jnp.asarray(rng.normal(0, 1.0, (8, 3)), jnp.float32)

  def conv(x, k):
    return jax.lax.conv_general_dilated(x[None], k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO",
                                                           "NHWC"))[0]

  def logits(x):
    h = jnp.tanh(conv(jax.nn.softplus(conv(x, k1)), k2) - 0.2)
    return jnp.mean(h, axis=(0, 1)) @ dense

  return logits


@pytest.mark.parametrize("quadrature", ["riemann_trapezoid", "gauss_legendre"])
def test_ig_completeness_on_a_nonlinear_cnn(quadrature):
  f = _smooth_cnn()
  x = _image(5, (16, 16, 3))
  for target, baseline in [(0, "zeros"), (1, "black"), (2, 0.5)]:
    attr = ig_lib.integrated_gradients(f, x, target, steps=200,
                                       baseline=baseline, quadrature=quadrature,
                                       strategy="vectorized")
    total, difference = ig_lib.completeness(f, x, target, attr,
                                            baseline=baseline)
    assert abs(float(difference)) > 1e-2
    assert abs(float(total - difference)) <= 0.01 * abs(float(difference))


def test_ig_completeness_on_small_relu_cnn():
  # ReLU kinks make the path gradient piecewise constant: quadrature error
  # decays only as 1/steps, so the bound is looser than for a smooth net.
  model = models.create("small_cnn", num_classes=3, in_channels=3,
                        width=0.125, rngs=nnx.Rngs(0))
  x = _image(1, (16, 16, 3))
  b = 0.5 * _image(6, (16, 16, 3))
  for target in range(3):
    attr = ig_lib.integrated_gradients(model, x, target, steps=200, baseline=b,
                                       quadrature="riemann_trapezoid",
                                       strategy="vectorized")
    total, difference = ig_lib.completeness(model, x, target, attr, baseline=b)
    assert abs(float(total - difference)) <= 0.03 * abs(float(difference))


@pytest.mark.parametrize("kwargs,match", [
    (dict(quadrature="simpson"), "quadrature must be one of"),
    (dict(quadrature="riemann_trapezoid", steps=1), "steps >= 2"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(baseline="grey"), "baseline must be one of"),
    (dict(baseline=np.zeros((3, 3, 2))), "baseline must be one of"),
    (dict(baseline=None), "baseline must be one of"),
])
def test_ig_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ig_lib.integrated_gradients(_linear, _image(), 0, **kwargs)


@pytest.mark.parametrize("x,target,match", [
    (np.zeros((4, 4)), 0, "one image"),
    (_image(), 1.5, "integer class index"),
    (_image(), -1, "integer class index"),
])
def test_methods_reject_bad_image_or_target(x, target, match):
  with pytest.raises(ValueError, match=match):
    gradient_lib.gradient(_linear, x, target)
