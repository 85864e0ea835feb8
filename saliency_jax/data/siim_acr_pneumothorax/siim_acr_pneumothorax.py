"""`siim_acr_pneumothorax`: SIIM-ACR Pneumothorax Segmentation from its original files.

Layout of ``manual_dir``::

  train-rle.csv                                  ImageId, EncodedPixels  (several rows per
                                                 image; -1 = no pneumothorax)
  dicom-images-train/<study>/<series>/<ImageId>.dcm

The mask is the union of an image's RLE rows (relative run-length encoding,
column-major; see `manual.decode_rle`), resized with area >= 1/2
(`manual.resize_mask`); ``label`` is 1 iff any row has a run. A thin mask can
vanish at a small ``image_size``: such positives are counted per split in the
metadata (``empty_mask_positives``) and reported. There are no boxes. The competition anonymized
one image per PatientID, so image-level splits are patient-level splits.
"""

from __future__ import annotations

import collections
import os

import tensorflow_datasets as tfds

from saliency_jax.data import manual, manual_builder

RLE_CSV = "train-rle.csv"
IMAGES = "dicom-images-train"


def make_config(*, manual_dir: str, classes: str | None = None, **options
                ) -> manual_builder.ManualConfig:
  """The builder config (options: see `manual_builder.make_config`)."""
  del classes  # RSNA's option; SIIM has one positive class
  return manual_builder.make_config(
      manual_dir=manual_dir,
      label_files=((RLE_CSV, "the SIIM-ACR RLE CSV (ImageId, EncodedPixels)"),), **options)


def _read_rle(path: str, problems: manual.Problems
              ) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
  """ImageId -> its RLE rows as ``(rle, 'file:line')`` ('-1' rows dropped), and every
  ImageId the CSV names."""
  runs: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
  empty, seen, bad = set(), set(), set()
  for line, row in manual.read_csv(path, ("ImageId", "EncodedPixels")):
    where = f"{path}:{line}"
    if "__malformed__" in row:
      problems.record("bad_csv_row", where, row["__malformed__"])
      continue
    image_id, encoded = row["ImageId"], row["EncodedPixels"]
    if not image_id or not encoded:
      problems.record("bad_csv_row", where, "empty ImageId or EncodedPixels")
      bad.add(image_id)
      continue
    if (image_id, encoded) in seen:
      problems.record("duplicate_row", where, f"duplicate row for image {image_id}")
      bad.add(image_id)
      continue
    seen.add((image_id, encoded))
    (empty.add(image_id) if encoded == "-1" else runs[image_id].append((encoded, where)))
  for image_id in sorted(empty & set(runs)):
    problems.record("bad_csv_row", path, f"image {image_id} has a -1 row and RLE rows")
    bad.add(image_id)
  labelled = {i: runs.get(i, []) for i in sorted((empty | set(runs)) - bad)}
  return labelled, sorted((empty | set(runs) | bad) - {""})


class SiimAcrPneumothorax(tfds.core.GeneratorBasedBuilder):
  """SIIM-ACR Pneumothorax Segmentation (train set), masks from RLE."""

  # Bump when the stored format changes, so a stale build is never read.
  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Images and masks stored as raw / zlib bytes.",
                   "1.2.0": "Masks resized by exact area coverage (a pixel is set iff "
                            ">= 1/2 of its area was; was bilinear); positives whose mask "
                            "is empty at the image size counted in the metadata."}
  BUILDER_CONFIGS = []
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the SIIM-ACR Pneumothorax Segmentation data in its original DICOM
  form (train-rle.csv and dicom-images-train/, e.g. the "siim-train-test"
  Kaggle dataset) and pass the folder holding both as --config.manual_dir.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return manual_builder.info(
        self, description=("SIIM-ACR Pneumothorax Segmentation: frontal chest films with "
                           "pneumothorax masks decoded from the competition's RLE."),
        label_names=("normal", "pneumothorax"),
        homepage="https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    c = self.builder_config
    root = os.fspath(dl_manager.manual_dir)
    problems = manual.Problems(c.on_bad_input)
    labelled, named = _read_rle(os.path.join(root, RLE_CSV), problems)
    images_dir = os.path.join(root, IMAGES)
    files = manual.find_files(images_dir, (".dcm",), "nested folders of <ImageId>.dcm files")
    for image_id in sorted(set(files) - set(named)):
      problems.record("unlabelled_image", files[image_id],
                      f"no row of {RLE_CSV} names image {image_id}")
    split_of = manual.splits_for(named, seed=c.split_seed, fractions=c.split_fractions,
                                 split_dir=c.split_dir, problems=problems)
    tasks: dict[str, list[manual.Task]] = {s: [] for s in manual.SPLITS}
    for image_id, rows in labelled.items():
      if image_id not in files:
        problems.record("missing_image", os.path.join(images_dir, f"{image_id}.dcm"),
                        f"no file; {RLE_CSV} names image {image_id}")
      elif image_id in split_of:  # otherwise counted by splits_for
        tasks[split_of[image_id]].append(manual.Task(
            id=image_id, path=files[image_id], label=int(bool(rows)), size=c.image_size,
            rle=tuple(r for r, _ in rows), rows=tuple(w for _, w in rows)))
    return manual_builder.split_generators(self, tasks, problems, manual_dir=root)

  def _generate_examples(self):
    raise NotImplementedError("_split_generators returns the generators")
