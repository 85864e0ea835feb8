"""Reusable figures for the experiment reports (matplotlib, no pyplot state).

Every function draws one figure and saves it as a PNG atomically (temporary
file in the same folder, then a rename), so a report never links a
half-written image. Figures are built on ``matplotlib.figure.Figure``
directly: no global pyplot state, no backend choice (PNG output renders with
Agg), nothing to close.

Saliency maps are post-processed as in Arun et al. (Radiology: AI 2021):
values in [0, 1], shown with a perceptual colormap on a fixed [0, 1] scale so
that panels of one grid compare directly.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib import patches
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from saliency_jax import io_utils

DPI = 120
MAP_CMAP = "inferno"
BOX_COLOR = "red"
# Widest a map grid gets before its cells shrink (inches); 13 columns (the
# image + 12 stages, the journal cascade) still get ~1.1 inch cells.
_GRID_MAX_WIDTH = 15.0
_CELL_MIN, _CELL_MAX = 1.1, 2.2
_FONT = 9

IMAGE_ERROR = ("map_grid: image must be (H, W) or (H, W, C) with C in (1, 3), "
               "got shape {shape}")
MAPS_ERROR = ("map_grid: maps must be (methods, stages, H, W) matching {methods} "
              "method names, {stages} stage labels and the image's (H, W) = {hw}; "
              "got shape {shape}")
CURVE_ERROR = ("metric_vs_stage: curve {name!r} must be three arrays (mean, low, "
               "high) of {stages} values (one per stage label), got shapes {shapes}")


def box_patches(boxes: np.ndarray, num_boxes: int
                ) -> list[tuple[float, float, float, float]]:
  """The first ``num_boxes`` boxes as rectangles in ``imshow`` data coordinates.

  Boxes are ``(x, y, w, h)`` in pixels, (x, y) the top-left corner (RSNA
  convention), covering pixels x <= col < x + w and y <= row < y + h (as
  ``data.synthetic.rasterize_boxes``). ``imshow`` centres pixel (row, col) at
  (col, row), so the rectangle that encloses exactly those pixels starts half
  a pixel up and left: (x - 0.5, y - 0.5, w, h). Padding rows past
  ``num_boxes`` are ignored.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  count = max(0, min(int(num_boxes), boxes.shape[0]))
  return [(float(x) - 0.5, float(y) - 0.5, float(w), float(h))
          for x, y, w, h in boxes[:count]]


def map_grid(path: str, image: np.ndarray, boxes: np.ndarray, num_boxes: int,
             maps: np.ndarray, method_names: Sequence[str],
             stage_labels: Sequence[str], title: str, *,
             boxes_on_maps: bool = False, mask: np.ndarray | None = None) -> None:
  """Rows = methods; columns = the image with its boxes, then one map per stage.

  The layout of the papers' panels (Adebayo et al. 2018 Fig. 2; Arun et al.
  2021): reading a row left to right shows what a method's map does as the
  model changes. Also used with two columns for replicate or architecture
  pairs (repeatability, reproducibility).

  Args:
    path: PNG to write.
    image: (H, W) or (H, W, C), values in [0, 1].
    boxes: (K, 4) boxes (x, y, w, h), x, y the top-left corner.
    num_boxes: how many leading rows of ``boxes`` are real.
    maps: (M methods, S stages, H, W) post-processed maps in [0, 1].
    method_names: M row labels.
    stage_labels: S column labels (e.g. 'trained', '+predictions', ...).
    title: figure title.
    boxes_on_maps: also outline the boxes on every map.
    mask: (H, W) ground-truth mask, outlined on the image when there are no
      boxes (SIIM-ACR masks, mask-PNG folders).
  """
  image = _display_image(image)
  maps = np.asarray(maps, np.float32)
  num_methods, num_stages = len(method_names), len(stage_labels)
  if maps.shape != (num_methods, num_stages) + image.shape[:2]:
    raise ValueError(MAPS_ERROR.format(methods=num_methods, stages=num_stages,
                                       hw=image.shape[:2], shape=maps.shape))
  rects = box_patches(boxes, num_boxes)
  outline = not rects and mask is not None and bool(np.any(mask))
  cell = float(np.clip(_GRID_MAX_WIDTH / (num_stages + 1), _CELL_MIN, _CELL_MAX))
  fig = Figure(figsize=(cell * (num_stages + 1) + 2.4, cell * num_methods + 0.9),
               layout="constrained")
  axes = np.asarray(fig.subplots(num_methods, num_stages + 1, squeeze=False))
  titles, rotate = _column_titles(stage_labels, cell)
  mappable = None
  for m, name in enumerate(method_names):
    _show(axes[m, 0], image, cmap="gray" if image.ndim == 2 else None)
    _draw_boxes(axes[m, 0], rects, BOX_COLOR, 1.5)
    if outline:
      axes[m, 0].contour(np.asarray(mask, np.float32), levels=[0.5], colors=BOX_COLOR,
                         linewidths=1.2)
    axes[m, 0].set_ylabel(name, rotation=0, ha="right", va="center",
                          fontsize=_FONT + 1)
    for s in range(num_stages):
      mappable = _show(axes[m, s + 1], maps[m, s], cmap=MAP_CMAP)
      if boxes_on_maps:
        _draw_boxes(axes[m, s + 1], rects, "cyan", 0.8)
  axes[0, 0].set_title("image + mask" if outline else "image + boxes", fontsize=_FONT)
  for s, label in enumerate(titles):
    axes[0, s + 1].set_title(label, fontsize=_FONT, rotation=rotate,
                             ha="left" if rotate else "center")
  # One scale for every map (all are in [0, 1]); short for tall grids.
  colorbar = fig.colorbar(mappable, ax=axes[:, 1:], fraction=0.02, pad=0.01,
                          shrink=min(1.0, 4 / num_methods + 0.3))
  colorbar.set_label("saliency (normalized)", fontsize=_FONT)
  colorbar.ax.tick_params(labelsize=_FONT - 1)
  fig.suptitle(title, fontsize=_FONT + 3)
  save(fig, path)


