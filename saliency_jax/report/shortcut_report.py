"""The shortcut-learning report: does the model use the marker, do the maps show it?

Turns what ``experiments/shortcut.py`` computed into the answer to Adebayo
et al.'s (ICLR 2022) question, in its first lines: whether the shortcut
model uses the marker (accuracy as drawn, removed, flipped) and which
methods reveal it; then the tables (accuracy; per map the marker and
opacity mass, normalized to chance = 1, the pointing game on the marker,
the detection AUROC, with 95% intervals) and the figures (marker mass and
detection AUROC per map, one image's maps under both models).

Writes ``workdir/figures/shortcut_*.png``, ``workdir/report.md`` and
``workdir/report.html``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from saliency_jax.report import figures
from saliency_jax.report import markdown

FIGURES_DIR = "figures"
MASS_FIGURE = f"{FIGURES_DIR}/shortcut_marker_mass.png"
AUROC_FIGURE = f"{FIGURES_DIR}/shortcut_detection_auroc.png"
MAPS_FIGURE = f"{FIGURES_DIR}/shortcut_maps.png"
MODEL_LABELS = {"shortcut": "shortcut model", "clean": "clean model"}
VARIANT_LABELS = {"as_drawn": "as drawn", "removed": "marker removed",
                  "flipped": "marker flipped"}


def write(workdir: str, config: Any, summary: Mapping[str, Any],
          examples: Mapping[str, np.ndarray],
          images_np: Mapping[str, np.ndarray]) -> None:
  """Writes the figures, ``report.md`` and ``report.html`` of one run.

  Args:
    workdir: the run's directory.
    config: the run's ConfigDict (read with ``.get``).
    summary: what ``shortcut.summarize`` returned.
    examples: map name -> (2 models, N, H, W) post-processed maps.
    images_np: the evaluated images (``image``, ``boxes``, ``num_boxes``,
      ``marker_mask``).
  """
  os.makedirs(os.path.join(workdir, FIGURES_DIR), exist_ok=True)
  names = list(summary["methods"]) + list(summary["controls"])
  maps = summary["maps"]
  figures.metric_bars(
      os.path.join(workdir, MASS_FIGURE),
      {MODEL_LABELS[m]: {n: tuple(maps[n]["marker_mass_normalized"][m]) for n in names}
       for m in MODEL_LABELS},
      "marker mass / marker area share (1 = chance)",
      "Saliency mass on the marker, per map and model")
  figures.metric_bars(
      os.path.join(workdir, AUROC_FIGURE),
      {"detection AUROC": {n: tuple(maps[n]["detection_auroc"]) for n in names}},
      "AUROC (0.5 = cannot tell)",
      "Telling the shortcut model's maps from the clean model's by marker mass")
  if len(images_np.get("image", ())):
    stacked = np.stack([np.asarray(examples[n])[:, 0] for n in names])
    figures.map_grid(os.path.join(workdir, MAPS_FIGURE), images_np["image"][0],
                     images_np["boxes"][0], int(images_np["num_boxes"][0]), stacked,
                     names, [MODEL_LABELS[m] for m in MODEL_LABELS],
                     "One marked test positive under both models",
                     boxes_on_maps=True)
  markdown.write_report(workdir, text(config, summary))


def _answer(summary: Mapping[str, Any]) -> list[str]:
  """The report's first lines: does the model use the marker, which methods show it."""
  usage = summary["accuracy"]
  acc = usage["models"]["shortcut"]
  uses = summary["uses_marker"]
  word = {True: "**yes**", False: "**no**", None: "**undetermined** (non-finite outputs)"}
  methods = list(summary["methods"])
  by = {v: [m for m in methods if summary["verdicts"][m] == v]
        for v in ("REVEALS", "MISSES", "INVALID")}
  listed = lambda ms: ", ".join(f"`{m}`" for m in ms) or "none"  # noqa: E731
  lines = [
      f"**Does the shortcut model use the marker?** {word[uses]}: test accuracy "
      + "; ".join(f"{VARIANT_LABELS[v]} {markdown.interval(acc[v]['accuracy'])}"
                  for v in VARIANT_LABELS)
      + f" (marker rate {summary['shortcut_rate']:g} with the positive label).",
      "",
      f"**Methods that reveal the shortcut:** {listed(by['REVEALS'])}. "
      f"**Methods that miss it:** {listed(by['MISSES'])}."
      + (f" **INVALID:** {listed(by['INVALID'])}." if by["INVALID"] else ""),
  ]
  if uses is False:
    lines += ["", "The model does not rely on the marker, so a map that misses it "
              "is not wrong: read the verdicts with that in mind."]
  return lines


