"""Faithfulness: does the model's output follow the order a map ranks pixels in?

Every method in ``config.methods`` and every control in ``config.controls``
explains the test positives; each post-processed map (|.|, channel sum, 99th
percentile clip, [0, 1], as every experiment) is then scored with the
metrics of :mod:`saliency_jax.metrics.faithfulness`, image by image, from the
trained model's probability of the explained class:

- ``deletion_auc`` / ``insertion_auc``: areas under the deletion and
  insertion curves (Petsiuk et al., BMVC 2018; lower / higher is better);
- ``road_morf`` / ``road_lerf``: ROAD's mean probability after removing the
  most / least relevant pixels and imputing them (Rong et al., ICML 2022;
  lower / higher is better); ``road_combined`` = (LeRF - MoRF) / 2 (higher);
- ``confidence_drop`` / ``confidence_increase``: on the image times the map
  (Chattopadhyay et al., WACV 2018; lower / higher is better).

Controls: ``random`` (uniform noise), ``edge`` (Sobel), ``center_prior`` (a
centred Gaussian) ignore the model; ``random_cam`` (the GradCAM layer under
random channel weights) ignores the target. A method is *more faithful than
the controls* on ``config.primary_metric`` when its mean is better than every
control's and a paired Wilcoxon test against the best control,
Holm-adjusted over the methods, gives p < 0.05.

Perturbations are keyed per image from the config seed and shared by every
map (common random numbers: methods differ only by their maps). Each map's
scores are one verified part (:mod:`saliency_jax.results`) with its example
maps and per-image curves beside it, so a rerun resumes. An image whose
logits, map or scores are not finite makes its method INVALID (counted);
``confidence_*`` of a constant map is undefined (NaN, excluded and counted).

With several devices (or processes) the maps and the scores split the images
over every device of every process, as :mod:`runner` does; then every
process computes every part (no resume from its own disk, so all meet in the
same sharded programs) and only process 0 writes into the workdir
(``main``'s followers write into a scratch folder and draw no report).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import PartitionSpec as P

from saliency_jax import devices
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import progress as progress_lib
from saliency_jax import results
from saliency_jax import rng
from saliency_jax import saliency
from saliency_jax import workdir as workdir_lib
from saliency_jax.experiments import common
from saliency_jax.experiments import localization
from saliency_jax.experiments import runner
from saliency_jax.metrics import faithfulness as metrics
from saliency_jax.metrics import stats
from saliency_jax.report import faithfulness_report
from saliency_jax.saliency import batching
from saliency_jax.saliency.explainee import as_explainee

EXPERIMENT = "faithfulness"
# Control maps, in report order.
CONTROLS = ("random", "edge", "center_prior", "random_cam")
# Row metric -> whether higher is better.
METRICS = {
    "deletion_auc": False, "insertion_auc": True,
    "road_morf": False, "road_lerf": True, "road_combined": True,
    "confidence_drop": False, "confidence_increase": True,
}
# Undefined (NaN) on a constant map; excluded and counted, not INVALID.
UNDEFINED_ON_CONSTANT = ("confidence_drop", "confidence_increase")
CURVES = ("deletion", "insertion")
OPTIONS = ("step", "replacement", "sigma", "value", "percentiles", "noise", "output")
ALPHA = localization.ALPHA


# ------------------------------------------------------------- validation ---

def validate(config: ml_collections.ConfigDict) -> None:
  """The keys only this experiment has: ``controls``, ``primary_metric``,
  ``faithfulness.*``."""
  common.check_controls(config, CONTROLS)
  if config.primary_metric not in METRICS:
    raise errors.ConfigError(f"config.primary_metric={config.primary_metric!r}: "
                             f"expected one of {tuple(METRICS)}")
  _validate_options(config.faithfulness)


def _number(value: Any) -> bool:
  return not isinstance(value, bool) and isinstance(value, (int, float))


def _validate_options(f: ml_collections.ConfigDict) -> None:
  def bad(key: str, expected: str) -> errors.ConfigError:
    return errors.ConfigError(f"config.faithfulness.{key}={f[key]!r}: expected {expected}")
  if not _number(f.step) or not 0 < f.step <= 1:
    raise bad("step", "a fraction of the pixels in (0, 1]")
  if f.replacement not in metrics.REPLACEMENTS:
    raise bad("replacement", f"one of {metrics.REPLACEMENTS}")
  if not _number(f.sigma) or f.sigma <= 0:
    raise bad("sigma", "a positive blur std in pixels")
  if not _number(f.value):
    raise bad("value", "a number (the constant of replacement='constant')")
  percentiles = f.percentiles
  if (not isinstance(percentiles, (tuple, list)) or not percentiles
      or not all(_number(p) and 0 <= p < 100 for p in percentiles)):
    raise bad("percentiles", "a non-empty tuple of percentages in [0, 100)")
  if not _number(f.noise) or f.noise < 0:
    raise bad("noise", "a non-negative noise std")
  if f.output not in metrics.OUTPUTS:
    raise bad("output", f"one of {metrics.OUTPUTS}")
  size = f.batch_size
  if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                           or size < 1):
    raise bad("batch_size", "None (config.batch_size's rule) or a positive number "
              "of perturbed images")


def options_of(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The metrics' options from ``config.faithfulness`` (hashable: static)."""
  f = config.faithfulness
  out = {k: f[k] for k in OPTIONS}
  out["percentiles"] = tuple(float(p) for p in f.percentiles)
  return out


