"""Benchmark: saliency maps per second, per method and batching strategy.

For each method in ``config.methods`` and each ``(strategy, batch_size)`` of
``config.benchmark``, :func:`run` times :func:`saliency_jax.saliency.explain`
on a batch of random images through a randomly initialized model, and reports

- maps/s and model evaluations/s in steady state (the median of at least
  ``repeats`` calls, and more until they take ``min_seconds``), with the
  first call (trace + compile + one run) timed apart;
- FLOPs per map from XLA's cost analysis of the method as one program, and the
  achieved fraction of a f32 matmul's FLOP/s measured in the same run;
- the device's peak memory where the backend reports it (``None`` on CPU);
- the same maps computed by a reference loop in the same process, as PAIR
  ``saliency`` computes them: a Python loop over images and noise samples /
  path steps / windows, one call of a jitted single-evaluation function each,
  accumulated in NumPy. Each timed call is followed by one run of the
  reference loop, and a row's ``reference_ratio`` is the median over those
  pairs of (reference time / our time): on a machine shared with other jobs,
  back-to-back pairs see the same load where separate medians would not.

The best ``(strategy, batch_size)`` per method and overall
(:func:`best_settings`) is what ``saliency.batching.DEFAULT_STRATEGY`` should
hold for this backend.
Writes ``benchmark.json``, ``report.md`` and ``figures/benchmark.png`` into the
workdir. Measurements are never resumed from an earlier run: ratios only mean
something within one run on one machine state.
"""

from __future__ import annotations

import inspect
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import io_utils, models, saliency
from saliency_jax.report import figures
from saliency_jax.saliency import batching
from saliency_jax.saliency import gradcam as gradcam_lib
from saliency_jax.saliency import guided_backprop as guided_lib
from saliency_jax.saliency import integrated_gradients as ig_lib
from saliency_jax.saliency import occlusion as occlusion_lib
from saliency_jax.saliency.explainee import Explainee

Row = dict[str, Any]
_MAX_REPEATS = 100  # timed calls per setting, at most


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the sweep, writes its results into ``workdir`` and returns them."""
  methods = _check(config)
  device = jax.devices()[0]
  environment = _environment(device)
  _say(f"JAX {jax.__version__} on {environment['backend']} "
       f"({environment['device_kind']}, {environment['cpu_count']} CPUs); "
       f"{config.model} width {config.width} at {config.image_size} px, "
       f"{config.num_images} images")
  setup = _setup(config)
  b = config.benchmark
  matmul = _matmul_peak(b.matmul_size, b.repeats)
  _say(f"matmul {b.matmul_size}^2 f32: {matmul['flops_per_s'] / 1e9:.1f} "
       "GFLOP/s (the peak fractions below are of this)")
  per_method, rows = {}, []
  for name, hparams in methods.items():
    per_method[name], method_rows = _sweep(config, name, hparams, *setup,
                                           device)
    rows += method_rows
  _finish_rows(rows, per_method, matmul)
  environment["loadavg_end"] = _loadavg()
  results = {
      "environment": environment,
      "setup": {"model": config.model, "width": config.width,
                "image_size": config.image_size,
                "in_channels": b.in_channels,
                "num_classes": config.num_classes,
                "num_images": config.num_images, "seed": config.seed,
                "methods": list(methods), "repeats": b.repeats,
                "min_seconds": b.min_seconds,
                "preset": b.preset, "strategies": list(b.strategies),
                "batch_sizes": list(b.batch_sizes)},
      "default_strategy_in_effect": list(batching.DEFAULT_STRATEGY.get(
          environment["backend"], ("vectorized", None))),
      "matmul": matmul,
      "methods": per_method,
      "rows": rows,
      "best": {**best_settings(rows), "backend": environment["backend"]},
  }
  io_utils.write_json(os.path.join(workdir, "benchmark.json"), results)
  table = format_table(results)
  io_utils.write_text(os.path.join(workdir, "report.md"),
                      _report(results, table))
  plot(results, os.path.join(workdir, "figures", "benchmark.png"))
  print(table, flush=True)
  return results


def _sweep(config: ml_collections.ConfigDict, name: str,
           hparams: dict[str, Any], explainee: Explainee, images: jax.Array,
           targets: jax.Array, key: jax.Array,
           device: jax.Device) -> tuple[dict[str, Any], list[Row]]:
  """Every (strategy, batch_size) of one method, and its reference loop."""
  b = config.benchmark
  fn = saliency.METHODS[name]
  evals = batching.evaluations(fn, images.shape[1:], hparams)
  info = {"hparams": _jsonable(hparams), "evaluations_per_map": evals,
          "flops_per_map": _flops_per_map(fn, explainee, images[0],
                                          targets[0], key, hparams),
          "reference": None}
  reference = None
  if b.reference:
    reference = _Reference(name, explainee, images, targets, hparams,
                           config.seed)
    if not reference.supported:
      _say(f"  {name}: no reference loop for this method")
      reference = None
    else:
      reference.warm()
  rows, ours = [], None
  for strategy in b.strategies:
    for batch_size in b.batch_sizes:
      row, out = _measure(name, explainee, images, targets, key, hparams,
                          strategy, batch_size, b.repeats, b.min_seconds,
                          device, reference)
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
                    "strategy": "reference", "batch_size": 1}))
  return info, rows


def best_settings(rows: Sequence[Row]) -> dict[str, Any]:
  """The fastest measured ``(strategy, batch_size)``, per method and overall.

  A row's speed is its ``corrected_maps_per_s`` when every row of its method
  has one (its ``reference_ratio`` times the reference loop's maps/s: the
  loop, run back to back with each call, is a control that cancels load from
  other processes between rows), else its maps/s. Per method: the fastest
  row. Overall: among the settings measured for every method, the one that
  makes one map of every method in the least total time,
  ``sum(1 / speed)``, so the expensive methods, where batching matters,
  weigh the most. Rows without maps/s (failed) are ignored; ties go to the
  first setting measured.
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


