"""DenseNet-121 (Huang et al., "Densely Connected Convolutional Networks",
CVPR 2017), layer for layer as ``keras.applications.DenseNet121``.

Channels-last, pre-activation (BN -> ReLU -> conv) dense layers with a 1x1
bottleneck to ``4 * growth`` channels, growth rate 32, dense blocks of
6/12/24/16 layers joined by transitions with compression 0.5. BatchNorm has
scale and bias, epsilon 1.001e-5, momentum 0.99; convs have no bias. Top-level
blocks carry the Keras names ``conv1``, ``conv2``, ``pool2``, ..., ``conv5``,
``bn``, ``predictions`` (global average pool + dense, logits without the
softmax). The GradCAM layer is the last dense block after its final
BatchNorm + ReLU (``bn``; 7x7x1024 at 224x224 input).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_jax.models import layers

_BLOCKS = (6, 12, 24, 16)
# Keras' Conv2D/Dense default; re-initialization in the cascade draws from it.
_KERNEL_INIT = nnx.initializers.glorot_uniform()


def _bn(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(channels, epsilon=1.001e-5, momentum=0.99, rngs=rngs)


def _conv(cin: int, cout: int, kernel: int, rngs: nnx.Rngs, *,
          strides: int = 1, padding: str = "SAME") -> nnx.Conv:
  return nnx.Conv(cin, cout, (kernel, kernel), strides=strides, padding=padding,
                  use_bias=False, kernel_init=_KERNEL_INIT, rngs=rngs)


class Stem(nnx.Module):
  """Keras ``conv1``: pad 3, 7x7/2 conv, BN, ReLU; pad 1, 3x3/2 max-pool."""

  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
    self.conv = _conv(cin, cout, 7, rngs, strides=2, padding=((3, 3), (3, 3)))
    self.bn = _bn(cout, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = layers.relu(self.bn(self.conv(x)))
    # Zero padding as Keras (max_pool pads with -inf); the two differ once a
    # swapped activation (layers.activation) can go negative.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return nnx.max_pool(x, (3, 3), (2, 2), padding="VALID")


class DenseLayer(nnx.Module):
  """BN-ReLU-1x1 conv to ``bottleneck``, BN-ReLU-3x3 conv to ``growth``, concat.

  Keras names: ``bn1`` = ``_0_bn``, ``conv1`` = ``_1_conv``,
  ``bn2`` = ``_1_bn``, ``conv2`` = ``_2_conv``.
  """

  def __init__(self, cin: int, bottleneck: int, growth: int, *,
               rngs: nnx.Rngs):
    self.bn1 = _bn(cin, rngs)
    self.conv1 = _conv(cin, bottleneck, 1, rngs)
    self.bn2 = _bn(bottleneck, rngs)
    self.conv2 = _conv(bottleneck, growth, 3, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv1(layers.relu(self.bn1(x)))
    y = self.conv2(layers.relu(self.bn2(y)))
    return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nnx.Module):
  """``num_layers`` dense layers; ``layers[i]`` is Keras' ``block{i+1}``."""

  def __init__(self, cin: int, num_layers: int, *, bottleneck: int,
               growth: int, rngs: nnx.Rngs):
    self.layers = nnx.List([
        DenseLayer(cin + i * growth, bottleneck, growth, rngs=rngs)
        for i in range(num_layers)])
    self.out_channels = cin + num_layers * growth

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers:
      x = layer(x)
    return x


class Transition(nnx.Module):
  """BN, ReLU, 1x1 conv to half the channels, 2x2/2 average pool."""

  def __init__(self, cin: int, *, rngs: nnx.Rngs):
    self.out_channels = cin // 2  # Keras: int(channels * 0.5).
    self.bn = _bn(cin, rngs)
    self.conv = _conv(cin, self.out_channels, 1, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(layers.relu(self.bn(x)))
    return nnx.avg_pool(x, (2, 2), (2, 2))


class DenseNet121(nnx.Module):
  """DenseNet-121 (Huang et al. 2017) with Keras' topology; returns logits."""

  cascade_order = ("predictions", "bn", "conv5", "pool4", "conv4", "pool3",
                   "conv3", "pool2", "conv2", "conv1")
  gradcam_layer = "bn"

  def __init__(self, *, num_classes: int, in_channels: int, width: float = 1.0,
               preprocessing: str = "none", rngs: nnx.Rngs):
    layers.check_preprocessing(preprocessing)
    self.preprocessing = preprocessing  # static: part of the graphdef
    growth = layers.scaled(32, width)
    kw = dict(bottleneck=4 * growth, growth=growth, rngs=rngs)
    self.conv1 = Stem(in_channels, layers.scaled(64, width), rngs=rngs)
    self.conv2 = DenseBlock(layers.scaled(64, width), _BLOCKS[0], **kw)
    self.pool2 = Transition(self.conv2.out_channels, rngs=rngs)
    self.conv3 = DenseBlock(self.pool2.out_channels, _BLOCKS[1], **kw)
    self.pool3 = Transition(self.conv3.out_channels, rngs=rngs)
    self.conv4 = DenseBlock(self.pool3.out_channels, _BLOCKS[2], **kw)
    self.pool4 = Transition(self.conv4.out_channels, rngs=rngs)
    self.conv5 = DenseBlock(self.pool4.out_channels, _BLOCKS[3], **kw)
    self.bn = _bn(self.conv5.out_channels, rngs)
    self.predictions = nnx.Linear(self.conv5.out_channels, num_classes,
                                  kernel_init=_KERNEL_INIT, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    """``relu(bn(conv5(...)))``, ``(B, h, w, 1024 * width)``.

    The output of Keras' ``DenseNet121(include_top=False)`` (no pooling).
    """
    x = layers.preprocess(x, self.preprocessing)
    x = self.conv3(self.pool2(self.conv2(self.conv1(x))))
    x = self.conv5(self.pool4(self.conv4(self.pool3(x))))
    return layers.relu(self.bn(x))

  def head(self, a: jax.Array) -> jax.Array:
    """Global average pool + dense: GradCAM activations to logits."""
    return self.predictions(jnp.mean(a, axis=(1, 2)))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(self.features(x))
