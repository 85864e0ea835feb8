"""The faithfulness experiment end to end, on tiny phantoms."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib import image as plt_image

import experiment_runs
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import results
from saliency_jax.experiments import common
from saliency_jax.experiments import faithfulness
from saliency_jax.metrics import faithfulness as metrics




@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The quick preset on 4 images, its model given (no training: seconds)."""
  config = experiment_runs.quick_config("faithfulness", tmp_path_factory.mktemp("data"))
  config.model_weights = experiment_runs.untrained_weights(
      tmp_path_factory.mktemp("w") / "model.npz")
  config.num_images = 4
  workdir = tmp_path_factory.mktemp("faithfulness")
  return config, workdir, main_lib.run(config, str(workdir))


def _names(config):
  return list(config.methods) + list(config.controls)


def test_writes_every_result_file(run):
  config, workdir, summary = run
  for name in ("config.json", "results.csv", "summary.json", "report.md",
               "report.html", "figures/faithfulness_curves.png"):
    assert (workdir / name).exists(), name
  report = open(workdir / "report.md").read()
  for name in _names(config):
    assert f"`{name}`" in report
  for metric in faithfulness.METRICS:
    assert f"### {metric}" in report
  assert "faithfulness_curves.png" in report
  assert json.load(open(workdir / "summary.json"))["verdicts"] == summary["verdicts"]


def test_report_shows_the_example_maps_of_every_method_and_control(run):
  from saliency_jax.report import markdown  # pylint: disable=g-import-not-at-top
  config, workdir, _ = run
  film = dict(np.load(workdir / "maps" / "faithfulness-images.npz"))
  count = min(config.report.example_images, config.num_images)
  assert count >= 1 and len(film["id"]) == count
  report = open(workdir / "report.md").read()
  assert "### Example maps" in report
  for name in markdown.image_names(film, count):
    relative = f"figures/faithfulness_maps_{name}.png"
    assert (workdir / relative).exists() and f"]({relative})" in report
    # One panel row: the image, then every method's and control's map.
    image = plt_image.imread(workdir / relative)
    assert image.shape[1] > image.shape[0] * (len(_names(config)) + 1) / 3


def test_rows_one_per_map_image_and_metric_with_options_recorded(run):
  config, workdir, summary = run
  rows = experiment_runs.read_results(workdir)
  assert tuple(rows[0]) == results.FIELDS
  n = summary["num_images"]
  assert n == config.num_images
  assert len(rows) == len(_names(config)) * n * len(faithfulness.METRICS)
  assert {r["method"] for r in rows} == set(_names(config))
  assert {r["metric"] for r in rows} == set(faithfulness.METRICS)
  assert {r["stage"] for r in rows} == {"0"}
  assert summary["faithfulness"]["percentiles"] == [25.0, 50.0, 75.0]
  assert summary["faithfulness"]["step"] == config.faithfulness.step
  # Lower-is-better metrics are compared negated, but reported as they are.
  means = {(a["method"], a["metric"]): a["mean"] for a in summary["aggregates"]}
  for method in config.methods:
    row = summary["comparisons"]["deletion_auc"][method]
    assert row["mean"] == means[method, "deletion_auc"]
    assert row["best_control"] == min(config.controls,
                                      key=lambda c: means[c, "deletion_auc"])
  # The curves' band holds the mean; 1 + 1 / step fractions from 0 to 1.
  curve = summary["curves"]["gradcam"]
  np.testing.assert_allclose(curve["fractions"], np.linspace(0, 1, 9))
  for kind in ("deletion", "insertion"):
    mean, low, high = (np.asarray(curve[kind][k]) for k in ("mean", "low", "high"))
    assert np.all((low <= mean + 1e-12) & (mean <= high + 1e-12))


def test_rows_equal_a_direct_call_on_the_saved_maps(run):
  config, workdir, _ = run
  model, _ = common.trained_model(config, str(workdir))
  images = common.evaluation_images(config)
  x, image_id = images["image"][0], str(images["id"][0])
  target = int(np.argmax(model(x[None])[0]))
  saved = np.load(faithfulness.maps_path(str(workdir), "gradcam"))
  saliency_map = saved["maps"][0]
  f = config.faithfulness
  deleted = metrics.deletion(model, x, saliency_map, target, step=f.step,
                             replacement=f.replacement, sigma=f.sigma)
  rows = experiment_runs.read_results(workdir)

  def row(metric):
    return next(float(r["value"]) for r in rows if r["method"] == "gradcam"
                and r["metric"] == metric and r["image_id"] == image_id)

  np.testing.assert_allclose(row("deletion_auc"), float(deleted.auc), rtol=1e-5)
  np.testing.assert_allclose(saved["deletion"][0], np.asarray(deleted.scores),
                             rtol=1e-5)
  # ROAD's key: the second half of the image's key, split as road_combined does.
  road_key = jax.random.split(faithfulness.score_keys(config, len(images["id"]))[0])[1]
  combined = metrics.road_combined(model, x, saliency_map, target, key=road_key,
                                   percentiles=tuple(f.percentiles), noise=f.noise)
  np.testing.assert_allclose(row("road_combined"), float(combined), rtol=1e-4,
                             atol=1e-6)


