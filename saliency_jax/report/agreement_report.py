"""The repeatability and reproducibility reports: figures and ``report.md``.

Turns what ``experiments/repeatability.py`` (replicates of one architecture)
or ``experiments/reproducibility.py`` (two architectures) computed into the
papers' comparisons (Arun et al., Radiology: AI 2021): maps of the same image
side by side, similarity between models against the different-image
baseline (and, for architectures, against the intra-architecture
similarity), each model's localization, and a verdict per method.

Writes ``workdir/figures/<experiment>_*.png`` and ``workdir/report.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from saliency_jax.report import figures
from saliency_jax.report import markdown
from saliency_jax.report import run_figures

FIGURES_DIR = "figures"
REPORT = "report.md"
BASELINE = "different_images"
# How each group of pairs reads in tables and legends.
GROUP_LABELS = {"replicates": "between replicates",
                "architectures": "between architectures",
                BASELINE: "different images"}
# Per experiment: (title, what agrees, word for a pass, word for a fail).
WORDS = {"repeatability": ("Repeatability across training seeds", "replicates",
                           "REPEATABLE", "NOT REPEATABLE"),
         "reproducibility": ("Reproducibility across architectures",
                             "architectures", "REPRODUCIBLE", "NOT REPRODUCIBLE")}
FIGURE_TITLES = {"maps": "Maps of the same image by each model",
                 "similarity": "Similarity between models",
                 "localization": "Localization per model",
                 "distributions": "Per-image score distributions",
                 "training": "Training curves"}
# Index of aggregates: (model, seed, method, metric) -> aggregate row.
# Replicates share a model name, so the seed is part of the key.
Index = dict[tuple[str, int, str, str], Mapping[str, Any]]


def write(workdir: str, config: Any, summary: Mapping[str, Any],
          examples: Mapping[str, np.ndarray],
          images_np: Mapping[str, np.ndarray]) -> None:
  """Writes the figures and ``report.md`` of one run into ``workdir``.

  Args:
    workdir: the run's directory.
    config: the run's ConfigDict (read with ``.get``; missing keys tolerated).
    summary: what ``repeatability.summarize`` returned.
    examples: method -> (K members, E images, H, W) maps in [0, 1] of the
      first E evaluation images.
    images_np: the evaluation images: ``image`` (N, H, W, C) in [0, 1],
      ``boxes`` (N, K, 4) (x, y, w, h), ``num_boxes`` (N,), ``id`` (N,).
  """
  methods = list(markdown.get(config, "methods", None) or summary.get("methods") or [])
  index = {(r["model"], int(r["seed"]), r["method"], r["metric"]): r
           for r in summary.get("aggregates") or []}
  written = {
      "maps": _map_figures(workdir, summary, examples, images_np, methods),
      "similarity": _similarity_figures(workdir, summary, methods),
      "localization": _localization_figures(workdir, summary, index, methods),
      "distributions": _distribution_figures(workdir, summary, methods),
      "training": run_figures.training_curves(
          workdir, config, {m["name"]: m.get("training")
                            for m in summary.get("members") or []},
          summary.get("experiment", "agreement"), "Training of the compared models"),
  }
  parts = [
      _title(summary),
      _what_ran(config, summary, images_np, methods),
      _verdict_section(summary, methods),
      _localization_section(summary, index, methods),
      _excluded_section(summary, index, methods),
      markdown.figures_section(written, FIGURE_TITLES),
      _how_to_read(summary),
  ]
  markdown.write_report(workdir, "\n".join(p for p in parts if p))


def pair_label(pair: Mapping[str, str]) -> str:
  """'seed0 vs seed1'."""
  return f"{pair['a']} vs {pair['b']}"


# ---------------------------------------------------------------- figures ---

def _figure(summary: Mapping[str, Any], kind: str, name: str) -> str:
  """'figures/<experiment>_<kind>_<name>.png', relative to the workdir."""
  experiment = markdown.safe(summary.get("experiment", "agreement"))
  return f"{FIGURES_DIR}/{experiment}_{kind}_{markdown.safe(name)}.png"


def _member_names(summary: Mapping[str, Any]) -> list[str]:
  return [m["name"] for m in summary.get("members") or []]


def _map_figures(workdir, summary, examples, images_np, methods
                 ) -> list[tuple[str, str]]:
  """One grid per example image: rows methods, columns the members' maps."""
  shown = [m for m in methods if m in examples]
  names = _member_names(summary)
  if not shown or not names:
    return []
  count = min(min(np.asarray(examples[m]).shape[1] for m in shown),
              len(images_np["image"]))
  image_names = markdown.image_names(images_np, count)
  out = []
  for e in range(count):
    maps = np.stack([np.asarray(examples[m])[:, e] for m in shown])  # (M, K, H, W)
    relative = _figure(summary, "maps", image_names[e])
    title = (f"{summary.get('dataset', '')} image {image_names[e]}: maps of "
             f"{', '.join(names)}")
    figures.map_grid(os.path.join(workdir, relative), images_np["image"][e],
                     images_np["boxes"][e], int(images_np["num_boxes"][e]),
                     maps, shown, names, title, mask=figures.mask_at(images_np, e))
    out.append((f"Maps of image {image_names[e]}", relative))
  return out


