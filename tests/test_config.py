"""Config files, their presets and validation: what cannot work fails before anything runs."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import models
from saliency_jax.metrics import similarity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every config file and its presets ('' is the default).
PRESETS = {
    "aggregate": ("",),
    "benchmark": ("", "gpu", "quick", "paper", "paper_quick"),
    "cascade": ("", "independent", "bottom_up", "quick", "paper"),
    "label_randomization": ("", "quick", "paper"),
    "faithfulness": ("", "quick", "paper"),
    "localization": ("", "quick", "paper"),
    "repeatability": ("", "quick", "paper"),
    "reproducibility": ("", "quick", "paper"),
    "shortcut": ("", "quick"),
    "study": ("", "quick", "paper"),
    "train": ("", "quick", "randomized_labels"),
}
STUDIES = ("cascade", "faithfulness", "label_randomization", "localization",
           "repeatability", "reproducibility")


def _load(name: str, preset: str = ""):
  return config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, f"{name}.py"),
                              preset or None)


def _set(config, key: str, value) -> None:
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


def test_every_config_file_has_its_presets_listed():
  assert config_lib.packaged_configs() == sorted(PRESETS)


@pytest.mark.parametrize("name, preset", [
    (name, preset) for name, presets in PRESETS.items() for preset in presets])
def test_every_config_and_preset_validates(name, preset):
  config_lib.validate(_load(name, preset))
  with open(os.path.join(config_lib.CONFIGS_DIR, f"{name}.py")) as f:
    # The workdir defaults to ./runs/NAME (the aggregate's: SWEEP_DIR/aggregate).
    assert f.readline().rstrip("\n") == (
        f"# Run: python -m saliency_jax.main --config={name}"
        + (" --config.sweep_dir=/tmp/saliency_jax/sweep" if name == "aggregate" else ""))


# ------------------------------------------------------------------ presets ---

@pytest.mark.parametrize("name", STUDIES)
def test_paper_preset_is_the_journal_papers_settings(name):
  c = _load(name, "paper")
  assert (c.model, c.width, c.image_size, c.num_images) == ("inception_v3", 1.0, 320, 100)
  assert {k: c.train[k] for k in ("steps", "batch_size", "learning_rate", "warmup_steps",
                                  "eval_every", "checkpoint_every")} == dict(
      steps=20000, batch_size=32, learning_rate=1e-3, warmup_steps=500,
      eval_every=1000, checkpoint_every=1000)


# name -> (phantoms for training, steps, warmup, log_every, eval/checkpoint
# every, methods, images); None where the file has no saliency keys.
QUICK = {
    "train": (64, 20, 2, 5, 10, None, None),
    "localization": (64, 60, 5, 20, 60, ("gradient", "gradcam"), 6),
    "faithfulness": (64, 60, 5, 20, 60, ("gradient", "gradcam"), 6),
    "label_randomization": (64, 60, 5, 20, 60, ("gradient", "gradcam"), 4),
    "cascade": (256, 150, 10, 50, 150, ("gradient", "gradcam", "smoothgrad"), 4),
    "repeatability": (256, 150, 10, 50, 150, ("gradient", "gradcam"), 4),
    "reproducibility": (256, 150, 10, 50, 150, ("gradient", "gradcam"), 4),
}


@pytest.mark.parametrize("name", sorted(QUICK))
def test_quick_preset_values(name):
  num_train, steps, warmup, log_every, every, methods, num_images = QUICK[name]
  c = _load(name, "quick")
  assert (c.image_size, c.width) == (64, 0.125)
  assert (c.synthetic.num_train, c.synthetic.num_validation, c.synthetic.num_test) == (
      num_train, 32, 32)
  t = c.train
  assert (t.steps, t.batch_size, t.warmup_steps, t.log_every, t.eval_every,
          t.checkpoint_every, t.learning_rate) == (
              steps, 16, warmup, log_every, every, every, 2e-3)
  if methods is not None:
    assert (c.methods, c.num_images, c.bootstrap_resamples) == (methods, num_images, 200)


def test_presets_keep_what_only_their_file_sets():
  assert _load("cascade", "quick").hparams.smoothgrad.num_samples == 4
  assert _load("cascade", "paper").cascade.num_blocks == 11
  assert _load("repeatability", "paper").replicates == 3
  assert _load("label_randomization", "paper").label_randomization.max_steps == 100000
  quick = _load("reproducibility", "quick")
  assert (quick.other_model, quick.other_width) == ("small_cnn", 0.25)
  paper = _load("reproducibility", "paper")
  assert (paper.other_model, paper.other_width, paper.intra_replicate) == (
      "densenet121", 1.0, "train")
  assert _load("study", "quick").similarity == ("spearman", "ssim", "hog_spearman")


# --------------------------------------------------------------- bad values ---

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("name, key, value, message", [
    # Seeds: non-negative integers below 2**63; bools refused.
    ("train", "seed", -1, r"^config\.seed=-1: expected a non-negative integer"),
    ("train", "seed", 2**63, r"^config\.seed=9223372036854775808: expected"),
    ("train", "synthetic.seed", -2, r"^config\.synthetic\.seed=-2: expected a non-negative"),
    ("train", "real_data.split_seed", -1, r"^config\.real_data\.split_seed=-1: expected"),
    # Non-finite numbers anywhere, nested blocks and tuples included.
    ("train", "width", NAN, r"^config\.width=nan: expected a finite number"),
    ("train", "train.learning_rate", NAN, r"^config\.train\.learning_rate=nan: expected a finite"),
    ("train", "train.learning_rate", INF, r"^config\.train\.learning_rate=inf: expected a finite"),
    ("train", "synthetic.prevalence", -INF, r"^config\.synthetic\.prevalence=-inf: expected a fin"),
    ("train", "real_data.split_fractions", (0.8, NAN, 0.1),
     r"^config\.real_data\.split_fractions\[1\]=nan: expected a finite"),
    ("cascade", "hparams.smoothgrad", dict(noise_level=INF),
     r"^config\.hparams\.smoothgrad\.noise_level=inf: expected a finite"),
    ("benchmark", "benchmark.min_seconds", NAN, r"^config\.benchmark\.min_seconds=nan"),
    # Training that train.py would change or fail on after the data is built.
    ("train", "train.warmup_steps", 600, r"^config\.train\.warmup_steps=600: expected a step "
     r"count in \[0, config\.train\.steps=600\)"),
    ("train", "train.warmup_steps", -1, r"^config\.train\.warmup_steps=-1: expected"),
    ("train", "train.weight_decay", -1e-4, r"^config\.train\.weight_decay=-0\.0001: expected a "
     "non-negative"),
    ("train", "num_classes", 1, r"^config\.num_classes=1: expected at least 2 classes"),
    ("train", "train.num_train", 2001, r"^config\.train\.num_train=2001: exceeds the 2000 "
     r"training phantoms \(config\.synthetic\.num_train\)"),
    ("train", "train.batch_size", 2001, r"^config\.train\.batch_size=2001: exceeds the 2000"),
    # Saliency settings that would fail once maps are made.
    ("cascade", "report.example_images", 17, r"^config\.report\.example_images=17: expected at "
     r"most config\.num_images=16"),
    ("cascade", "hparams.smoothgrad", dict(num_sample=4), r"^config\.hparams\.smoothgrad\."
     r"num_sample: smoothgrad takes no keyword 'num_sample'; expected some of \[.*'num_samples'"),
    ("cascade", "hparams.integrated_gradients", dict(batch_size=4),
     r"^config\.hparams\.integrated_gradients\.batch_size: integrated_gradients takes no "
     "keyword 'batch_size'"),
    ("cascade", "trained_dir", "/nonexistent", r"^config\.trained_dir='/nonexistent': no "
     r"summary\.json there"),
    ("benchmark", "benchmark.preset", "fast", r"^config\.benchmark\.preset='fast' is not allowed"),
    ("benchmark", "benchmark.hparams", dict(occlusion=dict(size=3)),
     r"^config\.benchmark\.hparams\.occlusion\.size: occlusion takes no keyword"),
])
def test_bad_values_fail_naming_the_key(name, key, value, message):
  config = _load(name)
  _set(config, key, value)
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.validate(config)


@pytest.mark.parametrize("key", config_lib.SEEDS)
def test_a_bool_is_no_seed(key):
  config = _load("train")
  _set(config, key, True)
  with pytest.raises(errors.ConfigError, match=rf"^config\.{key}=True: expected a "
                     "non-negative integer seed"):
    config_lib.validate(config)


def test_every_failure_is_a_config_error():
  # The shared checks that existed before raise the project's error too.
  for name, key, value in (("train", "model", "vgg"), ("train", "train.steps", 0),
                           ("cascade", "targets", "all"), ("cascade", "methods", ()),
                           ("localization", "primary_metric", "iou"),
                           ("repeatability", "replicates", 1)):
    config = _load(name)
    _set(config, key, value)
    with pytest.raises(errors.ConfigError, match=rf"^config\.{key}"):
      main_lib.validate(config)  # the shared keys, then the experiment's own


# -------------------------------------------------------------- image sizes ---

WIDTH = 0.125  # the topology, and so the feature map's size, does not depend on it


@functools.cache
def _abstract(name: str):
  """(graphdef, state) of ``name`` built abstractly: shapes only, nothing allocated."""
  return nnx.split(nnx.eval_shape(lambda: models.create(
      name, num_classes=2, in_channels=1, width=WIDTH, rngs=nnx.Rngs(0))))


def _feature_shape(name: str, size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Shapes of the GradCAM layer and the logits of ``name`` at ``size`` px (nothing computed)."""
  graphdef, state = _abstract(name)

  def forward(state, x):
    m = nnx.merge(graphdef, state)
    m.eval()
    features = m.features(x)
    return features, m.head(features)

  features, logits = jax.eval_shape(
      forward, state, jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32))
  return features.shape, logits.shape


