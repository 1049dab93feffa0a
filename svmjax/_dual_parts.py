r"""Internal: the ``[C, N]`` pieces that the duals of :mod:`svmjax.duals`,
:mod:`svmjax.family_duals` and :mod:`svmjax.topk_duals` share.

Reductions over the short class axis (:func:`class_sum`, :func:`class_max`, re-exported
by :mod:`svmjax.duals`), dual maps (:func:`relative_map`, :func:`absolute_map`), the
intercept's feasibility repairs (:func:`relative_factors`, :func:`absolute_repair`), the
largest feasible multiple (:func:`largest_scale`) and the pieces of the intercept's
curvature as Hessian-vector products (:func:`gram`, :func:`outer`, :func:`plus`). The
derivations: docs page *The duals of the family*.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_FEW = 64  # up to this many classes: the flow is a product with the one-hot labels, and...
_UNROLL = _FEW  # ...a maximum over classes compares rows one by one


def class_sum(v: jax.Array) -> jax.Array:
    """The sum over the leading (class) axis of ``v`` ``[C, N]``: ``[N]``.

    XLA:CPU reduces a short leading axis without vectorising along ``N``; a product with a
    row of ones vectorises, and is one operation in the program (at full float32
    precision, also where matrix units would round it).
    """
    ones = jnp.ones((1, v.shape[0]), v.dtype)
    return jnp.matmul(ones, v, precision=jax.lax.Precision.HIGHEST)[0]


def class_max(v: jax.Array) -> jax.Array:
    """The maximum over the leading (class) axis of ``v`` ``[C, N]``; up to ``_UNROLL``
    classes the rows are compared one by one, which vectorises along ``N`` where XLA:CPU's
    reduction does not (see :func:`class_sum`)."""
    if v.shape[0] > _UNROLL:
        return jnp.max(v, axis=0)
    return functools.reduce(jnp.maximum, [v[k] for k in range(v.shape[0])])


def relative_map(a: jax.Array, is_true: jax.Array, c: jax.Array) -> jax.Array:
    """``u = c G(a)`` ``[C, N]`` for relative margins: ``a`` on the wrong classes, minus
    their sum on the true class. The true class's own entry of ``a`` (the variable of a
    term that does not depend on the scores) takes no part."""
    wrong = jnp.where(is_true, 0, a)
    return c[None, :] * jnp.where(is_true, -class_sum(wrong)[None, :], wrong)


def absolute_map(a: jax.Array, is_true: jax.Array, c: jax.Array) -> jax.Array:
    """``u = c G(a)`` for absolute margins: ``-a`` on the true class, ``a`` elsewhere."""
    return c[None, :] * jnp.where(is_true, -a, a)


def flow(v: jax.Array, is_true: jax.Array, c: jax.Array) -> jax.Array:
    """``flow[k, j]`` ``[C, C]``: the sum of ``c_i v_ij`` over the examples ``i`` of class
    ``k`` (``v`` ``[C, N]``): a product with the one-hot labels for a few classes, a
    segment sum by label for many (``O(C N)`` work where the product takes ``O(C^2 N)``)."""
    if v.shape[0] <= _FEW:
        return (is_true.astype(v.dtype) * c[None, :]) @ v.T
    labels = jnp.argmax(is_true, axis=0)
    return jax.ops.segment_sum((c[None, :] * v).T, labels, v.shape[0])


def relative_factors(a: jax.Array, is_true: jax.Array, c: jax.Array):
    """Per-class factors ``lam`` ``[C]`` in ``[0, 1]`` such that scaling every example's
    wrong-class entries of ``a`` by ``lam`` of its class gives ``sum_i u_i = 0`` for
    relative margins, and ``ok`` (False when no such factors exist: a class with no active
    dual variable in a flow graph that is not strongly connected).

    The flow of ``a`` (:func:`flow`, the dual mass that the examples of class ``k`` put on
    class ``j``) must balance: ``flow.T @ lam = out * lam``, a null vector of a
    Laplacian ``L`` (the Perron vector), all ones at the optimum. The columns of ``L`` sum
    to zero, so ``L + s 1 1^T`` maps that null vector to a multiple of ``1``: one linear
    solve finds it.
    """
    moved = flow(jnp.where(is_true, 0, a), is_true, c)
    out = jnp.sum(moved, axis=1)
    isolated = (out <= 0) & (jnp.sum(moved, axis=0) <= 0)
    laplacian = jnp.diag(out + isolated.astype(a.dtype)) - moved.T
    n_classes = laplacian.shape[0]
    scale = jnp.maximum(jnp.max(out), jnp.finfo(a.dtype).tiny) / n_classes
    ones = jnp.ones(n_classes, a.dtype)
    lam = jnp.linalg.solve(laplacian + scale * jnp.outer(ones, ones), ones)
    lam = jnp.where(isolated, 0, jnp.maximum(lam, 0))
    lam = lam / jnp.maximum(jnp.max(lam), jnp.finfo(a.dtype).tiny)
    residual = jnp.max(jnp.abs(moved.T @ lam - out * lam))
    ok = jnp.isfinite(residual) & (residual <= 1e-3 * jnp.max(out * lam))
    return lam, ok


def of_example(per_class: jax.Array, is_true: jax.Array) -> jax.Array:
    """``per_class[y_i]`` ``[N]`` for ``per_class`` ``[C]``."""
    return class_sum(jnp.where(is_true, per_class[:, None], 0))


def absolute_repair(a, is_true, c, true_weight: float, wrong_weight: float, equal: bool):
    """Rescale ``a`` (absolute margins, term weights ``true_weight`` and ``wrong_weight``:
    ``u_ic = c_i (-t_c) w_c a_ic``) so that ``sum_i u_i`` is 0, or with ``equal`` (the
    sum-to-zero constraint) has equal entries; only scaling down, one factor per class
    and side. Returns ``(a, ok)``.

    Class ``c``'s total ``s_c = wrong_weight * neg_c - true_weight * pos_c`` can reach any
    value in ``[-true_weight * pos_c, wrong_weight * neg_c]``; the common target is 0, or
    with ``equal`` the median of the ``s_c`` clipped into every class's range (which
    holds 0), so that a point already meeting the constraint is left as it is.
    """
    ca = c[None, :] * a
    pos = true_weight * jnp.sum(jnp.where(is_true, ca, 0), axis=1)
    neg = wrong_weight * jnp.sum(jnp.where(is_true, 0, ca), axis=1)
    s = neg - pos
    target = jnp.zeros((), a.dtype)
    if equal:
        target = jnp.clip(jnp.median(s), jnp.max(-pos), jnp.min(neg))
    lam_neg = jnp.where(s > target, (target + pos) / jnp.where(neg > 0, neg, 1), 1)
    lam_pos = jnp.where(s < target, (neg - target) / jnp.where(pos > 0, pos, 1), 1)
    lam_pos, lam_neg = jnp.clip(lam_pos, 0, 1), jnp.clip(lam_neg, 0, 1)
    return a * jnp.where(is_true, lam_pos[:, None], lam_neg[:, None]), jnp.array(True)


def largest_scale(biggest: jax.Array, c: jax.Array) -> jax.Array:
    """The largest ``t`` with ``t * a`` feasible when ``biggest`` ``[N]`` (each example's
    constrained quantity of ``a``, homogeneous of degree 1) must stay at most 1."""
    tiny = jnp.finfo(biggest.dtype).tiny
    return 1 / jnp.maximum(jnp.max(jnp.where(c > 0, biggest, 0)), tiny)


def gram(h: jax.Array, is_true: jax.Array, c: jax.Array, relative: bool):
    r"""``v ->`` :math:`\sum_i c_i A_i^\top \mathrm{diag}(h_i) A_i v` (``[C] -> [C]``,
    ``O(C N)`` work), with :math:`A_i` the map from the scores to the margins (relative:
    :math:`z_j - z_{y_i}` for :math:`j \ne y_i`, the true class's entry of ``h`` ignored;
    absolute: :math:`\pm z_j`)."""
    if not relative:
        own = jnp.sum(c[None, :] * h, axis=1)
        return lambda v: own * v
    wrong = jnp.where(is_true, 0, h)

    def times(v):
        true_v = class_sum(jnp.where(is_true, v[:, None], 0))
        q = c[None, :] * wrong * (v[:, None] - true_v[None, :])
        return jnp.sum(q, axis=1) - jnp.sum(jnp.where(is_true, class_sum(q)[None, :], 0), axis=1)

    return times


def outer(q, is_true, c, weight, relative: bool):
    r"""``x ->`` :math:`\sum_i c_i w_i (A_i^\top q_i)(A_i^\top q_i)^\top x` for ``q``
    ``[C, N]`` and per-example weights ``weight`` ``[N]``."""
    ones = jnp.ones_like(c)
    g = relative_map(q, is_true, ones) if relative else absolute_map(q, is_true, ones)
    w = c * weight
    return lambda x: g @ (w * (x @ g))


def plus(*operators):
    """The sum of linear operators given as functions."""
    return lambda x: sum(op(x) for op in operators)


def no_value(*args):
    """``Dual.value`` of a dual that has ``linear`` and ``conjugate``: never called."""
    raise NotImplementedError(
        "this loss's squared dual value is the ray's best point from Dual.linear and "
        "Dual.conjugate (see svmjax.duals.Dual), not Dual.value"
    )
