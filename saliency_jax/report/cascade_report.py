"""The cascading-randomization report: figures and ``report.md``.

Turns what ``experiments/cascade.py`` computed (its ``summary``, the example
maps and the evaluation images) into the papers' panels and curves
(Adebayo et al., NeurIPS 2018, Fig. 2 and 4; Arun et al., Radiology: AI
2021) and a Markdown report that says, per method, whether its maps pass the
model-randomization test and how well they localize the boxes.

Writes ``workdir/figures/cascade_*.png`` and ``workdir/report.md``.
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
BASELINE_SUFFIX = "_different_images"
# Per-stage metrics of a stage's maps against the trained model's that are
# not similarities (no baseline, higher is better): eMPRT.
RANDOMIZATION_METRICS = ("emprt",)
SMPRT_PREFIX = "smprt_"
# The method column of a null baseline (experiments/cascade.py NULL_PREFIX).
NULL_PREFIX = "null_"
# Index of aggregates: (method, metric, stage) -> aggregate row.
Index = dict[tuple[str, str, int], Mapping[str, Any]]


def write(workdir: str, config: Any, summary: Mapping[str, Any],
          examples: Mapping[str, np.ndarray],
          images_np: Mapping[str, np.ndarray]) -> None:
  """Writes the figures and ``report.md`` of one cascade run into ``workdir``.

  Args:
    workdir: the run's directory.
    config: the run's ConfigDict (read with ``.get``; missing keys tolerated).
    summary: what ``cascade._summarize`` returned (see module doc there).
    examples: method -> (S stages, E images, H, W) maps in [0, 1] of the
      first E evaluation images.
    images_np: the evaluation images: ``image`` (N, H, W, C) in [0, 1],
      ``boxes`` (N, K, 4) (x, y, w, h), ``num_boxes`` (N,), ``id`` (N,).
  """
  num_stages = len(summary.get("stages") or []) or _example_stages(examples)
  labels = stage_labels(summary.get("stages") or [], summary.get("mode", "cascade"),
                        num_stages)
  methods = _methods(config, summary, examples)
  # Null baselines are drawn and judged apart from the methods.
  nulls = [m for m in methods if m.startswith(NULL_PREFIX)]
  methods = [m for m in methods if m not in nulls]
  index = _index(summary.get("aggregates") or [])
  similarity, localization = _metric_names(config, summary, index)
  written = {
      "maps": _map_figures(workdir, summary, examples, images_np, methods, labels),
      "similarity": _similarity_figures(workdir, summary, index, methods,
                                        similarity, labels, nulls),
      "localization": _localization_figures(workdir, index, methods,
                                            localization, labels),
      "distributions": _distribution_figures(workdir, methods, similarity,
                                             localization, labels),
      "emprt": _emprt_figures(workdir, index, methods, labels),
      "training": run_figures.training_curves(
          workdir, config, {"trained": summary.get("training")}, "cascade",
          f"Training of {summary.get('model', 'the model')}"),
  }
  text = _render(config, summary, images_np, methods, labels, index,
                similarity, localization, written, nulls)
  markdown.write_report(workdir, text)


def stage_labels(stages: Sequence[Mapping[str, Any]], mode: str,
                 num_stages: int | None = None) -> list[str]:
  """Column labels: 'trained', then the block randomized at that stage.

  Cascade: stage k re-initializes the top k blocks, so '+<k-th block>' says
  what changed from the column before; bottom-up likewise from the input
  side (its stages list their blocks input side first, the newest last). Independent: only that block is
  re-initialized ('only <block>').
  """
  labels = []
  for stage in stages:
    blocks = list(stage.get("randomized_blocks") or [])
    if not blocks:
      labels.append("trained")
    elif mode == "independent":
      labels.append(f"only {blocks[-1]}")
    else:
      labels.append(f"+{blocks[-1]}")
  for s in range(len(labels), num_stages or 0):  # summary without stage names
    labels.append("trained" if s == 0 else f"stage {s}")
  return labels


# ---------------------------------------------------------------- figures ---

def _map_figures(workdir: str, summary: Mapping[str, Any],
                 examples: Mapping[str, np.ndarray],
                 images_np: Mapping[str, np.ndarray], methods: Sequence[str],
                 labels: Sequence[str]) -> list[tuple[str, str]]:
  """One map grid per example image; returns (caption, relative path)."""
  shown = [m for m in methods if m in examples]
  if not shown:
    return []
  count = min(min(np.asarray(examples[m]).shape[1] for m in shown),
              len(images_np["image"]))
  names = markdown.image_names(images_np, count)
  out = []
  for e in range(count):
    maps = np.stack([np.asarray(examples[m])[:, e] for m in shown])  # (M, S, H, W)
    relative = f"{FIGURES_DIR}/cascade_maps_{names[e]}.png"
    title = (f"{summary.get('model', '')} on {summary.get('dataset', '')}, image "
             f"{names[e]}: maps as blocks are re-initialized "
             f"({summary.get('mode', 'cascade')})")
    figures.map_grid(os.path.join(workdir, relative), images_np["image"][e],
                     images_np["boxes"][e], int(images_np["num_boxes"][e]),
                     maps, shown, labels, title, mask=figures.mask_at(images_np, e))
    out.append((f"Maps of image {names[e]}", relative))
  return out


def _similarity_figures(workdir, summary, index: Index, methods, metrics,
                        labels, nulls=()) -> list[tuple[str, str]]:
  """Similarity to the trained model's maps per stage, with each baseline;
  the null baselines as grey dashed lines."""
  out = []
  for metric in metrics:
    curves = _curves(index, methods, metric, len(labels))
    if not curves:
      continue
    baselines = {m: _baseline(summary, index, m, metric)[0] for m in curves}
    relative = f"{FIGURES_DIR}/cascade_similarity_{markdown.safe(metric)}.png"
    figures.metric_vs_stage(
        os.path.join(workdir, relative), curves, labels,
        f"{metric} to the trained model's maps", baselines,
        f"{metric} to the original maps per stage (mean, 95% CI)",
        nulls=_curves(index, nulls, metric, len(labels)))
    out.append((f"{metric} similarity to the original maps per stage", relative))
  return out


def _localization_figures(workdir, index: Index, methods, metrics,
                          labels) -> list[tuple[str, str]]:
  """Localization per stage; dotted line = the trained model's value."""
  out = []
  for metric in metrics:
    curves = _curves(index, methods, metric, len(labels))
    if not curves:
      continue
    trained = {m: float(c[0][0]) for m, c in curves.items()}
    relative = f"{FIGURES_DIR}/cascade_localization_{markdown.safe(metric)}.png"
    figures.metric_vs_stage(
        os.path.join(workdir, relative), curves, labels, metric, trained,
        f"{metric} against the boxes per stage (mean, 95% CI)",
        baseline_style=":", baseline_label="trained model (stage 0)")
    out.append((f"{metric} localization per stage", relative))
  return out


