r"""Multiclass hinge losses as pure ``jax.numpy`` definitions.

These are the reference definitions: plain ``jnp`` code whose gradient is whatever
``jax.grad`` makes of it. :mod:`svmjax.analytic` has the same functions (same signature,
same values) with hand-written gradients.

Conventions shared by every loss here:

* ``scores`` is a float array ``[..., C]``; ``labels`` are integer class indices ``[...]``
  in ``[0, C)`` (one label convention everywhere, one-vs-rest included).
* Hyperparameters are keyword-only: ``margin`` (the :math:`\Delta` of the hinge, a scalar,
  default 1), ``squared`` (use :math:`h(v) = \max(0, v)^2` instead of
  :math:`\max(0, v)`), ``class_weights`` (``[C]``; each example's loss is multiplied by the
  weight of its *true* class, as ``torch.nn.MultiMarginLoss(weight=...)`` does).
* They return per-example losses ``[...]`` and never reduce: take the mean (or a weighted
  sum) yourself.
* A label outside ``[0, C)``, or a negative or non-finite class weight, raises
  ``ValueError`` when the values are concrete; inside ``jit`` (where nothing can raise)
  the loss and gradient of every example it touches are NaN, never a plausible number.

Kinks. Autodiff of these definitions picks particular subgradients at the kinks:
``jnp.maximum(v, 0)`` gives derivative 1/2 at ``v == 0``, and ``jnp.max`` splits the
derivative evenly over tied maxima. Those are valid subgradients, but they differ from
the strict-indicator convention of :mod:`svmjax.analytic` (derivative 0 at ``v == 0``,
lowest-index maximiser). Both satisfy the subgradient inequality; the tests check it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from svmjax.validation import check_loss_inputs, one_hot, poison_invalid

__all__ = ["weston_watkins", "crammer_singer", "one_vs_rest"]


def prepare(scores, labels, margin, class_weights):
    """Check a loss call's inputs (shared with :mod:`svmjax.analytic`).

    Returns ``(scores, labels, is_true, margin, class_weights)`` as arrays, with the
    scores of every example whose label is outside ``[0, C)`` or whose class weight is
    negative or non-finite set to NaN (see :func:`svmjax.validation.poison_invalid`).
    """
    scores, labels, margin, class_weights = check_loss_inputs(scores, labels, margin, class_weights)
    scores = poison_invalid(scores, labels, class_weights)
    is_true = one_hot(labels, scores.shape[-1])
    return scores, labels, is_true, margin, class_weights


def weigh(loss: ArrayLike, is_true: jax.Array, class_weights: jax.Array | None) -> jax.Array:
    """Multiply each example's loss by the weight of its true class."""
    loss = jnp.asarray(loss)
    if class_weights is None:
        return loss
    return loss * jnp.sum(jnp.where(is_true, class_weights, 0), axis=-1)


def true_score(scores: jax.Array, is_true: jax.Array) -> jax.Array:
    """The score of each example's true class, ``[..., C] -> [...]``."""
    return jnp.sum(jnp.where(is_true, scores, 0), axis=-1)


def _hinge(v: jax.Array, squared: bool) -> jax.Array:
    h = jnp.maximum(v, 0)
    return h * h if squared else h


