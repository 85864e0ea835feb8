"""Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture for
Computer Vision", CVPR 2016), layer for layer as
``keras.applications.InceptionV3``.

Channels-last. Every conv is a :class:`ConvBN` unit (conv without bias ->
BatchNorm without scale, epsilon 1e-3, momentum 0.99 -> ReLU), as Keras'
``conv2d_bn``. Top-level blocks carry the Keras names: the stem units
``conv2d_1a_3x3`` ... ``conv2d_4a_3x3`` (the two stem max-pools have no
parameters), ``mixed0`` ... ``mixed10`` and ``predictions`` (global average
pool + dense, logits without the softmax). Each mixed block lists its conv
units in Keras' creation order in ``units``, so Keras weights map unit by unit.
The GradCAM layer is ``mixed10`` (8x8x2048 at 299x299 input).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_jax.models import layers

# Keras' Conv2D/Dense default; re-initialization in the cascade draws from it.
_KERNEL_INIT = nnx.initializers.glorot_uniform()


class ConvBN(nnx.Module):
  """conv (no bias) -> BatchNorm (no scale) -> ReLU: Keras' ``conv2d_bn``."""

  def __init__(self, cin: int, cout: int, kernel: tuple[int, int], *,
               strides: int = 1, padding: str = "SAME", rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, kernel, strides=strides, padding=padding,
                         use_bias=False, kernel_init=_KERNEL_INIT, rngs=rngs)
    self.bn = nnx.BatchNorm(cout, use_scale=False, epsilon=1e-3, momentum=0.99,
                            rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return layers.relu(self.bn(self.conv(x)))


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, (3, 3), (2, 2), padding="VALID")


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # Keras/TF 'same' average pooling divides by the in-image window size only.
  return nnx.avg_pool(x, (3, 3), (1, 1), padding="SAME",
                      count_include_pad=False)


