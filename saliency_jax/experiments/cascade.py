"""Cascading (or independent) model-weight randomization test.

Adebayo et al. (NeurIPS 2018) and Arun et al. (Radiology: AI 2021): re-initialize
the model's blocks top-down, one more per stage, and compare each stage's
maps with the trained model's maps (similarity) and with the boxes
(localization). A method whose maps survive randomization explains the image,
not the model. It passes when its similarity to the original maps at full
randomization falls below the similarity between maps of two different images
from the trained model.

Every stage uses the same targets (the trained model's predicted classes) and
the same noise key, so stage-to-stage changes come from the weights alone.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from saliency_jax import data as data_lib
from saliency_jax import io_utils
from saliency_jax import randomization
from saliency_jax import saliency
from saliency_jax import train
from saliency_jax.experiments import common
from saliency_jax.metrics import stats
from saliency_jax.report import cascade_report

EXPERIMENT = "cascade"


def _stage_states(config, model, in_channels: int
                  ) -> tuple[saliency.Explainee, Any, list[list[str]]]:
  """The trained explainee and every stage's state, stacked."""
  explainee = saliency.from_model(model)
  fresh_config = ml_collections.ConfigDict(config.to_dict())
  fresh_config.seed = common.seed_for(config, common.FRESH_KEY)
  fresh = train.create_model(fresh_config, in_channels=in_channels)
  fresh.eval()
  order = tuple(model.cascade_order)
  if config.cascade.num_blocks is not None:
    order = order[:config.cascade.num_blocks]
  fresh_state = randomization.reinitialized(model, fresh,
                                            batch_stats=config.cascade.batch_stats)
  stacked, blocks = randomization.stages(explainee.state, fresh_state, order,
                                         mode=config.cascade.mode)
  return explainee, stacked, blocks


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the test for every method in ``config.methods``; see module doc."""
  images_np = common.evaluation_images(config, workdir=workdir)
  in_channels = images_np["image"].shape[-1]
  model, training = common.trained_model(config, workdir, in_channels=in_channels)
  explainee, stacked, blocks = _stage_states(config, model, in_channels)
  images = jnp.asarray(images_np["image"])
  masks = jnp.asarray(images_np["mask"])
  ids = [str(i) for i in images_np["id"]]
  targets = (jnp.asarray(images_np["label"]) if config.targets == "true"
             else common.predicted_classes(explainee, images))
  key = jax.random.fold_in(jax.random.key(config.seed), common.SALIENCY_KEY)
  num_stages = len(blocks)
  progress = common.Progress(EXPERIMENT, len(config.methods) * num_stages * len(ids))
  examples: dict[str, np.ndarray] = {}
  maps_dir = os.path.join(workdir, "maps")
  for m, method in enumerate(config.methods):
    if common.has_part(workdir, f"{EXPERIMENT}-{method}"):
      progress.update(num_stages * len(ids), f"{method} done earlier, skipped")
      examples[method] = np.load(os.path.join(maps_dir, f"{method}.npy"))
      continue
    per_image = common.segments_for(method, images_np["image"])
    maps = []
    for s in range(num_stages):
      stage_explainee = explainee.with_state(randomization.unstack(stacked, s))
      maps.append(common.saliency_maps(
          stage_explainee, images, targets, method, config,
          key=jax.random.fold_in(key, m), per_image=per_image))
      progress.update(len(ids), f"{method} stage {s}/{num_stages - 1}")
    maps = jnp.stack(maps)  # (S, N, H, W)
    part = _score_method(config, method, maps, masks, ids)
    os.makedirs(maps_dir, exist_ok=True)
    examples[method] = np.asarray(maps[:, :config.report.example_images])
    np.save(os.path.join(maps_dir, f"{method}.npy"), examples[method])
    common.write_part(workdir, f"{EXPERIMENT}-{method}", part)

  all_rows = common.write_results(
      workdir, [f"{EXPERIMENT}-{method}" for method in config.methods])
  summary = _summarize(config, all_rows, blocks, training, len(ids))
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  cascade_report.write(workdir, config, summary, examples, images_np)
  return summary


def _score_method(config, method: str, maps: jax.Array, masks: jax.Array,
                  ids: list[str]) -> list[dict[str, Any]]:
  """Rows: similarity to stage 0 and localization per stage; the baseline."""
  part = []
  original = jnp.broadcast_to(maps[0], maps.shape)
  similar = common.similarity_scores(maps, original, config.similarity)
  located = common.localization_scores(maps, masks, config.localization)
  for s in range(maps.shape[0]):
    scores = {k: v[s] for k, v in {**similar, **located}.items()}
    part += common.rows(config, experiment=EXPERIMENT, stage=s, method=method,
                        image_ids=ids, scores=scores)
  # Baseline: maps of two different images of the trained model, averaged
  # per first image so that it fits the long format (one value per image).
  pairs_per_image = min(config.baseline_pairs, len(ids) - 1)
  baseline = common.different_image_similarity(
      maps[0], config.similarity, pairs_per_image=config.baseline_pairs,
      seed=common.seed_for(config, common.STATS_KEY))
  per_image = {f"{k}_different_images":
               v.reshape(len(ids), pairs_per_image).mean(axis=1)
               for k, v in baseline.items()}
  part += common.rows(config, experiment=EXPERIMENT, stage=0, method=method,
                      image_ids=ids, scores=per_image)
  return part


def _summarize(config, all_rows, blocks, training, num_images) -> dict[str, Any]:
  seed = common.seed_for(config, common.STATS_KEY)
  last = len(blocks) - 1
  verdicts = {}
  # Only the full cascade ends in a fully randomized model; an independent
  # stage re-initializes one block, where "passing" would mean nothing.
  for method in config.methods if config.cascade.mode == "cascade" else ():
    verdicts[method] = {}
    for metric in config.similarity:
      final = [r["value"] for r in all_rows if r["method"] == method
               and r["stage"] == last and r["metric"] == metric]
      baseline = [r["value"] for r in all_rows if r["method"] == method
                  and r["metric"] == f"{metric}_different_images"]
      verdicts[method][metric] = stats.randomization_verdict(
          np.asarray(final), np.asarray(baseline), seed=seed,
          num_resamples=config.bootstrap_resamples)
  return {
      "experiment": EXPERIMENT, "mode": config.cascade.mode,
      "num_blocks": config.cascade.num_blocks,
      "batch_stats": config.cascade.batch_stats,
      "model": config.model, "width": config.width, "dataset": config.dataset,
      "data": data_lib.provenance(config),
      "image_size": config.image_size, "seed": config.seed,
      "targets": config.targets, "num_images": num_images,
      "num_images_requested": config.num_images, "preset": config.preset,
      "methods": list(config.methods), "similarity": list(config.similarity),
      "localization": list(config.localization),
      "stages": [{"stage": s, "randomized_blocks": b} for s, b in enumerate(blocks)],
      "training": training,
      "verdict_metric": config.verdict_metric,
      "verdicts": verdicts,
      "aggregates": common.aggregate(all_rows, seed=seed,
                                     num_resamples=config.bootstrap_resamples),
  }
