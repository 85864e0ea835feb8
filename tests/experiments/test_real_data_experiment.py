"""The cascade experiment on a generated tree in RSNA Pneumonia's Kaggle layout."""

import json

import pytest
import experiment_runs

from saliency_jax import config as config_lib
from saliency_jax import main as main_lib
from saliency_jax.data import mock_downloads
from saliency_jax.data.rsna_pneumonia import rsna_pneumonia as rsna


def test_cascade_runs_on_an_rsna_tree_and_reports_what_was_skipped(tmp_path):
  manual_dir = tmp_path / "rsna"
  truth = mock_downloads.write_rsna(str(manual_dir), num_patients=120, image_size=64)
  # One corrupt film: skipped and counted, not silently dropped.
  corrupt = next(p for p in sorted(truth) if truth[p]["class"] != rsna.OTHER)
  (manual_dir / rsna.IMAGES / f"{corrupt}.dcm").write_bytes(b"not a dicom file")
  config = config_lib.load_file(experiment_runs.config_path("cascade"), "quick")
  config.dataset = "rsna_pneumonia"
  config.manual_dir = str(manual_dir)
  config.data_dir = str(tmp_path / "tfds")
  config.on_bad_input = "skip"
  config.real_data.num_workers = 0
  config.real_data.split_fractions = (0.6, 0.15, 0.25)
  config.methods = ("gradient", "gradcam")
  workdir = tmp_path / "work"
  summary = main_lib.run(config, str(workdir))
  others = sum(t["class"] == rsna.OTHER for t in truth.values())
  assert summary["data"]["skipped"] == {"unreadable_image": 1}
  assert summary["data"]["excluded_by_class"] == {rsna.OTHER: others}
  assert summary["num_images"] == config.num_images
  assert set(summary["verdicts"]) == {"gradient", "gradcam"}
  report = open(workdir / "report.md").read()
  assert "`rsna_pneumonia`" in report
  assert "Bad inputs skipped when the dataset was built (`on_bad_input=skip`): 1" in report
  assert f"{rsna.OTHER}: {others}" in report
  with open(workdir / "results.csv") as f:
    ids = {line.split(",")[6] for line in list(f)[1:]}
  assert ids <= set(truth) - {corrupt}
  assert json.load(open(workdir / "summary.json"))["data"]["num_skipped"] == 1
  header, *rows = (workdir / "images.csv").read_text().splitlines()
  assert header == ("image_id,label,num_boxes,mask_fraction,patient_id,view_position,"
                    "sex,age,class")
  assert len(rows) == summary["num_images"]
  first = rows[0].split(",")
  assert first[7] == f"{truth[first[0]]['age']:g}" and first[8] == rsna.OPACITY


def test_real_data_keys_are_checked_before_anything_runs(tmp_path):
  config = config_lib.load_file(experiment_runs.config_path("cascade"), "quick")
  config.dataset = "siim_acr_pneumothorax"
  with pytest.raises(ValueError, match="config.manual_dir: .*siim_acr_pneumothorax"):
    config_lib.validate(config)
  config.manual_dir = str(tmp_path)
  config.on_bad_input = "ignore"
  with pytest.raises(ValueError, match="config.on_bad_input='ignore'"):
    config_lib.validate(config)
  config.on_bad_input = "skip"
  config.real_data.split_fractions = (0.5, 0.5, 0.5)
  with pytest.raises(ValueError, match="config.real_data.split_fractions"):
    config_lib.validate(config)


def test_image_table_carries_the_header_fields(tmp_path):
  from saliency_jax.experiments import common  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  mask = np.zeros((2, 4, 4), bool)
  mask[0, :2, :2] = True
  images = dict(id=np.array(["a", "b"]), label=np.array([1, 0]), num_boxes=np.array([1, 0]),
                mask=mask, sex=np.array(["F", ""]), age=np.array([58.0, np.nan], np.float32))
  common.write_image_table(str(tmp_path), images)
  lines = (tmp_path / "images.csv").read_text().splitlines()
  assert lines == ["image_id,label,num_boxes,mask_fraction,sex,age", "a,1,1,0.25,F,58",
                   "b,0,0,0,,nan"]
