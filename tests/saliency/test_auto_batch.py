"""batch_size='auto': the most evaluations at once that fit the device's memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import memory
from saliency_jax import models
from saliency_jax import saliency
from saliency_jax.saliency import batching


@pytest.fixture(scope="module")
def small():
  model = models.create("small_cnn", num_classes=2, in_channels=1, width=0.25,
                        rngs=nnx.Rngs(0))
  images = jax.random.uniform(jax.random.key(1), (5, 32, 32, 1))
  return saliency.from_model(model), images, jnp.array([0, 1, 0, 1, 1])


def recording(monkeypatch):
  """Every program's measured need, by the order compiled."""
  needs = []
  measure = memory.program_bytes

  def record(compiled):
    needs.append(measure(compiled))
    return needs[-1]

  monkeypatch.setattr(memory, "program_bytes", record)
  return needs


def test_auto_under_a_small_budget_chunks_and_gives_the_unchunked_maps(small, monkeypatch):
  e, images, targets = small
  key = jax.random.key(3)
  hp = dict(method="smoothgrad", key=key, num_samples=4)
  full = saliency.explain(e, images, targets, strategy="vectorized", batch_size=None, **hp)
  needs = recording(monkeypatch)
  everything = len(images) * 4
  strategy, size = saliency.auto_batch_size(e, images, strategy="vectorized",
                                            budget=10**12, **hp)
  assert (strategy, size) == ("vectorized", None)  # all at once fits
  # A budget between the needs of 2 and of all 20 evaluations.
  budget = (needs[1] + needs[-1]) // 2
  assert needs[1] < budget < needs[-1]
  strategy, size = saliency.auto_batch_size(e, images, strategy="vectorized",
                                            budget=budget, **hp)
  assert strategy == "scan" and 2 <= size < everything
  chunked = saliency.explain(e, images, targets, strategy=strategy, batch_size=size, **hp)
  # Sums of other chunkings: float32 rounding, relative to the map's scale.
  np.testing.assert_allclose(chunked, full, rtol=0, atol=1e-5 * float(jnp.abs(full).max()))


def test_auto_over_states_runs_them_side_by_side_when_all_fit(small):
  e, images, _ = small
  states = jax.tree.map(lambda leaf: jnp.stack([leaf, 0.5 * leaf, 2.0 * leaf]), e.state)
  assert saliency.auto_batch_size(e, images, states=states, method="gradient",
                                  strategy="vectorized", budget=10**12) == ("vectorized", None)
  auto = saliency.explain_states(e, states, images, None, method="gradient",
                                 strategy="vectorized", batch_size="auto")
  manual = saliency.explain_states(e, states, images, None, method="gradient",
                                   strategy="vectorized", batch_size=None)
  np.testing.assert_allclose(auto, manual, rtol=1e-6, atol=1e-9)


def test_one_evaluation_that_does_not_fit_names_the_method(small):
  e, images, _ = small
  with pytest.raises(memory.DoesNotFitError, match="smoothgrad on 5 images: one evaluation"):
    saliency.auto_batch_size(e, images, method="smoothgrad", num_samples=2,
                             key=jax.random.key(0), strategy="vectorized", budget=1)


def test_auto_is_the_gpu_and_tpu_default_and_a_single_image_runs_all_at_once():
  assert batching.DEFAULT_STRATEGY["gpu"][1] == batching.AUTO
  assert batching.DEFAULT_STRATEGY["tpu"][1] == batching.AUTO
  assert batching.resolve("vectorized", "auto") == ("vectorized", None)
  assert batching.resolve("vectorized", "auto", keep_auto=True) == ("vectorized", "auto")
  with pytest.raises(ValueError, match="batch_size: expected a positive int, 'auto'"):
    batching.resolve("scan", "big")


def test_paper_shaped_program_is_split_into_chunks_that_fit(monkeypatch):
  """InceptionV3 at 320 px, 100 images, SmoothGrad-IG 25 x 10 (25,000
  gradients), compiled from shapes only under a simulated 1.5 GiB budget."""
  model = nnx.eval_shape(lambda: models.create(
      "inception_v3", num_classes=2, in_channels=1, width=1.0, rngs=nnx.Rngs(0)))
  model.eval()
  e = saliency.from_state(*nnx.split(model))
  images = jax.ShapeDtypeStruct((100, 320, 320, 1), jnp.float32)
  budget = 3 * 2**29
  needs = recording(monkeypatch)
  strategy, size = saliency.auto_batch_size(
      e, images, method="smoothgrad_ig", key=jax.random.key(0), num_samples=25,
      steps=10, strategy="vectorized", budget=budget)
  assert strategy == "scan" and 1 < size < 25_000
  assert len(needs) <= 6  # never the 25,000-gradient program
  assert max(n for n in needs if n <= budget) <= budget
  # The chosen size's program fits and the next one up does not.
  assert any(n > budget for n in needs)
