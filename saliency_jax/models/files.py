"""Any weights file: Keras (``.h5``, ``.weights.h5``, ``.keras``) or our ``.npz``.

Dispatches to :mod:`saliency_jax.models.keras_import` and
:mod:`saliency_jax.models.weights` (which know nothing of each other).
"""

from __future__ import annotations

import os

import jax
from flax import nnx

from saliency_jax import errors
from saliency_jax.models import keras_import
from saliency_jax.models import weights


def is_keras_file(path: str) -> bool:
  return str(path).lower().endswith(weights.KERAS_SUFFIXES)


def expected_preprocessing(name: str, path: str) -> str:
  """What the weights of ``path`` expect: Keras' ``preprocess_input`` of
  network ``name`` for a Keras file, the recorded mode for an ``.npz``."""
  if is_keras_file(path):
    return keras_import.KERAS_PREPROCESSING.get(name, "none")
  if str(path).lower().endswith(".npz"):
    return weights.npz_metadata(path).get("preprocessing", "none")
  return "none"


def load(name: str, path: str, *, num_classes: int | None = None,
         in_channels: int | None = None, width: float = 1.0,
         preprocessing: str | None = None,
         seed: int | jax.Array = 0) -> nnx.Module:
  """Model ``name`` with the weights of ``path`` (Keras or ``.npz``), in eval mode.

  ``preprocessing=None`` is what the weights expect: Keras' for a Keras file,
  the recorded one for an ``.npz``. See :func:`saliency_jax.models.weights.from_npz` and
  :func:`saliency_jax.models.keras_import.from_keras` for the other options.
  """
  if not os.path.isfile(path):
    raise errors.WeightsError(f"{path}: no such weights file")
  if is_keras_file(path):
    if width != 1.0:
      raise errors.WeightsError(f"{path}: Keras weights are the published "
                                f"network, width=1.0; got width={width}")
    return keras_import.from_keras(name, path, num_classes=num_classes,
                                   in_channels=in_channels,
                                   preprocessing=preprocessing or "auto", seed=seed)
  if str(path).lower().endswith(".npz"):
    return weights.from_npz(path, name=name, width=width, num_classes=num_classes,
                            in_channels=in_channels, preprocessing=preprocessing,
                            seed=seed)
  raise errors.WeightsError(f"{path}: unknown weights format; expected a file "
                            f"ending in {', '.join(weights.SUFFIXES)}")
