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
  config = load_config_file("train", "quick")
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
  config.tensorboard = True  # read back by test_tensorboard_has_the_metrics_records
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


def test_tensorboard_has_the_metrics_records(uninterrupted):
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top
  config, workdir, _ = uninterrupted
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  [name] = os.listdir(workdir / train.TENSORBOARD)
  found = {}
  for ev in event_file_loader.EventFileLoader(
      str(workdir / train.TENSORBOARD / name)).Load():
    for v in ev.summary.value:
      found[ev.step, v.tag] = v.tensor.float_val[0]
  want = {(r["step"], tag): r[key] for r in records
          for key, tag in train.TENSORBOARD_TAGS.items() if key in r}
  assert found.keys() == want.keys()
  assert ("validation/auc" in {tag for _, tag in want}
          and "train/learning_rate" in {tag for _, tag in want})
  for k, value in want.items():
    assert found[k] == pytest.approx(value, rel=1e-6, abs=1e-30)  # float32 in the file
  # The learning rate is the schedule's: warmup to the peak, then decay.
  rates = [r["learning_rate"] for r in records]
  assert max(rates) <= config.train.learning_rate
  assert rates[-1] == pytest.approx(train.learning_rate(config, config.train.steps - 1))


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


# ------------------------------------------------------------- streaming ---

def _curves(workdir):
  return [{k: v for k, v in json.loads(l).items() if k != "steps_per_second"}
          for l in open(workdir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def streamed(uninterrupted, tmp_path_factory):
  """(config, workdir) of the quick run with every split streamed from its files."""
  config, _, _ = uninterrupted
  workdir = tmp_path_factory.mktemp("streamed")
  config = quick_config(config.data_dir, data_in_memory=False)
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


def test_streamed_training_equals_in_memory_training_bit_for_bit(uninterrupted, streamed):
  config, in_memory_dir, _ = uninterrupted
  _, streamed_dir = streamed
  for a, b in zip(_params(config, in_memory_dir), _params(config, streamed_dir)):
    np.testing.assert_array_equal(a, b)
  assert _curves(streamed_dir) == _curves(in_memory_dir)
  assert (json.load(open(streamed_dir / "summary.json"))
          == json.load(open(in_memory_dir / "summary.json")))


def test_a_stopped_streamed_run_resumes_bit_identically(streamed, tmp_path):
  config, full_dir = streamed
  # Stop between checkpoints (10 and 20), as a kill would.
  assert train.train_and_evaluate(config, str(tmp_path), stop_after=13) is None
  train.train_and_evaluate(config, str(tmp_path))
  for a, b in zip(_params(config, full_dir), _params(config, tmp_path)):
    np.testing.assert_array_equal(a, b)
  assert _curves(full_dir) == _curves(tmp_path)


def test_a_streamed_split_trains_on_the_in_memory_labels(uninterrupted):
  config, _, _ = uninterrupted
  for overrides in (dict(num_train=40), dict(num_train=40, randomize_labels=True)):
    streamed_config = quick_config(config.data_dir, data_in_memory=False, **overrides)
    in_memory = quick_config(config.data_dir, data_in_memory=True, **overrides)
    streamed_split = train._load_split(streamed_config, "train")  # pylint: disable=protected-access
    in_memory_split = train._load_split(in_memory, "train")  # pylint: disable=protected-access
    assert "stream" in streamed_split and "image_device" in in_memory_split
    assert streamed_split["num_examples"] == in_memory_split["num_examples"] == 40
    np.testing.assert_array_equal(
        train.train_labels(streamed_config, {"train": streamed_split}),
        train.train_labels(in_memory, {"train": in_memory_split}))


def test_seeds_of_a_streamed_split_train_one_after_another(streamed, tmp_path, monkeypatch):
  config, _ = streamed
  trained = []

  def plain_run(config, directory, stop_after=None):
    trained.append((config.seed, directory))
    return None  # as if stopped: nothing to read back

  monkeypatch.setattr(train, "train_and_evaluate", plain_run)
  directories = [str(tmp_path / "a"), str(tmp_path / "b")]
  assert train.train_seeds(config, directories, [0, 1]) is None
  # Not stacked: the first seed went to the plain run (which stopped the rest).
  assert trained == [(0, directories[0])]