def format_table(results: dict[str, Any]) -> str:
  """The rows as a fixed-width text table, reference loop after each method."""
  head = (f"{'method':<21} {'strategy':<10} {'batch':>5} {'compile s':>9} "
          f"{'maps/s':>9} {'evals/s':>9} {'GFLOP/s':>8} {'%peak':>6} "
          f"{'vs ref':>7} {'(min)':>6}")
  lines = [head, "-" * len(head)]
  for name in results["setup"]["methods"]:
    info = results["methods"][name]
    for r in results["rows"]:
      if r["method"] != name:
        continue
      if r.get("error"):
        lines.append(f"{name:<21} {r['strategy']:<10} "
                     f"{_bs(r['batch_size']):>5}  failed: {r['error'][:60]}")
        continue
      lines.append(
          f"{name:<21} {r['strategy']:<10} {_bs(r['batch_size']):>5} "
          f"{r['compile_s']:>9.2f} {r['maps_per_s']:>9.2f} "
          f"{r['evaluations_per_s']:>9.1f} {_num(r['flops_per_s'], 1e-9):>8} "
          f"{_num(r['peak_fraction'], 100):>6} "
          f"{_num(r['reference_ratio'], 1, '.2f', 'x'):>7} "
          f"{_num(r.get('reference_ratio_min'), 1, '.2f', 'x'):>6}")
    ref = info["reference"]
    if ref is not None:
      lines.append(
          f"{name:<21} {'reference':<10} {'1':>5} {ref['compile_s']:>9.2f} "
          f"{ref['maps_per_s']:>9.2f} {ref['evaluations_per_s']:>9.1f} "
          f"{'':>8} {'':>6} {'1.00x':>7} {'1.00x':>6}")
  best = results["best"]
  lines.append("")
  for name in results["setup"]["methods"]:
    if name not in best["per_method"]:
      continue
    b = best["per_method"][name]
    ratio = _num(b["reference_ratio"], 1, ".2f", "x the reference")
    lines.append(f"fastest {name}: {b['strategy']}, batch_size "
                 f"{_bs(b['batch_size'])} ({b['maps_per_s']:.2f} maps/s, "
                 f"{ratio}; by {b['by']})")
  if best["overall"] is not None:
    o = best["overall"]
    lines.append(f"best overall on {best.get('backend', '?')}: "
                 f"({o['strategy']!r}, {o['batch_size']!r}), one map of "
                 f"every method in {o['seconds']:.3f} s; in effect: "
                 f"{tuple(results['default_strategy_in_effect'])}")
  return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
  """maps/s against batch size, one panel per method, a line per strategy,
  the reference loop as a dashed line."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  names = results["setup"]["methods"]
  cols = min(4, len(names))
  nrows = -(-len(names) // cols)
  fig = Figure(figsize=(3.2 * cols, 2.8 * nrows), layout="constrained")
  sizes = results["setup"]["batch_sizes"]
  labels = [_bs(s) for s in sizes]
  for i, name in enumerate(names):
    ax = fig.add_subplot(nrows, cols, i + 1)
    for strategy in results["setup"]["strategies"]:
      points = [(labels.index(_bs(r["batch_size"])), r["maps_per_s"])
                for r in results["rows"] if r["method"] == name
                and r["strategy"] == strategy and r.get("maps_per_s")]
      if points:
        ax.plot(*zip(*points), marker="o", label=strategy)
    ref = results["methods"][name]["reference"]
    if ref is not None:
      ax.axhline(ref["maps_per_s"], color="k", linestyle="--",
                 label="reference loop")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("batch_size", fontsize=8)
    ax.set_ylabel("maps/s", fontsize=8)
    ax.tick_params(which="both", labelsize=7)
    if i == 0:
      ax.legend(fontsize=7)
  env, setup = results["environment"], results["setup"]
  fig.suptitle(f"{setup['model']} x{setup['width']} at {setup['image_size']} "
               f"px, {env['backend']} ({env['device_kind']}), JAX "
               f"{env['jax']}", fontsize=10)
  # Atomic, and readable by the other users of a shared results folder.
  figures.save(fig, path)


# --- setup -----------------------------------------------------------------


def validate(config: ml_collections.ConfigDict) -> None:
  """The benchmark block, before anything is written."""
  _check(config)


def _check(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
  """Validates the benchmark block; returns ``{method: hparams}`` in order."""
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
    if size is not None and (isinstance(size, bool) or
                             not isinstance(size, int) or size < 1):
      raise errors.ConfigError(f"config.benchmark.batch_sizes: {size!r} is not a "
                               "positive int or None")
  if not b.strategies or not b.batch_sizes or not config.methods:
    raise errors.ConfigError("config.methods, config.benchmark.strategies and "
                             "config.benchmark.batch_sizes must not be empty")
  given = b.hparams.to_dict()
  return {name: saliency.hparams_for(b.preset, name, **given.get(name, {}))
          for name in config.methods}


def _setup(config: ml_collections.ConfigDict
           ) -> tuple[Explainee, jax.Array, jax.Array, jax.Array]:
  """Random-init model (or ``config.model_weights``'), random images in [0, 1],
  their predicted classes."""
  image_key, method_key = jax.random.split(jax.random.key(config.seed))
  if config.get("model_weights"):
    # Lazily: train brings the data pipeline, which a benchmark never needs.
    from saliency_jax import train  # pylint: disable=g-import-not-at-top
    model = train.weights_model(config, in_channels=config.benchmark.in_channels)
  else:
    model = models.create(config.model, num_classes=config.num_classes,
                          in_channels=config.benchmark.in_channels,
                          width=config.width,
                          preprocessing=config_lib.preprocessing_for(config),
                          rngs=nnx.Rngs(config.seed))
  explainee = saliency.from_model(model)
  images = jax.random.uniform(
      image_key, (config.num_images, config.image_size, config.image_size,
                  config.benchmark.in_channels), jnp.float32)
  targets = jnp.argmax(jax.vmap(jax.jit(_logits), (None, 0))(explainee, images),
                       axis=-1).astype(jnp.int32)
  return explainee, images, jax.block_until_ready(targets), method_key


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


def _matmul_peak(size: int, repeats: int) -> dict[str, float]:
  """Best time of a (size, size) f32 matmul: the achievable FLOP/s here."""
  a, b = jax.random.normal(jax.random.key(0), (2, size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  _timed(lambda: matmul(a, b))
  seconds = min(_timed(lambda: matmul(a, b))[0]
                for _ in range(max(3, repeats)))
  flops = 2.0 * size ** 3
  return {"size": size, "seconds": seconds, "flops": flops,
          "flops_per_s": flops / seconds}


def _flops_per_map(fn: Callable[..., jax.Array], explainee: Explainee,
                   x: jax.Array, target: jax.Array, key: jax.Array,
                   hparams: dict[str, Any]) -> float | None:
  """XLA's FLOP count of one map as one vectorized program (every sample,
  step or window at once), so loops do not hide work from the count."""
  def one(e, x, t, k):
    return fn(e, x, t, key=k, strategy="vectorized", batch_size=None,
              **hparams)
  try:
    analysis = jax.jit(one).lower(explainee, x, target, key).compile(
    ).cost_analysis()
  except Exception as e:  # pylint: disable=broad-except
    _say(f"  (no FLOP count: {type(e).__name__}: {e})")
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = None if not analysis else analysis.get("flops")
  return float(flops) if flops and flops > 0 else None


def _measure(name: str, explainee: Explainee, images: jax.Array,
             targets: jax.Array, key: jax.Array, hparams: dict[str, Any],
             strategy: str, batch_size: int | None, repeats: int,
             min_seconds: float, device: jax.Device,
             reference: _Reference | None) -> tuple[Row, np.ndarray | None]:
  """One setting: a first call (compile), then timed calls, each followed by
  one run of the reference loop when there is one, so that each pair of times
  sees the same load from other processes. At least ``repeats`` calls, more
  (up to ``_MAX_REPEATS``) until they add up to ``min_seconds``: a fast
  method gets enough pairs for a steady median."""
  row: Row = {"method": name, "strategy": strategy, "batch_size": batch_size}
  call = lambda: saliency.explain(  # noqa: E731
      explainee, images, targets, method=name, key=key, strategy=strategy,
      batch_size=batch_size, **hparams)
  times, reference_times = [], []
  try:
    compile_s, out = _timed(call)
    while len(times) < repeats or (sum(times) < min_seconds and
                                   len(times) < _MAX_REPEATS):
      times.append(_timed(call)[0])
      if reference is not None:
        reference_times.append(reference.sample())
  except (jax.errors.JaxRuntimeError, MemoryError) as e:
    # Out of memory on an accelerator for a big batch: record and go on.
    row.update(error=f"{type(e).__name__}: {str(e).splitlines()[0]}",
               compile_s=None, steady_s=None, steady_min_s=None,
               maps_per_s=None, peak_bytes=_peak_bytes(device),
               **reference_ratios((), ()))
    return row, None
  steady = statistics.median(times)
  row.update(compile_s=compile_s, steady_s=steady, steady_min_s=min(times),
             maps_per_s=images.shape[0] / steady,
             peak_bytes=_peak_bytes(device), times=times,
             reference_times=reference_times or None,
             **reference_ratios(times, reference_times))
  return row, np.asarray(out)


def reference_ratios(times: Sequence[float],
                     reference_times: Sequence[float]) -> dict[str, Any]:
  """How many times faster than the reference loop, from paired runs.

  ``reference_ratio``: the median over pairs of reference time / our time
  (run back to back); ``reference_ratio_min``: the fastest reference run over
  our fastest run. ``None`` without reference runs.
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
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return None if not stats else stats.get("peak_bytes_in_use")


