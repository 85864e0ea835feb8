"""Similarity metrics against SciPy / scikit-image on the same inputs."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import stats
from skimage import feature
from skimage import metrics as skm

from saliency_jax.metrics import similarity as sim

SHAPE = (20, 26)


def _pair(seed: int, quantize: bool,
          scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """Two related maps; quantized ones have many tied pixels."""
  rng = np.random.default_rng(seed)
  a = rng.random(SHAPE)
  b = 0.6 * a + 0.4 * rng.random(SHAPE)
  if quantize:
    a, b = np.round(a, 1), np.round(b, 1)
  # float32 here, so SciPy sees the same ties as the float32 JAX code.
  return (scale * a).astype(np.float32), (scale * b).astype(np.float32)


CASES = [(seed, quantize) for seed in range(3) for quantize in (False, True)]


@pytest.mark.parametrize("seed,quantize", CASES)
def test_correlations_match_scipy(seed, quantize):
  a, b = _pair(seed, quantize)
  np.testing.assert_allclose(sim.spearman(a, b),
                             stats.spearmanr(a.ravel(), b.ravel()).statistic,
                             atol=1e-5)
  np.testing.assert_allclose(sim.pearson(a, b),
                             stats.pearsonr(a.ravel(), b.ravel()).statistic,
                             atol=1e-5)
  # Signed maps: |a| and |b| reorder pixels, so this differs from spearman.
  a, b = a - np.float32(0.5), b - np.float32(0.5)
  want = stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic
  np.testing.assert_allclose(sim.spearman_abs(a, b), want, atol=1e-5)


# Both maps constant: (a value, b value). 0.1 is not exact in float32, so a
# formula's 0 / 0 would leave rounding noise rather than NaN.
CONSTANT_PAIRS = {"zeros": (0.0, 0.0), "ones": (1.0, 1.0),
                  "equal": (0.1, 0.1), "different": (0.1, 0.7)}
CORRELATIONS = ["spearman", "spearman_abs", "pearson"]
HOG_SHAPE = (48, 64)


@pytest.mark.parametrize("values", CONSTANT_PAIRS.values(),
                         ids=CONSTANT_PAIRS.keys())
@pytest.mark.parametrize("name", sorted(sim.SIMILARITY))
def test_two_constant_maps_are_undefined(name, values):
  shape = HOG_SHAPE if name == "hog_spearman" else SHAPE
  a, b = (np.full(shape, v, np.float32) for v in values)
  assert np.isnan(sim.SIMILARITY[name](a, b))


@pytest.mark.parametrize("value", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("name", CORRELATIONS)
def test_a_correlation_with_one_constant_map_is_nan(name, value):
  a, _ = _pair(0, False)
  constant = np.full(SHAPE, value, np.float32)
  fn = sim.SIMILARITY[name]
  assert np.isnan(fn(a, constant)) and np.isnan(fn(constant, a))


def test_hog_spearman_with_one_constant_map_is_nan():
  a = np.random.default_rng(0).random(HOG_SHAPE)
  constant = np.full(HOG_SHAPE, 0.3)
  assert np.isnan(sim.hog_spearman(a, constant))
  assert np.isnan(sim.hog_spearman(constant, a))


def test_spearman_abs_of_a_map_constant_in_magnitude_is_nan():
  a, b = _pair(0, False)
  signs = np.where(a > 0.5, np.float32(0.5), np.float32(-0.5))
  assert np.isnan(sim.spearman_abs(signs, b))
  assert not np.isnan(sim.spearman(signs, b))  # varying as a signed map


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("value", [0.0, 0.1, 1.0])
def test_ssim_of_one_constant_map_matches_skimage(gaussian, value):
  a, _ = _pair(0, False)
  constant = np.full(SHAPE, value, np.float32)
  options = ({"gaussian_weights": True, "sigma": 1.5,
              "use_sample_covariance": False} if gaussian else {})
  for x, y in ((a, constant), (constant, a)):
    want = skm.structural_similarity(x, y, data_range=1.0, **options)
    got = sim.ssim(x, y, data_range=1.0, gaussian=gaussian)
    assert np.isfinite(got)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("data_range", [1.0, 2.5])
@pytest.mark.parametrize("quantize", [False, True])
def test_ssim_matches_skimage(gaussian, data_range, quantize):
  a, b = _pair(int(quantize), quantize, scale=data_range)
  options = ({"gaussian_weights": True, "sigma": 1.5,
              "use_sample_covariance": False} if gaussian else {})
  want = skm.structural_similarity(a, b, data_range=data_range, **options)
  got = sim.ssim(a, b, data_range=data_range, gaussian=gaussian)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(sim.ssim(a, a, data_range, gaussian), 1.0,
                             atol=1e-6)


def test_hog_spearman_matches_skimage_hog_and_spearmanr():
  rng = np.random.default_rng(0)
  a = rng.random((48, 64))
  b = a + 0.5 * rng.random((48, 64))
  hogs = [feature.hog(x, pixels_per_cell=(16, 16)) for x in (a, b)]
  want = stats.spearmanr(*hogs).statistic
  assert sim.hog_spearman(a, b) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("name", ["spearman", "spearman_abs", "pearson",
                                  "ssim"])
def test_jit_vmap_equals_a_loop(name):
  fn = sim.SIMILARITY[name]
  pairs = [_pair(seed, seed % 2 == 1) for seed in range(4)]
  a = np.stack([x for x, _ in pairs])
  b = np.stack([y for _, y in pairs])
  batched = jax.jit(jax.vmap(fn))(a, b)
  looped = [float(fn(x, y)) for x, y in zip(a, b)]
  np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-7)


def test_bad_inputs_raise_clear_errors():
  a, b = _pair(0, False)
  with pytest.raises(ValueError, match=r"spearman: a and b must be two maps "
                     r"\(H, W\) of the same shape, got \(20, 26\) and "
                     r"\(20, 25\)"):
    sim.spearman(a, b[:, :-1])
  with pytest.raises(ValueError, match=r"ssim: maps must be at least 11 x 11"):
    sim.ssim(a[:8, :8], b[:8, :8], gaussian=True)
  with pytest.raises(ValueError, match=r"data_range must be a positive"):
    sim.ssim(a, b, data_range=0.0)
  with pytest.raises(ValueError, match=r"hog_spearman: maps must be at least "
                     r"48 x 48"):
    sim.hog_spearman(a, b)


@pytest.mark.parametrize("name", CORRELATIONS + ["ssim"])
def test_vmap_gives_nan_only_for_the_undefined_pairs(name):
  fn = sim.SIMILARITY[name]
  pairs = [_pair(seed, seed % 2 == 1) for seed in range(3)]
  zeros, tenths = np.zeros(SHAPE, np.float32), np.full(SHAPE, 0.1, np.float32)
  varying = pairs[0][0]
  cases = [pairs[0], (zeros, zeros), pairs[1], (tenths, varying),
           (tenths, zeros), pairs[2], (varying, tenths)]
  # Both constant: undefined for every metric; one constant: correlations.
  undefined = [False, True, False, name != "ssim", True, False,
               name != "ssim"]
  a = np.stack([x for x, _ in cases])
  b = np.stack([y for _, y in cases])
  batched = np.asarray(jax.jit(jax.vmap(fn))(a, b))
  np.testing.assert_array_equal(np.isnan(batched), undefined)
  looped = np.array([float(fn(x, y)) for x, y in cases])
  np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-7)
