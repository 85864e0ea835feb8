"""Faithfulness metrics: does the model's output follow the map's ranking?

Each metric takes one image and one map, ``(explainee, x (H, W, C),
saliency_map (H, W), target, **options)``, perturbs the image in the map's
order and reads the target's softmax probability (``output='logit'``: its
logit) on every perturbed copy. The perturbed copies are the samples of
:mod:`saliency_jax.saliency.batching`: ``batch_size`` bounds how many model
evaluations run at once and ``strategy`` how chunks run, as for the saliency
methods. Options are static Python values; everything else may be traced, so
a metric is jittable and ``jax.vmap``-pable over images (maps, targets, keys).

Pixel order: decreasing saliency, ties broken by raster (row-major) index,
the earlier pixel first (a stable sort); LeRF (least relevant first) sorts by
increasing saliency with the same tie rule. "The top k pixels" are the first
k of that order, all channels of a pixel together.

- :func:`deletion` / :func:`insertion`: curves over the fraction of pixels
  removed / revealed and their areas (Petsiuk et al., RISE, BMVC 2018);
- :func:`road_impute`, :func:`road`, :func:`road_combined`: ROAD's noisy
  linear imputation solved on the device (Rong et al., ICML 2022);
- :func:`confidence_change`: average drop and increase in confidence on the
  image multiplied by the map (Chattopadhyay et al., WACV 2018).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.saliency import _checks, batching
from saliency_jax.saliency.explainee import as_explainee

REPLACEMENTS = ("blur", "constant", "noise")
OUTPUTS = ("probability", "logit")
ORDERS = ("morf", "lerf")

MAP_ERROR = ("{metric}: saliency_map must be one map (H, W) = {want} (the "
             "image's height and width; reduce channels first), got shape "
             "{got}")
STEP_ERROR = "{metric}: step must be a fraction in (0, 1], got {value!r}"
POSITIVE_ERROR = "{metric}: {arg} must be a positive number, got {value!r}"
NUMBER_ERROR = "{metric}: {arg} must be a number, got {value!r}"
PERCENTILES_ERROR = ("{metric}: percentiles must be a non-empty sequence of "
                     "numbers in [0, 100), got {value!r}")
REMOVED_MASK_ERROR = ("road_impute: removed_mask must be (H, W) = {want} (the "
                      "image's height and width), got shape {got}")

# ROAD's noisy linear imputer: 8-neighbour offsets and weights (1/6 direct,
# 1/12 diagonal), as in the reference implementation's NoisyLinearImputer.
NEIGHBOURS = (((-1, 0), 1 / 6), ((1, 0), 1 / 6), ((0, -1), 1 / 6),
              ((0, 1), 1 / 6), ((-1, -1), 1 / 12), ((-1, 1), 1 / 12),
              ((1, -1), 1 / 12), ((1, 1), 1 / 12))


class Curve(NamedTuple):
  """A deletion or insertion curve: ``scores[i]`` at ``fractions[i]``."""
  fractions: jax.Array  # (m,) fraction of pixels removed / revealed, 0 ... 1
  scores: jax.Array  # (m,) target probability (or logit)
  auc: jax.Array  # () trapezoid area under scores over fractions


class Road(NamedTuple):
  """ROAD scores: ``scores[i]`` with ``percentiles[i]`` % of pixels removed."""
  percentiles: jax.Array  # (m,)
  scores: jax.Array  # (m,) target probability (or logit) after imputation
  mean: jax.Array  # () average over percentiles


class Confidence(NamedTuple):
  """Confidence on x (``y``) and on x times the map (``o``)."""
  y: jax.Array
  o: jax.Array
  drop: jax.Array  # max(0, y - o) / y
  increase: jax.Array  # 1.0 if o > y else 0.0


def _check_image_map(metric: str, x: Any, saliency_map: Any,
                     target: Any) -> None:
  _checks.image(metric, x)
  _checks.target(metric, target)
  if np.shape(saliency_map) != np.shape(x)[:2]:
    raise ValueError(MAP_ERROR.format(metric=metric, want=np.shape(x)[:2],
                                      got=np.shape(saliency_map)))


def _check_number(metric: str, arg: str, value: Any, positive: bool) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
    raise ValueError(NUMBER_ERROR.format(metric=metric, arg=arg, value=value))
  if positive and not value > 0:
    raise ValueError(POSITIVE_ERROR.format(metric=metric, arg=arg, value=value))


def _score(logits: jax.Array, target: jax.Array, output: str) -> jax.Array:
  logits = logits.astype(jnp.float32)
  return (jax.nn.softmax(logits) if output == "probability" else logits)[target]


@functools.partial(jax.jit, static_argnames="ascending")
def _ranks(saliency_map: jax.Array, ascending: bool = False) -> jax.Array:
  """Position (H, W) of every pixel in the stable order; 0 = first removed."""
  flat = jnp.ravel(saliency_map).astype(jnp.float32)
  order = jnp.argsort(flat if ascending else -flat, stable=True)
  ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(
      jnp.arange(flat.size, dtype=jnp.int32))
  return ranks.reshape(jnp.shape(saliency_map))


@functools.partial(jax.jit, static_argnames="sigma")
def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
  r"""Gaussian blur of each channel of x (H, W, C), std ``sigma`` pixels.

  Separable, truncated at 4 sigma, borders mirrored (``'symmetric'``): equal to
  ``scipy.ndimage.gaussian_filter(x, (sigma, sigma, 0))``.
  """
  radius = int(4.0 * sigma + 0.5)
  t = np.arange(-radius, radius + 1)
  w = np.exp(-0.5 * (t / sigma) ** 2)
  w = w / w.sum()
  for axis in (0, 1):
    pad = [(0, 0)] * 3
    pad[axis] = (radius, radius)
    padded = jnp.pad(x, pad, mode="symmetric")
    n = x.shape[axis]
    x = sum(float(w[i]) * jax.lax.slice_in_dim(padded, i, i + n, axis=axis)
            for i in range(2 * radius + 1))
  return x


def _replacement(metric, x, replacement, key, sigma, value):
  _checks.choice(metric, "replacement", replacement, REPLACEMENTS)
  if replacement == "blur":
    _check_number(metric, "sigma", sigma, positive=True)
    return gaussian_blur(x, float(sigma))
  if replacement == "constant":
    _check_number(metric, "value", value, positive=False)
    return jnp.full(jnp.shape(x), value, jnp.result_type(x))
  _checks.key(metric, key)
  return jax.random.uniform(key, jnp.shape(x), jnp.result_type(x),
                            jnp.min(x), jnp.max(x))


def _curve(metric, explainee, x, saliency_map, target, *, insertion, key,
           batch_size, strategy, step, replacement, sigma, value, output):
  _check_image_map(metric, x, saliency_map, target)
  _checks.choice(metric, "output", output, OUTPUTS)
  if (isinstance(step, bool) or not isinstance(step, (int, float, np.number))
      or not 0 < step <= 1):
    raise ValueError(STEP_ERROR.format(metric=metric, value=step))
  strategy, batch_size = batching.resolve(strategy, batch_size)
  x = jnp.asarray(x)
  fill = _replacement(metric, x, replacement, key, sigma, value)
  n = int(np.prod(np.shape(x)[:2]))
  steps = int(np.ceil(1.0 / step - 1e-9))
  counts = np.rint(np.minimum(np.arange(steps + 1) * step, 1.0) * n).astype(
      np.int32)
  scores = batching.sample_map(
      _perturbed_score,
      (as_explainee(explainee), x, fill, _ranks(saliency_map), target),
      counts, batch_size=batch_size, strategy=strategy,
      static=(("insertion", insertion), ("output", output)))
  fractions = jnp.asarray(counts / n, jnp.float32)
  return Curve(fractions, scores, jnp.trapezoid(scores, fractions))


def _perturbed_score(operands, count, *, insertion, output):
  """Score with the first ``count`` pixels replaced (revealed if insertion)."""
  explainee, x, fill, ranks, target = operands
  first = (ranks < count)[..., None]
  image = jnp.where(first, x, fill) if insertion else jnp.where(first, fill, x)
  return _score(explainee.logits(image), target, output)


def deletion(explainee: Any, x: jax.Array, saliency_map: jax.Array,
             target: int | jax.Array, *, key: jax.Array | None = None,
             batch_size: int | None = None, strategy: str | None = None,
             step: float = 0.05, replacement: str = "blur", sigma: float = 5.0,
             value: float = 0.0, output: str = "probability") -> Curve:
  r"""Deletion curve: the target's probability as top pixels are replaced.

  .. math::
    D(f_i) = p_t\big(x \odot (1 - m_{k_i}) + r \odot m_{k_i}\big),\quad
    k_i = \mathrm{round}(f_i\,HW),\quad f_i = \min(i \cdot \text{step}, 1)

  where :math:`m_k` marks the first k pixels in decreasing saliency and
  :math:`r` is the replacement image; the area is the trapezoid rule over
  :math:`k_i / HW`. Lower is better (the map found what the model uses).

  Args:
    explainee: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    saliency_map: one map (H, W); higher = more relevant.
    target: class index t.
    key: ``jax.random`` key; needed for ``replacement='noise'``.
    batch_size: perturbed images evaluated at once; ``None``: all.
    strategy: how chunks run (:data:`batching.STRATEGIES`).
    step: fraction of pixels per step, in (0, 1]; 0.05 gives 21 points.
    replacement: ``'blur'`` (Gaussian blur of x, std ``sigma`` pixels),
      ``'constant'`` (``value``) or ``'noise'`` (uniform in [min x, max x]).
    sigma: blur std in pixels.
    value: the constant.
    output: ``'probability'`` (softmax) or ``'logit'``.

  Returns:
    :class:`Curve` (fractions, scores, auc).

  Reference: Petsiuk et al., RISE, arXiv:1806.07421.
  """
  return _curve("deletion", explainee, x, saliency_map, target,
                insertion=False, key=key, batch_size=batch_size,
                strategy=strategy, step=step, replacement=replacement,
                sigma=sigma, value=value, output=output)


def insertion(explainee: Any, x: jax.Array, saliency_map: jax.Array,
              target: int | jax.Array, *, key: jax.Array | None = None,
              batch_size: int | None = None, strategy: str | None = None,
              step: float = 0.05, replacement: str = "blur", sigma: float = 5.0,
              value: float = 0.0, output: str = "probability") -> Curve:
  r"""Insertion curve: the probability as top pixels are revealed.

  .. math::
    I(f_i) = p_t\big(r \odot (1 - m_{k_i}) + x \odot m_{k_i}\big)

  starting from the replacement image :math:`r` (notation and arguments as
  :func:`deletion`). Higher is better.

  Reference: Petsiuk et al., RISE, arXiv:1806.07421.
  """
  return _curve("insertion", explainee, x, saliency_map, target,
                insertion=True, key=key, batch_size=batch_size,
                strategy=strategy, step=step, replacement=replacement,
                sigma=sigma, value=value, output=output)


def _shift(a: jax.Array, offset: tuple[int, int]) -> jax.Array:
  """``out[i, j] = a[i + di, j + dj]``, zero outside the image."""
  di, dj = offset
  h, w = a.shape[:2]
  padded = jnp.pad(a, [(1, 1), (1, 1)] + [(0, 0)] * (a.ndim - 2))
  return padded[1 + di:1 + di + h, 1 + dj:1 + dj + w]


@functools.partial(jax.jit, static_argnames=("tol", "maxiter"))
def _impute(x, removed, key, noise, *, tol, maxiter):
  """The noisy linear imputer's solve (conjugate gradient) plus noise."""
  removed = removed[..., None].astype(x.dtype)
  kept = 1 - removed
  total = sum(w * _shift(jnp.ones_like(removed), o) for o, w in NEIGHBOURS)

  def system(v):  # removed rows: total * v_i - sum_j w_ij v_j (j removed)
    v = v * removed
    return removed * (total * v - sum(w * _shift(v, o) for o, w in NEIGHBOURS))

  rhs = removed * sum(w * _shift(x * kept, o) for o, w in NEIGHBOURS)
  solution, _ = jax.scipy.sparse.linalg.cg(system, rhs, tol=tol, atol=0.0,
                                           maxiter=maxiter)
  solution = solution + noise * jax.random.normal(key, x.shape, x.dtype)
  return x * kept + solution * removed


