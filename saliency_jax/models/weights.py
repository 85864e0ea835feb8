"""Weights in and out of our models as flat ``{name: array}`` maps and ``.npz`` files.

A flat name is the variable's attribute path joined by ``/``, the block first:
``mixed0/branch1x1/conv/kernel``, ``conv2/layers/0/bn1/mean``,
``predictions/bias``. Every variable is there, trainable or not (BatchNorm's
``mean`` and ``var`` too), so an exported ``.npz`` is the whole eval-mode
model and any tool that reads NumPy files can use it without this package.
The file also holds :data:`METADATA_KEY`, a JSON string saying how to build
the model (``model``, ``width``, ``num_classes``, ``in_channels``,
``preprocessing``).

Loading builds the model abstractly (``nnx.eval_shape``: shapes only, no
initializer runs, which for InceptionV3 would take ~20 s on a CPU) and fills
every variable from the map, so a file that does not match raises one error
naming the first missing or mis-shaped variable and the shape expected.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

METADATA_KEY = "__saliency_jax__"
HEAD = "predictions"  # every model's classifier (global pool + dense)
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
SUFFIXES = (".npz",) + KERAS_SUFFIXES


class NoClassifierError(ValueError):
  """A weights file without a classifier (saved without its top), and no
  ``num_classes`` to put a new one there."""


def flat_name(path: tuple[Any, ...]) -> str:
  return "/".join(str(p) for p in path)


def flat_values(model: nnx.Module) -> dict[str, np.ndarray]:
  """Every variable of ``model`` as a NumPy array, by flat name."""
  return {flat_name(path): np.asarray(v.get_value())
          for path, v in nnx.to_flat_state(nnx.state(model))}


def expected_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
  """Flat name -> shape of every variable of ``model`` (abstract or not)."""
  return {flat_name(path): tuple(v.get_value().shape)
          for path, v in nnx.to_flat_state(nnx.state(model))}


def abstract_model(name: str, **kwargs: Any) -> nnx.Module:
  """``models.create(name, **kwargs)`` with shapes only, nothing initialized.

  A fresh module each call, merged from a cached split: tracing the
  constructor costs seconds for the big networks.
  """
  graphdef, state = _abstract_split(name, tuple(sorted(kwargs.items())))
  return nnx.merge(graphdef, state)


@functools.lru_cache(maxsize=16)
def _abstract_split(name: str, kwargs: tuple[tuple[str, Any], ...]):
  from saliency_jax import models  # pylint: disable=g-import-not-at-top
  return nnx.split(nnx.eval_shape(
      lambda: models.create(name, rngs=nnx.Rngs(0), **dict(kwargs))))


def check_values(values: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                 source: str) -> None:
  """Raises ValueError at the first name of ``shapes`` missing or mis-shaped in
  ``values``, or at the first name of ``values`` the model does not have."""
  for name, shape in shapes.items():
    if name not in values:
      raise ValueError(f"{source}: no weights for {name!r} (expected shape "
                       f"{shape}); is it a file of this model?")
    if tuple(np.shape(values[name])) != shape:
      raise ValueError(f"{source}: {name!r} has shape "
                       f"{tuple(np.shape(values[name]))}, expected {shape}")
  extra = [name for name in values if name not in shapes]
  if extra:
    raise ValueError(f"{source}: {len(extra)} arrays the model does not have, "
                     f"the first {extra[0]!r}; is it a file of another model?")


def assign(model: nnx.Module, values: Mapping[str, Any], source: str) -> nnx.Module:
  """``model`` (abstract or not) with every variable taken from ``values``.

  Values are cast to each variable's dtype; the result is in eval mode.
  """
  check_values(values, expected_shapes(model), source)
  graphdef, state = nnx.split(model)
  state = nnx.map_state(
      lambda path, v: v.replace(jnp.asarray(values[flat_name(path)],
                                            v.get_value().dtype)), state)
  out = nnx.merge(graphdef, state)
  out.eval()
  return out


def fresh_head(in_features: int, num_classes: int,
               seed: int | jax.Array) -> dict[str, np.ndarray]:
  """A new classifier as Keras' ``Dense`` starts: Glorot-uniform kernel, zero bias."""
  key = jax.random.key(seed) if isinstance(seed, int) else seed
  kernel = nnx.initializers.glorot_uniform()(key, (in_features, num_classes))
  return {f"{HEAD}/kernel": np.asarray(kernel),
          f"{HEAD}/bias": np.zeros((num_classes,), np.float32)}


# --------------------------------------------------------------- .npz ---

