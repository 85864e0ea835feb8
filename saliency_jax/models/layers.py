"""Layers shared by the models: the swappable ReLU and the model contract.

Every ReLU in every model goes through :func:`relu`. Guided backpropagation
(Springenberg et al. 2015) swaps the ReLU's backward rule for the whole network
by tracing the model inside ``with activation(guided_relu):`` -- the models'
code is never copied.

The model contract (what saliency methods, randomization and training rely on):

- ``model(x)`` maps a batch ``(B, H, W, C)`` to logits ``(B, K)``;
- ``model.features(x)`` gives the GradCAM layer's activations ``(B, h, w, k)``
  and ``model.head(a)`` maps them to logits, so ``model(x) == head(features(x))``;
- ``model.cascade_order`` is a tuple of the model's top-level attribute names,
  top-down (logits first), covering every parameter exactly once;
- ``model.gradcam_layer`` names the block whose output ``features`` returns;
- BatchNorm follows NNX: ``model.train()`` / ``model.eval()``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import jax

_ACTIVATION: contextvars.ContextVar[Callable[[jax.Array], jax.Array]] = (
    contextvars.ContextVar("saliency_jax_activation", default=jax.nn.relu))


def relu(x: jax.Array) -> jax.Array:
  """The ReLU of every model; :func:`activation` can swap it while tracing."""
  return _ACTIVATION.get()(x)


@contextlib.contextmanager
def activation(fn: Callable[[jax.Array], jax.Array]) -> Iterator[None]:
  """Replaces every model ReLU by ``fn`` for code traced inside the block."""
  token = _ACTIVATION.set(fn)
  try:
    yield
  finally:
    _ACTIVATION.reset(token)


def scaled(channels: int, width: float) -> int:
  """Channel count under a width multiplier (``width=1`` is the published net)."""
  return max(1, int(round(channels * width)))
