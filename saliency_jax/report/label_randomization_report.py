"""The label-randomization report: memorization, verdicts, localization, maps.

Turns what ``experiments/label_randomization.py`` computed into the test of
Adebayo et al. (NeurIPS 2018, Sec. 4) as Arun et al. (Radiology: AI 2021)
ran it: did the randomized-label model memorize its labels, does each
method's map change when the labels carry no information, and how much
localization is lost.

Writes ``workdir/figures/label_randomization_*.png`` and ``workdir/report.md``.
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
REPORT = "report.md"
COLUMNS = ("trained", "randomized labels")


def write(workdir: str, config: Any, summary: Mapping[str, Any],
          examples: Mapping[str, np.ndarray],
          images_np: Mapping[str, np.ndarray]) -> None:
  """Writes the figures and ``report.md`` of one label-randomization run.

  Args:
    workdir: the run's directory.
    config: the run's ConfigDict (read with ``.get``).
    summary: what ``label_randomization._summarize`` returned.
    examples: method -> (2, E, H, W) maps in [0, 1] (trained, randomized
      labels) of the first E evaluation images.
    images_np: the evaluation images (``image``, ``boxes``, ``num_boxes``, ``id``).
  """
  # Null baselines are drawn and judged apart from the methods.
  nulls = list(summary.get("null_baselines") or [])
  methods = [m for m in summary.get("methods") or [] if m not in nulls]
  index = markdown.index(summary.get("aggregates") or [])
  written = {
      "difference": _difference_figure(workdir, summary, methods),
      "maps": _map_figures(workdir, summary, examples, images_np, methods),
      "distributions": _distribution_figures(workdir, summary, methods, index,
                                             nulls),
      "training": run_figures.training_curves(
          workdir, config, {COLUMNS[0]: summary.get("training"),
                            COLUMNS[1]: (summary.get("memorization") or {}).get(
                                "training")},
          "label_randomization",
          f"Training of {summary.get('model', 'the model')} on true and on "
          "permuted labels"),
  }
  parts = [
      f"# Label randomization test: `{summary.get('model', '?')}` on "
      f"`{summary.get('dataset', '?')}`\n",
      _what_ran(config, summary, methods),
      _memorization_section(summary),
      _verdict_section(summary, methods),
      _null_section(summary, nulls),
      _localization_section(summary, index, methods),
      markdown.excluded_section(markdown.excluded_lines(index), summary, methods),
      markdown.figures_section(written, {
          "difference": "Localization lost with the labels",
          "maps": "Maps of both models",
          "distributions": "Per-image score distributions",
          "training": "Training curves"}),
      _how_to_read(bool(nulls)),
  ]
  markdown.write_report(workdir, "\n".join(p for p in parts if p))


# ---------------------------------------------------------------- figures ---

def _difference_figure(workdir, summary, methods) -> list[tuple[str, str]]:
  """Bars: trained minus randomized-label localization, per metric and method."""
  differences = summary.get("localization_difference") or {}
  values = {metric: {m: tuple(rows[m]["difference"]) for m in methods if m in rows}
            for metric, rows in differences.items() if rows}
  if not values:
    return []
  relative = f"{FIGURES_DIR}/label_randomization_localization_difference.png"
  figures.metric_bars(
      os.path.join(workdir, relative), values,
      "trained minus randomized labels (mean, 95% CI)",
      f"Localization lost when {summary.get('model', '')} is trained on "
      "permuted labels")
  return [("Localization of the trained model minus the randomized-label "
           "model's", relative)]


def _distribution_figures(workdir, summary, methods, index=None, nulls=()
                          ) -> list[tuple[str, str]]:
  """Per-image boxes: both models' localization; the randomized-label
  model's similarity to the trained one's maps beside the baseline, the
  null baselines' mean similarities as grey dashed lines."""
  rows = [r for r in run_figures.result_rows(workdir)
          if r["experiment"] == "label_randomization"]
  return run_figures.score_distributions(
      workdir, rows, name="label_randomization_localization",
      caption="Localization per image: trained vs randomized-label model",
      metrics=summary.get("localization") or [], methods=methods,
      groups={COLUMNS[0]: {"stage": 0}, COLUMNS[1]: {"stage": 1}},
      title="Localization per image (boxes: quartiles; dots: images)"
  ) + run_figures.score_distributions(
      workdir, rows, name="label_randomization_similarity",
      caption="Similarity per image: randomized-label vs trained model's maps, "
              "and the different-image baseline",
      metrics=similarity_names(summary), methods=methods,
      groups={"randomized labels vs trained": {"stage": 1},
              "different images (baseline)": {
                  "metric": "{metric}_different_images", "stage": 0}},
      title="Similarity per image (boxes: quartiles; dots: images)",
      nulls=null_means(index or {}, nulls, similarity_names(summary)))


