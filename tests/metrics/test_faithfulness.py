"""Faithfulness metrics against per-fraction loops, scipy and by hand."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse
import scipy.sparse.linalg
from flax import nnx

from saliency_jax import models
from saliency_jax.metrics import faithfulness as fl
from saliency_jax.saliency.explainee import as_explainee

SIDE = 32


@functools.lru_cache(maxsize=None)
def _small_cnn():
  model = models.create("small_cnn", num_classes=3, in_channels=3, width=0.25,
                        rngs=nnx.Rngs(0))
  model.eval()
  return model


def _image(seed=1, side=SIDE):
  return np.random.default_rng(seed).uniform(0, 1, (side, side, 3)).astype(
      np.float32)


def _map(seed=2, side=SIDE):
  s = np.random.default_rng(seed).uniform(size=(side, side))
  s = np.round(s * 8) / 8  # ties on purpose: the stable order must break them
  return s.astype(np.float32)


def _softmax_np(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max())
  return e / e.sum()


def _prob(model, image, target):
  """One model call on one image (a plain NumPy-side loop, no batching)."""
  return _softmax_np(model(jnp.asarray(image)[None])[0])[target]


def _loop_curve(model, x, s, target, step, fill, insertion):
  n = s.size
  order = np.argsort(-s.ravel(), kind="stable")
  fractions, scores = [], []
  f = 0.0
  while True:
    k = int(np.rint(min(f, 1.0) * n))
    first = np.zeros(n, bool)
    first[order[:k]] = True
    first = first.reshape(s.shape)[..., None]
    image = np.where(first, x, fill) if insertion else np.where(first, fill, x)
    fractions.append(k / n)
    scores.append(_prob(model, image, target))
    if f >= 1.0 - 1e-9:
      break
    f = min(f + step, 1.0)
  fractions, scores = np.array(fractions), np.array(scores)
  area = np.sum((scores[1:] + scores[:-1]) / 2 * np.diff(fractions))
  return fractions, scores, area


@pytest.mark.parametrize("insertion", [False, True])
@pytest.mark.parametrize("replacement,step", [("blur", 0.1), ("constant", 0.25),
                                              ("noise", 0.3)])
def test_curves_equal_a_per_fraction_loop(insertion, replacement, step):
  model, x, s, target = _small_cnn(), _image(), _map(), 1
  key = jax.random.key(4)
  if replacement == "blur":
    fill = scipy.ndimage.gaussian_filter(x.astype(np.float64), (2.0, 2.0, 0))
  elif replacement == "constant":
    fill = np.full_like(x, 0.5)
  else:
    fill = np.asarray(jax.random.uniform(key, x.shape, jnp.float32, x.min(),
                                         x.max()))
  metric = fl.insertion if insertion else fl.deletion
  got = metric(model, x, s, target, key=key, step=step,
               replacement=replacement, sigma=2.0, value=0.5,
               strategy="vectorized")
  fractions, scores, area = _loop_curve(model, x, s, target, step, fill,
                                        insertion)
  assert got.scores.shape == (len(fractions),)
  np.testing.assert_allclose(got.fractions, fractions, atol=1e-7)
  np.testing.assert_allclose(got.scores, scores, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got.auc, area, rtol=1e-4, atol=1e-6)
  # the two ends: the image itself and the replacement alone
  ends = (fill, x) if insertion else (x, fill)
  np.testing.assert_allclose(np.asarray(got.scores)[[0, -1]],
                             [_prob(model, e, target) for e in ends],
                             rtol=1e-4, atol=1e-6)


def test_default_step_gives_21_points_and_blur_equals_scipy():
  x = _image(3, 12)
  np.testing.assert_allclose(
      fl.gaussian_blur(jnp.asarray(x), 1.5),
      scipy.ndimage.gaussian_filter(x.astype(np.float64), (1.5, 1.5, 0)),
      atol=1e-6)
  f = lambda z: jnp.stack([jnp.sum(z), -jnp.sum(z)])  # noqa: E731
  curve = fl.deletion(f, x, _map(side=12), 0, replacement="constant")
  assert curve.fractions.shape == (21,)
  np.testing.assert_allclose(curve.fractions,
                             np.rint(np.arange(21) * 0.05 * 144) / 144,
                             atol=1e-7)


def test_gradient_x_input_deletion_falls_fastest_on_a_linear_model():
  # logit_0 = sum w * x: deleting pixel i (set to 0) lowers it by
  # c_i = sum_c w_ic x_ic, the gradient-x-input map; deleting in decreasing
  # c is optimal: its curve is total - cumsum(sorted c); no order beats it.
  rng = np.random.default_rng(5)
  w = rng.normal(size=(10, 10, 2)).astype(np.float32)
  x = rng.uniform(0, 1, (10, 10, 2)).astype(np.float32)
  f = lambda z: jnp.stack([jnp.sum(w * z), jnp.float32(0)])  # noqa: E731
  gxi = (w * x).sum(-1)
  options = dict(replacement="constant", value=0.0, output="logit", step=0.01)
  best = fl.deletion(f, x, gxi, 0, **options)
  c = np.sort(gxi.ravel())[::-1]
  analytic = gxi.sum() - np.concatenate([[0.0], np.cumsum(c)])
  np.testing.assert_allclose(best.scores, analytic, rtol=1e-4, atol=1e-4)
  others = [w.sum(-1), x.sum(-1), rng.uniform(size=(10, 10)), -gxi]
  for other in others:
    curve = fl.deletion(f, x, other.astype(np.float32), 0, **options)
    assert np.all(best.scores <= curve.scores + 1e-4)
    assert best.auc < curve.auc


def _reference_system(x, removed):
  """The reference NoisyLinearImputer's sparse system, transcribed in NumPy."""
  h, w, c = x.shape
  index = -np.ones((h, w), int)
  rows = np.argwhere(removed)
  index[removed] = np.arange(len(rows))
  a = scipy.sparse.lil_matrix((len(rows), len(rows)))
  b = np.zeros((len(rows), c))
  for r, (i, j) in enumerate(rows):
    total = 0.0
    for (di, dj), weight in fl.NEIGHBOURS:
      ii, jj = i + di, j + dj
      if not (0 <= ii < h and 0 <= jj < w):
        continue
      total += weight
      if removed[ii, jj]:
        a[r, index[ii, jj]] = weight
      else:
        b[r] -= weight * x[ii, jj]
    a[r, r] = -total
  return scipy.sparse.csc_matrix(a), b, rows


