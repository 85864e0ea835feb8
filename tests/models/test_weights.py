"""Our weights in and out: .npz round trips, clear mismatch errors, input preprocessing."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import models
from saliency_jax.models import keras_import
from saliency_jax.models import layers
from saliency_jax.models import weights as weights_lib

# Small widths keep the abstract builds quick; the structure is the real one.
WIDTH = {"small_cnn": 0.25, "inception_v3": 0.125, "densenet121": 0.125}


def _random_model(name: str, *, seed: int = 0, num_classes: int = 3,
                  in_channels: int = 1, preprocessing: str = "none") -> nnx.Module:
  """Model ``name`` with every variable random (BatchNorm statistics too)."""
  model = weights_lib.abstract_model(name, num_classes=num_classes,
                                     in_channels=in_channels, width=WIDTH[name],
                                     preprocessing=preprocessing)
  rng = np.random.default_rng(seed)
  values = {k: rng.uniform(0.5, 1.5, shape).astype(np.float32)
            for k, shape in weights_lib.expected_shapes(model).items()}
  return weights_lib.assign(model, values, "random")


@pytest.mark.parametrize("name", sorted(WIDTH))
def test_npz_round_trip_is_bit_identical(name, tmp_path):
  model = _random_model(name, preprocessing="inception")
  path = str(tmp_path / "w.npz")
  models.save_npz(path, model, name=name, width=WIDTH[name], in_channels=1)
  loaded = models.from_npz(path)
  before, after = weights_lib.flat_values(model), weights_lib.flat_values(loaded)
  assert before.keys() == after.keys()
  for k, v in before.items():
    assert after[k].dtype == v.dtype and np.array_equal(after[k], v), k
  assert loaded.preprocessing == "inception"
  assert type(loaded) is type(model)
  # Plain NumPy reads the file: block names and how to build the model.
  with np.load(path) as f:
    meta = json.loads(str(f[weights_lib.METADATA_KEY]))
    assert np.array_equal(f["predictions/kernel"], before["predictions/kernel"])
  assert meta == {"model": name, "width": WIDTH[name], "in_channels": 1,
                  "num_classes": 3, "preprocessing": "inception"}


def test_flat_names_are_block_paths_with_batchnorm_statistics():
  names = set(weights_lib.flat_values(_random_model("densenet121")))
  assert {"conv1/conv/kernel", "conv2/layers/0/bn1/mean", "conv2/layers/0/bn1/var",
          "pool2/conv/kernel", "bn/scale", "predictions/bias"} <= names
  names = set(weights_lib.flat_values(_random_model("inception_v3")))
  assert {"mixed0/branch1x1/conv/kernel", "mixed10/branch_pool/bn/var"} <= names
  assert "mixed0/branch1x1/bn/scale" not in names  # Keras: scale=False


def test_a_mismatch_names_the_first_variable_and_the_shape():
  values = weights_lib.flat_values(_random_model("small_cnn"))
  wider = weights_lib.abstract_model("small_cnn", num_classes=3, in_channels=1,
                                     width=0.5)
  with pytest.raises(ValueError, match=r"f\.npz: 'block1/bn/bias' has shape "
                     r"\(8,\), expected \(16,\)"):
    weights_lib.assign(wider, values, "f.npz")
  same = weights_lib.abstract_model("small_cnn", num_classes=3, in_channels=1,
                                    width=0.25)
  missing = {k: v for k, v in values.items() if k != "block2/bn/mean"}
  with pytest.raises(ValueError, match=r"no weights for 'block2/bn/mean' "
                     r"\(expected shape \(16,\)\)"):
    weights_lib.assign(same, missing, "f.npz")
  with pytest.raises(ValueError, match=r"1 arrays the model does not have, the "
                     r"first 'block9/kernel'"):
    weights_lib.assign(same, {**values, "block9/kernel": np.zeros(1)}, "f.npz")


def test_npz_head_replacement_changes_only_the_head(tmp_path):
  model = _random_model("small_cnn")
  path = str(tmp_path / "w.npz")
  models.save_npz(path, model, name="small_cnn", width=0.25, in_channels=1)
  before = weights_lib.flat_values(model)
  after = weights_lib.flat_values(models.from_npz(path, num_classes=2, seed=1))
  assert after["predictions/kernel"].shape == (before["predictions/kernel"].shape[0], 2)
  assert np.array_equal(after["predictions/bias"], np.zeros(2))
  for k, v in before.items():
    if not k.startswith("predictions/"):
      assert np.array_equal(after[k], v), k
  with pytest.raises(ValueError, match="holds model='small_cnn', expected 'densenet121'"):
    models.load("densenet121", path, width=0.25)
  with pytest.raises(ValueError, match="holds width=0.25, expected 0.5"):
    models.load("small_cnn", path, width=0.5)


def test_the_model_applies_its_preprocessing_first():
  none = _random_model("small_cnn", in_channels=3)
  graphdef_none, state = nnx.split(none)
  for mode, expected in (("inception", lambda x: 2 * x - 1),
                         ("imagenet", lambda x: (x - jnp.asarray(layers.IMAGENET_MEAN))
                          / jnp.asarray(layers.IMAGENET_STD))):
    model = weights_lib.abstract_model("small_cnn", num_classes=3, in_channels=3,
                                       width=0.25, preprocessing=mode)
    model.eval()
    graphdef, _ = nnx.split(model)
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
    ours = nnx.merge(graphdef, state)(x)
    np.testing.assert_allclose(ours, nnx.merge(graphdef_none, state)(expected(x)),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(ours, nnx.merge(graphdef_none, state)(x), atol=1e-3)


def test_gray_imagenet_preprocessing_uses_the_mean_statistics():
  x = np.linspace(0, 1, 5, dtype=np.float32).reshape(1, 5, 1, 1)
  np.testing.assert_allclose(layers.preprocess(x, "imagenet"),
                             (x - np.mean(layers.IMAGENET_MEAN))
                             / np.mean(layers.IMAGENET_STD), rtol=1e-6)
  with pytest.raises(ValueError, match="takes 1 or 3 channels, got 2"):
    layers.preprocess(np.zeros((1, 2, 2, 2)), "imagenet")
  with pytest.raises(ValueError, match="preprocessing='tf'"):
    models.create("small_cnn", num_classes=2, in_channels=1, preprocessing="tf",
                  rngs=nnx.Rngs(0))


def test_config_constants_follow_the_models():
  # config.py keeps its own copies so that flag errors never import JAX.
  assert config_lib.PREPROCESSING == ("auto",) + layers.PREPROCESSING
  assert config_lib.KERAS_MODELS == keras_import.KERAS_MODELS
  assert config_lib.KERAS_SUFFIXES == weights_lib.KERAS_SUFFIXES
  assert set(keras_import.KERAS_PREPROCESSING) == set(keras_import.KERAS_MODELS)
