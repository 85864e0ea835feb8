"""Figure and report pieces for data without boxes, and the data-provenance lines."""

import numpy as np
from PIL import Image

from saliency_jax.report import figures, markdown


def _grid(path, **kwargs):
  image = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
  maps = np.zeros((1, 2, 32, 32), np.float32)
  figures.map_grid(str(path), image, np.zeros((4, 4)), 0, maps, ["gradient"],
                   ["trained", "random"], "t", **kwargs)
  return np.asarray(Image.open(path).convert("RGB"), np.int32)


def test_a_mask_is_outlined_when_there_are_no_boxes(tmp_path):
  mask = np.zeros((32, 32), bool)
  mask[8:20, 10:24] = True
  plain = _grid(tmp_path / "plain.png")
  empty = _grid(tmp_path / "empty.png", mask=np.zeros((32, 32), bool))
  outlined = _grid(tmp_path / "mask.png", mask=mask)
  assert plain.shape == outlined.shape
  assert np.array_equal(plain, empty)  # an empty mask draws nothing
  changed = np.any(plain != outlined, axis=-1)
  # The outline lies in the image column (left part), not over the maps.
  columns = np.flatnonzero(changed.any(axis=0))
  assert columns.size and columns.max() < plain.shape[1] // 2


def test_data_lines_report_skips_and_class_exclusions():
  assert markdown.data_lines({}) == []
  lines = markdown.data_lines({"data": {
      "classes": "opacity_vs_normal", "excluded_by_class": {"No Lung Opacity / Not Normal": 7},
      "on_bad_input": "skip", "skipped": {"missing_image": 2, "bad_csv_row": 1},
      "num_skipped": 3}})
  assert lines == [
      "- Left out by `real_data.classes=opacity_vs_normal`: No Lung Opacity / Not Normal: 7",
      "- Bad inputs skipped when the dataset was built (`on_bad_input=skip`): 3 "
      "(bad_csv_row: 1, missing_image: 2)"]
