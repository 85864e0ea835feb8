"""TensorBoard event files written without TensorFlow (scalars only).

An event file is a sequence of TFRecords, each holding one ``Event``
protocol buffer: first ``file_version = "brain.Event:2"``, then one event per
step with a ``Summary`` of ``simple_value`` scalars. Both formats are simple
enough to write by hand, so training curves reach TensorBoard
(``tensorboard --logdir WORKDIR``) without TensorFlow or protobuf.

TFRecord framing (``tensorflow/core/lib/io/record_writer.cc``)::

  uint64 length (little endian) | uint32 masked_crc32c(length bytes)
  | data | uint32 masked_crc32c(data)

with CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) masked as
``((crc >> 15 | crc << 17) + 0xA282EAD8) mod 2**32``.

Protocol buffers (``tensorflow/core/util/event.proto``, ``summary.proto``)::

  Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
            Summary summary = 5; }
  Summary { repeated Value value = 1; }
  Value   { string tag = 1; float simple_value = 2; }

Each process writing to a directory gets its own file
(``events.out.tfevents.<time>.<host>.<pid>.saliency_jax``); records are
appended and the file closed after every write, so a killed run leaves
readable events.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Mapping

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8
_CRC32C_POLY = 0x82F63B78  # Castagnoli, bit-reflected


def _crc_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of ``data``; ``crc32c(b"123456789") == 0xE3069283``."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC: rotated right by 15 bits plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
  """``data`` framed as one TFRecord (length, its CRC, data, its CRC)."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data
          + struct.pack("<I", masked_crc32c(data)))


# ---------------------------------------------------------------- protobuf ---

def _varint(value: int) -> bytes:
  """Base-128 varint; negative int64 as its 64-bit two's complement."""
  value &= (1 << 64) - 1
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint(field << 3 | wire_type)


def _bytes_field(field: int, data: bytes) -> bytes:
  return _key(field, 2) + _varint(len(data)) + data


def _summary(scalars: Mapping[str, float]) -> bytes:
  """A ``Summary`` with one ``Value{tag, simple_value}`` per scalar."""
  values = b""
  for tag, value in scalars.items():
    value_msg = (_bytes_field(1, str(tag).encode("utf-8"))
                 + _key(2, 5) + struct.pack("<f", float(value)))
    values += _bytes_field(1, value_msg)
  return values


def event(*, wall_time: float, step: int = 0, file_version: str | None = None,
          scalars: Mapping[str, float] | None = None) -> bytes:
  """One ``Event`` protocol buffer, serialized."""
  out = _key(1, 1) + struct.pack("<d", float(wall_time))
  if step:
    out += _key(2, 0) + _varint(int(step))
  if file_version is not None:
    out += _bytes_field(3, file_version.encode("utf-8"))
  if scalars is not None:
    out += _bytes_field(5, _summary(scalars))
  return out


# ------------------------------------------------------------------ writer ---

class SummaryWriter:
  """Appends scalar events to one new event file under ``logdir``.

  Args:
    logdir: the run's TensorBoard directory (created if missing).
  """

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    now = time.time()
    name = (f"events.out.tfevents.{int(now)}.{socket.gethostname()}."
            f"{os.getpid()}.saliency_jax")
    self.path = os.path.join(logdir, name)
    self._append(event(wall_time=now, file_version=FILE_VERSION))

  def scalars(self, step: int, values: Mapping[str, float], *,
              wall_time: float | None = None) -> None:
    """One event at ``step`` with a scalar per ``values`` item (tag -> value)."""
    self._append(event(wall_time=time.time() if wall_time is None else wall_time,
                       step=step, scalars=values))

  def _append(self, data: bytes) -> None:
    with open(self.path, "ab") as f:
      f.write(tfrecord(data))


_WRITERS: dict[str, SummaryWriter] = {}


def write_scalars(logdir: str, step: int, values: Mapping[str, float]) -> str:
  """Appends ``values`` at ``step`` to this process's event file in ``logdir``.

  The first call for a directory starts a new file; later calls of this
  process append to it. Returns the file's path.
  """
  key = os.path.abspath(logdir)
  writer = _WRITERS.get(key)
  if writer is None or not os.path.exists(writer.path):
    writer = _WRITERS[key] = SummaryWriter(key)
  writer.scalars(step, values)
  return writer.path


def read_records(path: str) -> list[bytes]:
  """The TFRecords of ``path``, their CRCs checked (for tests and tools).

  Raises:
    ValueError: a record is cut short or a CRC does not match (names the
      file and the record's offset).
  """
  with open(path, "rb") as f:
    data = f.read()
  records, offset = [], 0
  while offset < len(data):
    header = data[offset:offset + 12]
    if len(header) < 12:
      raise ValueError(f"{path}: record at byte {offset} is cut short")
    length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
    if masked_crc32c(length_bytes) != length_crc:
      raise ValueError(f"{path}: length CRC mismatch at byte {offset}")
    (length,) = struct.unpack("<Q", length_bytes)
    body = data[offset + 12:offset + 12 + length]
    footer = data[offset + 12 + length:offset + 16 + length]
    if len(body) < length or len(footer) < 4:
      raise ValueError(f"{path}: record at byte {offset} is cut short")
    if masked_crc32c(body) != struct.unpack("<I", footer)[0]:
      raise ValueError(f"{path}: data CRC mismatch at byte {offset}")
    records.append(body)
    offset += 16 + length
  return records
