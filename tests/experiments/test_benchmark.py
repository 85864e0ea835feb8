"""The benchmark: structure of its results, never how fast anything is."""

from __future__ import annotations

import json
import math
import os
import statistics

import pytest

from saliency_jax import config as config_lib
from saliency_jax import main as main_lib
from saliency_jax.experiments import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "benchmark.py")


def _quick_config():
  return config_lib.load_file(CONFIG, "quick")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """One ``:quick`` run through the CLI's entry, shared by the tests below."""
  workdir = str(tmp_path_factory.mktemp("benchmark"))
  config = _quick_config()
  returned = main_lib.run(config, workdir)
  with open(os.path.join(workdir, "benchmark.json")) as f:
    return workdir, config, returned, json.load(f)


def _positive(value):
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_run_writes_json_report_and_plot(quick):
  workdir, config, returned, results = quick
  assert returned["rows"] == results["rows"]
  assert os.path.getsize(os.path.join(workdir, "figures", "benchmark.png")) > 0
  assert os.path.exists(os.path.join(workdir, "report.md"))
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert set(results) >= {"environment", "setup", "matmul", "methods", "rows",
                          "best", "default_strategy_in_effect"}
  assert results["environment"]["backend"] == "cpu"
  assert _positive(results["matmul"]["flops_per_s"])
  assert results["setup"]["methods"] == list(config.methods)
  assert set(results["methods"]) == set(config.methods)
  want = {(m, s, b) for m in config.methods
          for s in config.benchmark.strategies
          for b in config.benchmark.batch_sizes}
  assert {(r["method"], r["strategy"], r["batch_size"])
          for r in results["rows"]} == want
  assert len(results["rows"]) == len(want)


def test_rows_are_finite_and_positive(quick):
  _, config, _, results = quick
  for r in results["rows"]:
    assert "error" not in r, r
    for key in ("compile_s", "steady_s", "steady_min_s", "maps_per_s",
                "evaluations_per_s", "flops_per_s", "peak_fraction",
                "reference_ratio", "reference_ratio_min",
                "corrected_maps_per_s"):
      assert _positive(r[key]), (key, r)
    assert r["steady_min_s"] <= r["steady_s"]
    info = results["methods"][r["method"]]
    assert r["maps_per_s"] == pytest.approx(config.num_images / r["steady_s"])
    assert r["evaluations_per_s"] == pytest.approx(
        r["maps_per_s"] * info["evaluations_per_map"])
    assert r["flops_per_s"] == pytest.approx(
        r["maps_per_s"] * info["flops_per_map"])
    assert r["peak_bytes"] is None  # the CPU reports no device memory


def test_evaluations_and_flops_follow_the_hparams(quick):
  _, _, _, results = quick
  methods = results["methods"]
  assert methods["smoothgrad"]["evaluations_per_map"] == 2
  assert methods["integrated_gradients"]["evaluations_per_map"] == 4
  # Four gradients cost about twice two (XLA's count, not a timing).
  ratio = (methods["integrated_gradients"]["flops_per_map"] /
           methods["smoothgrad"]["flops_per_map"])
  assert 1.6 < ratio < 2.4


def test_reference_ratio_is_against_the_loop_of_the_same_run(quick):
  _, _, _, results = quick
  repeats = results["setup"]["repeats"]
  for name, info in results["methods"].items():
    ref = info["reference"]
    rows = [r for r in results["rows"] if r["method"] == name]
    # One reference run after each timed call of each row, all summarized.
    assert ref["runs"] == sum(len(r["times"]) for r in rows)
    paired = [t for r in rows for t in r["reference_times"]]
    assert ref["steady_s"] == pytest.approx(statistics.median(paired))
    assert ref["steady_min_s"] == pytest.approx(min(paired))
    assert ref["maps_per_s"] == pytest.approx(
        results["setup"]["num_images"] / ref["steady_s"])
    assert _positive(ref["compile_s"])
    for r in rows:
      assert len(r["times"]) == len(r["reference_times"]) >= repeats
      assert r["steady_s"] == pytest.approx(statistics.median(r["times"]))
      assert r["reference_ratio"] == pytest.approx(statistics.median(
          [a / b for a, b in zip(r["reference_times"], r["times"])]))
      assert r["reference_ratio_min"] == pytest.approx(
          min(r["reference_times"]) / min(r["times"]))
      assert r["corrected_maps_per_s"] == pytest.approx(
          r["reference_ratio"] * ref["maps_per_s"])
  # The loop computed the same maps as ours (noise aside).
  assert results["methods"]["smoothgrad"]["reference"][
      "max_relative_difference"] is None
  assert results["methods"]["integrated_gradients"]["reference"][
      "max_relative_difference"] < 1e-4


