"""`rsna_pneumonia`: the RSNA Pneumonia Detection Challenge (stage 2 train) from its Kaggle files.

Layout of ``manual_dir`` (as unzipped from Kaggle)::

  stage_2_train_labels.csv          patientId,x,y,width,height,Target  (one row per box;
                                    empty box and Target 0 for patients without opacity)
  stage_2_detailed_class_info.csv   patientId,class  (repeated per box)
  stage_2_train_images/<patientId>.dcm

Each patient is one frontal film (1024 x 1024). Examples carry the image
resized to ``image_size`` (bilinear, anti-aliased), ``label`` (1 = Lung
Opacity), the boxes scaled to the new size, their union as ``mask``, the
class name and DICOM header fields (view position, sex, age). Splits are by
patient (see `manual.splits_for`). ``classes='opacity_vs_normal'`` keeps
"Lung Opacity" and "Normal" as in Arun et al. 2021; ``'all'`` also keeps
"No Lung Opacity / Not Normal" as negatives. Patients left out by the class
choice are counted in the metadata, like skipped bad inputs.
"""

from __future__ import annotations

import collections
import os

import tensorflow_datasets as tfds

from saliency_jax import errors
from saliency_jax.data import manual, manual_builder

LABELS_CSV = "stage_2_train_labels.csv"
CLASS_CSV = "stage_2_detailed_class_info.csv"
IMAGES = "stage_2_train_images"
OPACITY, NORMAL, OTHER = "Lung Opacity", "Normal", "No Lung Opacity / Not Normal"
CLASSES = {"opacity_vs_normal": (OPACITY, NORMAL), "all": (OPACITY, NORMAL, OTHER)}


def make_config(*, manual_dir: str, classes: str = "opacity_vs_normal", **options
                ) -> manual_builder.ManualConfig:
  """The builder config (options: see `manual_builder.make_config`)."""
  if classes not in CLASSES:
    raise errors.ConfigError(f"config.real_data.classes={classes!r} is not allowed; "
                             f"expected one of {sorted(CLASSES)}")
  return manual_builder.make_config(
      manual_dir=manual_dir, classes=classes, label_files=(
          (LABELS_CSV, "the RSNA labels CSV (patientId,x,y,width,height,Target)"),
          (CLASS_CSV, "the RSNA class CSV (patientId,class)")), **options)


def _read_classes(path: str, problems: manual.Problems) -> dict[str, str]:
  """patientId -> class name from the detailed class CSV (repeated rows must agree)."""
  classes: dict[str, str] = {}
  for line, row in manual.read_csv(path, ("patientId", "class")):
    where = f"{path}:{line}"
    if "__malformed__" in row:
      problems.record("bad_csv_row", where, row["__malformed__"])
      continue
    patient, name = row["patientId"], row["class"]
    if name not in CLASSES["all"]:
      problems.record("bad_csv_row", where, f"unknown class {name!r}; expected one of "
                      f"{list(CLASSES['all'])}")
      classes[patient] = ""
    elif classes.setdefault(patient, name) != name:
      problems.record("bad_csv_row", where, f"patient {patient} has classes "
                      f"{classes[patient]!r} and {name!r}")
      classes[patient] = ""
  return {p: c for p, c in classes.items() if c}


class RsnaPneumonia(tfds.core.GeneratorBasedBuilder):
  """RSNA Pneumonia Detection Challenge, stage 2 train set, with boxes."""

  # Bump when the stored format changes, so a stale build is never read.
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Images and masks stored as raw / zlib bytes."}
  BUILDER_CONFIGS = []  # configs are made per run by `make_config`
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the "RSNA Pneumonia Detection Challenge" data from Kaggle
  (https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data), unzip it
  and pass the folder holding stage_2_train_labels.csv,
  stage_2_detailed_class_info.csv and stage_2_train_images/ as
  --config.manual_dir.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return manual_builder.info(
        self, description=(
            "RSNA Pneumonia Detection Challenge (stage 2 train): frontal chest films with "
            "lung-opacity boxes (x, y, width, height), top-left corner, in pixels of the "
            "resized image; mask = union of the boxes."),
        label_names=("normal", "lung_opacity"), text_fields=("class",),
        homepage="https://www.kaggle.com/c/rsna-pneumonia-detection-challenge")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    c = self.builder_config
    root = os.fspath(dl_manager.manual_dir)
    problems = manual.Problems(c.on_bad_input)
    labels_path, class_path = os.path.join(root, LABELS_CSV), os.path.join(root, CLASS_CSV)
    labels = manual.read_box_csv(labels_path, problems, id_column="patientId",
                                 label_column="Target", box_iff_positive=True)
    classes = _read_classes(class_path, problems)
    images_dir = os.path.join(root, IMAGES)
    files = manual.find_files(images_dir, (".dcm",), "the folder of <patientId>.dcm files")
    for patient in sorted(set(files) - set(labels.named)):
      problems.record("unlabelled_image", files[patient], f"no row of {LABELS_CSV} names "
                      f"patient {patient}")
    for patient in sorted(set(classes) - set(labels.named)):
      problems.record("missing_labels", class_path,
                      f"patient {patient} has a class but no row in {LABELS_CSV}")
    split_of = manual.splits_for(labels.named, seed=c.split_seed, fractions=c.split_fractions,
                                 split_dir=c.split_dir, problems=problems)
    keep, excluded = CLASSES[c.classes], collections.Counter()
    tasks: dict[str, list[manual.Task]] = {s: [] for s in manual.SPLITS}
    for patient, (target, boxes, _) in labels.labels.items():
      name = classes.get(patient)
      if name is None:
        problems.record("missing_class", class_path, f"patient {patient} has no class row")
      elif (name == OPACITY) != (target == 1):
        problems.record("class_target_mismatch", class_path,
                        f"patient {patient}: class {name!r} but Target {target}")
      elif patient not in files:
        problems.record("missing_image", os.path.join(images_dir, f"{patient}.dcm"),
                        f"file missing; {LABELS_CSV} names patient {patient}")
      elif name not in keep:
        excluded[name] += 1
      elif patient in split_of:  # otherwise counted by splits_for
        tasks[split_of[patient]].append(manual.Task(
            id=patient, path=files[patient], label=target, size=c.image_size,
            boxes=tuple(boxes), rows=tuple(labels.rows.get(patient, ())),
            fields=(("class", name),)))
    return manual_builder.split_generators(self, tasks, problems, manual_dir=root,
                                           classes=c.classes, excluded_by_class=dict(excluded))

  def _generate_examples(self):
    raise NotImplementedError("_split_generators returns the generators")
