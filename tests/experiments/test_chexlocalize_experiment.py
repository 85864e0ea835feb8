"""The CheXlocalize option of the localization experiment, end to end on phantoms.

An untrained small CNN from a weights file (no training): the numbers are
checked against :mod:`saliency_jax.metrics.chexlocalize` called directly on
the same maps, the tuned threshold and cutoff against the tuning functions on
validation maps computed here through the public API, the COCO-RLE files
against the predicted masks.
"""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

import experiment_runs
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import results
from saliency_jax import rng
from saliency_jax import saliency
from saliency_jax.data import coco_rle
from saliency_jax.experiments import chexlocalize as experiment
from saliency_jax.experiments import common
from saliency_jax.metrics import chexlocalize as protocol

METHODS = ("gradient",)
CONTROLS = ("random", "center_prior")




def _config(data_dir, weights, **chexlocalize):
  config = experiment_runs.quick_config("localization", data_dir)
  config.update(model_weights=weights, methods=METHODS, controls=CONTROLS,
                localization=("auprc",), num_images=5, bootstrap_resamples=50)
  config.chexlocalize.update(enabled=True, **chexlocalize)
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def tuned(data_dir, tmp_path_factory):
  """(config, workdir, summary) with the threshold and the gate tuned on validation."""
  weights = experiment_runs.untrained_weights(tmp_path_factory.mktemp("w") / "w.npz", nan=False)
  workdir = tmp_path_factory.mktemp("chexlocalize")
  config = _config(data_dir, weights, threshold="tuned", gate=True)
  return config, workdir, main_lib.run(config, str(workdir))


def _test_maps(workdir, name):
  return np.load(os.path.join(workdir, "maps", f"localization-{name}-all.npy"))[0]


def _model_and_images(config, workdir, split):
  images = common.evaluation_images(config, split)
  # The weights file's model, recorded in a scratch workdir (not the run's).
  model, _ = common.trained_model(config, str(workdir) + "-scratch", in_channels=1)
  explainee = saliency.from_model(model)
  logits = np.asarray(jax.vmap(explainee.logits)(images["image"]))
  return explainee, images, logits


def _probabilities(logits):
  return np.asarray(jax.nn.softmax(logits, axis=-1)[:, 1])


def test_numbers_equal_the_protocol_on_the_same_maps(tuned):
  config, workdir, summary = tuned
  block = summary["chexlocalize"]
  explainee, images, logits = _model_and_images(config, workdir, "test")
  masks = images["mask"].astype(bool)
  rows = results.read_rows(workdir / "results.csv")
  ids = [str(i) for i in images["id"]]
  for name in METHODS + CONTROLS:
    entry = block["methods"][name]
    assert entry["invalid"] is None
    maps = _test_maps(workdir, name)
    assert maps.shape == masks.shape
    out = protocol.evaluate(maps, masks, threshold=entry["threshold"],
                            probabilities=_probabilities(logits), cutoff=entry["cutoff"],
                            seed=rng.integer_seed(config.seed, rng.STATS), num_resamples=50)
    np.testing.assert_allclose(entry["miou"], out["miou"], equal_nan=True)
    np.testing.assert_allclose(entry["hit_rate"], out["hit_rate"], equal_nan=True)
    assert entry["num_scored"] == out["num_scored"]
    assert entry["num_not_scored"] == {k: len(ids) - v for k, v in out["num_scored"].items()}
    # Gated: an empty prediction scores 0, so every image with a mask counts.
    assert out["num_scored"]["iou"] == len(ids)
    np.testing.assert_array_equal(
        results.values(rows, ids, method=name, metric="chexlocalize_iou"), out["iou"])
    np.testing.assert_array_equal(
        results.values(rows, ids, method=name, metric="chexlocalize_hit"), out["hit"])


def test_threshold_and_cutoff_are_tuned_on_the_validation_maps(tuned):
  config, workdir, summary = tuned
  explainee, images, logits = _model_and_images(config, workdir, "validation")
  assert summary["chexlocalize"]["num_validation_images"] == len(images["id"])
  # gradient needs no key; its validation maps through the public API.
  targets = np.argmax(logits, axis=-1)
  maps = np.asarray(common.postprocess_batch(
      saliency.explain(explainee, images["image"], targets, method="gradient")))
  masks = images["mask"].astype(bool)
  threshold, mious = protocol.tune_threshold(maps, masks)
  cutoff, cutoff_mious = protocol.tune_cutoff(maps, masks, _probabilities(logits),
                                              threshold=threshold)
  entry = summary["chexlocalize"]["methods"]["gradient"]
  assert entry["threshold"] == threshold and threshold in protocol.THRESHOLDS
  assert entry["cutoff"] == cutoff
  np.testing.assert_allclose(entry["tuning"]["threshold_miou"], mious, rtol=1e-6)
  np.testing.assert_allclose(entry["tuning"]["cutoff_miou"], cutoff_mious, rtol=1e-6)


def test_rle_files_round_trip_to_the_predicted_masks(tuned):
  config, workdir, summary = tuned
  _, images, logits = _model_and_images(config, workdir, "test")
  masks = images["mask"].astype(bool)
  class_name = summary["chexlocalize"]["settings"]["class_name"]
  assert class_name == "opacity"
  for name in METHODS + CONTROLS:
    entry = summary["chexlocalize"]["methods"][name]
    assert entry["masks"] == f"chexlocalize/{name}.json"
    predicted = protocol.segment(_test_maps(workdir, name), masks,
                                 threshold=entry["threshold"],
                                 probabilities=_probabilities(logits),
                                 cutoff=entry["cutoff"])
    written = coco_rle.read_masks(workdir / entry["masks"])
    assert list(written) == [str(i) for i in images["id"]]
    for i, image_id in enumerate(written):
      assert list(written[image_id]) == [class_name]
      np.testing.assert_array_equal(coco_rle.decode(written[image_id][class_name]),
                                    np.asarray(predicted[i]))