def test_neighbour_weights_are_the_reference_ones():
  weights = sorted(w for _, w in fl.NEIGHBOURS)
  np.testing.assert_allclose(weights, [1 / 12] * 4 + [1 / 6] * 4)
  assert sorted(o for o, _ in fl.NEIGHBOURS) == sorted(
      (i, j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0))


@pytest.mark.parametrize("fraction", [0.2, 0.6, 0.9])
def test_road_impute_equals_a_direct_sparse_solve(fraction):
  rng = np.random.default_rng(6)
  x = rng.uniform(0, 1, (12, 9, 2)).astype(np.float32)
  removed = rng.uniform(size=(12, 9)) < fraction
  removed[0, :3] = True  # a border run, so the weight renormalisation matters
  a, b, rows = _reference_system(x.astype(np.float64), removed)
  expected = x.astype(np.float64).copy()
  expected[removed] = scipy.sparse.linalg.spsolve(a, b).reshape(len(rows), -1)
  got = fl.road_impute(x, removed, key=None, noise=0.0)
  np.testing.assert_allclose(got, expected, atol=1e-5)
  # with noise: kept pixels stay exactly, removed ones move by the noise
  noisy = np.asarray(fl.road_impute(x, removed, key=jax.random.key(0),
                                    noise=0.01))
  np.testing.assert_array_equal(noisy[~removed], x[~removed])
  moved = noisy[removed] - np.asarray(got)[removed]
  assert 0.003 < moved.std() < 0.03


