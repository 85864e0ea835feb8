"""The config keys every experiment shares, their presets and their validation.

Config files (the packaged ones in ``saliency_jax/configs/``, found by name:
:func:`resolve_config_path`) start from :func:`base_config` (or
:func:`study_config`), set what their experiment needs and build their
``:quick`` and ``:paper`` presets from :func:`quick_preset`,
:func:`quick_study_preset` and :func:`paper_preset`. ``main`` validates the
resolved config before anything runs, so a bad value fails at once with one
line (:class:`errors.ConfigError`) naming the key. The keys only one
experiment has (``cascade``, ``controls``, ``replicates``, ...) are checked by
that experiment's module (its ``validate``), which ``main`` calls next: this
module never imports the experiments.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import math
import numbers
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import ml_collections
from ml_collections import config_dict

from saliency_jax import errors

# experiment name -> "module:function(config, workdir)"; imported lazily.
EXPERIMENTS = {
    "train": "saliency_jax.train:run",
    "benchmark": "saliency_jax.experiments.benchmark:run",
    "cascade": "saliency_jax.experiments.cascade:run",
    "localization": "saliency_jax.experiments.localization:run",
    "faithfulness": "saliency_jax.experiments.faithfulness:run",
    "shortcut": "saliency_jax.experiments.shortcut:run",
    "label_randomization": "saliency_jax.experiments.label_randomization:run",
    "repeatability": "saliency_jax.experiments.repeatability:run",
    "reproducibility": "saliency_jax.experiments.reproducibility:run",
    "study": "saliency_jax.experiments.study:run",
    "aggregate": "saliency_jax.experiments.aggregate:run",
}

DATASETS = ("synthetic_cxr", "rsna_pneumonia", "siim_acr_pneumothorax", "image_folder")
MODELS = ("small_cnn", "inception_v3", "densenet121")

# Every localization and similarity metric with options -> its keyword
# defaults: the metrics' signatures (scoring.option_defaults), written out
# because reading them imports JAX, which a flag error should not wait for;
# tests/test_metric_options.py holds the two equal.
METRIC_OPTION_DEFAULTS = {
    "dice": {"threshold": "mask_area", "top_k_percent": 5.0},
    "iou": {"threshold": "mask_area", "top_k_percent": 5.0},
    "pointing_game": {"tolerance": 15},
    "top_k_intersection": {"k": 1000},
    "ssim": {"data_range": 1.0, "gaussian": False},
    "hog_spearman": {"orientations": 9, "pixels_per_cell": 16, "cells_per_block": 3},
}


def metric_options_block() -> ml_collections.ConfigDict:
  """``config.metric_options``: one sub-dict per metric of
  :data:`METRIC_OPTION_DEFAULTS`, each option at its default.

  Typed by the default, so a command-line override parses as the metric
  takes it (``--config.metric_options.pointing_game.tolerance=0`` an int);
  an option whose default is a rule's name also takes a number
  (``--config.metric_options.iou.threshold=0.5``): it parses as a Python
  literal, a bare word staying a string.
  """
  def field(value: Any) -> Any:
    return (config_dict.FieldReference(value, field_type=object)
            if isinstance(value, str) else value)
  return ml_collections.ConfigDict({
      name: ml_collections.ConfigDict({k: field(v) for k, v in options.items()})
      for name, options in METRIC_OPTION_DEFAULTS.items()})


def given_metric_options(options: Any) -> dict[str, Any]:
  """``config.metric_options`` without what is left at its default.

  metric -> {option: value} of the options that differ from
  :data:`METRIC_OPTION_DEFAULTS` (in value or type); a metric with none is
  left out. Unknown metrics and options, and a metric's value that is not a
  dict, are kept as given, for :func:`validate` to name.
  """
  out: dict[str, Any] = {}
  for name, given in (options or {}).items():
    if not hasattr(given, "items"):
      out[name] = given
      continue
    defaults = METRIC_OPTION_DEFAULTS.get(name, {})
    changed = {k: v for k, v in given.items()
               if k not in defaults or type(v) is not type(defaults[k])
               or v != defaults[k]}
    if changed:
      out[name] = changed
  return out


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
  # Per-metric options of the localization and similarity metrics, e.g.
  # metric_options.dice.threshold = "otsu" (or 'top_k_percent', a number),
  # .pointing_game.tolerance = 0, .ssim.gaussian = True,
  # .hog_spearman.pixels_per_cell = 8; on the command line
  # --config.metric_options.dice.threshold=otsu. Every option starts at its
  # metric's default (METRIC_OPTION_DEFAULTS); those left there are dropped
  # from the recorded config (resolve).
  c.metric_options = metric_options_block()
  # Training also writes its scalars (loss, accuracy, validation AUC, learning
  # rate) as TensorBoard event files into <run dir>/tensorboard/ (no TensorFlow).
  c.tensorboard = False
  # Several processes (hosts) in one run: jax.distributed.initialize() with
  # these (None: detected from SLURM, Cloud TPU, Kubernetes or MPI).
  c.distributed = ml_collections.ConfigDict(dict(
      enabled=False,
      coordinator=config_dict.placeholder(str),  # 'host:port' of process 0
      num_processes=config_dict.placeholder(int),
      process_id=config_dict.placeholder(int)))
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
      # Several seeds (config.num_seeds, repeatability's replicates) in one
      # vmapped step where they fit the device; False: one after another.
      seeds_at_once=True,
      # Each split whole in host and device memory (True) or read batch by
      # batch from its files (False); 'auto': in memory below 1 GiB of float32
      # images (data.streaming.IN_MEMORY_LIMIT_BYTES). Same batches either way.
      data_in_memory=config_dict.FieldReference("auto", field_type=object),
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
  # Model evaluations at once: an int, 'auto' (the most that fit
  # memory_fraction of the device, read from the compiled program) or None
  # (the backend's default: GPU/TPU 'auto', CPU 1 dispatched from Python).
  c.batch_size = config_dict.placeholder(object)
  c.strategy = config_dict.placeholder(str)
  c.memory_fraction = 0.75
  # With several devices: split the images ('images'), the model states
  # ('states': cascade stages, replicates) or each map's noise samples / path
  # steps ('samples': few images, many samples) over them; 'auto': images.
  c.shard_over = "auto"
  c.similarity = ("spearman", "ssim", "hog_spearman")
  # Also compared on the signed maps (channel sum, no |.|; Adebayo et al.
  # 2018), written as '<metric>_signed'; some of SIGNED_SIMILARITY.
  c.signed_similarity = ()
  # Null maps put through a randomization test's model states and
  # comparisons beside the methods ('null_<name>' rows; Binder et al. 2023);
  # some of NULL_BASELINES. configs/cascade.py and label_randomization.py
  # turn both on.
  c.null_baselines = ()
  c.localization = ("auprc", "dice", "soft_dice", "pointing_game",
                    "relevance_mass_accuracy")
  c.verdict_metric = "ssim"  # the journal paper's similarity
  c.baseline_pairs = 50
  c.bootstrap_resamples = 1000
  c.report = ml_collections.ConfigDict(dict(example_images=2))
  return c


# ---------------------------------------------------------------- presets ---
# The configs' presets, composed: each config file calls these with what its
# experiment changes and sets its own keys after.

def quick_preset(c: ml_collections.ConfigDict, *, num_train: int, steps: int,
                 warmup_steps: int, log_every: int, every: int | None = None) -> None:
  """``:quick``, in place: a smoke test's data, model and training.

  64 px phantoms (``num_train`` training, 32 validation, 32 test), the model
  at width 0.125, ``steps`` steps of 16 images; evaluates and checkpoints
  every ``every`` steps (None: once, at the last step).
  """
  c.image_size = 64
  c.synthetic.update(num_train=num_train, num_validation=32, num_test=32)
  c.width = 0.125
  every = steps if every is None else every
  c.train.update(steps=steps, batch_size=16, warmup_steps=warmup_steps,
                 log_every=log_every, eval_every=every, checkpoint_every=every)


def quick_study_preset(c: ml_collections.ConfigDict, *, methods: tuple[str, ...],
                       num_images: int, num_train: int, steps: int,
                       warmup_steps: int, log_every: int) -> None:
  """``:quick`` of a saliency experiment, in place: :func:`quick_preset`,
  ``methods`` on ``num_images`` images, 200 bootstrap resamples."""
  quick_preset(c, num_train=num_train, steps=steps, warmup_steps=warmup_steps,
               log_every=log_every)
  c.methods = methods
  c.num_images = num_images
  c.bootstrap_resamples = 200


def paper_preset(c: ml_collections.ConfigDict) -> None:
  """``:paper``, in place: the journal paper's model and training (Arun et al. 2021).

  InceptionV3 (width 1.0) at 320 px, 100 test positives; 20000 steps of 32
  images, peak learning rate 1e-3 after 500 warmup steps, evaluated and
  checkpointed every 1000. For a real dataset and a GPU.
  """
  c.model, c.width, c.image_size = "inception_v3", 1.0, 320
  c.num_images = 100
  c.train.update(steps=20000, batch_size=32, learning_rate=1e-3,
                 warmup_steps=500, eval_every=1000, checkpoint_every=1000)


# ------------------------------------------------------------- validation ---

# Seeds: non-negative integers that jax.random.key takes (signed 64-bit).
SEEDS = ("seed", "synthetic.seed", "real_data.split_seed")
SEED_LIMIT = 2**63
# The smallest image phantoms are drawn at (data/synthetic.py, phantom()).
SYNTHETIC_MIN_IMAGE_SIZE = 32
# Experiments that compare maps with config.similarity (localization scores
# each map against its mask only).
COMPARING_EXPERIMENTS = ("cascade", "label_randomization", "repeatability",
                         "reproducibility", "study")
# Map sizes a metric is asked about, at most (_smallest_accepted).
_PROBE_LIMIT = 2**16
# Keywords of every saliency method that come from the config, not hparams.
_CALL_KEYWORDS = ("key", "batch_size", "strategy")


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _check_choice(key: str, value: Any, allowed) -> None:
  if value not in allowed:
    raise errors.ConfigError(f"config.{key}={value!r} is not allowed; expected one of "
                             f"{', '.join(map(repr, allowed))}")


def _check_positive(config: ml_collections.ConfigDict, keys: tuple[str, ...]) -> None:
  for key in keys:
    value = _get(config, key)
    if value <= 0:
      raise errors.ConfigError(f"config.{key}={value!r}: expected a positive number")


def _check_integer(key: str, value: Any, *, low: int, high: int | None = None,
                   what: str) -> None:
  """``low <= value < high`` and an int (a bool is refused)."""
  if (isinstance(value, bool) or not isinstance(value, int) or value < low
      or (high is not None and value >= high)):
    raise errors.ConfigError(f"config.{key}={value!r}: expected {what}")


def _leaves(node: Any, key: str) -> Iterator[tuple[str, Any]]:
  """(name, value) of every leaf under ``node``; tuple items as ``key[i]``."""
  if isinstance(node, (ml_collections.ConfigDict, dict)):
    for k, v in node.items():
      yield from _leaves(v, f"{key}.{k}")
  elif isinstance(node, (tuple, list)):
    for i, v in enumerate(node):
      yield from _leaves(v, f"{key}[{i}]")
  else:
    yield key, node


def _check_finite(config: ml_collections.ConfigDict) -> None:
  """Every number in the config, nested blocks and tuples included, is finite."""
  for key, value in _leaves(config, "config"):
    if isinstance(value, numbers.Real) and not math.isfinite(value):
      raise errors.ConfigError(f"{key}={value!r}: expected a finite number, "
                               "not NaN or infinity")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises errors.ConfigError naming the first bad key and what it allows.

  Everything that can be known before data, training or maps: the cheap
  checks first (a bad flag fails without importing JAX), the image-size
  minima of the model, data, methods and metrics last.
  """
  _check_finite(config)
  _check_choice("experiment", config.experiment, tuple(EXPERIMENTS))
  _check_choice("dataset", config.dataset, DATASETS)
  _check_choice("model", config.model, MODELS)
  _check_positive(config, ("image_size", "width", "num_classes"))
  _check_integer("num_classes", config.num_classes, low=2,
                 what="at least 2 classes (a softmax over one class learns nothing)")
  for key in SEEDS:
    _check_integer(key, _get(config, key), low=0, high=SEED_LIMIT,
                   what="a non-negative integer seed below 2**63")
  _check_weights(config)
  if not isinstance(config.get("tensorboard", False), bool):
    raise errors.ConfigError(f"config.tensorboard={config.tensorboard!r}: expected "
                             "True (write TensorBoard event files) or False")
  if "distributed" in config:
    check_distributed(config)
  if "train" in config:
    _check_train(config)
  if "preset" in config:
    _check_study(config)
  if "benchmark" in config:
    _check_benchmark(config)
  given = given_metric_options(config.get("metric_options"))
  if given:
    _check_metric_options(given, config.image_size)
  if config.dataset == "synthetic_cxr":
    _check_synthetic(config)
  else:
    _check_real_data(config)
  _check_image_size(config)


