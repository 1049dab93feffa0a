r"""Internal: the named members of the unified template, defined once from its table.

Each of Lee–Lin–Wahba, ATM, ADM, MMR and the reinforced hinge is one setting of the
template (:data:`MACHINES`). :func:`member` and :func:`reinforced_member` turn a setting
into a loss function over a given ``unified_hinge`` (pure or analytic), with its
signature, its docstring (formula, shapes, kink choice, example) and the module of that
``unified_hinge`` (:mod:`svmjax.losses` or :mod:`svmjax.analytic`), where the public names
are bound.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

# The named machines as settings of the template; the reinforced hinge adds its true-class
# margin and weights from ``gamma`` (:func:`reinforced`).
MACHINES: dict[str, dict[str, Any]] = {
    "lee_lin_wahba": dict(margins="absolute", classes="wrong", aggregate="sum"),
    "absolute_max_hinge": dict(margins="absolute", classes="all", aggregate="max"),
    "absolute_wrong_max_hinge": dict(margins="absolute", classes="wrong", aggregate="max"),
    "true_class_hinge": dict(margins="absolute", classes="true", aggregate="sum"),
    "reinforced_hinge": dict(margins="absolute", classes="all", aggregate="sum"),
}


def reinforced(scores, margin, gamma: float) -> dict[str, Any]:
    r"""The template's keywords for the reinforced hinge: true-class margin
    :math:`(C-1)\Delta`, weight ``gamma`` on the true-class term and ``1 - gamma`` on the
    others; ``ValueError`` unless ``gamma`` is a float in ``[0, 1]``."""
    gamma = float(gamma)
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be a Python float in [0, 1], got {gamma}")
    n_classes = jnp.shape(scores)[-1] if jnp.ndim(scores) else 0
    return dict(
        MACHINES["reinforced_hinge"],
        true_margin=(n_classes - 1) * jnp.asarray(margin, jnp.result_type(scores)),
        wrong_weight=1.0 - gamma,
        true_weight=gamma,
    )


class Member(Protocol):
    """A named member of the template, as :func:`member` builds it."""

    def __call__(
        self,
        scores: ArrayLike,
        labels: ArrayLike,
        *,
        margin: ArrayLike = 1.0,
        squared: bool = False,
        class_weights: ArrayLike | None = None,
    ) -> jax.Array: ...


class ReinforcedMember(Protocol):
    """The reinforced hinge, as :func:`reinforced_member` builds it."""

    def __call__(
        self,
        scores: ArrayLike,
        labels: ArrayLike,
        *,
        gamma: float = 0.5,
        margin: ArrayLike = 1.0,
        squared: bool = False,
        class_weights: ArrayLike | None = None,
    ) -> jax.Array: ...


def member(name: str, unified_hinge: Callable[..., jax.Array]) -> Member:
    """The member ``name`` of :data:`MACHINES` over ``unified_hinge``."""
    settings = MACHINES[name]

    def loss(scores, labels, *, margin=1.0, squared=False, class_weights=None):
        return unified_hinge(
            scores,
            labels,
            **settings,
            margin=margin,
            squared=squared,
            class_weights=class_weights,
        )

    return _named(loss, name, unified_hinge)


def reinforced_member(unified_hinge: Callable[..., jax.Array]) -> ReinforcedMember:
    """The reinforced hinge over ``unified_hinge``."""

    def loss(scores, labels, *, gamma=0.5, margin=1.0, squared=False, class_weights=None):
        return unified_hinge(
            scores,
            labels,
            margin=margin,
            squared=squared,
            class_weights=class_weights,
            **reinforced(scores, margin, gamma),
        )

    return _named(loss, "reinforced_hinge", unified_hinge)


def _named(loss: Any, name: str, unified_hinge: Callable[..., jax.Array]) -> Any:
    """``loss`` named ``name`` in the module of ``unified_hinge``, with its docstring."""
    loss.__name__ = loss.__qualname__ = name
    loss.__module__ = unified_hinge.__module__
    loss.__annotations__ = {
        "scores": "ArrayLike",
        "labels": "ArrayLike",
        **({"gamma": "float"} if name == "reinforced_hinge" else {}),
        "margin": "ArrayLike",
        "squared": "bool",
        "class_weights": "ArrayLike | None",
        "return": "jax.Array",
    }
    loss.__doc__ = _docstring(name, analytic=unified_hinge.__module__ == "svmjax.analytic")
    return loss


# ------------------------------------------------------------------------------ docstrings


class _Doc(NamedTuple):
    summary: str  # what the loss is, one line
    formula: str  # the loss
    about: str  # what it is meant for
    gradient: str  # the analytic rule
    scores: str  # the loss example's scores (label 0), and its value
    value: str
    grad_scores: str  # the gradient example's scores (label 0), and the gradient
    grad_value: str
    reference: str


_DOGAN = (
    'Ü. Doğan, T. Glasmachers and C. Igel, "A unified view on multi-class support vector '
    'classification", JMLR 17, 2016.'
)
_DOCS = {
    "lee_lin_wahba": _Doc(
        "Lee–Lin–Wahba multicategory SVM loss (absolute margins of the wrong classes)",
        r"L(s, y) = w_y \sum_{c \ne y} h(s_c + \Delta)",
        r"Meant for a model with the sum-to-zero constraint :math:`\sum_c w_c = 0`, "
        r":math:`\sum_c b_c = 0` (so :math:`\sum_c s_c = 0`). ``margin = 1/(C-1)`` is the "
        "2004 paper's scaling (targets :math:`-1/(C-1)` for the wrong classes); the default "
        "1 is Doğan et al.'s.",
        r"\frac{\partial L}{\partial s_c} = w_y h'(s_c + \Delta)\ (c \ne y), \qquad "
        r"\frac{\partial L}{\partial s_y} = 0",
        "[[1.0, -0.5, -0.5]]",
        "Array([1.], dtype=float32)",
        "[[1.0, -0.5, -1.5]]",
        "Array([[0., 1., 0.]], dtype=float32)",
        'Y. Lee, Y. Lin and G. Wahba, "Multicategory support vector machines", JASA 99, 2004.',
    ),
    "absolute_max_hinge": _Doc(
        "ATM loss: the largest hinge of the absolute margins of all classes",
        r"L(s, y) = w_y \max_c h(\Delta - t_c s_c), \qquad t_c = \pm 1\ (+1 \iff c = y)",
        'Doğan et al.\'s "absolute margins, total maximum" machine, meant for the '
        "sum-to-zero constraint.",
        r"\frac{\partial L}{\partial s} = -w_y\, t_{j^*} h'(\Delta - t_{j^*} s_{j^*})\, e_{j^*}",
        "[[0.5, -2.0, 0.0]]",
        "Array([1.], dtype=float32)",
        "[[0.5, -2.0, 0.0]]",
        "Array([[0., 0., 1.]], dtype=float32)",
        _DOGAN,
    ),
    "absolute_wrong_max_hinge": _Doc(
        "ADM loss: the largest hinge of the wrong classes' absolute margins",
        r"L(s, y) = w_y \max_{c \ne y} h(\Delta + s_c)",
        'Doğan et al.\'s "absolute margins, discriminative maximum" machine (the '
        "Lee–Lin–Wahba terms aggregated by max), meant for the sum-to-zero constraint.",
        r"\frac{\partial L}{\partial s} = w_y h'(\Delta + s_{j^*})\, e_{j^*}",
        "[[0.5, -2.0, 0.0]]",
        "Array([1.], dtype=float32)",
        "[[0.5, 0.0, 0.0]]",
        "Array([[0., 1., 0.]], dtype=float32)",
        _DOGAN,
    ),
    "true_class_hinge": _Doc(
        "MMR loss: the hinge of the true class's absolute margin only",
        r"L(s, y) = w_y\, h(\Delta - s_y)",
        "The multi-class maximum margin regression machine in Doğan et al.'s view, meant "
        "for the sum-to-zero constraint (without it, raising every score solves it).",
        r"\frac{\partial L}{\partial s} = -w_y h'(\Delta - s_y)\, e_y",
        "[[0.5, -2.0, 0.0]]",
        "Array([0.5], dtype=float32)",
        "[[0.5, -2.0, 0.0]]",
        "Array([[-1.,  0.,  0.]], dtype=float32)",
        'S. Szedmak, J. Shawe-Taylor and E. Parado-Hernandez, "Learning via linear '
        'operators: maximum margin regression", PASCAL 2006; Doğan et al., JMLR 2016.',
    ),
    "reinforced_hinge": _Doc(
        "Reinforced multicategory SVM loss of Liu & Yuan",
        r"L(s, y) = w_y \Big[\gamma\, h\big((C-1)\Delta - s_y\big)"
        r" + (1 - \gamma) \sum_{c \ne y} h(\Delta + s_c)\Big]",
        r"A convex combination of the true class's absolute margin (target "
        r":math:`(C-1)\Delta`) and the Lee–Lin–Wahba terms, meant for the sum-to-zero "
        "constraint (1/2, the paper's default ``gamma``, is Shark's fixed choice up to a "
        "factor 2).",
        r"\frac{\partial L}{\partial s_y} = -w_y \gamma\, h'\big((C-1)\Delta - s_y\big), "
        r"\qquad \frac{\partial L}{\partial s_c} = w_y (1-\gamma)\, h'(\Delta + s_c)\ "
        r"(c \ne y)",
        "[[0.5, -2.0, 0.0]]",
        "Array([1.25], dtype=float32)",
        "[[0.5, -2.0, 0.0]]",
        "Array([[-0.5,  0. ,  0.5]], dtype=float32)",
        'Y. Liu and M. Yuan, "Reinforced multicategory support vector machines", '
        "J. Comput. Graph. Statist. 20, 2011.",
    ),
}


def _docstring(name: str, *, analytic: bool) -> str:
    """The docstring of member ``name``: the pure one, or the ``analytic`` one."""
    doc, settings = _DOCS[name], MACHINES[name]
    is_max = settings["aggregate"] == "max"
    setting = ", ".join(f'{key}="{value}"' for key, value in settings.items())
    what = r"with :math:`h(v) = \max(0, v)` or :math:`\max(0, v)^2` (``squared``)"
    if analytic:
        summary = f"{doc.summary}, with its analytic gradient, per example."
        formula = f"{doc.formula}, \\qquad\n    {doc.gradient}"
        what += r" and :math:`h'(v) = 1(v > 0)` (strict: 0 at the kink) or :math:`2\max(0, v)`"
        what += ", :math:`j^*` the lowest index among the largest terms" if is_max else ""
        ties = " and splits the gradient among tied maxima" if is_max else ""
        returns = f"Per-example losses ``[...]``, equal to :func:`svmjax.losses.{name}` "
        returns += f"(whose autodiff gives 1/2 at a kink{ties})."
        gradient = ""
        example = [
            ">>> import jax, jax.numpy as jnp",
            f">>> jax.grad(lambda s: {name}(s, jnp.array([0])).sum())(",
            f"...     jnp.array({doc.grad_scores}))",
            doc.grad_value,
        ]
    else:
        summary = f"{doc.summary}, per example."
        formula = doc.formula
        returns = "Per-example losses ``[...]`` (not reduced)."
        gradient = "Gradient: ``jax.grad`` of this definition: 1/2 at a hinge kink "
        gradient += "(``jnp.maximum``'s convention), 0 there for the squared hinge"
        gradient += ", an even split among tied maxima (``jnp.max``)" if is_max else ""
        gradient += f". :func:`svmjax.analytic.{name}` gives 0 at the kink"
        gradient += " and the lowest-index maximiser." if is_max else "."
        example = [
            ">>> import jax.numpy as jnp",
            f">>> {name}(jnp.array({doc.scores}), jnp.array([0]))",
            doc.value,
        ]
    args = ["scores: float ``[..., C]``.", "labels: integer class indices ``[...]`` in ``[0, C)``."]
    if name == "reinforced_hinge":
        args.append(r"gamma: :math:`\gamma`, a Python float in ``[0, 1]`` (default 1/2).")
    args += [
        r"margin: :math:`\Delta`, a scalar (default 1).",
        "squared: use the squared hinge.",
        "class_weights: optional ``[C]``; :math:`w_y` above (1 when omitted).",
    ]
    about = f"{what}. {doc.about} The template :func:`unified_hinge` with ``{setting}``"
    about += ", true-class margin and weights from ``gamma``." if len(args) == 6 else "."
    paragraphs = [
        summary,
        f".. math::\n\n    {formula}",
        _fill(about),
        "Args:\n" + "\n".join(_fill(arg, "  ", "    ") for arg in args),
        "Returns:\n" + _fill(returns, "  "),
        _fill(gradient),
        "Example:\n" + "\n".join(f"  {line}" for line in example),
        _fill(f"Reference: {doc.reference}"),
    ]
    return "\n\n".join(p for p in paragraphs if p) + "\n"


def _fill(text: str, first: str = "", rest: str | None = None) -> str:
    """``text`` wrapped at 88 columns, its first line indented by ``first``, the others by
    ``rest`` (``first`` by default)."""
    return textwrap.fill(
        text,
        88,
        initial_indent=first,
        subsequent_indent=first if rest is None else rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
