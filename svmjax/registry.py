"""The one registry of loss names: every module that dispatches on a loss name reads it.

Each entry is a :class:`Loss`: the pure definition (:mod:`svmjax.losses`), the same loss
with its analytic gradient (:mod:`svmjax.analytic`), and what the loss supports. Adding a
loss means writing its two functions and calling :func:`register` once; training,
:func:`svmjax.linear.objective`, :mod:`svmjax.gradcheck`, the estimator and the command
line pick it up from here. The exact solver takes the losses whose entry has a ``dual``.

Example:
  >>> from svmjax import registry
  >>> registry.get("crammer_singer").dual is not None
  True
  >>> "weston_watkins" in registry.names()
  True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from svmjax import analytic, duals, family, losses
from svmjax._loss_parts import one_hot

__all__ = [
    "CONSTRAINTS",
    "Loss",
    "builtin",
    "get",
    "loss_options",
    "names",
    "register",
    "unregister",
]

CONSTRAINTS = (None, "sum_to_zero")


class Loss(NamedTuple):
    """A registered loss.

    Attributes:
      name: the name used everywhere (``loss="..."``).
      pure: ``pure(scores, labels, *, margin, squared, class_weights, **options)``, plain
        ``jnp`` (``jax.grad`` differentiates it).
      analytic: the same signature and values, with a hand-written ``custom_vjp`` gradient.
      dual: the exact solver's pieces (:class:`svmjax.duals.Dual`), or a function of the
        loss's options (a dict), the number of classes and ``squared`` that returns them
        (raising ``ValueError`` for a setting it cannot certify), or ``None``: then
        :func:`svmjax.solve.solve` refuses the loss (no certificate without a dual).
      constraint: ``None`` or ``"sum_to_zero"``: the model the loss is meant for has
        :math:`\\sum_c w_c = 0` and :math:`\\sum_c b_c = 0` (training keeps it so).
      kinks: optional ``kinks(scores, labels, margin, **options)``, the distance of every
        kink argument from its kink (flat), for :func:`svmjax.gradcheck.compare`.
      options: names of the loss's extra keyword hyperparameters beyond ``margin``,
        ``squared`` and ``class_weights`` (e.g. ``("k",)``), passed as ``loss_options``.
      paper: a short reference.
    """

    name: str
    pure: Callable[..., jax.Array]
    analytic: Callable[..., jax.Array]
    dual: duals.Dual | Callable[[dict, int, bool], duals.Dual] | None = None
    constraint: str | None = None
    kinks: Callable[..., jax.Array] | None = None
    options: tuple[str, ...] = ()
    paper: str = ""


_REGISTRY: dict[str, Loss] = {}


def register(entry: Loss, *, replace: bool = False) -> Loss:
    """Add ``entry`` to the registry and return it.

    Raises:
      ValueError: the name is taken (pass ``replace=True`` to overwrite) or the
        constraint is unknown.
    """
    if entry.name in _REGISTRY and not replace:
        raise ValueError(f"loss {entry.name!r} is already registered (pass replace=True)")
    if entry.constraint not in CONSTRAINTS:
        raise ValueError(f"unknown constraint {entry.constraint!r}; choose one of {CONSTRAINTS}")
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a loss (tests use it to clean up after registering a toy loss)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Loss:
    """The entry of ``name``; a ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(names())}") from None


def names(*, solver: bool = False) -> tuple[str, ...]:
    """Registered loss names, in registration order (only those the exact solver takes,
    with ``solver=True``)."""
    return tuple(n for n, e in _REGISTRY.items() if not solver or e.dual is not None)


# ------------------------------------------------------------------------------ kinks


def _template_kinks(margins, classes, aggregate):
    spec = family.Template(margins, classes, aggregate)

    def kinks(scores, labels, margin, true_margin=None, **_):
        margin = jnp.asarray(margin, scores.dtype)
        true_margin = family.true_margin_or_default(spec, margin, true_margin)
        return family.template_kinks(spec, scores, labels, margin, true_margin)

    return kinks


