"""Classification metrics agree with scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as skm

from saliency_jax.metrics import classification


@pytest.mark.parametrize("seed", range(3))
def test_auc_matches_sklearn_with_ties(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 200)
  scores = np.round(rng.random(200) + 0.3 * labels, 1)  # many ties
  assert classification.roc_auc(scores, labels) == pytest.approx(
      skm.roc_auc_score(labels, scores), abs=1e-12)


def test_binary_report_matches_sklearn():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 100)
  probs = np.clip(rng.random(100) * 0.7 + 0.3 * labels, 0, 1)
  report = classification.binary_report(probs, labels)
  pred = probs >= 0.5
  assert report["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
  assert report["precision"] == pytest.approx(skm.precision_score(labels, pred))
  assert report["recall"] == pytest.approx(skm.recall_score(labels, pred))


def test_auc_undefined_for_one_class():
  assert np.isnan(classification.roc_auc(np.arange(4.0), np.ones(4)))
