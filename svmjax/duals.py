r"""The exact solver's per-loss pieces: smoothing, the dual map, and the dual value.

:func:`svmjax.solve.solve` is generic; what it needs to know about a loss is a
:class:`Dual`, which the loss's registry entry (:mod:`svmjax.registry`) carries. A loss
without one is refused by the solver (no certificate without a derived dual). Built in:
:data:`WESTON_WATKINS`, :data:`CRAMMER_SINGER`, :data:`ONE_VS_REST`.

Layout: inside the solver everything is transposed: weights ``V = W.T`` ``[C, D]``, scores
``Z = V @ X.T`` ``[C, N]``, dual variables ``[C, N]``. :func:`class_sum` and
:func:`class_max` reduce over the short leading class axis in a form XLA:CPU vectorises
along ``N``.

With :math:`a_i` the dual variables of example :math:`i` and :math:`u_i = c_i G(a_i)` its
dual map (:math:`G(a) = a - (\sum_j a_j) e_{y_i}` for relative margins, :math:`G(a)_j =
-t_j a_j` for absolute ones), the dual value is

.. math::

    D(a) = -\tfrac12 \Big\lVert \sum_i x_i^\top u_i \Big\rVert_F^2
           - \sum_i c_i\, \ell^*(a_i) \le P^\star;

the conjugates :math:`\ell^*`, the feasible sets and the smoothing are on the docs page
*How the solver works*.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from svmjax._dual_parts import class_max, class_sum, gram, outer, plus, relative_factors
from svmjax._loss_parts import hinge

__all__ = ["Dual", "WESTON_WATKINS", "CRAMMER_SINGER", "ONE_VS_REST", "class_max", "class_sum"]


class Dual(NamedTuple):
    """What the exact solver needs to know about one loss (arrays in the ``[C, N]`` layout).

    ``smooth(z, is_true, margin, mu, squared)`` returns the smoothed per-example losses
    ``[N]`` and their gradient ``a`` ``[C, N]`` in the dual parametrisation (so ``a`` is
    dual-feasible); ``dual_map(a, is_true, c)`` is ``u`` ``[C, N]``; ``repair(a, is_true,
    c)`` rescales ``a`` so that ``sum_i u_i = 0`` (the intercept's constraint) and returns
    ``(a, ok)``; ``value(a, uX, c, margin)`` is the best dual value of the squared hinge
    along the ray ``t * a`` (hinge losses are certified from ``scale`` and pooled points);
    ``smoothed(squared)`` says whether the loss needs smoothing at all;
    ``scale(a, c)`` is the largest ``t`` with ``t * a`` feasible for the hinge (so every
    ``s * scale(a, c) * a`` with ``0 <= s <= 1`` is, too); ``curvature(a, per, is_true,
    c, mu, squared)`` is the Hessian of the smoothed data term in the intercept,
    ``H = sum_i c_i Hess L_mu(z_i)`` (the intercept shifts every example's scores alike),
    as the function ``v -> H v`` (``[C] -> [C]``, ``O(C N)`` work: the solver applies it
    to the identity for a few classes and runs conjugate gradients with it for many,
    where a ``[C, C]`` matrix would cost ``O(C^2 N)``), from the smoothing's own outputs at
    those scores (``a``, and ``per = c *`` the smoothed losses), so the solver never
    evaluates the smoothing twice; ``hinge(z, is_true, margin,
    squared)`` (optional) is the loss itself, unsmoothed and unweighted, ``[N]``: the
    values of the loss's pure definition (:mod:`svmjax.losses`) at ``z.T``, computed in
    this layout, where the pure definition's reductions over the short class axis of
    ``[N, C]`` rows do not vectorise on XLA:CPU (the solver evaluates it at every
    iteration); without it (``None``) the solver evaluates the pure definition on ``z.T``.

    Two optional fields for the losses whose conjugate is more than ``-margin * sum(a)``
    (target margins or term weights other than 1, the top-k sets, a smooth loss; see
    :mod:`svmjax.family_duals`); with them the dual value is ``D(a) = linear - |uX|^2 / 2 -
    conjugate`` (``|P uX|^2`` under the sum-to-zero constraint, ``P`` centring the
    classes). ``linear(a, is_true, c, margin)`` is its linear part ``sum_i c_i <nu_i,
    a_i>`` (without it: ``margin * sum(c * a)``), used wherever the solver takes that part:
    the pooled point's ``lin`` and the smoothing's share of the gap. ``conjugate(a,
    is_true, c, squared)`` is the rest of the conjugate, ``sum_i c_i phi(a_i)`` with
    ``phi`` convex and ``phi(0) = 0``: for a squared hinge ``phi(t a) = t^2 phi(a)``, and
    the best point of the ray ``t * a`` (replacing ``value``) is ``t = max(lin, 0) / (|uX|^2
    + 2 conjugate)``, worth ``t lin - t^2 (|uX|^2 / 2 + conjugate)``; for a hinge it is 0;
    for a loss that needs no smoothing (``smoothed(False)`` is False) ``scale`` is 1 and
    the pooled point's ``lin`` is ``linear - conjugate`` (a lower bound of every pooled
    combination's value, as ``phi`` is convex and 0 at 0).
    """

    smooth: Callable
    dual_map: Callable
    repair: Callable
    value: Callable
    smoothed: Callable[[bool], bool]
    scale: Callable
    curvature: Callable
    hinge: Callable | None = None
    linear: Callable | None = None
    conjugate: Callable | None = None


def _relative_margins(z, is_true, margin):
    """``v = z - z_y + margin`` ``[C, N]``, ``-inf`` on the true class (no term there)."""
    true_score = class_sum(jnp.where(is_true, z, 0))
    return jnp.where(is_true, -jnp.inf, z - true_score[None, :] + margin)


def _smooth_sum(v, mu, squared):
    """Summed hinges of the margins ``v`` ``[C, N]``: softplus-smoothed, or squared."""
    if squared:
        h = jnp.maximum(v, 0)
        return class_sum(h * h), 2 * h
    values = jnp.where(v > -jnp.inf, mu * jax.nn.softplus(v / mu), 0)
    return class_sum(values), jax.nn.sigmoid(v / mu)


def _hinge_sum(v, squared):
    """Summed hinges ``sum_j h(v_j)`` ``[N]`` of the margins ``v`` ``[C, N]`` (``-inf``
    where there is no term)."""
    return class_sum(hinge(v, squared))


def _hinge_weston_watkins(z, is_true, margin, squared):
    return _hinge_sum(_relative_margins(z, is_true, margin), squared)


def _hinge_one_vs_rest(z, is_true, margin, squared):
    return _hinge_sum(margin - jnp.where(is_true, z, -z), squared)


def _hinge_crammer_singer(z, is_true, margin, squared):
    return hinge(class_max(_relative_margins(z, is_true, margin)), squared)


def _smooth_weston_watkins(z, is_true, margin, mu, squared):
    return _smooth_sum(_relative_margins(z, is_true, margin), mu, squared)


def _smooth_one_vs_rest(z, is_true, margin, mu, squared):
    return _smooth_sum(margin - jnp.where(is_true, z, -z), mu, squared)


def _smooth_crammer_singer(z, is_true, margin, mu, squared):
    r = _relative_margins(z, is_true, margin) / mu
    top = jnp.maximum(class_max(r), 0)
    expo = jnp.exp(r - top[None, :])
    total = jnp.exp(-top) + class_sum(expo)
    m = mu * (top + jnp.log(total))  # mu * log(1 + sum_j exp(v_j / mu)) >= the hinge
    p = expo / total[None, :]
    if squared:
        return m * m, 2 * m[None, :] * p
    return m, p


def _relative_map(a, is_true, c):
    """``u_i = c_i G(a_i)`` for relative margins."""
    return c[None, :] * jnp.where(is_true, -class_sum(a)[None, :], a)


def _absolute_map(a, is_true, c):
    return c[None, :] * jnp.where(is_true, -a, a)


def _repair_relative(a, is_true, c):
    """Rescale ``a`` per class so that ``sum_i u_i = 0``, only scaling down (factors in
    ``[0, 1]``, which keeps every other constraint).

    With the flow of ``a`` (:func:`svmjax._dual_parts.flow`) we need ``lam >= 0`` with
    ``flow.T @ lam = out * lam``: a null vector of this Laplacian (the Perron vector),
    unique and positive when the flow graph is strongly connected, and 1 at the optimum.
    ``ok`` is False when no such vector exists (a class with no active dual variable).

    The columns of the Laplacian ``L`` sum to zero, so ``L + 1 1^T / C`` maps its null
    vector ``v`` to ``mean(v) 1``: one linear solve finds it (``O(C^3 / 3)``, where a
    singular value decomposition costs tens of times more at a thousand classes).
    """
    lam, ok = relative_factors(a, is_true, c)
    return a * class_sum(jnp.where(is_true, lam[:, None], 0))[None, :], ok


def _repair_absolute(a, is_true, c):
    """Per class, scale down the larger of the two sides (``+`` and ``-`` examples)."""
    ca = c[None, :] * a
    pos = jnp.sum(jnp.where(is_true, ca, 0), axis=1)
    neg = jnp.sum(jnp.where(is_true, 0, ca), axis=1)
    lam_pos = jnp.where(pos > neg, neg / jnp.where(pos > 0, pos, 1), 1)
    lam_neg = jnp.where(neg > pos, pos / jnp.where(neg > 0, neg, 1), 1)
    return a * jnp.where(is_true, lam_pos[:, None], lam_neg[:, None]), jnp.array(True)


def _ray_value(a, uX, c, margin, extra):
    """Best dual value of a squared hinge along the ray ``t * a``, ``t >= 0`` (no upper
    bound for squared hinges); ``uX`` is ``u @ X`` for the ``u`` of ``a``, ``extra`` the
    conjugate's quadratic term ``sum_i c_i q(a_i)``."""
    quad = jnp.sum(uX * uX) + extra / 2
    lin = margin * jnp.sum(c[None, :] * a)
    t = lin / jnp.maximum(quad, jnp.finfo(a.dtype).tiny)
    return t * lin - 0.5 * t * t * quad


def _largest_scale(a, c, biggest):
    """The largest ``t`` with ``t * a`` feasible for the hinge: ``biggest(a)`` ``[N]`` (the
    constrained quantity of each example) must stay at most 1."""
    tiny = jnp.finfo(a.dtype).tiny
    return 1 / jnp.maximum(jnp.max(jnp.where(c > 0, biggest(a), 0)), tiny)


def _sum_scale(a, c):
    return _largest_scale(a, c, class_max)


def _max_scale(a, c):
    return _largest_scale(a, c, class_sum)


def _sum_value(a, uX, c, margin):
    return _ray_value(a, uX, c, margin, jnp.sum(c[None, :] * a * a))


def _max_value(a, uX, c, margin):
    return _ray_value(a, uX, c, margin, jnp.sum(c * class_sum(a) ** 2))


def _logistic_curvature(a, mu, squared):
    """Second derivative of each summed hinge term: ``a (1 - a) / mu`` of the softplus
    smoothing (``a`` its sigmoid), ``2`` where a squared hinge is active (``a = 2 h``)."""
    if squared:
        return 2 * (a > 0).astype(a.dtype)
    return a * (1 - a) / mu


def _curvature_weston_watkins(a, per, is_true, c, mu, squared):
    return gram(_logistic_curvature(a, mu, squared), is_true, c, True)


def _curvature_one_vs_rest(a, per, is_true, c, mu, squared):  # z_j enters as -t_j z_j
    return gram(_logistic_curvature(a, mu, squared), is_true, c, False)


def _curvature_crammer_singer(a, per, is_true, c, mu, squared):
    r"""The log-sum-exp's Hessian in the margins is :math:`(\mathrm{diag}(p) - p p^\top) /
    \mu`; squared, :math:`m^2` has :math:`2 p p^\top + 2 m (\mathrm{diag}(p) - p
    p^\top)/\mu`. In the scores each becomes :math:`G^\top \cdot G`, with :math:`G^\top
    p` the dual map of ``p`` at unit weight. Squared, the log-sum-exp ``m`` comes from
    ``per = c m^2`` (an example with ``c = 0`` adds nothing, whatever ``m`` is taken)."""
    if squared:  # a = 2 m p
        m = jnp.sqrt(jnp.where(c > 0, per / jnp.where(c > 0, c, 1), 0))
        # p is a probability: clipped, so an m lost to underflow (c m^2 below the
        # smallest float) cannot turn it into a huge number.
        p = a / jnp.maximum(2 * m, jnp.finfo(a.dtype).tiny)[None, :]
        p = jnp.where((c > 0)[None, :], jnp.clip(p, 0, 1), 0)
        h, w = 2 * m[None, :] * p / mu, 2 - 2 * m / mu
    else:
        p, h, w = a, a / mu, jnp.full(c.shape, -1 / mu, a.dtype)
    return plus(gram(h, is_true, c, True), outer(p, is_true, c, w, True))


WESTON_WATKINS = Dual(
    _smooth_weston_watkins,
    _relative_map,
    _repair_relative,
    _sum_value,
    lambda sq: not sq,
    _sum_scale,
    _curvature_weston_watkins,
    _hinge_weston_watkins,
)
CRAMMER_SINGER = Dual(
    _smooth_crammer_singer,
    _relative_map,
    _repair_relative,
    _max_value,
    lambda sq: True,
    _max_scale,
    _curvature_crammer_singer,
    _hinge_crammer_singer,
)
ONE_VS_REST = Dual(
    _smooth_one_vs_rest,
    _absolute_map,
    _repair_absolute,
    _sum_value,
    lambda sq: not sq,
    _sum_scale,
    _curvature_one_vs_rest,
    _hinge_one_vs_rest,
)
