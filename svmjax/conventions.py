r"""Conversions between svmjax's scaling of the SVM objective and its peers'.

svmjax (like liblinear) writes the regularised problem as

.. math::

    P(W, b) = \tfrac12 \lVert W \rVert_F^2 + C \sum_{i=1}^{N} L_i,

with :math:`L_i` a per-example loss of :mod:`svmjax.losses` (Weston–Watkins sums over the
wrong classes). Peers average over examples instead, some also over classes, and put the
penalty in front of :math:`\lVert W \rVert^2` with or without the :math:`\tfrac12`. Dividing
:math:`P` by a positive constant does not move the minimiser, so each peer's objective is
:math:`P` at a matching :math:`C`. See ``docs/conventions.md`` for the table; every
function here is tested against the peer itself where it is installable.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from svmjax import losses
from svmjax._checks import scalar

_positive = functools.partial(scalar, positive=True)

__all__ = [
    "C_from_alpha",
    "C_from_reg",
    "alpha_from_C",
    "keras_categorical_hinge",
    "liblinear_features",
    "reg_from_C",
]


def reg_from_C(C: float, n_samples: int) -> float:
    r"""cs231n's ``reg`` for liblinear's ``C``: :math:`\lambda = 1 / (2 C N)`.

    The objective :math:`\frac1N \sum_i L_i + \lambda \lVert W \rVert^2` (cs231n, Keras
    ``kernel_regularizer=l2(λ)`` with a mean-reduced loss, :func:`svmjax.linear.objective`
    and :func:`svmjax.train.fit`'s ``reg``) equals :math:`P / (C N)`.

    Example:
      >>> reg_from_C(1.0, 500)
      0.001
    """
    return 1.0 / (2.0 * _positive("C", C) * _positive("n_samples", n_samples))


def C_from_reg(reg: float, n_samples: int) -> float:
    r"""liblinear's ``C`` for cs231n's ``reg``: :math:`C = 1 / (2 \lambda N)`.

    Example:
      >>> C_from_reg(1e-3, 500)
      1.0
    """
    return 1.0 / (2.0 * _positive("reg", reg) * _positive("n_samples", n_samples))


def alpha_from_C(C: float, n_samples: int) -> float:
    r"""Weight decay :math:`\alpha = 1 / (C N)` for liblinear's ``C``.

    The objective :math:`\frac1N \sum_i L_i + \frac{\alpha}{2} \lVert W \rVert^2` equals
    :math:`P / (C N)`. That is scikit-learn ``SGDClassifier``'s ``alpha`` (``penalty="l2"``;
    its multiclass scheme is one-vs-rest, so :math:`L` is :func:`svmjax.losses.one_vs_rest`)
    and the ``weight_decay`` of ``torch.optim.SGD`` or ``optax.add_decayed_weights`` on a
    loss averaged over examples (they add :math:`\alpha W` to the gradient). For torch's
    ``MultiMarginLoss``, which also divides by the number of classes :math:`K`, use
    ``alpha_from_C(C, n_samples) / K``.

    Example:
      >>> alpha_from_C(0.01, 1000)
      0.1
    """
    return 1.0 / (_positive("C", C) * _positive("n_samples", n_samples))


def C_from_alpha(alpha: float, n_samples: int) -> float:
    r"""liblinear's ``C`` for a weight decay ``alpha``: :math:`C = 1 / (\alpha N)`.

    Example:
      >>> C_from_alpha(1e-4, 1000)
      10.0
    """
    return 1.0 / (_positive("alpha", alpha) * _positive("n_samples", n_samples))


def keras_categorical_hinge(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Keras's ``categorical_hinge`` per example, written with svmjax's Crammer–Singer.

    Keras computes :math:`\max(0,\ \max_j (1 - t_j) s_j - s_y + 1)` with one-hot
    :math:`t`: the product puts a **0** where the true class was, so the "best wrong
    score" is :math:`\max(0, \max_{j \ne y} s_j)`. That is Crammer–Singer on the scores
    with an extra class of score 0 appended; it equals
    :func:`svmjax.losses.crammer_singer` (margin 1) unless every wrong-class score is
    negative, where Keras gives :math:`\max(0, 1 - s_y)` instead.

    Args:
      scores: float ``[..., C]``; labels: integer class indices ``[...]`` in ``[0, C)``.

    Returns:
      Per-example losses ``[...]``.

    Example:
      >>> import jax.numpy as jnp
      >>> s, y = jnp.array([[0.5, -1.0, -2.0]]), jnp.array([0])
      >>> keras_categorical_hinge(s, y), losses.crammer_singer(s, y)
      (Array([0.5], dtype=float32), Array([0.], dtype=float32))
    """
    scores = jnp.asarray(scores)
    zero = jnp.zeros(scores.shape[:-1] + (1,), scores.dtype)
    return losses.crammer_singer(jnp.concatenate([scores, zero], axis=-1), labels)


def liblinear_features(X: ArrayLike, intercept_scaling: float = 1.0) -> np.ndarray:
    r"""``X`` with a constant column ``intercept_scaling`` appended: liblinear's intercept.

    liblinear (and so ``LinearSVC(fit_intercept=True)``) does not fit a separate
    intercept: it appends this column and penalises its weight like any other.
    ``solve(liblinear_features(X, s), y, fit_intercept=False)`` therefore solves
    ``LinearSVC``'s problem exactly; its ``coef_`` is ``W[:-1].T`` and its ``intercept_`` is
    ``s * W[-1]``. svmjax's own ``fit_intercept=True`` leaves the intercept unpenalised.

    Example:
      >>> liblinear_features(np.zeros((2, 1)), 3.0).tolist()
      [[0.0, 3.0], [0.0, 3.0]]
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must have shape [N, D], got {X.shape}")
    column = np.full((X.shape[0], 1), _positive("intercept_scaling", intercept_scaling), X.dtype)
    return np.hstack([X, column])
