"""Weights from elsewhere on the command line: model_weights, init_from, the export."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from saliency_jax import config as config_lib
from saliency_jax import main as main_lib
from saliency_jax import models
from saliency_jax import train
from saliency_jax.models import weights as weights_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_config(data_dir, **overrides):
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "localization.py"),
                                "quick")
  config.data_dir = str(data_dir)
  config.update(overrides)
  return config


def _results(workdir):
  with open(os.path.join(workdir, "results.csv"), newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A localization run that trained its model (and exported it)."""
  data_dir = tmp_path_factory.mktemp("data")
  workdir = tmp_path_factory.mktemp("trained")
  main_lib.run(quick_config(data_dir), str(workdir))
  return data_dir, workdir


def _same_values(a: dict, b: dict) -> None:
  assert a.keys() == b.keys()
  for k, v in a.items():
    assert b[k].dtype == v.dtype and np.array_equal(b[k], v), k


def test_a_finished_training_exports_its_state_bit_identically(trained):
  data_dir, workdir = trained
  config = quick_config(data_dir)
  run = os.path.join(workdir, "models", "trained")
  restored = train.restore_model(config, run, in_channels=1)
  exported = models.from_npz(os.path.join(run, train.EXPORT))
  _same_values(weights_lib.flat_values(restored), weights_lib.flat_values(exported))
  meta = weights_lib.npz_metadata(os.path.join(run, train.EXPORT))
  assert meta == {"model": config.model, "width": config.width, "in_channels": 1,
                  "num_classes": 2, "preprocessing": "none"}


def test_model_weights_evaluates_the_file_instead_of_training(trained, tmp_path):
  data_dir, first = trained
  weights = os.path.join(first, "models", "trained", train.EXPORT)
  config = quick_config(data_dir, model_weights=weights)
  main_lib.run(config, str(tmp_path))
  summary = json.load(open(tmp_path / "models" / "trained" / train.SUMMARY))
  assert summary["steps"] == 0 and summary["model_weights"] == weights
  assert not os.path.exists(tmp_path / "models" / "trained" / "checkpoints")
  trained_summary = json.load(open(first / "models" / "trained" / train.SUMMARY))
  assert summary["test"] == trained_summary["test"]
  # The same model: the same maps and scores, row for row.
  ours, theirs = _results(tmp_path), _results(first)
  assert len(ours) == len(theirs) > 0
  for a, b in zip(ours, theirs):
    assert {k: v for k, v in a.items() if k != "value"} == {
        k: v for k, v in b.items() if k != "value"}
    np.testing.assert_allclose(float(a["value"]), float(b["value"]), rtol=1e-5,
                               atol=1e-6)
  assert json.load(open(tmp_path / "config.json"))["preprocessing"] == "none"


def test_init_from_a_workdir_or_a_file_starts_from_those_weights(trained):
  data_dir, workdir = trained
  run = os.path.join(workdir, "models", "trained")
  expected = weights_lib.flat_values(
      train.restore_model(quick_config(data_dir), run, in_channels=1))
  for source in (str(workdir), run, os.path.join(run, train.EXPORT)):
    config = quick_config(data_dir, init_from=source)
    config_lib.validate(config)
    _same_values(expected, weights_lib.flat_values(train.initial_model(config, 1)))
  # Another class count: a new classifier, the rest as trained.
  config = quick_config(data_dir, init_from=os.path.join(run, train.EXPORT),
                        num_classes=3)
  three = weights_lib.flat_values(train.initial_model(config, 1))
  assert three["predictions/kernel"].shape[-1] == 3
  for k, v in expected.items():
    assert k.startswith("predictions/") or np.array_equal(three[k], v), k


def test_model_weights_must_match_the_classes(trained):
  data_dir, workdir = trained
  weights = os.path.join(workdir, "models", "trained", train.EXPORT)
  config = quick_config(data_dir, model_weights=weights, num_classes=3)
  with pytest.raises(ValueError, match=r"its classifier has 2 classes, "
                     r"config.num_classes=3; to train a new one on these weights "
                     r"use --config.init_from="):
    train.weights_model(config, in_channels=1)


def test_bad_weight_settings_fail_naming_the_key(tmp_path):
  keras_file = tmp_path / "net.weights.h5"
  keras_file.write_bytes(b"")
  npz = tmp_path / "ours.npz"
  npz.write_bytes(b"")
  # 75 px: InceptionV3's smallest input (config.py refuses less).
  base = dict(model="inception_v3", width=1.0, image_size=75)
  cases = [
      (dict(model_weights=str(tmp_path / "nope.h5")), "config.model_weights=.*: no such file"),
      (dict(model_weights=str(tmp_path)), "is a directory; for a training run's directory use config.trained_dir"),
      (dict(init_from=str(tmp_path)), "config.init_from=.*: no checkpoints/ there nor under models/trained/"),
      (dict(model_weights=str(keras_file), model="small_cnn", width=0.25),
       "Keras weights are read for config.model in \\('inception_v3', 'densenet121'\\), not 'small_cnn'"),
      (dict(model_weights=str(keras_file), width=0.5), "set config.width=1.0 \\(not 0.5\\)"),
      (dict(model_weights=str(keras_file), init_from=str(npz)), "both set"),
      (dict(model_weights=str(npz), trained_dir=str(tmp_path)), "config.model_weights and config.trained_dir"),
      (dict(init_from=str(tmp_path / "w.pt")), "expected a Keras file .* or an .npz export"),
      (dict(preprocessing="tf"), "config.preprocessing='tf' is not allowed"),
  ]
  (tmp_path / "w.pt").write_bytes(b"")
  for overrides, message in cases:
    config = quick_config(tmp_path, **{**base, **overrides})
    with pytest.raises(ValueError, match=message):
      config_lib.validate(config)
  config_lib.validate(quick_config(tmp_path, model_weights=str(keras_file), **base))


