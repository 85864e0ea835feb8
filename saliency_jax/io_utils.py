"""Atomic writes: a reader never sees a half-written result file."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` through a temporary file and a rename."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


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
