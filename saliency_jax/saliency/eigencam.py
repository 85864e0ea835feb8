"""EigenCAM: the first principal component of the GradCAM layer."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _cam
from saliency_jax.saliency.explainee import Explainee


def eigencam(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
             key: jax.Array | None = None, batch_size: int | None = None,
             strategy: str | None = None) -> jax.Array:
  r"""Projection of the centred activations on their first principal axis.

  .. math::
    \bar A = A - \tfrac{1}{hw}\textstyle\sum_{i,j} A_{ij}, \quad
    \bar A = U S V^\top, \quad v = s\, V_{:,1}, \quad
    M = \mathrm{up}\big(\mathrm{ReLU}(\bar A v)\big)

  with :math:`A` = ``explainee.features(x)`` reshaped to (hw, k), each
  channel centred by its mean over pixels before the SVD, as
  pytorch-grad-cam's ``get_2d_projection`` does. An SVD fixes
  :math:`V_{:,1}` only up to sign (pytorch-grad-cam leaves it to LAPACK); here
  :math:`s = \mathrm{sign}(\sum_k V_{k,1})` (+1 at 0): the axis points where
  the channels grow together, so the map is deterministic. Class-agnostic:
  ``target`` is checked, unused.

  Args:
    logits_fn: an :class:`Explainee` or an NNX model (needs features/head).
    x: one image (H, W, C).
    target: class index t (unused: EigenCAM does not depend on it).
    key: unused (deterministic); kept for the common signature.
    batch_size: unused (one evaluation).
    strategy: unused (one evaluation).

  Returns:
    Non-negative map (H, W, C), one (H, W) map tiled over the channels.

  Reference: Muhammad & Yeasin, arXiv:2008.00299.
  """
  del key, batch_size, strategy
  return _eigencam(_cam.model_explainee("eigencam", logits_fn, x, target), x)


def first_component(a: jax.Array) -> jax.Array:
  """Signed projection (h, w) of centred ``a`` (h, w, k) on its first axis."""
  flat = a.reshape(-1, a.shape[-1])
  flat = flat - jnp.mean(flat, axis=0)
  v = jnp.linalg.svd(flat, full_matrices=False)[2][0]
  v = jnp.where(jnp.sum(v) < 0, -v, v)
  return (flat @ v).reshape(a.shape[:2])


@jax.jit
def _eigencam(explainee: Explainee, x: jax.Array) -> jax.Array:
  return _cam.finish(first_component(explainee.features(x)), x)
