"""Tests run on the CPU with small shapes."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
