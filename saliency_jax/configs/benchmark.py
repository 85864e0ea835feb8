# Run: python -m saliency_jax.main --config=benchmark
"""Speed of the saliency methods: maps/s per setting (model, image size,
dtype), strategy and batch size, vs a PAIR-style loop (one jitted call per
sample or step) in the same run, and the time of one whole cascade study.

Presets (``--config=benchmark:NAME``):
  (none)      small CNN (width 0.25, the default trained model) at 128 px on
              2 random images; the CAM family; SmoothGrad and IG at their shipped defaults
              (25 samples, 25 steps), SmoothGrad-IG at 5 x 5, occlusion with
              a 32 px window every 16 px (50 forward passes per map); 3
              strategies x batch sizes 1, 4, 16. 6-7 minutes on a 2-core CPU
              shared with other jobs, most of it compiling (``vectorized``
              unrolls every chunk). This is the run that sets
              ``DEFAULT_STRATEGY['cpu']``. Every preset but paper_quick
              also runs the metrics section, small here (8 maps at 32 px,
              2 images at 16 px), bigger in ``metrics``.
  paper       the journal paper's study on a GPU: InceptionV3 at 299 and
              320 px and DenseNet121 at 224 px, each in float32 and bfloat16;
              the paper's 8 methods at its settings (preset ``arun2021``) on
              64 images, batch size ``'auto'`` (the most that fit the
              device's memory); one cascade study = 12 stages for InceptionV3
              (the trained model, then predictions, mixed10 .. mixed1
              randomized, as configs/cascade.py:paper), 11 for DenseNet121
              (every block) x 8 methods x 100 images. The reference loop runs
              on 2 images. This is the run that sets the GPU defaults.
  gpu         InceptionV3 (width 1.0) at 299 px, the paper's settings, 8
              images, batch sizes 64, 256 and all at once, 3 strategies.
  metrics     the metrics section at the issue's size: each localization
              metric on 512 maps at 128 px (the per-map reference loop on
              64), faithfulness on 8 images at 64 px; the methods' part
              one gradient row.
  quick       tiny model at 32 px, SmoothGrad and IG with 2 and 4
              evaluations, two strategies; seconds of work (mostly
              compiling), for the tests.
  paper_quick ``paper``'s path on a tiny model: two settings (float32 and
              bfloat16) of the small CNN at 16 px, gradient and XRAI on 2
              images, batch size 'auto', a cascade study, the memory of each
              row's program; for the tests.
Any key can be overridden, e.g. ``--config.benchmark.batch_sizes='(1, 8)'``
or ``--config.benchmark.settings="({'dtype': 'bfloat16'},)"``.
Writes ``benchmark.json``, ``report.md`` and ``figures/benchmark.png``.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from saliency_jax import config as config_lib


# The CAM family: one map per forward and backward pass (ScoreCAM: one
# forward pass per channel), each against a per-image loop of its own calls.
CAMS = ("hirescam", "gradcam_plus_plus", "xgradcam", "layercam", "eigencam",
        "scorecam", "random_cam")


def benchmark_config() -> ml_collections.ConfigDict:
  """The ``config.benchmark`` block: what is swept and how it is timed."""
  return ml_collections.ConfigDict(dict(
      # Each a dict overriding some of model, width, image_size (config's),
      # dtype ('float32' or 'bfloat16'; default 'float32') and cascade_blocks
      # (blocks of the model's cascade_order a cascade study randomizes;
      # None: all). Empty: config's model, width and size in float32.
      settings=(),
      # method -> hyper-parameters over the preset's (or the method's own
      # defaults); methods not listed run with those defaults.
      hparams=ml_collections.ConfigDict(dict(
          smoothgrad_ig=dict(num_samples=5, steps=5),
          occlusion=dict(window=32, stride=16),
      )),
      preset=config_dict.placeholder(str),  # a saliency.PRESETS name or None
      strategies=("dispatch", "scan", "vectorized"),
      # None would mean every evaluation at once; 'auto' the most that fit
      # the device's memory (the size chosen is recorded per row).
      batch_sizes=(1, 4, 16),
      repeats=3,          # steady-state calls per setting (median reported)
      min_seconds=0.5,    # ... and more calls until they take this long
      reference=True,     # also time the PAIR-style loop
      reference_images=config_dict.placeholder(int),  # its images; None: all
      cascade_images=100,  # images of one cascade study (its time is reported)
      # Where the device reports no memory (the CPU): compile each row's
      # program once more to read its bytes from XLA.
      memory_analysis=False,
      matmul_size=2048,   # the matmul that measures peak FLOP/s, per dtype
      in_channels=1,      # grayscale, like the phantoms
      # Metrics vectorized over maps vs a per-map NumPy / scikit-learn /
      # SciPy loop (experiments/benchmark_metrics.py); None: no such rows.
      metrics=metrics_config(),
  ))


LOCALIZATION_ROWS = ("auprc", "average_precision", "auroc", "curves",
                     "soft_dice", "dice", "iou", "pointing_game",
                     "relevance_mass_accuracy", "relevance_rank_accuracy",
                     "top_k_intersection")
FAITHFULNESS_ROWS = ("deletion", "insertion", "road", "road_impute",
                     "confidence_change")


def metrics_config() -> ml_collections.ConfigDict:
  """The ``config.benchmark.metrics`` block, small: seconds on a laptop CPU."""
  return ml_collections.ConfigDict(dict(
      # Localization: every metric (and 'curves': AUPRC, AP and AUROC from
      # one sort) on `maps` random maps at `image_size` px; the reference
      # loop on the first `reference_maps` (None: all), times per map.
      localization=LOCALIZATION_ROWS,
      maps=8, image_size=32,
      reference_maps=config_dict.placeholder(int),
      # Faithfulness on `faithfulness_images` random images through `model`
      # (random init, `width`) at `faithfulness_image_size` px: deletion and
      # insertion (constant 0 replacement, `step`), ROAD at `percentiles`
      # (noiseless, so comparable with the loop's scipy solve), road_impute
      # (the middle percentile), confidence_change.
      faithfulness=FAITHFULNESS_ROWS,
      faithfulness_images=2, faithfulness_image_size=16,
      model="small_cnn", width=0.25,
      step=0.25, percentiles=(20, 50, 80),
      repeats=2, min_seconds=0.0,
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.experiment = "benchmark"
  c.model, c.width, c.image_size = "small_cnn", 0.25, 128
  c.num_images = 2
  c.methods = ("gradient", "smoothgrad", "integrated_gradients",
               "smoothgrad_ig", "gradcam", "guided_backprop", "occlusion"
               ) + CAMS
  c.benchmark = benchmark_config()
  if arg == "paper":
    c.model, c.width, c.image_size = "inception_v3", 1.0, 299
    c.num_images = 64
    c.methods = config_lib.PAPER_METHODS
    c.benchmark.settings = tuple(
        dict(model=model, image_size=size, dtype=dtype, cascade_blocks=blocks)
        for model, size, blocks in (("inception_v3", 299, 11),
                                    ("inception_v3", 320, 11),
                                    ("densenet121", 224, None))
        for dtype in ("float32", "bfloat16"))
    c.benchmark.preset = "arun2021"
    c.benchmark.hparams = ml_collections.ConfigDict()
    c.benchmark.strategies = ("vectorized",)
    c.benchmark.batch_sizes = ("auto",)
    c.benchmark.min_seconds = 2.0
    c.benchmark.reference_images = 2
    c.benchmark.memory_analysis = True
    c.benchmark.matmul_size = 8192
  elif arg == "gpu":
    c.model, c.width, c.image_size = "inception_v3", 1.0, 299
    c.num_images = 8
    c.methods = c.methods + ("guided_gradcam",)
    c.benchmark.preset = "arun2021"
    c.benchmark.hparams = ml_collections.ConfigDict(dict(
        occlusion=dict(window=32, stride=16)))  # 325 forward passes per map
    # Not smaller: ``vectorized`` compiles one copy of the network per chunk
    # (SmoothGrad-IG on 8 images: 2000 gradients, 32 chunks of 64). A row
    # that runs out of memory is recorded as failed and the sweep goes on.
    c.benchmark.batch_sizes = (64, 256, None)
    c.benchmark.matmul_size = 8192
  elif arg == "metrics":
    # The metrics section at the issue's size; the methods' part minimal.
    c.model, c.width, c.image_size = "small_cnn", 0.25, 32
    c.num_images = 2
    c.methods = ("gradient",)
    c.benchmark.hparams = ml_collections.ConfigDict()
    c.benchmark.strategies = ("vectorized",)
    c.benchmark.batch_sizes = (None,)
    c.benchmark.matmul_size = 256
    m = c.benchmark.metrics
    m.maps, m.image_size, m.reference_maps = 512, 128, 64
    m.faithfulness_images, m.faithfulness_image_size = 8, 64
    m.step, m.percentiles = 0.1, (10, 30, 50, 70, 90)
    m.repeats, m.min_seconds = 3, 1.0
  elif arg == "quick":
    c.model, c.width, c.image_size = "small_cnn", 0.125, 32
    c.num_images = 2
    c.methods = ("smoothgrad", "integrated_gradients")
    c.benchmark.hparams = ml_collections.ConfigDict(dict(
        smoothgrad=dict(num_samples=2), integrated_gradients=dict(steps=4)))
    c.benchmark.strategies = ("dispatch", "vectorized")
    c.benchmark.batch_sizes = (1, None)
    c.benchmark.repeats = 2
    c.benchmark.min_seconds = 0.0
    c.benchmark.matmul_size = 256
    # A few rows of each kind, tiny: the section's path, not its speed.
    m = c.benchmark.metrics
    m.localization = ("auroc", "curves", "top_k_intersection",
                      "pointing_game")
    m.faithfulness = ("deletion", "road_impute")
    m.maps, m.image_size = 4, 16
    m.faithfulness_image_size, m.step = 8, 0.5
  elif arg == "paper_quick":
    c.model, c.width, c.image_size = "small_cnn", 0.125, 16
    c.num_images = 2
    c.methods = ("gradient", "xrai")
    c.benchmark.settings = (dict(dtype="float32", cascade_blocks=2),
                            dict(dtype="bfloat16", cascade_blocks=2))
    c.benchmark.preset = "arun2021"
    c.benchmark.hparams = ml_collections.ConfigDict(dict(xrai=dict(steps=2)))
    c.benchmark.strategies = ("vectorized",)
    c.benchmark.batch_sizes = ("auto",)
    c.benchmark.repeats = 1
    c.benchmark.min_seconds = 0.0
    c.benchmark.reference_images = 1
    c.benchmark.cascade_images = 10
    c.benchmark.memory_analysis = True
    c.benchmark.matmul_size = 128
    c.benchmark.metrics = None  # the quick preset runs the section
  elif arg:
    raise ValueError(f"configs/benchmark.py: unknown preset {arg!r}; expected "
                     "'paper', 'gpu', 'metrics', 'quick' or 'paper_quick'")
  return c
