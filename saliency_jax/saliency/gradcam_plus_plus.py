"""GradCAM++: channel weights from positive gradients, pixel-weighted."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _cam
from saliency_jax.saliency.explainee import Explainee

EPSILON = 1e-6


def gradcam_plus_plus(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
                      key: jax.Array | None = None,
                      batch_size: int | None = None,
                      strategy: str | None = None) -> jax.Array:
  r"""GradCAM++ as pytorch-grad-cam computes it, from first-order gradients.

  .. math::
    \alpha_{ijk} = \frac{g_{ijk}^2}{2 g_{ijk}^2 + \sum_{i',j'} A_{i'j'k}\,
                   g_{ijk}^3 + \epsilon} \ (0 \text{ where } g_{ijk} = 0),
    \qquad w_k = \sum_{i,j} \alpha_{ijk} \mathrm{ReLU}(g_{ijk}),

  .. math::
    M = \mathrm{up}\big(\mathrm{ReLU}(\textstyle\sum_k w_k A_k)\big)

  with :math:`g = \partial f_t / \partial A` of the raw logit :math:`f_t`
  (the paper's exponential output makes its higher derivatives powers of the
  first; pytorch-grad-cam uses the logit's), :math:`\epsilon` = 1e-6,
  :math:`A` = ``explainee.features(x)`` (h, w, k). Unnormalised (the paper's
  weights are not divided by anything further).

  Args:
    logits_fn: an :class:`Explainee` or an NNX model (needs features/head).
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: unused (one evaluation).
    strategy: unused (one evaluation).

  Returns:
    Non-negative map (H, W, C), one (H, W) map tiled over the channels.

  Reference: Chattopadhyay et al., arXiv:1710.11063.
  """
  del key, batch_size, strategy
  return _gradcam_plus_plus(
      _cam.model_explainee("gradcam_plus_plus", logits_fn, x, target), x,
      target)


@jax.jit
def _gradcam_plus_plus(explainee: Explainee, x: jax.Array,
                       target: jax.Array) -> jax.Array:
  a, g = _cam.activations_and_gradients(explainee, x, target)
  g2 = g * g
  alpha = g2 / (2 * g2 + jnp.sum(a, axis=(0, 1)) * g2 * g + EPSILON)
  alpha = jnp.where(g != 0, alpha, 0.0)
  weights = jnp.sum(alpha * jax.nn.relu(g), axis=(0, 1))
  return _cam.finish(jnp.sum(a * weights, axis=-1), x)
