"""Model registry: ``create(name, ...)`` builds an NNX model by name.

Every model follows the contract in :mod:`saliency_jax.models.layers`.
Weights come in through :func:`from_keras` (Keras InceptionV3 / DenseNet121
files) and :func:`from_npz`, go out through :func:`save_npz`
(:mod:`saliency_jax.models.weights`); :func:`load` takes either kind of file.
"""

from __future__ import annotations

import importlib

from flax import nnx

from saliency_jax.models.keras_import import from_keras  # noqa: F401
from saliency_jax.models.layers import PREPROCESSING, activation, relu  # noqa: F401
from saliency_jax.models.files import load  # noqa: F401
from saliency_jax.models.weights import from_npz, save_npz  # noqa: F401

# name -> "module:class"; modules import lazily so a quick run never builds
# the big networks' Python.
MODELS = {
    "small_cnn": "saliency_jax.models.small_cnn:SmallCNN",
    "inception_v3": "saliency_jax.models.inception_v3:InceptionV3",
    "densenet121": "saliency_jax.models.densenet121:DenseNet121",
}

# The smallest square input (px) each model takes: below it the last feature
# map (the GradCAM layer) has no pixels, and the global average pool makes
# the logits NaN without an error. Found with jax.eval_shape at every size
# (tests/test_config.py checks each at its minimum and one below): the small
# CNN halves three times (8 -> 1); InceptionV3 as Keras documents it;
# DenseNet121's 7x7/2 conv and 3x3/2 pool (29 -> 8), then three 2x2/2
# transitions (8 -> 1).
MIN_IMAGE_SIZE = {"small_cnn": 8, "inception_v3": 75, "densenet121": 29}


def create(name: str, *, num_classes: int, in_channels: int, width: float = 1.0,
           preprocessing: str = "none", rngs: nnx.Rngs) -> nnx.Module:
  """Builds model ``name`` (one of ``MODELS``) with fresh parameters.

  ``preprocessing`` (one of ``PREPROCESSING``) is the map from images in
  [0, 1] to the network's input that the model applies first.
  """
  if name not in MODELS:
    raise ValueError(f"config.model: unknown model {name!r}; "
                     f"expected one of {sorted(MODELS)}")
  if width <= 0:
    raise ValueError(f"config.width: expected a positive multiplier, got {width}")
  module, cls = MODELS[name].split(":")
  model_cls = getattr(importlib.import_module(module), cls)
  if preprocessing == "imagenet" and in_channels not in (1, 3):
    raise ValueError(f"config.preprocessing='imagenet' takes 1 or 3 input "
                     f"channels, got {in_channels}")
  return model_cls(num_classes=num_classes, in_channels=in_channels,
                   width=width, preprocessing=preprocessing, rngs=rngs)
