# Run: python -m saliency_jax.main --config=aggregate --config.sweep_dir=/tmp/saliency_jax/sweep
"""Aggregate a sweep (``launch/sweep.py``): mean +/- SD across seeds (Arun et al. 2021).

Reads ``SWEEP_DIR/sweep.json`` and every job's workdir, merges the finished
jobs' ``results.csv`` and writes, into ``--workdir`` (default
``SWEEP_DIR/aggregate``): ``results.csv`` (every row, with a ``job``
column), ``summary.json`` (per condition and experiment, model, method,
stage and metric: each seed's mean over its images, then mean, SD and a 95%
bootstrap interval across seeds; every job's verdicts counted per method),
``figures/`` and ``report.md``.

A job that has not finished stops the aggregate, named, before anything is
written; ``--config.skip_unfinished=True`` leaves such jobs out and lists
them. Jobs that differ only in ``replicate_keys`` are replicates (seeds) of
one condition; any other override (model, width, ...) makes its own condition.
"""

from ml_collections import config_dict

from saliency_jax import config as config_lib


def get_config(arg: str | None = None):
  if arg:
    raise ValueError(f"configs/aggregate.py: unknown preset {arg!r}; it has none")
  c = config_lib.base_config()
  c.experiment = "aggregate"
  c.sweep_dir = config_dict.placeholder(str)  # launch/sweep.py's --sweep_dir
  c.skip_unfinished = False
  c.replicate_keys = ("seed",)  # overrides that make replicates, not conditions
  c.bootstrap_resamples = 1000  # of the mean across seeds, keyed by config.seed
  return c