def save_npz(path: str, model: nnx.Module, *, name: str, width: float,
             in_channels: int) -> None:
  """Writes every variable of ``model`` (model ``name`` at ``width``) to ``path``.

  Atomic (temporary file + rename). Read back with :func:`from_npz`, or with
  ``numpy.load(path)`` anywhere.
  """
  values = flat_values(model)
  meta = dict(model=name, width=float(width), in_channels=int(in_channels),
              num_classes=int(values[f"{HEAD}/kernel"].shape[-1]),
              preprocessing=getattr(model, "preprocessing", "none"))
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **values, **{METADATA_KEY: np.asarray(json.dumps(meta))})
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def read_npz(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(flat values, metadata) of an ``.npz`` written by :func:`save_npz`."""
  with np.load(path, allow_pickle=False) as f:
    values = {k: f[k] for k in f.files if k != METADATA_KEY}
    meta = json.loads(str(f[METADATA_KEY])) if METADATA_KEY in f.files else {}
  return values, meta


def npz_metadata(path: str) -> dict[str, Any]:
  """Just the metadata of an ``.npz`` (the arrays are not read)."""
  with np.load(path, allow_pickle=False) as f:
    return json.loads(str(f[METADATA_KEY])) if METADATA_KEY in f.files else {}


def from_npz(path: str, *, name: str | None = None, width: float | None = None,
             num_classes: int | None = None, in_channels: int | None = None,
             preprocessing: str | None = None,
             seed: int | jax.Array = 0) -> nnx.Module:
  """The model saved in ``path`` by :func:`save_npz`, in eval mode.

  Args:
    path: the ``.npz`` file.
    name, width: the model; None takes the file's, a different value fails.
    num_classes: None keeps the file's classifier; another count replaces it
      with a new one (:func:`fresh_head`, from ``seed``).
    in_channels: None or the file's.
    preprocessing: None takes the file's; else one of ``layers.PREPROCESSING``.
    seed: int or key for a new classifier.
  """
  values, meta = read_npz(path)
  for key, given in (("model", name), ("width", width),
                     ("in_channels", in_channels)):
    if key not in meta and given is None:
      raise ValueError(f"{path}: no {METADATA_KEY} record of the {key}; pass it")
    if given is not None and key in meta and meta[key] != given:
      raise ValueError(f"{path}: holds {key}={meta[key]!r}, expected {given!r}")
  name = name or meta["model"]
  kwargs = dict(width=meta.get("width", width),
                in_channels=meta.get("in_channels", in_channels),
                preprocessing=preprocessing or meta.get("preprocessing", "none"))
  head = values.get(f"{HEAD}/kernel")
  file_classes = None if head is None else int(head.shape[-1])
  num_classes = num_classes or file_classes
  if num_classes is None:
    raise NoClassifierError(f"{path}: no {HEAD}/kernel; pass num_classes for a "
                            "new head")
  model = abstract_model(name, num_classes=num_classes, **kwargs)
  if num_classes != file_classes:
    in_features = expected_shapes(model)[f"{HEAD}/kernel"][0]
    values = {k: v for k, v in values.items() if not k.startswith(HEAD + "/")}
    values.update(fresh_head(in_features, num_classes, seed))
  return assign(model, values, path)


# ------------------------------------------------------------ any file ---

def is_keras_file(path: str) -> bool:
  return str(path).lower().endswith(KERAS_SUFFIXES)


def expected_preprocessing(name: str, path: str) -> str:
  """What the weights of ``path`` expect: Keras' ``preprocess_input`` of
  network ``name`` for a Keras file, the recorded mode for an ``.npz``."""
  if is_keras_file(path):
    from saliency_jax.models import keras_import  # pylint: disable=g-import-not-at-top
    return keras_import.KERAS_PREPROCESSING.get(name, "none")
  if str(path).lower().endswith(".npz"):
    return npz_metadata(path).get("preprocessing", "none")
  return "none"


def load(name: str, path: str, *, num_classes: int | None = None,
         in_channels: int | None = None, width: float = 1.0,
         preprocessing: str | None = None,
         seed: int | jax.Array = 0) -> nnx.Module:
  """Model ``name`` with the weights of ``path`` (Keras or ``.npz``), in eval mode.

  ``preprocessing=None`` is what the weights expect: Keras' for a Keras file,
  the recorded one for an ``.npz``. See :func:`from_npz` and
  :func:`saliency_jax.models.keras_import.from_keras` for the other options.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such weights file")
  if is_keras_file(path):
    from saliency_jax.models import keras_import  # pylint: disable=g-import-not-at-top
    if width != 1.0:
      raise ValueError(f"{path}: Keras weights are the published network, "
                       f"width=1.0; got width={width}")
    return keras_import.from_keras(name, path, num_classes=num_classes,
                                   in_channels=in_channels,
                                   preprocessing=preprocessing or "auto", seed=seed)
  if str(path).lower().endswith(".npz"):
    return from_npz(path, name=name, width=width, num_classes=num_classes,
                    in_channels=in_channels, preprocessing=preprocessing, seed=seed)
  raise ValueError(f"{path}: unknown weights format; expected a file ending in "
                   f"{', '.join(SUFFIXES)}")
