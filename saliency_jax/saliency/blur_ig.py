"""Blur IG: Integrated Gradients along a path of ever stronger Gaussian blur."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.saliency import _checks, batching
from saliency_jax.saliency.explainee import as_explainee

# scipy.ndimage.gaussian_filter's default: the kernel is cut at 4 sigma.
_TRUNCATE = 4.0


def _radius(sigma: np.ndarray) -> np.ndarray:
  """scipy's kernel radius, ``int(truncate * sigma + 0.5)`` (host, float64)."""
  return (_TRUNCATE * np.asarray(sigma, np.float64) + 0.5).astype(np.int32)


def _blur_matrix(n: int, sigma: jax.Array, radius: jax.Array,
                 max_radius: int) -> jax.Array:
  """(n, n) operator of scipy's 1-D Gaussian filter, mode='constant' (cval 0).

  Row i holds the kernel centred on i, normalised over all its 2r + 1 taps
  (scipy's ``_gaussian_kernel1d``); taps falling outside the image meet the
  zero padding, so they are simply absent. sigma = 0 gives the identity.
  """
  safe = jnp.where(sigma > 0, sigma, 1.0)
  taps = jnp.arange(-max_radius, max_radius + 1, dtype=sigma.dtype)
  norm = jnp.sum(jnp.where(jnp.abs(taps) <= radius,
                           jnp.exp(-0.5 * (taps / safe) ** 2), 0.0))
  d = jnp.arange(n, dtype=sigma.dtype)
  d = d[None, :] - d[:, None]
  return jnp.where(jnp.abs(d) <= radius, jnp.exp(-0.5 * (d / safe) ** 2),
                   0.0) / norm


def _blur(x: jax.Array, sigma: jax.Array, radius: jax.Array,
          max_radius: int) -> jax.Array:
  """``scipy.ndimage.gaussian_filter(x, [sigma, sigma, 0], mode='constant')``.

  The separable filter as two dense matrix products (rows, then columns): one
  shape for every sigma, so all path steps share one vmapped program.
  """
  h, w = x.shape[:2]
  hi = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes on accelerators
  rows = _blur_matrix(h, sigma, radius, max_radius).astype(x.dtype)
  cols = _blur_matrix(w, sigma, radius, max_radius).astype(x.dtype)
  x = jnp.einsum("ij,jwc->iwc", rows, x, precision=hi)
  return jnp.einsum("kw,iwc->ikc", cols, x, precision=hi)


@batching.cost(lambda x_shape, steps=100, **_: steps)
def blur_ig(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
            key: jax.Array | None = None, batch_size: int | None = None,
            strategy: str | None = None, max_sigma: float = 50.0,
            steps: int = 100, grad_step: float = 0.01,
            sqrt: bool = False) -> jax.Array:
  r"""Blur IG of the target logit: IG from a blurred image back to the image.

  .. math::
    M(x) = -\sum_{i=0}^{n-1} (\sigma_{i+1} - \sigma_i)\,
      \frac{G_{\sigma_i + \delta} x - G_{\sigma_i} x}{\delta}
      \odot \nabla f_t(G_{\sigma_i} x)

  with :math:`G_\sigma` the Gaussian blur of each channel (zero padding, as
  PAIR calls scipy), :math:`\sigma_i = i\,\sigma_{max} / n` (or
  :math:`\sqrt{i\,\sigma_{max} / n}` if ``sqrt``), :math:`n` = ``steps``,
  :math:`\sigma_{max}` = ``max_sigma``, :math:`\delta` = ``grad_step``.
  Completeness: :math:`\sum M \approx f_t(x) - f_t(G_{\sigma_{max}} x)`.

  Args:
    logits_fn: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: path steps evaluated at once; ``None``: see
      :func:`batching.resolve`.
    strategy: how chunks of steps run (:data:`batching.STRATEGIES`).
    max_sigma: blur of the path's far end (the baseline), in pixels.
    steps: number of gradient evaluations n.
    grad_step: finite-difference step of d(blur)/d(sigma).
    sqrt: square-root spacing of the sigmas (PAIR's ``sqrt``).

  Returns:
    Signed attribution (H, W, C).

  Reference: Xu et al., "Attribution in Scale and Space", arXiv:2004.03383.
  """
  del key
  _checks.image("blur_ig", x)
  _checks.target("blur_ig", target)
  _checks.positive_int("blur_ig", "steps", steps)
  if isinstance(max_sigma, bool) or not max_sigma > 0:
    raise ValueError(f"blur_ig: max_sigma must be positive, got {max_sigma!r}")
  if isinstance(grad_step, bool) or not grad_step > 0:
    raise ValueError(f"blur_ig: grad_step must be positive, got {grad_step!r}")
  x = jnp.asarray(x)
  # The sigmas and kernel radii are PAIR's and scipy's, in float64 on the host.
  sigmas = np.arange(steps + 1) * float(max_sigma) / steps
  sigmas = np.sqrt(sigmas) if sqrt else sigmas
  here, ahead = sigmas[:-1], sigmas[:-1] + grad_step
  # PAIR weights a batch by its last step's sigma increment: the same for
  # linear spacing; with sqrt spacing each step's own increment is used here.
  samples = tuple(np.asarray(v, x.dtype) for v in
                  (here, ahead, np.diff(sigmas) / grad_step))
  samples += (_radius(here), _radius(ahead))
  strategy, batch_size = batching.resolve(strategy, batch_size)
  total = batching.sample_sum(
      _path_step, (as_explainee(logits_fn), x, target), samples,
      batch_size=batch_size, strategy=strategy,
      static=(("max_radius", int(_radius(ahead).max())),))
  return -total


def _path_step(operands: tuple[Any, ...], sample: tuple[jax.Array, ...], *,
               max_radius: int) -> jax.Array:
  """One step's term: weight * (G_{s+d} x - G_s x) * grad f_t(G_s x)."""
  explainee, x, target = operands
  sigma, sigma_ahead, weight, radius, radius_ahead = sample
  x_step = _blur(x, sigma, radius, max_radius)
  derivative = _blur(x, sigma_ahead, radius_ahead, max_radius) - x_step
  grad = jax.grad(lambda z: explainee.logits(z)[target])(x_step)
  return weight * derivative * grad
