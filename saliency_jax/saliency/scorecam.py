"""ScoreCAM: channels weighted by the target logit of the image they mask."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _cam, batching
from saliency_jax.saliency.explainee import Explainee

EPSILON = 1e-8
# Channels of the widest GradCAM layer of the built-in models (InceptionV3's
# mixed10). The count `explain` budgets per image: the image shape does not
# tell a layer's width, and an upper bound keeps `batch_size` a bound.
MAX_CHANNELS = 2048


@batching.cost(lambda x_shape, **_: MAX_CHANNELS)
def scorecam(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
             key: jax.Array | None = None, batch_size: int | None = None,
             strategy: str | None = None) -> jax.Array:
  r"""Channel masks scored by forward passes, as pytorch-grad-cam does.

  .. math::
    S_k = \frac{\mathrm{up}(A_k) - \min \mathrm{up}(A_k)}
               {\max \mathrm{up}(A_k) - \min \mathrm{up}(A_k) + \epsilon},
    \quad w = \mathrm{softmax}_k\big(f_t(x \odot S_k)\big), \quad
    M = \mathrm{up}\big(\mathrm{ReLU}(\textstyle\sum_k w_k A_k)\big)

  with :math:`A` = ``explainee.features(x)`` (h, w, k), up = bilinear resize
  to (H, W), :math:`\epsilon` = 1e-8, :math:`f_t` the raw target logit; the
  softmax over channels of the raw logits is pytorch-grad-cam's (the paper
  uses the softmax probability's increase over a baseline). The k masked
  forward passes go through :mod:`batching` (``batch_size`` at once).

  Args:
    logits_fn: an :class:`Explainee` or an NNX model (needs features/head).
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: masked images evaluated at once; ``None``: all k.
    strategy: how chunks run (:data:`batching.STRATEGIES`).

  Returns:
    Non-negative map (H, W, C), one (H, W) map tiled over the channels.

  Reference: Wang et al., arXiv:1910.01279.
  """
  del key
  explainee = _cam.model_explainee("scorecam", logits_fn, x, target)
  strategy, batch_size = batching.resolve(strategy, batch_size)
  a = _features(explainee, x)
  scores = batching.sample_map(
      _masked_logit, (explainee, x, target, a),
      jnp.arange(a.shape[-1], dtype=jnp.int32), batch_size=batch_size,
      strategy=strategy)
  return _weighted(a, scores, x)


def channel_mask(a: jax.Array, channel: jax.Array,
                 shape: tuple[int, int]) -> jax.Array:
  """:math:`S_k` (H, W): channel k of ``a`` upsampled, min-max scaled."""
  up = jax.image.resize(a[..., channel], shape, "bilinear")
  low, high = jnp.min(up), jnp.max(up)
  return (up - low) / (high - low + EPSILON)


@jax.jit
def _features(explainee: Explainee, x: jax.Array) -> jax.Array:
  return explainee.features(x)


def _masked_logit(operands, channel):
  r""":math:`f_t(x \odot S_k)` for one channel k."""
  explainee, x, target, a = operands
  mask = channel_mask(a, channel, x.shape[:2]).astype(x.dtype)
  return explainee.logits(x * mask[..., None])[target]


@jax.jit
def _weighted(a: jax.Array, scores: jax.Array, x: jax.Array) -> jax.Array:
  weights = jax.nn.softmax(scores.astype(a.dtype))
  return _cam.finish(jnp.sum(a * weights, axis=-1), x)
