"""Benchmark: saliency maps per second, per setting, method and batching strategy.

A *setting* is a model at an image size in a dtype. ``config.benchmark.settings``
lists them, each a dict overriding some of ``model``, ``width``, ``image_size``
(``config``'s), ``dtype`` (``'float32'``, the default, or ``'bfloat16'``) and
``cascade_blocks`` (how many blocks of the model's ``cascade_order`` a cascade
study randomizes; ``None``: all); none listed: ``config``'s model in float32.
For each setting, each method in ``config.methods`` and each
``(strategy, batch_size)`` of ``config.benchmark``, :func:`run` times
:func:`saliency_jax.saliency.explain` on ``config.num_images`` random images
through a randomly initialized model, and reports

- maps/s and model evaluations/s in steady state (the median of at least
  ``repeats`` calls, and more until they take ``min_seconds``), with the
  first call (trace + compile + one run) timed apart;
- for ``batch_size='auto'``: the (strategy, batch size) that
  :func:`chosen_batch_size` picks for this device's memory
  (``chosen_strategy``, ``chosen_batch_size``; ``None``: every evaluation at
  once), the time the choice took (``choose_s``), and the run at that choice;
- FLOPs per map from XLA's cost analysis of the method as one program, the
  achieved FLOP/s and their fraction of a matmul's FLOP/s in the setting's
  dtype, measured in the same run;
- memory: the device's peak bytes in use so far (``peak_bytes``,
  process-wide, so never lower than an earlier row's) where the backend
  reports it; where it reports none (the CPU) and ``memory_analysis`` is set,
  the bytes XLA's buffer assignment gives the row's program
  (``program_bytes``, one more compile per row);
- the same maps computed by a reference loop in the same process, as PAIR
  ``saliency`` computes them: a Python loop over images and noise samples /
  path steps / windows, one call of a jitted single-evaluation function each,
  accumulated in NumPy (float32; the calls in the setting's dtype), on the
  first ``reference_images`` images. Each timed call is followed by one run
  of the reference loop, and a row's ``reference_ratio`` is the median over
  those pairs of (reference time / our time) per image: on a machine shared
  with other jobs, back-to-back pairs see the same load where separate
  medians would not;
- per setting, the time of one whole cascade study
  (``cascade_study_seconds``): every stage (the trained model and one per
  randomized block) x every method x ``cascade_images`` images, computed
  from the measured rates, as ``cascade_study_basis`` says: a stage differs
  from another only in its weights, so it runs the same program at the same
  speed; XRAI's segments are computed once per image, as the study does. The
  reference loop's time for the same (``reference_cascade_study_seconds``),
  from its rates, over the methods it has;
- a bfloat16 setting's maps against those of its float32 twin (same model,
  width and size) where both ran (:func:`map_agreement`).

bfloat16 (:func:`cast`): the model's floating state and the images are cast,
so every convolution runs in bfloat16; the classes explained are the float32
model's. Maps come out in bfloat16 (XRAI's region values in float32), and
SmoothGrad's noise is drawn in the images' dtype, so it is not the float32
run's noise.

The best ``(strategy, batch_size)`` per method and overall
(:func:`best_settings`), per setting, is what
``saliency.batching.DEFAULT_STRATEGY`` should hold for this backend.
Writes ``benchmark.json``, ``report.md`` and ``figures/benchmark.png`` into the
workdir. Measurements are never resumed from an earlier run: ratios only mean
something within one run on one machine state.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from scipy import stats

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import io_utils, memory, models, saliency
from saliency_jax.experiments import benchmark_metrics
from saliency_jax.report import figures
from saliency_jax.report import markdown
from saliency_jax.saliency import batching
from saliency_jax.saliency import gradcam as gradcam_lib
from saliency_jax.saliency import guided_backprop as guided_lib
from saliency_jax.saliency import integrated_gradients as ig_lib
from saliency_jax.saliency import occlusion as occlusion_lib
from saliency_jax.saliency.explainee import Explainee

Row = dict[str, Any]
Setting = dict[str, Any]
_MAX_REPEATS = 100  # timed calls per row, at most
AUTO = "auto"  # the batch size chosen for the device's memory
# A setting's dtype -> what the model state and images are cast to.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# What a setting may override, and their values when it does not.
SETTING_KEYS = ("model", "width", "image_size", "dtype", "cascade_blocks")
# A row that fails this way is recorded as failed and the run goes on: out
# of memory (at compile or run time), XLA compile errors, no batch size fits.
_ROW_ERRORS = (jax.errors.JaxRuntimeError, MemoryError,
               memory.DoesNotFitError)


class _Setup(NamedTuple):
  """What one setting's rows share."""
  explainee: Explainee   # random init, in the setting's dtype
  images: jax.Array      # (N, H, W, C) in [0, 1], in the setting's dtype
  host_images: np.ndarray  # the same in float32 on the host (reference loop)
  targets: jax.Array     # (N,) the float32 model's predicted classes
  key: jax.Array
  stages: int            # of one cascade study: 1 + randomized blocks
  segments: jax.Array | None  # XRAI's, per image (None: no XRAI here)
  segments_s: float | None  # host seconds per image to compute them


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every setting, writes the results into ``workdir``, returns them."""
  methods = _check(config)
  settings = settings_of(config)
  device = jax.devices()[0]
  environment = _environment(device)
  b = config.benchmark
  _say(f"JAX {jax.__version__} on {environment['backend']} "
       f"({environment['device_kind']}, {environment['cpu_count']} CPUs); "
       f"{len(settings)} setting(s), {len(methods)} method(s), "
       f"{config.num_images} images")
  matmul = {}
  for dtype in dict.fromkeys(s["dtype"] for s in settings):
    matmul[dtype] = _matmul_peak(b.matmul_size, b.repeats, dtype)
    _say(f"matmul {b.matmul_size}^2 {dtype}: "
         f"{matmul[dtype]['flops_per_s'] / 1e9:.1f} GFLOP/s (the peak "
         f"fractions of {dtype} rows are of this)")
  infos, rows, maps, segments = [], [], {}, {}
  for setting in settings:
    info, setting_rows, maps[setting["name"]] = _run_setting(
        config, setting, methods, device, segments)
    infos.append(info)
    rows += setting_rows
  _finish_rows(rows, infos, matmul)
  for info in infos:
    own = [r for r in rows if r["setting"] == info["name"]]
    info["best"] = {**best_settings(own), "backend": environment["backend"]}
    info.update(cascade_study(info, b.cascade_images))
  _agreements(infos, maps)
  metrics = None
  if b.get("metrics") is not None:
    _say("metrics (vectorized over maps vs a per-map loop):")
    metrics = benchmark_metrics.run(config, _say)
  environment["loadavg_end"] = _loadavg()
  results = {
      "environment": environment,
      "setup": {"model": config.model, "width": config.width,
                "image_size": config.image_size,
                "settings": [s["name"] for s in settings],
                "in_channels": b.in_channels,
                "num_classes": config.num_classes,
                "num_images": config.num_images, "seed": config.seed,
                "methods": list(methods), "repeats": b.repeats,
                "min_seconds": b.min_seconds,
                "preset": b.preset, "strategies": list(b.strategies),
                "batch_sizes": list(b.batch_sizes),
                "reference_images": _reference_images(config),
                "cascade_images": b.cascade_images,
                "memory_analysis": b.memory_analysis},
      "default_strategy_in_effect": list(batching.DEFAULT_STRATEGY.get(
          environment["backend"], ("vectorized", None))),
      "matmul": matmul,
      "settings": infos,
      "rows": rows,
      "metrics": metrics,
  }
  io_utils.write_json(os.path.join(workdir, "benchmark.json"), results)
  table = format_table(results)
  if metrics is not None:
    table += "\n\n" + benchmark_metrics.format_table(metrics)
  plot(results, os.path.join(workdir, "figures", "benchmark.png"))
  markdown.write_report(workdir, _report(results, table))
  print(table, flush=True)
  return results


def settings_of(config: ml_collections.ConfigDict) -> list[Setting]:
  """The run's settings, every key of :data:`SETTING_KEYS` filled in.

  Each of ``config.benchmark.settings`` over ``config.model``,
  ``config.width``, ``config.image_size``, float32 and every block of the
  model's ``cascade_order``; none listed: those defaults, one setting. Each
  gets a ``name`` (:func:`setting_name`).
  """
  defaults = {"model": config.model, "width": config.width,
              "image_size": config.image_size, "dtype": "float32",
              "cascade_blocks": None}
  given = tuple(config.benchmark.get("settings") or ()) or ({},)
  out = []
  for overrides in given:
    setting = {**defaults, **dict(overrides)}
    out.append({"name": setting_name(setting), **setting})
  return out


def setting_name(setting: Setting) -> str:
  """``'inception_v3 x1 299px bfloat16'``: model, width, size, dtype."""
  return (f"{setting['model']} x{setting['width']:g} "
          f"{setting['image_size']}px {setting['dtype']}")


def cast(explainee: Explainee, images: jax.Array,
         dtype: str) -> tuple[Explainee, jax.Array]:
  """The explainee with every floating leaf of its state in ``dtype`` (a key
  of :data:`DTYPES`), and the images in ``dtype``.

  Other leaves (integer counters, keys) stay as they are. A network whose
  parameters and input share a dtype computes in it: its convolutions and
  matmuls take their operands' dtype, so a bfloat16 model runs in bfloat16.
  """
  to = DTYPES[dtype]

  def one(leaf: jax.Array) -> jax.Array:
    floating = jnp.issubdtype(leaf.dtype, jnp.floating)
    return leaf.astype(to) if floating else leaf

  return (explainee.with_state(jax.tree.map(one, explainee.state)),
          jnp.asarray(images).astype(to))


def chosen_batch_size(explainee: Explainee, images: jax.Array, *,
                      method: str, hparams: dict[str, Any], strategy: str,
                      key: jax.Array | None = None,
                      per_image: dict[str, Any] | None = None
                      ) -> tuple[str, int | None]:
  """What ``batch_size='auto'`` runs ``method`` with here: (strategy, batch
  size; ``None`` = every evaluation at once), as ``saliency.explain`` picks
  them for the device's memory (:func:`saliency.auto_batch_size`).

  The rows time ``explain`` at this choice, so the search is timed apart
  and the size recorded is the one that ran.
  """
  return saliency.auto_batch_size(explainee, images, method=method, key=key,
                                  strategy=strategy, per_image=per_image,
                                  **hparams)


def _run_setting(config: ml_collections.ConfigDict, setting: Setting,
                 methods: dict[str, dict[str, Any]], device: jax.Device,
                 segments: dict[tuple[int, ...], tuple[jax.Array, float]]
                 ) -> tuple[dict[str, Any], list[Row], dict[str, np.ndarray]]:
  """Every method of one setting: its summary, its rows, each method's maps
  (of its first row that ran)."""
  _say(f"{setting['name']}:")
  s = _setup(config, setting, "xrai" in methods, segments)
  info = {"name": setting["name"], **{k: setting[k] for k in SETTING_KEYS},
          "cascade_stages": s.stages, "targets_from": "float32",
          "segments_s_per_image": s.segments_s, "methods": {}}
  fields = {"setting": setting["name"],
            **{k: setting[k] for k in ("model", "width", "image_size",
                                       "dtype")}}
  rows, maps = [], {}
  for name, hparams in methods.items():
    info["methods"][name], method_rows, out = _sweep(
        config, name, hparams, s, fields, device)
    rows += method_rows
    if out is not None:
      maps[name] = out
  return info, rows, maps


def _sweep(config: ml_collections.ConfigDict, name: str,
           hparams: dict[str, Any], s: _Setup, fields: Row,
           device: jax.Device
           ) -> tuple[dict[str, Any], list[Row], np.ndarray | None]:
  """Every (strategy, batch_size) of one method, and its reference loop."""
  b = config.benchmark
  fn = saliency.METHODS[name]
  evals = batching.evaluations(fn, s.images.shape[1:], hparams)
  per_image = _per_image(name, s)
  flops, source = _flops_per_map(
      fn, s.explainee, s.images[0], s.targets[0], s.key, hparams,
      {k: v[0] for k, v in (per_image or {}).items()})
  info = {"hparams": _jsonable(hparams), "evaluations_per_map": evals,
          "flops_per_map": flops, "flops_source": source, "reference": None}
  reference = None
  if b.reference:
    k = _reference_images(config)
    reference = _Reference(name, s.explainee, s.host_images[:k],
                           s.targets[:k], hparams, config.seed)
    if not reference.supported:
      _say(f"  {name}: no reference loop for this method")
      reference = None
    else:
      try:
        reference.warm()
      except _ROW_ERRORS as e:
        _say(f"  {name}: reference loop failed: {type(e).__name__}: "
             f"{str(e).splitlines()[0]}")
        reference = None
  rows, ours = [], None
  for strategy in b.strategies:
    for batch_size in b.batch_sizes:
      row, out = _measure(name, s, hparams, strategy, batch_size, b, device,
                          reference, fields, per_image)
      row["evaluations_per_s"] = (None if row["maps_per_s"] is None
                                  else row["maps_per_s"] * evals)
      ours = out if ours is None else ours
      rows.append(row)
      _say(_progress(row))
  if reference is not None:
    if not reference.times:  # every row failed: time the loop on its own
      reference.sample()
    info["reference"] = reference.summary(evals, ours)
    _say(_progress({**info["reference"], "method": name,
                    "strategy": "reference", "batch_size": 1,
                    "chosen_batch_size": 1}))
  return info, rows, ours


def best_settings(rows: Sequence[Row]) -> dict[str, Any]:
  """The fastest measured ``(strategy, batch_size)``, per method and overall.

  A row's speed is its ``corrected_maps_per_s`` when every row of its method
  has one (its ``reference_ratio`` times the reference loop's maps/s: the
  loop, run back to back with each call, is a control that cancels load from
  other processes between rows), else its maps/s. Per method: the fastest
  row. Overall: among the ``(strategy, batch_size)`` measured for every
  method, the one that makes one map of every method in the least total
  time, ``sum(1 / speed)``, so the expensive methods, where batching
  matters, weigh the most. Rows without maps/s (failed) are ignored; ties go to the
  first ``(strategy, batch_size)`` measured. Pass the rows of one setting
  (model, size, dtype): speeds of different settings do not compare.
  """
  ok = [r for r in rows if r.get("maps_per_s")]
  corrected: dict[str, bool] = {}
  for r in ok:
    corrected[r["method"]] = (corrected.get(r["method"], True) and
                              bool(r.get("corrected_maps_per_s")))
  by = {m: "corrected_maps_per_s" if c else "maps_per_s"
        for m, c in corrected.items()}
  speed = lambda r: r[by[r["method"]]]  # noqa: E731
  fastest: dict[str, Row] = {}
  for r in ok:
    if r["method"] not in fastest or speed(r) > speed(fastest[r["method"]]):
      fastest[r["method"]] = r
  per_method = {m: {"strategy": r["strategy"], "batch_size": r["batch_size"],
                    "chosen_strategy": r.get("chosen_strategy",
                                             r["strategy"]),
                    "chosen_batch_size": r.get("chosen_batch_size",
                                               r["batch_size"]),
                    "maps_per_s": r["maps_per_s"],
                    "reference_ratio": r.get("reference_ratio"), "by": by[m]}
                for m, r in fastest.items()}
  settings: dict[tuple[str, int | None], dict[str, float]] = {}
  for r in ok:
    settings.setdefault((r["strategy"], r["batch_size"]),
                        {})[r["method"]] = 1.0 / speed(r)
  overall = None
  for (strategy, batch_size), seconds in settings.items():
    if len(seconds) != len(fastest):
      continue
    total = sum(seconds.values())
    if overall is None or total < overall["seconds"]:
      overall = {"strategy": strategy, "batch_size": batch_size,
                 "seconds": total}
  return {"per_method": per_method, "overall": overall}




def cascade_study(info: dict[str, Any], images: int) -> dict[str, Any]:
  r"""The time of one whole cascade study of a setting, from measured rates.

  .. math::
    T = \sum_m \frac{S \cdot I}{r_m} + I \cdot t_{seg}, \qquad
    T_{ref} = \sum_{m \in R} \frac{S \cdot I}{r^{ref}_m}

  with S stages (the trained model and one per randomized block), I
  ``images``, :math:`r_m` the maps/s of method m's fastest row here
  (``info['best']``), :math:`t_{seg}` XRAI's segmentation per image (once
  per image, shared by every stage) and R the methods with a reference loop,
  :math:`r^{ref}_m` its maps/s. One model state was timed: every stage runs
  the same program (same shapes, same FLOPs), only its weights differ.
  ``cascade_study_speedup`` compares both over R. ``None`` where a method
  has no row that ran.
  """
  stages = info["cascade_stages"]
  best = info["best"]["per_method"]
  methods = info["methods"]
  ours = {m: stages * images / best[m]["maps_per_s"]
          for m in methods if m in best}
  missing = [m for m in methods if m not in best]
  segments = images * (info["segments_s_per_image"] or 0.0)
  reference = {m: stages * images / i["reference"]["maps_per_s"]
               for m, i in methods.items() if i["reference"]}
  compared = [m for m in reference if m in ours]
  total = None if missing else sum(ours.values()) + segments
  basis = (f"rates: {stages} stages x {images} images / maps/s of each "
           "method's fastest row here, summed over the methods"
           + (", plus XRAI's segments once per image" if segments else "")
           + "; one model state timed, every stage runs the same program")
  return {
      "cascade_study_seconds": total,
      "cascade_study_basis": basis,
      "cascade_study_missing": missing,
      "cascade_study_method_seconds": ours,
      "cascade_study_segments_seconds": segments,
      "reference_cascade_study_seconds": (sum(reference.values())
                                          if reference else None),
      "reference_cascade_study_basis": (
          f"rates: {stages} stages x {images} images / the reference loop's "
          "maps/s, summed over the methods it has"),
      "reference_cascade_study_methods": list(reference),
      "cascade_study_speedup": (
          sum(reference[m] for m in compared) /
          sum(ours[m] for m in compared) if compared else None),
  }


def map_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, Any]:
  r"""How close maps ``other`` are to ``reference`` (both (N, H, W, C)).

  Per image, Spearman's rank correlation of the absolute maps summed over
  channels (the absolute-value comparison of Adebayo et al., NeurIPS 2018):
  its median and minimum over images (``None`` when undefined: a constant
  map); and :math:`\max |a - b| / \max |a|` over all pixels.
  """
  a = np.asarray(reference, np.float32)
  b = np.asarray(other, np.float32)
  rho = []
  for x, y in zip(a, b):
    x, y = np.abs(x).sum(-1).ravel(), np.abs(y).sum(-1).ravel()
    defined = np.ptp(x) > 0 and np.ptp(y) > 0
    rho.append(float(stats.spearmanr(x, y).statistic) if defined else math.nan)
  finite = [r for r in rho if math.isfinite(r)]
  scale = float(np.max(np.abs(a))) or 1.0
  return {"spearman_abs_median": statistics.median(finite) if finite else None,
          "spearman_abs_min": min(finite) if finite else None,
          "max_relative_difference": float(np.max(np.abs(a - b))) / scale}


def _agreements(infos: list[dict[str, Any]],
                maps: dict[str, dict[str, np.ndarray]]) -> None:
  """``float32_agreement`` per method of every non-float32 setting: its maps
  against its float32 twin's (same model, width and size), where both ran."""
  def twin_of(info):
    return next((j for j in infos if j["dtype"] == "float32" and all(
        j[k] == info[k] for k in ("model", "width", "image_size"))), None)

  for info in infos:
    if info["dtype"] == "float32":
      continue
    twin = twin_of(info)
    for name, method in info["methods"].items():
      ours = maps[info["name"]].get(name)
      theirs = None if twin is None else maps[twin["name"]].get(name)
      method["float32_agreement"] = (
          None if ours is None or theirs is None else
          {"against": twin["name"], **map_agreement(theirs, ours)})