def _similarity_figures(workdir, summary, methods) -> list[tuple[str, str]]:
  """Bars per method: similarity within each group of pairs and the baseline."""
  by_method = summary.get("group_similarity") or {}
  groups = list(summary.get("groups") or []) + [BASELINE]
  out = []
  for metric in summary.get("similarity") or []:
    values = {GROUP_LABELS.get(g, g): {
        m: tuple(by_method[m][metric][g]) for m in methods
        if g in by_method.get(m, {}).get(metric, {})} for g in groups}
    if not any(values.values()):
      continue
    relative = _figure(summary, "similarity", metric)
    figures.metric_bars(os.path.join(workdir, relative), values,
                        f"{metric} (mean, 95% CI)",
                        # Short: metric_bars' legend shares the title's row.
                        f"{metric} between models' maps")
    out.append((f"{metric} similarity between models and baseline", relative))
  return out


def _localization_figures(workdir, summary, index: Index, methods
                          ) -> list[tuple[str, str]]:
  """Bars per method: each member's localization."""
  members = summary.get("members") or []
  out = []
  for metric in summary.get("localization") or []:
    values = {m["name"]: {method: markdown.triple(
        index.get((m["model"], int(m["seed"]), method, metric))) for method in methods}
              for m in members}
    if not any(not math.isnan(t[0]) for v in values.values() for t in v.values()):
      continue
    relative = _figure(summary, "localization", metric)
    figures.metric_bars(os.path.join(workdir, relative), values,
                        f"{metric} (mean, 95% CI)",
                        f"{metric} per model")
    out.append((f"{metric} localization per model", relative))
  return out


def _distribution_figures(workdir, summary, methods) -> list[tuple[str, str]]:
  """Per-image boxes: similarity per group of pairs beside the different-image
  baseline; each member's localization."""
  experiment = summary.get("experiment", "agreement")
  rows = [r for r in run_figures.result_rows(workdir) if r["experiment"] == experiment]
  members = {m["name"]: m for m in summary.get("members") or []}
  if not rows or not members:
    return []

  def rows_of(name: str, **where: Any) -> dict[str, Any]:
    return {"model": members[name]["model"], "seed": int(members[name]["seed"]),
            **where}

  similarity_groups = {}
  for pair in summary.get("pairs") or []:
    label = GROUP_LABELS.get(pair.get("group"), pair.get("group") or pair_label(pair))
    similarity_groups.setdefault(label, []).append(
        rows_of(pair["a"], metric="{metric}_vs_" + pair["b"]))
  first = next(iter(members))
  similarity_groups[GROUP_LABELS[BASELINE]] = [
      rows_of(first, metric="{metric}_" + BASELINE)]
  return run_figures.score_distributions(
      workdir, rows, name=f"{experiment}_similarity",
      caption="Similarity per image between models' maps and the "
              "different-image baseline",
      metrics=summary.get("similarity") or [], methods=methods,
      groups=similarity_groups,
      title="Similarity per image (boxes: quartiles; dots: images)"
  ) + run_figures.score_distributions(
      workdir, rows, name=f"{experiment}_localization",
      caption="Localization per image of each model",
      metrics=summary.get("localization") or [], methods=methods,
      groups={name: rows_of(name) for name in members},
      title="Localization per image (boxes: quartiles; dots: images)")


