"""Similarity of two saliency maps of the same image, ``(a (H, W), b (H, W))``.

Used by the randomization tests (Adebayo et al., NeurIPS 2018) and by
repeatability / reproducibility (Arun et al., Radiology: AI 2021). All but
``hog_spearman`` are jittable and vmappable.

Undefined comparisons are NaN, never a score (the experiments exclude and
count them). A map is *constant* when its max equals its min (exactly):

- ``pearson``, ``spearman``, ``spearman_abs``, ``hog_spearman``: NaN when
  either compared map (or feature vector) is constant, since its variance,
  the correlation's denominator, is zero (SciPy returns NaN there too);
- ``ssim``: NaN only when both maps are constant; SSIM of a constant map
  against a varying one is defined (and small), as scikit-image computes it.

The test is an explicit ``jnp.where`` on that predicate, not the 0 / 0 of the
formula: float32 rounding of a constant map's mean would otherwise leave a
tiny variance and a meaningless finite value (e.g. Pearson 1.0 of two equal
constant maps).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from skimage import feature

PAIR_ERROR = ("{metric}: a and b must be two maps (H, W) of the same shape, "
              "got {a} and {b}")
SIZE_ERROR = ("{metric}: maps must be at least {need} x {need} pixels for "
              "{why}, got {shape}")
RANGE_ERROR = "ssim: data_range must be a positive number, got {value!r}"
INT_ERROR = "hog_spearman: {arg} must be a positive integer, got {value!r}"

# scikit-image's structural_similarity constants.
_K1, _K2 = 0.01, 0.03
_UNIFORM_SIZE = 7
_SIGMA, _TRUNCATE = 1.5, 3.5


def _check_pair(metric: str, a: Any, b: Any) -> None:
  """Shapes only, so it also works on tracers under vmap."""
  if np.ndim(a) != 2 or np.shape(a) != np.shape(b):
    raise ValueError(PAIR_ERROR.format(metric=metric, a=np.shape(a),
                                       b=np.shape(b)))


def _constant(x: jax.Array) -> jax.Array:
  """Whether every value of ``x`` is the same: max == min, exactly."""
  return jnp.max(x) == jnp.min(x)


def _undefined_if(predicate: jax.Array, value: jax.Array) -> jax.Array:
  """``value``, or NaN where ``predicate`` holds (traceable, no branching)."""
  return jnp.where(predicate, jnp.float32(jnp.nan), value)


def _average_ranks(x: jax.Array) -> jax.Array:
  """Ranks 1..n of a flat array, ties sharing their mean rank (rankdata)."""
  n = x.size
  order = jnp.argsort(x)
  ranked = x[order]
  new = ranked[1:] != ranked[:-1]
  position = jnp.arange(n)
  first = jax.lax.cummax(jnp.where(jnp.append(True, new), position, 0), axis=0)
  last = jax.lax.cummin(jnp.where(jnp.append(new, True), position, n - 1),
                        axis=0, reverse=True)
  mean_rank = (first + last).astype(jnp.float32) / 2 + 1
  return jnp.zeros(n, jnp.float32).at[order].set(mean_rank)


def _pearson(x: jax.Array, y: jax.Array) -> jax.Array:
  """Pearson r of two flat arrays; NaN if either is constant."""
  undefined = _constant(x) | _constant(y)
  x, y = x - x.mean(), y - y.mean()
  r = jnp.sum(x * y) / jnp.sqrt(jnp.sum(x * x) * jnp.sum(y * y))
  return _undefined_if(undefined, jnp.clip(r, -1.0, 1.0))


@jax.jit
def _pearson_maps(a: jax.Array, b: jax.Array) -> jax.Array:
  return _pearson(a.ravel(), b.ravel())


@jax.jit
def _spearman(a: jax.Array, b: jax.Array) -> jax.Array:
  # Ranks are constant exactly when the values are, so _pearson's test on the
  # ranks is the test on the maps.
  return _pearson(_average_ranks(a.ravel()), _average_ranks(b.ravel()))


def _as_maps(a: Any, b: Any) -> tuple[jax.Array, jax.Array]:
  return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)


def pearson(a: jax.Array, b: jax.Array) -> jax.Array:
  r"""Pearson correlation of the pixel values of two maps.

  .. math::
    r = \frac{\sum (a - \bar a)(b - \bar b)}
             {\sqrt{\sum (a - \bar a)^2 \sum (b - \bar b)^2}}

  as ``scipy.stats.pearsonr``. Undefined, NaN, if either map is constant
  (max == min): its variance, a factor of the denominator, is zero.
  """
  _check_pair("pearson", a, b)
  return _pearson_maps(*_as_maps(a, b))


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
  r"""Spearman rank correlation of two maps (signed maps, Adebayo et al.).

  .. math::
    \rho = \mathrm{pearson}(\mathrm{rank}(a), \mathrm{rank}(b))

  with tied pixels sharing their average rank, as ``scipy.stats.spearmanr``.
  Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018.
  Undefined, NaN, if either map is constant (max == min): all its ranks are
  equal and their variance is zero.
  """
  _check_pair("spearman", a, b)
  return _spearman(*_as_maps(a, b))


def spearman_abs(a: jax.Array, b: jax.Array) -> jax.Array:
  r"""Spearman rank correlation of the absolute maps.

  .. math::
    \rho_{abs} = \rho(|a|, |b|)

  Adebayo et al. (NeurIPS 2018) compare absolute-value maps, since a
  method's sign flips are not a change in what it highlights. Undefined, NaN,
  if either ``|a|`` or ``|b|`` is constant (max == min), which includes a
  map of values :math:`\pm c` only.
  """
  _check_pair("spearman_abs", a, b)
  a, b = _as_maps(a, b)
  return _spearman(jnp.abs(a), jnp.abs(b))


def _gaussian_kernel() -> np.ndarray:
  """scipy.ndimage's Gaussian taps: radius int(truncate sigma + 0.5)."""
  radius = int(_TRUNCATE * _SIGMA + 0.5)
  x = np.arange(-radius, radius + 1)
  taps = np.exp(-0.5 * (x / _SIGMA) ** 2)
  return taps / taps.sum()