def format_table(results: dict[str, Any]) -> str:
  """The rows as fixed-width text tables, one per setting, the reference
  loop after each method; the fastest settings and the cascade study."""
  head = (f"{'method':<21} {'strategy':<10} {'batch':>8} {'compile s':>9} "
          f"{'maps/s':>9} {'evals/s':>9} {'GFLOP/s':>8} {'%peak':>6} "
          f"{'mem MiB':>8} {'vs ref':>7} {'(min)':>6}")
  lines = []
  for info in results["settings"]:
    lines += [f"{info['name']} ({info['cascade_stages']} cascade stages)",
              head, "-" * len(head)]
    for name in results["setup"]["methods"]:
      lines += _method_lines(name, info, [
          r for r in results["rows"]
          if r["setting"] == info["name"] and r["method"] == name])
    lines += _summary_lines(info, results)
    lines.append("")
  lines.append("in effect on this backend: "
               f"{tuple(results['default_strategy_in_effect'])}")
  return "\n".join(lines)


def _method_lines(name: str, info: dict[str, Any],
                  rows: Sequence[Row]) -> list[str]:
  lines = []
  for r in rows:
    if r.get("error"):
      lines.append(f"{name:<21} {r['strategy']:<10} {_bs(r):>8}  failed: "
                   f"{r['error'][:60]}")
      continue
    lines.append(
        f"{name:<21} {r['chosen_strategy']:<10} {_bs(r):>8} "
        f"{r['compile_s']:>9.2f} {r['maps_per_s']:>9.2f} "
        f"{r['evaluations_per_s']:>9.1f} {_num(r['flops_per_s'], 1e-9):>8} "
        f"{_num(r['peak_fraction'], 100):>6} "
        f"{_num(_memory(r), 2**-20, '.1f'):>8} "
        f"{_num(r['reference_ratio'], 1, '.2f', 'x'):>7} "
        f"{_num(r.get('reference_ratio_min'), 1, '.2f', 'x'):>6}")
  ref = info["methods"][name]["reference"]
  if ref is not None:
    lines.append(
        f"{name:<21} {'reference':<10} {'1':>8} {ref['compile_s']:>9.2f} "
        f"{ref['maps_per_s']:>9.2f} {ref['evaluations_per_s']:>9.1f} "
        f"{'':>8} {'':>6} {'':>8} {'1.00x':>7} {'1.00x':>6}")
  return lines