def _check_benchmark(config: ml_collections.ConfigDict) -> None:
  """The keys of ``config.benchmark`` that name or size what runs.

  Each of ``config.benchmark.settings`` overrides some of ``model``,
  ``width``, ``image_size``, ``dtype`` and ``cascade_blocks``, and its image
  size must meet the minima of its model and the methods.
  """
  from saliency_jax.saliency import PRESETS  # pylint: disable=g-import-not-at-top
  _check_positive(config, ("num_images", "benchmark.repeats",
                           "benchmark.matmul_size", "benchmark.in_channels",
                           "benchmark.cascade_images"))
  _check_choice("benchmark.preset", config.benchmark.preset,
                tuple(sorted(PRESETS)) + (None,))
  _check_hparams("benchmark.hparams", config.benchmark.hparams)
  b = config.benchmark
  if b.get("reference_images") is not None:
    _check_integer("benchmark.reference_images", b.reference_images, low=1,
                   what="None (every image) or a positive number of images")
  keys = ("model", "width", "image_size", "dtype", "cascade_blocks")
  for i, given in enumerate(b.get("settings") or ()):
    key = f"benchmark.settings[{i}]"
    if not isinstance(given, (dict, ml_collections.ConfigDict)):
      raise errors.ConfigError(f"config.{key}={given!r}: expected a dict of some "
                               f"of {keys}")
    for name in given:
      if name not in keys:
        raise errors.ConfigError(f"config.{key}.{name}: unknown key; expected "
                                 f"some of {keys}")
    s = {"model": config.model, "width": config.width,
         "image_size": config.image_size, "dtype": "float32",
         "cascade_blocks": None, **dict(given)}
    _check_choice(f"{key}.model", s["model"], MODELS)
    _check_choice(f"{key}.dtype", s["dtype"], ("float32", "bfloat16"))
    if (isinstance(s["width"], bool) or not isinstance(s["width"], numbers.Real)
        or s["width"] <= 0):
      raise errors.ConfigError(f"config.{key}.width={s['width']!r}: expected a "
                               "positive number")
    _check_integer(f"{key}.image_size", s["image_size"], low=1,
                   what="a positive number of pixels")
    if s["cascade_blocks"] is not None:
      _check_integer(f"{key}.cascade_blocks", s["cascade_blocks"], low=1,
                     what="None (every block of the model's cascade_order) or a "
                          "positive count")
    if config.get("model_weights") and (s["model"], s["width"]) != (
        config.model, config.width):
      raise errors.ConfigError(f"config.{key}: model {s['model']!r} x{s['width']} "
                               f"is not config.model_weights' ({config.model!r} "
                               f"x{config.width})")
    sized = ml_collections.ConfigDict(config.to_dict())
    sized.model, sized.width, sized.image_size = s["model"], s["width"], s["image_size"]
    short = [n for n in _image_size_needs(sized) if s["image_size"] < n.pixels]
    if short:
      raise errors.ConfigError(
          f"config.{key}.image_size={s['image_size']} is too small: "
          + "; ".join(f"{n.who.replace('config.model', f'config.{key}.model')} "
                      f"needs at least {n.pixels} px ({n.why})" for n in short))


