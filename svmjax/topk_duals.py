r"""The exact solver's pieces for the top-k hinges and smooth top-k: :func:`top_k_dual`,
:func:`smooth_top_k_dual` (reached through :func:`svmjax.family_duals.dual_for`).

With :math:`v = z - z_y + \Delta (1 - e_y)` (:math:`v_y = 0`), the top-k hinge α is
:math:`h(\frac1k \sum_{j \le k} v_{[j]})` and β is :math:`\frac1k \sum_{j \le k}
h(v_{[j]})`; their conjugates are the top-k sets of Lapin, Hein & Schiele (2015), and
their smoothing replaces the top-k mean by a log-sum-exp over all ``k``-subsets
(:func:`svmjax.family.log_esp`, ``O(k C)`` per example), whose gradient is the subsets'
inclusion probabilities over ``k``: always inside the top-k set. Smooth top-k is convex
in the scores only at ``k = 1`` (Crammer–Singer smoothed at temperature ``tau``), where
its conjugate is an entropy. Derivations: docs page *The duals of the family*.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from svmjax import _dual_parts as parts
from svmjax import duals, family
from svmjax._checks import check_k, check_tau
from svmjax._loss_parts import hinge as _hinge
from svmjax.duals import class_max, class_sum

__all__ = ["top_k_dual", "smooth_top_k_dual"]


def top_k_dual(k: int, variant: str, n_classes: int) -> duals.Dual:
    """The :class:`svmjax.duals.Dual` of :func:`svmjax.losses.top_k_hinge` (``k`` in
    ``[1, C]``, ``variant`` ``"alpha"`` or ``"beta"``); ``ValueError`` naming a bad one."""
    k = check_k(k, n_classes, n_classes)
    if variant not in ("alpha", "beta"):
        raise ValueError(f"variant must be 'alpha' or 'beta', got {variant!r}")
    return _top_k(k, variant, n_classes)


@functools.cache
def _top_k(k: int, variant: str, n_classes: int) -> duals.Dual:
    alpha = variant == "alpha"
    size = k if alpha else min(k, n_classes - 1)  # beta: the top k of the wrong classes
    smooth_set = size < (n_classes if alpha else n_classes - 1)  # more than one subset
    return duals.Dual(
        smooth=functools.partial(_smooth_alpha if alpha else _smooth_beta, k, size),
        dual_map=parts.relative_map,
        repair=_repair,
        value=parts.no_value,
        smoothed=lambda sq: (not sq) or smooth_set,
        scale=_alpha_scale if alpha else functools.partial(_beta_scale, k),
        curvature=functools.partial(_curvature_alpha if alpha else _curvature_beta, k),
        hinge=functools.partial(_hinge_alpha if alpha else _hinge_beta, k, size),
        linear=_linear,
        conjugate=_alpha_conjugate if alpha else functools.partial(_beta_conjugate, k),
    )


def smooth_top_k_dual(k: int, tau: float, n_classes: int, squared: bool | None) -> duals.Dual:
    """The :class:`svmjax.duals.Dual` of :func:`svmjax.losses.smooth_top_k` at ``k = 1``
    (``tau > 0``); ``ValueError`` for ``k >= 2`` (the loss is not convex in the scores,
    so no conjugate bounds its optimum) and for ``squared=True``."""
    k = check_k(k, n_classes, n_classes - 1)
    tau = check_tau(tau)
    if k >= 2:
        raise ValueError(
            f"smooth_top_k with k={k} has no duality-gap certificate: for k >= 2 the loss is "
            "not convex in the scores (its Hessian has negative eigenvalues), so no conjugate "
            "bounds its optimum; use k=1, top_k_hinge, or svmjax.train.fit"
        )
    if squared:
        raise ValueError(_SQUARED_SMOOTH)
    return _smooth_top_1(tau)


_SQUARED_SMOOTH = (
    "smooth_top_k with squared=True has no duality-gap certificate: the conjugate of the "
    "squared loss is not quadratic along a ray, which the solver's certificate needs; "
    "use squared=False"
)


# ------------------------------------------------------------------------------ top-k hinges


def _margins(z, is_true, margin):
    """``v = z - z_y + margin`` on the wrong classes, 0 on the true class ``[C, N]``."""
    true_score = class_sum(jnp.where(is_true, z, 0))
    return jnp.where(is_true, 0, z - true_score[None, :] + margin)


def _top_mean(v, size: int, divisor: int):
    """``sum of the size largest entries of v / divisor`` over the class axis ``[N]``."""
    return jnp.sum(jax.lax.top_k(v.T, size)[0], axis=1) / divisor


def _smooth_top_mean(x, size: int, divisor: int, mu):
    r"""``f = mu log sum_{|S| = size} exp(sum_{j in S} x_j / (divisor mu))`` ``[N]`` (an
    entry ``-inf`` takes no part) and its gradient ``p / divisor`` ``[C, N]``, ``p`` the
    inclusion probabilities of the subsets (``sum_j p_j = size``); ``f`` lies between
    :func:`_top_mean` and ``mu log binom(n, size)`` above it."""
    y = x / (divisor * mu)
    shift = jax.lax.stop_gradient(class_max(y))  # keeps the log-space numbers moderate

    values, pull = jax.vjp(lambda y: _log_esp(y - shift[None, :], size), y)
    (p,) = pull(jnp.ones_like(values))
    return mu * (values + size * shift), p / divisor


_UNROLLED = 256  # up to this many steps (classes times subset size), the recursion is unrolled


def _log_esp(x, size: int):
    """``log e_size(exp(x))`` over the class axis of ``x`` ``[C, N]``: ``[N]``.

    The recursion ``e_m <- e_m + x_j e_(m-1)`` over the classes, in log space: unrolled
    (elementwise along ``N``, where XLA vectorises it) for few classes and small subsets,
    :func:`svmjax.family.log_esp`'s scan beyond."""
    n_classes = x.shape[0]
    if n_classes * size > _UNROLLED:
        return family.log_esp(x.T, size)[0][:, size]
    e = [jnp.zeros(x.shape[1:], x.dtype)]
    for j in range(n_classes):
        # after j + 1 classes, e_m is -inf for m > j + 1: only the reachable orders change
        top = min(j + 1, size)
        grown = [_log_add(e[m], e[m - 1] + x[j]) for m in range(1, min(j, size) + 1)]
        e = [e[0], *grown] + ([e[top - 1] + x[j]] if top > min(j, size) else [])
    return e[size]


