"""TFDS builder for the RSNA Pneumonia Detection Challenge (manual download)."""

from __future__ import annotations

from saliency_jax.data.rsna_pneumonia.rsna_pneumonia import (
    CLASSES, RsnaPneumonia, make_config)

__all__ = ["CLASSES", "RsnaPneumonia", "make_config"]
