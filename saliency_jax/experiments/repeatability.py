"""Repeatability test: do independently trained replicates explain alike?

Arun et al. (Radiology: AI 2021) trained two InceptionV3 replicates on the
same data and compared their saliency maps of the same test images (SSIM): a
method whose maps change with the training seed alone cannot be trusted to
show where the abnormality is. Here ``config.replicates`` replicates of
``config.model`` are trained with seeds ``config.seed + r`` (replicate 0 is
the ``trained`` model the other experiments share); every replicate explains
its own predicted class with the same noise key, and every pair of
replicates is compared image by image.

Verdict (our operationalization of the paper's comparison): a method is
*repeatable* under a similarity metric when the lower 95% bootstrap bound of
the mean inter-replicate similarity exceeds the mean similarity between maps
of two different images from replicate 0 (the baseline of the cascade test).

The machinery here (members, pairs, scores, verdicts) is shared with
``reproducibility``, where the members are two architectures.

Results (long format, ``stage`` 0): a pair's similarity is the row of its
first member (``model``, ``seed``) with metric ``<similarity>_vs_<second
member's name>``; localization rows belong to each member; the baseline
is ``<similarity>_different_images`` of the first member.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from saliency_jax import data as data_lib
from saliency_jax import io_utils
from saliency_jax import saliency
from saliency_jax.experiments import common
from saliency_jax.metrics import stats
from saliency_jax.report import agreement_report

EXPERIMENT = "repeatability"
BASELINE_SUFFIX = "_different_images"
REPLICATES = "replicates"  # the group of pairs of one architecture's replicates
BASELINE = "different_images"  # the reference group of every verdict


@dataclasses.dataclass(frozen=True)
class Member:
  """One model whose maps are compared: a replicate or an architecture.

  Attributes:
    name: unique short name; pairs are metrics '<similarity>_vs_<name>'.
    label: the results' ``model`` column.
    seed: the results' ``seed`` column (the model's training seed).
    model: the trained model, in eval mode.
    training: its training summary (``train.SUMMARY``).
    width: its width multiplier.
  """
  name: str
  label: str
  seed: int
  model: nnx.Module
  training: dict[str, Any]
  width: float


@dataclasses.dataclass(frozen=True)
class Pair:
  """Members ``a`` and ``b`` (indices) compared image by image, in ``group``."""
  a: int
  b: int
  group: str


# ------------------------------------------------------------ replicates ---

def replicate_seeds(config: ml_collections.ConfigDict) -> list[int]:
  """Training seeds of the replicates: ``config.seed + r``."""
  return [config.seed + r for r in range(config.replicates)]


def replicate_tag(config: ml_collections.ConfigDict, seed: int) -> str:
  """The folder under ``workdir/models``: replicate 0 is the shared 'trained'."""
  return "trained" if seed == config.seed else f"seed{seed}"


def trained_member(config: ml_collections.ConfigDict, directory: str, *,
                   name: str, label: str, tag: str, in_channels: int,
                   **overrides: Any) -> Member:
  """``common.trained_model`` (training it if needed) as a :class:`Member`."""
  model, training = common.trained_model(config, directory, tag=tag,
                                         in_channels=in_channels, **overrides)
  seed = overrides.get("seed", config.seed)
  # A reused run (config.trained_dir, another workdir) must be the one asked for.
  if training.get("seed", seed) != seed:
    raise ValueError(f"models/{tag}: its training summary says seed "
                     f"{training.get('seed')}, expected {seed}; config.trained_dir "
                     "or config.replicates_dir holds another run")
  return Member(name=name, label=label, seed=seed, model=model,
                training=training, width=overrides.get("width", config.width))


def train_replicates(config: ml_collections.ConfigDict, workdir: str,
                     in_channels: int) -> list[Member]:
  """Every replicate, trained (or resumed) one after the other."""
  return [trained_member(config, workdir, name=f"seed{seed}", label=config.model,
                         tag=replicate_tag(config, seed), in_channels=in_channels,
                         seed=seed)
          for seed in replicate_seeds(config)]


# ------------------------------------------------------------------ maps ---

# Jitted once per architecture: run op by op, a big network's logits over
# the images take longer than a saliency method.
_predicted = jax.jit(common.predicted_classes)


def explain_members(config: ml_collections.ConfigDict, members: Sequence[Member],
                    images: jax.Array, labels: jax.Array, method: str, *,
                    key: jax.Array, per_image: dict[str, Any],
                    progress: common.Progress | None = None) -> jax.Array:
  """Maps (K members, N, H, W): each member explains its own predicted class.

  Every member gets the same noise ``key``, so differences between members
  come from their weights alone.
  """
  maps = []
  for member in members:
    explainee = saliency.from_model(member.model)
    targets = labels if config.targets == "true" else _predicted(explainee, images)
    maps.append(common.saliency_maps(explainee, images, targets, method, config,
                                     key=key, per_image=per_image))
    if progress is not None:
      progress.update(images.shape[0], f"{method} {member.name}")
  return jnp.stack(maps)


# ---------------------------------------------------------------- scores ---

def pair_metric(similarity: str, member: Member) -> str:
  """The metric name of a similarity to ``member``'s maps."""
  return f"{similarity}_vs_{member.name}"


