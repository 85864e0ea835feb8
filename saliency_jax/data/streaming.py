"""Splits read batch by batch from their TFDS array_record files, never whole.

A split too large for host memory (RSNA at 320 px: ~5 GB of float32 training
images) is read by record index: :class:`Split` decodes only the records a
batch names. :func:`training_batches` yields the batch of every training step
in the order :func:`pipeline.batch_at_step` gives on the device (the epoch's
permutation computed once per epoch on the host), so a streamed run trains on
exactly the batches of an in-memory one and a resumed run stays bit-identical;
:class:`Prefetcher` reads a few batches ahead in a background thread and starts
their transfer to the device, so the device does not wait for the disk.

What a split holds besides its images (labels, which positives have a mask
pixel, the stacked arrays' widths) comes from one chunked pass over it,
cached in the build's folder (``index-<split>.json``): a later run reads only
that file. :func:`keep_in_memory` decides ``config.train.data_in_memory``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax.data import pipeline, synthetic

# config.train.data_in_memory='auto': a split whose images take fewer float32
# bytes than this is read whole into memory (and onto the device), else streamed.
IN_MEMORY_LIMIT_BYTES = 1 << 30
PREFETCH = 4  # batches read ahead of the device
INDEX_CHUNK = 256  # records decoded at once by the index pass
_INDEX_VERSION = 1
_INDEX_CACHE: dict[tuple[str, str], "SplitIndex"] = {}
_TEXT = ("id", "view_position", "sex", "patient_id", "class")


@dataclasses.dataclass(frozen=True)
class SplitIndex:
  """One split without its images.

  ``label`` (N,) int32 and ``annotated`` (N,) bool (the record's mask has a
  pixel: a box or a mask) per record; ``box_rows`` and ``text_widths``, the
  shapes :func:`pipeline.load_split` gives the whole split's ``boxes`` and
  string arrays, so that records read alone equal its rows.
  """
  label: np.ndarray
  annotated: np.ndarray
  box_rows: int
  text_widths: dict[str, int]


class Split:
  """One split of a built dataset, read by record index.

  Args:
    name: ``config.dataset``.
    split: ``'train'``, ``'validation'`` or ``'test'``.
    data_dir: TFDS data directory.
    num_examples: only the first this many records (``config.train.num_train``);
      None: all.
    **builder_options: as for :func:`pipeline.load_split`.
  """

  def __init__(self, name: str, split: str, *, data_dir: str | None,
               num_examples: int | None = None, **builder_options: Any):
    self._builder = pipeline.builder(name, data_dir=data_dir, **builder_options)
    self._source = pipeline.split_source(self._builder, split)
    self.name, self.split = name, split
    available = len(self._source)
    if num_examples is not None and num_examples > available:
      raise ValueError(f"config.train.num_train={num_examples} exceeds the {available} "
                       f"training examples of {name}")
    self.num_examples = available if num_examples is None else num_examples

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(self._builder.info.features["image"].shape)

  @property
  def image_bytes(self) -> int:
    """Bytes of the split's images as float32, the in-memory format."""
    return self.num_examples * int(np.prod(self.image_shape)) * 4

  def read(self, indices: Sequence[int] | np.ndarray, *,
           fields: tuple[str, ...] | None = None,
           exact: bool = False) -> dict[str, np.ndarray]:
    """Records ``indices`` as :func:`pipeline.load_split`'s arrays.

    Args:
      indices: record indices (repeats allowed).
      fields: only these arrays (None: all).
      exact: pad ``boxes`` and size the strings as the whole split's arrays
        (from :meth:`index`), so the result equals ``load_split(...)[indices]``
        field by field, bytes included.
    """
    indices = [int(i) for i in indices]
    if indices and not 0 <= min(indices) <= max(indices) < self.num_examples:
      raise IndexError(f"{self.name}/{self.split}: record indices must lie in "
                       f"[0, {self.num_examples}); got {min(indices)}..{max(indices)}")
    layout = {}
    if exact:
      index = self.index()
      layout = dict(box_rows=index.box_rows, text_widths=index.text_widths)
    records = self._source.__getitems__(indices) if indices else []
    return pipeline.stack_records(self._builder.info.features, records, fields=fields,
                                  **layout)

  def index(self) -> SplitIndex:
    """The split's :class:`SplitIndex`, cut to ``num_examples``."""
    whole = split_index(self._builder, self._source, self.split)
    n = self.num_examples
    return dataclasses.replace(whole, label=whole.label[:n], annotated=whole.annotated[:n])


