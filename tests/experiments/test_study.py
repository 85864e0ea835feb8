"""The whole study: sub-tests share one trained model; one PASS/FAIL table."""

import json
import os

import pytest
import experiment_runs

from saliency_jax import config as config_lib
from saliency_jax import main as main_lib
from saliency_jax.experiments import study


def test_study_runs_tests_in_subfolders_and_tabulates_verdicts(tmp_path):
  config = config_lib.load_file(experiment_runs.config_path("study"), "quick")
  config.data_dir = str(tmp_path / "data")
  config.study.tests = ("cascade", "localization")
  workdir = tmp_path / "study"
  summary = main_lib.run(config, str(workdir))
  # One model trained, shared by both tests.
  assert os.listdir(workdir / "models") == ["trained"]
  for test in config.study.tests:
    assert (workdir / test / "report.md").exists()
    assert not (workdir / test / "models").exists()
  cascade = json.load(open(workdir / "cascade" / "summary.json"))
  assert summary["verdicts"]["gradcam"]["cascade"] == (
      cascade["verdicts"]["gradcam"][cascade["verdict_metric"]]["verdict"])
  report = open(workdir / "report.md").read()
  for method in config.methods:
    row = next(l for l in report.splitlines() if l.startswith(f"| `{method}` |"))
    assert row.count("PASS") + row.count("FAIL") == 2
  assert "(cascade/report.md)" in report and "(localization/report.md)" in report
  # The cascade's null baselines (on by default): their own table, not methods.
  assert set(summary["verdicts"]) == set(config.methods)
  assert summary["null_verdicts"]["null_noise"]["cascade"] == (
      cascade["null_verdicts"]["null_noise"][cascade["verdict_metric"]]["verdict"])
  assert summary["null_verdicts"]["null_noise"]["localization"] is None
  methods, nulls = report.split("## Null baselines", 1)
  assert "`null_" not in methods and "| `null_random_cam` |" in nulls
  # report.html links each test's report.html, written beside its report.md.
  page = open(workdir / "report.html").read()
  for test in config.study.tests:
    assert f'href="{test}/report.html"' in page
    assert (workdir / test / "report.html").exists()


def test_verdicts_of_reads_each_summary_kind():
  cascade = {"verdict_metric": "ssim",
             "verdicts": {"a": {"ssim": {"verdict": "PASS"}, "spearman": {"verdict": "FAIL"}},
                          "b": {"spearman": {"verdict": "PASS"}},
                          "c": {"ssim": {"verdict": "INVALID"}}}}
  assert study.verdicts_of("cascade", cascade) == {"a": "PASS", "b": None, "c": "INVALID"}
  assert study.verdicts_of("localization", {"verdicts": {"a": "FAIL"}}) == {"a": "FAIL"}


def test_unknown_test_is_named():
  config = config_lib.load_file(experiment_runs.config_path("study"), "quick")
  config.study.tests = ("cascade", "vibes")
  with pytest.raises(ValueError, match="config.study.tests='vibes' is not allowed"):
    main_lib.validate(config)
