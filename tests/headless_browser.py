"""Opening a report.html in headless Chromium: the DOM after its scripts ran.

Shared by tests/report/test_html.py and the end-to-end experiment tests
(``tests/`` is on ``sys.path`` through its conftest). A missing Chromium
fails the test with how to install it: these checks are never skipped.
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess

import pytest

INSTALL = ("headless Chromium is needed for the report.html tests and was not "
           "found on PATH (tried: {names}); install it, e.g. on Debian/Ubuntu "
           "`apt-get install -y chromium` (.ci/run does this), or point "
           "$CHROMIUM at a Chrome/Chromium binary")
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
  """The Chromium binary; fails the test (never skips) when there is none."""
  given = os.environ.get("CHROMIUM")
  if given:
    return given
  for name in NAMES:
    found = shutil.which(name)
    if found:
      return found
  pytest.fail(INSTALL.format(names=", ".join(NAMES)))


class Page:
  """What a dumped DOM says: ``<html>``'s attributes and every ``<img>``'s."""

  def __init__(self, dom: str, stderr: str):
    self.dom, self.stderr = dom, stderr
    parser = _Collector()
    parser.feed(dom)
    self.root = parser.root
    self.images = parser.images

  @property
  def errors(self) -> list[str]:
    return json.loads(self.root.get("data-errors", "null"))

  def image(self, element_id: str) -> dict[str, str]:
    return next(i for i in self.images if i.get("id") == element_id)


class _Collector(html.parser.HTMLParser):

  def __init__(self):
    super().__init__()
    self.root: dict[str, str] = {}
    self.images: list[dict[str, str]] = []

  def handle_starttag(self, tag, attrs):
    if tag == "html":
      self.root = {k: v or "" for k, v in attrs}
    elif tag == "img":
      self.images.append({k: v or "" for k, v in attrs})


def open_page(path: str, fragment: str = "", *, budget_ms: int = 5000) -> Page:
  """``path`` (+ ``#fragment``) opened in headless Chromium; its DOM after the scripts."""
  url = "file://" + os.path.abspath(path) + (f"#{fragment}" if fragment else "")
  done = subprocess.run(
      [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
       "--disable-dev-shm-usage", "--no-first-run", "--mute-audio",
       f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
      capture_output=True, text=True, timeout=180, check=False)
  assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
  return Page(done.stdout, done.stderr)


def assert_renders(page: Page) -> None:
  """No script error (the page's own record, and Chromium's console), every
  image loaded with a width."""
  assert page.root, "no <html> in chromium's DOM dump"
  assert page.errors == [], page.errors
  assert "Uncaught" not in page.stderr, page.stderr[-2000:]
  shown = [i for i in page.images if i.get("src")]
  assert shown, "no image on the page"
  for img in shown:
    what = img.get("id") or img.get("data-file") or img.get("alt")
    assert img.get("data-load") == "ok", (what, img.get("data-load"))
    assert int(img.get("data-natural-width", "0")) > 0, what
