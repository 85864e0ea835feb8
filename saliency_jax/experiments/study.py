"""The whole study: every test in one workdir, and one pass/fail table.

Arun et al. (Radiology: AI 2021) judged each saliency method on four
criteria: sensitivity to model-weight randomization (cascade), to label
randomization, repeatability across seeds and reproducibility across
architectures, next to its localization utility. Each test runs in
``workdir/<test>/`` with its own results, figures and report; the models are
trained once into ``workdir/models/`` and shared.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import ml_collections
from absl import logging

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax.report import markdown

TESTS = ("cascade", "label_randomization", "repeatability", "reproducibility",
         "localization")
_TITLES = {
    "cascade": "weight randomization",
    "label_randomization": "label randomization",
    "repeatability": "repeatability",
    "reproducibility": "reproducibility",
    "localization": "localizes better than controls",
}


def _module(test: str):
  module, function = config_lib.EXPERIMENTS[test].split(":")
  module = importlib.import_module(module)
  return module, getattr(module, function)


def validate(config: ml_collections.ConfigDict) -> None:
  """``config.study.tests`` and every chosen test's own keys."""
  for test in config.study.tests:
    if test not in TESTS:
      raise errors.ConfigError(f"config.study.tests={test!r} is not allowed; "
                               f"expected some of {TESTS}")
    module, _ = _module(test)
    if hasattr(module, "validate"):
      module.validate(config)


def verdicts_of(test: str, summary: dict[str, Any]) -> dict[str, str | None]:
  """{method: 'PASS' | 'FAIL' | 'INVALID'} of one test's summary (None: not judged)."""
  if test == "localization":
    return dict(summary.get("verdicts", {}))
  metric = summary.get("verdict_metric")
  return {m: (v[metric]["verdict"] if metric in v else None)
          for m, v in summary.get("verdicts", {}).items()}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs ``config.study.tests`` in order; writes the combined table."""
  results, null_results = {}, {}
  for test in config.study.tests:
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.experiment = test
    sub.models_dir = config.models_dir or os.path.join(workdir, "models")
    del sub["study"]
    logging.info("study: running %s", test)
    summary = _module(test)[1](sub, os.path.join(workdir, test))
    results[test] = verdicts_of(test, summary)
    # The randomization tests' null baselines (config.null_baselines): their
    # own rows, never among the methods'.
    null_results[test] = verdicts_of(test, {
        "verdict_metric": summary.get("verdict_metric"),
        "verdicts": summary.get("null_verdicts") or {}})
  table = {m: {t: results[t].get(m) for t in config.study.tests}
           for m in config.methods}
  nulls = list(dict.fromkeys(n for t in config.study.tests for n in null_results[t]))
  null_table = {n: {t: null_results[t].get(n) for t in config.study.tests}
                for n in nulls}
  summary = {"experiment": "study", "tests": list(config.study.tests),
             "verdicts": table, "null_verdicts": null_table}
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  markdown.write_report(workdir, _report(config, table, null_table))
  return summary


def _report(config, table: dict[str, dict[str, bool | None]],
            null_table: dict[str, dict[str, bool | None]] | None = None) -> str:
  tests = list(config.study.tests)
  lines = [
      f"# Saliency study: `{config.model}` on `{config.dataset}`", "",
      "Each column is one test of Arun et al. (Radiology: AI 2021); each "
      "test's report, with intervals, figures and the rule it applies, is "
      "linked in the header. A trustworthy method passes every column.", "",
      "| Method | " + " | ".join(
          f"[{_TITLES[t]}]({t}/report.md)" for t in tests) + " |",
      "|---|" + "---|" * len(tests),
  ]
  for method, row in table.items():
    lines.append(f"| `{method}` | " + " | ".join((row[t] or "n/a") for t in tests) + " |")
  if null_table:
    lines += ["", "## Null baselines", "",
              "Maps that know nothing the tests are about (`null_noise`: noise "
              "drawn afresh per model; `null_random_cam`: random channel "
              "weights), judged by each randomization test's rule (Binder et "
              "al., CVPR 2023). They are not methods: a method's pass means "
              "more where the nulls fail.", "",
              "| Null baseline | " + " | ".join(_TITLES[t] for t in tests) + " |",
              "|---|" + "---|" * len(tests)]
    for null, row in null_table.items():
      lines.append(f"| `{null}` | " + " | ".join((row[t] or "n/a") for t in tests)
                   + " |")
  return "\n".join(lines) + "\n"

