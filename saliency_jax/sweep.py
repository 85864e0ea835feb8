"""Sweeps: one config file's jobs, fanned out on submitit, tracked by their workdirs.

A sweep is declared next to its config, big_vision style: the config file
defines ``sweep(arg=None)`` (``arg``: the ``:preset`` of ``--config``), which
yields one dict of config overrides per job, dotted keys for nested blocks::

  def sweep(arg=None):
    for seed in range(5):
      yield {"seed": seed}

Job ``j`` runs ``main.run(config + overrides_j, SWEEP_DIR/<name_j>)``; its name
is made of its overrides (``seed=3``, ``model=densenet121,width=0.25``). Every
job's config is validated before anything is written. ``SWEEP_DIR/sweep.json``
records the base config and the jobs once: another sweep launched into that
folder is refused (its results would mix with these), the same sweep launched
again submits only the jobs that are neither finished nor running.

A job's state is read from its workdir, never taken on a scheduler's word:
``finished`` (its outputs exist and ``results.csv`` holds exactly its
verified parts: :func:`results.results_problem`), ``running`` (its lock is
held), ``queued`` (submitted to SLURM and waiting there), ``failed`` (started,
then killed or stopped by an error) or ``not started``.

Jobs go through submitit (``pip install 'saliency-jax[cluster]'``): a SLURM job
array, or its local executor (one subprocess per job) for a workstation and
the tests. ``launch/sweep.py`` is the command line; the ``aggregate`` config
merges a sweep's results.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import hashlib
import importlib.util
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import ml_collections
from absl import logging

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import results
from saliency_jax import workdir as workdir_lib

SWEEP_FILE = "sweep.json"
SUBMISSIONS = "submissions.jsonl"  # one line per submitted job: executor, job id, logs
LOGS = "logs"  # submitit's folder: pickled jobs, stdout/stderr of each job
AGGREGATE = "aggregate"  # the aggregate config's default workdir inside a sweep
RESERVED = (LOGS, AGGREGATE)
EXECUTORS = ("local", "slurm")

FINISHED, RUNNING, QUEUED, FAILED, NOT_STARTED = (
    "finished", "running", "queued", "failed", "not started")
STATES = (FINISHED, RUNNING, QUEUED, FAILED, NOT_STARTED)
TO_SUBMIT = (FAILED, NOT_STARTED)

# What a finished run of each experiment has written last (a saliency
# experiment: summary.json, then report.md; results.csv is checked against
# its parts). A study's tests are checked in their own folders.
_OUTPUTS = {"train": ("summary.json",), "benchmark": ("benchmark.json", "report.md"),
            "aggregate": ("results.csv", "summary.json", "report.md"),
            "study": ("summary.json", "report.md")}
_SALIENCY_OUTPUTS = ("results.csv", "summary.json", "report.md")
# SLURM states of a job that has not yet run to its end.
_SLURM_WAITING = ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                  "RESIZING", "SUSPENDED", "RUNNING", "COMPLETING")
_NAME_LIMIT = 100
_SLURM_TIMEOUT_MIN = 24 * 60  # a partition's limit may be lower: --timeout_min
_LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (5 min) would kill jobs

SUBMITIT_MISSING = ("launching a sweep needs submitit: pip install "
                    "'saliency-jax[cluster]'")


@dataclasses.dataclass(frozen=True)
class Job:
  """One job of a sweep.

  Attributes:
    name: its folder under the sweep dir, made of its overrides (:func:`job_name`).
    overrides: dotted config key -> value, as the sweep declared them.
    config: the job's full config (None when read back from ``sweep.json``).
  """
  name: str
  overrides: dict[str, Any]
  config: ml_collections.ConfigDict | None = None


class State(NamedTuple):
  """A job's state (one of ``STATES``) and what says so (a PID, a missing file)."""
  state: str
  detail: str = ""


@dataclasses.dataclass(frozen=True)
class Options:
  """How jobs are submitted.

  Attributes:
    parallel: jobs running at once (local: default 1; SLURM: the array's
      parallelism, default all).
    timeout_min: a job's time limit (SLURM: 24 h unless set; local: 7 days).
    gpus_per_job: GPUs per job (local: None keeps the launcher's visible GPUs).
    cpus_per_job: CPUs per job (SLURM ``--cpus-per-task``).
    mem_gb: memory per job (SLURM).
    partition, account, qos: SLURM's.
  """
  parallel: int | None = None
  timeout_min: int | None = None
  gpus_per_job: int | None = None
  cpus_per_job: int | None = None
  mem_gb: float | None = None
  partition: str | None = None
  account: str | None = None
  qos: str | None = None