@pytest.mark.parametrize("name", sorted(models.MIN_IMAGE_SIZE))
def test_model_minimum_is_the_smallest_input_that_works(name):
  least = models.MIN_IMAGE_SIZE[name]
  features, logits = _feature_shape(name, least)
  assert min(features[1:3]) == 1 and logits == (1, 2)
  features, _ = _feature_shape(name, least - 1)
  assert min(features[1:3]) == 0  # an empty map: NaN logits, no error
  # A run without phantoms (the benchmark) is limited by the model only.
  config = _load("benchmark", "quick")
  config.model, config.image_size = name, least
  config_lib.validate(config)
  config.image_size = least - 1
  with pytest.raises(errors.ConfigError, match=rf"^config\.image_size={least - 1} is too "
                     rf"small: {name} \(config\.model\) needs at least {least} px"):
    config_lib.validate(config)


def test_other_models_minimum_is_checked_too():
  config = _load("reproducibility", "quick")
  config.other_model, config.image_size = "inception_v3", 64
  with pytest.raises(errors.ConfigError, match=r"inception_v3 \(config\.other_model\) needs "
                     "at least 75 px"):
    config_lib.validate(config)


def test_phantoms_need_their_minimum():
  config = _load("train")
  config.image_size = config_lib.SYNTHETIC_MIN_IMAGE_SIZE
  config_lib.validate(config)
  config.image_size = 7
  with pytest.raises(errors.ConfigError) as raised:
    config_lib.validate(config)
  # Every unmet minimum in one line, and the size that satisfies them all.
  assert str(raised.value) == (
      "config.image_size=7 is too small: small_cnn (config.model) needs at least 8 px "
      "(below it, its GradCAM layer has no pixels and its logits are NaN); synthetic_cxr "
      "(config.dataset) needs at least 32 px (the smallest size phantoms are drawn at); "
      "raise config.image_size to at least 32")


