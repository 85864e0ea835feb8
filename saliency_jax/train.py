"""Training: AdamW with warmup + cosine decay, cross-entropy, light augmentation.

The whole training split lives on the device; the batch of step ``s`` is a pure
function of ``(data_key, s)`` and the augmentation of ``(aug_key, s)``, so a run
killed at any moment and restarted from its last orbax checkpoint ends with
the same parameters, bit for bit, as an uninterrupted run.

``config.train.randomize_labels`` permutes the training labels with a key
(label randomization test, Adebayo et al. 2018); validation and test labels
stay true.

Weights from elsewhere: ``config.init_from`` (a training run's directory or a
weights file) starts training from them; ``config.model_weights`` (a Keras
file or an ``.npz`` export) replaces training: the run evaluates those
weights and :func:`restore_model` returns them. A finished run exports its
model to ``weights.npz`` (:mod:`saliency_jax.models.weights`).
"""

from __future__ import annotations

import dataclasses
import os
import time
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
from saliency_jax import models
from saliency_jax import rng
from saliency_jax.data import pipeline
from saliency_jax.metrics import classification
from saliency_jax.models import weights as weights_lib

SUMMARY = "summary.json"
EXPORT = "weights.npz"  # the finished model, for other tools (models.save_npz)


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
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(run), "checkpoints"))
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


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  t = config.train
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=t.learning_rate,
      warmup_steps=min(t.warmup_steps, t.steps - 1), decay_steps=t.steps,
      end_value=0.01 * t.learning_rate)
  return optax.adamw(schedule, weight_decay=t.weight_decay)


@dataclasses.dataclass(frozen=True)
class _Programs:
  """The jitted step and prediction functions of one model and optimizer."""
  train_step: Any
  predict: Any


def _programs(model: nnx.Module, tx: optax.GradientTransformation,
              config: ml_collections.ConfigDict, num_train: int) -> _Programs:
  model.train()
  train_def = nnx.graphdef(model)
  model.eval()
  eval_def = nnx.graphdef(model)
  batch_size, augment = config.train.batch_size, config.train.augment

  def train_step(state, images, labels, data_key, aug_key):
    step = state["step"]
    idx = pipeline.batch_at_step(data_key, step, num_train, batch_size)
    x, y = images[idx], labels[idx]
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

  return _Programs(train_step=jax.jit(train_step, donate_argnums=0),
                   predict=jax.jit(predict))


def predict_split(programs: _Programs, state, images: jax.Array,
                  batch_size: int) -> np.ndarray:
  """Class probabilities for every image; one host transfer at the end."""
  idx, valid = pipeline.epoch_indices(None, images.shape[0], batch_size,
                                      shuffle=False)
  probs = [programs.predict(state, images[i]) for i in idx]
  return np.asarray(jnp.concatenate(probs))[np.asarray(valid).reshape(-1)]


def evaluate(programs, state, split: dict[str, Any], batch_size: int,
             labels=None) -> dict[str, float]:
  probs = predict_split(programs, state, split["image_device"], batch_size)
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
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.train.keep_checkpoints, create=True))


def _initial_state(model: nnx.Module, tx) -> dict[str, Any]:
  params = nnx.state(model, nnx.Param)
  return dict(params=params, rest=nnx.state(model, nnx.Not(nnx.Param)),
              opt_state=tx.init(params), step=jnp.asarray(0, jnp.int32))


