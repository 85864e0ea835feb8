"""The one experiment loop: every method over every model state, scored, resumable.

An experiment declares its model states (cascade stages, the trained and the
randomized-label model, replicates, two architectures), which pairs of
states to compare, and how to judge the rows; :func:`run_methods` does the
rest, once for all of them:

- targets: each state's predicted class (or the true label, or state 0's
  for every state when ``shared_targets``), with the logits checked;
- maps: one method over every state, states that share a graph stacked into
  one program where the backend's strategy vectorizes
  (:func:`saliency.explain_states`); raw maps checked; post-processed as
  Arun et al. (|.|, channel sum, 99th percentile clip, [0, 1]);
- scores: the similarity of every declared pair, every state's localization
  against the masks, and the different-image baseline of state 0;
- resume: one verified part per method (:mod:`saliency_jax.results`), its
  example maps beside it; ``results.csv`` from the parts.

Integrity: an image whose logits or raw map are not finite gets NaN scores
(never the scores of the all-zero map post-processing would make of it);
the counts per method and state are returned (``health``) for the summary,
the report and the verdict, which is INVALID for such a method.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from saliency_jax import data as data_lib
from saliency_jax import devices
from saliency_jax import io_utils
from saliency_jax import memory
from saliency_jax import progress as progress_lib
from saliency_jax import results
from saliency_jax import rng
from saliency_jax import saliency
from saliency_jax import workdir as workdir_lib
from saliency_jax.experiments import common
from saliency_jax.metrics import scoring
from saliency_jax.metrics import stats
from saliency_jax.saliency import batching

BASELINE_SUFFIX = "_different_images"
# Metrics of the signed maps (config.signed_similarity) are written as
# ``<similarity>_signed`` (Adebayo et al. 2018 compare maps with and without |.|).
SIGNED_SUFFIX = "_signed"


@dataclasses.dataclass(frozen=True)
class ModelState:
  """One model whose maps are computed.

  Attributes:
    name: unique short name (progress, logs, the health record).
    explainee: the model as the saliency methods see it.
    model: the results' ``model`` column.
    seed: the results' ``seed`` column (the model's training seed).
    stage: the results' ``stage`` column (cascade: blocks randomized).
  """
  name: str
  explainee: saliency.Explainee
  model: str
  seed: int
  stage: int = 0


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Similarity of state ``a``'s maps to state ``b``'s, image by image.

  Written as state ``a``'s rows with metric ``<similarity><suffix>``; each
  of ``metrics`` (names in ``metrics.RANDOMIZATION``, e.g. ``emprt``) too,
  as ``metric(state b's map, state a's map)`` (the reference first).
  """
  a: int
  b: int
  suffix: str = ""
  metrics: tuple[str, ...] = ()


@dataclasses.dataclass
class Outcome:
  """What :func:`run_methods` returns.

  Attributes:
    rows: every row of ``results.csv``.
    examples: method -> example maps (states, E images, H, W).
    health: method -> state name -> ``{"logits": n, "maps": n}``, the images
      whose logits or raw maps were not finite.
    invalid: method -> why its verdicts cannot be computed (non-finite maps).
    targets: per state, the classes explained (N,).
    batching: method -> how each group of states ran (strategy, batch size
      chosen, devices), as recorded when its part was computed.
    maps: method -> every post-processed map (states, N, H, W), only with
      ``run_methods(..., keep_maps=True)``.
  """
  rows: list[dict[str, Any]]
  examples: dict[str, np.ndarray]
  health: dict[str, dict[str, dict[str, int]]]
  invalid: dict[str, str]
  targets: list[np.ndarray]
  batching: dict[str, Any] = dataclasses.field(default_factory=dict)
  maps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------ states ---

@jax.jit
def _logits(explainee: saliency.Explainee, images: jax.Array) -> jax.Array:
  return jax.vmap(explainee.logits)(images)


def _targets(config: ml_collections.ConfigDict, states: Sequence[ModelState],
             images: jax.Array, labels: jax.Array, shared: bool
             ) -> tuple[list[jax.Array], np.ndarray]:
  """Each state's targets and, per state and image, whether the logits are finite."""
  logits = [_logits(s.explainee, images) for s in states]
  finite = np.stack([np.asarray(jnp.isfinite(l).all(axis=-1)) for l in logits])
  for state, ok in zip(states, finite):
    if not ok.all():
      logging.warning("%s: logits of %d of %d images are not finite", state.name,
                      int((~ok).sum()), ok.size)
  if config.targets == "true":
    return [labels] * len(states), finite
  predicted = [jnp.argmax(l, axis=-1) for l in logits]
  return ([predicted[0]] * len(states) if shared else predicted), finite


