"""The cascading randomization experiment end to end, on tiny phantoms."""

import json
import os

import pytest
import experiment_runs

from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import results


def quick_config(data_dir):
  return experiment_runs.quick_config("cascade", data_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return experiment_runs.run_quick("cascade", tmp_path_factory)


def test_writes_every_result_file(run):
  config, workdir, summary = run
  for name in ("config.json", "results.csv", "summary.json", "report.md"):
    assert (workdir / name).exists(), name
  figures = os.listdir(workdir / "figures")
  assert any(f.startswith("cascade_maps_") for f in figures)
  for metric in config.similarity:
    assert f"cascade_similarity_{metric}.png" in figures
  report = open(workdir / "report.md").read()
  for method in config.methods:
    assert method in report
  assert json.load(open(workdir / "summary.json"))["verdicts"] == json.loads(
      json.dumps(summary["verdicts"]))


def test_results_are_long_format_with_every_stage_method_and_metric(run):
  config, workdir, summary = run
  rows = experiment_runs.read_results(workdir)
  assert tuple(rows[0]) == results.FIELDS
  num_stages = len(summary["stages"])
  n = summary["num_images"]
  assert num_stages == 6  # small_cnn: 5 blocks + the trained model
  assert summary["stages"][-1]["randomized_blocks"] == [
      "predictions", "block4", "block3", "block2", "block1"]
  metrics = len(config.similarity) + len(config.localization)
  baseline = len(config.similarity)
  assert len(rows) == len(config.methods) * n * (num_stages * metrics + baseline)
  for method in config.methods:
    stages = {int(r["stage"]) for r in rows if r["method"] == method}
    assert stages == set(range(num_stages))


def test_stage_zero_reproduces_the_original_maps(run):
  _, workdir, _ = run
  for r in experiment_runs.read_results(workdir):
    if r["stage"] == "0" and r["metric"] in ("spearman", "ssim"):
      assert float(r["value"]) == pytest.approx(1.0, abs=1e-5), r


def test_gradcam_passes_its_own_sanity_check(run):
  # On a model trained on the phantoms, GradCAM at full randomization is less
  # similar to the original maps than maps of two different images are.
  _, _, summary = run
  verdict = summary["verdicts"]["gradcam"]["ssim"]
  assert verdict["passed"], verdict
  assert verdict["similarity"][0] < verdict["baseline"][0]
  assert summary["training"]["test"]["auc"] > 0.6


def test_rerun_resumes_and_recomputes_only_what_is_missing(run, tmp_path):
  config, workdir, _ = run
  before = open(workdir / "results.csv").read()
  kept = results.part_path(str(workdir), "cascade-gradient")
  removed = results.part_path(str(workdir), "cascade-gradcam")
  mtime = os.path.getmtime(kept)
  os.remove(removed)
  main_lib.run(config, str(workdir))
  assert os.path.getmtime(kept) == mtime
  assert os.path.exists(removed)
  assert open(workdir / "results.csv").read() == before


def test_workdir_with_other_settings_is_refused(run):
  config, workdir, _ = run
  other = quick_config(config.data_dir)
  other.num_images = 3
  with pytest.raises(errors.WorkdirError,
                     match=r"holds a run with other settings \(config.num_images\)"):
    main_lib.run(other, str(workdir))