# ----------------------------------------------------------------- report ---

def _title(summary) -> str:
  title = WORDS.get(summary.get("experiment"), ("Agreement between models",))[0]
  models = list(dict.fromkeys(m["model"] for m in summary.get("members") or []))
  return (f"# {title}: {' vs '.join(f'`{m}`' for m in models) or '?'} on "
          f"`{summary.get('dataset', '?')}`\n")


def _what_ran(config, summary, images_np, methods) -> str:
  size = summary.get("image_size", markdown.get(config, "image_size"))
  evaluated = len(images_np.get("id", images_np.get("image", ())))
  requested = summary.get("num_images_requested", markdown.get(config, "num_images"))
  images_line = f"{evaluated} random positive test images (the same for every model)"
  if requested is not None and requested != evaluated:
    images_line += f"; {requested} requested, the split has fewer positives"
  pairs = summary.get("pairs") or []
  lines = [
      "## What ran\n",
      f"- Dataset: `{summary.get('dataset', '?')}`, images {size} x {size}",
      *markdown.data_lines(summary),
      f"- Evaluation: {images_line}; each model explains its "
      f"{'true' if summary.get('targets') == 'true' else 'own predicted'} "
      "class, with the same noise key",
      f"- Methods: {', '.join(f'`{m}`' for m in methods)}; preset "
      f"`{summary.get('preset')}`",
      "- Pairs compared image by image: " + "; ".join(
          f"{pair_label(p)} ({GROUP_LABELS.get(p['group'], p['group'])})"
          for p in pairs),
      "",
      "| Model | Architecture | Width | Seed | Steps | Test images | Test AUC | "
      "Accuracy | Precision | Recall |",
      "|---|---|---:|---:|---:|---:|---|---|---|---|",
  ]
  for m in summary.get("members") or []:
    training = m.get("training") or {}
    test = training.get("test") or {}
    lines.append(
        f"| {m['name']} | `{training.get('model', m['model'])}` | {m.get('width')} | "
        f"{m['seed']} | {training.get('steps', '?')} | "
        f"{test.get('num_examples', '?')} | {markdown.num(test.get('auc'))} | "
        f"{markdown.num(test.get('accuracy'))} | "
        f"{markdown.num(test.get('precision'))} | {markdown.num(test.get('recall'))} |")
  if any((m.get("training") or {}).get("randomize_labels")
         for m in summary.get("members") or []):
    lines.append("\n**A model was trained on randomized labels.**")
  return "\n".join(lines) + "\n"