def road_impute(x: jax.Array, removed_mask: jax.Array, *,
                key: jax.Array | None, noise: float = 0.01, tol: float = 1e-6,
                maxiter: int | None = None) -> jax.Array:
  r"""ROAD's noisy linear imputation of the removed pixels, on the device.

  Each removed pixel, per channel, is the weighted mean of its 8 neighbours
  (removed neighbours are unknowns, kept ones fixed), then noise is added:

  .. math::
    \Big(\sum_{j \in N(i)} w_{ij}\Big)\,u_i - \sum_{j \in N(i),\,j\ removed}
    w_{ij} u_j = \sum_{j \in N(i),\,j\ kept} w_{ij} x_j,\qquad
    \hat x_i = u_i + \sigma \epsilon_i

  with :math:`w` = 1/6 for the 4 direct and 1/12 for the 4 diagonal
  neighbours, :math:`N(i)` the neighbours inside the image (the weights of
  those outside are dropped from the sum, as the reference
  ``NoisyLinearImputer`` does), :math:`\sigma` = ``noise``,
  :math:`\epsilon \sim \mathcal N(0, 1)`. The system is symmetric and
  diagonally dominant, irreducibly so when any pixel is kept, hence positive
  definite; it is solved by conjugate gradient in one ``lax.while_loop``,
  matrix-free, to relative residual ``tol``. With every pixel removed there
  is nothing to impute from and the removed pixels are 0 plus noise.

  Args:
    x: one image (H, W, C).
    removed_mask: (H, W) bool, True where the pixel is removed.
    key: ``jax.random`` key of the noise; may be None when ``noise == 0``.
    noise: std of the Gaussian noise added to the imputed pixels.
    tol: relative residual at which conjugate gradient stops.
    maxiter: iteration cap; ``None``: H * W (the exact-arithmetic bound).

  Returns:
    The imputed image (H, W, C); kept pixels unchanged.

  Reference: Rong et al., "A Consistent and Efficient Evaluation Strategy for
  Attribution Methods", ICML 2022, arXiv:2202.00449.
  """
  _checks.image("road_impute", x)
  if np.shape(removed_mask) != np.shape(x)[:2]:
    raise ValueError(REMOVED_MASK_ERROR.format(want=np.shape(x)[:2],
                                               got=np.shape(removed_mask)))
  _check_number("road_impute", "noise", noise, positive=False)
  _check_number("road_impute", "tol", tol, positive=True)
  if noise != 0:
    _checks.key("road_impute", key)
  elif key is None:
    key = jax.random.key(0)  # unused: the noise is scaled by 0
  x = jnp.asarray(x)
  if maxiter is None:
    maxiter = int(np.prod(np.shape(x)[:2]))
  _checks.positive_int("road_impute", "maxiter", maxiter)
  return _impute(x, jnp.asarray(removed_mask, bool), key,
                 jnp.asarray(noise, x.dtype), tol=float(tol), maxiter=maxiter)


