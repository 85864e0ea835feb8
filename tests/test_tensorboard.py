"""TensorBoard event files without TensorFlow: CRC-32C, framing, TensorBoard's reader."""

import math
import os
import struct

import ml_collections
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import tensorboard


def _scalars(path):
  """(file_version, {tag: [(step, value)]}) as TensorBoard's own loader reads them."""
  version, out = None, {}
  for ev in event_file_loader.EventFileLoader(path).Load():
    if ev.HasField("file_version"):
      version = ev.file_version
    for v in ev.summary.value:
      # The loader migrates simple_value to a scalar tensor.
      value = v.simple_value if v.HasField("simple_value") else v.tensor.float_val[0]
      out.setdefault(v.tag, []).append((ev.step, value))
  return version, out


def test_crc32c_check_value():
  # The published check value of CRC-32C (Castagnoli), RFC 3720 B.4.
  assert tensorboard.crc32c(b"123456789") == 0xE3069283
  assert tensorboard.crc32c(b"") == 0
  # RFC 3720 B.4: 32 bytes of zeros.
  assert tensorboard.crc32c(bytes(32)) == 0x8A9136AA


def test_tfrecord_framing_round_trip_and_damage(tmp_path):
  payloads = [b"", b"x", bytes(range(256)) * 3]
  path = tmp_path / "records"
  path.write_bytes(b"".join(tensorboard.tfrecord(p) for p in payloads))
  assert tensorboard.read_records(str(path)) == payloads
  data = bytearray(path.read_bytes())
  data[-5] ^= 1  # a bit of the last payload (its record starts at 16 + 17)
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=r"records: data CRC mismatch at byte 33"):
    tensorboard.read_records(str(path))


def test_tensorboard_reads_our_scalars(tmp_path):
  logdir = str(tmp_path / "tb")
  first = tensorboard.write_scalars(logdir, 10, {"train/loss": 0.6931, "train/accuracy": 0.5})
  second = tensorboard.write_scalars(logdir, 2**40, {"train/loss": 0.25,
                                                     "validation/auc": float("nan")})
  assert first == second and os.listdir(logdir) == [os.path.basename(first)]
  version, scalars = _scalars(first)
  assert version == tensorboard.FILE_VERSION
  assert scalars["train/loss"] == [(10, pytest.approx(0.6931)), (2**40, 0.25)]
  assert scalars["train/accuracy"] == [(10, 0.5)]
  [(step, auc)] = scalars["validation/auc"]
  assert step == 2**40 and math.isnan(auc)
  # Every record's CRCs verify (TensorBoard's loader does not insist).
  assert len(tensorboard.read_records(first)) == 3


def test_event_encoding_matches_the_proto():
  # Event{wall_time=1.5, step=300, summary{value{tag="a", simple_value=2}}}
  got = tensorboard.event(wall_time=1.5, step=300, scalars={"a": 2.0})
  value = b"\x0a\x01a" + b"\x15" + struct.pack("<f", 2.0)
  want = (b"\x09" + struct.pack("<d", 1.5) + b"\x10\xac\x02"
          + b"\x2a" + bytes([len(value) + 2]) + b"\x0a" + bytes([len(value)]) + value)
  assert got == want
  assert np.frombuffer(got[1:9], "<f8")[0] == 1.5


def test_config_tensorboard_must_be_a_bool():
  config = config_lib.load_file("train", "quick")
  assert config.tensorboard is False  # off unless asked for
  config_lib.validate(config)
  loose = ml_collections.ConfigDict({**config.to_dict(), "tensorboard": "yes"})
  with pytest.raises(errors.ConfigError, match=r"^config\.tensorboard='yes': expected "
                     "True"):
    config_lib.validate(loose)
