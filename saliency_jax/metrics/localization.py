"""Localization metrics: does one saliency map point at one ground-truth mask?

Every metric takes one map and one mask, ``(saliency_map (H, W) float, mask
(H, W) bool, **options) -> scalar``, and is jittable and vmappable: options are
static Python values, the mask area enters only as a traced count, and ties are
handled with sorts and masks, never with data-dependent shapes.

Undefined cases return NaN and are never scored: every metric is NaN for an
empty mask (nothing to localize), ``auroc`` also for a full mask (no
negatives), and the ratio metrics when their denominator is zero (e.g. an
all-zero map). Callers exclude NaNs and report how many with
:func:`count_excluded`.

Ties among pixel scores are common (maps are clipped at their 99th percentile
and rescaled, so the top 1% all equal 1). Conventions used throughout:
  * curve metrics (``auprc``, ``average_precision``, ``auroc``) give a tie group
    one point of the curve, as scikit-learn does;
  * "top-n pixels" (``binarize`` by ``mask_area`` or ``top_k_percent``,
    ``relevance_rank_accuracy``, ``top_k_intersection``) keep exactly n pixels;
    among equal scores the earlier pixel in row-major (raster) order wins;
  * ``pointing_game`` scores the fraction of the tied maxima that hit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.metrics.stats import count_excluded  # noqa: F401  (re-export)

THRESHOLDS = ("mask_area", "otsu", "top_k_percent")

MAP_ERROR = "{metric}: saliency_map must be one map (H, W), got shape {shape}"
MASK_SHAPE_ERROR = ("{metric}: mask must have the saliency map's shape {want}, "
                    "got {got}")
MASK_DTYPE_ERROR = ("{metric}: mask must be boolean (or integer 0/1), got "
                    "dtype {dtype}")
THRESHOLD_ERROR = ("{metric}: threshold must be one of {choices} or a number, "
                   "got {value!r}")
PERCENT_ERROR = ("{metric}: top_k_percent must be a number in (0, 100], got "
                 "{value!r}")
NONNEG_INT_ERROR = "{metric}: {arg} must be an integer >= {low}, got {value!r}"


def _check_pair(metric: str, saliency_map: Any, mask: Any) -> None:
  """Shapes and dtypes only, so it also works on tracers under vmap."""
  if np.ndim(saliency_map) != 2:
    raise ValueError(MAP_ERROR.format(metric=metric,
                                      shape=np.shape(saliency_map)))
  if np.shape(mask) != np.shape(saliency_map):
    raise ValueError(MASK_SHAPE_ERROR.format(
        metric=metric, want=np.shape(saliency_map), got=np.shape(mask)))
  dtype = np.dtype(mask.dtype if hasattr(mask, "dtype")
                   else np.asarray(mask).dtype)
  if not (dtype == np.bool_ or np.issubdtype(dtype, np.integer)):
    raise ValueError(MASK_DTYPE_ERROR.format(metric=metric, dtype=dtype))


def _check_int(metric: str, arg: str, value: Any, low: int) -> None:
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
      or value < low):
    raise ValueError(NONNEG_INT_ERROR.format(metric=metric, arg=arg, low=low,
                                             value=value))


def _check_threshold(metric: str, threshold: Any, top_k_percent: Any) -> None:
  if isinstance(threshold, str):
    if threshold not in THRESHOLDS:
      raise ValueError(THRESHOLD_ERROR.format(metric=metric, choices=THRESHOLDS,
                                              value=threshold))
  elif (isinstance(threshold, bool) or np.ndim(threshold) != 0
        or not isinstance(threshold, (int, float, np.number, jax.Array))):
    raise ValueError(THRESHOLD_ERROR.format(metric=metric, choices=THRESHOLDS,
                                            value=threshold))
  if (isinstance(top_k_percent, bool)
      or not isinstance(top_k_percent, (int, float, np.number))
      or not 0 < top_k_percent <= 100):
    raise ValueError(PERCENT_ERROR.format(metric=metric, value=top_k_percent))


def _prepare(s: jax.Array, m: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jnp.asarray(s, jnp.float32), jnp.asarray(m).astype(bool)


# --- Curves over all pixels (scikit-learn semantics) -------------------------


def _over_batch(per_map: Callable[..., Any],
                batched: Callable[..., Any]) -> Callable[..., Any]:
  """``per_map`` for one map; under ``jax.vmap``, ``batched`` over all maps.

  ``batched`` takes every argument with a leading axis of maps and returns
  the same as ``jax.vmap(per_map)``; it sees the whole batch at once, so it
  can choose a program for all maps (a ``lax.cond`` on a batch-wide
  predicate stays a branch, where under a plain vmap it would become a
  select that runs both sides) or walk the maps in cache-sized chunks.
  Nested vmaps fold their axes into one before calling ``batched``.
  """
  one = jax.custom_batching.custom_vmap(per_map)

  @one.def_vmap
  def _rule(axis_size, in_batched, *args):
    args = [a if b else jnp.broadcast_to(a, (axis_size,) + jnp.shape(a))
            for a, b in zip(args, in_batched)]
    out = many(*args)
    return out, jax.tree.map(lambda _: True, out)

  many = jax.custom_batching.custom_vmap(batched)

  @many.def_vmap
  def _nested(axis_size, in_batched, *args):
    args = [a if b else jnp.broadcast_to(a, (axis_size,) + jnp.shape(a))
            for a, b in zip(args, in_batched)]
    inner = args[0].shape[1]
    out = many(*(a.reshape((axis_size * inner,) + a.shape[2:]) for a in args))
    out = jax.tree.map(
        lambda o: o.reshape((axis_size, inner) + o.shape[1:]), out)
    return out, jax.tree.map(lambda _: True, out)

  return one


def _ordered_uint(flat: jax.Array) -> jax.Array:
  """uint32 keys in the order of the float32 scores (-0.0 and 0.0 equal)."""
  return jax.lax.bitcast_convert_type(_order_keys(flat), jnp.uint32) ^ (
      jnp.uint32(1) << 31)


def _packable(flat: jax.Array) -> jax.Array:
  """Whether :func:`_sorted_packed` is exact: no NaN, keys span < 2^31."""
  keys = _ordered_uint(flat)
  return ~jnp.isnan(flat).any() & (keys.max() - keys.min() < jnp.uint32(2**31))


def _sorted_packed(flat: jax.Array, y: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """(group ends, labels) from the top score down: one uint32 sort.

  The key ``(k - min k) << 1 | y`` (k: :func:`_ordered_uint`) fits 32 bits
  when the keys span less than 2^31 (every map without negatives, e.g. the
  [0, 1] post-processed maps); sorting it orders by score with the label
  inside ties, and ``key >> 1`` gives the tie groups back. A single-operand
  integer sort is several times faster on the CPU than a float sort with a
  second operand.
  """
  keys = _ordered_uint(flat)
  packed = ((keys - keys.min()) << 1) | y.astype(jnp.uint32)
  ordered = jnp.sort(~packed)  # ascending ~key: descending score
  score = ordered >> 1
  return (jnp.append(score[:-1] != score[1:], True),
          (~ordered & 1).astype(jnp.int32))


def _sorted_general(flat: jax.Array, y: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
  """:func:`_sorted_packed` for any map (NaN included): (score, label) sort."""
  negated, y_sorted = jax.lax.sort((-flat, y.astype(jnp.int32)), num_keys=1,
                                   is_stable=False)
  return jnp.append(negated[:-1] != negated[1:], True), y_sorted


def _sorted_one(flat: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jax.lax.cond(_packable(flat), _sorted_packed, _sorted_general, flat, y)


def _sorted_many(flat: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jax.lax.cond(jnp.all(jax.vmap(_packable)(flat)),
                      jax.vmap(_sorted_packed), jax.vmap(_sorted_general),
                      flat, y)


_sorted_labels = _over_batch(_sorted_one, _sorted_many)


def _curve_counts(s: jax.Array, m: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Cumulative (true, false) positives from the top score down, per tie group.

  Returns two (N + 1,) arrays. Entry 0 is the empty prediction (threshold above
  the maximum). Entry i >= 1 holds the counts at the last tie group that ends
  at or before sorted position i; repeated entries add zero-width segments, so
  a tie group is one point, as in scikit-learn's ``_binary_clf_curve``.

  One unstable sort of (score, label) pairs, no argsort and no gather: the
  counts at a group's end do not depend on the order within the group. The
  sort is one packed uint32 key (:func:`_sorted_packed`) when every map of
  the batch allows it, else the (score, label) sort (:func:`_sorted_general`).
  """
  flat = s.ravel()
  group_end, y_sorted = _sorted_labels(flat, m.ravel())
  tps = jnp.cumsum(y_sorted)
  fps = jnp.arange(1, flat.size + 1, dtype=jnp.int32) - tps
  # Both counts never decrease along the sort, so the counts at the last
  # group end at or before i are a running maximum (no gather); one running
  # maximum of tps (N + 1) + position serves both while it fits int32.
  zero = jnp.zeros(1, jnp.int32)
  n = flat.size
  if n * (n + 2) < 2**31:
    position = jnp.arange(1, n + 1, dtype=jnp.int32)
    last = jax.lax.cummax(jnp.where(group_end, tps * (n + 1) + position, 0),
                          axis=0)
    tps = last // (n + 1)
    fps = last % (n + 1) - tps
  else:
    tps, fps = (jax.lax.cummax(jnp.where(group_end, c, 0), axis=0)
                for c in (tps, fps))
  tps, fps = (jnp.concatenate([zero, c]).astype(jnp.float32)
              for c in (tps, fps))
  return tps, fps


