"""The figures every report adds: training curves, per-image score distributions
and example maps.

The reports get an experiment's summary; these figures need what lies beside
it: each model's ``metrics.jsonl`` (its training directory), the
per-image rows of ``results.csv`` and the example maps beside the parts. Each function returns the report's
``[(caption, relative path)]`` of what it wrote, empty when the inputs are
not there (weights evaluated as given have no training curve; a report
written from a summary alone has no rows).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from saliency_jax import io_utils
from saliency_jax import results
from saliency_jax.report import figures
from saliency_jax.report import markdown

FIGURES_DIR = "figures"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"  # a training run's (train.SUMMARY)
# What identifies a training run when its summary is not byte-equal.
_RUN_KEYS = ("model", "width", "seed", "steps", "randomize_labels")


# ---------------------------------------------------------------- sources ---

def result_rows(workdir: str) -> list[dict[str, Any]]:
  """The rows of ``workdir/results.csv``; none when there is no such file."""
  path = os.path.join(workdir, "results.csv")
  return results.read_rows(path) if os.path.exists(path) else []


def training_directories(config: Any, workdir: str) -> list[str]:
  """Where the models of a run may have been trained, in the order looked.

  ``config.trained_dir``, every folder of ``config.models_dir`` (default
  ``workdir/models``) and of ``config.replicates_dir``'s models.
  """
  candidates = [markdown.get(config, "trained_dir")]
  roots = [markdown.get(config, "models_dir") or os.path.join(workdir, "models")]
  replicates = markdown.get(config, "replicates_dir")
  if replicates:
    theirs = os.path.join(replicates, "config.json")
    roots.append((io_utils.read_json(theirs).get("models_dir") if os.path.exists(theirs)
                  else None) or os.path.join(replicates, "models"))
  for root in roots:
    if os.path.isdir(root):
      candidates += [os.path.join(root, name) for name in sorted(os.listdir(root))]
  return [c for c in dict.fromkeys(candidates)
          if c and os.path.exists(os.path.join(c, METRICS))]


def training_records(config: Any, workdir: str,
                     trainings: Mapping[str, Mapping[str, Any] | None]
                     ) -> dict[str, list[dict[str, Any]]]:
  """label -> the ``metrics.jsonl`` records of the run whose summary is that
  label's training summary (the one the experiment recorded).

  A run matches when its ``summary.json`` says the same (same JSON), else
  when it names the same model, width, seed, steps and label mode. Labels
  without a run (weights evaluated as given, a run elsewhere) are left out.
  """
  runs = []
  for directory in training_directories(config, workdir):
    path = os.path.join(directory, SUMMARY)
    if os.path.exists(path):
      runs.append((directory, io_utils.read_json(path)))
  out = {}
  for label, training in trainings.items():
    if not training:
      continue
    text = _canonical(training)
    found = (next((d for d, s in runs if _canonical(s) == text), None)
             or next((d for d, s in runs if _run_key(s) == _run_key(training)), None))
    if found is not None:
      records = io_utils.read_jsonl(os.path.join(found, METRICS))
      if records:
        out[label] = records
  return out


def _canonical(summary: Mapping[str, Any]) -> str:
  return json.dumps(summary, sort_keys=True, default=str)


def _run_key(summary: Mapping[str, Any]) -> tuple[Any, ...]:
  return tuple(summary.get(k) for k in _RUN_KEYS)


# ---------------------------------------------------------------- figures ---

def training_curves(workdir: str, config: Any,
                    trainings: Mapping[str, Mapping[str, Any] | None],
                    name: str, title: str) -> list[tuple[str, str]]:
  """``figures/<name>_training_curves.png`` of the models of ``trainings``
  (label -> training summary), all on one figure."""
  records = training_records(config, workdir, trainings)
  if not records:
    return []
  relative = f"{FIGURES_DIR}/{markdown.safe(name)}_training_curves.png"
  figures.training_curves(os.path.join(workdir, relative), records, title)
  models = ", ".join(label for label in records if label)
  return [(f"Training curves ({models})" if models else "Training curves", relative)]


def score_distributions(workdir: str, rows: Sequence[Mapping[str, Any]], *,
                        name: str, caption: str, **options: Any
                        ) -> list[tuple[str, str]]:
  """``figures/<name>_distributions.png`` (:func:`figures.score_distributions`
  with ``options``); nothing when no row has a finite value."""
  if not rows:
    return []
  relative = f"{FIGURES_DIR}/{markdown.safe(name)}_distributions.png"
  drawn = figures.score_distributions(os.path.join(workdir, relative), rows,
                                      **options)
  return [(caption, relative)] if drawn else []


def example_maps(workdir: str, name: str, examples: Mapping[str, Any],
                 images_np: Mapping[str, Any], shown: Sequence[str], *,
                 controls: Sequence[str] = (), title: str = "") -> list[tuple[str, str]]:
  """``figures/<name>_maps_<image>.png``: one :func:`figures.map_grid` per
  example image, the image with its boxes (or mask), then the map of every
  name of ``shown`` that ``examples`` holds, boxes outlined in cyan.

  Args:
    examples: map name -> (E, H, W) maps in [0, 1] of the first E images.
    images_np: the evaluation images (``image``, ``boxes``, ``num_boxes``,
      ``id``, optionally ``mask``).
    shown: map names in column order (methods, then controls).
    controls: names labelled ``(control)``.
    title: the figures' title, before ``: maps and controls of image ID``.
  """
  shown = [n for n in shown if n in examples]
  if not shown:
    return []
  count = min(min(len(examples[n]) for n in shown), len(images_np["image"]))
  names = markdown.image_names(images_np, count)
  labels = [f"{n} (control)" if n in controls else n for n in shown]
  out = []
  for e in range(count):
    maps = np.stack([np.asarray(examples[n])[e] for n in shown])[None]  # (1, K, H, W)
    relative = f"{FIGURES_DIR}/{markdown.safe(name)}_maps_{names[e]}.png"
    figures.map_grid(
        os.path.join(workdir, relative), images_np["image"][e], images_np["boxes"][e],
        int(images_np["num_boxes"][e]), maps, [names[e]], labels,
        f"{title}: maps and controls of image {names[e]} (boxes in cyan)",
        boxes_on_maps=True, mask=figures.mask_at(images_np, e))
    out.append((f"Maps and controls of image {names[e]}", relative))
  return out
