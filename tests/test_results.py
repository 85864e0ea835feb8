"""results: rows, verified parts, selection, aggregates, load()."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from saliency_jax import results
from saliency_jax.metrics import stats


def _rows():
  return results.rows(experiment="cascade", dataset="synthetic_cxr", model="small_cnn",
                      seed=0, stage=1, method="gradient", image_ids=["a", "b", "c"],
                      scores={"ssim": np.array([0.1, np.nan, 0.3]),
                              "auprc": np.array([0.5, 0.6, 0.7])})


def test_rows_are_long_format():
  rows = _rows()
  assert len(rows) == 6 and tuple(rows[0]) == results.FIELDS
  assert [r["metric"] for r in rows] == ["ssim"] * 3 + ["auprc"] * 3
  with pytest.raises(ValueError, match="ssim: 2 values for 3 images"):
    results.rows(experiment="e", dataset="d", model="m", seed=0, stage=0, method="x",
                 image_ids=["a", "b", "c"], scores={"ssim": np.zeros(2)})


def test_part_round_trip_and_verification(tmp_path):
  workdir = str(tmp_path)
  rows = _rows()
  results.write_part(workdir, "cascade-gradient", rows, fingerprint="f1",
                     nonfinite_maps=[0, 1])
  got, manifest = results.verified_part(workdir, "cascade-gradient", "f1")
  assert manifest["rows"] == 6 and manifest["nonfinite_maps"] == [0, 1]
  assert [(r["image_id"], r["metric"]) for r in got] == [
      (r["image_id"], r["metric"]) for r in rows]
  np.testing.assert_array_equal([r["value"] for r in got], [r["value"] for r in rows])
  # Other inputs, missing parts: not trusted.
  assert results.verified_part(workdir, "cascade-gradient", "f2") is None
  assert results.verified_part(workdir, "cascade-other", "f1") is None


@pytest.mark.parametrize("damage", ["truncate", "empty", "append", "manifest", "csv"])
def test_damaged_part_does_not_verify(tmp_path, damage):
  workdir = str(tmp_path)
  results.write_part(workdir, "p", _rows(), fingerprint="f")
  path = results.part_path(workdir, "p")
  text = open(path).read()
  if damage == "truncate":
    open(path, "w").write(text[:len(text) // 2])
  elif damage == "empty":
    open(path, "w").close()
  elif damage == "append":
    open(path, "a").write(text.splitlines()[-1] + "\n")
  elif damage == "manifest":
    os.remove(results.manifest_path(workdir, "p"))
  else:
    os.remove(path)
  assert results.verified_part(workdir, "p", "f") is None


def test_row_count_is_checked_even_when_the_hash_matches(tmp_path):
  workdir = str(tmp_path)
  results.write_part(workdir, "p", _rows(), fingerprint="f")
  manifest = json.load(open(results.manifest_path(workdir, "p")))
  manifest["rows"] = 5
  json.dump(manifest, open(results.manifest_path(workdir, "p"), "w"))
  assert results.verified_part(workdir, "p", "f") is None


def test_select_and_values():
  rows = _rows()
  assert len(results.select(rows, metric="ssim")) == 3
  assert results.select(rows, metric="ssim", stage=0) == []
  np.testing.assert_array_equal(results.values(rows, metric="auprc"), [0.5, 0.6, 0.7])
  np.testing.assert_array_equal(results.values(rows, ["c", "x", "a"], metric="auprc"),
                                [0.7, np.nan, 0.5])
  with pytest.raises(ValueError, match="unknown column 'metrc'"):
    results.select(rows, metrc="ssim")


def test_aggregate_counts_excluded_and_matches_bootstrap():
  rows = _rows()
  (auprc, ssim) = results.aggregate(rows, seed=3, num_resamples=200)
  assert (ssim["metric"], ssim["n"], ssim["excluded"]) == ("ssim", 2, 1)
  assert ssim["seed"] == 0 and ssim["stage"] == 1
  expected = stats.bootstrap_ci(np.array([0.1, np.nan, 0.3]), seed=3, num_resamples=200)
  assert (ssim["mean"], ssim["low"], ssim["high"]) == tuple(expected)
  assert auprc["mean"] == pytest.approx(0.6)


def test_load_returns_dataframes(tmp_path):
  workdir = str(tmp_path)
  all_rows = results.write_results(workdir, [_rows()])
  (tmp_path / "images.csv").write_text("image_id,label\na,1\nb,1\nc,1\n")
  (tmp_path / "summary.json").write_text(json.dumps(
      {"aggregates": results.aggregate(all_rows, seed=0, num_resamples=50)}))
  loaded = results.load(workdir)
  frame = loaded["results"]
  assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(results.FIELDS)
  assert len(frame) == 6 and frame["value"].isna().sum() == 1
  joined = frame.merge(loaded["images"], on="image_id")
  assert len(joined) == 6
  assert set(loaded["aggregates"]["metric"]) == {"ssim", "auprc"}
  with pytest.raises(FileNotFoundError, match="no results.csv"):
    results.load(str(tmp_path / "nothing"))
