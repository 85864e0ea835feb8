"""README.md's "In Python" examples run, in order, and compute what they say.

Every ```python block of the section runs top to bottom in one namespace, as
a reader runs them in a notebook; the tests then check what they left behind
(shapes, IG completeness, scores against a direct computation, the cascade's
stage 0, a workdir read back), so the examples cannot rot.
"""

import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax import io_utils
from saliency_jax import results
from saliency_jax.saliency import integrated_gradients as ig_lib

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.md")
SECTION = "## In Python"
# The README's workdir; the test writes a small one and reads that instead.
WORKDIR = '"runs/cascade"'


def _section(text: str, title: str) -> str:
  start = text.index(f"\n{title}\n")
  end = text.find("\n## ", start + 1)
  return text[start:end if end >= 0 else len(text)]


def _blocks() -> list[str]:
  with open(README, encoding="utf-8") as f:
    return re.findall(r"^```python\n(.*?)^```$", _section(f.read(), SECTION),
                      re.S | re.M)


def _run(code: str, namespace: dict) -> None:
  exec(compile(code, f"README.md {SECTION!r}", "exec"), namespace)  # pylint: disable=exec-used


def _write_workdir(path, ns) -> None:
  """A workdir holding the cascade example's similarity scores, as a run writes them."""
  ids = [str(i) for i in ns["data"]["id"]]
  rows = [results.rows(experiment="cascade", dataset="synthetic_cxr", model="small_cnn",
                       seed=0, stage=stage, method="gradient", image_ids=ids,
                       scores={name: values[stage] for name, values in ns["similar"].items()})
          for stage in range(len(ns["blocks"]))]
  all_rows = results.write_results(str(path), rows)
  io_utils.write_json(os.path.join(path, "summary.json"),
                      {"aggregates": results.aggregate(all_rows, seed=0, num_resamples=50)})


@pytest.fixture(scope="module")
def ns(tmp_path_factory):
  """The namespace the section's examples leave behind, run in order."""
  blocks = _blocks()
  namespace = {"__name__": "readme"}
  for code in blocks:
    if WORKDIR in code:
      workdir = tmp_path_factory.mktemp("workdir")
      _write_workdir(workdir, namespace)
      code = code.replace(WORKDIR, repr(str(workdir)))
    _run(code, namespace)
  namespace["_blocks"] = blocks
  return namespace


def test_section_sits_between_outputs_and_configs_and_has_every_example():
  with open(README, encoding="utf-8") as f:
    text = f.read()
  titles = re.findall(r"^## .*$", text, re.M)
  i = titles.index(SECTION)
  assert titles[i - 1] == "## What a run writes" and titles[i + 1] == "## Methods and metrics"
  blocks = _blocks()
  # NNX model, logits_fn, scores, cascade, results.load: in that order.
  assert len(blocks) == 5
  for code, needed in zip(blocks, ["sj.explain(model", "sj.explain(logits_fn",
                                   "sj.metrics.localization_scores",
                                   "sj.randomization.cascade_states", WORKDIR]):
    assert needed in code
  assert sum(WORKDIR in code for code in blocks) == 1


def test_nnx_example_maps_are_complete_integrated_gradients(ns):
  images, maps, model = ns["images"], ns["maps"], ns["model"]
  chex.assert_shape(maps, images.shape)
  chex.assert_tree_all_finite(maps)
  targets = np.argmax(np.asarray(model(images)), axis=-1)
  for i in range(len(images)):
    total, difference = ig_lib.completeness(model, images[i], int(targets[i]), maps[i],
                                            baseline="black")
    # ReLU kinks: 32 trapezoid steps leave about 1% (measured 0.7% at most).
    assert abs(float(difference)) > 1e-3
    np.testing.assert_allclose(total, difference, rtol=0.05)


def test_logits_fn_example_is_complete_and_keyed_per_image(ns):
  images, fn, targets = ns["images"], ns["logits_fn"], ns["targets"]
  for i in range(len(images)):
    total, difference = ig_lib.completeness(fn, images[i], 1, ns["ig"][i])
    # A smooth function: Gauss-Legendre's 32 nodes integrate it to rounding.
    np.testing.assert_allclose(total, difference, rtol=1e-4)
  # SmoothGrad image n took the n-th of the example's key split (explain's contract).
  keys = jax.random.split(jax.random.key(0), len(images))
  assert targets.shape == (len(images),)
  want = jnp.stack([sj.METHODS["smoothgrad"](fn, images[i], 1, key=keys[i], num_samples=16,
                                             noise_level=0.1) for i in range(len(images))])
  chex.assert_trees_all_close(ns["smooth"], want, rtol=1e-5, atol=1e-6)


def test_scores_equal_a_direct_computation(ns):
  heat, masks, scores = np.asarray(ns["heat"]), ns["masks"], ns["scores"]
  chex.assert_shape(heat, masks.shape)
  assert heat.min() >= 0.0 and np.isclose(heat.max(axis=(1, 2)), 1.0).all()
  assert sorted(scores) == ["auprc", "dice", "pointing_game"]
  for i in range(len(heat)):
    # Dice at the mask's area: the |M| highest pixels, ties in raster order.
    m = masks[i].ravel()
    top = np.zeros_like(m)
    top[np.argsort(-heat[i].ravel(), kind="stable")[:m.sum()]] = True
    np.testing.assert_allclose(scores["dice"][i], 2 * (top & m).sum() / (2 * m.sum()),
                               rtol=1e-6)
    for name in scores:
      np.testing.assert_allclose(scores[name][i], sj.metrics.LOCALIZATION[name](heat[i], masks[i]),
                                 rtol=1e-6)
    np.testing.assert_allclose(
        ns["dice_otsu"][i],
        sj.metrics.localization.dice(heat[i], masks[i], threshold="otsu"), rtol=1e-6)


def test_cascade_example_explains_every_stage(ns):
  model, images, raw, blocks = ns["model"], ns["images"], ns["raw"], ns["blocks"]
  order = model.cascade_order
  assert blocks == [list(order[:k]) for k in range(len(order) + 1)]
  chex.assert_shape(raw, (len(order) + 1,) + images.shape)
  # Stage 0 is the trained model; the trained model's classes at every stage.
  chex.assert_trees_all_close(raw[0], sj.explain(model, images, ns["targets"],
                                                 method="gradient"), rtol=1e-5, atol=1e-7)
  similar = ns["similar"]
  for name in ("ssim", "spearman"):
    chex.assert_shape(similar[name], (len(blocks), len(images)))
    np.testing.assert_allclose(similar[name][0], 1.0, atol=1e-5)
    assert (similar[name][-1] < 0.9).all(), similar[name][-1]


def test_results_load_reads_the_workdir_back(ns):
  table, tables = ns["ssim_by_stage"], ns["tables"]
  assert list(table.index) == ["gradient"]
  assert list(table.columns) == list(range(len(ns["blocks"])))
  np.testing.assert_allclose(table.loc["gradient"].to_numpy(),
                             np.asarray(ns["similar"]["ssim"], np.float64).mean(axis=1),
                             rtol=1e-6)
  aggregates = tables["aggregates"]
  ssim = aggregates[aggregates.metric == "ssim"].sort_values("stage")
  np.testing.assert_allclose(ssim["mean"].to_numpy(), table.loc["gradient"].to_numpy(),
                             rtol=1e-6)
