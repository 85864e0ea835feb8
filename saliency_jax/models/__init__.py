"""Model registry: ``create(name, ...)`` builds an NNX model by name.

Every model follows the contract in :mod:`saliency_jax.models.layers`.
"""

from __future__ import annotations

import importlib

from flax import nnx

from saliency_jax.models.layers import activation, relu  # noqa: F401

# name -> "module:class"; modules import lazily so a quick run never builds
# the big networks' Python.
MODELS = {
    "small_cnn": "saliency_jax.models.small_cnn:SmallCNN",
    "inception_v3": "saliency_jax.models.inception_v3:InceptionV3",
    "densenet121": "saliency_jax.models.densenet121:DenseNet121",
}


def create(name: str, *, num_classes: int, in_channels: int, width: float = 1.0,
           rngs: nnx.Rngs) -> nnx.Module:
  """Builds model ``name`` (one of ``MODELS``) with fresh parameters."""
  if name not in MODELS:
    raise ValueError(f"config.model: unknown model {name!r}; "
                     f"expected one of {sorted(MODELS)}")
  if width <= 0:
    raise ValueError(f"config.width: expected a positive multiplier, got {width}")
  module, cls = MODELS[name].split(":")
  model_cls = getattr(importlib.import_module(module), cls)
  return model_cls(num_classes=num_classes, in_channels=in_channels,
                   width=width, rngs=rngs)
