"""Weights files that are broken or hostile: one WeightsError naming the file,
nothing unpickled, nothing allocated from what a file merely claims.

Memory is measured with ``tracemalloc``: NumPy registers its array buffers
there, so an array allocated from a forged header (hundreds of MB or TB)
would show in the peak; the limit, 50 MB, is far below every claim here.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tracemalloc
import zipfile
import zlib

import h5py
import numpy as np
import pytest

from saliency_jax import errors
from saliency_jax import models
from saliency_jax.models import keras_import
from saliency_jax.models import weights as weights_lib

WIDTH = 0.25
PEAK_LIMIT = 50 << 20
MIB = 1 << 20


@pytest.fixture(scope="module")
def good_npz(tmp_path_factory):
  """A small_cnn export with random values; loading it once also caches the
  abstract model, so that the memory measured below is the reading alone."""
  model = weights_lib.abstract_model("small_cnn", num_classes=3, in_channels=1,
                                     width=WIDTH)
  rng = np.random.default_rng(0)
  values = {k: rng.uniform(0.5, 1.5, shape).astype(np.float32)
            for k, shape in weights_lib.expected_shapes(model).items()}
  model = weights_lib.assign(model, values, "random")
  path = str(tmp_path_factory.mktemp("good") / "w.npz")
  models.save_npz(path, model, name="small_cnn", width=WIDTH, in_channels=1)
  models.from_npz(path)
  return path


def _members(path: str) -> dict[str, bytes]:
  with zipfile.ZipFile(path) as archive:
    return {name: archive.read(name) for name in archive.namelist()}


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
  f = io.BytesIO()
  np.save(f, array, allow_pickle=allow_pickle)
  return f.getvalue()


def _write_zip(path, members: dict[str, bytes]) -> str:
  with zipfile.ZipFile(path, "w") as archive:
    for name, data in members.items():
      archive.writestr(name, data)
  return str(path)


def _replaced(good: str, dst, members: dict[str, bytes]) -> str:
  """``good`` with ``members`` (name -> bytes) replaced or added."""
  return _write_zip(dst, {**_members(good), **members})


def _deflated_zeros(prefix: bytes, mib: int) -> tuple[bytes, int]:
  """A raw deflate stream of ``prefix`` and ``mib`` MiB of zeros, made without
  compressing them all: after a full flush the compressor starts afresh, so
  every 1 MiB block of zeros compresses to the same bytes (~1 KB).

  Returns (stream, CRC-32 of the uncompressed bytes).
  """
  zeros = bytes(MIB)
  c = zlib.compressobj(9, zlib.DEFLATED, -15)
  head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
  block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
  assert c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH) == block
  crc = zlib.crc32(prefix)
  for _ in range(mib):
    crc = zlib.crc32(zeros, crc)
  return head + block * mib + c.flush(), crc


def _handmade_zip(path, members: list[tuple[str, bytes, int, int, int]]) -> str:
  """A zip of (name, stored bytes, method (0 stored, 8 deflated), CRC-32,
  declared uncompressed size): the declared size is whatever we say."""
  body, central = bytearray(), bytearray()
  for name, data, method, crc, size in members:
    n, offset = name.encode(), len(body)
    body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc,
                        len(data), size, len(n), 0) + n + data
    central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method,
                           0, 0, crc, len(data), size, len(n), 0, 0, 0, 0, 0,
                           offset) + n
  end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                    len(central), len(body), 0)
  with open(path, "wb") as f:
    f.write(bytes(body + central + end))
  return str(path)


def _stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
  return name, data, 0, zlib.crc32(data), len(data)


def _peak(fn) -> tuple[BaseException, int]:
  """(the WeightsError ``fn()`` raises, peak traced bytes while it ran)."""
  tracemalloc.start()
  try:
    with pytest.raises(errors.WeightsError) as raised:
      fn()
    return raised.value, tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


# ---------------------------------------------------------------- .npz ---

def test_a_truncated_or_damaged_npz_names_the_file(good_npz, tmp_path):
  data = open(good_npz, "rb").read()
  for cut in (len(data) // 2, len(data) - 10, 100):
    path = tmp_path / f"cut{cut}.npz"
    path.write_bytes(data[:cut])
    for read in (models.from_npz, weights_lib.npz_metadata):
      with pytest.raises(errors.WeightsError, match=rf"{path}: a zip archive "
                         r"that is truncated or damaged .* expected a whole "
                         r"\.npz file"):
        read(str(path))
  # A byte of an array changed: the member's CRC no longer matches.
  with zipfile.ZipFile(good_npz) as archive:
    info = archive.getinfo("block1/conv/kernel.npy")
  damaged = bytearray(data)
  damaged[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF
  path = tmp_path / "damaged.npz"
  path.write_bytes(bytes(damaged))
  with pytest.raises(errors.WeightsError, match=rf"{path}: member "
                     r"'block1/conv/kernel.npy': cannot be read \(Bad CRC-32"):
    models.from_npz(str(path))


def test_a_pickled_member_is_refused_and_never_unpickled(good_npz, tmp_path):
  sentinel = tmp_path / "unpickled"

  class Payload:  # unpickling it would create ``sentinel``
    def __reduce__(self):
      return open, (str(sentinel), "w")

  array = np.empty(1, dtype=object)
  array[0] = Payload()
  pickled = _npy(array, allow_pickle=True)
  for member in ("block1/conv/kernel.npy", f"{weights_lib.METADATA_KEY}.npy"):
    path = _replaced(good_npz, tmp_path / "pickled.npz", {member: pickled})
    for read in (models.from_npz, weights_lib.npz_metadata):
      with pytest.raises(errors.WeightsError, match=rf"{path}: member "
                         rf"'{member}': holds Python objects "
                         r"\(dtype object, stored as a pickle\)"):
        read(path)
  assert not sentinel.exists()


def test_other_files_named_npz_are_refused(good_npz, tmp_path):
  text = tmp_path / "text.npz"
  text.write_text("model weights\n")
  empty = tmp_path / "empty.npz"
  empty.write_bytes(b"")
  other = _write_zip(tmp_path / "other.npz", {"README.txt": b"hello"})
  extra = _replaced(good_npz, tmp_path / "extra.npz",
                    {"block1/conv/kernel": b""})  # not a .npy member
  complex_ = _replaced(good_npz, tmp_path / "complex.npz",
                       {"block1/bn/mean.npy": _npy(np.zeros(8, np.complex64))})
  cases = [
      (str(text), rf"{text}: not a \.npz file \(a zip archive\); it starts "
                  r"with b'mode'"),
      (str(empty), rf"{empty}: an empty file"),
      (other, r"member 'README.txt' is not a \.npy array"),
      (extra, r"member 'block1/conv/kernel' is not a \.npy array"),
      (complex_, r"member 'block1/bn/mean.npy': dtype complex64; expected a "
                 r"plain numeric"),
      (str(tmp_path / "nope.npz"), "no such weights file"),
  ]
  for path, message in cases:
    with pytest.raises(errors.WeightsError, match=message):
      models.load("small_cnn", path, width=WIDTH)


def test_a_mis_shaped_or_missing_array_names_it_and_the_shape(good_npz, tmp_path):
  expected = weights_lib.expected_shapes(models.from_npz(good_npz))
  shape = expected["block1/conv/kernel"]
  wrong = shape[:-1] + (shape[-1] + 1,)
  path = _replaced(good_npz, tmp_path / "shape.npz", {
      "block1/conv/kernel.npy": _npy(np.zeros(wrong, np.float32))})
  with pytest.raises(errors.WeightsError, match=rf"{path}: 'block1/conv/kernel' "
                     rf"has shape {wrong}, expected {shape}".replace("(", r"\(")
                     .replace(")", r"\)")):
    models.from_npz(path)
  members = _members(good_npz)
  del members["block2/bn/mean.npy"]
  path = _write_zip(tmp_path / "missing.npz", members)
  with pytest.raises(errors.WeightsError, match=r"no weights for 'block2/bn/mean'"):
    models.from_npz(path)


def test_bad_metadata_is_refused(good_npz, tmp_path):
  with np.load(good_npz) as f:
    meta = json.loads(str(f[weights_lib.METADATA_KEY]))
  for change, message in (
      (dict(model="resnet50"), r"records model='resnet50'; expected one of"),
      (dict(width=-1.0), r"records width=-1.0; expected a positive number"),
      (dict(in_channels="1"), r"records in_channels='1'; expected a positive"),
      (dict(preprocessing=["tf"]), r"records preprocessing=\['tf'\]"),
      (None, r"is not a JSON object: '\[1, 2\]'"),
  ):
    record = "[1, 2]" if change is None else json.dumps({**meta, **change})
    path = _replaced(good_npz, tmp_path / "meta.npz", {
        f"{weights_lib.METADATA_KEY}.npy": _npy(np.asarray(record))})
    with pytest.raises(errors.WeightsError, match=rf"{path}: .*{message}"):
      models.from_npz(path)


def test_a_header_claiming_a_huge_array_allocates_nothing(good_npz, tmp_path):
  # The header claims 1e5 x 1e5 x 100 float32 (4 TB); the member holds 16 bytes.
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(header, {
      "descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000, 100)})
  path = _replaced(good_npz, tmp_path / "huge.npz", {
      "block1/conv/kernel.npy": header.getvalue() + bytes(16)})
  for read in (models.from_npz, weights_lib.npz_metadata):
    error, peak = _peak(lambda: read(path))  # noqa: B023
    assert str(error).startswith(f"{path}: member 'block1/conv/kernel.npy': its "
                                 "header declares shape (100000, 100000, 100)")
    assert peak < PEAK_LIMIT, peak


def test_a_consistent_but_mis_shaped_member_is_refused_before_reading(
    good_npz, tmp_path):
  # A true 400 MiB member (deflated to ~400 KB) whose header and zip entry
  # agree: only the model's expected shape refuses it, before reading.
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(header, {
      "descr": "<f4", "fortran_order": False, "shape": (1024, 1024, 100)})
  stream, crc = _deflated_zeros(header.getvalue(), 400)
  members = [_stored(n, d) for n, d in _members(good_npz).items()
             if n != "block1/conv/kernel.npy"]
  members.append(("block1/conv/kernel.npy", stream, 8, crc,
                  len(header.getvalue()) + 400 * MIB))
  path = _handmade_zip(tmp_path / "bomb.npz", members)
  assert os.path.getsize(path) < 1 * MIB
  with zipfile.ZipFile(path) as archive:  # a valid zip: the claim is real
    assert archive.getinfo("block1/conv/kernel.npy").file_size > 400 * MIB
  error, peak = _peak(lambda: models.from_npz(path))
  assert "'block1/conv/kernel' has shape (1024, 1024, 100), expected" in str(error)
  assert peak < PEAK_LIMIT, peak


# -------------------------------------------------------------- Keras ---

def test_a_keras_archive_whose_member_inflates_to_gigabytes_is_refused(tmp_path):
  # ~1 MB of deflated zeros that inflate to 1 GiB, more than any DenseNet121
  # or InceptionV3 weights file can need.
  stream, crc = _deflated_zeros(b"", 1024)
  assert len(stream) < 1.2 * MIB
  config = json.dumps({"class_name": "Functional"}).encode()
  for name in keras_import.KERAS_MODELS:
    cap = keras_import.weights_member_cap(name)
    assert cap < 1024 * MIB
    path = _handmade_zip(tmp_path / "bomb.keras", [
        _stored("config.json", config),
        ("model.weights.h5", stream, 8, crc, 1024 * MIB)])
    error, peak = _peak(lambda: models.from_keras(name, path))  # noqa: B023
    assert str(error) == (f"{path}: member 'model.weights.h5' declares "
                          f"{1024 * MIB} bytes uncompressed, more than the {cap} "
                          "that it can need; a damaged or hostile archive")
    assert peak < PEAK_LIMIT, peak
  # The same stream declaring 1 MiB: read no further than that, then refused.
  path = _handmade_zip(tmp_path / "liar.keras", [
      _stored("config.json", config), ("model.weights.h5", stream, 8, crc, MIB)])
  error, peak = _peak(lambda: models.from_keras("densenet121", path))
  assert str(error).startswith(f"{path}: member 'model.weights.h5' cannot be read")
  assert peak < PEAK_LIMIT, peak
  # config.json is capped too.
  path = _handmade_zip(tmp_path / "config.keras", [
      ("config.json", stream, 8, crc, 1024 * MIB),
      _stored("model.weights.h5", b"")])
  error, peak = _peak(lambda: models.from_keras("densenet121", path))
  assert "member 'config.json' declares" in str(error)
  assert peak < PEAK_LIMIT, peak


def test_files_that_are_not_keras_weights_are_refused(tmp_path):
  text = tmp_path / "text.h5"
  text.write_text("weights\n")
  other = tmp_path / "other.h5"
  with h5py.File(other, "w") as f:
    f["images"] = np.zeros((2, 2))
  truncated = tmp_path / "truncated.keras"
  _write_zip(truncated, {"config.json": b"{}", "model.weights.h5": bytes(5000)})
  truncated.write_bytes(truncated.read_bytes()[:3000])
  no_weights = _write_zip(tmp_path / "no_weights.keras", {"config.json": b"{}"})
  bad_config = _write_zip(tmp_path / "bad_config.keras", {
      "config.json": b"[", "model.weights.h5": b""})
  not_hdf5 = _write_zip(tmp_path / "not_hdf5.keras", {
      "config.json": b"{}", "model.weights.h5": b"weights"})
  linked = tmp_path / "linked.weights.h5"
  with h5py.File(linked, "w") as f:
    f["layers/conv2d/vars/0"] = h5py.ExternalLink(str(other), "images")
  strings = tmp_path / "strings.weights.h5"
  with h5py.File(strings, "w") as f:
    f.create_dataset("layers/conv2d/vars/0", data=["a", "b"],
                     dtype=h5py.string_dtype())
  cases = [
      (text, r"neither a \.keras archive \(zip\) nor an HDF5 file"),
      (other, r"neither a Keras 3 weights file \(layers/\.\.\.\) nor a legacy"),
      (truncated, r"a zip archive that is truncated or damaged"),
      (no_weights, r"a zip archive without model.weights.h5"),
      (bad_config, r"config.json is not a JSON object"),
      (not_hdf5, r"its model.weights.h5 is not an HDF5 file"),
      (linked, r"layers/conv2d/vars/0: a link elsewhere \(ExternalLink\)"),
      (strings, r"layers/conv2d/vars/0: dtype object; expected a numeric array"),
  ]
  for path, message in cases:
    with pytest.raises(errors.WeightsError, match=rf"{path}: .*{message}"):
      models.from_keras("densenet121", str(path))