class InceptionA(nnx.Module):
  """35x35 block (``mixed0``-``mixed2``): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool."""

  units = ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1",
           "branch3x3dbl_2", "branch3x3dbl_3", "branch_pool")

  def __init__(self, cin: int, pool_channels: int, *, width: float,
               rngs: nnx.Rngs):
    c = lambda n: layers.scaled(n, width)  # noqa: E731
    self.branch1x1 = ConvBN(cin, c(64), (1, 1), rngs=rngs)
    self.branch5x5_1 = ConvBN(cin, c(48), (1, 1), rngs=rngs)
    self.branch5x5_2 = ConvBN(c(48), c(64), (5, 5), rngs=rngs)
    self.branch3x3dbl_1 = ConvBN(cin, c(64), (1, 1), rngs=rngs)
    self.branch3x3dbl_2 = ConvBN(c(64), c(96), (3, 3), rngs=rngs)
    self.branch3x3dbl_3 = ConvBN(c(96), c(96), (3, 3), rngs=rngs)
    self.branch_pool = ConvBN(cin, c(pool_channels), (1, 1), rngs=rngs)
    self.out_channels = c(64) + c(64) + c(96) + c(pool_channels)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
  """Grid reduction 35->17 (``mixed3``): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

  units = ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")

  def __init__(self, cin: int, *, width: float, rngs: nnx.Rngs):
    c = lambda n: layers.scaled(n, width)  # noqa: E731
    self.branch3x3 = ConvBN(cin, c(384), (3, 3), strides=2, padding="VALID",
                            rngs=rngs)
    self.branch3x3dbl_1 = ConvBN(cin, c(64), (1, 1), rngs=rngs)
    self.branch3x3dbl_2 = ConvBN(c(64), c(96), (3, 3), rngs=rngs)
    self.branch3x3dbl_3 = ConvBN(c(96), c(96), (3, 3), strides=2,
                                 padding="VALID", rngs=rngs)
    self.out_channels = c(384) + c(96) + cin

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3(x)
    bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nnx.Module):
  """17x17 block (``mixed4``-``mixed7``), 7x7 convs factorized as 1x7, 7x1."""

  units = ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3",
           "branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3",
           "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool")

  def __init__(self, cin: int, channels_7x7: int, *, width: float,
               rngs: nnx.Rngs):
    c = lambda n: layers.scaled(n, width)  # noqa: E731
    c7 = c(channels_7x7)
    self.branch1x1 = ConvBN(cin, c(192), (1, 1), rngs=rngs)
    self.branch7x7_1 = ConvBN(cin, c7, (1, 1), rngs=rngs)
    self.branch7x7_2 = ConvBN(c7, c7, (1, 7), rngs=rngs)
    self.branch7x7_3 = ConvBN(c7, c(192), (7, 1), rngs=rngs)
    self.branch7x7dbl_1 = ConvBN(cin, c7, (1, 1), rngs=rngs)
    self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), rngs=rngs)
    self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), rngs=rngs)
    self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), rngs=rngs)
    self.branch7x7dbl_5 = ConvBN(c7, c(192), (1, 7), rngs=rngs)
    self.branch_pool = ConvBN(cin, c(192), (1, 1), rngs=rngs)
    self.out_channels = 4 * c(192)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for name in self.units[4:9]:
      bd = getattr(self, name)(bd)
    bp = self.branch_pool(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
  """Reduction 17->8 (``mixed8``): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

  units = ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2",
           "branch7x7x3_3", "branch7x7x3_4")

  def __init__(self, cin: int, *, width: float, rngs: nnx.Rngs):
    c = lambda n: layers.scaled(n, width)  # noqa: E731
    self.branch3x3_1 = ConvBN(cin, c(192), (1, 1), rngs=rngs)
    self.branch3x3_2 = ConvBN(c(192), c(320), (3, 3), strides=2,
                              padding="VALID", rngs=rngs)
    self.branch7x7x3_1 = ConvBN(cin, c(192), (1, 1), rngs=rngs)
    self.branch7x7x3_2 = ConvBN(c(192), c(192), (1, 7), rngs=rngs)
    self.branch7x7x3_3 = ConvBN(c(192), c(192), (7, 1), rngs=rngs)
    self.branch7x7x3_4 = ConvBN(c(192), c(192), (3, 3), strides=2,
                                padding="VALID", rngs=rngs)
    self.out_channels = c(320) + c(192) + cin

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = x
    for name in self.units[2:]:
      b7 = getattr(self, name)(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nnx.Module):
  """8x8 block (``mixed9``, ``mixed10``) with expanded 1x3 / 3x1 branches."""

  units = ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b",
           "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3a",
           "branch3x3dbl_3b", "branch_pool")

  def __init__(self, cin: int, *, width: float, rngs: nnx.Rngs):
    c = lambda n: layers.scaled(n, width)  # noqa: E731
    self.branch1x1 = ConvBN(cin, c(320), (1, 1), rngs=rngs)
    self.branch3x3_1 = ConvBN(cin, c(384), (1, 1), rngs=rngs)
    self.branch3x3_2a = ConvBN(c(384), c(384), (1, 3), rngs=rngs)
    self.branch3x3_2b = ConvBN(c(384), c(384), (3, 1), rngs=rngs)
    self.branch3x3dbl_1 = ConvBN(cin, c(448), (1, 1), rngs=rngs)
    self.branch3x3dbl_2 = ConvBN(c(448), c(384), (3, 3), rngs=rngs)
    self.branch3x3dbl_3a = ConvBN(c(384), c(384), (1, 3), rngs=rngs)
    self.branch3x3dbl_3b = ConvBN(c(384), c(384), (3, 1), rngs=rngs)
    self.branch_pool = ConvBN(cin, c(192), (1, 1), rngs=rngs)
    self.out_channels = c(320) + 4 * c(384) + c(192)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b3 = self.branch3x3_1(x)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bp = self.branch_pool(_avg_pool_3x3(x))
    return jnp.concatenate(
        [b1, self.branch3x3_2a(b3), self.branch3x3_2b(b3),
         self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd), bp], axis=-1)


