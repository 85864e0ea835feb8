"""Classification metrics for model evaluation (host-side NumPy, once per eval)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve, the Mann-Whitney U statistic / (n_pos n_neg).

  Ties count one half, as in scikit-learn's ``roc_auc_score``. NaN when a class
  is absent (the AUC is undefined then).
  """
  labels = np.asarray(labels).astype(bool)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = stats.rankdata(scores)
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_report(probs: np.ndarray, labels: np.ndarray,
                  threshold: float = 0.5) -> dict[str, float]:
  """AUC, accuracy, precision, recall of positive-class probabilities."""
  labels = np.asarray(labels).astype(bool)
  pred = np.asarray(probs) >= threshold
  tp = float(np.sum(pred & labels))
  return {
      "auc": roc_auc(probs, labels),
      "accuracy": float(np.mean(pred == labels)),
      "precision": tp / pred.sum() if pred.sum() else float("nan"),
      "recall": tp / labels.sum() if labels.sum() else float("nan"),
      "num_examples": int(labels.size),
  }