def mask_at(images: Mapping[str, np.ndarray], e: int) -> np.ndarray | None:
  """Image ``e``'s ground-truth mask from a batch of examples, if it has masks."""
  return images["mask"][e] if "mask" in images else None


def metric_vs_stage(path: str,
                    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                    stage_labels: Sequence[str], ylabel: str,
                    baselines: Mapping[str, float] | None, title: str, *,
                    baseline_style: str = "--",
                    baseline_label: str = "different-image baseline",
                    xlabel: str = "randomization stage",
                    panels: bool | None = None,
                    nulls: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
                    | None = None) -> None:
  """One line per method over the stages, a shaded 95% band, optional baselines.

  Adebayo et al. (2018) Fig. 4 / Arun et al. (2021): similarity to the
  original maps as more blocks are re-initialized. Each method's baseline
  (for similarity: two different images of the trained model) is a
  horizontal line in the method's color; a line ending below its baseline
  is a pass.

  Args:
    path: PNG to write.
    curves: method -> (mean, low, high), each (S,); NaN points are skipped.
    stage_labels: S x tick labels.
    ylabel: y axis label.
    baselines: method -> value, or None for no baseline lines.
    title: figure title.
    baseline_style: line style of the baselines ('--' dashed, ':' dotted).
    baseline_label: legend text for the baseline lines.
    xlabel: x axis label.
    panels: one panel per method (shared axes) instead of one axes; None
      chooses panels beyond 4 methods, where overlapping bands and baseline
      lines stop being readable.
    nulls: null baseline -> (mean, low, high), each (S,): grey dashed lines
      (one grey per null, no band) in every panel, where a map that ignores
      the model would sit (Binder et al., CVPR 2023).
  """
  num_stages = len(stage_labels)
  checked = {name: _curve(name, c, num_stages) for name, c in curves.items()}
  colors = dict(zip(checked, _colors(len(checked))))
  panels = len(checked) > 4 if panels is None else panels
  columns = min(4, max(len(checked), 1)) if panels else 1
  rows = -(-max(len(checked), 1) // columns) if panels else 1
  width = (1.2 + 0.18 * num_stages) * columns + 1.0 if panels else 0.55 * num_stages + 4.0
  fig = Figure(figsize=(max(6.5, width), 3.0 * rows + 1.4 if panels else 4.8),
               layout="constrained")
  axes = np.asarray(fig.subplots(rows, columns, squeeze=False, sharex=True,
                                 sharey=True)).reshape(-1)
  for i, (name, (mean, low, high)) in enumerate(checked.items()):
    ax = axes[i] if panels else axes[0]
    ax.plot(mean, marker="o", markersize=3.5, color=colors[name], label=name)
    ax.fill_between(np.arange(num_stages), low, high, color=colors[name],
                    alpha=0.18, linewidth=0)
    value = (baselines or {}).get(name)
    if value is not None and np.isfinite(value):
      ax.axhline(value, color=colors[name], linestyle=baseline_style, linewidth=1.2)
    if panels:
      ax.set_title(name, fontsize=_FONT + 1)
  greys = dict(zip(nulls or {}, ("0.45", "0.7", "0.25", "0.85")))
  for name, (mean, _, _) in ((n, _curve(n, c, num_stages))
                             for n, c in (nulls or {}).items()):
    for i, ax in enumerate(axes[:len(checked)] if panels else axes[:1]):
      ax.plot(mean, color=greys.get(name, "0.5"), linestyle=(0, (4, 2)),
              linewidth=1.3, marker=".", markersize=3,
              label=name if i == 0 else None)
  for ax in axes[len(checked):] if panels else axes[1:]:
    ax.set_visible(False)
  if baselines:
    # One legend entry explains every baseline line (they share the style).
    axes[0].plot([], [], color="0.3", linestyle=baseline_style, label=baseline_label)
  _stage_axes(fig, axes.reshape(rows, columns), stage_labels, xlabel, ylabel,
              num_shown=len(checked) if panels else 1)
  fig.suptitle(title, fontsize=_FONT + 2)
  # Panels carry the method in their titles; the legend explains the lines.
  if not panels:
    # An axes legend beside the plot: constrained layout makes room for it,
    # and it stays below the figure title (a figure legend would not).
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                   fontsize=_FONT, frameon=False)
  elif baselines or nulls:
    handles = [line for line in axes[0].get_lines()
               if line.get_label() in set(nulls or {}) | {baseline_label}]
    fig.legend(handles=handles, loc="outside upper right",
               fontsize=_FONT, frameon=False)
  save(fig, path)