def test_auto_preprocessing_is_what_the_weights_expect(trained, tmp_path):
  _, workdir = trained
  run = os.path.join(workdir, "models", "trained")
  keras_file = tmp_path / "net.h5"
  keras_file.write_bytes(b"")
  imagenet = tmp_path / "imagenet.npz"
  model = train.restore_model(quick_config(tmp_path), run, in_channels=1)
  # The trained weights in a model that expects ImageNet's mean/std.
  model = weights_lib.assign(weights_lib.abstract_model(
      "small_cnn", num_classes=2, in_channels=1, width=0.125,
      preprocessing="imagenet"), weights_lib.flat_values(model), "m")
  models.save_npz(str(imagenet), model, name="small_cnn", width=0.125, in_channels=1)
  for overrides, expected in (
      ({}, "none"),
      (dict(model="densenet121", width=1.0, model_weights=str(keras_file)), "imagenet"),
      (dict(model="inception_v3", width=1.0, init_from=str(keras_file)), "inception"),
      (dict(model_weights=str(imagenet)), "imagenet"),
      (dict(init_from=str(workdir)), "none"),
      (dict(model_weights=str(imagenet), preprocessing="inception"), "inception"),
  ):
    config = quick_config(tmp_path, **overrides)
    assert config_lib.resolve(config).preprocessing == expected, overrides
  assert train.weights_model(quick_config(tmp_path, model_weights=str(imagenet)),
                             in_channels=1).preprocessing == "imagenet"


def test_training_with_init_from_starts_at_those_weights(trained, tmp_path):
  data_dir, workdir = trained
  start = weights_lib.flat_values(train.restore_model(
      quick_config(data_dir), os.path.join(workdir, "models", "trained"), 1))
  config = quick_config(data_dir, init_from=str(workdir))
  config.train.update(steps=2, warmup_steps=1, log_every=1, eval_every=2,
                      checkpoint_every=2)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["init_from"] == str(workdir) and summary["steps"] == 2
  after = weights_lib.flat_values(models.from_npz(str(tmp_path / train.EXPORT)))
  assert not np.array_equal(after["block1/conv/kernel"], start["block1/conv/kernel"])
  kernels = [k for k in start if k.endswith("kernel")]
  moved = lambda values: np.mean([np.abs(values[k] - start[k]).mean()  # noqa: E731
                                  for k in kernels])
  # Adam moves a weight by at most ~ the learning rate per step (the first
  # step's rate is 0); a fresh start (the same seed) is 60 such steps away.
  lr = config.train.learning_rate
  assert moved(after) <= 1.01 * lr
  assert moved(weights_lib.flat_values(train.create_model(config, 1))) > 3 * lr


# ------------------------------------------------- bad files on the CLI ---

def _bad_npz(kind: str, directory) -> str:
  """A quick config's small_cnn export broken as ``kind`` says."""
  config = quick_config(directory)
  model = weights_lib.abstract_model(config.model, num_classes=config.num_classes,
                                     in_channels=1, width=config.width)
  rng = np.random.default_rng(0)
  model = weights_lib.assign(model, {
      k: rng.uniform(0.5, 1.5, shape).astype(np.float32)
      for k, shape in weights_lib.expected_shapes(model).items()}, "random")
  path = os.path.join(directory, f"{kind}.npz")
  models.save_npz(path, model, name=config.model, width=config.width,
                  in_channels=1)
  if kind == "truncated":
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[:len(data) // 2])
    return path
  with zipfile.ZipFile(path) as archive:
    members = {name: archive.read(name) for name in archive.namelist()}
  replacement = io.BytesIO()
  if kind == "pickled":
    np.save(replacement, np.array([{"a": 1}], dtype=object), allow_pickle=True)
  else:  # mis-shaped: one more output channel
    shape = np.load(io.BytesIO(members["block1/conv/kernel.npy"])).shape
    np.save(replacement, np.zeros(shape[:-1] + (shape[-1] + 1,), np.float32))
  members["block1/conv/kernel.npy"] = replacement.getvalue()
  with zipfile.ZipFile(path, "w") as archive:
    for name, data in members.items():
      archive.writestr(name, data)
  return path


@pytest.fixture(scope="module")
def cli_data_dir(tmp_path_factory):
  """One synthetic dataset for the command-line runs (built by the first)."""
  return tmp_path_factory.mktemp("cli_data")


@pytest.mark.parametrize("kind, message", [
    ("truncated", "a zip archive that is truncated or damaged"),
    ("pickled", "member 'block1/conv/kernel.npy': holds Python objects"),
    ("mis_shaped", "'block1/conv/kernel' has shape"),
])
def test_a_bad_weights_file_fails_in_one_line(kind, message, cli_data_dir,
                                              tmp_path):
  path = _bad_npz(kind, tmp_path)
  result = subprocess.run(
      [sys.executable, "-m", "saliency_jax.main",
       "--config=configs/localization.py:quick",
       f"--config.model_weights={path}", f"--config.data_dir={cli_data_dir}",
       f"--workdir={tmp_path / 'workdir'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith(f"error: {path}: "), result.stderr
  assert message in lines[-1]
  assert [line for line in lines if line.startswith("error:")] == lines[-1:]
