"""The experiment configs that ship with the package (ml_collections files).

Each file defines ``get_config(arg=None)`` (``arg``: the ``:preset``); run one
by name from any directory, ``python -m saliency_jax.main --config=NAME[:preset]``
(``NAME``, ``NAME.py`` and ``configs/NAME.py`` all name the packaged file unless
that path exists where you run it; see ``config.resolve_config_path``):

  aggregate            a sweep's jobs merged: mean +/- SD across seeds
  benchmark            speed of the saliency methods (maps/s per setting)
  cascade              cascading model-weight randomization (Adebayo et al. 2018)
  faithfulness         deletion/insertion, ROAD, confidence change vs controls
  label_randomization  label randomization test (Adebayo et al. 2018)
  localization         localization utility against boxes/masks and controls
  repeatability        the same architecture trained from other seeds
  reproducibility      another architecture (InceptionV3 vs DenseNet121)
  study                the whole study of Arun et al. (2021) in one workdir
  train                trains a classifier (synthetic chest phantoms by default)

Copy one to start your own: ``--config=path/to/mine.py`` loads that file. The
files are loaded by path, not imported; this ``__init__`` only makes the
folder package data.
"""