def baseline_per_image(config: ml_collections.ConfigDict, maps: jax.Array
                       ) -> dict[str, np.ndarray]:
  """Similarity of each image's map to those of other images, averaged per image.

  The cascade test's reference (Arun et al. 2021: 50 random other images per
  image); one value per image so that it fits the long format.
  """
  num_images = maps.shape[0]
  pairs_per_image = min(config.baseline_pairs, num_images - 1)
  baseline = common.different_image_similarity(
      maps, config.similarity, pairs_per_image=config.baseline_pairs,
      seed=common.seed_for(config, common.STATS_KEY))
  return {f"{k}{BASELINE_SUFFIX}": v.reshape(num_images, pairs_per_image).mean(axis=1)
          for k, v in baseline.items()}


def score_members(config: ml_collections.ConfigDict, experiment: str, method: str,
                  maps: jax.Array, members: Sequence[Member], pairs: Sequence[Pair],
                  masks: jax.Array, ids: Sequence[str]) -> list[dict[str, Any]]:
  """Rows: every pair's similarity, every member's localization, the baseline.

  Args:
    maps: (K members, N images, H, W) post-processed maps.
    masks: (N, H, W) ground-truth masks.
  """
  part = []

  def add(member: Member, scores: dict[str, np.ndarray]) -> None:
    # The seed column is the member's training seed, not the config's.
    part.extend(dict(r, seed=member.seed) for r in common.rows(
        config, experiment=experiment, stage=0, method=method, image_ids=ids,
        scores=scores, model=member.label))

  # Every pair in one call: one compiled program per metric, not per pair.
  first = np.array([p.a for p in pairs])
  second = np.array([p.b for p in pairs])
  similar = common.similarity_scores(maps[first], maps[second], config.similarity)
  for p, pair in enumerate(pairs):
    add(members[pair.a], {pair_metric(k, members[pair.b]): v[p]
                          for k, v in similar.items()})
  located = common.localization_scores(maps, masks, config.localization)
  for k, member in enumerate(members):
    add(member, {name: values[k] for name, values in located.items()})
  add(members[0], baseline_per_image(config, maps[0]))
  return part


def expected_metrics(config: ml_collections.ConfigDict, members: Sequence[Member],
                     pairs: Sequence[Pair]) -> set[tuple[str, int, str]]:
  """(model, seed, metric) of every row :func:`score_members` writes per method."""
  out = {(members[p.a].label, members[p.a].seed, pair_metric(s, members[p.b]))
         for p in pairs for s in config.similarity}
  out |= {(m.label, m.seed, name) for m in members for name in config.localization}
  out |= {(members[0].label, members[0].seed, f"{s}{BASELINE_SUFFIX}")
          for s in config.similarity}
  return out


def _part_matches(workdir: str, name: str, expected: set[tuple[str, int, str]]) -> bool:
  """Whether part ``name`` exists and holds exactly the expected metrics.

  Reproducibility's members depend on which replicates exist, so a part
  written with other members is recomputed rather than reused.
  """
  if not common.has_part(workdir, name):
    return False
  found = {(r["model"], r["seed"], r["metric"])
           for r in common.read_rows(common.part_path(workdir, name))}
  return found == expected