# ----------------------------------------------------------------- report ---

def _distribution_figures(workdir, methods, similarity, localization, labels
                          ) -> list[tuple[str, str]]:
  """Per-image boxes: localization of the trained and the last stage's
  model; similarity of the last stage's maps to the trained model's beside
  the different-image baseline."""
  rows = [r for r in run_figures.result_rows(workdir) if r["experiment"] == "cascade"]
  if not rows or not labels:
    return []
  last = len(labels) - 1
  return run_figures.score_distributions(
      workdir, rows, name="cascade_localization",
      caption="Localization per image: trained vs the last stage",
      metrics=localization, methods=methods,
      groups={labels[0]: {"stage": 0}, labels[last]: {"stage": last}},
      title="Localization per image (boxes: quartiles; dots: images)"
  ) + run_figures.score_distributions(
      workdir, rows, name="cascade_similarity",
      caption="Similarity per image: the last stage's maps vs the trained "
              "model's, and the different-image baseline",
      metrics=similarity, methods=methods,
      groups={f"{labels[last]} vs trained": {"stage": last},
              "different images (baseline)": {
                  "metric": "{metric}" + BASELINE_SUFFIX, "stage": 0}},
      title="Similarity per image (boxes: quartiles; dots: images)")


def _render(config: Any, summary: Mapping[str, Any],
            images_np: Mapping[str, np.ndarray], methods: Sequence[str],
            labels: Sequence[str], index: Index, similarity: Sequence[str],
            localization: Sequence[str],
            written: Mapping[str, list[tuple[str, str]]],
            nulls: Sequence[str] = ()) -> str:
  """The Markdown text of the report."""
  mode = summary.get("mode", "cascade")
  title = {"cascade": "Cascading", "bottom_up": "Bottom-up"}.get(mode, "Independent")
  parts = [
      f"# {title} model-randomization test: `{summary.get('model', '?')}` on "
      f"`{summary.get('dataset', '?')}`\n",
      _what_ran(config, summary, images_np, methods, labels),
      _verdict_section(summary, methods, similarity, labels),
      _null_section(summary, nulls, similarity, labels),
      _emprt_section(summary, index, methods, labels),
      _smprt_section(summary, index, methods, similarity, labels),
      _localization_section(summary, index, methods, localization, labels),
      markdown.excluded_section(markdown.excluded_lines(index), summary, methods),
      _figures_section(written),
      _how_to_read(bool(nulls), any(m.endswith("_signed") for m in similarity)),
  ]
  return "\n".join(p for p in parts if p)


