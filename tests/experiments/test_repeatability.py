"""The repeatability experiment end to end on tiny phantoms, and its pieces."""

import json
import os

import numpy as np
import pytest
import experiment_runs

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import results
from saliency_jax.experiments import common
from saliency_jax.experiments import repeatability
from saliency_jax.experiments import runner
from saliency_jax.metrics import stats

CONFIG = experiment_runs.config_path("repeatability")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return experiment_runs.run_quick("repeatability", tmp_path_factory)


def _member(name, seed):
  return repeatability.Member(name=name, label="small_cnn", seed=seed, model=None,
                              training={}, width=0.125)


def test_writes_every_result_file(run):
  config, workdir, summary = run
  for name in ("config.json", "results.csv", "summary.json", "report.md"):
    assert (workdir / name).exists(), name
  figures = os.listdir(workdir / "figures")
  assert any(f.startswith("repeatability_maps_") for f in figures)
  for metric in config.similarity:
    assert f"repeatability_similarity_{metric}.png" in figures
  for metric in config.localization:
    assert f"repeatability_localization_{metric}.png" in figures
  report = open(workdir / "report.md").read()
  for method in config.methods:
    assert f"`{method}`" in report
  assert "lower bound" in report  # the verdict rule is stated
  assert json.load(open(workdir / "summary.json"))["verdicts"] == json.loads(
      json.dumps(summary["verdicts"]))


def test_rows_per_pair_replicate_image_and_metric(run):
  config, workdir, summary = run
  rows = experiment_runs.read_results(workdir)
  assert tuple(rows[0]) == results.FIELDS
  n = summary["num_images"]
  pairs = config.replicates * (config.replicates - 1) // 2
  per_method = n * (pairs * len(config.similarity)
                    + config.replicates * len(config.localization)
                    + len(config.similarity))  # the different-image baseline
  assert len(rows) == len(config.methods) * per_method
  for metric in config.similarity:
    pair_rows = [r for r in rows if r["metric"] == f"{metric}_vs_seed1"]
    assert {r["seed"] for r in pair_rows} == {"0"}
    assert len(pair_rows) == len(config.methods) * n
  localization = {r["seed"] for r in rows if r["metric"] == config.localization[0]}
  assert localization == {"0", "1"}


def test_each_replicate_is_trained_with_its_own_seed(run):
  config, workdir, summary = run
  assert [m["seed"] for m in summary["members"]] == [0, 1]
  assert [m["training"]["seed"] for m in summary["members"]] == [0, 1]
  # Replicate 0 is the shared 'trained' model of the other experiments.
  assert (workdir / "models" / "trained" / "summary.json").exists()
  models = [common.trained_model(config, str(workdir), tag=tag, seed=seed)[0]
            for tag, seed in (("trained", 0), ("seed1", 1))]
  kernels = [np.asarray(m.predictions.kernel[...]) for m in models]
  assert kernels[0].shape == kernels[1].shape
  assert not np.allclose(kernels[0], kernels[1])


def test_identical_maps_are_perfectly_similar():
  # A model compared with itself: every similarity is 1.
  config = config_lib.load_file(CONFIG, "quick")
  config.localization = ("auprc",)
  rng = np.random.default_rng(0)
  maps = rng.random((1, 3, 32, 32)).astype(np.float32)
  maps = np.concatenate([maps, maps])  # two "replicates", the same maps
  masks = np.zeros((3, 32, 32), bool)
  masks[:, 8:16, 8:16] = True
  states = [runner.ModelState(name=f"seed{s}", explainee=None, model="small_cnn",
                              seed=s) for s in (0, 1)]
  rows = runner.score(config, "repeatability", "gradient", maps,
                      np.zeros((2, 3), bool), states,
                      [runner.Comparison(0, 1, "_vs_seed1")], masks, ["a", "b", "c"])
  pair = [r for r in rows if "_vs_" in r["metric"]]
  assert len(pair) == 3 * len(config.similarity)
  for r in pair:
    assert r["value"] == pytest.approx(1.0, abs=1e-5), r
  expected = {("small_cnn", 0, f"{s}_vs_seed1") for s in config.similarity}
  expected |= {("small_cnn", s, "auprc") for s in (0, 1)}
  expected |= {("small_cnn", 0, f"{s}_different_images") for s in config.similarity}
  assert {(r["model"], r["seed"], r["metric"]) for r in rows} == expected
  by_seed = {s: [r["value"] for r in rows if r["seed"] == s and r["metric"] == "auprc"]
             for s in (0, 1)}
  assert by_seed[0] == by_seed[1]


