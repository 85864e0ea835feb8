"""Small trees in the exact layout of the real downloads, made from synthetic phantoms.

The tests build every manual-download dataset from these, and a researcher can
try the real-data path before the Kaggle download finishes::

  python -c "from saliency_jax.data import mock_downloads as m; m.write_rsna('/tmp/rsna')"
  python -m saliency_jax.main --config=cascade:quick \\
      --config.dataset=rsna_pneumonia --config.manual_dir=/tmp/rsna --workdir=/tmp/c

Each writer returns the ground truth per image id: the image as the decoder
must return it (the phantom quantized to the stored bits), the label, boxes in
file pixels, the mask, and the header fields. Files cycle through the
encodings real archives mix: MONOCHROME2 and MONOCHROME1, 8-bit, and 16-bit
with 12 bits stored and a rescale slope/intercept.
"""

from __future__ import annotations

import csv
import os
import uuid
from typing import Any

import numpy as np

from saliency_jax.data import dicom, manual, synthetic
from saliency_jax.data.rsna_pneumonia import rsna_pneumonia as rsna

# (photometric, bits_stored, rescale_slope, rescale_intercept); cycled by index.
ENCODINGS = (("MONOCHROME2", 8, None, None), ("MONOCHROME1", 8, None, None),
             ("MONOCHROME2", 12, 2.0, -1024.0), ("MONOCHROME1", 12, 0.5, 0.0))


def _uid(seed: int, index: int, kind: str) -> str:
  return str(uuid.uuid5(uuid.NAMESPACE_OID, f"saliency_jax-{kind}-{seed}-{index}"))


def write_film(path: str, image: np.ndarray, index: int, **header: Any) -> np.ndarray:
  """Writes ``image`` (H, W) in [0, 1] as DICOM encoding ``index``; returns what decoding gives."""
  photometric, bits, slope, intercept = ENCODINGS[index % len(ENCODINGS)]
  top = 2 ** bits - 1
  shown = image if photometric == "MONOCHROME2" else 1.0 - image
  stored = np.round(np.clip(shown, 0, 1) * top).astype(np.uint8 if bits == 8 else np.uint16)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  dicom.write(path, stored, photometric=photometric, bits_stored=bits,
              rescale_slope=slope, rescale_intercept=intercept, **header)
  decoded = stored.astype(np.float64) / top
  return (decoded if photometric == "MONOCHROME2" else 1.0 - decoded).astype(np.float32)


def _header(index: int) -> dict[str, Any]:
  # RSNA stores PatientAge without the 'Y' unit; keep that quirk.
  return dict(view_position=("PA", "AP")[index % 2], sex=("M", "F")[index % 3 % 2],
              age=str(20 + (7 * index) % 60))


def _truth(image, label, boxes, mask, header) -> dict[str, Any]:
  return dict(image=image, label=int(label), boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
              mask=mask, view_position=header["view_position"], sex=header["sex"],
              age=float(header["age"]))


