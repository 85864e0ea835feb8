r"""What the CAM family shares: the model check, the layer's activations and
gradients, and the common tail (ReLU, bilinear upsampling, tiling).

A CAM is :math:`M = \mathrm{up}(\mathrm{ReLU}(L))` for a map :math:`L` (h, w)
on the model's GradCAM layer :math:`A` = ``explainee.features(x)`` (h, w, k);
negatives are clipped before the bilinear resize to (H, W), as
pytorch-grad-cam does, and the map is tiled over the C channels as
:mod:`~saliency_jax.saliency.gradcam` tiles it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _checks
from saliency_jax.saliency.explainee import Explainee, as_explainee


def model_explainee(method: str, logits_fn: Any, x: Any, target: Any) -> Explainee:
  """Checks ``x`` and ``target`` and returns an explainee with features/head."""
  _checks.image(method, x)
  _checks.target(method, target)
  explainee = as_explainee(logits_fn)
  if explainee.graphdef is None:
    raise ValueError(f"{method}: needs a model with features/head (an NNX "
                     "model or explainee.from_model), not a plain logits_fn")
  return explainee


def activations_and_gradients(explainee: Explainee, x: jax.Array,
                              target: jax.Array) -> tuple[jax.Array, jax.Array]:
  r""":math:`A` (h, w, k) and :math:`\partial f_t / \partial A` (h, w, k)."""
  a = explainee.features(x)
  return a, jax.grad(lambda a: explainee.head(a)[target])(a)


def finish(layer_map: jax.Array, x: jax.Array) -> jax.Array:
  """ReLU, bilinear resize of (h, w) to x's (H, W), tiled to (H, W, C)."""
  cam = jax.image.resize(jax.nn.relu(layer_map), x.shape[:2], "bilinear")
  return jnp.broadcast_to(cam[..., None], x.shape).astype(x.dtype)
