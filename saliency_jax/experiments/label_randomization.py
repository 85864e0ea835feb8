"""Label randomization test (Adebayo et al., NeurIPS 2018; Arun et al., Radiology: AI 2021).

A second model is trained on permuted training labels until it memorizes
them; a method whose maps of that model look like the maps of the properly
trained model does not depend on what the model learned from its labels.
It passes when its maps of the two models are on average less similar than
maps of two different images from the trained model.

The randomized-label model differs from the trained one in its labels
(``config.train.randomize_labels``): the same architecture and
initialization (the same config seed), and the same training set and
augmentation unless ``config.label_randomization.num_train`` (the first N
training images, so that memorizing stays affordable on a CPU) or
``config.label_randomization.augment`` say otherwise; the summary lists
such differences. It trains in
rounds of ``config.train.steps``, continued from its checkpoint, until its
accuracy on the permuted labels it was trained with reaches
``config.label_randomization.target_train_accuracy`` or the step budget
``config.label_randomization.max_steps`` is spent; which happened is
reported. Each round lengthens the cosine schedule, so the learning rate
rises again at the start of a round (a warm restart).

Each model's maps explain its own predicted class, as both papers explained
the predicted class (``config.targets = 'true'`` explains the true label
with both); both use the same images and the same noise key per method.

Rows: localization at stage 0 (trained model) and stage 1 (randomized-label
model); similarity between the two models' maps at stage 1; the
different-image baseline of the trained model at stage 0, as in the cascade.

Null baselines (``config.null_baselines``, as in the cascade; Binder et al.,
CVPR 2023) go through both models and the same comparison as methods named
``null_<name>``, after the methods (whose noise keys they leave unchanged),
with their own verdicts (``summary['null_verdicts']``), never among the
methods': ``null_noise`` is uniform noise drawn with a fresh key per model,
so its similarity is that of two independent noise maps (about 0);
``null_random_cam`` is RandomCAM with the same random channel weights for
both models, so it changes only as the GradCAM layer's activations do.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import data as data_lib
from saliency_jax import devices
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import results
from saliency_jax import rng
from saliency_jax import saliency
from saliency_jax import train
from saliency_jax import workdir as workdir_lib
from saliency_jax.experiments import cascade
from saliency_jax.experiments import common
from saliency_jax.experiments import runner
from saliency_jax.metrics import stats
from saliency_jax.report import label_randomization_report

EXPERIMENT = "label_randomization"
TAG = "randomized_labels"
MEMORIZATION = "memorization.json"
ALPHA = 0.05


def validate(config: ml_collections.ConfigDict) -> None:
  """The keys only this experiment has (``config.label_randomization``)."""
  settings = config.label_randomization
  if not 0.0 < settings.target_train_accuracy <= 1.0:
    raise errors.ConfigError(
        f"config.label_randomization.target_train_accuracy="
        f"{settings.target_train_accuracy!r}: expected an accuracy in (0, 1]")
  if settings.max_steps <= 0:
    raise errors.ConfigError(f"config.label_randomization.max_steps="
                             f"{settings.max_steps!r}: expected a positive number")
  most = (config.synthetic.num_train if config.dataset == "synthetic_cxr"
          else float("inf"))  # a real split's size is known once it is built
  subset = settings.num_train
  if subset is not None and not config.train.batch_size <= subset <= most:
    raise errors.ConfigError(
        f"config.label_randomization.num_train={subset!r}: expected None, or a "
        "count between config.train.batch_size and the training split's size")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains both models, compares their maps for every method; see module doc."""
  images_np = common.evaluation_images(config, workdir=workdir)
  in_channels = images_np["image"].shape[-1]
  trained, training = common.trained_model(config, workdir, in_channels=in_channels)
  randomized, memorization = memorize(config, workdir, in_channels=in_channels)
  workdir_lib.record_inputs(workdir, {f"model/{TAG}": common.model_fingerprint(
      randomized, memorization["training"])})
  states = [runner.ModelState(name=name, explainee=saliency.from_model(model),
                              model=config.model, seed=config.seed, stage=stage)
            for stage, (name, model) in enumerate((("trained", trained),
                                                   (TAG, randomized)))]
  # Each model explains its own predicted class, with the same noise key;
  # the noise null alone draws a fresh key per model.
  outcome = runner.run_methods(
      config, workdir, experiment=EXPERIMENT, images_np=images_np, states=states,
      comparisons=[runner.Comparison(1, 0)],
      names=list(config.methods) + cascade.null_names(config),
      method_for=lambda name: _method_for(config, name),
      key_per_state=[f"{cascade.NULL_PREFIX}noise"])
  explained = {s.name: np.bincount(t, minlength=config.num_classes).tolist()
               for s, t in zip(states, outcome.targets)}
  summary = _summarize(config, workdir, outcome, training, memorization, explained,
                       len(images_np["id"]))
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  label_randomization_report.write(workdir, config, summary, outcome.examples,
                                   images_np)
  return summary


