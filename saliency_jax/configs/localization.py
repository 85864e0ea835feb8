# Run: python -m saliency_jax.main --config=localization
"""Localization utility against controls (Arun et al. 2021; Adebayo et al. 2018).

Trains the model on the synthetic chest phantoms if ``workdir`` (or
``--config.trained_dir``) holds no finished training run, then scores every
method's maps of the test positives against their boxes (AUPRC, Dice, ...)
beside control maps that ignore the model: ``random``, ``edge`` (Sobel),
``center_prior`` and ``mean_training_mask`` (the paper's average box). A
method localizes better than the controls when it beats every control on
``primary_metric`` and a Holm-adjusted paired Wilcoxon test against the best
control gives p < 0.05. Writes ``results.csv``, ``summary.json``,
``figures/`` and ``report.md``.

Presets (``--config=localization:NAME``):
  (none)  small CNN at 128 px, the journal paper's 8 methods, 16 images;
          about 5 minutes on an idle 2-core CPU, training included
          (8 minutes, 310 CPU-seconds, measured on a shared one);
  quick   tiny data and model, 2 methods: a smoke test;
  paper   InceptionV3 at 320 px, 100 test positives, the journal paper's
          settings; for a real dataset and a GPU.
"""

from saliency_jax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.study_config()
  c.experiment = "localization"
  # Control maps scored beside the methods (experiments/localization.py).
  c.controls = ("random", "edge", "center_prior", "mean_training_mask")
  c.primary_metric = "auprc"  # the journal paper's localization utility
  if arg == "quick":
    config_lib.quick_study_preset(c, methods=("gradient", "gradcam"), num_images=6,
                                  num_train=64, steps=60, warmup_steps=5, log_every=20)
    c.localization = ("auprc", "soft_dice", "pointing_game")
  elif arg == "paper":
    config_lib.paper_preset(c)
  elif arg:
    raise ValueError(f"configs/localization.py: unknown preset {arg!r}; "
                     "expected 'quick' or 'paper'")
  return c


# Replicates for launch/sweep.py: the test for training seeds 0..4.
sweep = config_lib.seed_sweep
