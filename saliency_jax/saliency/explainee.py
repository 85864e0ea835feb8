"""What saliency methods see of a model: an :class:`Explainee`.

An explainee wraps either an NNX model split into ``(graphdef, state)`` or a
plain function ``logits_fn(x) -> (K,)`` of one image ``x`` (H, W, C). It is a
pytree whose only leaves are the model state, so one jitted program serves any
state of the same shapes (every cascade stage, every seed), and a stack of
states goes through ``jax.vmap``.

- ``logits(x)``: pre-softmax outputs (K,) for one image.
- ``features(x)`` / ``head(a)``: the GradCAM layer's activations (h, w, k) and
  the rest of the network, ``logits(x) == head(features(x))`` (models only).
- ``guided_logits(x)``: the same network with every ReLU's backward pass
  replaced by the guided rule (:mod:`saliency_jax.saliency.guided_backprop`);
  works for a plain function too when its ReLUs are ``saliency_jax.models.relu``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from saliency_jax.models import layers

LogitsFn = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Explainee:
  graphdef: Any = None
  state: Any = None
  fn: LogitsFn | None = None

  def _model(self) -> nnx.Module:
    if self.graphdef is None:
      raise ValueError("this explainee wraps a plain logits function; "
                       "features/head need a model (use from_model)")
    return nnx.merge(self.graphdef, self.state)

  def logits(self, x: jax.Array) -> jax.Array:
    if self.fn is not None:
      return self.fn(x)
    return self._model()(x[None])[0]

  def features(self, x: jax.Array) -> jax.Array:
    return self._model().features(x[None])[0]

  def head(self, a: jax.Array) -> jax.Array:
    return self._model().head(a[None])[0]

  def guided_logits(self, x: jax.Array) -> jax.Array:
    with layers.activation(layers.guided_relu):
      return self.logits(x)

  @property
  def gradcam_layer(self) -> str | None:
    return None if self.graphdef is None else self._model().gradcam_layer

  def with_state(self, state: Any) -> Explainee:
    """The same network with other parameters (a cascade stage, a seed)."""
    return dataclasses.replace(self, state=state)


jax.tree_util.register_dataclass(
    Explainee, data_fields=["state"], meta_fields=["graphdef", "fn"])


def from_model(model: nnx.Module) -> Explainee:
  """Explainee of an NNX model, always in eval mode (BatchNorm running stats)."""
  model = nnx.clone(model)
  model.eval()
  graphdef, state = nnx.split(model)
  return Explainee(graphdef=graphdef, state=state)


def from_state(graphdef: Any, state: Any) -> Explainee:
  """Explainee of a split model; ``graphdef`` must come from an eval-mode model."""
  return Explainee(graphdef=graphdef, state=state)


def as_explainee(model_or_fn: Explainee | nnx.Module | LogitsFn) -> Explainee:
  """Accepts an explainee, an NNX model or a plain ``logits_fn(x) -> (K,)``."""
  if isinstance(model_or_fn, Explainee):
    return model_or_fn
  if isinstance(model_or_fn, nnx.Module):
    return from_model(model_or_fn)
  if callable(model_or_fn):
    return Explainee(fn=model_or_fn)
  raise TypeError("expected an Explainee, an NNX model or a function "
                  f"logits_fn(x) -> (K,), got {type(model_or_fn).__name__}")
