"""Control maps that ignore the model: random, Sobel edges, a center prior.

A saliency method that localizes no better than these explains the data, not
the model (Adebayo et al., arXiv:1810.03292). They take the methods'
signature so that every evaluation runs them beside the methods.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.saliency import _checks


def random(logits_fn: Any, x: jax.Array, target: Any = None, *,
           key: jax.Array | None = None, batch_size: int | None = None,
           strategy: str | None = None) -> jax.Array:
  r"""Uniform noise, :math:`M_{hwc} \sim U[0, 1)` i.i.d. from ``key``.

  Args:
    logits_fn, target, batch_size, strategy: ignored (common signature).
    x: one image (H, W, C); only its shape and dtype are used.
    key: ``jax.random`` key (required).

  Returns:
    Map (H, W, C).
  """
  del logits_fn, target, batch_size, strategy
  _checks.image("random", x)
  _checks.key("random", key)
  return jax.random.uniform(key, np.shape(x), jnp.result_type(x))


def edge(logits_fn: Any, x: jax.Array, target: Any = None, *,
         key: jax.Array | None = None, batch_size: int | None = None,
         strategy: str | None = None) -> jax.Array:
  r"""Sobel gradient magnitude of each channel of the image.

  .. math::
    M_c = \sqrt{(S_h * x_c)^2 + (S_w * x_c)^2}

  with the 3x3 Sobel kernels :math:`S_h, S_w` and reflected borders, equal
  to ``np.hypot(ndimage.sobel(x_c, 0), ndimage.sobel(x_c, 1))``. Kept per
  channel to return (H, W, C); the ``abs_sum`` reduction of
  :func:`postprocess.postprocess` gives the channel-summed magnitude.

  Args:
    logits_fn, target, key, batch_size, strategy: ignored (common signature).
    x: one image (H, W, C).

  Returns:
    Non-negative map (H, W, C).

  Reference: Adebayo et al., arXiv:1810.03292 (edge detector control).
  """
  del logits_fn, target, key, batch_size, strategy
  _checks.image("edge", x)
  return _sobel_magnitude(jnp.asarray(x))


@jax.jit
def _sobel_magnitude(x: jax.Array) -> jax.Array:
  # mode="symmetric" repeats the edge pixel: scipy.ndimage's "reflect".
  p = jnp.pad(x, ((1, 1), (1, 1), (0, 0)), mode="symmetric")
  d_h = p[2:] - p[:-2]
  d_w = p[:, 2:] - p[:, :-2]
  g_h = d_h[:, :-2] + 2 * d_h[:, 1:-1] + d_h[:, 2:]
  g_w = d_w[:-2] + 2 * d_w[1:-1] + d_w[2:]
  return jnp.sqrt(g_h * g_h + g_w * g_w)


def center_prior(logits_fn: Any, x: jax.Array, target: Any = None, *,
                 key: jax.Array | None = None, batch_size: int | None = None,
                 strategy: str | None = None, sigma: float = 0.25,
                 prior: jax.Array | np.ndarray | None = None) -> jax.Array:
  r"""A centered Gaussian, or a given prior map (e.g. the mean training mask).

  .. math::
    M_{hw} = \exp\Big(-\frac{(h - c_h)^2}{2 (\sigma H)^2}
                      - \frac{(w - c_w)^2}{2 (\sigma W)^2}\Big)

  with :math:`(c_h, c_w) = ((H - 1) / 2, (W - 1) / 2)` and :math:`\sigma` =
  ``sigma``.

  Args:
    logits_fn, target, key, batch_size, strategy: ignored (common signature).
    x: one image (H, W, C); only its shape and dtype are used.
    sigma: standard deviation as a fraction of each image side.
    prior: a map (h, w) or (h, w, 1) returned instead, resized bilinearly to
      (H, W) when its size differs.

  Returns:
    Non-negative map (H, W, C), the same in every channel.
  """
  del logits_fn, target, key, batch_size, strategy
  _checks.image("center_prior", x)
  h, w, _ = np.shape(x)
  if prior is not None:
    prior = jnp.asarray(prior, jnp.result_type(x))
    if prior.ndim == 3 and prior.shape[-1] == 1:
      prior = prior[..., 0]
    if prior.ndim != 2:
      raise ValueError("center_prior: prior must be a map (h, w) or "
                       f"(h, w, 1), got shape {prior.shape}")
    if prior.shape != (h, w):
      prior = jax.image.resize(prior, (h, w), "bilinear")
    return jnp.broadcast_to(prior[..., None], np.shape(x))
  if isinstance(sigma, bool) or not (isinstance(sigma, (int, float))
                                     and sigma > 0):
    raise ValueError(f"center_prior: sigma must be a positive fraction of the "
                     f"image side, got {sigma!r}")
  rows = (np.arange(h) - (h - 1) / 2) / (sigma * h)
  cols = (np.arange(w) - (w - 1) / 2) / (sigma * w)
  gauss = np.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2))
  return jnp.broadcast_to(jnp.asarray(gauss, jnp.result_type(x))[..., None],
                          np.shape(x))