class InceptionV3(nnx.Module):
  """Inception-v3 (Szegedy et al. 2016) with Keras' topology; returns logits."""

  cascade_order = ("predictions", "mixed10", "mixed9", "mixed8", "mixed7",
                   "mixed6", "mixed5", "mixed4", "mixed3", "mixed2", "mixed1",
                   "mixed0", "conv2d_4a_3x3", "conv2d_3b_1x1", "conv2d_2b_3x3",
                   "conv2d_2a_3x3", "conv2d_1a_3x3")
  gradcam_layer = "mixed10"

  def __init__(self, *, num_classes: int, in_channels: int, width: float = 1.0,
               preprocessing: str = "none", rngs: nnx.Rngs):
    layers.check_preprocessing(preprocessing)
    self.preprocessing = preprocessing  # static: part of the graphdef
    c = lambda n: layers.scaled(n, width)  # noqa: E731
    self.conv2d_1a_3x3 = ConvBN(in_channels, c(32), (3, 3), strides=2,
                                padding="VALID", rngs=rngs)
    self.conv2d_2a_3x3 = ConvBN(c(32), c(32), (3, 3), padding="VALID",
                                rngs=rngs)
    self.conv2d_2b_3x3 = ConvBN(c(32), c(64), (3, 3), rngs=rngs)
    self.conv2d_3b_1x1 = ConvBN(c(64), c(80), (1, 1), padding="VALID",
                                rngs=rngs)
    self.conv2d_4a_3x3 = ConvBN(c(80), c(192), (3, 3), padding="VALID",
                                rngs=rngs)
    self.mixed0 = InceptionA(c(192), 32, width=width, rngs=rngs)
    self.mixed1 = InceptionA(self.mixed0.out_channels, 64, width=width,
                             rngs=rngs)
    self.mixed2 = InceptionA(self.mixed1.out_channels, 64, width=width,
                             rngs=rngs)
    self.mixed3 = InceptionB(self.mixed2.out_channels, width=width, rngs=rngs)
    self.mixed4 = InceptionC(self.mixed3.out_channels, 128, width=width,
                             rngs=rngs)
    self.mixed5 = InceptionC(self.mixed4.out_channels, 160, width=width,
                             rngs=rngs)
    self.mixed6 = InceptionC(self.mixed5.out_channels, 160, width=width,
                             rngs=rngs)
    self.mixed7 = InceptionC(self.mixed6.out_channels, 192, width=width,
                             rngs=rngs)
    self.mixed8 = InceptionD(self.mixed7.out_channels, width=width, rngs=rngs)
    self.mixed9 = InceptionE(self.mixed8.out_channels, width=width, rngs=rngs)
    self.mixed10 = InceptionE(self.mixed9.out_channels, width=width, rngs=rngs)
    self.predictions = nnx.Linear(self.mixed10.out_channels, num_classes,
                                  kernel_init=_KERNEL_INIT, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    """Activations of ``mixed10``, ``(B, h, w, 2048 * width)``.

    The output of Keras' ``InceptionV3(include_top=False)`` (no pooling).
    """
    x = layers.preprocess(x, self.preprocessing)
    x = self.conv2d_2b_3x3(self.conv2d_2a_3x3(self.conv2d_1a_3x3(x)))
    x = _max_pool_3x3_s2(x)
    x = _max_pool_3x3_s2(self.conv2d_4a_3x3(self.conv2d_3b_1x1(x)))
    for i in range(11):
      x = getattr(self, f"mixed{i}")(x)
    return x

  def head(self, a: jax.Array) -> jax.Array:
    """Global average pool + dense: ``mixed10`` activations to logits."""
    return self.predictions(jnp.mean(a, axis=(1, 2)))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(self.features(x))
