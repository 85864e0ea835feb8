"""Command line: ``python -m saliency_jax.main --config=configs/NAME.py --workdir=DIR``.

Parses flags, validates the config once, takes the workdir (lock, recorded
config and inputs: :mod:`saliency_jax.workdir`) and hands over to the
experiment that ``config.experiment`` names. The project's own errors
(:mod:`saliency_jax.errors`) print as one ``error:`` line, exit 2
(``--traceback`` shows the trace); anything else keeps its traceback.
"""

from __future__ import annotations

import importlib
import logging as std_logging
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/NAME.py[:preset]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results.")
_TRACEBACK = flags.DEFINE_bool(
    "traceback", False, "Show the full traceback of the project's own errors "
    "(bad config, data, weights, workdir) instead of one line; for bug reports.")
flags.mark_flags_as_required(["config", "workdir"])


def validate(config):
  """Every key of ``config``, before anything is written; returns its experiment.

  The shared keys (``config.validate``), then the experiment's own (its
  module's ``validate``, where it has one).
  """
  config_lib.validate(config)
  module, function = config_lib.EXPERIMENTS[config.experiment].split(":")
  experiment = importlib.import_module(module)
  if hasattr(experiment, "validate"):
    experiment.validate(config)
  return getattr(experiment, function)


def run(config, workdir: str):
  """Validates ``config`` once, takes ``workdir`` and runs its experiment."""
  experiment = validate(config)
  config = config_lib.resolve(config)  # e.g. preprocessing='auto' made explicit
  workdir_lib.check_usable(workdir)
  with workdir_lib.lock(workdir):
    workdir_lib.record_config(workdir, config)
    workdir_lib.record_inputs(workdir, workdir_lib.file_inputs(config))
    import jax  # pylint: disable=g-import-not-at-top
    logging.info("JAX %s, backend %s, devices %s", jax.__version__,
                 jax.default_backend(), jax.devices())
    return experiment(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  _quiet_orbax()
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except errors.Error as e:
    if _TRACEBACK.value:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def _quiet_orbax() -> None:
  """Orbax logs every checkpoint step at INFO; keep its warnings, drop the rest."""
  def keep(record) -> bool:
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname
  logging.get_absl_handler().addFilter(keep)


def _flags_parser(argv):
  """absl's parser, but a bad ``--config*`` flag is one line, not a traceback."""
  try:
    remaining = flags.FLAGS(argv)
    if flags.FLAGS["config"].present:
      # ml_collections defers a config file that failed to load to first use.
      flags.FLAGS["config"].value.keys()
    return remaining
  except OSError as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    print(f"error: --config={flags.FLAGS['config'].serialize().partition('=')[2]}: "
          f"{lines[-1]}", file=sys.stderr)
    sys.exit(2)
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
