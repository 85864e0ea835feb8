"""Results: the row schema, verified parts, ``results.csv``, selection, aggregates.

A result is a long-format row (DESIGN.md): ``experiment, dataset, model,
seed, stage, method, image_id, metric, value``. Each finished unit of work (a
method's maps of every model state, scored) is one *part*,
``parts/<name>.csv``, written atomically with a manifest
``parts/<name>.json``: the row count, the SHA-256 of the CSV's bytes, the
fingerprint of the inputs it was computed from and what was counted on the
way (non-finite logits and maps). A rerun trusts a part only when its
manifest verifies; otherwise it says why and the part is computed again.
``results.csv`` is assembled from the parts.

In Python, :func:`load` reads a workdir back as pandas DataFrames.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from absl import logging

from saliency_jax import io_utils
from saliency_jax.metrics import stats

FIELDS = ("experiment", "dataset", "model", "seed", "stage", "method",
          "image_id", "metric", "value")
Row = dict[str, Any]


def rows(*, experiment: str, dataset: str, model: str, seed: int, stage: int,
         method: str, image_ids: Sequence[str],
         scores: dict[str, np.ndarray]) -> list[Row]:
  """One row per (metric, image) of ``scores`` (metric -> (N,) values)."""
  out = []
  for metric, values in scores.items():
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size != len(image_ids):
      raise ValueError(f"{metric}: {values.size} values for {len(image_ids)} images")
    out += [dict(experiment=experiment, dataset=dataset, model=model, seed=int(seed),
                 stage=int(stage), method=method, image_id=image_id, metric=metric,
                 value=float(value)) for image_id, value in zip(image_ids, values)]
  return out


def csv_text(part_rows: Iterable[Row]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
  writer.writeheader()
  writer.writerows(part_rows)
  return buffer.getvalue()


def parse_rows(text: str) -> list[Row]:
  return [dict(r, stage=int(r["stage"]), seed=int(r["seed"]), value=float(r["value"]))
          for r in csv.DictReader(io.StringIO(text))]


def read_rows(path: str) -> list[Row]:
  with open(path, newline="") as f:
    return parse_rows(f.read())


# ------------------------------------------------------------------ parts ---

def part_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, "parts", f"{name}.csv")


def manifest_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, "parts", f"{name}.json")


def write_part(workdir: str, name: str, part_rows: list[Row], *, fingerprint: str,
               **record: Any) -> None:
  """``parts/<name>.csv`` then its manifest (the manifest last: it commits the part)."""
  data = csv_text(part_rows).encode()
  io_utils.write_bytes(part_path(workdir, name), data)
  io_utils.write_json(manifest_path(workdir, name), {
      "rows": len(part_rows), "sha256": io_utils.sha256_bytes(data),
      "fingerprint": fingerprint, **record})


def verified_part(workdir: str, name: str, fingerprint: str
                  ) -> tuple[list[Row], dict[str, Any]] | None:
  """(rows, manifest) of part ``name`` if it verifies; else None, saying why.

  A part verifies when its manifest exists, names ``fingerprint`` (the same
  inputs), and the CSV has the manifest's SHA-256 and row count.
  """
  path = part_path(workdir, name)
  if not os.path.exists(path) and not os.path.exists(manifest_path(workdir, name)):
    return None
  problem = None
  try:
    manifest = io_utils.read_json(manifest_path(workdir, name))
    with open(path, "rb") as f:
      data = f.read()
    if manifest.get("fingerprint") != fingerprint:
      problem = "computed from other inputs"
    elif io_utils.sha256_bytes(data) != manifest.get("sha256"):
      problem = "its bytes do not match the manifest's SHA-256 (damaged or edited)"
    else:
      part_rows = parse_rows(data.decode())
      if len(part_rows) != manifest.get("rows"):
        problem = f"{len(part_rows)} rows, the manifest says {manifest.get('rows')}"
  except FileNotFoundError as e:
    problem = f"{os.path.basename(e.filename)} is missing"
  except (ValueError, KeyError, UnicodeDecodeError) as e:
    problem = f"unreadable ({e})"
  if problem:
    logging.warning("part %s: %s; computing it again", path, problem)
    return None
  return part_rows, manifest


def write_results(workdir: str, part_rows: Iterable[list[Row]]) -> list[Row]:
  """``results.csv`` from the parts' rows, in order; returns all rows."""
  all_rows = [r for part in part_rows for r in part]
  io_utils.write_text(os.path.join(workdir, "results.csv"), csv_text(all_rows))
  return all_rows


