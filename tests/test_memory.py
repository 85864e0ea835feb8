"""memory: a compiled program's need, the device's budget, the largest size that fits."""

import types

import jax
import jax.numpy as jnp
import pytest

from saliency_jax import memory


def fake_compiled(need_bytes):
  """An object answering ``memory_analysis()`` as XLA's compiled programs do."""
  stats = types.SimpleNamespace(temp_size_in_bytes=need_bytes, output_size_in_bytes=0,
                                alias_size_in_bytes=0, generated_code_size_in_bytes=0)
  return types.SimpleNamespace(memory_analysis=lambda: stats)


def search(need, limit, budget):
  compiled = []

  def compile_at(size):
    compiled.append(size)
    return fake_compiled(need(size))

  size, bytes_ = memory.largest_fitting(compile_at, limit, budget)
  return size, bytes_, compiled


def test_program_bytes_reads_xla_buffer_assignment():
  # Output 4 bytes, argument 1 MiB (not counted: already on the device).
  compiled = jax.jit(lambda x: (x @ x.T).sum()).lower(jnp.ones((512, 512))).compile()
  analysis = compiled.memory_analysis()
  assert memory.program_bytes(compiled) == (
      analysis.temp_size_in_bytes + analysis.output_size_in_bytes
      - analysis.alias_size_in_bytes + analysis.generated_code_size_in_bytes)
  assert memory.program_bytes(compiled) < analysis.argument_size_in_bytes


@pytest.mark.parametrize("budget", [1000 + 100 * 7, 1000 + 100 * 63, 1000 + 100 * 64 - 1])
def test_linear_need_gives_the_largest_power_of_two_that_fits(budget):
  need = lambda b: 1000 + 100 * (b - 1)  # noqa: E731
  size, bytes_, _ = search(need, limit=10_000, budget=budget)
  assert need(size) <= budget < need(2 * size)
  assert size & (size - 1) == 0 and bytes_ == need(size)


def test_everything_at_once_when_it_fits_and_compiled_only_then():
  need = lambda b: 1000 + 10 * b  # noqa: E731
  size, _, compiled = search(need, limit=300, budget=10**6)
  assert size == 300 and compiled.count(300) == 1
  # Predicted not to fit: the whole program is never compiled.
  _, _, compiled = search(need, limit=300, budget=2000)
  assert 300 not in compiled


def test_sublinear_need_doubles_past_the_linear_guess():
  need = lambda b: 1000 + int(400 * b ** 0.5)  # noqa: E731
  size, _, _ = search(need, limit=4096, budget=5000)
  assert need(size) <= 5000 < need(2 * size)


def test_superlinear_need_halves_to_a_fit():
  need = lambda b: 1000 + 10 * b * b  # noqa: E731
  size, _, _ = search(need, limit=4096, budget=50_000)
  assert need(size) <= 50_000 < need(2 * size)


def test_one_evaluation_too_big_is_a_clear_error():
  with pytest.raises(memory.DoesNotFitError, match=r"one evaluation at a time needs 1\.0 MiB"):
    search(lambda b: 2**20 * b, limit=8, budget=1000)


def test_unknown_budget_or_need_runs_everything():
  assert search(lambda b: 10 * b, limit=64, budget=None)[0] == 64
  unknown = types.SimpleNamespace(memory_analysis=lambda: None)
  assert memory.program_bytes(unknown) is None
  assert memory.fits(unknown, 1)


def test_budget_is_a_fraction_of_the_device_memory():
  total = memory.device_bytes()
  assert total is not None and total > 0
  assert memory.budget(0.5) <= 0.5 * total
  for bad in (0, 1.5, -0.1):
    with pytest.raises(ValueError, match="memory fraction"):
      memory.budget(bad)
