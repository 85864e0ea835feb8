# Run: python launch/sweep.py --config=cascade:quick --sweep_dir=/tmp/saliency_jax/sweep
"""Launches, resumes and lists a sweep: the jobs a config file's ``sweep()`` declares.

  python launch/sweep.py --config=cascade --sweep_dir=DIR   # local, one at a time
  python launch/sweep.py --config=cascade:paper --sweep_dir=DIR \\
      --executor=slurm --partition=gpu --gpus_per_job=1 --timeout_min=720
  python launch/sweep.py --sweep_dir=DIR --status
  python -m saliency_jax.main --config=aggregate --config.sweep_dir=DIR

``--config`` (a packaged config's name or a file's path, ``:preset``) and
``--config.KEY=VALUE`` work as for ``saliency_jax.main``;
``sweep(preset)`` of the config file adds each job's overrides. Job NAME runs
in ``DIR/NAME``; the same command again submits only the jobs that are not
finished (nor running, nor queued): that is resubmission. ``--job=NAME``
(repeatable) submits only those. See launch/README.md and
:mod:`saliency_jax.sweep`.
"""

import sys

from absl import app
from absl import flags

from saliency_jax import errors
from saliency_jax import main as main_lib  # --config, --traceback
from saliency_jax import sweep

_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "The sweep's folder: sweep.json, "
                                 "logs/ and one workdir per job.")
_EXECUTOR = flags.DEFINE_enum("executor", "local", sweep.EXECUTORS,
                              "local: subprocesses here; slurm: a SLURM job array.")
_STATUS = flags.DEFINE_bool("status", False, "List the jobs and their states, submit nothing.")
_RESUBMIT = flags.DEFINE_bool("resubmit", False, "Refuse to start a new sweep: only "
                              "resubmit an existing one's unfinished jobs.")
_JOB = flags.DEFINE_multi_string("job", [], "Submit only this job (by name; repeatable).")
_PARALLEL = flags.DEFINE_integer("parallel", None, "Jobs running at once (local: default "
                                 "1; slurm: the array's limit, default none).")
_WAIT = flags.DEFINE_bool("wait", False, "slurm: wait for the jobs and say how each "
                          "ended (local always waits).")
_PREPARE = flags.DEFINE_bool("prepare_data", True, "Build the datasets here before "
                             "submitting (jobs sharing a data_dir would race to build it).")
_TIMEOUT = flags.DEFINE_integer("timeout_min", None, "A job's time limit in minutes "
                                "(slurm: 1440 unless set; local: 7 days).")
_GPUS = flags.DEFINE_integer("gpus_per_job", None, "GPUs per job (local: default keeps "
                             "the GPUs this shell sees).")
_CPUS = flags.DEFINE_integer("cpus_per_job", None, "CPUs per job (slurm --cpus-per-task).")
_MEM = flags.DEFINE_float("mem_gb", None, "Memory per job in GB (slurm).")
_PARTITION = flags.DEFINE_string("partition", None, "SLURM partition.")
_ACCOUNT = flags.DEFINE_string("account", None, "SLURM account.")
_QOS = flags.DEFINE_string("qos", None, "SLURM quality of service.")
flags.mark_flag_as_required("sweep_dir")


def _config_spec() -> tuple[str, str | None]:
  """(path, preset) of --config=path[:preset], the path resolved (main._flags_parser)."""
  spec = flags.FLAGS["config"].serialize().partition("=")[2]
  path, _, preset = spec.partition(":")
  return path, preset or None


def _launch() -> int:
  if _STATUS.value:
    print(sweep.status_text(_SWEEP_DIR.value))
    return 0
  if not flags.FLAGS["config"].present:
    raise errors.ConfigError("--config is required to launch a sweep (--status needs "
                             "only --sweep_dir)")
  if flags.FLAGS["workdir"].present:
    raise errors.ConfigError("--workdir: a sweep's jobs run in --sweep_dir/<job>; "
                             "drop --workdir")
  path, preset = _config_spec()
  options = sweep.Options(
      parallel=_PARALLEL.value, timeout_min=_TIMEOUT.value, gpus_per_job=_GPUS.value,
      cpus_per_job=_CPUS.value, mem_gb=_MEM.value, partition=_PARTITION.value,
      account=_ACCOUNT.value, qos=_QOS.value)
  ended = sweep.launch(main_lib._CONFIG.value, path, preset,  # pylint: disable=protected-access
                       _SWEEP_DIR.value, kind=_EXECUTOR.value, options=options,
                       only=_JOB.value, resubmit=_RESUBMIT.value, block=_WAIT.value,
                       build_data=_PREPARE.value)
  if ended:
    print(sweep.status_text(_SWEEP_DIR.value))
  unfinished = [n for n, s in ended.items() if s.state != sweep.FINISHED]
  if unfinished:
    print(f"{len(unfinished)} job(s) did not finish: {', '.join(unfinished)}; run the "
          "same command again to resubmit them", file=sys.stderr)
    return 1
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    sys.exit(_launch())
  except errors.Error as e:
    if flags.FLAGS.traceback:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=main_lib._flags_parser)  # pylint: disable=protected-access
