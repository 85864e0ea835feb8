"""The aggregate of a sweep, on hand-made finished jobs (nothing is trained):
numbers against NumPy, non-finite values counted, unfinished, edited and mixed
jobs refused by name."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import main as main_lib
from saliency_jax import results
from saliency_jax import sweep
from saliency_jax.experiments import aggregate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEEDS = (0, 1, 2, 3)
METHODS = ("gradient", "gradcam")
STAGES = (0, 1, 2)
NUM_IMAGES = 5
# Verdicts per seed of each method (seed 3's gradcam maps were not finite).
VERDICTS = {"gradient": ("PASS", "PASS", "FAIL", "PASS"),
            "gradcam": ("FAIL", "FAIL", "FAIL", "INVALID")}


def _values(seed: int, method: str, stage: int, metric: str) -> np.ndarray:
  """Per-image values of one job, some of them not finite."""
  key = (seed, METHODS.index(method), stage, ("ssim", "auprc", "ssim_different_images").index(metric))
  values = np.random.default_rng(key).uniform(0, 1, NUM_IMAGES)
  if (seed, method, metric) == (1, "gradcam", "ssim") and stage == 2:
    values[0] = np.nan  # an undefined comparison
  if (seed, method, metric) == (2, "gradient", "auprc"):
    values[1] = np.inf
  if (seed, method, metric, stage) == (3, "gradient", "auprc", 1):
    values[:] = np.nan  # no finite value: the job is left out of this mean
  return values


def _job_rows(seed: int, method: str) -> list[dict]:
  ids = [f"img{i}" for i in range(NUM_IMAGES)]
  rows = []
  for stage in STAGES:
    metrics = ("ssim", "auprc") + (("ssim_different_images",) if stage == 0 else ())
    scores = {m: _values(seed, method, stage, m) for m in metrics}
    rows += results.rows(experiment="cascade", dataset="synthetic_cxr", model="small_cnn",
                         seed=seed, stage=stage, method=method, image_ids=ids,
                         scores=scores)
  return rows


def _summary(seed: int) -> dict:
  verdicts = {}
  for method, words in VERDICTS.items():
    word = words[SEEDS.index(seed)]
    verdicts[method] = {"ssim": {"verdict": word, "passed": word == "PASS",
                                 "similarity": [0.1 * seed, 0.0, 0.2],
                                 "baseline": [0.5, 0.4, 0.6]}}
  return {"experiment": "cascade", "verdict_metric": "ssim", "verdicts": verdicts,
          "mode": "cascade",
          "stages": [{"stage": 0, "randomized_blocks": []},
                     {"stage": 1, "randomized_blocks": ["predictions"]},
                     {"stage": 2, "randomized_blocks": ["predictions", "block4"]}]}


def write_job(sweep_dir, name: str, seed: int, *, experiment: str = "cascade") -> None:
  """A finished job as a run leaves it: parts with manifests, results.csv, summary, report."""
  workdir = os.path.join(sweep_dir, name)
  os.makedirs(workdir, exist_ok=True)
  io_utils.write_json(os.path.join(workdir, "config.json"),
                      {"experiment": experiment, "seed": seed, "model": "small_cnn"})
  parts = []
  for method in METHODS:
    rows = _job_rows(seed, method)
    results.write_part(workdir, f"cascade-{method}", rows, fingerprint="inputs")
    parts.append(rows)
  results.write_results(workdir, parts)
  io_utils.write_json(os.path.join(workdir, "summary.json"), _summary(seed))
  io_utils.write_text(os.path.join(workdir, "report.md"), "# a job\n")


def make_sweep(sweep_dir, overrides=tuple({"seed": s} for s in SEEDS)) -> list[str]:
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "cascade.py"), "quick")
  jobs = [sweep.Job(sweep.job_name(o), dict(o)) for o in overrides]
  sweep.record(str(sweep_dir), config, jobs, {"config_file": "configs/cascade.py",
                                                "preset": "quick"})
  for job, o in zip(jobs, overrides):
    write_job(sweep_dir, job.name, o.get("seed", 0))
  return [job.name for job in jobs]


def aggregate_config(sweep_dir, **overrides):
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "aggregate.py"))
  config.update(sweep_dir=sweep_dir and str(sweep_dir), bootstrap_resamples=200,
                **overrides)
  return config


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory):
  """The command of the issue, without --workdir: it writes SWEEP_DIR/aggregate."""
  sweep_dir = tmp_path_factory.mktemp("sweep")
  make_sweep(sweep_dir)
  subprocess.run([sys.executable, "-m", "saliency_jax.main",
                  f"--config={os.path.join(config_lib.CONFIGS_DIR, 'aggregate.py')}",
                  f"--config.sweep_dir={sweep_dir}", "--config.bootstrap_resamples=200"],
                 check=True, cwd=ROOT, capture_output=True, timeout=300)
  summary = json.loads((sweep_dir / sweep.AGGREGATE / "summary.json").read_text())
  return sweep_dir, summary


def _row(summary, method, stage, metric):
  return next(a for a in summary["aggregates"]
              if (a["method"], a["stage"], a["metric"]) == (method, stage, metric))


def test_mean_and_sd_across_seeds_agree_with_numpy(aggregated):
  _, summary = aggregated
  assert len(summary["aggregates"]) == len(METHODS) * (len(STAGES) * 2 + 1)
  for a in summary["aggregates"]:
    per_seed = []
    for seed in SEEDS:
      values = _values(seed, a["method"], a["stage"], a["metric"])
      finite = values[np.isfinite(values)]
      per_seed.append(finite.mean() if finite.size else np.nan)
    kept = np.array([m for m in per_seed if np.isfinite(m)])
    assert a["n"] == kept.size and a["condition"] == ""
    np.testing.assert_allclose(a["mean"], kept.mean(), rtol=1e-12)
    np.testing.assert_allclose(a["sd"], kept.std(ddof=1), rtol=1e-12)
    assert a["low"] <= a["mean"] <= a["high"]
    for seed, mean in zip(SEEDS, per_seed):
      np.testing.assert_equal(a["per_job"][f"seed={seed}"], mean)


def test_nonfinite_values_are_counted_never_averaged(aggregated):
  _, summary = aggregated
  undefined = _row(summary, "gradcam", 2, "ssim")
  assert (undefined["nonfinite"], undefined["jobs_excluded"], undefined["n"]) == (1, 0, 4)
  assert undefined["images"] == len(SEEDS) * NUM_IMAGES - 1
  infinite = _row(summary, "gradient", 0, "auprc")
  assert infinite["nonfinite"] == 1 and math.isfinite(infinite["mean"])
  empty = _row(summary, "gradient", 1, "auprc")
  assert (empty["nonfinite"], empty["jobs_excluded"], empty["n"]) == (
      NUM_IMAGES + 1, 1, 3)
  assert math.isnan(empty["per_job"]["seed=3"])
  clean = _row(summary, "gradcam", 0, "ssim")
  assert (clean["nonfinite"], clean["jobs_excluded"]) == (0, 0)


def test_verdicts_are_counted_per_method(aggregated):
  _, summary = aggregated
  rows = {r["method"]: r for r in summary["verdicts"]}
  assert rows["gradient"]["counts"] == {"PASS": 3, "FAIL": 1, "INVALID": 0, "n/a": 0}
  assert rows["gradcam"]["counts"] == {"PASS": 0, "FAIL": 3, "INVALID": 1, "n/a": 0}
  assert rows["gradcam"]["per_job"]["seed=3"] == "INVALID"
  similarity = rows["gradient"]["similarity"]
  np.testing.assert_allclose([similarity["mean"], similarity["sd"]],
                             [np.mean([0.0, 0.1, 0.2, 0.3]),
                              np.std([0.0, 0.1, 0.2, 0.3], ddof=1)])


def test_writes_results_report_and_figures(aggregated):
  sweep_dir, summary = aggregated
  workdir = sweep_dir / sweep.AGGREGATE
  rows = results.read_rows(str(workdir / "results.csv"))
  assert len(rows) == len(SEEDS) * len(METHODS) * NUM_IMAGES * (len(STAGES) * 2 + 1)
  assert {r["job"] for r in rows} == {f"seed={s}" for s in SEEDS}
  report = (workdir / "report.md").read_text()
  assert "| all jobs | cascade | `gradient` | 3 | 1 | 0 | 0 |" in report
  assert ("`gradient` `auprc` stage 1 (all jobs, cascade): non-finite values left out "
          "of the means: 6; seeds without a finite value: 1") in report
  assert "| `gradient` | `small_cnn` | 2 | 0.570 ± 0.106 | [" in report
  figures = sorted(os.listdir(workdir / "figures"))
  assert figures == ["aggregate_all_jobs_cascade_auprc.png",
                     "aggregate_all_jobs_cascade_ssim.png"]
  assert all(f"figures/{f}" in report for f in figures)
  assert summary["skipped"] == []


def test_an_unfinished_job_is_named_before_anything_is_written(tmp_path):
  names = make_sweep(tmp_path)
  os.remove(tmp_path / "seed=2" / "report.md")
  (tmp_path / "seed=3" / "summary.json").unlink()
  with pytest.raises(errors.ConfigError) as error:
    main_lib.run(aggregate_config(tmp_path), None)
  assert ("2 of 4 jobs are not finished: seed=2 (failed: no report.md); seed=3 "
          "(failed: no summary.json)") in str(error.value)
  assert not (tmp_path / sweep.AGGREGATE).exists()
  summary = main_lib.run(aggregate_config(tmp_path, skip_unfinished=True), None)
  assert [j["name"] for j in summary["jobs"]] == names[:2]
  assert [s["name"] for s in summary["skipped"]] == ["seed=2", "seed=3"]
  assert {a["n"] for a in summary["aggregates"]} <= {1, 2}


def test_an_edited_results_csv_is_not_trusted(tmp_path):
  make_sweep(tmp_path)
  path = tmp_path / "seed=1" / "results.csv"
  path.write_text(path.read_text().replace("small_cnn", "small_cnm", 1))
  with pytest.raises(errors.ConfigError, match=r"seed=1 \(failed: results.csv does not "
                     r"hold the rows of its 2 verified parts"):
    main_lib.run(aggregate_config(tmp_path), None)


def test_a_changed_job_is_refused_by_an_earlier_aggregate(tmp_path):
  make_sweep(tmp_path)
  main_lib.run(aggregate_config(tmp_path), str(tmp_path / "agg"))
  workdir = tmp_path / "seed=0"
  rows = [dict(r, value=0.5) for r in results.read_rows(str(workdir / "results.csv"))]
  for method in METHODS:
    results.write_part(str(workdir), f"cascade-{method}",
                       [r for r in rows if r["method"] == method], fingerprint="other")
  results.write_results(str(workdir), [[r for r in rows if r["method"] == m]
                                       for m in METHODS])
  with pytest.raises(errors.WorkdirError, match=r"computed from other inputs \(job/seed=0"):
    main_lib.run(aggregate_config(tmp_path), str(tmp_path / "agg"))


def test_jobs_of_different_experiments_are_refused(tmp_path):
  make_sweep(tmp_path)
  write_job(tmp_path, "seed=1", 1, experiment="localization")
  with pytest.raises(errors.ConfigError, match="ran different experiments "
                     r"\(seed=0: cascade, seed=1: localization"):
    main_lib.run(aggregate_config(tmp_path), None)


def test_a_missing_sweep_is_a_config_error(tmp_path):
  with pytest.raises(errors.ConfigError, match=r"^config.sweep_dir: --sweep_dir=.*: no "
                     "sweep.json there"):
    main_lib.validate(aggregate_config(tmp_path))
  with pytest.raises(errors.ConfigError, match="config.sweep_dir is not set"):
    main_lib.validate(aggregate_config(None))


# ---------------------------------------------------------------- pieces ---

def test_replicates_differ_only_in_the_replicate_keys():
  rows = {}
  condition_of = {}
  for width in (0.25, 0.5):
    for seed in (0, 1):
      overrides = {"seed": seed, "width": width}
      name = sweep.job_name(overrides)
      condition_of[name] = aggregate.condition(overrides, ("seed",))
      rows[name] = results.rows(experiment="localization", dataset="d", model="m",
                                seed=seed, stage=0, method="gradient",
                                image_ids=["a", "b"],
                                scores={"auprc": [width + seed, width]})
  out = aggregate.across_seeds(rows, condition_of, seed=0, num_resamples=50)
  assert [(a["condition"], a["n"]) for a in out] == [("width=0.25", 2), ("width=0.5", 2)]
  np.testing.assert_allclose([a["mean"] for a in out], [0.25 + 0.25, 0.5 + 0.25])
  np.testing.assert_allclose([a["sd"] for a in out], [np.std([0.25, 0.75], ddof=1)] * 2)


def test_one_seed_has_no_spread():
  single = aggregate.spread([0.3, np.nan, np.inf], seed=0, num_resamples=10)
  assert single["mean"] == 0.3 and single["n"] == 1 and single["excluded"] == 2
  assert all(math.isnan(single[k]) for k in ("sd", "low", "high"))
  none = aggregate.spread([np.nan], seed=0, num_resamples=10)
  assert math.isnan(none["mean"]) and none["n"] == 0
