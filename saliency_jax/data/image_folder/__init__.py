"""TFDS builder for a folder of the user's own images with boxes or masks."""

from __future__ import annotations

from saliency_jax.data.image_folder.image_folder import ImageFolder, make_config

__all__ = ["ImageFolder", "make_config"]