def _what_ran(config, summary, images_np, methods, labels) -> str:
  training = summary.get("training") or {}
  test = training.get("test") or {}
  size = markdown.get(config, "image_size", training.get("image_size"))
  if size is None and len(images_np.get("image", ())):
    size = images_np["image"].shape[1]
  evaluated = len(images_np.get("id", images_np.get("image", ())))
  requested = summary.get("num_images", markdown.get(config, "num_images"))
  images_line = f"{evaluated} random positive test images"
  if requested is not None and requested != evaluated:
    images_line += f" ({requested} requested; the split has fewer positives)"
  plain = [m for m in methods if not m.startswith(SMPRT_PREFIX)]
  smoothed = (f" (and their sMPRT maps `{SMPRT_PREFIX}<method>`)"
              if len(plain) < len(methods) else "")
  mode = summary.get("mode", "cascade")
  how = ("top-down, one more block per stage" if mode == "cascade"
         else "bottom-up, input side first, one more block per stage"
         if mode == "bottom_up"
         else "one block at a time")
  lines = [
      "## What ran\n",
      f"- Dataset: `{summary.get('dataset', markdown.get(config, 'dataset', '?'))}`, "
      f"images {size} x {size}",
      *markdown.data_lines(summary),
      f"- Model: `{summary.get('model', markdown.get(config, 'model', '?'))}`, width "
      f"{markdown.get(config, 'width', training.get('width', '?'))}, trained "
      f"{training.get('steps', '?')} steps",
      f"- Test set ({test.get('num_examples', '?')} images): AUC "
      f"{markdown.num(test.get('auc'))}, accuracy "
      f"{markdown.num(test.get('accuracy'))}, precision "
      f"{markdown.num(test.get('precision'))}, recall "
      f"{markdown.num(test.get('recall'))}",
      f"- Evaluation: {images_line}; explained class: "
      f"{markdown.get(config, 'targets', 'predicted')}",
      f"- Methods: {', '.join(f'`{m}`' for m in plain)}{smoothed}; preset "
      f"`{summary.get('preset', markdown.get(config, 'preset'))}`",
      f"- Randomization: {mode} ({how}); "
      f"seed {markdown.get(config, 'seed', training.get('seed', '?'))}",
  ]
  if training.get("randomize_labels"):
    lines.append("- **The model was trained on randomized labels.**")
  lines += ["", "| Stage | Column | Randomized blocks |", "|---:|---|---|"]
  for s, stage in enumerate(summary.get("stages") or []):
    blocks = _block_list(stage.get("randomized_blocks") or [])
    lines.append(f"| {stage.get('stage', s)} | {labels[s]} | {blocks} |")
  return "\n".join(lines) + "\n"


