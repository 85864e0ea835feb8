"""HiResCAM: the GradCAM layer times its gradient, element by element."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _cam
from saliency_jax.saliency.explainee import Explainee


def hirescam(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
             key: jax.Array | None = None, batch_size: int | None = None,
             strategy: str | None = None) -> jax.Array:
  r"""Element-wise gradient x activation, summed over channels.

  .. math::
    M = \mathrm{up}\Big(\mathrm{ReLU}\big(\textstyle\sum_k
        \frac{\partial f_t}{\partial A_{ijk}} A_{ijk}\big)\Big)

  with :math:`A` = ``explainee.features(x)`` (h, w, k), :math:`f_t` =
  ``head(A)[target]``, up = bilinear resize to (H, W). Where the gradient is
  constant over space (a GAP + dense head) it is its own mean, and HiResCAM
  equals GradCAM.
  Negatives clipped as pytorch-grad-cam does.

  Args:
    logits_fn: an :class:`Explainee` or an NNX model (needs features/head).
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: unused (one evaluation).
    strategy: unused (one evaluation).

  Returns:
    Non-negative map (H, W, C), one (H, W) map tiled over the channels.

  Reference: Draelos & Carin, arXiv:2011.08891.
  """
  del key, batch_size, strategy
  return _hirescam(_cam.model_explainee("hirescam", logits_fn, x, target), x,
                   target)


@jax.jit
def _hirescam(explainee: Explainee, x: jax.Array,
              target: jax.Array) -> jax.Array:
  a, g = _cam.activations_and_gradients(explainee, x, target)
  return _cam.finish(jnp.sum(g * a, axis=-1), x)
