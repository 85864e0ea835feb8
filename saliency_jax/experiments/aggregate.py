r"""Aggregate a sweep: every job's results merged, mean +/- SD across seeds.

Arun et al. (Radiology: AI 2021) report scores as the mean +/- SD over
replicates. Here the replicates are the jobs of a sweep (``launch/sweep.py``)
that differ only in ``config.replicate_keys`` (default: the seed); jobs that
differ in anything else (the model, its width, label randomization) are
separate *conditions*. For each condition and (experiment, model, method,
stage, metric), with :math:`F_j` the images of job j whose value is finite:

.. math::
  m_j = \frac{1}{|F_j|} \sum_{i \in F_j} v_{ij}, \qquad
  \bar m = \frac{1}{J} \sum_j m_j, \qquad
  s = \Big(\frac{1}{J - 1} \sum_j (m_j - \bar m)^2\Big)^{1/2}

over the J jobs with a finite :math:`m_j`, and the 95% percentile bootstrap
interval of :math:`\bar m` over those J job means (:func:`stats.bootstrap_ci`,
seeded from ``config.seed``'s STATS stream; NaN below two jobs). Non-finite
values never enter a mean: they are counted (``nonfinite``), and a job with
no finite value is left out and counted (``jobs_excluded``). Every job's
verdicts (its ``summary.json``) are counted per method: how many seeds PASS,
FAIL or are INVALID.

Only finished jobs (``sweep.job_state``: outputs present, ``results.csv``
equal to its verified parts) are read; any other job stops the run at
validation, naming it, unless ``config.skip_unfinished`` (then it is left out,
listed and counted). Writes ``results.csv`` (every job's rows with a ``job``
column), ``summary.json``, ``figures/`` and ``report.md`` into the workdir
(default ``SWEEP_DIR/aggregate``).
"""

from __future__ import annotations

import collections
import csv
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import results
from saliency_jax import rng
from saliency_jax import sweep
from saliency_jax import workdir as workdir_lib
from saliency_jax.experiments import study
from saliency_jax.metrics import stats
from saliency_jax.report import aggregate_report

EXPERIMENT = "aggregate"
FIELDS = results.FIELDS + ("job",)
VERDICTS = (stats.PASS, stats.FAIL, stats.INVALID)
NOT_JUDGED = "n/a"
# A job's rows are grouped by these columns before its mean over images.
_KEY = ("experiment", "model", "stage", "method", "metric")


def default_workdir(config: ml_collections.ConfigDict) -> str | None:
  """``SWEEP_DIR/aggregate``: where ``main`` writes without ``--workdir``."""
  return os.path.join(config.sweep_dir, sweep.AGGREGATE) if config.sweep_dir else None


def validate(config: ml_collections.ConfigDict) -> None:
  """``config.sweep_dir`` holds a sweep whose jobs can be aggregated.

  Every job finished (or ``skip_unfinished`` and at least one), all of one
  experiment; ``replicate_keys`` and ``bootstrap_resamples`` well formed.
  """
  if not config.sweep_dir:
    raise errors.ConfigError("config.sweep_dir is not set; expected the --sweep_dir "
                             "of launch/sweep.py")
  if (isinstance(config.bootstrap_resamples, bool)
      or not isinstance(config.bootstrap_resamples, int)
      or config.bootstrap_resamples < 1):
    raise errors.ConfigError(f"config.bootstrap_resamples={config.bootstrap_resamples!r}: "
                             "expected a positive integer")
  keys = config.replicate_keys
  if not isinstance(keys, (tuple, list)) or not all(isinstance(k, str) for k in keys):
    raise errors.ConfigError(f"config.replicate_keys={keys!r}: expected a tuple of "
                             "config keys, e.g. ('seed',)")
  if not os.path.isdir(config.sweep_dir):
    raise errors.ConfigError(f"config.sweep_dir={config.sweep_dir!r}: no such directory")
  try:
    finished(config)
  except errors.WorkdirError as e:
    raise errors.ConfigError(f"config.sweep_dir: {e}") from None


