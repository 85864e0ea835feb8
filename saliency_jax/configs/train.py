# Run: python -m saliency_jax.main --config=train
"""Trains a classifier on the built-in synthetic chest phantoms.

Presets (``--config=train:NAME``):
  (none)   small CNN at 128 px, about 5 minutes on a 2-core CPU;
  quick    a few steps on tiny data, for smoke tests;
  randomized_labels   the same, on permuted labels (Adebayo et al. 2018).
Any key can be overridden, e.g. ``--config.train.steps=2000``;
``--config.num_seeds=3`` trains seeds 0, 1, 2 at once into WORKDIR/seed<s>.
"""

from saliency_jax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.base_config()
  c.experiment = "train"
  c.train = config_lib.train_config()
  # K > 1: seeds seed .. seed + K - 1, each a run in WORKDIR/seed<s>, trained
  # together (config.train.seeds_at_once).
  c.num_seeds = 1
  if arg == "quick":
    config_lib.quick_preset(c, num_train=64, steps=20, warmup_steps=2, log_every=5,
                            every=10)
  elif arg == "randomized_labels":
    c.train.randomize_labels = True
  elif arg:
    raise ValueError(f"configs/train.py: unknown preset {arg!r}; expected "
                     "'quick' or 'randomized_labels'")
  return c
