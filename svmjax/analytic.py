r"""The hinge losses of :mod:`svmjax.losses` with hand-written analytic gradients.

Same functions, same signatures, same values as :mod:`svmjax.losses`; each is a thin
wrapper over a ``jax.custom_vjp`` whose backward rule is the closed-form (sub)gradient.
With :math:`v` a margin term and :math:`h'(v)` the hinge derivative (:math:`1(v > 0)`, or
:math:`2\max(0, v)` squared):

* :func:`weston_watkins`: :math:`\partial L/\partial s_j = h'(v_j)` for :math:`j \ne y`
  and :math:`-\sum_{j \ne y} h'(v_j)` on the true class (the indicator count);
* :func:`crammer_singer`: :math:`+h'(v)` on the best wrong class, :math:`-h'(v)` on the
  true class;
* :func:`one_vs_rest`: :math:`-t_j h'(\Delta - t_j s_j)` per class;
* :func:`unified_hinge` and its named members: one rule for the whole template;
  :func:`top_k_hinge` and :func:`smooth_top_k` (from the top-k set, the subset marginals).

Kinks: strict ``> 0`` (derivative 0 at :math:`v = 0`, like ``jax.nn.relu``), and the
lowest-index maximiser at ties (``jnp.argmax``'s rule); autodiff of :mod:`svmjax.losses`
gives 1/2 and an even split there. Class weights are applied outside the ``custom_vjp``,
so autodiff differentiates them; ``margin`` gets its cotangent too.

These work under ``jit``, ``vmap``, ``grad`` and ``vmap(grad)``. Like every
``custom_vjp`` function they do **not** support forward mode (``jax.jvp``,
``jax.jacfwd``, Hessians): use :mod:`svmjax.losses` for those.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from svmjax import _members, family
from svmjax._loss_parts import (
    hinge_parts,
    label_score,
    nan_guard,
    one_hot,
    poison,
    prepare_marked,
    weigh,
)
from svmjax._topk import smooth_top_k, top_k_hinge

__all__ = [
    "weston_watkins",
    "crammer_singer",
    "one_vs_rest",
    "unified_hinge",
    "lee_lin_wahba",
    "absolute_max_hinge",
    "absolute_wrong_max_hinge",
    "true_class_hinge",
    "reinforced_hinge",
    "top_k_hinge",
    "smooth_top_k",
]


# ----------------------------------------------------------------------------- Weston–Watkins


def _sums(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(sum(a), sum(b))`` over the last axis, in one pass where the dtype allows.

    The real and imaginary parts of one complex sum, ``sum(a + i b)``: complex addition is
    the two float additions, so each part is the float sum of its terms (a sum of ones, a
    violation count, is exact below ``2**24`` classes), and the class axis is read once
    instead of twice. On CPU a sum over a short class axis is a scalar loop per example,
    so one pass instead of two is most of the loss's cost at ``fit_grid``'s ``G·B`` rows.
    Types without a complex counterpart (half precision) take two sums."""
    if a.dtype not in (jnp.float32, jnp.float64):
        return jnp.sum(a, axis=-1), jnp.sum(b, axis=-1, dtype=a.dtype)
    both = jnp.sum(jax.lax.complex(a, b.astype(a.dtype)), axis=-1)
    return jnp.real(both), jnp.imag(both)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _weston_watkins(squared, scores, labels, margin):
    return _weston_watkins_fwd(squared, scores, labels, margin)[0]


def _weston_watkins_fwd(squared, scores, labels, margin):
    is_true = one_hot(labels, scores.shape[-1])
    v = scores - label_score(scores, labels)[..., None] + margin
    h, dh = hinge_parts(jnp.where(is_true, -jnp.inf, v), squared)
    # The loss and sum_j h'(v_j) (the violation count, for the plain hinge) in one pass.
    loss, count = _sums(h, dh)
    loss = poison(loss, labels)
    return loss, (labels, dh, count, jnp.isnan(loss))


