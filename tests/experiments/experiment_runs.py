"""What the end-to-end experiment tests share: quick configs, one run per module, results."""

import csv
import os

from saliency_jax import config as config_lib
from saliency_jax import main as main_lib

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
