"""Weights in and out of our models as flat ``{name: array}`` maps and ``.npz`` files.

A flat name is the variable's attribute path joined by ``/``, the block first:
``mixed0/branch1x1/conv/kernel``, ``conv2/layers/0/bn1/mean``,
``predictions/bias``. Every variable is there, trainable or not (BatchNorm's
``mean`` and ``var`` too), so an exported ``.npz`` is the whole eval-mode
model and any tool that reads NumPy files can use it without this package.
The file also holds :data:`METADATA_KEY`, a JSON string saying how to build
the model (``model``, ``width``, ``num_classes``, ``in_channels``,
``preprocessing``).

Loading builds the model abstractly (``nnx.eval_shape``: shapes only, no
initializer runs, which for InceptionV3 would take ~20 s on a CPU) and fills
every variable from the map, so a file that does not match raises one error
naming the first missing or mis-shaped variable and the shape expected.

Reading is safe on any file: every failure is one
:class:`saliency_jax.errors.WeightsError` naming the file and what is wrong,
nothing is unpickled, and nothing is allocated from what a file merely claims.
An ``.npz`` member's ``.npy`` header (shape, dtype) is read first and checked
against the member's uncompressed size and the model's expected shape; only
then is its data read, at most that many bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax.models import layers

METADATA_KEY = "__saliency_jax__"
HEAD = "predictions"  # every model's classifier (global pool + dense)
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
SUFFIXES = (".npz",) + KERAS_SUFFIXES
METADATA_MAX_BYTES = 1 << 20  # the metadata is a few hundred bytes of JSON
_CHUNK = 1 << 20  # bytes read from a zip member at a time
_ZIP_MAGIC = b"PK\x03\x04"
# What a zip member's read can raise on a damaged file (CRC, deflate stream,
# end of file, encryption or an unknown compression) besides OSError.
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError)


class NoClassifierError(errors.WeightsError):
  """A weights file without a classifier (saved without its top), and no
  ``num_classes`` to put a new one there."""


def flat_name(path: tuple[Any, ...]) -> str:
  return "/".join(str(p) for p in path)


def flat_values(model: nnx.Module) -> dict[str, np.ndarray]:
  """Every variable of ``model`` as a NumPy array, by flat name."""
  return {flat_name(path): np.asarray(v.get_value())
          for path, v in nnx.to_flat_state(nnx.state(model))}


def expected_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
  """Flat name -> shape of every variable of ``model`` (abstract or not)."""
  return {flat_name(path): tuple(v.get_value().shape)
          for path, v in nnx.to_flat_state(nnx.state(model))}


def abstract_model(name: str, **kwargs: Any) -> nnx.Module:
  """``models.create(name, **kwargs)`` with shapes only, nothing initialized.

  A fresh module each call, merged from a cached split: tracing the
  constructor costs seconds for the big networks.
  """
  graphdef, state = _abstract_split(name, tuple(sorted(kwargs.items())))
  return nnx.merge(graphdef, state)


@functools.lru_cache(maxsize=16)
def _abstract_split(name: str, kwargs: tuple[tuple[str, Any], ...]):
  from saliency_jax import models  # pylint: disable=g-import-not-at-top
  return nnx.split(nnx.eval_shape(
      lambda: models.create(name, rngs=nnx.Rngs(0), **dict(kwargs))))


def check_shapes(found: Mapping[str, tuple[int, ...]],
                 shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
  """Raises WeightsError at the first name of ``shapes`` missing from ``found``
  or with another shape there, or at the first name of ``found`` the model
  does not have. Only shapes: run before any data is read."""
  for name, shape in shapes.items():
    if name not in found:
      raise errors.WeightsError(f"{source}: no weights for {name!r} (expected "
                                f"shape {shape}); is it a file of this model?")
    if tuple(found[name]) != tuple(shape):
      raise errors.WeightsError(f"{source}: {name!r} has shape "
                                f"{tuple(found[name])}, expected {shape}")
  extra = [name for name in found if name not in shapes]
  if extra:
    raise errors.WeightsError(
        f"{source}: {len(extra)} arrays the model does not have, the first "
        f"{extra[0]!r}; is it a file of another model?")


def check_values(values: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                 source: str) -> None:
  """:func:`check_shapes` of the arrays ``values`` (WeightsError, naming ``source``)."""
  check_shapes({name: np.shape(v) for name, v in values.items()}, shapes, source)


def assign(model: nnx.Module, values: Mapping[str, Any], source: str) -> nnx.Module:
  """``model`` (abstract or not) with every variable taken from ``values``.

  Values are cast to each variable's dtype; the result is in eval mode.
  """
  check_values(values, expected_shapes(model), source)
  graphdef, state = nnx.split(model)
  state = nnx.map_state(
      lambda path, v: v.replace(jnp.asarray(values[flat_name(path)],
                                            v.get_value().dtype)), state)
  out = nnx.merge(graphdef, state)
  out.eval()
  return out


def fresh_head(in_features: int, num_classes: int,
               seed: int | jax.Array) -> dict[str, np.ndarray]:
  """A new classifier as Keras' ``Dense`` starts: Glorot-uniform kernel, zero bias."""
  key = jax.random.key(seed) if isinstance(seed, int) else seed
  kernel = nnx.initializers.glorot_uniform()(key, (in_features, num_classes))
  return {f"{HEAD}/kernel": np.asarray(kernel),
          f"{HEAD}/bias": np.zeros((num_classes,), np.float32)}