@jax.jit
def _auprc(s: jax.Array, m: jax.Array) -> jax.Array:
  return _curves(s, m)["auprc"]  # XLA drops the other two areas


def auprc(saliency_map: jax.Array, mask: jax.Array) -> jax.Array:
  r"""Area under the pixel-wise precision-recall curve, trapezoidal.

  .. math::
    \mathrm{AUPRC} = \sum_k (R_k - R_{k-1}) \tfrac{P_k + P_{k-1}}{2}

  over every distinct score taken as a threshold (ties are one point), from
  the point (R, P) = (0, 1): scikit-learn's ``auc(recall, precision)`` of
  ``precision_recall_curve(mask.ravel(), s.ravel())``, how Arun et al.
  (Radiology: AI 2021) scored maps.
  NaN for an empty mask.
  """
  _check_pair("auprc", saliency_map, mask)
  return _auprc(*_prepare(saliency_map, mask))


@jax.jit
def _average_precision(s: jax.Array, m: jax.Array) -> jax.Array:
  return _curves(s, m)["average_precision"]


def average_precision(saliency_map: jax.Array, mask: jax.Array) -> jax.Array:
  r"""Average precision, the step-function integral of the PR curve.

  .. math::
    \mathrm{AP} = \sum_k (R_k - R_{k-1}) P_k

  as scikit-learn's ``average_precision_score`` (no interpolation). NaN for
  an empty mask.
  """
  _check_pair("average_precision", saliency_map, mask)
  return _average_precision(*_prepare(saliency_map, mask))