# ----------------------------------------------------------------- scores ---

def evaluations(options: dict[str, Any]) -> int:
  """Model evaluations :func:`score_maps` makes per image."""
  points = int(np.ceil(1.0 / options["step"] - 1e-9)) + 1
  return 2 * points + 2 * len(options["percentiles"]) + 2


def score_maps(explainee: Any, images: jax.Array, maps: jax.Array,
               targets: jax.Array, keys: jax.Array, *, options: dict[str, Any],
               batch_size: int | None = None,
               strategy: str | None = None,
               mesh: jax.sharding.Mesh | None = None) -> dict[str, jax.Array]:
  """Every faithfulness score of each (image, map), over images in chunks.

  Images go through :func:`batching.sample_map` (vmapped in chunks, or one
  call per image dispatched from Python), so ``batch_size`` bounds the model
  evaluations at once over images and perturbed copies together. Image n's
  key is split into the curves' key and ROAD's, ROAD's into LeRF's and
  MoRF's (as :func:`metrics.road_combined` splits it).

  Args:
    explainee: the model (an :class:`Explainee`, NNX model or logits_fn).
    images: (N, H, W, C).
    maps: (N, H, W) post-processed maps.
    targets: (N,) explained classes.
    keys: (N,) ``jax.random`` keys.
    options: :func:`options_of`.
    batch_size: model evaluations at once; ``None``: backend rule.
    strategy: how chunks run (:data:`batching.STRATEGIES`).
    mesh: a one-axis mesh (``devices.mesh()``): with more than one device
      the images are split over its devices (every process's), each device
      scoring its share as one device would ('dispatch' as 'scan'); every
      process gets the whole result.

  Returns:
    metric -> (N,) for every name in :data:`METRICS`; ``deletion`` and
    ``insertion`` -> (N, m) curves; ``fractions`` -> (N, m).
  """
  strategy, batch_size = batching.resolve(strategy, batch_size)
  if mesh is not None and mesh.size > 1:
    return _sharded_scores(as_explainee(explainee), images, maps, targets, keys,
                           options=options, batch_size=batch_size,
                           strategy="scan" if strategy == "dispatch" else strategy,
                           mesh=mesh)
  static = tuple(sorted(options.items())) + (("batch_size", batch_size),
                                             ("strategy", strategy))
  return batching.sample_map(
      _score_one, as_explainee(explainee), (images, maps, targets, keys),
      batch_size=batch_size, strategy=strategy, inner=evaluations(options),
      static=static)


def _sharded_scores(explainee, images, maps, targets, keys, *, options, batch_size,
                    strategy, mesh) -> dict[str, jax.Array]:
  """:func:`score_maps` with the images split over ``mesh``'s devices
  (``shard_map``; the last image repeated to whole shards, repeats cut)."""
  axis, n = mesh.axis_names[0], images.shape[0]
  pad = devices.pad_to(n, mesh.size)
  split = devices.place((images[pad], maps[pad], targets[pad], keys[pad]), mesh,
                        P(axis))
  model = devices.place(explainee, mesh, P())

  def local(model, images, maps, targets, keys):
    return score_maps(model, images, maps, targets, keys, options=options,
                      batch_size=batch_size, strategy=strategy)

  # No gradients here, so no replicated input to make device-varying first;
  # unchecked, as jax.scipy's CG (ROAD's imputer) starts from an invariant x0.
  out = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(),) + (P(axis),) * 4,
                              out_specs=P(axis), check_vma=False))(model, *split)
  return {k: devices.gather(v)[:n] for k, v in out.items()}


