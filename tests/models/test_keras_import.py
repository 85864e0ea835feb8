"""Keras weights: our InceptionV3 / DenseNet121 with them equal Keras, output for output.

Keras 3 runs on its JAX backend (a test-only dependency). Each network is built
once with ``weights=None`` and a fixed seed; every BatchNorm variable is then
randomized (scale, offset, moving mean and variance), so a mix-up of any layer,
statistic or channel order moves logits and features by far more than the
1e-4 tolerance, which both meet (float32 rounding is ~1e-6 here). Its weights are then written in every format we read.
"""

from __future__ import annotations

import functools
import os
import re
import tracemalloc
import zipfile

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported

import h5py  # noqa: E402
import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402
# Weights-only legacy .h5 (as Keras 2's save_weights wrote): Keras 3 writes it
# only through this module; model.save('x.h5') is the public full-model path.
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

from saliency_jax import errors  # noqa: E402
from saliency_jax import models  # noqa: E402
from saliency_jax.models import keras_import  # noqa: E402
from saliency_jax.models import layers  # noqa: E402
from saliency_jax.models import weights as weights_lib  # noqa: E402

# Keras' JAX backend hands NumPy 2 arrays through an old __array__ signature.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword")

SIDE = {"inception_v3": 299, "densenet121": 224}
NO_TOP_OUTPUT = {"inception_v3": "mixed10", "densenet121": "relu"}
APPLICATIONS = {"inception_v3": keras.applications.InceptionV3,
                "densenet121": keras.applications.DenseNet121}
PREPROCESS_INPUT = {"inception_v3": keras.applications.inception_v3.preprocess_input,
                    "densenet121": keras.applications.densenet.preprocess_input}
PREPROCESSING = {"inception_v3": "inception", "densenet121": "imagenet"}
NUM_CLASSES = 5
TOLERANCE = 1e-4  # max abs difference of logits and features, float32
# XLA's CPU compile dominates; -O0 compiles ~3x faster.
jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _randomized_statistics(net: keras.Model, rng: np.random.Generator) -> None:
  """Every BatchNorm variable random (gamma, beta, moving mean and variance).

  A mapping that swapped two BatchNorm layers or their mean and variance
  would then show in the outputs; the spread keeps activations O(1), as
  trained weights do, so float32 rounding stays at its own size.
  """
  for bn in (l for l in net.layers if isinstance(l, keras.layers.BatchNormalization)):
    if bn.scale:
      bn.gamma.assign(rng.uniform(0.5, 1.5, bn.gamma.shape).astype("float32"))
    bn.beta.assign(rng.normal(0.0, 0.2, bn.beta.shape).astype("float32"))
    bn.moving_mean.assign(rng.normal(0.0, 0.1, bn.moving_mean.shape).astype("float32"))
    bn.moving_variance.assign(
        rng.uniform(0.5, 1.5, bn.moving_variance.shape).astype("float32"))


def _gray_images(name: str, rng: np.random.Generator) -> np.ndarray:
  """Gray images in [0, 1] that the weights' preprocessing takes to [-1, 1],
  the range of the color test inputs."""
  u = rng.uniform(-1, 1, (2, SIDE[name], SIDE[name], 1)).astype("float32")
  if name == "inception_v3":
    return (u + 1) / 2
  return np.mean(layers.IMAGENET_MEAN) + np.mean(layers.IMAGENET_STD) * u


