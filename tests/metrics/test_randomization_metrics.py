"""eMPRT and sMPRT (Hedström et al. 2023) against plain NumPy / Python transcriptions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from saliency_jax import metrics
from saliency_jax.metrics import randomization


def _entropy(a, bins):
  """Quantus' discrete_entropy: np.histogram over min..max, scipy's entropy."""
  histogram, _ = np.histogram(np.asarray(a).ravel(), bins=bins)
  return stats.entropy(histogram)


def _emprt(trained, randomized, bins=100, absolute=False, normalise=False):
  def prep(a):
    a = np.asarray(a, np.float64)
    if normalise:
      a = a / np.sqrt(np.mean(a ** 2))
    return np.abs(a) if absolute else a
  h_t, h_r = _entropy(prep(trained), bins), _entropy(prep(randomized), bins)
  return (h_r - h_t) / h_t


def _maps():
  rng = np.random.default_rng(0)
  smooth = np.outer(np.hanning(24), np.hanning(24)).astype(np.float32)
  noisy = rng.normal(size=(24, 24)).astype(np.float32)
  skewed = rng.exponential(size=(24, 24)).astype(np.float32) - 0.5
  return smooth, noisy, skewed


@pytest.mark.parametrize("bins", [100, 7])
def test_emprt_equals_the_numpy_transcription(bins):
  smooth, noisy, skewed = _maps()
  for t, r in ((smooth, noisy), (noisy, smooth), (skewed, noisy), (smooth, skewed)):
    got = float(randomization.emprt(t, r, bins=bins))
    np.testing.assert_allclose(got, _emprt(t, r, bins), rtol=1e-5, atol=1e-6)
  assert float(randomization.emprt(smooth, noisy)) > 0  # noisier: entropy rises
  assert float(randomization.emprt(noisy, noisy)) == 0.0


def test_emprt_abs_and_normalise_options():
  _, noisy, skewed = _maps()
  for absolute in (False, True):
    got = float(randomization.emprt(skewed, noisy, abs=absolute, normalise=True))
    np.testing.assert_allclose(got, _emprt(skewed, noisy, 100, absolute, True),
                               rtol=1e-5)
  assert not np.isclose(float(randomization.emprt(skewed, noisy, abs=True)),
                        float(randomization.emprt(skewed, noisy)))


def test_emprt_constant_maps():
  smooth, _, _ = _maps()
  constant = np.full((24, 24), 0.3, np.float32)
  # Trained map constant: H = 0, undefined (NumPy: 0 / 0).
  assert np.isnan(float(randomization.emprt(constant, smooth)))
  assert _entropy(constant, 100) == 0.0
  # Randomized map constant: all complexity lost, -1 as the definition says.
  assert float(randomization.emprt(smooth, constant)) == pytest.approx(-1.0)
  assert _emprt(smooth, constant) == pytest.approx(-1.0)
  bad = smooth.copy()
  bad[0, 0] = np.nan
  assert np.isnan(float(randomization.emprt(smooth, bad)))


def test_emprt_vmapped_and_by_name():
  smooth, noisy, skewed = _maps()
  reference = np.stack([smooth, noisy, skewed])[None].repeat(2, axis=0)  # (2, 3, H, W)
  compared = np.stack([noisy, skewed, smooth])[None].repeat(2, axis=0)
  got = metrics.randomization_scores(reference, compared, ["emprt"],
                                     {"emprt": {"bins": 20}})["emprt"]
  assert got.shape == (2, 3)
  expected = [_emprt(a, b, 20) for a, b in zip(reference[0], compared[0])]
  np.testing.assert_allclose(got, [expected, expected], rtol=1e-5)
  with pytest.raises(ValueError, match="bins must be a positive integer"):
    randomization.emprt(smooth, noisy, bins=0)
  with pytest.raises(ValueError, match="unknown metric 'ssim'"):
    metrics.randomization_scores(reference, compared, ["ssim"])


def _method(f, x, target, *, key=None, batch_size=None, scale=1.0):
  """A toy method: its own noise (from key) plus a function of the input."""
  del f, batch_size
  return scale * jnp.sin(3.0 * x) * target + 0.01 * jax.random.normal(key, x.shape)


def test_smoothed_maps_equal_a_python_loop():
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(6, 5, 1)), jnp.float32)
  key = jax.random.key(7)
  samples, noise = 5, 0.2
  got = randomization.smoothed_maps(lambda xi, k: _method(None, xi, 2.0, key=k),
                                    x, key, samples=samples, noise=noise)
  noise_key, method_key = jax.random.split(key)
  eps = np.asarray(jax.random.normal(noise_key, (samples,) + x.shape, jnp.float32))
  std = noise * (float(x.max()) - float(x.min()))
  keys = jax.random.split(method_key, samples)
  total = 0.0
  for i in range(samples):
    copy = x + (0.0 if i == samples - 1 else eps[i] * std)  # the last copy clean
    total = total + np.asarray(_method(None, copy, 2.0, key=keys[i]))
  np.testing.assert_allclose(np.asarray(got), total / samples, rtol=1e-5, atol=1e-6)
  # In chunks (lax.map) the same; and the wrapper is a method like any other.
  chunked = randomization.smoothed_maps(lambda xi, k: _method(None, xi, 2.0, key=k),
                                        x, key, samples=samples, noise=noise,
                                        batch_size=2)
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(got), rtol=1e-6)
  wrapped = randomization.smoothed(_method, samples, noise)
  assert randomization.smoothed(_method, samples, noise) is wrapped  # one program
  np.testing.assert_allclose(np.asarray(wrapped(None, x, 2.0, key=key)),
                             np.asarray(got), rtol=1e-6)
  # No noise, one copy: the method itself.
  one = randomization.smoothed_maps(lambda xi, k: _method(None, xi, 2.0, key=k),
                                    x, key, samples=1, noise=0.0)
  np.testing.assert_allclose(
      np.asarray(one), np.asarray(_method(None, x, 2.0,
                                          key=jax.random.split(jax.random.split(key)[1],
                                                               1)[0])), rtol=1e-6)
  with pytest.raises(ValueError, match="samples must be a positive integer"):
    randomization.smoothed_maps(lambda xi, k: xi, x, key, samples=0)


def test_emprt_options_in_the_config_are_checked():
  import os
  from saliency_jax import config as config_lib
  from saliency_jax import errors
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "cascade.py"),
                                "quick")
  config.metric_options.emprt = dict(bins=20, abs=True)
  config_lib.validate(config)
  config.metric_options.emprt = dict(bins=0)
  with pytest.raises(errors.ConfigError,
                     match=r"config.metric_options.emprt.bins=0: .*positive integer"):
    config_lib.validate(config)