def null_means(index, nulls, metrics) -> dict[str, dict[str, float]]:
  """metric -> null baseline -> its mean similarity of the two models' maps
  (stage 1), from the aggregates' ``index`` (:func:`markdown.index`)."""
  out = {}
  for metric in metrics:
    means = {n: markdown.triple(index.get((n, metric, 1)))[0] for n in nulls}
    out[metric] = {n: v for n, v in means.items() if np.isfinite(v)}
  return out


def similarity_names(summary) -> list[str]:
  """The similarity metrics of the rows: ``similarity``, then ``<metric>_signed``
  of ``signed_similarity`` (runner.similarity_names)."""
  return (list(summary.get("similarity") or [])
          + [f"{m}_signed" for m in summary.get("signed_similarity") or []])


def _map_figures(workdir, summary, examples, images_np, methods
                 ) -> list[tuple[str, str]]:
  """One grid per example image: rows = methods, columns = the two models."""
  shown = [m for m in methods if m in examples]
  if not shown:
    return []
  count = min(min(np.asarray(examples[m]).shape[1] for m in shown),
              len(images_np["image"]))
  names = markdown.image_names(images_np, count)
  out = []
  for e in range(count):
    maps = np.stack([np.asarray(examples[m])[:, e] for m in shown])  # (M, 2, H, W)
    relative = f"{FIGURES_DIR}/label_randomization_maps_{names[e]}.png"
    figures.map_grid(
        os.path.join(workdir, relative), images_np["image"][e],
        images_np["boxes"][e], int(images_np["num_boxes"][e]), maps, shown,
        list(COLUMNS),
        f"{summary.get('model', '')}, image {names[e]}: trained vs "
        "randomized labels", mask=figures.mask_at(images_np, e))
    out.append((f"Maps of image {names[e]}", relative))
  return out


# ----------------------------------------------------------------- report ---

def _what_ran(config, summary, methods) -> str:
  training = summary.get("training") or {}
  memorization = summary.get("memorization") or {}
  explained = summary.get("explained_classes") or {}
  size = summary.get("image_size", markdown.get(config, "image_size"))
  evaluated = summary.get("num_images", "?")
  requested = summary.get("num_images_requested")
  images_line = f"{evaluated} random positive test images"
  if requested is not None and requested != evaluated:
    images_line += f" ({requested} requested; the split has fewer positives)"
  targets = summary.get("targets", "predicted")
  target_line = ("each model's own predicted class, as both papers explained "
                 "the predicted class" if targets == "predicted"
                 else "the true label, for both models")
  counts = "; ".join(f"{name}: {', '.join(f'class {k} x {v}' for k, v in enumerate(c))}"
                     for name, c in explained.items())
  return "\n".join([
      "## What ran\n",
      f"- Dataset: `{summary.get('dataset', '?')}`, images {size} x {size}",
      *markdown.data_lines(summary),
      f"- Trained model: `{summary.get('model', '?')}`, width "
      f"{summary.get('width', '?')}, {training.get('steps', '?')} steps; "
      + markdown.training_line(training, "test set"),
      f"- Randomized-label model: the same architecture, initialization and "
      f"seed, trained on {memorization.get('num_train', '?')} training labels "
      "permuted across images (a fraction "
      f"{markdown.num(memorization.get('label_agreement'))} of them equal the "
      "true label by chance)"
      + "".join(f"; {d}" for d in memorization.get("differences") or []),
      f"- Evaluation: {images_line}; explained class: {target_line}"
      + (f" ({counts})" if counts else ""),
      f"- Methods: {', '.join(f'`{m}`' for m in methods)}; preset "
      f"`{summary.get('preset')}`; the same noise key for both models; seed "
      f"{summary.get('seed', markdown.get(config, 'seed', '?'))}",
  ]) + "\n"


def _memorization_section(summary) -> str:
  record = summary.get("memorization") or {}
  if not record:
    return ""
  target = markdown.num(record.get("target_train_accuracy"))
  accuracy = markdown.num(record.get("train_accuracy"))
  if record.get("reached"):
    outcome = (f"**Memorized**: accuracy {accuracy} on the permuted training "
               f"labels after {record.get('steps')} steps reached the target "
               f"{target} (budget {record.get('max_steps')} steps).")
  else:
    outcome = (f"**Not memorized**: the step budget ({record.get('max_steps')} "
               f"steps) was spent with accuracy {accuracy} on the permuted "
               f"training labels, below the target {target}. The model has "
               "only partly fit its random labels, so it sits between an "
               "untrained and a memorizing model: read the verdicts with "
               "that in mind, or raise `label_randomization.max_steps`.")
  lines = ["## Memorization\n",
           "The randomized-label model trains in rounds of "
           f"{record.get('round_steps')} steps, each continued from the last "
           "checkpoint, until its accuracy on the permuted labels it was "
           "trained with (eval mode, no augmentation) reaches the target or "
           "the budget is spent.\n",
           outcome + "\n",
           "| Round | Steps | Train accuracy (permuted labels) | Test AUC (true labels) |",
           "|---:|---:|---:|---:|"]
  for r, round_ in enumerate(record.get("rounds") or [], start=1):
    lines.append(f"| {r} | {round_['steps']} | {markdown.num(round_['train_accuracy'])} | "
                 f"{markdown.num(round_.get('test_auc'))} |")
  training = record.get("training") or {}
  lines.append("\nRandomized-label model, " + markdown.training_line(training, "test set")
               + " (near chance when the labels carry nothing).")
  return "\n".join(lines) + "\n"