def _score_one(explainee, sample, *, step, replacement, sigma, value, percentiles,
               noise, output, batch_size, strategy) -> dict[str, jax.Array]:
  x, s, t, key = sample
  curve_key, road_key = jax.random.split(key)
  lerf_key, morf_key = jax.random.split(road_key)
  run = dict(batch_size=batch_size, strategy=strategy, output=output)
  curve = dict(key=curve_key, step=step, replacement=replacement, sigma=sigma,
               value=value, **run)
  deleted = metrics.deletion(explainee, x, s, t, **curve)
  inserted = metrics.insertion(explainee, x, s, t, **curve)
  road = dict(percentiles=percentiles, noise=noise, **run)
  lerf = metrics.road(explainee, x, s, t, key=lerf_key, order="lerf", **road)
  morf = metrics.road(explainee, x, s, t, key=morf_key, order="morf", **road)
  confidence = metrics.confidence_change(explainee, x, s, t, **run)
  return {
      "deletion_auc": deleted.auc, "insertion_auc": inserted.auc,
      "road_morf": morf.mean, "road_lerf": lerf.mean,
      "road_combined": (lerf.mean - morf.mean) / 2,
      "confidence_drop": confidence.drop,
      "confidence_increase": confidence.increase,
      "deletion": deleted.scores, "insertion": inserted.scores,
      "fractions": deleted.fractions,
  }


def score_keys(config: ml_collections.ConfigDict, num_images: int) -> jax.Array:
  """One key per image (the same for every map), from the config seed."""
  return jax.random.split(rng.key(config.seed, rng.PERTURB), num_images)


# ------------------------------------------------------------------- run ---

