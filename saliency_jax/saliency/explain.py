"""``explain``: one saliency method over a batch of images, as one program;
``explain_states``: the same over a stack of model states (cascade stages,
seeds)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import randomization
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
      the logits), as Arun et al. and Adebayo et al. explain. May be traced
      (``explain`` inside ``jax.jit`` / ``jax.vmap``): shape and dtype are
      checked always, the range [0, K) only when the values are known.
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


def explain_states(explainee: Any, states: Any, images: jax.Array,
                   targets: Any, *, method: str | Callable,
                   key: jax.Array | None = None,
                   batch_size: int | None = None, strategy: str | None = None,
                   per_image: dict[str, Any] | None = None,
                   **hparams: Any) -> jax.Array:
  r"""Saliency maps of ``images`` under each of S stacked model states.

  .. math::
    M_{s,n} = \mathrm{method}(f_{\theta_s}, x_n, t_{s,n};\ k_n),
    \qquad s = 1..S

  i.e. ``explain(explainee.with_state(unstack(states, s)), images,
  targets[s], ...)`` for every s, with :math:`k_n` from one ``key`` for every
  state (the same noise at every stage, so that maps differ only by the
  model, as the cascade compares them). ``'vectorized'`` vmaps ``explain``
  over the state axis and ``'scan'`` maps it with ``lax.map``: either way all
  S states run as one program, compiled once per (method, hyper-parameters,
  shapes).
  ``'vectorized'`` runs the S states side by side, so up to
  S x ``batch_size`` evaluations at once; ``'scan'`` runs them in turn.
  ``'dispatch'`` (the CPU default) issues jitted chunks from Python, which
  cannot be traced as a vmap over states: there the states are explained one
  by one from Python, every state reusing the same compiled chunk programs
  (inside a caller's trace it runs as ``'scan'``).

  Args:
    explainee: an :class:`Explainee` or NNX model; its state gives the
      structure and per-state shapes of ``states``.
    states: the explainee's state pytree, every leaf stacked on a leading
      axis S (e.g. ``randomization.stages``'s cascade stages).
    images: (N, H, W, C).
    targets: (N,) class indices shared by every state, (S, N) one row per
      state, or ``None``: each state's own predicted classes.
    method, key, batch_size, strategy, per_image, **hparams: as
      :func:`explain`.

  Returns:
    Raw attributions (S, N, H, W, C) (XRAI: (S, N, H, W, 1)).
  """
  e = as_explainee(explainee)
  if e.graphdef is None:
    raise ValueError("explain_states: needs a model explainee (an NNX model "
                     "or explainee.from_model); a plain logits_fn has no "
                     "state to replace")
  num_states = _check_states(e.state, states)
  fn = _resolve(method)
  strategy, batch_size = batching.resolve(strategy, batch_size)
  if np.ndim(images) != 4:
    raise ValueError(f"explain_states: images must be a batch (N, H, W, C), "
                     f"got shape {np.shape(images)}")
  images = jnp.asarray(images)
  if targets is not None:
    targets = _check_targets(e, images, targets, where="explain_states",
                             states=num_states)
    targets = jnp.broadcast_to(targets, (num_states, images.shape[0]))
  if strategy == "dispatch" and not any(
      isinstance(leaf, jax.core.Tracer)
      for leaf in jax.tree.leaves((states, images, targets))):
    return jnp.stack([
        explain(e.with_state(randomization.unstack(states, s)), images,
                None if targets is None else targets[s], method=fn, key=key,
                batch_size=batch_size, strategy=strategy, per_image=per_image,
                **hparams) for s in range(num_states)])
  static, arrays = batching.split_hparams(hparams)
  return _states_program(
      e.with_state(None), states, images, targets, key, per_image or {},
      arrays, method=fn, hparams=static, batch_size=batch_size,
      strategy="scan" if strategy == "dispatch" else strategy)


@functools.partial(jax.jit, static_argnames=("method", "hparams",
                                             "batch_size", "strategy"))
def _states_program(e, states, images, targets, key, per_image, arrays, *,
                    method, hparams, batch_size, strategy):
  """``explain`` vmapped (vectorized) or ``lax.map``-ped (scan) over states."""

  def one(state_and_targets):
    state, t = state_and_targets
    return explain(e.with_state(state), images, t, method=method, key=key,
                   batch_size=batch_size, strategy=strategy,
                   per_image=per_image, **dict(hparams), **arrays)

  if strategy == "vectorized":
    return jax.vmap(one)((states, targets))
  return jax.lax.map(one, (states, targets))


def _check_states(state: Any, states: Any) -> int:
  """S, after checking ``states`` is ``state``'s pytree stacked on axis 0."""
  ours, theirs = jax.tree.leaves(state), jax.tree.leaves(states)
  if jax.tree.structure(states) != jax.tree.structure(state):
    raise ValueError("explain_states: states must be the explainee's state "
                     f"pytree ({len(ours)} leaves) with every leaf stacked on "
                     f"a leading axis S, got another pytree ({len(theirs)} "
                     "leaves)")
  sizes = sorted({jnp.shape(leaf)[0] if jnp.ndim(leaf) else 0
                  for leaf in theirs})
  if len(sizes) != 1 or sizes[0] < 1 or any(
      jnp.shape(s) != (sizes[0],) + jnp.shape(l) for s, l in zip(theirs, ours)):
    raise ValueError("explain_states: every leaf of states must be the "
                     "explainee's leaf stacked on one leading axis S >= 1, "
                     f"got leading sizes {sizes}")
  return sizes[0]


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


def _check_targets(e: Explainee, images: jax.Array, targets: Any, *,
                   where: str = "explain",
                   states: int | None = None) -> jax.Array:
  """Integer class indices (N,) (or (S, N) for ``states`` = S) in [0, K).

  Shape and dtype are checked always; the range only for concrete values: a
  traced ``targets`` (inside ``jit`` / ``vmap``) has none to read.
  """
  targets = jnp.asarray(targets)
  n = images.shape[0]
  shapes = [(n,)] if states is None else [(n,), (states, n)]
  if (targets.shape not in shapes
      or not jnp.issubdtype(targets.dtype, jnp.integer)):
    rows = "" if states is None else f" or one row per state ({states}, {n})"
    raise ValueError(f"{where}: targets must be {n} integer class indices "
                     f"(N,){rows}, got {targets.dtype} of shape "
                     f"{targets.shape}")
  if isinstance(targets, jax.core.Tracer) or not targets.size:
    return targets
  leaves, treedef = jax.tree.flatten(e)
  k = _num_classes(treedef, tuple((jnp.shape(l), jnp.result_type(l))
                                  for l in leaves),
                   images.shape[1:], images.dtype)
  low, high = int(jnp.min(targets)), int(jnp.max(targets))
  if not (0 <= low and high < k):
    raise ValueError(f"{where}: targets must lie in [0, {k}) for a model "
                     f"with {k} outputs, got min {low}, max {high}")
  return targets


@functools.lru_cache(maxsize=64)
def _num_classes(treedef, leaf_types, image_shape, image_dtype) -> int:
  # Cached: tracing a large model to learn K must not happen every call.
  e = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d)
                                   for s, d in leaf_types])
  x = jax.ShapeDtypeStruct(image_shape, image_dtype)
  return jax.eval_shape(_logits, e, x).shape[-1]
