"""Devices and processes: the mesh a run shards over, and who writes.

One run uses every device it is given, on one host or many:

- :func:`initialize` starts ``jax.distributed`` when ``config.distributed``
  asks (before anything else touches JAX); with no coordinator given, JAX
  detects SLURM, Cloud TPU, Kubernetes or MPI.
- :func:`mesh` is a one-axis ``jax.make_mesh`` over all devices of all
  processes, with ``AxisType.Auto``: a vmapped convolution over a sharded
  axis fails under the default Explicit axis types.
- :func:`place` puts an array on the mesh with a ``NamedSharding``; in a
  multi-process run each process supplies only the shards of its own devices
  (:func:`jax.make_array_from_callback`). :func:`gather` brings a sharded
  result back whole to every process.
- Every process runs the same program; only :func:`is_writer` (process 0)
  writes into the workdir. Nothing is decided from a process's own disk
  (a multi-process run computes every part), so all take the same branches
  and meet at the same collectives.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "devices"


def initialize(distributed: Any) -> None:
  """``jax.distributed.initialize`` as ``config.distributed`` asks.

  Args:
    distributed: the ``config.distributed`` block: ``enabled`` (bool), and
      optionally ``coordinator`` ('host:port'), ``num_processes``,
      ``process_id`` (all ``None``: detected from SLURM, Cloud TPU,
      Kubernetes or MPI by JAX).
  """
  if not distributed or not distributed.get("enabled"):
    return
  kwargs = {name: distributed.get(key) for name, key in (
      ("coordinator_address", "coordinator"), ("num_processes", "num_processes"),
      ("process_id", "process_id")) if distributed.get(key) is not None}
  jax.distributed.initialize(**kwargs)


def is_writer() -> bool:
  """Whether this process writes files (process 0)."""
  return jax.process_index() == 0


def mesh(devices: Any = None) -> jax.sharding.Mesh:
  """A one-axis mesh :data:`AXIS` over ``devices`` (default: all, every process)."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def place(tree: Any, mesh_: jax.sharding.Mesh, spec: P) -> Any:
  """Every leaf of ``tree`` on ``mesh_`` with ``NamedSharding(mesh_, spec)``.

  Single process: ``jax.device_put`` (device to device). Several: each
  process builds its own devices' shards from its copy of the leaf (every
  process holds the same values: the same data, the same model).
  """
  sharding = NamedSharding(mesh_, spec)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(leaf):
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
      data = np.asarray(jax.random.key_data(leaf))
      impl = jax.random.key_impl(leaf)
      placed = jax.make_array_from_callback(
          data.shape, NamedSharding(mesh_, P(*spec, *([None] * (data.ndim - len(spec))))),
          lambda index: data[index])
      return jax.random.wrap_key_data(placed, impl=impl)
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(one, tree)


def gather(x: jax.Array) -> jax.Array:
  """A sharded array whole, as a local array of every process."""
  if jax.process_count() == 1:
    return x
  if x.is_fully_replicated:
    return x.addressable_data(0)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.numpy.asarray(multihost_utils.process_allgather(x, tiled=True))


def pad_to(n: int, multiple: int) -> np.ndarray:
  """Indices 0..n-1 then repeats of n-1, up to a multiple of ``multiple``."""
  return np.minimum(np.arange(-(-n // multiple) * multiple), n - 1)
