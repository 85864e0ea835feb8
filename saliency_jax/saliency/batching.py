"""Chunked sums and maps over a sample axis: the one place batching lives.

Every model evaluation a method makes (a noise sample, a path step, an
occlusion window, an image in :func:`~saliency_jax.saliency.explain`) is
``fn(operands, sample, **static)`` for one ``sample`` along the leading axis of
``samples``. :func:`sample_sum` adds the results up and :func:`sample_map`
stacks them, running at most ``batch_size`` model evaluations at once:

- ``vectorized``: chunks are ``vmap``-ped and unrolled in one XLA program
  (one chunk when ``batch_size`` is ``None``); for GPU/TPU, few chunks;
- ``scan``: chunks run through ``lax.scan`` / ``lax.map`` in one program
  (one compiled body, memory held to one chunk, any number of chunks);
- ``dispatch``: one jitted call per chunk issued from Python; JAX dispatches
  asynchronously and the sum accumulates on device, without a host sync.
  Inside a trace (a method jitted or vmapped by its caller) it runs as
  ``scan``.

``fn`` must be a module-level function and ``static`` a hashable tuple of
``(name, value)`` pairs: both key the jit caches, so a call with new operands
of the same shapes (new images, another model state) never retraces.
Samples beyond the last full chunk are padded with repeats of the last one
and masked out of the sum, so every chunk has one shape (one compile).

Nesting (SmoothGrad over IG) shares the budget: a sample that itself makes
``inner`` evaluations in chunks of ``min(batch_size, inner)`` is run
``batch_size // min(batch_size, inner)`` at a time. Methods declare their
count with :func:`cost`; :func:`evaluations` reads it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

STRATEGIES = ("vectorized", "scan", "dispatch")
AUTO = "auto"

# (strategy, batch_size) per backend, used when the caller passes no strategy.
# CPU: XLA's batched and in-loop convolution gradients cost ~1.8x per image
# what batch-1 calls dispatched from Python cost (measured), so dispatch one
# evaluation per call. GPU/TPU: one vectorized program when it fits the
# device's memory, else the largest chunk that fits ('auto', resolved by
# ``explain`` from the compiled program's memory; not measured on a GPU yet).
# The benchmark (saliency_jax/configs/benchmark.py) is where these get re-measured and set.
DEFAULT_STRATEGY: dict[str, tuple[str, int | str | None]] = {
    "cpu": ("dispatch", 1),
    "gpu": ("vectorized", AUTO),
    "tpu": ("vectorized", AUTO),
}

STRATEGY_ERROR = "strategy: expected one of {choices} or None, got {value!r}"
BATCH_SIZE_ERROR = ("batch_size: expected a positive int, 'auto' or None, got "
                    "{value!r}")

Static = tuple[tuple[str, Any], ...]


def resolve(strategy: str | None, batch_size: int | str | None, *,
            keep_auto: bool = False) -> tuple[str, int | str | None]:
  """The (strategy, batch_size) to run with.

  ``strategy=None`` takes this backend's :data:`DEFAULT_STRATEGY`, whose batch
  size applies unless ``batch_size`` is given. With an explicit strategy,
  ``batch_size=None`` means every evaluation at once. ``'auto'`` (the largest
  batch that fits the device, chosen over a batch of images by
  :func:`~saliency_jax.saliency.explain.auto_batch_size`) is kept when
  ``keep_auto``; a method called on one image runs its evaluations at once.
  """
  if batch_size is not None and batch_size != AUTO and (
      isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
      or batch_size < 1):
    raise ValueError(BATCH_SIZE_ERROR.format(value=batch_size))
  if strategy is None:
    strategy, default_size = DEFAULT_STRATEGY.get(jax.default_backend(),
                                                  ("vectorized", AUTO))
    batch_size = default_size if batch_size is None else batch_size
  elif strategy not in STRATEGIES:
    raise ValueError(STRATEGY_ERROR.format(choices=STRATEGIES, value=strategy))
  if batch_size == AUTO:
    return strategy, AUTO if keep_auto else None
  return strategy, None if batch_size is None else int(batch_size)


def cost(count: Callable[..., int]) -> Callable[[Callable], Callable]:
  """Declares ``count(x_shape, **hparams)``: model evaluations per call.

  ``count`` receives every keyword hyper-parameter, the method's defaults
  filled in, so that defaults are written once, in the method's signature.
  """

  def declare(method: Callable) -> Callable:
    defaults = {
        name: p.default
        for name, p in inspect.signature(method).parameters.items()
        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty
        and name not in ("key", "batch_size", "strategy")}
    method.evaluations = lambda x_shape, **hparams: count(
        x_shape, **{**defaults, **hparams})
    return method

  return declare


def evaluations(method: Callable, x_shape: tuple[int, ...],
                hparams: dict[str, Any]) -> int:
  """Model evaluations one call of ``method`` makes (1 when undeclared)."""
  count = getattr(method, "evaluations", None)
  return 1 if count is None else max(1, int(count(tuple(x_shape), **hparams)))


def split_hparams(hparams: dict[str, Any]) -> tuple[Static, dict[str, Any]]:
  """Splits hyper-parameters into static ``(name, value)`` pairs and arrays.

  Arrays are traced (a new baseline or prior never recompiles); the rest keys
  the compile cache and so must be hashable.
  """
  static, arrays = [], {}
  for name, value in sorted(hparams.items()):
    if isinstance(value, (jax.Array, np.ndarray)):
      arrays[name] = value
      continue
    try:
      hash(value)
    except TypeError:
      raise ValueError(f"{name}: expected an array or a hashable value "
                       f"(number, string, tuple, function), got "
                       f"{type(value).__name__}") from None
    static.append((name, value))
  return tuple(static), arrays


def chunk_size(n: int, batch_size: int | None, inner: int = 1) -> int:
  """Samples per chunk: n samples, each making ``inner`` evaluations in
  chunks of ``min(batch_size, inner)``, at most ``batch_size`` at once."""
  if batch_size is None:
    return n
  return max(1, min(n, batch_size // min(batch_size, max(1, inner))))


def sample_sum(fn: Callable[..., Any], operands: Any, samples: Any, *,
               batch_size: int | None, strategy: str, inner: int = 1,
               static: Static = ()) -> Any:
  """``sum_i fn(operands, samples[i], **static)`` over the leading axis.

  Args:
    fn: module-level function of one sample; returns a pytree of arrays.
    operands: pytree shared by every sample (explainee, image, target, ...).
    samples: pytree of arrays with a common leading axis n.
    batch_size: model evaluations at once; ``None``: all.
    strategy: one of :data:`STRATEGIES` (see :func:`resolve`).
    inner: model evaluations one ``fn`` call makes (nested batching).
    static: hashable ``(name, value)`` pairs passed to ``fn`` as keywords.

  Returns:
    The sum, shaped like one ``fn`` output.
  """
  return _run(fn, operands, samples, batch_size, strategy, inner, static,
              stack=False)


def sample_map(fn: Callable[..., Any], operands: Any, samples: Any, *,
               batch_size: int | None, strategy: str, inner: int = 1,
               static: Static = ()) -> Any:
  """``fn(operands, samples[i], **static)`` stacked on a leading axis n.

  Arguments as in :func:`sample_sum`.
  """
  return _run(fn, operands, samples, batch_size, strategy, inner, static,
              stack=True)


def _run(fn, operands, samples, batch_size, strategy, inner, static, stack):
  if strategy not in STRATEGIES:
    raise ValueError(STRATEGY_ERROR.format(choices=STRATEGIES, value=strategy))
  n = _length(samples)
  chunk = chunk_size(n, batch_size, inner)
  if strategy == "dispatch" and any(
      isinstance(leaf, jax.core.Tracer)
      for leaf in jax.tree.leaves((operands, samples))):
    # Inside a trace nothing can be dispatched: a Python loop would unroll
    # every chunk into the program; a scan compiles one chunk.
    strategy = "scan"
  mesh = _SAMPLE_MESH.get()
  if mesh is not None and not stack:
    return _sharded_sum(operands, samples, fn=fn, static=static,
                        batch_size=batch_size, inner=inner, mesh=mesh,
                        strategy="scan" if strategy == "dispatch" else strategy)
  if strategy != "dispatch":
    return _program(operands, samples, fn=fn, static=static, chunk=chunk,
                    strategy=strategy, stack=stack)
  if inner > 1 and chunk == 1:
    # fn batches its own evaluations: call it from Python so that its chunks
    # are dispatched too, rather than unrolled into one traced program.
    outs = [fn(operands, jax.tree.map(lambda s: s[i], samples), **dict(static))
            for i in range(n)]
    if stack:
      outs = [jax.tree.map(lambda o: o[None], out) for out in outs]
    return _combine(outs, n, stack)
  chunks, mask = _split(samples, n, chunk)
  return _combine([_dispatch_chunk(operands, chunks, mask, i, fn=fn,
                                   static=static, stack=stack)
                   for i in range(mask.shape[0])], n, stack)


# The mesh the outermost sample sum of a traced method splits its samples
# over (explain_states(shard_over='samples')); None inside that split.
_SAMPLE_MESH: contextvars.ContextVar = contextvars.ContextVar("sample_mesh",
                                                             default=None)


@contextlib.contextmanager
def samples_over(mesh: Any):
  """Within: the outermost :func:`sample_sum` splits its samples over ``mesh``.

  Set around the trace of a method (its jit cache must be keyed by ``mesh``).
  """
  token = _SAMPLE_MESH.set(mesh)
  try:
    yield
  finally:
    _SAMPLE_MESH.reset(token)


@functools.partial(jax.jit, static_argnames=("fn", "static", "batch_size", "inner",
                                             "mesh", "strategy"))
def _sharded_sum(operands, samples, *, fn, static, batch_size, inner, mesh,
                 strategy):
  r"""``sum_i fn(samples[i])`` with the samples split over ``mesh``'s devices.

  .. math:: \sum_i f(s_i) = \sum_d \sum_{i \in D_d} w_i f(s_i),
     \quad w_i = [i < n]

  Each device sums its share (samples padded with repeats of the last one,
  weighted 0), then the devices' sums are added (``psum``). Equal to one
  device's sum up to the order of the additions.
  """
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  axis, d = mesh.axis_names[0], mesh.size
  n = _length(samples)
  index = np.minimum(np.arange(-(-n // d) * d), n - 1)
  padded = jax.tree.map(lambda x: jnp.asarray(x)[index], samples)
  weight = jnp.asarray(np.arange(len(index)) < n, jnp.float32)

  def local(operands, padded, weight):
    operands = jax.tree.map(lambda x: jax.lax.pcast(x, axis, to="varying"), operands)
    token = _SAMPLE_MESH.set(None)  # nested sums (IG in SmoothGrad) stay local
    try:
      outs = _program(operands, padded, fn=fn, static=static,
                      chunk=chunk_size(_length(padded), batch_size, inner),
                      strategy=strategy, stack=True)
    finally:
      _SAMPLE_MESH.reset(token)
    total = jax.tree.map(lambda o: jnp.tensordot(weight.astype(o.dtype), o, axes=1),
                         outs)
    return jax.tree.map(lambda t: jax.lax.psum(t, axis), total)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P(axis)),
                       out_specs=P())(operands, padded, weight)


def _combine(outs: list[Any], n: int, stack: bool) -> Any:
  """Chunk results in order: concatenated and cut to n rows, or summed."""
  if stack:
    return jax.tree.map(lambda *o: jnp.concatenate(o)[:n], *outs)
  return functools.reduce(lambda a, b: jax.tree.map(jnp.add, a, b), outs)


def _length(samples: Any) -> int:
  sizes = {jnp.shape(leaf)[0] for leaf in jax.tree.leaves(samples)}
  if len(sizes) != 1:
    raise ValueError(f"samples: expected one common leading axis, got {sizes}")
  return sizes.pop()


def _split(samples: Any, n: int, chunk: int) -> tuple[Any, jax.Array]:
  """Pads to whole chunks: samples (m, chunk, ...), mask (m, chunk)."""
  m = -(-n // chunk)
  index = np.minimum(np.arange(m * chunk), n - 1)
  pad = (lambda s: s) if m * chunk == n else (lambda s: s[index])  # noqa: E731
  chunks = jax.tree.map(
      lambda s: pad(jnp.asarray(s)).reshape(m, chunk, *jnp.shape(s)[1:]),
      samples)
  mask = jnp.asarray(np.arange(m * chunk) < n).reshape(m, chunk)
  return chunks, mask


def _chunk(fn, static, operands, samples, mask, stack):
  """One chunk: vmapped fn (plain call for one sample), masked sum or stack."""
  one = lambda s: fn(operands, s, **dict(static))  # noqa: E731
  if mask.shape[0] == 1:
    out = jax.tree.map(lambda o: o[None],
                       one(jax.tree.map(lambda s: s[0], samples)))
  else:
    out = jax.vmap(one)(samples)
  if stack:
    return out
  return jax.tree.map(
      lambda o: jnp.sum(jnp.where(mask.reshape((-1,) + (1,) * (o.ndim - 1)),
                                  o, 0), axis=0), out)


@functools.partial(jax.jit, static_argnames=("fn", "static", "stack"))
def _dispatch_chunk(operands, chunks, mask, i, *, fn, static, stack):
  def take(s):
    return jax.lax.dynamic_index_in_dim(s, i, keepdims=False)

  return _chunk(fn, static, operands, jax.tree.map(take, chunks), take(mask),
                stack)


@functools.partial(
    jax.jit, static_argnames=("fn", "static", "chunk", "strategy", "stack"))
def _program(operands, samples, *, fn, static, chunk, strategy, stack):
  n = _length(samples)
  chunks, mask = _split(samples, n, chunk)
  body = functools.partial(_chunk, fn, static, operands, stack=stack)
  m = mask.shape[0]
  if strategy == "vectorized":
    return _combine([body(jax.tree.map(lambda s: s[i], chunks), mask[i])
                     for i in range(m)], n, stack)
  if stack:
    out = jax.lax.map(lambda c: body(*c), (chunks, mask))
    return jax.tree.map(lambda o: o.reshape(m * chunk, *o.shape[2:])[:n], out)
  first = jax.tree.map(lambda s: s[0], chunks)
  zeros = jax.tree.map(_zeros, jax.eval_shape(body, first, mask[0]))
  def step(acc, c):
    return jax.tree.map(jnp.add, acc, body(*c)), None

  return jax.lax.scan(step, zeros, (chunks, mask))[0]


def _zeros(like: jax.ShapeDtypeStruct) -> jax.Array:
  """Zeros of ``like``'s shape and dtype, varying over the same mesh axes
  (inside ``shard_map`` a scan's carry must keep its type)."""
  zeros = jnp.zeros(like.shape, like.dtype)
  varying = getattr(getattr(like, "manual_axis_type", None), "varying", None)
  return jax.lax.pcast(zeros, tuple(varying), to="varying") if varying else zeros
