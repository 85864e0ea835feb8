"""The localization report: maps beside the controls, bars, and ``report.md``.

Turns what ``experiments/localization.py`` computed into Arun et al.'s
(Radiology: AI 2021) comparison of methods with baselines that ignore the
model: per localization metric a table of methods and controls with 95%
intervals and, per method, whether it localizes better than every control.

Writes ``workdir/figures/localization_*.png`` and ``workdir/report.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from saliency_jax.report import figures
from saliency_jax.report import markdown
from saliency_jax.report import run_figures

FIGURES_DIR = "figures"
REPORT = "report.md"
CONTROL_SUFFIX = " (control)"
# What each control is, for the report.
CONTROL_NOTES = {
    "random": "uniform noise (keyed): the floor",
    "edge": "Sobel edge magnitude of the image: what an image-only map finds",
    "center_prior": "a centered Gaussian (sigma = 1/4 of the side): the "
                    "position prior",
    "mean_training_mask": "the mean of the training positives' masks: Arun et "
                          "al.'s average-box baseline",
}


def write(workdir: str, config: Any, summary: Mapping[str, Any],
          examples: Mapping[str, np.ndarray],
          images_np: Mapping[str, np.ndarray]) -> None:
  """Writes the figures and ``report.md`` of one localization run.

  Args:
    workdir: the run's directory.
    config: the run's ConfigDict (read with ``.get``).
    summary: what ``localization._summarize`` returned.
    examples: method or control -> (E, H, W) maps in [0, 1] of the first E
      evaluation images.
    images_np: the evaluation images (``image``, ``boxes``, ``num_boxes``, ``id``).
  """
  methods = list(summary.get("methods") or [])
  controls = list(summary.get("controls") or [])
  index = markdown.index(summary.get("aggregates") or [])
  metrics = [m for m in summary.get("localization") or []
             if any((n, m, 0) in index for n in methods + controls)]
  written = {
      "bars": _bar_figure(workdir, summary, index, methods, controls, metrics),
      "maps": _map_figures(workdir, summary, examples, images_np, methods, controls),
      "distributions": run_figures.score_distributions(
          workdir, [r for r in run_figures.result_rows(workdir)
                    if r["experiment"] == "localization"],
          name="localization", caption="Localization per image, methods and controls",
          metrics=metrics, methods=methods + controls,
          title="Localization per image (boxes: quartiles; dots: images)"),
      "training": run_figures.training_curves(
          workdir, config, {"trained": summary.get("training")}, "localization",
          f"Training of {summary.get('model', 'the model')}"),
  }
  parts = [
      f"# Localization utility: `{summary.get('model', '?')}` on "
      f"`{summary.get('dataset', '?')}`\n",
      _what_ran(config, summary, images_np, methods, controls),
      _verdict_section(summary, methods),
      _metric_sections(summary, index, methods, controls, metrics),
      chexlocalize_section(summary, methods + controls),
      markdown.excluded_section(markdown.excluded_lines(index)),
      markdown.figures_section(written, {"bars": "Localization of methods and "
                                         "controls", "maps": "Example maps",
                                         "distributions": "Per-image score "
                                         "distributions",
                                         "training": "Training curves"}),
      _how_to_read(summary),
  ]
  markdown.write_report(workdir, "\n".join(p for p in parts if p))


# ---------------------------------------------------------------- figures ---

def _label(name: str, controls: Sequence[str]) -> str:
  return name + CONTROL_SUFFIX if name in controls else name


def _bar_figure(workdir, summary, index, methods, controls, metrics
                ) -> list[tuple[str, str]]:
  """One grouped bar plot: x = methods then controls, one bar per metric."""
  if not metrics:
    return []
  values = {metric: {_label(n, controls): markdown.triple(index.get((n, metric, 0)))
                     for n in methods + controls if (n, metric, 0) in index}
            for metric in metrics}
  relative = f"{FIGURES_DIR}/localization_bars.png"
  figures.metric_bars(
      os.path.join(workdir, relative), values, "score (mean, 95% CI)",
      f"Localization against the boxes: {summary.get('model', '')} on "
      f"{summary.get('dataset', '')}, methods and controls")
  return [("Localization of every method and control", relative)]


def _map_figures(workdir, summary, examples, images_np, methods, controls
                 ) -> list[tuple[str, str]]:
  """One row per example image: the image, then every method and control."""
  return run_figures.example_maps(workdir, "localization", examples, images_np,
                                  methods + controls, controls=controls,
                                  title=str(summary.get("model", "")))


# ----------------------------------------------------------------- report ---

def _what_ran(config, summary, images_np, methods, controls) -> str:
  training = summary.get("training") or {}
  size = summary.get("image_size", markdown.get(config, "image_size"))
  evaluated = summary.get("num_images", len(images_np.get("id", ())))
  requested = summary.get("num_images_requested")
  images_line = f"{evaluated} random positive test images"
  if requested is not None and requested != evaluated:
    images_line += f" ({requested} requested; the split has fewer positives)"
  lines = [
      "## What ran\n",
      f"- Dataset: `{summary.get('dataset', '?')}`, images {size} x {size}",
      *markdown.data_lines(summary),
      f"- Model: `{summary.get('model', '?')}`, width "
      f"{summary.get('width', '?')}, trained {training.get('steps', '?')} steps",
      "- " + markdown.training_line(training),
      f"- Evaluation: {images_line}; explained class: "
      f"{summary.get('targets', 'predicted')}",
      f"- Methods: {', '.join(f'`{m}`' for m in methods)}; preset "
      f"`{summary.get('preset')}`",
      "- Controls (maps that ignore the model):",
  ]
  lines += [f"  - `{c}`: {CONTROL_NOTES.get(c, 'control')}" for c in controls]
  lines.append(f"- Metrics: {', '.join(f'`{m}`' for m in summary.get('localization') or [])}; "
               f"verdict on `{summary.get('primary_metric')}`; seed "
               f"{summary.get('seed', markdown.get(config, 'seed', '?'))}")
  return "\n".join(lines) + "\n"


def _verdict_section(summary, methods) -> str:
  primary = summary.get("primary_metric")
  rows = (summary.get("comparisons") or {}).get(primary) or {}
  alpha = summary.get("alpha", 0.05)
  lines = [
      "## Verdict\n",
      f"A method **localizes better than the controls** when its mean "
      f"`{primary}` beats every control's and a two-sided paired Wilcoxon "
      "test against the best control (the control with the highest mean), "
      f"Holm-adjusted over the methods, gives p < {alpha} (Arun et al., "
      "Radiology: AI 2021, compared the methods with the average box).\n",
      f"| Method | {primary} | Best control | Its {primary} | Wilcoxon p | "
      "p (Holm) | Beats every control | Better than controls |",
      "|---|---|---|---|---:|---:|---|---|",
  ]
  index = markdown.index(summary.get("aggregates") or [])
  for method in methods:
    row = rows.get(method)
    if row is None:
      lines.append(f"| `{method}` | n/a | n/a | n/a | n/a | n/a | n/a | n/a |")
      continue
    best = row.get("best_control")
    lines.append(
        f"| `{method}` | {markdown.interval(markdown.triple(index.get((method, primary, 0))))} | "
        f"`{best}` | {markdown.interval(markdown.triple(index.get((best, primary, 0))))} | "
        f"{markdown.p_value(row.get('p'))} | {markdown.p_value(row.get('p_holm'))} | "
        f"{'yes' if row.get('beats_every_control') else 'no'} | "
        f"**{markdown.verdict_word(row, 'YES', 'no')}** |")
  return "\n".join(lines) + "\n"


def _metric_sections(summary, index, methods, controls, metrics) -> str:
  if not metrics:
    return ""
  lines = ["## Localization per metric\n",
           "Each map scored against the union mask of its image's boxes; mean "
           "over images with a 95% bootstrap interval. *Better than controls* "
           "applies this metric's own test (best control, Wilcoxon, Holm over "
           "the methods); the verdict above uses "
           f"`{summary.get('primary_metric')}`.\n"]
  comparisons = summary.get("comparisons") or {}
  for metric in metrics:
    lines += [f"### {metric}\n",
              *markdown.versus_controls_table(index, comparisons.get(metric) or {},
                                              methods, controls, metric), ""]
  return "\n".join(lines)


def chexlocalize_section(summary: Mapping[str, Any], names: Sequence[str]) -> str:
  """The CheXlocalize table (Saporta et al. 2022): mIoU, hit rate, threshold, cutoff."""
  block = summary.get("chexlocalize")
  if not block:
    return ""
  setup = block.get("settings") or {}
  threshold = setup.get("threshold")
  rule = ("Otsu's threshold" + (" on 8-bit levels" if setup.get("quantize") else "")
          if threshold == "otsu" else
          f"a threshold tuned on {block.get('num_validation_images', 0)} validation "
          "positives (0.2 to 0.8, the best mIoU)")
  gate = (" Masks are emptied unless p(positive) exceeds a cutoff tuned on "
          "validation (0 to 0.8); an empty prediction then scores IoU 0."
          if setup.get("gate") else
          " mIoU runs over the images with a predicted segmentation (the "
          "reference's true positives).")
  lines = [
      "## CheXlocalize protocol\n",
      "Saporta et al. (Nature Machine Intelligence 2022): each map upsampled "
      f"to its mask, min-max scaled and binarized by {rule}.{gate} Hit: the "
      "map's maximum lies inside the mask. Mean over the test positives with a "
      f"95% bootstrap interval ({setup.get('num_resamples')} resamples); class "
      f"`{setup.get('class_name')}`. Predicted masks: COCO RLE in "
      "`chexlocalize/<name>.json`, for CheXlocalize's `eval.py`.\n",
      "| Map | mIoU | Scored (not) | Hit rate | Scored (not) | Threshold | Cutoff |",
      "|---|---|---|---|---|---|---|",
  ]
  rows = block.get("methods") or {}
  for name in names:
    row = rows.get(name)
    if row is None:
      continue
    if row.get("invalid"):
      lines.append(f"| `{name}` | **INVALID** ({row['invalid']}) | | | | | |")
      continue
    scored, missing = row.get("num_scored") or {}, row.get("num_not_scored") or {}
    threshold, cutoff = row.get("threshold"), row.get("cutoff")
    lines.append(
        f"| `{name}` | {markdown.interval(row.get('miou'))} | "
        f"{scored.get('iou')} ({missing.get('iou')}) | "
        f"{markdown.interval(row.get('hit_rate'))} | "
        f"{scored.get('hit')} ({missing.get('hit')}) | "
        f"{threshold if isinstance(threshold, str) else markdown.num(threshold)} | "
        f"{'none' if cutoff is None else markdown.num(cutoff)} |")
  return "\n".join(lines) + "\n"


def _how_to_read(summary) -> str:
  return (
      "## How to read this\n\n"
      "- A map earns trust for localization only by beating maps that know "
      "nothing about the model. Beating `random` is not enough; the "
      "`mean_training_mask` (where abnormalities usually are) and "
      "`center_prior` test whether a method finds *this* image's "
      "abnormality rather than the usual place; `edge` whether it finds "
      "more than image structure.\n"
      "- In Arun et al. (Radiology: AI 2021) the average box (AUPRC about "
      ".47 on RSNA pneumonia, read off their figure) beat every saliency "
      "method but XRAI (about .52).\n"
      "- The pointing game's tolerance is in pixels (15 by default, for "
      "224-pixel images); on small images it covers much of the lung, so "
      "even `center_prior` can score high.\n"
      "- A high score with a map that also survives model randomization "
      "(cascade and label-randomization reports) localizes the image, not "
      "what the model learned.\n"
      "- Per-image scores are in `results.csv`, aggregates and tests in "
      "`summary.json`.\n")
