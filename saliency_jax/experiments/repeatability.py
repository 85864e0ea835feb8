"""Repeatability test: do independently trained replicates explain alike?

Arun et al. (Radiology: AI 2021) trained two InceptionV3 replicates on the
same data and compared their saliency maps of the same test images (SSIM): a
method whose maps change with the training seed alone cannot be trusted to
show where the abnormality is. Here ``config.replicates`` replicates of
``config.model`` are trained with seeds ``config.seed + r`` (replicate 0 is
the ``trained`` model the other experiments share), those not yet trained
together in one vmapped step where they fit (:func:`train.train_seeds`);
every replicate explains
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

import ml_collections
import numpy as np
from flax import nnx

from saliency_jax import devices
from saliency_jax import errors
from saliency_jax import io_utils
from saliency_jax import results
from saliency_jax import rng
from saliency_jax import saliency
from saliency_jax import train
from saliency_jax.experiments import common
from saliency_jax.experiments import runner
from saliency_jax.metrics import stats
from saliency_jax.report import agreement_report

EXPERIMENT = "repeatability"
BASELINE_SUFFIX = runner.BASELINE_SUFFIX
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


def validate(config: ml_collections.ConfigDict) -> None:
  """The key only this experiment has (``config.replicates``)."""
  if (isinstance(config.replicates, bool) or not isinstance(config.replicates, int)
      or config.replicates < 2):
    raise errors.ConfigError(f"config.replicates={config.replicates!r}: expected an "
                             "integer >= 2 (a pair needs two replicates)")


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
    raise errors.ConfigError(
        f"models/{tag}: its training summary says seed {training.get('seed')}, "
        f"expected {seed}; config.trained_dir or config.replicates_dir holds "
        "another run")
  return Member(name=name, label=label, seed=seed, model=model,
                training=training, width=overrides.get("width", config.width))


def train_replicates(config: ml_collections.ConfigDict, workdir: str,
                     in_channels: int) -> list[Member]:
  """Every replicate: the unfinished ones trained at once, then each restored."""
  train_unfinished(config, workdir)
  return [trained_member(config, workdir, name=f"seed{seed}", label=config.model,
                         tag=replicate_tag(config, seed), in_channels=in_channels,
                         seed=seed)
          for seed in replicate_seeds(config)]


def train_unfinished(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Trains the replicates that have no training summary yet together
  (:func:`train.train_seeds`: one vmapped step where they fit).

  Replicate 0 stays with :func:`common.trained_model` when it is not trained
  from scratch like the others (``config.model_weights``, ``init_from``) or
  lives elsewhere (``config.trained_dir``).
  """
  seeds, directories, configs = [], [], []
  for seed in replicate_seeds(config):
    tag = replicate_tag(config, seed)
    training = common.training_config(config, tag, seed=seed)
    if tag == "trained" and any(training.get(k) for k in (
        "model_weights", "init_from", "trained_dir")):
      continue
    directory = common.training_directory(training, workdir, tag)
    if not os.path.exists(os.path.join(directory, train.SUMMARY)):
      seeds.append(seed)
      directories.append(directory)
      configs.append(training)
  # Process 0 trains; the others wait for its summaries (common.trained_model).
  if seeds and devices.is_writer():  # their configs differ in the seed alone
    train.train_seeds(configs[0], directories, seeds)


# ---------------------------------------------------------------- scores ---

def pair_metric(similarity: str, member: Member) -> str:
  """The metric name of a similarity to ``member``'s maps."""
  return f"{similarity}_vs_{member.name}"


def compare(config: ml_collections.ConfigDict, workdir: str, experiment: str,
            members: Sequence[Member], pairs: Sequence[Pair],
            images_np: dict[str, np.ndarray]) -> runner.Outcome:
  """Maps of every member for every method, every pair compared (the runner).

  Every member explains its own predicted class with the same noise key, so
  differences between members come from their weights alone.
  """
  states = [runner.ModelState(name=m.name, explainee=saliency.from_model(m.model),
                              model=m.label, seed=m.seed) for m in members]
  comparisons = [runner.Comparison(p.a, p.b, suffix=pair_metric("", members[p.b]))
                 for p in pairs]
  return runner.run_methods(config, workdir, experiment=experiment,
                            images_np=images_np, states=states,
                            comparisons=comparisons)


# --------------------------------------------------------------- verdict ---