def _verdict_section(summary, methods, similarity, labels) -> str:
  verdicts = summary.get("verdicts") or {}
  # sMPRT maps are judged in their own section, beside their method.
  methods = [m for m in methods if not m.startswith(SMPRT_PREFIX)]
  chosen = summary.get("verdict_metric")
  metrics = [m for m in similarity if any(m in verdicts.get(x, {}) for x in methods)]
  final = _final_name(summary, labels)
  column = _final_column(summary, labels)
  lines = [
      "## Verdict\n",
      "A method passes when its maps from the fully randomized model are on "
      "average less similar to the original maps than maps of two different "
      "images from the trained model are to each other (Arun et al., "
      "Radiology: AI 2021). Similarity at the last stage "
      f"({final}) and the different-image baseline are means with 95% "
      f"bootstrap intervals. **Verdict** uses `{chosen}`; *upper CI below "
      "baseline* is the stricter reading (the similarity's upper bound below "
      "the baseline mean); *passes under* lists every similarity metric whose "
      "mean falls below its baseline.\n",
  ]
  if summary.get("mode") == "independent":
    lines.append(f"*Independent mode:* the last stage has {final}, so the "
                 "verdict says whether that block alone "
                 "changes the maps, not whether the maps survive a fully "
                 "randomized model.\n")
  lines += markdown.verdict_table(verdicts, methods, metrics, chosen, column)
  if chosen not in metrics:
    lines.append(f"\n`verdict_metric` = `{chosen}` was not computed: no verdict.")
  return "\n".join(lines) + "\n"


def _null_section(summary, nulls, similarity, labels) -> str:
  """The null baselines' own verdicts, apart from the methods'."""
  if not nulls:
    return ""
  verdicts = summary.get("null_verdicts") or {}
  chosen = summary.get("verdict_metric")
  metrics = [m for m in similarity if any(m in verdicts.get(x, {}) for x in nulls)]
  lines = [
      "### Null baselines\n",
      "Maps that know nothing the test is about, judged by the same rule "
      "(Binder et al., CVPR 2023): `null_noise` is uniform noise drawn afresh "
      "at every stage, `null_random_cam` the GradCAM layer under fixed random "
      "channel weights. A null that *passes* shows that passing alone proves "
      "little: a method's verdict means more the further its curve lies "
      "from the nulls'. They are not methods and change no method's verdict.\n",
  ]
  if not verdicts:
    lines.append("No verdicts (the last stage is not a fully randomized model).\n")
    return "\n".join(lines) + "\n"
  lines += markdown.verdict_table(verdicts, nulls, metrics, chosen,
                                  _final_column(summary, labels))
  return "\n".join(lines) + "\n"


def _localization_section(summary, index: Index, methods, metrics, labels) -> str:
  if not metrics:
    return ""
  last = len(labels) - 1
  lines = ["## Localization\n",
           "Each map scored against the union mask of its image's boxes; mean "
           "over images with a 95% bootstrap interval, for the trained model "
           f"and at the last stage ({_final_name(summary, labels)}). A "
           "method whose localization survives randomization localizes the "
           "image, not what the model learned.\n"]
  for metric in metrics:
    lines += [f"### {metric}\n",
              f"| Method | trained | {_final_column(summary, labels)} | "
              "images scored (trained / last) |",
              "|---|---|---|---:|"]
    for method in methods:
      trained = index.get((method, metric, 0))
      randomized = index.get((method, metric, last))
      lines.append(f"| `{method}` | {markdown.interval(markdown.triple(trained))} | "
                   f"{markdown.interval(markdown.triple(randomized))} | "
                   f"{markdown.count(trained)} / {markdown.count(randomized)} |")
    lines.append("")
  return "\n".join(lines)


def _emprt_figures(workdir, index: Index, methods, labels) -> list[tuple[str, str]]:
  """eMPRT of each stage's maps against the trained model's, per stage."""
  curves = _curves(index, methods, "emprt", len(labels))
  if not curves:
    return []
  relative = f"{FIGURES_DIR}/cascade_emprt.png"
  figures.metric_vs_stage(
      os.path.join(workdir, relative), curves, labels,
      "eMPRT (relative entropy rise)", {m: 0.0 for m in curves},
      "eMPRT per stage: relative rise of the maps' histogram entropy (mean, 95% CI)",
      baseline_style=":", baseline_label="no change (0)")
  return [("eMPRT of each stage's maps against the trained model's", relative)]