def _summary_lines(info: dict[str, Any], results: dict[str, Any]) -> list[str]:
  lines = [""]
  best = info["best"]
  for name in results["setup"]["methods"]:
    if name not in best["per_method"]:
      continue
    b = best["per_method"][name]
    ratio = _num(b["reference_ratio"], 1, ".2f", "x the reference")
    lines.append(f"fastest {name}: {b['chosen_strategy']}, batch_size "
                 f"{_bs(b)} ({b['maps_per_s']:.2f} maps/s, "
                 f"{ratio}; by {b['by']})")
  if best["overall"] is not None:
    o = best["overall"]
    lines.append(f"best overall on {best.get('backend', '?')}: "
                 f"({o['strategy']!r}, {o['batch_size']!r}), one map of "
                 f"every method in {o['seconds']:.3f} s")
  study = info["cascade_study_seconds"]
  reference = info["reference_cascade_study_seconds"]
  lines.append(
      f"one cascade study ({info['cascade_stages']} stages x "
      f"{results['setup']['cascade_images']} images x "
      f"{len(info['methods'])} methods): "
      + ("-" if study is None else _duration(study))
      + (f" (no rate for {', '.join(info['cascade_study_missing'])})"
         if info["cascade_study_missing"] else "")
      + ("" if reference is None else
         f"; the reference loop: {_duration(reference)} for "
         f"{', '.join(info['reference_cascade_study_methods'])} (ours "
         + _num(info["cascade_study_speedup"], 1, ".1f", "x as fast")
         + " for the same methods)"))
  for name, method in info["methods"].items():
    agreement = method.get("float32_agreement")
    if agreement:
      lines.append(
          f"{name} vs {agreement['against']}: Spearman |maps| median "
          f"{_num(agreement['spearman_abs_median'], 1, '.3f')} (min "
          f"{_num(agreement['spearman_abs_min'], 1, '.3f')}), max difference "
          f"{agreement['max_relative_difference']:.2g} of the largest value")
  return lines