@dataclasses.dataclass
class Submission:
  """A submitted job and its submitit handle."""
  job: Job
  handle: Any
  started: float


# --------------------------------------------------------------- declaring ---

def declared(path: str, preset: str | None = None) -> list[dict[str, Any]]:
  """The overrides ``sweep(preset)`` of config file ``path`` yields, checked.

  ``path``: a file or a packaged config's name (``config.resolve_config_path``).
  """
  path = config_lib.resolve_config_path(path)
  spec = importlib.util.spec_from_file_location(
      "_saliency_jax_sweep_" + os.path.basename(path).removesuffix(".py"), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  declare = getattr(module, "sweep", None)
  if not callable(declare):
    raise errors.ConfigError(f"{path}: no sweep(); declare the jobs beside "
                             "get_config, e.g. def sweep(arg=None): yield {'seed': 0}; "
                             "yield {'seed': 1}")
  out = list(declare(preset))
  if not out:
    raise errors.ConfigError(f"{path}: sweep({preset!r}) yields no job")
  for i, overrides in enumerate(out):
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
      raise errors.ConfigError(f"{path}: sweep({preset!r}) job {i} is {overrides!r}; "
                               "expected a dict of dotted config keys to values")
    try:
      json.dumps(overrides, allow_nan=False)
    except (TypeError, ValueError) as e:
      raise errors.ConfigError(f"{path}: sweep({preset!r}) job {i} {overrides!r}: its "
                               f"values must be JSON numbers, strings, booleans, None "
                               f"or lists of them ({e})") from None
  return out


def job_name(overrides: dict[str, Any]) -> str:
  """A folder name made of the overrides: ``key=value`` joined by commas.

  Tuples join with ``+``; characters other than letters, digits and
  ``_.=+,-`` become ``_``; past 100 characters the name is cut and ends in
  8 hex digits of the full text's SHA-256. No overrides: ``base``.
  """
  if not overrides:
    return "base"
  text = ",".join(f"{k}={_text(v)}" for k, v in overrides.items())
  name = re.sub(r"[^A-Za-z0-9_.=+,-]+", "_", text)
  if len(name) > _NAME_LIMIT:
    name = f"{name[:_NAME_LIMIT - 9]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
  return name


def _text(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return "+".join(_text(v) for v in value)
  if isinstance(value, dict):
    return "+".join(f"{k}_{_text(v)}" for k, v in value.items())
  return str(value)


def with_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any],
                   job: str = "") -> ml_collections.ConfigDict:
  """A copy of ``config`` with each dotted key of ``overrides`` set.

  Only existing keys can be set (a sweep that names a key the config does
  not have is a typo, not a new setting); ConfigError names the job and key.
  """
  out = copy.deepcopy(config)
  for key, value in overrides.items():
    node, parts = out, key.split(".")
    for depth, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = ".".join(["config"] + parts[:depth])
        allowed = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise errors.ConfigError(f"sweep job {job}: unknown key config.{key}; {where} "
                                 f"has keys: {', '.join(allowed)}")
      if depth < len(parts) - 1:
        node = node[part]
    try:
      node[parts[-1]] = value
    except (TypeError, ValueError, KeyError, AttributeError) as e:
      raise errors.ConfigError(f"sweep job {job}: config.{key}={value!r}: "
                               f"{' '.join(str(e).split())}") from None
  return out


def _main():
  """``saliency_jax.main``, imported when used: under ``python -m saliency_jax.main``
  (an aggregate reading a sweep) a second import would define its flags twice."""
  from saliency_jax import main  # pylint: disable=g-import-not-at-top
  return main


def expand(config: ml_collections.ConfigDict,
           overrides_list: Sequence[dict[str, Any]]) -> list[Job]:
  """One :class:`Job` per overrides, each config validated (``main.validate``).

  Raises the first job's error, prefixed with its name, before anything is
  written; two jobs with one name (the same overrides) are an error.
  """
  jobs: list[Job] = []
  seen: dict[str, int] = {}
  for i, overrides in enumerate(overrides_list):
    name = job_name(overrides)
    if name in RESERVED:
      raise errors.ConfigError(f"sweep job {i}: its name {name!r} is reserved for the "
                               "sweep's own folders")
    if name in seen:
      raise errors.ConfigError(f"sweep jobs {seen[name]} and {i} are both named {name!r} "
                               f"({overrides!r}); every job needs its own overrides")
    seen[name] = i
    job_config = with_overrides(config, overrides, name)
    try:
      _main().validate(job_config)
    except errors.Error as e:
      raise type(e)(f"sweep job {name}: {e}") from None
    jobs.append(Job(name, dict(overrides), job_config))
  return jobs