def test_pairs_are_averaged_per_image():
  members = [_member(f"seed{s}", s) for s in range(3)]
  pairs = [repeatability.Pair(a, b, "replicates") for a, b in ((0, 1), (0, 2), (1, 2))]
  values = {(0, "seed1"): [0.1, 0.4], (0, "seed2"): [0.2, 0.5], (1, "seed2"): [0.6, 0.9]}
  rows = [dict(method="m", model="small_cnn", seed=seed, metric=f"ssim_vs_{name}",
               image_id=image, value=v)
          for (seed, name), vs in values.items() for image, v in zip("xy", vs)]
  got = repeatability.group_similarity(rows, members, pairs, "replicates", "m",
                                       "ssim", ["x", "y"])
  np.testing.assert_allclose(got, [0.3, 0.6])


def _agreement(scores, baseline, **kwargs):
  return stats.baseline_verdict(scores, baseline, expect="above", rule="ci", **kwargs)


def test_verdict_needs_the_lower_bound_above_the_baseline():
  baseline = np.full(20, 0.5)
  clear = _agreement(np.linspace(0.8, 0.9, 20), baseline, seed=0, num_resamples=200)
  assert clear["passed"] and clear["passed_mean"]
  # Mean above the baseline, but the interval reaches below it.
  noisy = _agreement(np.tile([0.1, 1.0], 10), baseline, seed=0, num_resamples=200)
  assert noisy["similarity"][0] > 0.5 > noisy["similarity"][1]
  assert noisy["passed_mean"] and not noisy["passed"]
  below = _agreement(np.full(20, 0.2), baseline, seed=0, num_resamples=200)
  assert not below["passed"] and not below["passed_mean"]
  missing = _agreement([np.nan, np.nan], [0.1, 0.2], seed=0)
  assert not missing["passed"]
  assert missing["num_excluded"] == {"similarity": 2, "baseline": 0}


def test_rerun_resumes_and_recomputes_only_what_is_missing(run):
  config, workdir, _ = run
  before = open(workdir / "results.csv").read()
  kept = results.part_path(str(workdir), "repeatability-gradient")
  removed = results.part_path(str(workdir), "repeatability-gradcam")
  trained = workdir / "models" / "seed1" / "summary.json"
  mtimes = os.path.getmtime(kept), os.path.getmtime(trained)
  os.remove(removed)
  main_lib.run(config, str(workdir))
  assert (os.path.getmtime(kept), os.path.getmtime(trained)) == mtimes
  assert os.path.exists(removed)
  assert open(workdir / "results.csv").read() == before


@pytest.mark.parametrize("value", [1, 0, True])
def test_fewer_than_two_replicates_are_refused(value):
  config = config_lib.load_file(CONFIG, "quick")
  config.replicates = value
  with pytest.raises(errors.ConfigError, match=r"^config\.replicates="):
    repeatability.validate(config)


def test_presets():
  paper = config_lib.load_file(CONFIG, "paper")
  assert (paper.model, paper.image_size, paper.num_images, paper.replicates) == (
      "inception_v3", 320, 100, 3)
  assert config_lib.load_file(CONFIG).replicates == 2
  with pytest.raises(ValueError, match="unknown preset"):
    config_lib.load_file(CONFIG, "bogus")