def weston_watkins(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Weston–Watkins multiclass hinge loss (the cs231n SVM loss), per example.

    .. math::

        L(s, y) = w_y \sum_{j \ne y} h(s_j - s_y + \Delta),
        \qquad h(v) = \max(0, v) \text{ or } \max(0, v)^2 .

    Args:
      scores: float ``[..., C]``.
      labels: integer class indices ``[...]`` in ``[0, C)``.
      margin: :math:`\Delta`, a scalar (default 1).
      squared: use the squared hinge.
      class_weights: optional ``[C]``; :math:`w_y` above (1 when omitted).

    Returns:
      Per-example losses ``[...]`` (not reduced).

    Gradient: ``jax.grad`` of this definition; at a kink (:math:`v_j = 0`) it gives 1/2
    for the plain hinge (``jnp.maximum``'s convention) and 0 for the squared one.
    :func:`svmjax.analytic.weston_watkins` gives 0 (strict ``> 0``).

    Relation to torch: ``weston_watkins(s, y, margin=m) ==
    C * torch.nn.functional.multi_margin_loss(s, y, margin=m, reduction="none")``
    (torch divides by the number of classes ``C``; ``p=2`` is ``squared=True``;
    ``weight=`` is ``class_weights``).

    Example:
      >>> import jax.numpy as jnp
      >>> weston_watkins(jnp.array([[3.2, 5.1, -1.7]]), jnp.array([0]))  # cs231n's cat
      Array([2.9], dtype=float32)

    Reference: J. Weston and C. Watkins, "Support vector machines for multi-class
    pattern recognition", ESANN 1999; cs231n notes, "Linear classification".
    """
    scores, _, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    v = scores - true_score(scores, is_true)[..., None] + margin
    loss = jnp.sum(jnp.where(is_true, 0, _hinge(v, squared)), axis=-1)
    return weigh(loss, is_true, class_weights)


def crammer_singer(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Crammer–Singer multiclass hinge loss, per example.

    .. math::

        L(s, y) = w_y \, h\big(\max_{j \ne y} s_j - s_y + \Delta\big),
        \qquad h(v) = \max(0, v) \text{ or } \max(0, v)^2 .

    Args:
      scores: float ``[..., C]``, ``C >= 2``.
      labels: integer class indices ``[...]`` in ``[0, C)``.
      margin: :math:`\Delta`, a scalar (default 1).
      squared: use the squared hinge.
      class_weights: optional ``[C]``; :math:`w_y` above (1 when omitted).

    Returns:
      Per-example losses ``[...]`` (not reduced).

    Gradient: ``jax.grad`` of this definition. At a kink it gives 1/2 from
    ``jnp.maximum`` (plain hinge), and when several wrong classes tie for the maximum,
    ``jnp.max`` splits the gradient evenly among them.
    :func:`svmjax.analytic.crammer_singer` gives 0 at the hinge kink and puts the whole
    gradient on the lowest-index maximiser.

    At ``margin=1`` (no weights, not squared) this equals
    ``optax.losses.multiclass_hinge_loss(scores, labels)``.

    Example:
      >>> import jax.numpy as jnp
      >>> crammer_singer(jnp.array([[3.2, 5.1, -1.7]]), jnp.array([0]))
      Array([2.9], dtype=float32)

    Reference: K. Crammer and Y. Singer, "On the algorithmic implementation of
    multiclass kernel-based vector machines", JMLR 2001.
    """
    scores, _, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    best_other = jnp.max(jnp.where(is_true, -jnp.inf, scores), axis=-1)
    loss = _hinge(best_other - true_score(scores, is_true) + margin, squared)
    return weigh(loss, is_true, class_weights)


def one_vs_rest(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""One-vs-rest hinge loss (C binary hinges), per example.

    .. math::

        L(s, y) = w_y \sum_{j} h(\Delta - t_j s_j),
        \qquad t_j = +1 \text{ if } j = y \text{ else } -1 .

    Labels are integer class indices, as for the other losses (not ±1 targets).

    Args:
      scores: float ``[..., C]``.
      labels: integer class indices ``[...]`` in ``[0, C)``.
      margin: :math:`\Delta`, a scalar (default 1).
      squared: use the squared hinge.
      class_weights: optional ``[C]``; :math:`w_y` above (1 when omitted).

    Returns:
      Per-example losses ``[...]`` (not reduced).

    Gradient: ``jax.grad`` of this definition; 1/2 at a kink for the plain hinge.
    :func:`svmjax.analytic.one_vs_rest` gives 0 there.

    Example:
      >>> import jax.numpy as jnp
      >>> one_vs_rest(jnp.array([[0.5, -2.0, 0.0]]), jnp.array([0]))
      Array([1.5], dtype=float32)

    Reference: R. Rifkin and A. Klautau, "In defense of one-vs-all classification",
    JMLR 2004.
    """
    scores, _, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    signed = jnp.where(is_true, scores, -scores)
    loss = jnp.sum(_hinge(margin - signed, squared), axis=-1)
    return weigh(loss, is_true, class_weights)
