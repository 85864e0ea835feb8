"""Bootstrap intervals, paired tests, Holm correction and the verdict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from saliency_jax.metrics import stats


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
  values = np.random.default_rng(0).normal(0.3, 0.1, size=80)
  estimate, low, high = stats.bootstrap_ci(values, seed=7)
  assert estimate == pytest.approx(values.mean())
  assert low < estimate < high
  # The interval's half-width is close to 1.96 standard errors.
  se = values.std(ddof=1) / np.sqrt(values.size)
  assert (high - low) / 2 == pytest.approx(1.96 * se, rel=0.2)
  assert stats.bootstrap_ci(values, seed=7) == (estimate, low, high)
  assert stats.bootstrap_ci(values, seed=8) != (estimate, low, high)


def test_bootstrap_ci_drops_nans():
  values = np.random.default_rng(1).random(30)
  with_nans = np.concatenate([values, [np.nan, np.nan]])
  kept = stats.bootstrap_ci(values, seed=3, num_resamples=200)
  assert stats.bootstrap_ci(with_nans, seed=3, num_resamples=200) == kept
  assert stats.count_excluded(with_nans) == 2
  assert np.isnan(stats.bootstrap_ci([np.nan], seed=0)).all()


def test_holm_by_hand():
  # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04,
  # made monotone: 0.02, 0.03, 0.06, 0.06.
  adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
  np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_allclose(stats.holm([0.5, 0.6]), [1.0, 1.0])
  adjusted = stats.holm([0.2, np.nan, 0.01])
  np.testing.assert_allclose(adjusted, [0.2, np.nan, 0.02])


def test_paired_wilcoxon_matches_scipy_and_drops_nan_pairs():
  rng = np.random.default_rng(2)
  x = rng.random(25)
  y = x + rng.normal(0.1, 0.1, size=25)
  want = sps.wilcoxon(x, y)
  assert stats.paired_wilcoxon(x, y) == pytest.approx(
      (want.statistic, want.pvalue))
  x_nan, y_nan = np.append(x, np.nan), np.append(y, 0.3)
  assert stats.paired_wilcoxon(x_nan, y_nan) == pytest.approx(
      (want.statistic, want.pvalue))
  assert np.isnan(stats.paired_wilcoxon(x, x)).all()


def test_compare_methods_tests_every_pair_and_adjusts_together():
  rng = np.random.default_rng(3)
  base = rng.random(30)
  scores = {"gradient": base, "gradcam": base + 0.2 + 0.05 * rng.random(30),
            "xrai": base + 0.01 * rng.normal(size=30)}
  rows = stats.compare_methods(scores)
  assert [(r.a, r.b) for r in rows] == [("gradient", "gradcam"),
                                        ("gradient", "xrai"),
                                        ("gradcam", "xrai")]
  np.testing.assert_allclose([r.p_holm for r in rows],
                             stats.holm([r.p for r in rows]))
  assert rows[0].p == pytest.approx(
      sps.wilcoxon(scores["gradient"], scores["gradcam"]).pvalue)


def test_different_image_pairs():
  i, j = stats.different_image_pairs(60, 50, seed=0)
  assert i.shape == j.shape == (60 * 50,)
  assert not np.any(i == j)
  assert (np.bincount(i) == 50).all()
  # Partners of one image are distinct (drawn without replacement).
  assert all(np.unique(j[i == k]).size == 50 for k in range(60))
  again = stats.different_image_pairs(60, 50, seed=0)
  np.testing.assert_array_equal(j, again[1])
  # Fewer other images than asked: every other image, once.
  i, j = stats.different_image_pairs(5, 50, seed=1)
  assert i.size == 5 * 4 and not np.any(i == j)


def _randomization(scores, baseline, **kwargs):
  return stats.baseline_verdict(scores, baseline, expect="below", rule="mean", **kwargs)


def test_randomization_verdict():
  rng = np.random.default_rng(4)
  baseline = rng.normal(0.4, 0.05, size=500)
  low = rng.normal(0.2, 0.05, size=100)
  verdict = _randomization(low, baseline, seed=0)
  assert verdict["passed"] and verdict["passed_ci"] and verdict["verdict"] == "PASS"
  assert verdict["similarity"][0] == pytest.approx(low.mean())
  assert verdict["baseline"][0] == pytest.approx(baseline.mean())
  high = rng.normal(0.8, 0.05, size=100)
  assert _randomization(high, baseline, seed=0)["verdict"] == "FAIL"
  # Mean just below the baseline but a wide interval: the two readings differ.
  near = np.concatenate([np.full(5, 0.0), np.full(5, 0.79)])
  verdict = _randomization(near, baseline, seed=0)
  assert verdict["passed"] and not verdict["passed_ci"]
  # The same inputs under the interval rule fail.
  assert not stats.baseline_verdict(near, baseline, expect="below", rule="ci",
                                    seed=0)["passed"]
  with_nan = np.append(low, np.nan)
  verdict = _randomization(with_nan, baseline, seed=0)
  assert verdict["num_excluded"] == {"similarity": 1, "baseline": 0}


def test_invalid_inputs_never_pass():
  # Scores that would pass, computed from non-finite maps: INVALID, nothing passes.
  baseline = np.full(20, 0.5)
  for expect, scores in (("below", np.full(20, 0.1)), ("above", np.full(20, 0.9))):
    verdict = stats.baseline_verdict(scores, baseline, expect=expect, rule="mean",
                                     seed=0, invalid="3 maps were not finite")
    assert verdict["verdict"] == "INVALID"
    assert not (verdict["passed"] or verdict["passed_mean"] or verdict["passed_ci"])
    assert verdict["invalid"] == "3 maps were not finite"
  with pytest.raises(ValueError, match="expect must be 'below' or 'above'"):
    stats.baseline_verdict(baseline, baseline, expect="less", rule="mean", seed=0)


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match=r"bootstrap_ci: seed must be a "
                     r"non-negative integer"):
    stats.bootstrap_ci([1.0, 2.0], seed=None)
  with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
    stats.bootstrap_ci([1.0, 2.0], seed=0, confidence=95)
  with pytest.raises(ValueError, match=r"paired 1-D arrays of the same length"):
    stats.paired_wilcoxon([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match=r"num_images must be an integer >= 2"):
    stats.different_image_pairs(1, seed=0)
  with pytest.raises(ValueError, match=r"at least two method names"):
    stats.compare_methods({"gradient": [0.1, 0.2]})