def _emprt_section(summary, index: Index, methods, labels) -> str:
  """eMPRT at the last stage (Hedström et al. 2023; Quantus' EfficientMPRT)."""
  last = len(labels) - 1
  rows = [(m, index.get((m, "emprt", last))) for m in methods]
  if not any(r for _, r in rows):
    return ""
  options = summary.get("emprt") or {}
  lines = ["## eMPRT\n",
           "Efficient MPRT (Hedström et al., \"Sanity checks revisited\", "
           "2023/2024; Quantus 0.6): the relative rise of the maps' "
           "histogram entropy, (H(randomized) - H(trained)) / H(trained), "
           f"{options.get('bins', 100)} equal-width bins over each map's own "
           "min..max, computed on the post-processed maps. Higher is better: "
           "maps of a randomized model should be noisier than the trained "
           "model's; near 0 means the maps' complexity ignores the weights. "
           "A constant trained map (H = 0) is undefined and excluded. Mean "
           f"over images with a 95% bootstrap interval at the last stage "
           f"({_final_name(summary, labels)}).\n",
           "| Method | eMPRT | images scored |", "|---|---|---:|"]
  for method, row in rows:
    if row:
      lines.append(f"| `{method}` | {markdown.interval(markdown.triple(row))} | "
                   f"{markdown.count(row)} |")
  return "\n".join(lines) + "\n"


def _smprt_section(summary, index: Index, methods, similarity, labels) -> str:
  """Each method beside its sMPRT maps (averaged over noisy inputs) at the
  last stage, with the different-image baseline."""
  pairs = [(m, f"{SMPRT_PREFIX}{m}") for m in methods
           if f"{SMPRT_PREFIX}{m}" in (summary.get("smprt_methods") or [])]
  if not pairs or not similarity:
    return ""
  options = summary.get("smprt") or {}
  last = len(labels) - 1
  lines = ["## sMPRT\n",
           "Smooth MPRT (Hedström et al. 2023/2024; Quantus 0.6): each map "
           f"averaged over {options.get('samples', '?')} copies of the input "
           f"with Gaussian noise (std {options.get('noise', '?')} x the "
           "image's range; the last copy clean) before the comparison, "
           "which removes the shattered-gradient noise that lets noisy maps "
           "look randomized. Similarity at the last stage "
           f"({_final_name(summary, labels)}) to the trained model's maps, "
           "plain and smoothed (`smprt_<method>`, also in every figure), "
           "beside each one's different-image baseline (per-image means).\n"]
  for metric in similarity:
    lines += [f"### {metric}\n",
              "| Method | plain | baseline | sMPRT | sMPRT baseline |",
              "|---|---|---|---|---|"]
    for method, smooth in pairs:
      cells = [index.get((name, key, stage)) for name in (method, smooth)
               for key, stage in ((metric, last), (metric + BASELINE_SUFFIX, 0))]
      lines.append(f"| `{method}` | " + " | ".join(
          markdown.interval(markdown.triple(c)) for c in cells) + " |")
    lines.append("")
  return "\n".join(lines)


def _figures_section(written: Mapping[str, list[tuple[str, str]]]) -> str:
  titles = {"maps": "Maps per stage", "similarity": "Similarity per stage",
            "localization": "Localization per stage",
            "distributions": "Per-image score distributions",
            "emprt": "eMPRT per stage",
            "training": "Training curves"}
  lines = ["## Figures\n"]
  for kind, items in written.items():
    if items:
      lines.append(f"### {titles[kind]}\n")
      lines += [f"![{caption}]({path})\n" for caption, path in items]
  return "\n".join(lines) if len(lines) > 1 else ""


def _how_to_read(nulls: bool = False, signed: bool = False) -> str:
  signed_line = (
      "- Metrics ending in `_signed` compare the signed maps (channel sum "
      "without |.|, divided by the largest magnitude; Adebayo et al. 2018). "
      "Maps that are non-negative by construction (GradCAM after its ReLU, "
      "XRAI, the controls) rank their pixels the same either way, up to the "
      "ties of the absolute maps' 99th-percentile clip.\n" if signed else "")
  null_line = (
      "- Grey dashed lines are the null baselines: `null_noise`, noise drawn "
      "afresh at every stage (near 0 after stage 0: two independent noise "
      "maps), and `null_random_cam` (random channel weights, fixed; it moves "
      "only with the layer's activations). A method near the nulls' lines "
      "has maps as unrelated to the trained model's as noise; a method's "
      "pass says little if the nulls pass too.\n" if nulls else "")
  return (
      "## How to read this\n\n"
      "- A method that explains the model must change when the model's "
      "weights are destroyed. Similarity near 1 at full randomization means "
      "the maps ignore the weights: they show the image (edges, intensity), "
      "not what the classifier learned, however well they localize.\n"
      "- The dashed line per method is the similarity of maps of two "
      "different images from the trained model: a curve that ends below its "
      "line passes.\n"
      "- Top-down randomization keeps activation scales, so noise-like maps "
      "can pass too (Binder et al., CVPR 2023): passing is necessary, not "
      "sufficient; read the verdict together with localization.\n"
      + null_line + signed_line +
      "- Per-image scores are in `results.csv`, aggregates in `summary.json`.\n")


