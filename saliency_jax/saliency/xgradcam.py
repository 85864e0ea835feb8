"""XGradCAM: channel weights from activation-weighted gradients."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _cam
from saliency_jax.saliency.explainee import Explainee

EPSILON = 1e-7


def xgradcam(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
             key: jax.Array | None = None, batch_size: int | None = None,
             strategy: str | None = None) -> jax.Array:
  r"""GradCAM with each gradient weighted by its share of the channel's sum.

  .. math::
    w_k = \sum_{i,j} \frac{A_{ijk}}{\sum_{i',j'} A_{i'j'k} + \epsilon}
          \frac{\partial f_t}{\partial A_{ijk}}, \qquad
    M = \mathrm{up}\big(\mathrm{ReLU}(\textstyle\sum_k w_k A_k)\big)

  with :math:`\epsilon` = 1e-7 as pytorch-grad-cam adds it, :math:`A` =
  ``explainee.features(x)`` (h, w, k), :math:`f_t` = ``head(A)[target]``.
  Where the gradient is constant over space (a GAP + dense head) the weights
  are GradCAM's times :math:`\sum A_k / (\sum A_k + \epsilon)`, i.e. GradCAM's
  up to :math:`\epsilon`.

  Args:
    logits_fn: an :class:`Explainee` or an NNX model (needs features/head).
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: unused (one evaluation).
    strategy: unused (one evaluation).

  Returns:
    Non-negative map (H, W, C), one (H, W) map tiled over the channels.

  Reference: Fu et al., arXiv:2008.02312 (Axiom-based Grad-CAM).
  """
  del key, batch_size, strategy
  return _xgradcam(_cam.model_explainee("xgradcam", logits_fn, x, target), x,
                   target)


@jax.jit
def _xgradcam(explainee: Explainee, x: jax.Array,
              target: jax.Array) -> jax.Array:
  a, g = _cam.activations_and_gradients(explainee, x, target)
  weights = jnp.sum(g * a, axis=(0, 1)) / (jnp.sum(a, axis=(0, 1)) + EPSILON)
  return _cam.finish(jnp.sum(a * weights, axis=-1), x)