def _loop_road(model, x, s, target, percentiles, order):
  n = s.size
  ranking = np.argsort(s.ravel() if order == "lerf" else -s.ravel(),
                       kind="stable")
  scores = []
  for p in percentiles:
    removed = np.zeros(n, bool)
    removed[ranking[:int(np.rint(p / 100 * n))]] = True
    removed = removed.reshape(s.shape)
    image = x.astype(np.float64).copy()
    if removed.any():
      a, b, rows = _reference_system(image, removed)
      image[removed] = scipy.sparse.linalg.spsolve(a, b).reshape(len(rows), -1)
    scores.append(_prob(model, image.astype(np.float32), target))
  return np.array(scores)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_equals_a_loop_over_percentiles(order):
  side = 16
  model, x, s, target = _small_cnn(), _image(7, side), _map(8, side), 2
  percentiles = (0, 10, 50, 90)
  got = fl.road(model, x, s, target, key=None, noise=0.0,
                percentiles=percentiles, order=order, strategy="vectorized")
  expected = _loop_road(model, x, s, target, percentiles, order)
  np.testing.assert_allclose(got.scores, expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got.mean, expected.mean(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got.percentiles, percentiles)


def test_road_combined_is_half_the_lerf_morf_gap():
  model, x, s = _small_cnn(), _image(7, 16), _map(8, 16)
  options = dict(noise=0.0, percentiles=(20, 60), strategy="vectorized")
  combined = fl.road_combined(model, x, s, 0, key=None, **options)
  lerf = fl.road(model, x, s, 0, key=None, order="lerf", **options).mean
  morf = fl.road(model, x, s, 0, key=None, order="morf", **options).mean
  np.testing.assert_allclose(combined, (lerf - morf) / 2, rtol=1e-6)


def test_confidence_change_equals_a_hand_computation():
  rng = np.random.default_rng(9)
  w = rng.normal(size=(6, 5, 1, 3)).astype(np.float32)
  f = lambda z: jnp.einsum("hwc,hwck->k", z, w)  # noqa: E731
  x = rng.uniform(0, 1, (6, 5, 1)).astype(np.float32)
  for seed in range(4):
    s = np.random.default_rng(seed).normal(size=(6, 5)).astype(np.float32)
    got = fl.confidence_change(f, x, s, 1)
    scaled = (s - s.min()) / (s.max() - s.min())
    y = _softmax_np(np.einsum("hwc,hwck->k", x, w))[1]
    o = _softmax_np(np.einsum("hwc,hwck->k", x * scaled[..., None], w))[1]
    np.testing.assert_allclose(got.y, y, rtol=1e-5)
    np.testing.assert_allclose(got.o, o, rtol=1e-5)
    np.testing.assert_allclose(got.drop, max(0.0, y - o) / y, rtol=1e-4,
                               atol=1e-7)
    assert float(got.increase) == float(o > y)
  constant = fl.confidence_change(f, x, np.ones((6, 5), np.float32), 1)
  assert np.isnan(constant.drop) and np.isnan(constant.increase)


@pytest.mark.parametrize("batch_size,strategy", [(1, "dispatch"), (2, "scan"),
                                                 (2, "vectorized")])
def test_chunked_equals_unchunked(batch_size, strategy):
  model, x, s = _small_cnn(), _image(10, 16), _map(11, 16)
  explainee = as_explainee(model)
  key = jax.random.key(1)
  for metric, options in (
      (fl.deletion, dict(step=0.25, replacement="blur", sigma=1.0)),
      (fl.insertion, dict(step=0.25, replacement="noise", key=key)),
      (fl.road, dict(percentiles=(10, 40, 70), key=key)),
      (fl.confidence_change, {})):
    whole = metric(explainee, x, s, 1, strategy="vectorized", batch_size=None,
                   **options)
    chunked = metric(explainee, x, s, 1, strategy=strategy,
                     batch_size=batch_size, **options)
    for a, b in zip(whole, chunked):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_vmapped_over_images_equals_one_at_a_time():
  model = as_explainee(_small_cnn())
  xs = np.stack([_image(12, 16), _image(13, 16)])
  ss = np.stack([_map(14, 16), _map(15, 16)])
  ts = np.array([0, 2])
  keys = jax.random.split(jax.random.key(3), 2)

  def both(x, s, t, k):
    return (fl.deletion(model, x, s, t, step=0.25, replacement="blur",
                        sigma=1.0, strategy="vectorized"),
            fl.road(model, x, s, t, key=k, percentiles=(30, 60),
                    strategy="vectorized"))

  batched = jax.jit(jax.vmap(both))(xs, ss, ts, keys)
  for i in range(2):
    one = both(xs[i], ss[i], int(ts[i]), keys[i])
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(one)):
      np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6)


def _f(z):
  return jnp.stack([jnp.sum(z), -jnp.sum(z)])


@pytest.mark.parametrize("options,match", [
    (dict(step=0.0), r"deletion: step must be a fraction in \(0, 1\]"),
    (dict(step=1.5), r"deletion: step must be a fraction in \(0, 1\]"),
    (dict(step=True), r"deletion: step must be a fraction in \(0, 1\]"),
    (dict(replacement="zeros"), r"deletion: replacement must be one of"),
    (dict(replacement="noise"), r"deletion: needs a `key`"),
    (dict(replacement="blur", sigma=0), r"deletion: sigma must be a positive"),
    (dict(output="softmax"), r"deletion: output must be one of"),
])
def test_deletion_rejects_bad_options(options, match):
  with pytest.raises(ValueError, match=match):
    fl.deletion(_f, _image(side=8), _map(side=8), 0, **options)


def test_clear_errors_for_bad_shapes_and_road_options():
  x, s = _image(side=8), _map(side=8)
  with pytest.raises(ValueError, match=r"insertion: saliency_map must be one "
                     r"map \(H, W\) = \(8, 8\).*got shape \(8, 8, 3\)"):
    fl.insertion(_f, x, np.repeat(s[..., None], 3, -1), 0)
  with pytest.raises(ValueError, match=r"road_impute: removed_mask must be "
                     r"\(H, W\) = \(8, 8\).*got shape \(8, 7\)"):
    fl.road_impute(x, np.zeros((8, 7), bool), key=None, noise=0.0)
  with pytest.raises(ValueError, match=r"road_impute: needs a `key`"):
    fl.road_impute(x, np.zeros((8, 8), bool), key=None)
  with pytest.raises(ValueError, match=r"road: order must be one of"):
    fl.road(_f, x, s, 0, key=None, noise=0.0, order="random")
  for bad in ((), (10, 100), (-5,), "50"):
    with pytest.raises(ValueError, match=r"road: percentiles must be"):
      fl.road(_f, x, s, 0, key=None, noise=0.0, percentiles=bad)
  with pytest.raises(ValueError, match=r"confidence_change: x must be one "
                     r"image"):
    fl.confidence_change(_f, x[..., 0], s, 0)
