"""``explain`` and the registry: per-image loop, targets, traces, shapes."""

from __future__ import annotations

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import models
from saliency_jax import saliency
from saliency_jax.models import small_cnn
from saliency_jax.saliency import batching

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
  with pytest.raises(ValueError, match="images must be a batch"):
    saliency.explain(e, images[0], method="gradient")
  with pytest.raises(ValueError, match=r"targets must be 3 integer"):
    saliency.explain(e, images, [0, 1], method="gradient")
  with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
    saliency.explain(e, images, [0, 1, 3], method="gradient")
  with pytest.raises(ValueError, match="needs a `key`"):
    saliency.explain(e, images, method="smoothgrad")
