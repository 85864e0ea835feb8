"""The CheXlocalize protocol against plain NumPy / scikit-image on hand cases."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from saliency_jax.metrics import chexlocalize, stats


def _np_bilinear(s, shape):
  """torch's F.interpolate(mode='bilinear', align_corners=False), in NumPy."""
  def axis(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    return lo, np.minimum(lo + 1, n_in - 1), src - lo
  (r0, r1, fr), (c0, c1, fc) = axis(s.shape[0], shape[0]), axis(s.shape[1], shape[1])
  rows = s[r0] * (1 - fr)[:, None] + s[r1] * fr[:, None]
  return rows[:, c0] * (1 - fc) + rows[:, c1] * fc


def _np_scaled(s, shape):
  s = _np_bilinear(np.asarray(s, np.float64), shape)
  span = s.max() - s.min()
  return (s - s.min()) / span if span > 0 else np.zeros_like(s)  # constant: 0


def _np_iou(pred, truth, true_positives_only):
  """The reference's eval.calculate_iou."""
  if truth.sum() == 0 or (true_positives_only and pred.sum() == 0):
    return np.nan
  return np.logical_and(pred, truth).sum() / np.logical_or(pred, truth).sum()


def test_scale_is_torchs_bilinear_then_min_max():
  np.testing.assert_allclose(chexlocalize.scale(np.array([[0.0, 1.0]]), (1, 4)),
                             [[0, 0.25, 0.75, 1]], atol=1e-6)
  s = np.random.default_rng(0).normal(size=(5, 7))
  np.testing.assert_allclose(chexlocalize.scale(s, (20, 21)), _np_scaled(s, (20, 21)),
                             atol=1e-5)
  assert not np.asarray(chexlocalize.scale(np.full((3, 3), 2.0), (6, 6))).any()


@pytest.mark.parametrize("kind", ["random", "bimodal"])
def test_otsu_segmentation_equals_skimage(kind):
  rng = np.random.default_rng(1)
  if kind == "random":
    maps = rng.random((4, 24, 24)) ** 3
  else:
    maps = np.where(rng.random((4, 24, 24)) < 0.3, rng.normal(3, 0.4, (4, 24, 24)),
                    rng.normal(0, 0.6, (4, 24, 24)))
  masks = np.zeros((4, 24, 24), bool)
  got = np.asarray(chexlocalize.segment(maps, masks))
  quantized = np.asarray(chexlocalize.segment(maps, masks, quantize=True))
  for s, g, q in zip(maps, got, quantized):
    scaled = np.asarray(chexlocalize.scale(s, s.shape))
    np.testing.assert_array_equal(g, scaled > threshold_otsu(scaled, nbins=256))
    # The reference's np.uint8(255 s), then cv2's Otsu (= skimage on uint8).
    eight = np.uint8(255 * scaled)
    np.testing.assert_array_equal(q, eight > threshold_otsu(eight))
    assert 0 < g.sum() < g.size


def _ramp_case():
  """Maps whose scaled values are k/10 along a row; truth where k/10 > 0.5 (or > 0.3)."""
  ramp = np.tile(np.arange(11) / 10, (3, 1))
  maps = np.stack([ramp, ramp, ramp[:, ::-1]])
  masks = np.stack([ramp > 0.5, ramp > 0.3, ramp[:, ::-1] > 0.5])
  return maps, masks


def test_tuned_threshold_is_the_best_of_the_grid_by_plain_numpy():
  maps, masks = _ramp_case()
  best, mious = chexlocalize.tune_threshold(maps, masks)
  want = [np.nanmean([_np_iou(m.astype(np.float32) > np.float32(t), g, True)
                      for m, g in zip(maps, masks)]) for t in chexlocalize.THRESHOLDS]
  np.testing.assert_allclose(mious, want, rtol=1e-6)
  # Two of three images are perfect at t = 0.5; the third at 0.3 scores 5/7.
  assert best == 0.5 and mious[3] == pytest.approx((1 + 1 + 5 / 7) / 3)
  best, _ = chexlocalize.tune_threshold(maps, masks, thresholds=(0.8, 0.3))
  assert best == 0.3


def _hand_case():
  """Five 6 x 6 images: a hit, a max on the mask border, a tie, a constant map, no truth."""
  maps = np.zeros((5, 6, 6))
  masks = np.zeros((5, 6, 6), bool)
  masks[:, 2:5, 2:5] = True
  maps[0, 3, 3], maps[0, 0, 0] = 1.0, 0.4           # peak inside
  maps[1, 2, 4], maps[1, 1, 4] = 1.0, 0.9           # peak on the mask's top edge
  maps[2, 0, 5] = maps[2, 3, 3] = 1.0               # tie: first in raster order is outside
  maps[3] = 0.7                                     # constant: empty prediction
  maps[4, 3, 3] = 1.0
  masks[4] = False                                  # nothing to localize
  return maps, masks


def test_miou_and_hit_rate_equal_plain_numpy_on_hand_cases():
  maps, masks = _hand_case()
  result = chexlocalize.evaluate(maps, masks, threshold=0.5, seed=3)
  pred = [_np_scaled(m, m.shape) > 0.5 for m in maps]
  want_iou = [_np_iou(p, g, True) for p, g in zip(pred, masks)]
  np.testing.assert_allclose(result["iou"], want_iou, rtol=1e-6)
  # Hand: 1/9 (one pixel inside), 1/10 (one on the edge, one outside), 1/10, none, none.
  np.testing.assert_allclose(result["iou"], [1 / 9, 1 / 10, 1 / 10, np.nan, np.nan])
  np.testing.assert_array_equal(result["hit"], [1, 1, 0, 0, np.nan])
  np.testing.assert_array_equal(result["predicted"], pred)
  assert result["num_scored"] == {"iou": 3, "hit": 4}
  assert result["hit_rate"][0] == pytest.approx(0.5)
  # Without the true-positive restriction the empty prediction scores 0.
  all_positives = chexlocalize.evaluate(maps, masks, threshold=0.5,
                                        true_positives_only=False)
  np.testing.assert_allclose(all_positives["iou"], [1 / 9, 1 / 10, 1 / 10, 0, np.nan])


def test_gated_negative_gives_an_empty_mask_and_iou_zero():
  maps, masks = _hand_case()
  probabilities = np.array([0.9, 0.3, 0.31, 0.9, 0.9])
  result = chexlocalize.evaluate(maps, masks, threshold=0.5, probabilities=probabilities,
                                 cutoff=0.3)
  assert not result["predicted"][1].any() and result["predicted"][2].any()
  # With a gate the reference scores every image with a truth (an empty mask: 0).
  np.testing.assert_allclose(result["iou"], [1 / 9, 0, 1 / 10, 0, np.nan])
  np.testing.assert_array_equal(result["hit"], [1, 1, 0, 0, np.nan])  # never gated


def test_tuned_cutoff_equals_a_plain_loop_over_cutoffs():
  rng = np.random.default_rng(2)
  maps = rng.random((6, 8, 8)) ** 2
  masks = rng.random((6, 16, 16)) < 0.4
  masks[5] = False
  probabilities = np.array([0.05, 0.95, 0.45, 0.25, 0.65, 0.5])
  best, mious = chexlocalize.tune_cutoff(maps, masks, probabilities)
  want = []
  for c in chexlocalize.CUTOFFS:
    ious = []
    for m, g, p in zip(maps, masks, probabilities):
      scaled = _np_scaled(m, g.shape).astype(np.float32)
      pred = (scaled > threshold_otsu(scaled)) & (p > np.float32(c))
      ious.append(_np_iou(pred, g, False))
    want.append(np.nanmean(ious))
  np.testing.assert_allclose(mious, want, rtol=1e-5)
  assert best == chexlocalize.CUTOFFS[int(np.argmax(want))]


def test_bootstrap_intervals_come_from_the_shared_stats_code():
  rng = np.random.default_rng(4)
  maps = rng.random((12, 8, 8))
  masks = rng.random((12, 8, 8)) < 0.3
  result = chexlocalize.evaluate(maps, masks, seed=7)
  assert result["miou"] == stats.bootstrap_ci(result["iou"], seed=7, num_resamples=1000)
  assert result["hit_rate"] == stats.bootstrap_ci(result["hit"], seed=7,
                                                  num_resamples=1000)
  low, high = result["miou"][1:]
  assert low < result["miou"][0] < high


@pytest.mark.parametrize("call, match", [
    (lambda m, g: chexlocalize.segment(m, g, threshold=1.5), "threshold must be 'otsu' or"),
    (lambda m, g: chexlocalize.segment(m, g, threshold="mask_area"), "threshold must be"),
    (lambda m, g: chexlocalize.segment(m[0], g), r"saliency_maps must be \(N, h, w\)"),
    (lambda m, g: chexlocalize.hit(m[:1], g), "the same N"),
    (lambda m, g: chexlocalize.iou(g[:, :2], g), r"predicted and masks must both be"),
    (lambda m, g: chexlocalize.segment(m, g, probabilities=np.ones(2)),
     "probabilities .* and cutoff .* go together"),
    (lambda m, g: chexlocalize.tune_threshold(m, g, thresholds=()),
     "thresholds must be a non-empty 1-D sequence"),
])
def test_bad_arguments_are_named(call, match):
  maps, masks = np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool)
  with pytest.raises(ValueError, match=match):
    call(maps, masks)


def test_hit_on_upsampled_maps_equals_numpy_argmax():
  rng = np.random.default_rng(5)
  maps = rng.normal(size=(8, 5, 7))
  masks = rng.random((8, 20, 21)) < 0.5
  masks[0] = False
  want = [np.nan if not g.any() else float(g.ravel()[np.argmax(_np_bilinear(m, g.shape))])
          for m, g in zip(maps, masks)]
  np.testing.assert_array_equal(chexlocalize.hit(maps, masks), want)
