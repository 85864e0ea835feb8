"""Synthetic frontal chest radiographs with boxed lung opacities.

A phantom is a sum of soft-edged anatomical layers (body wall, lungs,
mediastinum and heart, spine, ribs, clavicles, lung vessels) on a normalized
grid ``(u, v) in [-1, 1]^2`` (u to the image right = the patient's left, v
down), posed by a small random similarity transform, blurred, noised and
windowed with a random gamma. A positive image adds 1-3 opacities (compact
bumps modulated by smooth noise, confined to the lung fields), each with a
tight box in the RSNA convention ``(x, y, width, height)`` in pixels, ``x, y``
the top-left corner: the bounding box of the pixels where that opacity adds
more than ``_BOX_THRESHOLD`` of its peak to the blurred image.

Every example is a pure function of ``(seed, index)`` and the options, through
``np.random.default_rng([seed, index, stream])``, so example ``i`` never depends
on which other examples are generated; the anatomy uses its own stream, so
changing ``prevalence`` or ``shortcut`` changes labels and findings, not
patients.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from scipy import ndimage

from saliency_jax import progress

MAX_BOXES = 4
SPLITS = ("train", "validation", "test")
# Per-pixel truth of a phantom beyond the box mask (stored by the TFDS build).
PART_MASKS = ("marker_mask", "opacity_mask")

# Box = where an opacity adds more than this fraction of its own peak: low
# enough that the box holds everything a reader could see of it.
_BOX_THRESHOLD = 0.02
# Random streams of one example; fixed so that examples stay reproducible.
_LABEL, _ANATOMY, _FINDINGS, _SHORTCUT = 0, 1, 2, 3


def rasterize_boxes(boxes: np.ndarray, num_boxes: np.ndarray | int,
                    height: int, width: int) -> np.ndarray:
  """Union of boxes as a mask: pixel (r, c) is set iff y <= r < y + h and x <= c < x + w.

  Args:
    boxes: ``(..., K, 4)`` boxes ``(x, y, width, height)`` in pixels.
    num_boxes: ``(...)`` count of valid leading rows of ``boxes``.
    height: mask height.
    width: mask width.

  Returns:
    ``(..., height, width)`` bool mask (all False where ``num_boxes == 0``).
  """
  boxes = np.asarray(boxes, np.float64)
  num_boxes = np.asarray(num_boxes)
  rows, cols = np.arange(height), np.arange(width)
  mask = np.zeros(boxes.shape[:-2] + (height, width), bool)
  for k in range(boxes.shape[-2]):  # K is small; (..., K, H, W) could be large
    x, y, w, h = (boxes[..., k, i, None] for i in range(4))  # (..., 1)
    in_rows = (rows >= y) & (rows < y + h) & (k < num_boxes)[..., None]  # (..., H)
    in_cols = (cols >= x) & (cols < x + w)  # (..., W)
    mask |= in_rows[..., :, None] & in_cols[..., None, :]
  return mask


def split_ranges(num_train: int, num_validation: int,
                 num_test: int) -> dict[str, tuple[int, int]]:
  """Disjoint index ranges ``(start, count)``: train first, then validation, then test."""
  counts = dict(zip(SPLITS, (num_train, num_validation, num_test)))
  starts = np.cumsum([0, num_train, num_validation])
  return {s: (int(a), counts[s]) for s, a in zip(SPLITS, starts)}


def example_id(seed: int, index: int) -> str:
  return f"synth-{seed}-{index:06d}"


# ----------------------------------------------------------------------------
# Shape primitives on the normalized grid. `edge` is a blur width in grid
# units (2 / image_size per pixel).


def _smoothstep(t: np.ndarray) -> np.ndarray:
  t = np.clip(t, 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


def _soft_inside(signed: np.ndarray, edge: float) -> np.ndarray:
  """1 inside (signed > 0), 0 outside, a smooth ramp of width ``edge`` between."""
  return _smoothstep(0.5 + signed / edge)


def _ellipse(u, v, cu, cv, au, av, edge, angle=0.0):
  """Soft ellipse; the signed distance is approximated by (1 - r) * min(au, av)."""
  c, s = math.cos(angle), math.sin(angle)
  du, dv = u - cu, v - cv
  p, q = (c * du + s * dv) / au, (-s * du + c * dv) / av
  return _soft_inside((1.0 - np.sqrt(p * p + q * q)) * min(au, av), edge)


def _band(dist: np.ndarray, half_width: float, edge: float) -> np.ndarray:
  return _soft_inside(half_width - np.abs(dist), edge)


@functools.lru_cache(maxsize=16)
def _bspline_upsampler(size: int, cells: int) -> np.ndarray:
  """(size, cells + 3) cubic B-spline weights from coarse nodes to pixel centres."""
  t = (np.arange(size) + 0.5) * cells / size + 1.0
  d = np.abs(t[:, None] - np.arange(cells + 3)[None, :])
  w = np.where(d < 1, 2 / 3 - d ** 2 + d ** 3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0))
  return w.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
  """Unit-variance noise, smooth on the scale of ``size / cells`` pixels: B C B^T, C white."""
  b = _bspline_upsampler(size, cells)
  fine = b @ rng.standard_normal((cells + 3, cells + 3)).astype(np.float32) @ b.T
  return (fine - fine.mean()) / (fine.std() + 1e-6)


def _bilinear(table: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
  """Bilinear lookup of ``table`` at fractional (rows, cols); rows wrap, cols clamp.

  Rows must lie in [0, n], columns in [0, m - 1].
  """
  n, m = table.shape
  flat = np.concatenate([table, table[:2]]).ravel()  # wrapped rows, no modulo
  r, c = np.floor(rows), np.minimum(np.floor(cols), m - 2)
  fr, fc = rows - r, cols - c
  k = (r * m + c).astype(np.intp)
  top = flat.take(k) * (1 - fc) + flat.take(k + 1) * fc
  bottom = flat.take(k + m) * (1 - fc) + flat.take(k + m + 1) * fc
  return top * (1 - fr) + bottom * fr


def _marker(size: int, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
  """A lead side marker: a saturated letter 'L' about 10% of the image tall.

  Like a laterality tag, it sits in one of the four corners (uniform, from
  ``rng``), ``margin + jitter`` pixels from both edges.

  Returns the letter's pixel mask and the row and column of its top-left corner.
  """
  n = max(8, int(round(size * 0.1)))
  t = max(2, n // 4)
  letter = np.zeros((n, n), bool)
  letter[:, :t] = True
  letter[n - t:, :] = True
  margin = max(1, size // 32)
  jitter = rng.integers(0, max(1, size // 32) + 1, size=2)
  corner = int(rng.integers(4))  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
  row = margin + jitter[0] if corner < 2 else size - margin - n - jitter[0]
  col = margin + jitter[1] if corner % 2 == 0 else size - margin - n - jitter[1]
  return letter, int(row), int(col)


# ----------------------------------------------------------------------------
# Anatomy.


def _anatomy(rng: np.random.Generator, size: int) -> dict[str, Any]:
  """Draws one patient: pose, shape parameters and smooth texture fields."""
  f32 = np.float32
  px = 2.0 / size
  edge = max(0.025, 1.5 * px)
  angle = math.radians(rng.uniform(-4.0, 4.0))
  scale = rng.uniform(0.92, 1.04)
  shift = rng.uniform(-0.05, 0.05, size=2)
  grid = (np.arange(size, dtype=f32) + 0.5) * f32(px) - 1.0
  x, y = np.meshgrid(grid, grid)
  c, s = math.cos(angle), math.sin(angle)
  u = ((c * (x - shift[0]) + s * (y - shift[1])) / scale).astype(f32)
  # The film is framed from the lower neck to just below the domes.
  v = ((-s * (x - shift[0]) + c * (y - shift[1])) / scale - 0.07).astype(f32)

  # Body: trunk to near the image edges, sloping shoulders, the neck on top.
  bw = rng.uniform(0.9, 1.02)
  neck2 = (u / rng.uniform(0.2, 0.25)) ** 2
  # Clipped so that exp does not underflow into slow subnormals.
  top = -0.97 + 0.3 * np.abs(u) ** 1.5 - 0.6 * np.exp(-np.minimum(neck2 * neck2 * neck2, 30.0))
  half_width = bw - 0.08 * (v - 0.3) ** 2
  body = _soft_inside(v - top, 0.08) * _soft_inside(half_width - np.abs(u), 0.06)

  # Heart: the left ventricle bulges to the image right, the right atrium
  # makes the smaller left border.
  hs = rng.uniform(0.9, 1.12)
  heart = np.maximum(
      _ellipse(u, v, rng.uniform(0.1, 0.16), rng.uniform(0.3, 0.38),
               0.36 * hs, 0.27 * hs, 2 * edge, angle=rng.uniform(-0.5, -0.25)),
      _ellipse(u, v, -0.1, 0.3, 0.17 * hs, 0.22 * hs, 2 * edge))
  knob = 0.07 * np.exp(-((v + rng.uniform(0.2, 0.28)) / 0.09) ** 2) * (u > 0)
  med_half = rng.uniform(0.1, 0.13) + knob + 0.04 * _smoothstep((v + 0.2) / 0.4)
  mediastinum = _band(u - 0.01, med_half, 2 * edge) * _soft_inside(v + 0.95, 0.1)

  # Lungs, in a lateral coordinate l (positive outward) for each side; the
  # right dome (image left) sits higher than the left one.
  lungs, below, vessels = [], [], np.zeros_like(u)
  domes = (rng.uniform(0.3, 0.4), rng.uniform(0.36, 0.46))
  for side, dome in zip((-1.0, 1.0), domes):
    l = side * u
    lc, la = rng.uniform(0.38, 0.42), rng.uniform(0.42, 0.48)
    vc, vb = rng.uniform(0.02, 0.1), rng.uniform(0.7, 0.8)
    r = np.sqrt(((l - lc) / la) ** 2 + ((v - vc) / vb) ** 2)
    cage = _soft_inside((1.0 - r) * la, edge)
    diaphragm = _soft_inside(dome + 1.6 * (l - 0.38) ** 2 - v, edge)
    below.append(1.0 - diaphragm)
    lung = cage * diaphragm * _soft_inside(l - 0.04, edge)
    lung = lung * (1.0 - heart) * (1.0 - mediastinum)
    lungs.append(lung)
    # Vessels: streaks radiating from the hilum, tapering outward.
    hl, hv = 0.2, rng.uniform(-0.08, 0.0)
    theta = np.arctan2(v - hv, l - hl)
    rad = np.sqrt((l - hl) ** 2 + (v - hv) ** 2)
    streak = rng.standard_normal((48, 6)).astype(f32)
    streak = ndimage.gaussian_filter(streak, (0.7, 1.0), mode="wrap")
    streak /= streak.std() + 1e-6
    ti = (theta + math.pi) / (2 * math.pi) * 48
    ri = np.clip(rad / 0.9 * 5, 0, 5)
    field = _bilinear(streak, ti, ri)
    # Radial noise converges to a point at the hilum: fade it there and put
    # the hilar vessels in as a soft blob instead.
    taper = np.exp(-rad / 0.45) * _smoothstep(rad / 0.25)
    hilum = np.exp(-((l - hl) ** 2 / 0.006 + (v - hv) ** 2 / 0.02))
    vessels += lung * (np.maximum(field, 0) * taper + 0.8 * hilum)
  lung_soft = np.maximum(lungs[0], lungs[1])
  # Abdomen under the domes (liver, spleen), with a gastric air bubble under
  # the left dome.
  to_left = _smoothstep(0.5 + u / 0.3)
  abdomen = (1.0 - to_left) * below[0] + to_left * below[1]
  if rng.random() < 0.6:
    abdomen = abdomen - 0.5 * _ellipse(u, v, rng.uniform(0.3, 0.45), domes[1] + 0.15,
                                       0.12, 0.07, 2 * edge)

  # Spine: a band with vertebral bodies (bright) and disc spaces (dark).
  period = rng.uniform(0.1, 0.13)
  phase = rng.uniform(0, 2 * math.pi)
  vert = 0.75 + 0.25 * np.cos(2 * math.pi * v / period + phase)
  spine = _band(u, rng.uniform(0.06, 0.075), edge) * vert

  # Ribs: posterior arcs (up then down laterally) and fainter anterior ones.
  ribs = np.zeros_like(u)
  l_abs = np.abs(u)
  spacing = rng.uniform(0.13, 0.15)
  v0 = rng.uniform(-0.78, -0.7)
  curve = rng.uniform(0.25, 0.35)
  thick = rng.uniform(0.022, 0.03)
  rib_zone = _soft_inside(l_abs - 0.07, edge) * _soft_inside(0.92 - l_abs, 0.1)
  l2 = l_abs * l_abs
  arc = v - v0 + 0.15 * l_abs - curve * l2 - 0.5 * l2 * l_abs
  # Vertical offset -> distance across the rib: divide by sqrt(1 + slope^2).
  across = 1.0 / np.sqrt(1.0 + (2 * curve * l_abs - 0.15 + 1.5 * l2) ** 2)
  for i in range(10):
    t = thick * (1.0 + 0.04 * i)
    d = np.abs(arc - i * spacing) * across
    # Cortical bone is denser than the marrow: brighter rib edges.
    ribs += _band(d, t, edge) * (0.55 + 0.45 * np.minimum(d / t, 1.0) ** 2)
  anterior_arc = v - v0 - 0.15 - 0.35 * (0.9 - l_abs) ** 2
  anterior = np.zeros_like(u)
  for i in range(6):
    anterior += _band(anterior_arc - i * spacing * 1.05, thick * 0.8, 2 * edge)
  ribs += 0.45 * anterior * _soft_inside(l_abs - 0.35, 0.1)
  ribs *= rib_zone * _soft_inside(0.75 - v, 0.2)

  clavicles = np.zeros_like(u)
  if rng.random() < 0.85:
    cv0, tilt = rng.uniform(-0.66, -0.58), rng.uniform(0.08, 0.18)
    for sgn in (-1, 1):
      l = sgn * u
      center = cv0 - tilt * (l - 0.08) + 0.08 * np.sin(math.pi * (l - 0.08) / 0.55)
      span = _soft_inside(l - 0.06, edge) * _soft_inside(0.68 - l, edge)
      clavicles += _band(v - center, 0.03, edge) * span

  return dict(u=u, v=v, body=body, lung_soft=lung_soft, abdomen=abdomen,
              lung_hard=lung_soft > 0.5, heart=heart, mediastinum=mediastinum,
              spine=spine, ribs=ribs, clavicles=clavicles, vessels=vessels,
              edge=edge, levels=dict(
                  tissue=rng.uniform(0.5, 0.6), lung=rng.uniform(0.28, 0.36),
                  heart=rng.uniform(0.2, 0.26), bone=rng.uniform(0.16, 0.22),
                  vessel=rng.uniform(0.1, 0.14), mottle=rng.uniform(0.015, 0.03)))


def _opacities(rng: np.random.Generator, anatomy: dict[str, Any], count: int,
               size: int) -> list[np.ndarray]:
  """``count`` opacity fields (added density), each confined to the lung fields.

  Each is ``a * g / max(g)`` with ``g = (1 - d^2)^2 * clip(0.75 + 0.4 n, 0.35,
  1.4) * lung``: ``d < 1`` the normalized radius of an ellipse, ``n`` smooth
  noise, ``lung`` the lung field shrunk by an edge width (so that the blur does
  not carry the opacity outside the lungs).
  """
  u, v = anatomy["u"], anatomy["v"]
  inner = ndimage.binary_erosion(anatomy["lung_hard"], iterations=2)
  inner_soft = np.clip((anatomy["lung_soft"] - 0.5) * 2.0, 0, 1) * inner
  centres = ndimage.binary_erosion(inner, iterations=max(2, size // 32))
  ys, xs = np.nonzero(centres if centres.any() else anatomy["lung_hard"])
  fields, centers = [], []
  for _ in range(count):
    for _attempt in range(20):
      k = rng.integers(len(ys))
      cu, cv = u[ys[k], xs[k]], v[ys[k], xs[k]]
      au, av = rng.uniform(0.1, 0.22), rng.uniform(0.1, 0.26)
      angle = rng.uniform(0, math.pi)
      c, s = math.cos(angle), math.sin(angle)
      du, dv = u - cu, v - cv
      d2 = ((c * du + s * dv) / au) ** 2 + ((-s * du + c * dv) / av) ** 2
      support = d2 < 1.0
      inside = inner[support].mean() if support.any() else 0.0
      apart = all((cu - pu) ** 2 + (cv - pv) ** 2 > 0.25 ** 2 for pu, pv in centers)
      if inside > 0.8 and apart:
        break
    centers.append((cu, cv))
    noise = _smooth_noise(rng, size, 12)
    bump = np.clip(1.0 - d2, 0, 1) ** 2
    amp = rng.uniform(0.24, 0.38)
    shape = bump * np.clip(0.75 + 0.4 * noise, 0.35, 1.4) * inner_soft
    # Peak-normalized so that a blob clipped by the lung edge stays visible.
    fields.append(amp * shape / max(float(shape.max()), 1e-6))
  return fields


def _tight_box(field: np.ndarray) -> np.ndarray:
  ys, xs = np.nonzero(field > _BOX_THRESHOLD * field.max())
  x0, y0 = xs.min(), ys.min()
  return np.array([x0, y0, xs.max() - x0 + 1, ys.max() - y0 + 1], np.float32)


def phantom(seed: int, index: int, *, image_size: int = 128,
            prevalence: float = 0.5, shortcut: float | None = None,
            return_parts: bool = False,
            omit_opacity: int | None = None) -> dict[str, Any]:
  """One synthetic chest film, a pure function of ``(seed, index)`` and the options.

  Args:
    seed: dataset seed.
    index: example index (splits use disjoint index ranges).
    image_size: height = width in pixels.
    prevalence: P(label = 1).
    shortcut: None (no marker), or p: a bright 'L' marker (a laterality tag)
      sits in a random corner iff ``label == 1`` with probability p, iff
      ``label == 0`` otherwise. Which images carry it and where come from
      the shortcut stream alone: None draws nothing and leaves the pixels
      as they were before markers existed.
    return_parts: also return ``lung`` (bool lung fields), ``opacity_masks``
      (N, H, W) bool = where each opacity adds more than the box threshold,
      and ``marker`` (bool, whether the marker was drawn).
    omit_opacity: draw everything (boxes, masks, random streams) but leave
      opacity ``k`` out of the image: the same patient without that finding,
      whose difference to the full image is what opacity ``k`` changed.

  Returns:
    ``image`` (H, W, 1) float32 in [0, 1], ``label`` int, ``boxes`` (N, 4)
    float32 ``(x, y, w, h)`` with N = 1..3 if positive else 0, ``mask`` (H, W)
    bool = union of the boxes, ``marker_mask`` (H, W) bool = the pixels the
    marker set (all False without one), ``opacity_mask`` (H, W) bool = the
    union of ``opacity_masks``, ``id`` str.
  """
  if not 0.0 <= prevalence <= 1.0:
    raise ValueError(f"prevalence must be in [0, 1], got {prevalence}")
  if shortcut is not None and not 0.0 <= shortcut <= 1.0:
    raise ValueError(f"shortcut must be None or in [0, 1], got {shortcut}")
  if image_size < 32:
    raise ValueError(f"image_size must be >= 32, got {image_size}")
  rngs = [np.random.default_rng([seed, index, k]) for k in range(4)]
  label = int(rngs[_LABEL].random() < prevalence)
  a = _anatomy(rngs[_ANATOMY], image_size)
  lv = a["levels"]
  rng = rngs[_ANATOMY]
  mottle = _smooth_noise(rng, image_size, 24) * a["lung_soft"]
  central = np.maximum(a["heart"], a["mediastinum"])
  density = (lv["tissue"] * a["body"]
             - lv["lung"] * a["lung_soft"]
             + lv["heart"] * np.maximum(central, 0.7 * a["abdomen"]) * a["body"]
             + lv["bone"] * (0.35 * a["spine"] + 0.6 * a["ribs"] * (1.0 - 0.6 * central)
                             + 0.8 * a["clavicles"]) * a["body"]
             + lv["vessel"] * a["vessels"] + lv["mottle"] * mottle)
  # Trachea: an air column in the upper mediastinum.
  density -= 0.12 * _band(a["u"] - 0.01, 0.035, a["edge"]) * _soft_inside(-0.3 - a["v"], 0.05)
  # Heel effect / uneven exposure.
  density += rng.uniform(-0.04, 0.04) * a["v"] + rng.uniform(-0.03, 0.03) * a["u"]

  fields = []
  if label:
    count = int(rngs[_FINDINGS].choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    fields = _opacities(rngs[_FINDINGS], a, count, image_size)
    density = density + sum(f for k, f in enumerate(fields) if k != omit_opacity)

  sigma = rng.uniform(0.5, 0.9) * image_size / 128
  density = ndimage.gaussian_filter(density, sigma, mode="nearest")
  fields = [ndimage.gaussian_filter(f, sigma, mode="nearest") for f in fields]
  density = density + rng.uniform(0.008, 0.02) * rng.standard_normal(density.shape)
  lo, hi = rng.uniform(-0.02, 0.06), rng.uniform(0.95, 1.15)
  image = np.clip((density - lo) / (hi - lo), 0.0, 1.0) ** rng.uniform(0.8, 1.25)

  has_marker = False
  marker_mask = np.zeros((image_size, image_size), bool)
  if shortcut is not None:
    agree = rngs[_SHORTCUT].random() < shortcut
    has_marker = bool(label) == agree
    # Drawn for every image, so an image's corner does not depend on p.
    letter, r0, c0 = _marker(image_size, rngs[_SHORTCUT])
    if has_marker:
      marker_mask[r0:r0 + letter.shape[0], c0:c0 + letter.shape[1]] = letter
      image[marker_mask] = 1.0

  boxes = np.stack([_tight_box(f) for f in fields]) if fields else np.zeros((0, 4), np.float32)
  opacity_masks = np.array([f > _BOX_THRESHOLD * f.max() for f in fields],
                           bool).reshape(-1, image_size, image_size)
  out = dict(image=image.astype(np.float32)[..., None], label=label, boxes=boxes,
             mask=rasterize_boxes(boxes, len(boxes), image_size, image_size),
             marker_mask=marker_mask, opacity_mask=opacity_masks.any(axis=0),
             id=example_id(seed, index))
  if return_parts:
    out["lung"] = a["lung_hard"]
    out["opacity_masks"] = opacity_masks
    out["marker"] = has_marker
  return out


def generate(seed: int, start: int, count: int, **options: Any) -> dict[str, np.ndarray]:
  """Examples ``start .. start + count - 1`` of ``seed`` stacked by `stack_examples`."""
  examples = [phantom(seed, i, **options) for i in progress.track(
      range(start, start + count), f"phantoms {start}..{start + count - 1} of seed "
      f"{seed}", unit="img")]
  size = options.get("image_size", 128)
  return stack_examples(examples, image_shape=(size, size, 1))


def stack_examples(examples: list[dict[str, Any]], *,
                   image_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
  """Stacks examples into arrays; box rows padded with 0 to K = max(MAX_BOXES, most boxes).

  Returns ``image`` (N, H, W, C) float32, ``label`` (N,) int32, ``boxes``
  (N, K, 4) float32, ``num_boxes`` (N,) int32, ``mask`` (N, H, W) bool,
  ``id`` (N,) str, and the phantoms' ``marker_mask`` / ``opacity_mask``
  (N, H, W) bool where every example has them; ``image_shape`` = (H, W, C)
  gives the shapes when N = 0.
  """
  n = len(examples)
  most = max([MAX_BOXES] + [len(e["boxes"]) for e in examples])
  boxes = np.zeros((n, most, 4), np.float32)
  num_boxes = np.zeros((n,), np.int32)
  for i, e in enumerate(examples):
    k = len(e["boxes"])
    boxes[i, :k] = np.asarray(e["boxes"]).reshape(k, 4)
    num_boxes[i] = k
  if n == 0:
    return dict(image=np.zeros((0, *image_shape), np.float32),
                label=np.zeros((0,), np.int32), boxes=boxes, num_boxes=num_boxes,
                mask=np.zeros((0, *image_shape[:2]), bool), id=np.zeros((0,), str))
  out = dict(image=np.stack([e["image"] for e in examples]).astype(np.float32),
             label=np.array([e["label"] for e in examples], np.int32),
             boxes=boxes, num_boxes=num_boxes,
             mask=np.stack([e["mask"] for e in examples]).astype(bool),
             id=np.array([e["id"] for e in examples], dtype=str))
  for field in PART_MASKS:
    if all(field in e for e in examples):
      out[field] = np.stack([e[field] for e in examples]).astype(bool)
  return out
