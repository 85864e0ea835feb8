"""Metrics by name over batches of maps: what the experiments and notebooks score with.

The names are the registries' keys, :data:`localization.LOCALIZATION` and
:data:`similarity.SIMILARITY` (one registry, re-exported as
``saliency_jax.metrics.LOCALIZATION`` / ``SIMILARITY``). A localization
metric scores one map against one mask and a similarity metric one map
against another (DESIGN.md); here each is vmapped over every leading axis and
jitted once per (metric, rank), except the host-side ``hog_spearman``, which
runs map by map in NumPy.

A metric's options (``dice``'s threshold rule, ``pointing_game``'s tolerance,
``ssim``'s window, ``hog_spearman``'s cells) come per metric, ``{name:
{option: value}}`` (``config.metric_options``); the batched program is jitted
once per (metric, options, rank), so options are static and hashable.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from saliency_jax.metrics import localization
from saliency_jax.metrics import randomization
from saliency_jax.metrics import similarity

# Similarity metrics computed on the host (not jittable).
HOST_SIMILARITY = frozenset({"hog_spearman"})

NAME_ERROR = "{fn}: unknown metric {name!r}; expected one of {choices}"

# metric name -> {option: value}; a metric not named takes its defaults.
Options = Mapping[str, Mapping[str, Any]]
# One metric's options, hashable: sorted (option, value) pairs.
_Frozen = tuple[tuple[str, Any], ...]


def metric(name: str) -> Callable[..., Any]:
  """The localization, similarity or randomization metric ``name`` (the
  registries are disjoint)."""
  if name in localization.LOCALIZATION:
    return localization.LOCALIZATION[name]
  if name in randomization.RANDOMIZATION:
    return randomization.RANDOMIZATION[name]
  return similarity.SIMILARITY[name]


def option_defaults(name: str) -> dict[str, Any]:
  """``name``'s options and their defaults: its parameters after the two maps."""
  parameters = list(inspect.signature(metric(name)).parameters.values())[2:]
  return {p.name: p.default for p in parameters
          if p.default is not inspect.Parameter.empty}


def resolved_options(names: Sequence[str],
                     options: Options | None = None) -> dict[str, dict[str, Any]]:
  """Each metric of ``names`` -> every option it runs with, defaults included."""
  options = options or {}
  return {name: {**option_defaults(name), **_plain(options.get(name, {}))}
          for name in names}


def _plain(value: Any) -> Any:
  """Config values as plain Python: ConfigDicts as dicts, lists as tuples."""
  if hasattr(value, "items"):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def _frozen(options: Options | None, name: str) -> _Frozen:
  return tuple(sorted(_plain((options or {}).get(name, {})).items()))


def _check_names(fn: str, names: Sequence[str], registry: Mapping[str, Any]) -> None:
  if isinstance(names, str):
    raise ValueError(f"{fn}: names must be a sequence of metric names, got the "
                     f"string {names!r} (write [{names!r}])")
  for name in names:
    if name not in registry:
      raise ValueError(NAME_ERROR.format(fn=fn, name=name,
                                         choices=sorted(registry)))


def localization_scores(maps: jax.Array, masks: jax.Array, names: Sequence[str],
                        options: Options | None = None) -> dict[str, np.ndarray]:
  """Each metric of ``names`` for maps (..., N, H, W) against masks (N, H, W).

  Args:
    maps: saliency maps, any leading axes before the images'.
    masks: (N, H, W) ground truth, shared by the leading axes.
    names: metric names of :data:`localization.LOCALIZATION`.
    options: metric name -> its keyword options, e.g. ``{'dice':
      {'threshold': 'otsu'}}``; a metric not named (or None) takes its
      defaults (``dice`` thresholded at the mask's area). Others are ignored.

  Returns:
    metric name -> scores of shape ``maps.shape[:-2]``.
  """
  _check_names("localization_scores", names, localization.LOCALIZATION)
  # Two or more curve metrics share one sort per map (localization.curves).
  shared = [n for n in names if n in localization.CURVES]
  curves = (_batched_curves(np.ndim(maps))(maps, masks)
            if len(shared) > 1 else {})
  return {name: np.asarray(curves[name]) if name in curves else
          np.asarray(_batched_localization(
              name, _frozen(options, name), np.ndim(maps))(maps, masks))
          for name in names}