def write_rsna(root: str, *, num_patients: int = 60, image_size: int = 64, seed: int = 0
               ) -> dict[str, dict[str, Any]]:
  """An RSNA Pneumonia stage-2 tree: the two CSVs and ``stage_2_train_images/``.

  Positives carry the phantom's 1-3 boxes, every fifth positive 4 (the most
  the real data has); every third negative is "No Lung Opacity / Not
  Normal". The truth also holds ``class``.
  """
  os.makedirs(os.path.join(root, rsna.IMAGES), exist_ok=True)
  truth, label_rows, class_rows, positives, negatives = {}, [], [], 0, 0
  for index in range(num_patients):
    e = synthetic.phantom(seed, index, image_size=image_size, prevalence=0.5)
    patient = _uid(seed, index, "rsna")
    boxes = [tuple(float(v) for v in b) for b in e["boxes"]]
    if e["label"]:
      positives += 1
      while positives % 5 == 0 and len(boxes) < 4:  # the most RSNA has
        boxes.append((2.0 + 3 * len(boxes), 3.0, image_size // 8, image_size // 6))
      name = rsna.OPACITY
    else:
      negatives += 1
      name = rsna.OTHER if negatives % 3 == 0 else rsna.NORMAL
    header = _header(index)
    image = write_film(os.path.join(root, rsna.IMAGES, f"{patient}.dcm"), e["image"][..., 0],
                       index, patient_id=patient, **header)
    for box in boxes or [None]:
      label_rows.append([patient, *(("",) * 4 if box is None else (f"{v:g}" for v in box)),
                         int(e["label"])])
      class_rows.append([patient, name])
    mask = synthetic.rasterize_boxes(np.array(boxes).reshape(-1, 4), len(boxes),
                                     image_size, image_size)
    truth[patient] = dict(_truth(image, e["label"], boxes, mask, header), **{"class": name})
  _write_csv(os.path.join(root, rsna.LABELS_CSV),
             ["patientId", "x", "y", "width", "height", "Target"], label_rows)
  _write_csv(os.path.join(root, rsna.CLASS_CSV), ["patientId", "class"], class_rows)
  return truth


def write_siim(root: str, *, num_images: int = 60, image_size: int = 64, seed: int = 0
               ) -> dict[str, dict[str, Any]]:
  """A SIIM-ACR tree: ``train-rle.csv`` and ``dicom-images-train/<study>/<series>/<id>.dcm``.

  A positive image gets one RLE row per opacity region (so several rows per
  image occur); a negative gets ``-1``. The CSV keeps the original's leading
  spaces (header ``ImageId, EncodedPixels``).
  """
  from saliency_jax.data.siim_acr_pneumothorax import siim_acr_pneumothorax as siim
  rows, truth = [], {}
  for index in range(num_images):
    e = synthetic.phantom(seed, index, image_size=image_size, prevalence=0.5,
                          return_parts=True)
    image_id = f"1.2.276.0.7230010.3.1.4.{seed}.{index}"
    folder = os.path.join(root, siim.IMAGES, _uid(seed, index, "study"),
                          _uid(seed, index, "series"))
    header = _header(index)
    image = write_film(os.path.join(folder, f"{image_id}.dcm"), e["image"][..., 0], index,
                       patient_id=_uid(seed, index, "patient"), **header)
    regions = [m for m in e["opacity_masks"] if m.any()] if e["label"] else []
    mask = np.zeros((image_size, image_size), bool)
    for region in regions:
      rows.append([image_id, " " + manual.encode_rle(region)])
      mask |= region
    if not regions:
      rows.append([image_id, " -1"])
    truth[image_id] = _truth(image, bool(regions), [], mask, header)
  _write_csv(os.path.join(root, siim.RLE_CSV), ["ImageId", " EncodedPixels"], rows)
  return truth


def write_image_folder(root: str, *, num_images: int = 40, image_size: int = 64,
                       seed: int = 0, annotation: str = "boxes", image_format: str = "png"
                       ) -> dict[str, dict[str, Any]]:
  """A bring-your-own tree: ``images/<id>.png|.dcm``, ``labels.csv`` and, for masks, ``masks/``.

  ``annotation='boxes'``: labels.csv has ``image_id,x,y,width,height,label``
  (one row per box, empty box for images without one). ``'masks'``: labels.csv
  has ``image_id,label`` and ``masks/<id>.png`` marks each positive's region.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if annotation not in ("boxes", "masks") or image_format not in ("png", "dcm"):
    raise ValueError(f"annotation={annotation!r} must be 'boxes' or 'masks', "
                     f"image_format={image_format!r} 'png' or 'dcm'")
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  rows, truth = [], {}
  for index in range(num_images):
    e = synthetic.phantom(seed, index, image_size=image_size, prevalence=0.5)
    image_id = f"img{index:04d}"
    path = os.path.join(root, "images", f"{image_id}.{image_format}")
    header = dict(view_position="", sex="", age=float("nan"))
    if image_format == "dcm":
      header = _header(index)
      image = write_film(path, e["image"][..., 0], index, **header)
    else:
      stored = np.round(e["image"][..., 0] * 65535).astype(np.uint16)
      Image.fromarray(stored).save(path)
      image = (stored / 65535.0).astype(np.float32)
    boxes = [tuple(float(v) for v in b) for b in e["boxes"]]
    if annotation == "boxes":
      for box in boxes or [None]:
        rows.append([image_id, *(("",) * 4 if box is None else (f"{v:g}" for v in box)),
                     e["label"]])
    else:
      rows.append([image_id, e["label"]])
      if e["label"]:
        os.makedirs(os.path.join(root, "masks"), exist_ok=True)
        Image.fromarray(e["mask"].astype(np.uint8) * 255).save(
            os.path.join(root, "masks", f"{image_id}.png"))
    truth[image_id] = _truth(image, e["label"], boxes if annotation == "boxes" else [],
                             e["mask"], header)
  columns = (["image_id", "x", "y", "width", "height", "label"] if annotation == "boxes"
             else ["image_id", "label"])
  _write_csv(os.path.join(root, "labels.csv"), columns, rows)
  return truth


def _write_csv(path: str, header: list[str], rows: list[list[Any]]) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
