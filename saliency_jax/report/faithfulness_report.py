"""The faithfulness report: deletion / insertion curves, tables, ``report.md``.

Turns what ``experiments/faithfulness.py`` computed into a comparison of the
methods with control maps: per faithfulness metric a table of methods and
controls with 95% intervals and, per method, whether it is more faithful
than every control; the deletion and insertion curves of every map (mean
over images, 95% band) with the controls dashed; the maps of the first
``config.report.example_images`` images, every method's beside the controls'.

Writes ``workdir/figures/faithfulness_*.png``, ``workdir/report.md`` and
``workdir/report.html``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from saliency_jax.report import figures
from saliency_jax.report import markdown
from saliency_jax.report import run_figures

FIGURES_DIR = "figures"
CURVES_FIGURE = f"{FIGURES_DIR}/faithfulness_curves.png"
CONTROL_NOTES = {
    "random": "uniform noise (keyed): ignores the model and the image",
    "edge": "Sobel edge magnitude of the image: ignores the model",
    "center_prior": "a centred Gaussian: ignores the model and the image",
    "random_cam": "the GradCAM layer under random channel weights: ignores "
                  "the explained class",
}
METRIC_NOTES = {
    "deletion_auc": "area under the deletion curve (Petsiuk et al. 2018)",
    "insertion_auc": "area under the insertion curve (Petsiuk et al. 2018)",
    "road_morf": "ROAD, most relevant pixels removed first, mean over "
                 "percentiles (Rong et al. 2022)",
    "road_lerf": "ROAD, least relevant pixels removed first (Rong et al. 2022)",
    "road_combined": "ROAD (LeRF - MoRF) / 2 (Rong et al. 2022)",
    "confidence_drop": "max(0, y - o) / y on the image times the map "
                       "(Chattopadhyay et al. 2018)",
    "confidence_increase": "share of images with o > y (Chattopadhyay et al. 2018)",
}


def write(workdir: str, config: Any, summary: Mapping[str, Any],
          examples: Mapping[str, np.ndarray],
          images_np: Mapping[str, np.ndarray]) -> None:
  """Writes the figures, ``report.md`` and ``report.html`` of one run.

  Args:
    workdir: the run's directory.
    config: the run's ConfigDict (read with ``.get``).
    summary: what ``faithfulness._summarize`` returned.
    examples: map name -> (E, H, W) maps in [0, 1] of the first E
      evaluation images (``config.report.example_images``).
    images_np: the evaluation images (``image``, ``boxes``, ``num_boxes``,
      ``id``).
  """
  methods = list(summary.get("methods") or [])
  controls = list(summary.get("controls") or [])
  metrics = list(summary.get("metrics") or [])
  index = markdown.index(summary.get("aggregates") or [])
  written = {
      "curves": _curve_figure(workdir, summary, methods, controls),
      "maps": run_figures.example_maps(
          workdir, "faithfulness", examples, images_np, methods + controls,
          controls=controls, title=str(summary.get("model", ""))),
      "distributions": run_figures.score_distributions(
          workdir, [r for r in run_figures.result_rows(workdir)
                    if r["experiment"] == "faithfulness"],
          name="faithfulness", caption="Faithfulness per image, methods and controls",
          metrics=metrics, methods=methods + controls,
          title="Faithfulness per image (boxes: quartiles; dots: images)"),
      "training": run_figures.training_curves(
          workdir, config, {"trained": summary.get("training")}, "faithfulness",
          f"Training of {summary.get('model', 'the model')}"),
  }
  parts = [
      f"# Faithfulness: `{summary.get('model', '?')}` on "
      f"`{summary.get('dataset', '?')}`\n",
      _what_ran(config, summary, images_np, methods, controls),
      _verdict_section(summary, index, methods),
      _metric_sections(summary, index, methods, controls, metrics),
      markdown.excluded_section(markdown.excluded_lines(index),
                                {"nonfinite": summary.get("nonfinite") or {}}),
      markdown.figures_section(written, {
          "curves": "Deletion and insertion curves",
          "maps": "Example maps (what was perturbed first)",
          "distributions": "Per-image score distributions",
          "training": "Training curves"}),
      _how_to_read(),
  ]
  markdown.write_report(workdir, "\n".join(p for p in parts if p))


def _curve_figure(workdir, summary, methods, controls) -> list[tuple[str, str]]:
  curves = summary.get("curves") or {}
  shown = [n for n in methods + controls if n in curves]
  if not shown:
    return []
  panels = {kind: {n: {"fractions": curves[n]["fractions"], **curves[n][kind]}
                   for n in shown}
            for kind in ("deletion", "insertion")}
  figures.perturbation_curves(
      os.path.join(workdir, CURVES_FIGURE), panels, controls,
      f"Deletion and insertion: {summary.get('model', '')} on "
      f"{summary.get('dataset', '')} (mean over images, 95% band; controls dashed)")
  return [("Deletion (lower is better) and insertion (higher is better) curves",
           CURVES_FIGURE)]


def _what_ran(config, summary, images_np, methods, controls) -> str:
  training = summary.get("training") or {}
  size = summary.get("image_size", markdown.get(config, "image_size"))
  evaluated = summary.get("num_images", len(images_np.get("id", ())))
  options = summary.get("faithfulness") or {}
  lines = [
      "## What ran\n",
      f"- Dataset: `{summary.get('dataset', '?')}`, images {size} x {size}",
      *markdown.data_lines(summary),
      f"- Model: `{summary.get('model', '?')}`, width {summary.get('width', '?')}, "
      f"trained {training.get('steps', '?')} steps",
      "- " + markdown.training_line(training),
      f"- Evaluation: {evaluated} random positive test images; explained class: "
      f"{summary.get('targets', 'predicted')}",
      f"- Methods: {', '.join(f'`{m}`' for m in methods)}; preset "
      f"`{summary.get('preset')}`",
      "- Controls:",
      *[f"  - `{c}`: {CONTROL_NOTES.get(c, 'control')}" for c in controls],
      "- Options: " + ", ".join(f"{k} = `{v}`" for k, v in sorted(options.items())),
      f"- Verdict on `{summary.get('primary_metric')}`; seed "
      f"{summary.get('seed', markdown.get(config, 'seed', '?'))}",
  ]
  return "\n".join(lines) + "\n"


def _direction(summary, metric) -> str:
  return "higher" if (summary.get("higher_is_better") or {}).get(metric) else "lower"


def _verdict_section(summary, index, methods) -> str:
  primary = summary.get("primary_metric")
  rows = (summary.get("comparisons") or {}).get(primary) or {}
  alpha = summary.get("alpha", 0.05)
  lines = [
      "## Verdict\n",
      f"A method is **more faithful than the controls** when its mean `{primary}` "
      f"({_direction(summary, primary)} is better) is better than every "
      "control's and a two-sided paired Wilcoxon test against the best control, "
      f"Holm-adjusted over the methods, gives p < {alpha}.\n",
      f"| Method | {primary} | Best control | Its {primary} | p (Holm) | "
      "More faithful than controls |",
      "|---|---|---|---|---:|---|",
  ]
  for method in methods:
    row = rows.get(method)
    if row is None:
      lines.append(f"| `{method}` | n/a | n/a | n/a | n/a | n/a |")
      continue
    best = row.get("best_control")
    lines.append(
        f"| `{method}` | {markdown.interval(markdown.triple(index.get((method, primary, 0))))}"
        f" | `{best}` | {markdown.interval(markdown.triple(index.get((best, primary, 0))))}"
        f" | {markdown.p_value(row.get('p_holm'))} | "
        f"**{markdown.verdict_word(row, 'YES', 'no')}** |")
  return "\n".join(lines) + "\n"


def _metric_sections(summary, index, methods, controls, metrics) -> str:
  lines = ["## Faithfulness per metric\n",
           "Mean over images with a 95% bootstrap interval; *Better than "
           "controls* applies the verdict's test to this metric.\n"]
  comparisons = summary.get("comparisons") or {}
  for metric in metrics:
    lines += [f"### {metric}\n",
              f"{METRIC_NOTES.get(metric, metric)}; {_direction(summary, metric)} "
              "is better.\n",
              *markdown.versus_controls_table(index, comparisons.get(metric) or {},
                                              methods, controls, metric), ""]
  return "\n".join(lines)


def _how_to_read() -> str:
  return (
      "## How to read this\n\n"
      "- Faithfulness asks whether the model's output depends on the pixels a "
      "map ranks first, not whether they are the abnormality (that is the "
      "localization report).\n"
      "- Deletion and insertion replace pixels with a blurred (or constant, or "
      "noise) image, which the model never saw in training; ROAD imputes them "
      "from their neighbours to limit that shift (Rong et al., ICML 2022), so "
      "MoRF and LeRF together are the more reliable reading.\n"
      "- `random_cam` shares the method's layer but not its target: a CAM "
      "method that does no better than it gains nothing from the gradient.\n"
      "- Every map is scored under the same keyed perturbations, so differences "
      "between maps come from the maps alone.\n"
      "- Per-image scores are in `results.csv`, aggregates, tests and the "
      "curves' bands in `summary.json`.\n")

