"""Metrics by name over batches: equal to the registry's metric map by map."""

import chex
import jax
import numpy as np
import pytest
from scipy import stats

from saliency_jax import metrics
from saliency_jax.metrics import localization
from saliency_jax.metrics import scoring
from saliency_jax.metrics import similarity


def _maps(seed, shape):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def test_localization_scores_equal_each_metric_per_map():
  maps = _maps(0, (2, 3, 12, 12))  # (states, images, H, W)
  masks = np.zeros((3, 12, 12), bool)
  masks[:, 2:6, 3:9] = True
  masks[1, 8:, 8:] = True
  # One curve, one thresholded, one peak metric: the batching, not each
  # metric (tests/metrics/test_localization.py), is under test.
  names = ["auprc", "dice", "pointing_game"]
  got = metrics.localization_scores(maps, masks, names)
  assert list(got) == names
  for name in names:
    chex.assert_shape(got[name], (2, 3))
    fn = jax.jit(localization.LOCALIZATION[name])
    want = [[float(fn(maps[s, i], masks[i]))
             for i in range(3)] for s in range(2)]
    np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-7, err_msg=name)


def test_similarity_scores_equal_each_metric_per_map():
  a, b = _maps(1, (2, 48, 48)), _maps(2, (2, 48, 48))
  b[1] = a[1] ** 2  # a monotone transform: Spearman exactly 1
  names = ["spearman", "ssim", "hog_spearman"]  # jitted and host-side
  got = metrics.similarity_scores(a, b, names)
  for name in names:
    fn = similarity.SIMILARITY[name]
    fn = fn if name in scoring.HOST_SIMILARITY else jax.jit(fn)
    chex.assert_shape(got[name], (2,))
    np.testing.assert_allclose(got[name], [float(fn(a[i], b[i])) for i in range(2)],
                               rtol=1e-5, atol=1e-6, err_msg=name)
  # Against SciPy, on the same input.
  for i in range(2):
    want = stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic
    np.testing.assert_allclose(got["spearman"][i], want, atol=1e-5)
  np.testing.assert_allclose(got["spearman"][1], 1.0, atol=1e-6)
  assert "hog_spearman" in scoring.HOST_SIMILARITY


@pytest.mark.parametrize("call,match", [
    (lambda m: metrics.localization_scores(m, m > 0.5, ["auprc", "aupr"]),
     r"localization_scores: unknown metric 'aupr'; expected one of \['auprc'"),
    (lambda m: metrics.localization_scores(m, m > 0.5, "dice"),
     r"names must be a sequence of metric names, got the string 'dice'"),
    (lambda m: metrics.similarity_scores(m, m, ["ssim", "pearsonr"]),
     r"similarity_scores: unknown metric 'pearsonr'"),
    (lambda m: metrics.similarity_scores(m, m[:1], ["ssim"]),
     r"a and b must be maps \(\.\.\., H, W\) of one shape, got \(2, 8, 8\) and"),
])
def test_bad_names_and_shapes_are_named(call, match):
  with pytest.raises(ValueError, match=match):
    call(_maps(3, (2, 8, 8)))
