"""Training: resumes bit-identically after a kill, permutes labels, writes its files."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from saliency_jax import data as data_lib
from saliency_jax import errors
from saliency_jax import train
from saliency_jax.config import load_file as load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_config(data_dir, **train_overrides):
  config = load_config_file(os.path.join(ROOT, "configs", "train.py"), "quick")
  config.data_dir = str(data_dir)
  config.train.update(train_overrides)
  return config


def _params(config, workdir):
  model = train.restore_model(config, str(workdir), in_channels=1)
  return jax.tree.leaves(nnx.state(model))


def test_permute_labels_is_a_keyed_permutation():
  labels = jnp.arange(50) % 2
  a = train.permute_labels(jax.random.key(1), labels)
  assert np.array_equal(a, train.permute_labels(jax.random.key(1), labels))
  assert not np.array_equal(a, train.permute_labels(jax.random.key(2), labels))
  assert not np.array_equal(a, labels)
  assert np.sort(a).tolist() == np.sort(labels).tolist()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("data")
  workdir = tmp_path_factory.mktemp("full")
  config = quick_config(data_dir)
  summary = train.train_and_evaluate(config, str(workdir))
  return config, workdir, summary


def test_run_writes_metrics_checkpoints_and_summary(uninterrupted):
  config, workdir, summary = uninterrupted
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  steps = [r["step"] for r in records]
  assert steps == list(range(config.train.log_every, config.train.steps + 1,
                             config.train.log_every))
  assert all(np.isfinite(r["train_loss"]) for r in records)
  assert "val_auc" in records[-1]
  assert str(config.train.steps) in os.listdir(workdir / "checkpoints")
  on_disk = json.load(open(workdir / "summary.json"))
  assert on_disk["test"]["num_examples"] == config.synthetic.num_test
  for split in ("train", "validation", "test"):
    assert 0.0 <= summary[split]["accuracy"] <= 1.0


def test_stop_and_resume_is_bit_identical(uninterrupted, tmp_path):
  config, full_dir, _ = uninterrupted
  # Stop between checkpoints (10 and 20), as a kill would.
  assert train.train_and_evaluate(config, str(tmp_path), stop_after=13) is None
  assert train.restore_model(config, str(tmp_path), 1) is not None
  train.train_and_evaluate(config, str(tmp_path))
  for a, b in zip(_params(config, full_dir), _params(config, tmp_path)):
    np.testing.assert_array_equal(a, b)
  assert (open(full_dir / "metrics.jsonl").read().count("\n")
          == open(tmp_path / "metrics.jsonl").read().count("\n"))
  full, resumed = (json.load(open(d / "summary.json")) for d in (full_dir, tmp_path))
  assert full == resumed


def test_sigkill_then_rerun_ends_identical(uninterrupted, tmp_path):
  config, full_dir, _ = uninterrupted
  args = [sys.executable, "-m", "saliency_jax.main",
          "--config=configs/train.py:quick", f"--workdir={tmp_path}",
          f"--config.data_dir={config.data_dir}"]
  proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  ckpt = tmp_path / "checkpoints"
  while time.time() < deadline and not (ckpt.exists() and "10" in os.listdir(ckpt)):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert "10" in os.listdir(ckpt), "the run never reached its first checkpoint"
  rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  for a, b in zip(_params(config, full_dir), _params(config, tmp_path)):
    np.testing.assert_array_equal(a, b)


def test_randomized_labels_change_the_training(uninterrupted, tmp_path):
  config, full_dir, _ = uninterrupted
  config = quick_config(config.data_dir, randomize_labels=True)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["randomize_labels"] is True
  different = [not np.array_equal(a, b) for a, b in
               zip(_params(config, full_dir), _params(config, tmp_path))]
  assert any(different)


def test_num_train_takes_the_first_training_examples(uninterrupted):
  config, _, _ = uninterrupted
  full = data_lib.load(config, "train")
  config = ml_collections.ConfigDict(config.to_dict())
  config.train.num_train = 20
  subset = train.training_split(config)
  np.testing.assert_array_equal(subset["image"], full["image"][:20])
  assert list(subset["id"]) == list(full["id"][:20])
  config.train.num_train = len(full["label"]) + 1
  with pytest.raises(ValueError, match=r"config.train.num_train=\d+ exceeds the \d+ training"):
    train.training_split(config)


def test_a_diverging_run_stops_with_one_error_and_no_summary(tmp_path):
  # A learning rate that sends the weights to infinity: the loss is not finite
  # at the first log step; the run stops there and never counts as trained.
  config = quick_config(tmp_path / "data", learning_rate=1e30, steps=20, warmup_steps=1,
                        log_every=5, eval_every=20, checkpoint_every=20)
  with pytest.raises(errors.NonFiniteError, match=r"training loss is not finite at step 5"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / train.SUMMARY).exists()


def test_non_finite_outputs_stop_the_run_but_undefined_precision_does_not():
  train.check_finite("x", {"auc": 0.5, "precision": float("nan"), "nonfinite": 0})
  with pytest.raises(errors.NonFiniteError, match="not finite on 3 images"):
    train.check_finite("x", {"auc": float("nan"), "nonfinite": 3})
