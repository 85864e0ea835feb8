"""The config keys every experiment shares, and their validation.

Config files under ``configs/`` start from :func:`base_config` and set what
their experiment needs; ``main`` validates the resolved config before anything
runs, so a bad value fails at once with one line naming the key.
"""

from __future__ import annotations

import importlib.util
import json
import os

import ml_collections
from ml_collections import config_dict

# experiment name -> "module:function(config, workdir)"; imported lazily.
EXPERIMENTS = {
    "train": "saliency_jax.train:train_and_evaluate",
    "benchmark": "saliency_jax.experiments.benchmark:run",
    "cascade": "saliency_jax.experiments.cascade:run",
    "localization": "saliency_jax.experiments.localization:run",
    "label_randomization": "saliency_jax.experiments.label_randomization:run",
    "repeatability": "saliency_jax.experiments.repeatability:run",
    "reproducibility": "saliency_jax.experiments.reproducibility:run",
    "study": "saliency_jax.experiments.study:run",
}

DATASETS = ("synthetic_cxr", "rsna_pneumonia", "siim_acr_pneumothorax", "image_folder")
MODELS = ("small_cnn", "inception_v3", "densenet121")


def base_config() -> ml_collections.ConfigDict:
  """Keys shared by every experiment (DESIGN.md), with laptop-CPU defaults."""
  c = ml_collections.ConfigDict()
  c.experiment = "train"
  c.seed = 0
  # Data.
  c.dataset = "synthetic_cxr"
  c.data_dir = config_dict.placeholder(str)   # TFDS data dir; None: TFDS default
  c.manual_dir = config_dict.placeholder(str)  # where manual downloads live
  c.image_size = 128
  c.synthetic = ml_collections.ConfigDict(dict(
      seed=0, num_train=2000, num_validation=250, num_test=250, prevalence=0.5,
      shortcut=config_dict.placeholder(float)))
  # Bad files / CSV rows in a manual download: 'error' stops the build naming
  # the first one; 'skip' leaves them out and counts them in the metadata.
  c.on_bad_input = "error"
  c.real_data = ml_collections.ConfigDict(dict(
      classes="opacity_vs_normal",  # RSNA: or "all" (keeps "No Lung Opacity / Not Normal")
      split_seed=0,  # patient-level splits, independent of config.seed
      split_fractions=(0.8, 0.1, 0.1),
      split_dir=config_dict.placeholder(str),  # {train,validation,test}.txt, one id a line
      num_workers=config_dict.placeholder(int)))  # decoding processes; None: all cores
  # Model.
  c.model = "small_cnn"
  c.width = 0.25
  c.num_classes = 2
  # Evaluate these weights instead of training: a Keras InceptionV3 /
  # DenseNet121 file (.h5, .weights.h5, .keras) or our .npz export.
  c.model_weights = config_dict.placeholder(str)
  # Train starting from: a training run's directory (its latest checkpoint)
  # or a weights file as above (a new classifier if the classes differ).
  c.init_from = config_dict.placeholder(str)
  # Images in [0, 1] -> the network's input: 'none', 'inception' ([-1, 1]),
  # 'imagenet' (mean/std); 'auto': what the weights expect ('none' without).
  c.preprocessing = "auto"
  # Saliency.
  c.methods = ("gradient",)
  c.num_images = 16
  return c


def train_config() -> ml_collections.ConfigDict:
  """Optimization settings, the ``config.train`` block."""
  return ml_collections.ConfigDict(dict(
      batch_size=32,
      steps=600,
      learning_rate=2e-3,
      warmup_steps=50,
      weight_decay=1e-4,
      augment=True,
      randomize_labels=False,
      # Train on the first num_train examples of the training split; None: all.
      num_train=config_dict.placeholder(int),
      log_every=50,
      eval_every=100,
      checkpoint_every=100,
      keep_checkpoints=2,
  ))


# The eight methods of the journal paper (Arun et al. 2021).
PAPER_METHODS = ("gradient", "smoothgrad", "integrated_gradients",
                 "smoothgrad_ig", "gradcam", "xrai", "guided_backprop",
                 "guided_gradcam")


