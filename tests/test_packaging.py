"""The installed package: configs found by name, the default workdir, the wheel.

The fast tests check :func:`config.resolve_config_path` (each spelling of a
packaged config, the ``:preset`` kept, a file where the command runs wins,
an unknown name listed against the packaged ones) and the default workdir.
The slow one builds the wheel offline, installs it (non-editable) into a
folder that shadows the checkout and runs the quick cascade, cut down, from
an empty folder without ``--workdir``, then again through the console script:
the second run resumes.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(f.removesuffix(".py") for f in os.listdir(
    os.path.join(ROOT, "saliency_jax", "configs")) if f.endswith(".py") and f != "__init__.py")
CASCADE = os.path.join(config_lib.CONFIGS_DIR, "cascade.py")


# -------------------------------------------------------------- resolution ---

def test_packaged_configs_are_the_checkouts_config_files():
  assert config_lib.packaged_configs() == CONFIGS
  assert {"cascade", "localization", "train", "aggregate"} <= set(CONFIGS)


@pytest.mark.parametrize("spec, expected", [
    ("cascade", CASCADE),
    ("cascade.py", CASCADE),
    ("configs/cascade.py", CASCADE),
    ("configs/cascade", CASCADE),
    ("cascade:quick", CASCADE + ":quick"),
    ("cascade.py:quick", CASCADE + ":quick"),
    ("configs/cascade.py:paper", CASCADE + ":paper"),
])
def test_each_spelling_names_the_packaged_config(tmp_path, monkeypatch, spec, expected):
  monkeypatch.chdir(tmp_path)  # nothing here: the packaged file
  assert config_lib.resolve_config_path(spec) == expected


@pytest.mark.parametrize("spec", ["cascade.py:quick", "configs/cascade.py:quick",
                                  "mine.py", "sub/mine.py:quick"])
def test_a_file_where_the_command_runs_wins(tmp_path, monkeypatch, spec):
  monkeypatch.chdir(tmp_path)
  path = tmp_path / spec.partition(":")[0]
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("from saliency_jax import config as config_lib\n\n"
                  "def get_config(arg=None):\n"
                  "  c = config_lib.base_config()\n"
                  "  c.seed = 11 if arg == 'quick' else 10\n"
                  "  return c\n")
  assert config_lib.resolve_config_path(spec) == spec
  file, _, preset = spec.partition(":")
  assert config_lib.load_file(file, preset or None).seed == (11 if preset else 10)


def test_unknown_name_is_one_error_listing_the_packaged_configs(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  for spec in ("cascad", "configs/cascad.py:quick", "nowhere/cascade.py"):
    path = spec.partition(":")[0]
    with pytest.raises(errors.ConfigError) as e:
      config_lib.resolve_config_path(spec)
    assert str(e.value) == (f"{path}: no such file, nor a packaged config; expected a "
                            f"config file's path or one of {', '.join(CONFIGS)}")


def test_load_file_by_name_is_the_packaged_file(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  by_name = config_lib.load_file("cascade", "quick")
  assert by_name.to_dict() == config_lib.load_file(CASCADE, "quick").to_dict()
  assert by_name.methods == ("gradient", "gradcam", "smoothgrad")


def test_command_line_config_is_resolved_before_parsing(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  resolved = main_lib._resolved_argv  # pylint: disable=protected-access
  argv = ["prog", "--config=cascade:quick", "--config.seed=3", "--workdir=w"]
  assert resolved(argv) == [
      "prog", f"--config={CASCADE}:quick", "--config.seed=3", "--workdir=w"]
  assert resolved(["prog", "--config", "configs/cascade.py"]) == [
      "prog", "--config", CASCADE]
  with pytest.raises(errors.ConfigError, match="cascad: no such file"):
    resolved(["prog", "--config=cascad"])


@pytest.mark.parametrize("spec, name", [
    ("configs/cascade.py:quick", "cascade-quick"), (CASCADE + ":quick", "cascade-quick"),
    ("cascade", "cascade"), ("cascade.py", "cascade"), ("sub/mine.py:paper", "mine-paper")])
def test_run_name(spec, name):
  assert config_lib.run_name(spec) == name


# --------------------------------------------------------- default workdir ---

_CALLS = []


def _record(config, workdir):
  _CALLS.append(workdir)
  return "done"


def test_default_workdir_is_runs_name_and_printed(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setitem(config_lib.EXPERIMENTS, "train", f"{__name__}:_record")
  _CALLS.clear()
  assert main_lib.run(config_lib.base_config(), None, name="train-quick") == "done"
  assert _CALLS == [os.path.join("runs", "train-quick")]
  assert (tmp_path / "runs" / "train-quick" / "config.json").exists()
  assert capsys.readouterr().out.splitlines() == [
      "workdir: runs/train-quick (default; --workdir=DIR to choose)"]
  with pytest.raises(errors.WorkdirError, match="--workdir is required"):
    main_lib.run(config_lib.base_config(), None)  # no name: no default


def test_aggregate_keeps_its_own_default_workdir(tmp_path):
  config = config_lib.load_file("aggregate")
  config.sweep_dir = str(tmp_path / "sweep")
  default = main_lib._default_workdir  # pylint: disable=protected-access
  assert default(config, "aggregate") == os.path.join(str(tmp_path / "sweep"),
                                                      sweep.AGGREGATE)


def test_sweep_records_a_config_path_that_loads_from_anywhere(tmp_path, monkeypatch):
  # Launched by name; nothing is run (run_jobs is replaced).
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sweep, "run_jobs", lambda *args, **kwargs: {})
  config = config_lib.load_file("cascade", "quick")
  assert sweep.declared("cascade", "quick") == [{"seed": s} for s in range(5)]
  sweep.launch(config, "configs/cascade.py", "quick", str(tmp_path / "sweep"),
               build_data=False)
  source = sweep.read(str(tmp_path / "sweep"))["source"]
  assert source == {"config_file": CASCADE, "preset": "quick"}
  monkeypatch.chdir(tmp_path / "sweep")
  assert config_lib.load_file(source["config_file"], "quick").to_dict() == config.to_dict()


# ---------------------------------------------------- the wheel, installed ---

# The quick cascade cut down to seconds of work: 2 training steps on 16
# phantoms, one method on 2 images, one similarity and one localization metric.
TINY = ["--config.synthetic.num_train=16", "--config.synthetic.num_validation=8",
        "--config.synthetic.num_test=16", "--config.image_size=32",
        "--config.train.steps=2", "--config.train.warmup_steps=1",
        "--config.train.log_every=1", "--config.train.eval_every=2",
        "--config.train.checkpoint_every=2", "--config.methods=('gradient',)",
        "--config.num_images=2", "--config.similarity=('spearman',)",
        "--config.verdict_metric=spearman", "--config.localization=('auprc',)",
        "--config.baseline_pairs=2", "--config.bootstrap_resamples=20",
        "--config.report.example_images=1"]


def _sha256(path) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """The wheel built offline from a copy of the checkout's sources."""
  src = tmp_path_factory.mktemp("src")
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    (src / name).write_bytes(open(os.path.join(ROOT, name), "rb").read())
  shutil.copytree(os.path.join(ROOT, "saliency_jax"), src / "saliency_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  dist = tmp_path_factory.mktemp("dist")
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                  "--no-build-isolation", "-w", str(dist), str(src)],
                 check=True, capture_output=True, text=True, timeout=300)
  (path,) = dist.glob("saliency_jax-*.whl")
  return path


