"""TFDS builder for the synthetic chest phantoms (`saliency_jax.data.synthetic`)."""

from __future__ import annotations

from saliency_jax.data.synthetic_cxr.synthetic_cxr import (
    SyntheticCxr, SyntheticCxrConfig, config_name, make_config)

__all__ = ["SyntheticCxr", "SyntheticCxrConfig", "config_name", "make_config"]