def test_rerun_resumes_and_recomputes_only_a_damaged_part(run, monkeypatch):
  config, workdir, summary = run
  calls = []
  original = faithfulness.score_maps

  def counted(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(faithfulness, "score_maps", counted)
  before = results.read_rows(workdir / "results.csv")
  again = main_lib.run(config, str(workdir))
  assert not calls
  assert again["aggregates"] == summary["aggregates"]
  os.remove(faithfulness.maps_path(str(workdir), "edge"))
  main_lib.run(config, str(workdir))
  assert len(calls) == 1
  after = results.read_rows(workdir / "results.csv")
  assert [(r["method"], r["metric"], r["image_id"]) for r in after] == [
      (r["method"], r["metric"], r["image_id"]) for r in before]
  np.testing.assert_allclose([r["value"] for r in after],
                             [r["value"] for r in before], rtol=1e-6)


def test_nan_model_is_invalid_with_counts_never_a_verdict(run, tmp_path):
  config = experiment_runs.quick_config("faithfulness", run[0].data_dir)  # built
  config.model_weights = experiment_runs.untrained_weights(tmp_path / "nan.npz", nan=True)
  config.num_images = 2
  summary = main_lib.run(config, str(tmp_path / "run"))
  assert set(summary["verdicts"].values()) == {"INVALID"}
  assert not any(summary["better_than_controls"].values())
  assert set(summary["invalid"]) == set(_names(config))
  assert summary["nonfinite"]["random"]["trained"] == "2 logits"
  values = results.values(results.read_rows(tmp_path / "run" / "results.csv"))
  assert values.size and np.isnan(values).all()
  report = open(tmp_path / "run" / "report.md").read()
  assert "INVALID" in report and "YES" not in report


@pytest.mark.parametrize("key, value, message", [
    ("faithfulness.replacement", "zeros", r"config\.faithfulness\.replacement='zeros'"),
    ("faithfulness.step", 0.0, r"config\.faithfulness\.step=0\.0: expected a fraction"),
    ("faithfulness.percentiles", (), r"config\.faithfulness\.percentiles=\(\)"),
    ("faithfulness.percentiles", (50, 100), r"faithfulness\.percentiles=\(50, 100\)"),
    ("faithfulness.noise", -0.1, r"config\.faithfulness\.noise=-0\.1"),
    ("faithfulness.batch_size", 0, r"config\.faithfulness\.batch_size=0"),
    ("controls", ("random", "mean_training_mask"), r"config\.controls: "
     "'mean_training_mask' is not allowed"),
    ("primary_metric", "auprc", r"config\.primary_metric='auprc'"),
])
def test_bad_settings_fail_in_validate(tmp_path, key, value, message):
  config = experiment_runs.quick_config("faithfulness", tmp_path)
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value
  with pytest.raises(errors.ConfigError, match=message):
    main_lib.validate(config)
  assert not os.listdir(tmp_path)  # nothing built or written


def _linear_logits(x):
  """A fixed two-class linear model of a 12 x 12 x 1 image (softmax varies)."""
  w = jnp.linspace(-1.0, 1.0, x.size).reshape(x.shape)
  return jnp.stack([jnp.sum(w * x), jnp.sum(w[::-1] * x)])


def test_scores_vmapped_over_images_equal_a_loop_of_direct_calls():
  # 16 evaluations per image (2 x 5 curve points, 2 x 2 ROAD, 2 confidence):
  # batch_size 32 runs 2 images vmapped per chunk, 2 chunks (the last padded).
  images = jax.random.uniform(jax.random.key(0), (3, 12, 12, 1))
  maps = jax.random.uniform(jax.random.key(1), (3, 12, 12))
  targets = jnp.array([0, 1, 0])
  keys = jax.random.split(jax.random.key(2), 3)
  options = dict(step=0.25, replacement="noise", sigma=1.0, value=0.0,
                 percentiles=(20.0, 60.0), noise=0.05, output="probability")
  got = faithfulness.score_maps(_linear_logits, images, maps, targets, keys,
                                options=options, batch_size=32, strategy="scan")
  assert faithfulness.evaluations(options) == 16
  for n in range(3):
    x, s, t = images[n], maps[n], int(targets[n])
    curve_key, road_key = jax.random.split(keys[n])
    curve = dict(key=curve_key, step=0.25, replacement="noise")
    deleted = metrics.deletion(_linear_logits, x, s, t, **curve)
    inserted = metrics.insertion(_linear_logits, x, s, t, **curve)
    road = dict(percentiles=(20.0, 60.0), noise=0.05)
    lerf_key, morf_key = jax.random.split(road_key)
    lerf = metrics.road(_linear_logits, x, s, t, key=lerf_key, order="lerf", **road)
    morf = metrics.road(_linear_logits, x, s, t, key=morf_key, order="morf", **road)
    confidence = metrics.confidence_change(_linear_logits, x, s, t)
    expected = {
        "deletion_auc": deleted.auc, "insertion_auc": inserted.auc,
        "road_morf": morf.mean, "road_lerf": lerf.mean,
        "road_combined": metrics.road_combined(_linear_logits, x, s, t, key=road_key,
                                               **road),
        "confidence_drop": confidence.drop,
        "confidence_increase": confidence.increase,
        "deletion": deleted.scores, "insertion": inserted.scores}
    for name, value in expected.items():
      np.testing.assert_allclose(got[name][n], value, rtol=1e-4, atol=1e-6,
                                 err_msg=name)
  np.testing.assert_allclose(got["fractions"][0], [0, 0.25, 0.5, 0.75, 1.0])


def test_score_batching_bounds_auto_to_one_images_copies():
  config = experiment_runs.quick_config("faithfulness", "/unused")
  options = faithfulness.options_of(config)
  # 9 deletion + 9 insertion points (step 1/8), 2 x 3 ROAD percentiles, 2 confidence.
  assert faithfulness.evaluations(options) == 26
  config.update(strategy="vectorized", batch_size="auto")
  assert faithfulness.score_batching(config, options) == ("vectorized", 26)
  config.faithfulness.batch_size = 7
  assert faithfulness.score_batching(config, options) == ("vectorized", 7)


def test_aggregate_over_faithfulness_workdirs(run, tmp_path):
  """Two finished faithfulness jobs of a sweep (the run, as two seeds):
  ``--config=aggregate`` merges them, means equal NumPy's, verdicts counted."""
  import shutil  # pylint: disable=g-import-not-at-top
  from saliency_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from saliency_jax import sweep  # pylint: disable=g-import-not-at-top
  config, workdir, summary = run
  sweep_dir = tmp_path / "sweep"
  jobs = [sweep.Job(sweep.job_name({"seed": s}), {"seed": s}) for s in (0, 1)]
  sweep.record(str(sweep_dir), config, jobs, {"config_file": "faithfulness"})
  for job in jobs:
    shutil.copytree(workdir, sweep_dir / job.name,
                    ignore=shutil.ignore_patterns("models", "maps", "figures"))
  aggregated = config_lib.load_file("aggregate")
  aggregated.update(sweep_dir=str(sweep_dir), bootstrap_resamples=100)
  out = main_lib.run(aggregated, str(tmp_path / "aggregate"))
  assert out["aggregated"] == "faithfulness"
  rows = experiment_runs.read_results(workdir)
  for a in out["aggregates"]:
    values = np.array([float(r["value"]) for r in rows if r["method"] == a["method"]
                       and r["metric"] == a["metric"]])
    np.testing.assert_allclose(a["mean"], values[np.isfinite(values)].mean(), rtol=1e-12)
    assert a["n"] == 2 and a["sd"] == 0.0
  assert {(a["method"], a["metric"]) for a in out["aggregates"]} == {
      (n, m) for n in _names(config) for m in faithfulness.METRICS}
  counts = {v["method"]: v["counts"] for v in out["verdicts"]}
  assert set(counts) == set(config.methods)
  for method, verdict in summary["verdicts"].items():
    assert counts[method][verdict] == 2
  assert (tmp_path / "aggregate" / "report.md").exists()


def test_two_processes_give_one_process_results(run, tmp_path):
  """The run again in 2 JAX processes of one CPU device each: maps and
  scores split over both; process 0 alone writes, the results are the run's."""
  import socket  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  config, workdir, summary = run
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  scaled = tmp_path / "scaled"
  args = [sys.executable, "-m", "saliency_jax.main",
          f"--config={experiment_runs.config_path('faithfulness')}:quick",
          f"--config.data_dir={config.data_dir}",
          f"--config.model_weights={config.model_weights}",
          f"--config.num_images={config.num_images}", f"--workdir={scaled}",
          "--config.distributed.enabled=True",
          f"--config.distributed.coordinator=127.0.0.1:{port}",
          "--config.distributed.num_processes=2"]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = [subprocess.Popen(args + [f"--config.distributed.process_id={i}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-4000:]
  first, second = (sorted(results.read_rows(w / "results.csv"),
                          key=lambda r: (r["method"], r["metric"], r["image_id"]))
                   for w in (workdir, scaled))
  assert [(r["method"], r["metric"], r["image_id"]) for r in first] == [
      (r["method"], r["metric"], r["image_id"]) for r in second]
  # Sharded programs ('dispatch' as 'scan'): equal to float32 rounding.
  np.testing.assert_allclose([r["value"] for r in second], [r["value"] for r in first],
                             rtol=0, atol=1e-4)
  other = json.load(open(scaled / "summary.json"))
  assert other["verdicts"] == summary["verdicts"]
  assert {b["devices"] for b in other["batching"].values()} == {2}
  assert (scaled / "report.md").exists()
  # Process 1 wrote nothing into the workdir.
  assert not [p for p in os.listdir(scaled) if "process" in p]