def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Scores every method and control on the test positives; see module doc."""
  images_np = common.evaluation_images(config, workdir=workdir)
  in_channels = images_np["image"].shape[-1]
  model, training = common.trained_model(config, workdir, in_channels=in_channels)
  outcome, curves = run_maps(config, workdir, saliency.from_model(model), images_np)
  ids = [str(i) for i in images_np["id"]]
  summary = _summarize(config, workdir, outcome, curves, training, ids)
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  if devices.is_writer():  # a follower's workdir is a scratch folder
    faithfulness_report.write(workdir, config, summary, outcome.examples, images_np)
  return summary


def maps_path(workdir: str, name: str) -> str:
  """Example maps and per-image curves of map ``name`` (an .npz)."""
  return os.path.join(workdir, "maps", f"{EXPERIMENT}-{name}.npz")


@jax.jit
def _logits(explainee: saliency.Explainee, images: jax.Array) -> jax.Array:
  return jax.vmap(explainee.logits)(images)


def run_maps(config: ml_collections.ConfigDict, workdir: str,
             explainee: saliency.Explainee, images_np: dict[str, np.ndarray]
             ) -> tuple[runner.Outcome, dict[str, dict[str, np.ndarray]]]:
  """Maps, scores and parts of every method and control; resumes verified parts.

  Returns:
    (outcome: rows, example maps, health, invalid; name -> ``fractions``
    (m,), ``deletion`` and ``insertion`` (N, m) curves, NaN where invalid).
  """
  names = list(config.methods) + list(config.controls)
  images = jnp.asarray(images_np["image"])
  ids = [str(i) for i in images_np["id"]]
  logits = _logits(explainee, images)
  finite_logits = np.asarray(jnp.isfinite(logits).all(axis=-1))
  targets = (jnp.asarray(images_np["label"]) if config.targets == "true"
             else jnp.argmax(logits, axis=-1))
  map_key = rng.key(config.seed, rng.SALIENCY)
  keys = score_keys(config, len(ids))
  inputs = results.fingerprint_of(
      config.to_json_best_effort(sort_keys=True), workdir_lib.recorded_inputs(workdir),
      EXPERIMENT, ids)
  progress = progress_lib.Progress(EXPERIMENT, len(names) * len(ids), unit="map")
  runner.save_example_images(workdir, EXPERIMENT, images_np, config.report.example_images)
  parts, examples, curves, health, invalid, runs_of = [], {}, {}, {}, {}, {}
  for m, name in enumerate(names):
    part_name = f"{EXPERIMENT}-{name}"
    fingerprint = results.fingerprint_of(inputs, name)
    path = maps_path(workdir, name)
    # Several processes compute every part: each must meet the others in
    # the same sharded programs, whatever its own disk says (as the runner).
    found = (results.verified_part(workdir, part_name, fingerprint)
             if jax.process_count() == 1 else None)
    if found is not None and not _saved_matches(path, found[1]):
      found = None
    if found is not None:
      part, manifest = found
      with np.load(path) as saved:
        saved = dict(saved)
      progress.update(len(ids), f"{name} done earlier, skipped")
    else:
      part, manifest, saved = _compute(config, name, m, explainee, images_np, images,
                                       targets, finite_logits, map_key, keys, ids)
      io_utils.atomic_write(path, lambda f, s=saved: np.savez(f, **s))
      manifest["maps_sha256"] = io_utils.sha256_file(path)
      results.write_part(workdir, part_name, part, fingerprint=fingerprint, **manifest)
      progress.update(len(ids), name)
    parts.append(part)
    examples[name] = saved["maps"]
    curves[name] = {k: saved[k] for k in ("fractions",) + CURVES}
    counts = {k: manifest[f"nonfinite_{k}"] for k in ("logits", "maps", "scores")}
    health[name] = {"trained": counts}
    runs_of[name] = manifest.get("batching")
    if any(counts.values()):
      invalid[name] = (f"{sum(counts.values())} logits, maps or scores were not "
                       "finite (" + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                       + ")")
      logging.warning("%s %s: INVALID, %s", EXPERIMENT, name, invalid[name])
  progress.close()
  all_rows = results.write_results(workdir, parts)
  return runner.Outcome(rows=all_rows, examples=examples, health=health,
                        invalid=invalid, targets=[np.asarray(targets)],
                        batching=runs_of), curves


def _compute(config, name, m, explainee, images_np, images, targets, finite_logits,
             map_key, keys, ids):
  """(rows, manifest, saved arrays) of map ``name``: maps, checks, scores."""
  method, hparams = name, common.method_hparams(config, name)
  # The runner's maps: split over the devices (every process's) where there
  # are several, the batch size 'auto' resolved for one device's share.
  state = runner.ModelState("trained", explainee, config.model, config.seed)
  raw, runs = runner._raw_maps(  # pylint: disable=protected-access
      config, [state], [[0]], images, [targets], method, hparams,
      jax.random.fold_in(map_key, m), common.segments_for(method, images_np["image"]))
  raw = raw[0]
  mesh, _ = runner._mesh(config)  # pylint: disable=protected-access
  finite_maps = np.asarray(jnp.isfinite(raw).all(axis=(-3, -2, -1)))
  maps = common.postprocess_batch(raw)
  options = options_of(config)
  score_strategy, score_size = score_batching(config, options)
  scored = score_maps(explainee, images, maps, targets, keys, options=options,
                      batch_size=score_size, strategy=score_strategy, mesh=mesh)
  scored = {k: np.asarray(v, np.float64) for k, v in scored.items()}
  bad = ~(finite_maps & finite_logits)
  flat = np.asarray(maps).reshape(len(ids), -1)
  constant = flat.max(axis=1) == flat.min(axis=1)
  scores, nonfinite = {}, np.zeros(len(ids), bool)
  for metric in METRICS:
    values = np.where(bad, np.nan, scored[metric])
    undefined = constant if metric in UNDEFINED_ON_CONSTANT else np.zeros_like(bad)
    nonfinite |= ~bad & ~undefined & ~np.isfinite(values)
    scores[metric] = values
  part = results.rows(experiment=EXPERIMENT, dataset=config.dataset, model=config.model,
                      seed=config.seed, stage=0, method=name, image_ids=ids,
                      scores=scores)
  saved = {"maps": np.asarray(maps[:config.report.example_images]),
           "fractions": scored["fractions"][0],
           **{k: np.where(bad[:, None], np.nan, scored[k]) for k in CURVES}}
  manifest = {"batching": {"strategy": runs[0]["strategy"],
                           "batch_size": runs[0]["batch_size"],
                           "requested_batch_size": config.get("batch_size"),
                           "devices": runs[0]["devices"],
                           "shard_over": runs[0]["shard_over"],
                           "score_strategy": score_strategy,
                           "score_batch_size": score_size},
              "nonfinite_logits": int((~finite_logits).sum()),
              "nonfinite_maps": int((~finite_maps).sum()),
              "nonfinite_scores": int(nonfinite.sum()),
              "constant_maps": int(constant.sum())}
  return part, manifest, saved


def score_batching(config: ml_collections.ConfigDict, options: dict[str, Any]
                   ) -> tuple[str, int | None]:
  """(strategy, batch size) of the scores: ``config.faithfulness.batch_size``,
  else ``config.batch_size``'s rule; 'auto' (the GPU/TPU default) is one
  image's perturbed copies at once, so memory never grows with the images."""
  size = config.faithfulness.batch_size
  strategy, size = batching.resolve(config.get("strategy"),
                                    config.get("batch_size") if size is None else size,
                                    keep_auto=True)
  return strategy, evaluations(options) if size == batching.AUTO else size