def study_config() -> ml_collections.ConfigDict:
  """Keys of the saliency experiments (cascade, localization, ...)."""
  c = base_config()
  c.train = train_config()
  c.trained_dir = config_dict.placeholder(str)  # reuse a finished training run
  c.models_dir = config_dict.placeholder(str)  # None: WORKDIR/models
  c.methods = PAPER_METHODS
  c.preset = "arun2021"
  c.hparams = ml_collections.ConfigDict()  # per-method overrides of the preset
  c.targets = "predicted"  # or "true": the class each map explains
  c.batch_size = config_dict.placeholder(int)  # None: the backend's default
  c.strategy = config_dict.placeholder(str)
  c.similarity = ("spearman", "ssim", "hog_spearman")
  c.localization = ("auprc", "dice", "soft_dice", "pointing_game",
                    "relevance_mass_accuracy")
  c.verdict_metric = "ssim"  # the journal paper's similarity
  c.baseline_pairs = 50
  c.bootstrap_resamples = 1000
  c.report = ml_collections.ConfigDict(dict(example_images=2))
  return c


def _check_choice(key: str, value, allowed) -> None:
  if value not in allowed:
    raise ValueError(f"config.{key}={value!r} is not allowed; expected one of "
                     f"{', '.join(map(repr, allowed))}")


