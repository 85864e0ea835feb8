"""Randomization metrics of "Sanity checks revisited" (Hedström et al., 2023/2024).

- :func:`emprt`: efficient MPRT (eMPRT), the relative rise of a map's
  histogram entropy from the trained to the randomized model,

  .. math::
    \\mathrm{eMPRT} = \\frac{H(\\hat e) - H(e)}{H(e)}, \\qquad
    H(e) = -\\sum_{b=1}^{B} p_b \\log p_b,

  :math:`p_b` the share of pixels in bin :math:`b` of :math:`B` equal-width
  bins over the map's own min..max (``np.histogram(e, bins=B)``, natural
  log as ``scipy.stats.entropy``), as Quantus 0.6's ``EfficientMPRT`` with
  its ``discrete_entropy`` (``n_bins=100``, ``abs=False``,
  ``normalise=False``). Higher is better: a map of a randomized model
  should be more complex (noisier) than the trained model's.
- :func:`smoothed_maps`: sMPRT's denoising (Quantus' ``SmoothMPRT``): a
  method's map averaged over ``samples`` noisy copies of the input, Gaussian
  noise of standard deviation ``noise * (max(x) - min(x))``, the last copy
  the clean input; the maps of the trained and randomized models are then
  compared with the usual similarity (Spearman, SSIM, ...).
  :func:`smoothed` wraps any method so.

A constant trained map has :math:`H(e) = 0`: eMPRT is undefined (NaN,
excluded and counted by the experiments, never 0), as the similarity
metrics treat constant maps (:mod:`.similarity`). A constant randomized map
against a varying trained one is defined: -1 (all complexity lost).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

BINS_ERROR = "emprt: bins must be a positive integer, got {value!r}"
PAIR_ERROR = ("emprt: the trained and randomized maps must have the same shape, "
              "got {a} and {b}")
SMOOTH_ERROR = "smoothed_maps: {what} must be {expected}, got {value!r}"


def histogram_entropy(x: jax.Array, bins: int = 100) -> jax.Array:
  """:math:`-\\sum_b p_b \\log p_b` of ``x``'s histogram, ``bins`` equal-width
  bins over min(x)..max(x) (NumPy's binning: the last bin closed); 0 for a
  constant ``x`` (every value in one bin, as ``np.histogram`` puts it)."""
  x = jnp.ravel(x).astype(jnp.float32)
  lo, hi = jnp.min(x), jnp.max(x)
  span = jnp.where(hi > lo, hi - lo, jnp.float32(1))
  edges = jnp.linspace(lo, hi, bins + 1, dtype=jnp.float32)
  index = jnp.clip(jnp.floor((x - lo) * (bins / span)).astype(jnp.int32), 0, bins - 1)
  # NumPy's correction where float rounding put a value across an edge.
  index = index - (x < edges[index]).astype(jnp.int32)
  index = index + ((x >= edges[index + 1]) & (index != bins - 1)).astype(jnp.int32)
  counts = jnp.zeros(bins, jnp.float32).at[jnp.clip(index, 0, bins - 1)].add(1.0)
  p = counts / jnp.sum(counts)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def _preprocess(a: jax.Array, absolute: bool, normalise: bool) -> jax.Array:
  """Quantus' order: normalise (by the root of the mean second moment), then |.|."""
  a = jnp.asarray(a, jnp.float32)
  if normalise:
    root = jnp.sqrt(jnp.mean(a * a))
    a = a / jnp.where(root > 0, root, 1.0)
  return jnp.abs(a) if absolute else a


def emprt(trained_map: jax.Array, randomized_map: jax.Array, *, bins: int = 100,
          abs: bool = False, normalise: bool = False) -> jax.Array:  # pylint: disable=redefined-builtin
  """eMPRT of one image: (H(randomized) - H(trained)) / H(trained).

  Args:
    trained_map: the trained model's map (H, W) (any shape, flattened).
    randomized_map: the randomized model's map, same shape.
    bins: equal-width bins over each map's own min..max (Quantus' default 100).
    abs: take |.| of both maps first (Quantus' option, off by default).
    normalise: divide both maps by the root of their mean square first
      (Quantus' ``normalise_by_average_second_moment_estimate``; off by
      default; min..max binning makes it change nothing but rounding).

  Returns:
    A scalar; NaN where the trained map is constant (H = 0: undefined) or
    either map holds a non-finite value. Jittable and vmappable.
  """
  if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
    raise ValueError(BINS_ERROR.format(value=bins))
  if np.shape(trained_map) != np.shape(randomized_map):
    raise ValueError(PAIR_ERROR.format(a=np.shape(trained_map),
                                       b=np.shape(randomized_map)))
  t = _preprocess(trained_map, abs, normalise)
  r = _preprocess(randomized_map, abs, normalise)
  h_t, h_r = histogram_entropy(t, int(bins)), histogram_entropy(r, int(bins))
  undefined = ((jnp.max(t) == jnp.min(t)) | ~jnp.isfinite(t).all()
               | ~jnp.isfinite(r).all())
  return jnp.where(undefined, jnp.float32(jnp.nan),
                   (h_r - h_t) / jnp.where(undefined, 1.0, h_t))


# Two maps -> a number, (reference map, compared map): the trained model's
# map first (``runner.Comparison(a, b)`` calls it on state b's, state a's).
RANDOMIZATION: dict[str, Callable[..., Any]] = {"emprt": emprt}


def smoothed_maps(explain_fn: Callable[[jax.Array, jax.Array], jax.Array],
                  x: jax.Array, key: jax.Array, *, samples: int = 50,
                  noise: float = 0.1, batch_size: int | None = None) -> jax.Array:
  """sMPRT's denoised map: ``explain_fn`` averaged over noisy copies of ``x``.

  .. math::
    \\bar e(x) = \\frac{1}{N} \\sum_{i=1}^{N} e(x + \\epsilon_i;\\ k_i), \\quad
    \\epsilon_i \\sim \\mathcal{N}(0, (\\sigma (\\max x - \\min x))^2),\\
    \\epsilon_N = 0

  (Hedström et al. 2023; Quantus ``SmoothMPRT``: ``nr_samples=50``,
  ``noise_magnitude=0.1``). The noise comes from ``split(key)[0]``, the
  method's own keys ``k_i`` from ``split(split(key)[1], N)``.

  Args:
    explain_fn: ``(x (H, W, C), key) -> map``, one map of one input.
    x: the input (H, W, C).
    key: ``jax.random`` key.
    samples: N, the copies averaged (the last one noise-free).
    noise: sigma, relative to the input's range.
    batch_size: copies explained at once (``jax.lax.map``); None: all.
  """
  if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
    raise ValueError(SMOOTH_ERROR.format(what="samples", expected="a positive integer",
                                         value=samples))
  if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
    raise ValueError(SMOOTH_ERROR.format(what="noise", expected="a number >= 0",
                                         value=noise))
  noise_key, method_key = jax.random.split(key)
  std = noise * (jnp.max(x) - jnp.min(x))
  eps = jax.random.normal(noise_key, (samples,) + jnp.shape(x), jnp.float32) * std
  eps = eps.at[-1].set(0.0)
  copies = (x + eps).astype(jnp.result_type(x))
  keys = jax.random.split(method_key, samples)
  if batch_size is None or batch_size >= samples:
    maps = jax.vmap(explain_fn)(copies, keys)
  else:
    maps = jax.lax.map(lambda a: explain_fn(*a), (copies, keys),
                       batch_size=max(1, int(batch_size)))
  return jnp.mean(maps, axis=0)


@functools.lru_cache(maxsize=None)
def smoothed(method: Callable[..., jax.Array], samples: int = 50,
             noise: float = 0.1) -> Callable[..., jax.Array]:
  """``method`` (a saliency method function) with sMPRT's averaging.

  Same signature as every method, ``(explainee, x, target, *, key,
  batch_size=None, **hparams)``; ``key`` is required (the noise). Cached, so
  one (method, samples, noise) is one function: compiled programs are reused.
  """
  inner = getattr(method, "evaluations", None)

  def smooth(explainee, x, target, *, key=None, batch_size=None, **hparams):
    if key is None:
      raise ValueError("smoothed: sMPRT's noisy copies need a key")
    counted = {k: v for k, v in hparams.items() if k != "strategy"}
    per_copy = 1 if inner is None else max(1, int(inner(tuple(np.shape(x)), **counted)))
    return smoothed_maps(
        lambda xi, k: method(explainee, xi, target, key=k, batch_size=batch_size,
                             **hparams),
        x, key, samples=samples, noise=noise,
        batch_size=None if batch_size is None else max(1, batch_size // per_copy))

  smooth.evaluations = lambda shape, **hp: samples * (
      1 if inner is None else max(1, int(inner(shape, **hp))))
  smooth.__name__ = f"smprt_{getattr(method, '__name__', 'method')}"
  return smooth
