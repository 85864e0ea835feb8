"""``config.metric_options``: per-metric options, validated, scored, recorded.

Options reach the metric through the batched scoring (equal to the direct
call), bad ones fail in ``validate`` naming ``config.metric_options.<metric>
.<option>``, ``summary.json`` records every metric's options with their
defaults, and a rerun with other options is refused (or, without its
``config.json``, computes its parts again).
"""

import json
import os

import ml_collections
import numpy as np
import pytest
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import models
from saliency_jax import results
from saliency_jax import workdir as workdir_lib
from saliency_jax.metrics import localization
from saliency_jax.metrics import scoring
from saliency_jax.metrics import similarity


def _maps(seed, shape):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _masks():
  masks = np.zeros((3, 24, 24), bool)
  masks[:, 3:9, 4:14] = True
  masks[1, 15:, 15:] = True
  masks[2] = False
  masks[2, 20:, :3] = True  # far from the first maps' peaks
  return masks


# ---------------------------------------------------------------- scoring ---

def test_localization_options_reach_the_metric():
  maps = _maps(0, (2, 3, 24, 24))
  maps[..., 3:9, 4:14] += 0.3  # a bright region: Otsu keeps a different area
  masks = _masks()
  options = {"dice": {"threshold": "otsu"}, "iou": {"threshold": 0.9},
             "pointing_game": {"tolerance": 0}, "auprc": {}}
  names = ["dice", "iou", "pointing_game"]
  got = scoring.localization_scores(maps, masks, names, options)
  default = scoring.localization_scores(maps, masks, names)
  direct = {"dice": lambda s, m: localization.dice(s, m, threshold="otsu"),
            "iou": lambda s, m: localization.iou(s, m, threshold=0.9),
            "pointing_game": lambda s, m: localization.pointing_game(s, m, tolerance=0)}
  for name in names:
    want = [[float(direct[name](maps[s, i], masks[i])) for i in range(3)]
            for s in range(2)]
    np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-7, err_msg=name)
    # The options changed something: not the defaults' scores.
    assert not np.allclose(got[name], default[name]), name
  # A ConfigDict (as the config holds them) is the same options.
  as_config = scoring.localization_scores(
      maps, masks, ["dice"], ml_collections.ConfigDict(options))
  np.testing.assert_array_equal(as_config["dice"], got["dice"])


def test_pointing_game_tolerance_by_hand():
  s = np.zeros((1, 16, 16), np.float32)
  s[0, 2, 2] = 1.0  # the peak, 5 px left of the mask's first column
  m = np.zeros((1, 16, 16), bool)
  m[0, 2, 7:10] = True
  for tolerance, hit in ((4, 0.0), (5, 1.0), (15, 1.0)):
    got = scoring.localization_scores(s, m, ["pointing_game"],
                                      {"pointing_game": {"tolerance": tolerance}})
    assert got["pointing_game"][0] == hit, tolerance


def test_similarity_options_reach_the_metric():
  a, b = _maps(1, (2, 48, 48)), _maps(2, (2, 48, 48))
  b[1] = 0.5 * a[1] + 0.5 * b[1]
  options = {"ssim": {"gaussian": True},
             "hog_spearman": {"pixels_per_cell": 8, "cells_per_block": 2}}
  names = ["ssim", "hog_spearman"]
  got = scoring.similarity_scores(a, b, names, options)
  default = scoring.similarity_scores(a, b, names)
  for i in range(2):
    np.testing.assert_allclose(
        got["ssim"][i], float(similarity.ssim(a[i], b[i], gaussian=True)), rtol=1e-5)
    np.testing.assert_allclose(
        got["hog_spearman"][i],
        similarity.hog_spearman(a[i], b[i], pixels_per_cell=8, cells_per_block=2),
        rtol=1e-6)
  for name in names:
    assert not np.allclose(got[name], default[name]), name


def test_resolved_options_are_the_defaults_with_the_given_on_top():
  got = scoring.resolved_options(
      ["auprc", "dice", "pointing_game", "ssim"],
      ml_collections.ConfigDict({"dice": {"threshold": "otsu"},
                                 "iou": {"threshold": 0.5}}))
  assert got == {"auprc": {},
                 "dice": {"threshold": "otsu", "top_k_percent": 5.0},
                 "pointing_game": {"tolerance": 15},
                 "ssim": {"data_range": 1.0, "gaussian": False}}
  assert scoring.option_defaults("hog_spearman") == {
      "orientations": 9, "pixels_per_cell": 16, "cells_per_block": 3}


# ------------------------------------------------------------- validation ---

def _config(experiment="localization", **options):
  config = config_lib.load_file(experiment, "quick")
  config.metric_options = ml_collections.ConfigDict(options)
  return config


