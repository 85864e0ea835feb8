"""Checks shared by the tests of the manual-download builders."""

from __future__ import annotations

import numpy as np


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
