"""Vanilla gradient: the sensitivity of the target logit to each input value."""

from __future__ import annotations

from typing import Any

import jax

from saliency_jax.saliency import _checks
from saliency_jax.saliency.explainee import Explainee, as_explainee


def gradient(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
             key: jax.Array | None = None, batch_size: int | None = None,
             strategy: str | None = None) -> jax.Array:
  r"""Gradient of the target's pre-softmax output with respect to the image.

  .. math::
    M(x) = \frac{\partial f_t(x)}{\partial x}

  with :math:`f` = ``logits_fn`` and :math:`t` = ``target``.

  Args:
    logits_fn: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: unused (one evaluation).
    strategy: unused (one evaluation).

  Returns:
    Signed attribution (H, W, C).

  Reference: Simonyan et al., arXiv:1312.6034.
  """
  del key, batch_size, strategy
  _checks.image("gradient", x)
  _checks.target("gradient", target)
  return _gradient(as_explainee(logits_fn), x, target)


@jax.jit
def _gradient(explainee: Explainee, x: jax.Array,
              target: jax.Array) -> jax.Array:
  return jax.grad(lambda z: explainee.logits(z)[target])(x)
