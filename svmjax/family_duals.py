r"""The exact solver's pieces for every built-in machine of the family: :func:`dual_for`.

:mod:`svmjax.duals` has the :class:`svmjax.duals.Dual` of Weston–Watkins, Crammer–Singer
and one-vs-rest; this module derives one for the unified template of Doğan, Glasmachers &
Igel (every combination of margins, classes, aggregate, term weights, true-class margin
and squared hinge), its named members (Lee–Lin–Wahba, ATS, ATM, ADM, MMR, reinforced),
and, through :mod:`svmjax.topk_duals`, the top-k hinges and smooth top-k at ``k = 1``.
Everything is in the solver's ``[C, N]`` layout.

Dual variables: ``a_ic`` is the derivative of the loss in its ``c``-th term divided by
that term's weight :math:`\omega_c`, so that the feasible sets are the plain ones (a box
for a sum of hinges, a simplex for a maximum) whatever the weights. Derivations, bounds
and feasible sets: docs page *The duals of the family*.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from svmjax import _dual_parts as parts
from svmjax import _members, duals, family, registry, topk_duals
from svmjax._loss_parts import hinge as _hinge
from svmjax.duals import class_max, class_sum

__all__ = ["dual_for"]


class _Terms(NamedTuple):
    """The static settings of one template loss: margins ``relative`` (else absolute),
    ``aggregate`` (``"sum"`` or ``"max"``), the weights of the wrong-class terms and of the
    true-class term (0: no such term), the true-class target margin ``true_scale *
    margin + true_offset``, and whether the model carries the sum-to-zero constraint."""

    relative: bool
    aggregate: str
    wrong: float
    true: float
    true_scale: float
    true_offset: float
    sum_to_zero: bool


def dual_for(
    name: str, options: Mapping[str, Any] | None, n_classes: int, *, squared: bool | None = None
) -> duals.Dual:
    """The exact solver's pieces for the built-in loss ``name`` with its ``options``.

    Args:
      name: a loss registered by svmjax itself (:func:`svmjax.registry.builtin`).
      options: the loss's extra keyword options (``loss_options``), e.g. ``{"k": 2}``.
      n_classes: the number of classes ``C`` (the reinforced hinge's true-class margin is
        ``(C - 1) * margin``; top-k needs ``k <= C``).
      squared: if given, the ``squared`` of the solve, checked here (smooth top-k has no
        certificate for ``squared=True``).

    Returns:
      A :class:`svmjax.duals.Dual` (with its ``linear`` and ``conjugate`` for every loss
      beyond the three of :mod:`svmjax.duals`).

    Raises:
      ValueError: an unknown or user-registered loss, an unknown option or a bad value
        (naming it), or a combination no conjugate certifies (smooth top-k with ``k >= 2``
        is not convex in the scores; with ``squared=True``).

    Example:
      >>> from svmjax import family_duals
      >>> dual = family_duals.dual_for("reinforced_hinge", {"gamma": 0.5}, 4)
      >>> dual.linear is not None
      True
    """
    if not registry.builtin(name):
        raise ValueError(f"loss {name!r} has no derived dual: only svmjax's built-in losses do")
    options = dict(registry.loss_options(name, options))
    sum_to_zero = registry.get(name).constraint == "sum_to_zero"
    if name in _BUILT_IN:
        return _BUILT_IN[name]
    if name == "top_k_hinge":
        return topk_duals.top_k_dual(
            options.get("k", 1), options.get("variant", "alpha"), n_classes
        )
    if name == "smooth_top_k":
        return topk_duals.smooth_top_k_dual(
            options.get("k", 1), options.get("tau", 1.0), n_classes, squared
        )
    if name == "reinforced_hinge":
        gamma = options.get("gamma", 0.5)
        if not isinstance(gamma, int | float) or not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be a Python float in [0, 1], got {gamma!r}")
        settings = dict(_members.MACHINES[name], wrong_weight=1.0 - gamma, true_weight=gamma)
        return _template_dual(settings, n_classes - 1.0, 0.0, sum_to_zero)
    if name == "absolute_sum_hinge":
        return _template_dual(dict(margins="absolute", classes="all"), 1.0, 0.0, sum_to_zero)
    if name in _members.MACHINES:
        return _template_dual(_members.MACHINES[name], 1.0, 0.0, sum_to_zero)
    # the unified template itself
    true_margin = options.pop("true_margin", None)
    if true_margin is None:
        scale = 1.0 if options.get("margins", "relative") == "absolute" else 0.0
        return _template_dual(options, scale, 0.0, sum_to_zero)
    if not isinstance(true_margin, int | float) or not math.isfinite(true_margin):
        raise ValueError(f"true_margin must be a finite Python float, got {true_margin!r}")
    return _template_dual(options, 0.0, float(true_margin), sum_to_zero)


_BUILT_IN = {
    "weston_watkins": duals.WESTON_WATKINS,
    "crammer_singer": duals.CRAMMER_SINGER,
    "one_vs_rest": duals.ONE_VS_REST,
}


def _template_dual(settings, true_scale, true_offset, sum_to_zero) -> duals.Dual:
    """The :class:`svmjax.duals.Dual` of the template with keyword ``settings``
    (``margins``, ``classes``, ``aggregate``, ``wrong_weight``, ``true_weight``) and
    true-class margin ``true_scale * margin + true_offset``."""
    spec = family.Template(**settings).checked()
    terms = _Terms(
        relative=spec.margins == "relative",
        aggregate=spec.aggregate,
        wrong=spec.wrong_weight if spec.classes != "true" else 0.0,
        true=spec.true_weight if spec.classes != "wrong" else 0.0,
        true_scale=float(true_scale),
        true_offset=float(true_offset),
        sum_to_zero=sum_to_zero,
    )
    return _template(terms)


@functools.cache
def _template(t: _Terms) -> duals.Dual:
    """One Dual per setting (cached: the solver's static arguments stay the same objects)."""

    def bind(f):
        return functools.partial(f, t)

    smoothed = (lambda sq: True) if t.aggregate == "max" else (lambda sq: not sq)
    return duals.Dual(
        smooth=bind(_smooth),
        dual_map=bind(_dual_map),
        repair=bind(_repair),
        value=parts.no_value,
        smoothed=smoothed,
        scale=_max_scale if t.aggregate == "max" else _sum_scale,
        curvature=bind(_curvature),
        hinge=bind(_hinge_value),
        linear=bind(_linear),
        conjugate=bind(_conjugate),
    )


# ------------------------------------------------------------------------ the template's parts


def _margins(t: _Terms, z, is_true, margin):
    """The margins ``v`` ``[C, N]`` (unweighted) and the term weights ``w`` ``[C, N]`` (0
    where a class has no term): relative ``v_c = margin + z_c - z_y``, ``v_y = nu_y`` (a
    constant); absolute ``v_c = margin + z_c``, ``v_y = nu_y - z_y``."""
    nu_y = t.true_scale * margin + t.true_offset
    if t.relative:
        true_score = class_sum(jnp.where(is_true, z, 0))
        v = jnp.where(is_true, nu_y, z - true_score[None, :] + margin)
    else:
        v = jnp.where(is_true, nu_y - z, z + margin)
    w = jnp.where(is_true, jnp.asarray(t.true, z.dtype), jnp.asarray(t.wrong, z.dtype))
    return v, w


def _hinge_value(t: _Terms, z, is_true, margin, squared):
    v, w = _margins(t, z, is_true, margin)
    terms = w * _hinge(v, squared)
    return class_sum(terms) if t.aggregate == "sum" else class_max(terms)


def _smooth(t: _Terms, z, is_true, margin, mu, squared):
    """Sums: each term's hinge softplus-smoothed (its variable a sigmoid in ``(0, 1)``),
    the relative margins' constant true-class term exact; squared, exact. Maxima: the
    maximum of ``0`` and the weighted margins (``sqrt(w)`` for squared) as a log-sum-exp
    (variables: its probabilities), squared for squared hinges."""
    v, w = _margins(t, z, is_true, margin)
    active = w > 0
    if t.aggregate == "sum":
        if squared:
            h = jnp.where(active, jnp.maximum(v, 0), 0)
            return class_sum(w * h * h), 2 * h
        constant = is_true & t.relative  # no score in it: not smoothed
        values = jnp.where(constant, jnp.maximum(v, 0), mu * jax.nn.softplus(v / mu))
        a = jnp.where(constant, (v > 0).astype(v.dtype), jax.nn.sigmoid(v / mu))
        return class_sum(jnp.where(active, w * values, 0)), jnp.where(active, a, 0)
    e = jnp.sqrt(w) if squared else w
    r = jnp.where(active, e * v / mu, -jnp.inf)
    top = jnp.maximum(class_max(r), 0)
    expo = jnp.exp(r - top[None, :])
    total = jnp.exp(-top) + class_sum(expo)
    m = mu * (top + jnp.log(total))  # mu * log(1 + sum_c exp(e_c v_c / mu))
    p = expo / total[None, :]
    if not squared:
        return m, p
    return m * m, jnp.where(active, 2 * m[None, :] * p / jnp.where(active, e, 1), 0)


def _weighted(t: _Terms, a, is_true):
    return a * jnp.where(is_true, jnp.asarray(t.true, a.dtype), jnp.asarray(t.wrong, a.dtype))


def _dual_map(t: _Terms, a, is_true, c):
    """``u = c G(w a)``: ``w a`` is the loss's derivative in its margins."""
    mapped = parts.relative_map if t.relative else parts.absolute_map
    return mapped(_weighted(t, a, is_true), is_true, c)


def _linear(t: _Terms, a, is_true, c, margin):
    """``sum_i c_i sum_c w_c nu_c a_ic``."""
    nu = jnp.where(is_true, t.true_scale * margin + t.true_offset, margin)
    return jnp.sum(c[None, :] * nu * _weighted(t, a, is_true))


def _conjugate(t: _Terms, a, is_true, c, squared):
    """Squared hinges: ``sum_i c_i sum_c w_c a_ic^2 / 4`` (sums) or ``sum_i c_i (sum_c
    sqrt(w_c) a_ic)^2 / 4`` (maxima); hinges: 0."""
    if not squared:
        return jnp.zeros((), a.dtype)
    if t.aggregate == "sum":
        return jnp.sum(c[None, :] * _weighted(t, a * a, is_true)) / 4
    root = a * jnp.sqrt(jnp.where(is_true, t.true, t.wrong)).astype(a.dtype)
    return jnp.sum(c * class_sum(root) ** 2) / 4


def _repair(t: _Terms, a, is_true, c):
    """Relative margins: each example's wrong-class variables scaled by its class's factor
    (the true-class variable of a constant term takes no part in ``u``); absolute: per
    class and side, towards ``sum_i u_i = 0`` or, under the sum-to-zero constraint, equal
    entries. Only scaling down: every feasible set here stays feasible."""
    if t.relative:
        lam, ok = parts.relative_factors(a, is_true, c)
        return jnp.where(is_true, a, a * parts.of_example(lam, is_true)[None, :]), ok
    return parts.absolute_repair(a, is_true, c, t.true, t.wrong, t.sum_to_zero)


def _sum_scale(a, c):
    return parts.largest_scale(class_max(a), c)


def _max_scale(a, c):
    return parts.largest_scale(class_sum(a), c)


def _curvature(t: _Terms, a, per, is_true, c, mu, squared):
    r"""``v -> H v`` for :math:`H = \sum_i c_i A_i^\top \nabla^2_v L_\mu A_i`, the margins
    :math:`v = A_i z + \nu`, from the smoothing's outputs."""
    w = jnp.where(is_true, jnp.asarray(t.true, a.dtype), jnp.asarray(t.wrong, a.dtype))
    varies = ~is_true | (not t.relative)  # the relative true-class term is a constant
    if t.aggregate == "sum":
        h = 2 * w * (a > 0) if squared else w * a * (1 - a) / mu
        return parts.gram(jnp.where(varies, h, 0), is_true, c, t.relative)
    if not squared:  # Hessian in v: (diag(w^2 p) - (w p)(w p)^T) / mu, p = a
        wp = jnp.where(varies, w * a, 0)
        return parts.plus(
            parts.gram(w * wp / mu, is_true, c, t.relative),
            parts.outer(wp, is_true, c, jnp.full(c.shape, -1 / mu, a.dtype), t.relative),
        )
    # m^2 with m the log-sum-exp: 2 (e p)(e p)^T + (2 m / mu)(diag(w p) - (e p)(e p)^T),
    # e = sqrt(w); a = 2 m p / e, so e p = w a / (2 m); m from per = c m^2.
    m = jnp.sqrt(jnp.where(c > 0, per / jnp.where(c > 0, c, 1), 0))
    ep = jnp.where(varies, w * a, 0) / jnp.maximum(2 * m, jnp.finfo(a.dtype).tiny)[None, :]
    ep = jnp.where((c > 0)[None, :], ep, 0)
    e = jnp.sqrt(w)
    return parts.plus(
        parts.gram(2 * m[None, :] * e * ep / mu, is_true, c, t.relative),
        parts.outer(ep, is_true, c, 2 - 2 * m / mu, t.relative),
    )
