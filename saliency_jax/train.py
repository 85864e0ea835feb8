"""Training: AdamW with warmup + cosine decay, cross-entropy, light augmentation.

A small split lives whole on the device; a large one (``config.train.data_in_memory``,
'auto': from 1 GiB of float32 images) is streamed: each batch read from the
split's files a few steps ahead (:mod:`saliency_jax.data.streaming`), and
evaluation reads it batch by batch. Either way the batch of step ``s`` is a
pure function of ``(data_key, s)`` (the same batches streamed or not) and the
augmentation of ``(aug_key, s)``, so a run killed at any moment and restarted
from its last orbax checkpoint ends with the same parameters, bit for bit, as
an uninterrupted run.

``config.train.randomize_labels`` permutes the training labels with a key
(label randomization test, Adebayo et al. 2018); validation and test labels
stay true.

Seeds at once: :func:`train_seeds` trains one replicate per seed, their
states stacked on a leading axis and advanced together by one ``jax.vmap``-ped
step over the shared training split (where the program fits the device's
memory, :mod:`saliency_jax.memory`, and the split is held in memory; else one
after another, each streaming its own batches). Each replicate
keeps its own directory, exactly as a plain run with that seed would
(``checkpoints/``, ``metrics.jsonl``, ``summary.json``, ``weights.npz``).
Its numbers equal that run's to float tolerance, not bit for bit: a vmapped
convolution is a grouped one, whose products XLA sums in another order, so
each step differs by rounding, which training amplifies over the steps as it
would any other order of summation (another backend, another XLA).

Weights from elsewhere: ``config.init_from`` (a training run's directory or a
weights file) starts training from them; ``config.model_weights`` (a Keras
file or an ``.npz`` export) replaces training: the run evaluates those
weights and :func:`restore_model` returns them. A finished run exports its
model to ``weights.npz`` (:mod:`saliency_jax.models.weights`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import data as data_lib
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import memory
from saliency_jax import models
from saliency_jax import progress as progress_lib
from saliency_jax import rng
from saliency_jax import tensorboard
from saliency_jax.data import pipeline
from saliency_jax.data import streaming
from saliency_jax.metrics import classification
from saliency_jax.models import weights as weights_lib

SUMMARY = "summary.json"
EXPORT = "weights.npz"  # the finished model, for other tools (models.save_npz)
TENSORBOARD = "tensorboard"  # event files, with config.tensorboard
# metrics.jsonl key -> TensorBoard tag.
TENSORBOARD_TAGS = {"train_loss": "train/loss", "train_accuracy": "train/accuracy",
                    "val_auc": "validation/auc", "val_accuracy": "validation/accuracy",
                    "learning_rate": "train/learning_rate"}


def create_model(config: ml_collections.ConfigDict, in_channels: int) -> nnx.Module:
  """A fresh model of ``config.model`` initialized from the config seed."""
  return models.create(config.model, num_classes=config.num_classes,
                       in_channels=in_channels, width=config.width,
                       preprocessing=config_lib.preprocessing_for(config),
                       rngs=nnx.Rngs(params=rng.key(config.seed, rng.INIT)))


def weights_model(config: ml_collections.ConfigDict, in_channels: int) -> nnx.Module:
  """The model of ``config.model_weights`` as it is, in eval mode.

  Its classifier must have ``config.num_classes`` classes: a new one would be
  untrained (``config.init_from`` trains one).
  """
  path = config.model_weights
  try:
    model = models.load(config.model, path, in_channels=in_channels,
                        width=config.width,
                        preprocessing=config_lib.preprocessing_for(config))
  except weights_lib.NoClassifierError:
    raise errors.WeightsError(f"config.model_weights={path!r} has no classifier "
                              "(saved without its top); to train one on it use "
                              f"--config.init_from={path}") from None
  if model.predictions.out_features != config.num_classes:
    raise errors.WeightsError(
        f"config.model_weights={path!r}: its classifier has "
        f"{model.predictions.out_features} classes, config.num_classes="
        f"{config.num_classes}; to train a new one on these weights use "
        f"--config.init_from={path}")
  return model


def checkpoint_values(directory: str) -> dict[str, np.ndarray]:
  """Every model variable of the latest checkpoint under ``directory`` (a
  training run's directory or a workdir with ``models/trained``), by flat name
  (``weights.flat_values``' names)."""
  run = config_lib.training_run_dir(directory)
  if run is None:
    raise errors.ConfigError(f"config.init_from={directory!r}: no checkpoints/ "
                             "there nor under models/trained/")
  manager = ocp.CheckpointManager(
      os.path.join(os.path.abspath(run), "checkpoints"),
      options=ocp.CheckpointManagerOptions(
          multiprocessing_options=_process_local(), read_only=True, create=False))
  step = manager.latest_step()
  if step is None:
    raise errors.ConfigError(f"config.init_from={directory!r}: {run}/checkpoints "
                             "holds no finished checkpoint")
  # No target: the arrays as saved, whatever model they belong to.
  saved = manager.restore(step)
  manager.close()
  values = {}
  for part in ("params", "rest"):
    for path, leaf in jax.tree_util.tree_flatten_with_path(saved[part])[0]:
      keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
      values["/".join(keys[:-1] if keys[-1] == "value" else keys)] = np.asarray(leaf)
  return values


def initial_model(config: ml_collections.ConfigDict, in_channels: int) -> nnx.Module:
  """Where training starts: ``config.init_from``'s weights, else a fresh model."""
  source = config.get("init_from")
  if not source:
    return create_model(config, in_channels)
  if os.path.isdir(source):
    model = weights_lib.abstract_model(
        config.model, num_classes=config.num_classes, in_channels=in_channels,
        width=config.width, preprocessing=config_lib.preprocessing_for(config))
    return weights_lib.assign(model, checkpoint_values(source),
                              f"config.init_from={source!r}")
  # A weights file: a new classifier when the classes differ.
  return models.load(config.model, source, num_classes=config.num_classes,
                     in_channels=in_channels, width=config.width,
                     preprocessing=config_lib.preprocessing_for(config),
                     seed=rng.key(config.seed, rng.INIT))


def permute_labels(key: jax.Array, labels: jax.Array) -> jax.Array:
  """Labels shuffled across examples: same class balance, no link to images."""
  return labels[jax.random.permutation(key, labels.shape[0])]


def randomized_labels(config: ml_collections.ConfigDict, labels: jax.Array) -> jax.Array:
  """The permuted training labels a ``randomize_labels`` run of ``config`` trains on."""
  return permute_labels(rng.key(config.seed, rng.LABELS), labels)


def training_split(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The training split, cut to its first ``config.train.num_train`` examples if set."""
  split = data_lib.load(config, "train")
  subset = config.train.get("num_train")
  if subset is None:
    return split
  available = len(split["label"])
  if subset > available:
    raise ValueError(f"config.train.num_train={subset} exceeds the {available} "
                     f"training examples of {config.dataset}")
  return {k: v[:subset] for k, v in split.items()}


def _optimizer_settings(config: ml_collections.ConfigDict) -> tuple[Any, ...]:
  """What :func:`make_optimizer` reads of ``config``, hashable."""
  t = config.train
  return (t.learning_rate, t.warmup_steps, t.steps, t.weight_decay)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return _optimizer(_optimizer_settings(config))


def _optimizer(settings: tuple[Any, ...]) -> optax.GradientTransformation:
  """AdamW with :func:`_schedule`'s learning rate."""
  return optax.adamw(_schedule(settings), weight_decay=settings[3])


def _schedule(settings: tuple[Any, ...]) -> optax.Schedule:
  """Learning rate: linear warmup to the peak, cosine decay to 1% of it."""
  learning_rate, warmup_steps, steps, _ = settings
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate,
      warmup_steps=min(warmup_steps, steps - 1), decay_steps=steps,
      end_value=0.01 * learning_rate)


def learning_rate(config: ml_collections.ConfigDict, step: int) -> float:
  """The learning rate of ``config``'s schedule at ``step`` (0-based updates)."""
  return float(_schedule(_optimizer_settings(config))(step))


@dataclasses.dataclass(frozen=True)
class _Programs:
  """The step and prediction functions of one model and optimizer.

  ``step`` is the pure training step, ``train_step`` it jitted (the state
  donated), ``batch_step`` the same step on a batch read from the files
  (streamed splits: ``(state, images, labels, aug_key)``), ``predict`` the
  jitted class probabilities.
  """
  step: Any
  train_step: Any
  batch_step: Any
  predict: Any


def _programs(model: nnx.Module, config: ml_collections.ConfigDict,
              num_train: int) -> _Programs:
  """The programs of ``model``'s architecture and ``config``'s training.

  Cached: runs of one architecture and training settings (the seeds of a
  sweep, one after another) share one compilation.
  """
  model.train()
  train_def = nnx.graphdef(model)
  model.eval()
  eval_def = nnx.graphdef(model)
  return _cached_programs(train_def, eval_def, _optimizer_settings(config),
                          config.train.batch_size, bool(config.train.augment),
                          num_train)


@functools.lru_cache(maxsize=8)
def _cached_programs(train_def: Any, eval_def: Any, optimizer: tuple[Any, ...],
                     batch_size: int, augment: bool, num_train: int) -> _Programs:
  tx = _optimizer(optimizer)

  def train_step(state, images, labels, data_key, aug_key):
    idx = pipeline.batch_at_step(data_key, state["step"], num_train, batch_size)
    return batch_step(state, images[idx], labels[idx], aug_key)

  def batch_step(state, x, y, aug_key):
    step = state["step"]
    if augment:
      x = pipeline.augment(jax.random.fold_in(aug_key, step), x)

    def loss_fn(params, rest):
      m = nnx.merge(train_def, params, rest, copy=True)  # fresh Variables in this trace
      logits = m(x)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, (logits, nnx.state(m, nnx.Not(nnx.Param)))

    (loss, (logits, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["rest"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new_state = dict(params=optax.apply_updates(state["params"], updates),
                     rest=rest, opt_state=opt_state, step=step + 1)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
    return new_state, jnp.stack([loss, accuracy])

  def predict(state, x):
    m = nnx.merge(eval_def, state["params"], state["rest"])
    return jax.nn.softmax(m(x))

  return _Programs(step=train_step, train_step=jax.jit(train_step, donate_argnums=0),
                   batch_step=jax.jit(batch_step, donate_argnums=0),
                   predict=jax.jit(predict))


def predict_split(programs: _Programs, state, split: dict[str, Any],
                  batch_size: int) -> np.ndarray:
  """Class probabilities for every image of ``split`` (:func:`_load_split`);
  one host transfer at the end. A streamed split is read batch by batch."""
  if "stream" in split:
    source = split["stream"]
    with streaming.evaluation_batches(source, batch_size) as batches:
      probs = [programs.predict(state, x) for x in batches]
    return np.asarray(jnp.concatenate(probs))[:source.num_examples]
  images = split["image_device"]
  idx, valid = pipeline.epoch_indices(None, images.shape[0], batch_size,
                                      shuffle=False)
  probs = [programs.predict(state, images[i]) for i in idx]
  return np.asarray(jnp.concatenate(probs))[np.asarray(valid).reshape(-1)]


def evaluate(programs, state, split: dict[str, Any], batch_size: int,
             labels=None) -> dict[str, float]:
  probs = predict_split(programs, state, split, batch_size)
  labels = split["label"] if labels is None else labels
  report = classification.binary_report(probs[:, 1], np.asarray(labels))
  # Images whose outputs are not finite (a diverged or damaged model).
  report["nonfinite"] = int((~np.isfinite(probs)).any(axis=1).sum())
  return report


def check_finite(what: str, metrics: dict[str, Any]) -> None:
  """Raises NonFiniteError when a split's outputs were not finite.

  The outputs, not every metric: precision is undefined (NaN) for a model
  that predicts no positive, which is a fact about the model, not a fault.
  """
  if metrics.get("nonfinite"):
    raise errors.NonFiniteError(
        f"{what}: the model's outputs are not finite on {metrics['nonfinite']} "
        "images: it diverged; nothing computed from it would mean anything "
        "(lower config.train.learning_rate, check the data)")


def _checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  os.makedirs(directory, exist_ok=True)  # orbax's create=True needs all processes
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(
          max_to_keep=config.train.keep_checkpoints, create=False,
          multiprocessing_options=_process_local()))


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Checkpoints ``state`` as host arrays: in a multi-process run orbax
  refuses one process's device arrays, and the model is one process's."""
  manager.save(step, args=ocp.args.StandardSave(_on_host(state)))


def restore(manager: ocp.CheckpointManager, step: int, like: Any) -> Any:
  """The state saved at ``step``, shaped like ``like``, on the device."""
  host = manager.restore(step, args=ocp.args.StandardRestore(_on_host(like)))
  return jax.tree.map(jnp.asarray, host)


def _on_host(state: Any) -> Any:
  return jax.tree.map(np.asarray, state)


def _process_local() -> ocp.options.MultiprocessingOptions:
  """Orbax's multi-host options for a model held whole by one process.

  In a multi-process run, process 0 trains (its own devices) and the others
  only read finished checkpoints: every process saves and restores alone,
  never waiting at a barrier for processes that do not checkpoint.
  """
  me = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


def _initial_state(model: nnx.Module, tx) -> dict[str, Any]:
  params = nnx.state(model, nnx.Param)
  return dict(params=params, rest=nnx.state(model, nnx.Not(nnx.Param)),
              opt_state=tx.init(params), step=jnp.asarray(0, jnp.int32))


def _training_progress(what: str, total: int, start: int) -> progress_lib.Progress:
  """The training steps' bar (a terminal) or log lines (elsewhere)."""
  return progress_lib.Progress(what, total, unit="step", initial=start)


def _log_progress(step: int, stats: np.ndarray, bar: progress_lib.Progress,
                  who: str = "") -> dict[str, float]:
  """Moves ``bar`` to ``step`` showing the window's loss and accuracy; the
  step's record. Seeds at once (``who``) also get a line each."""
  detail = f"loss {stats[0]:.4f}  train_acc {stats[1]:.3f}"
  if who:
    bar.log("%sstep %d/%d  %s", who, step, bar.total, detail)
    bar.update_to(step)
  else:
    bar.update_to(step, detail)
  return {"step": step, "train_loss": float(stats[0]),
          "train_accuracy": float(stats[1]), "steps_per_second": bar.rate}


def _load_split(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """Split ``name`` (for 'train' :func:`training_split`'s examples) as training
  and evaluation read it.

  ``config.train.data_in_memory`` decides (:func:`streaming.keep_in_memory`):
  in memory, the split's arrays with its images also on the device
  (``image_device``); streamed, ``stream`` (a :class:`streaming.Split`, read
  batch by batch). Both have the host ``label`` (N,), ``num_examples`` and
  ``image_shape`` (H, W, C).
  """
  subset = config.train.get("num_train") if name == "train" else None
  source = data_lib.source(config, name, num_examples=subset)
  if streaming.keep_in_memory(config.train.get("data_in_memory", "auto"),
                              source.image_bytes):
    split = training_split(config) if name == "train" else data_lib.load(config, name)
    split["image_device"] = jnp.asarray(split["image"])
  else:
    logging.info("%s split of %s: %d images (%.2f GB as float32) streamed from its "
                 "files", name, config.dataset, source.num_examples,
                 source.image_bytes / 1e9)
    split = {"stream": source, "label": source.index().label}
  split.update(num_examples=source.num_examples, image_shape=source.image_shape)
  return split


def _load_splits(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
  """The training, validation and test splits (:func:`_load_split`)."""
  splits = {s: _load_split(config, s) for s in ("train", "validation", "test")}
  num_train = splits["train"]["num_examples"]
  if num_train < config.train.batch_size:
    raise ValueError(f"config.train.batch_size={config.train.batch_size} exceeds the "
                     f"{num_train} training examples")
  return splits


def train_labels(config: ml_collections.ConfigDict,
                 splits: dict[str, dict[str, Any]]) -> jax.Array:
  """The labels a run of ``config`` trains on: the training split's, permuted
  with its seed's key (:func:`randomized_labels`) under ``randomize_labels``."""
  labels = jnp.asarray(splits["train"]["label"], jnp.int32)
  return randomized_labels(config, labels) if config.train.randomize_labels else labels


def _resume(manager: ocp.CheckpointManager, state: dict[str, Any],
            workdir: str) -> tuple[int, dict[str, Any]]:
  """(step, state) of the latest checkpoint, else (0, ``state``).

  ``metrics.jsonl`` loses its records past that step: they came from the
  killed run and are redone.
  """
  start = manager.latest_step() or 0
  if start:
    state = restore(manager, start, state)
    logging.info("%s: resumed from checkpoint at step %d", workdir, start)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  records = [r for r in io_utils.read_jsonl(metrics_path) if r["step"] <= start]
  io_utils.write_text(metrics_path, "".join(io_utils.json_line(r) for r in records))
  return start, state


def _is_log_step(step: int, t: ml_collections.ConfigDict) -> bool:
  return step % t.log_every == 0 or step == t.steps


def _is_checkpoint_step(step: int, t: ml_collections.ConfigDict) -> bool:
  return step % t.checkpoint_every == 0 or step == t.steps


def _log_step(config: ml_collections.ConfigDict, workdir: str, programs: _Programs,
              state: dict[str, Any], validation: dict[str, Any], step: int,
              window: np.ndarray, bar: progress_lib.Progress, start: int,
              who: str = "") -> None:
  """Appends step ``step``'s record to ``metrics.jsonl``: the mean loss and
  accuracy of ``window`` (their sums over the steps since the last record or,
  after a resume from ``start``, since that checkpoint), the learning rate of
  the step's update, and the validation metrics at evaluation steps. With
  ``config.tensorboard`` the same scalars also go to ``workdir/tensorboard/``.

  Raises:
    errors.NonFiniteError: the training loss is not finite (it diverged).
  """
  t = config.train
  # Steps since the previous log step (a multiple of log_every) or the resume.
  n = step - max(start, (step - 1) // t.log_every * t.log_every)
  record = _log_progress(step, np.asarray(window) / n, bar, who)
  record["learning_rate"] = learning_rate(config, step - 1)
  if not np.isfinite(record["train_loss"]):
    raise errors.NonFiniteError(
        f"training {config.model} (seed {config.seed}) in {workdir}: the training "
        f"loss is not finite at step {step} (config.train.learning_rate="
        f"{t.learning_rate}): it diverged; lower the learning rate or check the data")
  if step % t.eval_every == 0 or step == t.steps:
    val = evaluate(programs, state, validation, t.batch_size)
    record.update({f"val_{k}": v for k, v in val.items()})
    bar.log("%sstep %d  validation %s", who, step, _fmt(val))
  io_utils.append_jsonl(os.path.join(workdir, "metrics.jsonl"), record)
  if config.get("tensorboard"):
    tensorboard.write_scalars(os.path.join(workdir, TENSORBOARD), step, {
        tag: record[key] for key, tag in TENSORBOARD_TAGS.items() if key in record})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       *, stop_after: int | None = None) -> dict[str, Any]:
  """Trains ``config.model``, checkpointing to ``workdir/checkpoints``.

  Resumes from the latest checkpoint there. Writes ``metrics.jsonl`` (training
  curves) and ``summary.json`` (validation and test metrics).

  Args:
    config: the resolved experiment config (the ``train`` config).
    workdir: the run's directory.
    stop_after: stop (as if killed) once this many steps are done; for tests.

  Returns:
    The summary dict, or None when stopped early.
  """
  t = config.train
  if config.get("model_weights"):
    return evaluate_weights(config, workdir)
  splits = _load_splits(config)
  labels = train_labels(config, splits)
  num_train, in_channels = (splits["train"]["num_examples"],
                            splits["train"]["image_shape"][-1])
  model = initial_model(config, in_channels)
  tx = make_optimizer(config)
  programs = _programs(model, config, num_train)
  manager = _checkpoint_manager(workdir, config)
  start, state = _resume(manager, _initial_state(model, tx), workdir)

  data_key = rng.key(config.seed, rng.DATA)
  aug_key = rng.key(config.seed, rng.AUGMENT)
  bar, window = _training_progress(f"training {config.model}", t.steps, start), None
  with _training_steps(programs, splits["train"], labels, data_key, aug_key,
                       start, t) as advance:
    for step in range(start + 1, t.steps + 1):
      state, stats = advance(state)
      window = stats if window is None else window + stats
      if _is_log_step(step, t):
        _log_step(config, workdir, programs, state, splits["validation"], step,
                  window, bar, start)
        window = None
      if _is_checkpoint_step(step, t):
        save(manager, step, state)
      if stop_after is not None and step >= stop_after:
        bar.close()
        manager.wait_until_finished()
        manager.close()
        return None
  bar.close()
  manager.wait_until_finished()
  manager.close()
  return _finish(config, workdir, model, programs, state, splits, labels)


@contextlib.contextmanager
def _training_steps(programs: _Programs, split: dict[str, Any], labels: jax.Array,
                    data_key: jax.Array, aug_key: jax.Array, start: int,
                    t: ml_collections.ConfigDict) -> Iterator[Any]:
  """The training step from ``start`` on as ``advance(state) -> (state, stats)``.

  In memory, the step gathers its batch from the device-resident split;
  streamed, its batch (the same indices, :func:`streaming.training_order`)
  comes read ahead from the files. Leaving the context stops the reading.
  """
  if "stream" not in split:
    images = split["image_device"]
    yield lambda state: programs.train_step(state, images, labels, data_key, aug_key)
    return
  with streaming.training_batches(split["stream"], np.asarray(labels), data_key,
                                  start, t.steps, t.batch_size) as batches:
    batches = iter(batches)
    yield lambda state: programs.batch_step(state, *next(batches), aug_key)


def _finish(config: ml_collections.ConfigDict, workdir: str, model: nnx.Module,
            programs: _Programs, state: dict[str, Any],
            splits: dict[str, dict[str, Any]], labels: jax.Array) -> dict[str, Any]:
  """A trained run's ``weights.npz`` export, then its ``summary.json``."""
  t = config.train
  in_channels = splits["train"]["image_shape"][-1]
  nnx.update(model, state["params"], state["rest"])
  model.eval()
  weights_lib.save_npz(os.path.join(workdir, EXPORT), model, name=config.model,
                       width=config.width, in_channels=in_channels)
  summary = {
      **_model_record(config), "steps": t.steps,
      "randomize_labels": bool(t.randomize_labels),
      "train": evaluate(programs, state, splits["train"], t.batch_size,
                        labels=labels),
      "validation": evaluate(programs, state, splits["validation"], t.batch_size),
      "test": evaluate(programs, state, splits["test"], t.batch_size),
  }
  # Before the summary: with it, the model would count as trained.
  check_finite(f"training {config.model} (seed {config.seed}) in {workdir} "
               "(validation split)", summary["validation"])
  io_utils.write_json(os.path.join(workdir, SUMMARY), summary)
  logging.info("%s: test %s", workdir, _fmt(summary["test"]))
  return summary


def _model_record(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The summary's record of which model, and from which weights."""
  return {"model": config.model, "width": config.width, "dataset": config.dataset,
          "image_size": config.image_size, "seed": config.seed,
          "preprocessing": config_lib.preprocessing_for(config),
          "model_weights": config.get("model_weights"),
          "init_from": config.get("init_from"), "data": data_lib.provenance(config)}


def evaluate_weights(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """``summary.json`` (validation and test metrics) of ``config.model_weights``.

  What ``train_and_evaluate`` does instead of training when the weights come
  from elsewhere: no steps, no checkpoints.
  """
  splits = {s: _load_split(config, s) for s in ("validation", "test")}
  model = weights_model(config, splits["test"]["image_shape"][-1])
  tx = make_optimizer(config)
  programs = _programs(model, config, num_train=1)
  state = _initial_state(model, tx)
  batch_size = config.train.batch_size
  summary = {**_model_record(config), "steps": 0, "randomize_labels": False,
             **{name: evaluate(programs, state, split, batch_size)
                for name, split in splits.items()}}
  io_utils.write_json(os.path.join(workdir, SUMMARY), summary)
  logging.info("%s: test %s", config.model_weights, _fmt(summary["test"]))
  if summary["validation"]["nonfinite"]:
    # Evaluated as given: the experiments count the non-finite maps and
    # judge such a model INVALID rather than refuse to look at it.
    logging.warning("%s: outputs of %d validation images are not finite",
                    config.model_weights, summary["validation"]["nonfinite"])
  return summary


def restore_model(config: ml_collections.ConfigDict, workdir: str,
                  in_channels: int) -> nnx.Module:
  """The model of the latest checkpoint in ``workdir``, in eval mode.

  With ``config.model_weights`` set, that file's model (there is no checkpoint).
  """
  if config.get("model_weights"):
    return weights_model(config, in_channels)
  model = create_model(config, in_channels)
  tx = make_optimizer(config)
  manager = _checkpoint_manager(workdir, config)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
  state = restore(manager, step, _initial_state(model, tx))
  manager.close()
  nnx.update(model, state["params"], state["rest"])
  model.eval()
  return model


def _fmt(metrics: dict[str, float]) -> str:
  return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in metrics.items())


# ----------------------------------------------------------- seeds at once ---

def validate(config: ml_collections.ConfigDict) -> None:
  """The key only the train experiment has: ``config.num_seeds``."""
  count = config.get("num_seeds", 1)
  if isinstance(count, bool) or not isinstance(count, int) or count < 1:
    raise errors.ConfigError(f"config.num_seeds={count!r}: expected an integer >= 1 "
                             "(how many seeds to train, config.seed onwards)")
  if count > 1 and config.get("model_weights"):
    raise errors.ConfigError(
        f"config.num_seeds={count} and config.model_weights are both set: the "
        "weights are evaluated as they are, so every seed would give the same "
        "model; set one (config.init_from trains from them)")
  if config.seed + count > config_lib.SEED_LIMIT:
    raise errors.ConfigError(
        f"config.num_seeds={count}: the seeds config.seed={config.seed} to "
        f"{config.seed + count - 1} pass the largest seed, 2**63 - 1")


def run(config: ml_collections.ConfigDict, workdir: str
        ) -> dict[str, Any] | list[dict[str, Any]]:
  """The train experiment: one run in ``workdir`` (:func:`train_and_evaluate`),
  or with ``config.num_seeds = K > 1`` the seeds ``config.seed`` to
  ``config.seed + K - 1``, each in ``workdir/seed<s>`` (:func:`train_seeds`)."""
  count = config.get("num_seeds", 1)
  if count == 1:
    return train_and_evaluate(config, workdir)
  seeds = list(range(config.seed, config.seed + count))
  return train_seeds(config, seed_directories(workdir, seeds), seeds)


def seed_directories(workdir: str, seeds: list[int]) -> list[str]:
  """Where the train experiment puts seed ``s``: ``workdir/seed<s>``."""
  return [os.path.join(workdir, f"seed{s}") for s in seeds]


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  """A copy of ``config`` for a plain run (``num_seeds`` 1) with ``seed``."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.seed = seed
  if "num_seeds" in out:
    out.num_seeds = 1
  return out


def train_seeds(config: ml_collections.ConfigDict, directories: list[str],
                seeds: list[int], *, stop_after: int | None = None
                ) -> list[dict[str, Any]] | None:
  """Trains seed ``seeds[i]`` into ``directories[i]``, the seeds at once where they fit.

  Replicate ``i`` is the run ``train_and_evaluate(config with seed=seeds[i],
  directories[i])``: the same keys (:mod:`saliency_jax.rng`: init, data
  order, augmentation, label permutation), the same files, the same numbers
  to float tolerance (see the module doc). A replicate with a
  ``summary.json`` is left as it is. The unfinished ones are trained
  together: their states stacked on a leading axis and advanced by one
  jitted ``vmap`` of the training step over the shared training split, each
  checkpointed into its own directory, so that a kill at any moment resumes
  bit for bit. One after another
  (:func:`train_and_evaluate`) when ``config.train.seeds_at_once`` is False,
  when fewer than two are unfinished, when the stacked step does not fit
  the device's memory (:func:`memory.fits`), or when the training split is
  streamed rather than held in memory (``config.train.data_in_memory``).

  Args:
    config: the training config; its ``seed`` is replaced by each of ``seeds``.
    directories: one run directory per seed.
    seeds: the training seeds.
    stop_after: stop (as if killed) once this many steps are done; for tests.

  Returns:
    The summaries in the order of ``seeds``, or None when stopped early.

  Raises:
    errors.NonFiniteError: a replicate's training loss is not finite (names
      its seed).
  """
  if len(directories) != len(seeds):
    raise ValueError(f"{len(directories)} directories for {len(seeds)} seeds")
  configs = [seed_config(config, s) for s in seeds]
  pending = [i for i, d in enumerate(directories)
             if not os.path.exists(os.path.join(d, SUMMARY))]
  finished = None
  if (len(pending) > 1 and config.train.get("seeds_at_once", True)
      and not config.get("model_weights")):
    finished = _train_at_once([configs[i] for i in pending],
                              [directories[i] for i in pending], stop_after)
  if finished is None:
    if pending:
      logging.info("training seeds %s one after another", [seeds[i] for i in pending])
    for i in pending:
      if train_and_evaluate(configs[i], directories[i], stop_after=stop_after) is None:
        return None
  elif not finished:
    return None
  return [io_utils.read_json(os.path.join(d, SUMMARY)) for d in directories]


def _stack(trees: list[Any]) -> Any:
  """Pytrees of equal structure stacked leaf by leaf on a new leading axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _unstack(tree: Any, index: int) -> Any:
  """Member ``index`` of a stacked pytree."""
  return jax.tree.map(lambda leaf: leaf[index], tree)


@functools.lru_cache(maxsize=8)
def _stacked_step(step: Any, total: int, labels_axis: int | None) -> Any:
  """``step`` vmapped over stacked states (donated), the images shared.

  A replicate already at step ``total`` keeps its state (replicates resumed
  from checkpoints may stand at different steps). ``labels_axis`` is 0 when
  each seed trains on its own permutation of the labels, else None.
  """
  def masked(state, images, labels, data_key, aug_key):
    new, stats = step(state, images, labels, data_key, aug_key)
    active = state["step"] < total
    return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), stats

  return jax.jit(jax.vmap(masked, in_axes=(0, None, labels_axis, 0, 0)),
                 donate_argnums=0)


def _fits(compiled: Any, template: Any, count: int) -> bool:
  """Whether the stacked step fits the device (:func:`memory.fits`), its
  ``count`` stacked states (arguments, not yet on the device) counted."""
  budget = memory.budget()
  if budget is not None:
    budget -= count * sum(leaf.nbytes for leaf in jax.tree.leaves(template))
  return memory.fits(compiled, budget)


@dataclasses.dataclass(frozen=True)
class _StackedInputs:
  """What the stacked step reads besides the states: the shared images, the
  labels (``labels_axis`` 0: one permutation per seed, stacked; None: shared)
  and each seed's data-order and augmentation keys, stacked."""
  images: jax.Array
  labels: jax.Array
  labels_axis: int | None
  data_keys: jax.Array
  aug_keys: jax.Array

  def arguments(self) -> tuple[jax.Array, ...]:
    return self.images, self.labels, self.data_keys, self.aug_keys

  def labels_of(self, index: int) -> jax.Array:
    return self.labels if self.labels_axis is None else self.labels[index]


def _stacked_inputs(configs: list[ml_collections.ConfigDict],
                    splits: dict[str, dict[str, Any]]) -> _StackedInputs:
  if configs[0].train.randomize_labels:  # each seed its own permutation
    labels, labels_axis = jnp.stack([train_labels(c, splits) for c in configs]), 0
  else:
    labels, labels_axis = train_labels(configs[0], splits), None
  return _StackedInputs(
      images=splits["train"]["image_device"], labels=labels, labels_axis=labels_axis,
      data_keys=jnp.stack([rng.key(c.seed, rng.DATA) for c in configs]),
      aug_keys=jnp.stack([rng.key(c.seed, rng.AUGMENT) for c in configs]))


def _compiled_step(programs: _Programs, template: dict[str, Any], count: int,
                   total: int, inputs: _StackedInputs) -> Any:
  """The stacked step for ``count`` states like ``template``, compiled (before
  any state is stacked on the device); None when it does not fit there."""
  shapes = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct((count,) + leaf.shape, leaf.dtype), template)
  compiled = _stacked_step(programs.step, total, inputs.labels_axis).lower(
      shapes, *inputs.arguments()).compile()
  return compiled if _fits(compiled, template, count) else None


def _train_at_once(configs: list[ml_collections.ConfigDict], directories: list[str],
                   stop_after: int | None) -> bool | None:
  """Trains ``configs`` (equal but for the seed) together; see :func:`train_seeds`.

  Returns:
    True when trained, False when stopped early, None (nothing trained) when
    the stacked step does not fit the device's memory or the training split
    is streamed (too large to keep whole: :func:`_load_split`).
  """
  t, seeds = configs[0].train, [c.seed for c in configs]
  # Each seed reads its own batches: streamed, K batches a step from the
  # files; trained one after another instead, each streaming its own.
  train_source = data_lib.source(configs[0], "train", num_examples=t.get("num_train"))
  if not streaming.keep_in_memory(t.get("data_in_memory", "auto"),
                                  train_source.image_bytes):
    logging.info("training seeds %s: the training split is streamed (%.2f GB of "
                 "images): one after another", seeds, train_source.image_bytes / 1e9)
    return None
  splits = _load_splits(configs[0])
  images = splits["train"]["image_device"]
  tx = make_optimizer(configs[0])
  first = initial_model(configs[0], images.shape[-1])
  programs = _programs(first, configs[0], images.shape[0])
  inputs = _stacked_inputs(configs, splits)
  managers = [_checkpoint_manager(d, c) for d, c in zip(directories, configs)]
  try:
    starts = np.array([m.latest_step() or 0 for m in managers])
    step = None
    if starts.min() < t.steps:  # else only the summaries are left to write
      step = _compiled_step(programs, _initial_state(first, tx), len(configs),
                            t.steps, inputs)
      if step is None:
        logging.warning("training seeds %s at once does not fit the device's "
                        "memory: one after another", seeds)
        return None
    logging.info("training seeds %s at once (one vmapped step)", seeds)
    models_ = [first] + [initial_model(c, images.shape[-1]) for c in configs[1:]]
    state = _stack([_resume(m, _initial_state(model, tx), d)[1]
                    for m, model, d in zip(managers, models_, directories)])
    state = _stacked_loop(configs, directories, managers, programs, step, state,
                          inputs, splits["validation"], starts, stop_after)
  finally:
    for manager in managers:
      manager.wait_until_finished()
      manager.close()
  if state is None:
    return False
  for i, (config, directory, model) in enumerate(zip(configs, directories, models_)):
    _finish(config, directory, model, programs, _unstack(state, i), splits,
            inputs.labels_of(i))
  return True


def _stacked_loop(configs: list[ml_collections.ConfigDict], directories: list[str],
                  managers: list[ocp.CheckpointManager], programs: _Programs,
                  step: Any, state: dict[str, Any], inputs: _StackedInputs,
                  validation: dict[str, Any], starts: np.ndarray,
                  stop_after: int | None) -> dict[str, Any] | None:
  """Advances replicate ``i`` from step ``starts[i]`` to ``config.train.steps``,
  logging and checkpointing each as :func:`train_and_evaluate` does.

  Returns:
    The stacked final states, or None when stopped after ``stop_after`` steps.
  """
  t, count = configs[0].train, len(configs)
  bar = _training_progress(f"training {configs[0].model} seeds "
                           f"{[c.seed for c in configs]}", t.steps, int(starts.min()))
  window = None
  sums = [None] * count  # per replicate, host: [loss, accuracy] since its last record
  for tick in range(1, t.steps - int(starts.min()) + 1):
    state, stats = step(state, *inputs.arguments())
    window = stats if window is None else window + stats
    steps = starts + tick
    active = [i for i in range(count) if steps[i] <= t.steps]
    logged = [i for i in active if _is_log_step(int(steps[i]), t)]
    if logged:  # the one host transfer between log steps
      host, window = np.asarray(window), None
      for i in active:
        sums[i] = host[i] if sums[i] is None else sums[i] + host[i]
    for i in logged:
      _log_step(configs[i], directories[i], programs, _unstack(state, i), validation,
                int(steps[i]), sums[i], bar, int(starts[i]),
                who=f"seed {configs[i].seed}: ")
      sums[i] = None
    for i in active:
      if _is_checkpoint_step(int(steps[i]), t):
        save(managers[i], int(steps[i]), _unstack(state, i))
    if stop_after is not None and np.minimum(steps, t.steps).min() >= stop_after:
      bar.close()
      return None
  bar.close()
  return state