def _max_kinks(scores, labels, margin):
    """Crammer–Singer: only the active (largest) hinge and the tie for it (the template's
    max kinks would also count the inactive wrong classes' hinges)."""
    is_true = one_hot(labels, scores.shape[-1])
    true_score = jnp.sum(jnp.where(is_true, scores, 0), axis=-1)
    top2 = jax.lax.top_k(jnp.where(is_true, -jnp.inf, scores), 2)[0]
    hinge = jnp.abs(top2[..., 0] - true_score + margin)
    return jnp.concatenate([hinge.ravel(), (top2[..., 0] - top2[..., 1]).ravel()])


register(
    Loss(
        "weston_watkins",
        losses.weston_watkins,
        analytic.weston_watkins,
        dual=duals.WESTON_WATKINS,
        kinks=_template_kinks("relative", "wrong", "sum"),
        paper="Weston & Watkins, ESANN 1999",
    )
)
register(
    Loss(
        "crammer_singer",
        losses.crammer_singer,
        analytic.crammer_singer,
        dual=duals.CRAMMER_SINGER,
        kinks=_max_kinks,
        paper="Crammer & Singer, JMLR 2001",
    )
)
register(
    Loss(
        "one_vs_rest",
        losses.one_vs_rest,
        analytic.one_vs_rest,
        dual=duals.ONE_VS_REST,
        kinks=_template_kinks("absolute", "all", "sum"),
        paper="Rifkin & Klautau, JMLR 2004",
    )
)