def _log_add(a, b):
    """``logaddexp(a, b)`` with a finite gradient where both are ``-inf`` (an empty sum)."""
    empty = (a == -jnp.inf) & (b == -jnp.inf)
    out = jnp.logaddexp(jnp.where(empty, 0, a), jnp.where(empty, 0, b))
    return jnp.where(empty, -jnp.inf, out)


def _hinge_alpha(k, size, z, is_true, margin, squared):
    return _hinge(_top_mean(_margins(z, is_true, margin), k, k), squared)


def _hinge_beta(k, size, z, is_true, margin, squared):
    h = jnp.where(is_true, -jnp.inf, _hinge(_margins(z, is_true, margin), squared))
    return _top_mean(h, size, k)


def _smooth_alpha(k, size, z, is_true, margin, mu, squared):
    """``softplus`` (or the squared hinge) of the smoothed top-k mean over all classes:
    ``a = s q`` with ``q = p / k`` (a point of the capped simplex) and ``s`` the outer
    derivative."""
    f, q = _smooth_top_mean(_margins(z, is_true, margin), k, k, mu)
    if squared:
        h = jnp.maximum(f, 0)
        return h * h, 2 * h[None, :] * q
    return mu * jax.nn.softplus(f / mu), jax.nn.sigmoid(f / mu)[None, :] * q


def _smooth_beta(k, size, z, is_true, margin, mu, squared):
    """The smoothed top-``k'`` mean over the wrong classes of their softplus-smoothed (or
    squared) hinges: ``a_j = (p_j / k) h'(v_j)``."""
    v = _margins(z, is_true, margin)
    if squared:
        h = jnp.maximum(v, 0)
        x, slope = h * h, 2 * h
    else:
        x, slope = mu * jax.nn.softplus(v / mu), jax.nn.sigmoid(v / mu)
    f, q = _smooth_top_mean(jnp.where(is_true, -jnp.inf, x), size, k, mu)
    return f, jnp.where(is_true, 0, q * slope)


def _linear(a, is_true, c, margin):
    """``margin * sum_i c_i sum_{j != y_i} a_ij`` (the true class's margin is 0)."""
    return margin * jnp.sum(c[None, :] * jnp.where(is_true, 0, a))


def _repair(a, is_true, c):
    """Every variable of example ``i`` (its true class's too: alpha's set bounds each
    entry by the example's total) scaled by its class's factor."""
    lam, ok = parts.relative_factors(a, is_true, c)
    return a * parts.of_example(lam, is_true)[None, :], ok


def _alpha_scale(a, c):
    """Alpha's set ``{a >= 0, a_j <= sum(a) / k, sum(a) <= 1}``: only the total bounds a
    multiple."""
    return parts.largest_scale(class_sum(a), c)


def _beta_scale(k, a, c):
    """Beta's set ``{0 <= a_j <= 1 / k, sum(a) <= 1}``."""
    return parts.largest_scale(jnp.maximum(k * class_max(a), class_sum(a)), c)


def _alpha_conjugate(a, is_true, c, squared):
    """Squared: ``sum_i c_i (sum_j a_ij)^2 / 4`` on the cone ``{a_j <= sum(a) / k}``."""
    if not squared:
        return jnp.zeros((), a.dtype)
    return jnp.sum(c * class_sum(a) ** 2) / 4