def finished(config: ml_collections.ConfigDict
             ) -> tuple[list[sweep.Job], list[tuple[sweep.Job, sweep.State]]]:
  """(finished jobs, skipped (job, state) pairs); ConfigError where that cannot be.

  Unfinished jobs are refused, all named, unless ``config.skip_unfinished``.
  """
  rows = sweep.states(config.sweep_dir)
  done = [job for job, state in rows if state.state == sweep.FINISHED]
  skipped = [(job, state) for job, state in rows if state.state != sweep.FINISHED]
  if skipped and not config.skip_unfinished:
    listed = "; ".join(f"{job.name} ({state.state}{': ' + state.detail if state.detail else ''})"
                       for job, state in skipped)
    raise errors.ConfigError(
        f"config.sweep_dir={config.sweep_dir!r}: {len(skipped)} of {len(rows)} jobs are "
        f"not finished: {listed}; resubmit them (launch/sweep.py with the same "
        "flags) or set config.skip_unfinished=True to aggregate the others")
  if not done:
    raise errors.ConfigError(f"config.sweep_dir={config.sweep_dir!r}: no job has "
                             "finished; nothing to aggregate")
  experiments = {job.name: _job_config(config, job).get("experiment") for job in done}
  if len(set(experiments.values())) > 1:
    raise errors.ConfigError(
        f"config.sweep_dir={config.sweep_dir!r}: its jobs ran different experiments "
        f"({', '.join(f'{n}: {e}' for n, e in experiments.items())}); a sweep "
        "aggregates one")
  experiment = next(iter(experiments.values()))
  if experiment in ("train", "benchmark", EXPERIMENT):
    raise errors.ConfigError(f"config.sweep_dir={config.sweep_dir!r}: its jobs ran "
                             f"{experiment!r}, which writes no results.csv to aggregate")
  return done, skipped


# ------------------------------------------------------------------ maths ---

def job_means(rows: Sequence[results.Row]) -> dict[tuple, tuple[float, int, int]]:
  """(experiment, model, stage, method, metric) -> (mean of the finite values,
  finite count, non-finite count) of one job's rows."""
  groups: dict[tuple, list[float]] = collections.defaultdict(list)
  for r in rows:
    groups[tuple(r[k] for k in _KEY)].append(r["value"])
  out = {}
  for key, group in groups.items():
    values = np.asarray(group, np.float64)
    finite = np.isfinite(values)
    mean = float(values[finite].mean()) if finite.any() else float("nan")
    out[key] = (mean, int(finite.sum()), int((~finite).sum()))
  return out


def spread(values: Sequence[float], *, seed: int, num_resamples: int
           ) -> dict[str, Any]:
  """Mean, SD (ddof 1) and 95% bootstrap interval of the finite ``values``.

  Returns ``mean``, ``sd``, ``low``, ``high``, ``n`` (finite values) and
  ``excluded`` (the others); SD and interval are NaN below two values.
  """
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  nan = float("nan")
  if finite.size >= 2:
    mean, low, high = stats.bootstrap_ci(finite, seed=seed, num_resamples=num_resamples)
    sd = float(finite.std(ddof=1))
  else:
    mean, low, high, sd = (float(finite[0]) if finite.size else nan), nan, nan, nan
  return {"mean": mean, "sd": sd, "low": low, "high": high, "n": int(finite.size),
          "excluded": int(values.size - finite.size)}


