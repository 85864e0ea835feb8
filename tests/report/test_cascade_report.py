"""The cascade report: its figures are PNGs; report.md says what the summary says."""

from __future__ import annotations

import math
import os
import re

import matplotlib.image as mpimg
import ml_collections
import numpy as np
import pytest

from saliency_jax.report import cascade_report
from saliency_jax.report import figures

METHODS = ("gradient", "gradcam", "xrai")
SIMILARITY = ("spearman", "ssim")
LOCALIZATION = ("auprc", "dice")
BLOCKS = ("predictions", "block4", "block3")
NUM_STAGES, NUM_IMAGES, NUM_EXAMPLES, SIZE = 4, 3, 2, 32
IDS = ("p001", "p002", "p003")
# Verdicts: gradient passes under ssim (the verdict metric) and spearman,
# gradcam passes under ssim only, xrai passes under neither.
PASSED = {("gradient", "ssim"): True, ("gradient", "spearman"): True,
          ("gradcam", "ssim"): True, ("gradcam", "spearman"): False,
          ("xrai", "ssim"): False, ("xrai", "spearman"): False}


def _triple(method: str, metric: str, stage: int, shift: float = 0.0):
  """Distinct numbers per field, so reading the wrong field shows."""
  base = (0.1 + 0.2 * METHODS.index(method) + 0.05 * stage
          + 0.013 * (SIMILARITY + LOCALIZATION).index(metric.split("_different")[0])
          + shift)
  return base, base - 0.0411, base + 0.0522


def _aggregates():
  rows = []
  def add(method, metric, stage, triple, excluded=0):
    rows.append(dict(experiment="cascade", model="small_cnn", stage=stage,
                     method=method, metric=metric, mean=triple[0], low=triple[1],
                     high=triple[2], n=NUM_IMAGES - excluded, excluded=excluded))
  for method in METHODS:
    for stage in range(NUM_STAGES):
      for metric in SIMILARITY + LOCALIZATION:
        triple = _triple(method, metric, stage)
        excluded = 0
        if (method, metric, stage) == ("xrai", "dice", NUM_STAGES - 1):
          triple, excluded = (math.nan,) * 3, NUM_IMAGES
        add(method, metric, stage, triple, excluded)
    for metric in SIMILARITY:
      add(method, f"{metric}_different_images", 0, _triple(method, metric, 0, 0.3))
  return rows


def _verdicts():
  return {method: {metric: {
      "passed": PASSED[method, metric],
      "passed_ci": PASSED[method, metric] and method == "gradient",
      "similarity": _triple(method, metric, NUM_STAGES - 1, 0.0007),
      "baseline": _triple(method, metric, 0, 0.3007),
      "num_excluded": {"similarity": 0, "baseline": 0}}
      for metric in SIMILARITY} for method in METHODS}


def _summary():
  return {
      "experiment": "cascade", "mode": "cascade", "model": "small_cnn",
      "dataset": "synthetic_cxr", "num_images": NUM_IMAGES, "preset": "arun2021",
      "stages": [{"stage": s, "randomized_blocks": list(BLOCKS[:s])}
                 for s in range(NUM_STAGES)],
      "training": {"model": "small_cnn", "width": 0.5, "steps": 200,
                   "randomize_labels": False,
                   "test": {"auc": 0.98765, "accuracy": 0.91234, "precision": 0.8888,
                            "recall": math.nan, "num_examples": 64}},
      "verdict_metric": "ssim",
      "verdicts": _verdicts(),
      "aggregates": _aggregates(),
  }


def _images():
  rng = np.random.default_rng(0)
  boxes = np.zeros((NUM_IMAGES, 4, 4), np.float32)
  boxes[:, 0] = (4, 6, 10, 8)
  boxes[1, 1] = (18, 16, 8, 12)
  return {"image": rng.random((NUM_IMAGES, SIZE, SIZE, 1), np.float32),
          "boxes": boxes, "num_boxes": np.array([1, 2, 1], np.int32),
          "mask": np.zeros((NUM_IMAGES, SIZE, SIZE), bool),
          "id": np.array(IDS), "label": np.ones(NUM_IMAGES, np.int32)}


def _config():
  return ml_collections.ConfigDict(dict(
      methods=list(METHODS), similarity=list(SIMILARITY),
      localization=list(LOCALIZATION), num_images=NUM_IMAGES, image_size=SIZE,
      preset="arun2021", seed=7, dataset="synthetic_cxr", model="small_cnn",
      width=0.5))