@pytest.fixture(scope="module", params=sorted(APPLICATIONS))
def keras_files(request, tmp_path_factory):
  """One Keras network, its outputs on random inputs and its weight files."""
  name = request.param
  side = SIDE[name]
  keras.utils.set_random_seed(0)
  # One more Conv2D in this process first: the network's conv2d_N and
  # batch_normalization_N counters then start apart, as in real files.
  keras.layers.Conv2D(1, 1)
  net = APPLICATIONS[name](weights=None, input_shape=(side, side, 3),
                           classes=NUM_CLASSES, classifier_activation=None)
  rng = np.random.default_rng(0)
  _randomized_statistics(net, rng)
  no_top = keras.Model(net.inputs, net.get_layer(NO_TOP_OUTPUT[name]).output)
  # Transfer learning as users write it: a 2-class Dense on the pooled no-top
  # net, in one functional model or with the net nested in a Sequential.
  transfer = keras.Model(net.inputs, keras.layers.Dense(2)(
      keras.layers.GlobalAveragePooling2D()(no_top.output)))
  nested = keras.Sequential([no_top, keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(2)])
  x = rng.uniform(-1, 1, (2, side, side, 3)).astype("float32")
  gray = _gray_images(name, rng).astype("float32")
  tmp = tmp_path_factory.mktemp(name)
  files = {"weights_h5": tmp / "top.weights.h5", "legacy": tmp / "top.h5",
           "full_h5": tmp / "full.h5", "keras": tmp / "top.keras",
           "no_top_legacy": tmp / "no_top.h5",
           "no_top_weights_h5": tmp / "no_top.weights.h5",
           "transfer": tmp / "transfer.weights.h5", "nested": tmp / "nested.h5"}
  net.save_weights(files["weights_h5"])
  transfer.save_weights(files["transfer"])
  net.save(files["full_h5"])
  net.save(files["keras"])
  no_top.save_weights(files["no_top_weights_h5"])
  for key, model in (("legacy", net), ("no_top_legacy", no_top), ("nested", nested)):
    with h5py.File(files[key], "w") as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, model)
  outputs = {
      "logits": net.predict(x, verbose=0),
      "features": no_top.predict(x, verbose=0),
      # Gray images, preprocessed, as three equal channels.
      "gray_logits": net.predict(np.repeat(
          layers.preprocess(gray, PREPROCESSING[name]), 3, axis=-1), verbose=0),
      "transfer_head": transfer.layers[-1].get_weights(),
      "nested_head": nested.layers[-1].get_weights(),
      "count_params": net.count_params(),
      "features_dim": net.layers[-1].kernel.shape[0],
  }
  return name, files, x, gray, outputs


@functools.cache
def _forward(graphdef):
  return jit(lambda state, x: (nnx.merge(graphdef, state)(x),
                               nnx.merge(graphdef, state).features(x)))


def _run(model: nnx.Module, x: np.ndarray):
  graphdef, state = nnx.split(model)
  return _forward(graphdef)(state, x)


def test_logits_and_features_equal_keras(keras_files):
  name, files, x, _, outputs = keras_files
  assert np.std(outputs["logits"]) > 0.1  # a mix-up would show
  model = models.from_keras(name, str(files["weights_h5"]), preprocessing="none")
  logits, _ = _run(model, x)
  np.testing.assert_allclose(logits, outputs["logits"], rtol=0, atol=TOLERANCE)
  # The no-top file: our features are Keras' include_top=False output.
  no_top = models.from_keras(name, str(files["no_top_legacy"]),
                             num_classes=NUM_CLASSES, preprocessing="none")
  _, features = _run(no_top, x)
  assert np.abs(features - outputs["features"]).max() < TOLERANCE
  assert np.std(outputs["features"]) > 0.1


def test_gray_input_with_the_weights_preprocessing_equals_keras(keras_files):
  name, files, _, gray, outputs = keras_files
  # in_channels=1 sums the first kernel over RGB; 'auto' is what the weights
  # expect (test_preprocessing_is_keras_preprocess_input ties it to Keras).
  model = models.from_keras(name, str(files["full_h5"]), in_channels=1)
  assert model.preprocessing == PREPROCESSING[name]
  logits, _ = _run(model, gray)
  np.testing.assert_allclose(logits, outputs["gray_logits"], rtol=0, atol=TOLERANCE)


def _keras2_style(src, dst) -> None:
  """The legacy file as Keras 2 wrote them (the keras.applications ImageNet
  files): weight names end in ':0', auto-numbered names count from 1,
  DenseNet's stem is 'conv1/conv' and 'conv1/bn'."""
  def rename(n: str) -> str:
    match = re.fullmatch(r"(conv2d|batch_normalization)(?:_(\d+))?", n)
    if match:
      return f"{match.group(1)}_{int(match.group(2) or 0) + 1}"
    return {"conv1_conv": "conv1/conv", "conv1_bn": "conv1/bn"}.get(n, n)

  with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
    names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
    g.attrs["layer_names"] = [rename(n).encode() for n in names]
    for n in names:
      group = g.create_group(rename(n))
      weights = [w.decode() if isinstance(w, bytes) else w
                 for w in f[n].attrs["weight_names"]]
      renamed = [f"{rename(n)}/{w.rpartition('/')[2]}:0" for w in weights]
      group.attrs["weight_names"] = [w.encode() for w in renamed]
      for w, new in zip(weights, renamed):
        group[new] = f[n][w][()]


