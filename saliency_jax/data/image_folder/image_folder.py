"""`image_folder`: bring-your-own chest films (DICOM or PNG) with boxes or masks.

Layout of ``manual_dir``::

  images/<image_id>.dcm | .png    (subfolders allowed; ids must be unique)
  labels.csv                      boxes: image_id,x,y,width,height,label
                                  (one row per box; empty x..height for an image
                                  without a box), or masks: image_id,label
  masks/<image_id>.png            masks only: nonzero = abnormal; same size as
                                  the image; optional for label-0 images
  masks.json                      or, instead of masks/, COCO run-length masks as
                                  CheXlocalize ships them: {image_id: {pathology:
                                  {"size": [h, w], "counts": ...}}}

``label`` is 0 or 1. With ``masks.json``, an optional ``pathology`` column
names each image's entry; without it each entry must hold exactly one mask.
An optional ``patient_id`` column groups images of one
patient into one split. Boxes are ``(x, y, width, height)`` in the file's
pixels, ``(x, y)`` the top-left corner. Images are resized to ``image_size``
squared (non-square films are stretched; boxes follow); mask PNGs with area
>= 1/2 (`manual.resize_mask`). Positives left without a mask pixel are
counted in the metadata (``empty_mask_positives``, ``unannotated_positives``).
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from saliency_jax.data import coco_rle, manual, manual_builder

LABELS_CSV = "labels.csv"
IMAGES = "images"
MASKS = "masks"
MASKS_JSON = "masks.json"
PATHOLOGY = "pathology"


def make_config(*, manual_dir: str, classes: str | None = None, **options
                ) -> manual_builder.ManualConfig:
  """The builder config (options: see `manual_builder.make_config`)."""
  del classes  # RSNA's option
  return manual_builder.make_config(
      manual_dir=manual_dir,
      label_files=((LABELS_CSV, "image_id,x,y,width,height,label or image_id,label"),
                   # Editing masks.json changes the build's name, as labels.csv does.
                   *(((MASKS_JSON, "COCO run-length masks"),)
                     if os.path.isfile(os.path.join(manual_dir, MASKS_JSON)) else ())),
      # Two folders may hold the same labels.csv with different images.
      stamp_extra=os.path.abspath(manual_dir), **options)


class ImageFolder(tfds.core.GeneratorBasedBuilder):
  """A user's own labelled chest films."""

  # Bump when the stored format changes, so a stale build is never read.
  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Images and masks stored as raw / zlib bytes.",
                   "1.2.0": "Mask PNGs resized by exact area coverage (a pixel is set iff "
                            ">= 1/2 of its area was; was bilinear); positives without a "
                            "mask pixel counted in the metadata."}
  BUILDER_CONFIGS = []
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put images/, labels.csv and (for masks) masks/ in one folder and pass it as
  --config.manual_dir; see saliency_jax/data/image_folder/image_folder.py.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return manual_builder.info(
        self, description="User-supplied chest films with boxes or masks (image_folder).",
        label_names=("negative", "positive"))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    c = self.builder_config
    root = os.fspath(dl_manager.manual_dir)
    problems = manual.Problems(c.on_bad_input)
    labels_path = os.path.join(root, LABELS_CSV)
    with_boxes = any(k in manual.csv_columns(labels_path) for k in ("x", "y", "width"))
    labels = manual.read_box_csv(labels_path, problems, id_column="image_id",
                                 label_column="label", with_boxes=with_boxes,
                                 group_column="patient_id")
    files = manual.find_files(os.path.join(root, IMAGES), (".dcm", ".png"),
                              "the image files (.dcm or .png)")
    json_path = os.path.join(root, MASKS_JSON)
    from_json = not with_boxes and os.path.isfile(json_path)
    rle = _json_masks(json_path, labels_path, labels.labels, problems) if from_json else {}
    masks = {} if with_boxes or from_json else manual.find_files(
        os.path.join(root, MASKS), (".png",),
        f"masks/<image_id>.png or {MASKS_JSON}: {LABELS_CSV} has no box columns")
    for kind, found in (("unlabelled_image", files), ("unlabelled_mask", masks)):
      for image_id in sorted(set(found) - set(labels.named)):
        problems.record(kind, found[image_id], f"no row of {LABELS_CSV} names {image_id}")
    groups = {i: g for i, (_, _, g) in labels.labels.items()}
    split_of = manual.splits_for(sorted({groups.get(i, i) for i in labels.named}),
                                 seed=c.split_seed, fractions=c.split_fractions,
                                 split_dir=c.split_dir, problems=problems)
    tasks: dict[str, list[manual.Task]] = {s: [] for s in manual.SPLITS}
    for image_id, (label, boxes, group) in labels.labels.items():
      if image_id not in files:
        problems.record("missing_image", os.path.join(root, IMAGES, image_id),
                        f"no .dcm or .png file; {LABELS_CSV} names {image_id}")
      elif not with_boxes and not from_json and label == 1 and image_id not in masks:
        problems.record("missing_mask", os.path.join(root, MASKS, f"{image_id}.png"),
                        f"no mask for positive image {image_id}")
      elif from_json and image_id not in rle:
        pass  # counted by _json_masks
      elif group in split_of:  # otherwise counted by splits_for
        tasks[split_of[group]].append(manual.Task(
            id=image_id, path=files[image_id], label=label, size=c.image_size,
            boxes=tuple(boxes), mask_path=masks.get(image_id),
            coco_masks=rle.get(image_id, ()),
            rows=tuple(labels.rows.get(image_id, ()))))
    return manual_builder.split_generators(self, tasks, problems, manual_dir=root)

  def _generate_examples(self):
    raise NotImplementedError("_split_generators returns the generators")


