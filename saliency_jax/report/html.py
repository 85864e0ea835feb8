"""The report as one self-contained page: ``report.html`` beside ``report.md``.

The page holds what ``report.md`` says (converted by the small Markdown
reader below: the subset the reports write), every figure embedded as a
``data:`` URI, and a browser of the example maps: pick image x method x model
state (the cascade's stages, the trained and label-randomized models,
replicates) and see the image with its ground truth (boxes, or the mask
outline) beside the map. Nothing is fetched: no network, no external script
or style sheet; the file can be mailed and opened offline.

Maps come from ``maps/<experiment>-<method>.npy`` (states, E images, H, W),
post-processed in [0, 1], with the state names of the part's manifest
(``parts/<experiment>-<method>.json``); the images, boxes and masks from
``maps/<experiment>-images.npz`` (:func:`runner.save_example_images`).
Without that file the browser shows the maps alone and says so.

The page reads a URL fragment such as ``#method=gradcam&stage=3&image=1``
(also ``experiment=``; a stage or image by index or by name) and applies it
as a user's choice would (the select elements' ``change`` events), and writes
the current choice back into the fragment, so a view can be linked. For
checks in a headless browser it records script errors in the ``data-errors``
attribute of ``<html>`` (a JSON list) and each image's load in its
``data-load`` (``ok``/``error``) and ``data-natural-width`` attributes.
"""

from __future__ import annotations

import base64
import glob
import html
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from absl import logging
from PIL import Image
from PIL import ImageDraw

from saliency_jax import io_utils

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
MAPS_DIR = "maps"
IMAGES_SUFFIX = "-images"
MAP_CMAP = "inferno"  # as report.figures.MAP_CMAP: the figures' heat map
GROUND_TRUTH_RGBA = (255, 40, 40, 255)  # as report.figures.BOX_COLOR
MIN_DISPLAY_PIXELS = 256  # images and outlines drawn at least this large
VERDICTS = ("PASS", "FAIL", "INVALID")

ImageResolver = Callable[[str], str | None]


def write(workdir: str) -> str:
  """Writes ``workdir/report.html`` from ``report.md``, figures and maps.

  Args:
    workdir: a run's directory with ``report.md`` (figures under it are
      embedded; ``maps/`` adds the map browser).

  Returns:
    The path of ``report.html``.
  """
  md_path = os.path.join(workdir, REPORT_MD)
  with open(md_path, encoding="utf-8") as f:
    text = f.read()
  summary = _read_summary(workdir)
  resolve = lambda src: _figure_uri(workdir, src)  # noqa: E731
  body = markdown_to_html(text, resolve)
  browser = map_browser(workdir, summary)
  if browser:
    at = _browser_place(body)
    body = body[:at] + browser + body[at:]
  title = next(iter(re.findall(r"^#\s+(.+)$", text, re.M)), "Report")
  page = _PAGE.format(title=html.escape(_plain(title)), style=_STYLE,
                      probe=_PROBE_SCRIPT, nav=_nav(body), body=body,
                      script=_BROWSER_SCRIPT if browser else "")
  path = os.path.join(workdir, REPORT_HTML)
  io_utils.write_text(path, page)
  return path


def _browser_place(body: str) -> int:
  """Where the map browser goes: after the verdict, else before the figures,
  else at the end."""
  headings = [(m.start(), m.group(1)) for m in re.finditer(r'<h2 id="([^"]+)"', body)]
  for (_, anchor), (start, _) in zip(headings, headings[1:]):
    if anchor == "verdict":
      return start
  return next((start for start, anchor in headings if anchor == "figures"), len(body))


# --------------------------------------------------------------- markdown ---

