r"""The machinery behind the multiclass SVM family of :mod:`svmjax.losses` and
:mod:`svmjax.analytic`.

* The **unified template** of Doğan, Glasmachers & Igel (JMLR 2016): every machine scores
  an example by hinges of margin terms affine in the scores, one per class :math:`c`,

  .. math::

      v_c = \nu_c - \mu_c(s), \qquad
      \mu_c(s) = s_y - s_c \ \text{(relative)} \ \text{or} \ t_c s_c
      \ \text{(absolute)},\ t_c = \pm 1\ (+1 \text{ iff } c = y),

  with :math:`\nu_c = \Delta` (:math:`c \ne y`) and :math:`\nu_y`, aggregated by
  :math:`\sum_c \omega_c h(v_c)` or :math:`\max_c \omega_c h(v_c)` over the classes
  that take part. :class:`Template` holds the static choices; :func:`margin_terms` and
  :func:`term_weights` build :math:`v` and :math:`\omega`.
* **Elementary symmetric polynomials in log space** (:func:`log_esp`), the :math:`O(kC)`
  core of the smooth top-k loss (:func:`smooth_top_k_logit`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Template",
    "margin_terms",
    "term_weights",
    "true_margin_or_default",
    "template_kinks",
    "log_esp",
    "smooth_top_k_logit",
]

MARGINS = ("relative", "absolute")
CLASSES = ("wrong", "true", "all")
AGGREGATES = ("sum", "max")


class Template(NamedTuple):
    """The static choices of the unified template (hashable: a ``custom_vjp`` static argument).

    Attributes:
      margins: ``"relative"`` (:math:`\\mu_c = s_y - s_c`) or ``"absolute"``
        (:math:`\\mu_c = \\pm s_c`).
      classes: which terms take part: ``"wrong"`` (:math:`c \\ne y`), ``"true"``
        (:math:`c = y`, absolute margins only) or ``"all"``.
      aggregate: ``"sum"`` or ``"max"``.
      wrong_weight, true_weight: the term weights :math:`\\omega_c` (Python floats >= 0).
      squared: hinge :math:`\\max(0, v)^2` instead of :math:`\\max(0, v)`.
    """

    margins: str = "relative"
    classes: str = "wrong"
    aggregate: str = "sum"
    wrong_weight: float = 1.0
    true_weight: float = 1.0
    squared: bool = False

    def checked(self) -> Template:
        """Return ``self`` with the weights as floats; ``ValueError`` for a bad choice."""
        for name, value, allowed in (
            ("margins", self.margins, MARGINS),
            ("classes", self.classes, CLASSES),
            ("aggregate", self.aggregate, AGGREGATES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.margins == "relative" and self.classes == "true":
            raise ValueError(
                "relative margins have no true-class term (s_y - s_y = 0): "
                "use classes='wrong' or 'all', or margins='absolute'"
            )
        weights = [float(self.wrong_weight), float(self.true_weight)]
        for name, value in zip(("wrong_weight", "true_weight"), weights, strict=True):
            if not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a finite Python float >= 0, got {value}")
        return self._replace(wrong_weight=weights[0], true_weight=weights[1])


def true_margin_or_default(spec: Template, margin: jax.Array, true_margin) -> jax.Array:
    """:math:`\nu_y` as a scalar array: ``true_margin``, or by default ``margin`` (absolute
    margins) or 0 (relative margins, whose true-class term is the constant :math:`\nu_y`)."""
    if true_margin is None:
        return margin if spec.margins == "absolute" else jnp.zeros((), margin.dtype)
    true_margin = jnp.asarray(true_margin, margin.dtype)
    if true_margin.ndim != 0:
        raise ValueError(f"true_margin must be a scalar, got shape {true_margin.shape}")
    return true_margin


def margin_terms(
    spec: Template, scores: jax.Array, is_true: jax.Array, margin: jax.Array, true_margin
) -> tuple[jax.Array, jax.Array]:
    """The margin terms :math:`v` ``[..., C]`` and the mask of the terms that take part.

    Relative margins: :math:`v_c = \\Delta + s_c - s_y` (:math:`c \\ne y`),
    :math:`v_y = \\nu_y` (a constant). Absolute: :math:`v_c = \\Delta + s_c`
    (:math:`c \\ne y`), :math:`v_y = \\nu_y - s_y`.
    """
    if spec.margins == "relative":
        true_score = jnp.sum(jnp.where(is_true, scores, 0), axis=-1, keepdims=True)
        v = jnp.where(is_true, true_margin, scores - true_score + margin)
    else:
        v = jnp.where(is_true, true_margin - scores, scores + margin)
    if spec.classes == "wrong":
        active = ~is_true
    elif spec.classes == "true":  # (a row without a valid label keeps all, so NaN shows)
        active = is_true | ~jnp.any(is_true, axis=-1, keepdims=True)
    else:
        active = jnp.ones_like(is_true)
    return v, active


def term_weights(spec: Template, is_true: jax.Array, dtype) -> jax.Array | None:
    """The term weights :math:`\\omega` ``[..., C]``, or ``None`` when all are 1."""
    if spec.wrong_weight == 1.0 and spec.true_weight == 1.0:
        return None
    return jnp.where(is_true, jnp.asarray(spec.true_weight, dtype), spec.wrong_weight)


def template_kinks(spec: Template, scores, labels, margin, true_margin) -> jax.Array:
    """Distances of the score-dependent terms from the hinge kink, and, for ``aggregate="max"``,
    the gap between the two largest active terms (flat), for gradient checks."""
    is_true = jax.nn.one_hot(labels, scores.shape[-1], dtype=jnp.bool_)
    v, active = margin_terms(spec, scores, is_true, margin, true_margin)
    varies = active & ~is_true if spec.margins == "relative" else active  # v_y is constant
    hinge = jnp.abs(v[varies])
    if spec.aggregate == "sum":
        return hinge
    if spec.classes == "true" or (spec.classes == "wrong" and scores.shape[-1] < 3):
        return hinge  # one term per example: no ties
    top2 = jax.lax.top_k(jnp.where(active, v, -jnp.inf), 2)[0]
    return jnp.concatenate([hinge, (top2[..., 0] - top2[..., 1]).ravel()])


# ------------------------------------------------------------------ log-space symmetric sums


def _log_add(a: jax.Array, b: jax.Array) -> jax.Array:
    """``logaddexp(a, b)`` whose gradient stays finite when both are ``-inf`` (an empty sum).

    The double ``where`` keeps ``-inf - (-inf)`` out of ``logaddexp``'s derivative.
    """
    empty = (a == -jnp.inf) & (b == -jnp.inf)
    out = jnp.logaddexp(jnp.where(empty, 0, a), jnp.where(empty, 0, b))
    return jnp.where(empty, -jnp.inf, out)


def log_esp(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    r"""Log elementary symmetric polynomials of :math:`e^{x}` over the last axis.

    Args:
      x: ``[..., n]``; an entry of ``-inf`` takes no part (:math:`e^{-\infty} = 0`).
      k: the highest order.

    Returns:
      ``(total, prefix)``: ``total[..., m]`` :math:`= \log e_m(e^{x_1}, \dots, e^{x_n})`
      for :math:`m = 0..k` (``[..., k + 1]``; ``-inf`` where :math:`m > n`), and
      ``prefix[j, ..., m]`` :math:`= \log e_m(e^{x_1}, \dots, e^{x_{j}})`, the same over
      the first ``j`` entries only (``[n, ..., k + 1]``), for the marginals of
      :func:`svmjax.analytic.smooth_top_k`'s backward rule.

    One ``lax.scan`` over the ``n`` entries, :math:`O(nk)` work; differentiable by
    ``jax.grad`` without NaNs (see :func:`_log_add`).

    Example:
      >>> total, _ = log_esp(jnp.log(jnp.array([1.0, 2.0, 3.0])), 2)
      >>> jnp.round(jnp.exp(total), 4)  # e_0, e_1 = 1 + 2 + 3, e_2 = 2 + 3 + 6
      Array([ 1.,  6., 11.], dtype=float32)
    """
    init = jnp.full(x.shape[:-1] + (k + 1,), -jnp.inf, x.dtype).at[..., 0].set(0)

    def step(e, xj):
        shifted = jnp.concatenate([jnp.full_like(e[..., :1], -jnp.inf), e[..., :-1]], axis=-1)
        return _log_add(e, shifted + xj[..., None]), e

    total, prefix = jax.lax.scan(step, init, jnp.moveaxis(x, -1, 0))
    return total, prefix


def smooth_top_k_logit(
    scores: jax.Array, is_true: jax.Array, k: int, tau: float, margin: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""The smooth top-k loss as :math:`\tau\,\mathrm{softplus}(z)`; returns ``(z, x)``.

    With :math:`x_c = (s_c - m)/(k\tau)` (:math:`m = \max_{c \ne y} s_c`, a shift the
    loss does not depend on, held out of autodiff), :math:`x_y` set to :math:`-\infty`
    in ``x`` (the wrong classes only), :math:`A = \log e_k(e^{x})` and
    :math:`B = \log e_{k-1}(e^{x})`:

    .. math:: z = \Delta/\tau + A - B - x_y .

    The shift keeps every :math:`x_c \le 0` for the wrong classes, so the recursion sees
    no overflow whatever the scale of the scores.
    """
    wrong = jnp.where(is_true, -jnp.inf, scores)
    shift = jax.lax.stop_gradient(jnp.max(wrong, axis=-1, keepdims=True))
    x_all = (scores - shift) / (k * tau)
    x = jnp.where(is_true, -jnp.inf, x_all)
    x_true = jnp.sum(jnp.where(is_true, x_all, 0), axis=-1)
    total, _ = log_esp(x, k)
    return margin / tau + total[..., k] - total[..., k - 1] - x_true, x
