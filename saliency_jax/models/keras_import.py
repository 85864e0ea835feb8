"""Keras ``InceptionV3`` / ``DenseNet121`` weights into our NNX models (h5py, no TensorFlow).

Files read (by content, whatever their name):

- Keras 3 ``model.save_weights('x.weights.h5')``, and the same file inside a
  ``.keras`` archive: ``layers/<key>/vars/<i>``, where ``<key>`` is the
  layer's *class* in snake case, numbered in the order of ``model.layers``
  (``conv2d``, ``conv2d_1``, ..., ``batch_normalization_k``, ``dense``), not
  its name; a nested model nests ``layers/<key>/layers/...``.
- legacy HDF5: Keras 2 ``save_weights('x.h5')``, ``model.save('x.h5')`` (Keras
  2 or 3; the weights sit under ``model_weights``) and the keras.applications
  ImageNet files (``inception_v3_weights_tf_dim_ordering_tf_kernels.h5``):
  attribute ``layer_names``, one group per layer with attribute
  ``weight_names`` (``conv2d_1/kernel:0``; a nested model's group lists all
  its layers' weights).

How layers map onto ours. DenseNet121's layers carry fixed names
(``conv2_block1_0_bn`` is our ``conv2/layers/0/bn1``; Keras 2 wrote the stem
``conv1/conv``, read as ``conv1_conv``); a legacy file is read by name, a
Keras 3 file by order (``model.layers`` lists them in creation order).
InceptionV3's convolutions and BatchNorms are auto-named ``conv2d_N`` /
``batch_normalization_N``, with N counted over the whole process that built
the model, so only their order means anything: sorted by N they come in
creation order (legacy files), sorted by their key's number in
``model.layers`` order (Keras 3 files), which Keras sorts by graph depth:
:data:`_KERAS_LAYERS_ORDER` lists each mixed block's units that way.

Reading is safe on any file: every failure is one
:class:`saliency_jax.errors.WeightsError` naming the file. A ``.keras``
archive's members are read in chunks up to a cap set by the network
(:func:`weights_member_cap`); an HDF5 dataset's shape and dtype (metadata) are
checked against the model before its data is read, and only arrays stored in
the file itself (hard links, no external or virtual storage) are read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import tempfile
import zipfile
from collections.abc import Iterator

import h5py
import jax
import numpy as np
from flax import nnx

from saliency_jax import errors
from saliency_jax.models import weights as weights_lib

KERAS_MODELS = ("inception_v3", "densenet121")
# What each network's ``keras.applications.<net>.preprocess_input`` does.
KERAS_PREPROCESSING = {"inception_v3": "inception", "densenet121": "imagenet"}
# keras.applications' ``model.count_params()`` with the ImageNet top (1000
# classes), BatchNorm statistics included.
KERAS_PARAMS = {"inception_v3": 23_851_784, "densenet121": 8_062_504}
# A .keras archive's model.weights.h5 holds the weights and, for a compiled
# model, its optimizer's state (Adam: two more copies of the trainable ones).
WEIGHTS_COPIES = 4
HDF5_SLACK_BYTES = 16 << 20  # HDF5's own structure, a classifier of more classes
CONFIG_MAX_BYTES = 4 << 20  # a .keras archive's config.json
_CHUNK = 1 << 20

_STEM = ("conv2d_1a_3x3", "conv2d_2a_3x3", "conv2d_2b_3x3", "conv2d_3b_1x1",
         "conv2d_4a_3x3")
# The units of each InceptionV3 mixed block in Keras' ``model.layers`` order
# (its functional graph sorted by depth; creation order is the blocks'
# ``units``), read off keras.applications.InceptionV3 in Keras 3.15.
_KERAS_LAYERS_ORDER = {
    "InceptionA": ("branch3x3dbl_1", "branch5x5_1", "branch3x3dbl_2",
                   "branch1x1", "branch5x5_2", "branch3x3dbl_3", "branch_pool"),
    "InceptionB": ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3",
                   "branch3x3dbl_3"),
    "InceptionC": ("branch7x7dbl_1", "branch7x7dbl_2", "branch7x7_1",
                   "branch7x7dbl_3", "branch7x7_2", "branch7x7dbl_4",
                   "branch1x1", "branch7x7_3", "branch7x7dbl_5", "branch_pool"),
    "InceptionD": ("branch7x7x3_1", "branch7x7x3_2", "branch3x3_1",
                   "branch7x7x3_3", "branch3x3_2", "branch7x7x3_4"),
    "InceptionE": ("branch3x3dbl_1", "branch3x3_1", "branch3x3dbl_2",
                   "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_3a",
                   "branch3x3dbl_3b", "branch1x1", "branch_pool"),
}
# Keras class (snake case) -> kind; Keras' weight names of each kind, in order.
_KINDS = {"conv2d": "conv", "batch_normalization": "bn", "dense": "dense"}
_WEIGHT_NAMES = {
    "conv": ("kernel",),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
}
_KIND_LABEL = {"conv": "Conv2D", "bn": "BatchNormalization", "dense": "Dense"}
# Keras' BatchNormalization weights -> NNX BatchNorm variables.
_BN_NAMES = {"gamma": "scale", "beta": "bias", "moving_mean": "mean",
             "moving_variance": "var"}


@dataclasses.dataclass(frozen=True)
class KerasLayer:
  """One layer with weights, as found in the file.

  Attributes:
    name: the layer's name (legacy files, ``/`` read as ``_``) or its
      class-based key (Keras 3).
    number: the number ending ``name`` (0 when none): its rank among layers of
      its class, in creation order (legacy) or ``model.layers`` order (Keras 3).
    kind: ``conv``, ``bn`` or ``dense``.
    weights: Keras' weight name (``kernel``, ``gamma``, ...) -> its dataset,
      not read (``shape``, ``ndim`` and ``dtype`` are metadata); read with
      :func:`_read` once its shape is checked, while the file is open.
  """
  name: str
  number: int
  kind: str
  weights: dict[str, h5py.Dataset]


@dataclasses.dataclass(frozen=True)
class Slot:
  """One of our conv / BatchNorm modules: its flat name and its Keras name (if fixed)."""
  prefix: str
  kind: str
  keras_name: str | None = None


# ------------------------------------------------------------- reading ---

def _split_number(name: str) -> tuple[str, int]:
  """``'conv2d_12'`` -> ``('conv2d', 12)``; ``'conv2d'`` -> ``('conv2d', 0)``."""
  match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
  return match.group(1), int(match.group(2) or 0)


def _strings(group: h5py.Group, attr: str) -> list[str]:
  """A list-of-strings attribute, also when Keras split it (``attr0``, ``attr1``...)."""
  chunks = ([group.attrs[attr]] if attr in group.attrs else
            [group.attrs[f"{attr}{i}"] for i in range(len(group.attrs))
             if f"{attr}{i}" in group.attrs])
  return [s.decode("utf8") if isinstance(s, bytes) else str(s)
          for chunk in chunks for s in np.atleast_1d(chunk)]


def _child(group: h5py.Group, key: str, where: str, cls: type):
  """``group[key]`` if it is a ``cls`` (``h5py.Group`` or ``h5py.Dataset``)
  stored in this file: a hard link; a dataset numeric, neither external nor
  virtual. Raises WeightsError naming ``where + key`` otherwise."""
  what = "a group" if cls is h5py.Group else "an array"
  link = group.get(key, getlink=True)
  if link is None:
    raise errors.WeightsError(f"{where}{key}: missing; expected {what}")
  if not isinstance(link, h5py.HardLink):
    raise errors.WeightsError(f"{where}{key}: a link elsewhere "
                              f"({type(link).__name__}); expected {what} stored "
                              "in the file")
  obj = group[key]
  if obj.file != group.file:  # reached through a link on the way
    raise errors.WeightsError(f"{where}{key}: stored in another file "
                              f"({obj.file.filename}); expected {what} stored in "
                              "this one")
  if not isinstance(obj, cls):
    raise errors.WeightsError(f"{where}{key}: not {what}")
  if cls is h5py.Dataset:
    if obj.dtype.kind not in "biuf" or obj.dtype.fields or obj.dtype.subdtype:
      raise errors.WeightsError(f"{where}{key}: dtype {obj.dtype}; expected a "
                                "numeric array")
    if obj.external or obj.is_virtual:
      raise errors.WeightsError(f"{where}{key}: its data are stored outside "
                                "the file; expected an array stored in it")
  return obj


def _read(dataset: h5py.Dataset, path: str) -> np.ndarray:
  """The data of ``dataset`` (its shape checked first by the caller)."""
  try:
    return np.asarray(dataset[()])
  except (OSError, RuntimeError, ValueError) as e:
    raise errors.WeightsError(f"{path}: {dataset.name} cannot be read ({e}); the "
                              "file is damaged or truncated") from None


def _keras3_layers(group: h5py.Group, where: str) -> list[KerasLayer]:
  out = []
  if "layers" not in group:
    return out
  children = _child(group, "layers", where, h5py.Group)
  for key in children:
    layer = _child(children, key, f"{where}layers/", h5py.Group)
    if "layers" in layer:  # a nested model
      out += _keras3_layers(layer, f"{where}layers/{key}/")
    arrays = []
    if "vars" in layer:
      variables = _child(layer, "vars", f"{where}layers/{key}/", h5py.Group)
      arrays = [_child(variables, str(i), f"{where}layers/{key}/vars/", h5py.Dataset)
                for i in range(len(variables))]
    if not arrays:
      continue
    cls, number = _split_number(key)
    kind = _KINDS.get(cls)
    names = _WEIGHT_NAMES.get(kind, ())
    if kind == "bn" and len(arrays) == 3:
      names = names[1:]  # scale=False (InceptionV3): no gamma
    if kind is None or len(arrays) != len(names):
      raise errors.WeightsError(
          f"{where}layers/{key}: a layer with {len(arrays)} weights that "
          "InceptionV3 / DenseNet121 do not have")
    out.append(KerasLayer(key, number, kind, dict(zip(names, arrays))))
  return out


def _legacy_layers(group: h5py.Group) -> list[KerasLayer]:
  out = []
  for layer_name in _strings(group, "layer_names"):
    layer = _child(group, layer_name, "", h5py.Group)
    owners: dict[str, dict[str, h5py.Dataset]] = {}
    for weight in _strings(layer, "weight_names"):
      # '<layer>/<weight>:0': 'conv2d_1/kernel:0'; Keras 2's DenseNet stem
      # 'conv1/conv/kernel:0'; every layer of a nested model in its group.
      owner, _, short = weight.rpartition("/")
      owners.setdefault(owner or layer_name, {})[short.split(":")[0]] = (
          _child(layer, weight, f"{layer_name}/", h5py.Dataset))
    for owner, arrays in owners.items():
      kernel = arrays.get("kernel")
      kind = ("bn" if "moving_mean" in arrays else
              "conv" if kernel is not None and kernel.ndim == 4 else
              "dense" if kernel is not None and kernel.ndim == 2 else None)
      if kind is None or not set(arrays) <= set(_WEIGHT_NAMES[kind]):
        raise errors.WeightsError(f"layer {owner!r}: weights {sorted(arrays)} "
                                  "that InceptionV3 / DenseNet121 do not have")
      # Keras 2 named DenseNet's stem 'conv1/conv', Keras 3 'conv1_conv'.
      name = owner.replace("/", "_")
      out.append(KerasLayer(name, _split_number(name)[1], kind, arrays))
  return out


def weights_member_cap(name: str) -> int:
  """Most bytes a ``.keras`` archive of network ``name`` may hold in
  ``model.weights.h5``: ``4 * KERAS_PARAMS[name] * WEIGHTS_COPIES``
  (float32 weights, an optimizer's state) ``+ HDF5_SLACK_BYTES``."""
  return 4 * KERAS_PARAMS[name] * WEIGHTS_COPIES + HDF5_SLACK_BYTES


def _copy_member(archive: zipfile.ZipFile, member: str, out, cap: int,
                 path: str) -> None:
  """Member ``member`` into file ``out``, in chunks, refused (WeightsError)
  when it declares or holds more than ``cap`` uncompressed bytes."""
  info = archive.getinfo(member)
  too_big = (f"{path}: member {member!r} {{}} bytes uncompressed, more than the "
             f"{cap} that it can need; a damaged or hostile archive")
  if info.file_size > cap:
    raise errors.WeightsError(too_big.format(f"declares {info.file_size}"))
  total = 0
  try:
    with archive.open(info) as f:
      while chunk := f.read(_CHUNK):
        total += len(chunk)
        if total > cap:
          raise errors.WeightsError(too_big.format(f"holds over {total}"))
        out.write(chunk)
  except weights_lib.ZIP_READ_ERRORS as e:
    raise errors.WeightsError(f"{path}: member {member!r} cannot be read ({e}); "
                              "the archive is damaged or truncated") from None


def _keras_archive(path: str, cap: int, out) -> None:
  """A ``.keras`` archive's ``model.weights.h5`` into file ``out`` (at most
  ``cap`` bytes); its ``config.json``, if any, checked to be a JSON object."""
  with weights_lib.open_zip(path, ".keras") as archive:
    names = set(archive.namelist())
    if "model.weights.h5" not in names:
      raise errors.WeightsError(f"{path}: a zip archive without "
                                "model.weights.h5; not a .keras file")
    if "config.json" in names:
      with tempfile.SpooledTemporaryFile() as config:
        _copy_member(archive, "config.json", config, CONFIG_MAX_BYTES, path)
        config.seek(0)
        try:
          record = json.loads(config.read())
        except ValueError:
          record = None
      if not isinstance(record, dict):
        raise errors.WeightsError(f"{path}: config.json is not a JSON object; "
                                  "not a .keras file")
    _copy_member(archive, "model.weights.h5", out, cap, path)
  out.flush()
  out.seek(0)


@contextlib.contextmanager
def open_layers(path: str, max_bytes: int
                ) -> Iterator[tuple[str, list[KerasLayer]]]:
  """(``'keras3'`` or ``'legacy'``, the file's layers with weights), the file
  open while in the ``with`` (the arrays are read on demand).

  A ``.keras`` archive (a zip) has its ``model.weights.h5`` copied to a
  temporary file first, at most ``max_bytes`` uncompressed.
  """
  try:
    with open(path, "rb") as f:
      is_zip = f.read(4) == b"PK\x03\x04"
  except OSError as e:
    raise errors.WeightsError(f"{path}: cannot be read ({e.strerror or e})"
                              ) from None
  with contextlib.ExitStack() as stack:
    source = path
    if is_zip:
      source = stack.enter_context(tempfile.TemporaryFile())
      _keras_archive(path, max_bytes, source)
    try:
      f = stack.enter_context(h5py.File(source, "r"))
    except OSError as e:
      what = ("its model.weights.h5 is not an HDF5 file" if is_zip else
              "neither a .keras archive (zip) nor an HDF5 file")
      raise errors.WeightsError(f"{path}: {what} ({e})") from None
    try:
      group = f["model_weights"] if "model_weights" in f else f
      if "layer_names" in group.attrs or "layer_names0" in group.attrs:
        found = "legacy", _legacy_layers(group)
      elif "layers" in group:
        found = "keras3", _keras3_layers(group, "")
      else:
        found = None
    except errors.WeightsError as e:
      raise errors.WeightsError(f"{path}: {e}") from None
    except (OSError, RuntimeError, KeyError) as e:  # h5py on a damaged file
      raise errors.WeightsError(f"{path}: a damaged HDF5 file ({e})") from None
    if found is None:
      raise errors.WeightsError(
          f"{path}: neither a Keras 3 weights file (layers/...) nor a legacy "
          "Keras HDF5 file (layer_names)")
    yield found


# ------------------------------------------------------------- mapping ---

def _inception_slots(model: nnx.Module, order: str) -> list[Slot]:
  """Conv and BN slots in creation order, or Keras 3's ``model.layers`` order."""
  units = list(_STEM)
  for i in range(11):
    block = getattr(model, f"mixed{i}")
    names = (block.units if order == "creation"
             else _KERAS_LAYERS_ORDER[type(block).__name__])
    units += [f"mixed{i}/{u}" for u in names]
  return [Slot(f"{u}/{part}", part) for u in units for part in ("conv", "bn")]


def _densenet_slots(model: nnx.Module) -> list[Slot]:
  """Conv and BN slots with their Keras names, in creation order."""
  slots = [Slot("conv1/conv", "conv", "conv1_conv"),
           Slot("conv1/bn", "bn", "conv1_bn")]
  for b in range(2, 6):
    for i in range(len(getattr(model, f"conv{b}").layers)):
      ours, theirs = f"conv{b}/layers/{i}", f"conv{b}_block{i + 1}"
      slots += [Slot(f"{ours}/bn1", "bn", f"{theirs}_0_bn"),
                Slot(f"{ours}/conv1", "conv", f"{theirs}_1_conv"),
                Slot(f"{ours}/bn2", "bn", f"{theirs}_1_bn"),
                Slot(f"{ours}/conv2", "conv", f"{theirs}_2_conv")]
    if b < 5:
      slots += [Slot(f"pool{b}/bn", "bn", f"pool{b}_bn"),
                Slot(f"pool{b}/conv", "conv", f"pool{b}_conv")]
  return slots + [Slot("bn", "bn", "bn")]


def _match(slots: list[Slot], layers: list[KerasLayer], *, by_name: bool,
           shapes: dict[str, tuple[int, ...]], path: str, model_label: str
           ) -> list[tuple[Slot, KerasLayer]]:
  """Pairs each slot with its layer: by Keras name, or kind by kind in order.

  The file must hold as many layers of each kind as the model: a bigger
  DenseNet has every DenseNet121 name, but is not one.
  """
  if by_name:
    named = {layer.name: layer for layer in layers}
    for slot in slots:
      if slot.keras_name not in named:
        raise errors.WeightsError(f"{path}: no layer {slot.keras_name!r} (our "
                                  f"{slot.prefix}, {_expected(slot, shapes)})")
  pairs = []
  for kind in ("conv", "bn"):
    ours = [s for s in slots if s.kind == kind]
    theirs = sorted((l for l in layers if l.kind == kind), key=lambda l: l.number)
    if len(theirs) != len(ours):
      first = (f"; counted in order, the first left without one is our "
               f"{ours[len(theirs)].prefix} "
               f"({_expected(ours[len(theirs)], shapes)})"
               if len(theirs) < len(ours) else f"; are these {model_label} weights?")
      raise errors.WeightsError(f"{path}: {len(theirs)} {_KIND_LABEL[kind]} "
                                f"layers, {model_label} has {len(ours)}{first}")
    pairs += (zip(ours, (named[s.keras_name] for s in ours)) if by_name
              else zip(ours, theirs))
  # Network order, so that an error names the first mismatch.
  position = {slot.prefix: i for i, slot in enumerate(slots)}
  return sorted(pairs, key=lambda pair: position[pair[0].prefix])


def _expected(slot: Slot, shapes: dict[str, tuple[int, ...]]) -> str:
  names = {"conv": {"kernel": "kernel"}, "bn": _BN_NAMES}[slot.kind]
  found = [f"{keras} {shapes[f'{slot.prefix}/{ours}']}"
           for keras, ours in names.items() if f"{slot.prefix}/{ours}" in shapes]
  return "expected " + ", ".join(found)


def _datasets(pairs, shapes: dict[str, tuple[int, ...]],
              path: str) -> dict[str, h5py.Dataset]:
  """Our flat name -> dataset for every matched pair, shapes (metadata)
  checked in network order; nothing read."""
  values = {}
  for slot, layer in pairs:
    names = {"conv": {"kernel": "kernel"}, "bn": _BN_NAMES}[slot.kind]
    wanted = {k for k, ours in names.items() if f"{slot.prefix}/{ours}" in shapes}
    if set(layer.weights) != wanted:
      raise errors.WeightsError(
          f"{path}: layer {layer.name!r} (our {slot.prefix}) has weights "
          f"{sorted(layer.weights)}, expected {sorted(wanted)}")
    for keras_name, array in layer.weights.items():
      ours = f"{slot.prefix}/{names[keras_name]}"
      if array.shape != shapes[ours]:
        raise errors.WeightsError(
            f"{path}: layer {layer.name!r} (our {slot.prefix}) has "
            f"{keras_name} of shape {array.shape}, expected {shapes[ours]}")
      values[ours] = array
  return values


def _head(layers: list[KerasLayer], path: str) -> KerasLayer | None:
  dense = [l for l in layers if l.kind == "dense"]
  if len(dense) > 1:
    raise errors.WeightsError(f"{path}: {len(dense)} Dense layers "
                              f"({', '.join(l.name for l in dense)}); expected "
                              "one classifier or none")
  return dense[0] if dense else None


def _first_conv(layers: list[KerasLayer], name: str, fmt: str) -> h5py.Dataset:
  """The stem's kernel: the first conv in creation and in ``model.layers`` order."""
  convs = [l for l in layers if l.kind == "conv"]
  if name == "densenet121" and fmt == "legacy":
    convs = [l for l in convs if l.name == "conv1_conv"] or convs
  if not convs:
    raise errors.WeightsError("no Conv2D layer")
  first = min(convs, key=lambda l: l.number)
  if first.weights["kernel"].ndim != 4:
    raise errors.WeightsError(f"the first Conv2D layer {first.name!r} has a "
                              f"kernel of shape {first.weights['kernel'].shape}; "
                              "expected (height, width, in, out)")
  return first.weights["kernel"]


def from_keras(name: str, path: str, *, num_classes: int | None = None,
               in_channels: int | None = None, preprocessing: str = "auto",
               seed: int | jax.Array = 0) -> nnx.Module:
  """Our ``name`` network with the weights of Keras' file ``path``, in eval mode.

  With the file's classifier and channels, ``model(x)`` equals the Keras
  model's logits (its ``classifier_activation`` left out) on the same input,
  and ``model.features(x)`` its ``include_top=False`` output.

  Args:
    name: ``inception_v3`` or ``densenet121`` (``keras.applications``' nets).
    path: a ``.weights.h5``, legacy ``.h5`` or ``.keras`` file, with or
      without the top (the last ``Dense``).
    num_classes: None keeps the file's classifier (the file must have one);
      another count (e.g. 2 on ImageNet weights) puts a new classifier there,
      Glorot-uniform from ``seed`` with zero bias, as Keras' ``Dense``;
      everything else is the file's.
    in_channels: None takes the file's first-layer channels; 1 with a
      3-channel file sums the first kernel over its input channels (a gray
      image as three equal channels gives the same first-layer output).
    preprocessing: ``auto`` (what the weights expect: InceptionV3 ``inception``,
      [-1, 1]; DenseNet121 ``imagenet``, ImageNet mean/std) or one of
      ``layers.PREPROCESSING``; the model applies it to images in [0, 1].
    seed: int or key for a new classifier.

  Raises:
    WeightsError: naming the file and what is wrong (not a Keras file,
      damaged, a member bigger than the network can need, the first layer
      missing or mis-shaped and the shape expected).
  """
  if name not in KERAS_MODELS:
    raise errors.WeightsError(f"{path}: Keras weights exist for {KERAS_MODELS}, "
                              f"not {name!r}")
  if preprocessing == "auto":
    preprocessing = KERAS_PREPROCESSING[name]
  with open_layers(path, weights_member_cap(name)) as (fmt, layers):
    model, values = _model_and_values(name, path, fmt, layers,
                                      num_classes=num_classes,
                                      in_channels=in_channels,
                                      preprocessing=preprocessing, seed=seed)
  return weights_lib.assign(model, values, path)


def _model_and_values(name: str, path: str, fmt: str, layers: list[KerasLayer],
                      *, num_classes: int | None, in_channels: int | None,
                      preprocessing: str, seed: int | jax.Array
                      ) -> tuple[nnx.Module, dict[str, np.ndarray]]:
  """The abstract model and its every value (see :func:`from_keras`); shapes
  are checked before anything is read."""
  try:
    first = _first_conv(layers, name, fmt)
  except errors.WeightsError as e:
    raise errors.WeightsError(f"{path}: {e}; is it a {name} file?") from None
  file_channels = first.shape[2]
  if in_channels not in (None, file_channels, 1):
    raise errors.WeightsError(
        f"{path}: in_channels={in_channels}, but the file's first layer takes "
        f"{file_channels}; expected None, {file_channels} or 1 (the kernel "
        "summed over channels)")
  head = _head(layers, path)
  if head is not None and (head.weights["kernel"].ndim != 2
                           or head.weights["kernel"].shape[-1] < 1):
    raise errors.WeightsError(f"{path}: classifier {head.name!r} has a kernel of "
                              f"shape {head.weights['kernel'].shape}; expected "
                              "(features, classes)")
  file_classes = None if head is None else head.weights["kernel"].shape[-1]
  if num_classes is None and head is None:
    raise weights_lib.NoClassifierError(
        f"{path}: no classifier (a model saved without its top); pass "
        "num_classes for a new one")
  num_classes = num_classes or file_classes
  model = weights_lib.abstract_model(name, num_classes=num_classes,
                                     in_channels=in_channels or file_channels,
                                     preprocessing=preprocessing)
  shapes = weights_lib.expected_shapes(model)
  if name == "inception_v3":
    slots = _inception_slots(model, "creation" if fmt == "legacy" else "layers")
  else:
    slots = _densenet_slots(model)
  # The file's own first kernel is checked; the 1-channel sum comes after.
  stem = f"{slots[0].prefix}/kernel"
  file_shapes = dict(shapes)
  file_shapes[stem] = shapes[stem][:2] + (file_channels,) + shapes[stem][3:]
  pairs = _match(slots, layers, by_name=(name == "densenet121" and fmt == "legacy"),
                 shapes=file_shapes, path=path, model_label=type(model).__name__)
  datasets = _datasets(pairs, file_shapes, path)
  if num_classes == file_classes:
    datasets.update(_head_datasets(head, shapes, path))
  values = {ours: _read(dataset, path) for ours, dataset in datasets.items()}
  if shapes[stem] != file_shapes[stem]:
    values[stem] = values[stem].sum(axis=2, keepdims=True)
  if num_classes != file_classes:
    values.update(weights_lib.fresh_head(shapes[f"{weights_lib.HEAD}/kernel"][0],
                                         num_classes, seed))
  return model, values


def _head_datasets(head: KerasLayer, shapes: dict[str, tuple[int, ...]],
                   path: str) -> dict[str, h5py.Dataset]:
  """Our classifier's flat names -> the file's datasets, shapes checked."""
  out = {}
  for keras_name in ("kernel", "bias"):
    ours = f"{weights_lib.HEAD}/{keras_name}"
    array = head.weights.get(keras_name)
    if array is None:
      raise errors.WeightsError(f"{path}: classifier {head.name!r} has no "
                                f"{keras_name} (expected shape {shapes[ours]})")
    if array.shape != shapes[ours]:
      raise errors.WeightsError(f"{path}: classifier {head.name!r} has "
                                f"{keras_name} of shape {array.shape}, expected "
                                f"{shapes[ours]}")
    out[ours] = array
  return out
