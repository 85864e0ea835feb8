"""Gradient x input: the gradient weighted by the input it multiplies."""

from __future__ import annotations

from typing import Any

import jax

from saliency_jax.saliency import _checks
from saliency_jax.saliency.gradient import gradient


def gradient_x_input(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
                     key: jax.Array | None = None,
                     batch_size: int | None = None,
                     strategy: str | None = None) -> jax.Array:
  r"""Elementwise product of the image and the gradient of the target logit.

  .. math::
    M(x) = x \odot \frac{\partial f_t(x)}{\partial x}

  with :math:`f` = ``logits_fn`` and :math:`t` = ``target``; for a linear
  model it is the contribution of each input to the logit.

  Args:
    logits_fn: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: unused (one evaluation).
    strategy: unused (one evaluation).

  Returns:
    Signed attribution (H, W, C).

  Reference: Shrikumar et al., arXiv:1605.01713.
  """
  del key, batch_size, strategy
  _checks.image("gradient_x_input", x)
  return x * gradient(logits_fn, x, target)
