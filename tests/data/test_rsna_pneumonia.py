"""The RSNA Pneumonia builder on mock trees in the Kaggle layout, good and bad."""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
import real_data_checks
from real_data_checks import check_against_truth
from saliency_jax.data import manual, mock_downloads, synthetic
from saliency_jax.data.rsna_pneumonia import rsna_pneumonia as rsna


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("rsna")
  return root, mock_downloads.write_rsna(str(root), num_patients=40)


def test_the_mock_tree_covers_the_encodings_and_box_counts(tree):
  root, truth = tree
  counts = {len(t["boxes"]) for t in truth.values()}
  assert counts == {0, 1, 2, 3, 4}
  kinds = set()
  for patient in truth:
    ds = pydicom.dcmread(os.path.join(root, rsna.IMAGES, f"{patient}.dcm"))
    kinds.add((ds.PhotometricInterpretation, ds.BitsStored, "RescaleSlope" in ds))
  assert kinds == {("MONOCHROME2", 8, False), ("MONOCHROME1", 8, False),
                   ("MONOCHROME2", 12, True), ("MONOCHROME1", 12, True)}


def test_build_equals_the_generator(tree, build):
  root, truth = tree
  splits, meta = build("rsna_pneumonia", root)
  seen = check_against_truth(splits, truth)
  for arrays in splits.values():
    assert all(c in (rsna.OPACITY, rsna.NORMAL) for c in arrays["class"])
    for i, image_id in enumerate(arrays["id"]):
      assert arrays["class"][i] == truth[image_id]["class"]
  others = [p for p, t in truth.items() if t["class"] == rsna.OTHER]
  assert sorted(seen) == sorted(set(truth) - set(others))
  assert meta["excluded_by_class"] == {rsna.OTHER: len(others)} and meta["num_skipped"] == 0
  ids = [set(a["id"]) for a in splits.values()]
  assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_classes_all_keeps_the_other_negatives(tree, build):
  root, truth = tree
  splits, meta = build("rsna_pneumonia", root, classes="all")
  assert sorted(check_against_truth(splits, truth)) == sorted(truth)
  assert meta["excluded_by_class"] == {}


def test_resizing_scales_boxes_and_rasterizes_them(tree, build):
  root, truth = tree
  splits, _ = build("rsna_pneumonia", root, image_size=32, classes="all")
  for arrays in splits.values():
    for i, image_id in enumerate(arrays["id"]):
      t, k = truth[image_id], int(arrays["num_boxes"][i])
      np.testing.assert_allclose(arrays["boxes"][i, :k], t["boxes"] / 2, rtol=1e-6)
      np.testing.assert_array_equal(
          arrays["mask"][i], synthetic.rasterize_boxes(t["boxes"] / 2, k, 32, 32))
      np.testing.assert_allclose(arrays["image"][i, ..., 0],
                                 manual.resize_image(t["image"], 32), atol=1e-5)


def test_splits_are_identical_across_builds_and_worker_counts(tree, build):
  root, _ = tree
  serial, _ = build("rsna_pneumonia", root, split_seed=5)
  parallel, _ = build("rsna_pneumonia", root, split_seed=5, num_workers=2)
  for split in manual.SPLITS:
    for key in ("id", "image", "boxes", "mask", "label"):
      np.testing.assert_array_equal(serial[split][key], parallel[split][key])
  other, _ = build("rsna_pneumonia", root, split_seed=6)
  assert list(other["test"]["id"]) != list(serial["test"]["id"])


def test_split_files(tree, build, tmp_path):
  root, truth = tree
  ids = sorted(p for p, t in truth.items() if t["class"] != rsna.OTHER)
  split_dir = tmp_path / "splits"
  split_dir.mkdir()
  parts = {"train": ids[:-6], "validation": ids[-6:-3], "test": ids[-3:]}
  for split, part in parts.items():
    (split_dir / f"{split}.txt").write_text("\n".join(part) + "\n")
  splits, meta = build("rsna_pneumonia", root, split_dir=str(split_dir), on_bad_input="skip")
  for split, part in parts.items():
    assert sorted(splits[split]["id"]) == part
  # The "No Lung Opacity / Not Normal" patients are in no file: counted, not dropped.
  assert meta["skipped"] == {"not_in_split_files": len(truth) - len(ids)}


# --- bad input -------------------------------------------------------------------------


def _copy_tree(src, dst):
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(src, dst)
  return dst


def _first(truth, *, positive):
  return next(p for p, t in sorted(truth.items())
              if (t["label"] == 1) == positive and t["class"] != rsna.OTHER)


def _corrupt(root, truth):
  patient = _first(truth, positive=True)
  path = os.path.join(root, rsna.IMAGES, f"{patient}.dcm")
  with open(path, "wb") as f:
    f.write(os.urandom(300))
  return patient, "unreadable_image", f"{patient}.dcm"


def _truncate(root, truth):
  patient = _first(truth, positive=False)
  path = os.path.join(root, rsna.IMAGES, f"{patient}.dcm")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  return patient, "unreadable_image", f"{patient}.dcm"