# ---------------------------------------------------------------- helpers ---


def _methods(config, summary, examples) -> list[str]:
  """The config's method order; else the verdicts', the examples', the rows'."""
  methods = list(markdown.get(config, "methods", None) or [])
  for source in (summary.get("verdicts") or {}, examples,
                 {r["method"]: 0 for r in summary.get("aggregates") or []}):
    methods += [m for m in source if m not in methods]
  return methods


def _metric_names(config, summary, index: Index) -> tuple[list[str], list[str]]:
  """(similarity, localization) metrics that have aggregates, config order first."""
  present = list(dict.fromkeys(metric for _, metric, _ in index))
  similarity = [m for m in list(markdown.get(config, "similarity", None) or [])
                + [m for v in (summary.get("verdicts") or {}).values() for m in v]
                + [m[:-len(BASELINE_SUFFIX)] for m in present
                   if m.endswith(BASELINE_SUFFIX)]
                if m in present]
  similarity = list(dict.fromkeys(similarity))
  configured = [m for m in markdown.get(config, "localization", None) or []
                if m in present]
  rest = [m for m in present if m not in similarity and not m.endswith(BASELINE_SUFFIX)
          and m not in RANDOMIZATION_METRICS]
  return similarity, list(dict.fromkeys(configured + rest))


def _index(aggregates: Sequence[Mapping[str, Any]]) -> Index:
  return {(r["method"], r["metric"], int(r["stage"])): r for r in aggregates}


def _curves(index: Index, methods, metric: str, num_stages: int
            ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """method -> (mean, low, high) over stages; NaN where a stage has no row."""
  out = {}
  for method in methods:
    rows = [index.get((method, metric, s)) for s in range(num_stages)]
    if any(rows):
      out[method] = tuple(np.array([markdown.triple(r)[i] for r in rows], np.float64)
                          for i in range(3))
  return out


def _baseline(summary, index: Index, method: str, metric: str
              ) -> tuple[float, float, float]:
  """The verdict's baseline (over all pairs); else the per-image aggregate."""
  verdict = (summary.get("verdicts") or {}).get(method, {}).get(metric)
  if verdict and verdict.get("baseline") is not None:
    return tuple(float(v) for v in verdict["baseline"])
  return markdown.triple(index.get((method, metric + BASELINE_SUFFIX, 0)))




def _final_name(summary, labels) -> str:
  stages = summary.get("stages") or []
  if not stages:
    return labels[-1] if labels else "n/a"
  blocks = stages[-1].get("randomized_blocks") or []
  if summary.get("mode") == "independent":
    return f"only `{blocks[-1]}` re-initialized" if blocks else "the trained model"
  side = "bottom" if summary.get("mode") == "bottom_up" else "top"
  return f"the {side} {len(blocks)} blocks re-initialized"


def _block_list(blocks: Sequence[str]) -> str:
  """Blocks of one stage; a long cascade prefix shortened to its ends."""
  if not blocks:
    return "none"
  if len(blocks) > 3:  # the column labels already name every block in turn
    return f"`{blocks[0]}` through `{blocks[-1]}` ({len(blocks)} blocks)"
  return ", ".join(f"`{b}`" for b in blocks)


def _final_column(summary, labels) -> str:
  """Short column name for the last stage."""
  if summary.get("mode", "cascade") in ("cascade", "bottom_up"):
    return "fully randomized"
  return labels[-1] if labels else "last stage"


def _example_stages(examples: Mapping[str, np.ndarray]) -> int:
  return max((np.asarray(v).shape[0] for v in examples.values()), default=0)
