"""Progress of long loops: a tqdm bar on a terminal, throttled log lines elsewhere.

One helper for every long loop of the package (training steps, the
experiments' maps, XRAI's segmentation, the phantom build). Where stderr is a
terminal it draws a tqdm bar with rate and ETA. Where it is not (a cluster
job's log file, a pipe, CI) a bar would write thousands of carriage returns,
so it logs a plain line instead, at most every :data:`LOG_FRACTION` of the
work or every :data:`LOG_SECONDS` seconds, whichever comes first, and always
when the work is done::

  synthetic_cxr train: 450/1000 img (45%)  38.2 img/s  ETA 14s

Use it as a context manager with :meth:`Progress.update`, or over an
iterable with :func:`track`::

  with progress.Progress("cascade", total=1200, unit="map") as bar:
    bar.update(100, detail="gradient")

  for image in progress.track(images, "xrai segments", unit="img"):
    ...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

import tqdm
from absl import logging

T = TypeVar("T")

# Non-terminal output: a line per this fraction of the total, or per this many
# seconds, whichever comes first (and one when done).
LOG_FRACTION = 0.1
LOG_SECONDS = 30.0


def is_terminal(stream: Any) -> bool:
  """Whether ``stream`` is an interactive terminal (a bar redraws there)."""
  isatty = getattr(stream, "isatty", None)
  try:
    return bool(isatty and isatty())
  except (ValueError, OSError):  # a closed stream
    return False


def format_seconds(seconds: float) -> str:
  """``'42s'``, ``'3m05s'``, ``'2h07m'``; ``'?'`` when unknown."""
  if not seconds >= 0 or seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
  """Counts work done of ``total`` and shows it (bar or log lines).

  Args:
    what: what is being done, the line's prefix (e.g. ``'training small_cnn'``).
    total: units of work in all.
    unit: the unit's name (``'step'``, ``'img'``, ``'map'``).
    initial: units already done (a resumed run); the rate counts only the
      units done here.
    stream: where a terminal bar is drawn (default: ``sys.stderr``); the bar
      is used only when it is a terminal, else absl log lines.
    clock: seconds, monotonic (tests pass a fake one).
  """

  def __init__(self, what: str, total: int, *, unit: str = "it", initial: int = 0,
               stream: TextIO | None = None,
               clock: Callable[[], float] = time.monotonic):
    self.what, self.total, self.unit = what, max(int(total), 0), unit
    self.done = self.initial = int(initial)
    self._clock = clock
    self._start = self._last_line = clock()
    self._next_fraction = self._fraction_mark(self.done)
    self._detail = ""
    self._closed = False
    stream = sys.stderr if stream is None else stream
    self._bar = None
    if is_terminal(stream):
      self._bar = tqdm.tqdm(total=self.total, initial=self.done, desc=what, unit=unit,
                            file=stream, dynamic_ncols=True, mininterval=0.5,
                            leave=True)

  # -------------------------------------------------------------- counting ---

  @property
  def rate(self) -> float:
    """Units per second done here (since the start, past ``initial``)."""
    elapsed = self._clock() - self._start
    done = self.done - self.initial
    return done / elapsed if elapsed > 0 else (float("inf") if done else 0.0)

  @property
  def eta(self) -> float:
    """Seconds left at the current rate (NaN before anything is done)."""
    rate = self.rate
    return (self.total - self.done) / rate if rate > 0 else float("nan")

  def update(self, count: int = 1, detail: str | None = None) -> None:
    """``count`` more units done; ``detail`` (e.g. the method) shown beside."""
    self.update_to(self.done + count, detail)

  def update_to(self, done: int, detail: str | None = None) -> None:
    """``done`` units done in all (never goes back); see :meth:`update`."""
    if detail is not None:
      self._detail = detail
    done = max(int(done), self.done)
    if self._bar is not None:
      if detail is not None:
        self._bar.set_postfix_str(detail, refresh=False)
      self._bar.update(done - self.done)
      self.done = done
      return
    self.done = done
    now = self._clock()
    finished = self.total and self.done >= self.total
    if (finished or self.done >= self._next_fraction
        or now - self._last_line >= LOG_SECONDS):
      self._line(now)

  def log(self, message: str, *args: Any) -> None:
    """A line of its own (``%``-style): above the bar, or logged."""
    if self._bar is not None:
      self._bar.write(message % args if args else message, file=self._bar.fp)
    else:
      logging.info(message, *args)

  def close(self) -> None:
    """Ends the bar (a terminal keeps its last state). Idempotent."""
    if self._closed:
      return
    self._closed = True
    if self._bar is not None:
      self._bar.close()

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

  # ----------------------------------------------------------------- lines ---

  def _fraction_mark(self, done: int) -> float:
    """The next count at which a multiple of LOG_FRACTION of the total is passed."""
    if not self.total:
      return float("inf")
    step = LOG_FRACTION * self.total
    return (int(done / step + 1e-9) + 1) * step

  def _line(self, now: float) -> None:
    self._last_line = now
    self._next_fraction = self._fraction_mark(self.done)
    percent = 100.0 * self.done / self.total if self.total else 100.0
    finished = self.total and self.done >= self.total
    timing = (f"in {format_seconds(now - self._start)}" if finished
              else f"ETA {format_seconds(self.eta)}")
    logging.info("%s: %d/%d %s (%.0f%%)  %.2f %s/s  %s%s", self.what, self.done,
                 self.total, self.unit, percent, self.rate, self.unit, timing,
                 f"  {self._detail}" if self._detail else "")


def track(iterable: Iterable[T], what: str, *, total: int | None = None,
          unit: str = "it", **options: Any) -> Iterator[T]:
  """Yields ``iterable``'s items, counting each as one unit of :class:`Progress`.

  ``total`` defaults to ``len(iterable)``; ``options`` go to :class:`Progress`.
  """
  if total is None:
    total = len(iterable)  # type: ignore[arg-type]
  with Progress(what, total, unit=unit, **options) as bar:
    for item in iterable:
      yield item
      bar.update()
