"""Guided Integrated Gradients: IG along a path chosen by the gradient.

Reference: Kapishnikov et al., "Guided Integrated Gradients: an Adaptive Path
Method for Removing Noise", CVPR 2021, https://arxiv.org/abs/2106.09788
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from saliency_jax.saliency import _checks
from saliency_jax.saliency.explainee import Explainee, as_explainee
from saliency_jax.saliency.integrated_gradients import baseline_for

# PAIR's closeness tolerance for L1 distances (float64); float32 sums carry
# rounding far above it, so the tolerance never goes below a few ulps.
_EPSILON = 1e-9


def _guided_step(x: jax.Array, grad: jax.Array, x_input: jax.Array,
                 x_baseline: jax.Array, alpha_min: jax.Array,
                 alpha_max: jax.Array, l1_target: jax.Array, q_index: int,
                 tol: float) -> jax.Array:
  """One PAIR step: move the lowest-|gradient| features until L1 = target."""
  diff = x_input - x_baseline
  x_min = x_baseline + diff * alpha_min
  x_max = x_baseline + diff * alpha_max
  safe = jnp.where(diff != 0, diff, 1)

  def cond(state):
    return state[1] > 1.0

  def body(state):
    x, _, grad = state
    # Features lagging behind alpha_min jump to it (no alpha: never lag).
    x_alpha = jnp.where(diff != 0, (x - x_baseline) / safe, alpha_max)
    x = jnp.where(x_alpha < alpha_min, x_min, x)
    l1 = jnp.sum(jnp.abs(x - x_input))
    close = jnp.abs(l1 - l1_target) <= tol * jnp.maximum(
        1.0, jnp.maximum(jnp.abs(l1), jnp.abs(l1_target)))
    # Features at x_max are done for this step: out of the selection.
    grad = jnp.where(x == x_max, jnp.inf, grad)
    mag = jnp.abs(grad)
    # np.quantile(..., method='lower') = the floor(q (n - 1))-th smallest.
    threshold = jnp.sort(mag.reshape(-1))[q_index]
    selected = (mag <= threshold) & (grad != jnp.inf)
    l1_s = jnp.sum(jnp.abs(x - x_max) * selected)
    gamma = jnp.where(l1_s > 0,
                      (l1 - l1_target) / jnp.where(l1_s > 0, l1_s, 1), jnp.inf)
    # PAIR asserts gamma > 0; a float32 L1 below target only moves nothing.
    moved = jnp.where(gamma > 1.0, x_max,
                      x + (x_max - x) * jnp.clip(gamma, 0.0, 1.0))
    x = jnp.where(selected & ~close, moved, x)
    # Stop when close, or when nothing is left to move (PAIR would spin).
    gamma = jnp.where(close | (l1_s <= 0), 0.0, gamma)
    return x, gamma, grad

  x_new, _, _ = jax.lax.while_loop(
      cond, body, (x, jnp.array(jnp.inf, x.dtype), grad))
  return x_new


def guided_ig(logits_fn: Any, x: jax.Array, target: int | jax.Array, *,
              key: jax.Array | None = None, batch_size: int | None = None,
              steps: int = 200, fraction: float = 0.25, max_dist: float = 0.02,
              baseline: Any = "zeros",
              strategy: str | None = None) -> jax.Array:
  r"""Guided IG of the target logit for one image, as PAIR implements it.

  .. math::
    M(x) = \sum_{k=0}^{n-1} (x_{k+1} - x_k) \odot \nabla f_t(x_k),
    \qquad x_0 = x',\ x_n = x

  where step k moves the ``fraction`` of features with the smallest
  :math:`|\nabla f_t(x_k)|` first, until
  :math:`\|x_{k+1} - x\|_1 = (1 - \tfrac{k+1}{n}) \|x - x'\|_1`, every
  feature's :math:`\alpha` staying within ``max_dist`` of :math:`(k+1)/n`;
  :math:`x'` = ``baseline``, :math:`n` = ``steps``. For a linear f it is IG,
  :math:`w \odot (x - x')`; ``max_dist=0`` is IG with the left Riemann sum.

  Args:
    logits_fn: an explainee, NNX model or ``logits_fn(x) -> (K,)``.
    x: one image (H, W, C).
    target: class index explained.
    key: unused (deterministic); accepted for the common signature.
    batch_size: unused: the path is sequential, one gradient per step.
    steps: path steps (gradient evaluations).
    fraction: share of features moved per inner iteration (0, 1].
    max_dist: largest alpha deviation from the straight path, in [0, 1].
    baseline: ``'zeros'`` (PAIR's default), ``'black'``, ``'white'``, a
      number or an array (H, W, C).
    strategy: unused (see ``batch_size``).

  Returns:
    Signed attribution (H, W, C), in x's dtype.

  Reference: Kapishnikov et al., arXiv:2106.09788, Algorithm 1.
  """
  # No `batching.cost` declaration: one gradient at a time whatever `steps`,
  # so `explain` may run `batch_size` images side by side.
  del key, batch_size, strategy
  _checks.image("guided_ig", x)
  _checks.target("guided_ig", target)
  _checks.positive_int("guided_ig", "steps", steps)
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"guided_ig: fraction must be in (0, 1], got {fraction}")
  if not 0.0 <= max_dist <= 1.0:
    raise ValueError(f"guided_ig: max_dist must be in [0, 1], got {max_dist}")
  x = jnp.asarray(x)
  return _path(as_explainee(logits_fn), x, target,
               baseline_for(x, baseline, "guided_ig"),
               jnp.asarray(max_dist, x.dtype), steps=int(steps),
               fraction=float(fraction))


@functools.partial(jax.jit, static_argnames=("steps", "fraction"))
def _path(explainee: Explainee, x: jax.Array, target: jax.Array,
          x_baseline: jax.Array, max_dist: jax.Array, *, steps: int,
          fraction: float) -> jax.Array:
  """PAIR's ``guided_ig_impl``: a scan over steps, one gradient each."""
  grad_fn = jax.grad(lambda z: explainee.logits(z)[target])
  q_index = math.floor(fraction * (x.size - 1))
  tol = max(_EPSILON, 8 * float(jnp.finfo(x.dtype).eps))
  l1_total = jnp.sum(jnp.abs(x - x_baseline))

  def step(carry, k):
    x_k, attr = carry
    grad = grad_fn(x_k).astype(x.dtype)
    alpha = (k + 1.0) / steps
    x_next = _guided_step(
        x_k, grad, x, x_baseline, jnp.maximum(alpha - max_dist, 0.0),
        jnp.minimum(alpha + max_dist, 1.0), l1_total * (1.0 - alpha),
        q_index, tol)
    return (x_next, attr + (x_next - x_k) * grad), None

  (_, attr), _ = jax.lax.scan(step, (x_baseline, jnp.zeros_like(x)),
                              jnp.arange(steps, dtype=x.dtype))
  return attr
