"""Every random stream of a run, derived from the config seed in one place.

Streams are fixed integers, so adding a stream never changes the others.
JAX keys are ``fold_in(key(seed), stream)``; where NumPy or a seed argument
needs an integer (bootstrap, image subsets, a fresh model's init seed) it is
the first word of ``SeedSequence([seed, stream])``.
"""

from __future__ import annotations

import jax
import numpy as np

# Training (train.py).
INIT, DATA, AUGMENT, LABELS = 0, 1, 2, 3
# Experiments: saliency noise, the cascade's fresh weights, the evaluated
# images, bootstrap intervals and different-image pairs.
SALIENCY, FRESH, SUBSET, STATS = 10, 11, 12, 13
# The faithfulness experiment's perturbations (replacement noise, ROAD's imputation noise).
PERTURB = 14


def key(seed: int, stream: int) -> jax.Array:
  """The JAX key of ``stream``: ``fold_in(key(seed), stream)``."""
  return jax.random.fold_in(jax.random.key(seed), stream)


def integer_seed(seed: int, stream: int) -> int:
  """An integer seed for ``stream`` (NumPy generators, seed arguments)."""
  return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])
