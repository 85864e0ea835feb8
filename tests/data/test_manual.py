"""Shared pieces of the manual-download builders: RLE, splits, CSV rows, bad-input policy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from saliency_jax.data import manual


def _competition_rle2mask(rle: str, width: int, height: int) -> np.ndarray:
  """SIIM-ACR's own mask_functions.rle2mask, transposed as its notebooks do."""
  mask = np.zeros(width * height)
  array = np.asarray([int(x) for x in rle.split()])
  starts, lengths = array[0::2], array[1::2]
  position = 0
  for index, start in enumerate(starts):
    position += start
    mask[position:position + lengths[index]] = 255
    position += lengths[index]
  return mask.reshape(width, height).T > 0


def test_rle_matches_the_competition_decoder_and_round_trips():
  rng = np.random.default_rng(0)
  for height, width in ((32, 32), (24, 40)):
    mask = rng.random((height, width)) < 0.3
    encoded = manual.encode_rle(mask)
    np.testing.assert_array_equal(manual.decode_rle(encoded, height, width), mask)
    if height == width:  # the competition's helper only works for square images
      np.testing.assert_array_equal(_competition_rle2mask(encoded, width, height), mask)


def test_rle_is_relative_and_column_major():
  # Runs: pixels 2..3, then 1 pixel gap -> 5..6 (flat, column-major on 3 x 3).
  mask = manual.decode_rle("2 2 1 2", 3, 3)
  flat = np.zeros(9, bool)
  flat[[2, 3, 5, 6]] = True
  np.testing.assert_array_equal(mask, flat.reshape(3, 3).T)
  assert not manual.decode_rle("-1", 3, 3).any()
  assert manual.encode_rle(np.zeros((3, 3), bool)) == "-1"


@pytest.mark.parametrize("encoded, message", [
    ("5 3 2 10", "beyond"), ("1 2 3", "pairs"), ("1 -2", "length > 0"),
    ("a 3", "non-integer"), ("", "pairs")])
def test_rle_errors(encoded, message):
  with pytest.raises(ValueError, match=message):
    manual.decode_rle(encoded, 4, 4)


def test_splits_are_deterministic_disjoint_and_sized():
  ids = [f"p{i:03d}" for i in range(101)]
  a = manual.assign_splits(ids, seed=3, fractions=(0.8, 0.1, 0.1))
  b = manual.assign_splits(list(reversed(ids)), seed=3, fractions=(0.8, 0.1, 0.1))
  assert a == b and set(a) == set(ids)
  counts = {s: sum(v == s for v in a.values()) for s in manual.SPLITS}
  assert counts == {"train": 81, "validation": 10, "test": 10}
  assert manual.assign_splits(ids, seed=4) != a
  with pytest.raises(ValueError, match="split_fractions"):
    manual.assign_splits(ids, seed=0, fractions=(0.8, 0.3, 0.1))


def test_split_dir(tmp_path):
  for split, ids in (("train", "a\nb\n"), ("validation", "c\n"), ("test", "d\n\n")):
    (tmp_path / f"{split}.txt").write_text(ids)
  problems = manual.Problems("skip")
  split_of = manual.splits_for(["a", "b", "c", "d", "e"], seed=0, fractions=(1, 0, 0),
                               split_dir=str(tmp_path), problems=problems)
  assert split_of == {"a": "train", "b": "train", "c": "validation", "d": "test"}
  assert problems.counts == {"not_in_split_files": 1}
  (tmp_path / "test.txt").write_text("a\n")
  with pytest.raises(manual.BadInputError, match=r"test.txt:1: id 'a' is already in the train"):
    manual.splits_for(["a", "b", "c"], seed=0, fractions=(1, 0, 0), split_dir=str(tmp_path),
                      problems=manual.Problems("skip"))


def test_problems_raise_or_count():
  with pytest.raises(manual.BadInputError, match=r"f.csv:3: bad value .*on_bad_input=skip"):
    manual.Problems("error").record("bad_csv_row", "f.csv:3", "bad value")
  p = manual.Problems("skip")
  p.record("bad_csv_row", "f.csv:3", "bad value")
  p.record("bad_csv_row", "f.csv:4", "bad value")
  p.record("missing_image", "x.dcm", "missing")
  meta = p.metadata()
  assert meta["skipped"] == {"bad_csv_row": 2, "missing_image": 1}
  assert meta["num_skipped"] == 3 and meta["skipped_examples"][0] == "f.csv:3: bad value"
  with pytest.raises(ValueError, match="on_bad_input='ignore'"):
    manual.Problems("ignore")


