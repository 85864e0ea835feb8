"""Bad real-data inputs reach the command line as one `error:` line naming the file or row.

Each case damages a copy of a small mock tree (64 px films, as in tests/data/)
and runs ``python -m saliency_jax.main --config=configs/train.py`` on it; a
build stops at its first bad input, so every kind needs its own run. The runs
go side by side in a module fixture; each test checks one: exit code 2, the
last stderr line is ``error: ...`` naming the file (or ``file:line``), and no
traceback.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import real_data_checks
from saliency_jax.data import mock_downloads
from saliency_jax.data.rsna_pneumonia import rsna_pneumonia as rsna
from saliency_jax.data.siim_acr_pneumothorax import siim_acr_pneumothorax as siim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _line_of(path, image_id, *, box=False):
  """(1-based line, row) of the first row of ``image_id`` (with a box if asked)."""
  return next((i + 1, r) for i, r in enumerate(real_data_checks.read_rows(path))
              if r[0] == image_id and (not box or r[1] != ""))


def _rsna_positive(truth):
  return next(p for p, t in sorted(truth.items()) if t["label"] == 1)


def _siim_file(root, image_id):
  for folder, _, files in os.walk(os.path.join(root, siim.IMAGES)):
    if f"{image_id}.dcm" in files:
      return os.path.join(folder, f"{image_id}.dcm")
  raise AssertionError(image_id)


# Each case: (tree, damage(root, truth) -> ({config key: value}, what the error line names)).


def _corrupt_dicom(root, truth):
  path = os.path.join(root, rsna.IMAGES, f"{_rsna_positive(truth)}.dcm")
  with open(path, "wb") as f:
    f.write(os.urandom(300))
  # Decoded by a pool of worker processes: the error crosses the process boundary.
  return {"real_data.num_workers": "2"}, f"{path}: "


def _truncated_dicom(root, truth):
  path = _siim_file(root, sorted(truth)[2])
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  return {}, f"{path}: "


def _missing_column(root, truth):
  path = os.path.join(root, rsna.LABELS_CSV)
  real_data_checks.write_rows(path, [r[:5] for r in real_data_checks.read_rows(path)])
  return {}, f"{path}: missing column(s) ['Target']"


def _non_numeric_box(root, truth):
  path = os.path.join(root, rsna.LABELS_CSV)
  line, _ = _line_of(path, _rsna_positive(truth), box=True)
  rows = real_data_checks.read_rows(path)
  rows[line - 1][2] = "twelve"
  real_data_checks.write_rows(path, rows)
  return {}, f"{path}:{line}: {_rsna_positive(truth)}: non-numeric box value"


def _non_positive_box(root, truth):
  path = os.path.join(root, "labels.csv")
  image_id = next(i for i, t in sorted(truth.items()) if len(t["boxes"]))
  line, _ = _line_of(path, image_id, box=True)
  rows = real_data_checks.read_rows(path)
  rows[line - 1][3] = "0"  # width
  real_data_checks.write_rows(path, rows)
  return {}, f"{path}:{line}: {image_id}: box width and height must be positive"


def _box_outside(root, truth):
  path = os.path.join(root, rsna.LABELS_CSV)
  patient = _rsna_positive(truth)
  line, _ = _line_of(path, patient, box=True)
  rows = real_data_checks.read_rows(path)
  rows[line - 1][1] = "60"  # x + width > 64
  real_data_checks.write_rows(path, rows)
  return {}, (f"{os.path.join(root, rsna.IMAGES, patient)}.dcm: box (x=60, "
              f"y={float(rows[line - 1][2]):g}")


def _missing_image(root, truth):
  image_id = sorted(truth)[3]
  path = _siim_file(root, image_id)
  os.remove(path)
  return {}, f"{os.path.join(root, siim.IMAGES, image_id)}.dcm: no file"


def _duplicate_row(root, truth):
  path = os.path.join(root, siim.RLE_CSV)
  rows = real_data_checks.read_rows(path)
  rows.insert(2, list(rows[1]))
  real_data_checks.write_rows(path, rows)
  return {}, f"{path}:3: duplicate row"


def _rle_overrun(root, truth):
  path = os.path.join(root, siim.RLE_CSV)
  rows = real_data_checks.read_rows(path)
  index = next(k for k, r in enumerate(rows) if k and r[1].strip() != "-1")
  rows[index][1] = " 4000 200"  # ends beyond 64 x 64 = 4096 pixels
  real_data_checks.write_rows(path, rows)
  return {}, f"{path}:{index + 1}: RLE of {rows[index][0]}"


def _mask_size(root, truth):
  image_id = next(i for i, t in sorted(truth.items()) if t["label"] == 1)
  path = os.path.join(root, "masks", f"{image_id}.png")
  Image.fromarray(np.zeros((10, 10), np.uint8)).save(path)
  return {}, f"{path}: mask is 10 x 10"


def _empty_split(root, truth):
  return {"real_data.split_fractions": "(0.9, 0.1, 0.0)"}, (
      f"{root} (rsna_pneumonia): split 'test' has no examples")


def _id_in_two_split_files(root, truth):
  split_dir = os.path.join(os.path.dirname(root), os.path.basename(root) + "_splits")
  os.makedirs(split_dir)
  ids = sorted(truth)
  for split, part in (("train", ids[:-4]), ("validation", ids[-4:-2]),
                      ("test", [ids[0]] + ids[-2:])):
    with open(os.path.join(split_dir, f"{split}.txt"), "w") as f:
      f.write("\n".join(part) + "\n")
  return ({"real_data.split_dir": split_dir},
          f"{os.path.join(split_dir, 'test.txt')}:1: id '{ids[0]}' is already in the train")


def _no_manual_dir(root, truth):
  missing = os.path.join(root, "not_there")
  return {"manual_dir": missing}, f"config.manual_dir='{missing}'"


CASES = {
    "corrupt_dicom": ("rsna_pneumonia", _corrupt_dicom),
    "truncated_dicom": ("siim_acr_pneumothorax", _truncated_dicom),
    "missing_column": ("rsna_pneumonia", _missing_column),
    "non_numeric_box": ("rsna_pneumonia", _non_numeric_box),
    "non_positive_box": ("image_folder_boxes", _non_positive_box),
    "box_outside_image": ("rsna_pneumonia", _box_outside),
    "missing_image": ("siim_acr_pneumothorax", _missing_image),
    "duplicate_row": ("siim_acr_pneumothorax", _duplicate_row),
    "rle_overrun": ("siim_acr_pneumothorax", _rle_overrun),
    "mask_png_size": ("image_folder_masks", _mask_size),
    "empty_split": ("rsna_pneumonia", _empty_split),
    "id_in_two_split_files": ("siim_acr_pneumothorax", _id_in_two_split_files),
    "no_manual_dir": ("image_folder_boxes", _no_manual_dir),
}
TREES = {
    "rsna_pneumonia": lambda root: mock_downloads.write_rsna(root, num_patients=12),
    "siim_acr_pneumothorax": lambda root: mock_downloads.write_siim(root, num_images=10),
    "image_folder_boxes": lambda root: mock_downloads.write_image_folder(
        root, num_images=10, annotation="boxes"),
    "image_folder_masks": lambda root: mock_downloads.write_image_folder(
        root, num_images=10, annotation="masks"),
}


def _run(case, tmp, tree_root):
  tree, damage = CASES[case]
  root = os.path.join(tmp, case)
  shutil.copytree(tree_root, root)
  overrides, names = damage(root, TRUTH[tree])
  keys = {"dataset": tree.removesuffix("_boxes").removesuffix("_masks"), "manual_dir": root,
          "data_dir": os.path.join(tmp, case + "_tfds"), "real_data.classes": "all",
          "real_data.num_workers": "0", **overrides}
  args = [f"--config.{k}={v}" for k, v in keys.items()]
  args.append(f"--workdir={os.path.join(tmp, case + '_work')}")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "saliency_jax.main", "--config=configs/train.py", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  return result, names


TRUTH = {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """case -> (CompletedProcess, what its error line must name); all cases run at once."""
  tmp = str(tmp_path_factory.mktemp("cli_data_errors"))
  for tree, write in TREES.items():
    TRUTH[tree] = write(os.path.join(tmp, "trees", tree))
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    futures = {case: pool.submit(_run, case, tmp, os.path.join(tmp, "trees", tree))
               for case, (tree, _) in CASES.items()}
    return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_error_line(case, runs):
  result, names = runs[case]
  stderr = result.stderr
  assert "Traceback" not in stderr, stderr[-3000:]
  assert result.returncode == 2, stderr[-3000:]
  # Progress bars end their lines with carriage returns: a terminal shows the last one.
  lines = [line.strip() for line in re.split(r"[\r\n]", stderr) if line.strip()]
  last = lines[-1]
  assert last.startswith("error: "), stderr[-3000:]
  assert names in last, (names, last)