def _no_pixels(root, truth):
  patient = _first(truth, positive=True)
  path = os.path.join(root, rsna.IMAGES, f"{patient}.dcm")
  ds = pydicom.dcmread(path)
  del ds.PixelData
  ds.save_as(path)
  return patient, "unreadable_image", f"{patient}.dcm"


def _colour(root, truth):
  patient = _first(truth, positive=False)
  path = os.path.join(root, rsna.IMAGES, f"{patient}.dcm")
  ds = pydicom.dcmread(path)
  ds.PhotometricInterpretation = "PALETTE COLOR"
  ds.save_as(path)
  return patient, "unreadable_image", "PALETTE COLOR"


def _edit_labels(root, truth, edit):
  path = os.path.join(root, rsna.LABELS_CSV)
  rows = real_data_checks.read_rows(path)
  patient = _first(truth, positive=True)
  line = next(i for i, r in enumerate(rows) if r[0] == patient)
  edit(rows, line)
  real_data_checks.write_rows(path, rows)
  return patient, line + 1


def _non_numeric(root, truth):
  patient, line = _edit_labels(root, truth, lambda rows, i: rows[i].__setitem__(1, "abc"))
  return patient, "bad_csv_row", f"{rsna.LABELS_CSV}:{line}: {patient}: non-numeric"


def _zero_width(root, truth):
  patient, line = _edit_labels(root, truth, lambda rows, i: rows[i].__setitem__(3, "0"))
  return patient, "bad_csv_row", f"{rsna.LABELS_CSV}:{line}: .*must be positive"


def _outside(root, truth):
  patient, _ = _edit_labels(root, truth, lambda rows, i: rows[i].__setitem__(1, "60"))
  return patient, "box_outside_image", f"{patient}.dcm: box .* outside the 64 x 64 image"


def _duplicate(root, truth):
  patient, line = _edit_labels(root, truth, lambda rows, i: rows.insert(i, list(rows[i])))
  return patient, "duplicate_row", f"{rsna.LABELS_CSV}:{line + 1}: duplicate row"


def _missing_file(root, truth):
  patient = _first(truth, positive=False)
  os.remove(os.path.join(root, rsna.IMAGES, f"{patient}.dcm"))
  return patient, "missing_image", f"{patient}.dcm: file missing"


def _unnamed_file(root, truth):
  patient = _first(truth, positive=True)
  for name in (rsna.LABELS_CSV, rsna.CLASS_CSV):
    path = os.path.join(root, name)
    real_data_checks.write_rows(
        path, [r for r in real_data_checks.read_rows(path) if r[0] != patient])
  return patient, "unlabelled_image", f"{patient}.dcm: no row of {rsna.LABELS_CSV}"


BAD_INPUTS = {"corrupt": _corrupt, "truncated": _truncate, "no_pixel_data": _no_pixels,
              "photometric": _colour, "non_numeric": _non_numeric, "zero_width": _zero_width,
              "outside_image": _outside, "duplicate_row": _duplicate,
              "missing_file": _missing_file, "unnamed_file": _unnamed_file}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_stops_the_build_or_is_skipped_and_counted(case, tree, build, tmp_path):
  root = _copy_tree(tree[0], tmp_path / "bad")
  truth = tree[1]
  patient, kind, message = BAD_INPUTS[case](root, truth)
  with pytest.raises(manual.BadInputError, match=message):
    build("rsna_pneumonia", root, classes="all", fresh=False)
  # The failed build left nothing that a rerun could mistake for a dataset.
  data_dir = tmp_path / "tfds0"
  leftovers = [d for d, _, files in os.walk(data_dir) if "dataset_info.json" in files
               or "incomplete" in os.path.basename(d)]
  assert leftovers == []
  splits, meta = build("rsna_pneumonia", root, classes="all", on_bad_input="skip")
  assert meta["skipped"] == {kind: 1} and meta["num_skipped"] == 1
  kept = [i for a in splits.values() for i in a["id"]]
  assert patient not in kept and len(kept) == len(truth) - 1


def test_a_missing_column_is_an_error_in_both_modes(tree, build, tmp_path):
  root = _copy_tree(tree[0], tmp_path / "bad")
  path = os.path.join(root, rsna.LABELS_CSV)
  real_data_checks.write_rows(path, [r[:5] for r in real_data_checks.read_rows(path)])
  for mode in manual.ON_BAD_INPUT:
    with pytest.raises(manual.BadInputError, match=r"missing column\(s\) \['Target'\]"):
      build("rsna_pneumonia", root, on_bad_input=mode)


def test_an_empty_split_is_an_error(tree, build):
  with pytest.raises(manual.BadInputError, match="split 'test' has no examples"):
    build("rsna_pneumonia", tree[0], split_fractions=(0.9, 0.1, 0.0))


def test_missing_manual_dir_names_the_key(build, tmp_path):
  with pytest.raises(ValueError, match="config.manual_dir"):
    build("rsna_pneumonia", "")
  with pytest.raises(manual.BadInputError, match="stage_2_train_labels.csv: missing"):
    build("rsna_pneumonia", tmp_path)
