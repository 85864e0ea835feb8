"""Statistics over per-image scores (host side, NumPy/SciPy).

Randomness comes from a ``numpy.random.Generator`` seeded with an integer the
caller derives from the config seed, so every interval and every pairing is
reproducible. NaN scores (images a metric could not score) are dropped, never
imputed; count them with :func:`count_excluded` and report the count.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

SEED_ERROR = "{fn}: seed must be a non-negative integer, got {value!r}"
POSITIVE_ERROR = "{fn}: {arg} must be a positive integer, got {value!r}"
CONFIDENCE_ERROR = "bootstrap_ci: confidence must be in (0, 1), got {value!r}"
VECTOR_ERROR = "{fn}: {arg} must be a 1-D array of scores, got shape {shape}"
PAIRED_ERROR = ("paired_wilcoxon: x and y must be paired 1-D arrays of the "
                "same length, got shapes {x} and {y}")
METHODS_ERROR = ("compare_methods: scores must map at least two method names "
                 "to arrays, got {names}")
IMAGES_ERROR = ("different_image_pairs: num_images must be an integer >= 2 "
                "(a pair needs two images), got {value!r}")


class Comparison(NamedTuple):
  """One row of :func:`compare_methods`."""
  a: str
  b: str
  statistic: float
  p: float
  p_holm: float


def _check_seed(fn: str, seed: Any) -> None:
  if (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
      or seed < 0):
    raise ValueError(SEED_ERROR.format(fn=fn, value=seed))


def _check_positive(fn: str, arg: str, value: Any) -> None:
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
      or value < 1):
    raise ValueError(POSITIVE_ERROR.format(fn=fn, arg=arg, value=value))


def _vector(fn: str, arg: str, values: Any) -> np.ndarray:
  values = np.asarray(values, dtype=np.float64)
  if values.ndim != 1:
    raise ValueError(VECTOR_ERROR.format(fn=fn, arg=arg, shape=values.shape))
  return values


def count_excluded(values: Any) -> int:
  """Number of NaN scores, which every function here drops."""
  return int(np.isnan(np.asarray(values, dtype=np.float64)).sum())


def bootstrap_ci(values: Any, *, seed: int, num_resamples: int = 1000,
                 confidence: float = 0.95,
                 statistic: Callable[[np.ndarray], Any] = np.mean,
                 ) -> tuple[float, float, float]:
  r"""Percentile bootstrap interval of a statistic of the non-NaN values.

  .. math::
    [\hat\theta^*_{(\alpha/2)},\ \hat\theta^*_{(1-\alpha/2)}],\ \alpha = 1 - c

  over ``num_resamples`` resamples with replacement (Efron & Tibshirani 1993).
  NaNs are dropped first (count them with :func:`count_excluded`); with no
  values left all three numbers are NaN.

  Returns:
    (estimate on the data, low, high).
  """
  values = _vector("bootstrap_ci", "values", values)
  _check_seed("bootstrap_ci", seed)
  _check_positive("bootstrap_ci", "num_resamples", num_resamples)
  if not 0 < confidence < 1:
    raise ValueError(CONFIDENCE_ERROR.format(value=confidence))
  values = values[~np.isnan(values)]
  if values.size == 0:
    return float("nan"), float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, values.size, size=(num_resamples, values.size))
  replicates = np.array([statistic(values[row]) for row in draws])
  tail = 100 * (1 - confidence) / 2
  low, high = np.percentile(replicates, [tail, 100 - tail])
  return float(statistic(values)), float(low), float(high)


def paired_wilcoxon(x: Any, y: Any) -> tuple[float, float]:
  r"""Two-sided Wilcoxon signed-rank test of paired scores x_i vs y_i.

  .. math::
    W = \min(\textstyle\sum_{d_i > 0} r_i, \sum_{d_i < 0} r_i),\ d = x - y

  ``scipy.stats.wilcoxon`` defaults (zero differences dropped, 'wilcox').
  Pairs with a NaN on either side are dropped; with no non-zero difference
  left the test is undefined and (NaN, NaN) is returned. Wilcoxon 1945.

  Returns:
    (statistic, p-value).
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 1 or x.shape != y.shape:
    raise ValueError(PAIRED_ERROR.format(x=x.shape, y=y.shape))
  keep = ~(np.isnan(x) | np.isnan(y))
  x, y = x[keep], y[keep]
  if not np.any(x != y):
    return float("nan"), float("nan")
  result = stats.wilcoxon(x, y)
  return float(result.statistic), float(result.pvalue)


def holm(p_values: Any) -> np.ndarray:
  r"""Holm-Bonferroni step-down adjusted p-values, in the input order.

  .. math::
    \tilde p_{(i)} = \min\big(1, \max_{j \le i} (m - j + 1)\, p_{(j)}\big)

  for the sorted p_(1) <= ... <= p_(m) (Holm, Scand. J. Statist. 1979).
  NaN p-values stay NaN and do not count in m.
  """
  p = _vector("holm", "p_values", p_values)
  adjusted = np.full_like(p, np.nan)
  finite = np.flatnonzero(~np.isnan(p))
  order = finite[np.argsort(p[finite], kind="stable")]
  m = order.size
  scaled = (m - np.arange(m)) * p[order]
  adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
  return adjusted


