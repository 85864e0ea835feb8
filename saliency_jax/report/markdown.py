"""Markdown pieces every experiment report shares: numbers, intervals, tables.

The reports read an experiment's ``summary`` (aggregates from
:func:`saliency_jax.results.aggregate`, verdicts from
:func:`saliency_jax.metrics.stats.baseline_verdict`) and write numbers
the same way: 3 decimals, NaN as 'n/a', intervals as 'mean [low, high]'.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from saliency_jax import io_utils

# Index of aggregates: (method, metric, stage) -> aggregate row.
Index = dict[tuple[str, str, int], Mapping[str, Any]]


def write_report(workdir: str, text: str) -> str:
  """Writes ``text`` as ``workdir/report.md``, then ``report.html`` beside it.

  Every report writer ends here, so each ``report.md`` gets its
  self-contained HTML page (:mod:`saliency_jax.report.html`): call it after
  the figures the report links are written. Returns the HTML's path.
  """
  io_utils.write_text(os.path.join(workdir, "report.md"), text)
  from saliency_jax.report import html  # pylint: disable=g-import-not-at-top
  return html.write(workdir)


def get(config: Any, key: str, default: Any = None) -> Any:
  """``config.get(key)``; ``default`` for a missing config, key or None value."""
  if config is None:
    return default
  value = config.get(key, default)
  return default if value is None else value


def index(aggregates: Sequence[Mapping[str, Any]]) -> Index:
  return {(r["method"], r["metric"], int(r["stage"])): r for r in aggregates}


def triple(row: Mapping[str, Any] | None) -> tuple[float, float, float]:
  """(mean, low, high) of an aggregate row; NaNs for a missing row."""
  if row is None:
    return (math.nan,) * 3
  return float(row["mean"]), float(row["low"]), float(row["high"])


def count(row: Mapping[str, Any] | None) -> str:
  """Images scored in an aggregate row, or 'n/a'."""
  return "n/a" if row is None else str(row.get("n", "n/a"))


def num(value: Any) -> str:
  """3 decimals; NaN (or missing) as 'n/a'."""
  if value is None:
    return "n/a"
  value = float(value)
  return "n/a" if math.isnan(value) else f"{value:.3f}"


def p_value(value: Any) -> str:
  """A p-value: 3 significant digits, scientific below 0.001; 'n/a' if NaN."""
  if value is None or math.isnan(float(value)):
    return "n/a"
  value = float(value)
  return f"{value:.3g}" if value >= 1e-3 else f"{value:.2e}"


def interval(values: Sequence[float] | None) -> str:
  """'mean [low, high]', or 'n/a' when the mean is NaN or missing."""
  if values is None or num(values[0]) == "n/a":
    return "n/a"
  return f"{num(values[0])} [{num(values[1])}, {num(values[2])}]"


def safe(name: str) -> str:
  """A file-name-safe version of ``name``."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")


def image_names(images_np: Mapping[str, np.ndarray], count_: int) -> list[str]:
  """File-safe image ids; indices when ids are missing or collide."""
  ids = images_np.get("id")
  if ids is None:
    return [str(e) for e in range(count_)]
  names = [safe(i.decode() if isinstance(i, bytes) else str(i)) for i in ids[:count_]]
  if len(set(names)) < len(names) or not all(names):
    return [str(e) for e in range(count_)]
  return names


def excluded_lines(index_: Index) -> list[str]:
  """One line per aggregate with unscored (NaN) images: counted, never dropped."""
  lines = []
  for (method, metric, stage), row in sorted(index_.items()):
    if row.get("excluded"):
      lines.append(f"- `{method}` `{metric}` stage {stage}: {row['excluded']} "
                   f"of {row['excluded'] + row.get('n', 0)} images not scored")
  return lines


def excluded_section(lines: Sequence[str], summary: Mapping[str, Any] | None = None,
                     methods: Sequence[str] = ()) -> str:
  """'## Excluded scores': first the maps and logits that were not finite (their
  methods are INVALID), then ``lines`` (unscored images per aggregate) and,
  per method and metric, the scores a verdict could not compute."""
  invalid = [f"- **`{method}` {state}: {counts} not finite**; their scores are "
             "NaN and the method's verdict is INVALID"
             for method, states in ((summary or {}).get("nonfinite") or {}).items()
             for state, counts in states.items()]
  lines = invalid + list(lines)
  verdicts = (summary or {}).get("verdicts") or {}
  for method in methods:
    for metric, verdict in verdicts.get(method, {}).items():
      for part, count in (verdict.get("num_excluded") or {}).items():
        if count:
          lines.append(f"- `{method}` `{metric}` verdict: {count} {part} "
                       "scores not computed")
  body = "\n".join(lines) if lines else "None: every image was scored on every metric."
  return "## Excluded scores\n\n" + body + "\n"


def verdict_word(verdict: Mapping[str, Any] | None, yes: str = "PASS",
                 no: str = "FAIL") -> str:
  """A verdict's cell: ``yes``/``no``, INVALID (non-finite inputs) or n/a."""
  if not verdict:
    return "n/a"
  if verdict.get("verdict") == "INVALID":
    return "INVALID"
  return yes if verdict["passed"] else no