def _curve(name: str, curve, num_stages: int) -> tuple[np.ndarray, ...]:
  mean, low, high = (np.asarray(v, np.float64) for v in curve)
  if not mean.shape == low.shape == high.shape == (num_stages,):
    raise ValueError(CURVE_ERROR.format(name=name, stages=num_stages,
                                        shapes=(mean.shape, low.shape, high.shape)))
  return mean, low, high


def _stage_axes(fig: Figure, axes: np.ndarray, stage_labels: Sequence[str],
                xlabel: str, ylabel: str, num_shown: int) -> None:
  """Stage tick labels on each column's lowest visible axes; grids; labels."""
  rows, columns = axes.shape
  num_stages = len(stage_labels)
  for index, ax in enumerate(axes.reshape(-1)):
    ax.grid(alpha=0.3)
    # With shared x, the lowest visible panel of a column shows the labels.
    lowest = index + columns >= num_shown
    # Shared axes share the tick formatter: every axes gets the same labels
    # (and its own rotation); only the visibility differs.
    ax.set_xticks(np.arange(num_stages), list(stage_labels),
                  rotation=45 if columns == 1 else 90, ha="right",
                  rotation_mode="anchor", fontsize=_FONT)
    ax.tick_params(axis="x", labelbottom=lowest)
  axes[0, 0].set_xlim(-0.3, num_stages - 0.7)
  if columns == 1 and rows == 1:
    axes[0, 0].set_xlabel(xlabel, fontsize=_FONT + 1)
    axes[0, 0].set_ylabel(ylabel, fontsize=_FONT + 1)
  else:
    fig.supxlabel(xlabel, fontsize=_FONT + 1)
    fig.supylabel(ylabel, fontsize=_FONT + 1)


