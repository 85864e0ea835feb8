"""The cascade's signed comparisons and null baselines (issue 14), on tiny phantoms.

Two runs of the quick preset on one trained model: without the options and
with ``signed_similarity=('spearman',)`` and
``null_baselines=('noise', 'random_cam')``.
"""

import json
import os

import jax
import numpy as np
import pytest
import experiment_runs
from scipy import stats as scipy_stats

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import rng
from saliency_jax import saliency
from saliency_jax.experiments import cascade
from saliency_jax.experiments import common

NULLS = ("null_noise", "null_random_cam")


def _quick(data_dir):
  config = experiment_runs.quick_config("cascade", data_dir)
  config.methods = ("gradient", "gradcam")
  # What is tested needs a trained model, not a good one.
  config.train.update(steps=20, eval_every=20, checkpoint_every=20, log_every=10)
  config.synthetic.num_train = 64
  config.similarity, config.localization = ("spearman", "ssim"), ("auprc", "dice")
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("data")
  plain_dir = tmp_path_factory.mktemp("plain")
  plain = _quick(data_dir)
  plain.null_baselines = ()  # on by default (configs/cascade.py)
  plain_summary = main_lib.run(plain, str(plain_dir))
  both_dir = tmp_path_factory.mktemp("both")
  both = _quick(data_dir)
  both.trained_dir = str(plain_dir / "models" / "trained")
  both.signed_similarity = ("spearman",)
  both.null_baselines = ("noise", "random_cam")
  both_summary = main_lib.run(both, str(both_dir))
  return (plain, plain_dir, plain_summary), (both, both_dir, both_summary)


def _values(rows, **where):
  """{(method, stage, image_id, metric): value} of the rows matching ``where``."""
  return {(r["method"], int(r["stage"]), r["image_id"], r["metric"]): float(r["value"])
          for r in rows if all(r[k] == v for k, v in where.items())}


def _model_and_stages(config, workdir):
  images = common.evaluation_images(config)
  model, _ = common.trained_model(config, str(workdir), in_channels=images["image"].shape[-1])
  states, _ = cascade.states(config, model, images["image"].shape[-1])
  return images, states


def test_signed_spearman_is_scipy_on_channel_summed_raw_maps(runs):
  _, (config, workdir, _) = runs
  rows = experiment_runs.read_results(workdir)
  images, states = _model_and_stages(config, workdir)
  targets = jax.numpy.argmax(jax.vmap(states[0].explainee.logits)(images["image"]), -1)
  raw = np.stack([np.asarray(saliency.explain(s.explainee, images["image"], targets,
                                              method="gradient", batch_size=1))
                  for s in states]).sum(axis=-1)  # (S, N, H, W), no |.|
  found = _values(rows, method="gradient", metric="spearman_signed")
  assert len(found) == len(states) * len(images["id"])
  for s in range(len(states)):
    for n, image_id in enumerate(images["id"]):
      expected = scipy_stats.spearmanr(raw[s, n].ravel(), raw[0, n].ravel()).statistic
      assert found["gradient", s, str(image_id), "spearman_signed"] == pytest.approx(
          expected, abs=2e-3)
  # Signed maps differ from |.| maps: the two Spearman rows are not copies.
  absolute = _values(rows, method="gradient", metric="spearman")
  assert any(abs(found[k[:3] + ("spearman_signed",)] - v) > 1e-3
             for k, v in absolute.items() if k[1] > 0)
  assert _values(rows, method="gradient", metric="spearman_signed_different_images")


def test_options_change_no_method_row_or_verdict(runs):
  (_, plain_dir, plain_summary), (_, both_dir, both_summary) = runs
  plain = _values(experiment_runs.read_results(plain_dir))
  both = _values(experiment_runs.read_results(both_dir))
  assert plain and all(both[k] == v or (np.isnan(v) and np.isnan(both[k]))
                       for k, v in plain.items())
  added = set(both) - set(plain)
  assert {k[0] for k in added} == {"gradient", "gradcam", *NULLS}
  assert all(k[0] in NULLS or k[3].startswith("spearman_signed") for k in added)
  for method, by_metric in plain_summary["verdicts"].items():
    for metric, verdict in by_metric.items():
      assert (json.dumps(both_summary["verdicts"][method][metric], sort_keys=True)
              == json.dumps(verdict, sort_keys=True))
  assert set(both_summary["verdicts"]) == {"gradient", "gradcam"}
  assert set(both_summary["null_verdicts"]) == set(NULLS)
  assert "spearman_signed" in both_summary["verdicts"]["gradient"]


def test_noise_null_is_drawn_afresh_per_stage_from_the_config_seed(runs):
  _, (config, workdir, summary) = runs
  rows = experiment_runs.read_results(workdir)
  spearman = _values(rows, method="null_noise", metric="spearman")
  stages = len(summary["stages"])
  for (_, stage, _, _), value in spearman.items():
    # 64 x 64 independent pixels: |rho| ~ 1/64 at every stage after 0.
    assert value == pytest.approx(1.0) if stage == 0 else abs(value) < 0.1
  assert {k[1] for k in spearman} == set(range(stages))
  # The maps are the random control's with fold_in(key, stage), the key the
  # runner derives from the seed for the name's index (after the methods).
  images, states = _model_and_stages(config, workdir)
  key = jax.random.fold_in(rng.key(config.seed, rng.SALIENCY), len(config.methods))
  examples = np.load(os.path.join(workdir, "maps", "cascade-null_noise.npy"))
  count = examples.shape[1]
  for s in range(stages):
    # Keys split over all N images, as the runner's; the examples are the first.
    raw = saliency.explain(states[0].explainee, images["image"], method="random",
                           key=jax.random.fold_in(key, s))
    np.testing.assert_allclose(examples[s], common.postprocess_batch(raw)[:count],
                               atol=1e-6)


