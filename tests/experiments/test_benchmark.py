"""The benchmark: structure of its results, never how fast anything is."""

from __future__ import annotations

import json
import math
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import memory
from saliency_jax import models
from saliency_jax import saliency
from saliency_jax.experiments import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIG = os.path.join(config_lib.CONFIGS_DIR, "benchmark.py")


def _quick_config(preset="quick"):
  return config_lib.load_file(CONFIG, preset)


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
  assert set(results) >= {"environment", "setup", "matmul", "settings", "rows",
                          "default_strategy_in_effect"}
  assert results["environment"]["backend"] == "cpu"
  assert list(results["matmul"]) == ["float32"]
  assert _positive(results["matmul"]["float32"]["flops_per_s"])
  assert results["setup"]["methods"] == list(config.methods)
  # No settings listed: config's model, width and size in float32.
  (info,) = results["settings"]
  assert (info["model"], info["width"], info["image_size"], info["dtype"]) == (
      config.model, config.width, config.image_size, "float32")
  assert set(info["methods"]) == set(config.methods)
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
    assert r["chosen_batch_size"] == r["batch_size"]  # none was 'auto'
    info = results["settings"][0]["methods"][r["method"]]
    assert r["maps_per_s"] == pytest.approx(config.num_images / r["steady_s"])
    assert r["evaluations_per_s"] == pytest.approx(
        r["maps_per_s"] * info["evaluations_per_map"])
    assert r["flops_per_s"] == pytest.approx(
        r["maps_per_s"] * info["flops_per_map"])
    assert r["peak_bytes"] is None  # the CPU reports no device memory
    assert r["program_bytes"] is None  # and memory_analysis is off here


def test_evaluations_and_flops_follow_the_hparams(quick):
  _, _, _, results = quick
  methods = results["settings"][0]["methods"]
  assert methods["smoothgrad"]["evaluations_per_map"] == 2
  assert methods["integrated_gradients"]["evaluations_per_map"] == 4
  # Four gradients cost about twice two (XLA's count, not a timing), counted
  # from the program lowered for the CPU, without compiling it.
  assert {m["flops_source"] for m in methods.values()} == {"lowered"}
  ratio = (methods["integrated_gradients"]["flops_per_map"] /
           methods["smoothgrad"]["flops_per_map"])
  assert 1.6 < ratio < 2.4


def test_reference_ratio_is_against_the_loop_of_the_same_run(quick):
  _, _, _, results = quick
  repeats = results["setup"]["repeats"]
  methods = results["settings"][0]["methods"]
  for name, info in methods.items():
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
  assert methods["smoothgrad"]["reference"]["max_relative_difference"] is None
  assert methods["integrated_gradients"]["reference"][
      "max_relative_difference"] < 1e-4


def test_reference_ratios_of_paired_times():
  ratios = benchmark.reference_ratios([1.0, 2.0, 4.0], [3.0, 2.0, 2.0])
  assert ratios == {"reference_ratio": 1.0, "reference_ratio_min": 2.0}
  assert benchmark.reference_ratios([1.0], []) == {
      "reference_ratio": None, "reference_ratio_min": None}


def test_best_recorded_is_the_fastest_row(quick):
  _, _, _, results = quick
  assert results["settings"][0]["best"] == {
      **benchmark.best_settings(results["rows"]), "backend": "cpu"}
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
  for preset in ("gpu", "quick", "paper", "paper_quick", "metrics"):
    main_lib.validate(config_lib.load_file(CONFIG, preset))
  with pytest.raises(ValueError, match="unknown preset 'bogus'"):
    config_lib.load_file(CONFIG, "bogus")


# --- several settings, bfloat16, batch_size 'auto', the cascade study ------

# What the stand-in for the memory search answers: not what the rows asked
# for ('vectorized', 'auto'), so the rows show they ran the choice.
CHOSEN = ("scan", 1)


