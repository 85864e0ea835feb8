"""The shortcut-learning study: its scores by hand, its checks, the quick preset end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saliency_jax import config as config_lib
from saliency_jax import data as data_lib
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax.data import synthetic
from saliency_jax.experiments import shortcut

from tests.experiments import experiment_runs


# ------------------------------------------------------------- by hand ---

def test_mass_and_area_share_by_hand():
  s = np.array([[1.0, 3.0], [0.0, 4.0]])
  m = np.array([[True, False], [False, True]])
  assert shortcut.mass(s, m) == pytest.approx(5 / 8)
  assert shortcut.area_share(m) == pytest.approx(0.5)
  assert np.isnan(shortcut.mass(np.zeros((2, 2)), m))  # no mass: undefined
  assert np.isnan(shortcut.mass(s, np.zeros((2, 2), bool)))  # no mask: undefined


def test_detection_auroc_is_the_pairwise_probability():
  a = np.array([0.3, 0.5, 0.2, 0.5])
  b = np.array([0.1, 0.5, 0.4, 0.0])
  expected = np.mean([[1.0 if x > y else 0.5 if x == y else 0.0 for y in b] for x in a])
  assert shortcut.detection_auroc(a, b) == pytest.approx(expected)
  assert shortcut.detection_auroc(b, b) == pytest.approx(0.5)  # same maps: cannot tell


def test_verdict_needs_both_intervals_and_finite_values():
  entry = {"detection_auroc": [0.9, 0.6, 1.0], "invalid": None,
           "marker_mass_normalized": {"shortcut": [3.0, 1.5, 4.0]}}
  assert shortcut.verdict(entry) == shortcut.REVEALS
  assert shortcut.verdict({**entry, "detection_auroc": [0.7, 0.45, 0.9]}) == shortcut.MISSES
  assert shortcut.verdict({**entry, "marker_mass_normalized": {
      "shortcut": [1.2, 0.9, 1.5]}}) == shortcut.MISSES
  assert shortcut.verdict({**entry, "invalid": "2 maps were not finite"}) == "INVALID"
  assert shortcut.verdict({**entry, "detection_auroc": [np.nan] * 3}) == "INVALID"


# ---------------------------------------------------------- validation ---

def _quick():
  return config_lib.load_file(experiment_runs.config_path("shortcut"), "quick")


@pytest.mark.parametrize("key, value, match", [
    ("synthetic.shortcut", None, r"config\.synthetic\.shortcut=None"),
    ("synthetic.shortcut", 0.5, r"config\.synthetic\.shortcut=0\.5.*\(0\.5, 1\]"),
    ("dataset", "rsna_pneumonia", r"config\.dataset='rsna_pneumonia'.*synthetic_cxr"),
    ("trained_dir", "/tmp/elsewhere", r"config\.trained_dir=.*trains both"),
    ("controls", ("random", "mean_training_mask"), r"config\.controls.*mean_training_mask"),
])
def test_bad_settings_fail_in_validate(key, value, match):
  config = _quick()
  node, *rest = key.split(".")
  if rest:
    config[node][rest[0]] = value
  else:
    config[key] = value
  # A real dataset or a missing run fails the shared checks first: ask the study.
  check = shortcut.validate if key in ("dataset", "trained_dir") else main_lib.validate
  with pytest.raises(errors.ConfigError, match=match):
    check(config)


def test_accuracy_variants_remove_and_flip_the_marker():
  config = _quick()
  config.synthetic.update(num_train=4, num_validation=4, num_test=24)
  variants = shortcut.accuracy_variants(config)
  labels = variants["as_drawn"]["label"].astype(bool)
  for name in ("removed", "flipped"):
    np.testing.assert_array_equal(variants[name]["label"], labels)  # same patients
  marked = {k: v["marker_mask"].any(axis=(1, 2)) for k, v in variants.items()}
  np.testing.assert_array_equal(marked["as_drawn"], labels)  # rate 1.0
  assert not marked["removed"].any()
  np.testing.assert_array_equal(marked["flipped"], ~labels)
  # Without the marker the images are exactly the clean model's data.
  np.testing.assert_array_equal(variants["removed"]["image"], synthetic.generate(
      0, 8, 24, image_size=config.image_size)["image"])


# ------------------------------------------------------------ end to end ---

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  return experiment_runs.run_quick("shortcut", tmp_path_factory)


def _index(image_id: str) -> int:
  return int(image_id.rsplit("-", 1)[1])


def test_quick_preset_runs_and_the_model_uses_the_marker(quick_run):
  config, workdir, summary = quick_run
  on_disk = json.loads((workdir / "summary.json").read_text())
  assert on_disk["experiment"] == "shortcut" and on_disk["uses_marker"] is True
  drop = on_disk["accuracy"]["accuracy_drop"]["flipped"]
  assert drop[1] > 0  # the flipped marker costs accuracy: the model uses it
  assert set(on_disk["maps"]) == set(config.methods) | set(config.controls)
  for entry in on_disk["maps"].values():
    for key in shortcut.SCORES:
      assert set(entry[key]) == set(shortcut.MODELS)
      assert all(np.isfinite(entry[key][m]).all() for m in shortcut.MODELS)
    assert np.isfinite(entry["detection_auroc"]).all()
  # Model-free controls are the same map under both models: AUROC exactly 1/2.
  for control in ("random", "edge", "center_prior"):
    assert on_disk["maps"][control]["detection_auroc"] == [0.5, 0.5, 0.5]
  report = (workdir / "report.md").read_text().splitlines()
  assert report[2].startswith("**Does the shortcut model use the marker?** **yes**")
  assert report[4].startswith("**Methods that reveal the shortcut:**")
  for figure in ("shortcut_marker_mass", "shortcut_detection_auroc", "shortcut_maps"):
    assert (workdir / "figures" / f"{figure}.png").exists()


def test_scores_equal_a_numpy_recomputation_from_the_saved_maps(quick_run):
  config, workdir, summary = quick_run
  film = np.load(workdir / "maps" / "shortcut-images.npz")
  ids = [str(i) for i in film["id"]]
  # The masks the study read from the dataset are the generator's, exactly.
  truth = [synthetic.phantom(config.synthetic.seed, _index(i), image_size=config.image_size,
                             shortcut=config.synthetic.shortcut) for i in ids]
  marker = np.stack([t["marker_mask"] for t in truth])
  opacity = np.stack([t["opacity_mask"] for t in truth])
  np.testing.assert_array_equal(film["mask"], marker)  # what the runner scored against
  assert marker.any(axis=(1, 2)).all() and opacity.any(axis=(1, 2)).all()
  rows = experiment_runs.read_results(workdir)
  for name in list(config.methods) + list(config.controls):
    maps = np.load(workdir / "maps" / f"shortcut-{name}.npy").astype(np.float64)
    assert maps.shape == (2, len(ids), config.image_size, config.image_size)
    entry = summary["maps"][name]
    masses = {}
    for s, model in enumerate(shortcut.MODELS):
      got = {k: [] for k in ("marker", "opacity", "marker_n", "opacity_n", "point")}
      for n in range(len(ids)):
        m = maps[s, n]
        for key, mask in (("marker", marker[n]), ("opacity", opacity[n])):
          share = float(m[mask].sum() / m.sum())
          got[key].append(share)
          got[f"{key}_n"].append(share / (mask.sum() / mask.size))
        peaks = np.argwhere(m == m.max())
        got["point"].append(np.mean([marker[n][r, c] for r, c in peaks]))  # tolerance 0
      masses[model] = np.array(got["marker"])
      for key, summary_key in (("marker", "marker_mass"), ("opacity", "opacity_mass"),
                               ("marker_n", "marker_mass_normalized"),
                               ("opacity_n", "opacity_mass_normalized"),
                               ("point", "pointing_game_marker")):
        assert entry[summary_key][model][0] == pytest.approx(np.mean(got[key]), rel=1e-5)
      csv_mass = {r["image_id"]: float(r["value"]) for r in rows
                  if r["method"] == name and r["metric"] == "relevance_mass_accuracy"
                  and r["model"] == f"{config.model}-{model}"}
      np.testing.assert_allclose([csv_mass[i] for i in ids], got["marker"], rtol=1e-4)
    a, b = masses["shortcut"], masses["clean"]
    auroc = np.mean([[1.0 if x > y else 0.5 if x == y else 0.0 for y in b] for x in a])
    assert entry["detection_auroc"][0] == pytest.approx(auroc)
    assert entry["detection_auroc"][1] <= auroc <= entry["detection_auroc"][2]


def test_the_dataset_stores_the_part_masks(quick_run):
  config, _, _ = quick_run
  test = data_lib.load(config, "test")  # the build the run made, read back
  start, count = synthetic.split_ranges(config.synthetic.num_train,
                                        config.synthetic.num_validation,
                                        config.synthetic.num_test)["test"]
  drawn = synthetic.generate(config.synthetic.seed, start, count,
                             image_size=config.image_size, shortcut=1.0)
  for key in ("image", "label", "mask", "marker_mask", "opacity_mask"):
    np.testing.assert_array_equal(test[key], drawn[key], err_msg=key)
  chosen = data_lib.source(config, "test").read([0, 3], exact=True)
  np.testing.assert_array_equal(chosen["marker_mask"], drawn["marker_mask"][[0, 3]])
