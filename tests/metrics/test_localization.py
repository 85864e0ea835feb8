"""Localization metrics against scikit-learn / scikit-image and hand cases."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from scipy import ndimage
from skimage import filters
from sklearn import metrics as skm

from saliency_jax.metrics import localization as loc

SHAPE = (24, 32)


def _case(seed: int, quantize: bool) -> tuple[np.ndarray, np.ndarray]:
  """A map loosely aligned with a blob mask; quantized maps have many ties."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
  cy, cx = rng.integers(4, 20), rng.integers(4, 28)
  mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(9, 40)
  s = rng.random(SHAPE) + 0.8 * mask
  s = s / s.max()
  if quantize:
    s = np.round(s, 1)
  return s.astype(np.float32), mask


CASES = [(seed, quantize) for seed in range(3) for quantize in (False, True)]


@pytest.mark.parametrize("seed,quantize", CASES)
def test_curve_metrics_match_sklearn(seed, quantize):
  s, m = _case(seed, quantize)
  precision, recall, _ = skm.precision_recall_curve(m.ravel(), s.ravel())
  np.testing.assert_allclose(loc.auprc(s, m), skm.auc(recall, precision),
                             atol=1e-5)
  np.testing.assert_allclose(loc.average_precision(s, m),
                             skm.average_precision_score(m.ravel(), s.ravel()),
                             atol=1e-5)
  np.testing.assert_allclose(loc.auroc(s, m),
                             skm.roc_auc_score(m.ravel(), s.ravel()), atol=1e-5)


def test_auprc_of_a_constant_map_is_one_tie_group():
  # One threshold: points (0, 1) and (1, prevalence); the trapezoid between.
  s = np.full(SHAPE, 0.5, np.float32)
  _, m = _case(0, False)
  prevalence = m.mean()
  np.testing.assert_allclose(loc.auprc(s, m), (1 + prevalence) / 2, rtol=1e-6)
  np.testing.assert_allclose(loc.auroc(s, m), 0.5, rtol=1e-6)


@pytest.mark.parametrize("seed,quantize", CASES)
def test_otsu_matches_skimage(seed, quantize):
  s, m = _case(seed, quantize)
  want = filters.threshold_otsu(s.astype(np.float64))
  np.testing.assert_allclose(loc.otsu_threshold(s), want, atol=1e-5)
  np.testing.assert_array_equal(loc.binarize(s, m, "otsu"), s > want)


def test_otsu_of_a_constant_map_is_its_value():
  s = np.full(SHAPE, 0.25, np.float32)
  assert float(loc.otsu_threshold(s)) == 0.25
  assert not loc.binarize(s, s > 1, "otsu").any()


def test_binarize_top_pixels_keep_exact_counts_and_raster_order_on_ties():
  s = np.zeros((4, 5), np.float32)
  s[3, 4] = 1.0
  m = np.zeros((4, 5), bool)
  m[2, :3] = True
  b = np.asarray(loc.binarize(s, m, "mask_area"))
  # The unique maximum first, then the earliest tied pixels in raster order.
  want = np.zeros((4, 5), bool)
  want[3, 4] = want[0, 0] = want[0, 1] = True
  np.testing.assert_array_equal(b, want)
  b = np.asarray(loc.binarize(s, m, "top_k_percent", top_k_percent=12.0))
  assert b.sum() == math.ceil(12.0 * 20 / 100) == 3
  np.testing.assert_array_equal(b, want)


def test_binarize_by_value_is_at_least_that_value():
  s, m = _case(1, True)
  np.testing.assert_array_equal(loc.binarize(s, m, 0.5), s >= 0.5)


def test_dice_and_iou_of_the_mask_and_its_complement():
  _, m = _case(2, False)
  for metric in (loc.dice, loc.iou):
    assert float(metric(m.astype(np.float32), m)) == 1.0
    assert float(metric((~m).astype(np.float32), m)) == 0.0


def test_dice_and_iou_by_value_and_by_otsu_match_numpy():
  s, m = _case(0, False)
  for threshold, b in ((0.7, s >= 0.7),
                       ("otsu", s > filters.threshold_otsu(s))):
    inter, area_b, area_m = (b & m).sum(), b.sum(), m.sum()
    np.testing.assert_allclose(loc.dice(s, m, threshold=threshold),
                               2 * inter / (area_b + area_m), rtol=1e-6)
    np.testing.assert_allclose(loc.iou(s, m, threshold=threshold),
                               inter / (b | m).sum(), rtol=1e-6)