def metric_bars(path: str,
                values: Mapping[str, Mapping[str, tuple[float, float, float]]],
                ylabel: str, title: str) -> None:
  """Grouped bars with 95% intervals: x = methods, one bar per group.

  For comparisons of a few conditions per method: intra- vs inter-architecture
  similarity (Arun et al. 2021 repeatability / reproducibility), localization
  of the trained vs the label-randomized model.

  Args:
    path: PNG to write.
    values: group -> method -> (mean, low, high); a missing method is skipped,
      NaN means draw nothing.
    ylabel: y axis label.
    title: figure title.
  """
  methods = list(dict.fromkeys(m for group in values.values() for m in group))
  groups = list(values)
  x = np.arange(len(methods))
  width = 0.8 / max(len(groups), 1)
  fig = Figure(figsize=(max(6.0, 0.9 * len(methods) + 3.0), 4.6), layout="constrained")
  ax = fig.subplots()
  for g, (group, color) in enumerate(zip(groups, _colors(len(groups)))):
    mean, low, high = (np.array([values[group].get(m, (np.nan,) * 3)[i] for m in methods],
                                np.float64) for i in range(3))
    # errorbar needs non-negative extents; an interval that misses the mean
    # (or NaN) gets none.
    yerr = np.nan_to_num(np.stack([mean - low, high - mean]).clip(min=0))
    offset = (g - (len(groups) - 1) / 2) * width
    ax.bar(x + offset, mean, width * 0.9, color=color, alpha=0.85, label=group)
    ax.errorbar(x + offset, mean, yerr=yerr, fmt="none", ecolor="black",
                elinewidth=1, capsize=3)
  ax.set_xticks(x, methods, rotation=30, ha="right", rotation_mode="anchor",
                fontsize=_FONT)
  ax.set_ylabel(ylabel, fontsize=_FONT + 1)
  ax.axhline(0, color="0.5", linewidth=0.8)
  ax.grid(axis="y", alpha=0.3)
  fig.suptitle(title, fontsize=_FONT + 2)
  fig.legend(loc="outside right upper", fontsize=_FONT, frameon=False)
  save(fig, path)


def perturbation_curves(path: str,
                        panels: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
                        controls: Sequence[str], title: str, *,
                        xlabel: str = "fraction of pixels",
                        ylabel: str = "probability of the explained class") -> None:
  """Curves over a perturbed fraction, one panel per kind, 95% bands shaded.

  Deletion and insertion curves (Petsiuk et al., BMVC 2018): one line per
  map, the mean over images with its bootstrap band; controls dashed, so
  a method's curve reads against maps that ignore the model.

  Args:
    path: PNG to write.
    panels: panel title -> map name -> ``fractions``, ``mean``, ``low``,
      ``high`` (equal lengths); NaN points are not drawn.
    controls: the names drawn dashed.
    title: figure title.
    xlabel: x axis label.
    ylabel: y axis label.
  """
  names = list(dict.fromkeys(n for curves in panels.values() for n in curves))
  colors = dict(zip(names, _colors(len(names))))
  fig = Figure(figsize=(5.0 * max(len(panels), 1) + 2.2, 4.4), layout="constrained")
  axes = np.asarray(fig.subplots(1, max(len(panels), 1), squeeze=False,
                                 sharey=True)).reshape(-1)
  for ax, (panel, curves) in zip(axes, panels.items()):
    for name, curve in curves.items():
      x, mean, low, high = (np.asarray(curve[k], np.float64)
                            for k in ("fractions", "mean", "low", "high"))
      style = "--" if name in controls else "-"
      label = f"{name} (control)" if name in controls else name
      ax.plot(x, mean, style, color=colors[name], marker="o", markersize=2.5,
              label=label)
      ax.fill_between(x, low, high, color=colors[name], alpha=0.15, linewidth=0)
    ax.set_title(panel, fontsize=_FONT + 1)
    ax.set_xlabel(xlabel, fontsize=_FONT + 1)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel(ylabel, fontsize=_FONT + 1)
  fig.suptitle(title, fontsize=_FONT + 2)
  handles, labels = axes[0].get_legend_handles_labels()
  if handles:
    fig.legend(handles, labels, loc="outside right upper", fontsize=_FONT,
               frameon=False)
  save(fig, path)


# Training curves: panel title -> metrics.jsonl key.
CURVE_PANELS = (("training loss", "train_loss"), ("training accuracy", "train_accuracy"),
                ("validation AUC", "val_auc"))


