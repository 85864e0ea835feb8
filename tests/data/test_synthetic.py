"""Synthetic chest phantoms: determinism, tight boxes inside the lungs, options."""

from __future__ import annotations

import numpy as np
import pytest

from saliency_jax.data import synthetic

SIZE = 64


def _assert_same(a: dict, b: dict) -> None:
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_phantom_is_a_function_of_seed_and_index():
  a = synthetic.phantom(0, 5, image_size=SIZE)
  _assert_same(a, synthetic.phantom(0, 5, image_size=SIZE))
  assert not np.array_equal(a["image"], synthetic.phantom(0, 6, image_size=SIZE)["image"])
  assert not np.array_equal(a["image"], synthetic.phantom(1, 5, image_size=SIZE)["image"])
  assert a["id"] == "synth-0-000005"


def test_generate_equals_examples_one_by_one():
  batch = synthetic.generate(1, 10, 6, image_size=SIZE)
  assert batch["image"].shape == (6, SIZE, SIZE, 1)
  assert batch["boxes"].shape == (6, synthetic.MAX_BOXES, 4)
  for row, index in enumerate(range(10, 16)):
    e = synthetic.phantom(1, index, image_size=SIZE)
    k = len(e["boxes"])
    np.testing.assert_array_equal(batch["image"][row], e["image"])
    np.testing.assert_array_equal(batch["mask"][row], e["mask"])
    np.testing.assert_array_equal(batch["boxes"][row, :k], e["boxes"])
    assert not batch["boxes"][row, k:].any()
    assert (batch["label"][row], batch["num_boxes"][row], batch["id"][row]) == (
        e["label"], k, e["id"])