def results_problem(workdir: str) -> str | None:
  """Why ``workdir/results.csv`` cannot be trusted as read, or None.

  Read from outside the run that wrote it (a sweep's status, its aggregate):
  every part's CSV must have its manifest's SHA-256 and row count, and
  ``results.csv`` must hold exactly the parts' rows (as multisets of lines).
  The inputs' fingerprint is checked by the run itself (:func:`verified_part`).
  """
  path = os.path.join(workdir, "results.csv")
  if not os.path.exists(path):
    return "no results.csv"
  parts_dir = os.path.join(workdir, "parts")
  names = sorted(n[:-len(".json")] for n in (os.listdir(parts_dir)
                                             if os.path.isdir(parts_dir) else ())
                 if n.endswith(".json"))
  expected: collections.Counter = collections.Counter()
  for name in names:
    try:
      manifest = io_utils.read_json(manifest_path(workdir, name))
      with open(part_path(workdir, name), "rb") as f:
        data = f.read()
    except (OSError, ValueError) as e:
      return f"part {name}: unreadable ({e})"
    lines = data.decode(errors="replace").splitlines()[1:]
    if (io_utils.sha256_bytes(data) != manifest.get("sha256")
        or len(lines) != manifest.get("rows")):
      return f"part {name} does not match its manifest (damaged or edited)"
    expected.update(lines)
  with open(path, "rb") as f:
    found = collections.Counter(f.read().decode(errors="replace").splitlines()[1:])
  if found != expected:
    return (f"results.csv does not hold the rows of its {len(names)} verified parts "
            "(cut, edited or from another run)")
  return None


# -------------------------------------------------------------- selection ---

def select(all_rows: Iterable[Row], **where: Any) -> list[Row]:
  """The rows whose columns equal every ``where`` value (e.g. method=, metric=, stage=)."""
  for key in where:
    if key not in FIELDS:
      raise ValueError(f"select: unknown column {key!r}; columns are {FIELDS}")
  return [r for r in all_rows if all(r[k] == v for k, v in where.items())]


def values(all_rows: Iterable[Row], ids: Sequence[str] | None = None,
           **where: Any) -> np.ndarray:
  """The selected rows' values; with ``ids``, one per image in that order (NaN if absent)."""
  chosen = select(all_rows, **where)
  if ids is None:
    return np.asarray([r["value"] for r in chosen], np.float64)
  found = {r["image_id"]: r["value"] for r in chosen}
  return np.asarray([found.get(i, np.nan) for i in ids], np.float64)


def aggregate(all_rows: Sequence[Row], *, seed: int,
              num_resamples: int = 1000) -> list[dict[str, Any]]:
  """Mean and 95% bootstrap interval per (experiment, model, seed, stage, method, metric).

  Non-finite values (undefined or INVALID scores) are left out of the mean
  and counted in ``excluded``.
  """
  groups: dict[tuple, list[float]] = {}
  for r in all_rows:
    key = (r["experiment"], r["model"], r["seed"], r["stage"], r["method"], r["metric"])
    groups.setdefault(key, []).append(r["value"])
  out = []
  for (experiment, model, seed_, stage, method, metric), group in sorted(groups.items()):
    mean, low, high = stats.bootstrap_ci(np.asarray(group), seed=seed,
                                         num_resamples=num_resamples)
    excluded = stats.count_excluded(group)
    out.append(dict(experiment=experiment, model=model, seed=seed_, stage=stage,
                    method=method, metric=metric, mean=mean, low=low, high=high,
                    n=len(group) - excluded, excluded=excluded))
  return out


# ---------------------------------------------------------------- loading ---

def load(workdir: str) -> dict[str, Any]:
  """A finished workdir as pandas DataFrames: ``results``, ``images``, ``aggregates``.

  ``images`` (``images.csv``: label, mask fraction, DICOM header fields)
  joins ``results`` on ``image_id``; ``aggregates`` are the summary's means
  and intervals. Needs pandas (``pip install 'saliency-jax[pandas]'``).
  """
  try:
    import pandas as pd  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("results.load needs pandas: pip install "
                      "'saliency-jax[pandas]'") from e
  path = os.path.join(workdir, "results.csv")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no results.csv (is {workdir!r} a finished "
                            "experiment's workdir?)")
  out = {"results": pd.read_csv(path, dtype={"image_id": str})}
  images = os.path.join(workdir, "images.csv")
  out["images"] = (pd.read_csv(images, dtype={"image_id": str})
                   if os.path.exists(images) else None)
  summary = os.path.join(workdir, "summary.json")
  aggregates = (io_utils.read_json(summary).get("aggregates")
                if os.path.exists(summary) else None)
  out["aggregates"] = pd.DataFrame(aggregates) if aggregates else None
  return out


def fingerprint_of(*parts: Any) -> str:
  """SHA-256 of the JSON of ``parts`` (sorted keys): what a result depends on."""
  return io_utils.sha256_bytes(json.dumps(parts, sort_keys=True, default=str).encode())
