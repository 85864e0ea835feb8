"""SmoothGrad: any base method averaged over noisy copies of the image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _checks, batching
from saliency_jax.saliency.explainee import as_explainee
from saliency_jax.saliency.gradient import gradient


def _resolve_base(base: str | Callable) -> Callable:
  if isinstance(base, str):
    from saliency_jax.saliency import METHODS  # pylint: disable=g-import-not-at-top
    if base not in METHODS:
      raise ValueError(f"smoothgrad: unknown base method {base!r}; expected "
                       f"one of {sorted(METHODS)}")
    return METHODS[base]
  if not callable(base):
    raise ValueError(f"smoothgrad: base must be a method or its name, got "
                     f"{type(base).__name__}")
  return base


def _count(x_shape, num_samples, base, noise_level, squared, vargrad,
           **base_hparams):
  del noise_level, squared, vargrad
  return num_samples * batching.evaluations(_resolve_base(base), x_shape,
                                            base_hparams)


@batching.cost(_count)
def smoothgrad(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
               key: jax.Array | None = None, batch_size: int | None = None,
               strategy: str | None = None, num_samples: int = 25,
               noise_level: float = 0.15, squared: bool = False,
               vargrad: bool = False, base: str | Callable = gradient,
               **base_hparams: Any) -> jax.Array:
  r"""Mean (or mean square, or variance) of a base map over noisy images.

  .. math::
    M(x) = \frac{1}{n} \sum_{j=1}^{n} B(x + \epsilon_j)^{p},\qquad
    \epsilon_j \sim \mathcal{N}(0, \sigma^2 I),\quad
    \sigma = \ell\,(\max x - \min x)

  with :math:`n` = ``num_samples``, :math:`\ell` = ``noise_level``,
  :math:`B` = ``base`` and :math:`p = 2` if ``squared`` (PAIR's default)
  else 1; ``vargrad`` returns the variance
  :math:`\frac{1}{n}\sum_j B_j^2 - (\frac{1}{n}\sum_j B_j)^2`. Noise is added
  to the image only: a baseline array stays as given (a named one such as
  ``'black'`` is read off each noisy image; :func:`smoothgrad_ig` fixes it
  from the clean image).

  Args:
    logits_fn: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    target: class index explained.
    key: ``jax.random`` key of the noise; required when ``noise_level > 0``.
    batch_size: model evaluations at once, shared with the base method's own
      (a noise sample of IG costs ``steps`` evaluations).
    strategy: how chunks run (:data:`batching.STRATEGIES`).
    num_samples: noisy copies n.
    noise_level: noise standard deviation as a fraction of the image range.
    squared: average the squared maps (SmoothGrad-Squared).
    vargrad: return the variance of the maps (VarGrad).
    base: the method smoothed (a function or a ``METHODS`` name).
    **base_hparams: the base method's hyper-parameters.

  Returns:
    Attribution (H, W, C); signed unless ``squared`` or ``vargrad``.

  Reference: Smilkov et al., arXiv:1706.03825; VarGrad: Adebayo et al.,
  arXiv:1810.03307.
  """
  _checks.image("smoothgrad", x)
  _checks.target("smoothgrad", target)
  _checks.positive_int("smoothgrad", "num_samples", num_samples)
  if isinstance(noise_level, bool) or not noise_level >= 0:
    raise ValueError("smoothgrad: noise_level must be a non-negative fraction "
                     f"of the image range, got {noise_level!r}")
  if squared and vargrad:
    raise ValueError("smoothgrad: squared and vargrad are exclusive; pick one")
  base = _resolve_base(base)
  x = jnp.asarray(x)
  if noise_level > 0:
    _checks.key("smoothgrad", key)
  elif key is None:
    key = jax.random.key(0)  # no noise: the key only feeds the base method
  strategy, batch_size = batching.resolve(strategy, batch_size)
  base_static, base_arrays = batching.split_hparams(base_hparams)
  sigma = noise_level * (jnp.max(x) - jnp.min(x))
  mode = "vargrad" if vargrad else "squared" if squared else "mean"
  total = batching.sample_sum(
      _noisy_map, (as_explainee(logits_fn), x, target, sigma, base_arrays),
      jax.random.split(key, num_samples), batch_size=batch_size,
      strategy=strategy,
      inner=batching.evaluations(base, jnp.shape(x), base_hparams),
      static=(("base", base), ("base_static", base_static),
              ("batch_size", batch_size), ("strategy", strategy),
              ("mode", mode)))
  if mode != "vargrad":
    return total / num_samples
  mean, mean_square = total[0] / num_samples, total[1] / num_samples
  return jnp.maximum(mean_square - mean * mean, 0.0)


def _noisy_map(operands, key, *, base, base_static, batch_size, strategy, mode):
  explainee, x, target, sigma, base_arrays = operands
  noise_key, base_key = jax.random.split(key)
  noisy = x + sigma * jax.random.normal(noise_key, x.shape, x.dtype)
  m = base(explainee, noisy, target, key=base_key, batch_size=batch_size,
           strategy=strategy, **dict(base_static), **base_arrays)
  if mode == "mean":
    return m
  return m * m if mode == "squared" else (m, m * m)
