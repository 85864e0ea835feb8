"""COCO run-length masks, as pycocotools writes them (what CheXlocalize ships).

A mask (H, W) is read in column-major (Fortran) order and cut into runs that
alternate 0s and 1s, starting with a (possibly empty) run of 0s:
``counts = [c_0, c_1, ...]``, with sum(c) = H W. The compressed string
(pycocotools ``maskApi.c``: ``rleToString`` / ``rleFrString``) stores each
count, from the fourth on as its difference to the count two before
(``x_i = c_i - c_{i-2}`` for i > 2, exactly as the C code; c_0..c_2 as
they are), in signed 5-bit groups, least significant first: each group is
one character ``48 + g + 32 [more groups follow]``, and the last group's
bit 0x10 carries the sign.

JSON files (CheXlocalize's ``{image_id: {pathology: rle}}``) are read with
:func:`read_masks` and written with :func:`write_masks`. Pure NumPy, host side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

MASK_ERROR = "encode: mask must be a 2-D array, got shape {shape}"
RLE_ERROR = ("decode: rle must be a dict {{'size': [h, w], 'counts': str or list of "
             "ints}}, got {value!r}")
SIZE_ERROR = "decode: rle['size'] must be [h, w] with h, w >= 0 integers, got {value!r}"
COUNTS_ERROR = "decode: rle['counts'] {why}"
CHAR_ERROR = "character {char!r} at {index} is outside COCO's alphabet '0'..'o'"


def _counts(mask: np.ndarray) -> list[int]:
  """Run lengths of the column-major mask, starting with a run of 0s."""
  flat = np.asarray(mask, bool).ravel(order="F")
  if flat.size == 0:
    return [0]
  change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
  bounds = np.concatenate([[0], change, [flat.size]])
  runs = np.diff(bounds).tolist()
  return [0, *runs] if flat[0] else runs


def _to_string(counts: list[int]) -> str:
  """pycocotools' rleToString: signed 5-bit groups, delta to the count two back."""
  chars = []
  for i, count in enumerate(counts):
    x = count - counts[i - 2] if i > 2 else count
    more = True
    while more:
      group = x & 0x1F
      x >>= 5  # arithmetic shift, as the C code's long
      more = x != -1 if group & 0x10 else x != 0
      chars.append(chr(48 + (group | 0x20 if more else group)))
  return "".join(chars)


def _from_string(text: str) -> list[int]:
  """pycocotools' rleFrString, the inverse of :func:`_to_string`."""
  counts: list[int] = []
  position = 0
  while position < len(text):
    x, shift, more = 0, 0, True
    while more:
      if position >= len(text):
        raise ValueError(COUNTS_ERROR.format(why="ends inside a count"))
      code = ord(text[position]) - 48
      if not 0 <= code < 64:
        raise ValueError(COUNTS_ERROR.format(
            why=CHAR_ERROR.format(char=text[position], index=position)))
      x |= (code & 0x1F) << shift
      more = bool(code & 0x20)
      position += 1
      shift += 5
      if not more and code & 0x10:
        x -= 1 << shift  # sign-extend
    if len(counts) > 2:
      x += counts[-2]
    counts.append(x)
  return counts


def encode(mask: Any) -> dict[str, Any]:
  """``{'size': [h, w], 'counts': str}`` of a boolean mask (pycocotools' encode)."""
  mask = np.asarray(mask)
  if mask.ndim != 2:
    raise ValueError(MASK_ERROR.format(shape=mask.shape))
  return {"size": [int(mask.shape[0]), int(mask.shape[1])],
          "counts": _to_string(_counts(mask != 0))}


def decode(rle: Mapping[str, Any]) -> np.ndarray:
  """The (h, w) bool mask of a compressed or uncompressed (list) COCO RLE.

  Raises:
    ValueError: naming the key, for a malformed size or counts, negative runs
      or runs that do not add up to h w.
  """
  if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
    raise ValueError(RLE_ERROR.format(value=rle))
  size = rle["size"]
  if (not isinstance(size, (list, tuple)) or len(size) != 2
      or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                 for v in size)):
    raise ValueError(SIZE_ERROR.format(value=size))
  height, width = int(size[0]), int(size[1])
  counts = rle["counts"]
  if isinstance(counts, bytes):
    counts = counts.decode("ascii")
  if isinstance(counts, str):
    counts = _from_string(counts)
  elif not (isinstance(counts, (list, tuple)) and all(
      isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts)):
    raise ValueError(COUNTS_ERROR.format(why=f"must be a string or a list of ints, got "
                                             f"{type(counts).__name__}"))
  counts = np.asarray(counts, np.int64)
  if np.any(counts < 0):
    raise ValueError(COUNTS_ERROR.format(why=f"has a negative run: {counts.tolist()}"))
  if counts.sum() != height * width:
    raise ValueError(COUNTS_ERROR.format(
        why=f"runs add up to {int(counts.sum())} pixels, size {height} x {width} has "
            f"{height * width}"))
  values = np.arange(counts.size) % 2 == 1
  flat = np.repeat(values, counts)
  return flat.reshape((height, width), order="F")


def read_masks(path: str | os.PathLike) -> dict[str, dict[str, dict[str, Any]]]:
  """A CheXlocalize-style JSON ``{image_id: {name: rle}}``, RLEs still encoded."""
  with open(path) as f:
    data = json.load(f)
  if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
    raise ValueError(f"{os.fspath(path)}: expected a JSON object "
                     "{image_id: {pathology: {'size': [h, w], 'counts': ...}}}")
  return data


def write_masks(path: str | os.PathLike,
                masks: Mapping[str, Mapping[str, Any]]) -> None:
  """Writes ``{image_id: {name: mask (H, W)}}`` as CheXlocalize's RLE JSON (atomically)."""
  data = {str(i): {str(n): encode(m) for n, m in named.items()}
          for i, named in masks.items()}
  path = os.fspath(path)
  temporary = f"{path}.tmp{os.getpid()}"
  with open(temporary, "w") as f:
    json.dump(data, f)
  os.replace(temporary, path)