def text(config: Any, summary: Mapping[str, Any]) -> str:
  """The markdown of ``report.md``."""
  del config
  names = list(summary["methods"]) + list(summary["controls"])
  maps = summary["maps"]
  out = ["# Shortcut learning: do the maps reveal a marker the model uses?", ""]
  out += _answer(summary)
  out += [
      "",
      "After Adebayo et al. (ICLR 2022, \"Post hoc explanations may be ineffective "
      "for detecting unknown spurious correlation\"). Two models were trained with "
      "the same seed: the *shortcut model* on phantoms where an 'L' marker in a "
      "random corner co-occurs with the positive label, the *clean model* on the "
      "same phantoms without it. A method **reveals** the shortcut when its "
      "detection AUROC's 95% interval lies above 0.5 and the shortcut model's "
      "normalized marker mass's interval lies above 1.",
      "",
      f"Maps of {summary['num_images']} test positives carrying the marker "
      f"({summary['evaluated_positives_without_marker']} chosen positives without "
      f"one left out); model `{summary['model']}` x{summary['width']} at "
      f"{summary['image_size']} px; 95% bootstrap intervals.",
      "",
      "## Does the model use the marker?",
      "",
      "Accuracy and AUC on the whole test split "
      f"({summary['accuracy']['num_images']} images) drawn three ways: as in the "
      "data, with the marker removed (the same phantoms without it) and flipped "
      "(drawn at rate 1 - p, the association reversed).",
      "",
      "| model | rendering | accuracy | AUC | images with the marker |",
      "|---|---|---|---|---|",
  ]
  for model, variants in summary["accuracy"]["models"].items():
    for variant, row in variants.items():
      out.append(f"| {MODEL_LABELS[model]} | {VARIANT_LABELS[variant]} | "
                 f"{markdown.interval(row['accuracy'])} | "
                 f"{markdown.interval(row['auc'])} | {row['markers']} |")
  drops = summary["accuracy"]["accuracy_drop"]
  out += ["", "Shortcut model, accuracy as drawn minus: "
          + "; ".join(f"{VARIANT_LABELS[v]} {markdown.interval(drops[v])}" for v in drops)
          + " (uses the marker when the flipped drop's interval lies above 0).", ""]
  out += ["## Where the maps put their mass", "",
          "Mass = sum(map x mask) / sum(map) on the post-processed maps (|.|, "
          "channel sum, 99th percentile clip, [0, 1]); normalized: divided by the "
          "mask's share of the image, so 1 = chance. Pointing game: the map's peak "
          f"within {summary['pointing_tolerance']} px of the marker. Detection AUROC: "
          "P(shortcut map's marker mass > clean map's) over pairs of images, ties "
          "1/2; 0.5 = a reader cannot tell the models apart.", ""]
  out += _map_table(names, maps, set(summary["controls"]))
  out += ["", "## Figures", "",
          f"![marker mass]({MASS_FIGURE})", "",
          f"![detection AUROC]({AUROC_FIGURE})", "",
          f"![maps]({MAPS_FIGURE})", ""]
  out.append(markdown.excluded_section(_excluded(names, maps), summary))
  return "\n".join(out)


def _map_table(names: Sequence[str], maps: Mapping[str, Any],
               controls: set[str]) -> list[str]:
  rows = ["| map | marker mass (norm.), shortcut | clean | opacity mass (norm.), "
          "shortcut | clean | pointing on marker, shortcut | clean | detection AUROC "
          "| verdict |", "|---|---|---|---|---|---|---|---|---|"]
  for n in names:
    e = maps[n]
    cells = [markdown.interval(e[k][m]) for k in (
        "marker_mass_normalized", "opacity_mass_normalized", "pointing_game_marker")
             for m in ("shortcut", "clean")]
    label = f"`{n}` (control)" if n in controls else f"`{n}`"
    verdict = "control" if n in controls else e["verdict"]
    rows.append(f"| {label} | " + " | ".join(cells)
                + f" | {markdown.interval(e['detection_auroc'])} | {verdict} |")
  return rows


def _excluded(names: Sequence[str], maps: Mapping[str, Any]) -> list[str]:
  lines = []
  for n in names:
    for score, counts in maps[n]["excluded"].items():
      for model, count in counts.items():
        if count:
          lines.append(f"- `{n}` `{score}` {MODEL_LABELS[model]}: {count} images "
                       "not scored (a map summing to 0, or not finite)")
  return lines