@pytest.mark.parametrize("size,count", [(SIZE, 40), (128, 6)])
def test_boxes_are_tight_and_inside_the_lungs(size, count):
  for index in range(count):
    e = synthetic.phantom(2, index, image_size=size, prevalence=0.8, return_parts=True)
    boxes, label = e["boxes"], e["label"]
    assert len(boxes) == len(e["opacity_masks"])
    assert (1 <= len(boxes) <= 3) if label else len(boxes) == 0
    assert e["mask"].any() == bool(label)
    for (x, y, w, h), opacity in zip(boxes.astype(int), e["opacity_masks"]):
      assert np.array_equal(boxes.astype(int), boxes)  # integer-valued
      assert x >= 0 and y >= 0 and w >= 1 and h >= 1 and x + w <= size and y + h <= size
      rows, cols = np.nonzero(opacity)
      # Tight: the box is exactly the bounding box of the opacity's pixels.
      assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x, y, x + w, y + h)
      assert e["lung"][opacity].all(), "opacity leaks outside the lung fields"
      assert e["lung"][y + h // 2, x + w // 2]
      assert e["mask"][opacity].all()


def test_mask_is_the_union_of_the_boxes():
  for index in range(20):
    e = synthetic.phantom(3, index, image_size=SIZE, prevalence=0.9)
    expected = np.zeros((SIZE, SIZE), bool)
    for x, y, w, h in e["boxes"].astype(int):
      expected[y:y + h, x:x + w] = True
    np.testing.assert_array_equal(e["mask"], expected)


def test_rasterize_boxes_convention_and_batching():
  boxes = np.array([[[2, 1, 3, 2], [0, 0, 1, 1], [9, 9, 9, 9]],
                    [[0, 0, 6, 5], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
  mask = synthetic.rasterize_boxes(boxes, np.array([2, 0]), 5, 6)
  expected = np.zeros((2, 5, 6), bool)
  expected[0, 1:3, 2:5] = True  # rows y..y+h-1, cols x..x+w-1
  expected[0, 0, 0] = True
  np.testing.assert_array_equal(mask, expected)  # padded rows and num_boxes=0 ignored


def test_image_format():
  for size in (SIZE, 128):
    e = synthetic.phantom(4, 0, image_size=size)
    image = e["image"]
    assert image.dtype == np.float32 and image.shape == (size, size, 1)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.std() > 0.1  # not blank
    assert e["mask"].dtype == bool and e["mask"].shape == (size, size)
    assert e["boxes"].dtype == np.float32 and e["boxes"].shape[1:] == (4,)


def test_prevalence_is_respected():
  for prevalence in (0.3, 0.7):
    labels = synthetic.generate(5, 0, 300, image_size=32, prevalence=prevalence)["label"]
    assert abs(labels.mean() - prevalence) < 0.08
  assert not synthetic.generate(5, 0, 20, image_size=32, prevalence=0.0)["label"].any()


def test_opacities_brighten_the_lungs():
  # The same patient with and without findings differs only inside the boxes.
  for index in range(10):
    pos = synthetic.phantom(6, index, image_size=SIZE, prevalence=1.0)
    neg = synthetic.phantom(6, index, image_size=SIZE, prevalence=0.0)
    diff = pos["image"][..., 0] - neg["image"][..., 0]
    assert diff[~pos["mask"]].max() < 0.03
    assert diff[pos["mask"]].max() > 0.1


@pytest.mark.parametrize("p", [1.0, 0.0])
def test_shortcut_marker_follows_the_label(p):
  for index in range(16):
    e = synthetic.phantom(7, index, image_size=SIZE, shortcut=p, return_parts=True)
    plain = synthetic.phantom(7, index, image_size=SIZE, return_parts=True)
    assert e["marker"] == (bool(e["label"]) == (p == 1.0))
    assert not plain["marker"]
    changed = e["image"] != plain["image"]
    assert changed.any() == e["marker"]
    if e["marker"]:
      rows, cols, _ = np.nonzero(changed)
      # In one corner: inside a quarter of the image from two edges.
      assert rows.max() < SIZE // 4 or rows.min() >= SIZE * 3 // 4
      assert cols.max() < SIZE // 4 or cols.min() >= SIZE * 3 // 4
      assert (e["image"][changed] == 1.0).sum() >= 8  # a bright letter, not one pixel


def test_marker_mask_is_exactly_the_pixels_the_marker_changed():
  drawn = 0
  for index in range(24):
    e = synthetic.phantom(8, index, image_size=48, shortcut=0.9)
    plain = synthetic.phantom(8, index, image_size=48)
    changed = (e["image"] != plain["image"])[..., 0]
    np.testing.assert_array_equal(e["marker_mask"], changed)
    assert not plain["marker_mask"].any()
    assert (e["image"][..., 0][e["marker_mask"]] == 1.0).all()
    drawn += e["marker_mask"].any()
  assert 0 < drawn < 24


def _corner(marker_mask: np.ndarray) -> int:
  """0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right (by the centre)."""
  rows, cols = np.nonzero(marker_mask)
  half = marker_mask.shape[0] / 2
  return 2 * int(rows.mean() > half) + int(cols.mean() > half)


def test_marker_lands_in_every_corner_and_is_deterministic():
  corners = []
  for index in range(40):
    e = synthetic.phantom(9, index, image_size=SIZE, shortcut=1.0, prevalence=1.0)
    again = synthetic.phantom(9, index, image_size=SIZE, shortcut=1.0, prevalence=1.0)
    np.testing.assert_array_equal(e["marker_mask"], again["marker_mask"])
    np.testing.assert_array_equal(e["image"], again["image"])
    corners.append(_corner(e["marker_mask"]))
    # The corner is the image's, not the rate's: the reversed association
    # marks the same patient's negative twin in the same place.
    flipped = synthetic.phantom(9, index, image_size=SIZE, shortcut=0.0, prevalence=0.0)
    np.testing.assert_array_equal(flipped["marker_mask"], e["marker_mask"])
  assert set(corners) == {0, 1, 2, 3}


def test_opacity_masks_match_what_each_opacity_changes():
  # Each opacity's mask against the same film rendered without that finding:
  # the image changes most inside the mask and little outside it.
  checked = 0
  for index in range(12):
    e = synthetic.phantom(10, index, image_size=SIZE, prevalence=1.0, return_parts=True)
    np.testing.assert_array_equal(e["opacity_mask"], e["opacity_masks"].any(axis=0))
    assert e["mask"][e["opacity_mask"]].all()  # inside the boxes
    for k, own in enumerate(e["opacity_masks"]):
      without = synthetic.phantom(10, index, image_size=SIZE, prevalence=1.0,
                                  omit_opacity=k)
      np.testing.assert_array_equal(without["opacity_mask"], e["opacity_mask"])
      diff = (e["image"] - without["image"])[..., 0]
      assert (diff >= -1e-6).all()  # an opacity only adds density
      others = e["opacity_masks"][np.arange(len(e["opacity_masks"])) != k].any(axis=0)
      assert diff[~own & ~others].max() < 0.03
      assert np.median(diff[own]) > 0.02
      assert diff.max() == diff[own].max()  # the peak change is inside
      checked += 1
  assert checked >= 12


def test_negatives_have_no_opacity_mask():
  for index in range(6):
    e = synthetic.phantom(10, index, image_size=SIZE, prevalence=0.0)
    assert not e["opacity_mask"].any() and not e["mask"].any()


# The default data (no shortcut) at version 1.0.0 of the build: seed 11,
# 48 px: (label, sum of pixels, sum of pixels x column, boxes).
_DEFAULT_DATA = [
    (1, 815.6301379850092, 20216.921426200195, [[31.0, 22.0, 7.0, 5.0]]),
    (1, 1005.8447958175093, 22596.651930116583, [[14.0, 15.0, 5.0, 5.0]]),
    (0, 1135.002791008359, 26482.31435962973, []),
    (0, 1207.4178080201964, 28391.689788706542, []),
]


def test_default_data_is_unchanged_by_the_marker_options():
  for index, (label, total, moment, boxes) in enumerate(_DEFAULT_DATA):
    e = synthetic.phantom(11, index, image_size=48)
    image = e["image"][..., 0].astype(np.float64)
    assert e["label"] == label
    np.testing.assert_allclose(image.sum(), total, rtol=1e-9)
    np.testing.assert_allclose((image * np.arange(48)).sum(), moment, rtol=1e-9)
    np.testing.assert_array_equal(e["boxes"].reshape(-1, 4), np.reshape(boxes, (-1, 4)))
    assert not e["marker_mask"].any()


def test_stacked_examples_carry_the_part_masks():
  batch = synthetic.generate(8, 0, 5, image_size=48, shortcut=1.0)
  for row in range(5):
    e = synthetic.phantom(8, row, image_size=48, shortcut=1.0)
    np.testing.assert_array_equal(batch["marker_mask"][row], e["marker_mask"])
    np.testing.assert_array_equal(batch["opacity_mask"][row], e["opacity_mask"])


def test_split_ranges_are_disjoint_and_contiguous():
  ranges = synthetic.split_ranges(5, 3, 2)
  assert ranges == {"train": (0, 5), "validation": (5, 3), "test": (8, 2)}


def test_bad_options_raise():
  with pytest.raises(ValueError, match="prevalence"):
    synthetic.phantom(0, 0, prevalence=1.5)
  with pytest.raises(ValueError, match="shortcut"):
    synthetic.phantom(0, 0, shortcut=2.0)


def test_stacking_pads_boxes_to_the_most_any_example_has():
  image = np.zeros((8, 8, 1), np.float32)
  many = np.arange(24, dtype=np.float32).reshape(6, 4)
  examples = [dict(image=image, label=1, boxes=many, mask=np.zeros((8, 8), bool), id="a"),
              dict(image=image, label=0, boxes=np.zeros((0, 4)), mask=np.zeros((8, 8), bool),
                   id="b")]
  batch = synthetic.stack_examples(examples, image_shape=(8, 8, 1))
  assert batch["boxes"].shape == (2, 6, 4) and list(batch["num_boxes"]) == [6, 0]
  np.testing.assert_array_equal(batch["boxes"][0], many)
  assert not batch["boxes"][1].any()
