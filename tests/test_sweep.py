"""Sweeps end to end: 4 real jobs on submitit's local executor, one killed and
resubmitted alone, and the aggregate equal to the same runs made directly.

The jobs are the cheapest real runs: ``configs/localization.py:quick`` with
one method and one control on 4 images, the model read from an ``.npz``
(nothing trained). Every process shares one JAX compilation cache, warmed by
the direct runs, so a job costs its imports and a few small programs.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import results
from saliency_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = (0, 1, 2, 3)
KILLED = "seed=2"
FIRST_PART = "localization-gradient"  # a job is killed once this part is written

SWEEP_CONFIG = '''
"""The test's sweep: configs/localization.py:quick, cut down, over 4 seeds."""
from saliency_jax import config as config_lib


def get_config(arg=None):
  c = config_lib.load_file({localization!r}, "quick")
  c.update(data_dir={data_dir!r}, model_weights={weights!r}, methods=("gradient",),
           controls=("random",), localization=("auprc",), num_images=4,
           bootstrap_resamples=20)
  c.report.example_images = 1
  c.synthetic.update(num_train=16, num_validation=8, num_test=16)
  return c


def sweep(arg=None):
  for seed in {seeds!r}:
    yield {{"seed": seed}}
'''

# The same settings run directly, one main.run per job, in one process (which
# also warms the compilation cache for the jobs).
DIRECT = '''
import sys
import jax
from flax import nnx
from saliency_jax import config as config_lib, data, main, models, sweep
from saliency_jax.models import weights

path, weights_path, direct = sys.argv[1:4]
model = models.create("small_cnn", num_classes=2, in_channels=1, width=0.125,
                      rngs=nnx.Rngs(params=jax.random.key(0)))
model.eval()
weights.save_npz(weights_path, model, name="small_cnn", width=0.125, in_channels=1)
config = config_lib.load_file(path)
data.build_name(config)
jobs = sweep.expand(config, sweep.declared(path))
sweep.record(direct, config, jobs, {"config_file": path, "preset": None})
for job in jobs:
  main.run(job.config, f"{direct}/{job.name}")