def _road_score(operands, sample, *, output, tol, maxiter):
  explainee, x, ranks, target, noise = operands
  count, key = sample
  imputed = _impute(x, ranks < count, key, noise, tol=tol, maxiter=maxiter)
  return _score(explainee.logits(imputed), target, output)


def road(explainee: Any, x: jax.Array, saliency_map: jax.Array,
         target: int | jax.Array, *, key: jax.Array | None,
         batch_size: int | None = None, strategy: str | None = None,
         percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
         order: str = "morf", noise: float = 0.01, output: str = "probability",
         tol: float = 1e-6, maxiter: int | None = None) -> Road:
  r"""ROAD: the probability after removing p% of pixels and imputing them.

  .. math::
    R(p) = p_t\big(\mathrm{impute}(x, m_{k}, \sigma)\big),\quad
    k = \mathrm{round}(p/100 \cdot HW)

  with :math:`m_k` the first k pixels in decreasing saliency (``'morf'``, most
  relevant first: lower is better) or increasing saliency (``'lerf'``: higher
  is better), imputed by :func:`road_impute` with its own key per percentile.
  This follows the ROAD paper (remove the top / bottom p%); pytorch-grad-cam's
  ``ROADMostRelevantFirst(p)`` instead keeps the pixels below the p-th
  percentile (removes the top 100 - p %), which over the symmetric default
  percentiles averages over the same removal fractions.

  Args:
    explainee: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    saliency_map: one map (H, W).
    target: class index t.
    key: ``jax.random`` key of the imputation noise (None when ``noise == 0``).
    batch_size: imputed images evaluated at once; ``None``: all.
    strategy: how chunks run (:data:`batching.STRATEGIES`).
    percentiles: percentages of pixels removed, each in [0, 100).
    order: ``'morf'`` or ``'lerf'``.
    noise: imputation noise std (:func:`road_impute`).
    output: ``'probability'`` (softmax) or ``'logit'``.
    tol: conjugate-gradient tolerance (:func:`road_impute`).
    maxiter: conjugate-gradient iteration cap; ``None``: H * W.

  Returns:
    :class:`Road` (percentiles, scores, mean).

  Reference: Rong et al., ICML 2022, arXiv:2202.00449.
  """
  _check_image_map("road", x, saliency_map, target)
  _checks.choice("road", "order", order, ORDERS)
  _checks.choice("road", "output", output, OUTPUTS)
  _check_number("road", "noise", noise, positive=False)
  _check_number("road", "tol", tol, positive=True)
  if (isinstance(percentiles, str) or not isinstance(percentiles, Sequence)
      or not percentiles or any(
          isinstance(p, bool) or not isinstance(p, (int, float, np.number))
          or not 0 <= p < 100 for p in percentiles)):
    raise ValueError(PERCENTILES_ERROR.format(metric="road", value=percentiles))
  if noise != 0:
    _checks.key("road", key)
  elif key is None:
    key = jax.random.key(0)
  strategy, batch_size = batching.resolve(strategy, batch_size)
  x = jnp.asarray(x)
  n = int(np.prod(np.shape(x)[:2]))
  maxiter = n if maxiter is None else maxiter
  _checks.positive_int("road", "maxiter", maxiter)
  percent = np.asarray(percentiles, np.float64)
  counts = np.rint(percent / 100 * n).astype(np.int32)
  scores = batching.sample_map(
      _road_score,
      (as_explainee(explainee), x, _ranks(saliency_map, order == "lerf"),
       target, jnp.asarray(noise, x.dtype)),
      (counts, jax.random.split(key, len(counts))), batch_size=batch_size,
      strategy=strategy,
      static=(("output", output), ("tol", float(tol)), ("maxiter", maxiter)))
  return Road(jnp.asarray(percent, jnp.float32), scores, jnp.mean(scores))