def verdict_table(verdicts: Mapping[str, Mapping[str, Any]],
                  methods: Sequence[str], metrics: Sequence[str], chosen: str,
                  column: str) -> list[str]:
  """Rows of the randomization-test verdict table (Arun et al. 2021).

  Args:
    verdicts: method -> similarity metric -> ``stats.baseline_verdict``.
    methods: row order.
    metrics: similarity metrics to show (two columns each).
    chosen: the metric the verdict uses (``config.verdict_metric``).
    column: what the similarity column compares, e.g. 'fully randomized'.

  Returns:
    Markdown table lines: header, rule, one row per method.
  """
  header = [f"Verdict ({chosen})", "Upper CI below baseline", "Passes under"]
  for metric in metrics:
    header += [f"{metric}, {column}", f"{metric}, baseline"]
  lines = ["| Method | " + " | ".join(header) + " |",
           "|---|" + "---|" * len(header)]
  for method in methods:
    by_metric = verdicts.get(method, {})
    main = by_metric.get(chosen)
    cells = [verdict_word(main),
             ("yes" if main["passed_ci"] else "no")
             if main and main.get("verdict") != "INVALID" else "n/a",
             ", ".join(m for m in metrics if by_metric.get(m, {}).get("passed"))
             or "none"]
    for metric in metrics:
      verdict = by_metric.get(metric) or {}
      cells += [interval(verdict.get("similarity")), interval(verdict.get("baseline"))]
    lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
  return lines


def versus_controls_table(index_: Index, rows: Mapping[str, Mapping[str, Any]],
                          methods: Sequence[str], controls: Sequence[str],
                          metric: str) -> list[str]:
  """One metric's table of maps against controls: each map's mean [95% CI],
  the images scored and, for a method, whether it beat the controls on this
  metric (``rows``: method -> its comparison with the best control)."""
  best = next((r.get("best_control") for r in rows.values()), None)
  lines = ["| Map | Kind | Mean [95% CI] | Images scored | Better than controls |",
           "|---|---|---|---:|---|"]
  for name in list(methods) + list(controls):
    agg = index_.get((name, metric, 0))
    if name in controls:
      kind, better = ("control (best)" if name == best else "control"), ""
    else:
      kind, row = "method", rows.get(name, {})
      better = ("INVALID" if row.get("verdict") == "INVALID" else
                "yes (p = " + p_value(row["p_holm"]) + ")"
                if row.get("better_than_controls") else "no")
    lines.append(f"| `{name}` | {kind} | {interval(triple(agg))} | {count(agg)} | "
                 f"{better} |")
  return lines


def figures_section(written: Mapping[str, list[tuple[str, str]]],
                    titles: Mapping[str, str]) -> str:
  """'## Figures' with a subsection per kind that has figures; '' if none."""
  lines = ["## Figures\n"]
  for kind, items in written.items():
    if items:
      lines.append(f"### {titles[kind]}\n")
      lines += [f"![{caption}]({path})\n" for caption, path in items]
  return "\n".join(lines) if len(lines) > 1 else ""


def training_line(training: Mapping[str, Any], what: str = "Test set") -> str:
  """'Test set (N images): AUC .., accuracy .., precision .., recall ..'."""
  test = training.get("test") or {}
  return (f"{what} ({test.get('num_examples', '?')} images): AUC "
          f"{num(test.get('auc'))}, accuracy {num(test.get('accuracy'))}, "
          f"precision {num(test.get('precision'))}, recall "
          f"{num(test.get('recall'))}")


def data_lines(summary: Mapping[str, Any]) -> list[str]:
  """What the dataset build left out (``summary['data']``): classes, skipped bad inputs,
  positives without a mask pixel (not evaluated for localization).

  Empty for the synthetic data, which has nothing to skip.
  """
  data = summary.get("data") or {}
  lines = []
  if data.get("excluded_by_class"):
    left_out = ", ".join(f"{k}: {v}" for k, v in sorted(data["excluded_by_class"].items()))
    lines.append(f"- Left out by `real_data.classes={data.get('classes')}`: {left_out}")
  if "num_skipped" in data:
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted((data.get("skipped") or {}).items()))
    lines.append(f"- Bad inputs skipped when the dataset was built (`on_bad_input="
                 f"{data.get('on_bad_input')}`): {data['num_skipped']}"
                 + (f" ({kinds})" if kinds else ""))
  empty = data.get("empty_mask_positives") or {}
  if empty.get("num"):
    lines.append(f"- {_positives(empty)} an empty mask at {empty.get('image_size')} px"
                 f"{_split_and_ids(empty)}; they are not among the evaluated positives")
  unannotated = data.get("unannotated_positives") or {}
  if unannotated.get("num"):
    lines.append(f"- {_positives(unannotated)} no box and no mask pixel in the files"
                 f"{_split_and_ids(unannotated)}; they are not among the evaluated positives")
  return lines


def _positives(counts: Mapping[str, Any]) -> str:
  """'1 positive image has' / 'N positive images have'."""
  n = int(counts["num"])
  return f"{n} positive image has" if n == 1 else f"{n} positive images have"


def _split_and_ids(counts: Mapping[str, Any]) -> str:
  """' (train: 2, test: 1; ids a, b, ...)' from a count entry of the dataset metadata."""
  per_split = ", ".join(f"{s}: {n}" for s, n in (counts.get("per_split") or {}).items() if n)
  examples = [str(i) for i in counts.get("examples") or []]
  ids = ", ".join(f"`{i}`" for i in examples)
  if ids and len(examples) < int(counts["num"]):
    ids += ", ..."
  parts = [p for p in (per_split, f"ids {ids}" if ids else "") if p]
  return f" ({'; '.join(parts)})" if parts else ""
