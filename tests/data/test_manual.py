"""Shared pieces of the manual-download builders: RLE, splits, CSV rows, bad-input policy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from real_data_checks import area_resized, coverage_by_repetition

from saliency_jax import errors
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
  assert manual.box_outside((5, 0, 6, 10), 10, 10, "l.csv:3") == (
      "box (x=5, y=0, width=6, height=10) of l.csv:3 extends outside the 10 x 10 image")


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


def _line(height, width, angle_degrees, offset):
  """A one-pixel-wide digital line through (height / 2 + offset, width / 2)."""
  mask = np.zeros((height, width), bool)
  t = np.linspace(-1.5 * max(height, width), 1.5 * max(height, width), 8 * max(height, width))
  rows = np.round(height / 2 + offset + t * np.sin(np.radians(angle_degrees))).astype(int)
  cols = np.round(width / 2 + t * np.cos(np.radians(angle_degrees))).astype(int)
  inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
  mask[rows[inside], cols[inside]] = True
  return mask


@pytest.mark.parametrize("height, width, size", [
    (100, 100, 64), (7, 7, 3), (6, 6, 4), (30, 20, 12), (48, 64, 20), (5, 9, 2),
    (3, 3, 7), (4, 6, 10), (64, 64, 64), (1, 1, 3), (13, 17, 1)])
def test_resize_mask_sets_pixels_with_at_least_half_their_area(height, width, size):
  rng = np.random.default_rng(height * 1000 + width * 10 + size)
  for density in (0.1, 0.5, 0.9):
    mask = rng.random((height, width)) < density
    got = manual.resize_mask(mask, size)
    assert got.shape == (size, size) and got.dtype == bool
    np.testing.assert_array_equal(got, area_resized(mask, size), err_msg=f"density {density}")
    covered, cells = coverage_by_repetition(mask, size)
    coverage, area = manual.mask_coverage(mask, size)
    np.testing.assert_array_equal(coverage * cells, covered * area)  # same fractions


def test_resize_mask_1024_to_320():
  rng = np.random.default_rng(7)
  mask = np.zeros((1024, 1024), bool)
  mask[100:900, 200:700] = rng.random((800, 500)) < 0.5  # borders and interior both occur
  np.testing.assert_array_equal(manual.resize_mask(mask, 320), area_resized(mask, 320))


@pytest.mark.parametrize("angle", [0, 90, 45, 30, 71, 120])
@pytest.mark.parametrize("height, width, size", [(1024, 1024, 320), (100, 100, 64),
                                                 (64, 48, 20), (40, 40, 80)])
def test_resize_mask_on_one_pixel_lines(angle, height, width, size):
  for offset in (-7, 0, 3):
    mask = _line(height, width, angle, offset)
    assert mask.any()
    np.testing.assert_array_equal(manual.resize_mask(mask, size), area_resized(mask, size),
                                  err_msg=f"offset {offset}")
  horizontal = manual.resize_mask(_line(height, width, 0, 0), size)
  if height > 2 * size:  # a one-pixel row covers at most size / height < 1/2 of a pixel
    assert not horizontal.any()
  elif height < size:  # upscaled: each pixel under the row is covered whole
    assert horizontal.any()


def test_a_pixel_exactly_half_covered_is_set():
  mask = np.zeros((4, 4), bool)
  mask[0, 0:2] = True  # half of output pixel (0, 0), nothing of the others
  mask[2:4, 3] = True  # half of output pixel (1, 1)
  np.testing.assert_array_equal(manual.resize_mask(mask, 2), [[True, False], [False, True]])
  mask = np.zeros((4, 4), bool)
  mask[0, 0] = mask[1, 3] = mask[2, 3] = True  # a quarter of three pixels: none set
  assert not manual.resize_mask(mask, 2).any()
  # Non-integer scales (4 -> 3, 8 -> 6, 10 x 8 -> 4, 2 -> 3 upscaled): a pixel exactly
  # half covered sums fractions such as 1/3 + ... that floats do not hit exactly.
  rng = np.random.default_rng(3)
  halves = 0
  for height, width, size in ((4, 4, 3), (8, 8, 6), (8, 12, 3), (10, 8, 4), (2, 2, 3)):
    for _ in range(200):
      mask = rng.random((height, width)) < 0.5
      covered, cells = coverage_by_repetition(mask, size)
      exact = 2 * covered == cells
      halves += int(exact.sum())
      got = manual.resize_mask(mask, size)
      assert got[exact].all()
      np.testing.assert_array_equal(got, 2 * covered >= cells)
  assert halves > 100  # the boundary case was exercised


def test_resize_mask_identity_upscale_and_empty():
  rng = np.random.default_rng(5)
  mask = rng.random((20, 20)) < 0.5
  np.testing.assert_array_equal(manual.resize_mask(mask, 20), mask)
  # Integer upscaling repeats every pixel.
  np.testing.assert_array_equal(manual.resize_mask(mask, 60),
                                np.repeat(np.repeat(mask, 3, 0), 3, 1))
  assert not manual.resize_mask(np.zeros((50, 30), bool), 16).any()
  # Integer downscaling is a block majority (ties set).
  blocks = mask.reshape(10, 2, 10, 2).sum(axis=(1, 3))
  np.testing.assert_array_equal(manual.resize_mask(mask, 10), blocks >= 2)
  with pytest.raises(ValueError, match="non-empty"):
    manual.mask_coverage(np.zeros((0, 4), bool), 2)


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


def test_unreadable_csv_and_split_files_name_the_line(tmp_path):
  path = tmp_path / "labels.csv"
  path.write_bytes(b"image_id,label\na,1\nb\xe9,0\n")  # Latin-1, not UTF-8
  for read in (lambda: manual.read_csv(str(path), ("image_id", "label")),
               lambda: manual.csv_columns(str(path))):
    with pytest.raises(manual.BadInputError, match=r"labels.csv:3: not UTF-8 text"):
      read()
  path.write_text("image_id,label\na," + "1" * 200_000 + "\n")  # over csv's field limit
  with pytest.raises(manual.BadInputError, match=r"labels.csv:2: unreadable CSV"):
    manual.read_csv(str(path), ("image_id", "label"))
  for split, ids in (("train", b"a\n"), ("validation", b"b\n"), ("test", b"c\nd\xff\n")):
    (tmp_path / f"{split}.txt").write_bytes(ids)
  with pytest.raises(manual.BadInputError, match=r"test.txt:2: not UTF-8"):
    manual.read_split_dir(str(tmp_path), manual.Problems("skip"), {"a", "b", "c"})


def test_config_checks_raise_config_errors(tmp_path):
  assert issubclass(manual.BadInputError, errors.InputError)
  with pytest.raises(errors.ConfigError, match="config.manual_dir: "):
    manual.check_manual_dir("rsna_pneumonia", None)
  with pytest.raises(errors.ConfigError, match="config.manual_dir=.*no such directory"):
    manual.check_manual_dir("rsna_pneumonia", str(tmp_path / "nope"))
  with pytest.raises(errors.ConfigError, match="config.real_data.split_fractions"):
    manual.check_split_fractions((0.5, 0.6, 0.1))
  with pytest.raises(errors.ConfigError, match="config.on_bad_input='ignore'"):
    manual.Problems("ignore")


def test_an_error_raised_in_a_decoding_worker_arrives_unchanged(tmp_path):
  # Workers return bad inputs as `Bad`; should one raise, the pool re-raises it
  # in this process with its type and message (it pickles), not wrapped.
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  with pytest.raises(manual.BadInputError) as raised:
    list(manual.parallel_map(manual.read_png, [str(broken)] * 2, num_workers=2, desc="t"))
  assert type(raised.value) is manual.BadInputError
  assert str(raised.value).startswith(f"{broken}: not a readable PNG")
  assert "\n" not in str(raised.value)