# ------------------------------------------------------------- sweep.json ---

def _record(config: ml_collections.ConfigDict, jobs: Sequence[Job],
            source: dict[str, Any]) -> dict[str, Any]:
  # Metric options left at their defaults are not recorded (as in config.json).
  config = config_lib.without_default_metric_options(config)
  return {"source": source,
          "config": json.loads(config.to_json_best_effort(sort_keys=True)),
          "jobs": [{"name": j.name, "overrides": json.loads(json.dumps(j.overrides))}
                   for j in jobs]}


def record(sweep_dir: str, config: ml_collections.ConfigDict, jobs: Sequence[Job],
           source: dict[str, Any]) -> dict[str, Any]:
  """Writes ``sweep.json`` (base config, jobs), or checks it holds this sweep.

  Args:
    source: where the sweep came from (config file, preset), kept for the
      reports; not compared.

  Raises:
    WorkdirError: ``sweep_dir`` holds another sweep (other base settings or
      other jobs), naming what differs.
  """
  new = _record(config, jobs, source)
  path = os.path.join(sweep_dir, SWEEP_FILE)
  if not os.path.exists(path):
    os.makedirs(sweep_dir, exist_ok=True)
    io_utils.write_json(path, new)
    return new
  old = read(sweep_dir)
  differences = _differences(old, new)
  if differences:
    raise errors.WorkdirError(
        f"--sweep_dir={sweep_dir} holds another sweep ({differences}); use a new "
        "--sweep_dir, or the same config, preset and overrides to resume it")
  return old


def read(sweep_dir: str) -> dict[str, Any]:
  """``sweep.json`` of ``sweep_dir``; WorkdirError if there is none."""
  path = os.path.join(sweep_dir, SWEEP_FILE)
  if not os.path.exists(path):
    raise errors.WorkdirError(f"--sweep_dir={sweep_dir}: no {SWEEP_FILE} there (launch "
                              "the sweep first: python launch/sweep.py --config=... "
                              f"--sweep_dir={sweep_dir})")
  try:
    return io_utils.read_json(path)
  except ValueError as e:
    raise errors.WorkdirError(f"{path}: unreadable ({e})") from None


def jobs_of(sweep_record: dict[str, Any]) -> list[Job]:
  """The jobs ``sweep.json`` lists (without configs)."""
  return [Job(j["name"], j["overrides"]) for j in sweep_record["jobs"]]


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
  before_config, after_config = (workdir_lib.flat_config(old["config"]),
                                   workdir_lib.flat_config(new["config"]))
  changed = sorted(k for k in set(before_config) | set(after_config)
                   if before_config.get(k) != after_config.get(k))
  parts = [f"config.{', config.'.join(changed)}"] if changed else []
  before = {j["name"]: j["overrides"] for j in old["jobs"]}
  after = {j["name"]: j["overrides"] for j in new["jobs"]}
  for what, names in (("jobs added", [n for n in after if n not in before]),
                      ("jobs removed", [n for n in before if n not in after])):
    if names:
      parts.append(f"{what}: {', '.join(names)}")
  if not parts and list(before) != list(after):
    parts.append("the jobs' order")
  return "; ".join(parts)


# ------------------------------------------------------------------ states ---

def run_dirs(workdir: str, config_record: dict[str, Any]) -> list[tuple[str, str]]:
  """(experiment, folder) of each run a workdir holds: itself, or a study's tests."""
  experiment = config_record.get("experiment", "")
  if experiment == "study":
    tests = (config_record.get("study") or {}).get("tests") or []
    return [(test, os.path.join(workdir, test)) for test in tests]
  return [(experiment, workdir)]