# --------------------------------------------------------------- .npz ---

def save_npz(path: str, model: nnx.Module, *, name: str, width: float,
             in_channels: int) -> None:
  """Writes every variable of ``model`` (model ``name`` at ``width``) to ``path``.

  Atomic (temporary file + rename). Read back with :func:`from_npz`, or with
  ``numpy.load(path)`` anywhere.
  """
  values = flat_values(model)
  meta = dict(model=name, width=float(width), in_channels=int(in_channels),
              num_classes=int(values[f"{HEAD}/kernel"].shape[-1]),
              preprocessing=getattr(model, "preprocessing", "none"))
  io_utils.atomic_write(path, lambda f: np.savez(
      f, **values, **{METADATA_KEY: np.asarray(json.dumps(meta))}))


def open_zip(path: str, what: str) -> zipfile.ZipFile:
  """``path`` opened as a zip archive (``what``: ``.npz``, ``.keras``), or
  WeightsError saying whether it is empty, truncated or another format."""
  try:
    with open(path, "rb") as f:
      start = f.read(len(_ZIP_MAGIC))
  except OSError as e:
    raise errors.WeightsError(f"{path}: cannot be read ({e.strerror or e})") from None
  if not start:
    raise errors.WeightsError(f"{path}: an empty file; expected a {what} file "
                              "(a zip archive)")
  try:
    return zipfile.ZipFile(path)
  except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError,
          OSError) as e:
    if start == _ZIP_MAGIC:
      raise errors.WeightsError(
          f"{path}: a zip archive that is truncated or damaged ({e}); expected "
          f"a whole {what} file") from None
    raise errors.WeightsError(f"{path}: not a {what} file (a zip archive); it "
                              f"starts with {start!r}") from None


@dataclasses.dataclass(frozen=True)
class NpyMember:
  """One ``.npy`` member of an ``.npz`` as its header declares it (no data read).

  Attributes:
    info: the zip entry (``file_size``: its uncompressed bytes).
    shape, dtype, fortran_order: from the ``.npy`` header.
    offset: the bytes of magic string and header; the data follow.
  """
  info: zipfile.ZipInfo
  shape: tuple[int, ...]
  dtype: np.dtype
  fortran_order: bool
  offset: int

  @property
  def nbytes(self) -> int:
    """``prod(shape) * itemsize``: the data bytes the header promises."""
    return math.prod(self.shape) * self.dtype.itemsize


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo,
                path: str) -> NpyMember:
  """The header of member ``info``, checked: format 1.0 / 2.0, a plain numeric
  dtype (or the metadata's string), and ``file_size == offset + nbytes``."""
  where = f"{path}: member {info.filename!r}"
  if not info.filename.endswith(".npy"):
    raise errors.WeightsError(f"{where} is not a .npy array; an .npz holds only "
                              ".npy arrays")
  try:
    with archive.open(info) as f:
      version = np.lib.format.read_magic(f)
      read = {(1, 0): np.lib.format.read_array_header_1_0,
              (2, 0): np.lib.format.read_array_header_2_0}.get(version)
      if read is not None:
        shape, fortran_order, dtype = read(f)
        offset = f.tell()
  except ZIP_READ_ERRORS as e:
    raise errors.WeightsError(f"{where}: cannot be read ({e}); the file is "
                              "damaged or truncated") from None
  except (ValueError, SyntaxError) as e:  # numpy on a bad magic string or header
    raise errors.WeightsError(f"{where}: not a .npy array header ({e})") from None
  if read is None:
    raise errors.WeightsError(f"{where}: .npy format version {version}, expected "
                              "1.0 or 2.0 (what numpy.savez writes)")
  if dtype.hasobject:
    raise errors.WeightsError(
        f"{where}: holds Python objects (dtype {dtype}, stored as a pickle), "
        "not a numeric array; pickles are never loaded")
  metadata = info.filename == METADATA_KEY + ".npy"
  if metadata and not (dtype.kind == "U" and shape == ()):
    raise errors.WeightsError(f"{where}: the metadata has dtype {dtype} and shape "
                              f"{shape}; expected one JSON string")
  if not metadata and (dtype.kind not in "biuf" or dtype.fields or dtype.subdtype):
    raise errors.WeightsError(f"{where}: dtype {dtype}; expected a plain numeric "
                              "(bool, integer or float) array")
  if any(d < 0 for d in shape):
    raise errors.WeightsError(f"{where}: its header declares shape {shape}")
  member = NpyMember(info, tuple(shape), dtype, fortran_order, offset)
  if info.file_size != offset + member.nbytes:
    raise errors.WeightsError(
        f"{where}: its header declares shape {member.shape} of {dtype} "
        f"({member.nbytes} bytes of data), but the member holds "
        f"{info.file_size - offset}; a damaged or forged file")
  return member


