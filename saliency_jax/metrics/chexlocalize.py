"""The CheXlocalize protocol: saliency maps -> segmentations -> mIoU and hit rate.

Saporta et al., "Benchmarking saliency methods for chest X-ray interpretation",
Nature Machine Intelligence 2022 (reference code: github.com/rajpurkarlab/
cheXlocalize, ``heatmap_to_segmentation.py``, ``tune_heatmap_threshold.py``,
``tune_probability_threshold.py``, ``eval.py``). Per image and pathology:

1. the map is upsampled bilinearly to the ground-truth mask's size (half-pixel
   centres, no antialiasing: ``F.interpolate(..., align_corners=False)``) and
   min-max scaled to [0, 1] (a constant map scales to 0);
2. binarized: ``'otsu'`` keeps s > Otsu's threshold, equal to
   ``skimage.filters.threshold_otsu`` on the scaled map (256 bins); with
   ``quantize=True`` the map is first cut to 8 bits, floor(255 s), as the
   reference does before ``cv2.THRESH_OTSU``. A number t keeps s > t, t tuned
   per class on the validation split by :func:`tune_threshold`;
3. optionally gated: the mask is empty unless the predicted probability
   p > cutoff (the cutoff tuned on validation by :func:`tune_cutoff`);
4. scored: IoU against the mask and hit (the map's maximum inside the mask),
   averaged over images with 95% bootstrap intervals (:func:`evaluate`).

Which images count (as the reference's ``calculate_iou``): an image with an
empty ground truth is never scored (NaN). With ``true_positives_only=True``
(the reference's default) an empty predicted mask is NaN too, so mIoU runs
over the images with both a true and a predicted segmentation; with False
(used with gating) an empty prediction scores IoU 0. NaNs are dropped and
counted, never imputed. Maps (N, h, w) and masks (N, H, W) of one size per
call; images of other sizes go in other calls.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.metrics import stats
from saliency_jax.metrics.localization import _otsu_threshold

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
CUTOFFS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)

MAPS_ERROR = ("{fn}: saliency_maps must be (N, h, w) and masks (N, H, W) with the same N, "
              "got shapes {maps} and {masks}")
THRESHOLD_ERROR = "{fn}: threshold must be 'otsu' or a number in [0, 1], got {value!r}"
GRID_ERROR = "{fn}: {arg} must be a non-empty 1-D sequence of numbers, got {value!r}"
PREDICTED_ERROR = "iou: predicted and masks must both be (N, H, W), got shapes {pred} and {masks}"
GATE_ERROR = ("{fn}: probabilities (N,) and cutoff (a number) go together, got "
              "probabilities of shape {shape} and cutoff {cutoff!r}")


def _check(fn: str, maps: Any, masks: Any) -> tuple[jax.Array, jax.Array]:
  if (np.ndim(maps) != 3 or np.ndim(masks) != 3
      or np.shape(maps)[0] != np.shape(masks)[0]):
    raise ValueError(MAPS_ERROR.format(fn=fn, maps=np.shape(maps), masks=np.shape(masks)))
  return jnp.asarray(maps, jnp.float32), jnp.asarray(masks).astype(bool)


def _check_threshold(fn: str, threshold: Any) -> None:
  if isinstance(threshold, str) and threshold == "otsu":
    return
  if (isinstance(threshold, (bool, str)) or not isinstance(threshold, (int, float, np.number))
      or not 0 <= threshold <= 1):
    raise ValueError(THRESHOLD_ERROR.format(fn=fn, value=threshold))


def _grid(fn: str, arg: str, values: Any) -> jax.Array:
  array = np.asarray(values) if not isinstance(values, str) else np.array([])
  if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
    raise ValueError(GRID_ERROR.format(fn=fn, arg=arg, value=values))
  return jnp.asarray(array, jnp.float32)


def _gate(fn: str, n: int, probabilities: Any, cutoff: Any) -> tuple[jax.Array, float]:
  """The gate's (probabilities, cutoff); ungated: p = 1 > cutoff = 0 for every image."""
  if probabilities is None and cutoff is None:
    return jnp.ones(n, jnp.float32), 0.0
  if (probabilities is None or cutoff is None or np.shape(probabilities) != (n,)
      or isinstance(cutoff, bool) or not isinstance(cutoff, (int, float, np.number))):
    raise ValueError(GATE_ERROR.format(fn=fn, shape=np.shape(probabilities), cutoff=cutoff))
  return jnp.asarray(probabilities, jnp.float32), float(cutoff)


def _upsample(saliency_map: jax.Array, shape: tuple[int, int]) -> jax.Array:
  return jax.image.resize(jnp.asarray(saliency_map, jnp.float32), tuple(shape), "bilinear",
                          antialias=False)