def _examples():
  rng = np.random.default_rng(1)
  return {m: rng.random((NUM_STAGES, NUM_EXAMPLES, SIZE, SIZE), np.float32)
          for m in METHODS}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("cascade"))
  cascade_report.write(workdir, _config(), _summary(), _examples(), _images())
  with open(os.path.join(workdir, "report.md")) as f:
    return workdir, f.read()


def _row(report: str, first_cell: str, after: str = "") -> list[str]:
  """Cells of the first table row (after ``after``) whose first cell is ``first_cell``."""
  text = report[report.index(after):] if after else report
  match = re.search(rf"^\| {re.escape(first_cell)} \|(.*)\|$", text, re.MULTILINE)
  assert match, f"no row {first_cell!r}"
  return [c.strip() for c in match.group(1).split("|")]


def _fmt(triple) -> str:
  return f"{triple[0]:.3f} [{triple[1]:.3f}, {triple[2]:.3f}]"


def test_every_figure_is_a_png(written):
  workdir, _ = written
  names = ([f"cascade_maps_{i}.png" for i in IDS[:NUM_EXAMPLES]]
           + [f"cascade_similarity_{m}.png" for m in SIMILARITY]
           + [f"cascade_localization_{m}.png" for m in LOCALIZATION])
  found = sorted(os.listdir(os.path.join(workdir, "figures")))
  assert found == sorted(names)  # nothing else: no temp files, no third example
  for name in names:
    pixels = mpimg.imread(os.path.join(workdir, "figures", name))
    assert pixels.ndim == 3 and pixels.shape[2] == 4
    assert min(pixels.shape[:2]) > 300 and pixels[..., :3].std() > 0.01
  grid = mpimg.imread(os.path.join(workdir, "figures", "cascade_maps_p001.png"))
  assert grid.shape[1] > grid.shape[0]  # 5 columns, 3 rows


def test_report_links_point_at_files(written):
  workdir, report = written
  links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
  assert sorted(links) == sorted(
      f"figures/{n}" for n in os.listdir(os.path.join(workdir, "figures")))
  for link in links:
    assert not os.path.isabs(link)
    assert os.path.isfile(os.path.join(workdir, link))


def test_report_names_every_method_and_what_ran(written):
  _, report = written
  for method in METHODS:
    assert f"`{method}`" in report
  assert "AUC 0.988, accuracy 0.912, precision 0.889, recall n/a" in report
  assert "`synthetic_cxr`, images 32 x 32" in report
  assert _row(report, "3") == ["+block3", "`predictions`, `block4`, `block3`"]
  assert _row(report, "0") == ["trained", "none"]


def test_verdict_table_reads_the_verdicts(written):
  _, report = written
  header = _row(report, "Method", after="## Verdict")
  assert header[0] == "Verdict (ssim)"
  expected = {"gradient": ("PASS", "yes", "spearman, ssim"),
              "gradcam": ("PASS", "no", "ssim"),
              "xrai": ("FAIL", "no", "none")}
  verdicts = _verdicts()
  for method in METHODS:
    cells = _row(report, f"`{method}`", after="## Verdict")
    assert tuple(cells[:3]) == expected[method]
    for metric in SIMILARITY:
      column = header.index(f"{metric}, fully randomized")
      assert cells[column] == _fmt(verdicts[method][metric]["similarity"])
      assert cells[column + 1] == _fmt(verdicts[method][metric]["baseline"])


def test_localization_table_trained_and_randomized(written):
  _, report = written
  for metric in LOCALIZATION:
    for method in METHODS:
      cells = _row(report, f"`{method}`", after=f"### {metric}")
      assert cells[0] == _fmt(_triple(method, metric, 0))
      if (method, metric) == ("xrai", "dice"):
        assert cells[1:] == ["n/a", "3 / 0"]  # every image NaN at the last stage
      else:
        assert cells[1:] == [_fmt(_triple(method, metric, NUM_STAGES - 1)), "3 / 3"]
  assert "`xrai` `dice` stage 3: 3 of 3 images not scored" in report


def test_independent_mode_labels():
  stages = [{"stage": 0, "randomized_blocks": []},
            {"stage": 1, "randomized_blocks": ["predictions"]},
            {"stage": 2, "randomized_blocks": ["block4"]}]
  assert cascade_report.stage_labels(stages, "independent") == [
      "trained", "only predictions", "only block4"]
  assert cascade_report.stage_labels(stages[:1], "cascade", 3) == [
      "trained", "stage 1", "stage 2"]


