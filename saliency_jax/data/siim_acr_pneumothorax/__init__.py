"""TFDS builder for SIIM-ACR Pneumothorax Segmentation (manual download)."""

from __future__ import annotations

from saliency_jax.data.siim_acr_pneumothorax.siim_acr_pneumothorax import (
    SiimAcrPneumothorax, make_config)

__all__ = ["SiimAcrPneumothorax", "make_config"]
