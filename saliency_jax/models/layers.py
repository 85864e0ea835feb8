"""Layers shared by the models: the swappable ReLU and the model contract.

Every ReLU in every model goes through :func:`relu`. Guided backpropagation
(Springenberg et al. 2015) swaps the ReLU's backward rule for the whole network
by tracing the model inside ``with activation(guided_relu):`` -- the models'
code is never copied.

The model contract (what saliency methods, randomization and training rely on):

- ``model(x)`` maps a batch ``(B, H, W, C)`` to logits ``(B, K)``;
- ``model.features(x)`` gives the GradCAM layer's activations ``(B, h, w, k)``
  and ``model.head(a)`` maps them to logits, so ``model(x) == head(features(x))``;
- ``model.cascade_order`` is a tuple of the model's top-level attribute names,
  top-down (logits first), covering every parameter exactly once;
- ``model.gradcam_layer`` names the block whose output ``features`` returns;
- ``model.preprocessing`` (one of :data:`PREPROCESSING`) maps the images in
  [0, 1] to what the weights expect, first thing in ``features``: saliency
  maps stay gradients with respect to the [0, 1] image;
- BatchNorm follows NNX: ``model.train()`` / ``model.eval()``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

_ACTIVATION: contextvars.ContextVar[Callable[[jax.Array], jax.Array]] = (
    contextvars.ContextVar("saliency_jax_activation", default=jax.nn.relu))


def relu(x: jax.Array) -> jax.Array:
  """The ReLU of every model; :func:`activation` can swap it while tracing."""
  return _ACTIVATION.get()(x)


@contextlib.contextmanager
def activation(fn: Callable[[jax.Array], jax.Array]) -> Iterator[None]:
  """Replaces every model ReLU by ``fn`` for code traced inside the block."""
  token = _ACTIVATION.set(fn)
  try:
    yield
  finally:
    _ACTIVATION.reset(token)


def scaled(channels: int, width: float) -> int:
  """Channel count under a width multiplier (``width=1`` is the published net)."""
  return max(1, int(round(channels * width)))


# keras.applications' ``preprocess_input`` for images in [0, 1] (Keras takes
# [0, 255]): 'inception' is Keras' 'tf' mode (InceptionV3), 'imagenet' its
# 'torch' mode (DenseNet121).
PREPROCESSING = ("none", "inception", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_preprocessing(mode: str) -> None:
  if mode not in PREPROCESSING:
    raise ValueError(f"preprocessing={mode!r}: expected one of {PREPROCESSING}")


def preprocess(x: jax.Array, mode: str) -> jax.Array:
  """Images ``(..., C)`` in [0, 1] to a network's input range.

  ``inception``: ``2 x - 1``, in [-1, 1]. ``imagenet``: ``(x - mean) / std``
  per RGB channel with ImageNet's statistics; a 1-channel image (a gray image
  has three equal channels, and its first-layer kernel is the sum of the RGB
  ones) uses the mean of the three means and of the three stds.
  """
  check_preprocessing(mode)
  if mode == "none":
    return x
  if mode == "inception":
    return 2.0 * x - 1.0
  channels = x.shape[-1]  # 'imagenet' from here on
  if channels not in (1, 3):
    raise ValueError(f"preprocessing='imagenet' takes 1 or 3 channels, got "
                     f"{channels}")
  mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
  if channels == 1:
    mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
  return (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
  """ReLU whose backward pass passes positive gradients at positive inputs."""
  return jax.nn.relu(x)


def _guided_relu_fwd(x):
  return jax.nn.relu(x), x


def _guided_relu_bwd(x, g):
  return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)