def compare_methods(scores: Mapping[str, Any]) -> list[Comparison]:
  """Paired Wilcoxon test for every pair of methods, Holm-adjusted together.

  ``scores[name]`` holds one score per image, in the same image order for
  every method. Rows come in ``itertools.combinations`` order of the names.
  """
  names = list(scores)
  if len(names) < 2:
    raise ValueError(METHODS_ERROR.format(names=names))
  pairs = list(itertools.combinations(names, 2))
  tests = [paired_wilcoxon(scores[a], scores[b]) for a, b in pairs]
  adjusted = holm(np.array([p for _, p in tests]))
  return [Comparison(a, b, statistic, p, float(p_holm))
          for (a, b), (statistic, p), p_holm in zip(pairs, tests, adjusted)]


def different_image_pairs(num_images: int, pairs_per_image: int = 50, *,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
  """For each image i, ``pairs_per_image`` distinct other images j != i.

  Arun et al. (Radiology: AI 2021) compared each image's map with those of
  50 random other images. Partners are drawn without replacement; with fewer
  than ``pairs_per_image`` other images, every other image is used, so there
  are ``num_images * min(pairs_per_image, num_images - 1)`` pairs.

  Returns:
    (i, j) int arrays of equal length, grouped by i.
  """
  if (isinstance(num_images, bool) or not isinstance(num_images,
                                                     (int, np.integer))
      or num_images < 2):
    raise ValueError(IMAGES_ERROR.format(value=num_images))
  _check_positive("different_image_pairs", "pairs_per_image", pairs_per_image)
  _check_seed("different_image_pairs", seed)
  rng = np.random.default_rng(seed)
  per_image = min(pairs_per_image, num_images - 1)
  first, second = [], []
  for i in range(num_images):
    # Draw from the n - 1 others, then skip over i itself.
    others = rng.choice(num_images - 1, size=per_image, replace=False)
    first.append(np.full(per_image, i))
    second.append(others + (others >= i))
  return np.concatenate(first), np.concatenate(second)


PASS, FAIL, INVALID = "PASS", "FAIL", "INVALID"
EXPECT_ERROR = "baseline_verdict: expect must be 'below' or 'above', got {value!r}"
RULE_ERROR = "baseline_verdict: rule must be 'mean' or 'ci', got {value!r}"


def baseline_verdict(scores: Any, baseline: Any, *, expect: str, rule: str,
                     seed: int, num_resamples: int = 1000, confidence: float = 0.95,
                     invalid: str | None = None) -> dict[str, Any]:
  r"""Do a method's similarities lie below (or above) the different-image baseline?

  .. math::
    \text{mean rule: } \bar s \lessgtr \bar b, \qquad
    \text{ci rule: } \mathrm{CI}_{high}(\bar s) < \bar b \ \text{or}\
    \mathrm{CI}_{low}(\bar s) > \bar b

  with :math:`\bar s` the mean per-image similarity and :math:`\bar b` the
  mean similarity between maps of two different images of the trained
  model. ``expect='below'``: the randomization tests (Arun et al.,
  Radiology: AI 2021: a method passes when its maps of the randomized model
  are less similar to the original maps than maps of different images are;
  the paper compared means, ``rule='mean'``). ``expect='above'``:
  repeatability and reproducibility (two models' maps of one image agree
  beyond chance; our operationalization takes the interval, ``rule='ci'``).
  Both readings are returned (``passed_mean``, ``passed_ci``); ``passed``
  is the chosen rule's. NaNs (undefined comparisons) are dropped and counted.

  A verdict is only as good as its inputs: with ``invalid`` (why, e.g. the
  method's maps were not finite) the verdict is INVALID and nothing passes.

  Args:
    scores: one similarity per image, (num_images,).
    baseline: different-image similarities (per image or per pair).
    expect: 'below' or 'above'.
    rule: 'mean' or 'ci'.
    seed: integer seed; the two intervals use independent child streams.
    num_resamples: bootstrap resamples per interval.
    confidence: interval coverage.
    invalid: the reason the inputs cannot be trusted, or None.

  Returns:
    ``verdict`` ('PASS', 'FAIL' or 'INVALID'), ``passed``, ``passed_mean``,
    ``passed_ci`` (bools, all False when INVALID), ``similarity`` and
    ``baseline`` (each ``(mean, low, high)``), ``num_excluded`` (NaNs dropped
    per input), ``invalid`` (the reason or None).
  """
  if expect not in ("below", "above"):
    raise ValueError(EXPECT_ERROR.format(value=expect))
  if rule not in ("mean", "ci"):
    raise ValueError(RULE_ERROR.format(value=rule))
  scores = _vector("baseline_verdict", "scores", scores)
  baseline = _vector("baseline_verdict", "baseline", baseline)
  _check_seed("baseline_verdict", seed)
  seeds = np.random.SeedSequence(seed).generate_state(2)
  scores_ci = bootstrap_ci(scores, seed=int(seeds[0]), num_resamples=num_resamples,
                           confidence=confidence)
  baseline_ci = bootstrap_ci(baseline, seed=int(seeds[1]),
                             num_resamples=num_resamples, confidence=confidence)
  reference = baseline_ci[0]
  # NaN compares False: an unscorable method does not pass.
  if expect == "below":
    passed_mean, passed_ci = scores_ci[0] < reference, scores_ci[2] < reference
  else:
    passed_mean, passed_ci = scores_ci[0] > reference, scores_ci[1] > reference
  if invalid:
    passed_mean = passed_ci = False
  passed = bool(passed_mean if rule == "mean" else passed_ci)
  return {
      "verdict": INVALID if invalid else PASS if passed else FAIL,
      "passed": passed, "passed_mean": bool(passed_mean),
      "passed_ci": bool(passed_ci),
      "similarity": scores_ci, "baseline": baseline_ci,
      "num_excluded": {"similarity": count_excluded(scores),
                       "baseline": count_excluded(baseline)},
      "invalid": invalid or None,
  }
