"""Internal: the pieces the losses of :mod:`svmjax.losses` and :mod:`svmjax.analytic` share.

:func:`prepare` checks a loss call's inputs and guards its bad examples; :func:`weigh`
applies the class weights; :func:`one_hot`, :func:`true_score` and :func:`hinge` are the
building blocks of the pure definitions. The analytic rules add :func:`hinge_parts` (the
hinge and its strict-indicator derivative), :func:`label_score`, :func:`poison` and
:func:`nan_guard` (a NaN loss gives a NaN gradient row).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from svmjax._checks import check_loss_inputs, is_concrete, mark_invalid, poison_invalid


def one_hot(labels: jax.Array, n_classes: int) -> jax.Array:
    """Boolean mask ``[..., C]``, True at each example's label (all False when out of range)."""
    return jax.nn.one_hot(labels, n_classes, dtype=jnp.bool_)


def prepare(scores, labels, margin, class_weights, *, mark_labels: bool = False):
    """Check a loss call's inputs; return ``(scores, labels, is_true, margin, class_weights)``.

    The scores of every example whose label is outside ``[0, C)`` or whose class weight is
    negative or non-finite are set to NaN (:func:`svmjax._checks.poison_invalid`), or with
    ``mark_labels`` (the analytic losses) its label is set to ``-1`` instead
    (:func:`svmjax._checks.mark_invalid`); ``is_true`` is from the labels as given.
    Concrete labels and class weights (an eager call) have been checked, so nothing is
    guarded then: no bad example can be there.
    """
    scores, labels, margin, class_weights = check_loss_inputs(scores, labels, margin, class_weights)
    # From the caller's labels: an example with a bad class weight keeps its class here,
    # so the class weight's gradient is NaN there too, as for the pure losses.
    is_true = one_hot(labels, scores.shape[-1])
    if is_concrete(labels, class_weights):  # checked above: no bad example to guard
        return scores, labels, is_true, margin, class_weights
    if mark_labels:
        labels = mark_invalid(labels, scores.shape[-1], class_weights)
    else:
        scores = poison_invalid(scores, labels, class_weights)
    return scores, labels, is_true, margin, class_weights


def weigh(loss: Any, is_true: jax.Array, class_weights: jax.Array | None) -> jax.Array:
    """Multiply each example's loss by the weight of its true class."""
    loss = jnp.asarray(loss)
    if class_weights is None:
        return loss
    return loss * jnp.sum(jnp.where(is_true, class_weights, 0), axis=-1)


def true_score(scores: jax.Array, is_true: jax.Array) -> jax.Array:
    """The score of each example's true class, ``[..., C] -> [...]``, by a masked sum
    (autodiff turns it into a select rather than a scatter)."""
    return jnp.sum(jnp.where(is_true, scores, 0), axis=-1)


def hinge(v: jax.Array, squared: bool) -> jax.Array:
    """``h(v) = max(0, v)``, or its square."""
    h = jnp.maximum(v, 0)
    return h * h if squared else h


# ------------------------------------------------------------------- the analytic rules


def hinge_parts(v: jax.Array, squared: bool) -> tuple[jax.Array, jax.Array]:
    """Return ``(h(v), h'(v))`` with the strict-indicator convention ``h'(0) = 0``."""
    positive = jnp.maximum(v, 0)
    if squared:
        return positive * positive, 2 * positive
    return positive, v > 0


def label_score(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """The score of each example's true class, ``[..., C] -> [...]``, by a gather.

    The same values as :func:`true_score`; here nothing differentiates it, and on CPU one
    load per example is far cheaper than a reduction over a short class axis. A label
    outside ``[0, C)`` reads some class (``take_along_axis`` wraps negative indices and
    clips the rest); such a label is ``-1`` here (``mark_invalid``), and the forward rules
    make that example's loss NaN."""
    return jnp.take_along_axis(scores, labels[..., None], axis=-1, mode="clip")[..., 0]


def poison(loss: jax.Array, labels: jax.Array) -> jax.Array:
    """``loss`` with NaN for every example labelled ``-1`` (an invalid example); each
    forward rule applies it before it flags the NaN losses, so the backward rule gives
    those examples NaN gradient rows."""
    return jnp.where(labels >= 0, loss, jnp.nan)


def nan_guard(x: jax.Array, is_nan: jax.Array) -> jax.Array:
    """``x`` with NaN in every example whose forward loss was NaN.

    A select, not a multiplication: XLA rewrites ``a * float(mask)`` as
    ``select(mask, a, 0)``, which would silently turn ``NaN * 0`` into 0 under ``jit``.
    """
    return jnp.where(is_nan.reshape(is_nan.shape + (1,) * (x.ndim - is_nan.ndim)), jnp.nan, x)


def prepare_marked(scores, labels, margin, class_weights):
    """:func:`prepare` as every analytic loss calls it: bad examples arrive labelled ``-1``
    and :func:`poison` makes their loss NaN, instead of their scores multiplied by NaN."""
    return prepare(scores, labels, margin, class_weights, mark_labels=True)