def scale(saliency_map: jax.Array, shape: tuple[int, int]) -> jax.Array:
  r"""The map upsampled to ``shape`` (bilinear) and min-max scaled to [0, 1].

  .. math::
    \tilde s = (s' - \min s') / (\max s' - \min s'),\ s' = \mathrm{bilinear}(s)

  A constant map gives zeros (the reference's 0/0 would give NaN).
  """
  s = _upsample(saliency_map, shape)
  low, high = s.min(), s.max()
  span = jnp.where(high > low, high - low, 1.0)
  # The maximum maps to exactly 1 (a compiled division may round it below).
  return jnp.where(s == high, 1.0, (s - low) / span) * (high > low)


def _otsu_levels(q: jax.Array) -> jax.Array:
  """Otsu's threshold of 8-bit levels (one bin per level, as cv2 and skimage on uint8)."""
  counts = jnp.zeros(256, jnp.float32).at[q.ravel()].add(1.0)
  levels = jnp.arange(256, dtype=jnp.float32)
  weight1 = jnp.cumsum(counts)
  weight2 = jnp.cumsum(counts[::-1])[::-1]
  mean1 = jnp.cumsum(counts * levels) / weight1
  mean2 = (jnp.cumsum((counts * levels)[::-1]) / weight2[::-1])[::-1]
  variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
  # Levels below the minimum or above the maximum split nothing (NaN there).
  best = jnp.argmax(jnp.where(jnp.isnan(variance12), -1.0, variance12))
  return jnp.where(q.min() == q.max(), q.min(), best)


def _binarize(s: jax.Array, threshold: Any, quantize: bool) -> jax.Array:
  if isinstance(threshold, str):  # 'otsu'
    if quantize:  # the reference's np.uint8(255 s), then cv2.THRESH_OTSU
      q = jnp.floor(255 * s).astype(jnp.int32)
      return q > _otsu_levels(q)
    return s > _otsu_threshold(s)
  return s > threshold


def _segment(s, m, p, cutoff, threshold, quantize):
  return _binarize(scale(s, m.shape), threshold, quantize) & (p > cutoff)


@functools.partial(jax.jit, static_argnames=("threshold", "quantize"))
def _segment_all(maps, masks, p, cutoff, threshold, quantize):
  one = functools.partial(_segment, threshold=threshold, quantize=quantize)
  return jax.vmap(one, (0, 0, 0, None))(maps, masks, p, cutoff)


@functools.partial(jax.jit, static_argnames="true_positives_only")
def _iou(pred: jax.Array, m: jax.Array, true_positives_only: bool) -> jax.Array:
  inter, union = jnp.sum(pred & m), jnp.sum(pred | m)
  undefined = ~m.any() | (true_positives_only & ~pred.any())
  return jnp.where(undefined, jnp.nan, inter / jnp.maximum(union, 1))


@jax.jit
def _hit(s: jax.Array, m: jax.Array) -> jax.Array:
  # np.argmax of the upsampled (unscaled) map: the first maximum in row-major order.
  peak = jnp.argmax(_upsample(s, m.shape).ravel())
  return jnp.where(m.any(), m.ravel()[peak].astype(jnp.float32), jnp.nan)


def segment(saliency_maps: Any, masks: Any, *, threshold: str | float = "otsu",
            quantize: bool = False, probabilities: Any = None,
            cutoff: float | None = None) -> jax.Array:
  """Predicted masks (N, H, W) of maps (N, h, w) at the masks' size (steps 1-3).

  Args:
    saliency_maps: (N, h, w) maps, any scale.
    masks: (N, H, W) ground truth; only its size is read.
    threshold: 'otsu' or a number t in [0, 1] (keep scaled s > t).
    quantize: with 'otsu', cut the scaled map to 8 bits first (the reference).
    probabilities: (N,) predicted probabilities of the class, with ``cutoff``:
      an image with p <= cutoff gets an empty mask.
    cutoff: the probability cutoff; None with ``probabilities`` None: no gate.
  """
  _check_threshold("segment", threshold)
  maps, masks = _check("segment", saliency_maps, masks)
  p, cut = _gate("segment", maps.shape[0], probabilities, cutoff)
  threshold = threshold if isinstance(threshold, str) else float(threshold)
  return _segment_all(maps, masks, p, cut, threshold, bool(quantize))


def iou(predicted: Any, masks: Any, *, true_positives_only: bool = True) -> jax.Array:
  r"""IoU |P ∩ M| / |P ∪ M| per image (N,); NaN for an empty M (and empty P if tp only)."""
  if np.ndim(predicted) != 3 or np.shape(predicted) != np.shape(masks):
    raise ValueError(PREDICTED_ERROR.format(pred=np.shape(predicted), masks=np.shape(masks)))
  predicted, masks = _check("iou", predicted, masks)
  return jax.vmap(_iou, (0, 0, None))(predicted.astype(bool), masks,
                                      bool(true_positives_only))


def hit(saliency_maps: Any, masks: Any) -> jax.Array:
  r"""Hit per image (N,): 1 if M holds the upsampled map's first maximum, NaN for empty M.

  .. math::
    \mathrm{hit} = M[\arg\max \mathrm{bilinear}(s)]

  Ties go to the first maximum in row-major order (``np.argmax``, as the
  reference's ``get_hit_rates``); the map is not thresholded or gated.
  """
  maps, masks = _check("hit", saliency_maps, masks)
  return jax.vmap(_hit)(maps, masks)


