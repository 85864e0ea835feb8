"""Command line: ``python -m saliency_jax.main --config=configs/NAME.py --workdir=DIR``.

Parses flags, validates the config, writes ``DIR/config.json`` and hands over
to the experiment that ``config.experiment`` names. Everything else lives in
importable modules.
"""

from __future__ import annotations

import importlib
import json
import logging as std_logging
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from saliency_jax import config as config_lib
from saliency_jax import io_utils

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/NAME.py[:preset]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results.")
flags.mark_flags_as_required(["config", "workdir"])


def run(config, workdir: str):
  """Validates ``config``, records it in ``workdir`` and runs its experiment."""
  config_lib.validate(config)
  config = config_lib.resolve(config)  # e.g. preprocessing='auto' made explicit
  os.makedirs(workdir, exist_ok=True)
  resolved = config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    _check_same_run(path, json.loads(resolved))
  io_utils.write_text(path, resolved)
  module, function = config_lib.EXPERIMENTS[config.experiment].split(":")
  return getattr(importlib.import_module(module), function)(config, workdir)


def _check_same_run(path: str, config: dict) -> None:
  """A workdir resumes only the run it holds: other settings need another dir."""
  before = io_utils.read_json(path)
  changed = sorted(_flat(before).items() ^ _flat(config).items())
  if changed:
    keys = sorted({k for k, _ in changed})
    raise ValueError(f"--workdir={os.path.dirname(path)} holds a run with other "
                     f"settings (config.{', config.'.join(keys)}); use a new "
                     "--workdir, or the same settings to resume")


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config_lib.validate(_CONFIG.value)
    path = os.path.join(_WORKDIR.value, "config.json")
    if os.path.exists(path):
      _check_same_run(path, json.loads(
          config_lib.resolve(_CONFIG.value).to_json_best_effort()))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  _quiet_orbax()
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("JAX %s, backend %s, devices %s", jax.__version__,
               jax.default_backend(), jax.devices())
  run(_CONFIG.value, _WORKDIR.value)


def _quiet_orbax() -> None:
  """Orbax logs every checkpoint step at INFO; keep its warnings, drop the rest."""
  def keep(record) -> bool:
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname
  logging.get_absl_handler().addFilter(keep)


def _flags_parser(argv):
  """absl's parser, but a bad ``--config*`` flag is one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    print(f"error: {_explain_flag_error(argv, e)}", file=sys.stderr)
    sys.exit(2)


def _explain_flag_error(argv: list[str], error: Exception) -> str:
  """One line naming the offending key (and the allowed keys when it is unknown)."""
  text = str(error)
  if "Error whilst parsing config file" in text:
    return text.strip().splitlines()[-1].strip()  # the config's own message
  if isinstance(error, (AttributeError, KeyError)):
    config = _load_config_file(argv)
    for arg in argv:
      match = re.fullmatch(r"--config\.([\w.]+)(=.*)?", arg)
      if match and config is not None:
        unknown = _first_unknown(config, match.group(1).split("."))
        if unknown:
          return unknown
  return " ".join(text.split())


def _load_config_file(argv: list[str]):
  for i, arg in enumerate(argv):
    value = (arg.split("=", 1)[1] if arg.startswith("--config=")
             else argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
    if value:
      path, _, preset = value.partition(":")
      return config_lib.load_file(path, preset or None)
  return None


def _first_unknown(config, parts: list[str]) -> str | None:
  node = config
  for depth, part in enumerate(parts):
    if not hasattr(node, "keys") or part not in node:
      where = ".".join(["config"] + parts[:depth])
      allowed = sorted(node.keys()) if hasattr(node, "keys") else []
      return (f"unknown key config.{'.'.join(parts)}; {where} has keys: "
              f"{', '.join(allowed)}")
    node = node[part]
  return None


def entry_point():
  app.run(main, flags_parser=_flags_parser)


if __name__ == "__main__":
  entry_point()