_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_ITEM = re.compile(r"^(\s*)[-*]\s+(.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FIGURE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
_INLINE = re.compile(
    r"(?P<tick>`+)(?P<code>.+?)(?P=tick)"
    r"|!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)"
    r"|\[(?P<text>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|(?<![\w*])\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*(?![\w*])"
    r"|\b(?P<verdict>PASS|FAIL|INVALID)\b")


def markdown_to_html(text: str, resolve_image: ImageResolver) -> str:
  """HTML of the Markdown subset the reports write.

  Headings, paragraphs, pipe tables (``:`` alignment), bullet lists (one
  level, indented continuation lines), fenced code, and inline code, bold,
  italics, links and images; PASS/FAIL/INVALID are coloured. A paragraph
  that is one image becomes a figure with its caption. Links to a
  ``report.md`` point to its ``report.html``.

  Args:
    text: the Markdown.
    resolve_image: an image link's target -> the ``src`` to embed, or None
      when the file is missing (shown as a missing-figure note).
  """
  lines = text.splitlines()
  out: list[str] = []
  i = 0
  while i < len(lines):
    line = lines[i]
    if not line.strip():
      i += 1
    elif line.lstrip().startswith("```"):
      end = next((j for j in range(i + 1, len(lines))
                  if lines[j].lstrip().startswith("```")), len(lines))
      out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:end]))
                 + "</code></pre>")
      i = end + 1
    elif match := _HEADING.match(line):
      level, content = len(match.group(1)), match.group(2)
      out.append(f'<h{level} id="{_slug(content)}">'
                 f"{_inline(content, resolve_image)}</h{level}>")
      i += 1
    elif line.lstrip().startswith("|"):
      end = _run_end(lines, i, lambda l: l.lstrip().startswith("|"))
      out.append(_table(lines[i:end], resolve_image))
      i = end
    elif _ITEM.match(line):
      end = _run_end(lines, i, lambda l: bool(_ITEM.match(l)) or (
          l.startswith((" ", "\t")) and bool(l.strip())))
      out.append(_list(lines[i:end], resolve_image))
      i = end
    else:
      end = _run_end(lines, i, lambda l: bool(l.strip()) and not (
          _HEADING.match(l) or _ITEM.match(l) or l.lstrip().startswith(("|", "```"))))
      out.append(_paragraph(" ".join(l.strip() for l in lines[i:end]), resolve_image))
      i = end
  return "\n".join(out) + "\n"


def _run_end(lines: Sequence[str], start: int, belongs: Callable[[str], bool]) -> int:
  """The index after the run of lines from ``start`` (always at least one)."""
  end = start + 1
  while end < len(lines) and belongs(lines[end]):
    end += 1
  return end


