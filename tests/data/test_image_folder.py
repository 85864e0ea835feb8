"""The bring-your-own `image_folder` builder: PNG or DICOM, boxes or mask PNGs."""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
from real_data_checks import check_against_truth
from PIL import Image

from saliency_jax.data import manual, mock_downloads


@pytest.mark.parametrize("annotation, image_format", [("boxes", "png"), ("masks", "png"),
                                                      ("boxes", "dcm")])
def test_build_equals_the_generator(annotation, image_format, build, tmp_path):
  root = tmp_path / "mine"
  truth = mock_downloads.write_image_folder(str(root), num_images=20, annotation=annotation,
                                            image_format=image_format)
  splits, meta = build("image_folder", root)
  seen = check_against_truth(splits, truth, with_boxes=annotation == "boxes")
  assert sorted(seen) == sorted(truth) and meta["num_skipped"] == 0


def test_patient_ids_keep_a_patients_images_in_one_split(build, tmp_path):
  root = tmp_path / "mine"
  mock_downloads.write_image_folder(str(root), num_images=30)
  path = root / "labels.csv"
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  rows[0].append("patient_id")
  for row in rows[1:]:
    row.append(f"patient{int(row[0][3:]) // 3}")  # three images per patient
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)
  splits, _ = build("image_folder", root)
  split_of = {i: s for s, a in splits.items() for i in a["id"]}
  for p in range(10):
    assert len({split_of[f"img{3 * p + k:04d}"] for k in range(3)}) == 1


def test_mask_of_another_size_and_missing_mask(build, tmp_path):
  root = tmp_path / "mine"
  truth = mock_downloads.write_image_folder(str(root), num_images=20, annotation="masks")
  positives = sorted(i for i, t in truth.items() if t["label"] == 1)
  Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / f"{positives[0]}.png")
  with pytest.raises(manual.BadInputError, match=f"{positives[0]}.png: mask is 10 x 10"):
    build("image_folder", root)
  os.remove(root / "masks" / f"{positives[1]}.png")
  splits, meta = build("image_folder", root, on_bad_input="skip")
  assert meta["skipped"] == {"mask_shape": 1, "missing_mask": 1}
  kept = {i for a in splits.values() for i in a["id"]}
  assert kept == set(truth) - set(positives[:2])


def test_label_other_than_0_or_1_names_the_row(build, tmp_path):
  root = tmp_path / "mine"
  mock_downloads.write_image_folder(str(root), num_images=20)
  with open(root / "labels.csv", "a") as f:
    f.write("img0000,,,,,2\n")
  with pytest.raises(manual.BadInputError, match=r"labels.csv:\d+: img0000: label must "
                     "be 0 or 1"):
    build("image_folder", root)


def test_a_folder_without_boxes_needs_masks(build, tmp_path):
  root = tmp_path / "mine"
  mock_downloads.write_image_folder(str(root), num_images=20, annotation="masks")
  shutil.rmtree(root / "masks")
  with pytest.raises(manual.BadInputError, match="masks: missing"):
    build("image_folder", root)