@pytest.fixture(scope="module")
def paper_quick(tmp_path_factory):
  """One ``:paper_quick`` run: 2 settings (float32, bfloat16) x gradient and
  XRAI, batch size 'auto'. The memory search is stood in for (its own
  tests are saliency's; it compiles several programs per row); it refuses
  XRAI in float32 as a device too small would, to show a failed row."""
  workdir = str(tmp_path_factory.mktemp("benchmark_paper_quick"))
  config = _quick_config("paper_quick")
  # One more compile per row: tested once, below.
  config.benchmark.memory_analysis = False
  calls = []

  def choose(explainee, images, *, method, hparams, strategy, key=None,
             per_image=None):
    calls.append((method, str(images.dtype), strategy,
                  None if per_image is None else sorted(per_image)))
    if method == "xrai" and images.dtype == jnp.float32:
      raise memory.DoesNotFitError("xrai: one evaluation at a time needs "
                                   "more than the budget")
    return CHOSEN

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(benchmark, "chosen_batch_size", choose)
    results = main_lib.run(config, workdir)
  return workdir, config, results, calls


def _setting(results, dtype):
  (info,) = [s for s in results["settings"] if s["dtype"] == dtype]
  return info


def test_every_setting_and_method_has_a_row(paper_quick):
  workdir, config, results, calls = paper_quick
  with open(os.path.join(workdir, "benchmark.json")) as f:
    assert json.load(f)["rows"] == results["rows"]
  names = ["small_cnn x0.125 16px float32", "small_cnn x0.125 16px bfloat16"]
  assert results["setup"]["settings"] == names
  assert [s["name"] for s in results["settings"]] == names
  assert list(results["matmul"]) == ["float32", "bfloat16"]
  assert [(r["setting"], r["method"]) for r in results["rows"]] == [
      (s, m) for s in names for m in config.methods]
  # The search was asked once per row, in the setting's dtype, with XRAI's
  # segments.
  assert calls == [("gradient", "float32", "vectorized", None),
                   ("xrai", "float32", "vectorized", ["segments"]),
                   ("gradient", "bfloat16", "vectorized", None),
                   ("xrai", "bfloat16", "vectorized", ["segments"])]
  failed, *ran = sorted(results["rows"], key=lambda r: "error" not in r)
  assert (failed["method"], failed["dtype"]) == ("xrai", "float32")
  assert failed["error"].startswith("DoesNotFitError: xrai")
  assert failed["maps_per_s"] is None and failed["chosen_batch_size"] == "auto"
  for r in ran:  # the run went on after the failed row
    assert "error" not in r
    assert (r["batch_size"], r["chosen_strategy"], r["chosen_batch_size"]) == (
        "auto", *CHOSEN)
    assert r["choose_s"] >= 0
    assert r["maps_per_s"] == pytest.approx(config.num_images / r["steady_s"])
    # FLOP/s against the matmul of the row's own dtype.
    assert r["peak_fraction"] == pytest.approx(
        r["flops_per_s"] / results["matmul"][r["dtype"]]["flops_per_s"])
    assert r["peak_bytes"] is None  # the CPU reports no device memory
  table = benchmark.format_table(results)
  assert "auto:1" in table and "failed: DoesNotFitError" in table


def test_reference_ratio_is_per_image(paper_quick):
  # The loop explains the first image only, our calls both images.
  _, config, results, _ = paper_quick
  assert config.benchmark.reference_images == 1 < config.num_images
  for r in results["rows"]:
    if r["method"] == "gradient":
      assert r["reference_ratio"] == pytest.approx(statistics.median(
          [ref / (t / config.num_images)
           for ref, t in zip(r["reference_times"], r["times"])]))
  ref = _setting(results, "float32")["methods"]["gradient"]["reference"]
  assert ref["images"] == 1
  assert ref["maps_per_s"] == pytest.approx(1 / ref["steady_s"])