def unfinished(workdir: str, config_record: dict[str, Any]) -> str | None:
  """What a finished run of ``config_record`` would have and ``workdir`` lacks, or None."""
  experiment = config_record.get("experiment", "")
  folders = [(experiment, workdir)]
  if experiment == "study":
    folders += run_dirs(workdir, config_record)
  for name, folder in folders:
    where = "" if folder == workdir else f"{name}/"
    for output in _OUTPUTS.get(name, _SALIENCY_OUTPUTS):
      if not os.path.exists(os.path.join(folder, output)):
        return f"no {where}{output}"
    if name not in _OUTPUTS:
      problem = results.results_problem(folder)
      if problem:
        return f"{where}{problem}"
  return None


def job_state(workdir: str) -> State:
  """The state of the run in ``workdir``, read from its files and its lock."""
  if not os.path.isdir(workdir):
    return State(NOT_STARTED)
  holder = workdir_lib.lock_holder(workdir)
  if holder:
    return State(RUNNING, f"PID {holder}")
  config_path = os.path.join(workdir, workdir_lib.CONFIG)
  if not os.path.exists(config_path):
    return State(NOT_STARTED)
  try:
    problem = unfinished(workdir, io_utils.read_json(config_path))
  except ValueError as e:
    problem = f"{workdir_lib.CONFIG} unreadable ({e})"
  return State(FAILED, problem) if problem else State(FINISHED)


def submissions(sweep_dir: str) -> dict[str, dict[str, Any]]:
  """The latest submission of each job (``submissions.jsonl``)."""
  return {s["job"]: s for s in io_utils.read_jsonl(os.path.join(sweep_dir, SUBMISSIONS))}


def states(sweep_dir: str, jobs: Iterable[Job] | None = None) -> list[tuple[Job, State]]:
  """Every job of the sweep (or ``jobs``) with its state.

  A job that has not finished, is not running and was last submitted to
  SLURM is ``queued`` while SLURM (sacct, through submitit) says it waits.
  """
  jobs = jobs_of(read(sweep_dir)) if jobs is None else list(jobs)
  latest = submissions(sweep_dir)
  out = []
  for job in jobs:
    state = job_state(os.path.join(sweep_dir, job.name))
    submitted = latest.get(job.name)
    if state.state in TO_SUBMIT and submitted and submitted.get("executor") == "slurm":
      waiting = _slurm_state(submitted)
      if waiting in _SLURM_WAITING:
        state = State(QUEUED, f"SLURM job {submitted['job_id']}: {waiting}")
    if state.state in TO_SUBMIT and submitted:
      log = log_path(submitted)
      if os.path.exists(log):
        detail = state.detail or "submitted, never took its workdir"
        state = State(state.state, f"{detail}; log {log}")
    out.append((job, state))
  return out


def log_path(submitted: dict[str, Any]) -> str:
  """The stderr file submitit writes for a submission (task 0)."""
  return os.path.join(submitted["folder"], f"{submitted['job_id']}_0_log.err")


def _slurm_state(submitted: dict[str, Any]) -> str | None:
  try:
    submitit = _submitit()
    return str(submitit.SlurmJob(folder=submitted["folder"],
                                 job_id=str(submitted["job_id"])).state).upper()
  except Exception as e:  # pylint: disable=broad-except  # no sacct here, ...
    logging.warning("SLURM job %s: state unknown (%s)", submitted.get("job_id"), e)
    return None


def status_text(sweep_dir: str, rows: Sequence[tuple[Job, State]] | None = None) -> str:
  """A table of the jobs and their states, then the counts."""
  rows = states(sweep_dir) if rows is None else rows
  width = max([len("job")] + [len(job.name) for job, _ in rows])
  lines = [f"sweep {sweep_dir}", f"{'job':<{width}}  {'state':<11}  detail"]
  lines += [f"{job.name:<{width}}  {state.state:<11}  {state.detail}".rstrip()
            for job, state in rows]
  counts = collections.Counter(state.state for _, state in rows)
  lines.append(f"{len(rows)} jobs: " + ", ".join(f"{counts[s]} {s}" for s in STATES
                                                if counts[s]))
  return "\n".join(lines)


# --------------------------------------------------------------- submitting ---

def _submitit():
  try:
    import submitit  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.ConfigError(SUBMITIT_MISSING) from None
  return submitit


def run_job(config: ml_collections.ConfigDict, workdir: str) -> str:
  """What one job runs, in its own process: ``main.run(config, workdir)``."""
  main_lib = _main()
  logging.set_verbosity(logging.INFO)
  main_lib._quiet_orbax()  # pylint: disable=protected-access
  print(f"sweep job: running {config.experiment} in {workdir}", flush=True)
  main_lib.run(config, workdir)
  print(f"sweep job: finished {workdir}", flush=True)
  return workdir


