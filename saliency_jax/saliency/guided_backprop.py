"""Guided backpropagation: the gradient with ReLU's guided backward rule."""

from __future__ import annotations

from typing import Any

import jax

from saliency_jax.models.layers import guided_relu  # noqa: F401 (re-exported)
from saliency_jax.saliency import _checks
from saliency_jax.saliency.explainee import Explainee, as_explainee


def guided_backprop(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
                    key: jax.Array | None = None, batch_size: int | None = None,
                    strategy: str | None = None) -> jax.Array:
  r"""Gradient of the target logit with every ReLU's backward pass guided.

  .. math::
    \frac{\partial}{\partial z}\mathrm{ReLU}: \quad
    g_{\text{in}} = g_{\text{out}} \odot [z > 0] \odot [g_{\text{out}} > 0]

  at every ReLU (input :math:`z`) of ``explainee.guided_logits``; the forward
  pass is unchanged.

  Args:
    logits_fn: an :class:`Explainee`, an NNX model, or ``logits_fn(x) -> (K,)``
      whose ReLUs are ``saliency_jax.models.relu`` (and not already jitted:
      the swap happens while tracing).
    x: one image (H, W, C).
    target: class index explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: unused (one evaluation).
    strategy: unused (one evaluation).

  Returns:
    Signed attribution (H, W, C).

  Reference: Springenberg et al., arXiv:1412.6806.
  """
  del key, batch_size, strategy
  _checks.image("guided_backprop", x)
  _checks.target("guided_backprop", target)
  return _guided_backprop(as_explainee(logits_fn), x, target)


@jax.jit
def _guided_backprop(explainee: Explainee, x: jax.Array,
                     target: jax.Array) -> jax.Array:
  return jax.grad(lambda z: explainee.guided_logits(z)[target])(x)
