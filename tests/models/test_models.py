"""Models: Keras parameter counts, shapes, layers.py's contract, BatchNorm."""

from __future__ import annotations

import functools
import math

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import models
from saliency_jax.models import layers

NAMES = ("small_cnn", "inception_v3", "densenet121")
# Small widths keep the CPU forward passes fast; topology is unchanged.
WIDTH = {"small_cnn": 0.25, "inception_v3": 0.125, "densenet121": 0.125}
# Input side used by the tests that need one size only.
SIDE = {"small_cnn": 32, "inception_v3": 128, "densenet121": 128}
# ReLUs in the network: small_cnn 4 conv blocks; InceptionV3 94 conv2d_bn
# units; DenseNet121 stem + 2 per dense layer (58) + 3 transitions + final bn.
NUM_RELUS = {"small_cnn": 4, "inception_v3": 94, "densenet121": 121}
NUM_CLASSES, IN_CHANNELS = 3, 1
# XLA's CPU compile dominates these tests; -O0 compiles ~3x faster.
jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@functools.cache
def _abstract(name: str, **kw) -> nnx.Module:
  """The model built abstractly (shapes only, nothing allocated); read-only."""
  kw = {"num_classes": NUM_CLASSES, "in_channels": IN_CHANNELS,
        "width": WIDTH[name], **kw}
  return nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0), **kw))


def _numpy_value(path: tuple, variable: nnx.Variable, rng: np.random.Generator):
  """He-normal kernels, small random biases, BatchNorm scale/var 1, mean 0."""
  abstract = variable.get_value()
  shape, dtype = abstract.shape, abstract.dtype
  if path[-1] == "kernel":
    value = rng.normal(size=shape) * np.sqrt(2.0 / math.prod(shape[:-1]))
  elif path[-1] == "bias":
    value = 0.1 * rng.normal(size=shape)
  else:
    value = np.full(shape, 0.0 if path[-1] == "mean" else 1.0)
  return variable.replace(jnp.asarray(value, dtype))


@functools.cache
def _built(name: str):
  """(graphdef, state) in eval mode and a jitted eval forward, built once.

  The values come from numpy: eager NNX init compiles every initializer per
  shape, ~20 s for InceptionV3 on two CPU cores; the constructor still runs
  (abstractly), so the structure is the real one.
  """
  graphdef, state = nnx.split(_abstract(name))
  rng = np.random.default_rng(0)
  model = nnx.merge(graphdef, nnx.map_state(
      lambda p, v: _numpy_value(p, v, rng), state))
  model.eval()
  graphdef, state = nnx.split(model)

  @jit
  def forward(state, x):
    model = nnx.merge(graphdef, state)
    logits, a = model(x), model.features(x)
    return logits, a, nnx.state(model, nnx.BatchStat)

  return graphdef, state, forward


def _images(side: int, n: int = 2, seed: int = 0) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (n, side, side, IN_CHANNELS))


def _size(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name,total,trainable", [
    ("inception_v3", 23_851_784, 23_817_352),
    ("densenet121", 8_062_504, 7_978_856),
])
def test_parameter_counts_match_keras(name, total, trainable):
  model = _abstract(name, num_classes=1000, in_channels=3, width=1.0)
  assert _size(nnx.state(model)) == total  # BatchNorm mean/var included
  assert _size(nnx.state(model, nnx.Param)) == trainable


@pytest.mark.parametrize("name,epsilon,use_scale", [
    ("inception_v3", 1e-3, False), ("densenet121", 1.001e-5, True)])
def test_batchnorm_follows_keras(name, epsilon, use_scale):
  model = _abstract(name)
  bns = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
  assert len(bns) == NUM_RELUS[name]  # one BatchNorm before each ReLU
  for bn in bns:
    assert (bn.epsilon, bn.momentum, bn.use_scale) == (epsilon, 0.99, use_scale)
  convs = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Conv)]
  assert convs and not any(c.use_bias for c in convs)