def _method_for(config: ml_collections.ConfigDict, name: str
                ) -> tuple[str, dict[str, Any]]:
  """(method, hyper-parameters) of a method or a null baseline (``null_<name>``:
  :data:`cascade.NULL_METHODS`, without hyper-parameters)."""
  if name.startswith(cascade.NULL_PREFIX):
    return cascade.NULL_METHODS[name[len(cascade.NULL_PREFIX):]], {}
  return name, common.method_hparams(config, name)


# ------------------------------------------------------------ memorizing ---

def randomized_config(config: ml_collections.ConfigDict,
                      steps: int) -> ml_collections.ConfigDict:
  """``config`` for the randomized-label model trained to ``steps`` in total."""
  settings = config.label_randomization
  out = ml_collections.ConfigDict(config_lib.resolve(config).to_dict())
  # Trained here from scratch, whatever weights the 'trained' model came from.
  out.update(model_weights=None, init_from=None)
  out.train.randomize_labels = True
  out.train.steps = int(steps)
  if settings.num_train is not None:
    # The first num_train training images: a set small enough to memorize on a CPU.
    out.train.num_train = settings.num_train
  if settings.augment is not None:
    out.train.augment = settings.augment
  return out


def training_labels(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """(true, permuted) training labels, the permuted ones exactly as train.py draws them."""
  # From the split's index: the labels without decoding a single image.
  split = data_lib.source(config, "train", num_examples=config.train.get("num_train"))
  labels = jnp.asarray(split.index().label, jnp.int32)
  return np.asarray(labels), np.asarray(train.randomized_labels(config, labels))


def memorize(config: ml_collections.ConfigDict, workdir: str, *,
             in_channels: int) -> tuple[nnx.Module, dict[str, Any]]:
  """Trains on permuted labels in rounds until memorized or out of steps.

  Round k trains to ``min(k * config.train.steps, max_steps)`` steps in
  total, resuming from the checkpoint of round k - 1 (``train`` resumes
  from the latest checkpoint of its directory). After each round the
  training summary's ``train.accuracy`` (accuracy on the permuted labels,
  eval mode, no augmentation) decides: stop at the target or at the budget.
  A rerun reads the rounds done so far from ``memorization.json`` and the
  training summary, and continues.

  Returns:
    (the randomized-label model in eval mode, the memorization record:
    ``reached``, ``steps``, ``train_accuracy``, ``rounds``, ``stopped``, ...).
  """
  settings = config.label_randomization
  # Where common.trained_model keeps the trained model (a study may share it).
  directory = os.path.join(config.get("models_dir") or os.path.join(workdir, "models"),
                           TAG)
  record_path = os.path.join(directory, MEMORIZATION)
  summary_path = os.path.join(directory, train.SUMMARY)
  rounds = (io_utils.read_json(record_path)["rounds"]
            if os.path.exists(record_path) else [])
  summary = io_utils.read_json(summary_path) if os.path.exists(summary_path) else None
  # A round whose training finished but whose record was not yet written.
  if summary and (not rounds or rounds[-1]["steps"] != summary["steps"]):
    rounds.append(_round(summary))
  while not _finished(summary, settings):
    done = summary["steps"] if summary else 0
    if not devices.is_writer():  # process 0 trains the rounds; wait for each
      summary = _next_round(summary_path, done)
      rounds.append(_round(summary))
      continue
    steps = min(done + config.train.steps, settings.max_steps)
    logging.info("%s: round %d, training to step %d (target train accuracy "
                 "%.3f, budget %d steps)", EXPERIMENT, len(rounds) + 1, steps,
                 settings.target_train_accuracy, settings.max_steps)
    summary = train.train_and_evaluate(randomized_config(config, steps), directory)
    rounds.append(_round(summary))
    io_utils.write_json(record_path, {"rounds": rounds})
  if devices.is_writer():
    io_utils.write_json(record_path, {"rounds": rounds})
  record = _record(config, summary, rounds)
  logging.info("%s: %s after %d steps (train accuracy %.3f on permuted labels)",
               EXPERIMENT, record["stopped"], record["steps"],
               record["train_accuracy"])
  model = train.restore_model(randomized_config(config, summary["steps"]),
                              directory, in_channels)
  return model, record


def _next_round(summary_path: str, done: int) -> dict[str, Any]:
  """Process i > 0: the training summary once process 0 has trained past ``done``."""
  while True:
    common.wait_for(summary_path, "process 0 to train the randomized-label model")
    summary = io_utils.read_json(summary_path)
    if summary["steps"] > done:
      return summary
    time.sleep(2.0)


def _finished(summary: dict[str, Any] | None, settings) -> bool:
  if summary is None:
    return False
  return (summary["train"]["accuracy"] >= settings.target_train_accuracy
          or summary["steps"] >= settings.max_steps)


def _round(summary: dict[str, Any]) -> dict[str, Any]:
  return {"steps": summary["steps"], "train_accuracy": summary["train"]["accuracy"],
          "test_auc": summary["test"]["auc"]}


def _record(config, summary, rounds) -> dict[str, Any]:
  settings = config.label_randomization
  reached = summary["train"]["accuracy"] >= settings.target_train_accuracy
  randomized = randomized_config(config, summary["steps"])
  true, permuted = training_labels(randomized)
  return {
      "reached": bool(reached),
      "stopped": "target reached" if reached else "step budget spent",
      "steps": summary["steps"],
      "train_accuracy": summary["train"]["accuracy"],
      "target_train_accuracy": settings.target_train_accuracy,
      "max_steps": settings.max_steps,
      "round_steps": config.train.steps,
      "rounds": rounds,
      "num_train": int(true.size),
      "augment": bool(randomized.train.augment),
      # What differs from the trained model besides the labels.
      "differences": _differences(config, randomized),
      # How many permuted labels happen to equal the true ones (chance level
      # for a balanced set: about one half).
      "label_agreement": float(np.mean(true == permuted)),
      "training": summary,
  }


def _differences(config, randomized) -> list[str]:
  out = []
  if randomized.train.num_train != config.train.num_train:
    out.append(f"trained on the first {randomized.train.num_train} training images")
  if randomized.train.augment != config.train.augment:
    out.append("trained with" + ("" if randomized.train.augment else "out")
               + " augmentation")
  return out


# ---------------------------------------------------------------- summary ---

def _summarize(config, workdir, outcome, training, memorization, explained,
               num_images) -> dict[str, Any]:
  seed = rng.integer_seed(config.seed, rng.STATS)
  rows = outcome.rows
  metrics = runner.similarity_names(config)

  def scores(method, metric):
    return (results.values(rows, method=method, metric=metric, stage=1),
            results.values(rows, method=method, stage=0,
                           metric=f"{metric}{runner.BASELINE_SUFFIX}"))

  return {
      **runner.summary_header(config, EXPERIMENT, outcome, num_images, workdir),
      "stages": [{"stage": 0, "model": "trained"}, {"stage": 1, "model": TAG}],
      "training": training,
      "memorization": memorization,
      "explained_classes": explained,
      "verdict_metric": config.verdict_metric,
      "verdicts": runner.verdicts(config, outcome, scores, expect="below",
                                  rule="mean", metrics=metrics),
      # The nulls' own verdicts, apart: independent noise is expected to
      # pass, which shows how little passing alone proves (Binder et al. 2023).
      "null_baselines": cascade.null_names(config),
      "null_verdicts": runner.verdicts(config, outcome, scores, expect="below",
                                       rule="mean", names=cascade.null_names(config),
                                       metrics=metrics),
      "localization_difference": {
          metric: localization_difference(
              {m: results.values(rows, method=m, metric=metric, stage=0)
               for m in config.methods},
              {m: results.values(rows, method=m, metric=metric, stage=1)
               for m in config.methods},
              seed=seed, num_resamples=config.bootstrap_resamples)
          for metric in config.localization},
      "alpha": ALPHA,
      "aggregates": runner.aggregates(config, rows),
  }


def localization_difference(trained: dict[str, np.ndarray],
                            randomized: dict[str, np.ndarray], *, seed: int,
                            num_resamples: int) -> dict[str, dict[str, Any]]:
  """Per method: trained minus randomized-label localization, paired per image.

  The mean difference with a 95% bootstrap interval over images (pairs with
  a NaN dropped), a two-sided paired Wilcoxon test and its Holm adjustment
  over the methods.

  Returns:
    method -> ``difference`` (mean, low, high), ``n``, ``statistic``, ``p``,
    ``p_holm``.
  """
  out = {}
  for method in trained:
    difference = trained[method] - randomized[method]
    statistic, p = stats.paired_wilcoxon(trained[method], randomized[method])
    out[method] = {"difference": stats.bootstrap_ci(difference, seed=seed,
                                                    num_resamples=num_resamples),
                   "n": int(np.sum(~np.isnan(difference))),
                   "statistic": statistic, "p": p}
  adjusted = stats.holm(np.array([v["p"] for v in out.values()], np.float64))
  for value, p_holm in zip(out.values(), adjusted):
    value["p_holm"] = float(p_holm)
  return out
