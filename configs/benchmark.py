# Run: python -m saliency_jax.main --config=configs/benchmark.py --workdir=/tmp/saliency_jax/benchmark
"""Speed of the saliency methods: maps/s per strategy and batch size, vs a
PAIR-style loop (one jitted call per sample or step) in the same run.

Presets (``--config=configs/benchmark.py:NAME``):
  (none)  small CNN (width 0.25, the default trained model) at 128 px on 2
          random images; SmoothGrad and IG at their shipped defaults (25
          samples, 25 steps), SmoothGrad-IG at 5 x 5, occlusion with a 32 px
          window every 16 px (50 forward passes per map); 3 strategies x
          batch sizes 1, 4, 16. 6-7 minutes on a 2-core CPU shared with other
          jobs, most of it compiling (``vectorized`` unrolls every chunk).
          This is the run that sets ``DEFAULT_STRATEGY['cpu']``.
  gpu     InceptionV3 (width 1.0) at 299 px, the paper's settings (preset
          ``arun2021``: SmoothGrad 25 samples squared, IG 10 steps from the
          black baseline, so SmoothGrad-IG makes 250 gradients per map), 8
          images, batch sizes up to all at once; for a GPU/TPU. Not run yet:
          the reference loop runs after every timed call and is the slow
          side there (SmoothGrad-IG: 2000 jitted calls per run).
  quick   tiny model at 32 px, SmoothGrad and IG with 2 and 4 evaluations,
          two strategies; seconds of work (mostly compiling), for the tests.
Any key can be overridden, e.g. ``--config.benchmark.batch_sizes='(1, 8)'``.
Writes ``benchmark.json``, ``report.md`` and ``figures/benchmark.png``.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from saliency_jax import config as config_lib


def benchmark_config() -> ml_collections.ConfigDict:
  """The ``config.benchmark`` block: what is swept and how it is timed."""
  return ml_collections.ConfigDict(dict(
      # method -> hyper-parameters over the preset's (or the method's own
      # defaults); methods not listed run with those defaults.
      hparams=ml_collections.ConfigDict(dict(
          smoothgrad_ig=dict(num_samples=5, steps=5),
          occlusion=dict(window=32, stride=16),
      )),
      preset=config_dict.placeholder(str),  # a saliency.PRESETS name or None
      strategies=("dispatch", "scan", "vectorized"),
      batch_sizes=(1, 4, 16),  # None would mean every evaluation at once
      repeats=3,          # steady-state calls per setting (median reported)
      min_seconds=0.5,    # ... and more calls until they take this long
      reference=True,     # also time the PAIR-style loop
      matmul_size=2048,   # the f32 matmul that measures peak FLOP/s
      in_channels=1,      # grayscale, like the phantoms
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.experiment = "benchmark"
  c.model, c.width, c.image_size = "small_cnn", 0.25, 128
  c.num_images = 2
  c.methods = ("gradient", "smoothgrad", "integrated_gradients",
               "smoothgrad_ig", "gradcam", "guided_backprop", "occlusion")
  c.benchmark = benchmark_config()
  if arg == "gpu":
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
  elif arg:
    raise ValueError(f"configs/benchmark.py: unknown preset {arg!r}; expected "
                     "'gpu' or 'quick'")
  return c
