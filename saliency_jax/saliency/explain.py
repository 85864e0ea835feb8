"""``explain``: one saliency method over a batch of images, as one program."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.saliency import batching
from saliency_jax.saliency.explainee import Explainee, as_explainee


def explain(explainee: Any, images: jax.Array, targets: Any = None, *,
            method: str | Callable, key: jax.Array | None = None,
            batch_size: int | None = None, strategy: str | None = None,
            per_image: dict[str, Any] | None = None,
            **hparams: Any) -> jax.Array:
  r"""Saliency maps of ``images`` under ``method``, one target per image.

  .. math::
    M_n = \mathrm{method}(f, x_n, t_n;\ k_n), \qquad
    t_n = \arg\max_k f_k(x_n) \text{ by default}

  with :math:`k_n` = ``jax.random.split(key, N)[n]``. Images go through
  :func:`batching.sample_map` with the method's own evaluation count, so that
  ``batch_size`` bounds the model evaluations at once over images and noise
  samples / path steps / windows together. One program is compiled per
  (method, hyper-parameters, shapes); a new state of the same shapes (a
  cascade stage, a seed) reuses it.

  Args:
    explainee: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    images: (N, H, W, C).
    targets: (N,) class indices; ``None``: the predicted classes (argmax of
      the logits), as Arun et al. and Adebayo et al. explain.
    method: a name in ``METHODS`` (or a method function).
    key: ``jax.random`` key, split over images; required by random methods.
    batch_size: model evaluations at once; ``None``: the backend default
      when ``strategy`` is ``None``, else all at once.
    strategy: ``'vectorized'``, ``'scan'``, ``'dispatch'`` or ``None`` for
      the backend default (:data:`batching.DEFAULT_STRATEGY`).
    per_image: hyper-parameters that differ per image, each an array with a
      leading axis N (e.g. XRAI's precomputed ``segments``, computed once per
      image and reused across models, seeds and cascade stages).
    **hparams: the method's hyper-parameters (arrays are traced).

  Returns:
    Raw attributions (N, H, W, C) (XRAI: (N, H, W, 1)).
  """
  fn = _resolve(method)
  if np.ndim(images) != 4:
    raise ValueError(f"explain: images must be a batch (N, H, W, C), got "
                     f"shape {np.shape(images)}")
  images = jnp.asarray(images)
  e = as_explainee(explainee)
  strategy, batch_size = batching.resolve(strategy, batch_size)
  if targets is None:
    logits = batching.sample_map(_logits, e, images, batch_size=batch_size,
                                 strategy=strategy)
    targets = jnp.argmax(logits, axis=-1)
  else:
    targets = _check_targets(e, images, targets)
  keys = None if key is None else jax.random.split(key, images.shape[0])
  per_image = {k: jnp.asarray(v) for k, v in (per_image or {}).items()}
  for name, value in per_image.items():
    if value.shape[:1] != images.shape[:1]:
      raise ValueError(f"explain: per_image[{name!r}] must have a leading axis "
                       f"of {images.shape[0]} images, got shape {value.shape}")
  static, arrays = batching.split_hparams(hparams)
  return batching.sample_map(
      _explain_one, (e, arrays), (images, targets, keys, per_image),
      batch_size=batch_size, strategy=strategy,
      inner=batching.evaluations(fn, images.shape[1:], hparams),
      static=(("method", fn), ("hparams", static), ("batch_size", batch_size),
              ("strategy", strategy)))


def _resolve(method: str | Callable) -> Callable:
  from saliency_jax.saliency import METHODS  # pylint: disable=g-import-not-at-top
  if isinstance(method, str):
    if method not in METHODS:
      raise ValueError(f"explain: unknown method {method!r}; expected one of "
                       f"{sorted(METHODS)}")
    return METHODS[method]
  if not callable(method):
    raise ValueError(f"explain: method must be a name in METHODS or a "
                     f"function, got {type(method).__name__}")
  return method


def _logits(explainee: Explainee, x: jax.Array) -> jax.Array:
  return explainee.logits(x)


def _explain_one(operands, sample, *, method, hparams, batch_size, strategy):
  explainee, arrays = operands
  x, target, key, per_image = sample
  return method(explainee, x, target, key=key, batch_size=batch_size,
                strategy=strategy, **dict(hparams), **arrays, **per_image)


def _check_targets(e: Explainee, images: jax.Array, targets: Any) -> jax.Array:
  targets = jnp.asarray(targets)
  n = images.shape[0]
  if targets.shape != (n,) or not jnp.issubdtype(targets.dtype, jnp.integer):
    raise ValueError(f"explain: targets must be {n} integer class indices "
                     f"(N,), got {targets.dtype} of shape {targets.shape}")
  leaves, treedef = jax.tree.flatten(e)
  k = _num_classes(treedef, tuple((jnp.shape(l), jnp.result_type(l))
                                  for l in leaves),
                   images.shape[1:], images.dtype)
  if n and not (0 <= int(jnp.min(targets)) and int(jnp.max(targets)) < k):
    raise ValueError(f"explain: targets must lie in [0, {k}) for a model "
                     f"with {k} outputs, got min {int(jnp.min(targets))}, "
                     f"max {int(jnp.max(targets))}")
  return targets


@functools.lru_cache(maxsize=64)
def _num_classes(treedef, leaf_types, image_shape, image_dtype) -> int:
  # Cached: tracing a large model to learn K must not happen every call.
  e = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d)
                                   for s, d in leaf_types])
  x = jax.ShapeDtypeStruct(image_shape, image_dtype)
  return jax.eval_shape(_logits, e, x).shape[-1]