def plot(results: dict[str, Any], path: str) -> None:
  """maps/s against batch size, one panel per method, a line per setting
  and strategy, each setting's reference loop as a dashed line."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  names = results["setup"]["methods"]
  settings = results["setup"]["settings"]
  cols = min(4, len(names))
  nrows = -(-len(names) // cols)
  fig = Figure(figsize=(3.2 * cols, 2.8 * nrows), layout="constrained")
  labels = [_bs({"batch_size": s}) for s in results["setup"]["batch_sizes"]]
  for i, name in enumerate(names):
    ax = fig.add_subplot(nrows, cols, i + 1)
    for j, info in enumerate(results["settings"]):
      color = f"C{j % 10}"
      for k, strategy in enumerate(results["setup"]["strategies"]):
        points = [(labels.index(_bs({"batch_size": r["batch_size"]})),
                   r["maps_per_s"])
                  for r in results["rows"] if r["method"] == name
                  and r["setting"] == info["name"]
                  and r["strategy"] == strategy and r.get("maps_per_s")]
        label = strategy if len(settings) == 1 else (
            f"{info['name']} {strategy}")
        if points:
          ax.plot(*zip(*points), marker="o", color=color,
                  linestyle=("-", ":", "-.")[k % 3], label=label)
      ref = info["methods"][name]["reference"]
      if ref is not None:
        ax.axhline(ref["maps_per_s"], color=color, linestyle="--",
                   label="reference loop" if j == 0 else None)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("batch_size", fontsize=8)
    ax.set_ylabel("maps/s", fontsize=8)
    ax.tick_params(which="both", labelsize=7)
    if i == 0:
      ax.legend(fontsize=6)
  env = results["environment"]
  title = (settings[0] if len(settings) == 1 else
           f"{len(settings)} settings")
  fig.suptitle(f"{title}, {env['backend']} ({env['device_kind']}), JAX "
               f"{env['jax']}", fontsize=10)
  # Atomic, and readable by the other users of a shared results folder.
  figures.save(fig, path)


# --- setup -----------------------------------------------------------------


def validate(config: ml_collections.ConfigDict) -> None:
  """The benchmark block, before anything is written."""
  _check(config)


def _check(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
  """Validates the benchmark block; returns ``{method: hparams}`` in order.

  The settings' own keys, types and image sizes are checked with the shared
  keys (``config._check_benchmark``); here what needs the methods and the
  models: names, strategies, batch sizes, cascade blocks.
  """
  b = config.benchmark
  for name in config.methods:
    if name not in saliency.METHODS:
      raise errors.ConfigError(f"config.methods: unknown method {name!r}; "
                               f"expected names from {sorted(saliency.METHODS)}")
  for name in b.hparams:
    if name not in config.methods:
      raise errors.ConfigError(f"config.benchmark.hparams.{name}: {name!r} is not "
                               f"in config.methods {tuple(config.methods)}")
  for strategy in b.strategies:
    if strategy not in batching.STRATEGIES:
      raise errors.ConfigError(f"config.benchmark.strategies: {strategy!r} is not "
                               f"one of {batching.STRATEGIES}")
  for size in b.batch_sizes:
    if size is not None and size != AUTO and (
        isinstance(size, bool) or not isinstance(size, int) or size < 1):
      raise errors.ConfigError(f"config.benchmark.batch_sizes: {size!r} is not a "
                               f"positive int, {AUTO!r} or None")
  if not b.strategies or not b.batch_sizes or not config.methods:
    raise errors.ConfigError("config.methods, config.benchmark.strategies and "
                             "config.benchmark.batch_sizes must not be empty")
  _check_settings(config)
  benchmark_metrics.validate(config)
  given = b.hparams.to_dict()
  return {name: saliency.hparams_for(b.preset, name, **given.get(name, {}))
          for name in config.methods}


def _check_settings(config: ml_collections.ConfigDict) -> None:
  """No setting twice; cascade blocks within the model's cascade order."""
  seen = set()
  for i, setting in enumerate(settings_of(config)):
    key = f"config.benchmark.settings[{i}]"
    if setting["name"] in seen:
      raise errors.ConfigError(f"{key}: {setting['name']!r} is listed twice")
    seen.add(setting["name"])
    order = _cascade_order(setting["model"])
    blocks = setting["cascade_blocks"]
    if blocks is not None and blocks > len(order):
      raise errors.ConfigError(
          f"{key}.cascade_blocks={blocks}: {setting['model']} has "
          f"{len(order)} blocks in its cascade_order")