def test_independent_mode_report_says_so(tmp_path):
  summary = _summary()
  summary["mode"] = "independent"
  summary["stages"] = [{"stage": 0, "randomized_blocks": []}] + [
      {"stage": s + 1, "randomized_blocks": [b]} for s, b in enumerate(BLOCKS)]
  cascade_report.write(str(tmp_path), _config(), summary, _examples(), _images())
  report = (tmp_path / "report.md").read_text()
  assert report.startswith("# Independent model-randomization test")
  assert "the last stage has only `block3` re-initialized, so" in report
  assert _row(report, "3") == ["only block3", "`block3`"]
  header = _row(report, "Method", after="## Verdict")
  assert "ssim, only block3" in header


def test_box_patches_enclose_exactly_the_box_pixels():
  boxes = np.array([[3, 5, 10, 4], [20, 1, 2, 7], [0, 0, 0, 0]], np.float32)
  rects = figures.box_patches(boxes, 2)  # the padding row is ignored
  assert rects == [(2.5, 4.5, 10.0, 4.0), (19.5, 0.5, 2.0, 7.0)]
  # imshow centres pixel (r, c) at (c, r): the centres inside a rectangle
  # are the box's pixels x <= c < x + w, y <= r < y + h.
  rows, cols = np.mgrid[:32, :32]
  for (x, y, w, h), (rx, ry, rw, rh) in zip(boxes, rects):
    inside = (cols > rx) & (cols < rx + rw) & (rows > ry) & (rows < ry + rh)
    want = np.zeros((32, 32), bool)
    want[int(y):int(y + h), int(x):int(x + w)] = True
    np.testing.assert_array_equal(inside, want)
  assert figures.box_patches(boxes, 0) == []


def test_map_grid_rejects_mismatched_maps(tmp_path):
  with pytest.raises(ValueError, match="2 method names, 3 stage labels"):
    figures.map_grid(str(tmp_path / "x.png"), np.zeros((8, 8)), np.zeros((1, 4)),
                     0, np.zeros((2, 2, 8, 8)), ["a", "b"], ["s0", "s1", "s2"], "t")
  assert not os.listdir(tmp_path)


def test_metric_bars_and_two_column_grid(tmp_path):
  values = {"intra-architecture": {"gradient": (0.5, 0.4, 0.6), "xrai": (0.8, 0.7, 0.9)},
            "inter-architecture": {"gradient": (0.3, 0.2, 0.4),
                                   "xrai": (math.nan,) * 3}}
  figures.metric_bars(str(tmp_path / "bars.png"), values, "SSIM", "repeatability")
  figures.map_grid(str(tmp_path / "pair.png"), np.full((16, 16, 3), 0.5),
                   np.array([[2, 2, 5, 5]]), 1, np.zeros((2, 2, 16, 16)),
                   ["gradient", "xrai"], ["replicate 1", "replicate 2"], "pair")
  # Beyond 4 methods the curves go into one panel per method.
  stages = ["trained", "+a", "+b"]
  curves = {f"m{k}": (np.full(3, 0.5), np.full(3, 0.4), np.full(3, 0.6))
            for k in range(5)}
  figures.metric_vs_stage(str(tmp_path / "panels.png"), curves, stages, "ssim",
                          {"m0": 0.2}, "panels")
  names = ["bars.png", "pair.png", "panels.png"]
  for name in names:
    pixels = mpimg.imread(str(tmp_path / name))
    assert pixels.ndim == 3 and pixels.shape[2] == 4
  assert sorted(os.listdir(tmp_path)) == names
  with pytest.raises(ValueError, match="curve 'm0' must be three arrays"):
    figures.metric_vs_stage(str(tmp_path / "bad.png"), curves, stages[:2], "ssim",
                            None, "bad")


def test_bottom_up_stage_labels_name_the_input_side_block_added():
  report = cascade_report
  stages = [{"stage": 0, "randomized_blocks": []},
            {"stage": 1, "randomized_blocks": ["block1"]},
            {"stage": 2, "randomized_blocks": ["block1", "block2"]}]
  labels = report.stage_labels(stages, "bottom_up")
  assert labels == ["trained", "+block1", "+block2"]
  summary = {"mode": "bottom_up", "stages": stages}
  assert report._final_name(summary, labels) == "the bottom 2 blocks re-initialized"
  assert report._final_column(summary, labels) == "fully randomized"
