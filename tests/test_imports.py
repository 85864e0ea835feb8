"""The package's import graph has no cycle (every import, also inside functions)."""

import ast
import pathlib

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
    if not module.startswith("saliency_jax.experiments"):
      assert not any(i.startswith("saliency_jax.experiments") for i in imported), module