def executor(sweep_dir: str, kind: str, options: Options = Options()):
  """A submitit executor for ``kind`` ('local' or 'slurm') logging into SWEEP_DIR/logs."""
  if kind not in EXECUTORS:
    raise errors.ConfigError(f"--executor={kind!r}: expected one of {EXECUTORS}")
  submitit = _submitit()
  out = submitit.AutoExecutor(folder=os.path.join(sweep_dir, LOGS), cluster=kind)
  parameters: dict[str, Any] = dict(
      name=f"saliency_jax-{os.path.basename(os.path.abspath(sweep_dir))}",
      gpus_per_node=options.gpus_per_job, cpus_per_task=options.cpus_per_job,
      mem_gb=options.mem_gb)
  if kind == "slurm":
    parameters.update(timeout_min=options.timeout_min or _SLURM_TIMEOUT_MIN,
                      slurm_partition=options.partition, slurm_account=options.account,
                      slurm_qos=options.qos, slurm_array_parallelism=options.parallel)
  else:
    parameters.update(timeout_min=options.timeout_min or _LOCAL_TIMEOUT_MIN)
    if options.gpus_per_job is None:
      # submitit's local executor sets CUDA_VISIBLE_DEVICES to the GPUs it
      # was given (none: every GPU hidden); keep the launcher's instead.
      visible = os.environ.get("CUDA_VISIBLE_DEVICES")
      parameters["local_setup"] = [
          "unset CUDA_VISIBLE_DEVICES" if visible is None
          else f"export CUDA_VISIBLE_DEVICES={shlex.quote(visible)}"]
  out.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
  return out


def submit(sweep_dir: str, jobs: Sequence[Job], *, kind: str = "local",
           options: Options = Options()) -> list[Submission]:
  """Submits ``jobs`` at once (SLURM: one job array) and records them.

  Each job runs :func:`run_job` with its config into ``SWEEP_DIR/<name>``;
  ``submissions.jsonl`` gets the executor, job id and log folder of each.
  """
  if any(job.config is None for job in jobs):
    raise ValueError("submit: jobs need their configs (sweep.expand)")
  sweep_dir = os.path.abspath(sweep_dir)  # jobs may start elsewhere (SLURM)
  out = executor(sweep_dir, kind, options)
  with out.batch():
    handles = [out.submit(run_job, job.config, os.path.join(sweep_dir, job.name))
               for job in jobs]
  now = time.monotonic()
  stamp = datetime.datetime.now().isoformat(timespec="seconds")
  for job, handle in zip(jobs, handles):
    io_utils.append_jsonl(os.path.join(sweep_dir, SUBMISSIONS), {
        "job": job.name, "executor": kind, "job_id": str(handle.job_id),
        "folder": os.path.join(sweep_dir, LOGS), "time": stamp})
    print(f"submitted {job.name} ({kind} job {handle.job_id})", flush=True)
  return [Submission(job, handle, now) for job, handle in zip(jobs, handles)]


def wait(sweep_dir: str, submitted: Sequence[Submission], *, poll_s: float = 0.5,
         then: Callable[[], list[Submission]] | None = None,
         total: int | None = None) -> dict[str, State]:
  """Waits for ``submitted`` jobs, saying each one's state as it ends.

  ``then`` is called after each end for more submissions (the local
  executor's queue; ``total`` counts them all); returns job name -> state of
  every job waited for.
  """
  pending, ended = list(submitted), {}
  total = total or len(pending)
  while pending:
    for item in [s for s in pending if s.handle.done()]:
      pending.remove(item)
      state = job_state(os.path.join(sweep_dir, item.job.name))
      ended[item.job.name] = state
      note = f" ({state.detail})" if state.detail else ""
      if state.state != FINISHED:
        note += f"; log {item.handle.paths.stderr}"
      print(f"[{len(ended)}/{total}] {item.job.name}: {state.state}{note}, "
            f"{time.monotonic() - item.started:.0f} s", flush=True)
      if then is not None:
        pending += then()
    if pending:
      time.sleep(poll_s)
  return ended