def test_soft_dice_and_relevance_mass_by_hand():
  s = np.array([[1.0, 0.5], [0.0, 0.5]], np.float32)
  m = np.array([[True, False], [False, True]])
  # 2 (1 + 0.5) / (2 + 2) and (1 + 0.5) / 2.
  np.testing.assert_allclose(loc.soft_dice(s, m), 0.75, rtol=1e-6)
  np.testing.assert_allclose(loc.relevance_mass_accuracy(s, m), 0.75,
                             rtol=1e-6)


def test_rank_accuracy_and_top_k_intersection_by_hand():
  s = np.arange(16, dtype=np.float32).reshape(4, 4)
  m = np.zeros((4, 4), bool)
  m[3, 3] = m[3, 2] = m[0, 0] = True
  # Top 3 pixels are 15, 14, 13: two of them in the mask.
  np.testing.assert_allclose(loc.relevance_rank_accuracy(s, m), 2 / 3)
  np.testing.assert_allclose(loc.dice(s, m, "mask_area"), 2 / 3)
  np.testing.assert_allclose(loc.top_k_intersection(s, m, k=1), 1.0)
  np.testing.assert_allclose(loc.top_k_intersection(s, m, k=4), 0.5)
  # k beyond the image is clipped to all 16 pixels.
  np.testing.assert_allclose(loc.top_k_intersection(s, m, k=1000), 3 / 16)


def test_pointing_game_tolerance():
  m = np.zeros((40, 40), bool)
  m[5:11, 5:11] = True
  s = np.zeros((40, 40), np.float32)
  s[20, 10] = 1.0  # 10 px straight below the mask's edge row 10
  assert float(loc.pointing_game(s, m, tolerance=15)) == 1.0
  assert float(loc.pointing_game(s, m, tolerance=10)) == 1.0
  assert float(loc.pointing_game(s, m, tolerance=5)) == 0.0
  assert float(loc.pointing_game(s, m, tolerance=0)) == 0.0
  s[20, 10], s[7, 7] = 0.0, 1.0
  assert float(loc.pointing_game(s, m, tolerance=0)) == 1.0


def test_pointing_game_scores_the_fraction_of_tied_maxima():
  m = np.zeros((16, 16), bool)
  m[2:5, 2:5] = True
  s = np.zeros((16, 16), np.float32)
  s[3, 3] = s[14, 14] = 1.0
  np.testing.assert_allclose(loc.pointing_game(s, m, tolerance=0), 0.5)


@pytest.mark.parametrize("tolerance", [0, 1, 3, 7])
def test_pointing_game_matches_a_distance_transform(tolerance):
  rng = np.random.default_rng(tolerance)
  m = rng.random((12, 14)) < 0.03
  m[rng.integers(12), rng.integers(14)] = True
  peaks = np.eye(12 * 14, dtype=np.float32).reshape(-1, 12, 14)
  hits = jax.vmap(lambda s: loc.pointing_game(s, m, tolerance))(peaks)
  want = ndimage.distance_transform_edt(~m) <= tolerance
  np.testing.assert_array_equal(np.asarray(hits).reshape(12, 14), want)


def test_empty_mask_is_nan_for_every_metric_and_counted():
  s, _ = _case(0, False)
  empty = np.zeros(SHAPE, bool)
  scores = [float(fn(s, empty)) for fn in loc.LOCALIZATION.values()]
  assert all(np.isnan(scores))
  assert loc.count_excluded(scores + [0.5]) == len(scores)
  assert np.isnan(loc.auroc(s, np.ones(SHAPE, bool)))


OPTIONS = {
    "dice": [{"threshold": "mask_area"}, {"threshold": "otsu"},
             {"threshold": "top_k_percent", "top_k_percent": 10.0},
             {"threshold": 0.6}],
    "iou": [{"threshold": "otsu"}],
    "pointing_game": [{"tolerance": 3}],
    "top_k_intersection": [{"k": 20}],
}