def _paragraph(text: str, resolve_image: ImageResolver) -> str:
  match = _FIGURE.match(text)
  if not match:
    return f"<p>{_inline(text, resolve_image)}</p>"
  caption, src = match.groups()
  return (f"<figure>{_image(caption, src, resolve_image)}"
          f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _list(lines: Sequence[str], resolve_image: ImageResolver) -> str:
  items: list[str] = []
  for line in lines:
    match = _ITEM.match(line)
    if match and (not items or len(match.group(1)) < 2):
      items.append(match.group(2).strip())
    else:  # a continuation (or a deeper item, kept as text)
      items[-1] += " " + line.strip()
  return "<ul>\n" + "\n".join(f"<li>{_inline(item, resolve_image)}</li>"
                              for item in items) + "\n</ul>"


def _table(lines: Sequence[str], resolve_image: ImageResolver) -> str:
  """A pipe table; the row after the header sets each column's alignment."""
  rows = [_cells(l) for l in lines]
  has_header = len(lines) > 1 and bool(_RULE.match(lines[1]))
  align = ([("right" if c.endswith(":") and not c.startswith(":") else
             "center" if c.startswith(":") and c.endswith(":") else "")
            for c in rows[1]] if has_header else [])
  out = ["<table>"]
  def row_html(cells: Sequence[str], tag: str) -> str:
    parts = []
    for c, cell in enumerate(cells):
      style = f' class="{align[c]}"' if c < len(align) and align[c] else ""
      parts.append(f"<{tag}{style}>{_inline(cell, resolve_image)}</{tag}>")
    return "<tr>" + "".join(parts) + "</tr>"
  if has_header:
    out.append("<thead>" + row_html(rows[0], "th") + "</thead>")
    rows = rows[2:]
  out.append("<tbody>")
  out += [row_html(cells, "td") for cells in rows]
  out.append("</tbody></table>")
  return "\n".join(out)


def _cells(line: str) -> list[str]:
  """A table row's cells; a ``|`` inside backticks does not split."""
  line = line.strip()
  line = line[1:] if line.startswith("|") else line
  line = line[:-1] if line.endswith("|") else line
  cells, current, in_code = [], [], False
  for ch in line:
    if ch == "`":
      in_code = not in_code
    if ch == "|" and not in_code:
      cells.append("".join(current).strip())
      current = []
    else:
      current.append(ch)
  cells.append("".join(current).strip())
  return cells


def _inline(text: str, resolve_image: ImageResolver) -> str:
  """Inline Markdown of ``text``; everything else escaped."""
  out, last = [], 0
  for match in _INLINE.finditer(text):
    out.append(html.escape(text[last:match.start()]))
    last = match.end()
    group = match.lastgroup
    if match.group("code") is not None:
      out.append(f"<code>{html.escape(match.group('code'))}</code>")
    elif match.group("src") is not None:
      out.append(_image(match.group("alt"), match.group("src"), resolve_image))
    elif match.group("href") is not None:
      out.append(f'<a href="{html.escape(_href(match.group("href")))}">'
                 f"{_inline(match.group('text'), resolve_image)}</a>")
    elif match.group("bold") is not None:
      out.append(f"<strong>{_inline(match.group('bold'), resolve_image)}</strong>")
    elif match.group("em") is not None:
      out.append(f"<em>{_inline(match.group('em'), resolve_image)}</em>")
    else:
      word = match.group(group)
      out.append(f'<span class="verdict {word.lower()}">{word}</span>')
  out.append(html.escape(text[last:]))
  return "".join(out)


def _href(target: str) -> str:
  """A link's target; a relative link to a ``report.md`` goes to its HTML page."""
  if "://" not in target and re.search(r"(^|/)report\.md(#.*)?$", target):
    return target.replace("report.md", REPORT_HTML, 1)
  return target


def _image(alt: str, src: str, resolve_image: ImageResolver) -> str:
  uri = resolve_image(src)
  if uri is None:
    return (f'<span class="missing" data-missing="{html.escape(src)}">missing '
            f"figure: <code>{html.escape(src)}</code></span>")
  return f'<img src="{uri}" alt="{html.escape(alt)}" data-file="{html.escape(src)}">'


def _figure_uri(workdir: str, src: str) -> str | None:
  """A figure under ``workdir`` as a data: URI; None if missing or not an image."""
  if "://" in src or src.startswith("data:"):
    return None  # the page fetches nothing
  path = os.path.normpath(os.path.join(workdir, src))
  kind = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
          ".jpeg": "image/jpeg"}.get(os.path.splitext(path)[1].lower())
  if kind is None or not os.path.isfile(path):
    logging.warning("%s: figure %s is missing; report.html says so", workdir, src)
    return None
  with open(path, "rb") as f:
    return f"data:{kind};base64," + base64.b64encode(f.read()).decode("ascii")


def _slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", _plain(text).lower()).strip("-") or "section"


def _plain(text: str) -> str:
  """Markdown inline text without its markup (titles, anchors)."""
  text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
  return re.sub(r"[`*]", "", text)


def _nav(body: str) -> str:
  """Links to the page's sections (its h2 headings)."""
  links = [f'<a href="#{anchor}">{re.sub(r"<[^>]+>", "", content)}</a>'
           for anchor, content in re.findall(r'<h2 id="([^"]+)">(.*?)</h2>', body)]
  return f'<nav>{" · ".join(links)}</nav>' if len(links) > 1 else ""


# ------------------------------------------------------------ map browser ---

def map_browser(workdir: str, summary: Mapping[str, Any] | None = None) -> str:
  """The map browser's section, or '' when ``workdir`` has no example maps."""
  skipped: list[str] = []
  experiments = _browser_data(workdir, summary or {}, skipped)
  if not experiments:
    return ""
  data = json.dumps({"experiments": experiments}).replace("</", "<\\/")
  colorbar = _encode(_colorize(np.linspace(0.0, 1.0, 256)[None, :].repeat(12, 0)))
  note = (f'<p class="missing">Not shown (unreadable): '
          f'{", ".join(f"<code>{html.escape(s)}</code>" for s in skipped)}</p>'
          if skipped else "")
  return _BROWSER.format(data=data, colorbar=colorbar, note=note)