def compare(config: ml_collections.ConfigDict, workdir: str, experiment: str,
            members: Sequence[Member], pairs: Sequence[Pair],
            images_np: dict[str, np.ndarray]
            ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
  """Maps of every member for every method, scored; one part per method.

  Returns:
    (all rows, method -> example maps (K members, E images, H, W)).
  """
  images = jnp.asarray(images_np["image"])
  labels = jnp.asarray(images_np["label"])
  masks = jnp.asarray(images_np["mask"])
  ids = [str(i) for i in images_np["id"]]
  key = jax.random.fold_in(jax.random.key(config.seed), common.SALIENCY_KEY)
  expected = expected_metrics(config, members, pairs)
  maps_dir = os.path.join(workdir, "maps")
  progress = common.Progress(experiment, len(config.methods) * len(members) * len(ids))
  examples = {}
  for m, method in enumerate(config.methods):
    part_name = f"{experiment}-{method}"
    example_path = os.path.join(maps_dir, f"{part_name}.npy")
    if _part_matches(workdir, part_name, expected) and os.path.exists(example_path):
      progress.update(len(members) * len(ids), f"{method} done earlier, skipped")
      examples[method] = np.load(example_path)
      continue
    maps = explain_members(config, members, images, labels, method,
                           key=jax.random.fold_in(key, m),
                           per_image=common.segments_for(method, images_np["image"]),
                           progress=progress)
    part = score_members(config, experiment, method, maps, members, pairs, masks, ids)
    examples[method] = np.asarray(maps[:, :config.report.example_images])
    os.makedirs(maps_dir, exist_ok=True)
    np.save(example_path, examples[method])
    common.write_part(workdir, part_name, part)
  all_rows = common.write_results(
      workdir, [f"{experiment}-{method}" for method in config.methods])
  return all_rows, examples


# --------------------------------------------------------------- verdict ---

def agreement_verdict(similarity: Any, baseline: Any, *, seed: int,
                      num_resamples: int = 1000,
                      confidence: float = 0.95) -> dict[str, Any]:
  r"""Do two models' maps of the same image agree beyond chance?

  .. math::
    \text{passed} = \mathrm{CI}_{low}\big(\overline{\mathrm{sim}}(\text{model}_1,
    \text{model}_2)\big) > \overline{\mathrm{sim}}(\text{image } i, \text{image } j)

  Arun et al. (Radiology: AI 2021) compared inter-replicate and
  inter-architecture SSIM with that between maps of different images; the
  rule (lower bootstrap bound above the baseline mean) is our
  operationalization. ``passed_mean`` is the looser reading (means only).
  NaNs are dropped and counted.

  Args:
    similarity: one similarity per image (averaged over the pairs compared).
    baseline: one different-image similarity per image (or per pair).
    seed: integer seed; the two intervals use independent child streams.
    num_resamples: bootstrap resamples per interval.
    confidence: interval coverage.

  Returns:
    ``passed``, ``passed_mean`` (bools), ``similarity`` and ``baseline``
    (each ``(mean, low, high)``), ``num_excluded`` (NaNs dropped per input).
  """
  seeds = np.random.SeedSequence(seed).generate_state(2)
  similarity = np.asarray(similarity, np.float64)
  baseline = np.asarray(baseline, np.float64)
  similarity_ci = stats.bootstrap_ci(similarity, seed=int(seeds[0]),
                                     num_resamples=num_resamples,
                                     confidence=confidence)
  baseline_ci = stats.bootstrap_ci(baseline, seed=int(seeds[1]),
                                   num_resamples=num_resamples,
                                   confidence=confidence)
  return {
      # NaN compares False: an unscorable method is not called repeatable.
      "passed": bool(similarity_ci[1] > baseline_ci[0]),
      "passed_mean": bool(similarity_ci[0] > baseline_ci[0]),
      "similarity": similarity_ci,
      "baseline": baseline_ci,
      "num_excluded": {"similarity": stats.count_excluded(similarity),
                       "baseline": stats.count_excluded(baseline)},
  }


def _values(all_rows: Sequence[dict[str, Any]], method: str, label: str, seed: int,
            metric: str, ids: Sequence[str]) -> np.ndarray:
  """One value per image of ``ids`` (NaN where a row is missing), in that order."""
  found = {r["image_id"]: r["value"] for r in all_rows
           if r["method"] == method and r["model"] == label and r["seed"] == seed
           and r["metric"] == metric}
  return np.array([found.get(i, np.nan) for i in ids], np.float64)


def group_similarity(all_rows: Sequence[dict[str, Any]], members: Sequence[Member],
                     pairs: Sequence[Pair], group: str, method: str, metric: str,
                     ids: Sequence[str]) -> np.ndarray:
  """Per image, the mean similarity over the pairs of ``group`` (N,).

  Images, not pairs, are the independent units: with three replicates the
  three pairs of one image share that image.
  """
  per_pair = [_values(all_rows, method, members[p.a].label, members[p.a].seed,
                      pair_metric(metric, members[p.b]), ids)
              for p in pairs if p.group == group]
  return np.mean(per_pair, axis=0) if per_pair else np.full(len(ids), np.nan)


def baseline_similarity(all_rows: Sequence[dict[str, Any]], members: Sequence[Member],
                        method: str, metric: str, ids: Sequence[str]) -> np.ndarray:
  """Per image, the different-image similarity of the first member (N,)."""
  return _values(all_rows, method, members[0].label, members[0].seed,
                 f"{metric}{BASELINE_SUFFIX}", ids)


# --------------------------------------------------------------- summary ---

def aggregate(all_rows: Sequence[dict[str, Any]], *, seed: int,
              num_resamples: int) -> list[dict[str, Any]]:
  """``common.aggregate`` per (model, seed): replicates share a model name."""
  out = []
  for label, member_seed in sorted({(r["model"], r["seed"]) for r in all_rows}):
    subset = [r for r in all_rows if r["model"] == label and r["seed"] == member_seed]
    out += [dict(row, seed=member_seed) for row in
            common.aggregate(subset, seed=seed, num_resamples=num_resamples)]
  return out


def localization_comparisons(all_rows: Sequence[dict[str, Any]],
                             members: Sequence[Member], method: str, metric: str,
                             ids: Sequence[str]) -> list[dict[str, Any]]:
  """Paired Wilcoxon tests of the members' localization, Holm-adjusted."""
  scores = {m.name: _values(all_rows, method, m.label, m.seed, metric, ids)
            for m in members}
  return [c._asdict() for c in stats.compare_methods(scores)]


def summarize(config: ml_collections.ConfigDict, experiment: str,
              all_rows: Sequence[dict[str, Any]], members: Sequence[Member],
              pairs: Sequence[Pair], verdict_group: str, ids: Sequence[str]
              ) -> dict[str, Any]:
  """Verdicts, group intervals, localization tests and aggregates."""
  seed = common.seed_for(config, common.STATS_KEY)
  resamples = config.bootstrap_resamples
  groups_present = list(dict.fromkeys(p.group for p in pairs))
  verdicts, groups, comparisons = {}, {}, {}
  for method in config.methods:
    verdicts[method], groups[method], comparisons[method] = {}, {}, {}
    for metric in config.similarity:
      baseline = baseline_similarity(all_rows, members, method, metric, ids)
      per_group = {g: group_similarity(all_rows, members, pairs, g, method, metric, ids)
                   for g in groups_present}
      verdict = agreement_verdict(per_group[verdict_group], baseline, seed=seed,
                                  num_resamples=resamples)
      verdicts[method][metric] = verdict
      groups[method][metric] = {
          g: stats.bootstrap_ci(v, seed=seed, num_resamples=resamples)
          for g, v in per_group.items() if g != verdict_group}
      # The verdict's own intervals, so that tables and figures agree.
      groups[method][metric].update({verdict_group: verdict["similarity"],
                                     BASELINE: verdict["baseline"]})
      if len(groups_present) > 1:  # e.g. inter- vs intra-architecture
        groups[method][metric]["wilcoxon_p"] = stats.paired_wilcoxon(
            *(per_group[g] for g in groups_present[:2]))[1]
    for metric in config.localization:
      comparisons[method][metric] = localization_comparisons(
          all_rows, members, method, metric, ids)
  return {
      "experiment": experiment, "model": config.model, "width": config.width,
      "dataset": config.dataset, "data": data_lib.provenance(config),
      "image_size": config.image_size,
      "seed": config.seed, "targets": config.targets, "num_images": len(ids),
      "num_images_requested": config.num_images, "preset": config.preset,
      "methods": list(config.methods), "similarity": list(config.similarity),
      "localization": list(config.localization),
      "members": [{"name": m.name, "model": m.label, "width": m.width,
                   "seed": m.seed, "training": m.training} for m in members],
      "pairs": [{"a": members[p.a].name, "b": members[p.b].name, "group": p.group}
                for p in pairs],
      "groups": groups_present, "verdict_group": verdict_group,
      "verdict_metric": config.verdict_metric, "verdicts": verdicts,
      "group_similarity": groups, "localization_comparisons": comparisons,
      "aggregates": aggregate(all_rows, seed=seed, num_resamples=resamples),
  }


def finish(config: ml_collections.ConfigDict, workdir: str, experiment: str,
           members: Sequence[Member], pairs: Sequence[Pair], verdict_group: str,
           images_np: dict[str, np.ndarray]) -> dict[str, Any]:
  """Compares the members, writes ``summary.json``, the figures and the report."""
  all_rows, examples = compare(config, workdir, experiment, members, pairs, images_np)
  ids = [str(i) for i in images_np["id"]]
  summary = summarize(config, experiment, all_rows, members, pairs, verdict_group, ids)
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  agreement_report.write(workdir, config, summary, examples, images_np)
  return summary


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the replicates and compares their maps; see module doc."""
  images_np = common.evaluation_images(config, workdir=workdir)
  members = train_replicates(config, workdir, in_channels=images_np["image"].shape[-1])
  pairs = [Pair(a, b, REPLICATES)
           for a, b in itertools.combinations(range(len(members)), 2)]
  return finish(config, workdir, EXPERIMENT, members, pairs, REPLICATES, images_np)
