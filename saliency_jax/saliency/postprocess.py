"""From a raw attribution (H, W, C) to the map that metrics compare (H, W).

Small composable pieces, all jittable and vmappable, and one entry,
:func:`postprocess`, whose defaults are Arun et al.'s (Radiology: AI 2021):
absolute value, sum over channels, clip at the 99th percentile, rescale to
[0, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

REDUCES = ("abs_sum", "sum", "max", "abs_max")
NORMALIZES = ("unit", "signed", None)


def reduce_channels(m: jax.Array, how: str = "abs_sum") -> jax.Array:
  r"""Collapses channels: (H, W, C) -> (H, W).

  ``abs_sum``: :math:`\sum_c |m_c|`; ``sum``: :math:`\sum_c m_c` (keeps the
  sign, for diverging maps); ``max``: :math:`\max_c m_c` (PAIR's XRAI);
  ``abs_max``: :math:`\max_c |m_c|`.
  """
  if how not in REDUCES:
    raise ValueError(f"postprocess: reduce must be one of {REDUCES}, "
                     f"got {how!r}")
  if jnp.ndim(m) != 3:
    raise ValueError(f"postprocess: expected a map (H, W, C), got shape "
                     f"{jnp.shape(m)}")
  m = jnp.abs(m) if how.startswith("abs_") else m
  return jnp.sum(m, axis=-1) if how.endswith("sum") else jnp.max(m, axis=-1)


def percentile_clip(m: jax.Array, percentile: float = 99.0) -> jax.Array:
  """Clips values above the ``percentile``-th percentile (linear interpolation,
  as ``np.percentile``) down to it."""
  _check_percentile(percentile)
  return jnp.minimum(m, jnp.percentile(m, percentile))


def abs_percentile_clip(m: jax.Array, percentile: float = 99.0) -> jax.Array:
  """Clips a signed map to [-s, s], s the ``percentile``-th one of |m|."""
  _check_percentile(percentile)
  span = jnp.percentile(jnp.abs(m), percentile)
  return jnp.clip(m, -span, span)


def normalize_unit(m: jax.Array) -> jax.Array:
  """Rescales to [0, 1]: (m - min) / (max - min); a constant map gives zeros."""
  lo, hi = jnp.min(m), jnp.max(m)
  return jnp.where(hi > lo, (m - lo) / jnp.where(hi > lo, hi - lo, 1), 0.0)


def normalize_signed(m: jax.Array) -> jax.Array:
  """Rescales to [-1, 1] keeping zero at zero: m / max |m|; zeros stay zeros."""
  span = jnp.max(jnp.abs(m))
  return jnp.where(span > 0, m / jnp.where(span > 0, span, 1), 0.0)


def resize(m: jax.Array, shape: tuple[int, int],
           method: str = "bilinear") -> jax.Array:
  """Resizes a map (H, W) to ``shape`` (``jax.image.resize`` methods)."""
  return jax.image.resize(m, tuple(shape), method)


def postprocess(m: jax.Array, *, reduce: str = "abs_sum",
                clip_percentile: float | None = 99.0,
                normalize: str | None = "unit",
                size: tuple[int, int] | None = None) -> jax.Array:
  r"""Raw attribution (H, W, C) to a map (H, W) (or ``size``).

  .. math::
    \tilde m = \mathrm{norm}\big(\mathrm{clip}_p(\mathrm{reduce}(m))\big)

  Args:
    m: raw attribution (H, W, C).
    reduce: channel reduction (:func:`reduce_channels`).
    clip_percentile: p; ``normalize='signed'`` clips |m| symmetrically
      (:func:`abs_percentile_clip`), otherwise from above
      (:func:`percentile_clip`); ``None``: no clipping.
    normalize: ``'unit'`` ([0, 1]), ``'signed'`` ([-1, 1]) or ``None``.
    size: output (H', W'), resized bilinearly; ``None``: unchanged.

  Returns:
    Map (H, W) or ``size``.
  """
  if normalize not in NORMALIZES:
    raise ValueError(f"postprocess: normalize must be one of {NORMALIZES}, "
                     f"got {normalize!r}")
  out = reduce_channels(m, reduce)
  if clip_percentile is not None:
    clip = abs_percentile_clip if normalize == "signed" else percentile_clip
    out = clip(out, clip_percentile)
  if normalize == "unit":
    out = normalize_unit(out)
  elif normalize == "signed":
    out = normalize_signed(out)
  return out if size is None else resize(out, size)


def _check_percentile(percentile: float) -> None:
  if isinstance(percentile, bool) or not (isinstance(percentile, (int, float))
                                          and 0 <= percentile <= 100):
    raise ValueError(f"postprocess: percentile must be in [0, 100], got "
                     f"{percentile!r}")
