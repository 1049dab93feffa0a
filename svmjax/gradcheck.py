r"""Gradient checking: finite differences, relative errors, and the agreement table.

Finite differences are only meaningful in float64 (in float32 the rounding error of a
centred difference, about :math:`10^{-7} |f| / \epsilon`, swamps the truncation error);
:func:`x64` is a scoped float64 context that restores the previous setting even when
the body raises.

Hinge losses are piecewise linear (or piecewise quadratic, squared), so away from kinks a
centred difference is exact up to rounding; near a kink it straddles two pieces and
disagrees with *every* subgradient. :func:`compare` therefore reports the share of margins
that sit within reach of a kink.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from svmjax import cache, linear, registry

__all__ = ["x64", "numerical_gradient", "sparse_check", "rel_error", "compare", "format_table"]


@contextlib.contextmanager
def x64() -> Iterator[None]:
    """Enable float64 inside a ``with`` block; the previous setting comes back on exit,
    even when the block raises.

    Example:
      >>> with x64():
      ...     jnp.ones(2, jnp.float64).dtype
      dtype('float64')
    """
    with jax.enable_x64(True):  # restores the previous setting on exit
        yield


def _centred_differences(f, flat: jax.Array, unravel, entries: jax.Array, eps: float):
    """(f(x + eps e_k) - f(x - eps e_k)) / (2 eps) for each k in ``entries``, in one compiled
    ``lax.map`` over the flattened ``x``."""

    def difference(k):
        step = jnp.zeros_like(flat).at[k].set(eps)
        return (f(unravel(flat + step)) - f(unravel(flat - step))) / (2 * eps)

    options = cache.compiler_options()
    return jax.jit(lambda: jax.lax.map(difference, entries), compiler_options=options)()


def numerical_gradient(f: Callable[[Any], jax.Array], x: Any, *, eps: float = 1e-5) -> Any:
    r"""Centred finite differences of a scalar function over every entry of ``x``.

    .. math:: \hat g_k = \frac{f(x + \epsilon e_k) - f(x - \epsilon e_k)}{2\epsilon}

    Args:
      f: a JAX-traceable function of ``x`` returning a scalar.
      x: an array or a pytree of arrays (e.g. ``{"W": ..., "b": ...}``).
      eps: the step :math:`\epsilon`. Use float64 inputs (see :func:`x64`).

    Returns:
      The estimated gradient, with the structure, shapes and dtype of ``x``. All
      ``2 * size(x)`` evaluations run in one compiled ``lax.map``.

    Example:
      >>> with x64():
      ...     g = numerical_gradient(lambda w: jnp.sum(w ** 3), jnp.array([1.0, 2.0]))
      >>> np.round(np.asarray(g), 6).tolist()
      [3.0, 12.0]
    """
    flat, unravel = ravel_pytree(x)
    return unravel(_centred_differences(f, flat, unravel, jnp.arange(flat.size), eps))


def rel_error(a: Any, b: Any) -> float:
    r"""Max-norm relative error between two arrays or pytrees of equal structure.

    .. math::

        \frac{\max_k |a_k - b_k|}{\max\big(10^{-12},\ \max_k |a_k| + \max_k |b_k|\big)}

    over all entries of all leaves. It is relative to the scale of the whole gradient,
    so an entry whose true value is exactly 0 (common: a bias gradient is an integer
    count over N) does not turn finite-difference rounding noise into an error of 1, as
    the entrywise ratio of cs231n's ``rel_error`` does. 0 means identical; 1 means
    unrelated (e.g. opposite signs).

    Example:
      >>> rel_error(jnp.array([1.0, 0.0]), jnp.array([1.0, 1e-3]))
      0.0005
    """
    a_flat, _ = ravel_pytree(a)
    b_flat, _ = ravel_pytree(b)
    a_flat, b_flat = np.asarray(a_flat, np.float64), np.asarray(b_flat, np.float64)
    if a_flat.shape != b_flat.shape:
        raise ValueError(f"rel_error: sizes differ, {a_flat.shape} vs {b_flat.shape}")
    if a_flat.size == 0:
        return 0.0
    scale = np.abs(a_flat).max() + np.abs(b_flat).max()
    return float(np.abs(a_flat - b_flat).max() / max(1e-12, scale))


def sparse_check(
    f: Callable[[Any], jax.Array],
    x: Any,
    grad: Any,
    *,
    key: jax.Array,
    num_checks: int = 10,
    eps: float = 1e-5,
) -> np.ndarray:
    r"""Compare ``grad`` with centred differences at ``num_checks`` random entries of ``x``.

    The cs231n ``grad_check_sparse`` idea: cheap enough for big parameters.

    Args:
      f: scalar function of ``x``. x: array or pytree. grad: the gradient to check (same
      structure as ``x``). key: ``jax.random`` key choosing the entries (with
      replacement). num_checks: how many entries. eps: the finite-difference step.

    Returns:
      float64 NumPy array ``[num_checks]`` of entrywise relative errors
      :math:`|\hat g_k - g_k| / \max(10^{-12}, |\hat g_k| + |g_k|)` (cs231n's measure; an
      entry whose true value is 0 shows rounding noise as a large ratio).

    Example:
      >>> with x64():
      ...     w = jnp.array([1.0, 2.0, 3.0])
      ...     errs = sparse_check(lambda w: jnp.sum(w**2), w, 2 * w, key=jax.random.key(0))
      >>> bool(errs.max() < 1e-9)
      True
    """
    flat, unravel = ravel_pytree(x)
    g_flat, _ = ravel_pytree(grad)
    if g_flat.shape != flat.shape:
        raise ValueError(f"grad has {g_flat.size} entries but x has {flat.size}")
    picks = jax.random.randint(key, (num_checks,), 0, flat.size)

    approx = np.asarray(_centred_differences(f, flat, unravel, picks, eps), np.float64)
    exact = np.asarray(g_flat[picks], np.float64)
    return np.abs(approx - exact) / np.maximum(1e-12, np.abs(approx) + np.abs(exact))


def compare(
    loss: str = "weston_watkins",
    *,
    n: int,
    d: int,
    c: int,
    key: jax.Array,
    dtype: Any = jnp.float64,
    squared: bool = False,
    margin: float = 1.0,
    reg: float = 1e-2,
    eps: float = 1e-5,
    loss_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Largest relative errors between the analytic, autodiff and numeric gradients.

    Draws a random linear problem (``X ~ N(0, 1)`` ``[n, d]``, labels uniform in
    ``[0, c)``, ``W ~ N(0, 1/d)`` ``[d, c]``, ``b ~ N(0, 0.01)``) from ``key`` and takes
    the gradient of :func:`svmjax.linear.objective` three ways: ``grad="analytic"`` and
    ``grad="autodiff"`` in ``dtype``, and centred differences always in float64 (on the
    same problem), so a float32 row measures the float32 gradients against an accurate
    reference. Everything runs inside :func:`x64`, which restores the previous setting,
    and at ``jax.default_matmul_precision("highest")``: a GPU's default float32 product is
    TF32 (a TPU's bfloat16), whose ~1e-3 rounding would hide what the check is about, the
    gradient rules.

    Args:
      loss: a registered loss name (:func:`svmjax.registry.names`).
      n, d, c: examples, features, classes.
      key: ``jax.random`` key for the problem.
      dtype: ``jnp.float32`` or ``jnp.float64`` for the analytic and autodiff gradients.
      squared, margin, reg: objective options.
      eps: finite-difference step.
      loss_options: the loss's extra keyword hyperparameters (e.g. ``{"k": 2}``).

    Returns:
      A dict with ``loss``, ``squared``, ``dtype``, ``eps``, ``analytic_vs_autodiff``,
      ``analytic_vs_numeric``, ``autodiff_vs_numeric`` (max-norm relative errors,
      :func:`rel_error`, over ``W`` and ``b`` together), ``closed_form_vs_analytic``
      (``dW`` of :func:`svmjax.linear.weston_watkins_closed_form`, plain Weston–Watkins
      only, else ``None``) and ``kink_share``: the share of hinge arguments (and
      Crammer–Singer ties) within ``eps * (1 + max|X|)`` of a kink, i.e. close enough for
      one finite-difference step to cross it.

    Example:
      >>> row = compare("weston_watkins", n=50, d=5, c=3, key=jax.random.key(0))
      >>> row["analytic_vs_numeric"] < 1e-7
      True
    """
    entry = registry.get(loss)
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.float32, jnp.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    options: dict[str, Any] = dict(loss=loss, reg=reg, margin=margin, squared=squared)
    options["loss_options"] = loss_options
    with x64(), jax.default_matmul_precision("highest"):
        X64, y, params64 = _random_problem(key, n=n, d=d, c=c)
        g_numeric = numerical_gradient(
            lambda p: linear.objective(p, X64, y, grad="autodiff", **options), params64, eps=eps
        )
        reach = eps * (1 + float(np.abs(np.asarray(X64)).max()))
        distances = None
        if entry.kinks is not None:
            distances = entry.kinks(
                linear.scores(params64, X64), y, margin, **dict(loss_options or {})
            )

        X, params = X64.astype(dtype), jax.tree.map(lambda a: a.astype(dtype), params64)
        closed_form = loss == "weston_watkins" and not squared

        def gradients(params, X, y):
            def grad(p, how):
                return jax.grad(linear.objective)(p, X, y, grad=how, **options)

            out = {"analytic": grad(params, "analytic"), "autodiff": grad(params, "autodiff")}
            if closed_form:
                W = params["W"]
                out["closed"] = linear.weston_watkins_closed_form(W, X, y, reg=reg, margin=margin)
                out["no_bias"] = grad({"W": W, "b": jnp.zeros_like(params["b"])}, "analytic")
            return out

        # One compiled program for all of them: op by op, the losses' internal loops are
        # traced and compiled again at every call, most of a table's time.
        g = jax.jit(gradients, compiler_options=cache.compiler_options())(params, X, y)
        for how in ("analytic", "autodiff"):
            got = g[how]["W"].dtype
            assert got == dtype, f"{how} gradient came back in {got}, not {dtype}"
        g_analytic, g_autodiff = g["analytic"], g["autodiff"]
        closed = rel_error(g["closed"][1], g["no_bias"]["W"]) if closed_form else None
        return {
            "loss": loss,
            "squared": squared,
            "dtype": dtype.name,
            "eps": eps,
            "analytic_vs_autodiff": rel_error(g_analytic, g_autodiff),
            "analytic_vs_numeric": rel_error(g_analytic, g_numeric),
            "autodiff_vs_numeric": rel_error(g_autodiff, g_numeric),
            "closed_form_vs_analytic": closed,
            "kink_share": None if distances is None else float(jnp.mean(distances < reach)),
        }