def _check_synthetic(config: ml_collections.ConfigDict) -> None:
  """The phantoms' keys, and training sizes against their training split."""
  s = config.synthetic
  _check_positive(config, ("synthetic.num_train", "synthetic.num_validation",
                           "synthetic.num_test"))
  if not 0.0 < s.prevalence < 1.0:
    raise errors.ConfigError(f"config.synthetic.prevalence={s.prevalence!r}: "
                             "expected a fraction strictly between 0 and 1")
  if s.shortcut is not None and not 0.0 <= s.shortcut <= 1.0:
    raise errors.ConfigError(f"config.synthetic.shortcut={s.shortcut!r}: expected "
                             "None (off) or a probability in [0, 1]")
  if "train" not in config:
    return
  t = config.train
  if t.num_train is not None and t.num_train > s.num_train:
    raise errors.ConfigError(f"config.train.num_train={t.num_train}: exceeds the "
                             f"{s.num_train} training phantoms "
                             "(config.synthetic.num_train)")
  if t.batch_size > s.num_train:
    raise errors.ConfigError(f"config.train.batch_size={t.batch_size}: exceeds the "
                             f"{s.num_train} training phantoms "
                             "(config.synthetic.num_train)")


def _check_train(config: ml_collections.ConfigDict) -> None:
  """The ``config.train`` block."""
  t = config.train
  subset = t.get("num_train")
  if subset is not None and subset < t.batch_size:
    raise errors.ConfigError(f"config.train.num_train={subset!r}: expected None (the "
                             "whole training split) or at least config.train.batch_size "
                             "examples")
  _check_positive(config, tuple(f"train.{k}" for k in (
      "batch_size", "steps", "learning_rate", "log_every", "eval_every",
      "checkpoint_every", "keep_checkpoints")))
  # train.make_optimizer would otherwise cut the warmup short, unsaid.
  _check_integer("train.warmup_steps", t.warmup_steps, low=0, high=t.steps,
                 what=f"a step count in [0, config.train.steps={t.steps})")
  if t.weight_decay < 0:
    raise errors.ConfigError(f"config.train.weight_decay={t.weight_decay!r}: "
                             "expected a non-negative number")
  in_memory = t.get("data_in_memory", "auto")
  if in_memory != "auto" and not isinstance(in_memory, bool):
    raise errors.ConfigError(f"config.train.data_in_memory={in_memory!r}: expected "
                             "'auto' (in memory below 1 GiB of images), True or False")