def test_random_cam_null_has_every_stage_and_metric(runs):
  _, (config, workdir, summary) = runs
  rows = experiment_runs.read_results(workdir)
  found = _values(rows, method="null_random_cam")
  metrics = list(config.similarity) + ["spearman_signed"]
  for stage in range(len(summary["stages"])):
    for metric in metrics + list(config.localization):
      assert {k[2] for k in found if k[1] == stage and k[3] == metric} == {
          str(i) for i in common.evaluation_images(config)["id"]}, (stage, metric)
  assert set(summary["null_verdicts"]["null_random_cam"]) == set(metrics)


def test_report_lists_the_nulls_apart_and_draws_them(runs):
  (_, plain_dir, _), (config, workdir, _) = runs
  report = (workdir / "report.md").read_text()
  verdicts, nulls = report.split("### Null baselines", 1)
  nulls = nulls.split("## Localization", 1)[0]
  for name in NULLS:
    assert f"| `{name}` |" in nulls and f"| `{name}` |" not in verdicts
  assert "Grey dashed lines are the null baselines" in report
  assert "`_signed`" in report and "Null baselines" not in (plain_dir / "report.md").read_text()
  figures = os.listdir(workdir / "figures")
  assert "cascade_similarity_spearman_signed.png" in figures
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["null_baselines"] == list(NULLS)
  assert summary["signed_similarity"] == ["spearman"]


def test_randomized_stages_are_the_ones_compared(runs):
  # The stages recomputed here are the run's (the signed test relies on it).
  _, (config, workdir, _) = runs
  _, states = _model_and_stages(config, workdir)
  assert len(states) > 2
  first = jax.tree.leaves(states[0].explainee.state)
  last = jax.tree.leaves(states[-1].explainee.state)
  assert any(not np.array_equal(a, b) for a, b in zip(first, last))


@pytest.mark.parametrize("key,value,match", [
    ("signed_similarity", ("ssim",), "config.signed_similarity='ssim' is not allowed"),
    ("signed_similarity", ("spearman", "spearman"), "listed twice"),
    ("null_baselines", ("gaussian",), "config.null_baselines='gaussian' is not allowed"),
])
def test_bad_values_give_one_clear_error(tmp_path, key, value, match):
  config = _quick(tmp_path)
  config[key] = value
  with pytest.raises(errors.ConfigError, match=match):
    config_lib.validate(config)


def test_nulls_are_on_by_default_in_the_randomization_configs():
  for experiment in ("cascade", "label_randomization", "study"):
    for preset in ("", "quick", "paper"):
      config = config_lib.load_file(experiment_runs.config_path(experiment), preset)
      assert tuple(config.null_baselines) == ("noise", "random_cam"), (experiment, preset)
  for preset in ("independent", "bottom_up"):
    config = config_lib.load_file(experiment_runs.config_path("cascade"), preset)
    assert tuple(config.null_baselines) == ("noise", "random_cam"), preset


def test_nulls_outside_the_cascade_are_refused(tmp_path):
  config = experiment_runs.quick_config("localization", tmp_path)
  config.null_baselines = ("noise",)
  with pytest.raises(errors.ConfigError, match="only the randomization tests"):
    config_lib.validate(config)
  config.null_baselines = ()
  config.signed_similarity = ("spearman",)
  with pytest.raises(errors.ConfigError, match="compares no maps"):
    config_lib.validate(config)


@pytest.mark.parametrize("panels", [False, True])
def test_similarity_figure_draws_nulls_as_grey_dashed_lines(monkeypatch, tmp_path, panels):
  from saliency_jax.report import figures  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(figures, "save", lambda fig, path: saved.append(fig))
  curve = lambda v: tuple(np.full(3, v) for _ in range(3))  # noqa: E731
  noise = (np.array([1.0, 0.01, -0.02]),) * 3
  figures.metric_vs_stage(str(tmp_path / "f.png"), {"a": curve(0.9), "b": curve(0.5)},
                          ["trained", "+x", "+y"], "spearman", {"a": 0.3, "b": 0.3},
                          "t", panels=panels, nulls={"null_noise": noise})
  (fig,) = saved
  shown = [ax for ax in fig.axes if ax.get_visible()]
  for ax in shown:
    (line,) = [l for l in ax.get_lines() if np.array_equal(l.get_ydata(), noise[0])]
    assert line.get_linestyle() == "--" and line.get_color() == "0.45"
  labels = [t.get_text() for legend in fig.legends + [ax.get_legend() for ax in shown]
            if legend for t in legend.get_texts()]
  assert "null_noise" in labels and "different-image baseline" in labels
