r"""Internal: the top-k losses of :mod:`svmjax.analytic`, with their ``custom_vjp`` rules.

Public as :func:`svmjax.analytic.top_k_hinge` (the top-k-set gradient) and
:func:`svmjax.analytic.smooth_top_k` (the closed form from the subset marginals of
:func:`_subset_marginals`); their pure definitions are in :mod:`svmjax.losses`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from svmjax import family
from svmjax._checks import check_k, check_tau
from svmjax._loss_parts import (
    hinge_parts,
    label_score,
    nan_guard,
    one_hot,
    poison,
    prepare_marked,
    weigh,
)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _top_k_hinge(k, variant, squared, n_classes, scores, labels, margin):
    return _top_k_hinge_fwd(k, variant, squared, n_classes, scores, labels, margin)[0]


def _top_k_hinge_fwd(k, variant, squared, n_classes, scores, labels, margin):
    is_true = one_hot(labels, n_classes)
    v = jnp.where(is_true, 0, scores - label_score(scores, labels)[..., None] + margin)
    top, index = jax.lax.top_k(v, k)  # the lowest indices at ties
    if variant == "alpha":
        loss, dh = hinge_parts(jnp.mean(top, axis=-1), squared)
        coef = jnp.broadcast_to(dh.astype(scores.dtype)[..., None], top.shape) / k
    else:
        h, dh = hinge_parts(top, squared)
        loss, coef = jnp.mean(h, axis=-1), dh.astype(scores.dtype) / k
    loss = poison(loss, labels)
    return loss, (labels, index, coef, jnp.isnan(loss))


def _top_k_hinge_bwd(k, variant, squared, n_classes, residuals, g):
    labels, index, coef, is_nan = residuals
    picked = one_hot(index, n_classes).astype(g.dtype)  # [..., k, C]
    a = jnp.sum(picked * (g[..., None] * coef)[..., None], axis=-2)  # dL/dv
    is_true = one_hot(labels, n_classes)
    a_wrong = nan_guard(jnp.where(is_true, 0, a), is_nan)  # v_y = 0 is constant
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
    scores, labels, is_true, margin, class_weights = prepare_marked(
        scores, labels, margin, class_weights
    )
    n_classes = scores.shape[-1]
    k = check_k(k, n_classes, n_classes)
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
    loss = poison(tau * jax.nn.softplus(z), labels)
    return (loss * loss if squared else loss), (labels, x, z, loss)


def _smooth_top_k_bwd(k, tau, squared, residuals, g):
    labels, x, z, loss = residuals
    is_nan = jnp.isnan(loss)  # a NaN score (z is NaN) or an invalid example
    p, q = _subset_marginals(x, k)
    coef = g * jax.nn.sigmoid(z) * (2 * loss if squared else 1)  # dL/d margin
    coef = nan_guard(coef, is_nan)
    is_true = one_hot(labels, x.shape[-1])
    d_scores = (coef / k)[..., None] * jnp.where(is_true, -1, p - q)
    return nan_guard(d_scores, is_nan), None, jnp.sum(coef)


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
    scores, labels, is_true, margin, class_weights = prepare_marked(
        scores, labels, margin, class_weights
    )
    k = check_k(k, scores.shape[-1], scores.shape[-1] - 1)
    tau = check_tau(tau)
    loss = _smooth_top_k(k, tau, squared, scores, labels, margin)
    return weigh(loss, is_true, class_weights)
