"""Tests for saliency_jax.saliency.xrai."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from skimage import morphology, segmentation, transform

from saliency_jax import models, saliency
from saliency_jax.saliency import xrai as xrai_lib
from saliency_jax.saliency.explainee import from_model
from saliency_jax.saliency.integrated_gradients import integrated_gradients


def _pair_gain(mask, attr, base=None):
  added = mask if base is None else mask & ~base
  return attr[added].mean() if added.any() else -np.inf


def _pair_ranks(trace, uncomputed, shape):
  trace = [m for m, _ in sorted(trace, key=lambda t: -t[1])]
  if uncomputed.any():
    trace.append(uncomputed)
  ranks = np.zeros(shape, int)
  for i, mask in enumerate(trace):
    ranks[mask] = i + 1
  return ranks


def _pair_full(attr, segs, area_th=1.0, min_pixel_diff=50):
  """PAIR saliency 0.2.1 `XRAI._xrai`, literally (loops over dicts)."""
  out = np.full(attr.shape, -np.inf)
  current = np.zeros(attr.shape, bool)
  trace, remaining = [], dict(enumerate(segs))
  while current.mean() <= area_th:
    best_gain, best_key, removed = -np.inf, None, []
    for k, mask in remaining.items():
      if np.sum(mask & ~current) < min_pixel_diff:
        removed.append(k)
        continue
      gain = _pair_gain(mask, attr, current)
      if gain > best_gain:
        best_gain, best_key = gain, k
    for k in removed:
      del remaining[k]
    if not remaining:
      break
    diff = remaining[best_key] & ~current
    trace.append((diff, best_gain))
    current |= remaining[best_key]
    out[diff] = best_gain
    del remaining[best_key]
  uncomputed = out == -np.inf
  out[uncomputed] = _pair_gain(uncomputed, attr)
  return out, _pair_ranks(trace, uncomputed, attr.shape)


def _pair_fast(attr, segs, min_pixel_diff=50):
  """PAIR saliency 0.2.1 `XRAI._xrai_fast`, literally."""
  out = np.full(attr.shape, -np.inf)
  current = np.zeros(attr.shape, bool)
  trace = []
  gains = [_pair_gain(m, attr) for m in segs]
  for mask, _ in sorted(zip(segs, gains), key=lambda t: -t[1]):
    diff = mask & ~current
    if diff.sum() < min_pixel_diff:
      continue
    gain = _pair_gain(diff, attr)
    trace.append((diff, gain))
    out[diff] = gain
    current |= mask
  uncomputed = out == -np.inf
  out[uncomputed] = _pair_gain(uncomputed, attr)
  return out, _pair_ranks(trace, uncomputed, attr.shape)


def _hand_made(seed, n=40, size=32):
  """Overlapping rectangles of all sizes (many add < 50 pixels), a repeat,
  an empty mask; the attribution takes few values so that gains tie."""
  rng = np.random.default_rng(seed)
  masks = []
  for _ in range(n):
    y, x = rng.integers(0, size - 2, 2)
    h, w = rng.integers(2, size // 2, 2)
    m = np.zeros((size, size), bool)
    m[y:y + h, x:x + w] = True
    masks.append(m)
  masks += [masks[3].copy(), np.zeros((size, size), bool)]
  if seed % 2:
    attr = rng.integers(-2, 3, (size, size)).astype(np.float32)
    # Two equal disjoint blocks of equal value: the first must win the tie.
    attr[:8, :8] = attr[-8:, -8:] = 5.0
    masks = [masks[0], masks[-1]] + masks
    masks[0] = np.zeros((size, size), bool)
    masks[0][-8:, -8:] = True
    masks.insert(0, np.zeros((size, size), bool))
    masks[0][:8, :8] = True
  else:
    attr = rng.normal(size=(size, size)).astype(np.float32)
  return attr, np.stack(masks)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("algorithm,area", [("full", 1.0), ("full", 0.4),
                                            ("fast", 1.0)])
def test_regions_match_pair_brute_force(seed, algorithm, area):
  attr, masks = _hand_made(seed)
  if algorithm == "full":
    want_map, want_ranks = _pair_full(attr, list(masks), area_th=area)
  else:
    want_map, want_ranks = _pair_fast(attr, list(masks))
  padded = np.concatenate([masks, np.zeros((9, 32, 32), bool)])
  got_map, got_ranks = xrai_lib.xrai_regions(
      attr, padded, algorithm=algorithm, area_threshold=area)
  np.testing.assert_allclose(got_map, want_map, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got_ranks, want_ranks)
  # Completeness of the region map: it redistributes, never adds.
  np.testing.assert_allclose(np.sum(got_map), attr.sum(), rtol=1e-4, atol=1e-3)


def _pair_segments(im):
  """PAIR's `_get_segments_felzenszwalb`, step by step with scikit-image."""
  lo, hi = im.min(), im.max()
  small = transform.resize((im - lo) / (hi - lo) * 2.0 - 1.0, (224, 224),
                           order=3, mode="constant", preserve_range=True,
                           anti_aliasing=True)
  masks = []
  for scale in (50, 100, 150, 250, 500, 1200):
    seg = segmentation.felzenszwalb(small, scale=scale, sigma=0.8, min_size=150)
    seg = transform.resize(seg, im.shape[:2], order=0, preserve_range=True,
                           mode="constant", anti_aliasing=False).astype(int)
    masks += [seg == label for label in range(seg.min(), seg.max() + 1)]
  return [morphology.dilation(m, footprint=morphology.disk(5)) for m in masks]


