"""The fast paths of the localization metrics against scikit-learn and sorts.

The curves sort one packed uint32 key when every map of a batch allows it
(no NaN, ordered keys spanning < 2^31) and a (score, label) sort otherwise;
the exact top-n walks vmapped maps one at a time. Both choices are made by
``_over_batch`` from the whole batch, so single calls, vmapped batches
(mixed or not) and nested vmaps must all give the same values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from saliency_jax.metrics import localization as loc

# pylint: disable=protected-access

SHAPE = (12, 16)


def _maps() -> dict[str, np.ndarray]:
  """One map per kind of value the two sort paths must handle."""
  rng = np.random.default_rng(0)
  u = rng.random(SHAPE).astype(np.float32)
  top = np.float32(np.finfo(np.float32).max)
  return {
      "unit": u,
      # Few distinct values: tie groups that hold both labels.
      "ties": np.round(u * 3) / 3,
      "all_equal": np.full(SHAPE, 0.25, np.float32),
      "zeros_both_signs": np.where(u > 0.5, np.float32(0.0), np.float32(-0.0)),
      "huge_nonneg": np.where(u > 0.3, u * top, np.float32(0.0)),
      "inf": np.where(u > 0.9, np.float32(np.inf), u),
      "narrow_signed": np.round((u - 0.5) * 1e-3, 5),  # packed: narrow span
      "wide_signed": np.round((u - 0.5) * 8, 1),  # keys span >= 2^31
      "all_negative": -np.round(u * 5) - 1,
  }


PACKABLE = {"unit": True, "ties": True, "all_equal": True,
            "zeros_both_signs": True, "huge_nonneg": True, "inf": True,
            "narrow_signed": True, "wide_signed": False, "all_negative": True}


def _mask(seed: int = 1) -> np.ndarray:
  m = np.random.default_rng(seed).random(SHAPE) < 0.35
  m[0, 0], m[0, 1] = True, False
  return m


def _sklearn(s: np.ndarray, m: np.ndarray) -> dict[str, float]:
  precision, recall, _ = skm.precision_recall_curve(m.ravel(), s.ravel())
  return {"auprc": skm.auc(recall, precision),
          "average_precision": skm.average_precision_score(m.ravel(),
                                                           s.ravel()),
          "auroc": skm.roc_auc_score(m.ravel(), s.ravel())}


def test_packable_tells_the_packed_key_from_the_general_sort():
  for name, s in _maps().items():
    assert bool(loc._packable(jnp.asarray(s).ravel())) == PACKABLE[name], name
  with_nan = _maps()["unit"].copy()
  with_nan[3, 4] = np.nan
  assert not loc._packable(jnp.asarray(with_nan).ravel())


@pytest.mark.parametrize("name", sorted(PACKABLE))
def test_curves_of_one_map_equal_sklearn_on_either_path(name):
  s, m = _maps()[name], _mask()
  # The curves depend on the order only; scikit-learn refuses infinities.
  want = _sklearn(np.where(np.isinf(s), np.float32(2.0), s), m)
  got = loc.curves(s, m)
  for metric in loc.CURVES:
    np.testing.assert_allclose(got[metric], want[metric], rtol=1e-5,
                               err_msg=metric)


@pytest.mark.parametrize("name", sorted(n for n, p in PACKABLE.items() if p))
def test_packed_and_general_sort_give_the_same_groups_and_labels(name):
  flat = jnp.asarray(_maps()[name]).ravel()
  y = jnp.asarray(_mask()).ravel()
  for sort in (loc._sorted_packed, loc._sorted_general):
    ends, labels = jax.jit(sort)(flat, y)
    # Per tie group (from the top score down): its size and its positives.
    ends, labels = np.asarray(ends), np.asarray(labels)
    bounds = np.flatnonzero(ends) + 1
    got = [(len(g), int(g.sum())) for g in np.split(labels, bounds)[:-1]]
    values, inverse = np.unique(-np.asarray(flat), return_inverse=True)
    want = [(int((inverse == i).sum()), int(np.asarray(y)[inverse == i].sum()))
            for i in range(len(values))]
    assert got == want, sort.__name__


def test_vmapped_batches_equal_single_calls_packed_mixed_and_nested():
  maps = _maps()
  names = sorted(maps)
  stack = np.stack([maps[n] for n in names])
  masks = np.stack([_mask(seed) for seed in range(len(names))])
  single = [loc.curves(s, m) for s, m in zip(stack, masks)]
  packed = [i for i, n in enumerate(names) if PACKABLE[n]]
  batches = {
      "packed only": (stack[packed], masks[packed], packed),
      "mixed": (stack, masks, range(len(names))),
  }
  for label, (s, m, rows) in batches.items():
    got = jax.jit(jax.vmap(loc.curves))(s, m)
    for metric in loc.CURVES:
      np.testing.assert_allclose(
          got[metric], [single[i][metric] for i in rows], rtol=1e-5,
          err_msg=f"{label} {metric}")
  # Nested vmaps (methods x images), the mask shared over the outer axis.
  nested = jax.jit(jax.vmap(jax.vmap(loc.curves), in_axes=(0, None)))(
      np.stack([stack, stack[::-1]]), masks)
  for metric in loc.CURVES:
    np.testing.assert_allclose(nested[metric][0],
                               [r[metric] for r in single], rtol=1e-5)
    reverse = jax.jit(jax.vmap(loc.curves))(stack[::-1], masks)[metric]
    np.testing.assert_allclose(nested[metric][1], reverse, rtol=1e-5)


def test_nan_map_takes_the_general_sort_alone_and_in_a_batch():
  s = _maps()["unit"].copy()
  s[2, 5] = np.nan
  m = _mask()
  one = loc.curves(s, m)
  flat, y = jnp.asarray(s).ravel(), jnp.asarray(m).ravel()
  ends, labels = loc._sorted_general(flat, y)
  got_ends, got_labels = jax.jit(loc._sorted_labels)(flat, y)
  np.testing.assert_array_equal(got_ends, ends)
  np.testing.assert_array_equal(got_labels, labels)
  batch = jax.jit(jax.vmap(loc.curves))(np.stack([s, _maps()["unit"]]),
                                        np.stack([m, m]))
  for metric in loc.CURVES:
    np.testing.assert_allclose(batch[metric][0], one[metric], rtol=1e-6,
                               equal_nan=True)


def _top_by_stable_sort(s: np.ndarray, count: int) -> np.ndarray:
  order = np.argsort(-s.ravel(), kind="stable")
  out = np.zeros(s.size, bool)
  out[order[:count]] = True
  return out.reshape(s.shape)


def test_vmapped_top_pixels_walk_the_maps_and_equal_a_stable_sort():
  maps = _maps()
  stack = np.stack([maps[n] for n in sorted(maps)])
  counts = np.arange(len(stack)) * 23 % (stack[0].size + 1)
  batched = jax.jit(jax.vmap(loc._top_pixels))(stack, counts)
  shared = jax.jit(jax.vmap(loc._top_pixels, in_axes=(0, None)))(stack, 37)
  nested = jax.jit(jax.vmap(jax.vmap(loc._top_pixels)))(
      stack.reshape(3, 3, *SHAPE), counts.reshape(3, 3))
  for i, s in enumerate(stack):
    want = _top_by_stable_sort(s, int(counts[i]))
    np.testing.assert_array_equal(batched[i], want, err_msg=str(i))
    np.testing.assert_array_equal(nested[i // 3, i % 3], want)
    np.testing.assert_array_equal(shared[i], _top_by_stable_sort(s, 37))


@pytest.mark.parametrize("shape", [(128, 128), (220, 228)])
def test_curves_on_large_maps_stay_at_float32_rounding_of_sklearn(shape):
  # 128 x 128: the single running maximum of tps (N + 1) + position; 220 x
  # 228 (N (N + 2) >= 2^31): two running maxima. Many distinct scores: the
  # areas summed from rounded recall differences were 1e-4 off here.
  rng = np.random.default_rng(3)
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  m = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 3) ** 2 < (shape[0] / 5) ** 2
  s = (rng.random(shape) + 0.8 * m).astype(np.float32)
  s = np.minimum(s, np.percentile(s, 99)) / np.percentile(s, 99)
  want = _sklearn(s, m)
  together = loc.curves(s, m)
  for metric in loc.CURVES:
    assert abs(float(together[metric]) - want[metric]) < 2e-6, metric
    alone = float(loc.LOCALIZATION[metric](s, m))
    assert abs(alone - want[metric]) < 2e-6, metric