def across_seeds(rows_by_job: Mapping[str, Sequence[results.Row]],
                 condition_of: Mapping[str, str], *, seed: int,
                 num_resamples: int) -> list[dict[str, Any]]:
  """Per condition and (experiment, model, stage, method, metric): each job's
  mean over its images, then :func:`spread` across the jobs (the seeds).

  Returns rows with ``condition``, the key's columns, ``mean``, ``sd``,
  ``low``, ``high``, ``n`` (jobs counted), ``jobs_excluded`` (jobs without
  a finite value), ``images`` (finite values read), ``nonfinite`` (values
  left out) and ``per_job`` (job -> its mean).
  """
  groups: dict[tuple, dict[str, tuple[float, int, int]]] = collections.defaultdict(dict)
  for job, rows in rows_by_job.items():
    for key, value in job_means(rows).items():
      groups[(condition_of[job],) + key][job] = value
  out = []
  for key, by_job in sorted(groups.items()):
    summary = spread([m for m, _, _ in by_job.values()], seed=seed,
                     num_resamples=num_resamples)
    out.append({
        "condition": key[0], **dict(zip(_KEY, key[1:])),
        "mean": summary["mean"], "sd": summary["sd"], "low": summary["low"],
        "high": summary["high"], "n": summary["n"],
        "jobs_excluded": summary["excluded"],
        "images": sum(n for _, n, _ in by_job.values()),
        "nonfinite": sum(k for _, _, k in by_job.values()),
        "per_job": {job: m for job, (m, _, _) in by_job.items()},
    })
  return out


def condition(overrides: Mapping[str, Any], replicate_keys: Sequence[str]) -> str:
  """A job's condition: its overrides other than the replicate keys, as a job name
  ('' when they are all replicate keys)."""
  rest = {k: v for k, v in overrides.items() if k not in replicate_keys}
  return sweep.job_name(rest) if rest else ""


# --------------------------------------------------------------- verdicts ---

def job_verdicts(summaries: Mapping[str, Mapping[str, Any]]
                 ) -> dict[tuple[str, str], dict[str, Any]]:
  """(test, method) -> ``verdict`` (PASS, FAIL, INVALID or None) and, for the
  randomization and agreement tests, the verdict metric's ``similarity`` and
  ``baseline`` means, from one job's summaries (test -> summary.json).
  A test without a ``verdict_metric`` (localization, faithfulness) gives one
  word per method. The null baselines' verdicts (``null_verdicts``, e.g.
  ``null_noise``) come with ``null: True``, never counted as methods."""
  out = {}
  for test, summary in summaries.items():
    metric = summary.get("verdict_metric")
    words = (study.verdicts_of(test, summary) if metric is not None
             else dict(summary.get("verdicts") or {}))
    nulls = (study.verdicts_of(test, {"verdict_metric": metric,
                                      "verdicts": summary.get("null_verdicts") or {}})
             if metric is not None else {})
    for method, verdict in [*words.items(), *nulls.items()]:
      entry: dict[str, Any] = {"verdict": verdict, "null": method in nulls}
      detail = (summary.get("null_verdicts" if method in nulls else "verdicts")
                or {}).get(method)
      if isinstance(detail, Mapping) and isinstance(detail.get(metric), Mapping):
        entry.update(metric=metric,
                     similarity=_first(detail[metric].get("similarity")),
                     baseline=_first(detail[metric].get("baseline")))
      out[(test, method)] = entry
  return out


def _first(triple: Any) -> float:
  return float(triple[0]) if triple is not None else float("nan")


def verdict_counts(verdicts_by_job: Mapping[str, Mapping[tuple[str, str], dict[str, Any]]],
                   condition_of: Mapping[str, str], *, seed: int,
                   num_resamples: int) -> list[dict[str, Any]]:
  """Per condition, test and method: how many jobs PASS, FAIL, are INVALID or
  not judged, each job's verdict, and the verdict metric's similarity and
  baseline across jobs (:func:`spread`); ``null`` marks a null baseline's row
  (listed apart from the methods')."""
  groups: dict[tuple, dict[str, dict[str, Any]]] = collections.defaultdict(dict)
  for job, verdicts in verdicts_by_job.items():
    for (test, method), entry in verdicts.items():
      groups[(condition_of[job], test, method)][job] = entry
  out = []
  for (condition_, test, method), by_job in sorted(groups.items()):
    words = {job: e["verdict"] or NOT_JUDGED for job, e in by_job.items()}
    counts = collections.Counter(words.values())
    row = {"condition": condition_, "experiment": test, "method": method,
           "counts": {w: counts[w] for w in VERDICTS + (NOT_JUDGED,)},
           "per_job": words,
           "null": any(e.get("null", False) for e in by_job.values())}
    metrics = {e.get("metric") for e in by_job.values()} - {None}
    if len(metrics) == 1:
      row["metric"] = metrics.pop()
      for part in ("similarity", "baseline"):
        row[part] = spread([e.get(part, np.nan) for e in by_job.values()], seed=seed,
                           num_resamples=num_resamples)
    out.append(row)
  return out