def _phantom(size, channels, seed=0, width=None):
  """Smooth blobs plus noise: segments of many sizes at every scale."""
  rng = np.random.default_rng(seed)
  width = width or size
  yy, xx = np.mgrid[:size, :width] / size
  im = np.zeros((size, width))
  for cy, cx, r, v in rng.uniform(0, 1, (6, 4)):
    im += v * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.1 * r))
  im = im[..., None] + 0.05 * rng.normal(size=(size, width, channels))
  return im.astype(np.float32)


@pytest.mark.parametrize("size,width,channels", [(96, 96, 1), (56, 80, 3)])
def test_segments_equal_scikit_image(size, width, channels):
  im = _phantom(size, channels, width=width)
  want = _pair_segments(im)
  got = xrai_lib.xrai_segments(im, max_segments=None)
  # PAIR's list, less empty masks and repeats (which never change XRAI).
  unique = []
  for m in want:
    if m.any() and not any(np.array_equal(m, u) for u in unique):
      unique.append(m)
  assert len(unique) > 20
  np.testing.assert_array_equal(got, np.stack(unique))
  padded = xrai_lib.xrai_segments(im)
  assert padded.shape == (xrai_lib.MAX_SEGMENTS, size, width)
  np.testing.assert_array_equal(padded[:len(unique)], got)
  assert not padded[len(unique):].any()
  # Dropping empties and repeats leaves XRAI's result unchanged.
  attr = np.random.default_rng(1).normal(size=(size, width)).astype(np.float32)
  np.testing.assert_allclose(xrai_lib.xrai_regions(attr, padded)[0],
                             _pair_full(attr, want)[0], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def cnn():
  return from_model(models.create("small_cnn", num_classes=2, in_channels=1,
                                  width=0.125, rngs=nnx.Rngs(0)))


def test_xrai_on_cnn_uses_ig_and_segments(cnn):
  x = jnp.asarray(_phantom(48, 1))
  got = xrai_lib.xrai(cnn, x, 1, steps=8)
  assert got.shape == (48, 48, 1) and jnp.all(jnp.isfinite(got))
  ig = sum(integrated_gradients(cnn, x, 1, steps=8, baseline=b,
                                quadrature="pair") for b in ("black", "white"))
  attr = jnp.max(ig / 2, axis=-1)
  segments = xrai_lib.xrai_segments(x)
  want, ranks = xrai_lib.xrai_regions(attr, segments)
  np.testing.assert_allclose(got[..., 0], want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got.sum(), attr.sum(), rtol=1e-3, atol=1e-5)
  assert ranks.min() == 1 and len(np.unique(ranks)) > 3
  # Precomputed segments and a precomputed attribution change nothing.
  np.testing.assert_array_equal(
      xrai_lib.xrai(cnn, x, 1, steps=8, segments=segments), got)
  np.testing.assert_array_equal(
      xrai_lib.xrai(cnn, x, 1, base_attribution=ig / 2, segments=segments), got)


def test_xrai_traced_segments_trace_once_and_vmap(cnn):
  xs = jnp.asarray(np.stack([_phantom(48, 1, seed) for seed in (1, 2)]))
  targets = jnp.array([0, 1])
  hp = {"steps": 8, "algorithm": "fast"}
  traces = []

  def run(x, target):
    traces.append(None)  # runs once per trace, not per call
    return xrai_lib.xrai(cnn, x, target, **hp)

  jitted = jax.jit(run)
  outs = jnp.stack([jitted(x, t) for x, t in zip(xs, targets)])
  assert len(traces) == 1  # segments padded to MAX_SEGMENTS: one shape
  assert not np.allclose(outs[0], outs[1])
  # Host segmentation inside jit (a callback) = segmentation outside (the
  # CPU default of `explain` calls the method eagerly image by image).
  np.testing.assert_allclose(
      saliency.explain(cnn, xs, targets, method="xrai", **hp), outs,
      rtol=1e-5, atol=1e-7)
  # Precomputed per-image segments, vmapped over images.
  segments = np.stack([xrai_lib.xrai_segments(x) for x in xs])
  batched = jax.jit(jax.vmap(
      lambda x, t, s: xrai_lib.xrai(cnn, x, t, segments=s, **hp)))(
          xs, targets, segments)
  np.testing.assert_allclose(batched, outs, rtol=1e-5, atol=1e-7)
  # ... and through `explain`, which maps per-image hyper-parameters.
  np.testing.assert_allclose(
      saliency.explain(cnn, xs, targets, method="xrai",
                       per_image={"segments": segments}, **hp),
      outs, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="per_image\\['segments'\\] must have a leading axis of 2"):
    saliency.explain(cnn, xs, targets, method="xrai",
                     per_image={"segments": segments[:1]}, **hp)


def test_xrai_rejects_bad_arguments():
  attr = np.zeros((8, 8), np.float32)
  with pytest.raises(ValueError, match="algorithm"):
    xrai_lib.xrai_regions(attr, np.ones((1, 8, 8), bool), algorithm="slow")
  with pytest.raises(ValueError, match="segments"):
    xrai_lib.xrai_regions(attr, np.ones((1, 8, 9), bool))
  with pytest.raises(ValueError, match="min_pixel_diff"):
    xrai_lib.xrai_regions(attr, np.ones((1, 8, 8), bool), min_pixel_diff=0)
  with pytest.raises(ValueError, match="base_attribution"):
    xrai_lib.xrai(lambda z: z.sum()[None], jnp.zeros((8, 8, 1)), 0,
                  base_attribution=np.zeros((8, 7)))