def _cascade_order(model: str) -> tuple[str, ...]:
  """The model's blocks, top-down, without building it."""
  module, name = models.MODELS[model].split(":")
  return tuple(getattr(importlib.import_module(module), name).cascade_order)


def _reference_images(config: ml_collections.ConfigDict) -> int:
  """How many images the reference loop explains (the first ones)."""
  given = config.benchmark.get("reference_images")
  return config.num_images if given is None else min(given, config.num_images)


@jax.jit
def _batch_logits(e: Explainee, images: jax.Array) -> jax.Array:
  return jax.vmap(e.logits)(images)


def _setup(config: ml_collections.ConfigDict, setting: Setting, xrai: bool,
           segments: dict[tuple[int, ...], tuple[jax.Array, float]]
           ) -> _Setup:
  """Random-init model (or ``config.model_weights``'), random images in [0, 1]
  and the float32 model's predicted classes, then both cast to the setting's
  dtype; XRAI's segments of the images (computed once per image shape)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.model, c.width, c.image_size = (setting["model"], setting["width"],
                                    setting["image_size"])
  image_key, method_key = jax.random.split(jax.random.key(config.seed))
  in_channels = config.benchmark.in_channels
  if config.get("model_weights"):
    # Lazily: train brings the data pipeline, which a benchmark never needs.
    from saliency_jax import train  # pylint: disable=g-import-not-at-top
    model = train.weights_model(c, in_channels=in_channels)
  else:
    model = models.create(c.model, num_classes=c.num_classes,
                          in_channels=in_channels, width=c.width,
                          preprocessing=config_lib.preprocessing_for(c),
                          rngs=nnx.Rngs(config.seed))
  blocks = setting["cascade_blocks"] or len(model.cascade_order)
  explainee = saliency.from_model(model)
  images = jax.random.uniform(
      image_key, (config.num_images, c.image_size, c.image_size, in_channels),
      jnp.float32)
  targets = jnp.argmax(_batch_logits(explainee, images),
                       axis=-1).astype(jnp.int32)
  found, seconds = (None, None)
  if xrai:
    if images.shape not in segments:
      segments[images.shape] = _segments(np.asarray(images))
    found, seconds = segments[images.shape]
  explainee, cast_images = cast(explainee, images, setting["dtype"])
  return _Setup(explainee, cast_images, np.asarray(images),
                jax.block_until_ready(targets), method_key, blocks + 1, found,
                seconds)


def _segments(images: np.ndarray) -> tuple[jax.Array, float]:
  """XRAI's segments of every image, as the study computes them (on the
  host), and the seconds per image that took; put on the device once, so
  that no timed call copies them there."""
  # Lazily: the experiments' helpers bring the data pipeline.
  from saliency_jax.experiments import common  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  found = common.segments_for("xrai", images)["segments"]
  seconds = (time.perf_counter() - start) / len(images)
  return jax.device_put(found), seconds


def _per_image(name: str, s: _Setup) -> dict[str, jax.Array] | None:
  """Per-image inputs of ``name``: XRAI's segments, shared by every stage."""
  return {"segments": s.segments} if name == "xrai" else None


def _environment(device: jax.Device) -> dict[str, Any]:
  import flax  # pylint: disable=g-import-not-at-top
  return {"backend": jax.default_backend(), "device": str(device),
          "device_kind": device.device_kind, "jax": jax.__version__,
          "jaxlib": getattr(jax.lib, "__version__", None)
                    or _version("jaxlib"),
          "flax": flax.__version__, "python": sys.version.split()[0],
          "platform": platform.platform(), "cpu_count": os.cpu_count(),
          "loadavg_start": _loadavg(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _version(package: str) -> str | None:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def _loadavg() -> list[float] | None:
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:
    return None


# --- measurements ----------------------------------------------------------


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
  start = time.perf_counter()
  out = jax.block_until_ready(call())
  return time.perf_counter() - start, out


def _matmul_peak(size: int, repeats: int,
                 dtype: str = "float32") -> dict[str, float]:
  """Best time of a (size, size) matmul in ``dtype``: the achievable FLOP/s
  here (on a GPU, float32 matmuls take the backend's default precision, as
  the networks' convolutions do)."""
  a, b = jax.random.normal(jax.random.key(0), (2, size, size), DTYPES[dtype])
  matmul = jax.jit(jnp.matmul)
  _timed(lambda: matmul(a, b))
  seconds = min(_timed(lambda: matmul(a, b))[0]
                for _ in range(max(3, repeats)))
  flops = 2.0 * size ** 3
  return {"size": size, "dtype": dtype, "seconds": seconds, "flops": flops,
          "flops_per_s": flops / seconds}


def _flops_per_map(fn: Callable[..., jax.Array], explainee: Explainee,
                   x: jax.Array, target: jax.Array, key: jax.Array,
                   hparams: dict[str, Any], per_image: dict[str, Any]
                   ) -> tuple[float | None, str | None]:
  """XLA's FLOP count of one map as one vectorized program (every sample,
  step or window at once), so loops do not hide work from the count; and
  where it comes from (:func:`_cost_analysis`)."""
  def one(e, x, t, k, p):
    return fn(e, x, t, key=k, strategy="vectorized", batch_size=None,
              **hparams, **p)
  try:
    flops, source = _cost_analysis(jax.jit(one),
                                   (explainee, x, target, key, per_image))
  except Exception as e:  # pylint: disable=broad-except
    _say(f"  (no FLOP count: {type(e).__name__}: {e})")
    return None, None
  return (flops, source) if flops else (None, None)


def _cost_analysis(program: Any, args: tuple[Any, ...]
                   ) -> tuple[float | None, str]:
  """FLOPs of ``program`` at ``args`` by XLA's cost analysis, and of what.

  ``'lowered'``: of the program lowered for the CPU from the shapes alone,
  before optimization: nothing is compiled or run, and the count does not
  depend on the device. ``'compiled'``: of the program compiled for the
  default device, where the first gives none (no CPU backend).
  """
  def flops(analysis):
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0] if analysis else None
    found = (analysis or {}).get("flops")
    return float(found) if found and found > 0 else None

  try:
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    shapes = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=cpu),
        args)
    found = flops(program.lower(*shapes).cost_analysis())
    if found:
      return found, "lowered"
  except (NotImplementedError, RuntimeError):
    pass
  return flops(program.lower(*args).compile().cost_analysis()), "compiled"