def test_every_format_gives_the_same_weights(keras_files, tmp_path):
  name, files, *_ = keras_files
  reference = weights_lib.flat_values(models.from_keras(name, str(files["weights_h5"])))
  _keras2_style(files["legacy"], tmp_path / "keras2.h5")
  for path in (files["legacy"], files["full_h5"], files["keras"],
               tmp_path / "keras2.h5"):
    values = weights_lib.flat_values(models.from_keras(name, str(path)))
    assert values.keys() == reference.keys()
    for k, v in values.items():
      assert np.array_equal(v, reference[k]), (path, k)
  no_top = weights_lib.flat_values(models.from_keras(
      name, str(files["no_top_weights_h5"]), num_classes=NUM_CLASSES))
  for k, v in no_top.items():
    assert k.startswith("predictions/") or np.array_equal(v, reference[k]), k


def test_a_transfer_learning_model_loads_with_its_own_head(keras_files):
  name, files, _, _, outputs = keras_files
  reference = weights_lib.flat_values(models.from_keras(name, str(files["weights_h5"])))
  for key in ("transfer", "nested"):
    values = weights_lib.flat_values(models.from_keras(name, str(files[key])))
    kernel, bias = outputs[f"{key}_head"]
    assert np.array_equal(values["predictions/kernel"], kernel), key
    assert np.array_equal(values["predictions/bias"], bias), key
    for k, v in reference.items():
      assert k.startswith("predictions/") or np.array_equal(values[k], v), (key, k)


def test_head_replacement_and_gray_mapping_change_only_what_they_say(keras_files):
  name, files, *_ = keras_files
  path = str(files["legacy"])
  base = weights_lib.flat_values(models.from_keras(name, path))
  two = weights_lib.flat_values(models.from_keras(name, path, num_classes=2, seed=3))
  again = weights_lib.flat_values(models.from_keras(name, path, num_classes=2, seed=3))
  other = weights_lib.flat_values(models.from_keras(name, path, num_classes=2, seed=4))
  gray = weights_lib.flat_values(models.from_keras(name, path, in_channels=1))
  stem = {"inception_v3": "conv2d_1a_3x3/conv/kernel",
          "densenet121": "conv1/conv/kernel"}[name]
  features_dim = base["predictions/kernel"].shape[0]
  assert two["predictions/kernel"].shape == (features_dim, 2)
  assert np.array_equal(two["predictions/bias"], np.zeros(2))
  assert np.array_equal(two["predictions/kernel"], again["predictions/kernel"])
  assert not np.array_equal(two["predictions/kernel"], other["predictions/kernel"])
  np.testing.assert_array_equal(gray[stem], base[stem].sum(axis=2, keepdims=True))
  assert gray[stem].shape[2] == 1
  for k, v in base.items():
    if not k.startswith("predictions/"):
      assert np.array_equal(two[k], v), k
    if k != stem:
      assert np.array_equal(gray[k], v), k


def test_saved_then_loaded_state_is_bit_identical(keras_files, tmp_path):
  name, files, *_ = keras_files
  model = models.from_keras(name, str(files["legacy"]), in_channels=1)
  path = str(tmp_path / "exported.npz")
  models.save_npz(path, model, name=name, width=1.0, in_channels=1)
  loaded = models.from_npz(path)
  assert loaded.preprocessing == model.preprocessing
  before, after = weights_lib.flat_values(model), weights_lib.flat_values(loaded)
  assert before.keys() == after.keys()
  for k, v in before.items():
    assert after[k].dtype == v.dtype and np.array_equal(after[k], v), k
  # Plain NumPy reads it: block names, every BatchNorm statistic.
  with np.load(path) as f:
    assert set(f.files) == set(before) | {weights_lib.METADATA_KEY}


def _copy_without(src, dst, drop: str | None = None, reshape: str | None = None,
                  huge: str | None = None):
  """A legacy file without layer ``drop``, with layer ``reshape``'s first
  weight cut short, or with layer ``huge``'s first weight claiming 1e5 x 1e5
  times its last dimensions (chunked, nothing written: the file stays small)."""
  with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
    names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
    g.attrs["layer_names"] = [n.encode() for n in names if n != drop]
    for n in names:
      if n == drop:
        continue
      f.copy(f[n], g, name=n)
      if n == reshape:
        weight = g[n].attrs["weight_names"][0]
        weight = weight.decode() if isinstance(weight, bytes) else weight
        data = np.asarray(g[n][weight])
        del g[n][weight]
        g[n][weight] = data[..., :-1]
      if n == huge:
        weight = g[n].attrs["weight_names"][0]
        weight = weight.decode() if isinstance(weight, bytes) else weight
        tail = g[n][weight].shape[2:]
        del g[n][weight]
        g[n].create_dataset(weight, shape=(100_000, 100_000) + tail,
                            dtype="float32", chunks=(1, 1) + tail)


