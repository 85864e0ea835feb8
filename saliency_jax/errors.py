"""The project's own errors: what the command line prints as one ``error:`` line.

Each names the file, row or config key at fault and what was expected. They
subclass ``ValueError`` (bad values) so that callers catching that keep
working; anything else raised is a bug and keeps its traceback.
"""

from __future__ import annotations


class Error(Exception):
  """Base of the errors the command line reports as ``error: <message>``."""


class ConfigError(Error, ValueError):
  """A config key whose value cannot work (names ``config.<key>``)."""


class InputError(Error, ValueError):
  """A bad data file or CSV row (names the file, ``file:line`` or the row)."""


class WeightsError(Error, ValueError):
  """A weights file that cannot be read into the model (names the file)."""


class WorkdirError(Error):
  """A workdir that cannot hold this run: other inputs, locked, not writable."""


class NonFiniteError(Error, ValueError):
  """Numbers that are not finite where a result would be computed from them."""
