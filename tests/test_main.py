"""The command line: bad keys, values and experiment names fail in one line."""

import json
import os
import subprocess
import sys

import pytest

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import main as main_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, workdir):
  return subprocess.run(
      [sys.executable, "-m", "saliency_jax.main", f"--workdir={workdir}", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, expected", [
    (["--config.foo=1"], "unknown key config.foo; config has keys: "),
    (["--config.train.bar=2"], "unknown key config.train.bar; config.train has keys: augment, batch_size"),
    (["--config.width=abc"], "--config.width=abc: could not convert string to float"),
    (["--config.experiment=nope"], "config.experiment='nope' is not allowed; expected one of 'train'"),
    (["--config.model=vgg"], "config.model='vgg' is not allowed; expected one of 'small_cnn', 'inception_v3', 'densenet121'"),
    (["--config.synthetic.prevalence=1.5"], "config.synthetic.prevalence=1.5"),
    (["--config.train.steps=0"], "config.train.steps=0: expected a positive number"),
    (["--config.seed=-1"], "config.seed=-1: expected a non-negative integer seed"),
    (["--config.width=nan"], "config.width=nan: expected a finite number"),
    (["--config.train.learning_rate=nan"], "config.train.learning_rate=nan: expected a finite number"),
    (["--config.image_size=7"], "config.image_size=7 is too small: small_cnn (config.model) needs at least 8 px"),
])
def test_bad_config_fails_in_one_line(tmp_path, args, expected):
  result = _cli("--config=configs/train.py", *args, workdir=tmp_path)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("error: ") and expected in lines[0]
  assert not os.path.exists(tmp_path / "config.json")


def test_unknown_preset_names_the_allowed_ones(tmp_path):
  result = _cli("--config=configs/train.py:bogus", workdir=tmp_path)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: ValueError: configs/train.py: unknown preset 'bogus'; "
      "expected 'quick' or 'randomized_labels'"]


_CALLS = []


def _record(config, workdir):
  _CALLS.append((config.seed, workdir))
  return "done"


def test_run_writes_resolved_config_and_dispatches(tmp_path, monkeypatch):
  monkeypatch.setitem(config_lib.EXPERIMENTS, "train", f"{__name__}:_record")
  config = config_lib.base_config()
  config.seed = 7
  assert main_lib.run(config, str(tmp_path)) == "done"
  assert _CALLS == [(7, str(tmp_path))]
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["seed"] == 7


def test_every_config_file_validates():
  for name in config_lib.packaged_configs():
    config = config_lib.load_file(name)
    if name == "aggregate":  # needs the sweep it aggregates
      with pytest.raises(errors.ConfigError, match="config.sweep_dir is not set"):
        main_lib.validate(config)
    else:
      main_lib.validate(config)
    with open(os.path.join(config_lib.CONFIGS_DIR, f"{name}.py")) as f:
      assert f.readline().startswith(f"# Run: python -m saliency_jax.main --config={name}")


def test_project_errors_are_one_line_and_traceback_shows_them(tmp_path):
  # A workdir that is a file: one line naming it; --traceback for bug reports.
  workdir = tmp_path / "file"
  workdir.write_text("x")
  result = _cli("--config=configs/train.py", workdir=workdir)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: --workdir={workdir}: exists and is not a directory"]
  traced = _cli("--config=configs/train.py", "--traceback", workdir=workdir)
  assert traced.returncode != 0
  assert "Traceback" in traced.stderr and "WorkdirError" in traced.stderr


def test_missing_config_file_is_one_line(tmp_path):
  result = _cli("--config=configs/nope.py", workdir=tmp_path)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: configs/nope.py: no such file, nor a packaged config; expected a config "
      f"file's path or one of {', '.join(config_lib.packaged_configs())}"]