def index_path(builder: Any, split: str) -> str:
  """Where a build keeps ``split``'s index: its own folder, so it is keyed by the build."""
  return os.path.join(builder.data_dir, f"index-{split}.json")


def split_index(builder: Any, source: Any, split: str) -> SplitIndex:
  """The whole split's :class:`SplitIndex`: from its cached file, else one
  pass over the records, ``INDEX_CHUNK`` at a time, then cached."""
  path = index_path(builder, split)
  key = (builder.data_dir, split)
  if key in _INDEX_CACHE:
    return _INDEX_CACHE[key]
  index = _read_index(path, builder.info.full_name, len(source))
  if index is None:
    index = _index_pass(source, builder.info.features)
    record = {"version": _INDEX_VERSION, "build": builder.info.full_name,
              "split": split, "num_examples": len(index.label),
              "label": index.label.tolist(),
              "annotated": index.annotated.astype(int).tolist(),
              "box_rows": index.box_rows, "text_widths": index.text_widths}
    try:
      io_utils.write_text(path, json.dumps(record, sort_keys=True) + "\n")
    except OSError as e:  # a read-only shared build: recomputed per process
      logging.warning("could not cache the index of %s/%s in %s (%s)",
                      builder.info.full_name, split, path, e)
  _INDEX_CACHE[key] = index
  return index


def _read_index(path: str, build: str, num_examples: int) -> SplitIndex | None:
  """The cached index at ``path``; None when missing or not this build's."""
  if not os.path.exists(path):
    return None
  try:
    r = io_utils.read_json(path)
    if (r.get("version") != _INDEX_VERSION or r.get("build") != build
        or r.get("num_examples") != num_examples):
      return None
    return SplitIndex(label=np.asarray(r["label"], np.int32).reshape(-1),
                      annotated=np.asarray(r["annotated"], bool).reshape(-1),
                      box_rows=int(r["box_rows"]),
                      text_widths={k: int(v) for k, v in r["text_widths"].items()})
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    logging.warning("%s: unreadable split index (%s); recomputing it", path, e)
    return None


def _index_pass(source: Any, features: Any) -> SplitIndex:
  """Label, mask.any, box count and string lengths of every record, chunk by chunk."""
  n = len(source)
  label = np.zeros((n,), np.int32)
  annotated = np.zeros((n,), bool)
  most_boxes = 0
  widths = {field: 1 for field in _TEXT if field in features}
  for start in range(0, n, INDEX_CHUNK):
    records = source.__getitems__(range(start, min(start + INDEX_CHUNK, n)))
    for i, r in enumerate(records, start):
      label[i] = r["label"]
      annotated[i] = bool(np.any(r["mask"]))
      most_boxes = max(most_boxes, len(np.asarray(r["boxes"]).reshape(-1, 4)))
      for field in widths:
        value = r[field].decode() if isinstance(r[field], bytes) else str(r[field])
        widths[field] = max(widths[field], len(value))
  return SplitIndex(label=label, annotated=annotated,
                    box_rows=max(synthetic.MAX_BOXES, most_boxes), text_widths=widths)


