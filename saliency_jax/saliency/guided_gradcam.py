"""Guided GradCAM: guided backpropagation masked by GradCAM."""

from __future__ import annotations

from typing import Any

import jax

from saliency_jax.saliency import _checks
from saliency_jax.saliency.explainee import as_explainee
from saliency_jax.saliency.gradcam import gradcam
from saliency_jax.saliency.guided_backprop import guided_backprop


def guided_gradcam(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
                   key: jax.Array | None = None, batch_size: int | None = None,
                   strategy: str | None = None) -> jax.Array:
  r"""Elementwise product of guided backpropagation and GradCAM.

  .. math::
    M(x) = \mathrm{GB}(x) \odot \mathrm{GradCAM}(x)

  GradCAM's (H, W) map is the same in every channel.

  Args:
    logits_fn: an :class:`Explainee` or an NNX model (GradCAM needs
      features/head).
    x: one image (H, W, C).
    target: class index explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: unused (two evaluations).
    strategy: unused (two evaluations).

  Returns:
    Signed attribution (H, W, C).

  Reference: Selvaraju et al., arXiv:1610.02391.
  """
  del key, batch_size, strategy
  _checks.image("guided_gradcam", x)
  explainee = as_explainee(logits_fn)
  return guided_backprop(explainee, x, target) * gradcam(explainee, x, target)