def _weston_watkins_bwd(squared, residuals, g):
    labels, dh, count, is_nan = residuals
    coef = dh.astype(g.dtype)
    count = count.astype(g.dtype)
    is_true = one_hot(labels, coef.shape[-1])
    # g * coef - g * count * e_y, written so that XLA:CPU fuses it well (the algebraically
    # equal g * (coef - where(is_true, count, 0)) fuses into slower kernels).
    d_scores = g[..., None] * coef - (g * count)[..., None] * is_true
    d_margin = jnp.sum(nan_guard(g * count, is_nan))
    return nan_guard(d_scores, is_nan), None, d_margin


_weston_watkins.defvjp(_weston_watkins_fwd, _weston_watkins_bwd)


def weston_watkins(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Weston–Watkins hinge loss with the analytic indicator-count gradient, per example.

    .. math::

        L(s, y) = w_y \sum_{j \ne y} h(s_j - s_y + \Delta), \qquad
        \frac{\partial L}{\partial s_j} = w_y h'(v_j)\ (j \ne y), \quad
        \frac{\partial L}{\partial s_y} = -w_y \sum_{j \ne y} h'(v_j),

    with :math:`v_j = s_j - s_y + \Delta`, :math:`h'(v) = 1(v > 0)` (plain; strict, so 0
    at the kink) or :math:`2\max(0, v)` (squared).

    Args:
      scores: float ``[..., C]``.
      labels: integer class indices ``[...]`` in ``[0, C)``.
      margin: :math:`\Delta`, a scalar (default 1).
      squared: use the squared hinge.
      class_weights: optional ``[C]``; :math:`w_y` above.

    Returns:
      Per-example losses ``[...]``, equal to :func:`svmjax.losses.weston_watkins`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: weston_watkins(s, jnp.array([0])).sum())(
      ...     jnp.array([[3.2, 5.1, -1.7]]))
      Array([[-1.,  1.,  0.]], dtype=float32)

    Reference: Weston and Watkins, ESANN 1999; cs231n notes, "Optimization" (the
    analytic SVM gradient).
    """
    scores, labels, is_true, margin, class_weights = prepare_marked(
        scores, labels, margin, class_weights
    )
    return weigh(_weston_watkins(squared, scores, labels, margin), is_true, class_weights)


# ----------------------------------------------------------------------------- Crammer–Singer


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _crammer_singer(squared, n_classes, scores, labels, margin) -> jax.Array:
    return _crammer_singer_fwd(squared, n_classes, scores, labels, margin)[0]


def _crammer_singer_fwd(squared, n_classes, scores, labels, margin):
    is_true = one_hot(labels, n_classes)
    others = jnp.where(is_true, -jnp.inf, scores)
    best = jnp.argmax(others, axis=-1)  # the lowest index among tied maxima
    best_score = jnp.max(others, axis=-1)
    loss, dh = hinge_parts(best_score - label_score(scores, labels) + margin, squared)
    loss = poison(loss, labels)
    return loss, (labels, best, dh, jnp.isnan(loss))


def _crammer_singer_bwd(squared, n_classes, residuals, g):
    labels, best, dh, is_nan = residuals
    coef = nan_guard(g * dh.astype(g.dtype), is_nan)
    pair = one_hot(best, n_classes).astype(g.dtype) - one_hot(labels, n_classes)
    return nan_guard(coef[..., None] * pair, is_nan), None, jnp.sum(coef)


_crammer_singer.defvjp(_crammer_singer_fwd, _crammer_singer_bwd)


def crammer_singer(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Crammer–Singer hinge loss with the analytic :math:`+1/-1` gradient, per example.

    .. math::

        L(s, y) = w_y\, h(v), \quad v = s_{j^*} - s_y + \Delta, \quad
        j^* = \min \arg\max_{j \ne y} s_j, \qquad
        \frac{\partial L}{\partial s} = w_y h'(v)\,(e_{j^*} - e_y),

    with :math:`h'(v) = 1(v > 0)` (plain; strict, so 0 at the kink) or
    :math:`2\max(0, v)` (squared). At ties for the best wrong class the whole gradient
    goes to the lowest index :math:`j^*` (autodiff of :func:`svmjax.losses.crammer_singer`
    splits it evenly instead).

    Args:
      scores: float ``[..., C]``, ``C >= 2``.
      labels: integer class indices ``[...]`` in ``[0, C)``.
      margin: :math:`\Delta`, a scalar (default 1).
      squared: use the squared hinge.
      class_weights: optional ``[C]``; :math:`w_y` above.

    Returns:
      Per-example losses ``[...]``, equal to :func:`svmjax.losses.crammer_singer`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: crammer_singer(s, jnp.array([0])).sum())(
      ...     jnp.array([[3.2, 5.1, 5.1]]))
      Array([[-1.,  1.,  0.]], dtype=float32)

    Reference: Crammer and Singer, JMLR 2001.
    """
    scores, labels, is_true, margin, class_weights = prepare_marked(
        scores, labels, margin, class_weights
    )
    loss = _crammer_singer(squared, scores.shape[-1], scores, labels, margin)
    return weigh(loss, is_true, class_weights)


