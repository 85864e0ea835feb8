"""GradCAM: the model's GradCAM layer weighted by its mean gradient."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _cam
from saliency_jax.saliency.explainee import Explainee


def gradcam(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
            key: jax.Array | None = None, batch_size: int | None = None,
            strategy: str | None = None) -> jax.Array:
  r"""Class activation map of the target from the model's GradCAM layer.

  .. math::
    w_k = \frac{1}{hw} \sum_{i,j} \frac{\partial f_t}{\partial A_{ijk}},
    \qquad M = \mathrm{up}\big(\mathrm{ReLU}(\textstyle\sum_k w_k A_k)\big)

  with :math:`A` = ``explainee.features(x)`` (h, w, k) (the layer the model
  declares: ``mixed10`` for InceptionV3), :math:`f_t` = ``head(A)[target]``
  and up = bilinear resize to (H, W). Not divided by its max as PAIR does:
  normalization is :mod:`postprocess`'s job.

  Args:
    logits_fn: an :class:`Explainee` or an NNX model (needs features/head).
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: unused (one evaluation).
    strategy: unused (one evaluation).

  Returns:
    Non-negative map (H, W, C): one (H, W) map tiled over the C channels, as
    PAIR tiles it, so every method returns (H, W, C).

  Reference: Selvaraju et al., arXiv:1610.02391.
  """
  del key, batch_size, strategy
  return _gradcam(_cam.model_explainee("gradcam", logits_fn, x, target), x, target)


@jax.jit
def _gradcam(explainee: Explainee, x: jax.Array,
             target: jax.Array) -> jax.Array:
  a, g = _cam.activations_and_gradients(explainee, x, target)
  return _cam.finish(jnp.sum(a * jnp.mean(g, axis=(0, 1)), axis=-1), x)