# -------------------------------------------------------------------- run ---

def _job_config(config: ml_collections.ConfigDict, job: sweep.Job) -> dict[str, Any]:
  return io_utils.read_json(os.path.join(config.sweep_dir, job.name, workdir_lib.CONFIG))


def _read_job(config, job: sweep.Job) -> tuple[list[results.Row], dict[str, Any], dict]:
  """(rows, test -> summary, fingerprints) of a finished job."""
  workdir = os.path.join(config.sweep_dir, job.name)
  all_rows, summaries, fingerprint = [], {}, {}
  for test, folder in sweep.run_dirs(workdir, _job_config(config, job)):
    all_rows += results.read_rows(os.path.join(folder, "results.csv"))
    summaries[test] = io_utils.read_json(os.path.join(folder, "summary.json"))
    relative = os.path.relpath(folder, workdir)
    for name in ("results.csv", "summary.json"):
      fingerprint[os.path.normpath(os.path.join(relative, name))] = io_utils.sha256_file(
          os.path.join(folder, name))
  return all_rows, summaries, fingerprint


def _csv(rows_by_job: Mapping[str, Sequence[results.Row]]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
  writer.writeheader()
  for job, rows in rows_by_job.items():
    writer.writerows(dict(r, job=job) for r in rows)
  return buffer.getvalue()


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Merges the finished jobs of ``config.sweep_dir``; see module doc."""
  record = sweep.read(config.sweep_dir)
  done, skipped = finished(config)
  seed = rng.integer_seed(config.seed, rng.STATS)
  resamples = config.bootstrap_resamples
  rows_by_job, summaries_by_job, fingerprints = {}, {}, {}
  for job in done:
    rows_by_job[job.name], summaries_by_job[job.name], fingerprints[job.name] = (
        _read_job(config, job))
  # A job's results changed since an earlier aggregate here: refused, named.
  workdir_lib.record_inputs(workdir, {f"job/{n}": f for n, f in fingerprints.items()})
  io_utils.write_text(os.path.join(workdir, "results.csv"), _csv(rows_by_job))
  condition_of = {job.name: condition(job.overrides, config.replicate_keys)
                  for job in done}
  job_configs = {job.name: _job_config(config, job) for job in done}
  summary = {
      "experiment": EXPERIMENT,
      "sweep_dir": config.sweep_dir, "source": record.get("source"),
      "aggregated": _experiment(job_configs),
      "replicate_keys": list(config.replicate_keys),
      "jobs": [{"name": job.name, "overrides": job.overrides,
                "condition": condition_of[job.name],
                "seed": job_configs[job.name].get("seed"),
                "model": job_configs[job.name].get("model")} for job in done],
      "skipped": [{"name": job.name, "state": state.state, "detail": state.detail}
                  for job, state in skipped],
      "conditions": sorted(set(condition_of.values())),
      "stages": {name: s.get("stages") for name, by_test in summaries_by_job.items()
                 for s in by_test.values() if s.get("stages")},
      "modes": {name: s.get("mode") for name, by_test in summaries_by_job.items()
                for s in by_test.values() if s.get("mode")},
      "verdicts": verdict_counts(
          {n: job_verdicts(s) for n, s in summaries_by_job.items()}, condition_of,
          seed=seed, num_resamples=resamples),
      "aggregates": across_seeds(rows_by_job, condition_of, seed=seed,
                                 num_resamples=resamples),
      "inputs": workdir_lib.recorded_inputs(workdir),
  }
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  aggregate_report.write(workdir, config, summary)
  return summary


def _experiment(job_configs: Mapping[str, Mapping[str, Any]]) -> str:
  return next(iter(job_configs.values())).get("experiment", "")
