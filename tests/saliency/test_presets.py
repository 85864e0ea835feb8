"""Presets: the settings the papers and PAIR used, valid for their methods."""

from __future__ import annotations

import inspect

import pytest

from saliency_jax import saliency
from saliency_jax.saliency import presets


def _signature(name):
  method = saliency.METHODS[name]
  return inspect.signature(getattr(method, "resolve", lambda: method)())


@pytest.mark.parametrize("preset", sorted(presets.PRESETS))
def test_every_preset_names_methods_and_their_arguments(preset):
  for name, hparams in presets.PRESETS[preset].items():
    assert name in saliency.METHODS
    try:
      signature = _signature(name)
    except ModuleNotFoundError:
      continue  # written by another module, not there yet
    signature.bind(None, None, 0, **hparams)  # TypeError on an unknown name


def test_preset_values_are_the_published_ones():
  pair = presets.PRESETS["pair"]
  assert pair["smoothgrad"] == dict(num_samples=25, noise_level=0.15,
                                    squared=True)
  assert pair["integrated_gradients"] == dict(steps=25, baseline="zeros",
                                              quadrature="pair")
  assert pair["occlusion"]["window"] == 15 and pair["occlusion"]["stride"] == 1
  adebayo = presets.PRESETS["adebayo2018"]
  assert adebayo["smoothgrad"]["num_samples"] == 50
  assert not adebayo["smoothgrad"]["squared"]
  assert adebayo["integrated_gradients"]["steps"] == 50
  arun = presets.PRESETS["arun2021"]
  assert arun["integrated_gradients"]["steps"] == 10
  assert arun["integrated_gradients"]["baseline"] == "black"
  # SmoothGrad-IG = IG inside the same SmoothGrad wrapper.
  assert arun["smoothgrad_ig"] == {**arun["smoothgrad"],
                                   **arun["integrated_gradients"]}


def test_hparams_for_merges_overrides_without_mutating():
  got = presets.hparams_for("arun2021", "integrated_gradients", steps=20)
  assert got == dict(steps=20, baseline="black", quadrature="pair")
  assert presets.PRESETS["arun2021"]["integrated_gradients"]["steps"] == 10
  assert presets.hparams_for("pair", "gradcam") == {}
  assert presets.hparams_for(None, "smoothgrad", num_samples=3) == dict(
      num_samples=3)
  with pytest.raises(ValueError, match="unknown preset 'captum'"):
    presets.hparams_for("captum", "gradient")
  with pytest.raises(ValueError, match="unknown method 'lime'"):
    presets.hparams_for("pair", "lime")
