"""``explain``: one saliency method over a batch of images, as one program;
``explain_states``: the same over a stack of model states (cascade stages,
seeds)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from saliency_jax import memory
from saliency_jax import randomization
from saliency_jax.saliency import _checks, batching
from saliency_jax.saliency.explainee import Explainee, as_explainee


def explain(explainee: Any, images: jax.Array, targets: Any = None, *,
            method: str | Callable, key: jax.Array | None = None,
            batch_size: int | str | None = None, strategy: str | None = None,
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
    batch_size: model evaluations at once; ``'auto'``: the most that fit
      the device's memory (:func:`auto_batch_size`); ``None``: the backend
      default when ``strategy`` is ``None``, else all at once.
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
  _checks.images("explain", images)
  images = jnp.asarray(images)
  e = as_explainee(explainee)
  strategy, batch_size = batching.resolve(strategy, batch_size, keep_auto=True)
  if batch_size == batching.AUTO:
    strategy, batch_size = auto_batch_size(
        e, images, method=fn, key=key, strategy=strategy, per_image=per_image,
        **hparams)
  keys = None if key is None else jax.random.split(key, images.shape[0])
  return _explain_keyed(e, images, targets, keys, per_image or {}, hparams,
                        method=fn, batch_size=batch_size, strategy=strategy)


def _explain_keyed(e: Explainee, images: jax.Array, targets: Any,
                   keys: jax.Array | None, per_image: dict[str, Any],
                   hparams: dict[str, Any], *, method: Callable,
                   batch_size: int | None, strategy: str) -> jax.Array:
  """``explain`` with one key per image given (a shard of the images keeps
  the keys the whole batch would give them)."""
  if targets is None:
    logits = batching.sample_map(_logits, e, images, batch_size=batch_size,
                                 strategy=strategy)
    targets = jnp.argmax(logits, axis=-1)
  else:
    targets = _check_targets(e, images, targets)
  per_image = {k: jnp.asarray(v) for k, v in per_image.items()}
  for name, value in per_image.items():
    if value.shape[:1] != images.shape[:1]:
      raise ValueError(f"explain: per_image[{name!r}] must have a leading axis "
                       f"of {images.shape[0]} images, got shape {value.shape}")
  static, arrays = batching.split_hparams(hparams)
  return batching.sample_map(
      _explain_one, (e, arrays), (images, targets, keys, per_image),
      batch_size=batch_size, strategy=strategy,
      inner=batching.evaluations(method, images.shape[1:], hparams),
      static=(("method", method), ("hparams", static), ("batch_size", batch_size),
              ("strategy", strategy)))


def explain_states(explainee: Any, states: Any, images: jax.Array,
                   targets: Any, *, method: str | Callable,
                   key: jax.Array | None = None,
                   batch_size: int | str | None = None, strategy: str | None = None,
                   per_image: dict[str, Any] | None = None,
                   mesh: jax.sharding.Mesh | None = None,
                   shard_over: str = "images",
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
    mesh: a one-axis mesh (``saliency_jax.devices.mesh()``); with more than
      one device, ``shard_over`` ``'images'`` splits the images over its
      devices (the states on every device), ``'states'`` the states (the
      images on every device), ``'samples'`` each map's noise samples /
      path steps (for few images and many samples). Each device runs the one-device program on
      its shard, with ``'dispatch'`` as ``'scan'``; the maps equal one
      device's. In a multi-process run the mesh spans every process's
      devices and each process gets the whole result.

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
  strategy, batch_size = batching.resolve(strategy, batch_size, keep_auto=True)
  _checks.images("explain_states", images)
  images = jnp.asarray(images)
  sharded = mesh is not None and mesh.size > 1
  if batch_size == batching.AUTO and not sharded:
    strategy, batch_size = auto_batch_size(
        e, images, states=states, method=fn, key=key, strategy=strategy,
        per_image=per_image, **hparams)
  if targets is not None:
    targets = _check_targets(e, images, targets, where="explain_states",
                             states=num_states)
    targets = jnp.broadcast_to(targets, (num_states, images.shape[0]))
  if sharded and shard_over == "samples":
    from saliency_jax import devices  # pylint: disable=g-import-not-at-top
    static, arrays = batching.split_hparams(hparams)
    keys = None if key is None else jax.random.split(key, images.shape[0])
    args = (states, images, targets, keys, per_image or {}, arrays)
    if jax.process_count() > 1:  # every process's devices, the same values
      args = devices.place(args, mesh, P())
    return devices.gather(_states_program(
        e.with_state(None), *args, method=fn, hparams=static, batch_size=batch_size,
        strategy="scan" if strategy == "dispatch" else strategy, sample_mesh=mesh))
  if sharded:
    return _sharded_states(e, states, images, targets, key, per_image or {},
                           hparams, mesh=mesh, over=shard_over, method=fn,
                           batch_size=batch_size, strategy=strategy)
  if strategy == "dispatch" and not any(
      isinstance(leaf, jax.core.Tracer)
      for leaf in jax.tree.leaves((states, images, targets))):
    return jnp.stack([
        explain(e.with_state(randomization.unstack(states, s)), images,
                None if targets is None else targets[s], method=fn, key=key,
                batch_size=batch_size, strategy=strategy, per_image=per_image,
                **hparams) for s in range(num_states)])
  static, arrays = batching.split_hparams(hparams)
  keys = None if key is None else jax.random.split(key, images.shape[0])
  return _states_program(
      e.with_state(None), states, images, targets, keys, per_image or {},
      arrays, method=fn, hparams=static, batch_size=batch_size,
      strategy="scan" if strategy == "dispatch" else strategy)


SHARD_OVER = ("images", "states", "samples")


def _sharded_states(e, states, images, targets, key, per_image, hparams, *,
                    mesh, over, method, batch_size, strategy):
  """``explain_states`` with images (or states) split over ``mesh``'s devices.

  Each device explains its shard with the program one device would run on
  it (``shard_map``), every image with the key the whole batch gives it, so
  the maps equal the single-device maps. Shards are made whole by repeating
  the last image (state); the repeats are cut from the result.
  """
  if over not in SHARD_OVER:
    raise ValueError(f"explain_states: shard_over must be one of {SHARD_OVER}, "
                     f"got {over!r}")
  from saliency_jax import devices  # pylint: disable=g-import-not-at-top
  axis, d = mesh.axis_names[0], mesh.size
  num_states, n = jax.tree.leaves(states)[0].shape[0], images.shape[0]
  keys = None if key is None else jax.random.split(key, n)
  static, arrays = batching.split_hparams(hparams)
  by_image = {"images": images, "targets": targets, "keys": keys,
              "per_image": {k: jnp.asarray(v) for k, v in per_image.items()}}
  if over == "images":
    pad = devices.pad_to(n, d)
    by_image = {"images": images[pad], "keys": None if keys is None else keys[pad],
                "per_image": jax.tree.map(lambda v: v[pad], by_image["per_image"]),
                "targets": None if targets is None else targets[:, pad]}
    sharded = {"images": P(axis), "keys": P(axis), "per_image": P(axis),
               "targets": P(None, axis)}
    placed_states = devices.place(states, mesh, P())
    states_spec, out_spec = P(), P(None, axis)
  else:
    pad = devices.pad_to(num_states, d)
    states = jax.tree.map(lambda leaf: leaf[pad], states)
    by_image["targets"] = None if targets is None else targets[pad]
    sharded = {"images": P(), "keys": P(), "per_image": P(), "targets": P(axis)}
    placed_states = devices.place(states, mesh, P(axis))
    states_spec, out_spec = P(axis), P(axis)
  placed = {k: None if v is None else devices.place(v, mesh, sharded[k])
            for k, v in by_image.items()}
  placed_arrays = devices.place(arrays, mesh, P())
  local = (n if over == "states" else len(pad) // d, images.shape[1:])
  if batch_size == batching.AUTO:  # chosen for one device's shard
    strategy, batch_size = auto_batch_size(
        e, jax.ShapeDtypeStruct((local[0],) + local[1], images.dtype),
        states=jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
            (leaf.shape[0] // (d if over == "states" else 1),) + leaf.shape[1:],
            leaf.dtype), states),
        method=method, key=key, strategy=strategy,
        per_image=jax.tree.map(lambda v: jax.ShapeDtypeStruct(
            (local[0],) + v.shape[1:], v.dtype), by_image["per_image"]), **hparams)
  program = _sharded_program(
      e.with_state(None), mesh=mesh, specs=(states_spec, sharded["images"],
                                            sharded["targets"], sharded["keys"],
                                            sharded["per_image"]),
      out_spec=out_spec, method=method, hparams=static, batch_size=batch_size,
      strategy="scan" if strategy == "dispatch" else strategy)
  out = program(placed_states, placed["images"], placed["targets"], placed["keys"],
                placed["per_image"], placed_arrays)
  out = devices.gather(out)
  return out[:, :n] if over == "images" else out[:num_states]


@functools.lru_cache(maxsize=64)
def _sharded_program(shell, *, mesh, specs, out_spec, method, hparams,
                     batch_size, strategy):
  """The jitted ``shard_map`` of :func:`_states_program` (one per shapes)."""
  axis = mesh.axis_names[0]

  in_specs = (*specs, P())

  def body(*args):
    # Replicated inputs become device-varying first: otherwise the gradient
    # with respect to a replicated image would be summed over the devices.
    args = [jax.tree.map(lambda x: jax.lax.pcast(x, axis, to="varying"), arg)
            if spec == P() else arg for arg, spec in zip(args, in_specs)]
    return _states_program(shell, *args, method=method, hparams=hparams,
                           batch_size=batch_size, strategy=strategy)

  return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=in_specs,
                               out_specs=out_spec))


def auto_batch_size(explainee: Any, images: jax.Array, *,
                    method: str | Callable, states: Any = None,
                    key: jax.Array | None = None, strategy: str | None = None,
                    per_image: dict[str, Any] | None = None,
                    budget: int | None = None,
                    **hparams: Any) -> tuple[str, int | None]:
  r"""The (strategy, batch_size) that runs ``explain`` (or ``explain_states``
  over ``states``) in the most evaluations at once that fit the device.

  .. math::
    b^\star = \max\{\, b \le E : \mathrm{need}(\mathrm{program}_b) \le
    \mathrm{budget} \,\}, \qquad E = N \times \text{evaluations per map}

  read from the compiled programs' memory (:func:`memory.largest_fitting`):
  every evaluation at once when that fits, else the largest power of two that
  does. Compiled from the shapes alone (nothing runs); ``images``, ``key``,
  ``per_image`` and the states may be arrays or ``jax.ShapeDtypeStruct``.
  A chunked run does not unroll its chunks (``'vectorized'`` would compile
  ``E / b`` copies of the network): it becomes ``'scan'``, one compiled chunk
  in a loop; over states, ``'vectorized'`` runs the S states side by side
  when all of them fit at once, else one after another (``'scan'``).
  ``'dispatch'`` keeps its strategy, its chunks measured as ``'scan'``'s.

  Args:
    explainee, images, method, key, strategy, per_image, **hparams: as
      :func:`explain`.
    states: the stacked states of :func:`explain_states`, or ``None``.
    budget: bytes the program may use; ``None``: :func:`memory.budget`.

  Returns:
    (strategy, batch_size) for ``explain`` / ``explain_states``; batch size
    ``None`` when every evaluation fits at once.

  Raises:
    memory.DoesNotFitError: one evaluation at a time does not fit.
  """
  e = as_explainee(explainee)
  fn = _resolve(method)
  strategy, _ = batching.resolve(strategy, None)
  n = jnp.shape(images)[0]
  total = n * batching.evaluations(fn, tuple(jnp.shape(images)[1:]), hparams)
  static, arrays = batching.split_hparams(hparams)
  keys = None if key is None else jax.eval_shape(
      lambda k: jax.random.split(k, n), key)
  shapes = _abstract((e.with_state(None), states if states is not None else e.state,
                      images, key if states is None else keys, per_image or {},
                      arrays))
  targets = jax.ShapeDtypeStruct(
      (n,) if states is None else (jax.tree.leaves(states)[0].shape[0], n), jnp.int32)
  budget = memory.budget() if budget is None else budget
  leaves, treedef = jax.tree.flatten(shapes)
  cache_key = (fn, static, treedef, tuple((l.shape, l.dtype) for l in leaves),
               targets.shape, strategy, budget)
  if cache_key in _AUTO_CACHE:
    return _AUTO_CACHE[cache_key]

  def run_as(size: int) -> str:
    if strategy == "dispatch" or (strategy == "vectorized" and size < total):
      return "scan"
    return strategy

  def compile_at(size: int):
    batch = None if size >= total else size
    shell, state, x, k, p, a = shapes
    if states is None:
      program = jax.jit(functools.partial(
          _explain_shapes, method=fn, hparams=static, batch_size=batch,
          strategy=run_as(size)))
      return program.lower(shell, state, x, targets, k, p, a).compile()
    return _states_program.lower(shell, state, x, targets, k, p, a, method=fn,
                                 hparams=static, batch_size=batch,
                                 strategy=run_as(size)).compile()

  name = getattr(fn, "__name__", str(fn))
  size, _ = memory.largest_fitting(
      compile_at, total, budget,
      what=f"{name} on {n} images" + ("" if states is None else
                                      f" x {targets.shape[0]} states"))
  chosen = ("dispatch" if strategy == "dispatch" else run_as(size),
            None if size >= total else size)
  _AUTO_CACHE[cache_key] = chosen
  return chosen


_AUTO_CACHE: dict[Any, tuple[str, int | None]] = {}


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                      tree)


def _explain_shapes(shell, state, images, targets, key, per_image, arrays, *,
                    method, hparams, batch_size, strategy):
  """``explain`` as one traceable function of its arrays (for compiling)."""
  return explain(shell.with_state(state), images, targets, method=method, key=key,
                 batch_size=batch_size, strategy=strategy, per_image=per_image,
                 **dict(hparams), **arrays)


@functools.partial(jax.jit, static_argnames=("method", "hparams", "batch_size",
                                             "strategy", "sample_mesh"))
def _states_program(e, states, images, targets, keys, per_image, arrays, *,
                    method, hparams, batch_size, strategy, sample_mesh=None):
  """``explain`` vmapped (vectorized) or ``lax.map``-ped (scan) over states;
  with ``sample_mesh``, every map's noise samples / path steps / windows
  split over its devices (:func:`batching.samples_over`)."""

  def one(state_and_targets):
    state, t = state_and_targets
    with batching.samples_over(sample_mesh):
      return _explain_keyed(e.with_state(state), images, t, keys, per_image,
                            {**dict(hparams), **arrays}, method=method,
                            batch_size=batch_size, strategy=strategy)

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