# ----------------------------------------------------------------------------- one-vs-rest


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _one_vs_rest(squared, scores, labels, margin):
    return _one_vs_rest_fwd(squared, scores, labels, margin)[0]


def _one_vs_rest_fwd(squared, scores, labels, margin):
    is_true = one_hot(labels, scores.shape[-1])
    h, dh = hinge_parts(margin - jnp.where(is_true, scores, -scores), squared)
    loss = poison(jnp.sum(h, axis=-1), labels)
    return loss, (labels, dh, jnp.isnan(loss))


def _one_vs_rest_bwd(squared, residuals, g):
    labels, dh, is_nan = residuals
    coef = nan_guard(g[..., None] * dh.astype(g.dtype), is_nan)
    is_true = one_hot(labels, coef.shape[-1])
    return jnp.where(is_true, -coef, coef), None, jnp.sum(coef)


_one_vs_rest.defvjp(_one_vs_rest_fwd, _one_vs_rest_bwd)


def one_vs_rest(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""One-vs-rest hinge loss with the analytic per-class indicator gradient, per example.

    .. math::

        L(s, y) = w_y \sum_j h(\Delta - t_j s_j), \qquad
        \frac{\partial L}{\partial s_j} = -w_y\, t_j\, h'(\Delta - t_j s_j),

    with :math:`t_j = +1` for :math:`j = y` and :math:`-1` otherwise, and
    :math:`h'(v) = 1(v > 0)` (plain; strict, so 0 at the kink) or :math:`2\max(0, v)`.
    Labels are integer class indices, as for the other losses.

    Args:
      scores: float ``[..., C]``.
      labels: integer class indices ``[...]`` in ``[0, C)``.
      margin: :math:`\Delta`, a scalar (default 1).
      squared: use the squared hinge.
      class_weights: optional ``[C]``; :math:`w_y` above.

    Returns:
      Per-example losses ``[...]``, equal to :func:`svmjax.losses.one_vs_rest`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: one_vs_rest(s, jnp.array([0])).sum())(
      ...     jnp.array([[0.5, -2.0, 0.0]]))
      Array([[-1.,  0.,  1.]], dtype=float32)

    Reference: Rifkin and Klautau, "In defense of one-vs-all classification", JMLR 2004.
    """
    scores, labels, is_true, margin, class_weights = prepare_marked(
        scores, labels, margin, class_weights
    )
    return weigh(_one_vs_rest(squared, scores, labels, margin), is_true, class_weights)


# ----------------------------------------------------------------------------- the template


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _unified_hinge(spec, scores, labels, margin, true_margin):
    return _unified_hinge_fwd(spec, scores, labels, margin, true_margin)[0]


def _unified_hinge_fwd(spec, scores, labels, margin, true_margin):
    is_true = one_hot(labels, scores.shape[-1])
    v, active = family.margin_terms(spec, scores, is_true, margin, true_margin)
    h, dh = hinge_parts(v, spec.squared)
    dh = dh.astype(scores.dtype)
    weights = family.term_weights(spec, is_true, scores.dtype)
    if weights is not None:
        h, dh = weights * h, weights * dh
    h, dh = jnp.where(active, h, 0), jnp.where(active, dh, 0)
    if spec.aggregate == "sum":  # indicator rule
        loss, coef = jnp.sum(h, axis=-1), dh
    else:  # argmax rule: the lowest index among tied maxima
        best = jnp.argmax(h, axis=-1)
        loss, coef = jnp.max(h, axis=-1), jnp.where(one_hot(best, h.shape[-1]), dh, 0)
    loss = poison(loss, labels)
    return loss, (labels, coef, jnp.isnan(loss))


def _unified_hinge_bwd(spec, residuals, g):
    labels, coef, is_nan = residuals
    a = nan_guard(g[..., None] * coef, is_nan)  # dL/dv
    is_true = one_hot(labels, a.shape[-1])
    a_wrong = jnp.where(is_true, 0, a)
    # a bad example (label -1) has no true class here: NaN, as its loss
    a_true = nan_guard(jnp.sum(jnp.where(is_true, a, 0), axis=-1, keepdims=True), is_nan)
    if spec.margins == "relative":  # v_c = margin + s_c - s_y; v_y = true_margin
        d_scores = a_wrong - jnp.sum(a_wrong, axis=-1, keepdims=True) * is_true
    else:  # v_c = margin + s_c; v_y = true_margin - s_y
        d_scores = a_wrong - a_true * is_true
    return d_scores, None, jnp.sum(a_wrong), jnp.sum(a_true)


_unified_hinge.defvjp(_unified_hinge_fwd, _unified_hinge_bwd)


def unified_hinge(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margins: str = "relative",
    classes: str = "wrong",
    aggregate: str = "sum",
    margin: ArrayLike = 1.0,
    true_margin: ArrayLike | None = None,
    wrong_weight: float = 1.0,
    true_weight: float = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""The unified template of Doğan et al. with its analytic gradient, per example.

    Same arguments and values as :func:`svmjax.losses.unified_hinge`:
    :math:`L = w_y \operatorname{agg}_{c \in P_y} \omega_c h(v_c)` with
    :math:`v_c = \nu_c - \mu_c(s)`. The rule, with :math:`h'(v) = 1(v > 0)` (strict: 0 at
    the kink) or :math:`2\max(0, v)`:

    .. math::

        a_c = \frac{\partial L}{\partial v_c} =
        \begin{cases} w_y\, \omega_c h'(v_c) & \text{sum (indicator rule)} \\
        w_y\, \omega_c h'(v_c)\, 1(c = j^*) & \text{max (argmax rule)}, \end{cases}
        \qquad
        \frac{\partial L}{\partial s} = \begin{cases}
        \bar a - (\sum_c \bar a_c)\, e_y & \text{relative} \\
        \bar a - a_y e_y & \text{absolute,} \end{cases}

    over the classes taking part, :math:`\bar a = a` off the true class and 0 on it,
    :math:`j^*` the lowest index maximising :math:`\omega_c h(v_c)`; the margins get
    :math:`\partial L/\partial\Delta = \sum_{c \ne y} a_c` and
    :math:`\partial L/\partial\nu_y = a_y`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: unified_hinge(s, jnp.array([0]), aggregate="max").sum())(
      ...     jnp.array([[3.2, 5.1, 5.1]]))  # Crammer–Singer, lowest-index maximiser
      Array([[-1.,  1.,  0.]], dtype=float32)

    Reference: Doğan, Glasmachers and Igel, JMLR 17, 2016.
    """
    spec = family.Template(margins, classes, aggregate, wrong_weight, true_weight, squared)
    spec = spec.checked()
    scores, labels, is_true, margin, class_weights = prepare_marked(
        scores, labels, margin, class_weights
    )
    true_margin = family.true_margin_or_default(spec, margin, true_margin)
    loss = _unified_hinge(spec, scores, labels, margin, true_margin)
    return weigh(loss, is_true, class_weights)


# The named members of the template: one setting each (svmjax._members.MACHINES).
lee_lin_wahba = _members.member("lee_lin_wahba", unified_hinge)
absolute_max_hinge = _members.member("absolute_max_hinge", unified_hinge)
absolute_wrong_max_hinge = _members.member("absolute_wrong_max_hinge", unified_hinge)
true_class_hinge = _members.member("true_class_hinge", unified_hinge)
reinforced_hinge = _members.reinforced_member(unified_hinge)
