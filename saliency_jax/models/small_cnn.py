"""A small VGG-style CNN for fast runs on a CPU.

Four conv blocks (conv 3x3 -> BatchNorm -> ReLU -> 2x2 max-pool, the last one
without pooling), global average pooling and a dense layer. Its GradCAM layer is
the last conv block.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_jax.models import layers

_CHANNELS = (32, 64, 128, 256)


class ConvBlock(nnx.Module):
  """conv 3x3 -> BatchNorm -> ReLU, then an optional 2x2 max-pool."""

  def __init__(self, cin: int, cout: int, *, pool: bool, rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (3, 3), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)
    self.pool = pool

  def __call__(self, x: jax.Array) -> jax.Array:
    x = layers.relu(self.bn(self.conv(x)))
    return nnx.max_pool(x, (2, 2), (2, 2)) if self.pool else x


class SmallCNN(nnx.Module):
  cascade_order = ("predictions", "block4", "block3", "block2", "block1")
  gradcam_layer = "block4"

  def __init__(self, *, num_classes: int, in_channels: int, width: float = 1.0,
               preprocessing: str = "none", rngs: nnx.Rngs):
    layers.check_preprocessing(preprocessing)
    self.preprocessing = preprocessing  # static: part of the graphdef
    ch = [layers.scaled(c, width) for c in _CHANNELS]
    cin = [in_channels] + ch[:-1]
    self.block1 = ConvBlock(cin[0], ch[0], pool=True, rngs=rngs)
    self.block2 = ConvBlock(cin[1], ch[1], pool=True, rngs=rngs)
    self.block3 = ConvBlock(cin[2], ch[2], pool=True, rngs=rngs)
    self.block4 = ConvBlock(cin[3], ch[3], pool=False, rngs=rngs)
    self.predictions = nnx.Linear(ch[3], num_classes, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    x = layers.preprocess(x, self.preprocessing)
    return self.block4(self.block3(self.block2(self.block1(x))))

  def head(self, a: jax.Array) -> jax.Array:
    return self.predictions(jnp.mean(a, axis=(1, 2)))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(self.features(x))