def _log_progress(step: int, total: int, stats: np.ndarray, t0: float,
                  first_step: int) -> dict[str, float]:
  rate = (step - first_step) / max(time.time() - t0, 1e-9)
  eta = (total - step) / rate if rate > 0 else float("nan")
  logging.info("step %d/%d  loss %.4f  train_acc %.3f  %.2f steps/s  ETA %.0fs",
               step, total, stats[0], stats[1], rate, eta)
  return {"step": step, "train_loss": float(stats[0]),
          "train_accuracy": float(stats[1]), "steps_per_second": rate}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       *, stop_after: int | None = None) -> dict[str, Any]:
  """Trains ``config.model``, checkpointing to ``workdir/checkpoints``.

  Resumes from the latest checkpoint there. Writes ``metrics.jsonl`` (training
  curves) and ``summary.json`` (validation and test metrics).

  Args:
    config: the resolved experiment config (``configs/train.py``).
    workdir: the run's directory.
    stop_after: stop (as if killed) once this many steps are done; for tests.

  Returns:
    The summary dict, or None when stopped early.
  """
  t = config.train
  if config.get("model_weights"):
    return evaluate_weights(config, workdir)
  splits = {"train": training_split(config),
            **{s: data_lib.load(config, s) for s in ("validation", "test")}}
  for split in splits.values():
    split["image_device"] = jnp.asarray(split["image"])
  train_labels = jnp.asarray(splits["train"]["label"], jnp.int32)
  if t.randomize_labels:
    train_labels = randomized_labels(config, train_labels)
  num_train = splits["train"]["image"].shape[0]
  if num_train < t.batch_size:
    raise ValueError(f"config.train.batch_size={t.batch_size} exceeds the "
                     f"{num_train} training examples")

  in_channels = splits["train"]["image"].shape[-1]
  model = initial_model(config, in_channels)
  tx = make_optimizer(config)
  programs = _programs(model, tx, config, num_train)
  state = _initial_state(model, tx)

  metrics_path = os.path.join(workdir, "metrics.jsonl")
  manager = _checkpoint_manager(workdir, config)
  start = manager.latest_step() or 0
  if start:
    state = manager.restore(start, args=ocp.args.StandardRestore(state))
    logging.info("resumed from checkpoint at step %d", start)
  # Records past the checkpoint came from the killed run; they are redone.
  records = [r for r in io_utils.read_jsonl(metrics_path) if r["step"] <= start]
  io_utils.write_text(metrics_path, "".join(
      io_utils.json_line(r) for r in records))

  data_key = rng.key(config.seed, rng.DATA)
  aug_key = rng.key(config.seed, rng.AUGMENT)
  t0, window = time.time(), None
  for step in range(start + 1, t.steps + 1):
    state, stats = programs.train_step(state, splits["train"]["image_device"],
                                       train_labels, data_key, aug_key)
    window = stats if window is None else window + stats
    if step % t.log_every == 0 or step == t.steps:
      n = t.log_every if step % t.log_every == 0 else step % t.log_every
      record = _log_progress(step, t.steps, np.asarray(window) / n, t0, start)
      window = None
      if not np.isfinite(record["train_loss"]):
        raise errors.NonFiniteError(
            f"training {config.model} in {workdir}: the training loss is not finite "
            f"at step {step} (config.train.learning_rate={t.learning_rate}): it "
            "diverged; lower the learning rate or check the data")
      if step % t.eval_every == 0 or step == t.steps:
        val = evaluate(programs, state, splits["validation"], t.batch_size)
        record.update({f"val_{k}": v for k, v in val.items()})
        logging.info("step %d  validation %s", step, _fmt(val))
      io_utils.append_jsonl(metrics_path, record)
    if step % t.checkpoint_every == 0 or step == t.steps:
      manager.save(step, args=ocp.args.StandardSave(state))
    if stop_after is not None and step >= stop_after:
      manager.wait_until_finished()
      manager.close()
      return None
  manager.wait_until_finished()
  manager.close()

  nnx.update(model, state["params"], state["rest"])
  model.eval()
  weights_lib.save_npz(os.path.join(workdir, EXPORT), model, name=config.model,
                       width=config.width, in_channels=in_channels)
  summary = {
      **_model_record(config), "steps": t.steps,
      "randomize_labels": bool(t.randomize_labels),
      "train": evaluate(programs, state, splits["train"], t.batch_size,
                        labels=train_labels),
      "validation": evaluate(programs, state, splits["validation"], t.batch_size),
      "test": evaluate(programs, state, splits["test"], t.batch_size),
  }
  # Before the summary: with it, the model would count as trained.
  check_finite(f"training {config.model} in {workdir} (validation split)",
               summary["validation"])
  io_utils.write_json(os.path.join(workdir, SUMMARY), summary)
  logging.info("test %s", _fmt(summary["test"]))
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
  splits = {s: data_lib.load(config, s) for s in ("validation", "test")}
  for split in splits.values():
    split["image_device"] = jnp.asarray(split["image"])
  model = weights_model(config, splits["test"]["image"].shape[-1])
  tx = make_optimizer(config)
  programs = _programs(model, tx, config, num_train=1)
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
  state = manager.restore(step, args=ocp.args.StandardRestore(
      _initial_state(model, tx)))
  manager.close()
  nnx.update(model, state["params"], state["rest"])
  model.eval()
  return model


def _fmt(metrics: dict[str, float]) -> str:
  return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in metrics.items())