# ------------------------------------------------------------- image size ---

class _Need(NamedTuple):
  """What ``who`` needs of ``config.image_size``, why, and what else would do."""
  pixels: int
  who: str
  why: str
  instead: str


def _check_image_size(config: ml_collections.ConfigDict) -> None:
  """``config.image_size`` against every minimum of the run, all at once.

  Below a model's minimum its GradCAM layer has no pixels and its logits
  are NaN; below the others the data build, a method or a metric raises
  after training. Imports the model registry and the metrics (JAX).
  """
  size = config.image_size
  short = [need for need in _image_size_needs(config) if size < need.pixels]
  if not short:
    return
  reasons = "; ".join(f"{n.who} needs at least {n.pixels} px ({n.why})" for n in short)
  remedy = f"raise config.image_size to at least {max(n.pixels for n in short)}"
  if len(short) == 1:
    remedy += f" or {short[0].instead}"
  raise errors.ConfigError(f"config.image_size={size} is too small: {reasons}; {remedy}")


def _image_size_needs(config: ml_collections.ConfigDict) -> list[_Need]:
  """The minima of the model(s), the dataset, the methods and the metrics."""
  from saliency_jax import models  # pylint: disable=g-import-not-at-top
  needs = [
      _Need(models.MIN_IMAGE_SIZE[name], f"{name} ({key})",
            "below it, its GradCAM layer has no pixels and its logits are NaN",
            f"choose another {key}")
      for key, name in (("config.model", config.model),
                        ("config.other_model", config.get("other_model")))
      if name in models.MIN_IMAGE_SIZE]
  if config.dataset == "synthetic_cxr" and config.experiment != "benchmark":
    needs.append(_Need(SYNTHETIC_MIN_IMAGE_SIZE, "synthetic_cxr (config.dataset)",
                       "the smallest size phantoms are drawn at",
                       "use another config.dataset"))
  methods = config.get("methods", ())
  if "occlusion" in methods:
    window = _method_hparams(config, "occlusion")["window"]
    pixels = max(window) if isinstance(window, (tuple, list)) else window
    needs.append(_Need(pixels, "occlusion (in config.methods)",
                       f"its window is {window!r} px", "set a smaller "
                       f"{_hparams_key(config)}.occlusion.window"))
  if "similarity" in config and config.experiment in COMPARING_EXPERIMENTS:
    needs.extend(_similarity_needs(config.similarity, config.image_size,
                                   given_metric_options(config.get("metric_options"))))
  return needs