def test_cascade_study_is_stages_times_images_over_the_rates(paper_quick):
  _, config, results, _ = paper_quick
  images = config.benchmark.cascade_images
  complete = _setting(results, "bfloat16")
  stages = complete["cascade_stages"]
  assert stages == 2 + 1  # the trained model and 2 randomized blocks
  rates = {m: b["maps_per_s"]
           for m, b in complete["best"]["per_method"].items()}
  assert set(rates) == {"gradient", "xrai"}
  segments = images * complete["segments_s_per_image"]
  assert _positive(segments)
  assert complete["cascade_study_basis"].startswith("rates: 3 stages x 10 images")
  assert "XRAI's segments once per image" in complete["cascade_study_basis"]
  assert _positive(complete["cascade_study_seconds"])
  assert complete["cascade_study_seconds"] == pytest.approx(
      sum(stages * images / rate for rate in rates.values()) + segments)
  # The reference loop: gradient only (none for XRAI).
  ref = complete["methods"]["gradient"]["reference"]["maps_per_s"]
  assert complete["reference_cascade_study_methods"] == ["gradient"]
  assert complete["reference_cascade_study_seconds"] == pytest.approx(
      stages * images / ref)
  assert complete["cascade_study_speedup"] == pytest.approx(
      rates["gradient"] / ref)
  # A method without a row that ran leaves the study without a time.
  partial = _setting(results, "float32")
  assert partial["cascade_study_missing"] == ["xrai"]
  assert partial["cascade_study_seconds"] is None
  assert "one cascade study (3 stages x 10 images x 2 methods)" in (
      benchmark.format_table(results))


def test_cascade_study_of_known_rates():
  # 12 stages x 100 images: a at 2 maps/s (reference loop 1 map/s), b at 4,
  # XRAI at 1 plus 0.5 s of segments per image; neither has a reference loop.
  info = {"cascade_stages": 12, "segments_s_per_image": 0.5,
          "best": {"per_method": {"a": {"maps_per_s": 2.0},
                                  "b": {"maps_per_s": 4.0},
                                  "xrai": {"maps_per_s": 1.0}}},
          "methods": {"a": {"reference": {"maps_per_s": 1.0}},
                      "b": {"reference": None}, "xrai": {"reference": None}}}
  study = benchmark.cascade_study(info, 100)
  assert study["cascade_study_method_seconds"] == {"a": 600.0, "b": 300.0,
                                                   "xrai": 1200.0}
  assert study["cascade_study_segments_seconds"] == 50.0
  assert study["cascade_study_seconds"] == 2150.0
  assert study["reference_cascade_study_seconds"] == 1200.0
  assert study["reference_cascade_study_methods"] == ["a"]
  assert study["cascade_study_speedup"] == 2.0  # a: 1200 s against 600 s
  del info["best"]["per_method"]["b"]  # b's rows all failed
  study = benchmark.cascade_study(info, 100)
  assert study["cascade_study_seconds"] is None
  assert study["cascade_study_missing"] == ["b"]


def test_program_bytes_is_read_from_the_rows_program():
  # Where the device reports no memory (the CPU), memory_analysis compiles
  # the row's call once more and reads XLA's buffer assignment.
  config = _quick_config("paper_quick")
  config.num_images, config.image_size = 1, 8
  setting = benchmark.settings_of(config)[0]
  s = benchmark._setup(config, setting, False, {})  # pylint: disable=protected-access
  row = {"chosen_strategy": "vectorized", "chosen_batch_size": None}
  found = benchmark._program_bytes("gradient", s, {}, row, None)  # pylint: disable=protected-access
  assert isinstance(found, int) and found > 0


def test_bfloat16_maps_agree_with_float32(paper_quick):
  # bfloat16 keeps 8 bits of mantissa: through the small CNN a gradient keeps
  # its ranking of pixels (Spearman of |maps| 0.96 measured), not its values
  # (up to ~40% of the largest value apart).
  _, _, results, _ = paper_quick
  assert "float32_agreement" not in _setting(
      results, "float32")["methods"]["gradient"]
  methods = _setting(results, "bfloat16")["methods"]
  agreement = methods["gradient"]["float32_agreement"]
  assert agreement["against"] == "small_cnn x0.125 16px float32"
  assert agreement["spearman_abs_median"] >= 0.85
  assert agreement["spearman_abs_min"] >= 0.8
  assert agreement["max_relative_difference"] < 1.0
  assert methods["xrai"]["float32_agreement"] is None  # its float32 row failed


