"""Atomic writes: a reader never sees a half-written result file.

One helper, :func:`atomic_write`: the content goes to a temporary file in
the target's folder, is flushed to the disk (fsync), renamed over the target,
and the folder entry is synced too, so a run killed at any moment (or a
machine that loses power) leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np


def _fsync_directory(directory: str) -> None:
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:  # some filesystems do not open folders; the rename stands
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path beside ``path``; renamed over it on success.

  For writers that want a file name (``savefig``, pydicom, ``np.savez``).
  The name is made here rather than by ``tempfile.mkstemp``, whose 0600 mode
  would survive the rename and hide results from other users of a shared
  folder; the file gets the umask's mode.
  """
  directory, base = os.path.split(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{base}")
  try:
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  _fsync_directory(directory)


def atomic_write(path: str, write: Callable[[BinaryIO], Any]) -> None:
  """Calls ``write(f)`` on a binary file that becomes ``path`` atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      write(f)


def write_bytes(path: str, data: bytes) -> None:
  atomic_write(path, lambda f: f.write(data))


def write_text(path: str, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically."""
  write_bytes(path, text.encode())


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def json_line(record: dict[str, Any]) -> str:
  return json.dumps(record, sort_keys=True) + "\n"


def append_jsonl(path: str, record: dict[str, Any]) -> None:
  with open(path, "a") as f:
    f.write(json_line(record))


def read_jsonl(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def sha256_bytes(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def sha256_arrays(named: Iterable[tuple[str, Any]]) -> str:
  """SHA-256 over (name, array) pairs in order: each name, then the array's bytes."""
  digest = hashlib.sha256()
  for name, array in named:
    digest.update(str(name).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


def sha256_file(path: str) -> str:
  """SHA-256 of a file's bytes, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
