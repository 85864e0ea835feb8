"""Progress: throttled log lines off a terminal, a tqdm bar on one."""

import io
import logging

import pytest
import tqdm

from saliency_jax import progress


class FakeClock:
  """Seconds that move only when told."""

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


class FakeTerminal(io.StringIO):
  def isatty(self):
    return True


def _lines(caplog):
  return [r.getMessage() for r in caplog.records if r.name == "absl"]


@pytest.fixture
def caplog_info(caplog):
  caplog.set_level(logging.INFO, logger="absl")
  return caplog


def test_log_lines_every_tenth_and_at_the_end(caplog_info):
  clock = FakeClock()
  with progress.Progress("phantoms", 100, unit="img", stream=io.StringIO(),
                         clock=clock) as bar:
    for _ in range(100):
      clock.now += 0.5  # 2 img/s; 50 s in all, never 30 s between lines
      bar.update()
  lines = _lines(caplog_info)
  assert len(lines) == 10
  assert lines[0] == "phantoms: 10/100 img (10%)  2.00 img/s  ETA 45s"
  assert lines[4] == "phantoms: 50/100 img (50%)  2.00 img/s  ETA 25s"
  assert lines[-1] == "phantoms: 100/100 img (100%)  2.00 img/s  in 50s"


def test_log_lines_every_30_seconds_when_slow(caplog_info):
  clock = FakeClock()
  bar = progress.Progress("training", 1000, unit="step", stream=io.StringIO(),
                          clock=clock)
  for _ in range(60):
    clock.now += 1.0  # 1 step/s: 10% takes 100 s, so time decides
    bar.update()
  bar.close()
  lines = _lines(caplog_info)
  assert [line.split(":")[1].split()[0] for line in lines] == ["30/1000", "60/1000"]
  assert lines[0].endswith("1.00 step/s  ETA 16m10s")


def test_detail_resume_and_no_going_back(caplog_info):
  clock = FakeClock()
  bar = progress.Progress("cascade", 40, unit="map", initial=20,
                          stream=io.StringIO(), clock=clock)
  clock.now += 10.0
  bar.update(10, detail="gradient")
  bar.update_to(5)  # never backwards
  assert bar.done == 30
  # The rate counts the units done here, not the resumed ones.
  assert bar.rate == pytest.approx(1.0)
  clock.now += 10.0
  bar.update_to(40, detail="xrai")
  assert _lines(caplog_info) == [
      "cascade: 30/40 map (75%)  1.00 map/s  ETA 10s  gradient",
      "cascade: 40/40 map (100%)  1.00 map/s  in 20s  xrai"]


def test_track_yields_every_item_and_logs_100_percent(caplog_info):
  items = list(progress.track(range(7), "segments", unit="img",
                              stream=io.StringIO()))
  assert items == list(range(7))
  lines = _lines(caplog_info)
  # 7 items: each is more than a tenth, so a line each, the last at 100%.
  assert len(lines) == 7
  assert lines[-1].startswith("segments: 7/7 img (100%)")


def test_a_terminal_gets_a_tqdm_bar_and_no_log_lines(caplog_info):
  stream = FakeTerminal()
  with progress.Progress("training", 50, unit="step", stream=stream) as bar:
    assert isinstance(bar._bar, tqdm.tqdm)
    bar.update(20, detail="loss 0.5")
    bar.log("step %d  validation %s", 20, "auc 0.9")
    bar.update_to(50)
  text = stream.getvalue()
  assert "\r" in text  # redrawn in place
  assert "50/50" in text and "step/s" in text and "loss 0.5" in text
  assert "step 20  validation auc 0.9\n" in text  # written above the bar
  assert _lines(caplog_info) == []


def test_format_seconds():
  assert progress.format_seconds(42.4) == "42s"
  assert progress.format_seconds(185) == "3m05s"
  assert progress.format_seconds(2 * 3600 + 7 * 60 + 3) == "2h07m"
  assert progress.format_seconds(float("nan")) == "?"
