r"""Multiclass hinge losses as pure ``jax.numpy`` definitions.

These are the reference definitions: plain ``jnp`` code whose gradient is whatever
``jax.grad`` makes of it. :mod:`svmjax.analytic` has the same functions (same signature,
same values) with hand-written gradients.

* Per example: :func:`weston_watkins`, :func:`crammer_singer`, :func:`one_vs_rest`; the
  unified template :func:`unified_hinge` and its named members (:func:`lee_lin_wahba`,
  :func:`absolute_max_hinge`, :func:`absolute_wrong_max_hinge`, :func:`true_class_hinge`,
  :func:`reinforced_hinge`); the top-k losses :func:`top_k_hinge`, :func:`smooth_top_k`.
* ``scores`` ``[..., C]`` float; ``labels`` ``[...]`` integer class indices in ``[0, C)``;
  keyword-only ``margin`` (:math:`\Delta`), ``squared`` (:math:`h(v) = \max(0, v)^2`)
  and ``class_weights`` ``[C]`` (each loss times the weight of the *true* class). They
  return per-example losses ``[...]``: the caller reduces.
* A label outside ``[0, C)`` or a negative or non-finite class weight raises
  ``ValueError`` eagerly; under ``jit`` that example's loss and gradient are NaN.

Kinks: autodiff gives 1/2 at :math:`v = 0` (``jnp.maximum``) and splits the gradient
evenly over tied maxima (``jnp.max``); :mod:`svmjax.analytic` gives 0 and picks the
lowest-index maximiser. Both are valid subgradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from svmjax import _members, family
from svmjax._checks import check_k, check_tau
from svmjax._loss_parts import hinge, prepare, true_score, weigh

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
    ``weight=`` is ``class_weights`` for non-negative weights: torch also accepts negative
    ones and returns negative losses; svmjax refuses them, with a ``ValueError`` eagerly
    and a NaN loss and gradient under ``jit``).

    Example:
      >>> import jax.numpy as jnp
      >>> weston_watkins(jnp.array([[3.2, 5.1, -1.7]]), jnp.array([0]))  # cs231n's cat
      Array([2.9], dtype=float32)

    Reference: J. Weston and C. Watkins, "Support vector machines for multi-class
    pattern recognition", ESANN 1999; cs231n notes, "Linear classification".
    """
    scores, _, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    v = scores - true_score(scores, is_true)[..., None] + margin
    loss = jnp.sum(jnp.where(is_true, 0, hinge(v, squared)), axis=-1)
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
    loss = hinge(best_other - true_score(scores, is_true) + margin, squared)
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

    With the sum-to-zero constraint on the model (:math:`\sum_c w_c = 0`,
    :math:`\sum_c b_c = 0`) this is the ATS machine of Doğan et al. (JMLR 2016), registered
    as ``"absolute_sum_hinge"`` with these same functions.

    Reference: R. Rifkin and A. Klautau, "In defense of one-vs-all classification",
    JMLR 2004.
    """
    scores, _, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    signed = jnp.where(is_true, scores, -scores)
    loss = jnp.sum(hinge(margin - signed, squared), axis=-1)
    return weigh(loss, is_true, class_weights)


# ------------------------------------------------------------------- the unified template


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
    r"""The unified multiclass hinge template of Doğan, Glasmachers & Igel, per example.

    .. math::

        L(s, y) = w_y \operatorname*{agg}_{c \in P_y} \omega_c\, h(v_c), \qquad
        v_c = \nu_c - \mu_c(s), \qquad
        \mu_c = s_y - s_c \ \text{(relative)} \ \text{or} \ t_c s_c
        \ \text{(absolute)},

    with :math:`t_c = +1` for :math:`c = y` and :math:`-1` otherwise, target margins
    :math:`\nu_c = \Delta` (:math:`c \ne y`) and :math:`\nu_y` (``true_margin``),
    weights :math:`\omega_c` (``wrong_weight``, ``true_weight``), :math:`P_y` the classes
    taking part and :math:`\operatorname{agg}` a sum or a max. Instances:
    Weston–Watkins (relative, wrong, sum), Crammer–Singer (relative, wrong, max),
    one-vs-rest and ATS (absolute, all, sum), Lee–Lin–Wahba (absolute, wrong, sum),
    ATM (absolute, all, max), ADM (absolute, wrong, max), MMR (absolute, true, sum),
    reinforced (absolute, all, sum, :math:`\nu_y = (C-1)\Delta`, weights
    :math:`1-\gamma, \gamma`).

    Args:
      scores: float ``[..., C]``. labels: integer class indices ``[...]`` in ``[0, C)``.
      margins: ``"relative"`` or ``"absolute"``.
      classes: the terms :math:`P_y`: ``"wrong"`` (:math:`c \ne y`), ``"true"``
        (:math:`c = y`; absolute margins only) or ``"all"``.
      aggregate: ``"sum"`` or ``"max"``.
      margin: :math:`\Delta`, a scalar. true_margin: :math:`\nu_y`, a scalar; by
        default :math:`\Delta` (absolute) or 0 (relative: the true class's term is the
        constant :math:`h(\nu_y)`, so 0 leaves the loss of ``classes="wrong"``).
      wrong_weight, true_weight: :math:`\omega_c`, Python floats ``>= 0``.
      squared: use :math:`h(v) = \max(0, v)^2`. class_weights: optional ``[C]``, :math:`w_y`.

    Returns:
      Per-example losses ``[...]`` (not reduced).

    Gradient: ``jax.grad`` of this definition (1/2 at a hinge kink, an even split among
    tied maxima). :func:`svmjax.analytic.unified_hinge` gives 0 at the kink and the
    lowest-index maximiser.

    Example:
      >>> import jax.numpy as jnp
      >>> unified_hinge(jnp.array([[3.2, 5.1, -1.7]]), jnp.array([0]))  # Weston–Watkins
      Array([2.9], dtype=float32)

    Reference: Ü. Doğan, T. Glasmachers and C. Igel, "A unified view on multi-class
    support vector classification", JMLR 17, 2016.
    """
    spec = family.Template(margins, classes, aggregate, wrong_weight, true_weight, squared)
    spec = spec.checked()
    scores, _, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    true_margin = family.true_margin_or_default(spec, margin, true_margin)
    v, active = family.margin_terms(spec, scores, is_true, margin, true_margin)
    values = hinge(v, squared)
    weights = family.term_weights(spec, is_true, scores.dtype)
    if weights is not None:
        values = weights * values
    values = jnp.where(active, values, 0)
    loss = jnp.sum(values, axis=-1) if aggregate == "sum" else jnp.max(values, axis=-1)
    return weigh(loss, is_true, class_weights)


# The named members of the template: one setting each (svmjax._members.MACHINES).
lee_lin_wahba = _members.member("lee_lin_wahba", unified_hinge)
absolute_max_hinge = _members.member("absolute_max_hinge", unified_hinge)
absolute_wrong_max_hinge = _members.member("absolute_wrong_max_hinge", unified_hinge)
true_class_hinge = _members.member("true_class_hinge", unified_hinge)
reinforced_hinge = _members.reinforced_member(unified_hinge)


# ------------------------------------------------------------------------------ top-k


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
    r"""Top-k multiclass hinge loss of Lapin, Hein & Schiele, per example.

    With :math:`v = s + \Delta (1 - e_y) - s_y 1` (so :math:`v_y = 0`) and
    :math:`v_{[j]}` its :math:`j`-th largest entry over all :math:`C` classes:

    .. math::

        L_\alpha = w_y\, h\Big(\frac1k \sum_{j \le k} v_{[j]}\Big), \qquad
        L_\beta = w_y\, \frac1k \sum_{j \le k} h(v_{[j]}) .

    ``k = 1`` is Crammer–Singer (both variants).

    Args:
      scores: float ``[..., C]``. labels: integer class indices ``[...]`` in ``[0, C)``.
      k: a Python int in ``[1, C]``. variant: ``"alpha"`` or ``"beta"``.
      margin: :math:`\Delta`, a scalar. squared: :math:`h(v) = \max(0, v)^2`.
      class_weights: optional ``[C]``, :math:`w_y`.

    Returns:
      Per-example losses ``[...]`` (not reduced).

    Gradient: ``jax.grad`` of this definition (through ``lax.top_k``, which keeps the
    lowest indices at ties; 1/2 at a hinge kink). :func:`svmjax.analytic.top_k_hinge`
    uses the same top-k set and 0 at the kink.

    Example:
      >>> import jax.numpy as jnp
      >>> top_k_hinge(jnp.array([[3.2, 5.1, -1.7]]), jnp.array([0]), k=2)  # (2.9 + 0) / 2
      Array([1.45], dtype=float32)

    Reference: M. Lapin, M. Hein and B. Schiele, "Top-k multiclass SVM", NeurIPS 2015;
    "Loss functions for top-k error: analysis and insights", CVPR 2016.
    """
    if variant not in ("alpha", "beta"):
        raise ValueError(f"variant must be 'alpha' or 'beta', got {variant!r}")
    scores, _, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    k = check_k(k, scores.shape[-1], scores.shape[-1])
    v = jnp.where(is_true, 0, scores - true_score(scores, is_true)[..., None] + margin)
    top = jax.lax.top_k(v, k)[0]
    if variant == "alpha":
        loss = hinge(jnp.mean(top, axis=-1), squared)
    else:
        loss = jnp.mean(hinge(top, squared), axis=-1)
    return weigh(loss, is_true, class_weights)


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
    r"""Smooth top-k SVM loss of Berrada, Zisserman & Kumar, per example.

    .. math::

        L(s, y) = w_y \Big[\tau \log \sum_{|S| = k}
            e^{(\Delta 1(y \notin S) + \frac1k \sum_{j \in S} s_j)/\tau}
          - \tau \log \sum_{|S| = k,\, y \in S}
            e^{\frac1k \sum_{j \in S} s_j/\tau}\Big]
        = w_y\, \tau\, \mathrm{softplus}\big(\Delta/\tau + A - B - x_y\big),

    with :math:`x = s/(k\tau)`, :math:`A = \log e_k` and :math:`B = \log e_{k-1}` of
    :math:`e^{x_c}` over the wrong classes (elementary symmetric polynomials, computed in
    log space in :math:`O(kC)`, :func:`svmjax.family.log_esp`; no subsets are enumerated).
    It is finite for finite scores of any size, smooth (no kinks) and as
    :math:`\tau \to 0` tends to
    :math:`\max(0, \max_{|S|=k, y \notin S} (\Delta + \bar s_S)
    - \max_{|S|=k, y \in S} \bar s_S)` (:math:`\bar s_S` the mean over :math:`S`).
    ``squared=True`` squares the per-example loss.

    Args:
      scores: float ``[..., C]``. labels: integer class indices ``[...]`` in ``[0, C)``.
      k: a Python int in ``[1, C - 1]`` (at ``k = C`` the loss is identically 0).
      tau: the temperature :math:`\tau`, a Python float > 0.
      margin: :math:`\Delta`, a scalar. class_weights: optional ``[C]``, :math:`w_y`.

    Returns:
      Per-example losses ``[...]`` (not reduced). Non-finite scores give NaN.

    Gradient: ``jax.grad`` through the log-space recursion (well defined everywhere);
    :func:`svmjax.analytic.smooth_top_k` has the closed form.

    Example:
      >>> import jax.numpy as jnp
      >>> smooth_top_k(jnp.array([[0.0, 0.0]]), jnp.array([0]))  # log(1 + e)
      Array([1.31326], dtype=float32)

    Reference: L. Berrada, A. Zisserman and M. P. Kumar, "Smooth loss functions for deep
    top-k classification", ICLR 2018.
    """
    scores, _, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    k = check_k(k, scores.shape[-1], scores.shape[-1] - 1)
    tau = check_tau(tau)
    z, _ = family.smooth_top_k_logit(scores, is_true, k, tau, margin)
    loss = tau * jax.nn.softplus(z)
    return weigh(loss * loss if squared else loss, is_true, class_weights)
