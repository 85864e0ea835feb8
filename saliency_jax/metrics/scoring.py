"""Metrics by name over batches of maps: what the experiments and notebooks score with.

The names are the registries' keys, :data:`localization.LOCALIZATION` and
:data:`similarity.SIMILARITY` (one registry, re-exported as
``saliency_jax.metrics.LOCALIZATION`` / ``SIMILARITY``). A localization
metric scores one map against one mask and a similarity metric one map
against another (DESIGN.md); here each is vmapped over every leading axis and
jitted once per (metric, rank), except the host-side ``hog_spearman``, which
runs map by map in NumPy.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from saliency_jax.metrics import localization
from saliency_jax.metrics import similarity

# Similarity metrics computed on the host (not jittable).
HOST_SIMILARITY = frozenset({"hog_spearman"})

NAME_ERROR = "{fn}: unknown metric {name!r}; expected one of {choices}"


def _check_names(fn: str, names: Sequence[str], registry: Mapping[str, Any]) -> None:
  if isinstance(names, str):
    raise ValueError(f"{fn}: names must be a sequence of metric names, got the "
                     f"string {names!r} (write [{names!r}])")
  for name in names:
    if name not in registry:
      raise ValueError(NAME_ERROR.format(fn=fn, name=name,
                                         choices=sorted(registry)))


def localization_scores(maps: jax.Array, masks: jax.Array,
                        names: Sequence[str]) -> dict[str, np.ndarray]:
  """Each metric of ``names`` for maps (..., N, H, W) against masks (N, H, W).

  Every metric with its default options (e.g. ``dice`` thresholded at the
  mask's area); for other options vmap the metric itself, e.g.
  ``jax.vmap(functools.partial(localization.dice, threshold='otsu'))``.

  Returns:
    metric name -> scores of shape ``maps.shape[:-2]``.
  """
  _check_names("localization_scores", names, localization.LOCALIZATION)
  return {name: np.asarray(_batched_localization(name, np.ndim(maps))(maps, masks))
          for name in names}


@functools.lru_cache(maxsize=None)
def _batched_localization(name: str, ndim: int):
  """One jitted program per (metric, rank): fresh jits would recompile."""
  per_image = jax.vmap(localization.LOCALIZATION[name])
  for _ in range(ndim - 3):
    per_image = jax.vmap(per_image, in_axes=(0, None))
  return jax.jit(per_image)


@functools.lru_cache(maxsize=None)
def _batched_similarity(name: str, ndim: int):
  batched = similarity.SIMILARITY[name]
  for _ in range(ndim - 2):
    batched = jax.vmap(batched)
  return jax.jit(batched)


def similarity_scores(a: jax.Array, b: jax.Array,
                      names: Sequence[str]) -> dict[str, np.ndarray]:
  """Each similarity of ``names`` between maps a (..., H, W) and b (same shape).

  Returns:
    metric name -> scores of shape ``a.shape[:-2]``, map by map.
  """
  _check_names("similarity_scores", names, similarity.SIMILARITY)
  if np.shape(a) != np.shape(b) or np.ndim(a) < 2:
    raise ValueError(f"similarity_scores: a and b must be maps (..., H, W) of "
                     f"one shape, got {np.shape(a)} and {np.shape(b)}")
  out = {}
  for name in names:
    fn = similarity.SIMILARITY[name]
    if name in HOST_SIMILARITY:
      a_np, b_np = np.asarray(a), np.asarray(b)
      flat = [fn(x, y) for x, y in zip(a_np.reshape(-1, *a_np.shape[-2:]),
                                       b_np.reshape(-1, *b_np.shape[-2:]))]
      out[name] = np.asarray(flat, np.float64).reshape(a_np.shape[:-2])
      continue
    out[name] = np.asarray(_batched_similarity(name, np.ndim(a))(a, b))
  return out
