"""Metrics: localization (map vs mask), similarity (map vs map), statistics.

- :data:`LOCALIZATION`: name -> ``metric(saliency_map (H, W), mask (H, W),
  **options)`` (:mod:`.localization`: ``auprc``, ``dice``, ``pointing_game``, ...);
- :data:`SIMILARITY`: name -> ``metric(a (H, W), b (H, W), **options)``
  (:mod:`.similarity`: ``spearman``, ``ssim``, ``hog_spearman``, ...);
- :data:`RANDOMIZATION`: name -> ``metric(trained_map, randomized_map,
  **options)`` (:mod:`.randomization`: ``emprt``; sMPRT's ``smoothed_maps``);
- :func:`localization_scores` / :func:`similarity_scores` /
  :func:`randomization_scores`: metrics by name
  over batches of maps (:mod:`.scoring`), as the experiments score;
- :mod:`.stats`: bootstrap intervals, paired tests, verdicts.

The two registries are the dicts of their modules (one registry, the names
configs, experiments and notebooks use). Imported on first use (PEP 562):
``results`` reads :mod:`.stats` without importing JAX.
"""

from __future__ import annotations

from saliency_jax import _lazy

# Public name -> (module, attribute in it; None: the module itself).
_LAZY = {
    "LOCALIZATION": ("saliency_jax.metrics.localization", "LOCALIZATION"),
    "SIMILARITY": ("saliency_jax.metrics.similarity", "SIMILARITY"),
    "localization_scores": ("saliency_jax.metrics.scoring", "localization_scores"),
    "similarity_scores": ("saliency_jax.metrics.scoring", "similarity_scores"),
    "RANDOMIZATION": ("saliency_jax.metrics.randomization", "RANDOMIZATION"),
    "randomization_scores": ("saliency_jax.metrics.scoring", "randomization_scores"),
    "classification": ("saliency_jax.metrics.classification", None),
    "chexlocalize": ("saliency_jax.metrics.chexlocalize", None),
    "faithfulness": ("saliency_jax.metrics.faithfulness", None),
    "localization": ("saliency_jax.metrics.localization", None),
    "randomization": ("saliency_jax.metrics.randomization", None),
    "scoring": ("saliency_jax.metrics.scoring", None),
    "similarity": ("saliency_jax.metrics.similarity", None),
    "stats": ("saliency_jax.metrics.stats", None),
}

__all__ = list(_LAZY)

__getattr__, __dir__ = _lazy.exports(__name__, _LAZY, globals())