def test_map_agreement_of_known_maps():
  a = np.arange(8, dtype=np.float32).reshape(2, 2, 2, 1)
  assert benchmark.map_agreement(a, a) == {
      "spearman_abs_median": pytest.approx(1.0),
      "spearman_abs_min": pytest.approx(1.0), "max_relative_difference": 0.0}
  reversed_ = a[:, ::-1, ::-1]  # ranks reversed in each image
  found = benchmark.map_agreement(a, reversed_)
  assert found["spearman_abs_median"] == pytest.approx(-1.0)
  assert found["max_relative_difference"] == pytest.approx(3 / 7)
  constant = np.ones_like(a)  # no ranking: undefined, never scored
  assert benchmark.map_agreement(a, constant)["spearman_abs_median"] is None


def test_cast_changes_floating_leaves_only():
  e = saliency.Explainee(state={"w": jnp.ones((2,), jnp.float32),
                                "count": jnp.zeros((), jnp.int32)})
  cast, images = benchmark.cast(e, jnp.ones((1, 4, 4, 1)), "bfloat16")
  assert cast.state["w"].dtype == jnp.bfloat16
  assert cast.state["count"].dtype == jnp.int32
  assert images.dtype == jnp.bfloat16


def _convolutions(jaxpr):
  """Every convolution's operand dtypes, sub-jaxprs (vmap, scan, custom
  gradients) included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      yield tuple(str(v.aval.dtype) for v in eqn.invars)
    for param in eqn.params.values():
      for inner in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(inner, "jaxpr", inner)
        if hasattr(inner, "eqns"):
          yield from _convolutions(inner)


METHODS_IN_BFLOAT16 = config_lib.PAPER_METHODS + ("gradient_x_input",
                                                  "occlusion")
SMALL = dict(smoothgrad=dict(num_samples=2), smoothgrad_ig=dict(
    num_samples=2, steps=2), integrated_gradients=dict(steps=2),
             xrai=dict(steps=2), occlusion=dict(window=4, stride=4))


@pytest.mark.parametrize("method", METHODS_IN_BFLOAT16)
def test_every_method_computes_in_bfloat16(method):
  # Traced, not run (the benchmark runs gradient and XRAI in bfloat16): every
  # convolution of the method's program, forward and backward, takes
  # bfloat16 operands, so the cast model never falls back to float32.
  model = models.create("small_cnn", num_classes=2, in_channels=1,
                        width=0.125, rngs=nnx.Rngs(0))
  e, images = benchmark.cast(saliency.from_model(model),
                             jnp.ones((1, 16, 16, 1)), "bfloat16")

  def maps(e, images, targets):
    return saliency.explain(e, images, targets, method=method,
                            key=jax.random.key(0), strategy="vectorized",
                            **saliency.hparams_for("arun2021", method,
                                                   **SMALL.get(method, {})))
  closed = jax.make_jaxpr(maps)(e, images, jnp.zeros((1,), jnp.int32))
  convolutions = list(_convolutions(closed.jaxpr))
  assert convolutions and set(convolutions) == {("bfloat16", "bfloat16")}
  (out,) = closed.out_avals
  # XRAI's region values are float32; every other map stays bfloat16.
  assert out.dtype == (jnp.float32 if method == "xrai" else jnp.bfloat16)


def test_chosen_batch_size_is_the_choice_explain_makes():
  # The adapter the rows call is saliency's own 'auto' choice.
  model = models.create("small_cnn", num_classes=2, in_channels=1,
                        width=0.125, rngs=nnx.Rngs(0))
  e = saliency.from_model(model)
  images = jnp.ones((1, 8, 8, 1))
  strategy, size = benchmark.chosen_batch_size(
      e, images, method="gradient", hparams={}, strategy="vectorized")
  assert (strategy, size) == saliency.auto_batch_size(
      e, images, method="gradient", strategy="vectorized")
  assert strategy in saliency.STRATEGIES
  assert size is None or (isinstance(size, int) and size >= 1)


@pytest.mark.parametrize("settings, message", [
    (({"dtype": "float16"},),
     r"^config\.benchmark\.settings\[0\]\.dtype='float16' is not allowed"),
    (({"dtype": "bfloat16"}, {"modle": "densenet121"}),
     r"^config\.benchmark\.settings\[1\]\.modle: unknown key"),
    (({"model": "densenet121"},),
     r"^config\.benchmark\.settings\[0\]\.image_size=16 is too small: "
     r"densenet121 \(config\.benchmark\.settings\[0\]\.model\) needs at "
     "least 29 px"),
    (({"image_size": 0},),
     r"^config\.benchmark\.settings\[0\]\.image_size=0: expected a positive"),
    (({"cascade_blocks": 9},),
     r"^config\.benchmark\.settings\[0\]\.cascade_blocks=9: small_cnn has 5 "
     "blocks"),
    (({}, {"dtype": "float32"}),
     r"^config\.benchmark\.settings\[1\]: 'small_cnn x0\.125 16px float32' is "
     "listed twice"),
    (("bfloat16",), r"^config\.benchmark\.settings\[0\]='bfloat16': expected "
                    "a dict"),
])
def test_bad_settings_fail_at_validation(tmp_path, settings, message):
  config = _quick_config("paper_quick")
  config.benchmark.settings = settings
  with pytest.raises(errors.ConfigError, match=message):
    main_lib.run(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_paper_preset_is_the_papers_study():
  config = _quick_config("paper")
  settings = benchmark.settings_of(config)
  assert [(s["model"], s["width"], s["image_size"], s["dtype"])
          for s in settings] == [
              (m, 1.0, size, dtype)
              for m, size in (("inception_v3", 299), ("inception_v3", 320),
                              ("densenet121", 224))
              for dtype in ("float32", "bfloat16")]
  # Stages of one cascade study: InceptionV3 as configs/cascade.py:paper
  # (the trained model + 11 blocks), DenseNet121 every block.
  cascade = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "cascade.py"),
                                 "paper")
  stages = [1 + (s["cascade_blocks"] or len(
      benchmark._cascade_order(s["model"]))) for s in settings]  # pylint: disable=protected-access
  assert stages == [cascade.cascade.num_blocks + 1] * 4 + [11, 11]
  assert config.methods == config_lib.PAPER_METHODS
  assert config.benchmark.preset == "arun2021"
  assert not config.benchmark.hparams.to_dict()  # the paper's, unchanged
  assert config.num_images == 64 and config.benchmark.cascade_images == 100
  assert tuple(config.benchmark.batch_sizes) == ("auto",)


# --- the metrics section ----------------------------------------------------


def test_metrics_rows_are_paired_with_their_loop_and_agree(quick):
  workdir, config, _, results = quick
  m = config.benchmark.metrics
  section = results["metrics"]
  assert [r["metric"] for r in section["rows"]] == (
      list(m.localization) + list(m.faithfulness))
  assert section["setup"]["maps"] == m.maps
  for r in section["rows"]:
    for key in ("compile_s", "steady_s", "maps_per_s", "reference_maps_per_s",
                "reference_ratio", "reference_ratio_min"):
      assert _positive(r[key]), (key, r)
    assert len(r["times"]) == len(r["reference_times"]) >= m.repeats
    n = m.maps if r["kind"] == "localization" else m.faithfulness_images
    assert r["maps"] == r["reference_maps"] == n
    assert r["reference_ratio"] == pytest.approx(statistics.median(
        [a / b for a, b in zip(r["reference_times"], r["times"])]))
    # Ours computed what the NumPy / scikit-learn / SciPy loop computed.
    assert r["max_abs_difference"] is not None
    assert r["max_abs_difference"] < 1e-4, r
  with open(os.path.join(workdir, "report.md")) as f:
    report = f.read()
  assert "road_impute" in report and "per-map NumPy" in report


def test_metrics_references_are_the_definitions_on_hand_cases():
  from saliency_jax.experiments import benchmark_metrics as bm  # pylint: disable=g-import-not-at-top
  s = np.arange(16, dtype=np.float32).reshape(4, 4)
  m = np.zeros((4, 4), bool)
  m[3, 3] = m[3, 2] = m[0, 0] = True
  refs = bm.LOCALIZATION_REFERENCES
  assert refs["relevance_rank_accuracy"](s, m) == pytest.approx(2 / 3)
  assert refs["top_k_intersection"](s, m, k=4) == pytest.approx(0.5)
  assert refs["dice"](s, m) == pytest.approx(2 / 3)
  assert refs["pointing_game"](s, m, tolerance=0) == 1.0
  # Every positive above every negative but the one at 0: AUROC 26/39.
  assert refs["auroc"](s, m) == pytest.approx((2 * 13) / (3 * 13))
  assert set(refs) == set(bm.LOCALIZATION_REFERENCES)
  maps, masks = bm.localization_data(jax.random.key(0), 3, 16)
  assert maps.shape == masks.shape == (3, 16, 16)
  assert maps.min() >= 0 and maps.max() == 1 and masks.any((1, 2)).all()


def test_sparse_impute_solves_the_road_system():
  from saliency_jax.experiments import benchmark_metrics as bm  # pylint: disable=g-import-not-at-top
  from saliency_jax.metrics import faithfulness as fl  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(7, 6, 2)).astype(np.float32)
  removed = rng.uniform(size=(7, 6)) < 0.5
  removed[0, 0] = True
  got = bm.sparse_impute(x, removed)
  np.testing.assert_array_equal(got[~removed], x[~removed])
  # Each removed pixel is the weighted mean of its neighbours inside.
  for i, j in np.argwhere(removed):
    total, acc = 0.0, np.zeros(2)
    for (di, dj), w in fl.NEIGHBOURS:
      if 0 <= i + di < 7 and 0 <= j + dj < 6:
        total += w
        acc += w * got[i + di, j + dj]
    np.testing.assert_allclose(got[i, j], acc / total, atol=1e-5)


@pytest.mark.parametrize("key, value, message", [
    ("localization", ("auroc", "nope"), "metrics.localization: unknown"),
    ("faithfulness", ("road", "nope"), "metrics.faithfulness: unknown"),
    ("maps", 0, "metrics.maps: expected a positive int"),
    ("step", 1.5, r"metrics.step: expected a fraction in \(0, 1\]"),
])
def test_bad_metrics_section_fails_at_validation(key, value, message):
  config = _quick_config()
  config.benchmark.metrics[key] = value
  with pytest.raises(errors.ConfigError, match=message):
    main_lib.validate(config)


@pytest.mark.parametrize("name", ["hirescam", "scorecam", "random_cam"])
def test_cam_reference_loop_computes_the_methods_maps(name):
  model = models.create("small_cnn", num_classes=2, in_channels=1,
                        width=0.125, rngs=nnx.Rngs(0))
  e = saliency.from_model(model)
  images = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
  targets = jnp.array([0, 1], jnp.int32)
  ref = benchmark._Reference(name, e, images, targets, {}, 0)  # pylint: disable=protected-access
  assert ref.supported
  ref.warm()
  ours = saliency.explain(e, images, targets, method=name,
                          key=jax.random.key(0))
  assert ref.maps.shape == np.shape(ours)
  assert np.isfinite(ref.maps).all()
  if name != "random_cam":  # random channel weights: only finite, same shape
    np.testing.assert_allclose(ref.maps, ours, rtol=1e-4, atol=1e-5)