@functools.lru_cache(maxsize=None)
def _batched_curves(ndim: int):
  """:func:`localization.curves` vmapped as :func:`_batched_localization`."""
  per_image = jax.vmap(localization.curves)
  for _ in range(ndim - 3):
    per_image = jax.vmap(per_image, in_axes=(0, None))
  return jax.jit(per_image)


@functools.lru_cache(maxsize=None)
def _batched_localization(name: str, options: _Frozen, ndim: int):
  """One jitted program per (metric, options, rank): fresh jits would recompile."""
  per_image = jax.vmap(functools.partial(localization.LOCALIZATION[name],
                                         **dict(options)))
  for _ in range(ndim - 3):
    per_image = jax.vmap(per_image, in_axes=(0, None))
  return jax.jit(per_image)


@functools.lru_cache(maxsize=None)
def _batched_pair(kind: str, name: str, options: _Frozen, ndim: int):
  """A two-map metric (``kind``: 'similarity' or 'randomization') jitted and
  vmapped over the leading ``ndim - 2`` axes."""
  registry = (similarity.SIMILARITY if kind == "similarity"
              else randomization.RANDOMIZATION)
  batched = functools.partial(registry[name], **dict(options))
  for _ in range(ndim - 2):
    batched = jax.vmap(batched)
  return jax.jit(batched)


def similarity_scores(a: jax.Array, b: jax.Array, names: Sequence[str],
                      options: Options | None = None) -> dict[str, np.ndarray]:
  """Each similarity of ``names`` between maps a (..., H, W) and b (same shape).

  ``options``: metric name -> its keyword options (e.g. ``{'ssim':
  {'gaussian': True}}``), as in :func:`localization_scores`.

  Returns:
    metric name -> scores of shape ``a.shape[:-2]``, map by map.
  """
  _check_names("similarity_scores", names, similarity.SIMILARITY)
  if np.shape(a) != np.shape(b) or np.ndim(a) < 2:
    raise ValueError(f"similarity_scores: a and b must be maps (..., H, W) of "
                     f"one shape, got {np.shape(a)} and {np.shape(b)}")
  out = {}
  for name in names:
    frozen = _frozen(options, name)
    fn = functools.partial(similarity.SIMILARITY[name], **dict(frozen))
    if name in HOST_SIMILARITY:
      a_np, b_np = np.asarray(a), np.asarray(b)
      flat = [fn(x, y) for x, y in zip(a_np.reshape(-1, *a_np.shape[-2:]),
                                       b_np.reshape(-1, *b_np.shape[-2:]))]
      out[name] = np.asarray(flat, np.float64).reshape(a_np.shape[:-2])
      continue
    out[name] = np.asarray(_batched_pair("similarity", name, frozen, np.ndim(a))(a, b))
  return out


def randomization_scores(reference: jax.Array, compared: jax.Array,
                         names: Sequence[str],
                         options: Options | None = None) -> dict[str, np.ndarray]:
  """Each randomization metric of ``names`` (:data:`randomization.RANDOMIZATION`,
  e.g. ``emprt``) of maps ``compared`` (..., H, W) against ``reference``
  (the trained model's maps, same shape), map by map.

  Returns:
    metric name -> scores of shape ``reference.shape[:-2]``.
  """
  _check_names("randomization_scores", names, randomization.RANDOMIZATION)
  if np.shape(reference) != np.shape(compared) or np.ndim(reference) < 2:
    raise ValueError(f"randomization_scores: maps must have one shape (..., H, W), "
                     f"got {np.shape(reference)} and {np.shape(compared)}")
  return {name: np.asarray(_batched_pair(
      "randomization", name, _frozen(options, name), np.ndim(reference))(reference, compared))
          for name in names}
