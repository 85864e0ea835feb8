"""What the manual-download builders share: bad-input policy, splits, resizing, parallel decoding.

The real datasets (RSNA Pneumonia, SIIM-ACR Pneumothorax, a user's own
folder) are read from files people download themselves. Everything here turns
those files into examples of the common record format (``image`` (S, S, 1),
``label``, ``boxes`` (K, 4) ``(x, y, w, h)``, ``mask`` (S, S), ``id`` plus
header fields) and enforces one rule: a bad file or CSV row either stops the
build with one line naming it (``on_bad_input='error'``) or is left out and
counted (``'skip'``); the counts go into the dataset's metadata, with the
positives whose mask has no pixel at the stored size (:class:`EmptyMasks`).
Bad inputs raise :class:`BadInputError` (an ``errors.InputError``), bad
config values ``errors.ConfigError``: the command line prints either as one
``error:`` line.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import functools
import hashlib
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from saliency_jax import errors
from saliency_jax import progress

SPLITS = ("train", "validation", "test")
ON_BAD_INPUT = ("error", "skip")
# Images are stored as uint16 (1024^2 16-bit DICOMs lose nothing that matters
# at 320 px, and float32 would quadruple a 26k-image dataset on disk).
IMAGE_SCALE = 65535


class BadInputError(errors.InputError):
  """A file or CSV row that does not fit the documented layout."""


@dataclasses.dataclass
class Problems:
  """Applies ``on_bad_input``: raise at the first problem, or count it by kind.

  ``record(kind, where, what)`` raises :class:`BadInputError` in ``'error'``
  mode; in ``'skip'`` mode it counts ``kind`` and keeps the first messages, so
  a report can say what was left out and why.
  """

  mode: str = "error"
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: list[str] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if self.mode not in ON_BAD_INPUT:
      raise errors.ConfigError(f"config.on_bad_input={self.mode!r} is not allowed; "
                               f"expected one of {ON_BAD_INPUT}")

  def record(self, kind: str, where: str, what: str) -> None:
    message = f"{where}: {what}"
    if self.mode == "error":
      raise BadInputError(f"{message} (pass --config.on_bad_input=skip to leave such "
                          "examples out; they are counted in the dataset metadata)")
    self.counts[kind] += 1
    if len(self.examples) < 20:
      self.examples.append(message)

  def metadata(self) -> dict[str, Any]:
    return dict(on_bad_input=self.mode, skipped=dict(sorted(self.counts.items())),
                num_skipped=int(sum(self.counts.values())), skipped_examples=self.examples)


def check_manual_dir(dataset: str, manual_dir: str | None) -> None:
  """Raises unless ``manual_dir`` is an existing folder (where the download lives)."""
  if not manual_dir:
    raise errors.ConfigError(f"config.manual_dir: config.dataset={dataset!r} is built from "
                             "files you download yourself; set --config.manual_dir=PATH (see "
                             "the README's Real data section)")
  if not os.path.isdir(manual_dir):
    raise errors.ConfigError(f"config.manual_dir={manual_dir!r}: no such directory")


def fingerprint(paths: Iterable[str | os.PathLike], extra: str = "") -> str:
  """8 hex digits of SHA-1 over the files' bytes (and ``extra``): a cache key for the labels."""
  digest = hashlib.sha1(extra.encode())
  for path in paths:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  return digest.hexdigest()[:8]


def require_file(path: str, what: str) -> str:
  """``path``, or :class:`BadInputError` when it is not a readable file."""
  if not os.path.isfile(path):
    raise BadInputError(f"{path}: missing; expected {what}")
  if not os.access(path, os.R_OK):
    raise BadInputError(f"{path}: not readable (permission denied); expected {what}")
  return path


def csv_columns(path: str) -> list[str]:
  """The stripped column names of ``path``'s header row ([] for an empty file)."""
  with _reading_text(path, lambda: 1), open(path, newline="", encoding="utf-8-sig") as f:
    return [h.strip() for h in next(csv.reader(f), [])]


