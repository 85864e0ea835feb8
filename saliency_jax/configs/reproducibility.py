# Run: python -m saliency_jax.main --config=reproducibility
"""Reproducibility of saliency maps across architectures (Arun et al. 2021).

Trains ``model`` (A) and ``other_model`` at ``other_width`` (B) on the
synthetic chest phantoms with the same seed, explains the same test positives
with both, and compares their maps image by image (inter-architecture
similarity) against the similarity of maps of two different images and, when
A's second replicate is available (``intra_replicate``, ``replicates_dir``),
against the intra-architecture similarity. Also scores each model's
localization. Writes ``results.csv``, ``summary.json``, ``figures/`` and
``report.md``.

Presets (``--config=reproducibility:NAME``):
  (none)  small CNN (width 0.25) vs InceptionV3 (width 0.125) at 128 px, the
          journal paper's 8 methods, 16 images; measured 12 CPU-minutes
          (user + system), training included (21 minutes wall on 2 cores
          shared with other jobs). DenseNet121 at that width trains about
          twice as slowly as InceptionV3 on a CPU
          (--config.other_model=densenet121). At 128 px InceptionV3's GradCAM
          layer (mixed10) is 2 x 2, so GradCAM comparisons mostly measure
          resolution here (8 x 8 at the paper's 320 px);
  quick   small CNNs of two widths on tiny data, 2 methods: a smoke test;
  paper   InceptionV3 vs DenseNet121 at 320 px, 100 test positives, an
          InceptionV3 replicate for the intra-architecture reference, the
          journal paper's settings; for a real dataset and a GPU.
"""

import ml_collections

from saliency_jax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.study_config()
  c.experiment = "reproducibility"
  c.other_model = "inception_v3"
  c.other_width = 0.125
  # A's second replicate (seed + 1) for the intra-architecture reference:
  # 'reuse' takes it if already trained (here or in replicates_dir), 'train'
  # also trains it when missing.
  c.intra_replicate = "reuse"
  c.replicates_dir = ml_collections.config_dict.placeholder(str)
  if arg == "quick":
    config_lib.quick_study_preset(c, methods=("gradient", "gradcam"), num_images=4,
                                  num_train=256, steps=150, warmup_steps=10,
                                  log_every=50)
    c.other_model, c.other_width = "small_cnn", 0.25
    c.similarity = ("spearman", "ssim")
    c.localization = ("auprc", "pointing_game")
  elif arg == "paper":
    config_lib.paper_preset(c)
    c.other_model, c.other_width = "densenet121", 1.0
    c.intra_replicate = "train"
  elif arg:
    raise ValueError(f"configs/reproducibility.py: unknown preset {arg!r}; "
                     "expected 'quick' or 'paper'")
  return c


# Replicates for launch/sweep.py: the test for training seeds 0..4.
sweep = config_lib.seed_sweep