def test_defaults_are_the_signatures_and_leave_old_configs_unchanged():
  # The block the command line overrides holds every option of every metric
  # at the default of the metric's own signature.
  with_options = {n: scoring.option_defaults(n)
                  for n in sorted(localization.LOCALIZATION) + sorted(similarity.SIMILARITY)
                  if scoring.option_defaults(n)}
  assert config_lib.METRIC_OPTION_DEFAULTS == with_options
  for config in (config_lib.base_config(), config_lib.study_config()):
    assert config.metric_options.to_dict() == with_options
    assert not config_lib.given_metric_options(config.metric_options)
    # Options at their defaults are not recorded: a workdir (or sweep)
    # recorded before the block was filled still resumes.
    resolved = config_lib.resolve(config)
    assert not resolved.metric_options
    flat = workdir_lib.flat_config(json.loads(resolved.to_json_best_effort()))
    assert not [k for k in flat if k.startswith("metric_options")]
  config = config_lib.base_config()
  config.metric_options.dice.threshold = "otsu"
  config.metric_options.iou.threshold = "mask_area"  # the default: dropped
  assert config_lib.resolve(config).metric_options.to_dict() == {
      "dice": {"threshold": "otsu"}}
  config_lib.validate(_config())


@pytest.mark.parametrize("options,match", [
    ({"dic": {"threshold": "otsu"}},
     r"^config\.metric_options\.dic: unknown metric; expected one of auprc, .*dice"),
    ({"dice": {"thresh": "otsu"}},
     r"^config\.metric_options\.dice\.thresh: dice takes no option 'thresh'; "
     r"expected some of threshold, top_k_percent$"),
    ({"auprc": {"threshold": 0.5}},
     r"^config\.metric_options\.auprc\.threshold: auprc takes no option .*none"),
    ({"dice": {"threshold": "median"}},
     r"^config\.metric_options\.dice\.threshold='median': dice: threshold must be "
     r"one of \('mask_area', 'otsu', 'top_k_percent'\) or a number"),
    ({"iou": {"top_k_percent": 0}},
     r"^config\.metric_options\.iou\.top_k_percent=0: .*\(0, 100\]"),
    ({"pointing_game": {"tolerance": -1}},
     r"^config\.metric_options\.pointing_game\.tolerance=-1: .*integer >= 0"),
    ({"pointing_game": {"tolerance": 2.5}},
     r"^config\.metric_options\.pointing_game\.tolerance=2\.5: .*integer >= 0"),
    ({"top_k_intersection": {"k": "many"}},
     r"^config\.metric_options\.top_k_intersection\.k='many': .*integer >= 1"),
    ({"ssim": {"gaussian": "yes"}},
     r"^config\.metric_options\.ssim\.gaussian='yes': expected True or False$"),
    ({"ssim": {"data_range": 0}},
     r"^config\.metric_options\.ssim\.data_range=0: ssim: data_range must be"),
    ({"hog_spearman": {"orientations": 0}},
     r"^config\.metric_options\.hog_spearman\.orientations=0: .*positive integer"),
    ({"dice": 5},
     r"^config\.metric_options\.dice=5: expected a dict of dice's options"),
])
def test_bad_options_fail_in_validate_naming_the_key(options, match):
  with pytest.raises(errors.ConfigError, match=match):
    config_lib.validate(_config(**options))


def test_accepted_options_validate():
  config_lib.validate(_config(dice={"threshold": "top_k_percent", "top_k_percent": 10},
                              iou={"threshold": 0.25},
                              pointing_game={"tolerance": 0}))


def test_similarity_options_set_the_image_size_minimum():
  # cascade:quick runs 64 px with hog_spearman; cells of 32 px need 96.
  with pytest.raises(errors.ConfigError,
                     match=r"config\.image_size=64 is too small: hog_spearman .*"
                           r"needs at least 96 px.*change "
                           r"config\.metric_options\.hog_spearman"):
    config_lib.validate(_config("cascade", hog_spearman={"pixels_per_cell": 32}))
  config_lib.validate(_config("cascade", hog_spearman={"pixels_per_cell": 8},
                              ssim={"gaussian": True}))


# ----------------------------------------------------------- end to end ---

def _weights(path):
  """A small_cnn of the quick presets (width 0.125, one channel) as an .npz."""
  model = models.create("small_cnn", num_classes=2, in_channels=1, width=0.125,
                        rngs=nnx.Rngs(0))
  model.eval()
  models.save_npz(str(path), model, name="small_cnn", width=0.125, in_channels=1)
  return str(path)


def _run_config(data_dir, weights, threshold):
  config = config_lib.load_file("localization", "quick")
  config.data_dir = str(data_dir)
  config.model_weights = weights
  config.methods = ("gradient",)
  config.localization = ("dice", "pointing_game")
  config.primary_metric = "dice"
  config.report.example_images = config.num_images  # every map kept
  config.metric_options = ml_collections.ConfigDict(
      {"dice": {"threshold": threshold}, "pointing_game": {"tolerance": 0}})
  return config