@contextlib.contextmanager
def _reading_text(path: str, line: Callable[[], int]) -> Iterator[None]:
  """Turns a text or CSV file that cannot be read (not UTF-8, a field over the ``csv``
  module's size limit) into a :class:`BadInputError` naming ``path:line``."""
  try:
    yield
  except UnicodeDecodeError:
    raise BadInputError(f"{path}:{_undecodable_line(path)}: not UTF-8 text; save the "
                        "file as UTF-8 CSV") from None
  except csv.Error as e:
    raise BadInputError(f"{path}:{line()}: unreadable CSV ({e})") from None


def _undecodable_line(path: str) -> int:
  """The 1-based line of the first byte of ``path`` that is not UTF-8 (1 if none)."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    data.decode("utf-8")
  except UnicodeDecodeError as e:
    return data.count(b"\n", 0, e.start) + 1
  return 1


def read_csv(path: str, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
  """Rows of ``path`` as ``(line number, {column: stripped value})``.

  Column names are stripped (SIIM's header is ``ImageId, EncodedPixels``) and
  a UTF-8 byte-order mark (spreadsheet exports) is dropped. A missing required
  column is always an error: no row could be read without it.
  """
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    with _reading_text(path, lambda: reader.line_num):
      try:
        header = [h.strip() for h in next(reader)]
      except StopIteration:
        raise BadInputError(f"{path}: empty file; expected a header row with columns "
                            f"{list(required)}") from None
      missing = [c for c in required if c not in header]
      if missing:
        raise BadInputError(f"{path}: missing column(s) {missing}; expected columns "
                            f"{list(required)}, found {header}")
      rows = []
      for values in reader:
        if not any(v.strip() for v in values):
          continue  # blank line
        line = reader.line_num
        if len(values) != len(header):
          rows.append((line, {"__malformed__": f"{len(values)} fields, header has "
                                               f"{len(header)}"}))
          continue
        rows.append((line, {h: v.strip() for h, v in zip(header, values)}))
  return rows


def parse_box(row: dict[str, str], keys: Sequence[str] = ("x", "y", "width", "height")
              ) -> tuple[float, float, float, float] | None:
  """``(x, y, w, h)`` from a CSV row, None when all four are empty; ValueError otherwise."""
  values = [row[k] for k in keys]
  if all(v == "" for v in values):
    return None
  if any(v == "" for v in values):
    raise ValueError(f"box columns {list(keys)} must be all empty or all numbers, got {values}")
  try:
    box = tuple(float(v) for v in values)
  except ValueError:
    raise ValueError(f"non-numeric box value in {dict(zip(keys, values))}") from None
  if not all(math.isfinite(v) for v in box):
    raise ValueError(f"non-finite box value in {dict(zip(keys, values))}")
  if box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"box width and height must be positive, got {box[2]:g} x {box[3]:g}")
  return box


def box_outside(box: Sequence[float], height: int, width: int, row: str = "") -> str | None:
  """Why ``box`` does not lie inside a ``height x width`` image, or None.

  ``row`` names where the box comes from (``file:line``), for the message.
  """
  x, y, w, h = box
  if x < 0 or y < 0 or x + w > width or y + h > height:
    return (f"box (x={x:g}, y={y:g}, width={w:g}, height={h:g}){f' of {row}' if row else ''}"
            f" extends outside the {width} x {height} image")
  return None


def check_split_fractions(fractions: Sequence[float]) -> None:
  """Raises unless ``fractions`` are three non-negative numbers summing to 1."""
  if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(
      sum(fractions), 1.0, abs_tol=1e-6):
    raise errors.ConfigError(f"config.real_data.split_fractions={tuple(fractions)}: expected "
                             "three non-negative fractions (train, validation, test) summing "
                             "to 1")


def assign_splits(groups: Sequence[str], *, seed: int,
                  fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, str]:
  """Group (patient) id -> split, a seeded permutation of the sorted ids cut by ``fractions``.

  Deterministic in (the set of ids, seed, fractions): the permutation is
  ``jax.random.permutation(PRNGKey(seed), n)`` over ``sorted(set(groups))``;
  the first round(f_train n) go to train, the next round(f_val n) to
  validation, the rest to test. Images of one patient share its split.
  """
  import jax  # pylint: disable=g-import-not-at-top  # builders run without JAX otherwise
  check_split_fractions(fractions)
  ids = sorted(set(groups))
  order = np.asarray(jax.random.permutation(jax.random.PRNGKey(seed), len(ids)))
  n_train = round(fractions[0] * len(ids))
  n_val = round(fractions[1] * len(ids))
  split_of = {}
  for rank, index in enumerate(order):
    split_of[ids[index]] = ("train" if rank < n_train else
                            "validation" if rank < n_train + n_val else "test")
  return split_of


def read_split_dir(split_dir: str, problems: Problems, known: set[str]) -> dict[str, str]:
  """Group id -> split from ``split_dir/{train,validation,test}.txt`` (one id per line).

  An id named in two files is always an error (the splits would leak); an id
  the dataset does not have is a bad input (error, or skipped and counted).
  """
  split_of: dict[str, str] = {}
  for split in SPLITS:
    path = require_file(os.path.join(split_dir, f"{split}.txt"),
                        f"one {split} id per line (config.real_data.split_dir)")
    with _reading_text(path, lambda: 1), open(path, encoding="utf-8-sig") as f:
      lines = list(f)
    for line_number, line in enumerate(lines, 1):
      group = line.strip()
      if not group:
        continue
      if group in split_of:
        raise BadInputError(f"{path}:{line_number}: id {group!r} is already in the "
                            f"{split_of[group]} split")
      if group not in known:
        problems.record("split_id_unknown", f"{path}:{line_number}",
                        f"id {group!r} is not in the dataset")
        continue
      split_of[group] = split
  return split_of


def splits_for(groups: Sequence[str], *, seed: int, fractions: Sequence[float],
               split_dir: str | None, problems: Problems) -> dict[str, str]:
  """Group id -> split: from ``split_dir`` when given, else :func:`assign_splits`."""
  if split_dir:
    split_of = read_split_dir(split_dir, problems, set(groups))
    unassigned = sorted(set(groups) - set(split_of))
    for group in unassigned:
      problems.record("not_in_split_files", split_dir, f"id {group!r} is in none of the "
                      "split files")
    return split_of
  return assign_splits(groups, seed=seed, fractions=fractions)


def check_nonempty(counts: dict[str, int], name: str) -> None:
  """An empty split is always an error: no experiment can run on it.

  ``name`` says whose splits they are, e.g. ``'<manual_dir> (rsna_pneumonia)'``.
  """
  for split in SPLITS:
    if counts.get(split, 0) == 0:
      raise BadInputError(
          f"{name}: split {split!r} has no examples (examples per split: "
          f"{ {s: counts.get(s, 0) for s in SPLITS} }); add data, change "
          "config.real_data.split_fractions or the split files")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
  """(H, W) float in [0, 1] -> (size, size), bilinear, anti-aliased when shrinking.

  Pillow's float ('F') resampling widens the triangle filter by the scale
  factor when shrinking, so a 1024 px film is averaged, not aliased, down to
  320 px; it is ~10x faster than scikit-image's Gaussian-then-interpolate,
  which matters for 26k films.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.shape == (size, size):
    return image.astype(np.float32)
  out = Image.fromarray(np.asarray(image, np.float32), mode="F").resize(
      (size, size), Image.Resampling.BILINEAR)
  return np.clip(np.asarray(out), 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _overlaps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  """The nonzero band of the (n_out, n_in) overlap matrix of box resampling.

  In coordinates scaled by ``n_out`` (so every length is an integer), output
  pixel i spans [i n_in, (i+1) n_in) and input pixel j spans [j n_out,
  (j+1) n_out); A[i, j] is the length of their intersection. Row i is nonzero
  only for j in [floor(i s), ceil((i+1) s)), s = n_in / n_out, at most
  ceil(s) + 1 entries. Returns ``(columns, weights)``, both (n_out, band):
  A[i, columns[i, b]] = weights[i, b] (padding has weight 0).
  """
  i = np.arange(n_out, dtype=np.int64)[:, None]
  first = i * n_in // n_out
  last = -(-(i + 1) * n_in // n_out)  # exclusive
  columns = first + np.arange(int((last - first).max()))[None, :]
  weights = np.maximum(np.minimum((i + 1) * n_in, (columns + 1) * n_out)
                       - np.maximum(i * n_in, columns * n_out), 0)
  columns = np.minimum(columns, n_in - 1)
  columns.flags.writeable = weights.flags.writeable = False
  return columns, weights


def mask_coverage(mask: np.ndarray, size: int) -> tuple[np.ndarray, int]:
  """Covered area of each pixel of a (size, size) grid laid over an (H, W) mask.

  Box (area) resampling with exact fractional overlaps, any scale factor:
  ``C = A_H M A_W^T``, A_n (size, n) the overlap lengths of :func:`_overlaps`
  (output pixel i covers input [i n / size, (i+1) n / size)). In those units
  a pixel's area is H W, so its covered fraction is ``C / (H W)``. Integer
  arithmetic: no round-off. Returns ``(C (size, size) int64, H W)``.
  """
  mask = np.asarray(mask, bool)
  if mask.ndim != 2 or 0 in mask.shape or size < 1:
    raise ValueError(f"expected a non-empty (H, W) mask and size >= 1, got shape "
                     f"{mask.shape} and size {size}")
  height, width = mask.shape
  rows, row_weights = _overlaps(height, size)
  cols, col_weights = _overlaps(width, size)
  m = mask.astype(np.int64)
  by_rows = np.einsum("ib,ibw->iw", row_weights, m[rows])  # A_H M: (size, W)
  coverage = np.einsum("kb,ikb->ik", col_weights, by_rows[:, cols])  # (A_H M) A_W^T
  return coverage, height * width


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
  """(H, W) bool -> (size, size): a pixel is set when at least half its area was.

  Pixel (i, k) is set iff its covered fraction C[i, k] / (H W) >= 1/2 (see
  :func:`mask_coverage`), compared in integers (2 C >= H W) so that a pixel
  exactly half covered is set. A structure thinner than half an output pixel
  (a one-pixel line shrunk 3.2x) disappears: the builders count positives
  whose mask ends up empty.
  """
  mask = np.asarray(mask, bool)
  if mask.shape == (size, size):
    return mask.copy()
  if not mask.any():
    return np.zeros((size, size), bool)
  coverage, area = mask_coverage(mask, size)
  return 2 * coverage >= area


def scale_boxes(boxes: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
  """Boxes ``(x, y, w, h)`` of a ``height x width`` image in ``size x size`` pixels."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scale = np.array([size / width, size / height, size / width, size / height])
  return (boxes * scale).astype(np.float32)


def to_stored(image: np.ndarray) -> np.ndarray:
  """[0, 1] float -> uint16, the on-disk form (:data:`IMAGE_SCALE`)."""
  return np.round(np.clip(image, 0.0, 1.0) * IMAGE_SCALE).astype(np.uint16)


def parallel_map(fn: Callable[[Any], Any], tasks: Sequence[Any], *, num_workers: int | None,
                 desc: str) -> Iterator[Any]:
  """``fn(task)`` for each task, in order, over a process pool with a progress bar.

  ``num_workers=0`` runs in this process (tests, debugging); None uses every
  core. Workers start with 'spawn': forking a process that runs JAX threads
  can deadlock.
  """
  workers = (os.cpu_count() or 1) if num_workers is None else num_workers
  # Small builds (the tests' trees) stay quiet.
  bar = progress.Progress(desc, len(tasks), unit="img") if len(tasks) >= 64 else None
  try:
    if workers <= 1 or len(tasks) < 2:
      for task in tasks:
        yield fn(task)
        if bar:
          bar.update()
      return
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    try:
      chunk = max(1, min(32, len(tasks) // (4 * workers)))
      for result in pool.map(fn, tasks, chunksize=chunk):
        yield result
        if bar:
          bar.update()
    except concurrent.futures.process.BrokenProcessPool as e:
      raise RuntimeError(f"{desc}: a decoding worker process died ({e}); rerun with "
                         "--config.real_data.num_workers=0 to decode in this process, "
                         "or with fewer workers if memory ran out") from e
    finally:
      # A build stopped by a bad input must not decode the rest first.
      pool.shutdown(wait=True, cancel_futures=True)
  finally:
    if bar:
      bar.close()


def decode_rle(encoded: str, height: int, width: int) -> np.ndarray:
  """SIIM-ACR's relative run-length encoding -> (height, width) bool mask.

  ``encoded`` is pairs ``start length``: each start counts pixels from the
  end of the previous run (the first from pixel 0), over the image flattened
  column-major (the competition's ``rle2mask(rle, W, H).T``). ``-1`` is an
  empty mask. Raises ValueError for odd, negative or overrunning runs.
  """
  if encoded.strip() == "-1":
    return np.zeros((height, width), bool)
  try:
    values = [int(v) for v in encoded.split()]
  except ValueError:
    raise ValueError(f"RLE has a non-integer value: {encoded[:40]!r}") from None
  if not values or len(values) % 2:
    raise ValueError(f"RLE needs (start, length) pairs, got {len(values)} numbers")
  flat = np.zeros(height * width, bool)
  position = 0
  for start, length in zip(values[::2], values[1::2]):
    if start < 0 or length <= 0:
      raise ValueError(f"RLE run (start {start}, length {length}) must have start >= 0 "
                       "and length > 0")
    position += start
    if position + length > flat.size:
      raise ValueError(f"RLE run ends at pixel {position + length}, beyond the "
                       f"{width} x {height} image ({flat.size} pixels)")
    flat[position:position + length] = True
    position += length
  return flat.reshape(width, height).T


def encode_rle(mask: np.ndarray) -> str:
  """Inverse of :func:`decode_rle` (``'-1'`` for an empty mask)."""
  flat = np.asarray(mask, bool).T.reshape(-1)
  padded = np.concatenate([[False], flat, [False]])
  edges = np.flatnonzero(padded[1:] != padded[:-1])
  starts, ends = edges[::2], edges[1::2]
  if starts.size == 0:
    return "-1"
  relative = starts - np.concatenate([[0], ends[:-1]])
  return " ".join(f"{s} {e - b}" for s, b, e in zip(relative, starts, ends))


def read_png(path: str) -> np.ndarray:
  """A grayscale PNG as (H, W) float32 in [0, 1]: 8-bit / 255, 16-bit / 65535.

  RGB(A) files are accepted only when their colour channels are equal (many
  tools save grayscale X-rays as RGB); anything else is refused.
  """
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as im:
      im.load()
      mode = im.mode
      pixels = np.asarray(im)
  except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as e:
    raise BadInputError(f"{path}: not a readable PNG ({e})") from None
  if mode == "L":
    return (pixels / 255.0).astype(np.float32)
  if mode in ("I;16", "I;16B", "I"):
    if pixels.min() < 0 or pixels.max() > 65535:
      raise BadInputError(f"{path}: 32-bit PNG values outside 0..65535")
    return (pixels / 65535.0).astype(np.float32)
  if mode in ("RGB", "RGBA", "LA") and pixels.ndim == 3:
    colour = pixels[..., :3] if mode != "LA" else pixels[..., :1]
    if np.all(colour == colour[..., :1]):
      return (colour[..., 0] / 255.0).astype(np.float32)
    raise BadInputError(f"{path}: colour PNG ({mode} with different channels); expected "
                        "a grayscale X-ray")
  raise BadInputError(f"{path}: unsupported PNG mode {mode!r}; expected 8- or 16-bit "
                      "grayscale")


@dataclasses.dataclass(frozen=True)
class Task:
  """One example to decode in a worker: the image file and its annotations.

  ``boxes`` are ``(x, y, w, h)`` in the file's pixels; ``rle`` are SIIM rows
  (their union is the mask); ``mask_path`` a mask PNG. The mask is the union
  of whichever is given (boxes rasterized after scaling to the output size,
  RLE and mask PNGs resized); ``coco_masks`` COCO run-length masks
  ``((h, w), counts)`` (`coco_rle.decode`), e.g. from CheXlocalize's JSON;
  with none of them it is empty. ``rows`` name
  the CSV row (``file:line``) of each box or RLE row, in order, for messages.
  """

  id: str
  path: str
  label: int
  size: int
  boxes: tuple[tuple[float, float, float, float], ...] = ()
  rle: tuple[str, ...] = ()
  mask_path: str | None = None
  coco_masks: tuple[tuple[tuple[int, int], str | tuple[int, ...]], ...] = ()
  fields: tuple[tuple[str, str], ...] = ()  # extra text fields, e.g. ("class", ...)
  rows: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Bad:
  """Why a task's example could not be made (returned by a worker, not raised)."""

  kind: str
  where: str
  what: str


@dataclasses.dataclass(frozen=True)
class Example:
  """A decoded record, and whether its files annotate anything (a box, a mask pixel).

  ``annotated`` is about the source, before resizing: a positive that is
  annotated but whose ``record['mask']`` is empty lost its mask to resizing.
  """

  record: dict[str, Any]
  annotated: bool


HEADER_FIELDS = ("view_position", "sex", "age", "patient_id")


def load_example(task: Task) -> Example | Bad:
  """The record of ``task``, or :class:`Bad`. Runs in a worker process.

  Bad inputs are returned, never raised: an exception crossing the process
  pool would stop the build whatever ``on_bad_input`` says.
  """
  from saliency_jax.data import coco_rle  # pylint: disable=g-import-not-at-top
  from saliency_jax.data import dicom  # pylint: disable=g-import-not-at-top
  from saliency_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  try:
    if task.path.lower().endswith(".png"):
      image = read_png(task.path)
      header = dict(view_position="", sex="", age=float("nan"), patient_id="")
    else:
      image, header = dicom.read(task.path)
  except (dicom.DicomError, errors.InputError) as e:
    return Bad("unreadable_image", task.path, str(e).removeprefix(f"{task.path}: "))
  except OSError as e:  # deleted or unreadable since the folder was listed
    return Bad("unreadable_image", task.path, f"cannot open ({e.strerror or e})")
  height, width = image.shape
  for index, box in enumerate(task.boxes):
    why = box_outside(box, height, width, task.rows[index] if index < len(task.rows) else "")
    if why:
      return Bad("box_outside_image", task.path, why)
  mask = np.zeros((height, width), bool)
  for index, row in enumerate(task.rle):
    try:
      mask |= decode_rle(row, height, width)
    except ValueError as e:
      where = task.rows[index] if index < len(task.rows) else task.path
      return Bad("bad_rle", where, f"RLE of {task.id} ({task.path}): {e}")
  for size, counts in task.coco_masks:
    if tuple(size) != (height, width):
      return Bad("mask_shape", task.path, f"COCO mask of {task.id} is {size[1]} x {size[0]}, "
                 f"image {task.path} is {width} x {height}")
    try:
      mask |= coco_rle.decode({"size": list(size), "counts": counts})
    except ValueError as e:
      return Bad("bad_rle", task.path, f"COCO RLE of {task.id}: {e}")
  if task.mask_path:
    try:
      mask_image = read_png(task.mask_path)
    except errors.InputError as e:
      return Bad("unreadable_mask", task.mask_path, str(e).removeprefix(f"{task.mask_path}: "))
    if mask_image.shape != image.shape:
      return Bad("mask_shape", task.mask_path, f"mask is {mask_image.shape[1]} x "
                 f"{mask_image.shape[0]}, image {task.path} is {width} x {height}")
    mask |= mask_image > 0
  annotated = bool(task.boxes) or bool(mask.any())
  boxes = scale_boxes(np.array(task.boxes, np.float64), height, width, task.size)
  # Boxes are rasterized at the output size, so the mask is exactly their union there.
  mask = resize_mask(mask, task.size) | synthetic.rasterize_boxes(
      boxes, len(boxes), task.size, task.size)
  record = dict(image=to_stored(resize_image(image, task.size))[..., None],
                label=task.label, boxes=boxes, mask=mask,
                id=task.id, **{k: header[k] for k in HEADER_FIELDS}, **dict(task.fields))
  record["age"] = np.float32(record["age"])
  return Example(record, annotated)


@dataclasses.dataclass
class EmptyMasks:
  """Positives (label 1) whose stored mask has no pixel, counted per split.

  Localization is evaluated on positives with a mask pixel, so these are left
  out of it; they are counted, never dropped silently. Two kinds:
  ``empty_mask_positives``, annotated in the files (a box, an RLE run, a mask
  PNG pixel) but without a pixel at ``image_size``: regions covering less
  than half of every pixel (see :func:`resize_mask`), boxes holding no pixel
  corner (see ``synthetic.rasterize_boxes``); ``unannotated_positives``, with
  no box and no mask pixel in the files at all. The first ids of each are
  kept as examples.
  """

  image_size: int
  counts: dict[str, collections.Counter] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(collections.Counter))
  examples: dict[str, list[str]] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(list))

  KINDS = ("empty_mask_positives", "unannotated_positives")
  MAX_EXAMPLES = 10

  def record(self, split: str, example: Example) -> None:
    """Counts ``example`` if it is a positive without a mask pixel."""
    if example.record["label"] != 1 or np.any(example.record["mask"]):
      return
    kind = self.KINDS[0] if example.annotated else self.KINDS[1]
    self.counts[kind][split] += 1
    if len(self.examples[kind]) < self.MAX_EXAMPLES:
      self.examples[kind].append(str(example.record["id"]))

  def metadata(self) -> dict[str, Any]:
    """``{kind: {num, per_split, examples[, image_size]}}`` for the dataset metadata."""
    out = {}
    for kind in self.KINDS:
      per_split = {s: int(self.counts[kind][s]) for s in SPLITS}
      out[kind] = dict(num=sum(per_split.values()), per_split=per_split,
                       examples=list(self.examples[kind]))
    out[self.KINDS[0]]["image_size"] = int(self.image_size)
    return out


def features(size: int, label_names: Sequence[str], text_fields: Sequence[str] = ()):
  """The TFDS features of a manual-download dataset (images stored as uint16)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  text = {name: tfds.features.Text() for name in ("id", "view_position", "sex",
                                                   "patient_id", *text_fields)}
  # Raw bytes: the default stores every pixel as an int64 protobuf varint,
  # which made serializing cost as much as decoding the DICOM.
  encoding = tfds.features.Encoding
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.uint16,
                                    encoding=encoding.BYTES),
      "label": tfds.features.ClassLabel(names=list(label_names)),
      "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
      "mask": tfds.features.Tensor(shape=(size, size), dtype=np.bool_,
                                   encoding=encoding.ZLIB),
      "age": tfds.features.Scalar(dtype=np.float32),
      **text,
  })


@dataclasses.dataclass(frozen=True)
class Labels:
  """What a labels CSV says per image: label, boxes and patient, and every id it names.

  ``named`` includes the ids whose rows were bad (so a split assignment over
  ``named`` does not move when rows are fixed or skipped); ``labels`` holds
  only the ids whose rows were all good. ``rows`` holds, per id, the
  ``file:line`` of each of its boxes (in the order of ``labels``' boxes).
  """

  labels: dict[str, tuple[int, list[tuple[float, float, float, float]], str]]
  named: list[str]
  rows: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def read_box_csv(path: str, problems: Problems, *, id_column: str, label_column: str,
                 with_boxes: bool = True, box_iff_positive: bool = False,
                 group_column: str | None = None) -> Labels:
  """Reads a one-row-per-box CSV (RSNA's layout): id, x, y, width, height, label.

  An image without a box has one row with empty box columns. Each row is
  checked (label 0 or 1, box all-empty or all-positive numbers, no duplicate
  row, with ``box_iff_positive`` a box exactly on label-1 rows); the rows of
  one image must agree on the label and the group (patient). A bad row makes
  its whole image bad: its remaining boxes cannot be trusted.
  """
  box_columns = ("x", "y", "width", "height") if with_boxes else ()
  rows = read_csv(path, (id_column, *box_columns, label_column))
  values: dict[str, set[int]] = collections.defaultdict(set)
  boxes: dict[str, list[tuple]] = collections.defaultdict(list)
  box_rows: dict[str, list[str]] = collections.defaultdict(list)
  groups: dict[str, str] = {}
  seen, bad = set(), set()
  for line, row in rows:
    where = f"{path}:{line}"
    if "__malformed__" in row:
      problems.record("bad_csv_row", where, row["__malformed__"])
      continue
    image_id = row[id_column]
    if not image_id:
      problems.record("bad_csv_row", where, f"empty {id_column}")
      continue
    key = tuple(sorted(row.items()))
    if key in seen:
      problems.record("duplicate_row", where, f"duplicate row for {image_id}")
      bad.add(image_id)
      continue
    seen.add(key)
    group = (row.get(group_column) if group_column else None) or image_id
    try:
      if row[label_column] not in ("0", "1"):
        raise ValueError(f"{label_column} must be 0 or 1, got {row[label_column]!r}")
      label = int(row[label_column])
      box = parse_box(row) if with_boxes else None
      if box_iff_positive and (box is None) == (label == 1):
        raise ValueError(f"{label_column} {label} with {'no box' if box is None else 'a box'}"
                         f": {label_column} 1 rows carry a box, 0 rows an empty one")
      if groups.setdefault(image_id, group) != group:
        raise ValueError(f"rows name patients {groups[image_id]!r} and {group!r}")
    except ValueError as e:
      problems.record("bad_csv_row", where, f"{image_id}: {e}")
      bad.add(image_id)
      continue
    values[image_id].add(label)
    if box is not None:
      boxes[image_id].append(box)
      box_rows[image_id].append(where)
  labels = {}
  for image_id, labels_seen in sorted(values.items()):
    if image_id in bad:
      continue
    if len(labels_seen) > 1:
      problems.record("bad_csv_row", path, f"{image_id} has rows with {label_column} 0 and 1")
      continue
    labels[image_id] = (labels_seen.pop(), boxes[image_id], groups[image_id])
  return Labels(labels, sorted(set(values) | bad),
                {i: box_rows[i] for i in labels if box_rows[i]})


def find_files(folder: str, extensions: Sequence[str], what: str) -> dict[str, str]:
  """id (file name without extension) -> path, searching ``folder`` recursively.

  A missing folder and an id found twice are errors in either mode: the
  first means a wrong ``manual_dir``, the second an ambiguous image.
  """
  if not os.path.isdir(folder):
    raise BadInputError(f"{folder}: missing; expected {what}")
  found: dict[str, str] = {}
  for parent, _, names in sorted(os.walk(folder)):
    for name in sorted(names):
      stem, ext = os.path.splitext(name)
      if ext.lower() not in extensions:
        continue
      path = os.path.join(parent, name)
      if stem in found:
        raise BadInputError(f"{path}: a second file for id {stem} (the first is "
                            f"{found[stem]})")
      found[stem] = path
  return found
