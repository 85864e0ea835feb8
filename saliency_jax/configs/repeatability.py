# Run: python -m saliency_jax.main --config=repeatability
"""Repeatability of saliency maps across training seeds (Arun et al. 2021).

Trains ``replicates`` copies of the model on the synthetic chest phantoms
with seeds ``seed, seed + 1, ...`` (replicate 0 is the usual ``trained``
model), explains the same test positives with each, and compares every pair
of replicates' maps (SSIM, Spearman, HOG) against the similarity of maps of
two different images. Also scores each replicate's localization. Writes
``results.csv``, ``summary.json``, ``figures/`` and ``report.md``.

Presets (``--config=repeatability:NAME``):
  (none)  small CNN at 128 px, 2 replicates, the journal paper's 8 methods,
          16 images; on 2 cores shared with another job, one replicate's
          training took 6.3 minutes and the maps of both 2.9 minutes, so
          about 16 minutes in all (replicate 0 is shared with the cascade
          and reproducibility defaults: --config.trained_dir reuses it);
  quick   tiny data and model, 2 methods: a smoke test (about 45 CPU-seconds);
  paper   3 InceptionV3 replicates at 320 px, 100 test positives, the
          journal paper's settings; for a real dataset and a GPU.
"""

from saliency_jax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.study_config()
  c.experiment = "repeatability"
  c.replicates = 2  # replicate r is trained with seed c.seed + r
  if arg == "quick":
    config_lib.quick_study_preset(c, methods=("gradient", "gradcam"), num_images=4,
                                  num_train=256, steps=150, warmup_steps=10,
                                  log_every=50)
    c.similarity = ("spearman", "ssim")
    c.localization = ("auprc", "pointing_game")
  elif arg == "paper":
    config_lib.paper_preset(c)
    c.replicates = 3
  elif arg:
    raise ValueError(f"configs/repeatability.py: unknown preset {arg!r}; "
                     "expected 'quick' or 'paper'")
  return c


def sweep(arg: str | None = None):
  """Five independent repeatability tests for launch/sweep.py (``arg``: the preset).

  Job r trains its replicates with seeds 100 r, 100 r + 1, ...: no two jobs
  share a training seed while ``config.replicates`` <= 100 (also when set on
  the command line, which this function does not see).
  """
  del arg  # the same seeds for every preset
  for r in range(5):
    yield {"seed": 100 * r}