@functools.partial(jax.jit, static_argnames=("otsu", "true_positives_only"))
def _grid_miou(maps, masks, p, thresholds, cutoffs, otsu, true_positives_only):
  """nanmean IoU (T,) over images for each (threshold, cutoff) pair (Otsu if ``otsu``)."""
  def one(t, c):
    one_image = functools.partial(_segment, threshold="otsu" if otsu else t,
                                  quantize=False)
    pred = jax.vmap(one_image, (0, 0, 0, None))(maps, masks, p, c)
    ious = jax.vmap(_iou, (0, 0, None))(pred, masks, true_positives_only)
    return jnp.nanmean(ious)
  return jax.vmap(one)(thresholds, cutoffs)


def tune_threshold(saliency_maps: Any, masks: Any, *,
                   thresholds: Any = THRESHOLDS) -> tuple[float, np.ndarray]:
  r"""The threshold t maximising validation mIoU, and the mIoU of each (T,).

  .. math::
    t^* = \arg\max_{t} \mathrm{mean}_{i}\ \mathrm{IoU}(\tilde s_i > t, M_i)

  over the true positives (``true_positives_only=True``, as the reference's
  ``tune_heatmap_threshold.py``); the first best on ties. Call it once per
  class. The paper's grid is 0.2, ..., 0.8 (the reference code's
  ``np.arange(0.2, .8, .1)`` stops at 0.7).
  """
  maps, masks = _check("tune_threshold", saliency_maps, masks)
  grid = _grid("tune_threshold", "thresholds", thresholds)
  p = jnp.ones(maps.shape[0], jnp.float32)
  mious = np.asarray(_grid_miou(maps, masks, p, grid, jnp.zeros_like(grid), False, True))
  return float(np.asarray(thresholds)[int(np.nanargmax(mious))]), mious


def tune_cutoff(saliency_maps: Any, masks: Any, probabilities: Any, *,
                threshold: str | float = "otsu", cutoffs: Any = CUTOFFS
                ) -> tuple[float, np.ndarray]:
  r"""The probability cutoff c maximising validation mIoU, and each mIoU (C,).

  .. math::
    c^* = \arg\max_{c} \mathrm{mean}_{i: M_i \ne \emptyset}
      \mathrm{IoU}\big((\tilde s_i > t)\,[p_i > c],\ M_i\big)

  with empty predictions scoring 0 (``true_positives_only=False``), over
  0, 0.1, ..., 0.8 as the reference's ``tune_probability_threshold.py``
  (Otsu segmentations there); the first best on ties.
  """
  _check_threshold("tune_cutoff", threshold)
  maps, masks = _check("tune_cutoff", saliency_maps, masks)
  grid = _grid("tune_cutoff", "cutoffs", cutoffs)
  p, _ = _gate("tune_cutoff", maps.shape[0], probabilities, 0.0)
  otsu = isinstance(threshold, str)
  thresholds = jnp.full_like(grid, 0.0 if otsu else float(threshold))
  mious = np.asarray(_grid_miou(maps, masks, p, thresholds, grid, otsu, False))
  return float(np.asarray(cutoffs)[int(np.nanargmax(mious))]), mious


def evaluate(saliency_maps: Any, masks: Any, *, threshold: str | float = "otsu",
             quantize: bool = False, probabilities: Any = None,
             cutoff: float | None = None, true_positives_only: bool | None = None,
             seed: int = 0, num_resamples: int = 1000) -> dict[str, Any]:
  """mIoU and hit rate of one class, with 95% bootstrap intervals over images.

  Args:
    saliency_maps, masks, threshold, quantize, probabilities, cutoff: as
      :func:`segment`.
    true_positives_only: see the module docstring; None: True without a gate,
      False with one (the reference's two evaluations).
    seed: integer seed of the bootstrap (:func:`stats.bootstrap_ci`).
    num_resamples: bootstrap replicates (1000, as the reference).

  Returns:
    ``iou`` and ``hit`` per image (N,) (NaN: not scored), ``miou`` and
    ``hit_rate`` as (mean, low, high), ``num_scored`` per metric, and
    ``predicted`` (N, H, W) bool masks (write them with
    ``coco_rle.write_masks``).
  """
  predicted = segment(saliency_maps, masks, threshold=threshold, quantize=quantize,
                      probabilities=probabilities, cutoff=cutoff)
  if true_positives_only is None:
    true_positives_only = probabilities is None
  ious = np.asarray(iou(predicted, masks, true_positives_only=true_positives_only))
  hits = np.asarray(hit(saliency_maps, masks))
  return {
      "iou": ious, "hit": hits, "predicted": np.asarray(predicted),
      "miou": stats.bootstrap_ci(ious, seed=seed, num_resamples=num_resamples),
      "hit_rate": stats.bootstrap_ci(hits, seed=seed, num_resamples=num_resamples),
      "num_scored": {"iou": int(np.sum(~np.isnan(ious))),
                     "hit": int(np.sum(~np.isnan(hits)))},
  }
