"""Seeds at once: a vmapped replicate is the plain run with its seed; resume,
fallback, validation, and the repeatability experiment's replicates."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import config as config_lib
from saliency_jax import errors
from saliency_jax import main as main_lib
from saliency_jax import memory
from saliency_jax import train
from saliency_jax.experiments import repeatability

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = [0, 1, 2]
# A vmapped convolution is a grouped one, whose products XLA sums in another
# order: each step differs from the plain run's by float rounding, which
# training then amplifies as it would any other summation order (on the quick
# config, measured on a CPU: 6e-8 after 1 step, 2e-4 after 10, 2.5e-3 after
# 20). The 8 steps here end within 2.4e-7 (measured) on parameters of order
# 0.1; 1e-5 is allowed.
ATOL = 1e-5


def tiny_config(data_dir, path="train.py"):
  """``configs/<path>:quick`` at 32 px trained for 8 steps: logged every 2,
  evaluated and checkpointed every 4."""
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, path), "quick")
  config.data_dir = str(data_dir)
  config.image_size = 32
  config.synthetic.update(num_train=64, num_validation=16, num_test=16)
  config.train.update(steps=8, batch_size=16, warmup_steps=2, log_every=2,
                      eval_every=4, checkpoint_every=4)
  return config


def _variables(config, directory):
  return jax.tree.leaves(nnx.state(train.restore_model(config, str(directory), 1)))


def _curves(directory):
  """metrics.jsonl without the timing."""
  with open(os.path.join(directory, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k != "steps_per_second"}
            for line in f]


def _text(directory, name=train.SUMMARY):
  with open(os.path.join(directory, name)) as f:
    return f.read()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def plain(data_dir, tmp_path_factory):
  """(config, seed -> directory) of plain runs, one per seed."""
  config = tiny_config(data_dir)
  root = tmp_path_factory.mktemp("plain")
  directories = {s: str(root / f"seed{s}") for s in SEEDS}
  for s in SEEDS:
    train.train_and_evaluate(train.seed_config(config, s), directories[s])
  return config, directories


@pytest.fixture(scope="module")
def at_once(data_dir, tmp_path_factory):
  """(config, seed -> directory) of ``num_seeds=3`` run from the CLI's entry point."""
  config = tiny_config(data_dir)
  config.num_seeds = len(SEEDS)
  workdir = tmp_path_factory.mktemp("at_once")

  def plain_run(*args, **kwargs):
    raise AssertionError("the seeds were trained one after another")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, "train_and_evaluate", plain_run)
    summaries = main_lib.run(config, str(workdir))
  assert [s["seed"] for s in summaries] == SEEDS
  return config, {s: str(workdir / f"seed{s}") for s in SEEDS}


def test_vmapped_seeds_equal_sequential_seeds(plain, at_once):
  config, plain_dirs = plain
  _, dirs = at_once
  for s in SEEDS:
    assert sorted(os.listdir(os.path.join(dirs[s], "checkpoints"))) == ["4", "8"]
    assert os.path.exists(os.path.join(dirs[s], train.EXPORT))
    for a, b in zip(_variables(config, plain_dirs[s]), _variables(config, dirs[s])):
      np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    expected, got = (json.loads(_text(d[s])) for d in (plain_dirs, dirs))
    for split in ("train", "validation", "test"):
      assert got[split] == pytest.approx(expected[split], abs=1e-6, nan_ok=True)
      del got[split], expected[split]
    assert got == expected  # the record of model, seed, data
    assert got["seed"] == s
    expected, got = _curves(plain_dirs[s]), _curves(dirs[s])
    assert [r["step"] for r in got] == [2, 4, 6, 8]
    assert [sorted(r) for r in got] == [sorted(r) for r in expected]
    for a, b in zip(got, expected):
      assert a == pytest.approx(b, abs=1e-5, nan_ok=True)
  # Each seed its own keys: the replicates differ.
  first, second = (_variables(config, dirs[s])[-1] for s in SEEDS[:2])
  assert np.abs(np.asarray(first) - np.asarray(second)).max() > 100 * ATOL


def test_kill_and_resume_ends_as_the_uninterrupted_run(at_once, tmp_path):
  config, full = at_once
  dirs = [str(tmp_path / f"seed{s}") for s in SEEDS]
  # Stopped between the checkpoints at 4 and 8, as a kill would.
  assert train.train_seeds(config, dirs, SEEDS, stop_after=6) is None
  for d in dirs:
    assert os.listdir(os.path.join(d, "checkpoints")) == ["4"]
    assert [r["step"] for r in _curves(d)] == [2, 4, 6]
    assert not os.path.exists(os.path.join(d, train.SUMMARY))
  # A kill while the checkpoints were being written: seed 2 has none.
  shutil.rmtree(os.path.join(dirs[2], "checkpoints", "4"))
  summaries = train.train_seeds(config, dirs, SEEDS)
  assert [s["seed"] for s in summaries] == SEEDS
  for s, d in zip(SEEDS, dirs):
    for a, b in zip(_variables(config, full[s]), _variables(config, d)):
      np.testing.assert_array_equal(a, b)
    assert _text(d) == _text(full[s])
    assert json.dumps(_curves(d)) == json.dumps(_curves(full[s]))  # NaN == NaN


