"""Training curves and per-image score distributions: figures, sources, reports."""

from __future__ import annotations

import json
import math
import os
import re

import matplotlib.image as mpimg
import ml_collections
import numpy as np
import pytest

from saliency_jax import io_utils
from saliency_jax import results
from saliency_jax.report import agreement_report
from saliency_jax.report import cascade_report
from saliency_jax.report import figures
from saliency_jax.report import run_figures

METHODS = ("gradient", "xrai")
IDS = ("a", "b", "c", "d")


@pytest.fixture
def drawn(monkeypatch):
  """The figures saved, by path (the real PNG is written too)."""
  saved, real = {}, figures.save

  def capture(fig, path):
    saved[path] = fig
    real(fig, path)

  monkeypatch.setattr(figures, "save", capture)
  return saved


def _png(path) -> np.ndarray:
  assert os.path.getsize(path) > 0
  pixels = mpimg.imread(path)
  assert pixels.ndim == 3 and pixels[..., :3].std() > 0.01
  return pixels


def _records(steps, loss=None, auc_every=2):
  out = []
  for i, step in enumerate(steps):
    r = {"step": step, "train_loss": 1.0 / (i + 1) if loss is None else loss[i],
         "train_accuracy": 0.5 + 0.04 * i}
    if i % auc_every == auc_every - 1:
      r["val_auc"] = 0.6 + 0.03 * i
    out.append(r)
  return out


def _lines(ax):
  return [line for line in ax.get_lines() if line.get_xdata().size]


# --------------------------------------------------------------- figures ---

def test_training_curves_one_line_per_model_per_panel(tmp_path, drawn):
  path = str(tmp_path / "curves.png")
  figures.training_curves(path, {"seed0": _records(range(10, 110, 10)),
                                 "seed1": _records(range(10, 110, 10))})
  _png(path)
  axes = [ax for ax in drawn[path].axes if ax.get_visible()]
  assert [ax.get_title() for ax in axes] == ["training loss", "training accuracy",
                                             "validation AUC"]
  assert [len(_lines(ax)) for ax in axes] == [2, 2, 2]
  # Validation AUC only where it was evaluated: every second record.
  np.testing.assert_array_equal(_lines(axes[2])[0].get_xdata(), range(20, 110, 20))
  # One color per model across the panels.
  assert len({_lines(ax)[1].get_color() for ax in axes}) == 1


def test_training_curves_survive_nan_and_a_single_record(tmp_path, drawn):
  path = str(tmp_path / "curves.png")
  diverged = _records([10, 20, 30], loss=[0.7, math.nan, math.inf])
  figures.training_curves(path, {"diverged": diverged,
                                 "single": [{"step": 5, "train_loss": 0.3}]})
  _png(path)
  loss, accuracy, auc = [ax for ax in drawn[path].axes if ax.get_visible()]
  # The non-finite losses are left out; the single record is one point.
  assert [line.get_xdata().tolist() for line in _lines(loss)] == [[10.0], [5.0]]
  assert [line.get_marker() for line in _lines(loss)] == ["o", "o"]
  assert len(_lines(accuracy)) == 1 and len(_lines(auc)) == 1
  # No validation AUC at all: the panel says so instead of staying blank.
  path = str(tmp_path / "no_auc.png")
  figures.training_curves(path, [{"step": 1, "train_loss": 0.5}])
  _png(path)
  texts = [t.get_text() for t in drawn[path].axes[2].texts]
  assert texts == ["no finite values"]


def _score_rows():
  rows = []
  rng = np.random.default_rng(0)
  for method in METHODS:
    for stage in (0, 1):
      for metric in ("auprc", "dice", "iou"):
        values = rng.random(len(IDS))
        if metric == "iou":
          values[:] = math.nan  # undefined for every image: no panel
        if (method, stage, metric) == ("xrai", 1, "dice"):
          values[0] = math.nan  # one image not scored
        rows += results.rows(experiment="cascade", dataset="d", model="m", seed=0,
                             stage=stage, method=method, image_ids=IDS,
                             scores={metric: values})
  return rows


