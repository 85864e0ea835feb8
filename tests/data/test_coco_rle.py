"""COCO run-length masks (pycocotools' format) and masks.json in `image_folder`."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from saliency_jax.data import coco_rle, manual, mock_downloads


def test_encode_equals_a_string_derived_by_hand_from_maskapi():
  # Column-major pixels 0,0,1 | 1,1,0 | 0,1,0 -> runs [2, 3, 2, 1, 1] (zeros first).
  # rleToString: counts 0..2 as they are: 2 -> '2' (48 + 2), 3 -> '3', 2 -> '2';
  # count 3: 1 - cnts[1] = -2 -> 5-bit group 0b11110 = 30 (sign bit 0x10 set,
  # and -2 >> 5 = -1, so no more groups) -> chr(48 + 30) = 'N';
  # count 4: 1 - cnts[2] = -1 -> group 31 -> 'O'.
  mask = np.array([[0, 1, 0], [0, 1, 1], [1, 0, 0]], bool)
  assert coco_rle.encode(mask) == {"size": [3, 3], "counts": "232NO"}
  # An all-zero 4 x 5: one run of 20 = 0b10100. Its low group 20 has bit 0x10
  # set, so a second (zero) group must follow to keep it positive:
  # chr(48 + (20 | 0x20)) = 'd', then chr(48 + 0) = '0'.
  assert coco_rle.encode(np.zeros((4, 5), bool)) == {"size": [4, 5], "counts": "d0"}
  np.testing.assert_array_equal(coco_rle.decode({"size": [3, 3], "counts": "232NO"}), mask)
  assert not coco_rle.decode({"size": [4, 5], "counts": "d0"}).any()


def test_large_counts_and_deltas_round_trip_through_the_string_form():
  # Runs of thousands of pixels need several 5-bit groups, and the deltas
  # against the run two back go negative.
  mask = np.zeros((97, 131), bool)
  mask[:, 3:90] = True
  mask[40, 5] = False
  mask[96, 130] = True
  rle = coco_rle.encode(mask)
  np.testing.assert_array_equal(coco_rle.decode(rle), mask)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (13, 5), (32, 33)])
def test_round_trip_on_random_and_extreme_masks(shape):
  rng = np.random.default_rng(sum(shape))
  cases = [rng.random(shape) < p for p in (0.1, 0.5, 0.9)]
  single = np.zeros(shape, bool)
  single[shape[0] // 2, shape[1] - 1] = True
  cases += [np.zeros(shape, bool), np.ones(shape, bool), single]
  for mask in cases:
    rle = coco_rle.encode(mask)
    assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(coco_rle.decode(rle), mask)
    assert json.loads(json.dumps(rle)) == rle


def test_uncompressed_counts_decode_column_major():
  # Runs 0:1, 1:2, 0:3 over a 2 x 3 mask in Fortran order.
  mask = coco_rle.decode({"size": [2, 3], "counts": [1, 2, 3]})
  np.testing.assert_array_equal(mask, [[False, True, False], [True, False, False]])
  assert coco_rle.decode(coco_rle.encode(mask)).tolist() == mask.tolist()
  # A mask starting with 1s has an empty first run of 0s.
  assert coco_rle.encode(np.ones((2, 2)))["counts"] == coco_rle.encode(
      coco_rle.decode({"size": [2, 2], "counts": [0, 4]}))["counts"]


@pytest.mark.parametrize("rle, match", [
    ({"size": [2, 2], "counts": [1, 2]}, "add up to 3 pixels, size 2 x 2 has 4"),
    ({"size": [2, 2], "counts": [5, -1]}, "negative run"),
    ({"size": [2], "counts": "4"}, r"rle\['size'\] must be \[h, w\]"),
    ({"size": [2, 2], "counts": "4~"}, "outside COCO's alphabet"),
    ({"size": [2, 2], "counts": "d"}, "ends inside a count"),
    ({"counts": "4"}, "rle must be a dict"),
])
def test_bad_rle_names_what_is_wrong(rle, match):
  with pytest.raises(ValueError, match=match):
    coco_rle.decode(rle)


def test_write_masks_then_read_masks(tmp_path):
  rng = np.random.default_rng(0)
  masks = {"img1": {"Edema": rng.random((5, 7)) < 0.3, "Cardiomegaly": np.ones((5, 7))},
           "img2": {"Edema": np.zeros((4, 4), bool)}}
  path = tmp_path / "pred.json"
  coco_rle.write_masks(path, masks)
  read = coco_rle.read_masks(path)
  assert set(read) == {"img1", "img2"} and set(read["img1"]) == {"Edema", "Cardiomegaly"}
  for image_id, named in masks.items():
    for name, mask in named.items():
      np.testing.assert_array_equal(coco_rle.decode(read[image_id][name]), mask != 0)


def _png_tree_to_json(root, *, pathology_column: bool) -> dict:
  """Replaces masks/<id>.png by masks.json (two pathologies per image if chosen by column)."""
  data = {}
  for name in sorted(os.listdir(root / "masks")):
    mask = np.asarray(Image.open(root / "masks" / name)) > 0
    entry = {"Edema": coco_rle.encode(mask)}
    if pathology_column:
      entry["Atelectasis"] = coco_rle.encode(~mask)
    data[name.removesuffix(".png")] = entry
  shutil.rmtree(root / "masks")
  with open(root / "masks.json", "w") as f:
    json.dump(data, f)
  if pathology_column:
    with open(root / "labels.csv", newline="") as f:
      rows = list(csv.reader(f))
    rows[0].append("pathology")
    for row in rows[1:]:
      row.append("Edema")
    with open(root / "labels.csv", "w", newline="") as f:
      csv.writer(f).writerows(rows)
  return data


@pytest.mark.parametrize("pathology_column", [False, True])
def test_image_folder_masks_json_equals_the_png_route(build, tmp_path, pathology_column):
  png, rle = tmp_path / "png", tmp_path / "rle"
  mock_downloads.write_image_folder(str(png), num_images=12, annotation="masks")
  shutil.copytree(png, rle)
  _png_tree_to_json(rle, pathology_column=pathology_column)
  want, _ = build("image_folder", png)
  got, meta = build("image_folder", rle)
  assert meta["num_skipped"] == 0
  for split in want:
    assert list(got[split]["id"]) == list(want[split]["id"])
    np.testing.assert_array_equal(got[split]["mask"], want[split]["mask"])
    np.testing.assert_array_equal(got[split]["label"], want[split]["label"])
  assert sum(np.asarray(a["mask"]).any(axis=(1, 2)).sum() for a in got.values()) > 0


def test_masks_json_missing_image_or_pathology_is_named(build, tmp_path):
  root = tmp_path / "mine"
  truth = mock_downloads.write_image_folder(str(root), num_images=12, annotation="masks")
  data = _png_tree_to_json(root, pathology_column=False)
  positives = sorted(i for i, t in truth.items() if t["label"] == 1)
  first = data.pop(positives[0])
  # One mask of another name is taken (no pathology column); two are ambiguous.
  data[positives[1]] = {"Pneumothorax": data[positives[1]]["Edema"]}
  data[positives[2]] = {"Edema": data[positives[2]]["Edema"],
                        "Atelectasis": data[positives[2]]["Edema"]}
  with open(root / "masks.json", "w") as f:
    json.dump(data, f)
  with pytest.raises(manual.BadInputError, match=f"masks.json: no entry for positive "
                     f"image {positives[0]}"):
    build("image_folder", root)
  splits, meta = build("image_folder", root, on_bad_input="skip")
  assert meta["skipped"] == {"missing_mask": 2}
  kept = {i for a in splits.values() for i in a["id"]}
  assert kept == set(truth) - {positives[0], positives[2]}
  # With a pathology column the Pneumothorax-only entry lacks 'Edema'.
  data[positives[0]] = first
  with open(root / "masks.json", "w") as f:
    json.dump(data, f)
  with open(root / "labels.csv", newline="") as f:
    rows = list(csv.reader(f))
  rows = [rows[0] + ["pathology"]] + [row + ["Edema"] for row in rows[1:]]
  with open(root / "labels.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  with pytest.raises(manual.BadInputError, match=f"{positives[1]} has no 'Edema' mask "
                     r"\(it has \['Pneumothorax'\]\)"):
    build("image_folder", root)
