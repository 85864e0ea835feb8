"""The reproducibility experiment end to end on tiny phantoms, and its pieces."""

import json
import os
import shutil

import pytest
import experiment_runs

from saliency_jax import config as config_lib
from saliency_jax import io_utils
from saliency_jax import main as main_lib
from saliency_jax import results
from saliency_jax.experiments import reproducibility

CONFIG = experiment_runs.config_path("reproducibility")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return experiment_runs.run_quick("reproducibility", tmp_path_factory)


def test_writes_every_result_file(run):
  config, workdir, summary = run
  for name in ("config.json", "results.csv", "summary.json", "report.md"):
    assert (workdir / name).exists(), name
  figures = os.listdir(workdir / "figures")
  assert any(f.startswith("reproducibility_maps_") for f in figures)
  for metric in config.similarity:
    assert f"reproducibility_similarity_{metric}.png" in figures
  report = open(workdir / "report.md").read()
  assert "REPRODUCIBLE" in report and "lower bound" in report
  for member in summary["members"]:
    assert member["name"] in report
  assert json.load(open(workdir / "summary.json"))["verdicts"] == json.loads(
      json.dumps(summary["verdicts"]))


def test_rows_per_pair_model_image_and_metric(run):
  config, workdir, summary = run
  rows = experiment_runs.read_results(workdir)
  n = summary["num_images"]
  label_a, label_b = reproducibility.architecture_labels(config)
  assert (label_a, label_b) == ("small_cnn_w0.125", "small_cnn_w0.25")
  # No replicate of A was available: one pair, two models, the baseline.
  assert [p["group"] for p in summary["pairs"]] == ["architectures"]
  per_method = n * (len(config.similarity) + 2 * len(config.localization)
                    + len(config.similarity))
  assert len(rows) == len(config.methods) * per_method
  assert {r["model"] for r in rows if r["metric"] == "ssim_vs_" + label_b} == {label_a}
  assert {r["model"] for r in rows if r["metric"] == "auprc"} == {label_a, label_b}
  # Both architectures were trained, each into its own folder, same seed.
  trained = [m["training"] for m in summary["members"]]
  assert [(t["model"], t["width"], t["seed"]) for t in trained] == [
      ("small_cnn", 0.125, 0), ("small_cnn", 0.25, 0)]
  other = workdir / "models" / reproducibility.other_tag(label_b)
  assert (other / "summary.json").exists()


def test_a_replicate_from_replicates_dir_is_reused(run, tmp_path):
  # A's replicate "seed1" is a copy of A itself: the intra-architecture
  # similarity is that of a model with itself, exactly 1.
  config, workdir, _ = run
  workdir_copy = tmp_path / "work"
  shutil.copytree(workdir, workdir_copy)
  replicates = tmp_path / "replicates"
  shutil.copytree(workdir / "models" / "trained", replicates / "models" / "seed1")
  shutil.copy(workdir / "config.json", replicates / "config.json")
  summary_path = replicates / "models" / "seed1" / "summary.json"
  io_utils.write_json(str(summary_path),
                      dict(io_utils.read_json(str(summary_path)), seed=1))
  config = config.copy_and_resolve_references()  # the fixture's stays as it is
  config.replicates_dir = str(replicates)
  summary = reproducibility.run(config, str(workdir_copy))
  assert [p["group"] for p in summary["pairs"]] == ["architectures", "replicates"]
  intra = [r for r in experiment_runs.read_results(workdir_copy) if r["metric"].endswith("_seed1")]
  n = summary["num_images"]
  assert len(intra) == len(config.methods) * n * len(config.similarity)
  for r in intra:
    assert float(r["value"]) == pytest.approx(1.0, abs=1e-5), r
  groups = summary["group_similarity"]["gradient"]["ssim"]
  assert groups["replicates"][0] == pytest.approx(1.0, abs=1e-5)
  report = open(workdir_copy / "report.md").read()
  assert "between replicates" in report and "Wilcoxon p" in report
  assert not (workdir_copy / "models" / "seed1").exists()  # reused, not trained


def test_replicates_dir_with_other_training_is_refused(run, tmp_path):
  config, workdir, _ = run
  other = json.load(open(workdir / "config.json"))
  other["width"] = 0.5
  io_utils.write_json(str(tmp_path / "config.json"), other)
  with pytest.raises(ValueError, match=r"config.replicates_dir=.*config\.width=0.5"):
    reproducibility.check_same_training(config, str(tmp_path))
  reproducibility.check_same_training(config, str(workdir))  # the same: accepted
  with pytest.raises(ValueError, match=r"config.replicates_dir=.*no config.json"):
    reproducibility.check_same_training(config, str(tmp_path / "typo"))


def test_rerun_resumes_without_training_or_recomputing(run):
  config, workdir, _ = run
  before = open(workdir / "results.csv").read()
  parts = [results.part_path(str(workdir), f"reproducibility-{m}")
           for m in config.methods]
  mtimes = [os.path.getmtime(p) for p in parts]
  main_lib.run(config, str(workdir))
  assert [os.path.getmtime(p) for p in parts] == mtimes
  assert open(workdir / "results.csv").read() == before


@pytest.mark.parametrize("key, value, match", [
    ("other_model", "resnet50", r"^config\.other_model='resnet50' is not allowed"),
    ("other_width", 0.0, r"^config\.other_width=0.0"),
    ("intra_replicate", "always", r"^config\.intra_replicate='always'"),
])
def test_bad_keys_are_refused(key, value, match):
  config = config_lib.load_file(CONFIG)
  config[key] = value
  with pytest.raises(ValueError, match=match):
    main_lib.validate(config)


def test_the_same_architecture_is_refused():
  config = config_lib.load_file(CONFIG, "quick")
  config.other_width = config.width
  with pytest.raises(ValueError,
                     match=r"^config\.other_model='small_cnn'.*repeatability"):
    main_lib.validate(config)


def test_presets():
  paper = config_lib.load_file(CONFIG, "paper")
  assert (paper.model, paper.other_model, paper.image_size, paper.num_images) == (
      "inception_v3", "densenet121", 320, 100)
  assert reproducibility.architecture_labels(paper) == ("inception_v3", "densenet121")
  default = config_lib.load_file(CONFIG)
  assert default.other_model != default.model


def test_replicates_are_looked_up_in_this_runs_models_then_replicates_dir(tmp_path):
  config = config_lib.load_file(CONFIG, "quick")
  workdir, study, other = tmp_path / "work", tmp_path / "study", tmp_path / "other"
  io_utils.write_json(str(other / "config.json"), {})
  io_utils.write_json(str(other / "models" / "seed1" / "summary.json"), {})
  assert reproducibility.reuse_overrides(config, str(workdir), "seed1") is None
  config.replicates_dir = str(other)
  assert reproducibility.reuse_overrides(config, str(workdir), "seed1") == {
      "models_dir": str(other / "models")}
  # A study's shared models (e.g. the repeatability experiment's) come first.
  io_utils.write_json(str(study / "seed1" / "summary.json"), {})
  config.models_dir = str(study)
  assert reproducibility.reuse_overrides(config, str(workdir), "seed1") == {}
  assert reproducibility.reuse_overrides(config, str(workdir), "seed2") is None