def _measure(name: str, s: _Setup, hparams: dict[str, Any], strategy: str,
             batch_size: int | str | None, b: ml_collections.ConfigDict,
             device: jax.Device, reference: _Reference | None, fields: Row,
             per_image: dict[str, Any] | None
             ) -> tuple[Row, np.ndarray | None]:
  """One (strategy, batch_size): for ``'auto'`` the choice first (timed
  apart), then a first call (compile), then timed calls, each followed by
  one run of the reference loop when there is one, so that each pair of
  times sees the same load from other processes. At least ``repeats``
  calls, more (up to ``_MAX_REPEATS``) until they add up to
  ``min_seconds``: a fast method gets enough pairs for a steady median."""
  row: Row = {**fields, "method": name, "strategy": strategy,
              "batch_size": batch_size, "chosen_strategy": strategy,
              "chosen_batch_size": batch_size, "choose_s": None}
  times, reference_times = [], []
  try:
    if batch_size == AUTO:
      start = time.perf_counter()
      chosen = chosen_batch_size(s.explainee, s.images, method=name,
                                 hparams=hparams, strategy=strategy,
                                 key=s.key, per_image=per_image)
      row.update(chosen_strategy=chosen[0], chosen_batch_size=chosen[1],
                 choose_s=time.perf_counter() - start)
    call = lambda: saliency.explain(  # noqa: E731
        s.explainee, s.images, s.targets, method=name, key=s.key,
        strategy=row["chosen_strategy"], batch_size=row["chosen_batch_size"],
        per_image=per_image, **hparams)
    compile_s, out = _timed(call)
    while len(times) < b.repeats or (sum(times) < b.min_seconds and
                                     len(times) < _MAX_REPEATS):
      times.append(_timed(call)[0])
      if reference is not None:
        reference_times.append(reference.sample())
  except _ROW_ERRORS as e:
    # Out of memory on an accelerator for a big batch: record and go on.
    row.update(error=f"{type(e).__name__}: {str(e).splitlines()[0]}",
               compile_s=None, steady_s=None, steady_min_s=None,
               maps_per_s=None, peak_bytes=_peak_bytes(device),
               program_bytes=None, **reference_ratios((), ()))
    return row, None
  n = s.images.shape[0]
  k = 1 if reference is None else len(reference.args[1])
  steady = statistics.median(times)
  row.update(compile_s=compile_s, steady_s=steady, steady_min_s=min(times),
             maps_per_s=n / steady, peak_bytes=_peak_bytes(device),
             program_bytes=None, times=times,
             reference_times=reference_times or None,
             **reference_ratios([t / n for t in times],
                                [t / k for t in reference_times]))
  if b.memory_analysis and row["peak_bytes"] is None:
    try:
      row["program_bytes"] = _program_bytes(name, s, hparams, row, per_image)
    except _ROW_ERRORS as e:
      _say(f"  (no memory analysis: {type(e).__name__}: {e})")
  return row, np.asarray(out)


def reference_ratios(times: Sequence[float],
                     reference_times: Sequence[float]) -> dict[str, Any]:
  """How many times faster than the reference loop, from paired runs.

  ``reference_ratio``: the median over pairs of reference time / our time
  (run back to back); ``reference_ratio_min``: the fastest reference run over
  our fastest run. ``None`` without reference runs. Times per image where
  the loop explains fewer images than our calls.
  """
  if not reference_times:
    return {"reference_ratio": None, "reference_ratio_min": None}
  return {"reference_ratio": statistics.median(
              ref / t for ref, t in zip(reference_times, times)),
          "reference_ratio_min": min(reference_times) / min(times)}


def _peak_bytes(device: jax.Device) -> int | None:
  """The backend's peak memory in use so far (process-wide, so monotone over
  the rows); ``None`` where it reports none (CPU)."""
  try:
    stats_ = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return None if not stats_ else stats_.get("peak_bytes_in_use")


def _program_bytes(name: str, s: _Setup, hparams: dict[str, Any], row: Row,
                   per_image: dict[str, Any] | None) -> int | None:
  """Bytes XLA's buffer assignment gives the row's call beyond its arguments
  (:func:`memory.program_bytes`), compiled once more as one program
  (``'dispatch'`` as the ``'scan'`` it becomes inside a trace)."""
  def program(e, x, t, k, p):
    return saliency.explain(e, x, t, method=name, key=k,
                            strategy=row["chosen_strategy"],
                            batch_size=row["chosen_batch_size"],
                            per_image=p, **hparams)
  compiled = jax.jit(program).lower(s.explainee, s.images, s.targets, s.key,
                                    per_image).compile()
  return memory.program_bytes(compiled)


def _finish_rows(rows: list[Row], infos: Sequence[dict[str, Any]],
                 matmul: dict[str, dict[str, float]]) -> None:
  """Per row: achieved FLOP/s, their fraction of the matmul's in the row's
  dtype, and maps/s corrected for load (reference ratio x the reference
  loop's maps/s)."""
  by_name = {info["name"]: info for info in infos}
  for r in rows:
    info = by_name[r["setting"]]["methods"][r["method"]]
    ref, ratio = info["reference"], r.get("reference_ratio")
    r["corrected_maps_per_s"] = (ratio * ref["maps_per_s"]
                                 if ref and ratio else None)
    ok = r.get("maps_per_s") is not None
    flops = info["flops_per_map"]
    r["flops_per_s"] = flops * r["maps_per_s"] if ok and flops else None
    r["peak_fraction"] = (r["flops_per_s"] / matmul[r["dtype"]]["flops_per_s"]
                          if r["flops_per_s"] else None)