def _saved_matches(path: str, manifest: dict[str, Any]) -> bool:
  if os.path.exists(path) and io_utils.sha256_file(path) == manifest.get("maps_sha256"):
    return True
  logging.warning("%s: missing or not the maps of its part; computing the part again",
                  path)
  return False


# ---------------------------------------------------------------- summary ---

def curve_bands(curves: dict[str, np.ndarray], *, seed: int,
                num_resamples: int) -> dict[str, Any]:
  """Per curve, the mean over images at each fraction and its 95% bootstrap band."""
  out: dict[str, Any] = {"fractions": np.asarray(curves["fractions"]).tolist()}
  for kind in CURVES:
    triples = [stats.bootstrap_ci(column, seed=seed, num_resamples=num_resamples)
               for column in np.asarray(curves[kind], np.float64).T]
    out[kind] = {k: [t[i] for t in triples] for i, k in enumerate(("mean", "low", "high"))}
  return out


def _summarize(config, workdir, outcome, curves, training, ids) -> dict[str, Any]:
  aggregates = runner.aggregates(config, outcome.rows)
  means = {(a["method"], a["metric"]): a["mean"] for a in aggregates}
  comparisons = {metric: compare(config, outcome, means, ids, metric)
                 for metric in METRICS}
  primary = comparisons[config.primary_metric]
  seed = rng.integer_seed(config.seed, rng.STATS)
  return {
      **runner.summary_header(config, EXPERIMENT, outcome, len(ids), workdir),
      "controls": list(config.controls),
      "metrics": list(METRICS),
      "higher_is_better": dict(METRICS),
      "faithfulness": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in options_of(config).items()},
      "primary_metric": config.primary_metric, "alpha": ALPHA,
      "training": training,
      "better_than_controls": {m: primary[m]["better_than_controls"]
                               for m in config.methods},
      "verdicts": {m: primary[m]["verdict"] for m in config.methods},
      "comparisons": comparisons,
      "curves": {name: curve_bands(c, seed=seed,
                                   num_resamples=config.bootstrap_resamples)
                 for name, c in curves.items()},
      "aggregates": aggregates,
  }


def compare(config: ml_collections.ConfigDict, outcome: runner.Outcome,
            means: dict[tuple[str, str], float], ids: Sequence[str],
            metric: str) -> dict[str, dict[str, Any]]:
  """Each method against the best control on ``metric``, in its direction.

  :func:`localization.compare_to_controls` on the scores, negated where
  lower is better (so "better" is "higher"); the means it reports are the
  scores' own.
  """
  sign = 1.0 if METRICS[metric] else -1.0
  names = list(config.methods) + list(config.controls)

  def per_image(name):
    return sign * results.values(outcome.rows, ids, method=name, metric=metric)

  out = localization.compare_to_controls(
      {n: per_image(n) for n in config.methods},
      {n: per_image(n) for n in config.controls},
      {n: sign * means[n, metric] for n in names}, invalid=outcome.invalid)
  for row in out.values():
    row["mean"] = sign * row["mean"]
    row["best_control_mean"] = sign * row["best_control_mean"]
  return out