def npz_members(archive: zipfile.ZipFile, path: str) -> dict[str, NpyMember]:
  """Every member of an open ``.npz`` by array name, headers checked
  (:func:`_npy_header`); no data read."""
  members = {}
  for info in archive.infolist():
    member = _npy_header(archive, info, path)
    name = info.filename[:-len(".npy")]
    if name in members:
      raise errors.WeightsError(f"{path}: member {info.filename!r} appears twice")
    members[name] = member
  return members


def _read_member(archive: zipfile.ZipFile, member: NpyMember,
                 path: str) -> np.ndarray:
  """The data of a checked member: exactly ``nbytes`` read in chunks into one
  buffer, then viewed as its dtype and shape."""
  where = f"{path}: member {member.info.filename!r}"
  data = np.empty(member.nbytes, np.uint8)
  view, got = memoryview(data), 0
  try:
    with archive.open(member.info) as f:
      f.read(member.offset)
      while got < member.nbytes:
        chunk = f.read(min(_CHUNK, member.nbytes - got))
        if not chunk:
          break
        view[got:got + len(chunk)] = chunk
        got += len(chunk)
      more = f.read(1)  # at the member's end zipfile checks its CRC
  except ZIP_READ_ERRORS as e:
    raise errors.WeightsError(f"{where}: cannot be read ({e}); the file is "
                              "damaged or truncated") from None
  if got < member.nbytes or more:
    raise errors.WeightsError(f"{where}: {'more' if more else got} bytes of data, "
                              f"its header declares {member.nbytes}; the file is "
                              "damaged or truncated")
  order = "F" if member.fortran_order else "C"
  return data.view(member.dtype).reshape(member.shape, order=order)


def _npz_metadata(archive: zipfile.ZipFile, members: Mapping[str, NpyMember],
                  path: str) -> dict[str, Any]:
  """The :data:`METADATA_KEY` record, checked (:func:`check_metadata`); {} if none."""
  member = members.get(METADATA_KEY)
  if member is None:
    return {}
  if member.nbytes > METADATA_MAX_BYTES:
    raise errors.WeightsError(f"{path}: {METADATA_KEY} holds {member.nbytes} "
                              f"bytes; expected a short JSON record "
                              f"(at most {METADATA_MAX_BYTES})")
  text = str(_read_member(archive, member, path)[()]) if member.nbytes else ""
  try:
    meta = json.loads(text)
  except ValueError:
    meta = None
  if not isinstance(meta, dict):
    raise errors.WeightsError(f"{path}: {METADATA_KEY} is not a JSON object: "
                              f"{text[:80]!r}")
  check_metadata(meta, path)
  return meta


def check_metadata(meta: Mapping[str, Any], path: str) -> None:
  """Raises WeightsError when a recorded value cannot build a model: ``model``
  one of ``models.MODELS``, ``width`` > 0, ``in_channels`` and ``num_classes``
  positive integers, ``preprocessing`` one of ``layers.PREPROCESSING``."""
  from saliency_jax import models  # pylint: disable=g-import-not-at-top

  def positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0

  def one_of(choices):
    return lambda v: isinstance(v, str) and v in choices

  expected = {
      "model": (one_of(models.MODELS), f"one of {sorted(models.MODELS)}"),
      "width": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) and v > 0, "a positive number"),
      "in_channels": (positive_int, "a positive integer"),
      "num_classes": (positive_int, "a positive integer"),
      "preprocessing": (one_of(layers.PREPROCESSING),
                        f"one of {layers.PREPROCESSING}"),
  }
  for key, (ok, what) in expected.items():
    if key in meta and not ok(meta[key]):
      raise errors.WeightsError(f"{path}: {METADATA_KEY} records {key}="
                                f"{meta[key]!r}; expected {what}")


