"""Chunking: every strategy and batch size gives the unchunked result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.saliency import batching
from saliency_jax.saliency import integrated_gradients as ig_lib
from saliency_jax.saliency import occlusion as occlusion_lib
from saliency_jax.saliency import smoothgrad_ig as sgig_lib

_RNG = np.random.default_rng(0)
_K1 = jnp.asarray(_RNG.normal(0, 0.5, (3, 3, 3, 4)), jnp.float32)
_DENSE = jnp.asarray(_RNG.normal(size=(4, 3)), jnp.float32)


def _cnn(x):
  """A tiny conv net (cheap to compile): conv -> tanh -> mean -> dense."""
  h = jax.lax.conv_general_dilated(x[None], _K1, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.mean(jnp.tanh(h[0] - 0.1), axis=(0, 1)) @ _DENSE


def _image(seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (8, 8, 3)).astype(
      np.float32)


def _scaled_square(operands, sample, *, power):
  return {"a": operands * sample ** power, "b": sample[None]}


@pytest.mark.parametrize("strategy", batching.STRATEGIES)
@pytest.mark.parametrize("batch_size", [None, 1, 3, 7, 10])
def test_sample_sum_and_map_match_numpy(strategy, batch_size):
  samples = np.arange(7, dtype=np.float32)
  kw = dict(batch_size=batch_size, strategy=strategy, static=(("power", 2),))
  total = batching.sample_sum(_scaled_square, jnp.float32(2.0), samples, **kw)
  np.testing.assert_allclose(total["a"], 2.0 * np.sum(samples ** 2))
  np.testing.assert_allclose(total["b"], [samples.sum()])
  stacked = batching.sample_map(_scaled_square, jnp.float32(2.0), samples, **kw)
  np.testing.assert_allclose(stacked["a"], 2.0 * samples ** 2)
  assert stacked["b"].shape == (7, 1)


def test_chunk_size_shares_the_budget_with_nested_evaluations():
  assert batching.chunk_size(25, None, 10) == 25
  assert batching.chunk_size(25, 50, 10) == 5   # 5 samples x 10 steps
  assert batching.chunk_size(25, 8, 10) == 1    # 1 sample x 8-step chunks
  assert batching.chunk_size(3, 50, 1) == 3
  assert batching.chunk_size(30, 7, 1) == 7


# (method, hparams, [(strategy, batch_size), ...]): batch sizes that leave a
# padded last chunk; for SmoothGrad-IG (3 samples x 4 steps) 8 runs 2 noisy
# samples at once, 2 runs one at a time in chunks of 2 steps.
_CASES = {
    "integrated_gradients": (
        ig_lib.integrated_gradients, dict(steps=5, baseline="black"),
        [("vectorized", 2), ("scan", 2), ("dispatch", 1), ("dispatch", 2)]),
    "occlusion": (
        occlusion_lib.occlusion, dict(window=4, stride=3),
        [("vectorized", 4), ("scan", 4), ("dispatch", 1), ("dispatch", 4)]),
    "smoothgrad_ig": (
        sgig_lib.smoothgrad_ig, dict(num_samples=3, steps=4, squared=True),
        [("vectorized", 8), ("scan", 2), ("dispatch", 2), ("dispatch", 8)]),
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_chunked_equals_unchunked_for_every_strategy(name):
  method, hparams, runs = _CASES[name]
  x, key = _image(), jax.random.key(4)
  want = method(_cnn, x, 1, key=key, batch_size=None, strategy="vectorized",
                **hparams)
  for strategy, batch_size in runs + [("scan", None), ("dispatch", None)]:
    got = method(_cnn, x, 1, key=key, batch_size=batch_size,
                 strategy=strategy, **hparams)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7,
                               err_msg=f"{strategy}, {batch_size}")


def test_resolve_defaults_and_errors():
  default, size = batching.DEFAULT_STRATEGY[jax.default_backend()]
  assert batching.resolve(None, None) == (default, size)
  assert batching.resolve(None, 5) == (default, 5)
  assert batching.resolve("scan", None) == ("scan", None)
  with pytest.raises(ValueError, match="strategy: expected one of"):
    batching.resolve("threads", None)
  for bad in (0, -1, 2.5, True):
    with pytest.raises(ValueError, match="batch_size: expected a positive"):
      batching.resolve("scan", bad)
  with pytest.raises(ValueError, match="strategy: expected one of"):
    ig_lib.integrated_gradients(_cnn, _image(), 0, strategy="pmap")