@functools.partial(jax.jit, static_argnames=("n", "d", "c"))
def _random_problem(
    key: jax.Array, *, n: int, d: int, c: int
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """:func:`compare`'s problem in float64 (call inside :func:`x64`): ``X [n, d]``,
    labels ``[n]`` and ``{"W": [d, c], "b": [c]}``; jitted, so that a table's rows
    compile it once (drawn op by op, ``W`` and ``b`` can differ in the last bit: XLA
    fuses the scaling differently)."""
    kx, ky, kw, kb = jax.random.split(key, 4)
    params = {
        "W": jax.random.normal(kw, (d, c), jnp.float64) / np.sqrt(d),
        "b": 0.1 * jax.random.normal(kb, (c,), jnp.float64),
    }
    return jax.random.normal(kx, (n, d), jnp.float64), jax.random.randint(ky, (n,), 0, c), params


def format_table(rows: list[dict[str, Any]]) -> str:
    """Render :func:`compare` rows as a fixed-width text table."""
    columns = [
        ("loss", "{}"),
        ("squared", "{}"),
        ("dtype", "{}"),
        ("analytic_vs_autodiff", "{:.1e}"),
        ("analytic_vs_numeric", "{:.1e}"),
        ("autodiff_vs_numeric", "{:.1e}"),
        ("closed_form_vs_analytic", "{:.1e}"),
        ("kink_share", "{:.3f}"),
    ]
    header = [
        "loss",
        "squared",
        "dtype",
        "analytic~autodiff",
        "analytic~numeric",
        "autodiff~numeric",
        "closed~analytic",
        "near kink",
    ]
    cells = [
        ["-" if row[name] is None else fmt.format(row[name]) for name, fmt in columns]
        for row in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