def _finish_rows(rows: list[Row], per_method: dict[str, Any],
                 matmul: dict[str, float]) -> None:
  """Per row: achieved FLOP/s, its fraction of the matmul's, and maps/s
  corrected for load (reference ratio x the reference loop's maps/s)."""
  for r in rows:
    info = per_method[r["method"]]
    ref, ratio = info["reference"], r.get("reference_ratio")
    r["corrected_maps_per_s"] = (ratio * ref["maps_per_s"]
                                 if ref and ratio else None)
    ok = r.get("maps_per_s") is not None
    flops = info["flops_per_map"]
    r["flops_per_s"] = flops * r["maps_per_s"] if ok and flops else None
    r["peak_fraction"] = (r["flops_per_s"] / matmul["flops_per_s"]
                          if r["flops_per_s"] else None)


def _progress(r: Row) -> str:
  if r.get("error"):
    return (f"  {r['method']:<21} {r['strategy']:<10} batch "
            f"{_bs(r['batch_size']):>4}  failed: {r['error'][:80]}")
  return (f"  {r['method']:<21} {r['strategy']:<10} batch "
          f"{_bs(r['batch_size']):>4}  compile {r['compile_s']:6.2f} s  "
          f"steady {r['steady_s']:7.3f} s  {r['maps_per_s']:8.2f} maps/s  "
          f"{r['evaluations_per_s']:9.1f} evals/s"
          + ("" if r.get("reference_ratio") is None else
             f"  {r['reference_ratio']:.2f}x the reference loop"))