def _progress(r: Row) -> str:
  if r.get("error"):
    return (f"  {r['method']:<21} {r['strategy']:<10} batch "
            f"{_bs(r):>8}  failed: {r['error'][:80]}")
  chosen = (f" ({r['choose_s']:.2f} s to choose)"
            if r.get("choose_s") is not None else "")
  return (f"  {r['method']:<21} {r.get('chosen_strategy', r['strategy']):<10} "
          f"batch {_bs(r):>8}{chosen}  compile {r['compile_s']:6.2f} s  "
          f"steady {r['steady_s']:7.3f} s  {r['maps_per_s']:8.2f} maps/s  "
          f"{r['evaluations_per_s']:9.1f} evals/s"
          + ("" if r.get("reference_ratio") is None else
             f"  {r['reference_ratio']:.2f}x the reference loop"))


# --- the reference loop ----------------------------------------------------


def _in_model_dtype(e: Explainee, x: jax.Array) -> jax.Array:
  """``x`` in the dtype of the explainee's floating state: the loop keeps its
  arrays in float32 on the host, the model computes in its own dtype."""
  floating = [leaf.dtype for leaf in jax.tree.leaves(e.state)
              if jnp.issubdtype(leaf.dtype, jnp.floating)]
  return x.astype(floating[0]) if floating else x


@jax.jit
def _gradient(e: Explainee, x: jax.Array, t: jax.Array) -> jax.Array:
  """One gradient of the target logit: the unit a PAIR loop calls."""
  return jax.grad(lambda z: e.logits(_in_model_dtype(e, z))[t])(x)


@jax.jit
def _logit(e: Explainee, x: jax.Array, t: jax.Array) -> jax.Array:
  return e.logits(_in_model_dtype(e, x))[t]


@jax.jit
def _gradcam(e: Explainee, x: jax.Array, t: jax.Array) -> jax.Array:
  return gradcam_lib.gradcam(e, _in_model_dtype(e, x), t)


@jax.jit
def _guided_backprop(e: Explainee, x: jax.Array, t: jax.Array) -> jax.Array:
  return guided_lib.guided_backprop(e, _in_model_dtype(e, x), t)


def _logits(e: Explainee, x: jax.Array) -> jax.Array:
  return e.logits(x)


def _call(fn, e, x, t) -> np.ndarray:
  """One jitted call, its result copied to the host as PAIR's callback does."""
  return np.asarray(fn(e, x, t), np.float32)


def _ref_gradient(e, x, t, hp, rng):
  del hp, rng
  return _call(_gradient, e, x, t)


def _ref_gradient_x_input(e, x, t, hp, rng):
  del hp, rng
  return x * _call(_gradient, e, x, t)


def _ref_gradcam(e, x, t, hp, rng):
  del hp, rng
  return _call(_gradcam, e, x, t)


def _ref_guided_backprop(e, x, t, hp, rng):
  del hp, rng
  return _call(_guided_backprop, e, x, t)


def _ref_guided_gradcam(e, x, t, hp, rng):
  del hp, rng
  return (_call(_guided_backprop, e, x, t) *
          _call(_gradcam, e, x, t))


def _ref_ig(e, x, t, hp, rng, baseline=None):
  """PAIR ``IntegratedGradients.GetMask``: one gradient call per step."""
  del rng
  alphas, weights = ig_lib.path_quadrature(hp["quadrature"], hp["steps"])
  b = np.asarray(ig_lib.baseline_for(x, hp["baseline"] if baseline is None
                                     else baseline))
  diff = x - b
  total = np.zeros_like(x)
  for alpha, weight in zip(alphas, weights):
    total += np.float32(weight) * _call(
        _gradient, e, (b + np.float32(alpha) * diff).astype(x.dtype), t)
  return total * diff


def _smooth(x, hp, rng, base):
  """PAIR ``GetSmoothedMask``: host noise, one base-map call per sample."""
  stdev = hp["noise_level"] * (np.max(x) - np.min(x))
  total, total_sq = np.zeros_like(x), np.zeros_like(x)
  for _ in range(hp["num_samples"]):
    noisy = (x + rng.normal(0.0, stdev, x.shape)).astype(x.dtype)
    m = base(noisy)
    total += m * m if hp["squared"] else m
    if hp["vargrad"]:
      total_sq += m * m
  mean = total / hp["num_samples"]
  if hp["vargrad"]:
    return np.maximum(total_sq / hp["num_samples"] - mean * mean, 0.0)
  return mean


def _ref_smoothgrad(e, x, t, hp, rng):
  return _smooth(x, hp, rng, lambda z: _call(_gradient, e, z, t))


def _ref_smoothgrad_ig(e, x, t, hp, rng):
  b = np.asarray(ig_lib.baseline_for(x, hp["baseline"], "smoothgrad_ig"))
  return _smooth(x, hp, rng, lambda z: _ref_ig(e, z, t, hp, None, b))


def _ref_occlusion(e, x, t, hp, rng):
  """PAIR ``Occlusion.GetMask`` on our window grid: one call per window."""
  # pylint: disable=protected-access
  del rng
  (wh, ww) = occlusion_lib._pair("occlusion", "window", hp["window"])
  (sh, sw) = occlusion_lib._pair("occlusion", "stride", hp["stride"])
  h, w, _ = x.shape
  original = float(_call(_logit, e, x, t))
  scores, count = np.zeros_like(x), np.zeros_like(x)
  for r in occlusion_lib._starts(h, wh, sh):
    for c in occlusion_lib._starts(w, ww, sw):
      occluded = np.array(x)
      occluded[r:r + wh, c:c + ww, :] = hp["value"]
      scores[r:r + wh, c:c + ww, :] += original - float(
          _call(_logit, e, occluded, t))
      count[r:r + wh, c:c + ww, :] += 1
  return scores / count if hp["reduce"] == "mean" else scores


# The CAM family: a per-image loop of one jitted call each (the map's forward
# and backward pass; ScoreCAM's channel passes inside that call).
_CAMS = ("hirescam", "gradcam_plus_plus", "xgradcam", "layercam", "eigencam",
         "scorecam", "random_cam")


@functools.lru_cache(maxsize=None)
def _cam_call(name: str) -> Callable[..., jax.Array]:
  method = saliency.METHODS[name]
  return jax.jit(lambda e, x, t, k: method(e, _in_model_dtype(e, x), t, key=k))


def _ref_cam(name: str) -> Callable[..., np.ndarray]:
  def one(e, x, t, hp, rng):
    del hp
    key = jax.random.key(int(rng.integers(2**31)))  # random_cam's weights
    return np.asarray(_cam_call(name)(e, x, t, key), np.float32)
  return one


def _base_is_gradient(hp: dict[str, Any]) -> bool:
  base = hp.get("base")
  return base in ("gradient", saliency.METHODS["gradient"])