def _window(gaussian: bool) -> np.ndarray:
  if gaussian:
    return _gaussian_kernel()
  return np.full(_UNIFORM_SIZE, 1.0 / _UNIFORM_SIZE)


def _local_means(images: jax.Array, taps: np.ndarray) -> jax.Array:
  """Separable weighted window means over the valid interior, (C, H', W')."""
  taps = jnp.asarray(taps, jnp.float32)
  x = images[:, None]
  for kernel in (taps[:, None], taps[None, :]):
    # Highest precision: variances are differences of nearby means, and
    # TF32-style convolutions would swamp them.
    x = jax.lax.conv_general_dilated(
        x, kernel[None, None], (1, 1), "VALID",
        precision=jax.lax.Precision.HIGHEST)
  return x[:, 0]


@functools.partial(jax.jit, static_argnames="gaussian")
def _ssim(a: jax.Array, b: jax.Array, data_range: jax.Array,
          gaussian: bool) -> jax.Array:
  taps = _window(gaussian)
  # skimage's sample-covariance factor NP / (NP - 1) for the uniform window;
  # Wang et al.'s population covariance for the Gaussian one.
  cov_norm = 1.0 if gaussian else taps.size**2 / (taps.size**2 - 1)
  ux, uy, uxx, uyy, uxy = _local_means(
      jnp.stack([a, b, a * a, b * b, a * b]), taps)
  vx = cov_norm * (uxx - ux * ux)
  vy = cov_norm * (uyy - uy * uy)
  vxy = cov_norm * (uxy - ux * uy)
  c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / (
      (ux * ux + uy * uy + c1) * (vx + vy + c2))
  return _undefined_if(_constant(a) & _constant(b), s.mean())