def test_score_distributions_panels_boxes_and_dots(tmp_path, drawn):
  path = str(tmp_path / "dist.png")
  count = figures.score_distributions(
      path, _score_rows(), metrics=("auprc", "dice", "iou"), methods=METHODS,
      groups={"trained": {"stage": 0}, "randomized": {"stage": 1}}, title="t")
  assert count == 2
  _png(path)
  axes = [ax for ax in drawn[path].axes if ax.get_visible()]
  assert [ax.get_title() for ax in axes] == ["auprc", "dice"]
  for ax in axes:
    assert len(ax.patches) == len(METHODS) * 2  # a box per method and group
    assert [t.get_text() for t in ax.get_xticklabels()] == list(METHODS)
  # One dot per finite value: xrai's randomized dice lost an image.
  dots = [c.get_offsets().shape[0] for c in axes[1].collections]
  assert dots == [4, 4, 4, 3]
  legend = drawn[path].legends[0]
  assert [t.get_text() for t in legend.get_texts()] == ["trained", "randomized"]


def test_score_distributions_metric_templates_and_pooled_groups(tmp_path, drawn):
  rows = []
  for metric, value in (("spearman_vs_seed1", 0.9), ("spearman_vs_seed2", 0.8),
                        ("spearman_different_images", 0.1)):
    rows += results.rows(experiment="r", dataset="d", model="m", seed=0, stage=0,
                         method="gradient", image_ids=IDS,
                         scores={metric: np.full(len(IDS), value)})
  path = str(tmp_path / "dist.png")
  assert figures.score_distributions(
      path, rows, metrics=["spearman"], methods=["gradient"], title="t",
      groups={"replicates": [{"metric": "{metric}_vs_seed1"},
                             {"metric": "{metric}_vs_seed2"}],
              "baseline": {"metric": "{metric}_different_images"}}) == 1
  [ax] = [ax for ax in drawn[path].axes if ax.get_visible()]
  pooled, baseline = (np.asarray(c.get_offsets())[:, 1].tolist() for c in ax.collections)
  assert sorted(pooled) == pytest.approx([0.8] * 4 + [0.9] * 4)
  assert baseline == pytest.approx([0.1] * 4)


def test_score_distributions_without_finite_values_writes_nothing(tmp_path):
  path = str(tmp_path / "dist.png")
  rows = [r for r in _score_rows() if r["metric"] == "iou"]
  assert figures.score_distributions(path, rows, metrics=["iou"], methods=METHODS,
                                     title="t") == 0
  assert not os.path.exists(path)


# --------------------------------------------------------------- sources ---

def _training_run(directory, summary, records):
  os.makedirs(directory, exist_ok=True)
  io_utils.write_json(os.path.join(directory, "summary.json"), summary)
  io_utils.write_text(os.path.join(directory, "metrics.jsonl"),
                      "".join(io_utils.json_line(r) for r in records))


def _training(seed, **extra):
  return {"model": "small_cnn", "width": 0.25, "seed": seed, "steps": 100,
          "randomize_labels": False, "test": {"auc": 0.9, "precision": math.nan},
          **extra}


def test_training_records_find_each_model_by_its_summary(tmp_path):
  workdir = str(tmp_path)
  models = os.path.join(workdir, "models")
  _training_run(os.path.join(models, "trained"), _training(0), _records([10, 20]))
  _training_run(os.path.join(models, "seed1"), _training(1), _records([10, 20, 30]))
  randomized = _training(0, randomize_labels=True)
  _training_run(os.path.join(models, "randomized_labels"), randomized, _records([10]))
  # A study's shared models, elsewhere: config.models_dir.
  config = ml_collections.ConfigDict(dict(models_dir=None, trained_dir=None))
  # The summary as the experiment read it: the same JSON (NaN included).
  trained = json.loads(json.dumps(_training(0)))
  found = run_figures.training_records(config, workdir, {
      "seed0": trained, "seed1": _training(1), "randomized": randomized,
      "weights": None, "elsewhere": _training(5)})
  assert {k: len(v) for k, v in found.items()} == {"seed0": 2, "seed1": 3,
                                                   "randomized": 1}
  config.models_dir = str(tmp_path / "nowhere")
  assert run_figures.training_records(config, workdir, {"seed0": trained}) == {}


# ---------------------------------------------------------------- reports ---

def _links(report: str) -> list[str]:
  return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