@pytest.mark.parametrize("why", ["does_not_fit", "seeds_at_once_false"])
def test_one_after_another_when_the_seeds_do_not_fit(plain, at_once, tmp_path,
                                                      monkeypatch, why):
  config, plain_dirs = plain
  config = train.seed_config(config, 0)
  checked = []
  if why == "does_not_fit":
    monkeypatch.setattr(memory, "fits", lambda *args, **kwargs: checked.append(1)
                        or False)
  else:
    config.train.seeds_at_once = False
  calls = []
  real = train.train_and_evaluate

  def spy(c, directory, **kwargs):
    calls.append((c.seed, directory))
    return real(c, directory, **kwargs)

  monkeypatch.setattr(train, "train_and_evaluate", spy)
  dirs = [str(tmp_path / f"seed{s}") for s in SEEDS]
  summaries = train.train_seeds(config, dirs, SEEDS)
  assert calls == list(zip(SEEDS, dirs))
  assert checked == ([1] if why == "does_not_fit" else [])
  for s, d, summary in zip(SEEDS, dirs, summaries):
    assert summary["seed"] == s
    assert _text(d) == _text(plain_dirs[s])  # they are the plain runs
    for a, b, c in zip(_variables(config, d), _variables(config, plain_dirs[s]),
                       _variables(config, at_once[1][s])):
      np.testing.assert_array_equal(a, b)
      np.testing.assert_allclose(a, c, rtol=0, atol=ATOL)


def test_a_diverging_replicate_stops_naming_its_seed(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir)
  real = train.initial_model

  def nan_for_seed_1(c, in_channels):
    model = real(c, in_channels)
    if c.seed == 1:
      kernel = model.predictions.kernel
      kernel[...] = jnp.full_like(kernel[...], jnp.nan)
    return model

  monkeypatch.setattr(train, "initial_model", nan_for_seed_1)
  dirs = [str(tmp_path / f"seed{s}") for s in SEEDS]
  with pytest.raises(errors.NonFiniteError,
                     match=r"\(seed 1\) in .*seed1: the training loss is not finite "
                     r"at step 2"):
    train.train_seeds(config, dirs, SEEDS)
  assert not any(os.path.exists(os.path.join(d, train.SUMMARY)) for d in dirs)


def test_the_stacked_step_reads_each_seeds_labels_and_holds_finished_replicates():
  def step(state, images, labels, data_key, aug_key):
    del data_key, aug_key
    moved = state["x"] + images.sum() + labels.sum()
    return dict(x=moved, step=state["step"] + 1), jnp.stack([labels.sum(), 0.0])

  stacked = train._stacked_step(step, 3, 0)  # pylint: disable=protected-access
  keys = jnp.stack([jax.random.key(0)] * 2)
  state = dict(x=jnp.zeros(2), step=jnp.asarray([2, 3], jnp.int32))
  labels = jnp.asarray([[1.0, 2.0], [10.0, 20.0]])  # one row per seed
  state, stats = stacked(state, jnp.ones(4), labels, keys, keys)
  np.testing.assert_array_equal(state["x"], [4 + 3, 0])  # replicate 1 was done
  np.testing.assert_array_equal(state["step"], [3, 3])
  np.testing.assert_array_equal(stats[:, 0], [3, 30])


@pytest.mark.parametrize("value", [0, -2, True, None])
def test_num_seeds_must_be_a_positive_integer(value):
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "train.py"), "quick")
  config.num_seeds = value
  with pytest.raises(errors.ConfigError, match=r"^config\.num_seeds="):
    main_lib.validate(config)


def test_num_seeds_refuses_imported_weights_and_seeds_past_the_limit(tmp_path):
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "train.py"), "quick")
  config.num_seeds = 2
  config.seed = config_lib.SEED_LIMIT - 1
  with pytest.raises(errors.ConfigError, match=r"^config\.num_seeds=2: the seeds"):
    train.validate(config)
  config.seed = 0
  config.model_weights = str(tmp_path / "w.npz")
  with pytest.raises(errors.ConfigError, match=r"^config\.num_seeds=2 and "
                     r"config\.model_weights"):
    train.validate(config)


def test_repeatability_trains_its_unfinished_replicates_at_once(plain, at_once,
                                                                 tmp_path, monkeypatch):
  plain_config, plain_dirs = plain
  config = tiny_config(plain_config.data_dir, "repeatability.py")
  config.replicates = len(SEEDS)
  calls = []
  real = train.train_seeds

  def spy(c, directories, seeds, **kwargs):
    calls.append(list(seeds))
    return real(c, directories, seeds, **kwargs)

  monkeypatch.setattr(train, "train_seeds", spy)
  models = tmp_path / "models"
  tags = {0: "trained", 1: "seed1", 2: "seed2"}
  members = repeatability.train_replicates(config, str(tmp_path), in_channels=1)
  assert calls == [SEEDS]
  assert [m.seed for m in members] == [m.training["seed"] for m in members] == SEEDS
  for s in SEEDS:  # the same program and keys as configs/train.py's num_seeds=3
    for a, b in zip(jax.tree.leaves(nnx.state(members[s].model)),
                    _variables(plain_config, at_once[1][s])):
      np.testing.assert_array_equal(a, b)
  # In another workdir holding two of them: those are restored, not retrained;
  # the third is trained alone (a plain run).
  other = tmp_path / "other" / "models"
  for s in SEEDS[:2]:
    shutil.copytree(models / tags[s], other / tags[s])
  kept = [os.path.getmtime(other / tags[s] / "summary.json") for s in SEEDS[:2]]
  repeatability.train_replicates(config, str(other.parent), in_channels=1)
  assert calls[1:] == [[2]]
  assert [os.path.getmtime(other / tags[s] / "summary.json") for s in SEEDS[:2]] == kept
  assert _text(other / "seed2") == _text(plain_dirs[2])