def loss_options(name: str, options: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """``options`` of loss ``name`` checked against its entry and frozen into a sorted tuple
    of ``(name, value)`` pairs (hashable: a static argument of compiled code).

    Example:
      >>> loss_options("weston_watkins", None)
      ()
    """
    entry = get(name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        accepted = ", ".join(entry.options) if entry.options else "none"
        raise ValueError(f"loss {name!r} has no option {unknown[0]!r} (its options: {accepted})")
    try:
        frozen = tuple(sorted(options.items()))
        hash(frozen)
    except TypeError:
        raise TypeError(f"loss_options of {name!r} must be hashable Python values") from None
    return frozen


# ------------------------------------------------------- the family of Doğan et al. and top-k


def _unified_kinks(scores, labels, margin, *, margins="relative", classes="wrong",
                   aggregate="sum", true_margin=None, **_):  # fmt: skip
    return _template_kinks(margins, classes, aggregate)(scores, labels, margin, true_margin)


def _reinforced_kinks(scores, labels, margin, **_):
    true_margin = (scores.shape[-1] - 1) * jnp.asarray(margin, scores.dtype)
    return _template_kinks("absolute", "all", "sum")(scores, labels, margin, true_margin)


def _top_k_kinks(scores, labels, margin, *, k=1, variant="alpha", **_):
    is_true = one_hot(labels, scores.shape[-1])
    true_score = jnp.sum(jnp.where(is_true, scores, 0), axis=-1)
    v = jnp.where(is_true, 0, scores - true_score[..., None] + margin)
    top, index = jax.lax.top_k(v, min(k + 1, scores.shape[-1]))
    if variant == "alpha":
        hinge = jnp.abs(jnp.mean(top[..., :k], axis=-1))
    else:  # v_y = 0 is a constant, not a kink
        hinge = jnp.where(index[..., :k] == labels[..., None], jnp.inf, jnp.abs(top[..., :k]))
    parts = [hinge.ravel()]
    if k < scores.shape[-1]:  # the top-k set changes where v_[k] = v_[k+1]
        parts.append((top[..., k - 1] - top[..., k]).ravel())
    return jnp.concatenate(parts)


def _derived(name: str) -> Callable[[dict, int, bool], duals.Dual]:
    """The exact solver's pieces of the built-in ``name``, derived for its options
    (:func:`svmjax.family_duals.dual_for`)."""

    def build(options: dict, n_classes: int, squared: bool) -> duals.Dual:
        from svmjax import family_duals  # it imports this module

        return family_duals.dual_for(name, options, n_classes, squared=squared)

    return build


register(
    Loss(
        "unified_hinge",
        losses.unified_hinge,
        analytic.unified_hinge,
        dual=_derived("unified_hinge"),
        kinks=_unified_kinks,
        options=("margins", "classes", "aggregate", "true_margin", "wrong_weight", "true_weight"),
        paper="Doğan, Glasmachers & Igel, JMLR 2016 (the template; constraint per machine)",
    )
)
register(
    Loss(
        "lee_lin_wahba",
        losses.lee_lin_wahba,
        analytic.lee_lin_wahba,
        dual=_derived("lee_lin_wahba"),
        constraint="sum_to_zero",
        kinks=_template_kinks("absolute", "wrong", "sum"),
        paper="Lee, Lin & Wahba, JASA 2004",
    )
)
register(  # ATS: the one-vs-rest loss, trained jointly under the sum-to-zero constraint
    Loss(
        "absolute_sum_hinge",
        losses.one_vs_rest,
        analytic.one_vs_rest,
        dual=_derived("absolute_sum_hinge"),
        constraint="sum_to_zero",
        kinks=_template_kinks("absolute", "all", "sum"),
        paper="Doğan, Glasmachers & Igel, JMLR 2016 (ATS)",
    )
)
register(
    Loss(
        "absolute_max_hinge",
        losses.absolute_max_hinge,
        analytic.absolute_max_hinge,
        dual=_derived("absolute_max_hinge"),
        constraint="sum_to_zero",
        kinks=_template_kinks("absolute", "all", "max"),
        paper="Doğan, Glasmachers & Igel, JMLR 2016 (ATM)",
    )
)
register(
    Loss(
        "absolute_wrong_max_hinge",
        losses.absolute_wrong_max_hinge,
        analytic.absolute_wrong_max_hinge,
        dual=_derived("absolute_wrong_max_hinge"),
        constraint="sum_to_zero",
        kinks=_template_kinks("absolute", "wrong", "max"),
        paper="Doğan, Glasmachers & Igel, JMLR 2016 (ADM)",
    )
)
register(
    Loss(
        "true_class_hinge",
        losses.true_class_hinge,
        analytic.true_class_hinge,
        dual=_derived("true_class_hinge"),
        constraint="sum_to_zero",
        kinks=_template_kinks("absolute", "true", "sum"),
        paper="Szedmak, Shawe-Taylor & Parado-Hernandez, PASCAL 2006 (MMR)",
    )
)
register(
    Loss(
        "reinforced_hinge",
        losses.reinforced_hinge,
        analytic.reinforced_hinge,
        dual=_derived("reinforced_hinge"),
        constraint="sum_to_zero",
        kinks=_reinforced_kinks,
        options=("gamma",),
        paper="Liu & Yuan, JCGS 2011",
    )
)
register(
    Loss(
        "top_k_hinge",
        losses.top_k_hinge,
        analytic.top_k_hinge,
        dual=_derived("top_k_hinge"),
        kinks=_top_k_kinks,
        options=("k", "variant"),
        paper="Lapin, Hein & Schiele, NeurIPS 2015",
    )
)
register(
    Loss(
        "smooth_top_k",
        losses.smooth_top_k,
        analytic.smooth_top_k,
        dual=_derived("smooth_top_k"),
        options=("k", "tau"),
        paper="Berrada, Zisserman & Kumar, ICLR 2018",
    )
)

# svmjax's own entries, as registered above: what an exported program's key covers (its
# code is in svmjax's sources), unlike an entry a user registers or replaces later.
_BUILTIN: dict[str, Loss] = dict(_REGISTRY)


def builtin(name: str) -> bool:
    """Whether ``name`` is registered as svmjax itself registered it (not added or replaced
    since): the code of such an entry is svmjax's own."""
    return name in _BUILTIN and _REGISTRY.get(name) is _BUILTIN[name]
