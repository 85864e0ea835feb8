"""Datasets as in-memory arrays, and pure-JAX batching and augmentation.

`load_split` builds a TFDS dataset (array_record, no TensorFlow) if needed and
returns one split as stacked numpy arrays, the same format for every dataset.
Batching is index arithmetic in JAX so that a training loop can keep the whole
dataset on device and gather each batch inside its jitted step: the batch of
step ``t`` is a pure function of ``(key, t)``, which makes resumed training
bit-identical. A split too large to hold whole is read record by record
(:func:`data_source`, :func:`stack_records`) by :mod:`saliency_jax.data.streaming`,
which gives the same batches from the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib
import inspect
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import errors
from saliency_jax.data import manual, synthetic


def _synthetic_cxr(data_dir: str | None, **options: Any):
  # Imported here so that batching works without importing TFDS.
  from saliency_jax.data.synthetic_cxr import SyntheticCxr, make_config
  allowed = sorted(inspect.signature(make_config).parameters)
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise errors.ConfigError(f"synthetic_cxr: unknown builder options {unknown}; allowed: "
                             f"{allowed}")
  return SyntheticCxr(data_dir=data_dir, config=make_config(**options))


def _manual(module: str, cls: str) -> Callable[..., Any]:
  """Factory for a manual-download builder: options go to its ``make_config``."""
  def factory(data_dir: str | None, *, manual_dir: str | None = None, **options: Any):
    manual.check_manual_dir(module, manual_dir)
    package = importlib.import_module(f"saliency_jax.data.{module}")
    from saliency_jax.data import manual_builder  # pylint: disable=g-import-not-at-top
    shared = set(inspect.signature(manual_builder.make_config).parameters)
    allowed = sorted((set(inspect.signature(package.make_config).parameters) | shared)
                     - {"options", "label_files", "stamp_extra"})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
      raise errors.ConfigError(f"{module}: unknown builder options {unknown}; allowed: "
                               f"{allowed}")
    config = package.make_config(manual_dir=manual_dir, **options)
    return getattr(package, cls)(data_dir=data_dir, config=config)
  return factory


# config.dataset -> builder factory (data_dir, **options) -> tfds DatasetBuilder,
# all with the same record format: image (H, W, C), label, boxes (K, 4), mask, id.
_BUILDERS: dict[str, Callable[..., Any]] = {
    "synthetic_cxr": _synthetic_cxr,
    "rsna_pneumonia": _manual("rsna_pneumonia", "RsnaPneumonia"),
    "siim_acr_pneumothorax": _manual("siim_acr_pneumothorax", "SiimAcrPneumothorax"),
    "image_folder": _manual("image_folder", "ImageFolder"),
}
# Record fields beyond the common format that are stacked when a dataset has them.
_TEXT_FIELDS = ("view_position", "sex", "patient_id", "class")
_REPORTED: set[str] = set()  # builds whose skip counts were printed by this process


def _quiet_custom_config(record: logging.LogRecord) -> bool:
  # Every manual-download config is made per run (its name carries a CSV
  # fingerprint), so TFDS's "Using custom data configuration" says nothing.
  return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_quiet_custom_config)


def builder(name: str, *, data_dir: str | None, **builder_options: Any):
  """The TFDS builder of ``config.dataset`` ``name``, built into ``data_dir`` if needed."""
  if name not in _BUILDERS:
    raise errors.ConfigError(f"config.dataset={name!r} is not supported; allowed values: "
                             f"{sorted(_BUILDERS)}")
  manual_dir = builder_options.get("manual_dir")
  b = _BUILDERS[name](data_dir, **builder_options)
  # data_path first: is_prepared() logs a warning for a missing directory.
  if not (b.data_path.exists() and b.is_prepared()):
    # Jobs of a sweep, or the processes of a multi-host run, may start at
    # once on one data_dir: one builds, the others wait and then read.
    with _build_lock(str(b.data_path)):
      b = _BUILDERS[name](data_dir, **builder_options)
      if not (b.data_path.exists() and b.is_prepared()):
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
        # Ours report their progress (saliency_jax.progress); TFDS's bars
        # have no total and fill logs with carriage returns.
        tfds.disable_progress_bar()
        print(f"{name}: building {b.info.full_name} in {b.data_dir} ...", flush=True)
        start = time.perf_counter()
        b.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        print(f"{name}: built {b.info.full_name} in {time.perf_counter() - start:.1f} s",
              flush=True)
  if b.data_dir not in _REPORTED:
    _REPORTED.add(b.data_dir)
    _print_left_out(name, b.info.metadata or {}, b.data_dir)
  return b


@contextlib.contextmanager
def _build_lock(data_path: str):
  """An exclusive lock beside the build's folder, held while it is built."""
  os.makedirs(os.path.dirname(data_path) or ".", exist_ok=True)
  fd = os.open(data_path.rstrip("/") + ".build.lock", os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      print(f"waiting for another process building {data_path} ...", flush=True)
      fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)


