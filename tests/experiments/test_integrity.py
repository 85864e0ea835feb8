"""Results that cannot silently lie: faults injected on purpose, and what the run does.

NaN weights give INVALID verdicts with counts (never PASS); a damaged part is
named and computed again; a weights file replaced between runs, a second run
in the same workdir and a workdir that cannot hold a run are refused.
"""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import experiment_runs
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import results
from saliency_jax import workdir as workdir_lib
from saliency_jax.experiments import common




def _config(experiment, data_dir, weights=None, **updates):
  config = experiment_runs.quick_config(experiment, data_dir)
  config.model_weights = weights
  config.update(updates)
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def nan_cascade(data_dir, tmp_path_factory):
  weights = experiment_runs.untrained_weights(tmp_path_factory.mktemp("w") / "nan.npz",
                                              nan=True)
  workdir = tmp_path_factory.mktemp("nan_cascade")
  config = _config("cascade", data_dir, weights)
  return config, workdir, main_lib.run(config, str(workdir))


def test_nan_weights_are_invalid_with_counts_never_pass(nan_cascade):
  config, workdir, summary = nan_cascade
  num_images, num_stages = summary["num_images"], len(summary["stages"])
  for method in config.methods:
    for metric, verdict in summary["verdicts"][method].items():
      assert verdict["verdict"] == "INVALID", (method, metric, verdict)
      assert not (verdict["passed"] or verdict["passed_mean"] or verdict["passed_ci"])
    assert method in summary["invalid"]
    # Every stage's logits are NaN (the randomized stages keep the NaN head
    # only where it was not re-initialized; stage 0 always has it).
    assert "stage0" in summary["nonfinite"][method]
  rows = results.read_rows(workdir / "results.csv")
  stage0 = results.values(rows, stage=0, metric="ssim")
  # The null baselines too: their maps ignore the model, but not its NaN targets.
  maps = len(config.methods) + len(config.null_baselines)
  assert config.null_baselines and stage0.size == maps * num_images
  assert np.isnan(stage0).all()
  baseline = results.values(rows, metric="ssim_different_images")
  assert np.isnan(baseline).all()
  report = open(workdir / "report.md").read()
  assert "PASS" not in report
  assert "INVALID" in report and "not finite" in report
  assert num_stages == 6


def test_nan_weights_are_invalid_in_the_localization_test(data_dir, tmp_path):
  weights = experiment_runs.untrained_weights(tmp_path / "nan.npz", nan=True)
  summary = main_lib.run(_config("localization", data_dir, weights),
                         str(tmp_path / "run"))
  assert set(summary["verdicts"].values()) == {"INVALID"}
  assert not any(summary["better_than_controls"].values())
  assert "PASS" not in open(tmp_path / "run" / "report.md").read()


def test_damaged_part_is_named_and_computed_again(data_dir, tmp_path, caplog):
  weights = experiment_runs.untrained_weights(tmp_path / "ok.npz", nan=False)
  workdir = tmp_path / "run"
  config = _config("localization", data_dir, weights)
  main_lib.run(config, str(workdir))
  before = open(workdir / "results.csv").read()
  path = results.part_path(str(workdir), "localization-gradient")
  untouched = results.part_path(str(workdir), "localization-gradcam")
  mtime = os.path.getmtime(untouched)
  for damage in ("truncate", "empty", "edit", "manifest"):
    lines = open(path).read().splitlines(keepends=True)
    if damage == "truncate":
      open(path, "w").write("".join(lines[:len(lines) // 2]))
    elif damage == "empty":
      open(path, "w").close()
    elif damage == "edit":  # same row count, one value changed
      open(path, "w").write("".join(lines[:-1]) + lines[-1].rstrip("\n") + "5\n")
    else:
      os.remove(results.manifest_path(str(workdir), "localization-gradient"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      main_lib.run(config, str(workdir))
    assert open(workdir / "results.csv").read() == before, damage
    assert os.path.getmtime(untouched) == mtime, damage
    named = [r.getMessage() for r in caplog.records if path in r.getMessage()]
    assert named and "computing it again" in named[0], (damage, caplog.text)


def test_weights_replaced_after_a_kill_are_refused(data_dir, tmp_path):
  weights = experiment_runs.untrained_weights(tmp_path / "w.npz", nan=False, seed=0)
  workdir = tmp_path / "run"
  config = _config("localization", data_dir, weights)
  main_lib.run(config, str(workdir))
  # The same path, other weights.
  experiment_runs.untrained_weights(tmp_path / "w.npz", nan=False, seed=1)
  with pytest.raises(errors.WorkdirError, match=r"config\.model_weights"):
    main_lib.run(config, str(workdir))
  assert json.load(open(workdir / "inputs.json"))["config.model_weights"]["path"] == weights


def test_retrained_model_is_refused(tmp_path):
  # What each trained model was is recorded as it is first used.
  workdir_lib.record_inputs(str(tmp_path), {"model/trained": {"params_sha256": "a"}})
  workdir_lib.record_inputs(str(tmp_path), {"model/trained": {"params_sha256": "a"}})
  with pytest.raises(errors.WorkdirError, match=r"model/trained: was .*\"a\".* now"):
    workdir_lib.record_inputs(str(tmp_path), {"model/trained": {"params_sha256": "b"}})


def test_second_run_in_a_workdir_is_refused_while_the_first_holds_it(tmp_path):
  with workdir_lib.lock(str(tmp_path)):
    with pytest.raises(errors.WorkdirError, match=rf"another run \(PID {os.getpid()}\)"):
      with workdir_lib.lock(str(tmp_path)):
        pass
    # From the command line: one line naming the holder, exit 2.
    result = subprocess.run(
        [sys.executable, "-m", "saliency_jax.main", "--config=configs/train.py",
         f"--workdir={tmp_path}"], cwd=experiment_runs.ROOT, capture_output=True,
        text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines() == [
      f"error: --workdir={tmp_path}: another run (PID {os.getpid()}) is using it; "
      "wait for it to finish or use another --workdir"]
  assert not os.path.exists(tmp_path / "config.json")


def test_stale_lock_of_a_killed_run_does_not_block(tmp_path):
  (tmp_path / workdir_lib.LOCK).write_text("999999999\n")  # no process holds it
  with workdir_lib.lock(str(tmp_path)):
    assert (tmp_path / workdir_lib.LOCK).read_text() == f"{os.getpid()}\n"


def test_workdir_that_cannot_hold_a_run(tmp_path):
  file = tmp_path / "file"
  file.write_text("x")
  with pytest.raises(errors.WorkdirError, match="exists and is not a directory"):
    workdir_lib.check_usable(str(file))
  with pytest.raises(errors.WorkdirError, match="cannot create it"):
    workdir_lib.check_usable(str(file / "below"))


def test_too_few_test_positives_fail_before_any_training(monkeypatch, tmp_path):
  # One positive: the different-image baseline cannot be formed; this used to
  # fail after training and the saliency maps.
  # The split's index: labels, and which records have a mask pixel.
  index = common.data_lib.streaming.SplitIndex(
      label=np.array([0, 1, 0], np.int32), annotated=np.array([False, True, False]),
      box_rows=4, text_widths={"id": 1})
  source = type("Source", (), {"index": lambda self: index})()
  monkeypatch.setattr(common.data_lib, "source", lambda config, name: source)
  config = experiment_runs.quick_config("cascade", tmp_path)
  with pytest.raises(errors.ConfigError, match=r"split 'test' has 1 positive image"):
    common.evaluation_images(config, workdir=str(tmp_path))
  assert not os.path.exists(tmp_path / "images.csv")
