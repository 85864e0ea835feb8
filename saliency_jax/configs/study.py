# Run: python -m saliency_jax.main --config=study
"""The whole study of Arun et al. (Radiology: AI 2021) in one workdir.

Runs the cascading weight-randomization, label-randomization, repeatability,
reproducibility and localization tests (each in ``WORKDIR/<test>/`` with its
own report), trains every model once into ``WORKDIR/models/``, and writes
``report.md`` with one PASS/FAIL column per test for every method.

The settings of each test are those of its own config file; a preset name
(``:quick``, ``:paper``) is passed to every one of them. ``:paper`` is the
journal paper's settings (InceptionV3 and DenseNet121 at 320 px, the 8
methods, 100 test positives, 3 replicates): for a real dataset and a GPU.
The default takes about an hour on a 2-core CPU; pick tests with
``--config.study.tests="('cascade','localization')"``.
"""

import os

import ml_collections

from saliency_jax import config as config_lib
from saliency_jax.experiments import study

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None):
  c = None
  for test in study.TESTS:
    test_config = config_lib.load_file(os.path.join(_HERE, f"{test}.py"), arg)
    if c is None:
      c = test_config
      continue
    # Shared keys come from the first test (the cascade); each test adds
    # the blocks only it has.
    for key in test_config.keys():
      if key not in c:
        c[key] = test_config[key]
  c.experiment = "study"
  c.study = ml_collections.ConfigDict(dict(tests=study.TESTS))
  return c


def sweep(arg: str | None = None):
  """Both architectures of the study as the model under test, seeds 0..2.

  For launch/sweep.py (``arg``: the preset): the preset's ``model`` (A) and
  ``other_model`` (B, reproducibility's second architecture) as they are,
  then swapped, each for training seeds 0, 1 and 2; aggregate with
  configs/aggregate.py (one condition per architecture).
  """
  c = get_config(arg)
  swapped = {"model": c.other_model, "width": c.other_width,
             "other_model": c.model, "other_width": c.width}
  for architecture in ({}, swapped):
    for seed in range(3):
      yield {**architecture, "seed": seed}