def _json_masks(json_path: str, labels_path: str, labels: dict, problems: manual.Problems
                ) -> dict[str, tuple]:
  """image_id -> ((size, counts),) from masks.json; () for a negative without a mask.

  The pathology is the ``pathology`` column of labels.csv, else the entry's
  only name. A positive missing from the file, or whose entry lacks the
  pathology, is a ``missing_mask`` problem naming both.
  """
  try:
    data = coco_rle.read_masks(json_path)
  except (OSError, ValueError) as e:
    raise manual.BadInputError(f"{json_path}: cannot read ({e})") from e
  named: dict[str, str] = {}
  if PATHOLOGY in manual.csv_columns(labels_path):
    named = {row["image_id"]: row[PATHOLOGY]
             for _, row in manual.read_csv(labels_path, ("image_id", PATHOLOGY))
             if "__malformed__" not in row}
  out = {}
  for image_id, (label, _, _) in labels.items():
    entry = data.get(image_id)
    if image_id in named:
      name = named[image_id]
    elif isinstance(entry, dict) and len(entry) == 1:
      name = next(iter(entry))
    elif entry is not None:
      problems.record("missing_mask", json_path,
                      f"{image_id} has masks {sorted(entry)}; add a {PATHOLOGY} column "
                      f"to {LABELS_CSV} to choose one")
      continue
    else:
      name = ""
    if entry is None or name not in entry:
      if label == 1:
        what = (f"no entry for positive image {image_id}" if entry is None else
                f"{image_id} has no {name!r} mask (it has {sorted(entry)})")
        problems.record("missing_mask", json_path, what)
        continue
      out[image_id] = ()
      continue
    rle = entry[name]
    counts = rle.get("counts") if isinstance(rle, dict) else None
    size = rle.get("size") if isinstance(rle, dict) else None
    try:
      key = (tuple(int(v) for v in size),
             counts if isinstance(counts, str) else tuple(int(c) for c in counts))
    except (TypeError, ValueError):
      problems.record("bad_rle", json_path, f"{image_id}/{name}: expected "
                      "{'size': [h, w], 'counts': str or list of ints}")
      continue
    out[image_id] = (key,)
  return out
