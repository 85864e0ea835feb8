"""XRAI: rank image regions by their density of Integrated Gradients.

Host side, :func:`xrai_segments` over-segments the image (Felzenszwalb at six
scales, every segment dilated); on device, :func:`xrai_regions` greedily picks
the segment whose not-yet-covered pixels have the highest mean attribution, and
:func:`xrai` ties both to the base attribution (IG from a black and a white
baseline, averaged), exactly as PAIR ``saliency`` 0.2.1 does.

Reference: Kapishnikov et al., "XRAI: Better Attributions Through Regions",
ICCV 2019, https://arxiv.org/abs/1906.02825
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from skimage import morphology
from skimage import segmentation as sk_segmentation
from skimage import transform

from saliency_jax import progress
from saliency_jax.saliency import _checks, batching
from saliency_jax.saliency.integrated_gradients import integrated_gradients

# PAIR saliency 0.2.1, saliency/core/xrai.py.
_SCALES = (50, 100, 150, 250, 500, 1200)
_SIGMA = 0.8
_MIN_SIZE = 150
_RESIZE = (224, 224)
_VALUE_RANGE = (-1.0, 1.0)
_DILATION_RADIUS = 5
# Felzenszwalb merges every segment below `min_size` pixels of the 224 x 224
# image, so a scale yields at most 224**2 // 150 segments, and resizing the
# labels back can only lose some: one padded count fits every image.
MAX_SEGMENTS = len(_SCALES) * (_RESIZE[0] * _RESIZE[1] // _MIN_SIZE)
_ALGORITHMS = ("full", "fast")


def _normalize_image(im: np.ndarray) -> np.ndarray:
  """PAIR's ``_normalize_image``: values to [-1, 1], then 224 x 224 (cubic)."""
  lo, hi = np.min(im), np.max(im)
  # PAIR divides by zero on a constant image (NaNs); here it is flat at -1.
  im = (im - lo) / (hi - lo) if hi > lo else np.zeros_like(im)
  im = im * (_VALUE_RANGE[1] - _VALUE_RANGE[0]) + _VALUE_RANGE[0]
  return transform.resize(im, _RESIZE, order=3, mode="constant",
                          preserve_range=True, anti_aliasing=True)


def _dilated_label_masks(labels: np.ndarray, radius: int) -> np.ndarray:
  """``dilation(labels == l, disk(radius))`` for every l in 0..max, stacked.

  A pixel is in label l's dilated mask iff some pixel under the (symmetric)
  disk centred on it has label l, so one scatter per disk offset builds every
  mask at once instead of one morphological pass per mask.
  """
  h, w = labels.shape
  n = int(labels.max()) + 1
  padded = np.pad(labels, radius, constant_values=-1)
  pixel = np.arange(h * w).reshape(h, w)
  masks = np.zeros(n * h * w, dtype=bool)
  for dy, dx in zip(*np.nonzero(morphology.disk(radius))):
    window = padded[dy:dy + h, dx:dx + w]
    inside = window >= 0
    masks[window[inside] * (h * w) + pixel[inside]] = True
  return masks.reshape(n, h, w)


def xrai_segments(image: np.ndarray | jax.Array, *,
                  max_segments: int | None = MAX_SEGMENTS) -> np.ndarray:
  """XRAI's candidate regions of one image: dilated multi-scale segments.

  PAIR's ``_get_segments_felzenszwalb``: the image rescaled to [-1, 1] and
  resized to 224 x 224 (cubic, anti-aliased) is segmented by Felzenszwalb's
  algorithm at scales 50, 100, 150, 250, 500, 1200 (sigma 0.8, min_size 150);
  the labels are resized back (nearest) and every label of every scale becomes
  a mask dilated by ``disk(5)``. Empty masks and repeats of an earlier mask are
  dropped (keeping PAIR's order otherwise): neither can change XRAI's result,
  since such a mask never adds a pixel and never wins a tie (first max wins).

  Args:
    image: one image (H, W, C) or (H, W); host-side NumPy work.
    max_segments: pad the stack with empty masks to this count, so that every
      image of a shape gives one array shape (one compilation); ``None``: no
      padding.

  Returns:
    Boolean masks (S, H, W), S = ``max_segments`` unless ``None``.

  Reference: Felzenszwalb & Huttenlocher, IJCV 2004; arXiv:1906.02825.
  """
  im = np.asarray(image)
  if im.ndim not in (2, 3) or min(im.shape[:2]) < 1:
    raise ValueError(f"xrai_segments: expected one image (H, W[, C]), got "
                     f"shape {im.shape}")
  if not np.all(np.isfinite(im)):
    raise ValueError("xrai_segments: the image has non-finite values")
  h, w = im.shape[:2]
  small = _normalize_image(im)
  masks = []
  for scale in _SCALES:
    seg = sk_segmentation.felzenszwalb(small, scale=scale, sigma=_SIGMA,
                                       min_size=_MIN_SIZE)
    seg = transform.resize(seg, (h, w), order=0, preserve_range=True,
                           mode="constant", anti_aliasing=False).astype(int)
    # PAIR's labels run from seg.min(); felzenszwalb's start at 0.
    masks.append(_dilated_label_masks(seg - seg.min(), _DILATION_RADIUS))
  masks = np.concatenate(masks)
  keep, seen = [], set()
  for i, mask in enumerate(masks):
    code = np.packbits(mask).tobytes()
    if mask.any() and code not in seen:
      seen.add(code)
      keep.append(i)
  masks = masks[keep]
  if max_segments is None:
    return masks
  if len(masks) > max_segments:
    raise ValueError(f"xrai_segments: {len(masks)} segments exceed "
                     f"max_segments={max_segments}")
  return np.concatenate(
      [masks, np.zeros((max_segments - len(masks), h, w), dtype=bool)])


