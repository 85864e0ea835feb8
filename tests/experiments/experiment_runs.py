"""What the end-to-end experiment tests share: quick configs, one run per module, results."""

import csv
import os

import numpy as np
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import main as main_lib
from saliency_jax import models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config_path(experiment: str) -> str:
  return os.path.join(config_lib.CONFIGS_DIR, f"{experiment}.py")


def quick_config(experiment: str, data_dir):
  """``configs/<experiment>.py:quick`` building its data into ``data_dir``."""
  config = config_lib.load_file(config_path(experiment), "quick")
  config.data_dir = str(data_dir)
  return config


def run_quick(experiment: str, tmp_path_factory):
  """(config, workdir, summary) of the quick preset run from the CLI's entry point."""
  data_dir = tmp_path_factory.mktemp("data")
  workdir = tmp_path_factory.mktemp(experiment)
  config = quick_config(experiment, data_dir)
  summary = main_lib.run(config, str(workdir))
  return config, workdir, summary


def read_results(workdir):
  """``results.csv`` of ``workdir`` as a list of dicts (values as strings)."""
  with open(workdir / "results.csv", newline="") as f:
    return list(csv.DictReader(f))


def untrained_weights(path, *, nan: bool = False, seed: int = 0) -> str:
  """The quick presets' small_cnn (width 0.125, one channel), untrained, as an
  .npz at ``path``; ``nan``: its classifier kernel NaN (a diverged model)."""
  model = models.create("small_cnn", num_classes=2, in_channels=1, width=0.125,
                        rngs=nnx.Rngs(seed))
  if nan:
    kernel = model.predictions.kernel
    kernel[...] = np.full(kernel[...].shape, np.nan, np.float32)
  model.eval()
  models.save_npz(str(path), model, name="small_cnn", width=0.125, in_channels=1)
  return str(path)
