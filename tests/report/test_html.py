"""report.html: self-contained, the report's content, every figure, a map browser
that works in a real (headless Chromium) browser."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil

import headless_browser
import matplotlib
import ml_collections
import numpy as np
import pytest
from PIL import Image
from skimage import segmentation

from saliency_jax import io_utils
from saliency_jax.experiments import runner
from saliency_jax.report import cascade_report
from saliency_jax.report import html
from saliency_jax.report import markdown

METHODS = ("gradient", "gradcam")
BLOCKS = ("predictions", "block2", "block1")
NUM_STAGES, NUM_EXAMPLES, SIZE = 4, 2, 32
IDS = ("p001", "p002")
BOX = (4, 6, 10, 8)  # image 0: (x, y, w, h); image 1 has a mask and no box


def _value(m: int, s: int, e: int) -> float:
  """Each example map is constant, a different value per method, stage, image."""
  return 0.1 + 0.3 * m + 0.15 * s + 0.07 * e


def _examples():
  return {method: np.stack([np.stack([np.full((SIZE, SIZE), _value(m, s, e), np.float32)
                                      for e in range(NUM_EXAMPLES)])
                            for s in range(NUM_STAGES)])
          for m, method in enumerate(METHODS)}


def _images():
  yy, xx = np.mgrid[:SIZE, :SIZE]
  masks = np.zeros((3, SIZE, SIZE), bool)
  x, y, w, h = BOX
  masks[0, y:y + h, x:x + w] = True
  masks[1] = (yy - 16) ** 2 + (xx - 14) ** 2 <= 36
  boxes = np.zeros((3, 2, 4), np.float32)
  boxes[0, 0] = BOX
  return {"image": np.random.default_rng(0).random((3, SIZE, SIZE, 1), np.float32),
          "boxes": boxes, "num_boxes": np.array([1, 0, 0], np.int32), "mask": masks,
          "id": np.array(IDS + ("p003",)), "label": np.ones(3, np.int32)}


def _summary():
  return {"experiment": "cascade", "mode": "cascade", "model": "small_cnn",
          "dataset": "synthetic_cxr", "num_images": 3, "verdict_metric": "ssim",
          "methods": list(METHODS),
          "stages": [{"stage": s, "randomized_blocks": list(BLOCKS[:s])}
                     for s in range(NUM_STAGES)],
          "verdicts": {m: {"ssim": {"verdict": v, "passed": v == "PASS",
                                    "passed_ci": False,
                                    "similarity": [0.2, 0.1, 0.3],
                                    "baseline": [0.5, 0.4, 0.6]}}
                       for m, v in zip(METHODS, ("PASS", "FAIL"))},
          "aggregates": []}


def _write_run(workdir: str) -> None:
  """A cascade workdir as the runner and the report leave it (no training)."""
  examples = _examples()
  for method, maps in examples.items():
    np.save(os.path.join(workdir, "maps", f"cascade-{method}.npy"), maps)
    io_utils.write_json(os.path.join(workdir, "parts", f"cascade-{method}.json"),
                        {"states": [f"stage{s}" for s in range(NUM_STAGES)]})
  runner.save_example_images(workdir, "cascade", _images(), NUM_EXAMPLES)
  io_utils.write_json(os.path.join(workdir, "summary.json"), _summary())
  config = ml_collections.ConfigDict(dict(
      methods=list(METHODS), similarity=["ssim"], localization=[], seed=0,
      dataset="synthetic_cxr", model="small_cnn"))
  cascade_report.write(workdir, config, _summary(), examples, _images())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cascade")
  (workdir / "maps").mkdir()
  _write_run(str(workdir))
  return workdir


def _data(page: str) -> dict:
  match = re.search(r'<script type="application/json" id="map-data">(.*?)</script>',
                    page, re.S)
  assert match, "no map data on the page"
  return json.loads(match.group(1).replace("<\\/", "</"))


def _pixels(uri: str) -> np.ndarray:
  assert uri.startswith("data:image/png;base64,"), uri[:40]
  image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
  return np.asarray(image.convert("RGBA"))


# ------------------------------------------------------------ no browser ---

def test_markdown_subset_converts():
  text = ("# Title with `code`\n\nA *paragraph* with **bold**, `a|b` and 2 * 3 < 4,\n"
          "continued. See [the cascade](cascade/report.md) and [data](results.csv).\n\n"
          "- one\n  continued\n- two **PASS**\n\n"
          "| Method | Verdict | Mean |\n|---|---|---:|\n"
          "| `x|y` | FAIL | 0.500 [0.400, 0.600] |\n| `z` | INVALID | n/a |\n\n"
          "```\nraw <table> | here\n```\n\n![A caption](figures/none.png)\n")
  out = html.markdown_to_html(text, lambda src: None)
  assert '<h1 id="title-with-code">Title with <code>code</code></h1>' in out
  assert ("<p>A <em>paragraph</em> with <strong>bold</strong>, <code>a|b</code> and "
          "2 * 3 &lt; 4, continued.") in out
  assert '<a href="cascade/report.html">the cascade</a>' in out
  assert '<a href="results.csv">data</a>' in out
  assert "<li>one continued</li>" in out
  assert '<li>two <strong><span class="verdict pass">PASS</span></strong></li>' in out
  assert "<th>Method</th><th>Verdict</th><th class=\"right\">Mean</th>" in out
  assert ('<tr><td><code>x|y</code></td><td><span class="verdict fail">FAIL</span></td>'
          '<td class="right">0.500 [0.400, 0.600]</td></tr>') in out
  assert '<span class="verdict invalid">INVALID</span>' in out
  assert "<pre><code>raw &lt;table&gt; | here</code></pre>" in out
  assert 'data-missing="figures/none.png"' in out and "<img" not in out


def test_page_is_self_contained_with_every_figure(run):
  page = (run / "report.html").read_text()
  report = (run / "report.md").read_text()
  linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
  assert linked and all(f.startswith("figures/") for f in linked)
  assert sorted(re.findall(r'data-file="([^"]+)"', page)) == sorted(linked)
  for src in re.findall(r'<img[^>]* src="([^"]*)"', page):
    assert src.startswith("data:image/png;base64,"), src[:60]
  assert not re.search(r'(src|href)="(https?:)?//', page)
  assert "<link" not in page and "<script src" not in page
  assert "missing figure" not in page
  for method in METHODS:  # the report's content came along
    assert f"<code>{method}</code>" in page


def test_maps_are_the_saved_maps_in_the_heat_colormap(run):
  data = _data((run / "report.html").read_text())
  [experiment] = data["experiments"]
  assert experiment["name"] == "cascade" and experiment["methods"] == list(METHODS)
  assert [s["name"] for s in experiment["states"]] == [
      f"stage{s}" for s in range(NUM_STAGES)]
  assert experiment["states"][0]["label"] == "stage0: trained"
  assert experiment["states"][2]["label"] == "stage2: +block2 (2 randomized)"
  assert [i["id"] for i in experiment["images"]] == list(IDS)
  colormap = matplotlib.colormaps["inferno"]
  for m, method in enumerate(METHODS):
    for s in range(NUM_STAGES):
      for e in range(NUM_EXAMPLES):
        pixels = _pixels(experiment["maps"][method][s][e])
        assert pixels.shape == (SIZE, SIZE, 4)
        expected = np.round(np.asarray(colormap(_value(m, s, e))[:3]) * 255)
        np.testing.assert_array_equal(pixels[..., :3].reshape(-1, 3),
                                      np.broadcast_to(expected, (SIZE * SIZE, 3)))


def test_ground_truth_is_the_box_or_the_mask_outline(run):
  images = _data((run / "report.html").read_text())["experiments"][0]["images"]
  truth = _pixels(images[0]["truth"])
  scale = truth.shape[0] // SIZE
  assert scale * SIZE == truth.shape[0] >= html.MIN_DISPLAY_PIXELS
  x, y, w, h = BOX
  alpha = truth[..., 3] > 0
  assert alpha[y * scale, (x + w // 2) * scale]  # top edge
  assert alpha[(y + h) * scale - 1, (x + w // 2) * scale]  # bottom edge (inclusive)
  assert not alpha[(y + h // 2) * scale, (x + w // 2) * scale]  # inside
  assert not alpha[(y + h) * scale + 2, (x + w // 2) * scale]  # outside
  assert images[0]["truth_kind"] == "boxes"
  shown = _pixels(images[0]["image"])
  assert tuple(shown[y * scale, (x + w // 2) * scale]) == html.GROUND_TRUTH_RGBA
  # Image 1 has a mask and no box: its outline is the mask's inner boundary.
  assert images[1]["truth_kind"] == "mask"
  outline = _pixels(images[1]["truth"])[::scale, ::scale, 3] > 0
  expected = segmentation.find_boundaries(_images()["mask"][1], connectivity=1,
                                          mode="inner")
  np.testing.assert_array_equal(outline, expected)


def test_study_page_links_each_tests_page_and_has_no_browser(tmp_path):
  text = ("# Saliency study\n\n| Method | [weight randomization](cascade/report.md) |\n"
          "|---|---|\n| `gradcam` | PASS |\n| `gradient` | INVALID |\n")
  path = markdown.write_report(str(tmp_path), text)
  assert path == str(tmp_path / "report.html")
  assert (tmp_path / "report.md").read_text() == text
  page = (tmp_path / "report.html").read_text()
  assert '<a href="cascade/report.html">weight randomization</a>' in page
  assert '<span class="verdict pass">PASS</span>' in page
  assert 'id="map-browser"' not in page and "map-data" not in page


def test_unusable_maps_and_film_are_left_out_not_fatal(run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(run, workdir)
  (workdir / "maps" / "cascade-images.npz").write_bytes(b"not an npz")
  np.save(workdir / "maps" / "cascade-xrai.npy", np.zeros((3, 4), np.float32))
  page = open(html.write(str(workdir))).read()
  assert "Not shown (unreadable): <code>maps/cascade-xrai.npy</code>" in page
  [experiment] = _data(page)["experiments"]
  assert experiment["film"] is False and experiment["methods"] == list(METHODS)
  assert [i["id"] for i in experiment["images"]] == ["0", "1"]


# ------------------------------------------------------- in the browser ---

def test_page_renders_in_chromium_with_every_image(run):
  page = headless_browser.open_page(str(run / "report.html"))
  headless_browser.assert_renders(page)
  assert page.root.get("data-browser-ready") == "1"
  data = _data((run / "report.html").read_text())
  figures = [i for i in page.images if i.get("data-file")]
  assert len(figures) == len(re.findall(r"!\[", (run / "report.md").read_text()))
  shown = page.image("map-view")
  assert shown["data-key"] == "cascade/gradient/0/0"
  assert shown["src"] == data["experiments"][0]["maps"]["gradient"][0][0]
  assert int(shown["data-natural-width"]) == SIZE
  assert page.image("image-view")["src"] == data["experiments"][0]["images"][0]["image"]


@pytest.mark.parametrize("fragment,key", [
    ("method=gradcam&stage=3&image=1", ("gradcam", 3, 1)),
    ("method=gradient&stage=stage1&image=p001", ("gradient", 1, 0)),
])
def test_a_fragment_chooses_the_map_as_a_user_would(run, fragment, key):
  data = _data((run / "report.html").read_text())["experiments"][0]
  page = headless_browser.open_page(str(run / "report.html"), fragment)
  headless_browser.assert_renders(page)
  assert "data-fragment-problem" not in page.root
  method, stage, image = key
  shown = page.image("map-view")
  assert shown["data-key"] == f"cascade/{method}/{stage}/{image}"
  assert shown["src"] == data["maps"][method][stage][image]
  assert shown["src"] != data["maps"]["gradient"][0][0]  # not the default view
  assert page.image("image-view")["src"] == data["images"][image]["image"]
  assert page.image("truth-view")["src"] == data["images"][image]["truth"]


def test_without_the_film_the_browser_shows_maps_alone(run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(run, workdir)
  os.remove(workdir / "maps" / "cascade-images.npz")
  page = headless_browser.open_page(html.write(str(workdir)), "method=gradcam&stage=2")
  headless_browser.assert_renders(page)
  assert page.image("map-view")["data-key"] == "cascade/gradcam/2/0"
  assert not page.image("image-view").get("src")
  assert "maps only" in page.dom
