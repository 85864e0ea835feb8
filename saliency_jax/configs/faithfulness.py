# Run: python -m saliency_jax.main --config=faithfulness
"""Faithfulness: does the model's output follow the map's ranking of pixels?

Trains the model on the synthetic chest phantoms if ``workdir`` (or
``--config.trained_dir``) holds no finished training run, then perturbs the
test positives in each map's order and reads the model's probability of the
explained class: deletion and insertion curves and their areas (Petsiuk et
al., BMVC 2018), ROAD MoRF / LeRF / combined with the noisy linear imputer
(Rong et al., ICML 2022) and the confidence drop / increase on the image
times the map (Chattopadhyay et al., WACV 2018). Every method of
``config.methods`` is scored beside control maps that ignore the model's
output (``random``, ``edge``, ``center_prior``) or its target
(``random_cam``). Runs on any dataset (``--config.dataset``), on every
device of one or several processes (``--config.distributed.enabled=True``).
Writes ``results.csv``, ``summary.json``, ``figures/`` (the curves and the
example maps) and ``report.md``; a seed sweep (``launch/sweep.py``) merges
with ``--config=aggregate``.

Presets (``--config=faithfulness:NAME``):
  (none)  small CNN at 128 px, the journal paper's 8 methods, 16 images;
  quick   tiny data and model, 2 methods, coarse curves: a smoke test;
  paper   InceptionV3 at 320 px, 100 test positives; for a real dataset
          and a GPU.
"""

import ml_collections

from saliency_jax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.study_config()
  c.experiment = "faithfulness"
  # Maps scored beside the methods (experiments/faithfulness.py).
  c.controls = ("random", "edge", "center_prior", "random_cam")
  # A method is more faithful than the controls on this metric (see
  # experiments/faithfulness.py METRICS for the direction of each).
  c.primary_metric = "road_combined"
  c.faithfulness = ml_collections.ConfigDict(dict(
      step=0.05,  # fraction of pixels per deletion / insertion step
      replacement="blur",  # removed pixels: 'blur', 'constant' or 'noise'
      sigma=5.0,  # blur std in pixels
      value=0.0,  # the constant of replacement='constant'
      percentiles=(10, 20, 30, 40, 50, 60, 70, 80, 90),  # ROAD's removals, %
      noise=0.01,  # ROAD imputation noise std
      output="probability",  # or 'logit'
      # Perturbed images evaluated at once; None: config.batch_size's rule,
      # where 'auto' (the GPU/TPU default) is one image's copies at once.
      batch_size=None,
  ))
  if arg == "quick":
    config_lib.quick_study_preset(c, methods=("gradient", "gradcam"), num_images=6,
                                  num_train=64, steps=60, warmup_steps=5, log_every=20)
    c.faithfulness.update(step=0.125, percentiles=(25, 50, 75))
  elif arg == "paper":
    config_lib.paper_preset(c)
  elif arg:
    raise ValueError(f"configs/faithfulness.py: unknown preset {arg!r}; "
                     "expected 'quick' or 'paper'")
  return c


# Replicates for launch/sweep.py: the test for training seeds 0..4.
sweep = config_lib.seed_sweep