def _browser_data(workdir: str, summary: Mapping[str, Any],
                  skipped: list[str]) -> list[dict[str, Any]]:
  """Per experiment: its methods, states, example images and every map as a
  PNG; the map files that cannot be shown are appended to ``skipped``."""
  found: dict[str, dict[str, np.ndarray]] = {}
  states: dict[str, list[str]] = {}
  for path in sorted(glob.glob(os.path.join(workdir, MAPS_DIR, "*.npy"))):
    name = os.path.basename(path)[:-len(".npy")]
    experiment, method = _split_part(name, summary.get("experiment"))
    try:
      maps = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      logging.warning("%s: unreadable (%s); not in report.html", path, e)
      skipped.append(f"{MAPS_DIR}/{name}.npy")
      continue
    if maps.ndim != 4 or maps.shape[0] == 0 or maps.shape[1] == 0:
      logging.warning("%s: shape %s, expected (states, images, H, W); not in "
                      "report.html", path, maps.shape)
      skipped.append(f"{MAPS_DIR}/{name}.npy")
      continue
    found.setdefault(experiment, {})[method] = maps
    names = _manifest_states(workdir, name)
    if names is not None and len(names) == maps.shape[0]:
      states.setdefault(experiment, names)
  order = list(summary.get("methods") or []) + list(summary.get("controls") or [])
  rank = lambda m: (order.index(m) if m in order else len(order), m)  # noqa: E731
  return [_experiment_data(workdir, summary, experiment,
                           {m: maps[m] for m in sorted(maps, key=rank)},
                           states.get(experiment))
          for experiment, maps in found.items()]


def _split_part(name: str, experiment: str | None) -> tuple[str, str]:
  """(experiment, method) of a part name ``<experiment>-<method>``."""
  if experiment and name.startswith(experiment + "-"):
    return experiment, name[len(experiment) + 1:]
  experiment, _, method = name.partition("-")
  return experiment, method or experiment


def _manifest_states(workdir: str, name: str) -> list[str] | None:
  path = os.path.join(workdir, "parts", f"{name}.json")
  try:
    return [str(s) for s in io_utils.read_json(path)["states"]]
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _experiment_data(workdir: str, summary: Mapping[str, Any], experiment: str,
                     maps: Mapping[str, np.ndarray], names: list[str] | None
                     ) -> dict[str, Any]:
  num_states = max(m.shape[0] for m in maps.values())
  names = names or [f"state{s}" for s in range(num_states)]
  film = _film(workdir, experiment)
  count = min(m.shape[1] for m in maps.values())
  if film is not None:
    count = min(count, len(film["image"]))
  images = []
  for e in range(count):
    entry: dict[str, Any] = {"id": str(e)}
    if film is not None:
      entry["id"] = str(film["id"][e]) if "id" in film else str(e)
      entry.update(_film_pngs(film, e))
    images.append(entry)
  return {
      "name": experiment,
      "states": [{"name": n, "label": l}
                 for n, l in zip(names, _state_labels(summary, experiment, names))],
      "methods": list(maps),
      "images": images,
      "film": film is not None,
      "maps": {method: [[_encode(_colorize(m[s, e])) for e in range(count)]
                        for s in range(m.shape[0])] for method, m in maps.items()},
  }


def _state_labels(summary: Mapping[str, Any], experiment: str,
                  names: Sequence[str]) -> list[str]:
  """Each state's label: its name; a cascade stage adds the block it randomized."""
  stages = summary.get("stages") or []
  if summary.get("experiment") != experiment or len(stages) != len(names):
    return list(names)
  labels = []
  for name, stage in zip(names, stages):
    blocks = list(stage.get("randomized_blocks") or [])
    if not blocks:
      labels.append(f"{name}: trained")
    elif summary.get("mode") == "independent":
      labels.append(f"{name}: only {blocks[-1]}")
    else:
      labels.append(f"{name}: +{blocks[-1]} ({len(blocks)} randomized)")
  return labels


def _film(workdir: str, experiment: str) -> dict[str, np.ndarray] | None:
  """The example images of ``maps/<experiment>-images.npz``; None if absent."""
  path = os.path.join(workdir, MAPS_DIR, f"{experiment}{IMAGES_SUFFIX}.npz")
  if not os.path.exists(path):
    logging.warning("%s is missing: report.html shows the maps without the images",
                    path)
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      film = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    logging.warning("%s: unreadable (%s); report.html shows the maps alone", path, e)
    return None
  if "image" not in film or film["image"].ndim not in (3, 4):
    logging.warning("%s: no 'image' array (N, H, W[, C]); report.html shows the "
                    "maps alone", path)
    return None
  return film