@jax.jit
def _auroc(s: jax.Array, m: jax.Array) -> jax.Array:
  return _curves(s, m)["auroc"]


def auroc(saliency_map: jax.Array, mask: jax.Array) -> jax.Array:
  r"""Area under the pixel-wise ROC curve; tied scores count one half.

  .. math::
    \mathrm{AUROC} = P(s_i > s_j) + \tfrac12 P(s_i = s_j),\ i \in M,\ j \notin M

  as scikit-learn's ``roc_auc_score`` (Quantus's per-map AUC). NaN when the
  mask is empty or covers the whole map.
  """
  _check_pair("auroc", saliency_map, mask)
  return _auroc(*_prepare(saliency_map, mask))


CURVES = ("auprc", "average_precision", "auroc")


@jax.jit
def _curves(s: jax.Array, m: jax.Array) -> dict[str, jax.Array]:
  tps, fps = _curve_counts(s, m)
  # Entry 0 (and its forward-filled copies) is sklearn's appended precision 1.
  precision = jnp.where(tps + fps > 0, tps / jnp.maximum(tps + fps, 1.0), 1.0)
  tpr = tps / tps[-1]
  # Steps from the integer counts: the difference of two rounded ratios
  # errs by float32 rounding of the ratio at every one of up to H W steps
  # (an AUPRC 1e-4 off at 16384 pixels); the ratio of the difference does not.
  d_recall, d_fpr = jnp.diff(tps) / tps[-1], jnp.diff(fps) / fps[-1]
  any_ = m.any()
  return {
      "auprc": jnp.where(any_, jnp.sum(
          d_recall * (precision[1:] + precision[:-1]) / 2), jnp.nan),
      "average_precision": jnp.where(
          any_, jnp.sum(d_recall * precision[1:]), jnp.nan),
      "auroc": jnp.where(any_ & ~m.all(), jnp.sum(
          d_fpr * (tpr[1:] + tpr[:-1]) / 2), jnp.nan),
  }


