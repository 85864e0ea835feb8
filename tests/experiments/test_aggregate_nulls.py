"""Null baselines (issue 14) in the sweep aggregate and the study table: listed
apart from the methods, never counted as methods (hand-made summaries)."""

import numpy as np
import pytest

from saliency_jax.experiments import aggregate
from saliency_jax.experiments import study
from saliency_jax.report import aggregate_report
from saliency_jax.report import figures


def _verdict(word, similarity):
  return {"verdict": word, "passed": word == "PASS", "similarity": [similarity, 0, 1],
          "baseline": [0.5, 0.4, 0.6]}


def _summary(seed):
  """A cascade job: one method, two nulls (noise passes, RandomCAM fails)."""
  return {"cascade": {
      "verdict_metric": "ssim",
      "verdicts": {"gradient": {"ssim": _verdict("PASS" if seed else "FAIL", 0.1)}},
      "null_baselines": ["null_noise", "null_random_cam"],
      "null_verdicts": {"null_noise": {"ssim": _verdict("PASS", 0.01 * seed)},
                        "null_random_cam": {"ssim": _verdict("FAIL", 0.8)}}}}


@pytest.fixture(name="counts")
def fixture_counts():
  jobs = {f"seed={s}": aggregate.job_verdicts(_summary(s)) for s in (0, 1, 2)}
  return aggregate.verdict_counts(jobs, {j: "" for j in jobs}, seed=0,
                                  num_resamples=50)


def test_job_verdicts_mark_the_nulls():
  verdicts = aggregate.job_verdicts(_summary(1))
  assert {k: v["null"] for k, v in verdicts.items()} == {
      ("cascade", "gradient"): False, ("cascade", "null_noise"): True,
      ("cascade", "null_random_cam"): True}
  assert verdicts[("cascade", "null_noise")]["verdict"] == "PASS"
  assert verdicts[("cascade", "null_noise")]["similarity"] == pytest.approx(0.01)
  # A summary without nulls (an older run) gives the methods only.
  old = {"cascade": {"verdict_metric": "ssim",
                     "verdicts": {"gradient": {"ssim": _verdict("PASS", 0.1)}}}}
  assert list(aggregate.job_verdicts(old)) == [("cascade", "gradient")]


def test_counts_keep_nulls_apart(counts):
  rows = {r["method"]: r for r in counts}
  assert not rows["gradient"]["null"] and rows["null_noise"]["null"]
  assert rows["gradient"]["counts"] == {"PASS": 2, "FAIL": 1, "INVALID": 0, "n/a": 0}
  assert rows["null_noise"]["counts"] == {"PASS": 3, "FAIL": 0, "INVALID": 0, "n/a": 0}
  np.testing.assert_allclose(rows["null_noise"]["similarity"]["mean"], 0.01)


def test_report_lists_nulls_in_their_own_table(counts, tmp_path):
  summary = {"verdicts": counts, "aggregates": [], "jobs": [], "conditions": [""]}
  aggregate_report.write(str(tmp_path), {}, summary)
  report = (tmp_path / "report.md").read_text()
  methods, nulls = report.split("### Null baselines", 1)
  nulls = nulls.split("\n## ", 1)[0]
  assert "| all jobs | cascade | `gradient` | 2 | 1 | 0 | 0 |" in methods
  assert "`null_" not in methods.split("## Verdicts across seeds", 1)[1]
  assert "| all jobs | cascade | `null_noise` | 3 | 0 | 0 | 0 |" in nulls
  assert "| all jobs | cascade | `null_random_cam` | 0 | 3 | 0 | 0 |" in nulls
  assert "`gradient`" not in nulls


def test_stage_figures_draw_nulls_as_null_lines(monkeypatch, tmp_path):
  drawn = []
  monkeypatch.setattr(figures, "metric_vs_stage",
                      lambda path, curves, *a, nulls=None, **k: drawn.append(
                          (set(curves), set(nulls or {}))))
  rows = [{"condition": "", "experiment": "cascade", "model": "m", "method": method,
           "metric": "ssim", "stage": stage, "mean": 0.5, "sd": 0.1, "low": 0.4,
           "high": 0.6, "n": 2, "nonfinite": 0, "jobs_excluded": 0}
          for method in ("gradient", "null_noise") for stage in (0, 1)]
  aggregate_report.write(str(tmp_path), {}, {"aggregates": rows, "jobs": []})
  assert drawn == [({"gradient"}, {"null_noise"})]


def test_study_table_counts_no_null_as_a_method():
  summary = _summary(1)["cascade"]
  assert study.verdicts_of("cascade", summary) == {"gradient": "PASS"}
  table = study._report(  # pylint: disable=protected-access
      type("C", (), {"study": type("S", (), {"tests": ("cascade",)}),
                     "model": "m", "dataset": "d"})(),
      {"gradient": {"cascade": "PASS"}},
      {"null_noise": {"cascade": "PASS"}, "null_random_cam": {"cascade": "FAIL"}})
  methods, nulls = table.split("## Null baselines", 1)
  assert "| `gradient` | PASS |" in methods and "null_" not in methods
  assert "| `null_noise` | PASS |" in nulls and "| `null_random_cam` | FAIL |" in nulls