def test_wheel_holds_the_configs_marker_license_and_console_script(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    for name in CONFIGS + ["__init__"]:
      assert f"saliency_jax/configs/{name}.py" in names, name
    assert "saliency_jax/py.typed" in names
    assert (z.read(f"{info}/licenses/LICENSE")
            == open(os.path.join(ROOT, "LICENSE"), "rb").read())
    entry_points = z.read(f"{info}/entry_points.txt").decode()
    metadata = z.read(f"{info}/METADATA").decode()
  assert "[console_scripts]\nsaliency-jax = saliency_jax.main:entry_point" in entry_points
  assert "License-Expression: Apache-2.0" in metadata.splitlines()
  for extra in ("cuda12", "tpu"):
    assert f'Requires-Dist: jax[{extra}]; extra == "{extra}"' in metadata.splitlines()
  # The canonical Apache 2.0 text (apache.org/licenses/LICENSE-2.0.txt), unmodified.
  assert _sha256(os.path.join(ROOT, "LICENSE")) == (
      "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30")


def test_installed_wheel_runs_from_an_empty_folder_and_resumes(wheel, tmp_path):
  target = tmp_path / "site"  # the wheel, installed; first on PYTHONPATH
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                  f"--target={target}", str(wheel)], check=True, capture_output=True,
                 timeout=300)
  env = dict(os.environ, PYTHONPATH=str(target), JAX_PLATFORMS="cpu")
  here = tmp_path / "empty"
  here.mkdir()
  def run(*args, **kwargs):
    return subprocess.run(list(args), cwd=here, env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)

  where = run(sys.executable, "-c", "import saliency_jax; from saliency_jax import config;"
              "print(saliency_jax.__file__); print(config.CONFIGS_DIR)")
  assert where.stdout.splitlines() == [str(target / "saliency_jax" / "__init__.py"),
                                       str(target / "saliency_jax" / "configs")], where.stderr
  script = target / "bin" / "saliency-jax"
  usage = run(str(script), "--help")  # absl exits 1 after the help
  assert "--config: Experiment config" in usage.stdout, usage
  assert "--workdir: Directory for results; default ./runs/NAME" in usage.stdout, usage

  data = f"--config.data_dir={tmp_path / 'data'}"
  first = run(sys.executable, "-m", "saliency_jax.main", "--config=configs/cascade.py:quick",
              data, *TINY)
  assert first.returncode == 0, first.stderr[-3000:]
  assert ("workdir: runs/cascade-quick (default; --workdir=DIR to choose)"
          in first.stdout.splitlines()), first.stdout
  workdir = here / "runs" / "cascade-quick"
  assert sorted(os.listdir(here)) == ["runs"] and os.listdir(here / "runs") == ["cascade-quick"]
  for name in ("results.csv", "summary.json", "report.md"):
    assert (workdir / name).exists(), name
  assert json.load(open(workdir / "config.json"))["image_size"] == 32
  assert json.load(open(workdir / "summary.json"))["num_images"] == 2
  # The trained model and the finished parts, as the first run left them.
  kept = {os.path.join(d, f): (os.stat(os.path.join(d, f)).st_mtime_ns,
                               _sha256(os.path.join(d, f)))
          for sub in ("models", "parts") for d, _, files in os.walk(workdir / sub)
          for f in files}
  assert any("models" in p for p in kept) and any("parts" in p for p in kept)
  results = (workdir / "results.csv").read_text()

  # The same run through the console script, by bare name: it resumes.
  second = run(str(script), "--config=cascade:quick", data, *TINY)
  assert second.returncode == 0, second.stderr[-3000:]
  assert ("workdir: runs/cascade-quick (default; --workdir=DIR to choose)"
          in second.stdout.splitlines()), second.stdout
  assert {p: (os.stat(p).st_mtime_ns, _sha256(p)) for p in kept} == kept
  assert not [f for d, _, fs in os.walk(workdir / "models") for f in fs
              if os.path.join(d, f) not in kept]  # nothing trained again
  assert (workdir / "results.csv").read_text() == results
