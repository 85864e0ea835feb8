"""The label randomization experiment end to end, on tiny phantoms."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import experiment_runs

from saliency_jax import data as data_lib
from saliency_jax import io_utils
from saliency_jax import main as main_lib
from saliency_jax import results
from saliency_jax import train
from saliency_jax.experiments import label_randomization as lr


def quick_config(data_dir):
  return experiment_runs.quick_config("label_randomization", data_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return experiment_runs.run_quick("label_randomization", tmp_path_factory)


def test_writes_every_result_file(run):
  config, workdir, summary = run
  for name in ("config.json", "results.csv", "summary.json", "report.md"):
    assert (workdir / name).exists(), name
  figures = os.listdir(workdir / "figures")
  assert "label_randomization_localization_difference.png" in figures
  assert len([f for f in figures if f.startswith("label_randomization_maps_")]) == (
      config.report.example_images)
  report = open(workdir / "report.md").read()
  for section in ("## Memorization", "## Verdict", "## Localization"):
    assert section in report
  for method in config.methods:
    assert f"`{method}`" in report
  assert json.load(open(workdir / "summary.json"))["verdicts"] == json.loads(
      json.dumps(summary["verdicts"]))


def test_rows_put_the_trained_model_at_stage_zero_and_the_other_at_one(run):
  config, workdir, summary = run
  rows = experiment_runs.read_results(workdir)
  assert tuple(rows[0]) == results.FIELDS
  n = summary["num_images"]
  per_method = n * (2 * len(config.localization) + 2 * len(config.similarity))
  # The methods and the null baselines (on by default), each with every row.
  assert len(rows) == (len(config.methods) + len(config.null_baselines)) * per_method
  stages = {}
  for r in rows:
    stages.setdefault(r["metric"], set()).add(r["stage"])
  for metric in config.localization:
    assert stages[metric] == {"0", "1"}
  for metric in config.similarity:
    assert stages[metric] == {"1"}
    assert stages[f"{metric}_different_images"] == {"0"}


def test_verdicts_and_differences_follow_the_rows(run):
  config, workdir, summary = run
  rows = experiment_runs.read_results(workdir)
  for method in config.methods:
    for metric in config.similarity:
      verdict = summary["verdicts"][method][metric]
      similar = [float(r["value"]) for r in rows if r["method"] == method
                 and r["metric"] == metric]
      assert verdict["similarity"][0] == pytest.approx(np.mean(similar))
      assert verdict["passed"] == (verdict["similarity"][0] < verdict["baseline"][0])
    for metric in config.localization:
      values = [np.array([float(r["value"]) for r in rows if r["method"] == method
                          and r["metric"] == metric and r["stage"] == s])
                for s in ("0", "1")]
      difference = summary["localization_difference"][metric][method]["difference"]
      assert difference[0] == pytest.approx(np.mean(values[0] - values[1]))


def test_tiny_budget_is_reported_as_not_reached(run):
  config, workdir, summary = run
  record = summary["memorization"]
  settings = config.label_randomization
  assert not record["reached"] and record["stopped"] == "step budget spent"
  assert record["steps"] == settings.max_steps
  steps = [r["steps"] for r in record["rounds"]]
  assert steps == list(range(config.train.steps, settings.max_steps + 1,
                             config.train.steps))
  assert all(r["train_accuracy"] < settings.target_train_accuracy
             for r in record["rounds"])
  assert "**Not memorized**" in open(workdir / "report.md").read()
  trained = io_utils.read_json(workdir / "models" / lr.TAG / train.SUMMARY)
  assert trained["randomize_labels"] and trained["steps"] == settings.max_steps


def test_memorization_stops_at_a_reachable_target(run, tmp_path):
  config, _, summary = run
  first = summary["memorization"]["rounds"][0]
  config = quick_config(config.data_dir)
  # Training is deterministic: the first round reaches its own accuracy again.
  config.label_randomization.target_train_accuracy = first["train_accuracy"]
  _, record = lr.memorize(config, str(tmp_path), in_channels=1)
  assert record["reached"] and record["stopped"] == "target reached"
  assert record["steps"] == config.train.steps < config.label_randomization.max_steps
  assert len(record["rounds"]) == 1


def test_memorization_loop_trains_in_rounds_and_resumes(run, tmp_path, monkeypatch):
  config, _, _ = run
  config = quick_config(config.data_dir)
  config.train.steps = 100
  config.label_randomization.update(target_train_accuracy=0.95, max_steps=1000)
  accuracies = iter([0.5, 0.8, 0.97, 0.99])
  calls = []

  def fake_training(cfg, directory):
    calls.append((cfg.train.steps, cfg.train.randomize_labels, cfg.train.augment))
    summary = {"steps": cfg.train.steps, "train": {"accuracy": next(accuracies)},
               "test": {"auc": 0.5}}
    io_utils.write_json(os.path.join(directory, train.SUMMARY), summary)
    return summary

  monkeypatch.setattr(train, "train_and_evaluate", fake_training)
  monkeypatch.setattr(train, "restore_model", lambda *args: "model")
  model, record = lr.memorize(config, str(tmp_path), in_channels=1)
  assert model == "model"
  assert calls == [(100, True, False), (200, True, False), (300, True, False)]
  assert record["reached"] and record["steps"] == 300
  assert [r["train_accuracy"] for r in record["rounds"]] == [0.5, 0.8, 0.97]
  # A rerun finds the target reached and trains no more.
  _, again = lr.memorize(config, str(tmp_path), in_channels=1)
  assert len(calls) == 3 and again["rounds"] == record["rounds"]
  # A budget that is not a multiple of the round ends with a short round.
  calls.clear()
  accuracies = iter([0.5, 0.6, 0.7])
  config.label_randomization.max_steps = 250
  _, record = lr.memorize(config, str(tmp_path / "budget"), in_channels=1)
  assert [c[0] for c in calls] == [100, 200, 250]
  assert not record["reached"] and record["stopped"] == "step budget spent"


def test_randomized_training_labels_are_a_permutation(run):
  config, workdir, summary = run
  record = summary["memorization"]
  randomized = lr.randomized_config(config, record["steps"])
  true, permuted = lr.training_labels(randomized)
  np.testing.assert_array_equal(true, data_lib.load(config, "train")["label"])
  np.testing.assert_array_equal(np.sort(true), np.sort(permuted))
  assert np.mean(true != permuted) > 0.2
  assert record["label_agreement"] == pytest.approx(np.mean(true == permuted))
  # These are the labels the model was trained on: its accuracy on them is
  # the one train.py reported, and it fits them better than the true ones.
  model = train.restore_model(randomized, str(workdir / "models" / lr.TAG), 1)
  images = jnp.asarray(data_lib.load(randomized, "train")["image"])
  predicted = np.asarray(jnp.argmax(model(images), axis=-1))
  # (One borderline image may round the other way between batch sizes.)
  assert np.mean(predicted == permuted) == pytest.approx(
      record["train_accuracy"], abs=1.5 / true.size)
  assert np.mean(predicted == permuted) > np.mean(predicted == true)


def test_rerun_resumes_without_retraining(run):
  config, workdir, _ = run
  before = open(workdir / "results.csv").read()
  trained = workdir / "models" / lr.TAG / train.SUMMARY
  kept = results.part_path(str(workdir), "label_randomization-gradient")
  removed = results.part_path(str(workdir), "label_randomization-gradcam")
  mtimes = os.path.getmtime(kept), os.path.getmtime(trained)
  os.remove(removed)
  main_lib.run(config, str(workdir))
  assert (os.path.getmtime(kept), os.path.getmtime(trained)) == mtimes
  assert os.path.exists(removed)
  assert open(workdir / "results.csv").read() == before


def test_bad_label_randomization_keys_are_refused():
  config = quick_config("/nonexistent")
  config.label_randomization.target_train_accuracy = 0.0
  with pytest.raises(ValueError, match=r"label_randomization.target_train_accuracy"):
    main_lib.validate(config)
  config = quick_config("/nonexistent")
  config.label_randomization.num_train = config.synthetic.num_train + 1
  with pytest.raises(ValueError, match=r"label_randomization.num_train"):
    main_lib.validate(config)


# ------------------------------------------------------------ null baselines ---

NULLS = ("null_noise", "null_random_cam")


@pytest.fixture(scope="module")
def plain(run, tmp_path_factory):
  """The same run's models without null baselines: (workdir, summary)."""
  config, workdir, _ = run
  config = quick_config(config.data_dir)
  config.null_baselines = ()
  config.models_dir = str(workdir / "models")  # both models, trained once
  plain_dir = tmp_path_factory.mktemp("plain")
  return plain_dir, main_lib.run(config, str(plain_dir))


