"""Integrated Gradients: the gradient integrated along a straight path."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.saliency import _checks, batching
from saliency_jax.saliency.explainee import as_explainee

QUADRATURES = ("pair", "riemann_left", "riemann_right", "riemann_middle",
               "riemann_trapezoid", "gauss_legendre")
BASELINES = ("zeros", "black", "white")
BASELINE_ERROR = ("{method}: baseline must be one of {kinds}, a number, or an "
                  "array broadcastable to the image shape {shape}; "
                  "got {value!r}")


def path_quadrature(quadrature: str,
                    steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes ``alphas`` in [0, 1] and weights (summing to 1) of a quadrature.

  ``pair`` is PAIR ``saliency`` 0.2.1: ``linspace(0, 1, steps)``, each weight
  ``1 / steps``. ``riemann_trapezoid`` is the trapezoid rule on the same
  nodes (ends weigh half; unlike Captum's, the weights sum to 1).
  """
  _checks.choice("integrated_gradients", "quadrature", quadrature, QUADRATURES)
  _checks.positive_int("integrated_gradients", "steps", steps)
  i = np.arange(steps, dtype=np.float64)
  uniform = np.full(steps, 1.0 / steps)
  if quadrature == "pair":
    return np.linspace(0.0, 1.0, steps), uniform
  if quadrature == "riemann_left":
    return i / steps, uniform
  if quadrature == "riemann_right":
    return (i + 1) / steps, uniform
  if quadrature == "riemann_middle":
    return (i + 0.5) / steps, uniform
  if quadrature == "riemann_trapezoid":
    if steps < 2:
      raise ValueError("integrated_gradients: riemann_trapezoid needs "
                       f"steps >= 2, got {steps}")
    weights = np.full(steps, 1.0 / (steps - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, steps), weights
  nodes, weights = np.polynomial.legendre.leggauss(steps)
  return (nodes + 1) / 2, weights / 2


def baseline_for(x: jax.Array, baseline: Any,
                 method: str = "integrated_gradients") -> jax.Array:
  """The baseline image (H, W, C): ``zeros``, ``black`` (the image minimum),
  ``white`` (the image maximum), a constant, or an array broadcast to ``x``."""
  shape = np.shape(x)
  if isinstance(baseline, str):
    _checks.choice(method, "baseline", baseline, BASELINES)
    fill = {"zeros": 0.0, "black": jnp.min(x), "white": jnp.max(x)}[baseline]
    return jnp.full(shape, fill, jnp.result_type(x))
  if isinstance(baseline, (bool, np.bool_)) or baseline is None:
    raise ValueError(BASELINE_ERROR.format(method=method, kinds=BASELINES,
                                           shape=shape, value=baseline))
  try:
    np.broadcast_shapes(np.shape(baseline), shape)
    return jnp.broadcast_to(jnp.asarray(baseline, jnp.result_type(x)), shape)
  except (ValueError, TypeError):
    raise ValueError(BASELINE_ERROR.format(
        method=method, kinds=BASELINES, shape=shape,
        value=f"shape {np.shape(baseline)}" if hasattr(baseline, "shape")
        else baseline)) from None


@batching.cost(lambda x_shape, steps, **_: steps)
def integrated_gradients(logits_fn: Any, x: jax.Array, target: int | jax.Array,
                         *, key: jax.Array | None = None,
                         batch_size: int | None = None,
                         strategy: str | None = None, steps: int = 25,
                         baseline: Any = "zeros",
                         quadrature: str = "pair") -> jax.Array:
  r"""Integrated Gradients of the target logit from a baseline to the image.

  .. math::
    M(x) = (x - b) \odot \int_0^1 \nabla f_t(b + \alpha (x - b))\, d\alpha
         \approx (x - b) \odot \sum_{i=1}^{n} w_i\,
           \nabla f_t(b + \alpha_i (x - b))

  with :math:`b` = ``baseline``, :math:`n` = ``steps`` and
  :math:`(\alpha_i, w_i)` from ``quadrature`` (:func:`path_quadrature`).
  Completeness: :math:`\sum M \approx f_t(x) - f_t(b)` (:func:`completeness`).

  Args:
    logits_fn: an :class:`Explainee`, an NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    target: class index t explained.
    key: unused (deterministic); kept for the common signature.
    batch_size: path steps evaluated at once; ``None``: see
      :func:`batching.resolve`.
    strategy: how chunks of steps run (:data:`batching.STRATEGIES`).
    steps: number of gradient evaluations n along the path.
    baseline: ``'zeros'``, ``'black'`` (image minimum), ``'white'`` (image
      maximum), a number, or an array broadcastable to (H, W, C).
    quadrature: one of :data:`QUADRATURES`; ``'pair'`` = PAIR ``saliency``.

  Returns:
    Signed attribution (H, W, C).

  Reference: Sundararajan et al., arXiv:1703.01365.
  """
  del key
  _checks.image("integrated_gradients", x)
  _checks.target("integrated_gradients", target)
  alphas, weights = path_quadrature(quadrature, steps)
  x = jnp.asarray(x)
  b = baseline_for(x, baseline)
  strategy, batch_size = batching.resolve(strategy, batch_size)
  dtype = x.dtype
  total = batching.sample_sum(
      _weighted_gradient, (as_explainee(logits_fn), x, target, b),
      (np.asarray(alphas, dtype), np.asarray(weights, dtype)),
      batch_size=batch_size, strategy=strategy)
  return (x - b) * total


def _weighted_gradient(operands, sample):
  explainee, x, target, b = operands
  alpha, weight = sample
  return weight * jax.grad(lambda z: explainee.logits(z)[target])(
      b + alpha * (x - b))


def completeness(logits_fn: Any, x: jax.Array, target: int | jax.Array,
                 attribution: jax.Array, *,
                 baseline: Any = "zeros") -> tuple[jax.Array, jax.Array]:
  r"""The two sides of IG's completeness axiom.

  .. math::
    \sum_{h,w,c} M_{hwc} \quad\text{vs}\quad f_t(x) - f_t(b)

  Returns:
    ``(attribution.sum(), f_t(x) - f_t(b))``, scalars; their relative gap is
    the quadrature error.
  """
  _checks.image("completeness", x)
  b = baseline_for(x, baseline, "completeness")
  difference = _difference(as_explainee(logits_fn), x, b, target)
  return jnp.sum(attribution), difference


@jax.jit
def _difference(explainee, x, b, target):
  return explainee.logits(x)[target] - explainee.logits(b)[target]
