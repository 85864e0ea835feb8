"""A workdir holds one run: its config, its inputs' fingerprints, one process at a time.

DESIGN.md, Integrity: a workdir's results are a function of fingerprinted
inputs. ``config.json`` records the resolved config and ``inputs.json`` the
fingerprints of everything else that decides the numbers (package version,
weight files, the dataset build, each trained model), added as they become
known. A rerun whose config or inputs differ is refused, naming what changed;
the same run resumes. A lock (``.lock``, ``fcntl.flock``) keeps a second
process out; the kernel drops it when its holder dies, so a killed run never
blocks the next.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from typing import Any

import ml_collections

from saliency_jax import errors
from saliency_jax import io_utils

CONFIG = "config.json"
INPUTS = "inputs.json"
LOCK = ".lock"


def check_usable(workdir: str) -> None:
  """Raises WorkdirError unless ``workdir`` is (or can be made) a writable folder."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.WorkdirError(f"--workdir={workdir}: exists and is not a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise errors.WorkdirError(f"--workdir={workdir}: cannot create it "
                              f"({e.strerror})") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise errors.WorkdirError(f"--workdir={workdir}: not writable")


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds ``workdir/.lock`` for the block; a second holder is refused at once."""
  path = os.path.join(workdir, LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    holder = _holder_unless_locked(fd, fcntl.LOCK_EX)
    if holder is not None:
      raise errors.WorkdirError(
          f"--workdir={workdir}: another run (PID {holder}) is using it; wait for "
          "it to finish or use another --workdir")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # closing drops the flock


def lock_holder(workdir: str) -> str | None:
  """The PID of the run holding ``workdir``'s lock (as it wrote it), or None.

  Probes without waiting: a shared lock taken and dropped at once. A run
  that tries to start in that instant is refused as if another held the
  workdir (it says so and can simply be started again).
  """
  path = os.path.join(workdir, LOCK)
  try:
    fd = os.open(path, os.O_RDONLY)
  except FileNotFoundError:
    return None
  try:
    return _holder_unless_locked(fd, fcntl.LOCK_SH)
  finally:
    os.close(fd)


def _holder_unless_locked(fd: int, mode: int) -> str | None:
  """Takes ``mode`` on ``fd`` without waiting: None, or the PID written by
  the run that holds the lock ('unknown' when it wrote none)."""
  try:
    fcntl.flock(fd, mode | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
      raise
    return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
  return None


def record_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes ``config.json``; refuses a workdir that holds a run with other settings."""
  resolved = config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
  path = os.path.join(workdir, CONFIG)
  if os.path.exists(path):
    changed = sorted({k for k, _ in flat_config(io_utils.read_json(path)).items()
                      ^ flat_config(json.loads(resolved)).items()})
    if changed:
      raise errors.WorkdirError(
          f"--workdir={workdir} holds a run with other settings "
          f"(config.{', config.'.join(changed)}); use a new --workdir, or the "
          "same settings to resume")
  io_utils.write_text(path, resolved)


def flat_config(tree: dict, prefix: str = "") -> dict[str, str]:
  """A nested config dict as ``{'a.b': json value}`` (to name what differs)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flat_config(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
  return out


def record_inputs(workdir: str, inputs: dict[str, Any]) -> dict[str, Any]:
  """Adds ``inputs`` (name -> fingerprint) to ``inputs.json``; refuses a change.

  A name already recorded with another value means this run reads something
  other than what the workdir's results were computed from (a weights file
  replaced after a kill, a retrained model): WorkdirError naming it.

  Returns:
    Everything recorded so far.
  """
  recorded = recorded_inputs(workdir)
  new = json.loads(json.dumps(inputs, sort_keys=True, default=str))
  changed = [k for k in new if k in recorded and recorded[k] != new[k]]
  if changed:
    details = "; ".join(f"{k}: was {_short(recorded[k])}, now {_short(new[k])}"
                        for k in changed)
    raise errors.WorkdirError(
        f"--workdir={workdir}: its results were computed from other inputs "
        f"({details}); use a new --workdir, or restore what changed to resume")
  if any(k not in recorded for k in new):
    recorded.update(new)
    io_utils.write_json(os.path.join(workdir, INPUTS), recorded)
  return recorded


def recorded_inputs(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, INPUTS)
  return io_utils.read_json(path) if os.path.exists(path) else {}


def _short(value: Any) -> str:
  text = json.dumps(value, sort_keys=True)
  return text if len(text) <= 160 else text[:157] + "..."


def file_inputs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Fingerprints of the files the config names: weights, ``init_from``, package.

  Files by SHA-256; a training run's directory (``init_from``,
  ``trained_dir``) by its exported ``weights.npz`` and training summary when
  present.
  """
  import saliency_jax  # pylint: disable=g-import-not-at-top
  out: dict[str, Any] = {"package": f"saliency_jax {saliency_jax.__version__}"}
  for key in ("model_weights", "init_from", "trained_dir"):
    path = config.get(key)
    if not path:
      continue
    if os.path.isfile(path):
      out[f"config.{key}"] = {"path": path, "sha256": io_utils.sha256_file(path)}
      continue
    found = {}
    for name in ("weights.npz", "summary.json", "models/trained/weights.npz",
                 "models/trained/summary.json"):
      if os.path.isfile(os.path.join(path, name)):
        found[name] = io_utils.sha256_file(os.path.join(path, name))
    out[f"config.{key}"] = {"path": path, "sha256": found}
  return out
