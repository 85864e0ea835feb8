r"""Peak host memory of training on a large split, streamed and in memory.

Builds a mock RSNA Pneumonia tree (:func:`mock_downloads.write_rsna`, by
default 3000 patients at 256 px: a ~630 MB float32 training split), trains the
quick model a few steps on it with every split streamed from its files
(``config.train.data_in_memory=False``) and, unless ``--nocompare``, again
with every split in memory; each run in its own process, which reports its
peak resident set size (``resource.getrusage``). Prints one JSON record::

  python -m saliency_jax.data.memory_check --root=/tmp/memcheck
  python -m saliency_jax.data.memory_check --patients=600 --image_size=128 --nocompare

The tree and the build are kept under ``--root`` and reused by later runs.
Streamed, the peak should not grow with the split (a few batches of images
on top of the program); in memory it holds the split several times over
while it is decoded and stacked.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

_ROOT = flags.DEFINE_string("root", "/tmp/saliency_jax_memory_check",
                            "Where the mock tree, the build and the runs go.")
_PATIENTS = flags.DEFINE_integer("patients", 3000, "Mock RSNA patients (images).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Image size, px.")
_STEPS = flags.DEFINE_integer("steps", 10, "Training steps per run.")
_COMPARE = flags.DEFINE_bool("compare", True, "Also train with the splits in memory.")
_CHILD = flags.DEFINE_enum("child", None, ["tree", "build", "streamed", "in_memory"],
                           "Internal: the step this process runs.")


def _config(in_memory: bool | None):
  from saliency_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_file("train", "quick")
  root = _ROOT.value
  config.update(dataset="rsna_pneumonia", manual_dir=os.path.join(root, "rsna"),
                data_dir=os.path.join(root, "tfds"), image_size=_IMAGE_SIZE.value)
  config.train.update(steps=_STEPS.value, warmup_steps=1, log_every=_STEPS.value,
                      eval_every=_STEPS.value, checkpoint_every=_STEPS.value)
  if in_memory is not None:
    config.train.data_in_memory = in_memory
  return config


def _peak_rss_bytes() -> dict[str, int]:
  """This process's peak resident set size: ``getrusage`` and, on Linux, the
  kernel's ``VmHWM`` (which a parent's peak cannot raise)."""
  peak = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
  if os.path.exists("/proc/self/status"):
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          peak["vm_hwm_bytes"] = int(line.split()[1]) * 1024
  return peak


def _child(mode: str) -> dict[str, object]:
  if mode == "tree":
    # In a process of its own: the writer returns every image it wrote, and a
    # child started from a large parent would inherit its peak (getrusage).
    from saliency_jax.data import mock_downloads  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    mock_downloads.write_rsna(os.path.join(_ROOT.value, "rsna"),
                              num_patients=_PATIENTS.value, image_size=_IMAGE_SIZE.value)
    return {"seconds": round(time.perf_counter() - start, 1)}
  from saliency_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  if mode == "build":
    config = _config(None)
    start = time.perf_counter()
    train_split = data_lib.source(config, "train")
    index = train_split.index()
    return {"build_and_index_seconds": round(time.perf_counter() - start, 1),
            "num_train": train_split.num_examples,
            "train_float32_bytes": train_split.image_bytes,
            "train_positives": int(index.label.sum())}
  from saliency_jax import train  # pylint: disable=g-import-not-at-top
  config = _config(mode == "in_memory")
  workdir = os.path.join(_ROOT.value, f"run_{mode}")
  if os.path.exists(workdir):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(workdir)
  start = time.perf_counter()
  summary = train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    last = [json.loads(line) for line in f][-1]
  return {"seconds": round(time.perf_counter() - start, 1),
          "steps_per_second": round(last["steps_per_second"], 3),
          "test_auc": summary["test"].get("auc")}


def _run_child(mode: str) -> dict[str, object]:
  args = [sys.executable, "-m", "saliency_jax.data.memory_check", f"--child={mode}",
          f"--root={_ROOT.value}", f"--patients={_PATIENTS.value}",
          f"--image_size={_IMAGE_SIZE.value}", f"--steps={_STEPS.value}"]
  done = subprocess.run(args, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
  del argv
  if _CHILD.value:
    record = _child(_CHILD.value)
    record.update(_peak_rss_bytes())
    print(json.dumps(record), flush=True)
    return
  marker = os.path.join(_ROOT.value, "rsna", ".written")
  if not os.path.exists(marker):
    print(f"wrote {_PATIENTS.value} mock DICOMs: {_run_child('tree')}", flush=True)
    open(marker, "w").close()
  report = {"patients": _PATIENTS.value, "image_size": _IMAGE_SIZE.value,
            "steps": _STEPS.value, "build": _run_child("build")}
  report["streamed"] = _run_child("streamed")
  if _COMPARE.value:
    report["in_memory"] = _run_child("in_memory")
  split_bytes = report["build"]["train_float32_bytes"]
  for mode in ("streamed", "in_memory"):
    if mode in report:
      report[mode]["peak_rss_over_train_split"] = round(
          report[mode]["peak_rss_bytes"] / split_bytes, 2)
  print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
  app.run(main)