# --- the reference loop ----------------------------------------------------


@jax.jit
def _gradient(e: Explainee, x: jax.Array, t: jax.Array) -> jax.Array:
  """One gradient of the target logit: the unit a PAIR loop calls."""
  return jax.grad(lambda z: e.logits(z)[t])(x)


@jax.jit
def _logit(e: Explainee, x: jax.Array, t: jax.Array) -> jax.Array:
  return e.logits(x)[t]


def _logits(e: Explainee, x: jax.Array) -> jax.Array:
  return e.logits(x)


def _call(fn, e, x, t) -> np.ndarray:
  """One jitted call, its result copied to the host as PAIR's callback does."""
  return np.asarray(fn(e, x, t))


def _ref_gradient(e, x, t, hp, rng):
  del hp, rng
  return _call(_gradient, e, x, t)


def _ref_gradient_x_input(e, x, t, hp, rng):
  del hp, rng
  return x * _call(_gradient, e, x, t)


def _ref_gradcam(e, x, t, hp, rng):
  del hp, rng
  return _call(gradcam_lib.gradcam, e, x, t)


def _ref_guided_backprop(e, x, t, hp, rng):
  del hp, rng
  return _call(guided_lib.guided_backprop, e, x, t)


def _ref_guided_gradcam(e, x, t, hp, rng):
  del hp, rng
  return (_call(guided_lib.guided_backprop, e, x, t) *
          _call(gradcam_lib.gradcam, e, x, t))


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
}


