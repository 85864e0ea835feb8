"""Checks shared by the tests of the manual-download builders."""

from __future__ import annotations

import csv
import math

import numpy as np


def coverage_by_repetition(mask, size):
  """Independent reference for `manual.resize_mask`: on the common grid of
  lcm(H, size) x lcm(W, size) cells (np.repeat), each output pixel is a block of
  cells; returns (covered cells per output pixel, cells per output pixel)."""
  mask = np.asarray(mask, bool)
  height, width = mask.shape
  rows, cols = math.lcm(height, size), math.lcm(width, size)
  fine = np.repeat(np.repeat(mask, rows // height, axis=0), cols // width, axis=1)
  block_h, block_w = rows // size, cols // size
  covered = fine.reshape(size, block_h, size, block_w).sum(axis=(1, 3), dtype=np.int64)
  return covered, block_h * block_w


def area_resized(mask, size):
  """(size, size): a pixel is set iff at least half of its area was (exact counts)."""
  covered, cells = coverage_by_repetition(mask, size)
  return 2 * covered >= cells


def check_against_truth(splits, truth, *, with_boxes=True):
  """Every example equals the generator's truth: pixels, label, boxes, mask, header."""
  seen = []
  for arrays in splits.values():
    for i, image_id in enumerate(arrays["id"]):
      t = truth[image_id]
      seen.append(image_id)
      # uint16 storage rounds to 1/65535; the decoder itself is exact.
      np.testing.assert_allclose(arrays["image"][i, ..., 0], t["image"], atol=1e-5,
                                 err_msg=image_id)
      assert arrays["label"][i] == t["label"], image_id
      k = int(arrays["num_boxes"][i])
      if with_boxes:
        assert k == len(t["boxes"]), image_id
        np.testing.assert_allclose(arrays["boxes"][i, :k], t["boxes"], err_msg=image_id)
      np.testing.assert_array_equal(arrays["mask"][i], t["mask"], err_msg=image_id)
      if "view_position" in arrays:
        assert arrays["view_position"][i] == t["view_position"]
        assert arrays["sex"][i] == t["sex"]
        np.testing.assert_equal(float(arrays["age"][i]), t["age"])
  return seen


def read_rows(path):
  """A CSV file's rows (lists of strings), header included."""
  with open(path, newline="") as f:
    return list(csv.reader(f))


def write_rows(path, rows):
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)
