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
  results = {}
  for test in config.study.tests:
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.experiment = test
    sub.models_dir = config.models_dir or os.path.join(workdir, "models")
    del sub["study"]
    logging.info("study: running %s", test)
    summary = _module(test)[1](sub, os.path.join(workdir, test))
    results[test] = verdicts_of(test, summary)
  table = {m: {t: results[t].get(m) for t in config.study.tests}
           for m in config.methods}
  summary = {"experiment": "study", "tests": list(config.study.tests),
             "verdicts": table}
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  markdown.write_report(workdir, _report(config, table))
  return summary


def _report(config, table: dict[str, dict[str, bool | None]]) -> str:
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
  return "\n".join(lines) + "\n"