def _groups(states: Sequence[ModelState]) -> list[list[int]]:
  """Runs of consecutive states with one graph and leaf shapes (one program each)."""
  def signature(e):
    leaves, treedef = jax.tree.flatten(e)
    return treedef, tuple((jnp.shape(l), jnp.result_type(l)) for l in leaves)
  groups: list[list[int]] = []
  previous = None
  for i, state in enumerate(states):
    current = signature(state.explainee)
    if groups and current == previous:
      groups[-1].append(i)
    else:
      groups.append([i])
    previous = current
  return groups


def _raw_maps(config, states, groups, images, targets, method: str,
              hparams: dict[str, Any], key: jax.Array,
              per_image: dict[str, Any], *, key_per_state: bool = False
              ) -> tuple[jax.Array, list[dict[str, Any]]]:
  """Raw attributions (S, N, H, W, C) of every state, and how each group ran.

  One ``key`` for every state (the methods' noise the same at every stage);
  ``key_per_state``: state s draws with ``fold_in(key, s)`` instead, each
  state its own program (a noise map drawn independently per state).
  """
  mesh, over = _mesh(config)
  out, runs = [], []
  if key_per_state:
    groups = [[i] for group in groups for i in group]
  for group in groups:
    group_key = jax.random.fold_in(key, group[0]) if key_per_state else key
    first = states[group[0]].explainee
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                           *[states[i].explainee.state for i in group])
    strategy, batch_size = _batching(config, first, stacked, images, method, hparams,
                                     group_key, per_image, mesh, over)
    runs.append({"states": [states[i].name for i in group], "strategy": strategy,
                 "batch_size": batch_size, "requested_batch_size": config.get("batch_size"),
                 "devices": 1 if mesh is None else mesh.size, "shard_over": over})
    out.append(saliency.explain_states(
        first, stacked, images, jnp.stack([targets[i] for i in group]),
        method=method, key=group_key, batch_size=batch_size, strategy=strategy,
        per_image=per_image, mesh=mesh, shard_over=over or "images", **hparams))
  return (jnp.concatenate(out) if len(out) > 1 else out[0]), runs


def _mesh(config: ml_collections.ConfigDict) -> tuple[Any, str | None]:
  """The devices' mesh and what is split over it (None, None: one device)."""
  over = config.get("shard_over", "auto")
  if jax.device_count() == 1 or over == "none":
    return None, None
  return devices.mesh(), "images" if over == "auto" else over