def _print_left_out(name: str, metadata: dict[str, Any], data_dir: str) -> None:
  """Says once per build what it skipped and which positives have no mask pixel."""
  if metadata.get("num_skipped"):
    print(f"{name}: {metadata['num_skipped']} bad input(s) were skipped when it was built: "
          f"{metadata['skipped']} (listed in {data_dir}/metadata.json)", flush=True)
  empty = metadata.get("empty_mask_positives") or {}
  if empty.get("num"):
    print(f"{name}: {empty['num']} positive image(s) have an empty mask at "
          f"{empty.get('image_size')} px (per split {empty.get('per_split')}); they are not "
          f"among the evaluated positives (ids in {data_dir}/metadata.json)", flush=True)
  unannotated = metadata.get("unannotated_positives") or {}
  if unannotated.get("num"):
    print(f"{name}: {unannotated['num']} positive image(s) have no box and no mask pixel "
          f"(per split {unannotated.get('per_split')}); they are not among the evaluated "
          f"positives (ids in {data_dir}/metadata.json)", flush=True)


def dataset_metadata(name: str, *, data_dir: str | None, **builder_options: Any
                     ) -> dict[str, Any]:
  """What a build recorded beyond the examples: skip counts, classes left out, ..."""
  return dict(builder(name, data_dir=data_dir, **builder_options).info.metadata or {})


def load_split(name: str, split: str, *, data_dir: str | None,
               **builder_options: Any) -> dict[str, np.ndarray]:
  """One split of a dataset as arrays, building the TFDS dataset first if needed.

  Args:
    name: ``config.dataset``; one of ``_BUILDERS``.
    split: e.g. ``'train'``, ``'validation'``, ``'test'``.
    data_dir: TFDS data directory (None: TFDS's default).
    **builder_options: the dataset's generation options (for ``synthetic_cxr``:
      image_size, num_train, num_validation, num_test, prevalence, shortcut, seed).

  Returns:
    ``image`` (N, H, W, C) float32 in [0, 1], ``label`` (N,) int32, ``boxes``
    (N, K, 4) float32 ``(x, y, w, h)`` padded with 0 (K = max(MAX_BOXES, most
    boxes of an example)), ``num_boxes`` (N,) int32, ``mask`` (N, H, W) bool,
    ``id`` (N,) str; the manual-download datasets add the header fields
    ``view_position``, ``sex``, ``patient_id`` (str), ``age`` (float32 years,
    NaN if unknown) and, for RSNA, ``class``.
  """
  source = data_source(name, split, data_dir=data_dir, **builder_options)
  return stack_records(source.dataset_info.features,
                       source.__getitems__(range(len(source))))


def data_source(name: str, split: str, *, data_dir: str | None, **builder_options: Any):
  """Random access to one split's records (TFDS array_record data source);
  ``source[i]`` decodes record ``i`` only."""
  return split_source(builder(name, data_dir=data_dir, **builder_options), split)


def split_source(b: Any, split: str):
  """:func:`data_source` of split ``split`` of the built ``b`` (:func:`builder`)."""
  if split not in b.info.splits:
    raise ValueError(f"{b.name}/{b.info.config_name}: no split {split!r}; available: "
                     f"{sorted(b.info.splits)}")
  return b.as_data_source(split=split)


def stack_records(features: Any, records: list[dict[str, Any]], *,
                  fields: tuple[str, ...] | None = None,
                  box_rows: int | None = None,
                  text_widths: dict[str, int] | None = None) -> dict[str, np.ndarray]:
  """Decoded records of a split as :func:`load_split`'s arrays.

  Args:
    features: the build's ``info.features``.
    records: decoded records (``data_source(...)[i]``).
    fields: only these arrays (``image`` and ``label`` are cheap to stack
      alone); None: every one.
    box_rows: pad ``boxes`` to this many rows (the whole split's K), so that
      a subset equals those rows of the whole split's arrays.
    text_widths: likewise the string arrays' widths (numpy ``<U{width}``).
  """
  image_feature = features["image"]
  scale = (np.float32(manual.IMAGE_SCALE)  # manual datasets store [0, 1] as uint16
           if image_feature.np_dtype == np.uint16 else None)
  if fields is not None and set(fields) <= {"image", "label"}:
    arrays = {}
    if "image" in fields:
      image = np.zeros((0, *image_feature.shape), np.float32) if not records else (
          np.stack([r["image"] for r in records]).astype(np.float32))
      arrays["image"] = image if scale is None else image / scale
    if "label" in fields:
      arrays["label"] = np.array([r["label"] for r in records], np.int32)
    return arrays
  examples = [{k: v.decode() if isinstance(v, bytes) else v for k, v in r.items()}
              for r in records]
  arrays = synthetic.stack_examples(examples, image_shape=tuple(image_feature.shape))
  if scale is not None:
    arrays["image"] = arrays["image"] / scale
  for field in _TEXT_FIELDS:
    if field in features:
      arrays[field] = np.array([e[field] for e in examples], dtype=str)
  if "age" in features:
    arrays["age"] = np.array([e["age"] for e in examples], np.float32)
  if box_rows is not None and arrays["boxes"].shape[1] < box_rows:
    boxes = arrays["boxes"]
    arrays["boxes"] = np.zeros((len(boxes), box_rows, 4), np.float32)
    arrays["boxes"][:, :boxes.shape[1]] = boxes
  for field, width in (text_widths or {}).items():
    arrays[field] = arrays[field].astype(f"<U{width}")
  return arrays if fields is None else {k: arrays[k] for k in fields}