def _check_positive(config: ml_collections.ConfigDict, keys: tuple[str, ...]) -> None:
  for key in keys:
    node = config
    for part in key.split("."):
      node = node[part]
    if node <= 0:
      raise ValueError(f"config.{key}={node!r}: expected a positive number")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad key and what it allows."""
  _check_choice("experiment", config.experiment, tuple(EXPERIMENTS))
  _check_choice("dataset", config.dataset, DATASETS)
  _check_choice("model", config.model, MODELS)
  _check_positive(config, ("image_size", "width", "num_classes"))
  _check_weights(config)
  if "train" in config:
    subset = config.train.get("num_train")
    if subset is not None and subset < config.train.batch_size:
      raise ValueError(f"config.train.num_train={subset!r}: expected None (the whole "
                       "training split) or at least config.train.batch_size examples")
    _check_positive(config, tuple(f"train.{k}" for k in (
        "batch_size", "steps", "learning_rate", "log_every", "eval_every",
        "checkpoint_every", "keep_checkpoints")))
  if "preset" in config:
    _check_study(config)
  if "study" in config:
    from saliency_jax.experiments import study  # pylint: disable=g-import-not-at-top
    for test in config.study.tests:
      _check_choice("study.tests", test, study.TESTS)
  if "benchmark" in config:
    _check_positive(config, ("num_images", "benchmark.repeats",
                             "benchmark.matmul_size", "benchmark.in_channels"))
  if config.dataset == "synthetic_cxr":
    s = config.synthetic
    _check_positive(config, ("synthetic.num_train", "synthetic.num_validation",
                             "synthetic.num_test"))
    if not 0.0 < s.prevalence < 1.0:
      raise ValueError(f"config.synthetic.prevalence={s.prevalence!r}: "
                       "expected a fraction strictly between 0 and 1")
    if s.shortcut is not None and not 0.0 <= s.shortcut <= 1.0:
      raise ValueError(f"config.synthetic.shortcut={s.shortcut!r}: expected "
                       "None (off) or a probability in [0, 1]")
  else:
    _check_real_data(config)


def _check_real_data(config: ml_collections.ConfigDict) -> None:
  """Keys of the datasets built from manual downloads (RSNA, SIIM-ACR, image_folder)."""
  # Imported here: the data package imports JAX, which flag errors should not wait for.
  from saliency_jax.data import manual  # pylint: disable=g-import-not-at-top
  manual.check_manual_dir(config.dataset, config.manual_dir)
  _check_choice("on_bad_input", config.on_bad_input, manual.ON_BAD_INPUT)
  r = config.real_data
  _check_choice("real_data.classes", r.classes, ("opacity_vs_normal", "all"))
  manual.check_split_fractions(tuple(r.split_fractions))
  if r.split_dir is not None and not os.path.isdir(r.split_dir):
    raise ValueError(f"config.real_data.split_dir={r.split_dir!r}: no such directory")
  if r.num_workers is not None and r.num_workers < 0:
    raise ValueError(f"config.real_data.num_workers={r.num_workers}: expected None "
                     "(all cores), 0 (no worker processes) or a positive count")


# As saliency_jax.models: kept here so that a flag error never waits for JAX.
PREPROCESSING = ("auto", "none", "inception", "imagenet")
KERAS_MODELS = ("inception_v3", "densenet121")
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


def training_run_dir(path: str) -> str | None:
  """Where the training run of directory ``path`` keeps ``checkpoints/``.

  ``path`` itself (``configs/train.py`` runs) or ``path/models/trained`` (an
  experiment's workdir); None when neither has checkpoints.
  """
  for directory in (path, os.path.join(path, "models", "trained")):
    if os.path.isdir(os.path.join(directory, "checkpoints")):
      return directory
  return None


def _check_weights_file(key: str, path: str, config: ml_collections.ConfigDict) -> None:
  if not os.path.isfile(path):
    raise ValueError(f"config.{key}={path!r}: no such file")
  lower = path.lower()
  if lower.endswith(KERAS_SUFFIXES):
    if config.model not in KERAS_MODELS:
      raise ValueError(f"config.{key}={path!r}: Keras weights are read for "
                       f"config.model in {KERAS_MODELS}, not {config.model!r}")
    if config.width != 1.0:
      raise ValueError(f"config.{key}={path!r}: Keras weights are the published "
                       f"network; set config.width=1.0 (not {config.width})")
  elif not lower.endswith(".npz"):
    raise ValueError(f"config.{key}={path!r}: expected a Keras file (ending in "
                     f"{', '.join(KERAS_SUFFIXES)}) or an .npz export")


def _check_weights(config: ml_collections.ConfigDict) -> None:
  """``model_weights`` (evaluate), ``init_from`` (train from) and ``preprocessing``."""
  _check_choice("preprocessing", config.get("preprocessing", "auto"), PREPROCESSING)
  weights, init_from = config.get("model_weights"), config.get("init_from")
  if weights is not None and init_from is not None:
    raise ValueError("config.model_weights and config.init_from are both set; "
                     "model_weights evaluates the weights as they are, init_from "
                     "trains from them: set one")
  if weights is not None:
    if config.get("trained_dir"):
      raise ValueError("config.model_weights and config.trained_dir are both set; "
                       "each gives the model to evaluate: set one")
    if os.path.isdir(weights):
      raise ValueError(f"config.model_weights={weights!r} is a directory; for a "
                       "training run's directory use config.trained_dir (evaluate "
                       "it) or config.init_from (train from it)")
    _check_weights_file("model_weights", weights, config)
  if init_from is not None:
    if os.path.isdir(init_from):
      if training_run_dir(init_from) is None:
        raise ValueError(f"config.init_from={init_from!r}: no checkpoints/ there "
                         "nor under models/trained/")
    else:
      _check_weights_file("init_from", init_from, config)


def preprocessing_for(config: ml_collections.ConfigDict) -> str:
  """``config.preprocessing``, 'auto' made explicit: what the weights expect.

  Keras files: their network's ``preprocess_input``; an ``.npz`` export or a
  training run's directory: what it recorded; no weights: 'none'.
  """
  mode = config.get("preprocessing", "auto")
  source = config.get("model_weights") or config.get("init_from")
  if mode != "auto" or not source:
    return "none" if mode == "auto" else mode
  if os.path.isdir(source):
    run = training_run_dir(source) or source
    for record in (os.path.join(run, "summary.json"),
                   os.path.join(source, "config.json")):
      if os.path.exists(record):
        with open(record) as f:
          found = json.load(f).get("preprocessing", "auto")
        if found != "auto":
          return found
    return "none"
  from saliency_jax.models import weights  # pylint: disable=g-import-not-at-top
  return weights.expected_preprocessing(config.model, source)


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config``, or a copy with ``preprocessing='auto'`` made explicit.

  What a run records in ``config.json`` and runs with.
  """
  if config.get("preprocessing", "auto") != "auto":
    return config
  out = ml_collections.ConfigDict(config.to_dict())
  out.preprocessing = preprocessing_for(config)
  return out


def _check_study(config: ml_collections.ConfigDict) -> None:
  # Imported here: the method registry imports JAX, which the CLI's flag
  # errors should not wait for.
  from saliency_jax.metrics import localization, similarity  # pylint: disable=g-import-not-at-top
  from saliency_jax.saliency import METHODS, PRESETS, STRATEGIES  # pylint: disable=g-import-not-at-top
  for key, names, allowed in (("methods", config.methods, METHODS),
                              ("similarity", config.similarity, similarity.SIMILARITY),
                              ("localization", config.localization,
                               localization.LOCALIZATION)):
    if not names:
      raise ValueError(f"config.{key} is empty; expected some of {sorted(allowed)}")
    for name in names:
      _check_choice(key, name, tuple(sorted(allowed)))
  _check_choice("preset", config.preset, tuple(sorted(PRESETS)) + (None,))
  _check_choice("targets", config.targets, ("predicted", "true"))
  if config.strategy is not None:
    _check_choice("strategy", config.strategy, STRATEGIES)
  if config.verdict_metric not in config.similarity:
    raise ValueError(f"config.verdict_metric={config.verdict_metric!r} must be "
                     f"one of config.similarity={tuple(config.similarity)}")
  for method in config.hparams:
    _check_choice("hparams", method, tuple(sorted(METHODS)))
  _check_positive(config, ("num_images", "baseline_pairs", "bootstrap_resamples",
                           "report.example_images"))
  if config.num_images < 2:
    raise ValueError(f"config.num_images={config.num_images}: the different-"
                     "image baseline needs at least 2 images")
  if "cascade" in config:
    _check_choice("cascade.mode", config.cascade.mode, ("cascade", "independent"))
    if config.cascade.num_blocks is not None and config.cascade.num_blocks < 1:
      raise ValueError(f"config.cascade.num_blocks={config.cascade.num_blocks}: "
                       "expected None (all blocks) or a positive count")
  _check_agreement(config)
  _check_localization(config)


def _check_agreement(config: ml_collections.ConfigDict) -> None:
  """Keys of the repeatability and reproducibility experiments."""
  if "replicates" in config and (isinstance(config.replicates, bool) or not
                                 isinstance(config.replicates, int)
                                 or config.replicates < 2):
    raise ValueError(f"config.replicates={config.replicates!r}: expected an "
                     "integer >= 2 (a pair needs two replicates)")
  if "other_model" in config:
    _check_choice("other_model", config.other_model, MODELS)
    _check_positive(config, ("other_width",))
    if (config.other_model, config.other_width) == (config.model, config.width):
      raise ValueError(f"config.other_model={config.other_model!r} at "
                       f"config.other_width={config.other_width} is config.model "
                       "itself; use configs/repeatability.py for replicates")
    _check_choice("intra_replicate", config.intra_replicate, ("reuse", "train"))


def _check_localization(config: ml_collections.ConfigDict) -> None:
  """Keys of the localization and label-randomization experiments."""
  if "controls" in config:
    from saliency_jax.experiments.localization import CONTROLS  # pylint: disable=g-import-not-at-top
    if not config.controls:
      raise ValueError(f"config.controls is empty; expected some of {CONTROLS}")
    for name in config.controls:
      _check_choice("controls", name, CONTROLS)
    both = sorted(set(config.controls) & set(config.methods))
    if both:
      raise ValueError(f"config.controls: {both} also in config.methods; "
                       "list each map once")
  if "primary_metric" in config and config.primary_metric not in config.localization:
    raise ValueError(f"config.primary_metric={config.primary_metric!r} must be "
                     f"one of config.localization={tuple(config.localization)}")
  if "label_randomization" in config:
    target = config.label_randomization.target_train_accuracy
    if not 0.0 < target <= 1.0:
      raise ValueError(f"config.label_randomization.target_train_accuracy="
                       f"{target!r}: expected an accuracy in (0, 1]")
    _check_positive(config, ("label_randomization.max_steps",))
    subset = config.label_randomization.num_train
    most = (config.synthetic.num_train if config.dataset == "synthetic_cxr"
            else float("inf"))  # a real split's size is known once it is built
    if subset is not None and not config.train.batch_size <= subset <= most:
      raise ValueError(f"config.label_randomization.num_train={subset!r}: "
                       "expected None, or a count between config.train.batch_size "
                       "and the training split's size")


def load_file(path: str, preset: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(preset)`` of a config file, as ``--config=path:preset`` does."""
  spec = importlib.util.spec_from_file_location(
      "_saliency_jax_config_" + os.path.basename(path).removesuffix(".py"), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()
