"""Cascading and independent randomization change exactly the blocks they name."""

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from saliency_jax import models
from saliency_jax import randomization


@pytest.fixture(scope="module")
def pair():
  make = lambda seed: models.create("small_cnn", num_classes=2, in_channels=1,
                                    width=0.125, rngs=nnx.Rngs(seed))
  trained, fresh = make(0), make(1)
  # Distinct BatchNorm statistics, so keeping or replacing them is visible.
  trained.train()
  trained(jax.random.normal(jax.random.key(2), (4, 16, 16, 1)) + 3.0)
  trained.eval()
  return trained, fresh


def _by_block(state):
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    out.setdefault(randomization._block(path), []).append(np.asarray(leaf))
  return out


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_cascade_stage_k_changes_exactly_the_top_k_blocks(pair):
  trained_model, fresh_model = pair
  order = trained_model.cascade_order
  trained = nnx.state(trained_model)
  fresh = randomization.reinitialized(trained_model, fresh_model, batch_stats=True)
  t, f = _by_block(trained), _by_block(fresh)
  for k in range(len(order) + 1):
    stage = _by_block(randomization.cascade(trained, fresh, order, k))
    for i, name in enumerate(order):
      assert _same(stage[name], f[name] if i < k else t[name]), (k, name)
      if i < k:
        assert not _same(stage[name], t[name])


def test_stacked_stages_equal_single_stages(pair):
  trained_model, fresh_model = pair
  order = trained_model.cascade_order
  trained = nnx.state(trained_model)
  fresh = randomization.reinitialized(trained_model, fresh_model)
  stacked, blocks = randomization.stages(trained, fresh, order)
  assert blocks[0] == [] and blocks[-1] == list(order)
  for k in range(len(order) + 1):
    single = randomization.cascade(trained, fresh, order, k)
    assert _same(jax.tree.leaves(randomization.unstack(stacked, k)),
                 jax.tree.leaves(single))
  assert jax.tree.structure(randomization.unstack(stacked, 0)) == jax.tree.structure(trained)


def test_independent_changes_one_block(pair):
  trained_model, fresh_model = pair
  order = trained_model.cascade_order
  trained = nnx.state(trained_model)
  fresh = randomization.reinitialized(trained_model, fresh_model, batch_stats=True)
  t, f = _by_block(trained), _by_block(fresh)
  stacked, blocks = randomization.stages(trained, fresh, order, mode="independent")
  for i, name in enumerate(order):
    assert blocks[i + 1] == [name]
    stage = _by_block(randomization.unstack(stacked, i + 1))
    for other in order:
      assert _same(stage[other], f[other] if other == name else t[other])


def test_batch_stats_stay_trained_by_default(pair):
  trained_model, fresh_model = pair
  keep = randomization.reinitialized(trained_model, fresh_model)
  replace = randomization.reinitialized(trained_model, fresh_model, batch_stats=True)
  mean = lambda s: np.asarray(s["block1"]["bn"]["mean"])
  kernel = lambda s: np.asarray(s["block1"]["conv"]["kernel"])
  trained = nnx.state(trained_model)
  assert np.array_equal(mean(keep), mean(trained))
  assert np.array_equal(mean(replace), mean(nnx.state(fresh_model)))
  assert not np.array_equal(mean(replace), mean(trained))
  assert np.array_equal(kernel(keep), kernel(nnx.state(fresh_model)))


def test_stage_zero_reproduces_the_model_output(pair):
  trained_model, fresh_model = pair
  graphdef, trained = nnx.split(trained_model)
  fresh = randomization.reinitialized(trained_model, fresh_model)
  stacked, _ = randomization.stages(trained, fresh, trained_model.cascade_order)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
  run = jax.vmap(lambda s: nnx.merge(graphdef, s)(x))
  out = run(stacked)
  # vmapped vs direct programs may round differently, nothing more.
  np.testing.assert_allclose(out[0], trained_model(x), rtol=1e-5, atol=1e-6)
  assert not np.allclose(out[-1], out[0])


def test_bad_arguments_are_named(pair):
  trained_model, fresh_model = pair
  trained = nnx.state(trained_model)
  with pytest.raises(ValueError, match=r"k must lie in \[0, 5\]"):
    randomization.cascade(trained, trained, trained_model.cascade_order, 6)
  with pytest.raises(ValueError, match=r"blocks \['mixed10'\] are not in the model"):
    randomization.select_blocks(trained, trained, {"mixed10"})
  with pytest.raises(ValueError, match="config.cascade.mode='sideways'"):
    randomization.stages(trained, trained, trained_model.cascade_order, mode="sideways")


def test_cascade_states_is_the_experiments_cascade(pair):
  trained_model, fresh_model = pair
  order = trained_model.cascade_order
  states, blocks = randomization.cascade_states(trained_model, fresh_model)
  assert blocks == [list(order[:k]) for k in range(len(order) + 1)]
  trained = nnx.state(trained_model)
  fresh = randomization.reinitialized(trained_model, fresh_model)
  chex.assert_tree_shape_prefix(states, (len(order) + 1,))
  chex.assert_trees_all_equal(randomization.unstack(states, 0), trained)
  for k in range(len(order) + 1):
    chex.assert_trees_all_equal(randomization.unstack(states, k),
                                randomization.cascade(trained, fresh, order, k))
  # BatchNorm statistics stay trained at the last stage, the kernels do not.
  last = randomization.unstack(states, len(order))
  chex.assert_trees_all_equal(last["block1"]["bn"]["mean"], trained["block1"]["bn"]["mean"])
  chex.assert_trees_all_equal(last["block1"]["conv"]["kernel"],
                              nnx.state(fresh_model)["block1"]["conv"]["kernel"])