@functools.partial(jax.jit, static_argnames=("num_examples", "batch_size", "shuffle",
                                             "drop_remainder"))
def epoch_indices(key: jax.Array, num_examples: int, batch_size: int, *,
                  shuffle: bool = True, drop_remainder: bool = False
                  ) -> tuple[jax.Array, jax.Array]:
  """One epoch as ``(indices, valid)``, both (num_batches, batch_size).

  ``indices`` is a permutation of range(n) (identity without ``shuffle``) cut
  into batches; the last partial batch is padded with index 0 and
  ``valid = False``, num_batches = ceil(n / b). With ``drop_remainder`` only the
  floor(n / b) full batches are kept.
  """
  order = (jax.random.permutation(key, num_examples) if shuffle
           else jnp.arange(num_examples)).astype(jnp.int32)
  if drop_remainder:
    num_batches = num_examples // batch_size
    used = num_batches * batch_size
    return (order[:used].reshape(num_batches, batch_size),
            jnp.ones((num_batches, batch_size), bool))
  num_batches = -(-num_examples // batch_size)
  pad = num_batches * batch_size - num_examples
  indices = jnp.concatenate([order, jnp.zeros((pad,), jnp.int32)])
  valid = jnp.arange(num_batches * batch_size) < num_examples
  return (indices.reshape(num_batches, batch_size),
          valid.reshape(num_batches, batch_size))


@functools.partial(jax.jit, static_argnames=("num_examples", "batch_size"))
def batch_at_step(key: jax.Array, step: jax.Array | int, num_examples: int,
                  batch_size: int) -> jax.Array:
  """Indices (batch_size,) of training step ``step``: full batches, remainder dropped.

  epoch = step // s, s = n // b steps per epoch; the batch is rows
  [(step mod s) b, (step mod s + 1) b) of permutation(fold_in(key, epoch)), i.e.
  ``epoch_indices(fold_in(key, epoch), n, b, drop_remainder=True)[0][step mod s]``.
  """
  steps_per_epoch = num_examples // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"batch_size={batch_size} exceeds num_examples={num_examples}")
  step = jnp.asarray(step, jnp.int32)
  epoch, position = step // steps_per_epoch, step % steps_per_epoch
  order = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
  return jax.lax.dynamic_slice(order.astype(jnp.int32), (position * batch_size,),
                               (batch_size,))


def _augment_one(key: jax.Array, image: jax.Array, max_shift: int, brightness: float,
                 contrast: float) -> jax.Array:
  k_shift, k_bright, k_contrast = jax.random.split(key, 3)
  height, width, channels = image.shape
  dy, dx = jax.random.randint(k_shift, (2,), -max_shift, max_shift + 1)
  padded = jnp.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                   mode="edge")
  # out[r, c] = image[r - dy, c - dx], edge pixels repeated beyond the border.
  shifted = jax.lax.dynamic_slice(padded, (max_shift - dy, max_shift - dx, 0),
                                  (height, width, channels))
  gain = jax.random.uniform(k_contrast, (), minval=1 - contrast, maxval=1 + contrast)
  offset = jax.random.uniform(k_bright, (), minval=-brightness, maxval=brightness)
  mean = shifted.mean()
  out = (shifted - mean) * gain + mean + offset
  return jnp.clip(out, 0.0, 1.0).astype(image.dtype)


@functools.partial(jax.jit, static_argnames=("max_shift", "brightness", "contrast"))
def augment(key: jax.Array, images: jax.Array, *, max_shift: int = 4,
            brightness: float = 0.03, contrast: float = 0.05) -> jax.Array:
  """Light per-image augmentation of a batch (N, H, W, C) in [0, 1].

  x -> clip((T x - mean) g + mean + o, 0, 1): T a translation by up to
  ``max_shift`` pixels per axis with edge padding, contrast gain
  g ~ U(1 - contrast, 1 + contrast), offset o ~ U(-brightness, brightness);
  one key per image. No flips: chest anatomy is not left-right symmetric.
  Masks and boxes are not moved: this is for classifier training.
  """
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(_augment_one, in_axes=(0, 0, None, None, None))(
      keys, images, max_shift, brightness, contrast)