def _batching(config, explainee, stacked, images, method, hparams, key, per_image,
              mesh, over) -> tuple[str, int | None]:
  """(strategy, batch_size) for one group: ``config.batch_size='auto'`` (the
  GPU/TPU default) resolved for one device's shard under
  ``config.memory_fraction`` of its memory."""
  strategy, size = batching.resolve(config.get("strategy"), config.get("batch_size"),
                                    keep_auto=True)
  if size != batching.AUTO:
    return strategy, size
  d = 1 if mesh is None else mesh.size
  share = lambda n, split: -(-n // d) if split else n  # noqa: E731
  local = lambda a, split: jax.ShapeDtypeStruct(  # noqa: E731
      (share(a.shape[0], split),) + a.shape[1:], a.dtype)
  return saliency.auto_batch_size(
      explainee, local(images, over == "images"),
      states=jax.tree.map(lambda a: local(a, over == "states"), stacked),
      method=method, key=key, strategy=strategy,
      per_image={k: local(jnp.asarray(v), over == "images")
                 for k, v in per_image.items()},
      budget=memory.budget(config.get("memory_fraction", memory.FRACTION)), **hparams)


# ----------------------------------------------------------------- scoring ---

def score(config: ml_collections.ConfigDict, experiment: str, method: str,
          maps: jax.Array, bad: np.ndarray, states: Sequence[ModelState],
          comparisons: Sequence[Comparison], masks: jax.Array,
          ids: Sequence[str], signed: jax.Array | None = None
          ) -> list[dict[str, Any]]:
  """Rows: every comparison's similarity, every state's localization, the baseline.

  Args:
    maps: (S states, N images, H, W) post-processed maps.
    bad: (S, N) bool, images whose logits or raw map were not finite: their
      scores (and any comparison or baseline pair with them) are NaN.
    signed: (S, N, H, W) signed maps (``common.signed_postprocess_batch``),
      compared with ``config.signed_similarity`` as ``<metric>_signed``
      beside the absolute maps' rows; None: none.
  """
  part: list[dict[str, Any]] = []

  def add(state: ModelState, scores: dict[str, np.ndarray], drop: np.ndarray) -> None:
    part.extend(results.rows(
        experiment=experiment, dataset=config.dataset, model=state.model,
        seed=state.seed, stage=state.stage, method=method, image_ids=ids,
        scores={k: np.where(drop, np.nan, v) for k, v in scores.items()}))

  if comparisons:
    first = np.array([c.a for c in comparisons])
    second = np.array([c.b for c in comparisons])
    similar = _similar(config, maps, signed, first, second)
    for p, c in enumerate(comparisons):
      add(states[c.a], {f"{k}{c.suffix}": v[p] for k, v in similar.items()},
          bad[c.a] | bad[c.b])
    for names in dict.fromkeys(c.metrics for c in comparisons if c.metrics):
      chosen = [c for c in comparisons if c.metrics == names]
      paired = scoring.randomization_scores(
          maps[np.array([c.b for c in chosen])], maps[np.array([c.a for c in chosen])],
          names, config.get("metric_options"))
      for p, c in enumerate(chosen):
        add(states[c.a], {f"{k}{c.suffix}": v[p] for k, v in paired.items()},
            bad[c.a] | bad[c.b])
  located = common.localization_scores(maps, masks, config.localization,
                                       config.get("metric_options"))
  for s, state in enumerate(states):
    add(state, {k: v[s] for k, v in located.items()}, bad[s])
  if comparisons:
    add(states[0], baseline(config, maps[0], bad[0],
                            None if signed is None else signed[0]),
        np.zeros(len(ids), bool))
  return part


def _similar(config: ml_collections.ConfigDict, maps: jax.Array,
             signed: jax.Array | None, i: np.ndarray, j: np.ndarray
             ) -> dict[str, np.ndarray]:
  """``config.similarity`` of maps[i] vs maps[j]; with ``signed``, also
  ``config.signed_similarity`` of signed[i] vs signed[j] as ``<metric>_signed``."""
  options = config.get("metric_options")
  out = common.similarity_scores(maps[i], maps[j], config.similarity, options)
  if signed is not None:
    out.update({f"{k}{SIGNED_SUFFIX}": v for k, v in common.similarity_scores(
        signed[i], signed[j], config.signed_similarity, options).items()})
  return out


def similarity_names(config: ml_collections.ConfigDict) -> list[str]:
  """Every similarity metric the rows carry: ``config.similarity``, then
  ``<metric>_signed`` of ``config.signed_similarity``."""
  return list(config.similarity) + [f"{m}{SIGNED_SUFFIX}"
                                    for m in config.get("signed_similarity", ())]


def baseline(config: ml_collections.ConfigDict, maps: jax.Array,
             bad: np.ndarray, signed: jax.Array | None = None
             ) -> dict[str, np.ndarray]:
  """Similarity of each image's map to other images' maps, averaged per image.

  The randomization tests' reference (Arun et al. 2021: 50 random other
  images per image), one value per image so that it fits the long format;
  a pair with a non-finite map is NaN, and so is its image's mean.
  """
  num_images = maps.shape[0]
  pairs_per_image = min(config.baseline_pairs, num_images - 1)
  i, j = stats.different_image_pairs(num_images, config.baseline_pairs,
                                     seed=rng.integer_seed(config.seed, rng.STATS))
  similar = _similar(config, maps, signed, i, j)
  drop = bad[i] | bad[j]
  return {f"{k}{BASELINE_SUFFIX}":
          np.where(drop, np.nan, v).reshape(num_images, pairs_per_image).mean(axis=1)
          for k, v in similar.items()}


# -------------------------------------------------------------------- loop ---

MethodFor = Callable[[str], tuple[str, dict[str, Any]]]


def run_methods(config: ml_collections.ConfigDict, workdir: str, *, experiment: str,
                images_np: dict[str, np.ndarray], states: Sequence[ModelState],
                comparisons: Sequence[Comparison] = (),
                names: Sequence[str] | None = None, shared_targets: bool = False,
                method_for: MethodFor | None = None,
                keep_maps: bool = False,
                key_per_state: Sequence[str] = ()) -> Outcome:
  """Every method of ``names`` (default ``config.methods``) over every state.

  Args:
    config: the experiment's config.
    workdir: where parts, example maps and ``results.csv`` go.
    experiment: the results' ``experiment`` column and the parts' prefix.
    images_np: the evaluated images (``common.evaluation_images``).
    states: the model states, state 0 the reference (the trained model).
    comparisons: the pairs of states whose maps are compared (with the
      different-image baseline of state 0); none: localization only.
    names: the maps to compute, in order (methods, controls).
    shared_targets: every state explains state 0's targets (the cascade:
      stage-to-stage changes then come from the weights alone).
    method_for: name -> (method, hyper-parameters) where a name is not a
      method with the preset's settings (e.g. a control with a prior);
      called only when that part is computed.
    keep_maps: also return every post-processed map (``Outcome.maps``), saved
      as ``maps/<part>-all.npy`` beside the part and verified on resume
      (its SHA-256 in the manifest), for scores computed outside the runner.
    key_per_state: names whose maps are drawn with a fresh key per state
      (``fold_in(key, s)``): a noise null, independent at every stage. Every
      other name uses one key for every state, so that a method's own noise
      is the same at every stage and its maps change with the model only.
  """
  names = list(config.methods if names is None else names)
  images = jnp.asarray(images_np["image"])
  masks = jnp.asarray(images_np["mask"])
  ids = [str(i) for i in images_np["id"]]
  targets, finite_logits = _targets(config, states, images,
                                    jnp.asarray(images_np["label"]), shared_targets)
  groups = _groups(states)
  key = rng.key(config.seed, rng.SALIENCY)
  inputs = results.fingerprint_of(
      config.to_json_best_effort(sort_keys=True), workdir_lib.recorded_inputs(workdir),
      experiment, [(s.name, s.model, s.seed, s.stage) for s in states],
      [(c.a, c.b, c.suffix) for c in comparisons], ids)
  # One unit: a map (a method's, of one image under one model state).
  progress = progress_lib.Progress(experiment, len(names) * len(states) * len(ids),
                                   unit="map")
  save_example_images(workdir, experiment, images_np, config.report.example_images)
  parts, examples, health, invalid, runs_of, kept = [], {}, {}, {}, {}, {}
  for m, name in enumerate(names):
    part_name = f"{experiment}-{name}"
    fingerprint = results.fingerprint_of(inputs, name)
    example_path = os.path.join(workdir, "maps", f"{part_name}.npy")
    all_path = os.path.join(workdir, "maps", f"{part_name}-all.npy")
    # Several processes compute every part: each must meet the others in
    # the same sharded programs, whatever its own disk says.
    found = (results.verified_part(workdir, part_name, fingerprint)
             if jax.process_count() == 1 else None)
    if found is not None and not _example_maps_match(example_path, found[1]):
      found = None
    if found is not None and keep_maps and not _example_maps_match(
        all_path, found[1], "all_maps_sha256"):
      found = None
    if found is not None:
      part, manifest = found
      examples[name] = np.load(example_path)
      if keep_maps:
        kept[name] = np.load(all_path)
      progress.update(len(states) * len(ids), f"{name} done earlier, skipped")
    else:
      method, hparams = (method_for(name) if method_for
                         else (name, common.method_hparams(config, name)))
      raw, runs = _raw_maps(config, states, groups, images, targets, method, hparams,
                            jax.random.fold_in(key, m),
                            common.segments_for(method, images_np["image"]),
                            key_per_state=name in key_per_state)
      finite_maps = np.asarray(jnp.isfinite(raw).all(axis=(-3, -2, -1)))
      flat = raw.reshape((-1,) + raw.shape[2:])
      maps = common.postprocess_batch(flat).reshape(raw.shape[:2] + raw.shape[2:4])
      signed = (common.signed_postprocess_batch(flat).reshape(maps.shape)
                if comparisons and config.get("signed_similarity") else None)
      part = score(config, experiment, name, maps, ~(finite_maps & finite_logits),
                   states, comparisons, masks, ids, signed=signed)
      examples[name] = np.asarray(maps[:, :config.report.example_images])
      io_utils.atomic_write(example_path, lambda f: np.save(f, examples[name]))
      manifest = {"states": [s.name for s in states], "batching": runs,
                  "maps_sha256": io_utils.sha256_file(example_path),
                  "nonfinite_logits": (~finite_logits).sum(axis=1).tolist(),
                  "nonfinite_maps": (~finite_maps).sum(axis=1).tolist()}
      if keep_maps:
        kept[name] = np.asarray(maps)
        io_utils.atomic_write(all_path, lambda f: np.save(f, kept[name]))
        manifest["all_maps_sha256"] = io_utils.sha256_file(all_path)
      results.write_part(workdir, part_name, part, fingerprint=fingerprint, **manifest)
      progress.update(len(states) * len(ids), name)
    parts.append(part)
    runs_of[name] = manifest.get("batching")
    health[name] = {s: {"logits": int(l), "maps": int(n)} for s, l, n in zip(
        manifest["states"], manifest["nonfinite_logits"], manifest["nonfinite_maps"])}
    bad_maps = sum(manifest["nonfinite_maps"]) + sum(manifest["nonfinite_logits"])
    if bad_maps:
      invalid[name] = (f"{bad_maps} maps or logits were not finite "
                       f"({', '.join(f'{s}: {v}' for s, v in _nonzero(health[name]))})")
      logging.warning("%s %s: INVALID, %s", experiment, name, invalid[name])
  progress.close()
  all_rows = results.write_results(workdir, parts)
  return Outcome(rows=all_rows, examples=examples, health=health, invalid=invalid,
                 targets=[np.asarray(t) for t in targets], batching=runs_of,
                 maps=kept)


def example_images_path(workdir: str, experiment: str) -> str:
  return os.path.join(workdir, "maps", f"{experiment}-images.npz")


def save_example_images(workdir: str, experiment: str,
                        images_np: dict[str, np.ndarray], count: int) -> None:
  """``maps/<experiment>-images.npz``: the first ``count`` evaluated images,
  their boxes, masks and ids (the film under the example maps of the HTML
  report). Cheap, so written on every run rather than verified on resume."""
  film = {k: np.asarray(images_np[k][:count])
          for k in ("image", "boxes", "num_boxes", "mask") if k in images_np}
  film["id"] = np.asarray([str(i.decode() if isinstance(i, bytes) else i)
                           for i in images_np["id"][:count]])
  io_utils.atomic_write(example_images_path(workdir, experiment),
                        lambda f: np.savez_compressed(f, **film))


def _example_maps_match(path: str, manifest: dict[str, Any],
                        key: str = "maps_sha256") -> bool:
  """Whether the part's example (or all) maps are the ones its manifest names."""
  if os.path.exists(path) and io_utils.sha256_file(path) == manifest.get(key):
    return True
  logging.warning("%s: missing or not the maps of its part; computing the part again",
                  path)
  return False


def _nonzero(health: dict[str, dict[str, int]]) -> list[tuple[str, str]]:
  return [(state, ", ".join(f"{v} {k}" for k, v in counts.items() if v))
          for state, counts in health.items() if any(counts.values())]


# ----------------------------------------------------------------- summary ---

def summary_header(config: ml_collections.ConfigDict, experiment: str,
                   outcome: Outcome, num_images: int, workdir: str) -> dict[str, Any]:
  """The keys every experiment's ``summary.json`` starts with."""
  header = {
      "experiment": experiment,
      "model": config.model, "width": config.width, "dataset": config.dataset,
      "data": data_lib.provenance(config),
      "image_size": config.image_size, "seed": config.seed,
      "targets": config.targets, "num_images": num_images,
      "num_images_requested": config.num_images, "preset": config.preset,
      "methods": list(config.methods),
      "localization": list(config.localization),
      "inputs": workdir_lib.recorded_inputs(workdir),
      "nonfinite": {m: dict(_nonzero(h)) for m, h in outcome.health.items()
                    if _nonzero(h)},
      "invalid": dict(outcome.invalid),
      "batching": dict(outcome.batching),
  }
  if "similarity" in config:
    header["similarity"] = list(config.similarity)
    header["signed_similarity"] = list(config.get("signed_similarity", ()))
  # Every metric's options as it ran, defaults included (e.g. Dice's threshold rule).
  header["metric_options"] = common.resolved_metric_options(
      list(config.localization) + list(config.get("similarity", ())),
      config.get("metric_options"))
  return header


def verdicts(config: ml_collections.ConfigDict, outcome: Outcome,
             scores: Callable[[str, str], tuple[np.ndarray, np.ndarray]], *,
             expect: str, rule: str, names: Sequence[str] | None = None,
             metrics: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
  """method -> similarity -> :func:`stats.baseline_verdict` of ``scores(method, metric)``.

  ``scores`` returns (the method's per-image similarities, the baseline);
  ``names`` default ``config.methods`` (e.g. also the null baselines),
  ``metrics`` default ``config.similarity`` (e.g. :func:`similarity_names`).
  """
  seed = rng.integer_seed(config.seed, rng.STATS)
  out = {}
  for method in config.methods if names is None else names:
    out[method] = {}
    for metric in config.similarity if metrics is None else metrics:
      values, reference = scores(method, metric)
      out[method][metric] = stats.baseline_verdict(
          values, reference, expect=expect, rule=rule, seed=seed,
          num_resamples=config.bootstrap_resamples,
          invalid=outcome.invalid.get(method))
  return out


def aggregates(config: ml_collections.ConfigDict, all_rows) -> list[dict[str, Any]]:
  return results.aggregate(all_rows, seed=rng.integer_seed(config.seed, rng.STATS),
                           num_resamples=config.bootstrap_resamples)
