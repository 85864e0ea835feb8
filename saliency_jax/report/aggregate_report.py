"""The aggregate report of a sweep: mean +/- SD across seeds, verdict counts, figures.

Turns what ``experiments/aggregate.py`` computed into the journal paper's
presentation (Arun et al., Radiology: AI 2021: mean +/- SD over replicates):
the jobs, per method how many seeds pass each test, one table per condition,
test and metric, and per condition and test one figure: each method's score
per cascade stage with a +/- SD band, or grouped bars with +/- SD whiskers
where there is one stage.

Writes ``workdir/figures/aggregate_*.png`` and ``workdir/report.md``.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from saliency_jax.report import cascade_report
from saliency_jax.report import figures
from saliency_jax.report import markdown

FIGURES_DIR = "figures"
REPORT = "report.md"
ALL = "all jobs"  # the condition of a sweep over replicate keys only
# The different-image baseline's metric suffix (experiments/runner.py; not
# imported: it brings JAX and the data pipeline).
BASELINE_SUFFIX = "_different_images"
# A null baseline's method column (experiments/cascade.py NULL_PREFIX).
NULL_PREFIX = cascade_report.NULL_PREFIX

Group = dict[tuple[str, str], list[Mapping[str, Any]]]


def write(workdir: str, config: Any, summary: Mapping[str, Any]) -> None:
  """Writes the figures and ``report.md`` of one aggregate.

  Args:
    workdir: the aggregate's directory.
    config: its ConfigDict (read with ``.get``).
    summary: what ``aggregate.run`` wrote to ``summary.json``.
  """
  groups: Group = collections.defaultdict(list)
  for row in summary.get("aggregates") or []:
    groups[(row["condition"], row["experiment"])].append(row)
  written = [item for (cond, test), rows in groups.items()
             for item in _figure(workdir, summary, cond, test, rows)]
  parts = [
      f"# Sweep aggregate: `{summary.get('aggregated', '?')}` over "
      f"{len(summary.get('jobs') or [])} jobs\n",
      _what_ran(config, summary),
      _verdict_section(summary),
      _score_sections(groups),
      markdown.excluded_section(_excluded_lines(summary)),
      markdown.figures_section({"scores": written}, {"scores": "Scores across seeds"}),
      _how_to_read(summary),
  ]
  markdown.write_report(workdir, "\n".join(p for p in parts if p))


def _name(condition: str) -> str:
  return condition or ALL


def mean_sd(mean: Any, sd: Any) -> str:
  """'mean ± SD'; the SD 'n/a' below two seeds; 'n/a' without a mean."""
  if markdown.num(mean) == "n/a":
    return "n/a"
  return f"{markdown.num(mean)} ± {markdown.num(sd)}"


# ---------------------------------------------------------------- sections ---

def _what_ran(config, summary) -> str:
  source = summary.get("source") or {}
  spec = source.get("config_file", "?") + (f":{source['preset']}" if source.get("preset")
                                           else "")
  jobs, skipped = summary.get("jobs") or [], summary.get("skipped") or []
  lines = [
      "## What was aggregated\n",
      f"- Sweep `{summary.get('sweep_dir')}` (`{spec}`): {len(jobs)} finished jobs "
      f"aggregated, {len(skipped)} left out.",
      f"- Replicates: jobs that differ only in "
      f"{', '.join(f'`{k}`' for k in summary.get('replicate_keys') or [])}; "
      f"conditions: {', '.join(f'`{_name(c)}`' for c in summary.get('conditions') or [])}.",
      f"- Intervals: {markdown.get(config, 'bootstrap_resamples', '?')} bootstrap "
      "resamples of the mean across seeds.",
      "", "| Job | Condition | Seed | Model | Overrides |", "|---|---|---|---|---|",
  ]
  for job in jobs:
    overrides = ", ".join(f"`{k}={v!r}`" for k, v in job["overrides"].items()) or "none"
    lines.append(f"| `{job['name']}` | {_name(job['condition'])} | {job.get('seed')} | "
                 f"`{job.get('model')}` | {overrides} |")
  if skipped:
    lines += ["", "**Left out (not finished; `config.skip_unfinished`):**", ""]
    lines += [f"- `{s['name']}`: {s['state']}" + (f" ({s['detail']})" if s["detail"] else "")
              for s in skipped]
  return "\n".join(lines) + "\n"


def _verdict_section(summary) -> str:
  every = summary.get("verdicts") or []
  rows = [r for r in every if not r.get("null")]
  nulls = [r for r in every if r.get("null")]
  if not every:
    return ""
  lines = ["## Verdicts across seeds\n",
           "How many seeds (jobs) each method passes, per test; the similarity "
           "columns are the verdict metric's means across seeds (mean ± SD).\n"]
  lines += _verdict_rows(rows)
  if nulls:
    lines += ["\n### Null baselines\n",
              "Maps that know nothing the test is about (`null_noise`: noise "
              "drawn afresh per model state; `null_random_cam`: random channel "
              "weights), judged by the same rule (Binder et al., CVPR 2023); "
              "not methods, not counted above. A method's passes mean more the "
              "further its similarity lies from the nulls'.\n"]
    lines += _verdict_rows(nulls)
  return "\n".join(lines) + "\n"


def _verdict_rows(rows) -> list[str]:
  """The verdict count table of ``rows`` (``aggregate.verdict_counts``)."""
  lines = ["| Condition | Test | Method | PASS | FAIL | INVALID | not judged | "
           "Similarity | Baseline | Per seed |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    counts = row["counts"]
    similarity, baseline = row.get("similarity"), row.get("baseline")
    metric = f" ({row['metric']})" if row.get("metric") else ""
    per_job = ", ".join(f"{job}: {word}" for job, word in row["per_job"].items())
    lines.append(
        f"| {_name(row['condition'])} | {row['experiment']} | `{row['method']}` | "
        f"{counts['PASS']} | {counts['FAIL']} | {counts['INVALID']} | {counts['n/a']} | "
        f"{mean_sd(similarity['mean'], similarity['sd']) + metric if similarity else 'n/a'}"
        f" | {mean_sd(baseline['mean'], baseline['sd']) if baseline else 'n/a'} | "
        f"{per_job} |")
  return lines


def _shown_stages(rows: Sequence[Mapping[str, Any]]) -> list[int]:
  """Every stage up to two; else the trained model and the last stage (the rest
  are in the figures and summary.json)."""
  stages = sorted({int(r["stage"]) for r in rows})
  return stages if len(stages) <= 2 else [stages[0], stages[-1]]


def _score_sections(groups: Group) -> str:
  if not groups:
    return ""
  lines = ["## Scores across seeds\n",
           "Each seed's mean over its images, then mean ± SD across seeds and the "
           "95% bootstrap interval of that mean.\n"]
  for (cond, test), rows in groups.items():
    shown = _shown_stages(rows)
    if len(shown) < len({int(r["stage"]) for r in rows}):
      lines.append(f"{test} ({_name(cond)}): stages {shown[0]} (trained) and {shown[-1]} "
                   "(last) here; every stage in the figures and `summary.json`.\n")
    by_metric: dict[str, list[Mapping[str, Any]]] = collections.defaultdict(list)
    for row in rows:
      if int(row["stage"]) in shown:
        by_metric[row["metric"]].append(row)
    for metric, metric_rows in by_metric.items():
      lines += [f"### {test}: `{metric}` ({_name(cond)})\n",
                "| Method | Model | Stage | Mean ± SD | 95% interval | Seeds | "
                "Non-finite values |", "|---|---|---|---|---|---|---|"]
      for r in sorted(metric_rows, key=lambda r: (r["method"], r["model"], r["stage"])):
        lines.append(
            f"| `{r['method']}` | `{r['model']}` | {r['stage']} | {mean_sd(r['mean'], r['sd'])} | "
            f"{_bounds(r['low'], r['high'])} | {r['n']} | "
            f"{r['nonfinite']} |")
      lines.append("")
  return "\n".join(lines)


def _bounds(low: Any, high: Any) -> str:
  """'[low, high]', or 'n/a' (fewer than two seeds)."""
  if markdown.num(low) == "n/a":
    return "n/a"
  return f"[{markdown.num(low)}, {markdown.num(high)}]"


def _excluded_lines(summary) -> list[str]:
  lines = []
  for r in summary.get("aggregates") or []:
    if r["nonfinite"] or r["jobs_excluded"]:
      lines.append(f"- `{r['method']}` `{r['metric']}` stage {r['stage']} "
                   f"({_name(r['condition'])}, {r['experiment']}): non-finite values "
                   f"left out of the means: {r['nonfinite']}; seeds without a finite "
                   f"value: {r['jobs_excluded']}")
  return lines


def _how_to_read(summary) -> str:
  return (
      "## How to read this\n\n"
      "- A seed (job) is one replicate: its score is the mean over its images; "
      "the table gives the mean and SD of those means across seeds, as Arun et "
      "al. (Radiology: AI 2021) report replicates. With one seed there is no SD "
      "and no interval (n/a).\n"
      "- Non-finite values (undefined comparisons, INVALID maps) never enter a "
      "mean; they are counted above and per row.\n"
      "- Every job's own report is in its folder of the sweep "
      f"(`{summary.get('sweep_dir')}/<job>/report.md`); all rows, with a `job` "
      "column, are in `results.csv`, every aggregate with its per-seed means in "
      "`summary.json`.\n")


# ---------------------------------------------------------------- figures ---

def _figure(workdir: str, summary, cond: str, test: str,
            rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
  """Curves over stages with a ± SD band, or bars with ± SD whiskers."""
  stages = sorted({int(r["stage"]) for r in rows})
  name = markdown.safe(f"aggregate_{_name(cond)}_{test}")
  if len(stages) > 1:
    return _stage_figures(workdir, summary, cond, test, rows, stages, name)
  values: dict[str, dict[str, tuple[float, float, float]]] = collections.defaultdict(dict)
  for r in rows:
    values[r["metric"]][_label(r, rows)] = _band(r)
  relative = f"{FIGURES_DIR}/{name}.png"
  figures.metric_bars(os.path.join(workdir, relative), dict(values),
                      "score (mean ± SD across seeds)",
                      f"{test} ({_name(cond)}): {_seeds(rows)} seeds, mean ± SD")
  return [(f"{test} ({_name(cond)}) across seeds", relative)]


def _stage_figures(workdir, summary, cond, test, rows, stages, name
                   ) -> list[tuple[str, str]]:
  index = {(_label(r, rows), r["metric"], int(r["stage"])): r for r in rows}
  labels = _stage_labels(summary, cond, len(stages))
  metrics = [m for m in dict.fromkeys(r["metric"] for r in rows)
             if not m.endswith(BASELINE_SUFFIX)]
  methods = list(dict.fromkeys(_label(r, rows) for r in rows))
  out = []
  for metric in metrics:
    curves, nulls = {}, {}
    for method in methods:
      band = [_band(index.get((method, metric, s))) for s in stages]
      if any(np.isfinite(b[0]) for b in band):
        # Null baselines: grey dashed lines, not method curves.
        (nulls if method.startswith(NULL_PREFIX) else curves)[method] = tuple(
            np.array(c) for c in zip(*band))
    if not curves:
      continue
    baselines = {m: _band(index.get((m, f"{metric}{BASELINE_SUFFIX}", stages[0])))[0]
                 for m in curves}
    relative = f"{FIGURES_DIR}/{name}_{markdown.safe(metric)}.png"
    figures.metric_vs_stage(
        os.path.join(workdir, relative), curves, labels, metric,
        {m: v for m, v in baselines.items() if np.isfinite(v)} or None,
        f"{test} ({_name(cond)}): {metric} per stage, mean ± SD over {_seeds(rows)} seeds",
        nulls=nulls or None)
    out.append((f"{test} {metric} per stage ({_name(cond)})", relative))
  return out


def _band(row: Mapping[str, Any] | None) -> tuple[float, float, float]:
  """(mean, mean - SD, mean + SD); the band collapses to the mean without an SD."""
  if row is None:
    return (np.nan,) * 3
  mean, sd = float(row["mean"]), float(row["sd"])
  sd = 0.0 if np.isnan(sd) else sd
  return mean, mean - sd, mean + sd


def _label(row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
  """The method, with the model where a condition has several (reproducibility)."""
  if len({r["model"] for r in rows}) > 1:
    return f"{row['method']} ({row['model']})"
  return row["method"]


def _seeds(rows: Sequence[Mapping[str, Any]]) -> int:
  return max((int(r["n"]) for r in rows), default=0)


def _stage_labels(summary, cond: str, count: int) -> list[str]:
  """The cascade's block names, from the first job of ``cond`` that recorded them."""
  for job in summary.get("jobs") or []:
    stages = (summary.get("stages") or {}).get(job["name"])
    if job["condition"] == cond and stages and len(stages) == count:
      return cascade_report.stage_labels(stages, (summary.get("modes") or {}).get(
          job["name"], "cascade"), count)
  return cascade_report.stage_labels([], "cascade", count)