'''


def _files(workdir):
  """path -> (mtime_ns, size) of every file under ``workdir``."""
  out = {}
  for folder, _, names in os.walk(workdir):
    for name in names:
      stat = os.stat(os.path.join(folder, name))
      out[os.path.join(folder, name)] = (stat.st_mtime_ns, stat.st_size)
  return out


def _wait_for(condition, what, timeout_s=300):
  start = time.monotonic()
  while not condition():
    if time.monotonic() - start > timeout_s:
      raise TimeoutError(what)
    time.sleep(0.02)


def _aggregate(sweep_dir, **overrides):
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "aggregate.py"))
  config.update(sweep_dir=str(sweep_dir), **overrides)
  return config


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """Direct runs, then the sweep: 4 jobs, one killed, resubmitted; what was seen."""
  tmp = tmp_path_factory.mktemp("sweep")
  seen = {"tmp": tmp}
  with pytest.MonkeyPatch.context() as env:
    env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp / "jax_cache"))
    env.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    path = tmp / "sweep_config.py"
    path.write_text(SWEEP_CONFIG.format(
        localization=os.path.join(config_lib.CONFIGS_DIR, "localization.py"),
        data_dir=str(tmp / "data"), weights=str(tmp / "model.npz"), seeds=SEEDS))
    subprocess.run([sys.executable, "-c", DIRECT, str(path), str(tmp / "model.npz"),
                    str(tmp / "direct")], check=True, cwd=ROOT, timeout=600,
                   capture_output=True)
    config = config_lib.load_file(str(path))
    sweep_dir = tmp / "swept"
    seen.update(path=str(path), config=config, sweep_dir=sweep_dir)

    # 4 jobs at once; one killed once its first part is written.
    jobs = sweep.expand(config, sweep.declared(str(path)))
    sweep.record(str(sweep_dir), config, jobs, {"config_file": str(path)})
    submitted = sweep.submit(str(sweep_dir), jobs, kind="local")
    killed = sweep_dir / KILLED
    _wait_for(lambda: os.path.exists(results.manifest_path(str(killed), FIRST_PART)),
              f"{KILLED} never wrote its first part")
    seen["killed_before_summary"] = not (killed / "summary.json").exists()
    pid = int((killed / ".lock").read_text())
    os.kill(pid, signal.SIGKILL)
    seen["ended"] = sweep.wait(str(sweep_dir), submitted)
    seen["states"] = {job.name: state for job, state in sweep.states(str(sweep_dir))}
    seen["status"] = sweep.status_text(str(sweep_dir))
    with pytest.raises(errors.ConfigError) as refused:
      main_lib.run(_aggregate(sweep_dir), None)
    seen["unfinished_aggregate_error"] = str(refused.value)

    # The same sweep again: only the killed job is submitted; it resumes.
    before = {job.name: _files(sweep_dir / job.name) for job in jobs}
    seen["before"] = before
    seen["resubmitted"] = sweep.launch(config, str(path), None, str(sweep_dir),
                                       resubmit=True,
                                       options=sweep.Options(parallel=2))
    seen["after"] = {job.name: _files(sweep_dir / job.name) for job in jobs}
    seen["final_states"] = {job.name: state
                            for job, state in sweep.states(str(sweep_dir))}
    seen["status_cli"] = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "sweep.py"),
         f"--sweep_dir={sweep_dir}", "--status"], capture_output=True, text=True,
        cwd=ROOT, timeout=300)
    yield seen


def test_a_killed_job_shows_as_unfinished(swept):
  assert swept["killed_before_summary"]
  states = swept["states"]
  assert states[KILLED].state == sweep.FAILED, states[KILLED]
  assert states[KILLED].detail.startswith("no results.csv; log "), states[KILLED]
  assert swept["ended"][KILLED].state == sweep.FAILED
  for name in (f"seed={s}" for s in SEEDS):
    if name != KILLED:
      assert states[name] == sweep.State(sweep.FINISHED), (name, states[name])
  assert "4 jobs: 3 finished, 1 failed" in swept["status"]
  assert KILLED in swept["unfinished_aggregate_error"]
  assert "1 of 4 jobs are not finished" in swept["unfinished_aggregate_error"]


def test_resubmission_runs_only_the_killed_job_and_resumes_it(swept):
  assert set(swept["resubmitted"]) == {KILLED}
  assert all(s.state == sweep.FINISHED for s in swept["final_states"].values())
  before, after = swept["before"], swept["after"]
  for name in before:
    if name != KILLED:
      assert after[name] == before[name], name  # not a file touched
  part = results.manifest_path(str(swept["sweep_dir"] / KILLED), FIRST_PART)
  assert after[KILLED][part] == before[KILLED][part]  # verified, not recomputed
  assert len(after[KILLED]) > len(before[KILLED])


def test_status_command_lists_every_job(swept):
  result = swept["status_cli"]
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  for seed in SEEDS:
    assert any(l.startswith(f"seed={seed} ") and "finished" in l for l in lines), lines
  assert lines[-1] == "4 jobs: 4 finished"


def test_aggregate_equals_the_same_settings_run_directly(swept):
  tmp = swept["tmp"]
  summaries = {}
  for name, sweep_dir in (("swept", swept["sweep_dir"]), ("direct", tmp / "direct")):
    summaries[name] = main_lib.run(_aggregate(sweep_dir), str(tmp / f"aggregate_{name}"))
  assert summaries["swept"]["aggregates"] == summaries["direct"]["aggregates"]
  assert summaries["swept"]["verdicts"] == summaries["direct"]["verdicts"]
  merged = {n: (tmp / f"aggregate_{n}" / "results.csv").read_text() for n in summaries}
  assert merged["swept"] == merged["direct"]
  # And the numbers are those of the direct runs' own results.csv.
  per_seed = []
  for seed in SEEDS:
    rows = results.read_rows(str(tmp / "direct" / f"seed={seed}" / "results.csv"))
    per_seed.append(np.mean(results.values(rows, method="gradient", metric="auprc")))
  row = next(a for a in summaries["direct"]["aggregates"]
             if (a["method"], a["metric"]) == ("gradient", "auprc"))
  assert row["n"] == len(SEEDS)
  np.testing.assert_allclose(row["mean"], np.mean(per_seed), rtol=1e-12)
  np.testing.assert_allclose(row["sd"], np.std(per_seed, ddof=1), rtol=1e-12)
  assert row["low"] <= row["mean"] <= row["high"]
  report = (tmp / "aggregate_swept" / "report.md").read_text()
  assert "| `gradient` |" in report and "figures/" in report
  assert os.listdir(tmp / "aggregate_swept" / "figures")


def test_another_sweep_into_the_same_folder_is_refused(swept):
  other = config_lib.load_file(swept["path"])
  other.num_images = 5
  with pytest.raises(errors.WorkdirError, match=r"holds another sweep \(config\.num_images\)"):
    sweep.launch(other, swept["path"], None, str(swept["sweep_dir"]))


def test_a_bad_override_fails_before_anything_is_written(tmp_path, swept):
  path = tmp_path / "bad_sweep.py"
  path.write_text(open(swept["path"]).read().replace(
      'yield {"seed": seed}', 'yield {"seed": seed} if seed < 2 else {"sede": seed}'))
  config = config_lib.load_file(str(path))
  sweep_dir = tmp_path / "never"
  with pytest.raises(errors.ConfigError,
                     match=r"^sweep job sede=2: unknown key config\.sede; config has keys"):
    sweep.launch(config, str(path), None, str(sweep_dir))
  assert not sweep_dir.exists()


def test_status_of_a_folder_without_a_sweep_is_one_error_line(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "sweep.py"),
       f"--sweep_dir={tmp_path}", "--status"], capture_output=True, text=True, cwd=ROOT,
      timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: --sweep_dir={tmp_path}: no sweep.json there (launch the sweep first: "
      f"python launch/sweep.py --config=... --sweep_dir={tmp_path})"]


# ---------------------------------------------------------------- pieces ---

def test_job_names_come_from_the_overrides():
  assert sweep.job_name({}) == "base"
  assert sweep.job_name({"seed": 3}) == "seed=3"
  assert sweep.job_name({"model": "densenet121", "width": 0.25}) == (
      "model=densenet121,width=0.25")
  assert sweep.job_name({"methods": ("gradient", "gradcam")}) == "methods=gradient+gradcam"
  assert sweep.job_name({"manual_dir": "/data/x y"}) == "manual_dir=_data_x_y"
  long = sweep.job_name({"methods": tuple(f"m{i}" for i in range(60))})
  assert len(long) == 100 and long != sweep.job_name(
      {"methods": tuple(f"m{i}" for i in range(61))})


def test_overrides_set_nested_keys_on_a_copy():
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "cascade.py"), "quick")
  job = sweep.with_overrides(config, {"train.randomize_labels": True, "seed": 4})
  assert job.train.randomize_labels and job.seed == 4
  assert not config.train.randomize_labels and config.seed == 0
  with pytest.raises(errors.ConfigError, match=r"^sweep job j: config\.seed='x': "):
    sweep.with_overrides(config, {"seed": "x"}, "j")


def test_duplicate_jobs_are_an_error():
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "cascade.py"), "quick")
  with pytest.raises(errors.ConfigError, match="sweep jobs 0 and 1 are both named 'seed=1'"):
    sweep.expand(config, [{"seed": 1}, {"seed": 1}])


def test_a_different_sweep_record_names_what_differs(tmp_path):
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "cascade.py"), "quick")
  jobs = [sweep.Job(f"seed={s}", {"seed": s}) for s in range(2)]
  sweep.record(str(tmp_path), config, jobs, {})
  assert sweep.record(str(tmp_path), config, jobs, {"moved": True})["jobs"]  # same: fine
  with pytest.raises(errors.WorkdirError, match="jobs added: seed=2"):
    sweep.record(str(tmp_path), config, jobs + [sweep.Job("seed=2", {"seed": 2})], {})
  config.width = 0.5
  with pytest.raises(errors.WorkdirError, match=r"another sweep \(config\.width\)"):
    sweep.record(str(tmp_path), config, jobs, {})
  assert json.loads((tmp_path / sweep.SWEEP_FILE).read_text())["config"]["width"] == 0.125


def test_a_held_lock_reads_as_running(tmp_path):
  from saliency_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  assert sweep.job_state(str(tmp_path / "absent")) == sweep.State(sweep.NOT_STARTED)
  with workdir_lib.lock(str(tmp_path)):
    assert sweep.job_state(str(tmp_path)) == sweep.State(sweep.RUNNING,
                                                         f"PID {os.getpid()}")
  assert sweep.job_state(str(tmp_path)) == sweep.State(sweep.NOT_STARTED)


def test_the_local_queue_runs_parallel_jobs_at_a_time(monkeypatch, tmp_path):
  running, submitted, peak = set(), [], [0]

  class Handle:  # ends at its third poll
    def __init__(self, name):
      self.name, self.polls = name, 0

    def done(self):
      self.polls += 1
      if self.polls >= 3:
        running.discard(self.name)
      return self.polls >= 3

  def submit(sweep_dir, jobs, *, kind, options):
    del sweep_dir, kind, options
    for job in jobs:
      running.add(job.name)
      submitted.append(job.name)
      peak[0] = max(peak[0], len(running))
    return [sweep.Submission(job, Handle(job.name), 0.0) for job in jobs]

  monkeypatch.setattr(sweep, "submit", submit)
  monkeypatch.setattr(sweep, "job_state", lambda workdir: sweep.State(sweep.FINISHED))
  monkeypatch.setattr(sweep.time, "sleep", lambda seconds: None)
  jobs = [sweep.Job(f"seed={s}", {"seed": s}) for s in range(5)]
  ended = sweep.run_jobs(str(tmp_path), jobs, options=sweep.Options(parallel=2))
  assert submitted == [job.name for job in jobs]
  assert peak[0] == 2 and not running
  assert set(ended) == set(submitted)