def test_a_file_that_does_not_match_names_the_layer_and_the_shape(keras_files, tmp_path):
  name, files, *_ = keras_files
  src, bad = str(files["legacy"]), str(tmp_path / "bad.h5")
  other, message = {
      "inception_v3": ("densenet121", r"no layer 'conv1_conv' \(our conv1/conv"),
      "densenet121": ("inception_v3", r"120 Conv2D layers, InceptionV3 has 94; "
                      r"are these InceptionV3 weights\?"),
  }[name]
  with pytest.raises(ValueError, match=message):
    models.from_keras(other, src)
  if name == "densenet121":
    _copy_without(src, bad, drop="conv3_block5_0_bn")
    with pytest.raises(ValueError, match=r"no layer 'conv3_block5_0_bn' \(our "
                       r"conv3/layers/4/bn1, expected gamma \(256,\)"):
      models.from_keras(name, bad)
    _copy_without(src, bad, reshape="conv4_block2_1_conv")
    with pytest.raises(ValueError, match=r"layer 'conv4_block2_1_conv' \(our "
                       r"conv4/layers/1/conv1\) has kernel of shape \(1, 1, 288, "
                       r"127\), expected \(1, 1, 288, 128\)"):
      models.from_keras(name, bad)
  else:
    _copy_without(src, bad, reshape="predictions")
    # Its kernel now has 4 classes, its bias still 5.
    with pytest.raises(ValueError, match=r"classifier 'predictions' has bias of "
                       r"shape \(5,\), expected \(4,\)"):
      models.from_keras(name, bad)
    with h5py.File(src, "r") as f:
      names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
    # The last one created: its number is the largest.
    last_bn = max((n for n in names if n.startswith("batch_normalization")),
                  key=lambda n: int(re.fullmatch(r"\D+(?:_(\d+))?", n).group(1) or 0))
    _copy_without(src, bad, drop=last_bn)
    with pytest.raises(ValueError, match=r"93 BatchNormalization layers, "
                       r"InceptionV3 has 94; .* our mixed10/branch_pool/bn "
                       r"\(expected beta \(192,\)"):
      models.from_keras(name, bad)
  with pytest.raises(ValueError, match="no classifier"):
    models.from_keras(name, str(files["no_top_legacy"]))
  with pytest.raises(ValueError, match="in_channels=2"):
    models.from_keras(name, src, in_channels=2)


def test_a_dataset_claiming_a_huge_shape_is_refused_before_reading(
    keras_files, tmp_path):
  name, files, *_ = keras_files
  src, bad = str(files["legacy"]), str(tmp_path / "huge.h5")
  with h5py.File(src, "r") as f:
    names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
  # DenseNet121 by name; InceptionV3's last conv created (its largest number).
  layer = "conv4_block2_1_conv" if name == "densenet121" else max(
      (n for n in names if n.startswith("conv2d")),
      key=lambda n: int(re.fullmatch(r"conv2d(?:_(\d+))?", n).group(1) or 0))
  _copy_without(src, bad, huge=layer)
  assert os.path.getsize(bad) < 2 * os.path.getsize(src)
  models.from_keras(name, src)  # the abstract model built, outside the count
  tracemalloc.start()
  try:
    with pytest.raises(errors.WeightsError, match=rf"{bad}: layer '{layer}' "
                       r"\(our .*\) has kernel of shape \(100000, 100000, "):
      models.from_keras(name, bad)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 50 << 20, peak  # the claim is ~10^12 bytes and more


def test_the_archive_cap_is_the_published_network(keras_files):
  name, files, _, _, outputs = keras_files
  # Keras' count with the 1000-class ImageNet top; ours has NUM_CLASSES.
  assert outputs["count_params"] == (keras_import.KERAS_PARAMS[name] - (
      1000 - NUM_CLASSES) * (outputs["features_dim"] + 1))
  with zipfile.ZipFile(files["keras"]) as archive:
    size = archive.getinfo("model.weights.h5").file_size
  assert 4 * outputs["count_params"] < size < keras_import.weights_member_cap(name)


@pytest.mark.parametrize("name", sorted(PREPROCESS_INPUT))
def test_preprocessing_is_keras_preprocess_input(name):
  x = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
  ours = layers.preprocess(x, PREPROCESSING[name])
  np.testing.assert_allclose(ours, PREPROCESS_INPUT[name](255.0 * x),
                             rtol=0, atol=1e-5)
