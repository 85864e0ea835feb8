"""The benchmark's ``metrics`` section: metrics vectorized over maps vs loops.

For each localization metric of ``config.benchmark.metrics.localization``:
the metric vmapped over N maps (and ``curves``: AUPRC, AP and AUROC from one
sort) against a per-map NumPy / scikit-learn / SciPy loop of the same
definition (:data:`LOCALIZATION_REFERENCES`). For each faithfulness metric of
``...faithfulness``: the metric vmapped over images against a per-image
Python loop (one jitted model call per perturbed image, the perturbation in
NumPy); ``road_impute`` against a per-image SciPy sparse solve of the same
system. Timing as the methods' rows (benchmark.py): a first call (compile),
then timed calls each followed by one run of the reference loop, and the
row's ``reference_ratio`` the median over those pairs of the reference's
time per map over ours. Each row also records how far our values are from
the loop's (``max_abs_difference``, over the maps where both are finite), so
a fast row that computes something else shows.

The data: masks are random disks, maps uniform noise plus the mask, clipped
at their 99th percentile and rescaled to [0, 1] as the experiments' maps are
(so the top 1% tie at 1), all from ``jax.random`` keys of ``config.seed``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from flax import nnx
from scipy import ndimage
from sklearn import metrics as skm

from saliency_jax import errors
from saliency_jax import models
from saliency_jax.metrics import faithfulness as fl
from saliency_jax.metrics import localization as loc
from saliency_jax.saliency import explainee as explainee_lib

Row = dict[str, Any]
_MAX_REPEATS = 50
FAITHFULNESS = ("deletion", "insertion", "road", "road_impute",
                "confidence_change")
CURVES = "curves"  # auprc, average_precision and auroc from one sort


# --- per-map references of the localization metrics -----------------------


def _top_by_sort(s: np.ndarray, count: int) -> np.ndarray:
  order = np.argsort(-s.ravel(), kind="stable")
  out = np.zeros(s.size, bool)
  out[order[:count]] = True
  return out


def _ref_auprc(s, m):
  precision, recall, _ = skm.precision_recall_curve(m.ravel(), s.ravel())
  return skm.auc(recall, precision)


def _ref_dice(s, m):
  b, y = _top_by_sort(s, int(m.sum())), m.ravel()
  return 2 * (b & y).sum() / (b.sum() + y.sum())


def _ref_iou(s, m):
  b, y = _top_by_sort(s, int(m.sum())), m.ravel()
  return (b & y).sum() / (b | y).sum()


def _ref_pointing_game(s, m, tolerance=15):
  peaks = s == s.max()
  near = ndimage.distance_transform_edt(~m) <= tolerance
  return (peaks & near).sum() / peaks.sum()


def _ref_rank(s, m):
  area = int(m.sum())
  return (_top_by_sort(s, area) & m.ravel()).sum() / area


def _ref_top_k(s, m, k=1000):
  k = min(k, s.size)
  return (_top_by_sort(s, k) & m.ravel()).sum() / k


def _ref_curves(s, m):
  return (_ref_auprc(s, m),
          skm.average_precision_score(m.ravel(), s.ravel()),
          skm.roc_auc_score(m.ravel(), s.ravel()))


# name -> one map's score in NumPy / scikit-learn / SciPy (every mask in the
# benchmark's data is neither empty nor full, so none is undefined).
LOCALIZATION_REFERENCES: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {
    "auprc": _ref_auprc,
    "average_precision": lambda s, m: skm.average_precision_score(
        m.ravel(), s.ravel()),
    "auroc": lambda s, m: skm.roc_auc_score(m.ravel(), s.ravel()),
    "soft_dice": lambda s, m: 2 * (s * m).sum() / (s.sum() + m.sum()),
    "dice": _ref_dice,
    "iou": _ref_iou,
    "pointing_game": _ref_pointing_game,
    "relevance_mass_accuracy": lambda s, m: (s * m).sum() / s.sum(),
    "relevance_rank_accuracy": _ref_rank,
    "top_k_intersection": _ref_top_k,
    CURVES: _ref_curves,
}


def localization_data(key: jax.Array, n: int, size: int
                      ) -> tuple[np.ndarray, np.ndarray]:
  """n maps (n, size, size) float32 in [0, 1] and their masks (random disks)."""
  centre_key, radius_key, noise_key = jax.random.split(key, 3)
  centres = jax.random.uniform(centre_key, (n, 2), minval=0.2 * size,
                               maxval=0.8 * size)
  radii = jax.random.uniform(radius_key, (n,), minval=0.05 * size,
                             maxval=0.25 * size)
  yy, xx = jnp.mgrid[:size, :size]
  masks = ((yy - centres[:, 0, None, None]) ** 2 +
           (xx - centres[:, 1, None, None]) ** 2) <= radii[:, None, None] ** 2
  maps = jax.random.uniform(noise_key, (n, size, size)) + 0.8 * masks
  top = jnp.percentile(maps.reshape(n, -1), 99, axis=1)[:, None, None]
  maps = jnp.minimum(maps, top) / top
  return np.asarray(maps, np.float32), np.asarray(masks)


# --- per-image references of the faithfulness metrics ----------------------


def sparse_system(x: np.ndarray, removed: np.ndarray
                  ) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
  """ROAD's imputation system over the removed pixels (A u = b), as
  :func:`faithfulness.road_impute` defines it, built with NumPy."""
  h, w, _ = x.shape
  index = -np.ones((h, w), np.int64)
  pixels = np.argwhere(removed)
  index[removed] = np.arange(len(pixels))
  rows, cols, values = [], [], []
  total = np.zeros(len(pixels))
  b = np.zeros((len(pixels), x.shape[2]))
  for (di, dj), weight in fl.NEIGHBOURS:
    ii, jj = pixels[:, 0] + di, pixels[:, 1] + dj
    inside = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
    total += weight * inside
    ii, jj = np.clip(ii, 0, h - 1), np.clip(jj, 0, w - 1)
    neighbour_removed = inside & removed[ii, jj]
    rows.append(np.nonzero(neighbour_removed)[0])
    cols.append(index[ii, jj][neighbour_removed])
    values.append(np.full(neighbour_removed.sum(), -weight))
    kept = inside & ~removed[ii, jj]
    b += (weight * kept)[:, None] * x[ii, jj]
  n = len(pixels)
  a = scipy.sparse.csr_matrix(
      (np.concatenate(values + [total]),
       (np.concatenate(rows + [np.arange(n)]),
        np.concatenate(cols + [np.arange(n)]))), shape=(n, n))
  return a, b


def sparse_impute(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
  """The noiseless imputed image by a direct sparse solve (SciPy)."""
  out = np.array(x, np.float64)
  if removed.any():
    a, b = sparse_system(out, removed)
    out[removed] = scipy.sparse.linalg.spsolve(a.tocsc(), b).reshape(
        removed.sum(), -1)
  return out.astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max())
  return e / e.sum()


class _Faithful:
  """What the faithfulness rows share: a model, images, maps, targets."""

  def __init__(self, config: ml_collections.ConfigDict, key: jax.Array):
    mc = config.benchmark.metrics
    size, n = mc.faithfulness_image_size, mc.faithfulness_images
    model = models.create(mc.model, num_classes=config.num_classes,
                          in_channels=config.benchmark.in_channels,
                          width=mc.width, rngs=nnx.Rngs(config.seed))
    self.explainee = explainee_lib.as_explainee(model)
    image_key, map_key = jax.random.split(key)
    self.images = jax.random.uniform(
        image_key, (n, size, size, config.benchmark.in_channels))
    self.maps = jax.random.uniform(map_key, (n, size, size))
    self.targets = jnp.argmax(jax.vmap(self.explainee.logits)(self.images),
                              axis=-1).astype(jnp.int32)
    self.step = mc.step
    self.percentiles = tuple(mc.percentiles)
    self.logits = jax.jit(self.explainee.logits)

  def prob(self, image: np.ndarray, target: int) -> float:
    """One jitted model call on one image, read on the host."""
    return float(_softmax(np.asarray(self.logits(jnp.asarray(image))))[target])

  def ours(self, name: str) -> Callable[[], Any]:
    e, step, percentiles = self.explainee, self.step, self.percentiles
    if name in ("deletion", "insertion"):
      fn = getattr(fl, name)
      one = lambda x, s, t: fn(e, x, s, t, step=step,  # noqa: E731
                               replacement="constant").scores
    elif name == "road":
      one = lambda x, s, t: fl.road(  # noqa: E731
          e, x, s, t, key=None, noise=0.0, percentiles=percentiles).scores
    elif name == "confidence_change":
      one = lambda x, s, t: jnp.stack(  # noqa: E731
          fl.confidence_change(e, x, s, t)[:2])
    else:  # road_impute at the middle percentile of each map
      count = self._removed_count()
      one = lambda x, s, t: fl.road_impute(  # noqa: E731
          x, _top_mask(s, count), key=None, noise=0.0)
    program = jax.jit(jax.vmap(one))
    return lambda: program(self.images, self.maps, self.targets)

  def _removed_count(self) -> int:
    size = self.maps.shape[1] * self.maps.shape[2]
    return int(np.rint(self.percentiles[len(self.percentiles) // 2] / 100 *
                       size))

  def reference(self, name: str) -> Callable[[], Any]:
    images, maps = np.asarray(self.images), np.asarray(self.maps)
    targets = np.asarray(self.targets)

    def loop():
      out = []
      for x, s, t in zip(images, maps, targets):
        order = np.argsort(-s.ravel(), kind="stable")
        out.append(self._one_reference(name, x, s, int(t), order))
      return np.stack(out)
    return loop

  def _one_reference(self, name, x, s, t, order):
    n = s.size

    def top(count):
      first = np.zeros(n, bool)
      first[order[:count]] = True
      return first.reshape(s.shape)

    if name in ("deletion", "insertion"):
      steps = int(np.ceil(1.0 / self.step - 1e-9))
      counts = np.rint(np.minimum(np.arange(steps + 1) * self.step, 1.0) * n)
      scores = []
      for count in counts.astype(int):
        first = top(count)[..., None]
        image = (np.where(first, x, 0.0) if name == "insertion"
                 else np.where(first, 0.0, x))
        scores.append(self.prob(image.astype(np.float32), t))
      return np.asarray(scores)
    if name == "road":
      return np.asarray([self.prob(sparse_impute(x, top(int(np.rint(
          p / 100 * n)))), t) for p in self.percentiles])
    if name == "confidence_change":
      scaled = (s - s.min()) / (s.max() - s.min())
      return np.asarray([self.prob(x, t),
                         self.prob((x * scaled[..., None]).astype(np.float32),
                                   t)])
    return sparse_impute(x, top(self._removed_count()))


def _top_mask(s: jax.Array, count: int) -> jax.Array:
  """The first ``count`` pixels in decreasing saliency (raster ties), as
  ROAD removes them."""
  return fl._ranks(s) < count  # pylint: disable=protected-access


# --- timing ---------------------------------------------------------------


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
  start = time.perf_counter()
  out = jax.block_until_ready(call())
  return time.perf_counter() - start, out


def _pair(ours: Callable[[], Any], reference: Callable[[], Any], n: int,
          n_reference: int, repeats: int, min_seconds: float) -> Row:
  """Timed calls of ours, each followed by one reference run: per-map times
  and their paired ratios."""
  compile_s, ours_out = _timed(ours)
  reference_first_s, reference_out = _timed(reference)
  times, reference_times = [], []
  while len(times) < repeats or (sum(times) < min_seconds and
                                 len(times) < _MAX_REPEATS):
    times.append(_timed(ours)[0])
    reference_times.append(_timed(reference)[0])
  per_map = [t / n for t in times]
  reference_per_map = [t / n_reference for t in reference_times]
  steady = statistics.median(times)
  return {
      "maps": n, "reference_maps": n_reference, "compile_s": compile_s,
      "reference_first_s": reference_first_s, "steady_s": steady,
      "maps_per_s": n / steady,
      "reference_maps_per_s": n_reference / statistics.median(reference_times),
      "reference_ratio": statistics.median(
          r / t for r, t in zip(reference_per_map, per_map)),
      "reference_ratio_min": min(reference_per_map) / min(per_map),
      "times": times, "reference_times": reference_times,
  }, ours_out, reference_out


def _difference(ours: Any, reference: Any) -> float | None:
  """max |ours - reference| over entries finite in both (None: none are)."""
  a = np.asarray(jax.tree.leaves(ours)[0] if isinstance(ours, dict) else ours,
                 np.float64)
  b = np.asarray(reference, np.float64)
  a = a.reshape(b.shape)
  both = np.isfinite(a) & np.isfinite(b)
  return float(np.max(np.abs(a - b)[both])) if both.any() else None


def run(config: ml_collections.ConfigDict,
        say: Callable[[str], None]) -> dict[str, Any]:
  """Every row of the metrics section: ``{'setup': ..., 'rows': [...]}``."""
  mc = config.benchmark.metrics
  loc_key, faith_key = jax.random.split(
      jax.random.fold_in(jax.random.key(config.seed), 13))
  maps, masks = localization_data(loc_key, mc.maps, mc.image_size)
  # On the device before timing: our calls read device-resident maps.
  device_maps, device_masks = jax.device_put((maps, masks))
  k = mc.maps if mc.reference_maps is None else min(mc.reference_maps, mc.maps)
  rows = []
  for name in mc.localization:
    fn = loc.curves if name == CURVES else loc.LOCALIZATION[name]
    program = jax.jit(jax.vmap(fn))
    ref_fn = LOCALIZATION_REFERENCES[name]
    ours = lambda: program(device_maps, device_masks)  # noqa: E731
    reference = lambda: np.asarray(  # noqa: E731
        [ref_fn(s, m) for s, m in zip(maps[:k], masks[:k])], np.float64)
    row, out, ref_out = _pair(ours, reference, mc.maps, k, mc.repeats,
                              mc.min_seconds)
    if name == CURVES:
      out = np.stack([np.asarray(out[c])[:k] for c in loc.CURVES], axis=-1)
    else:
      out = np.asarray(out)[:k]
    row.update(kind="localization", metric=name,
               image_size=mc.image_size, max_abs_difference=_difference(
                   out, ref_out))
    rows.append(row)
    say(_progress(row))
  if mc.faithfulness:
    faithful = _Faithful(config, faith_key)
    n = len(faithful.images)
    for name in mc.faithfulness:
      row, out, ref_out = _pair(faithful.ours(name), faithful.reference(name),
                                n, n, mc.repeats, mc.min_seconds)
      row.update(kind="faithfulness", metric=name,
                 image_size=mc.faithfulness_image_size,
                 max_abs_difference=_difference(out, ref_out))
      rows.append(row)
      say(_progress(row))
  setup = {"maps": mc.maps, "image_size": mc.image_size,
           "model": mc.model, "width": mc.width,
           "reference_maps": k,
           "faithfulness_images": mc.faithfulness_images,
           "faithfulness_image_size": mc.faithfulness_image_size,
           "step": mc.step, "percentiles": list(mc.percentiles),
           "repeats": mc.repeats, "min_seconds": mc.min_seconds}
  return {"setup": setup, "rows": rows}


def _progress(r: Row) -> str:
  return (f"  {r['metric']:<24} {r['maps_per_s']:10.1f} maps/s  "
          f"reference {r['reference_maps_per_s']:9.1f} maps/s  "
          f"{r['reference_ratio']:7.1f}x  (max |diff| "
          f"{_fmt(r['max_abs_difference'])})")


def _fmt(value: float | None) -> str:
  return "-" if value is None else f"{value:.2g}"


def format_table(section: dict[str, Any]) -> str:
  """The metrics rows as a fixed-width text table."""
  s = section["setup"]
  head = (f"{'metric':<24} {'kind':<13} {'px':>4} {'maps/s':>10} "
          f"{'ref maps/s':>10} {'vs ref':>8} {'(min)':>8} {'max|diff|':>9}")
  lines = [f"metrics: {s['maps']} maps at {s['image_size']} px (reference "
           f"loop on {s['reference_maps']}); faithfulness on "
           f"{s['faithfulness_images']} images at "
           f"{s['faithfulness_image_size']} px", head, "-" * len(head)]
  for r in section["rows"]:
    lines.append(
        f"{r['metric']:<24} {r['kind']:<13} {r['image_size']:>4} "
        f"{r['maps_per_s']:>10.1f} {r['reference_maps_per_s']:>10.1f} "
        f"{r['reference_ratio']:>7.1f}x {r['reference_ratio_min']:>7.1f}x "
        f"{_fmt(r['max_abs_difference']):>9}")
  return "\n".join(lines)


def validate(config: ml_collections.ConfigDict) -> None:
  """The ``config.benchmark.metrics`` block, before anything runs."""
  mc = config.benchmark.get("metrics")
  if mc is None:
    return
  key = "config.benchmark.metrics"
  for name in mc.localization:
    if name not in LOCALIZATION_REFERENCES:
      raise errors.ConfigError(
          f"{key}.localization: unknown metric {name!r}; expected names "
          f"from {sorted(LOCALIZATION_REFERENCES)}")
  for name in mc.faithfulness:
    if name not in FAITHFULNESS:
      raise errors.ConfigError(f"{key}.faithfulness: unknown metric "
                               f"{name!r}; expected names from {FAITHFULNESS}")
  if mc.model not in models.MODELS:
    raise errors.ConfigError(f"{key}.model: unknown model {mc.model!r}; "
                             f"expected one of {sorted(models.MODELS)}")
  for field in ("maps", "image_size", "faithfulness_images",
                "faithfulness_image_size", "repeats"):
    value = mc[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise errors.ConfigError(f"{key}.{field}: expected a positive int, "
                               f"got {value!r}")
  if mc.reference_maps is not None and (
      isinstance(mc.reference_maps, bool) or
      not isinstance(mc.reference_maps, int) or mc.reference_maps < 1):
    raise errors.ConfigError(f"{key}.reference_maps: expected a positive int "
                             f"or None, got {mc.reference_maps!r}")
  if not 0 < mc.step <= 1:
    raise errors.ConfigError(f"{key}.step: expected a fraction in (0, 1], "
                             f"got {mc.step!r}")
  if not mc.percentiles or any(not 0 <= p < 100 for p in mc.percentiles):
    raise errors.ConfigError(f"{key}.percentiles: expected numbers in "
                             f"[0, 100), got {tuple(mc.percentiles)!r}")