def test_hog_spearman_minimum_is_three_cells_of_sixteen_pixels():
  rng = np.random.default_rng(0)
  a, b = rng.random((2, 48, 48))
  assert np.isfinite(similarity.hog_spearman(a, b))
  with pytest.raises(ValueError, match="at least 48 x 48"):
    similarity.hog_spearman(a[:47, :47], b[:47, :47])
  config = _load("cascade")
  config.image_size = 48
  config_lib.validate(config)
  config.image_size = 32
  with pytest.raises(errors.ConfigError, match=(
      r"^config\.image_size=32 is too small: hog_spearman \(in config\.similarity\) needs "
      r"at least 48 px \(.*3 x 3 blocks of 16-pixel cells.*\); raise config\.image_size to "
      r"at least 48 or drop hog_spearman from config\.similarity$")):
    config_lib.validate(config)
  config.similarity = ("spearman", "ssim")
  config_lib.validate(config)


def test_localization_compares_no_maps_so_needs_no_similarity_minimum():
  config = _load("localization")
  config.image_size = 32
  config_lib.validate(config)


def test_ssim_minimum_is_its_window_and_below_every_models():
  rng = np.random.default_rng(0)
  a, b = rng.random((2, 7, 7)).astype(np.float32)
  assert np.isfinite(similarity.ssim(a, b))
  with pytest.raises(ValueError, match="at least 7 x 7"):
    similarity.ssim(a[:6, :6], b[:6, :6])
  # So it never binds: the smallest model takes 8 px.
  assert min(models.MIN_IMAGE_SIZE.values()) >= 7


def test_occlusion_window_must_fit_the_image():
  config = _load("cascade")
  config.methods = ("gradient", "occlusion")
  config.image_size, config.hparams.occlusion = 48, dict(window=50)
  with pytest.raises(errors.ConfigError, match=(
      r"^config\.image_size=48 is too small: occlusion \(in config\.methods\) needs at least "
      r"50 px \(its window is 50 px\); raise config\.image_size to at least 50 or set a "
      r"smaller config\.hparams\.occlusion\.window$")):
    config_lib.validate(config)
  config.image_size = 50
  config_lib.validate(config)