def batch_segments(images: np.ndarray | Sequence[np.ndarray], *,
                   what: str = "xrai segments") -> np.ndarray:
  """:func:`xrai_segments` of every image, padded to the most any has.

  Host-side and slow (six Felzenszwalb segmentations per image), so it
  reports its progress (:mod:`saliency_jax.progress`) as ``what``.

  Args:
    images: N images (N, H, W[, C]).
    what: the progress lines' prefix.

  Returns:
    Boolean masks (N, S, H, W), S the largest count of one image; an image
    with fewer is padded with empty masks (which XRAI never picks).
  """
  masks = [xrai_segments(np.asarray(x), max_segments=None)
           for x in progress.track(images, what, unit="img")]
  if not masks:
    raise ValueError("batch_segments: no images")
  most = max(m.shape[0] for m in masks)
  padded = np.zeros((len(masks), most) + masks[0].shape[1:], bool)
  for i, m in enumerate(masks):
    padded[i, :m.shape[0]] = m
  return padded


def _density(masks: jax.Array, attr: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Pixel count and mean attribution of each row of ``masks`` (-inf: empty)."""
  count = jnp.sum(masks, axis=-1)
  total = jnp.sum(jnp.where(masks, attr, 0.0), axis=-1)
  return count, jnp.where(count > 0, total / jnp.maximum(count, 1), -jnp.inf)


def _uncovered_density(weights: jax.Array, attr: jax.Array,
                       covered: jax.Array) -> tuple[jax.Array, jax.Array]:
  """:func:`_density` of ``masks & ~covered``, as two matrix-vector products.

  ``weights`` is the masks as float32 (S, n): the S x n boolean temporary of
  the direct form costs far more than BLAS does, and pixel counts stay exact.
  """
  free = (~covered).astype(jnp.float32)
  count = jnp.round(weights @ free)
  total = weights @ (attr * free)
  return count, jnp.where(count > 0, total / jnp.maximum(count, 1), -jnp.inf)


def _greedy_full(attr: jax.Array, masks: jax.Array, area_threshold: jax.Array,
                 min_pixel_diff: jax.Array) -> tuple[jax.Array, ...]:
  """PAIR's ``XRAI._xrai``: every step re-scores all masks against coverage."""
  s, n = masks.shape
  weights = masks.astype(jnp.float32)

  def cond(state):
    covered, _, _, _, _, _, done = state
    return ~done & (jnp.mean(covered) <= area_threshold)

  def body(state):
    covered, alive, out, step_of, gains, k, _ = state
    count, gain = _uncovered_density(weights, attr, covered)
    # A mask that adds too few pixels never adds more later: drop it for good.
    alive = alive & (count >= min_pixel_diff)
    done = ~jnp.any(alive)
    gain = jnp.where(alive, gain, -jnp.inf)
    best = jnp.argmax(gain)  # first max, as PAIR's strict `gain > best_gain`
    added = masks[best] & ~covered & ~done
    return (covered | added, alive.at[best].set(False),
            jnp.where(added, gain[best], out), jnp.where(added, k, step_of),
            gains.at[k].set(jnp.where(done, gains[k], gain[best])),
            k + jnp.where(done, 0, 1), done)

  init = (jnp.zeros(n, bool), jnp.ones(s, bool), jnp.full(n, -jnp.inf),
          jnp.zeros(n, jnp.int32), jnp.zeros(s), jnp.int32(0), False)
  _, _, out, step_of, gains, k, _ = jax.lax.while_loop(cond, body, init)
  return out, step_of, gains, k


def _greedy_fast(attr: jax.Array, masks: jax.Array,
                 min_pixel_diff: jax.Array) -> tuple[jax.Array, ...]:
  """PAIR's ``XRAI._xrai_fast``: one ranking by whole-mask density."""
  s, n = masks.shape
  _, density = _density(masks, attr)
  order = jnp.argsort(-density, stable=True)  # PAIR's stable sorted(key=-gain)

  def cond(state):
    i, covered = state[0], state[1]
    return (i < s) & ~jnp.all(covered)

  def body(state):
    i, covered, out, step_of, gains, k = state
    mask = masks[order[i]]
    count, gain = _density(mask & ~covered, attr)
    added = mask & ~covered & (count >= min_pixel_diff)
    take = jnp.any(added)
    return (i + 1, covered | added, jnp.where(added, gain, out),
            jnp.where(added, k, step_of),
            gains.at[k].set(jnp.where(take, gain, gains[k])),
            k + take.astype(jnp.int32))

  init = (jnp.int32(0), jnp.zeros(n, bool), jnp.full(n, -jnp.inf),
          jnp.zeros(n, jnp.int32), jnp.zeros(s), jnp.int32(0))
  _, _, out, step_of, gains, k = jax.lax.while_loop(cond, body, init)
  return out, step_of, gains, k


@functools.partial(jax.jit, static_argnames=("algorithm",))
def _regions(attr: jax.Array, masks: jax.Array, area_threshold: jax.Array,
             min_pixel_diff: jax.Array,
             algorithm: str) -> tuple[jax.Array, jax.Array]:
  h, w = attr.shape
  attr = attr.reshape(-1).astype(jnp.float32)
  masks = masks.reshape(masks.shape[0], -1).astype(bool)
  if algorithm == "full":
    out, step_of, gains, k = _greedy_full(attr, masks, area_threshold,
                                          min_pixel_diff)
  else:
    out, step_of, gains, k = _greedy_fast(attr, masks, min_pixel_diff)
  # Pixels no chosen mask reached share their mean, which keeps sum(map) =
  # sum(attribution) (PAIR: `gain_fun(uncomputed_mask, attr)`).
  uncomputed = out == -jnp.inf
  _, (rest,) = _density(uncomputed[None], attr)
  out = jnp.where(uncomputed, rest, out)
  # Ranks: chosen regions sorted by gain (stable), the leftover region last.
  s = gains.shape[0]
  used = jnp.arange(s) < k
  order = jnp.argsort(jnp.where(used, -gains, jnp.inf), stable=True)
  rank_of_step = jnp.zeros(s, jnp.int32).at[order].set(jnp.arange(s) + 1)
  ranks = jnp.where(uncomputed, k + 1, rank_of_step[step_of])
  return out.reshape(h, w), ranks.reshape(h, w)


def xrai_regions(attribution: jax.Array, segments: jax.Array | np.ndarray, *,
                 algorithm: str = "full", area_threshold: float = 1.0,
                 min_pixel_diff: int = 50) -> tuple[jax.Array, jax.Array]:
  """XRAI's greedy region selection, on device; jittable and vmappable.

  With coverage C (initially empty), ``full`` repeats: score each remaining
  mask m by the mean of ``attribution`` over m \\ C, drop masks with
  |m \\ C| < ``min_pixel_diff``, add the best (first max), give its new pixels
  that mean, until no mask is left or mean(C) > ``area_threshold``. ``fast``
  sorts masks once by mean attribution over the whole mask and adds them in
  that order, skipping those adding < ``min_pixel_diff`` pixels. Pixels left
  uncovered take their own mean attribution.

  Args:
    attribution: per-pixel attribution (H, W).
    segments: candidate masks (S, H, W) bool; all-False rows are padding.
    algorithm: ``'full'`` or ``'fast'`` (PAIR's ``_xrai`` / ``_xrai_fast``).
    area_threshold: ``full`` stops once this fraction of the image is covered.
    min_pixel_diff: masks adding fewer new pixels are ignored (>= 1).

  Returns:
    ``(region_map (H, W) float32, ranks (H, W) int32)``: each pixel's region
    value, and its region's rank by value (1 = most important; the leftover
    region, if any, last), as PAIR's ``flatten_xrai_segments`` output.

  Reference: arXiv:1906.02825, Section 3.
  """
  _checks.choice("xrai", "algorithm", algorithm, _ALGORITHMS)
  if jnp.ndim(attribution) != 2:
    raise ValueError(f"xrai: attribution must be (H, W), got shape "
                     f"{jnp.shape(attribution)}")
  if (jnp.ndim(segments) != 3 or jnp.shape(segments)[0] < 1
      or jnp.shape(segments)[1:] != jnp.shape(attribution)):
    raise ValueError(f"xrai: segments must be (S >= 1, H, W) = (S, "
                     f"{jnp.shape(attribution)}), got {jnp.shape(segments)}")
  if not 0.0 <= area_threshold <= 1.0:
    raise ValueError(f"xrai: area_threshold must be in [0, 1], "
                     f"got {area_threshold}")
  if int(min_pixel_diff) < 1:
    raise ValueError(f"xrai: min_pixel_diff must be >= 1, got {min_pixel_diff}")
  return _regions(attribution, segments, jnp.float32(area_threshold),
                  jnp.int32(min_pixel_diff), algorithm)


def _host_segments(x: jax.Array, max_segments: int) -> jax.Array:
  """:func:`xrai_segments` from traced code, one image at a time on the host."""
  shape = jax.ShapeDtypeStruct((max_segments, *x.shape[:2]), jnp.bool_)
  return jax.pure_callback(
      functools.partial(xrai_segments, max_segments=max_segments), shape, x,
      vmap_method="sequential")


def _count(x_shape: tuple[int, ...], steps: int = 100,
           baselines: Sequence[Any] = ("black", "white"),
           base_attribution: Any = None, **_: Any) -> int:
  """Model evaluations: ``steps`` per IG baseline (none with an attribution)."""
  del x_shape
  return 1 if base_attribution is not None else steps * len(baselines)


@batching.cost(_count)
def xrai(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
         key: jax.Array | None = None, batch_size: int | None = None,
         steps: int = 100, baselines: Sequence[Any] = ("black", "white"),
         base_attribution: jax.Array | None = None,
         segments: jax.Array | np.ndarray | None = None,
         max_segments: int = MAX_SEGMENTS, algorithm: str = "full",
         area_threshold: float = 1.0, min_pixel_diff: int = 50,
         quadrature: str = "pair", strategy: str | None = None) -> jax.Array:
  r"""XRAI region attribution of the target logit for one image (PAIR's).

  .. math::
    A = \max_c \frac{1}{|B|} \sum_{b \in B} \mathrm{IG}_b(x)_{\cdot,\cdot,c},
    \qquad M = \mathrm{xrai\_regions}(A, S(x))

  with :math:`B` = ``baselines`` (default: the constant image minimum and
  maximum), each IG with ``steps`` steps and ``quadrature``; :math:`S(x)` =
  ``segments`` or :func:`xrai_segments` (x).

  Args:
    logits_fn: an explainee, NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    target: class index explained.
    key: unused (XRAI is deterministic); accepted for the common signature.
    batch_size: IG path steps evaluated at once; ``None``: see
      :func:`batching.resolve`.
    steps: IG steps per baseline.
    baselines: IG baselines, anything ``integrated_gradients`` accepts.
    base_attribution: precomputed attribution (H, W, C) or (H, W) replacing IG.
    segments: precomputed :func:`xrai_segments` (S, H, W) (reuse them across
      models, seeds and cascade stages); ``None``: segment ``x`` on the host
      (through a callback when traced), padded to ``max_segments``.
    max_segments: padded segment count when segmenting here.
    algorithm: ``'full'`` or ``'fast'``.
    area_threshold: fraction of the image ``full`` covers before stopping.
    min_pixel_diff: masks adding fewer new pixels are ignored.
    quadrature: IG quadrature (``'pair'``: PAIR's).
    strategy: how IG chunks run (see :mod:`batching`).

  Returns:
    Region values (H, W, 1): one channel (not tiled), pixels of one region
    share one value; sum over pixels = sum of A.

  Reference: Kapishnikov et al., arXiv:1906.02825.
  """
  del key
  _checks.image("xrai", x)
  _checks.target("xrai", target)
  _checks.positive_int("xrai", "steps", steps)
  if not baselines and base_attribution is None:
    raise ValueError("xrai: baselines must name at least one IG baseline")
  h, w = jnp.shape(x)[:2]
  if base_attribution is not None:
    attr = jnp.asarray(base_attribution)
    if attr.shape not in (jnp.shape(x), (h, w)):
      raise ValueError(f"xrai: base_attribution must have shape "
                       f"{jnp.shape(x)} or "
                       f"{(h, w)}, got {attr.shape}")
  else:
    attr = sum(integrated_gradients(
        logits_fn, x, target, batch_size=batch_size, steps=steps, baseline=b,
        quadrature=quadrature, strategy=strategy) for b in baselines)
    attr = attr / len(baselines)
  if attr.ndim == 3:
    attr = jnp.max(attr, axis=-1)
  if segments is None:
    if isinstance(x, jax.core.Tracer):
      segments = _host_segments(x, max_segments)
    else:
      segments = xrai_segments(np.asarray(x), max_segments=max_segments)
  region_map, _ = xrai_regions(attr, segments, algorithm=algorithm,
                               area_threshold=area_threshold,
                               min_pixel_diff=min_pixel_diff)
  return region_map[..., None]
