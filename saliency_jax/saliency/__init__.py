"""Saliency methods as jitted, vmapped JAX programs; one module per method.

Every method has the signature
``method(logits_fn_or_explainee, x, target, *, key=None, batch_size=None,
strategy=None, **hparams) -> (H, W, C)`` raw, signed attribution for one
image ``x`` (H, W, C); :data:`METHODS` names them, :func:`explain` runs one
over a batch of images, :mod:`postprocess` turns maps into what metrics
compare, :mod:`presets` holds the parity settings, and :mod:`batching` is
where noise samples, path steps and windows are chunked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from saliency_jax.saliency import (controls, eigencam, gradcam,
                                   gradcam_plus_plus, gradient,
                                   gradient_x_input, guided_backprop,
                                   guided_gradcam, hirescam,
                                   integrated_gradients, layercam, occlusion,
                                   postprocess, presets, random_cam, scorecam,
                                   smoothgrad, smoothgrad_ig, xgradcam)
from saliency_jax.saliency.batching import DEFAULT_STRATEGY, STRATEGIES
from saliency_jax.saliency.explain import auto_batch_size, explain, explain_states
from saliency_jax.saliency.explainee import (Explainee, as_explainee,
                                             from_model, from_state)
from saliency_jax.saliency.presets import PRESETS, hparams_for


class _LazyMethod:
  """A method imported from ``"module:function"`` on first use, so that a
  missing or heavy module fails or loads only when that method is asked for."""

  def __init__(self, target: str):
    self.target = target

  def resolve(self) -> Callable[..., Any]:
    module, name = self.target.split(":")
    return getattr(importlib.import_module(module), name)

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    return self.resolve()(*args, **kwargs)

  def __getattr__(self, name: str) -> Any:
    # Forwards the method's declarations (e.g. ``evaluations``).
    if name.startswith("__"):
      raise AttributeError(name)
    return getattr(self.resolve(), name)

  def __repr__(self) -> str:
    return f"<saliency method {self.target} (lazy)>"


METHODS: dict[str, Callable[..., Any]] = {
    "gradient": gradient.gradient,
    "gradient_x_input": gradient_x_input.gradient_x_input,
    "smoothgrad": smoothgrad.smoothgrad,
    "integrated_gradients": integrated_gradients.integrated_gradients,
    "smoothgrad_ig": smoothgrad_ig.smoothgrad_ig,
    "gradcam": gradcam.gradcam,
    "guided_backprop": guided_backprop.guided_backprop,
    "guided_gradcam": guided_gradcam.guided_gradcam,
    # The CAM family (pytorch-grad-cam's conventions; see each module).
    "hirescam": hirescam.hirescam,
    "gradcam_plus_plus": gradcam_plus_plus.gradcam_plus_plus,
    "xgradcam": xgradcam.xgradcam,
    "layercam": layercam.layercam,
    "eigencam": eigencam.eigencam,
    "scorecam": scorecam.scorecam,
    "random_cam": random_cam.random_cam,
    "occlusion": occlusion.occlusion,
    "random": controls.random,
    "edge": controls.edge,
    "center_prior": controls.center_prior,
    # Region and path methods live in their own modules, imported when used.
    "xrai": _LazyMethod("saliency_jax.saliency.xrai:xrai"),
    "blur_ig": _LazyMethod("saliency_jax.saliency.blur_ig:blur_ig"),
    "guided_ig": _LazyMethod("saliency_jax.saliency.guided_ig:guided_ig"),
}

__all__ = [
    "DEFAULT_STRATEGY", "Explainee", "METHODS", "PRESETS", "STRATEGIES",
    "as_explainee", "auto_batch_size", "explain", "explain_states", "from_model", "from_state",
    "hparams_for", "postprocess",
]