@pytest.mark.parametrize("row, message", [
    (dict(x="1", y="2", width="3", height=""), "all empty or all numbers"),
    (dict(x="1", y="two", width="3", height="4"), "non-numeric"),
    (dict(x="1", y="2", width="0", height="4"), "must be positive"),
    (dict(x="1", y="2", width="3", height="nan"), "non-finite")])
def test_parse_box_errors(row, message):
  with pytest.raises(ValueError, match=message):
    manual.parse_box(row)


def test_parse_box_and_outside():
  assert manual.parse_box(dict(x="", y="", width="", height="")) is None
  assert manual.parse_box(dict(x="1.5", y="2", width="3", height="4")) == (1.5, 2, 3, 4)
  assert manual.box_outside((0, 0, 10, 10), 10, 10) is None
  assert "outside" in manual.box_outside((5, 0, 6, 10), 10, 10)
  assert "outside" in manual.box_outside((-1, 0, 2, 2), 10, 10)


def test_read_csv_missing_column_and_ragged_rows(tmp_path):
  path = tmp_path / "l.csv"
  path.write_text("patientId,x,y\n")
  with pytest.raises(manual.BadInputError, match=r"l.csv: missing column\(s\) \['Target'\]"):
    manual.read_csv(str(path), ("patientId", "Target"))
  path.write_text("ImageId, EncodedPixels\na, -1\n\nb,1,2\n")
  rows = manual.read_csv(str(path), ("ImageId", "EncodedPixels"))
  assert rows[0] == (2, {"ImageId": "a", "EncodedPixels": "-1"})
  assert rows[1][0] == 4 and "__malformed__" in rows[1][1]
  path.write_bytes("\ufeffimage_id,label\na,1\n".encode("utf-8"))  # a spreadsheet export
  assert manual.read_csv(str(path), ("image_id", "label")) == [(2, {"image_id": "a",
                                                                   "label": "1"})]
  assert manual.csv_columns(str(path)) == ["image_id", "label"]


def test_boxes_scale_with_the_image():
  boxes = manual.scale_boxes(np.array([[10, 20, 30, 40]]), 100, 200, 50)
  np.testing.assert_allclose(boxes, [[2.5, 10, 7.5, 20]])


def test_resize_agrees_with_block_means_for_masks():
  rng = np.random.default_rng(1)
  mask = rng.random((64, 64)) < 0.5
  small = manual.resize_mask(mask, 32)
  blocks = mask.reshape(32, 2, 32, 2).mean(axis=(1, 3))
  # Anti-aliased bilinear is a smoothed 2x2 mean: it decides the clear blocks alike.
  clear = np.abs(blocks - 0.5) >= 0.5
  np.testing.assert_array_equal(small[clear], blocks[clear] > 0.5)


def test_read_png_modes(tmp_path):
  gray8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
  Image.fromarray(gray8).save(tmp_path / "g8.png")
  np.testing.assert_allclose(manual.read_png(str(tmp_path / "g8.png")), gray8 / 255.0,
                             atol=1e-7)
  gray16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
  Image.fromarray(gray16).save(tmp_path / "g16.png")
  np.testing.assert_allclose(manual.read_png(str(tmp_path / "g16.png")), gray16 / 65535.0,
                             atol=1e-7)
  Image.fromarray(np.stack([gray8] * 3, -1)).save(tmp_path / "rgb_gray.png")
  np.testing.assert_allclose(manual.read_png(str(tmp_path / "rgb_gray.png")), gray8 / 255.0,
                             atol=1e-7)
  colour = np.stack([gray8, gray8[::-1], gray8], -1)
  Image.fromarray(colour).save(tmp_path / "rgb.png")
  with pytest.raises(manual.BadInputError, match="rgb.png: colour PNG"):
    manual.read_png(str(tmp_path / "rgb.png"))
  (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  with pytest.raises(manual.BadInputError, match="broken.png: not a readable PNG"):
    manual.read_png(str(tmp_path / "broken.png"))
