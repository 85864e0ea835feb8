"""Occlusion: how much the target logit drops when a window is blanked out."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.saliency import _checks, batching
from saliency_jax.saliency.explainee import Explainee, as_explainee

REDUCES = ("mean", "sum")


def _pair(method: str, arg: str, value: Any) -> tuple[int, int]:
  pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
  if len(pair) != 2:
    raise ValueError(f"{method}: {arg} must be an int or a pair of ints, "
                     f"got {value!r}")
  for v in pair:
    _checks.positive_int(method, arg, v)
  return int(pair[0]), int(pair[1])


def _starts(size: int, window: int, stride: int) -> np.ndarray:
  """Window offsets every ``stride``, plus one flush with the far edge so that
  a stride that does not divide ``size - window`` still covers every pixel."""
  starts = np.arange(0, size - window + 1, stride)
  return starts if starts[-1] == size - window else np.append(starts,
                                                              size - window)


def _coverage(size: int, window: int, starts: np.ndarray) -> np.ndarray:
  i = np.arange(size)[:, None]
  return np.sum((i >= starts) & (i < starts + window), axis=1)


def _count(x_shape, window, stride, **_):
  (wh, ww), (sh, sw) = _pair("occlusion", "window", window), _pair(
      "occlusion", "stride", stride)
  return 1 + len(_starts(x_shape[0], wh, sh)) * len(_starts(x_shape[1], ww, sw))


@batching.cost(_count)
def occlusion(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
              key: jax.Array | None = None, batch_size: int | None = None,
              strategy: str | None = None, window: int | tuple[int, int] = 15,
              stride: int | tuple[int, int] = 1, value: float = 0.0,
              reduce: str = "mean") -> jax.Array:
  r"""Drop of the target logit under occluding windows, per pixel.

  .. math::
    M_{hw} = \frac{1}{|W_{hw}|} \sum_{w \in W_{hw}}
             \big(f_t(x) - f_t(x \text{ with } w \text{ set to } v)\big)

  over the set :math:`W_{hw}` of windows (``window`` pixels square, every
  ``stride`` pixels, all channels) that cover pixel (h, w); :math:`v` =
  ``value``. ``reduce='sum'`` drops the :math:`1/|W_{hw}|`, as PAIR
  ``saliency`` 0.2.1 does (border pixels then get less).

  Args:
    logits_fn: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: occluded images evaluated at once.
    strategy: how chunks run (:data:`batching.STRATEGIES`).
    window: window size, an int or (height, width); at most the image size.
    stride: offset between windows, an int or (rows, columns); a last window
      flush with the far edge is added when the stride does not reach it.
    value: fill value of the occluded pixels.
    reduce: ``'mean'`` (over covering windows) or ``'sum'`` (PAIR).

  Returns:
    Signed attribution (H, W, C), the same in every channel.

  Reference: Zeiler & Fergus, arXiv:1311.2901.
  """
  del key
  _checks.image("occlusion", x)
  _checks.target("occlusion", target)
  _checks.choice("occlusion", "reduce", reduce, REDUCES)
  h, w, _ = np.shape(x)
  (wh, ww), (sh, sw) = _pair("occlusion", "window", window), _pair(
      "occlusion", "stride", stride)
  if wh > h or ww > w:
    raise ValueError(f"occlusion: window {(wh, ww)} is larger than the image "
                     f"{(h, w)}")
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"occlusion: value must be a number, got {value!r}")
  rows, cols = _starts(h, wh, sh), _starts(w, ww, sw)
  count = np.outer(_coverage(h, wh, rows), _coverage(w, ww, cols))
  strategy, batch_size = batching.resolve(strategy, batch_size)
  explainee = as_explainee(logits_fn)
  grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
  occluded = batching.sample_sum(
      _occluded_logit, (explainee, x, target), grid.astype(np.int32),
      batch_size=batch_size, strategy=strategy,
      static=(("window", (wh, ww)), ("value", float(value))))
  drop = count * _logit(explainee, x, target) - occluded
  if reduce == "mean":
    drop = drop / count
  drop = drop.astype(jnp.result_type(x))
  return jnp.broadcast_to(drop[..., None], np.shape(x))


@jax.jit
def _logit(explainee: Explainee, x: jax.Array, target: jax.Array) -> jax.Array:
  return explainee.logits(x)[target]


def _occluded_logit(operands, corner, *, window, value):
  """f_t of the image with one window set to ``value``, on that window."""
  explainee, x, target = operands
  i = jnp.arange(x.shape[0])[:, None]
  j = jnp.arange(x.shape[1])[None, :]
  inside = ((i >= corner[0]) & (i < corner[0] + window[0]) &
            (j >= corner[1]) & (j < corner[1] + window[1]))
  occluded = jnp.where(inside[..., None], jnp.asarray(value, x.dtype), x)
  return jnp.where(inside, explainee.logits(occluded)[target], 0.0)
