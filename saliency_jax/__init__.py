"""saliency_jax: can a classifier's saliency maps be trusted to localize an abnormality?

The public face, for notebooks and scripts::

  import saliency_jax as sj

  maps = sj.explain(model, images, method="integrated_gradients", steps=32)
  heat = jax.vmap(sj.postprocess.postprocess)(maps)          # (N, H, W) in [0, 1]
  auprc = sj.metrics.localization_scores(heat, masks, ["auprc"])["auprc"]

- :func:`explain` / :func:`explain_states` / :func:`auto_batch_size`: one
  saliency method (a name in :data:`METHODS`) over a batch of images, for
  one model or a stack of model states (cascade stages, seeds);
- :mod:`postprocess`: raw attribution (H, W, C) -> the map metrics compare;
- :mod:`metrics`: ``metrics.LOCALIZATION`` and ``metrics.SIMILARITY`` (name
  -> function, the registry the experiments use) and batched scoring;
- :mod:`models`: ``create(name, ...)``, ``from_keras``, ``from_npz``;
- :mod:`randomization`: cascading / independent re-initialization
  (``cascade_states(model, fresh)``);
- :mod:`results`: ``load(workdir)`` reads an experiment's results back.

Every name above is imported on first use (PEP 562), so ``import
saliency_jax`` does not import JAX: the command line reports a bad flag
before JAX loads.
"""

from __future__ import annotations

from saliency_jax import _lazy

__version__ = "0.1.0"

# Public name -> (module, attribute in it; None: the module itself).
_LAZY = {
    "explain": ("saliency_jax.saliency", "explain"),
    "explain_states": ("saliency_jax.saliency", "explain_states"),
    "auto_batch_size": ("saliency_jax.saliency", "auto_batch_size"),
    "METHODS": ("saliency_jax.saliency", "METHODS"),
    "postprocess": ("saliency_jax.saliency.postprocess", None),
    "saliency": ("saliency_jax.saliency", None),
    "metrics": ("saliency_jax.metrics", None),
    "models": ("saliency_jax.models", None),
    "randomization": ("saliency_jax.randomization", None),
    "results": ("saliency_jax.results", None),
}

__all__ = ["__version__", *_LAZY]

__getattr__, __dir__ = _lazy.exports(__name__, _LAZY, globals())
