"""LayerCAM: the GradCAM layer weighted by its positive gradient per position."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _cam
from saliency_jax.saliency.explainee import Explainee


def layercam(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
             key: jax.Array | None = None, batch_size: int | None = None,
             strategy: str | None = None) -> jax.Array:
  r"""Activations weighted by their ReLU'd gradient, position by position.

  .. math::
    M = \mathrm{up}\Big(\mathrm{ReLU}\big(\textstyle\sum_k
        \mathrm{ReLU}\big(\frac{\partial f_t}{\partial A_{ijk}}\big)
        A_{ijk}\big)\Big)

  with :math:`A` = ``explainee.features(x)`` (h, w, k), :math:`f_t` =
  ``head(A)[target]``, up = bilinear resize to (H, W); equal to
  :func:`~saliency_jax.saliency.hirescam.hirescam` where every gradient is
  non-negative. As pytorch-grad-cam computes it (one layer, no fusion).

  Args:
    logits_fn: an :class:`Explainee` or an NNX model (needs features/head).
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: unused (one evaluation).
    strategy: unused (one evaluation).

  Returns:
    Non-negative map (H, W, C), one (H, W) map tiled over the channels.

  Reference: Jiang et al., IEEE TIP 30, 2021 (LayerCAM).
  """
  del key, batch_size, strategy
  return _layercam(_cam.model_explainee("layercam", logits_fn, x, target), x,
                   target)


@jax.jit
def _layercam(explainee: Explainee, x: jax.Array,
              target: jax.Array) -> jax.Array:
  a, g = _cam.activations_and_gradients(explainee, x, target)
  return _cam.finish(jnp.sum(jax.nn.relu(g) * a, axis=-1), x)