def _beta_conjugate(k, a, is_true, c, squared):
    r"""Squared: ``sum_i c_i q(a_i)``, :math:`q(a) = \min_b \sum_j a_j^2 / (4 b_j)` over
    beta's set ``{0 <= b_j <= 1/k, sum(b) <= 1}`` (a squared k-support norm, ``k/4`` times
    it): for each ``m < k``, ``b`` caps the ``m`` largest entries at ``1/k`` and spreads
    ``1 - m/k`` over the rest in proportion to ``a`` (clipped at ``1/k``); each is a
    feasible ``b`` (an upper bound of ``q``) and the best of them is ``q``."""
    if not squared:
        return jnp.zeros((), a.dtype)
    tiny = jnp.finfo(a.dtype).tiny
    s = -jnp.sort(-jnp.where(is_true, 0, a), axis=0)  # descending
    total = class_sum(s)
    position = jnp.arange(s.shape[0])[:, None]

    def candidate(m, best):
        head = position < m
        rest = total - class_sum(jnp.where(head, s, 0))
        share = s * (1 - m / k) / jnp.maximum(rest, tiny)[None, :]
        b = jnp.where(head, 1 / k, jnp.minimum(1 / k, share))
        value = class_sum(jnp.where(s > 0, s * s / (4 * jnp.where(s > 0, b, 1)), 0))
        return jnp.minimum(best, value)

    best = jax.lax.fori_loop(0, k, candidate, jnp.full(total.shape, jnp.inf, a.dtype))
    return jnp.sum(c * best)


def _curvature_alpha(k, a, per, is_true, c, mu, squared):
    r"""With ``s = sum(a)`` (the outer derivative) and ``q = a / s``: the outer function's
    :math:`s'' q q^\top` plus :math:`s\, \mathrm{Cov}(p) / (k^2 \mu)`, the subsets'
    covariance taken as its diagonal :math:`p (1 - p)` (its exact off-diagonal needs
    pairwise inclusion probabilities)."""
    s = class_sum(a)
    q = a / jnp.maximum(s, jnp.finfo(a.dtype).tiny)[None, :]
    own = jnp.maximum(a * (1 - k * q), 0) / (k * mu)
    second = 2 * (s > 0).astype(a.dtype) if squared else s * (1 - s) / mu
    return parts.plus(parts.gram(own, is_true, c, True), parts.outer(q, is_true, c, second, True))


def _curvature_beta(k, a, per, is_true, c, mu, squared):
    """The top-k set taken as sharp (each ``a_j = h'(v_j) / k`` on it): the summed hinges'
    diagonal, ``a (1 - k a) / mu`` (softplus) or ``2 / k`` where active (squared)."""
    own = 2 / k * (a > 0) if squared else jnp.maximum(a * (1 - k * a), 0) / mu
    return parts.gram(own.astype(a.dtype), is_true, c, True)


# ---------------------------------------------------------------------------- smooth top-k


@functools.cache
def _smooth_top_1(tau: float) -> duals.Dual:
    return duals.Dual(
        smooth=functools.partial(_smooth_top_1_loss, tau),
        dual_map=parts.relative_map,
        repair=_repair,
        value=parts.no_value,
        smoothed=lambda sq: False,
        scale=lambda a, c: jnp.ones((), a.dtype),
        curvature=functools.partial(_curvature_top_1, tau),
        hinge=functools.partial(_hinge_top_1, tau),
        linear=_linear,
        conjugate=functools.partial(_entropy, tau),
    )


def _smooth_top_1_loss(tau, z, is_true, margin, mu, squared):
    """``tau log(1 + sum_{j != y} exp(v_j / tau))`` and its probabilities (``mu`` unused:
    the loss is smooth)."""
    if squared:
        raise ValueError(_SQUARED_SMOOTH)
    true_score = class_sum(jnp.where(is_true, z, 0))
    r = jnp.where(is_true, -jnp.inf, (z - true_score[None, :] + margin) / tau)
    top = jnp.maximum(class_max(r), 0)
    expo = jnp.exp(r - top[None, :])
    total = jnp.exp(-top) + class_sum(expo)
    return tau * (top + jnp.log(total)), expo / total[None, :]


def _hinge_top_1(tau, z, is_true, margin, squared):
    return _smooth_top_1_loss(tau, z, is_true, margin, None, squared)[0]


def _entropy(tau, a, is_true, c, squared):
    """``tau sum_i c_i [sum_j a_ij log a_ij + (1 - s_i) log(1 - s_i)]``, ``s_i = sum_j
    a_ij``: the conjugate of ``tau log(1 + sum exp(v / tau))`` beyond its linear part."""
    slack = 1 - class_sum(a)
    negent = class_sum(jax.scipy.special.xlogy(a, a)) + jax.scipy.special.xlogy(slack, slack)
    return tau * jnp.sum(c * negent)


def _curvature_top_1(tau, a, per, is_true, c, mu, squared):
    """Crammer–Singer's at ``mu = tau``: ``(diag(p) - p p^T) / tau`` in the margins."""
    return parts.plus(
        parts.gram(a / tau, is_true, c, True),
        parts.outer(a, is_true, c, jnp.full(c.shape, -1 / tau, a.dtype), True),
    )