def _values(rows):
  return {(r["method"], r["stage"], r["image_id"], r["metric"]): float(r["value"])
          for r in rows}


def test_nulls_are_on_by_default_and_change_no_method_row_or_verdict(run, plain):
  config, workdir, summary = run
  plain_dir, plain_summary = plain
  assert tuple(config.null_baselines) == ("noise", "random_cam")
  with_nulls = _values(experiment_runs.read_results(workdir))
  without = _values(experiment_runs.read_results(plain_dir))
  assert without and all(with_nulls[k] == v or (np.isnan(v) and np.isnan(with_nulls[k]))
                         for k, v in without.items())
  assert {k[0] for k in set(with_nulls) - set(without)} == set(NULLS)
  assert json.dumps(summary["verdicts"], sort_keys=True) == json.dumps(
      plain_summary["verdicts"], sort_keys=True)
  assert set(summary["verdicts"]) == set(config.methods)
  assert summary["null_baselines"] == list(NULLS)
  assert set(summary["null_verdicts"]) == set(NULLS)
  assert plain_summary["null_baselines"] == [] and plain_summary["null_verdicts"] == {}
  # Localization differences compare the methods only.
  for by_method in summary["localization_difference"].values():
    assert set(by_method) == set(config.methods)


def test_noise_null_maps_differ_between_the_two_models(run):
  config, workdir, summary = run
  rows = experiment_runs.read_results(workdir)
  spearman = [float(r["value"]) for r in rows
              if r["method"] == "null_noise" and r["metric"] == "spearman"]
  assert len(spearman) == summary["num_images"]
  # Independent uniform noise: |rho| ~ 1 / side of the map, far below 1.
  assert all(abs(v) < 0.15 for v in spearman)
  maps = np.load(workdir / "maps" / "label_randomization-null_noise.npy")
  assert maps.shape[0] == 2 and not np.allclose(maps[0], maps[1])
  # The null's verdict follows its rows, like a method's.
  verdict = summary["null_verdicts"]["null_noise"]["spearman"]
  assert verdict["similarity"][0] == pytest.approx(np.mean(spearman))
  # RandomCAM keeps its random weights: both models' maps from one key.
  cam = [float(r["value"]) for r in rows
         if r["method"] == "null_random_cam" and r["metric"] == "spearman"]
  assert len(cam) == summary["num_images"]


