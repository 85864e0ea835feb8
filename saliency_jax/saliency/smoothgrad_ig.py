"""SmoothGrad-IG: Integrated Gradients inside the SmoothGrad wrapper."""

from __future__ import annotations

from typing import Any

import jax

from saliency_jax.saliency import _checks, batching
from saliency_jax.saliency.integrated_gradients import (baseline_for,
                                                        integrated_gradients)
from saliency_jax.saliency.smoothgrad import smoothgrad


@batching.cost(lambda x_shape, num_samples, steps, **_: num_samples * steps)
def smoothgrad_ig(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
                  key: jax.Array | None = None, batch_size: int | None = None,
                  strategy: str | None = None, num_samples: int = 25,
                  noise_level: float = 0.15, squared: bool = False,
                  vargrad: bool = False, steps: int = 25,
                  baseline: Any = "zeros",
                  quadrature: str = "pair") -> jax.Array:
  r"""SmoothGrad over Integrated Gradients, noise on the image only.

  .. math::
    M(x) = \frac{1}{n} \sum_{j=1}^{n} \mathrm{IG}(x + \epsilon_j; b)^{p},
    \qquad \epsilon_j \sim \mathcal{N}(0, \sigma^2 I)

  with the baseline :math:`b` fixed from the clean image (``'black'`` stays
  the clean image's minimum), as PAIR's ``GetSmoothedMask`` passes it;
  :math:`n`, :math:`\sigma`, :math:`p` as in :func:`smoothgrad`, IG as in
  :func:`integrated_gradients`.

  Args:
    logits_fn: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    target: class index explained.
    key: ``jax.random`` key of the noise; required when ``noise_level > 0``.
    batch_size: model evaluations at once (num_samples x steps in all).
    strategy: how chunks run (:data:`batching.STRATEGIES`).
    num_samples, noise_level, squared, vargrad: as in :func:`smoothgrad`.
    steps, baseline, quadrature: as in :func:`integrated_gradients`.

  Returns:
    Attribution (H, W, C); signed unless ``squared`` or ``vargrad``.

  Reference: Smilkov et al., arXiv:1706.03825; Sundararajan et al.,
  arXiv:1703.01365.
  """
  _checks.image("smoothgrad_ig", x)
  return smoothgrad(logits_fn, x, target, key=key, batch_size=batch_size,
                    strategy=strategy, num_samples=num_samples,
                    noise_level=noise_level, squared=squared, vargrad=vargrad,
                    base=integrated_gradients, steps=steps,
                    baseline=baseline_for(x, baseline, "smoothgrad_ig"),
                    quadrature=quadrature)