def test_summary_and_report_record_the_settings(tuned):
  config, workdir, summary = tuned
  saved = json.load(open(workdir / "summary.json"))["chexlocalize"]
  assert saved["settings"] == {
      "threshold": "tuned", "gate": True, "quantize": False, "num_resamples": 50,
      "class_name": "opacity", "thresholds": list(protocol.THRESHOLDS),
      "cutoffs": list(protocol.CUTOFFS), "true_positives_only": False,
      "tuned_on": "validation"}
  report = open(workdir / "report.md").read()
  assert "## CheXlocalize protocol" in report
  for name in METHODS + CONTROLS:
    entry = saved["methods"][name]
    assert (f"| `{name}` | {entry['miou'][0]:.3f} [{entry['miou'][1]:.3f}, "
            f"{entry['miou'][2]:.3f}] |") in report


def test_rerun_resumes_and_a_missing_rle_file_is_written_again(tuned):
  config, workdir, summary = tuned
  kept = results.part_path(str(workdir), "localization-chexlocalize-gradient")
  redo = workdir / "chexlocalize" / "random.json"
  mtime = os.path.getmtime(kept)
  before = open(workdir / "results.csv").read()
  os.remove(redo)
  again = main_lib.run(config, str(workdir))
  assert os.path.getmtime(kept) == mtime
  assert redo.exists()
  assert again["chexlocalize"] == json.loads(json.dumps(summary["chexlocalize"]))
  assert open(workdir / "results.csv").read() == before


def test_otsu_without_gate_scores_true_positives_only(data_dir, tuned, tmp_path):
  # The tuned run's model is reused: no validation maps with 'otsu'.
  config = _config(data_dir, tuned[0].model_weights, threshold="otsu", quantize=True)
  summary = main_lib.run(config, str(tmp_path))
  images = common.evaluation_images(config, "test")
  entry = summary["chexlocalize"]["methods"]["gradient"]
  assert entry["threshold"] == "otsu" and entry["cutoff"] is None
  assert summary["chexlocalize"]["num_validation_images"] == 0
  out = protocol.evaluate(_test_maps(tmp_path, "gradient"), images["mask"].astype(bool),
                          quantize=True, seed=rng.integer_seed(config.seed, rng.STATS),
                          num_resamples=50)
  np.testing.assert_allclose(entry["miou"], out["miou"], equal_nan=True)
  assert entry["num_scored"] == out["num_scored"]


def test_nan_model_makes_the_protocol_invalid(data_dir, tmp_path):
  weights = experiment_runs.untrained_weights(tmp_path / "nan.npz", nan=True)
  config = _config(data_dir, weights, threshold="tuned")
  summary = main_lib.run(config, str(tmp_path / "run"))
  rows = results.read_rows(tmp_path / "run" / "results.csv")
  for name in METHODS + CONTROLS:
    entry = summary["chexlocalize"]["methods"][name]
    assert "not finite" in entry["invalid"]
    assert np.isnan(entry["miou"]).all() and np.isnan(entry["hit_rate"]).all()
    assert entry["num_scored"] == {"iou": 0, "hit": 0}
    assert entry["masks"] is None
    assert np.isnan(results.values(rows, method=name, metric="chexlocalize_iou")).all()
  assert not os.path.exists(tmp_path / "run" / "chexlocalize")
  assert "**INVALID**" in open(tmp_path / "run" / "report.md").read()


def _with_block(**values):
  """The quick config with ``chexlocalize`` replaced (ConfigDict fields keep their type)."""
  config = experiment_runs.quick_config("localization", "/nonexistent")
  config.chexlocalize = ml_collections.ConfigDict({**config.chexlocalize.to_dict(), **values})
  return config


@pytest.mark.parametrize("key, value", [
    ("enabled", "yes"), ("threshold", 0.5), ("threshold", "mean"), ("gate", 1),
    ("quantize", "no"), ("num_resamples", 0), ("num_resamples", 2.5),
    ("class_name", ""),
])
def test_bad_values_give_one_clear_error(key, value):
  config = _with_block(**{"enabled": True, key: value})
  with pytest.raises(errors.ConfigError, match=rf"config\.chexlocalize\.{key}="):
    main_lib.validate(config)


def test_quantize_goes_with_otsu_and_unknown_keys_are_refused():
  config = _with_block(threshold="tuned", quantize=True)
  with pytest.raises(errors.ConfigError, match=r"config\.chexlocalize\.quantize=True"):
    main_lib.validate(config)
  config = _with_block(thershold="otsu")
  with pytest.raises(errors.ConfigError, match=r"unknown key\(s\) \['thershold'\]"):
    main_lib.validate(config)


def test_default_config_turns_the_protocol_on_and_quick_off():
  default = experiment_runs.quick_config("localization", "/x")
  assert not experiment.enabled(default)
  from saliency_jax import config as config_lib
  assert experiment.enabled(config_lib.load_file(experiment_runs.config_path("localization")))