def road_combined(explainee: Any, x: jax.Array, saliency_map: jax.Array,
                  target: int | jax.Array, *, key: jax.Array | None,
                  **options: Any) -> jax.Array:
  r"""ROAD combined: half the gap between the LeRF and MoRF averages.

  .. math::
    C = \tfrac{1}{2}\big(\bar R_{\mathrm{LeRF}} - \bar R_{\mathrm{MoRF}}\big)

  as pytorch-grad-cam's ``ROADCombined`` computes it
  (``(scores_lerf - scores_morf) / 2``; its scores are differences to the
  unperturbed probability, which cancel). Higher is better. ``key`` is split
  between the two orders; ``options`` are :func:`road`'s.

  Reference: Rong et al., ICML 2022, arXiv:2202.00449.
  """
  if key is None:
    keys = (None, None)
  else:
    keys = tuple(jax.random.split(key))
  lerf = road(explainee, x, saliency_map, target, key=keys[0], order="lerf",
              **options)
  morf = road(explainee, x, saliency_map, target, key=keys[1], order="morf",
              **options)
  return (lerf.mean - morf.mean) / 2


def _masked_score(operands, scale, *, output):
  explainee, x, target = operands
  return _score(explainee.logits(x * scale[..., None]), target, output)


def confidence_change(explainee: Any, x: jax.Array, saliency_map: jax.Array,
                      target: int | jax.Array, *,
                      batch_size: int | None = None,
                      strategy: str | None = None,
                      output: str = "probability") -> Confidence:
  r"""Drop and increase of confidence on the image multiplied by the map.

  .. math::
    \mathrm{drop} = \frac{\max(0,\ y - o)}{y},\qquad
    \mathrm{increase} = [\,o > y\,],\qquad
    y = p_t(x),\quad o = p_t(x \odot \hat s)

  with :math:`\hat s = (s - \min s) / (\max s - \min s)` the map scaled to
  [0, 1] (per pixel, all channels). Averaged over images (times 100) these are
  the "Average Drop %" and "% Increase in Confidence"; lower drop, higher
  increase are better. A constant map cannot be scaled: NaN.

  Args:
    explainee: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    saliency_map: one map (H, W).
    target: class index t.
    batch_size: images evaluated at once (2 in all); ``None``: both.
    strategy: how chunks run (:data:`batching.STRATEGIES`).
    output: ``'probability'`` (softmax) or ``'logit'``.

  Returns:
    :class:`Confidence` (y, o, drop, increase).

  Reference: Chattopadhyay et al., Grad-CAM++, arXiv:1710.11063.
  """
  _check_image_map("confidence_change", x, saliency_map, target)
  _checks.choice("confidence_change", "output", output, OUTPUTS)
  strategy, batch_size = batching.resolve(strategy, batch_size)
  x = jnp.asarray(x)
  s = jnp.asarray(saliency_map, jnp.float32)
  low, high = jnp.min(s), jnp.max(s)
  scaled = (s - low) / jnp.where(high > low, high - low, 1.0)
  scales = jnp.stack([jnp.ones_like(scaled), scaled]).astype(x.dtype)
  y, o = batching.sample_map(
      _masked_score, (as_explainee(explainee), x, target), scales,
      batch_size=batch_size, strategy=strategy, static=(("output", output),))
  defined = high > low
  drop = jnp.where(defined, jnp.maximum(0.0, y - o) / y, jnp.nan)
  increase = jnp.where(defined, (o > y).astype(jnp.float32), jnp.nan)
  return Confidence(y, o, drop, increase)


# Name -> metric, the names configs and experiments use.
FAITHFULNESS = {
    "deletion": deletion,
    "insertion": insertion,
    "road": road,
    "road_combined": road_combined,
    "confidence_change": confidence_change,
}
