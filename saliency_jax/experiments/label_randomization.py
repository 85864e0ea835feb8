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
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import data as data_lib
from saliency_jax import io_utils
from saliency_jax import saliency
from saliency_jax import train
from saliency_jax.experiments import common
from saliency_jax.metrics import stats
from saliency_jax.report import label_randomization_report

EXPERIMENT = "label_randomization"
TAG = "randomized_labels"
MEMORIZATION = "memorization.json"
ALPHA = 0.05


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains both models, compares their maps for every method; see module doc."""
  images_np = common.evaluation_images(config, workdir=workdir)
  in_channels = images_np["image"].shape[-1]
  trained, training = common.trained_model(config, workdir, in_channels=in_channels)
  randomized, memorization = memorize(config, workdir, in_channels=in_channels)
  explainees = [saliency.from_model(trained), saliency.from_model(randomized)]
  images = jnp.asarray(images_np["image"])
  masks = jnp.asarray(images_np["mask"])
  ids = [str(i) for i in images_np["id"]]
  targets = [jnp.asarray(images_np["label"]) if config.targets == "true"
             else common.predicted_classes(e, images) for e in explainees]
  key = jax.random.fold_in(jax.random.key(config.seed), common.SALIENCY_KEY)
  progress = common.Progress(EXPERIMENT, 2 * len(config.methods) * len(ids))
  maps_dir = os.path.join(workdir, "maps")
  examples: dict[str, np.ndarray] = {}
  for m, method in enumerate(config.methods):
    path = os.path.join(maps_dir, f"{method}.npy")
    if common.has_part(workdir, f"{EXPERIMENT}-{method}"):
      progress.update(2 * len(ids), f"{method} done earlier, skipped")
      examples[method] = np.load(path)
      continue
    per_image = common.segments_for(method, images_np["image"])
    maps = []
    for explainee, target, name in zip(explainees, targets, ("trained", TAG)):
      # The same key for both models: differences come from the models alone.
      maps.append(common.saliency_maps(explainee, images, target, method, config,
                                       key=jax.random.fold_in(key, m),
                                       per_image=per_image))
      progress.update(len(ids), f"{method} {name}")
    maps = jnp.stack(maps)  # (2, N, H, W)
    part = _score_method(config, method, maps, masks, ids)
    examples[method] = np.asarray(maps[:, :config.report.example_images])
    os.makedirs(maps_dir, exist_ok=True)
    np.save(path, examples[method])
    common.write_part(workdir, f"{EXPERIMENT}-{method}", part)

  all_rows = common.write_results(
      workdir, [f"{EXPERIMENT}-{method}" for method in config.methods])
  explained = {name: np.bincount(np.asarray(t), minlength=config.num_classes).tolist()
               for name, t in zip(("trained", TAG), targets)}
  summary = _summarize(config, all_rows, training, memorization, explained, ids)
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  label_randomization_report.write(workdir, config, summary, examples, images_np)
  return summary


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
  labels = jnp.asarray(train.training_split(config)["label"], jnp.int32)
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
    steps = min(done + config.train.steps, settings.max_steps)
    logging.info("%s: round %d, training to step %d (target train accuracy "
                 "%.3f, budget %d steps)", EXPERIMENT, len(rounds) + 1, steps,
                 settings.target_train_accuracy, settings.max_steps)
    summary = train.train_and_evaluate(randomized_config(config, steps), directory)
    rounds.append(_round(summary))
    io_utils.write_json(record_path, {"rounds": rounds})
  io_utils.write_json(record_path, {"rounds": rounds})
  record = _record(config, summary, rounds)
  logging.info("%s: %s after %d steps (train accuracy %.3f on permuted labels)",
               EXPERIMENT, record["stopped"], record["steps"],
               record["train_accuracy"])
  model = train.restore_model(randomized_config(config, summary["steps"]),
                              directory, in_channels)
  return model, record


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


# ---------------------------------------------------------------- scoring ---

def _score_method(config, method: str, maps: jax.Array, masks: jax.Array,
                  ids: list[str]) -> list[dict[str, Any]]:
  """Rows: localization of both models, their similarity, the baseline."""
  part = []
  located = common.localization_scores(maps, masks, config.localization)
  for s in range(2):
    part += common.rows(config, experiment=EXPERIMENT, stage=s, method=method,
                        image_ids=ids, scores={k: v[s] for k, v in located.items()})
  similar = common.similarity_scores(maps[1], maps[0], config.similarity)
  part += common.rows(config, experiment=EXPERIMENT, stage=1, method=method,
                      image_ids=ids, scores=similar)
  # The cascade's baseline: maps of two different images of the trained
  # model, averaged per first image to fit the long format.
  pairs_per_image = min(config.baseline_pairs, len(ids) - 1)
  baseline = common.different_image_similarity(
      maps[0], config.similarity, pairs_per_image=config.baseline_pairs,
      seed=common.seed_for(config, common.STATS_KEY))
  part += common.rows(config, experiment=EXPERIMENT, stage=0, method=method,
                      image_ids=ids, scores={
                          f"{k}_different_images":
                          v.reshape(len(ids), pairs_per_image).mean(axis=1)
                          for k, v in baseline.items()})
  return part


def _values(all_rows, method: str, metric: str, stage: int) -> np.ndarray:
  return np.asarray([r["value"] for r in all_rows if r["method"] == method
                     and r["metric"] == metric and r["stage"] == stage])


def _summarize(config, all_rows, training, memorization, explained, ids
               ) -> dict[str, Any]:
  seed = common.seed_for(config, common.STATS_KEY)
  resamples = config.bootstrap_resamples
  verdicts = {method: {metric: stats.randomization_verdict(
      _values(all_rows, method, metric, 1),
      _values(all_rows, method, f"{metric}_different_images", 0),
      seed=seed, num_resamples=resamples) for metric in config.similarity}
              for method in config.methods}
  return {
      "experiment": EXPERIMENT,
      "model": config.model, "width": config.width, "dataset": config.dataset,
      "data": data_lib.provenance(config),
      "image_size": config.image_size, "seed": config.seed,
      "targets": config.targets, "num_images": len(ids),
      "num_images_requested": config.num_images, "preset": config.preset,
      "methods": list(config.methods), "similarity": list(config.similarity),
      "localization": list(config.localization),
      "stages": [{"stage": 0, "model": "trained"}, {"stage": 1, "model": TAG}],
      "training": training,
      "memorization": memorization,
      "explained_classes": explained,
      "verdict_metric": config.verdict_metric,
      "verdicts": verdicts,
      "localization_difference": {
          metric: localization_difference(
              {m: _values(all_rows, m, metric, 0) for m in config.methods},
              {m: _values(all_rows, m, metric, 1) for m in config.methods},
              seed=seed, num_resamples=resamples)
          for metric in config.localization},
      "alpha": ALPHA,
      "aggregates": common.aggregate(all_rows, seed=seed, num_resamples=resamples),
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