def ssim(a: jax.Array, b: jax.Array, data_range: float = 1.0,
         gaussian: bool = False) -> jax.Array:
  r"""Mean structural similarity, scikit-image's ``structural_similarity``.

  .. math::
    \mathrm{SSIM} = \frac{(2 \mu_a \mu_b + C_1)(2 \sigma_{ab} + C_2)}
      {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)},
    \ C_i = (K_i L)^2

  averaged over the windows that fit inside the map (skimage crops
  (win - 1) // 2 pixels per side), K1 = 0.01, K2 = 0.03, L = ``data_range``.
  ``gaussian=False``: 7 x 7 uniform window with sample covariance (skimage's
  defaults, as Arun et al. 2021 used). ``gaussian=True``: Gaussian window
  sigma 1.5 truncated at 3.5 sigma (11 x 11) with population covariance:
  Wang et al. (IEEE TIP 2004), skimage's ``gaussian_weights=True,
  use_sample_covariance=False``.

  Undefined, NaN, when both maps are constant (max == min): with no
  structure on either side the index reduces to the
  :math:`C_1, C_2` terms, which would call two all-zero maps identical
  (SSIM 1). One constant map against a varying one is defined and kept
  (equal to scikit-image's value).
  """
  _check_pair("ssim", a, b)
  if (isinstance(data_range, bool) or not isinstance(
      data_range, (int, float, np.number)) or not data_range > 0):
    raise ValueError(RANGE_ERROR.format(value=data_range))
  need = _window(gaussian).size
  if min(np.shape(a)) < need:
    raise ValueError(SIZE_ERROR.format(
        metric="ssim", need=need, why="the SSIM window", shape=np.shape(a)))
  a, b = _as_maps(a, b)
  return _ssim(a, b, jnp.float32(data_range), bool(gaussian))


def _hog(image: np.ndarray, orientations: int, pixels_per_cell: int,
         cells_per_block: int) -> np.ndarray:
  return feature.hog(image, orientations=orientations,
                     pixels_per_cell=(pixels_per_cell, pixels_per_cell),
                     cells_per_block=(cells_per_block, cells_per_block),
                     block_norm="L2-Hys", feature_vector=True)


def hog_spearman(a: Any, b: Any, *, orientations: int = 9,
                 pixels_per_cell: int = 16,
                 cells_per_block: int = 3) -> float:
  r"""Spearman rank correlation of the maps' HOG features (host side, NumPy).

  .. math::
    \rho(\mathrm{HOG}(a), \mathrm{HOG}(b))

  Adebayo et al. (NeurIPS 2018): ``skimage.feature.hog`` with 16 x 16-pixel
  cells; the other settings are skimage's defaults (9 orientations, 3 x 3
  cells per block, L2-Hys). Not jittable: call it on host arrays.
  Undefined, NaN, if either HOG feature vector is constant (max == min),
  e.g. for a constant map, whose gradients and so HOG are all zero.
  """
  _check_pair("hog_spearman", a, b)
  for arg, value in (("orientations", orientations),
                     ("pixels_per_cell", pixels_per_cell),
                     ("cells_per_block", cells_per_block)):
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
        or value < 1):
      raise ValueError(INT_ERROR.format(arg=arg, value=value))
  need = pixels_per_cell * cells_per_block
  if min(np.shape(a)) < need:
    raise ValueError(SIZE_ERROR.format(
        metric="hog_spearman", need=need,
        why=f"{cells_per_block} x {cells_per_block} blocks of "
        f"{pixels_per_cell}-pixel cells", shape=np.shape(a)))
  features = [_hog(np.asarray(x, np.float64), orientations, pixels_per_cell,
                   cells_per_block) for x in (a, b)]
  if any(f.max() == f.min() for f in features):
    # Explicit, rather than SciPy's NaN with a ConstantInputWarning.
    return float("nan")
  return float(stats.spearmanr(*features).statistic)


SIMILARITY: dict[str, Callable[..., Any]] = {
    "spearman": spearman,
    "spearman_abs": spearman_abs,
    "pearson": pearson,
    "ssim": ssim,
    "hog_spearman": hog_spearman,
}
