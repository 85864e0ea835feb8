"""Command line: ``python -m saliency_jax.main --config=NAME[:preset] [--workdir=DIR]``.

``--config`` is a config file's path or a packaged config's name
(``cascade``, ``cascade.py``, ``configs/cascade.py``:
:func:`config.resolve_config_path`); without ``--workdir`` a run writes into
``./runs/NAME[-preset]`` (or its experiment's own default).

Parses flags, validates the config once, takes the workdir (lock, recorded
config and inputs: :mod:`saliency_jax.workdir`) and hands over to the
experiment that ``config.experiment`` names. The project's own errors
(:mod:`saliency_jax.errors`) print as one ``error:`` line, exit 2
(``--traceback`` shows the trace); anything else keeps its traceback.
"""

from __future__ import annotations

import importlib
import logging as std_logging
import os
import re
import shutil
import sys
import tempfile

from absl import app
from absl import flags
import ml_collections
from absl import logging
from ml_collections import config_flags

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import workdir as workdir_lib

RUNS = "runs"  # without --workdir: ./runs/NAME[-preset]

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config: a packaged config's name (cascade, "
    "localization, ...; also NAME.py, configs/NAME.py) or a config file's path, "
    "then :preset if any (cascade:quick).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for results; default ./runs/NAME[-preset] (the "
    "aggregate: SWEEP_DIR/aggregate). A rerun with the same one resumes.")
_TRACEBACK = flags.DEFINE_bool(
    "traceback", False, "Show the full traceback of the project's own errors "
    "(bad config, data, weights, workdir) instead of one line; for bug reports.")


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


def run(config, workdir: str | None, *, name: str | None = None):
  """Validates ``config`` once, takes ``workdir`` and runs its experiment.

  ``workdir`` None: the experiment's ``default_workdir(config)``, where it
  has one (the aggregate of a sweep: ``SWEEP_DIR/aggregate``), else
  ``runs/<name>`` in the working directory (``name``: the config's, as
  :func:`config.run_name` makes it from ``--config``), printed.
  """
  # JAX only now: a bad flag's one line should not wait for it.
  from saliency_jax import devices  # pylint: disable=g-import-not-at-top
  if "distributed" in config:
    # Before anything else touches JAX: its backends start here.
    config_lib.check_distributed(config)
    devices.initialize(config.distributed)
  experiment = validate(config)
  if workdir is None:
    workdir = _default_workdir(config, name)
    if devices.is_writer():
      print(f"workdir: {workdir} (default; --workdir=DIR to choose)", flush=True)
  config = config_lib.resolve(config)  # e.g. preprocessing='auto' made explicit
  if not devices.is_writer():
    return _follow(config, workdir, experiment)
  workdir_lib.check_usable(workdir)
  with workdir_lib.lock(workdir):
    workdir_lib.record_config(workdir, config)
    workdir_lib.record_inputs(workdir, workdir_lib.file_inputs(config))
    import jax  # pylint: disable=g-import-not-at-top
    logging.info("JAX %s, backend %s, devices %s (process %d of %d)", jax.__version__,
                 jax.default_backend(), jax.devices(), jax.process_index(),
                 jax.process_count())
    return experiment(config, workdir)


def _follow(config, workdir: str, experiment):
  """Process i > 0 of a multi-process run: the same program, its files thrown away.

  It computes its share of every sharded program with process 0, reads the
  data and the models process 0 builds and trains (it waits for them: see
  ``common.trained_model``) and writes what it must into a scratch folder
  that is removed at the end; process 0 writes the results.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if config.experiment == "train":
    logging.info("process %d: training runs on process 0's devices; nothing to do",
                 jax.process_index())
    return None
  scratch = tempfile.mkdtemp(prefix=f"saliency_jax_process{jax.process_index()}_")
  if "models_dir" in config and not config.get("models_dir"):
    config = ml_collections.ConfigDict(config.to_dict())
    config.models_dir = os.path.join(os.path.abspath(workdir), "models")
  logging.info("process %d of %d: results are written by process 0 into %s",
               jax.process_index(), jax.process_count(), workdir)
  try:
    with workdir_lib.lock(scratch):
      workdir_lib.record_config(scratch, config)
      workdir_lib.record_inputs(scratch, workdir_lib.file_inputs(config))
      return experiment(config, scratch)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _default_workdir(config, name: str | None) -> str:
  module = importlib.import_module(config_lib.EXPERIMENTS[config.experiment].split(":")[0])
  if hasattr(module, "default_workdir"):
    return module.default_workdir(config)
  if name is None:
    raise errors.WorkdirError("--workdir is required: the folder the results go to")
  return os.path.join(RUNS, name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  _quiet_orbax()
  try:
    spec = flags.FLAGS["config"].serialize().partition("=")[2]
    run(_CONFIG.value, _WORKDIR.value, name=config_lib.run_name(spec))
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
  """absl's parser, but a bad ``--config*`` flag is one line, not a traceback.

  The ``--config`` file is resolved first (:func:`_resolved_argv`).
  """
  try:
    argv = _resolved_argv(argv)
  except errors.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
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


def _resolved_argv(argv: list[str]) -> list[str]:
  """``argv`` with ``--config=SPEC`` (or ``--config SPEC``) as a file's path.

  :func:`config.resolve_config_path`: a file at SPEC's path wins, else a
  packaged config's name; ``:preset`` kept. Raises its ConfigError.
  """
  out = list(argv)
  for i, arg in enumerate(out):
    if arg == "--":
      break
    if arg.startswith("--config=") and arg != "--config=":
      out[i] = "--config=" + config_lib.resolve_config_path(arg.partition("=")[2])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = config_lib.resolve_config_path(out[i + 1])
  return out


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
  # Here, not at import: launch/sweep.py shares these flags (--status needs no config).
  flags.mark_flags_as_required(["config"])
  for flag in (_CONFIG, _WORKDIR, _TRACEBACK):  # --help lists them (console script too)
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[flag.name])
  app.run(main, flags_parser=_flags_parser)


if __name__ == "__main__":
  entry_point()