def _dice_rows_equal_the_metric_on_the_maps(workdir, threshold):
  rows = results.read_rows(workdir / "results.csv")
  film = np.load(workdir / "maps" / "localization-images.npz")
  maps = np.load(workdir / "maps" / "localization-gradient.npy")[0]
  dice = {r["image_id"]: float(r["value"]) for r in rows
          if r["method"] == "gradient" and r["metric"] == "dice"}
  assert len(dice) == len(maps)
  for image_id, m, mask in zip(film["id"], maps, film["mask"]):
    want = float(localization.dice(m, mask, threshold=threshold))
    np.testing.assert_allclose(dice[str(image_id)], want, rtol=1e-6, atol=1e-7)
  return dice


def test_options_are_scored_recorded_and_a_change_is_not_reused(tmp_path):
  data_dir, workdir = tmp_path / "data", tmp_path / "run"
  weights = _weights(tmp_path / "w.npz")
  config = _run_config(data_dir, weights, "otsu")
  main_lib.run(config, str(workdir))
  otsu = _dice_rows_equal_the_metric_on_the_maps(workdir, "otsu")
  summary = json.load(open(workdir / "summary.json"))
  # Every metric the header lists (localization and similarity), with defaults.
  recorded = summary["metric_options"]
  assert sorted(recorded) == sorted(summary["localization"] + summary["similarity"])
  assert recorded["dice"] == {"threshold": "otsu", "top_k_percent": 5.0}
  assert recorded["pointing_game"] == {"tolerance": 0}
  assert recorded["ssim"] == {"data_range": 1.0, "gaussian": False}

  # Other options in the same workdir: refused, naming the option.
  other = _run_config(data_dir, weights, "mask_area")
  with pytest.raises(errors.WorkdirError,
                     match=r"other settings \(config\.metric_options\.dice\.threshold\)"):
    main_lib.run(other, str(workdir))
  # Even past that check (config.json gone), the parts' fingerprint holds the
  # options: the parts are computed again, not reused with Otsu's scores.
  os.remove(workdir / "config.json")
  main_lib.run(other, str(workdir))
  area = _dice_rows_equal_the_metric_on_the_maps(workdir, "mask_area")
  assert area != otsu
  summary = json.load(open(workdir / "summary.json"))
  assert summary["metric_options"]["dice"]["threshold"] == "mask_area"


# ---------------------------------------------------------- command line ---

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(tmp_path, *args):
  """``python -m saliency_jax.main --config=localization:quick ARGS``."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  return subprocess.run(
      [sys.executable, "-m", "saliency_jax.main", "--config=localization:quick",
       f"--workdir={tmp_path / 'run'}", f"--config.data_dir={tmp_path / 'data'}",
       *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_command_line_options_arrive_typed_and_are_recorded(tmp_path):
  result = _cli(tmp_path, f"--config.model_weights={_weights(tmp_path / 'w.npz')}",
                "--config.methods=('gradient',)", "--config.num_images=2",
                "--config.report.example_images=2",
                "--config.localization=('dice', 'iou', 'pointing_game')",
                "--config.primary_metric=dice",
                "--config.metric_options.dice.threshold=otsu",
                "--config.metric_options.iou.threshold=0.25",
                "--config.metric_options.pointing_game.tolerance=0")
  assert result.returncode == 0, result.stderr[-3000:]
  workdir = tmp_path / "run"
  recorded = json.load(open(workdir / "summary.json"))["metric_options"]
  assert recorded["dice"] == {"threshold": "otsu", "top_k_percent": 5.0}
  assert recorded["iou"] == {"threshold": 0.25, "top_k_percent": 5.0}
  assert recorded["pointing_game"] == {"tolerance": 0}
  assert isinstance(recorded["iou"]["threshold"], float)
  # config.json holds what was set, nothing left at its default.
  assert json.load(open(workdir / "config.json"))["metric_options"] == {
      "dice": {"threshold": "otsu"}, "iou": {"threshold": 0.25},
      "pointing_game": {"tolerance": 0}}
  _dice_rows_equal_the_metric_on_the_maps(workdir, "otsu")


@pytest.mark.parametrize("arg, expected", [
    ("dice.thresh=otsu", "error: unknown key config.metric_options.dice.thresh; "
     "config.metric_options.dice has keys: threshold, top_k_percent"),
    ("dice.threshold=median", "error: config.metric_options.dice.threshold='median': "
     "dice: threshold must be"),
    ("pointing_game.tolerance=-1", "error: config.metric_options.pointing_game."
     "tolerance=-1: "),
])
def test_bad_command_line_option_is_one_error_line(tmp_path, arg, expected):
  result = _cli(tmp_path, f"--config.metric_options.{arg}")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(expected), result.stderr[-2000:]
  assert not os.path.exists(tmp_path / "run")