def keep_in_memory(setting: Any, image_bytes: int) -> bool:
  """``config.train.data_in_memory``: True, False, or 'auto' (in memory below
  ``IN_MEMORY_LIMIT_BYTES`` of float32 images)."""
  if setting == "auto":
    return image_bytes < IN_MEMORY_LIMIT_BYTES
  if isinstance(setting, bool):
    return setting
  raise errors.ConfigError(f"config.train.data_in_memory={setting!r}: expected 'auto', "
                           "True or False")


# --------------------------------------------------------------- batches ---

def training_order(data_key: jax.Array, first_step: int, last_step: int,
                   num_examples: int, batch_size: int) -> Iterator[np.ndarray]:
  """Record indices of training steps ``first_step`` .. ``last_step - 1``.

  The batch of step t (the state's step before the update) is
  ``pipeline.batch_at_step(data_key, t, n, b)``: rows [(t mod s) b, (t mod s + 1) b)
  of permutation(fold_in(data_key, t // s)), s = n // b; each epoch's
  permutation is computed once, on the host.
  """
  per_epoch = num_examples // batch_size
  if per_epoch < 1:
    raise ValueError(f"batch_size={batch_size} exceeds num_examples={num_examples}")
  epoch, order = None, None
  for step in range(first_step, last_step):
    if step // per_epoch != epoch:
      epoch = step // per_epoch
      order = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch),
                                                num_examples)).astype(np.int32)
    position = step % per_epoch
    yield order[position * batch_size:(position + 1) * batch_size]


class Prefetcher:
  """``read(item)`` of each of ``items``, in order, ``depth`` ahead in a thread.

  Use as a context manager: leaving it stops the thread, whether or not every
  item was consumed. An exception raised by ``read`` is raised by the
  iteration, at the item that raised it.
  """

  _DONE = object()

  def __init__(self, read: Callable[[Any], Any], items: Iterable[Any], *,
               depth: int = PREFETCH):
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._work, args=(read, iter(items)),
                                    daemon=True, name="saliency_jax-prefetch")

  def _put(self, item: Any) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _work(self, read: Callable[[Any], Any], items: Iterator[Any]) -> None:
    try:
      for item in items:
        if self._stop.is_set() or not self._put((read(item), None)):
          return
    except BaseException as e:  # pylint: disable=broad-except
      self._put((None, e))
      return
    self._put((self._DONE, None))

  def __enter__(self) -> "Prefetcher":
    self._thread.start()
    return self

  def __exit__(self, *exc: Any) -> None:
    self._stop.set()
    self._thread.join()

  def __iter__(self) -> Iterator[Any]:
    while True:
      value, error = self._queue.get()
      if error is not None:
        raise error
      if value is self._DONE:
        return
      yield value


def training_batches(split: Split, labels: np.ndarray, data_key: jax.Array,
                     first_step: int, last_step: int, batch_size: int, *,
                     depth: int = PREFETCH) -> Prefetcher:
  """(images, labels) on the device for steps ``first_step`` .. ``last_step - 1``
  (:func:`training_order`), read ahead; ``labels`` (N,) are the host labels
  trained on (permuted under ``randomize_labels``)."""
  def read(indices: np.ndarray) -> tuple[jax.Array, jax.Array]:
    images = split.read(indices, fields=("image",))["image"]
    return jax.device_put(images), jax.device_put(labels[indices])
  return Prefetcher(read, training_order(data_key, first_step, last_step,
                                       split.num_examples, batch_size), depth=depth)


def evaluation_batches(split: Split, batch_size: int, *,
                       depth: int = PREFETCH) -> Prefetcher:
  """The split's images in order on the device, ``batch_size`` at a time, the
  last batch padded with record 0 (as ``pipeline.epoch_indices`` pads)."""
  n = split.num_examples
  batches = [np.where(rows < n, rows, 0) for rows in
             (np.arange(start, start + batch_size) for start in range(0, n, batch_size))]

  def read(indices: np.ndarray) -> jax.Array:
    return jax.device_put(split.read(indices, fields=("image",))["image"])
  return Prefetcher(read, batches, depth=depth)
