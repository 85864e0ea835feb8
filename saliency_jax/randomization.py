"""Model randomization as pytree transforms (Adebayo et al. 2018, Sec. 3).

A model's state is a pytree whose top-level keys are its blocks; a model
declares them top-down in ``model.cascade_order`` (logits first). Cascading
randomization re-initializes the top ``k`` blocks; independent randomization
re-initializes one block and keeps the rest trained. "Re-initialized" means
the value that block's own initializer draws (a freshly created model with
another key), as Adebayo et al. did; BatchNorm moving statistics stay trained
unless ``batch_stats=True``.

Stages are stacked on a leading axis so one ``jax.vmap`` (or one compiled
program called once per stage) explains every stage.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

State = Any


def reinitialized(trained: nnx.Module, fresh: nnx.Module, *,
                  batch_stats: bool = False) -> State:
  """The full state of ``fresh``, with ``trained``'s BatchNorm statistics
  unless ``batch_stats`` (Adebayo et al. re-initialize trainable variables)."""
  _, fresh_params, fresh_rest = nnx.split(fresh, nnx.Param, ...)
  _, _, trained_rest = nnx.split(trained, nnx.Param, ...)
  return nnx.merge_state(fresh_params, fresh_rest if batch_stats else trained_rest)


def _block(path: tuple[Any, ...]) -> str:
  first = path[0]
  return str(getattr(first, "key", getattr(first, "name", first)))


def select_blocks(trained: State, fresh: State, blocks: Collection[str]) -> State:
  """``trained`` with every leaf under a top-level key in ``blocks`` from ``fresh``."""
  known = {_block(p) for p, _ in jax.tree_util.tree_leaves_with_path(trained)}
  unknown = sorted(set(blocks) - known)
  if unknown:
    raise ValueError(f"randomization: blocks {unknown} are not in the model "
                     f"state; it has {sorted(known)}")
  return jax.tree_util.tree_map_with_path(
      lambda p, t, f: f if _block(p) in blocks else t, trained, fresh)


def cascade(trained: State, fresh: State, order: Sequence[str], k: int) -> State:
  """Stage ``k`` of the cascade: the top ``k`` blocks of ``order`` re-initialized."""
  if not 0 <= k <= len(order):
    raise ValueError(f"cascade: k must lie in [0, {len(order)}], got {k}")
  return select_blocks(trained, fresh, set(order[:k]))


def independent(trained: State, fresh: State, order: Sequence[str], i: int) -> State:
  """Only block ``order[i]`` re-initialized; every other block trained."""
  if not 0 <= i < len(order):
    raise ValueError(f"independent: i must lie in [0, {len(order)}), got {i}")
  return select_blocks(trained, fresh, {order[i]})


def stack(states: Sequence[State]) -> State:
  """States stacked on a new leading axis (stage), for ``jax.vmap``."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def unstack(stacked: State, i: int) -> State:
  return jax.tree.map(lambda leaf: leaf[i], stacked)


def stages(trained: State, fresh: State, order: Sequence[str], *,
           mode: str = "cascade") -> tuple[State, list[list[str]]]:
  """All stages stacked, stage 0 the trained state, and the blocks of each.

  ``mode='cascade'``: stage k has the top k blocks re-initialized
  (k = 0..len(order)); ``mode='independent'``: stage i >= 1 has only block
  ``order[i-1]`` re-initialized.
  """
  if mode == "cascade":
    blocks = [list(order[:k]) for k in range(len(order) + 1)]
  elif mode == "independent":
    blocks = [[]] + [[name] for name in order]
  else:
    raise ValueError(f"config.cascade.mode={mode!r}: expected 'cascade' or "
                     "'independent'")
  return stack([select_blocks(trained, fresh, set(b)) for b in blocks]), blocks
