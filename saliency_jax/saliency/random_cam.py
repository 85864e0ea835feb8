"""RandomCAM: the GradCAM layer under random channel weights (a null model)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _cam, _checks
from saliency_jax.saliency.explainee import Explainee


def random_cam(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
               key: jax.Array | None = None, batch_size: int | None = None,
               strategy: str | None = None) -> jax.Array:
  r"""A CAM whose channel weights ignore the model's output: a null model.

  .. math::
    w_k \sim \mathcal{U}(-1, 1) \text{ i.i.d. from } \texttt{key}, \qquad
    M = \mathrm{up}\big(\mathrm{ReLU}(\textstyle\sum_k w_k A_k)\big)

  with :math:`A` = ``explainee.features(x)`` (h, w, k); the weights'
  range is pytorch-grad-cam's. It keeps what the layer's activations alone
  show, so a method that scores no better than RandomCAM learned nothing
  from the target (a sanity-check control). ``target`` is checked, unused.

  Args:
    logits_fn: an :class:`Explainee` or an NNX model (needs features/head).
    x: one image (H, W, C).
    target: class index t (unused by the weights).
    key: ``jax.random`` key of the weights; required.
    batch_size: unused (one evaluation).
    strategy: unused (one evaluation).

  Returns:
    Non-negative map (H, W, C), one (H, W) map tiled over the channels.

  Reference: pytorch-grad-cam's ``RandomCAM`` (Gildenblat et al., 2021).
  """
  del batch_size, strategy
  explainee = _cam.model_explainee("random_cam", logits_fn, x, target)
  _checks.key("random_cam", key)
  return _random_cam(explainee, x, key)


@jax.jit
def _random_cam(explainee: Explainee, x: jax.Array, key: jax.Array) -> jax.Array:
  a = explainee.features(x)
  weights = jax.random.uniform(key, a.shape[-1:], a.dtype, -1.0, 1.0)
  return _cam.finish(jnp.sum(a * weights, axis=-1), x)