@pytest.mark.parametrize("name,side,grid,channels", [
    ("small_cnn", 32, 4, 256), ("small_cnn", 48, 6, 256),
    ("inception_v3", 299, 8, 2048), ("inception_v3", 128, 2, 2048),
    ("densenet121", 224, 7, 1024), ("densenet121", 128, 4, 1024),
])
def test_forward_shapes(name, side, grid, channels):
  _, state, forward = _built(name)
  logits, a, _ = forward(state, _images(side))
  assert logits.shape == (2, NUM_CLASSES)
  assert a.shape == (2, grid, grid, layers.scaled(channels, WIDTH[name]))
  assert np.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_head_of_features_is_the_model(name):
  graphdef, state, forward = _built(name)
  logits, a, _ = forward(state, _images(SIDE[name]))
  head = jit(lambda state, a: nnx.merge(graphdef, state).head(a))
  np.testing.assert_allclose(head(state, a), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_cascade_order_covers_every_variable_once(name):
  model = _abstract(name)
  order = model.cascade_order
  assert order[0] == "predictions"
  assert len(set(order)) == len(order)
  assert set(nnx.state(model).keys()) == set(order)
  assert model.gradcam_layer in order


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_per_image(name):
  _, state, forward = _built(name)
  x, y = _images(SIDE[name], seed=1), _images(SIDE[name], seed=2)
  mixed = x.at[1].set(y[1])
  logits, a, stats = forward(state, x)
  logits_m, a_m, _ = forward(state, mixed)
  np.testing.assert_allclose(logits_m[0], logits[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(a_m[0], a[0], rtol=1e-5, atol=1e-5)
  assert not np.allclose(logits_m[1], logits[1], rtol=1e-5, atol=1e-5)
  before = nnx.filter_state(state, nnx.BatchStat)
  # Eval mode never writes the statistics.
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, stats, before)))


@pytest.mark.parametrize("name", NAMES)
def test_train_mode_uses_and_updates_batch_statistics(name):
  graphdef, state, _ = _built(name)
  model = nnx.merge(graphdef, state)
  model.train()
  train_graphdef, _ = nnx.split(model)

  @jit
  def forward(state, x):
    model = nnx.merge(train_graphdef, state)
    return model(x), nnx.state(model, nnx.BatchStat)

  # The smallest sides the nets take keep this extra compile cheap.
  side = {"small_cnn": 32, "inception_v3": 75, "densenet121": 32}[name]
  x, y = _images(side, n=3, seed=1), _images(side, n=3, seed=2)
  logits, stats = forward(state, x)
  logits_m, _ = forward(state, x.at[1:].set(y[1:]))
  before = nnx.filter_state(state, nnx.BatchStat)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), stats, before)
  assert all(jax.tree.leaves(changed))
  # Batch statistics couple the images of a batch.
  assert not np.allclose(logits_m[0], logits[0], rtol=1e-5, atol=1e-5)


def _count_primitive(jaxpr: jex.core.Jaxpr, name: str) -> int:
  return sum(eqn.primitive.name == name for eqn in jaxpr.eqns) + sum(
      _count_primitive(sub, name) for sub in jex.core.subjaxprs(jaxpr))


@pytest.mark.parametrize("name", NAMES)
def test_every_relu_goes_through_layers_relu(name):
  graphdef, state, _ = _built(name)
  side = SIDE[name]
  x = jax.ShapeDtypeStruct((1, side, side, IN_CHANNELS), jnp.float32)

  def num_max(state, x) -> int:
    # A new function per trace: jax caches traces by function, not by the
    # activation in force.
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
    return _count_primitive(jaxpr.jaxpr, "max")

  # ReLU is max(x, 0); pooling and eval-mode BatchNorm use no `max`.
  assert num_max(state, x) == NUM_RELUS[name]
  with layers.activation(lambda x: x):
    assert num_max(state, x) == 0


@pytest.mark.parametrize("name", NAMES)
def test_swapped_activation_changes_the_output(name):
  graphdef, state, forward = _built(name)
  x = _images(SIDE[name])
  logits, _, _ = forward(state, x)
  # A fresh jit: the swap acts at trace time, a cached trace would ignore it.
  with layers.activation(lambda x: 0.0 * x):
    zeroed = jit(lambda state, x: nnx.merge(graphdef, state)(x))(state, x)
  bias = nnx.merge(graphdef, state).predictions.bias[...]
  # With every ReLU output zero, only the classifier's bias is left.
  np.testing.assert_allclose(zeroed, jnp.broadcast_to(bias, zeroed.shape))
  assert not np.allclose(zeroed, logits)


def test_create_rejects_unknown_names():
  with pytest.raises(ValueError, match="unknown model 'resnet50'"):
    models.create("resnet50", num_classes=2, in_channels=1, rngs=nnx.Rngs(0))
