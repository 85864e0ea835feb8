"""The SIIM-ACR Pneumothorax builder on mock trees in the original layout."""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
from real_data_checks import area_resized, check_against_truth

from saliency_jax.data import manual, mock_downloads
from saliency_jax.data.siim_acr_pneumothorax import siim_acr_pneumothorax as siim


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("siim")
  return root, mock_downloads.write_siim(str(root), num_images=30)


def _rows(root):
  with open(os.path.join(root, siim.RLE_CSV), newline="") as f:
    return list(csv.reader(f))


def _write_rows(root, rows):
  with open(os.path.join(root, siim.RLE_CSV), "w", newline="") as f:
    csv.writer(f).writerows(rows)


def test_build_equals_the_decoded_rle(tree, build):
  root, truth = tree
  rows = _rows(root)
  assert rows[0] == ["ImageId", " EncodedPixels"]
  per_image = [r[0] for r in rows[1:]]
  assert max(per_image.count(i) for i in set(per_image)) > 1  # several rows per image
  splits, meta = build("siim_acr_pneumothorax", root)
  seen = check_against_truth(splits, truth, with_boxes=False)
  assert sorted(seen) == sorted(truth) and meta["num_skipped"] == 0
  # Nested folders: the files are three levels below dicom-images-train.
  depth = {len(os.path.relpath(d, os.path.join(root, siim.IMAGES)).split(os.sep))
           for d, _, files in os.walk(os.path.join(root, siim.IMAGES)) if files}
  assert depth == {2}


def test_resizing_keeps_pixels_with_at_least_half_their_area(tree, build):
  root, truth = tree
  splits, _ = build("siim_acr_pneumothorax", root, image_size=32)
  for arrays in splits.values():
    for i, image_id in enumerate(arrays["id"]):
      np.testing.assert_array_equal(arrays["mask"][i],
                                    area_resized(truth[image_id]["mask"], 32))
      assert arrays["num_boxes"][i] == 0


def _overrun(root, truth):
  rows = _rows(root)
  i = next(k for k, r in enumerate(rows) if k and r[1].strip() != "-1")
  rows[i][1] = " 4000 200"  # ends beyond 64 x 64 = 4096 pixels
  _write_rows(root, rows)
  return rows[i][0], "bad_rle", "beyond the 64 x 64 image"


def _duplicate(root, truth):
  rows = _rows(root)
  rows.insert(2, list(rows[1]))
  _write_rows(root, rows)
  return rows[1][0], "duplicate_row", f"{siim.RLE_CSV}:3: duplicate row"


def _missing_file(root, truth):
  image_id = sorted(truth)[3]
  for d, _, files in os.walk(os.path.join(root, siim.IMAGES)):
    if f"{image_id}.dcm" in files:
      os.remove(os.path.join(d, f"{image_id}.dcm"))
  return image_id, "missing_image", f"{image_id}.dcm: no file"


def _unnamed_file(root, truth):
  rows = _rows(root)
  image_id = rows[1][0]
  _write_rows(root, [r for r in rows if r[0] != image_id])
  return image_id, "unlabelled_image", f"{image_id}.dcm: no row of {siim.RLE_CSV}"


BAD_INPUTS = {"rle_overrun": _overrun, "duplicate_row": _duplicate,
              "missing_file": _missing_file, "unnamed_file": _unnamed_file}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(case, tree, build, tmp_path):
  root = shutil.copytree(tree[0], tmp_path / "bad")
  image_id, kind, message = BAD_INPUTS[case](root, tree[1])
  with pytest.raises(manual.BadInputError, match=message):
    build("siim_acr_pneumothorax", root)
  splits, meta = build("siim_acr_pneumothorax", root, on_bad_input="skip")
  assert meta["skipped"] == {kind: 1}
  kept = [i for a in splits.values() for i in a["id"]]
  assert image_id not in kept and len(kept) == len(tree[1]) - 1


def test_minus_one_and_runs_for_one_image_is_refused(tree, build, tmp_path):
  root = shutil.copytree(tree[0], tmp_path / "bad")
  rows = _rows(root)
  positive = next(r[0] for r in rows[1:] if r[1].strip() != "-1")
  _write_rows(root, rows + [[positive, " -1"]])
  with pytest.raises(manual.BadInputError, match=f"image {positive} has a -1 row and RLE rows"):
    build("siim_acr_pneumothorax", root)