def _judged(verdicts, names, summary) -> list[str]:
  """The similarity metrics with a verdict for any of ``names``."""
  return [m for m in similarity_names(summary)
          if any(m in verdicts.get(x, {}) for x in names)]


def _verdict_section(summary, methods) -> str:
  verdicts = summary.get("verdicts") or {}
  chosen = summary.get("verdict_metric")
  metrics = _judged(verdicts, methods, summary)
  lines = [
      "## Verdict\n",
      "A method passes when its maps of the randomized-label model are on "
      "average less similar to its maps of the trained model than maps of two "
      "different images from the trained model are to each other (Arun et "
      "al., Radiology: AI 2021). Means with 95% bootstrap intervals. "
      f"**Verdict** uses `{chosen}`; *upper CI below baseline* is the stricter "
      "reading; *passes under* lists every similarity metric whose mean falls "
      "below its baseline.\n",
  ]
  lines += markdown.verdict_table(verdicts, methods, metrics, chosen,
                                  "trained vs randomized labels")
  if chosen not in metrics:
    lines.append(f"\n`verdict_metric` = `{chosen}` was not computed: no verdict.")
  return "\n".join(lines) + "\n"


def _null_section(summary, nulls) -> str:
  """The null baselines' own verdicts, apart from the methods'."""
  if not nulls:
    return ""
  verdicts = summary.get("null_verdicts") or {}
  lines = [
      "### Null baselines\n",
      "Maps that know nothing the test is about, judged by the same rule "
      "(Binder et al., CVPR 2023): `null_noise` is uniform noise drawn afresh "
      "for each model, `null_random_cam` the GradCAM layer under the same "
      "random channel weights for both models. A null that *passes* shows "
      "that passing alone proves little: a method's verdict means more the "
      "further its similarity lies from the nulls'. They are not methods and "
      "change no method's verdict.\n",
  ]
  lines += markdown.verdict_table(verdicts, nulls, _judged(verdicts, nulls, summary),
                                  summary.get("verdict_metric"),
                                  "trained vs randomized labels")
  return "\n".join(lines) + "\n"


def _localization_section(summary, index, methods) -> str:
  differences = summary.get("localization_difference") or {}
  if not differences:
    return ""
  lines = ["## Localization: trained vs randomized labels\n",
           "Each map scored against the union mask of its image's boxes; means "
           "with 95% bootstrap intervals. The difference is per image, trained "
           "minus randomized labels, with a two-sided paired Wilcoxon test "
           "(Holm-adjusted over the methods). A method whose localization "
           "does not drop localizes without what the model learned.\n"]
  for metric, rows in differences.items():
    lines += [f"### {metric}\n",
              "| Method | trained | randomized labels | difference | Wilcoxon p "
              "| p (Holm) | images |",
              "|---|---|---|---|---:|---:|---:|"]
    for method in methods:
      row = rows.get(method) or {}
      lines.append(
          f"| `{method}` | {markdown.interval(markdown.triple(index.get((method, metric, 0))))} | "
          f"{markdown.interval(markdown.triple(index.get((method, metric, 1))))} | "
          f"{markdown.interval(row.get('difference'))} | "
          f"{markdown.p_value(row.get('p'))} | {markdown.p_value(row.get('p_holm'))} | "
          f"{row.get('n', 'n/a')} |")
    lines.append("")
  return "\n".join(lines)


def _how_to_read(nulls: bool = False) -> str:
  null_line = (
      "- Grey dashed lines in the similarity figure are the null baselines' "
      "mean similarities: `null_noise`, noise drawn afresh for each model "
      "(near 0: where maps that ignore model and image sit), and "
      "`null_random_cam` (random channel weights, the same for both models; "
      "it moves only with the layer's activations). A method near the nulls "
      "changes as much as noise does; a pass says little if the nulls pass "
      "too.\n" if nulls else "")
  return (
      "## How to read this\n\n"
      "- Permuting the labels keeps the images and the class balance but "
      "removes every link between them; a model that memorizes such labels "
      "has learned nothing about the abnormality. Maps that still look like "
      "the trained model's maps (similarity above the different-image "
      "baseline) show the image, not the model's evidence.\n"
      "- A model that did not reach the memorization target has fit its "
      "random labels only partly; it is a weaker stand-in for a model that "
      "learned nothing but its labels, and the verdict says less.\n"
      "- Both models' maps explain each model's own predicted class; a "
      "randomized-label model may predict another class than the trained one "
      "for the same image (counts under *What ran*).\n"
      + null_line +
      "- Per-image scores are in `results.csv` (stage 0: trained model; "
      "stage 1: randomized labels), aggregates and tests in `summary.json`.\n")
