# Run: python -m saliency_jax.main --config=shortcut
"""Shortcut learning: do the maps reveal a spurious signal the model is known to use?

After Adebayo et al. (ICLR 2022, "Post hoc explanations may be ineffective
for detecting unknown spurious correlation"). Trains two models on the same
synthetic chest phantoms (same seed, same initialization and batch order):
one where a laterality-tag-like 'L' in a random corner marks the positive
label at rate ``synthetic.shortcut``, one without any marker. Confirms that
the shortcut model uses the marker (test accuracy and AUC with the marker as
drawn, removed and flipped onto the other label), then, for every method of
``config.methods`` and the controls (``random``, ``edge``, ``center_prior``,
``random_cam``), on the test positives that carry the marker: the share of
saliency mass on the marker and on the opacities, the pointing game on the
marker, and the detection AUROC: how well a reader looking only at the maps'
marker mass tells the shortcut model's maps from the clean model's. Writes
``results.csv``, ``summary.json``, ``figures/`` and ``report.md``.

Presets (``--config=shortcut:NAME``):
  (none)  small CNN at 128 px, the journal paper's 8 methods, 16 images,
          the marker on every positive (rate 1.0);
  quick   48 px, a tiny CNN, 2 methods on 6 images: a smoke test
          (about a minute on a laptop CPU).
"""

from saliency_jax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.study_config()
  c.experiment = "shortcut"
  # The marker's rate in the shortcut model's data (synthetic.phantom): it
  # marks a positive with probability p and a negative with 1 - p. The clean
  # model is trained on the same phantoms with shortcut=None.
  c.synthetic.shortcut = 1.0
  # Control maps scored beside the methods (experiments/shortcut.py).
  c.controls = ("random", "edge", "center_prior", "random_cam")
  # The maps' marker scores as rows of results.csv (against the marker mask).
  c.localization = ("relevance_mass_accuracy", "pointing_game")
  # The marker is ~10% of the image: the peak must fall on it.
  c.metric_options.pointing_game = dict(tolerance=0)
  if arg == "quick":
    config_lib.quick_study_preset(c, methods=("gradient", "gradcam"), num_images=6,
                                  num_train=128, steps=120, warmup_steps=10,
                                  log_every=40)
    c.image_size = 48
    c.width = 0.25
  elif arg:
    raise ValueError(f"configs/shortcut.py: unknown preset {arg!r}; expected 'quick'")
  return c


# Replicates for launch/sweep.py: the study for training seeds 0..4.
sweep = config_lib.seed_sweep
