"""Positives whose mask has no pixel at the stored size are counted, never lost silently."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image
from real_data_checks import area_resized

from saliency_jax import config as config_lib
from saliency_jax import data as data_lib
from saliency_jax.data import manual, mock_downloads
from saliency_jax.data.siim_acr_pneumothorax import siim_acr_pneumothorax as siim
from saliency_jax.report import markdown

SMALL = 16  # 64 px files stored at 16 px: a 1-pixel line covers 1/4 of a pixel


def _thin_line(size=64):
  mask = np.zeros((size, size), bool)
  mask[10:50, 21] = True  # one pixel wide: empty at 16 px, kept at 64 px
  return mask


def _empty_positives(splits):
  """{split: sorted ids} of the stored positives without a mask pixel."""
  return {s: sorted(a["id"][(a["label"] == 1) & ~a["mask"].any(axis=(1, 2))])
          for s, a in splits.items()}


def _check_counts(meta, splits, image_size):
  """Both kinds together count exactly the stored positives without a mask pixel."""
  kinds = ("empty_mask_positives", "unannotated_positives")
  stored = _empty_positives(splits)
  for split, ids in stored.items():
    assert sum(meta[k]["per_split"][split] for k in kinds) == len(ids), split
  assert sum(meta[k]["num"] for k in kinds) == sum(len(ids) for ids in stored.values())
  assert {i for k in kinds for i in meta[k]["examples"]} <= {
      i for ids in stored.values() for i in ids}
  assert meta["empty_mask_positives"]["image_size"] == image_size


def test_siim_thin_mask_is_counted_at_a_small_size(build, tmp_path):
  root = tmp_path / "siim"
  truth = mock_downloads.write_siim(str(root), num_images=12)
  thin = sorted(i for i, t in truth.items() if t["label"] == 1)[0]
  path = root / siim.RLE_CSV
  with open(path, newline="") as f:
    rows = [r for r in csv.reader(f) if r[0] != thin]
  rows.append([thin, " " + manual.encode_rle(_thin_line())])
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)
  truth[thin]["mask"] = _thin_line()

  splits, meta = build("siim_acr_pneumothorax", root, image_size=SMALL)
  # The independent reference says which positives lose their mask at 16 px.
  expected = sorted(i for i, t in truth.items()
                    if t["label"] == 1 and not area_resized(t["mask"], SMALL).any())
  assert thin in expected
  empty = meta["empty_mask_positives"]
  assert sorted(i for ids in _empty_positives(splits).values() for i in ids) == expected
  assert empty["num"] == len(expected) and thin in empty["examples"]
  _check_counts(meta, splits, SMALL)
  assert meta["unannotated_positives"]["num"] == 0
  # Every positive is still there, as a positive: nothing was dropped.
  kept = {i: int(a["label"][k]) for a in splits.values() for k, i in enumerate(a["id"])}
  assert kept == {i: t["label"] for i, t in truth.items()}

  # At the files' own size the line is kept.
  _, full = build("siim_acr_pneumothorax", root, image_size=64)
  assert thin not in full["empty_mask_positives"]["examples"]

  # The report's "What ran" lines say it, with the ids.
  split = next(s for s in manual.SPLITS if thin in splits[s]["id"])
  lines = markdown.data_lines({"data": meta})
  line = next(x for x in lines if "empty mask" in x)
  n = len(expected)
  assert line.startswith(f"- {n} positive image{'s have' if n > 1 else ' has'} an empty "
                         f"mask at {SMALL} px (")
  assert f"{split}: " in line and f"`{thin}`" in line
  assert line.endswith("; they are not among the evaluated positives")


def test_provenance_carries_the_counts(tmp_path):
  root = tmp_path / "siim"
  truth = mock_downloads.write_siim(str(root), num_images=12)
  thin = sorted(i for i, t in truth.items() if t["label"] == 1)[0]
  with open(root / siim.RLE_CSV, newline="") as f:
    rows = [r for r in csv.reader(f) if r[0] != thin]
  with open(root / siim.RLE_CSV, "w", newline="") as f:
    csv.writer(f).writerows(rows + [[thin, " " + manual.encode_rle(_thin_line())]])
  config = config_lib.base_config()
  config.dataset = "siim_acr_pneumothorax"
  config.manual_dir = str(root)
  config.data_dir = str(tmp_path / "tfds")
  config.image_size = SMALL
  config.real_data.num_workers = 0
  meta = data_lib.provenance(config)
  assert thin in meta["empty_mask_positives"]["examples"]
  assert meta["empty_mask_positives"]["image_size"] == SMALL


def test_image_folder_masks_thin_and_blank(build, tmp_path):
  root = tmp_path / "mine"
  truth = mock_downloads.write_image_folder(str(root), num_images=12, annotation="masks")
  positives = sorted(i for i, t in truth.items() if t["label"] == 1)
  thin, blank = positives[:2]
  Image.fromarray(_thin_line().astype(np.uint8) * 255).save(root / "masks" / f"{thin}.png")
  Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "masks" / f"{blank}.png")
  splits, meta = build("image_folder", root, image_size=SMALL)
  assert thin in meta["empty_mask_positives"]["examples"]
  assert meta["unannotated_positives"]["examples"] == [blank]
  _check_counts(meta, splits, SMALL)
  lines = markdown.data_lines({"data": meta})
  assert any(x.startswith("- 1 positive image has no box and no mask pixel in the files (")
             and f"`{blank}`" in x for x in lines)


def test_image_folder_boxes_tiny_box_and_no_box(build, tmp_path):
  root = tmp_path / "mine"
  truth = mock_downloads.write_image_folder(str(root), num_images=12, annotation="boxes")
  positives = sorted(i for i, t in truth.items() if t["label"] == 1)
  tiny, boxless = positives[:2]
  path = root / "labels.csv"
  with open(path, newline="") as f:
    rows = [r for r in csv.reader(f) if r[0] not in (tiny, boxless)]
  # At 16 px the tiny box spans x, y in [2.55, 2.675): no pixel corner inside it.
  rows += [[tiny, "10.2", "10.2", "0.5", "0.5", "1"], [boxless, "", "", "", "", "1"]]
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)
  splits, meta = build("image_folder", root, image_size=SMALL)
  assert meta["empty_mask_positives"]["examples"] == [tiny]
  assert meta["unannotated_positives"]["examples"] == [boxless]
  _check_counts(meta, splits, SMALL)


def test_data_lines_without_empty_masks_say_nothing_new():
  meta = dict(on_bad_input="error", skipped={}, num_skipped=0, skipped_examples=[],
              **manual.EmptyMasks(64).metadata())
  assert markdown.data_lines({"data": meta}) == [
      "- Bad inputs skipped when the dataset was built (`on_bad_input=error`): 0"]
  many = manual.EmptyMasks(32)
  for k in range(12):
    many.record("test", manual.Example(dict(label=1, mask=np.zeros((2, 2), bool),
                                            id=f"p{k}"), annotated=True))
  many.record("test", manual.Example(dict(label=0, mask=np.zeros((2, 2), bool), id="n"),
                                     annotated=False))
  line = markdown.data_lines({"data": many.metadata()})[0]
  assert line == ("- 12 positive images have an empty mask at 32 px (test: 12; ids "
                  + ", ".join(f"`p{k}`" for k in range(10)) + ", ...); they are not "
                  "among the evaluated positives")