def run_jobs(sweep_dir: str, jobs: Sequence[Job], *, kind: str = "local",
             options: Options = Options(), block: bool = True) -> dict[str, State]:
  """Submits ``jobs``; local: ``options.parallel`` (default 1) at a time.

  The local executor runs every job it is given at once, so the queue is
  kept here and the call returns when all have ended. SLURM: one array
  (``options.parallel`` its parallelism); waits only with ``block``.
  """
  if kind == "slurm":
    submitted = submit(sweep_dir, jobs, kind=kind, options=options)
    return wait(sweep_dir, submitted) if block else {}
  queue = list(jobs)

  def take(count: int) -> list[Submission]:
    batch = queue[:count]
    del queue[:count]
    return submit(sweep_dir, batch, kind=kind, options=options) if batch else []

  # After each end one slot is free: one more job.
  return wait(sweep_dir, take(max(1, options.parallel or 1)), then=lambda: take(1),
              total=len(jobs))


def prepare_data(jobs: Sequence[Job]) -> None:
  """Builds each dataset the jobs read, once, before any job starts.

  Jobs sharing ``config.data_dir`` would otherwise race to build the same
  TFDS dataset, and all but one would fail.
  """
  from saliency_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  seen = set()
  for job in jobs:
    if job.config.experiment == "benchmark":
      continue
    key = json.dumps([job.config.dataset, job.config.data_dir,
                      data_lib.builder_options(job.config)], sort_keys=True, default=str)
    if key not in seen:
      seen.add(key)
      print(f"dataset of {job.name}: {data_lib.build_name(job.config)}", flush=True)


def launch(config: ml_collections.ConfigDict, path: str, preset: str | None,
           sweep_dir: str, *, kind: str = "local", options: Options = Options(),
           only: Sequence[str] = (), resubmit: bool = False, block: bool = True,
           build_data: bool = True) -> dict[str, State]:
  """Launches (or resumes) the sweep of config file ``path`` into ``sweep_dir``.

  Expands and validates every job, records or checks ``sweep.json``, then
  submits the jobs (of ``only``, if given) that are failed or not started;
  finished, running and queued jobs are left alone. The launcher holds
  ``sweep_dir``'s lock while it submits and waits: a second one is refused.

  Args:
    config: the base config (``get_config(preset)`` with any ``--config.*``).
    path, preset: the config file (or packaged config's name: it is recorded
      as the file's absolute path, which loads from anywhere) and preset
      (``sweep(preset)`` declares the jobs).
    sweep_dir: the sweep's folder; job ``name`` runs in ``sweep_dir/name``.
    kind: 'local' or 'slurm'.
    options: submission options.
    only: job names to submit (each must be in the sweep).
    resubmit: require an existing ``sweep.json`` (never start a new sweep).
    block: wait for the jobs (the local executor always does).
    build_data: build the datasets here first (:func:`prepare_data`).

  Returns:
    job name -> state of each job submitted and waited for.
  """
  if kind not in EXECUTORS:
    raise errors.ConfigError(f"--executor={kind!r}: expected one of {EXECUTORS}")
  _submitit()  # missing: say so before anything is written
  jobs = expand(config, declared(path, preset))
  unknown = [n for n in only if n not in {j.name for j in jobs}]
  if unknown:
    raise errors.ConfigError(f"--job={unknown[0]!r} is not in the sweep; its jobs are "
                             f"{', '.join(j.name for j in jobs)}")
  if os.path.exists(sweep_dir) and not os.path.isdir(sweep_dir):
    raise errors.WorkdirError(f"--sweep_dir={sweep_dir}: exists and is not a directory")
  if resubmit:
    read(sweep_dir)
  holder = workdir_lib.lock_holder(sweep_dir) if os.path.isdir(sweep_dir) else None
  if holder:
    raise errors.WorkdirError(f"--sweep_dir={sweep_dir}: another launcher (PID {holder}) "
                              "is submitting or waiting for its jobs; wait for it (see "
                              "--status)")
  path = os.path.abspath(config_lib.resolve_config_path(path))
  record(sweep_dir, config, jobs, {"config_file": path, "preset": preset})
  with workdir_lib.lock(sweep_dir):  # one launcher per sweep at a time
    rows = states(sweep_dir, jobs)
    print(status_text(sweep_dir, rows), flush=True)
    todo = [job for job, state in rows if state.state in TO_SUBMIT
            and (not only or job.name in only)]
    if not todo:
      print("nothing to submit: every job chosen is finished, running or queued",
            flush=True)
      return {}
    if build_data:
      prepare_data(todo)
    return run_jobs(sweep_dir, todo, kind=kind, options=options, block=block)