def _similarity_needs(names, size: int, options=None) -> list[_Need]:
  """Each metric's own size rule, asked of the metric (with its
  ``config.metric_options``) at ``size`` (shapes only)."""
  from saliency_jax.metrics import similarity  # pylint: disable=g-import-not-at-top
  needs = []
  for name in names:
    given = dict((options or {}).get(name, {}))
    metric = functools.partial(similarity.SIMILARITY[name], **given)
    refusal = _refusal(metric, size)
    if refusal is not None:
      pixels = _smallest_accepted(metric, size)
      instead = (f"change config.metric_options.{name}" if given
                 else f"drop {name} from config.similarity")
      needs.append(_Need(pixels, f"{name} (in config.similarity)", refusal, instead))
  return needs


def _check_metric_options(options: dict[str, Any], size: int) -> None:
  """Each ``config.metric_options.<metric>.<option>`` is a keyword that metric
  takes, with a value it accepts.

  A value is probed as ``_refusal`` does (shapes only, nothing computed):
  localization metrics on ``size`` x ``size`` maps, similarity metrics on
  maps of the largest probed size, so that a window or cell too large for
  ``config.image_size`` is reported by the image-size check instead.
  """
  # pylint: disable=g-import-not-at-top
  from saliency_jax.metrics import localization, randomization, scoring, similarity
  # pylint: enable=g-import-not-at-top
  names = (tuple(sorted(localization.LOCALIZATION)) + tuple(sorted(similarity.SIMILARITY))
           + tuple(sorted(randomization.RANDOMIZATION)))
  for name in options:
    key = f"config.metric_options.{name}"
    if name not in names:
      raise errors.ConfigError(f"{key}: unknown metric; expected one of "
                               f"{', '.join(names)}")
    given = options[name]
    if not isinstance(given, (dict, ml_collections.ConfigDict)):
      raise errors.ConfigError(f"{key}={given!r}: expected a dict of {name}'s "
                               "options, {option: value}")
    defaults = scoring.option_defaults(name)
    probe, second = ((size, "bool") if name in localization.LOCALIZATION
                     else (_PROBE_LIMIT, "float32"))
    for option, value in given.items():
      if option not in defaults:
        allowed = (f"some of {', '.join(sorted(defaults))}" if defaults
                   else "none: it has no options")
        raise errors.ConfigError(f"{key}.{option}: {name} takes no option "
                                 f"{option!r}; expected {allowed}")
      if isinstance(defaults[option], bool) and not isinstance(value, bool):
        raise errors.ConfigError(f"{key}.{option}={value!r}: expected True or False")
      refusal = _option_refusal(scoring.metric(name), {option: value}, probe,
                                second)
      if refusal is not None:
        raise errors.ConfigError(f"{key}.{option}={value!r}: {refusal}")
    refusal = _option_refusal(scoring.metric(name), dict(given), probe, second)
    if refusal is not None:  # each alone is accepted, not together
      raise errors.ConfigError(f"{key}={dict(given)!r}: {refusal}")


def _option_refusal(metric: Callable[..., Any], options: dict[str, Any],
                    size: int, second: str) -> str | None:
  """``metric``'s own error with ``options`` on two ``size`` x ``size`` maps
  (the second of dtype ``second``: a mask is bool), or None; traced as
  :func:`_refusal` does. A value of a type it cannot use (TypeError) is
  refused too."""
  import jax  # pylint: disable=g-import-not-at-top
  specs = (jax.ShapeDtypeStruct((size, size), jax.numpy.float32),
           jax.ShapeDtypeStruct((size, size), second))
  try:
    jax.eval_shape(functools.partial(metric, **options), *specs)
  except jax.errors.TracerArrayConversionError:  # a host-side metric, past its checks
    pass
  except (ValueError, TypeError) as e:
    return str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
  return None