def training_curves(path: str,
                    records: Mapping[str, Sequence[Mapping[str, float]]]
                    | Sequence[Mapping[str, float]],
                    title: str = "Training curves") -> None:
  """Loss, training accuracy and validation AUC against the step: three panels.

  One line per model (a model's ``metrics.jsonl`` records, e.g. replicates
  or two architectures), in one color across the panels. Training loss and
  accuracy are means over the steps since the previous record; validation
  AUC exists at evaluation steps only. Non-finite values are left out (a
  panel with none says so), a single record is drawn as a point.

  Args:
    path: PNG to write.
    records: model label -> its records (dicts with ``step`` and some of
      ``train_loss``, ``train_accuracy``, ``val_auc``), or one model's records.
    title: figure title.
  """
  if not isinstance(records, Mapping):
    records = {"": records}
  colors = dict(zip(records, _colors(len(records))))
  fig = Figure(figsize=(13.0, 3.9), layout="constrained")
  axes = fig.subplots(1, len(CURVE_PANELS), squeeze=False)[0]
  for ax, (name, key) in zip(axes, CURVE_PANELS):
    drawn = False
    for label, model_records in records.items():
      steps, values = _series(model_records, key)
      if steps.size:
        # Markers where lines cannot show much: a few points, or one.
        ax.plot(steps, values, color=colors[label], label=label or None,
                marker="o" if steps.size <= 20 else None, markersize=3.5)
        drawn = True
    if not drawn:
      ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center",
              va="center", fontsize=_FONT, color="0.4")
    ax.set_title(name, fontsize=_FONT + 1)
    ax.set_xlabel("step", fontsize=_FONT)
    ax.tick_params(labelsize=_FONT - 1)
    ax.grid(alpha=0.3)
  if any(records):
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:  # no model has a finite loss: any panel with lines
      for ax in axes[1:]:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
          break
    if handles:
      fig.legend(handles, labels, loc="outside right upper", fontsize=_FONT,
                 frameon=False)
  fig.suptitle(title, fontsize=_FONT + 2)
  save(fig, path)


