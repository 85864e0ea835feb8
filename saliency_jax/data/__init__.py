"""Datasets: ``load(config, split)`` returns one split as stacked arrays.

Every dataset gives the same record format (see
:func:`saliency_jax.data.pipeline.load_split`): ``image`` (N, H, W, C) float32
in [0, 1], ``label``, ``boxes`` (N, 4, 4) ``(x, y, w, h)``, ``num_boxes``,
``mask`` (N, H, W) bool and ``id``; the real datasets add DICOM header fields.
Datasets: ``synthetic_cxr`` (built in), ``rsna_pneumonia``,
``siim_acr_pneumothorax`` and ``image_folder`` (built from files in
``config.manual_dir``; see each builder's module docstring for the layout).
``source(config, split)`` reads a split record by record instead
(:mod:`saliency_jax.data.streaming`), for splits too large to hold whole.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from saliency_jax.data import pipeline
from saliency_jax.data import streaming


def builder_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The dataset-defining options of ``config`` for ``config.dataset``."""
  if config.dataset == "synthetic_cxr":
    s = config.synthetic
    return dict(image_size=config.image_size, seed=s.seed, num_train=s.num_train,
                num_validation=s.num_validation, num_test=s.num_test,
                prevalence=s.prevalence, shortcut=s.shortcut)
  r = config.real_data
  options = dict(manual_dir=config.manual_dir, image_size=config.image_size,
                 split_seed=r.split_seed, split_fractions=tuple(r.split_fractions),
                 split_dir=r.split_dir, on_bad_input=config.on_bad_input,
                 num_workers=r.num_workers)
  if config.dataset == "rsna_pneumonia":
    options["classes"] = r.classes
  return options


def provenance(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What building ``config.dataset`` left out, for summary.json and the reports.

  Bad inputs skipped (by kind, with the first messages); positives without a
  mask pixel at ``image_size`` per split, with the first ids
  (``empty_mask_positives``, ``unannotated_positives``: see
  `manual.EmptyMasks`); for RSNA, the patients the class choice excluded;
  {} for the synthetic data.
  """
  if config.dataset == "synthetic_cxr":
    return {}
  return pipeline.dataset_metadata(config.dataset, data_dir=config.data_dir,
                                   **builder_options(config))


def build_name(config: ml_collections.ConfigDict) -> str:
  """The TFDS build of ``config.dataset``: name/config/version (the config
  name carries the options and, for manual downloads, the label files' hash)."""
  return pipeline.builder(config.dataset, data_dir=config.data_dir,
                          **builder_options(config)).info.full_name


def load(config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  """Split ``split`` of ``config.dataset``, built into ``config.data_dir`` if needed."""
  return pipeline.load_split(config.dataset, split, data_dir=config.data_dir,
                             **builder_options(config))


def source(config: ml_collections.ConfigDict, split: str, *,
           num_examples: int | None = None) -> streaming.Split:
  """Split ``split`` of ``config.dataset`` read by record index, never whole
  (its first ``num_examples`` records if given)."""
  return streaming.Split(config.dataset, split, data_dir=config.data_dir,
                         num_examples=num_examples, **builder_options(config))