# name -> (one map per image, how many jitted calls per map, deterministic)
_REFERENCES: dict[str, tuple[Callable[..., np.ndarray],
                             Callable[[dict[str, Any], tuple[int, ...]], int],
                             bool]] = {
    "gradient": (_ref_gradient, lambda hp, s: 1, True),
    "gradient_x_input": (_ref_gradient_x_input, lambda hp, s: 1, True),
    "gradcam": (_ref_gradcam, lambda hp, s: 1, True),
    "guided_backprop": (_ref_guided_backprop, lambda hp, s: 1, True),
    "guided_gradcam": (_ref_guided_gradcam, lambda hp, s: 2, True),
    "integrated_gradients": (_ref_ig, lambda hp, s: hp["steps"], True),
    "smoothgrad": (_ref_smoothgrad, lambda hp, s: hp["num_samples"], False),
    "smoothgrad_ig": (_ref_smoothgrad_ig,
                      lambda hp, s: hp["num_samples"] * hp["steps"], False),
    "occlusion": (_ref_occlusion,
                  lambda hp, s: occlusion_lib.occlusion.evaluations(s, **hp),
                  True),
    **{name: (_ref_cam(name), lambda hp, s: 1, name != "random_cam")
       for name in _CAMS},
}


class _Reference:
  """The PAIR-style loop for one method on ``images`` (float32, on the host;
  each call casts to the explainee's dtype), run once after each timed call
  of the sweep; its summary is over all those runs."""

  def __init__(self, name: str, explainee: Explainee, images: jax.Array,
               targets: jax.Array, hparams: dict[str, Any], seed: int):
    self.name = name
    self.hp = {**_defaults(saliency.METHODS[name]), **hparams}
    self.supported = name in _REFERENCES and (
        name != "smoothgrad" or _base_is_gradient(self.hp))
    self.args = (explainee, np.asarray(images), np.asarray(targets))
    self.seed = seed
    self.times: list[float] = []
    self.compile_s: float | None = None
    self.maps: np.ndarray | None = None

  def _loop(self) -> np.ndarray:
    one = _REFERENCES[self.name][0]
    e, images, targets = self.args
    rng = np.random.default_rng(self.seed)  # PAIR: np.random.normal
    return np.stack([one(e, x, int(t), self.hp, rng)
                     for x, t in zip(images, targets)])

  def warm(self) -> None:
    """The first run: compiles the single-evaluation functions."""
    self.compile_s, self.maps = _timed(self._loop)

  def sample(self) -> float:
    """One timed run; its time is also kept for the method's summary."""
    seconds = _timed(self._loop)[0]
    self.times.append(seconds)
    return seconds

  def summary(self, evaluations: int,
              ours: np.ndarray | None) -> dict[str, Any]:
    steady = statistics.median(self.times)
    n = len(self.args[1])
    calls = _REFERENCES[self.name][1](self.hp, self.args[1].shape[1:])
    agreement = None
    if _REFERENCES[self.name][2] and ours is not None:
      ours = np.asarray(ours[:n], np.float32)
      scale = float(np.max(np.abs(self.maps))) or 1.0
      agreement = float(np.max(np.abs(ours - self.maps))) / scale
    return {"compile_s": self.compile_s, "steady_s": steady,
            "steady_min_s": min(self.times), "runs": len(self.times),
            "images": n, "maps_per_s": n / steady,
            "evaluations_per_s": n * evaluations / steady,
            "calls_per_map": calls,
            # max |ours - reference| / max |reference|: both did the same work
            # (None for random methods: PAIR draws its noise with NumPy).
            "max_relative_difference": agreement}


def _defaults(method: Callable) -> dict[str, Any]:
  method = getattr(method, "resolve", lambda: method)()
  return {name: p.default
          for name, p in inspect.signature(method).parameters.items()
          if p.kind is p.KEYWORD_ONLY and p.default is not p.empty
          and name not in ("key", "batch_size", "strategy")}


# --- output helpers --------------------------------------------------------


def _say(line: str) -> None:
  print(f"[benchmark] {line}", flush=True)


def _bs(row: Row) -> str:
  """A row's batch size: ``'all'`` for None; ``'auto:64'`` for the choice."""
  def one(size):
    return "all" if size is None else str(size)
  chosen = row.get("chosen_batch_size", AUTO)
  if row["batch_size"] == AUTO:
    return AUTO if chosen == AUTO else f"{AUTO}:{one(chosen)}"
  return one(row["batch_size"])


def _num(value, scale, fmt=".1f", suffix="") -> str:
  return "-" if value is None else f"{value * scale:{fmt}}{suffix}"


def _memory(row: Row) -> int | None:
  """The row's program's bytes where measured, else the device's peak."""
  found = row.get("program_bytes")
  return row.get("peak_bytes") if found is None else found


def _duration(seconds: float) -> str:
  if seconds < 120:
    return f"{seconds:.1f} s"
  if seconds < 2 * 3600:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


def _jsonable(hparams: dict[str, Any]) -> dict[str, Any]:
  out = {}
  for k, v in hparams.items():
    if isinstance(v, (str, int, float, bool, type(None))):
      out[k] = v
    elif isinstance(v, (tuple, list)):
      out[k] = list(v)
    else:
      out[k] = getattr(v, "__name__", repr(v))
  return out


def _report(results: dict[str, Any], table: str) -> str:
  env, setup = results["environment"], results["setup"]
  return "\n".join([
      "# Benchmark", "",
      f"Settings: {'; '.join(setup['settings'])}. "
      f"{setup['num_images']} random images, random-init weights (a "
      "bfloat16 setting: state and images cast, the float32 model's "
      f"classes); {env['backend']} ({env['device_kind']}, "
      f"{env['cpu_count']} CPUs), JAX {env['jax']}; median of at least "
      f"{setup['repeats']} calls (and {setup['min_seconds']} s) after a "
      "first (compile) call. `batch`: `auto:N` is the size chosen for the "
      "device's memory, and the strategy shown the one chosen with it. "
      "`mem MiB`: the row's program (XLA's buffer assignment) where "
      "measured, else the device's peak so far. `vs ref`: how many times "
      "faster per image than the PAIR-style reference loop (on the first "
      f"{setup['reference_images']} images), the median over back-to-back "
      "pairs of runs; `(min)`: the reference's fastest run over ours. One "
      f"cascade study: every stage x {setup['cascade_images']} images x "
      "every method, from the measured rates (benchmark.json: "
      "`cascade_study_basis`)."
      + ("" if results.get("metrics") is None else
         " Metrics: each vectorized over the maps (or images) against a "
         "per-map NumPy / scikit-learn / SciPy loop of the same definition "
         "in the same run (ROAD's imputer against a SciPy sparse solve); "
         "`vs ref` the median over back-to-back pairs of the loop's time "
         "per map over ours; `max|diff|` the largest difference of the "
         "values (benchmark.json: `metrics`)."),
      "",
      "```", table, "```", "",
      "![maps/s](figures/benchmark.png)", ""])