class _Reference:
  """The PAIR-style loop for one method, run once after each timed call of
  the sweep; its summary is over all those runs."""

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
      scale = float(np.max(np.abs(self.maps))) or 1.0
      agreement = float(np.max(np.abs(ours - self.maps))) / scale
    return {"compile_s": self.compile_s, "steady_s": steady,
            "steady_min_s": min(self.times), "runs": len(self.times),
            "maps_per_s": n / steady,
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


def _bs(batch_size: int | None) -> str:
  return "all" if batch_size is None else str(batch_size)


def _num(value, scale, fmt=".1f", suffix="") -> str:
  return "-" if value is None else f"{value * scale:{fmt}}{suffix}"


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
      f"{setup['model']} (width {setup['width']}) at {setup['image_size']} px, "
      f"{setup['num_images']} random images, random-init weights; "
      f"{env['backend']} ({env['device_kind']}, {env['cpu_count']} CPUs), "
      f"JAX {env['jax']}; median of at least {setup['repeats']} calls (and "
      f"{setup['min_seconds']} s) after a first (compile) call. `vs ref`: "
      "how many times faster than the PAIR-style reference loop, the "
      "median over back-to-back pairs of runs (reference time / our time); "
      "`(min)`: the reference's fastest run over ours.",
      "",
      "```", table, "```", "",
      "![maps/s](figures/benchmark.png)", ""])