def read_npz(path: str, shapes: Mapping[str, tuple[int, ...]] | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(flat values, metadata) of an ``.npz`` written by :func:`save_npz`.

  With ``shapes`` (flat name -> expected shape) the arrays are checked against
  them (:func:`check_shapes`) before any is read; without, each is read as its
  header declares, after checking that the member holds that many bytes.
  """
  with open_zip(path, ".npz") as archive:
    members = npz_members(archive, path)
    meta = _npz_metadata(archive, members, path)
    members.pop(METADATA_KEY, None)
    if shapes is not None:
      check_shapes({k: m.shape for k, m in members.items()}, shapes, path)
    return {k: _read_member(archive, m, path) for k, m in members.items()}, meta


def npz_metadata(path: str) -> dict[str, Any]:
  """Just the metadata of an ``.npz`` (every header checked, no array read)."""
  with open_zip(path, ".npz") as archive:
    return _npz_metadata(archive, npz_members(archive, path), path)


def from_npz(path: str, *, name: str | None = None, width: float | None = None,
             num_classes: int | None = None, in_channels: int | None = None,
             preprocessing: str | None = None,
             seed: int | jax.Array = 0) -> nnx.Module:
  """The model saved in ``path`` by :func:`save_npz`, in eval mode.

  Every array's shape and dtype (its ``.npy`` header) is checked against the
  model before any data is read.

  Args:
    path: the ``.npz`` file.
    name, width: the model; None takes the file's, a different value fails.
    num_classes: None keeps the file's classifier; another count replaces it
      with a new one (:func:`fresh_head`, from ``seed``).
    in_channels: None or the file's.
    preprocessing: None takes the file's; else one of ``layers.PREPROCESSING``.
    seed: int or key for a new classifier.

  Raises:
    WeightsError: naming ``path`` and what is wrong (not an ``.npz``, truncated,
      a non-numeric or pickled member, other metadata, the first missing or
      mis-shaped array and the shape expected).
  """
  with open_zip(path, ".npz") as archive:
    members = npz_members(archive, path)
    meta = _npz_metadata(archive, members, path)
    members.pop(METADATA_KEY, None)
    for key, given in (("model", name), ("width", width),
                       ("in_channels", in_channels)):
      if key not in meta and given is None:
        raise errors.WeightsError(f"{path}: no {METADATA_KEY} record of the "
                                  f"{key}; pass it")
      if given is not None and key in meta and meta[key] != given:
        raise errors.WeightsError(f"{path}: holds {key}={meta[key]!r}, expected "
                                  f"{given!r}")
    name = name or meta["model"]
    kwargs = dict(width=meta.get("width", width),
                  in_channels=meta.get("in_channels", in_channels),
                  preprocessing=preprocessing or meta.get("preprocessing", "none"))
    head = members.get(f"{HEAD}/kernel")
    if head is not None and (len(head.shape) != 2 or head.shape[-1] < 1):
      raise errors.WeightsError(f"{path}: {HEAD}/kernel has shape {head.shape}; "
                                "expected (features, classes)")
    file_classes = None if head is None else head.shape[-1]
    num_classes = num_classes or file_classes
    if num_classes is None:
      raise NoClassifierError(f"{path}: no {HEAD}/kernel; pass num_classes for "
                              "a new head")
    try:
      model = abstract_model(name, num_classes=num_classes, **kwargs)
    except ValueError as e:
      raise errors.WeightsError(f"{path}: no model can be built from it: {e}"
                                ) from None
    shapes = expected_shapes(model)
    if num_classes != file_classes:  # a new classifier: the file's is not read
      shapes = {k: v for k, v in shapes.items() if not k.startswith(HEAD + "/")}
      members = {k: m for k, m in members.items() if not k.startswith(HEAD + "/")}
    check_shapes({k: m.shape for k, m in members.items()}, shapes, path)
    values = {k: _read_member(archive, m, path) for k, m in members.items()}
  if num_classes != file_classes:
    in_features = expected_shapes(model)[f"{HEAD}/kernel"][0]
    values.update(fresh_head(in_features, num_classes, seed))
  return assign(model, values, path)
