# Run: python -m saliency_jax.main --config=cascade
"""Cascading model-weight randomization test (Adebayo et al. 2018; Arun et al. 2021).

Trains the model on ``config.dataset`` (the synthetic chest phantoms unless
set; see the README's Real data section) if ``workdir`` (or
``--config.trained_dir``) holds no finished training run, then re-initializes
its blocks top-down and compares every stage's saliency maps with the trained
model's (SSIM, Spearman, HOG) and with the boxes (AUPRC, Dice, ...). Writes
``results.csv``, ``summary.json``, ``figures/`` and ``report.md``.

Presets (``--config=cascade:NAME``):
  (none)       small CNN at 128 px, the journal paper's 8 methods, 16 images;
               about 10 minutes on a 2-core CPU, training included;
  independent  one block re-initialized at a time instead of a cascade;
  bottom_up    blocks re-initialized from the input side first (Hedström et
               al. 2023), with sMPRT's denoised maps as well;
  quick        tiny data and model, 3 methods: a smoke test;
  paper        InceptionV3 at 320 px, 100 test positives, the journal paper's
               settings, blocks logits..mixed1; for a real dataset and a GPU.
"""

import ml_collections

from saliency_jax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.study_config()
  c.experiment = "cascade"
  # Null baselines through the same stages and comparisons, drawn on every
  # similarity figure and judged apart (Binder et al. 2023): uniform noise
  # drawn afresh per stage, and RandomCAM. () to leave them out.
  c.null_baselines = ("noise", "random_cam")
  c.cascade = ml_collections.ConfigDict(dict(
      # 'cascade' (top-down, logits first), 'bottom_up' (input side first,
      # Hedström et al. 2023) or 'independent' (one block at a time).
      mode="cascade",
      # How many blocks of the model's cascade_order (top-down) to randomize:
      # its first num_blocks (the top ones; bottom_up: its last num_blocks,
      # the ones nearest the input); None: all.
      num_blocks=ml_collections.config_dict.placeholder(int),
      batch_stats=False,  # Adebayo et al.: trainable variables only
      # eMPRT of every stage's maps against the trained model's (Quantus 0.6:
      # 100 bins over each map's min..max; options in metric_options.emprt).
      emprt=True,
      # sMPRT: each method again, its maps averaged over `samples` noisy
      # copies of the input (Gaussian, std = noise * the image's range; the
      # last copy clean), as method 'smprt_<method>'. Quantus: 50, 0.1.
      smprt=dict(enabled=False, samples=50, noise=0.1),
  ))
  if arg == "independent":
    c.cascade.mode = "independent"
  elif arg == "bottom_up":
    c.cascade.mode = "bottom_up"
    c.cascade.smprt.enabled = True
  elif arg == "quick":
    config_lib.quick_study_preset(
        c, methods=("gradient", "gradcam", "smoothgrad"), num_images=4,
        num_train=256, steps=150, warmup_steps=10, log_every=50)
    c.hparams.smoothgrad = dict(num_samples=4)
  elif arg == "paper":
    config_lib.paper_preset(c)
    c.cascade.num_blocks = 11  # predictions, mixed10 .. mixed1 (12 states)
  elif arg:
    raise ValueError(f"configs/cascade.py: unknown preset {arg!r}; expected "
                     "'independent', 'bottom_up', 'quick' or 'paper'")
  return c


# Replicates for launch/sweep.py: the test for training seeds 0..4.
sweep = config_lib.seed_sweep
