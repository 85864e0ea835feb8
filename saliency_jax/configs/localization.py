# Run: python -m saliency_jax.main --config=localization
"""Localization utility against controls (Arun et al. 2021; Adebayo et al. 2018).

Trains the model on the synthetic chest phantoms if ``workdir`` (or
``--config.trained_dir``) holds no finished training run, then scores every
method's maps of the test positives against their boxes (AUPRC, Dice, ...)
beside control maps that ignore the model: ``random``, ``edge`` (Sobel),
``center_prior`` and ``mean_training_mask`` (the paper's average box). A
method localizes better than the controls when it beats every control on
``primary_metric`` and a Holm-adjusted paired Wilcoxon test against the best
control gives p < 0.05. The same maps also go through the CheXlocalize
protocol (``config.chexlocalize``: mIoU and hit rate; predicted masks as COCO
RLE in ``chexlocalize/``). Writes ``results.csv``, ``summary.json``,
``figures/`` and ``report.md``.

Presets (``--config=localization:NAME``):
  (none)  small CNN at 128 px, the journal paper's 8 methods, 16 images;
          about 5 minutes on an idle 2-core CPU, training included
          (8 minutes, 310 CPU-seconds, measured on a shared one);
  quick   tiny data and model, 2 methods: a smoke test;
  paper   InceptionV3 at 320 px, 100 test positives, the journal paper's
          settings; for a real dataset and a GPU.
"""

import ml_collections
from ml_collections import config_dict

from saliency_jax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.study_config()
  c.experiment = "localization"
  # Control maps scored beside the methods (experiments/localization.py).
  c.controls = ("random", "edge", "center_prior", "mean_training_mask")
  c.primary_metric = "auprc"  # the journal paper's localization utility
  # The CheXlocalize protocol (Saporta et al., Nat. Mach. Intell. 2022) on the
  # same maps: mIoU and hit rate, predicted masks as COCO RLE in
  # WORKDIR/chexlocalize/. On by default: with threshold='otsu' it reuses the
  # test maps (no model evaluation added); 'tuned' (and gate=True) tune the
  # binarization threshold (probability cutoff) on the validation split's
  # positives, whose maps cost as much again.
  c.chexlocalize = ml_collections.ConfigDict(dict(
      enabled=True,
      threshold="otsu",     # 'otsu' or 'tuned' (0.2..0.8 on validation mIoU)
      gate=False,           # empty mask unless p(positive) > a cutoff (tuned)
      quantize=False,       # Otsu on 8-bit levels, as the reference code's cv2
      # Bootstrap replicates; None: config.bootstrap_resamples.
      num_resamples=config_dict.placeholder(int),
      # The class in the RLE files; None: the dataset's ('opacity' if none).
      class_name=config_dict.placeholder(str),
  ))
  if arg == "quick":
    config_lib.quick_study_preset(c, methods=("gradient", "gradcam"), num_images=6,
                                  num_train=64, steps=60, warmup_steps=5, log_every=20)
    c.localization = ("auprc", "soft_dice", "pointing_game")
    c.chexlocalize.enabled = False  # a smoke test: the plain localization path
  elif arg == "paper":
    config_lib.paper_preset(c)
  elif arg:
    raise ValueError(f"configs/localization.py: unknown preset {arg!r}; "
                     "expected 'quick' or 'paper'")
  return c


# Replicates for launch/sweep.py: the test for training seeds 0..4.
sweep = config_lib.seed_sweep
