"""``explain`` and the registry: per-image loop, targets, traces, shapes."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import models
from saliency_jax import randomization
from saliency_jax import saliency
from saliency_jax.models import small_cnn
from saliency_jax.saliency import _checks, batching

N, SIZE = 3, 16


@functools.lru_cache(maxsize=None)
def _explainees():
  """Two explainees of one architecture: same shapes, other parameters."""
  make = lambda seed: models.create("small_cnn", num_classes=3,  # noqa: E731
                                    in_channels=3, width=0.125,
                                    rngs=nnx.Rngs(seed))
  first = saliency.from_model(make(0))
  return first, first.with_state(saliency.from_model(make(1)).state)


def _images(seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(
      -1, 1, (N, SIZE, SIZE, 3)).astype(np.float32))


@pytest.mark.parametrize("method,hparams,strategy,batch_size", [
    ("smoothgrad", dict(num_samples=3), "vectorized", None),
    ("smoothgrad", dict(num_samples=3), "dispatch", 1),
    ("integrated_gradients", dict(steps=4, baseline="black"), "scan", 2),
    ("gradcam", {}, "vectorized", None),
])
def test_explain_equals_per_image_loop(method, hparams, strategy, batch_size):
  e, _ = _explainees()
  images, key = _images(), jax.random.key(5)
  targets = jnp.array([0, 2, 1])
  got = saliency.explain(e, images, targets, method=method, key=key,
                         strategy=strategy, batch_size=batch_size, **hparams)
  keys = jax.random.split(key, N)
  for i in range(N):
    want = saliency.METHODS[method](e, images[i], int(targets[i]), key=keys[i],
                                    **hparams)
    np.testing.assert_allclose(got[i], want, rtol=2e-5, atol=1e-7)


def test_default_targets_are_the_predicted_classes():
  e, _ = _explainees()
  images = _images(1)
  predicted = jnp.argmax(jax.vmap(e.logits)(images), axis=-1)
  got = saliency.explain(e, images, method="gradient")
  np.testing.assert_allclose(
      got, saliency.explain(e, images, predicted, method="gradient"),
      rtol=1e-6)
  other = saliency.explain(e, images, (predicted + 1) % 3, method="gradient")
  assert not np.allclose(got, other)


def _count_model_traces(monkeypatch):
  """Counts the Python executions of SmallCNN: one per trace (or eager op)."""
  count = {"n": 0}
  for name in ("__call__", "features", "head"):
    original = getattr(small_cnn.SmallCNN, name)

    def counted(self, *args, _original=original, **kwargs):
      count["n"] += 1
      return _original(self, *args, **kwargs)

    monkeypatch.setattr(small_cnn.SmallCNN, name, counted)
  return count


def _available(name: str) -> bool:
  method = saliency.METHODS[name]
  target = getattr(method, "target", None)  # lazily imported methods
  return (target is None or
          importlib.util.find_spec(target.split(":")[0]) is not None)


@pytest.mark.parametrize("name", sorted(saliency.METHODS))
def test_every_method_gives_finite_maps_and_traces_once(name, monkeypatch):
  if not _available(name):
    pytest.skip(f"{name}: module not written yet")
  e, e_other = _explainees()
  count = _count_model_traces(monkeypatch)
  kw = dict(method=name, key=jax.random.key(0))
  first = saliency.explain(e, _images(2), **kw)
  traced = count["n"]
  second = saliency.explain(e_other, _images(3), **kw)
  assert count["n"] == traced, f"{name} retraced for new images and state"
  # XRAI's region map is one channel; every other method keeps C.
  channels = (1, 3) if name == "xrai" else (3,)
  for maps in (first, second):
    assert maps.shape[:3] == (N, SIZE, SIZE) and maps.shape[3] in channels
    assert bool(jnp.all(jnp.isfinite(maps)))
  if name not in ("center_prior", "random"):  # these ignore image and model
    assert not np.allclose(first, second), f"{name} ignores its inputs"


@pytest.mark.parametrize("strategy", batching.STRATEGIES)
def test_nested_method_traces_once_per_strategy(strategy, monkeypatch):
  e, e_other = _explainees()
  count = _count_model_traces(monkeypatch)
  kw = dict(method="smoothgrad_ig", key=jax.random.key(0), strategy=strategy,
            batch_size=4, num_samples=2, steps=3, baseline="black")
  first = saliency.explain(e, _images(2), **kw)
  traced = count["n"]
  assert traced > 0
  second = saliency.explain(e_other, _images(3), **kw)
  assert count["n"] == traced
  assert not np.allclose(first, second)


def test_explain_rejects_bad_arguments():
  e, _ = _explainees()
  images = _images()
  with pytest.raises(ValueError, match="unknown method 'gradients'"):
    saliency.explain(e, images, method="gradients")
  with pytest.raises(ValueError, match="strategy: expected one of"):
    saliency.explain(e, images, method="gradient", strategy="threads")
  with pytest.raises(ValueError, match=re.escape(_checks.IMAGES_ERROR.format(
      method="explain", shape=images[0].shape))):
    saliency.explain(e, images[0], method="gradient")
  with pytest.raises(ValueError, match=r"explain: images must be floating point "
                     r"\(e.g. uint8 pixels / 255\), got uint8"):
    saliency.explain(e, np.zeros(images.shape, np.uint8), method="gradient")
  with pytest.raises(ValueError, match=r"targets must be 3 integer"):
    saliency.explain(e, images, [0, 1], method="gradient")
  with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
    saliency.explain(e, images, [0, 1, 3], method="gradient")
  with pytest.raises(ValueError, match="needs a `key`"):
    saliency.explain(e, images, method="smoothgrad")


def _close(got, want, msg=""):
  """Equal to float tolerance: 1e-5 relative, relative to the map's scale
  for its near-zero pixels (batched and single convolutions round apart)."""
  np.testing.assert_allclose(got, want, rtol=1e-5,
                             atol=1e-6 * float(jnp.max(jnp.abs(want))),
                             err_msg=msg)


def test_explain_traces_with_explicit_targets():
  e, _ = _explainees()
  images = _images()
  targets = jnp.array([0, 2, 1])
  kw = dict(method="gradient", strategy="vectorized")
  want = saliency.explain(e, images, targets, **kw)
  jitted = jax.jit(lambda t: saliency.explain(e, images, t, **kw))
  _close(jitted(targets), want)
  rows = jnp.stack([targets, (targets + 1) % 3])
  vmapped = jax.vmap(lambda t: saliency.explain(e, images, t, **kw))(rows)
  _close(vmapped[0], want)
  _close(vmapped[1], saliency.explain(e, images, rows[1], **kw))
  assert not np.allclose(vmapped[0], vmapped[1])
  # Shape and dtype are still checked on a traced value.
  with pytest.raises(ValueError, match=r"targets must be 3 integer"):
    jax.jit(lambda t: saliency.explain(e, images, t, method="gradient"))(
        targets[:2])
  with pytest.raises(ValueError, match=r"targets must be 3 integer"):
    jax.jit(lambda t: saliency.explain(e, images, t, method="gradient"))(
        targets.astype(jnp.float32))


# ------------------------------------------------------- explain_states ---

STATES_SIZE, STATES_N = 32, 2


@functools.lru_cache(maxsize=None)
def _stages(seed=1):
  """A 2-class, 1-channel small CNN and 3 stacked cascade stages (0, 1, 2)."""
  make = lambda s: models.create("small_cnn", num_classes=2,  # noqa: E731
                                 in_channels=1, width=0.125, rngs=nnx.Rngs(s))
  trained, fresh = make(0), make(seed)
  order = trained.cascade_order[:2]
  states, _ = randomization.stages(
      nnx.state(trained), randomization.reinitialized(trained, fresh), order)
  return saliency.from_model(trained), states


def _state_images(seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(
      -1, 1, (STATES_N, STATES_SIZE, STATES_SIZE, 1)).astype(np.float32))


STATE_TARGETS = {"shared": jnp.array([1, 0]),
                 "per_state": jnp.array([[1, 0], [0, 0], [1, 1]])}


@pytest.mark.parametrize("method,hparams,strategy", [
    (method, hparams, strategy)
    for method, hparams in [("gradient", {}),
                            ("smoothgrad", dict(num_samples=3)),
                            ("integrated_gradients", dict(steps=4)),
                            ("gradcam", {})]
    for strategy in ("vectorized", "dispatch")] + [("gradient", {}, "scan")])
def test_explain_states_equals_a_loop_over_states(method, hparams, strategy):
  e, states = _stages()
  images, key = _state_images(), jax.random.key(3)
  for name, targets in STATE_TARGETS.items():
    got = saliency.explain_states(e, states, images, targets, method=method,
                                  key=key, strategy=strategy, **hparams)
    assert got.shape == (3, STATES_N, STATES_SIZE, STATES_SIZE, 1)
    for s in range(3):
      want = saliency.explain(
          e.with_state(randomization.unstack(states, s)), images,
          targets if targets.ndim == 1 else targets[s], method=method,
          key=key, strategy=strategy, **hparams)
      _close(got[s], want, f"{name} targets, state {s}")
    # The stages differ, so a broadcast of one state would fail above.
    assert not np.allclose(got[0], got[-1])


def test_explain_states_compiles_once():
  # The module (its name is shadowed by the function in saliency/__init__).
  explain_module = importlib.import_module("saliency_jax.saliency.explain")
  count = {"n": 0}

  def counted(*args, **kwargs):
    count["n"] += 1
    return saliency.METHODS["gradient"](*args, **kwargs)

  e, states = _stages()
  _, other = _stages(seed=2)
  program = explain_module._states_program
  before = program._cache_size()
  kw = dict(method=counted, strategy="vectorized")
  first = saliency.explain_states(e, states, _state_images(0),
                                  STATE_TARGETS["shared"], **kw)
  # One trace of the method for all 3 states (vmapped, not looped).
  assert count["n"] == 1 and program._cache_size() == before + 1
  second = saliency.explain_states(e, other, _state_images(1),
                                   STATE_TARGETS["shared"], **kw)
  assert count["n"] == 1 and program._cache_size() == before + 1
  assert not np.allclose(first, second)
  # Dispatch explains the states from Python, each one image at a time with
  # the same compiled chunk program: one more trace for all of them.
  saliency.explain_states(e, states, _state_images(0), STATE_TARGETS["shared"],
                          method=counted, strategy="dispatch", batch_size=1)
  assert count["n"] == 2


def test_explain_states_default_targets_are_each_states_prediction():
  e, states = _stages()
  images = _state_images()
  got = saliency.explain_states(e, states, images, None, method="gradient",
                                strategy="vectorized")
  for s in range(3):
    want = saliency.explain(e.with_state(randomization.unstack(states, s)),
                            images, method="gradient", strategy="vectorized")
    _close(got[s], want)


def test_explain_states_rejects_bad_arguments():
  e, states = _stages()
  images = _state_images()
  kw = dict(method="gradient", strategy="vectorized")
  with pytest.raises(ValueError, match=r"explain_states: targets must be 2 "
                     r"integer class indices \(N,\) or one row per state "
                     r"\(3, 2\)"):
    saliency.explain_states(e, states, images, jnp.zeros((2, 2), int), **kw)
  with pytest.raises(ValueError, match=r"explain_states: targets must lie in "
                     r"\[0, 2\)"):
    saliency.explain_states(e, states, images,
                            jnp.array([[0, 1], [0, 1], [0, 2]]), **kw)
  with pytest.raises(ValueError, match="stacked on one leading axis"):
    saliency.explain_states(e, e.state, images, jnp.array([0, 1]), **kw)
  with pytest.raises(ValueError, match="explainee's state pytree"):
    saliency.explain_states(e, {"w": jnp.zeros((3, 2))}, images,
                            jnp.array([0, 1]), **kw)
  with pytest.raises(ValueError, match="explain_states: images must be a "
                     "batch"):
    saliency.explain_states(e, states, images[0], jnp.array([0, 1]), **kw)
  with pytest.raises(ValueError, match="explain_states: images must be floating "
                     "point"):
    saliency.explain_states(e, states, np.ones(images.shape, np.int32),
                            jnp.array([0, 1]), **kw)
  with pytest.raises(ValueError, match="needs a model explainee"):
    saliency.explain_states(lambda x: jnp.sum(x, (0, 1)), states, images,
                            jnp.array([0, 0]), **kw)