def _film_pngs(film: Mapping[str, np.ndarray], e: int) -> dict[str, str]:
  """Image ``e`` with its ground truth drawn, and the ground truth alone (RGBA)."""
  image = np.asarray(film["image"][e], np.float32)
  image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
  height, width = image.shape[:2]
  scale = max(1, math.ceil(MIN_DISPLAY_PIXELS / max(height, width)))
  size = (width * scale, height * scale)
  shown = Image.fromarray(_to_uint8(image)).convert("RGB").resize(size, Image.NEAREST)
  outline = Image.new("RGBA", size, (0, 0, 0, 0))
  num_boxes = int(film["num_boxes"][e]) if "num_boxes" in film else 0
  boxes = np.asarray(film["boxes"][e]).reshape(-1, 4)[:num_boxes] if num_boxes else []
  mask = np.asarray(film["mask"][e], bool) if "mask" in film else None
  if len(boxes):
    for target in (shown, outline):
      draw = ImageDraw.Draw(target)
      for x, y, w, h in boxes:  # pixels x <= col < x + w, as figures.box_patches
        draw.rectangle([x * scale, y * scale, (x + w) * scale - 1, (y + h) * scale - 1],
                       outline=GROUND_TRUTH_RGBA, width=max(1, scale // 2))
  elif mask is not None and mask.any():
    edge = np.kron(_mask_edge(mask), np.ones((scale, scale), bool))
    pixels = np.zeros(edge.shape + (4,), np.uint8)
    pixels[edge] = GROUND_TRUTH_RGBA
    layer = Image.fromarray(pixels, "RGBA")
    outline = layer
    shown = Image.alpha_composite(shown.convert("RGBA"), layer).convert("RGB")
  return {"image": _encode(shown), "truth": _encode(outline),
          "truth_kind": "boxes" if len(boxes) else
                        "mask" if mask is not None and mask.any() else "none"}


def _mask_edge(mask: np.ndarray) -> np.ndarray:
  """Pixels of ``mask`` with a 4-neighbour outside it (the outline)."""
  padded = np.pad(mask, 1)
  inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
  return mask & ~inner


def _to_uint8(image: np.ndarray) -> np.ndarray:
  return (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _colorize(values: np.ndarray) -> Image.Image:
  """A map in [0, 1] through the heat colormap, as a palette image.

  The palette is the colormap's lookup table and each pixel the entry
  matplotlib picks (``floor(value * N)``, clipped): the colours of
  ``imshow`` with ``vmin=0, vmax=1``, at a third of an RGB PNG's size.
  """
  cmap = matplotlib.colormaps[MAP_CMAP]
  index = np.clip(np.nan_to_num(np.asarray(values, np.float64)) * cmap.N, 0, cmap.N - 1)
  image = Image.fromarray(index.astype(np.uint8), "P")
  lut = (cmap(np.arange(cmap.N))[:, :3] * 255 + 0.5).astype(np.uint8)
  image.putpalette(lut.reshape(-1).tolist())
  return image


def _encode(image: Image.Image) -> str:
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _read_summary(workdir: str) -> dict[str, Any]:
  try:
    return io_utils.read_json(os.path.join(workdir, "summary.json"))
  except (OSError, ValueError):
    return {}


# ------------------------------------------------------------------- page ---

_PAGE = """<!DOCTYPE html>
<html lang="en" data-errors="[]">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<script>{probe}</script>
<style>{style}</style>
</head>
<body>
{nav}
<main>
{body}
</main>
<footer>Written from <code>report.md</code> by <code>saliency_jax.report.html</code>;
self-contained: figures and maps are embedded.</footer>
<script>{script}</script>
</body>
</html>
"""

_STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1f23;
 margin:0 auto;max-width:1180px;padding:0 24px 48px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 0;
 font-size:13px;z-index:2}
nav a{color:#2257a5;text-decoration:none}
h1{font-size:26px;margin:24px 0 8px}h2{border-bottom:1px solid #e3e3e3;margin-top:32px}
a{color:#2257a5}
code{background:#f2f3f5;border-radius:3px;padding:0 3px;font-size:90%}
pre{background:#f6f7f9;padding:10px;overflow-x:auto;border:1px solid #e3e3e3}
pre code{background:none;padding:0}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13.5px;display:block;
 overflow-x:auto}
th,td{border:1px solid #d8dbe0;padding:4px 8px;vertical-align:top}
th{background:#f2f4f7;text-align:left}
tbody tr:nth-child(even){background:#fafbfc}
.right{text-align:right}.center{text-align:center}
.verdict{font-weight:600;padding:1px 6px;border-radius:3px}
.verdict.pass{background:#d8f3dc;color:#14532d}
.verdict.fail{background:#fde2e1;color:#8a1c1c}
.verdict.invalid{background:#fff0c2;color:#7a4b00}
figure{margin:12px 0 20px}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#555}
.missing{color:#8a1c1c;font-weight:600}
#map-browser{border:1px solid #d8dbe0;border-radius:6px;padding:12px 16px;
 background:#fbfcfd;margin:16px 0}
#map-browser h2{margin-top:4px}
.controls{display:flex;flex-wrap:wrap;gap:14px;align-items:center;margin-bottom:10px}
.controls label{font-size:13px;color:#444}
.controls select{font-size:14px;margin-left:4px}
.panels{display:flex;flex-wrap:wrap;gap:18px}
.panel{text-align:center;font-size:13px;color:#444}
.frame{position:relative;width:320px;height:320px;background:#000}
.frame img{position:absolute;left:0;top:0;width:320px;height:320px;
 image-rendering:pixelated}
.colorbar{display:flex;align-items:center;gap:6px;font-size:12px;color:#555;margin-top:4px}
.colorbar img{width:200px;height:10px}
footer{margin-top:40px;color:#888;font-size:12px}
"""

_PROBE_SCRIPT = r"""
(function () {
  var root = document.documentElement, errors = [];
  function record(message) {
    errors.push(String(message));
    root.setAttribute('data-errors', JSON.stringify(errors));
  }
  window.reportError = record;
  window.onerror = function (message, source, line) {
    record(message + ' (line ' + line + ')');
  };
  window.addEventListener('unhandledrejection', function (event) {
    record('unhandled rejection: ' + event.reason);
  });
  function loaded(img, ok) {
    img.setAttribute('data-load', ok ? 'ok' : 'error');
    img.setAttribute('data-natural-width', String(img.naturalWidth || 0));
  }
  window.watchImage = function (img) {
    if (img.getAttribute('data-watched')) return;
    img.setAttribute('data-watched', '1');
    img.addEventListener('load', function () { loaded(img, true); });
    img.addEventListener('error', function () { loaded(img, false); });
    if (img.complete && img.getAttribute('src')) loaded(img, img.naturalWidth > 0);
  };
  document.addEventListener('DOMContentLoaded', function () {
    Array.prototype.forEach.call(document.images, window.watchImage);
  });
})();
"""

_BROWSER = """<section id="map-browser">
<h2 id="map-browser-heading">Map browser</h2>
<p>The example maps of this run (post-processed: |.|, channel sum, 99th percentile
clip, [0, 1]): pick an image, a method and a model state. The ground truth is drawn in
red on the image, and outlined on the map when the box below is ticked. A view can be
linked: its choice is kept in the address (<code>#method=...&amp;stage=...&amp;image=...</code>).</p>
<div class="controls">
<label id="experiment-control">experiment<select id="select-experiment"></select></label>
<label>image<select id="select-image"></select></label>
<label>method<select id="select-method"></select></label>
<label>model state<select id="select-stage"></select></label>
<label><input type="checkbox" id="show-truth" checked> ground truth on the map</label>
</div>
<div class="panels">
<div class="panel"><div class="frame" id="image-frame"><img id="image-view" alt="image"></div>
<div id="image-caption"></div></div>
<div class="panel"><div class="frame"><img id="map-view" alt="saliency map">
<img id="truth-view" alt="ground truth outline"></div>
<div id="map-caption"></div>
<div class="colorbar">0<img alt="colour scale" src="{colorbar}">1</div></div>
</div>
{note}
<script type="application/json" id="map-data">{data}</script>
</section>
"""

_BROWSER_SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById('map-data').textContent);
  var byName = {};
  data.experiments.forEach(function (x) { byName[x.name] = x; });
  var select = {};
  ['experiment', 'image', 'method', 'stage'].forEach(function (n) {
    select[n] = document.getElementById('select-' + n);
  });
  var views = {image: document.getElementById('image-view'),
               map: document.getElementById('map-view'),
               truth: document.getElementById('truth-view')};
  var showTruth = document.getElementById('show-truth');
  function options(sel, items) {
    sel.innerHTML = '';
    items.forEach(function (item) {
      var o = document.createElement('option');
      o.value = item.value; o.textContent = item.label;
      o.setAttribute('data-name', item.name);
      sel.appendChild(o);
    });
  }
  function setSrc(img, src) {
    window.watchImage(img);
    if (!src) { img.removeAttribute('src'); img.style.display = 'none'; return; }
    img.style.display = '';
    if (img.getAttribute('src') !== src) {
      img.setAttribute('data-load', 'pending');
      img.setAttribute('src', src);
    }
  }
  function current() { return byName[select.experiment.value]; }
  function fillExperiment() {
    var x = current();
    options(select.image, x.images.map(function (im, e) {
      return {value: String(e), name: im.id, label: e + ': ' + im.id}; }));
    options(select.method, x.methods.map(function (m) {
      return {value: m, name: m, label: m}; }));
    options(select.stage, x.states.map(function (s, i) {
      return {value: String(i), name: s.name, label: s.label}; }));
  }
  function show() {
    var x = current(), e = +select.image.value, s = +select.stage.value;
    var method = select.method.value, image = x.images[e];
    var stages = x.maps[method];
    var src = stages && stages[s] ? stages[s][e] : null;
    views.map.setAttribute('data-key', [x.name, method, s, e].join('/'));
    setSrc(views.map, src);
    setSrc(views.image, x.film ? image.image : null);
    setSrc(views.truth, x.film && showTruth.checked ? image.truth : null);
    document.getElementById('image-caption').textContent = x.film ?
        'image ' + image.id + ' (' + image.truth_kind + ' in red)' :
        'example images not saved in maps/ (a run from before they were): maps only';
    document.getElementById('map-caption').textContent = src ?
        method + ', ' + x.states[s].label :
        method + ' has no map for ' + x.states[s].label;
    var hash = 'experiment=' + encodeURIComponent(x.name) + '&method=' +
        encodeURIComponent(method) + '&stage=' + s + '&image=' + e;
    if (location.hash.slice(1) !== hash) history.replaceState(null, '', '#' + hash);
  }
  select.experiment.addEventListener('change', function () { fillExperiment(); show(); });
  ['image', 'method', 'stage'].forEach(function (n) {
    select[n].addEventListener('change', show);
  });
  showTruth.addEventListener('change', show);
  function choose(name, wanted) {
    var sel = select[name];
    var option = Array.prototype.find.call(sel.options, function (o) {
      return o.value === wanted || o.getAttribute('data-name') === wanted; });
    if (!option) {
      document.documentElement.setAttribute('data-fragment-problem',
                                            'no ' + name + ' ' + wanted);
      return;
    }
    sel.value = option.value;
    sel.dispatchEvent(new Event('change', {bubbles: true}));
  }
  function applyFragment(hash) {
    var params = new URLSearchParams(hash.replace(/^#/, ''));
    var any = false;
    ['experiment', 'image', 'method', 'stage'].forEach(function (name) {
      if (params.has(name)) { choose(name, params.get(name)); any = true; }
    });
    if (any) document.getElementById('map-browser').scrollIntoView();
  }
  options(select.experiment, data.experiments.map(function (x) {
    return {value: x.name, name: x.name, label: x.name}; }));
  document.getElementById('experiment-control').style.display =
      data.experiments.length > 1 ? '' : 'none';
  var linked = location.hash;  // read before show() writes the default view's
  fillExperiment();
  show();
  applyFragment(linked);  // as a user's choice: through the change events
  window.addEventListener('hashchange', function () { applyFragment(location.hash); });
  document.documentElement.setAttribute('data-browser-ready', '1');
})();
"""