def _values(all_rows: Sequence[dict[str, Any]], method: str, label: str, seed: int,
            metric: str, ids: Sequence[str]) -> np.ndarray:
  """One value per image of ``ids`` (NaN where a row is missing), in that order."""
  return results.values(all_rows, ids, method=method, model=label, seed=seed,
                        metric=metric)


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

def localization_comparisons(all_rows: Sequence[dict[str, Any]],
                             members: Sequence[Member], method: str, metric: str,
                             ids: Sequence[str]) -> list[dict[str, Any]]:
  """Paired Wilcoxon tests of the members' localization, Holm-adjusted."""
  scores = {m.name: _values(all_rows, method, m.label, m.seed, metric, ids)
            for m in members}
  return [c._asdict() for c in stats.compare_methods(scores)]


def summarize(config: ml_collections.ConfigDict, workdir: str, experiment: str,
              outcome: runner.Outcome, members: Sequence[Member],
              pairs: Sequence[Pair], verdict_group: str, ids: Sequence[str]
              ) -> dict[str, Any]:
  """Verdicts, group intervals, localization tests and aggregates."""
  seed = rng.integer_seed(config.seed, rng.STATS)
  resamples = config.bootstrap_resamples
  all_rows = outcome.rows
  groups_present = list(dict.fromkeys(p.group for p in pairs))
  per_group = {(method, metric, g): group_similarity(all_rows, members, pairs, g,
                                                      method, metric, ids)
               for method in config.methods for metric in config.similarity
               for g in groups_present}

  def scores(method, metric):
    return (per_group[method, metric, verdict_group],
            baseline_similarity(all_rows, members, method, metric, ids))

  verdicts = runner.verdicts(config, outcome, scores, expect="above", rule="ci")
  groups, comparisons = {}, {}
  for method in config.methods:
    groups[method], comparisons[method] = {}, {}
    for metric in config.similarity:
      verdict = verdicts[method][metric]
      groups[method][metric] = {
          g: stats.bootstrap_ci(per_group[method, metric, g], seed=seed,
                                num_resamples=resamples)
          for g in groups_present if g != verdict_group}
      # The verdict's own intervals, so that tables and figures agree.
      groups[method][metric].update({verdict_group: verdict["similarity"],
                                     BASELINE: verdict["baseline"]})
      if len(groups_present) > 1:  # e.g. inter- vs intra-architecture
        groups[method][metric]["wilcoxon_p"] = stats.paired_wilcoxon(
            *(per_group[method, metric, g] for g in groups_present[:2]))[1]
    for metric in config.localization:
      comparisons[method][metric] = localization_comparisons(
          all_rows, members, method, metric, ids)
  return {
      **runner.summary_header(config, experiment, outcome, len(ids), workdir),
      "members": [{"name": m.name, "model": m.label, "width": m.width,
                   "seed": m.seed, "training": m.training} for m in members],
      "pairs": [{"a": members[p.a].name, "b": members[p.b].name, "group": p.group}
                for p in pairs],
      "groups": groups_present, "verdict_group": verdict_group,
      "verdict_metric": config.verdict_metric, "verdicts": verdicts,
      "group_similarity": groups, "localization_comparisons": comparisons,
      "aggregates": runner.aggregates(config, all_rows),
  }


def finish(config: ml_collections.ConfigDict, workdir: str, experiment: str,
           members: Sequence[Member], pairs: Sequence[Pair], verdict_group: str,
           images_np: dict[str, np.ndarray]) -> dict[str, Any]:
  """Compares the members, writes ``summary.json``, the figures and the report."""
  outcome = compare(config, workdir, experiment, members, pairs, images_np)
  ids = [str(i) for i in images_np["id"]]
  summary = summarize(config, workdir, experiment, outcome, members, pairs,
                      verdict_group, ids)
  io_utils.write_json(os.path.join(workdir, "summary.json"), summary)
  agreement_report.write(workdir, config, summary, outcome.examples, images_np)
  return summary


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the replicates and compares their maps; see module doc."""
  images_np = common.evaluation_images(config, workdir=workdir)
  members = train_replicates(config, workdir, in_channels=images_np["image"].shape[-1])
  pairs = [Pair(a, b, REPLICATES)
           for a, b in itertools.combinations(range(len(members)), 2)]
  return finish(config, workdir, EXPERIMENT, members, pairs, REPLICATES, images_np)
