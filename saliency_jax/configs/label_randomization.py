# Run: python -m saliency_jax.main --config=label_randomization
"""Label randomization test (Adebayo et al. 2018; Arun et al. 2021).

Trains the model on the synthetic chest phantoms (unless ``workdir`` or
``--config.trained_dir`` holds a finished run), then a second model of the
same architecture and initialization on permuted training labels, in rounds
of ``train.steps`` continued from its checkpoint, until it memorizes them
(accuracy on its permuted labels >= ``label_randomization.
target_train_accuracy``) or ``label_randomization.max_steps`` is spent; the
report says which. Then compares both models' maps for every method (SSIM,
Spearman, HOG; pass = less similar than maps of two different images) and
their localization (AUPRC, Dice, ...). Writes ``results.csv``,
``summary.json``, ``figures/`` and ``report.md``.

Presets (``--config=label_randomization:NAME``):
  (none)  small CNN at 128 px, the journal paper's 8 methods, 16 images; the
          randomized-label model memorizes the first 128 training phantoms
          without augmentation (2000 random labels do not fit in a CPU
          budget; the 128 reach train accuracy 1.0 in the first round of
          600 steps); about 10 minutes on an idle 2-core CPU, both trainings included (20
          minutes, 620 CPU-seconds, measured on a shared one);
  quick   tiny data and model, 2 methods: a smoke test;
  paper   InceptionV3 at 320 px, 100 test positives, the whole training set
          and the same augmentation for both models, up to 5 rounds of
          20000 steps; for a real dataset and a GPU.
"""

import ml_collections

from saliency_jax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.study_config()
  c.experiment = "label_randomization"
  # Null baselines through both models and the comparison, judged apart
  # (Binder et al. 2023): uniform noise drawn afresh per model (its maps of
  # the two models are independent), and RandomCAM. () to leave them out.
  c.null_baselines = ("noise", "random_cam")
  c.label_randomization = ml_collections.ConfigDict(dict(
      # Memorized: accuracy on the permuted training labels (eval mode).
      target_train_accuracy=0.95,
      # Step budget of the randomized-label model, over all its rounds of
      # train.steps.
      max_steps=1200,
      # Train the randomized-label model on the first num_train training
      # images only; None: the whole training split.
      num_train=ml_collections.config_dict.placeholder(int),
      # Augmentation of the randomized-label model; None: as train.augment.
      # Random labels are memorized much faster without it.
      augment=ml_collections.config_dict.placeholder(bool),
  ))
  if arg is None or arg == "":
    c.label_randomization.update(num_train=128, augment=False)
  elif arg == "quick":
    config_lib.quick_study_preset(c, methods=("gradient", "gradcam"), num_images=4,
                                  num_train=64, steps=60, warmup_steps=5, log_every=20)
    c.label_randomization.update(max_steps=180, augment=False)
    c.similarity = ("spearman", "ssim")
    c.localization = ("auprc", "soft_dice")
  elif arg == "paper":
    config_lib.paper_preset(c)
    c.label_randomization.update(max_steps=100000)
  else:
    raise ValueError(f"configs/label_randomization.py: unknown preset {arg!r}; "
                     "expected 'quick' or 'paper'")
  return c


# Replicates for launch/sweep.py: the test for training seeds 0..4.
sweep = config_lib.seed_sweep
