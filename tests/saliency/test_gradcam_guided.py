"""GradCAM, guided backpropagation and Guided GradCAM, computed by hand."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import models
from saliency_jax.models import layers
from saliency_jax.saliency import gradcam as gradcam_lib
from saliency_jax.saliency import gradient as gradient_lib
from saliency_jax.saliency import guided_backprop as gb_lib
from saliency_jax.saliency import guided_gradcam as ggc_lib
from saliency_jax.saliency.explainee import as_explainee


class _ConvGap(nnx.Module):
  """conv 3x3 -> ReLU (the GradCAM layer, full resolution) -> GAP -> dense."""

  cascade_order = ("predictions", "conv")
  gradcam_layer = "conv"

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(3, 5, (3, 3), rngs=rngs)
    self.predictions = nnx.Linear(5, 3, rngs=rngs)

  def features(self, x):
    return layers.relu(self.conv(x))

  def head(self, a):
    return self.predictions(jnp.mean(a, axis=(1, 2)))

  def __call__(self, x):
    return self.head(self.features(x))


@functools.lru_cache(maxsize=None)
def _small_cnn():
  return models.create("small_cnn", num_classes=3, in_channels=3, width=0.125,
                       rngs=nnx.Rngs(0))


def _image(seed=1, size=16):
  return np.random.default_rng(seed).uniform(-1, 1, (size, size, 3)).astype(
      np.float32)


def _hand_cam(a, dense_kernel, target):
  # d logit_t / dA_ijk = W_kt / (h w) at every position: its mean is the same.
  weights = dense_kernel[:, target] / (a.shape[0] * a.shape[1])
  return np.maximum(np.einsum("ijk,k->ij", a, weights), 0.0)


@pytest.mark.parametrize("target", [0, 2])
def test_gradcam_equals_hand_computation_on_conv_gap_model(target):
  model = _ConvGap(nnx.Rngs(3))
  x = _image(2, 8)
  a = np.asarray(model.features(x[None])[0])
  cam = _hand_cam(a, np.asarray(model.predictions.kernel[...]), target)
  assert cam.max() > 0 and (cam == 0).any()  # the ReLU does something
  got = gradcam_lib.gradcam(model, x, target)
  assert got.shape == x.shape
  for c in range(3):
    np.testing.assert_allclose(got[..., c], cam, rtol=1e-5, atol=1e-7)


def test_gradcam_on_small_cnn_is_upsampled_hand_map():
  model = _small_cnn()
  x = _image(4)
  # BatchNorm: the explainee runs the model in eval mode, so must the hand.
  a = np.asarray(as_explainee(model).features(x))
  assert a.shape[:2] == (2, 2)
  cam = _hand_cam(a, np.asarray(model.predictions.kernel[...]), 1)
  want = jax.image.resize(jnp.asarray(cam), (16, 16), "bilinear")
  got = gradcam_lib.gradcam(model, x, 1)
  np.testing.assert_allclose(got, np.broadcast_to(want[..., None], x.shape),
                             rtol=1e-5, atol=1e-7)


def test_gradcam_needs_features_and_head():
  with pytest.raises(ValueError, match="needs a model with features/head"):
    gradcam_lib.gradcam(lambda x: jnp.sum(x)[None], _image(), 0)


_RNG = np.random.default_rng(0)
_W1 = _RNG.normal(size=(4 * 4 * 3, 12)).astype(np.float32)
_B1 = _RNG.normal(size=12).astype(np.float32)
_W2 = _RNG.normal(size=(12, 10)).astype(np.float32)
_B2 = _RNG.normal(size=10).astype(np.float32)
_W3 = _RNG.normal(size=(10, 3)).astype(np.float32)


def _mlp(x):
  h1 = layers.relu(x.reshape(-1) @ _W1 + _B1)
  h2 = layers.relu(h1 @ _W2 + _B2)
  return h2 @ _W3


@pytest.mark.parametrize("target", [0, 1, 2])
def test_guided_backprop_equals_hand_applied_rule_on_mlp(target):
  x = _image(5, 4)
  v = x.reshape(-1).astype(np.float64)
  z1 = v @ _W1 + _B1
  z2 = np.maximum(z1, 0) @ _W2 + _B2
  g_h2 = _W3[:, target].astype(np.float64)
  g_z2 = g_h2 * (z2 > 0) * (g_h2 > 0)
  g_h1 = _W2 @ g_z2
  g_z1 = g_h1 * (z1 > 0) * (g_h1 > 0)
  want = (_W1 @ g_z1).reshape(x.shape)
  got = gb_lib.guided_backprop(_mlp, x, target)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The rule matters here: plain backprop keeps the negative gradients.
  plain = (_W1 @ ((_W2 @ (g_h2 * (z2 > 0))) * (z1 > 0))).reshape(x.shape)
  np.testing.assert_allclose(gradient_lib.gradient(_mlp, x, target), plain,
                             rtol=1e-4, atol=1e-5)
  assert not np.allclose(want, plain, atol=1e-3)


def test_guided_relu_forward_is_relu_and_backward_is_guided():
  z = jnp.array([-2.0, -0.5, 0.5, 2.0])
  np.testing.assert_array_equal(gb_lib.guided_relu(z), jax.nn.relu(z))
  _, vjp = jax.vjp(gb_lib.guided_relu, z)
  g = jnp.array([1.0, -1.0, -1.0, 3.0])
  np.testing.assert_array_equal(vjp(g)[0], [0.0, 0.0, 0.0, 3.0])


def test_guided_gradcam_is_product_and_guided_differs_from_gradient():
  model = _small_cnn()
  x = _image(6)
  gb = gb_lib.guided_backprop(model, x, 2)
  np.testing.assert_allclose(ggc_lib.guided_gradcam(model, x, 2),
                             gb * gradcam_lib.gradcam(model, x, 2), rtol=1e-6)
  assert not np.allclose(gb, gradient_lib.gradient(model, x, 2), atol=1e-6)
