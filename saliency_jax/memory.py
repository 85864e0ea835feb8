"""How much device memory a compiled program needs, and how much there is.

A program's need is read from XLA's own buffer assignment
(``compiled.memory_analysis()``): temporaries + outputs + generated code,
less outputs aliased to (donated) inputs. Its arguments are not counted: they
are arrays already on the device, and so already in the device's
``bytes_in_use``. What there is: ``FRACTION`` of the device's memory
(``device.memory_stats()['bytes_limit']``) less what is in use. Where a
backend reports no memory statistics (the CPU), the machine's physical memory
stands in for the device's.

:func:`largest_fitting` searches the largest chunk size whose compiled
program fits: it measures two small sizes, extrapolates linearly, and
verifies the guess by compiling it, halving until one fits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
from absl import logging

# Of the device's memory, the share a program may plan for: the rest is kept
# for XLA's own allocations, fragmentation and arrays created between programs.
FRACTION = 0.75
GIB = 2**30


def device_bytes(device: jax.Device | None = None) -> int | None:
  """The memory of ``device`` (default: the first local one) in bytes.

  ``memory_stats()['bytes_limit']`` on GPU/TPU; the physical memory where the
  backend reports none (CPU); ``None`` when neither is known.
  """
  device = device or jax.local_devices()[0]
  stats = _stats(device)
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
  except (ValueError, OSError, AttributeError):
    return None


def budget(fraction: float = FRACTION, device: jax.Device | None = None) -> int | None:
  """Bytes a new program may use: ``fraction`` of the memory less what is in use."""
  if not 0 < fraction <= 1:
    raise ValueError(f"memory fraction: expected a number in (0, 1], got {fraction!r}")
  device = device or jax.local_devices()[0]
  total = device_bytes(device)
  if total is None:
    return None
  in_use = (_stats(device) or {}).get("bytes_in_use", 0)
  return max(0, int(fraction * total) - int(in_use))


def program_bytes(compiled: Any) -> int | None:
  """Bytes the compiled program allocates beyond its arguments (None: unknown)."""
  try:
    analysis = compiled.memory_analysis()
  except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
    return None
  if analysis is None:
    return None
  return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes
             - analysis.alias_size_in_bytes + analysis.generated_code_size_in_bytes)


def fits(compiled: Any, budget_bytes: int | None = None) -> bool:
  """Whether ``compiled`` fits ``budget_bytes`` (default :func:`budget`).

  True where either side is unknown: then nothing better than trying is known.
  """
  budget_bytes = budget() if budget_bytes is None else budget_bytes
  need = program_bytes(compiled)
  return budget_bytes is None or need is None or need <= budget_bytes


class DoesNotFitError(ValueError):
  """Even the smallest chunk's program needs more memory than the budget."""


def largest_fitting(compile_at: Callable[[int], Any], limit: int,
                    budget_bytes: int | None, *, what: str = "program"
                    ) -> tuple[int, int | None]:
  """The largest size in [1, ``limit``] whose compiled program fits.

  Sizes 1 and 2 give a linear model ``need(b) = need(1) + (b - 1) slope``;
  its largest fitting size (``limit`` or a power of two below it) is compiled
  and checked, halving until one fits, then doubling while the double fits
  (memory grows slower than linearly). The program of every evaluation at
  once is compiled only when the model says it fits (on a CPU, XLA takes
  many minutes to compile a 25,000-image convolution).

  Args:
    compile_at: size -> the compiled program at that size.
    limit: the largest useful size (e.g. every evaluation at once).
    budget_bytes: the budget; ``None`` (unknown) takes ``limit``.
    what: the program's name, for the log and the error.

  Returns:
    (size, bytes its program needs or None when unknown).

  Raises:
    DoesNotFitError: size 1 does not fit.
  """
  measured: dict[int, int | None] = {}

  def need(size: int) -> int | None:
    if size not in measured:
      measured[size] = program_bytes(compile_at(size))
    return measured[size]

  def ok(size: int) -> bool:
    n = need(size)
    return n is None or n <= budget_bytes

  if budget_bytes is None:
    return limit, None
  if not ok(1):
    raise DoesNotFitError(
        f"{what}: one evaluation at a time needs {_size(need(1))}, more "
        f"than the {_size(budget_bytes)} available; use a smaller image "
        "size or model, or a device with more memory")
  if limit == 1:
    return 1, need(1)
  first, second = need(1), need(2)
  if first is None or second is None:
    guess = limit  # nothing to extrapolate from: try all, then halve
  else:
    guess = 1 + (budget_bytes - first) // max(second - first, 1)
  size = limit if guess >= limit and ok(limit) else _power_of_two_at_most(
      min(guess, limit - 1))
  while size > 1 and not ok(size):
    size //= 2
  # Memory grows slower than linearly (weights and code are shared): the
  # guess is low more often than high; double while the double fits.
  while size < limit and size == _power_of_two_at_most(size) and ok(
      min(2 * size, limit)):
    size = min(2 * size, limit)
  logging.info("%s: batch size %d of %d evaluations fits %s (needs %s)", what,
               size, limit, _size(budget_bytes), _size(need(size) or 0))
  return size, need(size)


def _size(num_bytes: int) -> str:
  return (f"{num_bytes / GIB:.2f} GiB" if num_bytes >= GIB / 10
          else f"{num_bytes / 2**20:.1f} MiB")


def _power_of_two_at_most(n: int) -> int:
  return 1 << (max(1, int(n)).bit_length() - 1)


def _stats(device: jax.Device) -> dict[str, Any] | None:
  try:
    return device.memory_stats()
  except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
    return None