def test_cascade_states_options_and_no_side_effects(pair):
  trained_model, fresh_model = pair
  learning = nnx.clone(trained_model)
  learning.train()
  states, blocks = randomization.cascade_states(
      learning, fresh_model, order=("predictions", "block4"), mode="independent",
      batch_stats=True)
  assert blocks == [[], ["predictions"], ["block4"]]
  assert learning.block1.bn.use_running_average is False  # still training
  trained, fresh = nnx.state(trained_model), nnx.state(fresh_model)
  second = randomization.unstack(states, 2)
  chex.assert_trees_all_equal(second["block4"], fresh["block4"])  # BatchNorm too
  chex.assert_trees_all_equal(second["predictions"], trained["predictions"])


def test_cascade_states_names_what_does_not_fit(pair):
  trained_model, _ = pair

  class Dense(nnx.Module):  # no cascade_order

    def __init__(self, outputs, rngs):
      self.dense = nnx.Linear(2, outputs, rngs=rngs)

  with pytest.raises(ValueError, match="Dense has no cascade_order; pass order="):
    randomization.cascade_states(Dense(2, nnx.Rngs(0)), Dense(2, nnx.Rngs(1)))
  states, _ = randomization.cascade_states(Dense(2, nnx.Rngs(0)), Dense(2, nnx.Rngs(1)),
                                           order=("dense",))
  chex.assert_shape(states["dense"]["kernel"], (2, 2, 2))
  with pytest.raises(ValueError, match=r"at \['dense'\]\['bias'\].* the model "
                     r"has float32\[2\], fresh has float32\[3\]"):
    randomization.cascade_states(Dense(2, nnx.Rngs(0)), Dense(3, nnx.Rngs(1)),
                                 order=("dense",))
  with pytest.raises(ValueError, match="order must be a non-empty sequence"):
    randomization.cascade_states(trained_model, trained_model, order="block1")


# ------------------------------------------------------------- bottom-up ---

def test_bottom_up_stage_k_changes_exactly_the_bottom_k_blocks(pair):
  trained_model, fresh_model = pair
  order = trained_model.cascade_order
  trained = nnx.state(trained_model)
  fresh = randomization.reinitialized(trained_model, fresh_model, batch_stats=True)
  t, f = _by_block(trained), _by_block(fresh)
  stacked, blocks = randomization.stages(trained, fresh, order, mode="bottom_up")
  assert blocks[0] == [] and len(blocks) == len(order) + 1
  for k in range(len(order) + 1):
    bottom = set(order[len(order) - k:])
    assert set(blocks[k]) == bottom and len(blocks[k]) == k
    single = _by_block(randomization.bottom_up(trained, fresh, order, k))
    stage = _by_block(randomization.unstack(stacked, k))
    for name in order:
      expected = f[name] if name in bottom else t[name]
      assert _same(stage[name], expected) and _same(single[name], expected), (k, name)
      if name in bottom:
        assert not _same(stage[name], t[name])
  # Input side first: each stage adds the next block up; the last is the cascade's.
  assert [b[-1] for b in blocks[1:]] == list(order[::-1])
  assert _same(jax.tree.leaves(randomization.unstack(stacked, len(order))),
               jax.tree.leaves(randomization.cascade(trained, fresh, order, len(order))))


def test_bottom_up_on_a_real_architectures_block_order():
  abstract = nnx.eval_shape(lambda: models.create(
      "densenet121", num_classes=2, in_channels=1, width=0.25, rngs=nnx.Rngs(0)))
  order = abstract.cascade_order
  state = nnx.state(abstract)
  # Leaf markers instead of weights: 0 trained, 1 fresh (no arrays built).
  trained = jax.tree.map(lambda _: 0, state)
  fresh = jax.tree.map(lambda _: 1, state)
  _, blocks = randomization.stages(trained, fresh, order, mode="bottom_up")
  assert blocks[1] == [order[-1]] == ["conv1"]  # the stem, nearest the input
  for k in (1, 3, len(order)):
    stage = randomization.bottom_up(trained, fresh, order, k)
    for path, leaf in jax.tree_util.tree_leaves_with_path(stage):
      assert leaf == int(randomization._block(path) in order[len(order) - k:]), (k, path)


def test_bottom_up_num_blocks_takes_the_input_side_blocks(pair):
  from saliency_jax import config as config_lib
  from saliency_jax.experiments import cascade as cascade_exp
  trained_model, _ = pair
  order = trained_model.cascade_order
  config = config_lib.load_file(config_lib.CONFIGS_DIR + "/cascade.py", "quick")
  config.model, config.width, config.cascade.num_blocks = "small_cnn", 0.125, 2
  for mode, expected in (("bottom_up", [[], [order[-1]], [order[-1], order[-2]]]),
                         ("cascade", [[], [order[0]], [order[0], order[1]]])):
    config.cascade.mode = mode
    _, blocks = cascade_exp.states(config, trained_model, in_channels=1)
    assert blocks == expected, mode
  with pytest.raises(ValueError, match="bottom_up: k must lie"):
    randomization.bottom_up({}, {}, order, len(order) + 1)
  with pytest.raises(ValueError, match="'bottom_up'"):
    randomization.stages({}, {}, order, mode="bottom-up")