def _refusal(metric: Callable[..., Any], size: int) -> str | None:
  """``metric``'s own error for two ``size`` x ``size`` maps, or None.

  Traced with ``jax.eval_shape``, nothing computed; a host-side metric
  (``hog_spearman``) stops at its first NumPy call, past its checks.
  """
  import jax  # pylint: disable=g-import-not-at-top
  spec = jax.ShapeDtypeStruct((size, size), jax.numpy.float32)
  try:
    jax.eval_shape(metric, spec, spec)
  except ValueError as e:
    return str(e)
  except jax.errors.TracerArrayConversionError:
    pass
  return None


def _smallest_accepted(metric: Callable[..., Any], refused: int) -> int:
  """The smallest size above ``refused`` that ``metric`` takes (doubling, bisection)."""
  low, high = refused, 2 * refused
  while _refusal(metric, high) is not None:
    if high > _PROBE_LIMIT:  # a metric that refuses every size: a bug
      raise RuntimeError(f"{getattr(metric, '__name__', metric)} refuses maps of "
                         f"every size up to {high}")
    low, high = high, 2 * high
  while high - low > 1:
    middle = (low + high) // 2
    low, high = (low, middle) if _refusal(metric, middle) is None else (middle, high)
  return high


# ------------------------------------------------------- method settings ---

def _hparams_key(config: ml_collections.ConfigDict) -> str:
  """Where the methods' hyper-parameters live: ``hparams`` or ``benchmark.hparams``."""
  return "config.benchmark.hparams" if "benchmark" in config else "config.hparams"


def _method_hparams(config: ml_collections.ConfigDict, method: str) -> dict[str, Any]:
  """``method``'s keywords as a run resolves them: defaults, preset, overrides."""
  from saliency_jax.saliency import METHODS, presets  # pylint: disable=g-import-not-at-top
  block = config.benchmark if "benchmark" in config else config
  overrides = dict(block.get("hparams", {}).get(method, {}))
  defaults = {k: p.default for k, p in _parameters(METHODS[method]).items()
              if p.default is not inspect.Parameter.empty}
  return {**defaults, **presets.hparams_for(block.get("preset"), method, **overrides)}


def _parameters(method: Callable[..., Any]) -> dict[str, inspect.Parameter]:
  resolve = getattr(method, "resolve", None)  # a lazily imported method
  return dict(inspect.signature(resolve() if resolve else method).parameters)


def _check_hparams(key: str, hparams: ml_collections.ConfigDict) -> None:
  """Each ``<key>.<method>.<name>`` is a keyword that method takes."""
  from saliency_jax.saliency import METHODS  # pylint: disable=g-import-not-at-top
  for method in hparams:
    _check_choice(key, method, tuple(sorted(METHODS)))
    allowed = _keywords(METHODS[method])
    for name in hparams[method]:
      if allowed is not None and name not in allowed:
        raise errors.ConfigError(f"config.{key}.{method}.{name}: {method} takes no "
                                 f"keyword {name!r}; expected some of {sorted(allowed)}")


def _keywords(method: Callable[..., Any]) -> set[str] | None:
  """The hyper-parameters ``method`` takes (with those of its ``base``); None: any."""
  parameters = _parameters(method)
  names = {k for k, p in parameters.items() if p.kind == inspect.Parameter.KEYWORD_ONLY}
  if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
    base = parameters.get("base")
    if base is None or not callable(base.default):
      return None
    names |= _keywords(base.default) or set()
  return names - set(_CALL_KEYWORDS) - {"base"}


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
    raise errors.ConfigError(f"config.real_data.split_dir={r.split_dir!r}: "
                             "no such directory")
  if r.num_workers is not None and r.num_workers < 0:
    raise errors.ConfigError(f"config.real_data.num_workers={r.num_workers}: expected "
                             "None (all cores), 0 (no worker processes) or a positive "
                             "count")


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
    raise errors.ConfigError(f"config.{key}={path!r}: no such file")
  lower = path.lower()
  if lower.endswith(KERAS_SUFFIXES):
    if config.model not in KERAS_MODELS:
      raise errors.ConfigError(f"config.{key}={path!r}: Keras weights are read for "
                               f"config.model in {KERAS_MODELS}, not {config.model!r}")
    if config.width != 1.0:
      raise errors.ConfigError(f"config.{key}={path!r}: Keras weights are the published "
                               f"network; set config.width=1.0 (not {config.width})")
  elif not lower.endswith(".npz"):
    raise errors.ConfigError(f"config.{key}={path!r}: expected a Keras file (ending in "
                             f"{', '.join(KERAS_SUFFIXES)}) or an .npz export")


