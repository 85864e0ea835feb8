"""The CAM family against its defining formulas, computed by hand in NumPy.

The hand cases use a tiny model whose GradCAM layer is the image average-pooled
2x2, A = pool(x) (h, w, k = C), so A is known, and whose head is linear in A:
``spatial`` gives every position its own weights (logit_c = sum_ijk V_ijkc
A_ijk + b_c: the gradient V[..., t] varies over space), ``gap`` averages over
space first (logit = mean_ij(A) W + b: the gradient W[:, t] / hw is constant).
Upsampling in the hand computations is scikit-image's bilinear resize.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from skimage.transform import resize

from saliency_jax import models
from saliency_jax.saliency import (METHODS, explain, explain_states,
                                   from_model, gradcam)

CAMS = ("hirescam", "gradcam_plus_plus", "xgradcam", "layercam", "eigencam",
        "scorecam", "random_cam")
SIDE, CHANNELS, CLASSES = 8, 5, 3


class _Tiny(nnx.Module):
  """A = 2x2 average pool of x; a head linear in A (``spatial`` or ``gap``)."""

  cascade_order = ("head_weights",)
  gradcam_layer = "pool"

  def __init__(self, kind: str, seed: int = 0, positive: bool = False):
    rng = np.random.default_rng(seed)
    shape = ((SIDE // 2, SIDE // 2, CHANNELS, CLASSES) if kind == "spatial"
             else (CHANNELS, CLASSES))
    v = rng.normal(size=shape)
    self.kind = kind
    self.head_weights = nnx.Param(jnp.asarray(np.abs(v) if positive else v,
                                              jnp.float32))
    self.bias = nnx.Param(jnp.asarray(rng.normal(size=CLASSES), jnp.float32))

  def features(self, x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))

  def head(self, a):
    if self.kind == "spatial":
      return jnp.einsum("bijk,ijkc->bc", a, self.head_weights[...]) + self.bias[...]
    return jnp.mean(a, axis=(1, 2)) @ self.head_weights[...] + self.bias[...]

  def __call__(self, x):
    return self.head(self.features(x))


def _image(seed=1, low=0.0):
  return np.random.default_rng(seed).uniform(low, 1, (SIDE, SIDE, CHANNELS)).astype(
      np.float32)


# ----------------------------------------------------------- by hand ---

def _pool(x):
  h, w, c = x.shape
  return x.reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3)).astype(np.float64)


def _logits(model, a):
  v, b = np.asarray(model.head_weights[...], np.float64), np.asarray(model.bias[...])
  if model.kind == "spatial":
    return np.einsum("ijk,ijkc->c", a, v) + b
  return a.mean(axis=(0, 1)) @ v + b


def _grad(model, a, t):
  v = np.asarray(model.head_weights[...], np.float64)
  if model.kind == "spatial":
    return v[..., t]
  return np.broadcast_to(v[:, t] / (a.shape[0] * a.shape[1]), a.shape)


def _up(layer_map, x):
  cam = resize(np.maximum(layer_map, 0.0), x.shape[:2], order=1, mode="edge",
               anti_aliasing=False)
  return np.broadcast_to(cam[..., None], x.shape)


def _hand_hirescam(a, g):
  return np.sum(g * a, axis=-1)


def _hand_layercam(a, g):
  return np.sum(np.maximum(g, 0) * a, axis=-1)


def _hand_xgradcam(a, g):
  return a @ (np.sum(g * a, axis=(0, 1)) / (np.sum(a, axis=(0, 1)) + 1e-7))


def _hand_gradcam_plus_plus(a, g):
  g2, g3 = g ** 2, g ** 3
  alpha = g2 / (2 * g2 + np.sum(a, axis=(0, 1)) * g3 + 1e-6)
  alpha = np.where(g != 0, alpha, 0)
  return a @ np.sum(alpha * np.maximum(g, 0), axis=(0, 1))


def _hand_eigencam(a):
  flat = a.reshape(-1, a.shape[-1])
  flat = flat - flat.mean(axis=0)
  v = np.linalg.svd(flat)[2][0]
  v = -v if v.sum() < 0 else v
  return (flat @ v).reshape(a.shape[:2])


def _hand_scorecam(model, a, x, t):
  scores = []
  for k in range(a.shape[-1]):
    up = resize(a[..., k], x.shape[:2], order=1, mode="edge", anti_aliasing=False)
    mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
    scores.append(_logits(model, _pool(x * mask[..., None]))[t])
  scores = np.asarray(scores)
  weights = np.exp(scores - scores.max())
  return a @ (weights / weights.sum())


HAND = {"hirescam": _hand_hirescam, "layercam": _hand_layercam,
        "xgradcam": _hand_xgradcam, "gradcam_plus_plus": _hand_gradcam_plus_plus}


@pytest.mark.parametrize("name", sorted(HAND))
@pytest.mark.parametrize("target", [0, 2])
def test_gradient_cams_equal_their_formula_with_a_spatial_gradient(name, target):
  # Some negative pixels, so that A < 0 somewhere and every map can go < 0.
  model, x = _Tiny("spatial"), _image(low=-1.0)
  a = _pool(x)
  g = _grad(model, a, target)
  assert np.ptp(g, axis=(0, 1)).min() > 0  # the gradient varies over space
  layer_map = HAND[name](a, g)
  assert (layer_map < 0).any() and (layer_map > 0).any()  # the ReLU bites
  got = METHODS[name](model, x, target)
  assert got.shape == x.shape and got.dtype == x.dtype
  np.testing.assert_allclose(got, _up(layer_map, x), rtol=1e-4, atol=1e-6)


def test_gradcam_plus_plus_guard_zeroes_where_the_gradient_is_zero():
  model, x = _Tiny("spatial"), _image()
  model.head_weights[...] = model.head_weights[...].at[0, 0, :, 1].set(0.0)
  a, g = _pool(x), _grad(model, _pool(x), 1)
  got = METHODS["gradcam_plus_plus"](model, x, 1)
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, _up(_hand_gradcam_plus_plus(a, g), x),
                             rtol=1e-4, atol=1e-6)


def test_eigencam_equals_svd_projection_with_its_sign_convention():
  model, x = _Tiny("spatial"), _image(3)
  got = METHODS["eigencam"](model, x, 0)
  np.testing.assert_allclose(got, _up(_hand_eigencam(_pool(x)), x), rtol=1e-4,
                             atol=1e-5)
  # Class-agnostic: the target does not change it.
  np.testing.assert_array_equal(got, METHODS["eigencam"](model, x, 2))


def test_eigencam_recovers_a_rank_one_layer():
  # A_ijk = c_k + u_ij v_k: the centred layer is (u - mean u) v^T, whose
  # first axis is v / |v|; the sign rule (sum v > 0) keeps +u.
  rng = np.random.default_rng(5)
  u = rng.uniform(0, 1, (SIDE // 2, SIDE // 2))
  v = np.array([0.5, 1.0, 0.2, -0.1, 0.7])
  a = 2.0 + u[..., None] * v
  x = np.repeat(np.repeat(a, 2, axis=0), 2, axis=1).astype(np.float32)
  want = (u - u.mean()) * np.linalg.norm(v)
  got = METHODS["eigencam"](_Tiny("spatial"), x, 0)
  np.testing.assert_allclose(got, _up(want, x), rtol=1e-3, atol=1e-5)
  flipped = 2.0 - u[..., None] * v  # the same axis, the other way
  x2 = np.repeat(np.repeat(flipped, 2, axis=0), 2, axis=1).astype(np.float32)
  np.testing.assert_allclose(METHODS["eigencam"](_Tiny("spatial"), x2, 0),
                             _up(-want, x2), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("kind", ["spatial", "gap"])
def test_scorecam_equals_masked_forward_passes_by_hand(kind):
  model, x = _Tiny(kind), _image(4)
  a = _pool(x)
  got = METHODS["scorecam"](model, x, 1, batch_size=None, strategy="vectorized")
  np.testing.assert_allclose(got, _up(_hand_scorecam(model, a, x, 1), x),
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strategy", ["vectorized", "scan", "dispatch"])
def test_scorecam_chunks_equal_one_batch(strategy):
  model, x = _Tiny("spatial"), _image(6)
  whole = METHODS["scorecam"](model, x, 0, batch_size=None, strategy="vectorized")
  for size in (1, 2, CHANNELS):
    np.testing.assert_allclose(
        METHODS["scorecam"](model, x, 0, batch_size=size, strategy=strategy),
        whole, rtol=1e-6, atol=1e-7)


def test_random_cam_is_keyed_weights_on_the_layer():
  model, x = _Tiny("spatial"), _image(7)
  key = jax.random.key(3)
  one = METHODS["random_cam"](model, x, 0, key=key)
  weights = np.asarray(jax.random.uniform(key, (CHANNELS,), jnp.float32, -1, 1))
  np.testing.assert_allclose(one, _up(_pool(x) @ weights, x), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_array_equal(one, METHODS["random_cam"](model, x, 2, key=key))
  other = METHODS["random_cam"](model, x, 0, key=jax.random.key(4))
  assert not np.allclose(one, other)
  with pytest.raises(ValueError, match="random_cam: needs a `key`"):
    METHODS["random_cam"](model, x, 0)


# ----------------------------------------------------------- identities ---

def test_at_a_gap_head_hirescam_and_xgradcam_are_gradcam():
  model, x = _Tiny("gap"), _image(8, low=-1.0)
  want = gradcam.gradcam(model, x, 1)
  assert np.asarray(want).max() > 0 and (np.asarray(want) == 0).any()
  np.testing.assert_allclose(METHODS["hirescam"](model, x, 1), want, rtol=1e-5,
                             atol=1e-7)
  # Weights sum(g A) / (sum A + eps) = g sum A / (sum A + eps): GradCAM's up to eps.
  np.testing.assert_allclose(METHODS["xgradcam"](model, x, 1), want, rtol=1e-5,
                             atol=1e-7)
  # A spatial head tells them apart.
  spatial = _Tiny("spatial")
  assert not np.allclose(METHODS["hirescam"](spatial, x, 1),
                         gradcam.gradcam(spatial, x, 1), atol=1e-3)


def test_layercam_is_hirescam_when_gradients_are_non_negative():
  x = _image(9)
  positive = _Tiny("spatial", positive=True)
  np.testing.assert_allclose(METHODS["layercam"](positive, x, 0),
                             METHODS["hirescam"](positive, x, 0), rtol=1e-6)
  signed = _Tiny("spatial")
  assert not np.allclose(METHODS["layercam"](signed, x, 0),
                         METHODS["hirescam"](signed, x, 0))


@pytest.mark.parametrize("name", CAMS)
def test_cams_need_a_model_and_one_image(name):
  x = _image()
  with pytest.raises(ValueError, match=f"{name}: needs a model with features/head"):
    METHODS[name](lambda x: jnp.sum(x, axis=(0, 1)), x, 0, key=jax.random.key(0))
  with pytest.raises(ValueError, match=rf"{name}: x must be one image \(H, W, C\)"):
    METHODS[name](_Tiny("gap"), x[None], 0, key=jax.random.key(0))
  with pytest.raises(ValueError, match=f"{name}: target must be one integer"):
    METHODS[name](_Tiny("gap"), x, 1.5, key=jax.random.key(0))


# ------------------------------------------- real models, explain ---

# XLA's CPU compile dominates; -O0 compiles ~3x faster.
_jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})
WIDTH, SIZE = 0.125, 128  # tests/models/test_models.py's smallest tested


def _numpy_value(path, variable, rng):
  abstract = variable.get_value()
  shape, dtype = abstract.shape, abstract.dtype
  if path[-1] == "kernel":
    value = rng.normal(size=shape) * np.sqrt(2.0 / math.prod(shape[:-1]))
  elif path[-1] == "bias":
    value = 0.1 * rng.normal(size=shape)
  else:
    value = np.full(shape, 0.0 if path[-1] == "mean" else 1.0)
  return variable.replace(jnp.asarray(value, dtype))


def _built(name, *, num_classes=2, in_channels=1, width=WIDTH):
  """The model built abstractly, values from NumPy (eager init is slow)."""
  abstract = nnx.eval_shape(lambda: models.create(
      name, num_classes=num_classes, in_channels=in_channels, width=width,
      rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(0)
  return from_model(nnx.merge(graphdef, nnx.map_state(
      lambda p, v: _numpy_value(p, v, rng), state)))


@pytest.mark.parametrize("name", ["inception_v3", "densenet121"])
def test_every_cam_is_finite_on_the_real_architectures(name):
  e = _built(name)
  x = jax.random.uniform(jax.random.key(0), (SIZE, SIZE, 1))

  @_jit
  def all_cams(e, x):
    return [METHODS[m](e, x, 1, key=jax.random.key(1), batch_size=64,
                       strategy="scan") for m in CAMS]

  for method, cam in zip(CAMS, all_cams(e, x)):
    assert cam.shape == x.shape, method
    assert np.isfinite(cam).all() and (np.asarray(cam) >= 0).all(), method


@functools.cache
def _small_cnn():
  return _built("small_cnn", num_classes=3, in_channels=3, width=0.25)


@pytest.mark.parametrize("name", CAMS)
def test_explain_runs_every_cam_on_a_small_cnn(name):
  e = _small_cnn()
  images = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3))
  key = jax.random.key(5)
  maps = explain(e, images, jnp.array([0, 2]), method=name, key=key,
                 batch_size=16, strategy="scan")
  assert maps.shape == images.shape and np.isfinite(maps).all()
  keys = jax.random.split(key, 2)
  for n, t in enumerate((0, 2)):  # the vmapped maps are the per-image calls
    np.testing.assert_allclose(
        maps[n], METHODS[name](e, images[n], t, key=keys[n], batch_size=16,
                               strategy="scan"), rtol=1e-4, atol=1e-5)
  states = jax.tree.map(lambda leaf: jnp.stack([leaf, leaf]), e.state)
  stacked = explain_states(e, states, images, jnp.array([0, 2]), method=name,
                           key=key, batch_size=16, strategy="scan")
  assert stacked.shape == (2, *images.shape)
  np.testing.assert_allclose(stacked[1], maps, rtol=1e-4, atol=1e-5)
