"""Argument checks shared by the saliency methods.

They run at a method's entry, in Python, before anything is traced; they read
only shapes and static values, so they also work on tracers (under
``explain``'s ``vmap``), where a value check is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

IMAGE_ERROR = "{method}: x must be one image (H, W, C), got shape {shape}"
IMAGES_ERROR = "{method}: images must be a batch (N, H, W, C), got shape {shape}"
FLOAT_ERROR = ("{method}: images must be floating point (e.g. uint8 pixels / "
               "255), got {dtype}; saliency methods differentiate the image")
TARGET_ERROR = "{method}: target must be one integer class index, got {value!r}"
CHOICE_ERROR = "{method}: {arg} must be one of {choices}, got {value!r}"
POSITIVE_ERROR = "{method}: {arg} must be a positive integer, got {value!r}"
KEY_ERROR = ("{method}: needs a `key` (jax.random.key) for its randomness; "
             "got None")


def image(method: str, x: Any) -> None:
  if np.ndim(x) != 3:
    raise ValueError(IMAGE_ERROR.format(method=method, shape=np.shape(x)))


def images(method: str, x: Any) -> None:
  """A batch (N, H, W, C) of floating-point images (arrays or tracers)."""
  if np.ndim(x) != 4:
    raise ValueError(IMAGES_ERROR.format(method=method, shape=np.shape(x)))
  dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(FLOAT_ERROR.format(method=method, dtype=np.dtype(dtype)))


def target(method: str, value: Any) -> None:
  """An integer scalar; non-negative when its value is known."""
  if isinstance(value, bool) or np.ndim(value) != 0:
    raise ValueError(TARGET_ERROR.format(method=method, value=value))
  dtype = getattr(value, "dtype", None)
  if dtype is None and not isinstance(value, (int, np.integer)):
    raise ValueError(TARGET_ERROR.format(method=method, value=value))
  if dtype is not None and not np.issubdtype(dtype, np.integer):
    raise ValueError(TARGET_ERROR.format(method=method, value=value))
  if not isinstance(value, jax.core.Tracer) and int(value) < 0:
    raise ValueError(TARGET_ERROR.format(method=method, value=value))


def choice(method: str, arg: str, value: Any, choices: Sequence[str]) -> None:
  if not isinstance(value, str) or value not in choices:
    raise ValueError(CHOICE_ERROR.format(method=method, arg=arg,
                                         choices=tuple(choices), value=value))


def positive_int(method: str, arg: str, value: Any) -> None:
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
      or value < 1):
    raise ValueError(POSITIVE_ERROR.format(method=method, arg=arg, value=value))


def key(method: str, value: Any) -> None:
  if value is None:
    raise ValueError(KEY_ERROR.format(method=method))