def test_reference_ratios_of_paired_times():
  ratios = benchmark.reference_ratios([1.0, 2.0, 4.0], [3.0, 2.0, 2.0])
  assert ratios == {"reference_ratio": 1.0, "reference_ratio_min": 2.0}
  assert benchmark.reference_ratios([1.0], []) == {
      "reference_ratio": None, "reference_ratio_min": None}


def test_best_recorded_is_the_fastest_row(quick):
  _, _, _, results = quick
  assert results["best"] == {**benchmark.best_settings(results["rows"]),
                             "backend": "cpu"}
  table = benchmark.format_table(results)
  assert "best overall on cpu" in table and "reference" in table


def _row(method, strategy, batch_size, maps_per_s, corrected=None):
  return dict(method=method, strategy=strategy, batch_size=batch_size,
              maps_per_s=maps_per_s, corrected_maps_per_s=corrected)


def test_best_settings_picks_the_fastest_measured_row():
  rows = [
      _row("smoothgrad", "dispatch", 1, 10.0),
      _row("smoothgrad", "scan", 4, 30.0),
      _row("smoothgrad", "vectorized", None, 20.0),
      _row("gradient", "dispatch", 1, 100.0),
      _row("gradient", "scan", 4, 50.0),
      _row("gradient", "vectorized", None, 200.0),
      _row("gradient", "scan", 16, 400.0),   # fastest, but not for smoothgrad
      {**_row("smoothgrad", "vectorized", 64, None), "error": "OOM"},
  ]
  best = benchmark.best_settings(rows)
  assert {m: (b["strategy"], b["batch_size"], b["maps_per_s"], b["by"])
          for m, b in best["per_method"].items()} == {
              "smoothgrad": ("scan", 4, 30.0, "maps_per_s"),
              "gradient": ("scan", 16, 400.0, "maps_per_s")}
  # One map of each, for the settings measured for both: dispatch/1 takes
  # 1/10 + 1/100 s, scan/4 1/30 + 1/50 = 0.053 s, vectorized/all 0.055 s.
  assert best["overall"]["strategy"] == "scan"
  assert best["overall"]["batch_size"] == 4
  assert best["overall"]["seconds"] == pytest.approx(1 / 30 + 1 / 50)


def test_best_settings_corrects_for_load_with_the_paired_reference():
  # Row 2 ran while the machine was busy: fewer maps/s, but against the
  # reference loop run back to back it is the faster setting.
  rows = [_row("ig", "dispatch", 1, 5.0, 5.5),
          _row("ig", "dispatch", 4, 4.0, 6.5),
          _row("ig", "scan", 4, 6.0, 4.5),
          _row("occlusion", "dispatch", 1, 2.0, None),  # no reference
          _row("occlusion", "dispatch", 4, 3.0, 2.0),
          _row("occlusion", "scan", 4, 1.0, 9.0)]
  best = benchmark.best_settings(rows)
  assert best["per_method"]["ig"]["batch_size"] == 4
  assert best["per_method"]["ig"]["by"] == "corrected_maps_per_s"
  assert best["per_method"]["occlusion"]["strategy"] == "dispatch"
  assert best["per_method"]["occlusion"]["by"] == "maps_per_s"
  assert best["overall"] == {"strategy": "dispatch", "batch_size": 4,
                             "seconds": pytest.approx(1 / 6.5 + 1 / 3.0)}
  assert benchmark.best_settings([])["overall"] is None


@pytest.mark.parametrize("key, value, message", [
    ("methods", ("gradient", "nope"), "config.methods: unknown method 'nope'"),
    ("benchmark.strategies", ("threads",), "config.benchmark.strategies"),
    ("benchmark.batch_sizes", (0,), "config.benchmark.batch_sizes: 0"),
])
def test_bad_benchmark_settings_fail_before_measuring(tmp_path, key, value,
                                                      message):
  config = _quick_config()
  node = config
  *parents, leaf = key.split(".")
  for part in parents:
    node = node[part]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    benchmark.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "benchmark.json")


def test_presets_validate():
  for preset in ("gpu", "quick"):
    main_lib.validate(config_lib.load_file(CONFIG, preset))
  with pytest.raises(ValueError, match="unknown preset 'bogus'"):
    config_lib.load_file(CONFIG, "bogus")