def test_report_lists_the_nulls_apart_and_draws_them(run, plain):
  config, workdir, summary = run
  report = (workdir / "report.md").read_text()
  verdicts, nulls = report.split("### Null baselines", 1)
  verdicts = verdicts.split("## Verdict", 1)[1]
  nulls = nulls.split("## Localization", 1)[0]
  for name in NULLS:
    assert f"| `{name}` |" in nulls and f"| `{name}` |" not in verdicts
  for method in config.methods:
    assert f"| `{method}` |" in verdicts and f"| `{method}` |" not in nulls
  assert "Grey dashed lines in the similarity figure are the null baselines" in report
  plain_report = (plain[0] / "report.md").read_text()
  assert "Null baselines" not in plain_report and "Grey dashed" not in plain_report


def test_similarity_distributions_draw_nulls_as_grey_dashed_lines(monkeypatch, tmp_path):
  from saliency_jax.report import figures  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(figures, "save", lambda fig, path: saved.append(fig))
  rows = [{"method": m, "metric": "spearman", "stage": 1, "value": v}
          for m, v in (("a", 0.9), ("a", 0.8), ("b", 0.2))]
  drawn = figures.score_distributions(
      str(tmp_path / "f.png"), rows, metrics=["spearman", "ssim"], methods=["a", "b"],
      groups={"g": {"stage": 1}}, title="t",
      nulls={"spearman": {"null_noise": 0.01, "null_random_cam": 0.4}})
  assert drawn == 1
  (fig,) = saved
  (ax,) = [ax for ax in fig.axes if ax.get_visible()]
  dashed = {l.get_label(): l for l in ax.get_lines() if l.get_linestyle() == "--"}
  assert set(dashed) == {"null_noise", "null_random_cam"}
  assert list(dashed["null_noise"].get_ydata()) == [0.01, 0.01]
  assert dashed["null_noise"].get_color() == "0.45"
  labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
  assert labels == ["null_noise", "null_random_cam"]


def test_null_means_read_stage_one_of_the_aggregates():
  from saliency_jax.report import label_randomization_report as report  # pylint: disable=g-import-not-at-top
  index = {("null_noise", "ssim", 1): {"mean": 0.02, "low": 0.0, "high": 0.05},
           ("null_noise", "ssim", 0): {"mean": 0.9, "low": 0.8, "high": 1.0},
           ("null_random_cam", "ssim", 1): {"mean": float("nan"), "low": 0, "high": 0}}
  assert report.null_means(index, NULLS, ["ssim", "spearman"]) == {
      "ssim": {"null_noise": 0.02}, "spearman": {}}
