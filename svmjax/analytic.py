r"""The hinge losses of :mod:`svmjax.losses` with hand-written analytic gradients.

Same functions, same signatures, same values as :mod:`svmjax.losses`; each is built on a
``jax.custom_vjp`` whose backward rule is the closed-form (sub)gradient with respect to
the scores. Write :math:`v` for a margin term and :math:`h'(v)` for the hinge derivative:
:math:`h'(v) = 1(v > 0)` for the plain hinge and :math:`2\max(0, v)` for the squared one.

* Weston–Watkins — the *indicator-count* rule: :math:`\partial L/\partial s_j = h'(v_j)`
  for every :math:`j \ne y`, and :math:`\partial L/\partial s_y = -\sum_{j \ne y} h'(v_j)`
  (minus the number of violating classes, for the plain hinge).
* Crammer–Singer — the :math:`+1/-1` pair: :math:`+h'(v)` on the best wrong class
  :math:`j^*`, :math:`-h'(v)` on the true class, zero elsewhere.
* One-vs-rest — per class: :math:`\partial L/\partial s_j = -t_j\,h'(\Delta - t_j s_j)`.

Kink convention: strict ``> 0`` (so the derivative at :math:`v = 0` is 0, like
``jax.nn.relu``), and for Crammer–Singer the *lowest-index* maximiser :math:`j^*` when
several wrong classes tie (``jnp.argmax``'s rule). Autodiff of :mod:`svmjax.losses`
differs exactly there: ``jnp.maximum`` gives 1/2 at :math:`v = 0`, and ``jnp.max``
averages over tied maxima. Both are valid subgradients (the tests check the subgradient
inequality for each); away from kinks the two agree to rounding.

The forward pass saves only what the backward needs: the labels, the hinge derivative
(a boolean mask for the plain hinge, a float for the squared one), the Weston–Watkins
sum of the derivatives (summed in the same pass as the loss), the Crammer–Singer
argmax, and a per-example flag for NaN losses (a NaN loss gets a NaN gradient).
Class weights are applied outside the ``custom_vjp`` as ordinary JAX code, so their
derivatives come from autodiff. Bad examples (a label outside ``[0, C)``, a negative or
non-finite class weight) arrive labelled ``-1``
(:func:`svmjax.validation.mark_invalid`): each forward rule makes their loss NaN, so
the backward rule gives them NaN gradient rows, where :mod:`svmjax.losses` multiplies
their scores by NaN (one select per example here instead of a multiplication per
score). The ``margin`` gets its true cotangent too, so ``jax.grad`` with respect to it
works.

The unified template (:func:`unified_hinge`) has one rule for the whole family: with
:math:`a_c = \partial L/\partial v_c` (indicator rule for a sum,
:math:`a_c = \omega_c h'(v_c)`; argmax rule for a max, :math:`a = \omega_{j^*} h'(v_{j^*})
e_{j^*}`, :math:`j^*` the lowest-index maximiser of :math:`\omega_c h(v_c)`), the score
gradient is :math:`a - (\sum_{c \ne y} a_c) e_y` restricted to :math:`c \ne y` for
relative margins and :math:`\pm a` (:math:`-a_y` on the true class) for absolute ones.
Weston–Watkins, Crammer–Singer and one-vs-rest keep their own hand-tuned rules above
(faster); the tests check they agree with the template everywhere, kinks and ties included.

These functions work under ``jit``, ``vmap``, ``grad`` and ``vmap(grad)``. Like every
``custom_vjp`` function, they do **not** support forward mode: ``jax.jvp``,
``jax.jacfwd`` and Hessians (forward-over-reverse) raise. Use :mod:`svmjax.losses`
for those.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from svmjax import family
from svmjax.losses import prepare, weigh
from svmjax.validation import one_hot

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


def _hinge_parts(v: jax.Array, squared: bool) -> tuple[jax.Array, jax.Array]:
    """Return (h(v), h'(v)) with the strict-indicator convention h'(0) = 0."""
    positive = jnp.maximum(v, 0)
    if squared:
        return positive * positive, 2 * positive
    return positive, v > 0


def _label_score(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """The score of each example's true class, ``[..., C] -> [...]``, by a gather.

    The same values as :func:`svmjax.losses.true_score` (a masked sum over the classes,
    which autodiff of the pure losses turns into a select rather than a scatter); here
    nothing differentiates it, and on CPU one load per example is far cheaper than a
    reduction over a short class axis. A label outside ``[0, C)`` reads some class
    (``take_along_axis`` wraps negative indices and clips the rest); such a label is
    ``-1`` here (``mark_invalid``), and the forward rules make that example's loss NaN."""
    return jnp.take_along_axis(scores, labels[..., None], axis=-1, mode="clip")[..., 0]


def _prepare(scores, labels, margin, class_weights):
    """:func:`svmjax.losses.prepare` as every analytic loss calls it: bad examples arrive
    labelled ``-1`` (``mark_labels``) and :func:`_poison` makes their loss NaN, instead
    of their scores multiplied by NaN."""
    return prepare(scores, labels, margin, class_weights, mark_labels=True)


def _poison(loss: jax.Array, labels: jax.Array) -> jax.Array:
    """``loss`` with NaN for every example labelled ``-1`` (an invalid example,
    :func:`svmjax.validation.mark_invalid`); each forward rule applies it before it flags
    the NaN losses, so the backward rule gives those examples NaN gradient rows."""
    return jnp.where(labels >= 0, loss, jnp.nan)


def _nan_guard(x: jax.Array, is_nan: jax.Array) -> jax.Array:
    """``x`` with NaN in every example whose forward loss was NaN.

    A select, not a multiplication: XLA rewrites ``a * float(mask)`` as
    ``select(mask, a, 0)``, which would silently turn ``NaN * 0`` into 0 under ``jit``.
    """
    return jnp.where(is_nan.reshape(is_nan.shape + (1,) * (x.ndim - is_nan.ndim)), jnp.nan, x)


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
    v = scores - _label_score(scores, labels)[..., None] + margin
    h, dh = _hinge_parts(jnp.where(is_true, -jnp.inf, v), squared)
    # The loss and sum_j h'(v_j) (the violation count, for the plain hinge) in one pass.
    loss, count = _sums(h, dh)
    loss = _poison(loss, labels)
    return loss, (labels, dh, count, jnp.isnan(loss))


def _weston_watkins_bwd(squared, residuals, g):
    labels, dh, count, is_nan = residuals
    coef = dh.astype(g.dtype)
    count = count.astype(g.dtype)
    is_true = one_hot(labels, coef.shape[-1])
    # g * coef - g * count * e_y, written so that XLA:CPU fuses it well (the algebraically
    # equal g * (coef - where(is_true, count, 0)) ran 1.7x slower at 4000 x 10).
    d_scores = g[..., None] * coef - (g * count)[..., None] * is_true
    d_margin = jnp.sum(_nan_guard(g * count, is_nan))
    return _nan_guard(d_scores, is_nan), None, d_margin


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
    scores, labels, is_true, margin, class_weights = _prepare(scores, labels, margin, class_weights)
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
    loss, dh = _hinge_parts(best_score - _label_score(scores, labels) + margin, squared)
    loss = _poison(loss, labels)
    return loss, (labels, best, dh, jnp.isnan(loss))


def _crammer_singer_bwd(squared, n_classes, residuals, g):
    labels, best, dh, is_nan = residuals
    coef = _nan_guard(g * dh.astype(g.dtype), is_nan)
    pair = one_hot(best, n_classes).astype(g.dtype) - one_hot(labels, n_classes)
    return _nan_guard(coef[..., None] * pair, is_nan), None, jnp.sum(coef)


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
    scores, labels, is_true, margin, class_weights = _prepare(scores, labels, margin, class_weights)
    loss = _crammer_singer(squared, scores.shape[-1], scores, labels, margin)
    return weigh(loss, is_true, class_weights)


# ----------------------------------------------------------------------------- one-vs-rest


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _one_vs_rest(squared, scores, labels, margin):
    return _one_vs_rest_fwd(squared, scores, labels, margin)[0]


def _one_vs_rest_fwd(squared, scores, labels, margin):
    is_true = one_hot(labels, scores.shape[-1])
    h, dh = _hinge_parts(margin - jnp.where(is_true, scores, -scores), squared)
    loss = _poison(jnp.sum(h, axis=-1), labels)
    return loss, (labels, dh, jnp.isnan(loss))


def _one_vs_rest_bwd(squared, residuals, g):
    labels, dh, is_nan = residuals
    coef = _nan_guard(g[..., None] * dh.astype(g.dtype), is_nan)
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
    scores, labels, is_true, margin, class_weights = _prepare(scores, labels, margin, class_weights)
    return weigh(_one_vs_rest(squared, scores, labels, margin), is_true, class_weights)


# ----------------------------------------------------------------------------- the template


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _unified_hinge(spec, scores, labels, margin, true_margin):
    return _unified_hinge_fwd(spec, scores, labels, margin, true_margin)[0]


def _unified_hinge_fwd(spec, scores, labels, margin, true_margin):
    is_true = one_hot(labels, scores.shape[-1])
    v, active = family.margin_terms(spec, scores, is_true, margin, true_margin)
    h, dh = _hinge_parts(v, spec.squared)
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
    loss = _poison(loss, labels)
    return loss, (labels, coef, jnp.isnan(loss))


def _unified_hinge_bwd(spec, residuals, g):
    labels, coef, is_nan = residuals
    a = _nan_guard(g[..., None] * coef, is_nan)  # dL/dv
    is_true = one_hot(labels, a.shape[-1])
    a_wrong = jnp.where(is_true, 0, a)
    # a bad example (label -1) has no true class here: NaN, as its loss
    a_true = _nan_guard(jnp.sum(jnp.where(is_true, a, 0), axis=-1, keepdims=True), is_nan)
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
    scores, labels, is_true, margin, class_weights = _prepare(scores, labels, margin, class_weights)
    true_margin = family.true_margin_or_default(spec, margin, true_margin)
    loss = _unified_hinge(spec, scores, labels, margin, true_margin)
    return weigh(loss, is_true, class_weights)


def lee_lin_wahba(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Lee–Lin–Wahba loss :math:`w_y \sum_{c \ne y} h(s_c + \Delta)`, analytic gradient.

    :math:`\partial L/\partial s_c = w_y h'(s_c + \Delta)` for :math:`c \ne y` (0 at the
    kink), 0 for :math:`c = y`: the template's indicator rule. For the sum-to-zero model;
    ``margin = 1/(C-1)`` is the 2004 paper's scaling. See
    :func:`svmjax.losses.lee_lin_wahba`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: lee_lin_wahba(s, jnp.array([0])).sum())(
      ...     jnp.array([[1.0, -0.5, -1.5]]))
      Array([[0., 1., 0.]], dtype=float32)

    Reference: Lee, Lin and Wahba, JASA 2004.
    """
    return unified_hinge(
        scores,
        labels,
        **family.MACHINES["lee_lin_wahba"],
        margin=margin,
        squared=squared,
        class_weights=class_weights,
    )


def absolute_max_hinge(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""ATM loss :math:`w_y \max_c h(\Delta - t_c s_c)` with the analytic argmax gradient.

    :math:`\partial L/\partial s = -w_y\, t_{j^*} h'(v_{j^*})\, e_{j^*}`, :math:`j^*` the
    lowest-index largest term (0 at the kink). See :func:`svmjax.losses.absolute_max_hinge`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: absolute_max_hinge(s, jnp.array([0])).sum())(
      ...     jnp.array([[0.5, -2.0, 0.0]]))
      Array([[0., 0., 1.]], dtype=float32)

    Reference: Doğan, Glasmachers and Igel, JMLR 2016.
    """
    return unified_hinge(
        scores,
        labels,
        **family.MACHINES["absolute_max_hinge"],
        margin=margin,
        squared=squared,
        class_weights=class_weights,
    )


def absolute_wrong_max_hinge(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""ADM loss :math:`w_y \max_{c \ne y} h(\Delta + s_c)` with the analytic argmax gradient.

    :math:`\partial L/\partial s = w_y h'(\Delta + s_{j^*})\, e_{j^*}`, :math:`j^*` the
    lowest-index best wrong class (0 at the kink). See
    :func:`svmjax.losses.absolute_wrong_max_hinge`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: absolute_wrong_max_hinge(s, jnp.array([0])).sum())(
      ...     jnp.array([[0.5, 0.0, 0.0]]))
      Array([[0., 1., 0.]], dtype=float32)

    Reference: Doğan, Glasmachers and Igel, JMLR 2016.
    """
    return unified_hinge(
        scores,
        labels,
        **family.MACHINES["absolute_wrong_max_hinge"],
        margin=margin,
        squared=squared,
        class_weights=class_weights,
    )


def true_class_hinge(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""MMR loss :math:`w_y h(\Delta - s_y)` with the analytic gradient.

    :math:`\partial L/\partial s = -w_y h'(\Delta - s_y)\, e_y` (0 at the kink). See
    :func:`svmjax.losses.true_class_hinge`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: true_class_hinge(s, jnp.array([0])).sum())(
      ...     jnp.array([[0.5, -2.0, 0.0]]))
      Array([[-1.,  0.,  0.]], dtype=float32)

    Reference: Szedmak, Shawe-Taylor and Parado-Hernandez, PASCAL 2006; Doğan et al., 2016.
    """
    return unified_hinge(
        scores,
        labels,
        **family.MACHINES["true_class_hinge"],
        margin=margin,
        squared=squared,
        class_weights=class_weights,
    )


def reinforced_hinge(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: float = 0.5,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Reinforced SVM loss (Liu & Yuan) with the analytic indicator gradient.

    :math:`L = w_y[\gamma h((C-1)\Delta - s_y) + (1-\gamma) \sum_{c \ne y} h(\Delta + s_c)]`;
    :math:`\partial L/\partial s_y = -w_y \gamma h'((C-1)\Delta - s_y)`,
    :math:`\partial L/\partial s_c = w_y (1-\gamma) h'(\Delta + s_c)` (0 at the kinks).
    See :func:`svmjax.losses.reinforced_hinge`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: reinforced_hinge(s, jnp.array([0])).sum())(
      ...     jnp.array([[0.5, -2.0, 0.0]]))
      Array([[-0.5,  0. ,  0.5]], dtype=float32)

    Reference: Liu and Yuan, J. Comput. Graph. Statist. 2011.
    """
    return unified_hinge(
        scores,
        labels,
        margin=margin,
        squared=squared,
        class_weights=class_weights,
        **family.reinforced(scores, margin, gamma),
    )


# ----------------------------------------------------------------------------- top-k


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _top_k_hinge(k, variant, squared, n_classes, scores, labels, margin):
    return _top_k_hinge_fwd(k, variant, squared, n_classes, scores, labels, margin)[0]


def _top_k_hinge_fwd(k, variant, squared, n_classes, scores, labels, margin):
    is_true = one_hot(labels, n_classes)
    v = jnp.where(is_true, 0, scores - _label_score(scores, labels)[..., None] + margin)
    top, index = jax.lax.top_k(v, k)  # the lowest indices at ties
    if variant == "alpha":
        loss, dh = _hinge_parts(jnp.mean(top, axis=-1), squared)
        coef = jnp.broadcast_to(dh.astype(scores.dtype)[..., None], top.shape) / k
    else:
        h, dh = _hinge_parts(top, squared)
        loss, coef = jnp.mean(h, axis=-1), dh.astype(scores.dtype) / k
    loss = _poison(loss, labels)
    return loss, (labels, index, coef, jnp.isnan(loss))


def _top_k_hinge_bwd(k, variant, squared, n_classes, residuals, g):
    labels, index, coef, is_nan = residuals
    picked = one_hot(index, n_classes).astype(g.dtype)  # [..., k, C]
    a = jnp.sum(picked * (g[..., None] * coef)[..., None], axis=-2)  # dL/dv
    is_true = one_hot(labels, n_classes)
    a_wrong = _nan_guard(jnp.where(is_true, 0, a), is_nan)  # v_y = 0 is constant
    d_scores = a_wrong - jnp.sum(a_wrong, axis=-1, keepdims=True) * is_true
    return d_scores, None, jnp.sum(a_wrong)


_top_k_hinge.defvjp(_top_k_hinge_fwd, _top_k_hinge_bwd)


def top_k_hinge(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    k: int = 1,
    variant: str = "alpha",
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Top-k hinge loss (Lapin, Hein & Schiele) with the analytic top-k-set gradient.

    Same values as :func:`svmjax.losses.top_k_hinge`. With :math:`K` the ``lax.top_k``
    set of :math:`v` (``k`` entries, the lowest indices at ties) and
    :math:`a_j = \partial L/\partial v_j` for :math:`j \in K`:
    :math:`a_j = \frac{w_y}{k} h'(\frac1k \sum_{i \in K} v_i)` (alpha) or
    :math:`\frac{w_y}{k} h'(v_j)` (beta), with :math:`h'(v) = 1(v > 0)` (0 at the kink) or
    :math:`2\max(0, v)`; then, as for Weston–Watkins,

    .. math::

        \frac{\partial L}{\partial s_j} = a_j\ (j \ne y), \qquad
        \frac{\partial L}{\partial s_y} = -\sum_{j \in K, j \ne y} a_j

    (:math:`v_y = 0` is a constant, so a true class inside :math:`K` passes nothing on).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: top_k_hinge(s, jnp.array([0]), k=2).sum())(
      ...     jnp.array([[3.2, 5.1, -1.7]]))
      Array([[-0.5,  0.5,  0. ]], dtype=float32)

    Reference: Lapin, Hein and Schiele, NeurIPS 2015 and CVPR 2016.
    """
    if variant not in ("alpha", "beta"):
        raise ValueError(f"variant must be 'alpha' or 'beta', got {variant!r}")
    scores, labels, is_true, margin, class_weights = _prepare(scores, labels, margin, class_weights)
    n_classes = scores.shape[-1]
    k = family.check_k(k, n_classes, n_classes)
    loss = _top_k_hinge(k, variant, squared, n_classes, scores, labels, margin)
    return weigh(loss, is_true, class_weights)


def _subset_marginals(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``(p, q)``: the probability that class ``j`` is in a random ``k``-subset (``p``) or
    ``(k-1)``-subset (``q``), drawn with weight :math:`\\exp \\sum_{j \\in S} x_j`.

    Forward-backward in log space: :math:`e_r(x_{-j}) = \\sum_a e_a(x_{<j})\\, e_{r-a}(x_{>j})`
    from the prefix and suffix tables of :func:`svmjax.family.log_esp`; :math:`O(k^2 C)`.
    """
    total, prefix = family.log_esp(x, k)
    _, suffix = family.log_esp(jnp.flip(x, -1), k)
    prefix = jnp.moveaxis(prefix, 0, -2)  # [..., C, k + 1]: over the classes before j
    suffix = jnp.flip(jnp.moveaxis(suffix, 0, -2), -2)  # over the classes after j

    def marginal(r):
        if r < 0:
            return jnp.zeros_like(x)
        without_j = jax.nn.logsumexp(prefix[..., : r + 1] + suffix[..., r::-1], axis=-1)
        return jnp.exp(x + without_j - total[..., r + 1, None])

    return marginal(k - 1), marginal(k - 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _smooth_top_k(k, tau, squared, scores, labels, margin):
    return _smooth_top_k_fwd(k, tau, squared, scores, labels, margin)[0]


def _smooth_top_k_fwd(k, tau, squared, scores, labels, margin):
    is_true = one_hot(labels, scores.shape[-1])
    z, x = family.smooth_top_k_logit(scores, is_true, k, tau, margin)
    loss = _poison(tau * jax.nn.softplus(z), labels)
    return (loss * loss if squared else loss), (labels, x, z, loss)


def _smooth_top_k_bwd(k, tau, squared, residuals, g):
    labels, x, z, loss = residuals
    is_nan = jnp.isnan(loss)  # a NaN score (z is NaN) or an invalid example
    p, q = _subset_marginals(x, k)
    coef = g * jax.nn.sigmoid(z) * (2 * loss if squared else 1)  # dL/d margin
    coef = _nan_guard(coef, is_nan)
    is_true = one_hot(labels, x.shape[-1])
    d_scores = (coef / k)[..., None] * jnp.where(is_true, -1, p - q)
    return _nan_guard(d_scores, is_nan), None, jnp.sum(coef)


_smooth_top_k.defvjp(_smooth_top_k_fwd, _smooth_top_k_bwd)


def smooth_top_k(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    k: int = 1,
    tau: float = 1.0,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Smooth top-k SVM loss (Berrada, Zisserman & Kumar) with its closed-form gradient.

    Same values as :func:`svmjax.losses.smooth_top_k`,
    :math:`L = w_y \tau\,\mathrm{softplus}(z)`, :math:`z = \Delta/\tau + A - B - x_y`. The
    loss is smooth, so there is no kink to choose at; the gradient is

    .. math::

        \frac{\partial L}{\partial s_j} = \frac{w_y \sigma(z)}{k} (p_j - q_j)\ (j \ne y),
        \qquad \frac{\partial L}{\partial s_y} = -\frac{w_y \sigma(z)}{k},
        \qquad \frac{\partial L}{\partial \Delta} = w_y \sigma(z),

    where :math:`p_j = \partial A/\partial x_j` is the probability that wrong class
    :math:`j` lies in a random :math:`k`-subset :math:`S` of the wrong classes drawn with
    weight :math:`e^{\sum_{i \in S} x_i}`, and :math:`q_j` the same for
    :math:`(k-1)`-subsets (:math:`\sum_j p_j - q_j = 1`, so the gradient sums to 0, as the
    loss is shift invariant). The marginals come from a forward-backward pass over the
    prefix and suffix log-space symmetric polynomials (no subtraction, no overflow);
    ``squared=True`` multiplies by :math:`2L`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda s: smooth_top_k(s, jnp.array([0])).sum())(jnp.array([[0.0, 0.0]]))
      Array([[-0.7310586,  0.7310586]], dtype=float32)

    Reference: Berrada, Zisserman and Kumar, ICLR 2018.
    """
    scores, labels, is_true, margin, class_weights = _prepare(scores, labels, margin, class_weights)
    k = family.check_k(k, scores.shape[-1], scores.shape[-1] - 1)
    tau = family.check_tau(tau)
    loss = _smooth_top_k(k, tau, squared, scores, labels, margin)
    return weigh(loss, is_true, class_weights)
