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
(a boolean mask for the plain hinge, a float for the squared one), the Crammer–Singer
argmax, and a per-example flag for NaN losses (a NaN loss gets a NaN gradient).
Class weights and the NaN guard for bad labels are applied outside the ``custom_vjp``
as ordinary JAX code, so their derivatives come from autodiff. The ``margin`` gets its
true cotangent too, so ``jax.grad`` with respect to it works.

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

from svmjax.losses import prepare, true_score, weigh
from svmjax.validation import one_hot

__all__ = ["weston_watkins", "crammer_singer", "one_vs_rest"]


def _hinge_parts(v: jax.Array, squared: bool) -> tuple[jax.Array, jax.Array]:
    """Return (h(v), h'(v)) with the strict-indicator convention h'(0) = 0."""
    positive = jnp.maximum(v, 0)
    if squared:
        return positive * positive, 2 * positive
    return positive, v > 0


def _nan_guard(x: jax.Array, is_nan: jax.Array) -> jax.Array:
    """``x`` with NaN in every example whose forward loss was NaN.

    A select, not a multiplication: XLA rewrites ``a * float(mask)`` as
    ``select(mask, a, 0)``, which would silently turn ``NaN * 0`` into 0 under ``jit``.
    """
    return jnp.where(is_nan.reshape(is_nan.shape + (1,) * (x.ndim - is_nan.ndim)), jnp.nan, x)


# ----------------------------------------------------------------------------- Weston–Watkins


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _weston_watkins(squared, scores, labels, margin):
    return _weston_watkins_fwd(squared, scores, labels, margin)[0]


def _weston_watkins_fwd(squared, scores, labels, margin):
    is_true = one_hot(labels, scores.shape[-1])
    v = scores - true_score(scores, is_true)[..., None] + margin
    h, dh = _hinge_parts(jnp.where(is_true, -jnp.inf, v), squared)
    loss = jnp.sum(h, axis=-1)
    return loss, (labels, dh, jnp.isnan(loss))


def _weston_watkins_bwd(squared, residuals, g):
    labels, dh, is_nan = residuals
    coef = dh.astype(g.dtype)
    count = jnp.sum(coef, axis=-1)
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
    scores, labels, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
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
    loss, dh = _hinge_parts(best_score - true_score(scores, is_true) + margin, squared)
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
    scores, labels, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    loss: jax.Array = _crammer_singer(squared, scores.shape[-1], scores, labels, margin)
    return weigh(loss, is_true, class_weights)


# ----------------------------------------------------------------------------- one-vs-rest


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _one_vs_rest(squared, scores, labels, margin):
    return _one_vs_rest_fwd(squared, scores, labels, margin)[0]


def _one_vs_rest_fwd(squared, scores, labels, margin):
    is_true = one_hot(labels, scores.shape[-1])
    h, dh = _hinge_parts(margin - jnp.where(is_true, scores, -scores), squared)
    loss = jnp.sum(h, axis=-1)
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
    scores, labels, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    return weigh(_one_vs_rest(squared, scores, labels, margin), is_true, class_weights)
