"""The localization experiment end to end, on tiny phantoms."""

import json
import os

import numpy as np
import pytest
from scipy import stats as scipy_stats
import experiment_runs

from saliency_jax import data as data_lib
from saliency_jax import main as main_lib
from saliency_jax import results
from saliency_jax.experiments import common
from saliency_jax.experiments import localization
from saliency_jax.metrics import localization as metrics
from saliency_jax.metrics import stats
from saliency_jax.saliency import postprocess


def quick_config(data_dir):
  return experiment_runs.quick_config("localization", data_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return experiment_runs.run_quick("localization", tmp_path_factory)


def _names(config):
  return list(config.methods) + list(config.controls)


def test_writes_every_result_file(run):
  config, workdir, summary = run
  for name in ("config.json", "results.csv", "summary.json", "report.md"):
    assert (workdir / name).exists(), name
  figures = os.listdir(workdir / "figures")
  assert "localization_bars.png" in figures
  assert len([f for f in figures if f.startswith("localization_maps_")]) == (
      config.report.example_images)
  report = open(workdir / "report.md").read()
  for name in _names(config):
    assert f"`{name}`" in report
  for metric in config.localization:
    assert f"### {metric}" in report
  assert json.load(open(workdir / "summary.json"))["better_than_controls"] == (
      summary["better_than_controls"])


def test_rows_cover_every_map_image_and_metric_at_stage_zero(run):
  config, workdir, summary = run
  rows = experiment_runs.read_results(workdir)
  assert tuple(rows[0]) == results.FIELDS
  n = summary["num_images"]
  assert n == config.num_images
  assert len(rows) == len(_names(config)) * n * len(config.localization)
  assert {r["method"] for r in rows} == set(_names(config))
  assert {r["metric"] for r in rows} == set(config.localization)
  assert {r["stage"] for r in rows} == {"0"}
  assert set(config.controls) == set(localization.CONTROLS)


def test_mean_training_mask_is_the_mean_of_the_training_masks(run):
  config, workdir, _ = run
  train = data_lib.load(config, "train")
  positive = (train["label"] == 1) & train["mask"].any(axis=(1, 2))
  mean = train["mask"][positive].astype(np.float64).mean(axis=0)
  expected = np.asarray(postprocess.postprocess(mean[..., None].astype(np.float32)))
  maps = np.load(workdir / "maps" / "localization-mean_training_mask.npy")[0]
  assert maps.shape == (config.report.example_images,) + mean.shape
  for m in maps:
    np.testing.assert_allclose(m, expected, atol=1e-6)
  # Not a flat or centered map: it is where the training boxes were.
  assert 0.0 < mean.max() < 1.0 and mean[0, 0] == 0.0
  # Its scores are those of that map against each evaluation mask.
  images = common.evaluation_images(config)
  scores = {r["image_id"]: float(r["value"]) for r in experiment_runs.read_results(workdir)
            if r["method"] == "mean_training_mask" and r["metric"] == "auprc"}
  for image_id, mask in zip(images["id"], images["mask"]):
    assert scores[str(image_id)] == pytest.approx(
        float(metrics.auprc(expected, mask)), abs=1e-5)


def test_controls_ignore_the_image_or_the_model_as_designed(run):
  _, workdir, _ = run
  center = np.load(workdir / "maps" / "localization-center_prior.npy")[0]
  noise = np.load(workdir / "maps" / "localization-random.npy")[0]
  edge = np.load(workdir / "maps" / "localization-edge.npy")[0]
  np.testing.assert_array_equal(center[0], center[1])  # the same for every image
  assert center[0][31, 31] == center[0].max() == 1.0  # peaks at the center
  assert center[0][0, 0] == center[0].min() == 0.0
  assert not np.allclose(noise[0], noise[1])
  assert not np.allclose(edge[0], edge[1])


def test_each_method_is_tested_against_the_best_control(run):
  config, workdir, summary = run
  rows = experiment_runs.read_results(workdir)
  means = {(a["method"], a["metric"]): a["mean"] for a in summary["aggregates"]}
  for metric in config.localization:
    comparison = summary["comparisons"][metric]
    best = max(config.controls, key=lambda c: means[c, metric])
    values = {name: np.array([float(r["value"]) for r in rows
                              if r["method"] == name and r["metric"] == metric])
              for name in _names(config)}
    p_values = []
    for method in config.methods:
      row = comparison[method]
      assert row["best_control"] == best
      if np.any(values[method] != values[best]):
        p = scipy_stats.wilcoxon(values[method], values[best]).pvalue
        assert row["p"] == pytest.approx(p)
      p_values.append(row["p"])
      beats = all(means[method, metric] > means[c, metric] for c in config.controls)
      assert row["beats_every_control"] == beats
      assert row["better_than_controls"] == (beats and row["p_holm"] < 0.05)
    np.testing.assert_allclose([comparison[m]["p_holm"] for m in config.methods],
                               stats.holm(np.array(p_values)))
  primary = summary["comparisons"][config.primary_metric]
  assert summary["better_than_controls"] == {
      m: primary[m]["better_than_controls"] for m in config.methods}


def test_compare_to_controls_needs_both_a_higher_mean_and_significance():
  rng = np.random.default_rng(0)
  control = rng.uniform(0.2, 0.4, size=12)
  methods = {"clearly_better": control + 0.2 + rng.uniform(0, 0.01, 12),
             "worse": control - 0.1,
             "barely_better": control + np.where(np.arange(12) < 7, 0.01, -0.009)}
  controls = {"box": control, "noise": control - 0.2}
  means = {k: float(np.mean(v)) for k, v in {**methods, **controls}.items()}
  out = localization.compare_to_controls(methods, controls, means)
  assert out["clearly_better"]["better_than_controls"]
  assert out["clearly_better"]["best_control"] == "box"
  assert not out["worse"]["better_than_controls"]
  assert out["worse"]["controls_beaten"] == ["noise"]
  assert out["barely_better"]["beats_every_control"]
  assert not out["barely_better"]["better_than_controls"]  # p too large


def test_rerun_resumes_and_recomputes_only_what_is_missing(run):
  config, workdir, _ = run
  before = open(workdir / "results.csv").read()
  kept = results.part_path(str(workdir), "localization-gradient")
  removed = results.part_path(str(workdir), "localization-mean_training_mask")
  mtime = os.path.getmtime(kept)
  os.remove(removed)
  main_lib.run(config, str(workdir))
  assert os.path.getmtime(kept) == mtime
  assert os.path.exists(removed)
  assert open(workdir / "results.csv").read() == before


def test_bad_localization_keys_are_refused():
  config = quick_config("/nonexistent")
  config.primary_metric = "iou"
  with pytest.raises(ValueError, match=r"config.primary_metric='iou'"):
    main_lib.validate(config)
  config = quick_config("/nonexistent")
  config.controls = ("random", "gradient")
  with pytest.raises(ValueError, match=r"config.controls"):
    main_lib.validate(config)