@pytest.mark.parametrize("name,options", [
    (name, options) for name in loc.LOCALIZATION
    for options in OPTIONS.get(name, [{}])])
def test_jit_vmap_equals_a_loop(name, options):
  fn = loc.LOCALIZATION[name]
  cases = [_case(seed, seed % 2 == 1) for seed in range(4)]
  maps = np.stack([s for s, _ in cases])
  masks = np.stack([m for _, m in cases])
  batched = jax.jit(jax.vmap(lambda s, m: fn(s, m, **options)))(maps, masks)
  looped = [float(fn(s, m, **options)) for s, m in cases]
  np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-7)


def test_bad_inputs_raise_clear_errors():
  s, m = _case(0, False)
  with pytest.raises(ValueError, match=r"auprc: mask must have the saliency "
                     r"map's shape \(24, 32\), got \(24, 31\)"):
    loc.auprc(s, m[:, :-1])
  with pytest.raises(ValueError, match=r"dice: saliency_map must be one map"):
    loc.dice(s[None], m[None])
  with pytest.raises(ValueError, match=r"iou: mask must be boolean"):
    loc.iou(s, m.astype(np.float32))
  with pytest.raises(ValueError, match=r"dice: threshold must be one of "
                     r"\('mask_area', 'otsu', 'top_k_percent'\) or a number, "
                     r"got 'median'"):
    loc.dice(s, m, threshold="median")
  with pytest.raises(ValueError, match=r"top_k_percent must be a number in"):
    loc.dice(s, m, threshold="top_k_percent", top_k_percent=0.0)
  with pytest.raises(ValueError, match=r"tolerance must be an integer >= 0"):
    loc.pointing_game(s, m, tolerance=-1)
  with pytest.raises(ValueError, match=r"k must be an integer >= 1"):
    loc.top_k_intersection(s, m, k=0)


def _top_pixels_by_sort(s: np.ndarray, count: int) -> np.ndarray:
  """The definition: a stable descending sort, the first ``count`` pixels."""
  order = np.argsort(-s.ravel(), kind="stable")
  out = np.zeros(s.size, bool)
  out[order[:count]] = True
  return out.reshape(s.shape)


@pytest.mark.parametrize("seed", range(4))
def test_top_pixels_by_threshold_search_equal_a_stable_sort(seed):
  # Ties (quantized), negative scores and both zeros: the bisection on the
  # ordered keys must pick exactly the stable sort's pixels.
  rng = np.random.default_rng(seed)
  s = np.round(rng.normal(size=SHAPE), 1).astype(np.float32)
  s[0, :3] = [0.0, -0.0, 0.0]
  s[1, :2] = [np.inf, -np.inf]
  top = jax.jit(loc._top_pixels)  # pylint: disable=protected-access
  for count in (0, 1, 7, 100, 383, 500, s.size):
    np.testing.assert_array_equal(top(s, count), _top_pixels_by_sort(s, count),
                                  err_msg=f"count {count}")


@pytest.mark.parametrize("seed,quantize", CASES)
def test_curves_share_one_sort_and_equal_each_metric(seed, quantize):
  s, m = _case(seed, quantize)
  shared = loc.curves(s, m)
  assert set(shared) == set(loc.CURVES)
  for name in loc.CURVES:
    # The same sums, compiled in another program: float32 rounding apart.
    np.testing.assert_allclose(shared[name], loc.LOCALIZATION[name](s, m),
                               rtol=1e-5)
  assert np.isnan(loc.curves(s, np.zeros(SHAPE, bool))["auprc"])
  assert np.isnan(loc.curves(s, np.ones(SHAPE, bool))["auroc"])


def test_scoring_shares_curves_and_matches_each_metric():
  from saliency_jax.metrics import scoring  # pylint: disable=g-import-not-at-top
  cases = [_case(seed, seed % 2 == 1) for seed in range(3)]
  maps = np.stack([s for s, _ in cases])
  masks = np.stack([m for _, m in cases])
  names = ["auroc", "dice", "auprc", "average_precision"]
  together = scoring.localization_scores(maps[None], masks, names)
  for name in names:
    alone = scoring.localization_scores(maps[None], masks, [name])[name]
    np.testing.assert_allclose(together[name], alone, rtol=1e-5)
    assert together[name].shape == (1, 3)