def _verdict_section(summary, methods) -> str:
  experiment = summary.get("experiment")
  _, what, yes, no = WORDS.get(experiment, ("", "models", "AGREES", "DISAGREES"))
  group = summary.get("verdict_group", what)
  chosen = summary.get("verdict_metric")
  verdicts = summary.get("verdicts") or {}
  similarity = list(summary.get("similarity") or [])
  groups = [g for g in summary.get("groups") or [] if g != group]
  lines = [
      "## Verdict\n",
      f"A method is **{yes.lower()}** under a similarity metric when the lower "
      f"bound of the 95% bootstrap interval of the mean similarity "
      f"{GROUP_LABELS.get(group, group)} (per image, averaged over the pairs) "
      "exceeds the mean similarity between maps of two different images from "
      f"`{(summary.get('members') or [{}])[0].get('name', '?')}`. Arun et al. "
      "(Radiology: AI 2021) compared these similarities; this rule is our "
      f"operationalization. **Verdict** uses `{chosen}`; *mean above baseline* "
      "is the looser reading (means only).\n",
      f"| Method | Verdict ({chosen}) | Mean above baseline ({chosen}) | "
      f"{yes.capitalize()} under |",
      "|---|---|---|---|",
  ]
  for method in methods:
    by_metric = verdicts.get(method, {})
    main = by_metric.get(chosen)
    cells = [markdown.verdict_word(main, yes, no),
             ("yes" if main["passed_mean"] else "no")
             if main and main.get("verdict") != "INVALID" else "n/a",
             ", ".join(m for m in similarity if by_metric.get(m, {}).get("passed"))
             or "none"]
    lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
  lines.append("")
  for metric in similarity:
    header = ["Verdict", GROUP_LABELS.get(group, group)]
    header += [GROUP_LABELS.get(g, g) for g in groups]
    header += [GROUP_LABELS[BASELINE]]
    if groups:
      header.append(f"Wilcoxon p ({group} vs {groups[0]})")
    lines += [f"### {metric}\n", "| Method | " + " | ".join(header) + " |",
              "|---|" + "---|" * len(header)]
    for method in methods:
      verdict = verdicts.get(method, {}).get(metric)
      values = (summary.get("group_similarity") or {}).get(method, {}).get(metric, {})
      cells = [markdown.verdict_word(verdict, yes, no),
               markdown.interval(verdict and verdict.get("similarity"))]
      cells += [markdown.interval(values.get(g)) for g in groups]
      cells.append(markdown.interval(verdict and verdict.get("baseline")))
      if groups:
        cells.append(markdown.p_value(values.get("wilcoxon_p")))
      lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def _localization_section(summary, index: Index, methods) -> str:
  members = summary.get("members") or []
  metrics = summary.get("localization") or []
  if not metrics or not members:
    return ""
  comparisons = summary.get("localization_comparisons") or {}
  lines = ["## Localization per model\n",
           "Each model's maps scored against the union mask of the image's "
           "boxes; mean over images with a 95% bootstrap interval. *Spread* is "
           "the largest minus the smallest mean; *smallest p* the smallest "
           "Holm-adjusted paired Wilcoxon p-value between two models. A method "
           "whose localization moves with the seed or the architecture cannot "
           "be relied on to localize.\n"]
  for metric in metrics:
    header = [m["name"] for m in members] + ["Spread", "Smallest p (Holm)"]
    lines += [f"### {metric}\n", "| Method | " + " | ".join(header) + " |",
              "|---|" + "---|" * len(header)]
    for method in methods:
      rows = [index.get((m["model"], int(m["seed"]), method, metric)) for m in members]
      means = [markdown.triple(r)[0] for r in rows]
      finite = [v for v in means if not math.isnan(v)]
      spread = max(finite) - min(finite) if len(finite) > 1 else math.nan
      p_values = [c["p_holm"] for c in comparisons.get(method, {}).get(metric, [])
                  if not math.isnan(c["p_holm"])]
      cells = [markdown.interval(markdown.triple(r)) for r in rows]
      cells += [markdown.num(spread),
                markdown.p_value(min(p_values) if p_values else None)]
      lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def _excluded_section(summary, index: Index, methods) -> str:
  """Scores that could not be computed (NaN): counted, never silently dropped."""
  lines = []
  for (model, seed, method, metric), row in sorted(index.items()):
    if row.get("excluded"):
      lines.append(f"- `{method}` `{metric}` of {model} (seed {seed}): "
                   f"{row['excluded']} of {row['excluded'] + row.get('n', 0)} "
                   "images not scored")
  return markdown.excluded_section(lines, summary, methods)


def _how_to_read(summary) -> str:
  what = WORDS.get(summary.get("experiment"), ("", "models"))[1]
  return (
      "## How to read this\n\n"
      f"- Maps that explain the image's abnormality should not depend on "
      f"incidental choices: two {what} that classify alike should point at "
      "the same region. Similarity between them no higher than between maps "
      "of two different images means the maps mostly reflect the model, not "
      "the image.\n"
      "- Agreement is necessary, not sufficient: maps that ignore the model "
      "(edge detectors) agree perfectly; read the verdict together with the "
      "cascade test and with localization.\n"
      "- Per-image scores are in `results.csv` (a pair's similarity is the "
      "row of its first model, metric `<similarity>_vs_<second model>`), "
      "aggregates in `summary.json`.\n")
