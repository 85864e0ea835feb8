"""Model randomization as pytree transforms (Adebayo et al. 2018, Sec. 3).

A model's state is a pytree whose top-level keys are its blocks; a model
declares them top-down in ``model.cascade_order`` (logits first). Cascading
randomization re-initializes the top ``k`` blocks; bottom-up randomization
(Hedström et al., "Sanity checks revisited", 2023) the bottom ``k`` blocks,
the same order walked from the input side; independent randomization
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


def bottom_up(trained: State, fresh: State, order: Sequence[str], k: int) -> State:
  """Stage ``k`` bottom-up: the bottom ``k`` blocks of ``order`` (top-down,
  logits first), i.e. ``order[-k:]``, re-initialized."""
  if not 0 <= k <= len(order):
    raise ValueError(f"bottom_up: k must lie in [0, {len(order)}], got {k}")
  return select_blocks(trained, fresh, set(order[len(order) - k:]))


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
  (k = 0..len(order)); ``mode='bottom_up'``: stage k has the bottom k blocks
  re-initialized, input side first (stage k's blocks are ``order[-k:]``,
  listed input side first: ``order[::-1][:k]``), so the last stage is the same
  fully re-initialized state as the cascade's; ``mode='independent'``: stage
  i >= 1 has only block ``order[i-1]`` re-initialized.
  """
  if mode == "cascade":
    blocks = [list(order[:k]) for k in range(len(order) + 1)]
  elif mode == "bottom_up":
    blocks = [list(order[::-1][:k]) for k in range(len(order) + 1)]
  elif mode == "independent":
    blocks = [[]] + [[name] for name in order]
  else:
    raise ValueError(f"config.cascade.mode={mode!r}: expected 'cascade', "
                     "'bottom_up' or 'independent'")
  return stack([select_blocks(trained, fresh, set(b)) for b in blocks]), blocks


def cascade_states(model: nnx.Module, fresh: nnx.Module, *,
                   order: Sequence[str] | None = None, mode: str = "cascade",
                   batch_stats: bool = False) -> tuple[State, list[list[str]]]:
  """Every stage of ``model``'s cascade, stacked for ``explain_states``.

  The randomization test on your own model in one call: ``fresh`` is the same
  architecture created with another key (its initializers' draws are the
  re-initialized weights), both taken in eval mode, as the cascade experiment
  does; then :func:`reinitialized` and :func:`stages`.

  Args:
    model: the trained NNX model.
    fresh: the same architecture, freshly initialized.
    order: top-level attribute names of ``model``, top-down (logits first);
      ``None``: ``model.cascade_order`` (every model of ``models`` has one).
      A prefix of it randomizes fewer blocks top-down; bottom-up, a suffix
      (its input-side blocks) does.
    mode: ``'cascade'`` (top-down), ``'bottom_up'`` or ``'independent'``, as
      :func:`stages`.
    batch_stats: also re-initialize BatchNorm statistics (default: trained
      ones kept, as Adebayo et al.).

  Returns:
    (states, blocks): the explainee state of ``model`` stacked on a leading
    stage axis (stage 0 the trained model), and the blocks re-initialized at
    each stage; ``explain_states(model, states, images, targets, ...)``
    explains every stage.
  """
  if order is None:
    order = getattr(model, "cascade_order", None)
    if order is None:
      raise ValueError(f"cascade_states: {type(model).__name__} has no "
                       "cascade_order; pass order=(top-level attribute names, "
                       "logits first)")
  if isinstance(order, str) or not order:
    raise ValueError(f"cascade_states: order must be a non-empty sequence of "
                     f"block names, got {order!r}")
  model, fresh = nnx.clone(model), nnx.clone(fresh)
  model.eval()
  fresh.eval()
  _, trained_state = nnx.split(model)
  fresh_state = reinitialized(model, fresh, batch_stats=batch_stats)
  _check_same_shapes(trained_state, fresh_state)
  return stages(trained_state, fresh_state, tuple(order), mode=mode)


def _check_same_shapes(trained: State, fresh: State) -> None:
  """``fresh`` must be ``trained``'s architecture: same leaves, shapes, dtypes."""
  ours = {jax.tree_util.keystr(p): leaf
          for p, leaf in jax.tree_util.tree_leaves_with_path(trained)}
  theirs = {jax.tree_util.keystr(p): leaf
            for p, leaf in jax.tree_util.tree_leaves_with_path(fresh)}
  for path in sorted(ours.keys() | theirs.keys()):
    a, b = ours.get(path), theirs.get(path)
    if a is None or b is None or (jnp.shape(a), jnp.result_type(a)) != (
        jnp.shape(b), jnp.result_type(b)):
      describe = lambda x: ("missing" if x is None else
                            f"{jnp.result_type(x)}{list(jnp.shape(x))}")
      raise ValueError(f"cascade_states: fresh must be the model's architecture "
                       f"created with another key; at {path} the model has "
                       f"{describe(a)}, fresh has {describe(b)}")