def _check_weights(config: ml_collections.ConfigDict) -> None:
  """``model_weights`` (evaluate), ``init_from`` (train from) and ``preprocessing``."""
  _check_choice("preprocessing", config.get("preprocessing", "auto"), PREPROCESSING)
  weights, init_from = config.get("model_weights"), config.get("init_from")
  if weights is not None and init_from is not None:
    raise errors.ConfigError("config.model_weights and config.init_from are both set; "
                             "model_weights evaluates the weights as they are, init_from "
                             "trains from them: set one")
  if weights is not None:
    if config.get("trained_dir"):
      raise errors.ConfigError("config.model_weights and config.trained_dir are both "
                               "set; each gives the model to evaluate: set one")
    if os.path.isdir(weights):
      raise errors.ConfigError(f"config.model_weights={weights!r} is a directory; for a "
                               "training run's directory use config.trained_dir "
                               "(evaluate it) or config.init_from (train from it)")
    _check_weights_file("model_weights", weights, config)
  if init_from is not None:
    if os.path.isdir(init_from):
      if training_run_dir(init_from) is None:
        raise errors.ConfigError(f"config.init_from={init_from!r}: no checkpoints/ there "
                                 "nor under models/trained/")
    else:
      _check_weights_file("init_from", init_from, config)
  trained = config.get("trained_dir")
  if trained and not os.path.isfile(os.path.join(trained, "summary.json")):
    raise errors.ConfigError(f"config.trained_dir={trained!r}: no summary.json there; "
                             "expected a finished training run (configs/train.py's "
                             "--workdir, or an experiment's WORKDIR/models/trained)")


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
  from saliency_jax.models import files  # pylint: disable=g-import-not-at-top
  return files.expected_preprocessing(config.model, source)


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config``, or a copy with ``preprocessing='auto'`` made explicit and
  ``metric_options`` reduced to what differs from the defaults
  (:func:`without_default_metric_options`).

  What a run records in ``config.json`` and runs with.
  """
  config = without_default_metric_options(config)
  if config.get("preprocessing", "auto") != "auto":
    return config
  out = ml_collections.ConfigDict(config.to_dict())
  out.preprocessing = preprocessing_for(config)
  return out


def without_default_metric_options(config: ml_collections.ConfigDict
                                   ) -> ml_collections.ConfigDict:
  """``config``, or a copy whose ``metric_options`` holds only
  :func:`given_metric_options`: a config that sets none records
  ``metric_options: {}`` as before the block was filled with the defaults,
  so earlier workdirs and sweeps keep their fingerprints. (The metrics
  take the same defaults either way.)"""
  if "metric_options" not in config:
    return config
  given = given_metric_options(config.metric_options)
  if config.metric_options.to_dict() == given:
    return config
  out = ml_collections.ConfigDict(config.to_dict())
  out.metric_options = ml_collections.ConfigDict(given)
  return out


def _check_study(config: ml_collections.ConfigDict) -> None:
  # Imported here: the method registry imports JAX, which the CLI's flag
  # errors should not wait for.
  # pylint: disable=g-import-not-at-top
  from saliency_jax.metrics import localization, similarity
  from saliency_jax.saliency import METHODS, PRESETS, STRATEGIES
  # pylint: enable=g-import-not-at-top
  for key, names, allowed in (("methods", config.methods, METHODS),
                              ("similarity", config.similarity, similarity.SIMILARITY),
                              ("localization", config.localization,
                               localization.LOCALIZATION)):
    if not names:
      raise errors.ConfigError(f"config.{key} is empty; expected some of "
                               f"{sorted(allowed)}")
    for name in names:
      _check_choice(key, name, tuple(sorted(allowed)))
  _check_choice("preset", config.preset, tuple(sorted(PRESETS)) + (None,))
  _check_choice("targets", config.targets, ("predicted", "true"))
  if config.strategy is not None:
    _check_choice("strategy", config.strategy, STRATEGIES)
  _check_batching(config)
  if config.verdict_metric not in config.similarity:
    raise errors.ConfigError(f"config.verdict_metric={config.verdict_metric!r} must be "
                             f"one of config.similarity={tuple(config.similarity)}")
  _check_signed_and_nulls(config)
  _check_hparams("hparams", config.hparams)
  _check_positive(config, ("num_images", "baseline_pairs", "bootstrap_resamples",
                           "report.example_images"))
  if config.num_images < 2:
    raise errors.ConfigError(f"config.num_images={config.num_images}: the different-"
                             "image baseline needs at least 2 images")
  examples = config.report.example_images
  if examples > config.num_images:
    raise errors.ConfigError(f"config.report.example_images={examples}: expected at "
                             f"most config.num_images={config.num_images}")


# Similarity metrics that config.signed_similarity may compute on signed maps
# (rank and linear correlation; SSIM's data range and HOG assume [0, 1] maps).
SIGNED_SIMILARITY = ("spearman", "pearson")
# config.null_baselines: uniform noise drawn afresh at every stage, and
# RandomCAM (random channel weights, fixed; the activations change).
NULL_BASELINES = ("noise", "random_cam")
# Experiments that draw config.null_baselines (a study through its cascade
# and label randomization).
NULL_EXPERIMENTS = ("cascade", "label_randomization", "study")


def _check_signed_and_nulls(config: ml_collections.ConfigDict) -> None:
  """``signed_similarity`` and ``null_baselines``: known names, each once."""
  for key, allowed in (("signed_similarity", SIGNED_SIMILARITY),
                       ("null_baselines", NULL_BASELINES)):
    names = config.get(key, ())
    if isinstance(names, str) or not isinstance(names, (tuple, list)):
      raise errors.ConfigError(f"config.{key}={names!r}: expected a tuple of names, "
                               f"some of {allowed}")
    for name in names:
      _check_choice(key, name, allowed)
    if len(set(names)) != len(names):
      raise errors.ConfigError(f"config.{key}={tuple(names)}: a name is listed twice")
  if config.get("signed_similarity") and config.experiment not in COMPARING_EXPERIMENTS:
    raise errors.ConfigError(
        f"config.signed_similarity={tuple(config.signed_similarity)}: experiment "
        f"{config.experiment!r} compares no maps; expected () or one of "
        f"{COMPARING_EXPERIMENTS}")
  if config.get("null_baselines") and config.experiment not in NULL_EXPERIMENTS:
    raise errors.ConfigError(
        f"config.null_baselines={tuple(config.null_baselines)}: only the "
        f"randomization tests draw null baselines ({', '.join(NULL_EXPERIMENTS)}); "
        f"expected () for {config.experiment!r}")


SHARD_OVER = ("auto", "images", "states", "samples", "none")


def _check_batching(config: ml_collections.ConfigDict) -> None:
  """``batch_size``, ``memory_fraction`` and ``shard_over``."""
  size = config.batch_size
  if size is not None and size != "auto" and (
      isinstance(size, bool) or not isinstance(size, int) or size < 1):
    raise errors.ConfigError(f"config.batch_size={size!r}: expected a positive "
                             "integer, 'auto' (the most that fit the device) or "
                             "None (the backend's default)")
  fraction = config.memory_fraction
  if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
      or not 0 < fraction <= 1):
    raise errors.ConfigError(f"config.memory_fraction={fraction!r}: expected a "
                             "number in (0, 1], the share of the device's memory "
                             "a program may use")
  _check_choice("shard_over", config.shard_over, SHARD_OVER)


def check_distributed(config: ml_collections.ConfigDict) -> None:
  """``config.distributed``: checked first, before JAX starts (main.run)."""
  d = config.distributed
  if not isinstance(d.enabled, bool):
    raise errors.ConfigError(f"config.distributed.enabled={d.enabled!r}: expected "
                             "True or False")
  given = [k for k in ("coordinator", "num_processes", "process_id")
           if d.get(k) is not None]
  if given and not d.enabled:
    raise errors.ConfigError(f"config.distributed.{given[0]} is set but "
                             "config.distributed.enabled is False")
  if d.num_processes is not None:
    _check_integer("distributed.num_processes", d.num_processes, low=1,
                   what="a positive number of processes")
  if d.process_id is not None:
    high = d.num_processes if d.num_processes is not None else None
    _check_integer("distributed.process_id", d.process_id, low=0, high=high,
                   what="a process index in [0, num_processes)")



def seed_sweep(arg: str | None = None):
  """The jobs of a config's ``sweep()``: its test for training seeds 0..4,
  the same for every preset ``arg`` (launch/sweep.py; each job trains its own
  models; merge them with the ``aggregate`` config)."""
  del arg
  for seed in range(5):
    yield {"seed": seed}

# The configs that ship with the package (saliency_jax/configs/NAME.py).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def packaged_configs() -> list[str]:
  """Names of the packaged configs (``cascade``, ``train``, ...), sorted."""
  return sorted(f.removesuffix(".py") for f in os.listdir(CONFIGS_DIR)
                if f.endswith(".py") and not f.startswith("_"))


def resolve_config_path(spec: str) -> str:
  """The config file ``spec`` (``path[:preset]``) names, ``:preset`` kept.

  A file that exists at ``path`` (relative to the working directory) wins;
  otherwise ``NAME``, ``NAME.py`` and ``configs/NAME.py`` name the packaged
  ``saliency_jax/configs/NAME.py``, so ``--config=cascade:quick`` works from
  any directory and a user's own file still loads.

  Raises:
    ConfigError: ``path`` is no file and names no packaged config (the
      message lists them).
  """
  path, colon, preset = spec.partition(":")
  if os.path.isfile(path):
    return spec
  name = path.removeprefix("configs/").removesuffix(".py")
  names = packaged_configs()
  if name not in names:
    raise errors.ConfigError(f"{path}: no such file, nor a packaged config; expected "
                             f"a config file's path or one of {', '.join(names)}")
  return os.path.join(CONFIGS_DIR, f"{name}.py") + colon + preset


def run_name(spec: str) -> str:
  """``NAME[-preset]`` of a config spec: the default workdir's folder name.

  ``configs/cascade.py:quick`` -> ``cascade-quick``; ``mine.py`` -> ``mine``.
  """
  path, _, preset = spec.partition(":")
  name = os.path.basename(path).removesuffix(".py")
  return f"{name}-{preset}" if preset else name


def load_file(path: str, preset: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(preset)`` of a config file, as ``--config=path:preset`` does.

  ``path`` as :func:`resolve_config_path` takes it: a file, or a packaged
  config's name (``cascade``, ``cascade.py``, ``configs/cascade.py``).
  """
  path = resolve_config_path(path)
  spec = importlib.util.spec_from_file_location(
      "_saliency_jax_config_" + os.path.basename(path).removesuffix(".py"), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()