def _series(records: Sequence[Mapping[str, float]], key: str
            ) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of the records with a finite ``key``, in step order."""
  pairs = sorted((float(r["step"]), float(r[key])) for r in records
                 if r.get(key) is not None and "step" in r
                 and np.isfinite(float(r[key])))
  if not pairs:
    return np.zeros(0), np.zeros(0)
  steps, values = np.asarray(pairs, np.float64).T
  return steps, values


def score_distributions(path: str, rows: Sequence[Mapping[str, object]], *,
                        metrics: Sequence[str], methods: Sequence[str],
                        groups: Mapping[str, Mapping[str, object]
                                        | Sequence[Mapping[str, object]]] | None = None,
                        title: str, ylabel: str = "per-image score",
                        nulls: Mapping[str, Mapping[str, float]] | None = None) -> int:
  """Per-image scores as box plots: one panel per metric, x = methods.

  What the means and intervals of the tables hide: the spread over images,
  skew, a few images that carry a mean. Each method gets one box per group
  (e.g. the trained and the fully randomized model), the images' values as
  dots over it; non-finite values (undefined, INVALID) are left out.

  Args:
    path: PNG to write.
    rows: result rows (``results.FIELDS``: method, metric, stage, value, ...).
    metrics: the panels, in order; a metric without finite values is left
      out.
    methods: the x positions, in order.
    groups: group label -> column values its rows must have, or a list of
      such (rows matching any: pairs pooled in a group); a ``metric`` value
      is a template with ``{metric}`` for the panel's metric (e.g.
      ``{"metric": "{metric}_different_images", "stage": 0}``). None: one
      group, every row of the panel's metric.
    title: figure title.
    ylabel: y axis label.
    nulls: metric -> null baseline -> its mean: one grey dashed horizontal
      line per null in that metric's panel (where a map that ignores model
      and image sits), as :func:`metric_vs_stage` draws them.

  Returns:
    The number of panels drawn (0: no finite value at all, nothing written).
  """
  groups = dict(groups or {"": {}})
  null_names = list(dict.fromkeys(n for by in (nulls or {}).values() for n in by))
  greys = dict(zip(null_names, ("0.45", "0.7", "0.25", "0.85")))
  panels = {}
  for metric in metrics:
    values = {(g, m): _group_values(rows, metric, m, where)
              for g, where in groups.items() for m in methods}
    if any(v.size for v in values.values()):
      panels[metric] = values
  if not panels:
    return 0
  columns = min(3, len(panels))
  num_rows = -(-len(panels) // columns)
  width = max(4.5, 0.45 * len(methods) * len(groups) + 1.8)
  fig = Figure(figsize=(min(width * columns, 18.0), 3.6 * num_rows + 1.0),
               layout="constrained")
  axes = np.asarray(fig.subplots(num_rows, columns, squeeze=False)).reshape(-1)
  colors = dict(zip(groups, _colors(len(groups))))
  box_width = 0.8 / len(groups)
  jitter = np.random.default_rng(0)  # fixed: the same figure on every run
  for ax, (metric, values) in zip(axes, panels.items()):
    for g, group in enumerate(groups):
      offset = (g - (len(groups) - 1) / 2) * box_width
      for m, method in enumerate(methods):
        data = values[(group, method)]
        if not data.size:
          continue
        ax.boxplot(data, positions=[m + offset], widths=box_width * 0.8,
                   patch_artist=True, showfliers=False, manage_ticks=False,
                   boxprops=dict(facecolor=colors[group], alpha=0.35,
                                 edgecolor=colors[group]),
                   medianprops=dict(color="black"),
                   whiskerprops=dict(color=colors[group]),
                   capprops=dict(color=colors[group]))
        ax.scatter(m + offset + jitter.uniform(-0.25, 0.25, data.size) * box_width,
                   data, s=6, color=colors[group], alpha=0.7, linewidths=0,
                   zorder=3)
    ax.set_xticks(np.arange(len(methods)), list(methods), rotation=30, ha="right",
                  rotation_mode="anchor", fontsize=_FONT)
    ax.set_xlim(-0.6, len(methods) - 0.4)
    for name, value in (nulls or {}).get(metric, {}).items():
      if value is not None and np.isfinite(value):
        ax.axhline(value, color=greys[name], linestyle=(0, (4, 2)), linewidth=1.3,
                   label=name)
    ax.set_title(metric, fontsize=_FONT + 1)
    ax.set_ylabel(ylabel, fontsize=_FONT)
    ax.tick_params(axis="y", labelsize=_FONT - 1)
    ax.grid(axis="y", alpha=0.3)
  for ax in axes[len(panels):]:
    ax.set_visible(False)
  handles = ([patches.Patch(facecolor=colors[g], alpha=0.5, label=g) for g in groups]
             if len(groups) > 1 else [])
  handles += [Line2D([], [], color=greys[n], linestyle=(0, (4, 2)), label=n)
              for n in null_names]
  if handles:
    fig.legend(handles=handles, loc="outside right upper", fontsize=_FONT,
               frameon=False)
  fig.suptitle(title, fontsize=_FONT + 2)
  save(fig, path)
  return len(panels)


def _group_values(rows: Sequence[Mapping[str, object]], metric: str, method: str,
                  where: Mapping[str, object] | Sequence[Mapping[str, object]]
                  ) -> np.ndarray:
  """The finite values of ``method``'s rows of ``metric`` matching ``where``
  (or any of a list of such)."""
  wants = [{**w, "metric": str(w.get("metric", "{metric}")).format(metric=metric),
            "method": method}
           for w in ([where] if isinstance(where, Mapping) else where)]
  values = np.asarray([float(r["value"]) for r in rows
                       if any(all(r.get(k) == v for k, v in want.items())
                              for want in wants)], np.float64)
  return values[np.isfinite(values)]


# ---------------------------------------------------------------- helpers ---

def _display_image(image: np.ndarray) -> np.ndarray:
  """(H, W) for grayscale (C = 1 squeezed), (H, W, 3) clipped to [0, 1] for RGB."""
  image = np.asarray(image, np.float32)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 3 and image.shape[-1] == 3:
    return image.clip(0.0, 1.0)
  if image.ndim != 2:
    raise ValueError(IMAGE_ERROR.format(shape=image.shape))
  return image


def _show(ax, array: np.ndarray, cmap: str | None):
  """imshow on a fixed [0, 1] scale, ticks and frame off, labels kept."""
  mappable = ax.imshow(array, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])
  for spine in ax.spines.values():
    spine.set_visible(False)
  return mappable


def _draw_boxes(ax, rects, color: str, linewidth: float) -> None:
  for x, y, w, h in rects:
    ax.add_patch(patches.Rectangle((x, y), w, h, fill=False, edgecolor=color,
                                   linewidth=linewidth))


def _column_titles(labels: Sequence[str], cell_inches: float) -> tuple[list[str], float]:
  """Column labels wrapped at spaces to fit their cell; rotated if a word can't fit.

  Returns (labels, rotation in degrees).
  """
  # ~0.6 em per character is a conservative width for the default sans font.
  fits = max(1, int(0.95 * cell_inches * 72 / (0.6 * _FONT)))
  wrapped = [textwrap.wrap(label, fits, break_long_words=False) or [""]
             for label in labels]
  if any(len(line) > fits for lines in wrapped for line in lines):
    return list(labels), 30.0
  return ["\n".join(lines) for lines in wrapped], 0.0


def _colors(count: int) -> list:
  """Distinct colors: tab10 up to 10 lines, tab20 beyond."""
  palette = colormaps["tab10" if count <= 10 else "tab20"]
  return [palette(i % palette.N) for i in range(count)]


def save(fig: Figure, path: str) -> None:
  """PNG written atomically (``io_utils.atomic_path``)."""
  with io_utils.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=DPI, format="png")