def test_cascade_report_adds_curves_and_distributions(tmp_path):
  workdir = str(tmp_path)
  training = _training(7)
  _training_run(os.path.join(workdir, "models", "trained"), training,
                _records(range(10, 110, 10)))
  rows = _score_rows()
  for method in METHODS:  # similarity of the last stage, and the baseline
    for metric, stage in (("spearman", 1), ("spearman_different_images", 0)):
      rows += results.rows(experiment="cascade", dataset="d", model="m", seed=0,
                           stage=stage, method=method, image_ids=IDS,
                           scores={metric: np.linspace(0, 1, len(IDS))})
  results.write_results(workdir, [rows])
  summary = {"experiment": "cascade", "mode": "cascade", "model": "small_cnn",
             "dataset": "synthetic_cxr", "num_images": len(IDS),
             "stages": [{"stage": 0, "randomized_blocks": []},
                        {"stage": 1, "randomized_blocks": ["predictions"]}],
             "training": training, "verdicts": {},
             "aggregates": results.aggregate(rows, seed=0, num_resamples=20)}
  config = ml_collections.ConfigDict(dict(
      methods=list(METHODS), similarity=["spearman"], localization=["auprc", "dice"],
      seed=7, model="small_cnn"))
  cascade_report.write(workdir, config, summary, {}, {"image": np.zeros((0, 8, 8, 1))})
  with open(os.path.join(workdir, "report.md")) as f:
    report = f.read()
  new = ["figures/cascade_localization_distributions.png",
         "figures/cascade_similarity_distributions.png",
         "figures/cascade_training_curves.png"]
  assert set(new) <= set(_links(report))
  for link in new:
    _png(os.path.join(workdir, link))
  assert sorted(f"figures/{n}" for n in os.listdir(os.path.join(workdir, "figures"))
                ) == sorted(_links(report))
  assert "### Per-image score distributions" in report
  assert "### Training curves" in report


def test_agreement_report_draws_every_member(tmp_path, drawn):
  workdir = str(tmp_path)
  members = []
  for seed, steps in ((0, range(10, 60, 10)), (1, range(10, 60, 10)), (2, [50])):
    training = _training(seed)
    tag = "trained" if seed == 0 else f"seed{seed}"
    _training_run(os.path.join(workdir, "models", tag), training, _records(steps))
    members.append({"name": f"seed{seed}", "model": "small_cnn", "width": 0.25,
                    "seed": seed, "training": training})
  rows = []
  for m in members:
    rows += results.rows(experiment="repeatability", dataset="d", model="small_cnn",
                         seed=m["seed"], stage=0, method="gradient", image_ids=IDS,
                         scores={"auprc": np.linspace(0.2, 0.6, len(IDS))})
  for b in ("seed1", "seed2"):
    rows += results.rows(experiment="repeatability", dataset="d", model="small_cnn",
                         seed=0, stage=0, method="gradient", image_ids=IDS,
                         scores={f"spearman_vs_{b}": np.full(len(IDS), 0.7)})
  rows += results.rows(experiment="repeatability", dataset="d", model="small_cnn",
                       seed=0, stage=0, method="gradient", image_ids=IDS,
                       scores={"spearman_different_images": np.full(len(IDS), 0.2)})
  results.write_results(workdir, [rows])
  summary = {"experiment": "repeatability", "model": "small_cnn", "dataset": "d",
             "methods": ["gradient"], "similarity": ["spearman"],
             "localization": ["auprc"], "members": members, "groups": ["replicates"],
             "pairs": [{"a": "seed0", "b": "seed1", "group": "replicates"},
                       {"a": "seed0", "b": "seed2", "group": "replicates"}],
             "aggregates": []}
  agreement_report.write(workdir, ml_collections.ConfigDict(dict(methods=["gradient"])),
                         summary, {}, {"image": np.zeros((0, 8, 8, 1))})
  figures_dir = os.path.join(workdir, "figures")
  curves = os.path.join(figures_dir, "repeatability_training_curves.png")
  # Three replicates: three lines of loss; the single record is a point.
  loss = drawn[curves].axes[0]
  assert [line.get_xdata().size for line in _lines(loss)] == [5, 5, 1]
  similarity = drawn[os.path.join(figures_dir,
                                  "repeatability_similarity_distributions.png")]
  [ax] = [ax for ax in similarity.axes if ax.get_visible()]
  assert len(ax.patches) == 2  # between replicates (pooled), different images
  localization = drawn[os.path.join(figures_dir,
                                    "repeatability_localization_distributions.png")]
  [ax] = [ax for ax in localization.axes if ax.get_visible()]
  assert len(ax.patches) == 3  # one box per replicate
  with open(os.path.join(workdir, "report.md")) as f:
    report = f.read()
  assert "![Training curves (seed0, seed1, seed2)]" in report
