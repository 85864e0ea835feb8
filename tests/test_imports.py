"""The package's import graph has no cycle (every import, also inside functions)."""

import ast
import pathlib
import subprocess
import sys

import pytest

import saliency_jax

ROOT = pathlib.Path(saliency_jax.__file__).parent


def _graph() -> dict[str, set[str]]:
  mods = {".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): p
          for p in ROOT.rglob("*.py")}
  graph = {m: set() for m in mods}
  for m, p in mods.items():
    package = m if p.name == "__init__.py" else m.rpartition(".")[0]
    for node in ast.walk(ast.parse(p.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = package.split(".")[:len(package.split(".")) - node.level + 1]
          base = ".".join(parts + ([base] if base else []))
        names = [base] + [f"{base}.{a.name}" for a in node.names]
      for name in names:
        while name and name not in mods:
          name = name.rpartition(".")[0]
        # A package importing its own modules (or a module its package) is no cycle.
        if name and name != m and not m.startswith(name + ".") and not name.startswith(m + "."):
          graph[m].add(name)
  return graph


def _cycle(graph):
  state, stack = {}, []

  def visit(u):
    state[u] = 1
    stack.append(u)
    for v in sorted(graph[u]):
      if state.get(v) == 1:
        return stack[stack.index(v):] + [v]
      if v not in state and (found := visit(v)):
        return found
    stack.pop()
    state[u] = 2
    return None

  for m in sorted(graph):
    if m not in state and (found := visit(m)):
      return found
  return None


def test_no_import_cycle():
  cycle = _cycle(_graph())
  assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_one():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_below_experiments_imports_them():
  graph = _graph()
  for module, imported in graph.items():
    # The configs sit above the experiments, as the command line does.
    if not module.startswith(("saliency_jax.experiments", "saliency_jax.configs")):
      assert not any(i.startswith("saliency_jax.experiments") for i in imported), module


# ------------------------------------------------------------ public face ---

_PUBLIC_CHECK = """
import sys
import saliency_jax as sj
import saliency_jax.main  # the CLI's imports before a flag is checked
light = [m for m in ("jax", "flax", "optax", "skimage") if m in sys.modules]
assert not light, light
assert "explain" in dir(sj) and "metrics" in dir(sj)
import numpy as np
maps = sj.explain(lambda x: 2.0 * x.sum()[None], np.ones((1, 4, 4, 1), np.float32),
                  method="gradient")
assert "jax" in sys.modules
assert np.allclose(maps, 2.0), maps
print("ok")
"""


def test_import_is_light_and_names_load_on_use():
  # A fresh interpreter: this test process has imported JAX long ago.
  out = subprocess.run([sys.executable, "-c", _PUBLIC_CHECK], capture_output=True,
                       text=True, timeout=300, check=False)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_public_names_are_the_package_objects():
  # pylint: disable=g-import-not-at-top
  from saliency_jax import metrics, models, randomization, results, saliency
  from saliency_jax.metrics import localization, similarity
  from saliency_jax.saliency import postprocess
  # pylint: enable=g-import-not-at-top
  assert saliency_jax.explain is saliency.explain
  assert saliency_jax.explain_states is saliency.explain_states
  assert saliency_jax.auto_batch_size is saliency.auto_batch_size
  assert saliency_jax.METHODS is saliency.METHODS
  assert saliency_jax.postprocess is postprocess
  assert saliency_jax.metrics is metrics and saliency_jax.models is models
  assert saliency_jax.randomization is randomization
  assert saliency_jax.results is results
  # One registry of metric names: the modules' dicts, not copies.
  assert metrics.LOCALIZATION is localization.LOCALIZATION
  assert metrics.SIMILARITY is similarity.SIMILARITY
  for name in ("create", "from_keras", "from_npz"):
    assert callable(getattr(saliency_jax.models, name))
  assert callable(saliency_jax.results.load)
  assert set(saliency_jax.__all__) <= set(dir(saliency_jax))
  assert set(metrics.__all__) <= set(dir(metrics))


def test_unknown_public_name_is_an_attribute_error():
  with pytest.raises(AttributeError, match="no attribute 'explian'.*'explain'"):
    saliency_jax.explian  # pylint: disable=pointless-statement
  with pytest.raises(AttributeError, match="no attribute 'LOCALISATION'"):
    saliency_jax.metrics.LOCALISATION  # pylint: disable=pointless-statement
  assert not hasattr(saliency_jax, "__wrapped__")  # dunders are not looked up lazily
