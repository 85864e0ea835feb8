"""Names of a package loaded on first use (PEP 562), so importing it stays light."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, names: dict[str, tuple[str, str | None]],
            namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
  """The ``(__getattr__, __dir__)`` of ``package`` for its lazy ``names``.

  Args:
    package: the package's ``__name__`` (for the error message).
    names: public name -> (module, attribute in it; None: the module itself).
    namespace: the package's ``globals()``; a loaded name is stored there, so
      later look-ups do not come back here.
  """
  def __getattr__(name: str) -> Any:  # pylint: disable=invalid-name
    if name not in names:
      raise AttributeError(f"module {package!r} has no attribute {name!r}; the public "
                           f"names are {sorted(names)}")
    module, attribute = names[name]
    value = importlib.import_module(module)
    if attribute is not None:
      value = getattr(value, attribute)
    namespace[name] = value
    return value

  def __dir__() -> list[str]:  # pylint: disable=invalid-name
    return sorted(set(namespace) | set(names))

  return __getattr__, __dir__