def curves(saliency_map: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  """:func:`auprc`, :func:`average_precision` and :func:`auroc` from one sort.

  The three share the ranking of the pixels (:func:`_curve_counts`), so
  scoring several of them costs one sort per map instead of one each; the
  values are the same as the three functions'.

  Returns:
    name (one of :data:`CURVES`) -> its scalar.
  """
  _check_pair("curves", saliency_map, mask)
  return _curves(*_prepare(saliency_map, mask))


# --- Overlap of a binarized map with the mask ---------------------------------


@jax.jit
def _soft_dice(s: jax.Array, m: jax.Array) -> jax.Array:
  overlap = 2 * jnp.sum(s * m)
  total = jnp.sum(s) + jnp.sum(m)
  return jnp.where(m.any(), overlap / total, jnp.nan)


def soft_dice(saliency_map: jax.Array, mask: jax.Array) -> jax.Array:
  r"""Unthresholded Dice of a [0, 1] map with the mask.

  .. math::
    \mathrm{Dice}_{soft} = \frac{2 \sum s M}{\sum s + \sum M}

  as kept in Arun et al.'s released code (Radiology: AI 2021). NaN for an
  empty mask.
  """
  _check_pair("soft_dice", saliency_map, mask)
  return _soft_dice(*_prepare(saliency_map, mask))


def _order_keys(flat: jax.Array) -> jax.Array:
  """int32 keys in the order of the float32 scores (-0.0 and 0.0 equal)."""
  flat = jnp.where(flat == 0, jnp.zeros_like(flat), flat)
  bits = jax.lax.bitcast_convert_type(flat, jnp.int32)
  # Negative floats: the larger the magnitude, the smaller the key.
  return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _nth_largest_key(keys: jax.Array, count: jax.Array | int) -> jax.Array:
  """The largest key t with at least ``count`` keys >= t: the count-th largest.

  A bisection on the key's bits, from the sign down: 32 counting passes over
  the pixels instead of a sort. ``count`` = 0 gives the largest int32, which
  no key exceeds.
  """
  def count_at_least(t):
    return jnp.sum((keys >= t).astype(jnp.int32))

  start = jnp.where(count_at_least(0) >= count, jnp.int32(0),
                    jnp.int32(-2**31))

  def step(i, found):
    candidate = found | jnp.left_shift(jnp.int32(1), 30 - i)
    return jnp.where(count_at_least(candidate) >= count, candidate, found)

  return jax.lax.fori_loop(0, 31, step, start)


def _top_pixels(s: jax.Array, count: jax.Array | int) -> jax.Array:
  """Boolean map of the ``count`` highest pixels; raster order breaks ties.

  Exact top-n without a sort: the n-th largest score by
  :func:`_nth_largest_key`, every pixel above it, and the first of the pixels
  equal to it in raster order until there are n. Vmapped over maps, the maps
  are taken one after another (``lax.map``), so each map's 31 counting
  passes read it from cache rather than the whole batch from memory 31
  times (about 3x faster on the CPU at 512 maps of 128 x 128).
  """
  return _top_pixels_batched(s, jnp.asarray(count, jnp.int32))


def _top_pixels_many(s: jax.Array, count: jax.Array) -> jax.Array:
  return jax.lax.map(lambda args: _top_pixels_one(*args), (s, count))


def _top_pixels_one(s: jax.Array, count: jax.Array) -> jax.Array:
  keys = _order_keys(s.ravel())
  threshold = _nth_largest_key(keys, count)
  above = keys > threshold
  tied = keys == threshold
  need = count - jnp.sum(above.astype(jnp.int32))
  take = tied & (jnp.cumsum(tied.astype(jnp.int32)) <= need)
  return (above | take).reshape(s.shape)


_top_pixels_batched = _over_batch(_top_pixels_one, _top_pixels_many)


@functools.partial(jax.jit, static_argnames="nbins")
def _otsu_threshold(s: jax.Array, nbins: int = 256) -> jax.Array:
  """skimage.filters.threshold_otsu of a float map, in JAX."""
  flat = s.ravel()
  low, high = flat.min(), flat.max()
  # skimage widens a constant map's range so the histogram stays defined.
  constant = low == high
  first = jnp.where(constant, low - 0.5, low)
  last = jnp.where(constant, high + 0.5, high)
  edges = first + jnp.arange(nbins + 1) * ((last - first) / nbins)
  edges = edges.at[-1].set(last)
  # np.histogram's uniform-bin lookup, including its edge corrections.
  index = jnp.floor((flat - first) * (nbins / (last - first))).astype(jnp.int32)
  index = jnp.clip(index, 0, nbins - 1)
  index = jnp.where(flat < edges[index], index - 1, index)
  index = jnp.where((flat >= edges[index + 1]) & (index != nbins - 1),
                    index + 1, index)
  counts = jnp.zeros(nbins, jnp.float32).at[index].add(1.0)
  centers = (edges[:-1] + edges[1:]) / 2
  weight1 = jnp.cumsum(counts)
  weight2 = jnp.cumsum(counts[::-1])[::-1]
  mean1 = jnp.cumsum(counts * centers) / weight1
  mean2 = (jnp.cumsum((counts * centers)[::-1]) / weight2[::-1])[::-1]
  variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
  return jnp.where(constant, low, centers[jnp.argmax(variance12)])


def otsu_threshold(saliency_map: jax.Array) -> jax.Array:
  r"""Otsu's threshold over a 256-bin histogram of the map's range.

  .. math::
    t^* = \arg\max_t\ w_0(t)\, w_1(t)\, (\mu_0(t) - \mu_1(t))^2

  over bin centres, exactly as ``skimage.filters.threshold_otsu`` (a constant
  map returns its value). Otsu, IEEE Trans. SMC 1979.
  """
  if np.ndim(saliency_map) != 2:
    raise ValueError(MAP_ERROR.format(metric="otsu_threshold",
                                      shape=np.shape(saliency_map)))
  return _otsu_threshold(jnp.asarray(saliency_map, jnp.float32))


def _binarize(s: jax.Array, m: jax.Array, threshold: Any,
              top_k_percent: float) -> jax.Array:
  if not isinstance(threshold, str):
    return s >= threshold
  if threshold == "mask_area":
    return _top_pixels(s, jnp.sum(m))
  if threshold == "top_k_percent":
    return _top_pixels(s, math.ceil(top_k_percent * s.size / 100))
  # skimage's convention: the foreground is strictly above Otsu's threshold.
  return s > _otsu_threshold(s)


def binarize(saliency_map: jax.Array, mask: jax.Array,
             threshold: str | float = "mask_area",
             top_k_percent: float = 5.0) -> jax.Array:
  r"""Binary map B (H, W) of the salient pixels.

  ``'mask_area'``: the top |M| pixels; ``'top_k_percent'``: the top
  ceil(p/100 H W) pixels; in both, among equal scores the earlier pixel in
  row-major order is kept, so exactly that many pixels are on.
  ``'otsu'``: s > Otsu's threshold (``skimage.filters.threshold_otsu``).
  A number t: s >= t. The mask is read only for ``'mask_area'``.
  """
  _check_pair("binarize", saliency_map, mask)
  _check_threshold("binarize", threshold, top_k_percent)
  return _binarize(*_prepare(saliency_map, mask), threshold, top_k_percent)


def _dice_score(inter: jax.Array, n_b: jax.Array,
                n_m: jax.Array) -> jax.Array:
  return 2 * inter / (n_b + n_m)


def _iou_score(inter: jax.Array, n_b: jax.Array, n_m: jax.Array) -> jax.Array:
  return inter / (n_b + n_m - inter)


_OVERLAP_SCORES = {"dice": _dice_score, "iou": _iou_score}


def _overlap(s: jax.Array, m: jax.Array, metric: str, threshold: Any,
             top_k_percent: float) -> jax.Array:
  b = _binarize(s, m, threshold, top_k_percent)
  counts = (jnp.sum(b & m), jnp.sum(b), jnp.sum(m))
  score = _OVERLAP_SCORES[metric](*(c.astype(jnp.float32) for c in counts))
  return jnp.where(m.any(), score, jnp.nan)


# A named rule changes the program, so it is static; a number is data.
_overlap_named = jax.jit(_overlap, static_argnums=(2, 3, 4))
_overlap_at = jax.jit(_overlap, static_argnums=(2, 4))


def _thresholded(metric: str, saliency_map: jax.Array, mask: jax.Array,
                 threshold: Any, top_k_percent: float) -> jax.Array:
  _check_pair(metric, saliency_map, mask)
  _check_threshold(metric, threshold, top_k_percent)
  s, m = _prepare(saliency_map, mask)
  if isinstance(threshold, str):
    return _overlap_named(s, m, metric, threshold, float(top_k_percent))
  return _overlap_at(s, m, metric, jnp.asarray(threshold, jnp.float32),
                     float(top_k_percent))


def dice(saliency_map: jax.Array, mask: jax.Array,
         threshold: str | float = "mask_area",
         top_k_percent: float = 5.0) -> jax.Array:
  r"""Dice of the binarized map B with the mask.

  .. math::
    \mathrm{Dice} = \frac{2 |B \cap M|}{|B| + |M|}

  with B from :func:`binarize` (Arun et al., MIDL 2020). NaN for an empty
  mask.
  """
  return _thresholded("dice", saliency_map, mask, threshold, top_k_percent)


def iou(saliency_map: jax.Array, mask: jax.Array,
        threshold: str | float = "mask_area",
        top_k_percent: float = 5.0) -> jax.Array:
  r"""Intersection over union of the binarized map B with the mask.

  .. math::
    \mathrm{IoU} = \frac{|B \cap M|}{|B \cup M|}

  with B from :func:`binarize`. NaN for an empty mask.
  """
  return _thresholded("iou", saliency_map, mask, threshold, top_k_percent)


# --- Where is the peak, where is the mass -------------------------------------


def _within(m: jax.Array, radius: int) -> jax.Array:
  """Pixels at Euclidean distance <= radius of the mask (a disk dilation).

  Row offset dy of the disk spans |dx| <= isqrt(r^2 - dy^2); each such run is
  a window sum of the mask's row prefix sums, so the cost is (2r + 1) H W.
  """
  height, width = m.shape
  if radius == 0:
    return m
  prefix = jnp.pad(jnp.cumsum(m.astype(jnp.int32), axis=1), ((0, 0), (1, 0)))
  cols = jnp.arange(width)
  reach = min(radius, height - 1)
  out = jnp.zeros_like(m)
  for dy in range(-reach, reach + 1):
    half = math.isqrt(radius * radius - dy * dy)
    lo = jnp.clip(cols - half, 0, width)
    hi = jnp.clip(cols + half + 1, 0, width)
    row_hit = (prefix[:, hi] - prefix[:, lo]) > 0
    padded = jnp.pad(row_hit, ((reach, reach), (0, 0)))
    out = out | padded[reach + dy:reach + dy + height]
  return out


@functools.partial(jax.jit, static_argnums=2)
def _pointing_game(s: jax.Array, m: jax.Array, tolerance: int) -> jax.Array:
  peaks = s == s.max()
  hits = jnp.sum(peaks & _within(m, tolerance)) / jnp.sum(peaks)
  return jnp.where(m.any(), hits, jnp.nan)


def pointing_game(saliency_map: jax.Array, mask: jax.Array,
                  tolerance: int = 15) -> jax.Array:
  r"""Hit (1) if the map's maximum lies within ``tolerance`` px of the mask.

  .. math::
    \mathrm{hit} = [\min_{q \in M} \| \arg\max s - q \|_2 \le \tau]

  Zhang et al. (ECCV 2016, "Top-down neural attention by excitation
  backprop") use tau = 15 px; tau = 0 requires the peak inside the mask
  (Quantus). Tied maxima score the fraction that hit: the expected hit
  under a random choice among them (Quantus counts any hit). NaN for an
  empty mask.
  """
  _check_pair("pointing_game", saliency_map, mask)
  _check_int("pointing_game", "tolerance", tolerance, 0)
  s, m = _prepare(saliency_map, mask)
  return _pointing_game(s, m, int(tolerance))


@jax.jit
def _relevance_mass_accuracy(s: jax.Array, m: jax.Array) -> jax.Array:
  return jnp.where(m.any(), jnp.sum(s * m) / jnp.sum(s), jnp.nan)


def relevance_mass_accuracy(saliency_map: jax.Array,
                            mask: jax.Array) -> jax.Array:
  r"""Share of the map's total relevance that falls inside the mask.

  .. math::
    \mathrm{RMA} = \frac{\sum_{p \in M} s_p}{\sum_p s_p}

  Arras et al. (Information Fusion 2022); Quantus computes the same. NaN for
  an empty mask or an all-zero map.
  """
  _check_pair("relevance_mass_accuracy", saliency_map, mask)
  return _relevance_mass_accuracy(*_prepare(saliency_map, mask))


@jax.jit
def _relevance_rank_accuracy(s: jax.Array, m: jax.Array) -> jax.Array:
  area = jnp.sum(m)
  inside = jnp.sum(_top_pixels(s, area) & m)
  return jnp.where(m.any(), inside / area, jnp.nan)


def relevance_rank_accuracy(saliency_map: jax.Array,
                            mask: jax.Array) -> jax.Array:
  r"""Fraction of the top-|M| pixels that lie inside the mask.

  .. math::
    \mathrm{RRA} = \frac{|\mathrm{top}_{|M|}(s) \cap M|}{|M|}

  Arras et al. (Information Fusion 2022); ties as in :func:`binarize`
  (equal to ``dice(s, m, 'mask_area')``). NaN for an empty mask.
  """
  _check_pair("relevance_rank_accuracy", saliency_map, mask)
  return _relevance_rank_accuracy(*_prepare(saliency_map, mask))


@functools.partial(jax.jit, static_argnums=2)
def _top_k_intersection(s: jax.Array, m: jax.Array, k: int) -> jax.Array:
  inside = jnp.sum(_top_pixels(s, k) & m)
  return jnp.where(m.any(), inside / k, jnp.nan)


def top_k_intersection(saliency_map: jax.Array, mask: jax.Array,
                       k: int = 1000) -> jax.Array:
  r"""Fraction of the k highest-scoring pixels that lie inside the mask.

  .. math::
    \mathrm{TKI} = |\mathrm{top}_k(s) \cap M| / k

  Theiner et al. (2021), Quantus default k = 1000; k is clipped to H W, ties
  as in :func:`binarize`. NaN for an empty mask.
  """
  _check_pair("top_k_intersection", saliency_map, mask)
  _check_int("top_k_intersection", "k", k, 1)
  s, m = _prepare(saliency_map, mask)
  k = min(int(k), s.size)
  return _top_k_intersection(s, m, k)


LOCALIZATION: dict[str, Callable[..., jax.Array]] = {
    "auprc": auprc,
    "average_precision": average_precision,
    "auroc": auroc,
    "soft_dice": soft_dice,
    "dice": dice,
    "iou": iou,
    "pointing_game": pointing_game,
    "relevance_mass_accuracy": relevance_mass_accuracy,
    "relevance_rank_accuracy": relevance_rank_accuracy,
    "top_k_intersection": top_k_intersection,
}
