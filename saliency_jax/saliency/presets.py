"""Hyper-parameter presets by name: library parity and the papers' settings.

``PRESETS[preset][method]`` holds the keyword arguments of that method; a
method the preset does not list runs with its own defaults. Configs select a
preset by name and :func:`hparams_for` resolves it.

- ``pair``: PAIR ``saliency`` 0.2.1 defaults and quadrature.
- ``adebayo2018``: "Sanity checks for saliency maps" (arXiv:1810.03292),
  computed with PAIR ``saliency``.
- ``arun2021``: Arun et al., Radiology: AI 2021 (PAIR ``saliency`` on a Keras
  InceptionV3). IG's baseline there is the constant -1 of [-1, 1] inputs,
  written ``black`` (the image minimum) so that other input ranges work;
  GradCAM always uses the model's declared layer (``mixed10`` for
  InceptionV3).
"""

from __future__ import annotations

from typing import Any

_PAIR_SMOOTHGRAD = {"num_samples": 25, "noise_level": 0.15, "squared": True}
_PAIR_IG = {"steps": 25, "baseline": "zeros", "quadrature": "pair"}
_ARUN_IG = {"steps": 10, "baseline": "black", "quadrature": "pair"}
_ADEBAYO_SMOOTHGRAD = {"num_samples": 50, "noise_level": 0.15,
                       "squared": False}
_ADEBAYO_IG = {"steps": 50, "baseline": "zeros", "quadrature": "pair"}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "pair": {
        "smoothgrad": _PAIR_SMOOTHGRAD,
        "integrated_gradients": _PAIR_IG,
        "smoothgrad_ig": {**_PAIR_SMOOTHGRAD, **_PAIR_IG},
        "occlusion": {"window": 15, "stride": 1, "value": 0.0,
                      "reduce": "sum"},
        "blur_ig": {"max_sigma": 50.0, "steps": 100, "grad_step": 0.01},
        "guided_ig": {"steps": 200, "fraction": 0.25, "max_dist": 0.02},
    },
    "adebayo2018": {
        "smoothgrad": _ADEBAYO_SMOOTHGRAD,
        "integrated_gradients": _ADEBAYO_IG,
        "smoothgrad_ig": {**_ADEBAYO_SMOOTHGRAD, **_ADEBAYO_IG},
    },
    "arun2021": {
        "smoothgrad": _PAIR_SMOOTHGRAD,
        "integrated_gradients": _ARUN_IG,
        "smoothgrad_ig": {**_PAIR_SMOOTHGRAD, **_ARUN_IG},
    },
}


def hparams_for(preset: str | None, method: str,
                **overrides: Any) -> dict[str, Any]:
  """Keyword arguments of ``method`` under ``preset``, updated by ``overrides``.

  Args:
    preset: a key of :data:`PRESETS`, or ``None`` for the method's defaults.
    method: a name in ``saliency_jax.saliency.METHODS``.
    **overrides: hyper-parameters that replace the preset's.

  Returns:
    A new dict (the presets are never modified).
  """
  from saliency_jax.saliency import METHODS  # pylint: disable=g-import-not-at-top
  if preset is not None and preset not in PRESETS:
    raise ValueError(f"preset: unknown preset {preset!r}; expected one of "
                     f"{sorted(PRESETS)} or None")
  if method not in METHODS:
    raise ValueError(f"method: unknown method {method!r}; expected one of "
                     f"{sorted(METHODS)}")
  base = {} if preset is None else PRESETS[preset].get(method, {})
  return {**base, **overrides}
