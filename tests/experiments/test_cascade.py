"""The cascading randomization experiment end to end, on tiny phantoms."""

import json
import os
import re

import pytest
import experiment_runs

from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import results


def quick_config(data_dir):
  return experiment_runs.quick_config("cascade", data_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return experiment_runs.run_quick("cascade", tmp_path_factory)


def test_writes_every_result_file(run):
  config, workdir, summary = run
  for name in ("config.json", "results.csv", "summary.json", "report.md"):
    assert (workdir / name).exists(), name
  figures = os.listdir(workdir / "figures")
  assert any(f.startswith("cascade_maps_") for f in figures)
  for metric in config.similarity:
    assert f"cascade_similarity_{metric}.png" in figures
  report = open(workdir / "report.md").read()
  for method in config.methods:
    assert method in report
  assert json.load(open(workdir / "summary.json"))["verdicts"] == json.loads(
      json.dumps(summary["verdicts"]))


def test_results_are_long_format_with_every_stage_method_and_metric(run):
  config, workdir, summary = run
  rows = experiment_runs.read_results(workdir)
  assert tuple(rows[0]) == results.FIELDS
  num_stages = len(summary["stages"])
  n = summary["num_images"]
  assert num_stages == 6  # small_cnn: 5 blocks + the trained model
  assert summary["stages"][-1]["randomized_blocks"] == [
      "predictions", "block4", "block3", "block2", "block1"]
  # eMPRT (config.cascade.emprt, on by default): one more row per stage.
  metrics = (len(config.similarity) + len(config.localization)
             + int(config.cascade.emprt))
  baseline = len(config.similarity)
  # The methods and the null baselines (on by default), each with every row.
  names = len(config.methods) + len(config.null_baselines)
  assert len(rows) == names * n * (num_stages * metrics + baseline)
  for method in list(config.methods) + [f"null_{n}" for n in config.null_baselines]:
    stages = {int(r["stage"]) for r in rows if r["method"] == method}
    assert stages == set(range(num_stages))


def test_stage_zero_reproduces_the_original_maps(run):
  _, workdir, _ = run
  for r in experiment_runs.read_results(workdir):
    if r["stage"] == "0" and r["metric"] in ("spearman", "ssim"):
      assert float(r["value"]) == pytest.approx(1.0, abs=1e-5), r


def test_gradcam_passes_its_own_sanity_check(run):
  # On a model trained on the phantoms, GradCAM at full randomization is less
  # similar to the original maps than maps of two different images are.
  _, _, summary = run
  verdict = summary["verdicts"]["gradcam"]["ssim"]
  assert verdict["passed"], verdict
  assert verdict["similarity"][0] < verdict["baseline"][0]
  assert summary["training"]["test"]["auc"] > 0.6


def test_rerun_resumes_and_recomputes_only_what_is_missing(run, tmp_path):
  config, workdir, _ = run
  before = open(workdir / "results.csv").read()
  kept = results.part_path(str(workdir), "cascade-gradient")
  removed = results.part_path(str(workdir), "cascade-gradcam")
  mtime = os.path.getmtime(kept)
  os.remove(removed)
  main_lib.run(config, str(workdir))
  assert os.path.getmtime(kept) == mtime
  assert os.path.exists(removed)
  assert open(workdir / "results.csv").read() == before


def test_workdir_with_other_settings_is_refused(run):
  config, workdir, _ = run
  other = quick_config(config.data_dir)
  other.num_images = 3
  with pytest.raises(errors.WorkdirError,
                     match=r"holds a run with other settings \(config.num_images\)"):
    main_lib.run(other, str(workdir))


def test_bottom_up_with_emprt_and_smprt(run, tmp_path):
  """Bottom-up stages, eMPRT rows equal to eMPRT of the saved maps, sMPRT's
  maps as method smprt_<method>, the verdict and the report's panels."""
  import numpy as np
  from saliency_jax.metrics import randomization as metrics_randomization
  config, workdir, _ = run
  other = quick_config(config.data_dir)
  other.trained_dir = str(workdir / "models" / "trained")
  other.cascade.mode = "bottom_up"
  other.methods = ("gradient",)
  other.num_images = 3
  other.cascade.smprt = dict(enabled=True, samples=3, noise=0.1)
  out = tmp_path / "bottom_up"
  summary = main_lib.run(other, str(out))
  blocks = [s["randomized_blocks"] for s in summary["stages"]]
  assert blocks[1] == ["block1"] and blocks[2] == ["block1", "block2"]
  assert set(blocks[-1]) == {"predictions", "block4", "block3", "block2", "block1"}
  # The last stage is fully random, as the cascade's: the same verdict applies.
  assert set(summary["verdicts"]["gradient"]) == set(other.similarity)
  assert summary["smprt_methods"] == ["smprt_gradient"]
  rows = experiment_runs.read_results(out)
  maps = np.load(out / "maps" / "cascade-gradient.npy")  # (S, E, H, W)
  ids = [str(i) for i in np.load(out / "maps" / "cascade-images.npz")["id"]]
  emprt = {(int(r["stage"]), r["image_id"]): float(r["value"]) for r in rows
           if r["method"] == "gradient" and r["metric"] == "emprt"}
  assert len(emprt) == len(blocks) * summary["num_images"]
  for s in range(len(blocks)):
    for e, image in enumerate(ids[:maps.shape[1]]):
      expected = float(metrics_randomization.emprt(maps[0, e], maps[s, e]))
      assert emprt[(s, image)] == pytest.approx(expected, rel=1e-5, abs=1e-6), (s, image)
      assert s or emprt[(s, image)] == 0.0
  smooth = [r for r in rows if r["method"] == "smprt_gradient"]
  for metric in list(other.similarity) + ["emprt"]:
    assert {int(r["stage"]) for r in smooth if r["metric"] == metric} == set(
        range(len(blocks))), metric
  assert any(r["metric"] == "ssim_different_images" for r in smooth)
  smoothed = np.load(out / "maps" / "cascade-smprt_gradient.npy")
  assert smoothed.shape == maps.shape and not np.allclose(smoothed, maps)
  report = open(out / "report.md").read()
  for text in ("# Bottom-up model-randomization test", "## eMPRT", "## sMPRT",
               "cascade_emprt.png", "`smprt_gradient`"):
    assert text in report, text
  # The sMPRT maps are judged in their own section, not as methods.
  verdict_table = report.split("## Verdict")[1].split("\n## ")[0]
  assert "| `gradient` |" in verdict_table and "smprt_" not in verdict_table
  bad = quick_config(config.data_dir)
  for key, value, match in (("mode", "bottom-up", "config.cascade.mode"),
                            ("smprt", dict(enabled=True, samples=0, noise=0.1),
                             "config.cascade.smprt.samples"),
                            ("smprt", dict(enabled=True, samples=3, noise=-1.0),
                             "config.cascade.smprt.noise")):
    bad = quick_config(config.data_dir)
    bad.cascade[key] = value
    with pytest.raises(errors.ConfigError, match=match):
      main_lib.run(bad, str(tmp_path / f"bad_{key}_{len(match)}"))


# ---------------------------------------------------------------- at scale ---

def scale_run(run, tmp_path, *, num_devices, processes=1, train=False):
  """The quick cascade of ``run`` again (its data, and its trained model
  unless ``train``), on ``num_devices`` simulated CPU devices per process in
  ``processes`` processes."""
  import socket
  import subprocess
  import sys
  config, workdir, _ = run
  args = [sys.executable, "-m", "saliency_jax.main",
          f"--config={experiment_runs.config_path('cascade')}:quick",
          f"--config.data_dir={config.data_dir}",
          f"--workdir={tmp_path / 'scaled'}"]
  if not train:
    args.append(f"--config.trained_dir={workdir / 'models' / 'trained'}")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  if processes > 1:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    args += ["--config.distributed.enabled=True",
             f"--config.distributed.coordinator=127.0.0.1:{port}",
             f"--config.distributed.num_processes={processes}"]
  procs = [subprocess.Popen(args + ([f"--config.distributed.process_id={i}"]
                                    if processes > 1 else []),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(processes)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-4000:]
  return tmp_path / "scaled"


def assert_same_results(a, b):
  first, second = results.read_rows(a), results.read_rows(b)
  assert len(first) == len(second) > 0
  key = lambda r: tuple(str(r[k]) for k in results.FIELDS[:-1])  # noqa: E731
  first, second = sorted(first, key=key), sorted(second, key=key)
  assert [key(r) for r in first] == [key(r) for r in second]
  import numpy as np
  # Maps equal to float32 rounding (sharded, 'dispatch' runs as 'scan': other
  # XLA programs). Scores then agree to 1e-4 but for rare ones of nearly
  # constant maps (a randomized stage), measured 1.3e-4: well within the
  # resolution of a verdict.
  np.testing.assert_allclose([float(r["value"]) for r in second],
                             [float(r["value"]) for r in first], rtol=0, atol=1e-3)


def test_eight_devices_give_one_devices_results(run, tmp_path):
  _, workdir, summary = run
  scaled = scale_run(run, tmp_path, num_devices=8)
  assert_same_results(workdir / "results.csv", scaled / "results.csv")
  other = json.load(open(scaled / "summary.json"))
  assert {m: {k: v["verdict"] for k, v in per.items()}
          for m, per in other["verdicts"].items()} == {
              m: {k: v["verdict"] for k, v in per.items()}
              for m, per in summary["verdicts"].items()}
  # How it ran is recorded: the images split over 8 devices.
  runs = other["batching"]["gradient"]
  assert runs[0]["devices"] == 8 and runs[0]["shard_over"] == "images"


def test_two_processes_give_one_process_results(run, tmp_path):
  """Process 0 trains (orbax, process-local) while process 1 waits for the
  model; both then compute their share of every map."""
  _, workdir, _ = run
  scaled = scale_run(run, tmp_path, num_devices=2, processes=2, train=True)
  assert (scaled / "models" / "trained" / "weights.npz").exists()
  assert_same_results(workdir / "results.csv", scaled / "results.csv")
  assert json.load(open(scaled / "summary.json"))["batching"]["gradient"][0]["devices"] == 4
  # Process 1 wrote nothing into the workdir.
  assert not [p for p in os.listdir(scaled) if "process" in p]


def test_report_html_browses_every_method_and_stage(run):
  """The run's report.html, opened in headless Chromium on the last stage."""
  import headless_browser  # tests/: the browser checks of tests/report/test_html.py
  config, workdir, summary = run
  last = len(summary["stages"]) - 1
  page = headless_browser.open_page(str(workdir / "report.html"),
                                    f"method=gradcam&stage={last}&image=1")
  headless_browser.assert_renders(page)
  assert page.image("map-view")["data-key"] == f"cascade/gradcam/{last}/1"
  assert page.image("image-view").get("src")  # the example images were saved
  for select, count in (("stage", len(summary["stages"])),
                        # The null baselines' maps can be browsed too.
                        ("method", len(config.methods) + len(config.null_baselines))):
    options = re.search(rf'id="select-{select}">(.*?)</select>', page.dom, re.S)
    assert options.group(1).count("<option") == count, select
