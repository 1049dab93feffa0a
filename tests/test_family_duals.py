"""The duals of every built-in machine (svmjax.family_duals), against independent references.

For each machine and a few option settings, in float64, on small random problems: the
Dual's hinge is the pure loss; its smoothing lies above the loss within the bound the docs
page states; its dual variables, mapped, are the smoothed loss's gradient; ``scale`` gives a
point of the conjugate's domain (written here from the derivations, not from the module);
random feasible dual points are below the optimum; and on tiny problems a dual point built
from a smoothed solve certifies a small gap against a generic convex solver (cvxpy with
Clarabel) given the primal alone, with slack variables and top-k in its LP form.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from svmjax import family_duals, registry
from svmjax.gradcheck import x64

cp = pytest.importorskip("cvxpy")

N_CLASSES, N_EXAMPLES = 4, 30
MARGIN = 1.0

UNIFIED = [
    dict(margins="relative", classes="wrong", aggregate="sum", wrong_weight=0.6),
    dict(margins="relative", classes="wrong", aggregate="max", wrong_weight=1.5),
    dict(margins="relative", classes="all", aggregate="sum", true_margin=0.5, true_weight=2.0),
    dict(margins="relative", classes="all", aggregate="max", true_margin=0.4, wrong_weight=0.7),
    dict(margins="absolute", classes="wrong", aggregate="sum", wrong_weight=2.0),
    dict(margins="absolute", classes="wrong", aggregate="max"),
    dict(margins="absolute", classes="true", aggregate="sum", true_margin=1.5),
    dict(margins="absolute", classes="true", aggregate="max", true_weight=0.5),
    dict(margins="absolute", classes="all", aggregate="sum", true_margin=-0.5, wrong_weight=0.3),
    dict(margins="absolute", classes="all", aggregate="max", true_margin=2.0, true_weight=0.0),
]
CASES = [
    ("weston_watkins", {}),
    ("crammer_singer", {}),
    ("one_vs_rest", {}),
    ("lee_lin_wahba", {}),
    ("absolute_sum_hinge", {}),
    ("absolute_max_hinge", {}),
    ("absolute_wrong_max_hinge", {}),
    ("true_class_hinge", {}),
    ("reinforced_hinge", {"gamma": 0.5}),
    ("reinforced_hinge", {"gamma": 0.2}),
    *[("unified_hinge", options) for options in UNIFIED],
    ("top_k_hinge", {"k": 1}),
    ("top_k_hinge", {"k": 2}),
    ("top_k_hinge", {"k": 3}),
    ("top_k_hinge", {"k": 4}),
    ("top_k_hinge", {"k": 1, "variant": "beta"}),
    ("top_k_hinge", {"k": 2, "variant": "beta"}),
    ("top_k_hinge", {"k": 3, "variant": "beta"}),
    ("top_k_hinge", {"k": 4, "variant": "beta"}),
    ("smooth_top_k", {"k": 1, "tau": 0.5}),
]
SQUARED = [(name, options, sq) for name, options in CASES for sq in (False, True)]
SQUARED = [case for case in SQUARED if not (case[0] == "smooth_top_k" and case[2])]


def case_id(case):
    name, options, *rest = case
    parts = [name] + [f"{k}={v}" for k, v in options.items()] + (["sq"] if rest and rest[0] else [])
    return ",".join(parts)


# ------------------------------------------------------------------ the machines, independently


class Machine(NamedTuple):
    """A machine as the docs define it: ``kind`` is ``template`` (margins ``relative``,
    terms of the wrong classes weighted ``wrong``, of the true class ``true`` (0: none),
    aggregate ``agg``, true-class margin ``nu_y``), ``alpha``/``beta`` (top-k, ``k``) or
    ``smooth1`` (smooth top-k at k = 1, ``tau``)."""

    kind: str
    relative: bool = True
    agg: str = "sum"
    wrong: float = 1.0
    true: float = 0.0
    nu_y: float = 0.0
    k: int = 1
    tau: float = 1.0
    sum_to_zero: bool = False


def machine(name: str, options: dict, n_classes: int = N_CLASSES) -> Machine:
    stz = registry.get(name).constraint == "sum_to_zero"
    table = {
        "weston_watkins": Machine("template"),
        "crammer_singer": Machine("template", agg="max"),
        "one_vs_rest": Machine("template", relative=False, true=1.0, nu_y=MARGIN),
        "lee_lin_wahba": Machine("template", relative=False),
        "absolute_sum_hinge": Machine("template", relative=False, true=1.0, nu_y=MARGIN),
        "absolute_max_hinge": Machine("template", relative=False, agg="max", true=1.0, nu_y=MARGIN),
        "absolute_wrong_max_hinge": Machine("template", relative=False, agg="max"),
        "true_class_hinge": Machine("template", relative=False, wrong=0.0, true=1.0, nu_y=MARGIN),
    }
    if name in table:
        return table[name]._replace(sum_to_zero=stz)
    if name == "reinforced_hinge":
        gamma = options["gamma"]
        nu_y = (n_classes - 1) * MARGIN
        return Machine("template", False, "sum", 1 - gamma, gamma, nu_y, sum_to_zero=stz)
    if name == "top_k_hinge":
        return Machine(options.get("variant", "alpha"), k=options["k"])
    if name == "smooth_top_k":
        return Machine("smooth1", tau=options["tau"])
    relative = options["margins"] == "relative"
    classes = options["classes"]
    nu_y = options.get("true_margin", 0.0 if relative else MARGIN)
    wrong = options.get("wrong_weight", 1.0) if classes != "true" else 0.0
    true = options.get("true_weight", 1.0) if classes != "wrong" else 0.0
    return Machine("template", relative, options["aggregate"], wrong, true, nu_y)


def weights(m: Machine, is_true):
    """The term weights ``[C, N]`` (0: no term)."""
    return np.where(is_true, m.true, m.wrong)


def in_domain(m: Machine, a, is_true, squared, tol=1e-9) -> bool:
    """Whether every example's ``a`` ``[C, N]`` lies in the conjugate's domain (the
    docs' feasible sets, in the parametrisation by the loss's derivative over the term
    weights)."""
    a = np.asarray(a)
    if np.any(a < -tol):
        return False
    total = a.sum(axis=0)
    if m.kind == "template":
        if np.any(np.abs(a[weights(m, is_true) == 0]) > tol):
            return False
        if squared:
            return True
        return bool(np.all(a <= 1 + tol) if m.agg == "sum" else np.all(total <= 1 + tol))
    if m.kind == "alpha":
        return bool(np.all(a <= total / m.k + tol) and (squared or np.all(total <= 1 + tol)))
    if np.any(np.abs(a[is_true]) > tol):  # beta, smooth top-1: no true-class variable
        return False
    if m.kind == "beta":
        return squared or bool(np.all(a <= 1 / m.k + tol) and np.all(total <= 1 + tol))
    return bool(np.all(total <= 1 + tol))


def random_feasible(m: Machine, is_true, squared, rng):
    """A random point of the domain (on its boundary for some examples)."""
    shape = is_true.shape
    if m.kind == "template":
        a = rng.uniform(0, 1, shape) * (weights(m, is_true) > 0)
        if m.agg == "max":
            a /= np.maximum(a.sum(axis=0), 1e-300) * rng.uniform(1, 1.5, shape[1])
    elif m.kind == "alpha":  # s q, q in the capped simplex {0 <= q <= 1/k, sum q = 1}
        r = rng.uniform(0.05, 1, shape)
        lo, hi = np.zeros(shape[1]), np.full(shape[1], 1e3)
        for _ in range(100):  # bisection on theta: sum_j min(theta r_j, 1/k) = 1
            theta = (lo + hi) / 2
            big = np.minimum(theta * r, 1 / m.k).sum(axis=0) > 1
            lo, hi = np.where(big, lo, theta), np.where(big, theta, hi)
        q = np.minimum(hi * r, 1 / m.k)
        a = q / q.sum(axis=0) * rng.uniform(0, 1, shape[1])
    elif m.kind == "beta":
        a = np.where(is_true, 0, rng.uniform(0, 1 / m.k, shape))
        a /= np.maximum(1, a.sum(axis=0))
    else:
        a = np.where(is_true, 0, rng.uniform(0, 1, shape))
        a /= a.sum(axis=0) * rng.uniform(1, 1.3, shape[1])
    if squared and m.kind != "smooth1":
        a = a * 3
    return a


def smoothing_bound(m: Machine, is_true, mu, loss, squared):
    """How far the smoothing at ``mu`` may lie above the loss, per example (docs page)."""
    n_wrong = (weights(m, is_true) > 0)[~is_true].reshape(-1, is_true.shape[1]).sum(axis=0)
    if m.kind == "template":
        if m.agg == "sum":
            if squared:
                return 0.0
            varies = weights(m, is_true) * (~is_true if m.relative else 1)
            return mu * math.log(2) * varies.sum(axis=0)
        delta = mu * np.log1p((weights(m, is_true) > 0).sum(axis=0))
    elif m.kind == "alpha":
        delta = mu * math.log(math.comb(is_true.shape[0], m.k))
        if not squared:
            return delta + mu * math.log(2)
    elif m.kind == "beta":
        size = min(m.k, is_true.shape[0] - 1)
        delta = mu * math.log(math.comb(is_true.shape[0] - 1, size))
        return delta + (0 if squared else size / m.k * mu * math.log(2))
    else:
        return 0.0 * n_wrong
    if squared:
        return 2 * np.sqrt(loss) * delta + delta**2
    return delta


# --------------------------------------------------------------------------------- problems


def scores_problem(seed, n_classes=N_CLASSES, n=N_EXAMPLES):
    """Scores ``[C, N]`` (the solver's layout), labels, their one-hot ``[C, N]`` and
    per-example weights with two padding rows (weight 0)."""
    rng = np.random.default_rng(seed)
    z = 1.5 * rng.standard_normal((n_classes, n))
    y = rng.integers(0, n_classes, n)
    c = rng.uniform(0.2, 2.0, n)
    c[:2] = 0.0
    return z, y, np.eye(n_classes, dtype=bool)[y].T, c


def tiny_problem(seed, n=40, d=5, weighted=False):
    """``X`` ``[n, d]`` of four separated but overlapping classes, labels, weights ``c``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    X = rng.standard_normal((n, d)) + 0.8 * rng.standard_normal((N_CLASSES, d))[y]
    c = rng.uniform(0.2, 2.0, n) if weighted else np.ones(n)
    return X, y, c


def primal(name, options, X, y, c, W, b, squared):
    """The primal objective, from svmjax.losses' definition (``W`` ``[D, C]``)."""
    with x64():
        pure = registry.get(name).pure
        scores = jnp.asarray(X @ W + b)
        loss = pure(scores, jnp.asarray(y), margin=MARGIN, squared=squared, **options)
        return 0.5 * float(np.sum(W * W)) + float(np.sum(c * np.asarray(loss)))


def dual_parts(dual, m: Machine, a, is_true, c, X, squared):
    """``(lin, |P uX|^2, rest)`` of the dual point ``a``: ``D(t a) = t lin - t^2 |P
    uX|^2 / 2 - rest(t a)`` (``P`` centres the classes under the sum-to-zero constraint;
    ``rest`` is quadratic for squared hinges)."""
    with x64():
        aj, tj, cj = jnp.asarray(a), jnp.asarray(is_true), jnp.asarray(c)
        uX = np.asarray(dual.dual_map(aj, tj, cj)) @ X
        if m.sum_to_zero:
            uX = uX - uX.mean(axis=0, keepdims=True)
        if dual.linear is None:  # the three duals of svmjax.duals: margin * sum(c a)
            lin = MARGIN * float(np.sum(c * np.asarray(a)))
        else:
            lin = float(dual.linear(aj, tj, cj, MARGIN))
        if dual.conjugate is not None:
            rest = float(dual.conjugate(aj, tj, cj, squared))
        elif squared:  # their squared conjugates: sum a^2 / 4, Crammer-Singer (sum a)^2 / 4
            a = np.asarray(a)
            per = (a * a).sum(0) if m.agg == "sum" else a.sum(0) ** 2
            rest = float(np.sum(c * per) / 4)
        else:
            rest = 0.0
    return lin, float(np.sum(uX * uX)), rest


def certified(dual, m: Machine, a, is_true, c, X, squared) -> float:
    """The best dual value over the feasible multiples ``t a`` (``t <= scale`` for hinges,
    any ``t >= 0`` for squared hinges, ``t = 1`` for smooth top-k)."""
    lin, uu, rest = dual_parts(dual, m, a, is_true, c, X, squared)
    if m.kind == "smooth1":
        return lin - uu / 2 - rest
    if squared:
        t = max(lin, 0) / max(uu + 2 * rest, 1e-300)
        return t * lin - t * t * (uu / 2 + rest)
    with x64():
        largest = float(dual.scale(jnp.asarray(a), jnp.asarray(c)))
    t = min(max(lin, 0) / max(uu, 1e-300), largest)
    return t * lin - t * t * uu / 2


# ---------------------------------------------------------- (a)-(d), the repair, the curvature

MUS = (0.3, 1e-2, 1e-5)  # the curvature is checked at the first


def evaluate(dual, squared, z, is_true, c):
    """Everything the property tests look at, in one compiled program (one per machine):
    the hinge; at each of ``MUS`` the smoothed values, their dual variables, those mapped,
    the gradient of ``sum_i c_i L_mu(z_i)`` (autodiff) and the largest feasible multiple;
    the repair of the first; the curvature in the intercept and the Hessian it stands for
    (central differences of the gradient in the intercept, ``sum_i u_i``)."""

    @jax.jit
    def run(z, is_true, c, mus):
        def at(mu):
            (values, a), pull = jax.vjp(lambda z: dual.smooth(z, is_true, MARGIN, mu, squared), z)
            (grad,) = pull((c, jnp.zeros_like(a)))
            return values, a, dual.dual_map(a, is_true, c), grad, dual.scale(a, c)

        per_mu = jax.vmap(at)(mus)
        values, a = per_mu[0][0], per_mu[1][0]
        fixed, ok = dual.repair(a, is_true, c)

        def gradient_in_b(b):
            _, a = dual.smooth(z + b[:, None], is_true, MARGIN, mus[0], squared)
            return jnp.sum(dual.dual_map(a, is_true, c), axis=1)

        n_classes = z.shape[0]
        steps = 1e-5 * jnp.eye(n_classes, dtype=z.dtype)
        moved = jax.vmap(gradient_in_b)(jnp.concatenate([steps, -steps]))
        exact = (moved[:n_classes] - moved[n_classes:]).T / 2e-5
        times = dual.curvature(a, c * values, is_true, c, mus[0], squared)
        H = jax.vmap(times, in_axes=1, out_axes=1)(jnp.eye(n_classes, dtype=z.dtype))
        repaired = (fixed, ok, dual.dual_map(fixed, is_true, c))
        return dual.hinge(z, is_true, MARGIN, squared), per_mu, repaired, (H, exact)

    out = run(jnp.asarray(z), jnp.asarray(is_true), jnp.asarray(c), jnp.asarray(MUS))
    return jax.tree.map(np.asarray, out)


def check_properties(name, options, squared, seed=1):
    m = machine(name, options)
    z, y, is_true, c = scores_problem(seed)
    with x64():
        dual = family_duals.dual_for(name, options, N_CLASSES)
        pure = registry.get(name).pure(
            z.T, jnp.asarray(y), margin=MARGIN, squared=squared, **options
        )
        loss, per_mu, (fixed, ok, u_fixed), (H, exact) = evaluate(dual, squared, z, is_true, c)
    # (a) the loss itself
    np.testing.assert_allclose(loss, pure, rtol=1e-12, atol=1e-12)
    for mu, values, a, u, grad, t in zip(MUS, *per_mu, strict=True):
        # (b) an upper bound of the loss, within the stated bound
        bound = smoothing_bound(m, is_true, mu, loss, squared)
        excess = values - loss
        assert np.all(excess >= -1e-12), (mu, excess.min())
        assert np.all(excess <= bound + 1e-12), (mu, (excess - bound).max())
        # (c) the dual variables, mapped (u = c G(a)), are the gradient
        np.testing.assert_allclose(u, grad, atol=1e-10 * (1 + np.abs(grad).max()))
        # (d) a, and for hinges its largest multiple, lies in the conjugate's domain
        assert in_domain(m, a, is_true, squared)
        if not squared:
            assert t >= 1 - 1e-9
            assert in_domain(m, t * a * (c > 0), is_true, False)
            if m.kind != "smooth1":  # the largest: a little more leaves the domain
                assert not in_domain(m, 1.001 * t * a * (c > 0), is_true, False, tol=0)
    # The repair: still in the domain, only scaled down, and sum_i u_i = 0 (or, under the
    # sum-to-zero constraint, has equal entries).
    a = per_mu[1][0]
    assert bool(ok)
    assert in_domain(m, fixed, is_true, squared)
    assert np.all(fixed <= a + 1e-12)
    total = u_fixed.sum(axis=1)
    if m.sum_to_zero:
        total = total - total.mean()
    np.testing.assert_allclose(total, 0, atol=1e-10 * np.abs(per_mu[2][0]).sum())
    # The curvature in the intercept: symmetric, positive semi-definite, and the Hessian
    # (top-k: an approximation, within a factor 2 for alpha).
    scale = np.abs(exact).max()
    np.testing.assert_allclose(H, H.T, atol=1e-12 * scale)
    assert np.linalg.eigvalsh(H).min() >= -1e-10 * scale
    if m.kind in ("template", "smooth1"):
        np.testing.assert_allclose(H, exact, atol=1e-7 * scale)
    elif m.kind == "alpha":  # the subsets' covariance by its diagonal: exact <= 2 H
        assert np.linalg.eigvalsh(2 * H - exact).min() >= -1e-7 * scale


# -------------------------------------------------------------------- cvxpy: the primal alone


def cvxpy_optimum(name, options, X, y, c, fit_intercept, squared):
    """``min 1/2 |W|^2 + sum_i c_i L(x_i W + b, y_i)`` written from the primal definition
    with slack variables (top-k sums in their LP form), solved by Clarabel; returns the
    optimal value and ``W`` ``[D, C]``, ``b``."""
    m = machine(name, options)
    n, d = X.shape
    k_classes = N_CLASSES
    W = cp.Variable((d, k_classes))
    b = cp.Variable(k_classes) if fit_intercept else np.zeros(k_classes)
    S = X @ W + (cp.reshape(b, (1, k_classes), order="C") if fit_intercept else 0)
    onehot = np.eye(k_classes)[y]
    true_score = cp.reshape(cp.sum(cp.multiply(S, onehot), axis=1), (n, 1), order="C")
    constraints = []
    if m.sum_to_zero:
        constraints.append(cp.sum(W, axis=1) == 0)
        if fit_intercept:
            constraints.append(cp.sum(b) == 0)

    def power(s):
        return cp.square(s) if squared else s

    if m.kind == "template":
        if m.relative:
            v = S - true_score @ np.ones((1, k_classes)) + MARGIN * (1 - onehot) + m.nu_y * onehot
        else:
            signs = np.where(onehot, -1.0, 1.0)
            v = cp.multiply(signs, S) + MARGIN * (1 - onehot) + m.nu_y * onehot
        w = np.where(onehot, m.true, m.wrong)
        rows, cols = np.nonzero(w > 0)  # the terms, one slack variable each
        if m.agg == "sum":  # slack s_j >= max(0, v_j): the loss is sum_j w_j s_j (or s_j^2)
            s = cp.Variable(len(rows), nonneg=True)
            constraints.append(s >= v[rows, cols])
            terms_of = np.zeros((n, len(rows)))
            terms_of[rows, np.arange(len(rows))] = w[rows, cols]
            loss = terms_of @ power(s)
        else:  # slack t_i >= 0, t_i >= e_c v_ic: the loss is t_i (or t_i^2)
            t = cp.Variable(n, nonneg=True)
            e = np.sqrt(w) if squared else w
            constraints.append(t[rows] >= cp.multiply(e[rows, cols], v[rows, cols]))
            loss = power(t)
    elif m.kind in ("alpha", "beta"):
        v = S - true_score @ np.ones((1, k_classes)) + MARGIN * (1 - onehot)  # v_y = 0
        if m.kind == "alpha":
            x = v
        else:  # slack r >= max(0, v), x = r (or r^2)
            r = cp.Variable((n, k_classes), nonneg=True)
            constraints.append(r >= v)
            x = power(r)
        tau = cp.Variable(n)  # sum of the k largest of x_i = min_tau k tau + sum_j (x_ij - tau)_+
        xi = cp.Variable((n, k_classes), nonneg=True)
        constraints.append(xi >= x - cp.reshape(tau, (n, 1), order="C") @ np.ones((1, k_classes)))
        top_mean = (m.k * tau + cp.sum(xi, axis=1)) / m.k
        if m.kind == "alpha":
            t = cp.Variable(n, nonneg=True)
            constraints.append(t >= top_mean)
            loss = power(t)
        else:
            loss = top_mean
    else:  # tau log(1 + sum_{j != y} exp(v_j / tau)): the wrong classes gathered by position
        columns = [np.zeros((n, 1))]
        for j in range(k_classes - 1):
            pick = np.eye(k_classes)[np.where(np.arange(n) >= 0, (y + 1 + j) % k_classes, 0)]
            v_j = cp.sum(cp.multiply(S, pick), axis=1, keepdims=True) - true_score + MARGIN
            columns.append(v_j / m.tau)
        loss = m.tau * cp.log_sum_exp(cp.hstack(columns), axis=1)
    objective = 0.5 * cp.sum_squares(W) + cp.sum(cp.multiply(c, loss))
    problem = cp.Problem(cp.Minimize(objective), constraints)
    for tol in (1e-10, 1e-9, 1e-8):  # the tightest tolerances it reaches
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "solution may be inaccurate": the next one
            try:
                problem.solve(solver=cp.CLARABEL, tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol)
            except cp.error.SolverError:
                continue
        if problem.status == cp.OPTIMAL:
            break
    assert problem.status == cp.OPTIMAL, problem.status
    return problem.value, W.value, (b.value if fit_intercept else np.zeros(k_classes))


@functools.cache
def _smoothed_objective(dual, sum_to_zero, fit_intercept, squared):
    """The smoothed primal and its gradient from the dual's own pieces (``V + u X``, ``sum_i
    u_i``; the properties above check them against autodiff), and its dual variables."""

    def centred(v):
        return v - jnp.mean(v, axis=0, keepdims=True) if sum_to_zero else v

    @jax.jit
    def f(x, mu, X, is_true, c):
        n_classes, d = is_true.shape[0], X.shape[1]
        V = centred(x[: n_classes * d].reshape(n_classes, d))
        b = centred(x[n_classes * d :]) if fit_intercept else jnp.zeros(n_classes, x.dtype)
        values, a = dual.smooth(V @ X.T + b[:, None], is_true, MARGIN, mu, squared)
        u = dual.dual_map(a, is_true, c)
        g_b = centred(jnp.sum(u, axis=1)) if fit_intercept else jnp.zeros(n_classes, x.dtype)
        grad = jnp.concatenate([centred(V + u @ X).ravel(), g_b])
        return 0.5 * jnp.sum(V * V) + jnp.sum(c * values), grad, a

    return f


MUS_SOLVE = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def smoothed_dual_point(
    dual, m: Machine, X, y, c, fit_intercept, squared, mus=MUS_SOLVE, iters=3000
):
    """Minimise the smoothed primal with scipy's L-BFGS-B along a continuation in ``mu``;
    the weights ``V`` ``[C, D]``, ``b`` there and the smoothing's dual variables
    (repaired for the intercept)."""
    d = X.shape[1]
    is_true = np.eye(N_CLASSES, dtype=bool)[y].T
    f = _smoothed_objective(dual, m.sum_to_zero, fit_intercept, squared)
    data = (jnp.asarray(X), jnp.asarray(is_true), jnp.asarray(c))
    x = np.zeros(N_CLASSES * (d + 1))
    if not dual.smoothed(squared):
        mus = mus[-1:]
    for mu in mus:

        def fun(x, mu=mu):
            value, grad, _ = f(jnp.asarray(x), mu, *data)
            return float(value), np.asarray(grad)

        options = dict(maxiter=iters, maxcor=30, gtol=1e-12, ftol=1e-16)
        x = scipy.optimize.minimize(fun, x, jac=True, method="L-BFGS-B", options=options).x
    with x64():
        a = f(jnp.asarray(x), mus[-1], *data)[2]
        if fit_intercept:
            a, ok = dual.repair(a, data[1], data[2])
            assert bool(ok)
    V = x[: N_CLASSES * d].reshape(N_CLASSES, d)
    b = x[N_CLASSES * d :] if fit_intercept else np.zeros(N_CLASSES)
    if m.sum_to_zero:
        V, b = V - V.mean(axis=0), b - b.mean()
    return V, b, np.asarray(a), is_true


def has_intercept_optimum(name, options) -> bool:
    """Absolute margins of only the wrong (or only the true) class without the sum-to-zero
    constraint: an intercept drives every loss to 0, and no optimum is attained."""
    m = machine(name, options)
    return m.kind != "template" or m.relative or m.sum_to_zero or (m.wrong > 0 and m.true > 0)


# -------------------------------------------------------------- (f) strong duality, and bounds

STRONG = [
    (name, options, squared, fit_intercept, weighted)
    for (name, options, squared) in SQUARED
    for fit_intercept in (False, True)
    for weighted in (False, True)
    if not fit_intercept or has_intercept_optimum(name, options)
]


def strong_id(case):
    return case_id(case[:3]) + f",b={int(case[3])},w={int(case[4])}"


def check_strong_duality(case, seed=0):
    name, options, squared, fit_intercept, weighted = case
    m = machine(name, options)
    X, y, c = tiny_problem(seed, weighted=weighted)
    optimum, W_cvx, b_cvx = cvxpy_optimum(name, options, X, y, c, fit_intercept, squared)
    # cvxpy's model is the loss: its optimum is the primal at its solution
    at_cvx = primal(name, options, X, y, c, W_cvx, b_cvx, squared)
    assert abs(at_cvx - optimum) <= 1e-6 * (1 + abs(optimum))
    with x64():
        dual = family_duals.dual_for(name, options, N_CLASSES)
        V, b, a, is_true = smoothed_dual_point(dual, m, X, y, c, fit_intercept, squared)
    value = certified(dual, m, a, is_true, c, X, squared)
    upper = primal(name, options, X, y, c, V.T, b, squared)
    slack = 1e-7 * (1 + abs(optimum))
    assert value <= optimum + slack, (value, optimum)  # the certificate is a true bound
    assert optimum <= upper + slack, (optimum, upper)
    assert optimum - value <= 1e-4 * abs(optimum), (optimum, value, upper)


def check_bound(seed):
    """A random problem and machine (fixed shapes): every dual point built here (the
    smoothing's variables at a random point and after a few iterations, random feasible
    points; repaired for an intercept, at their best feasible multiple) is at most the
    generic solver's optimum, which is at most the primal at a random point."""
    rng = np.random.default_rng(seed)
    name, options, squared = SQUARED[rng.integers(len(SQUARED))]
    m = machine(name, options)
    fit_intercept = bool(rng.integers(2)) and has_intercept_optimum(name, options)
    X, y, c = tiny_problem(seed, weighted=bool(rng.integers(2)))
    c = c * math.exp(rng.uniform(math.log(0.05), math.log(20)))
    optimum, _, _ = cvxpy_optimum(name, options, X, y, c, fit_intercept, squared)
    slack = 1e-7 * (1 + abs(optimum))
    W, b = rng.standard_normal((X.shape[1], N_CLASSES)), rng.standard_normal(N_CLASSES)
    if m.sum_to_zero:
        W, b = W - W.mean(axis=1, keepdims=True), b - b.mean()
    assert optimum <= primal(name, options, X, y, c, W, b * fit_intercept, squared) + slack
    with x64():
        dual = family_duals.dual_for(name, options, N_CLASSES)
        is_true = np.eye(N_CLASSES, dtype=bool)[y].T
        tj, cj = jnp.asarray(is_true), jnp.asarray(c)
        points = [dual.smooth(jnp.asarray(W.T @ X.T + b[:, None]), tj, MARGIN, 0.1, squared)[1]]
        points += [random_feasible(m, is_true, squared, rng) for _ in range(3)]
        short = smoothed_dual_point(dual, m, X, y, c, fit_intercept, squared, (0.3, 0.03), 5)
        points.append(short[2])
        for a in points:
            if fit_intercept:
                a, ok = dual.repair(jnp.asarray(a), tj, cj)
                if not bool(ok):
                    continue
            assert in_domain(m, np.asarray(a) * (c > 0), is_true, squared)
            value = certified(dual, m, np.asarray(a), is_true, c, X, squared)
            assert value <= optimum + slack, (name, options, squared, value, optimum)


def _marked(cases, quick, ids):
    """``cases`` as parameters, those not in ``quick`` under the slow marker."""
    return [
        pytest.param(case, id=ids(case), marks=() if case in quick else pytest.mark.slow)
        for case in cases
    ]


# The default run: a few settings that together meet every kind of dual (a weighted sum with
# a target margin under the sum-to-zero constraint, a maximum with a constant term, squared,
# top-k alpha and beta, smooth top-k); everything under the slow marker.
QUICK_PROPERTIES = [
    ("unified_hinge", UNIFIED[3], True),
    ("top_k_hinge", {"k": 2}, False),
    ("smooth_top_k", {"k": 1, "tau": 0.5}, False),
]
QUICK_STRONG = [("top_k_hinge", {"k": 2, "variant": "beta"}, True, False, False)]
BOUND_SEEDS = 320
QUICK_BOUND_SEEDS = (1,)


@pytest.mark.float64
@pytest.mark.parametrize("case", _marked(SQUARED, QUICK_PROPERTIES, case_id))
def test_hinge_smoothing_gradient_domain_repair_curvature(case):
    check_properties(*case)


@pytest.mark.float64
@pytest.mark.parametrize("case", _marked(STRONG, QUICK_STRONG, strong_id))
def test_strong_duality_against_cvxpy(case):
    check_strong_duality(case)


@pytest.mark.float64
@pytest.mark.parametrize(
    "seed", _marked(range(BOUND_SEEDS), QUICK_BOUND_SEEDS, lambda seed: f"seed{seed}")
)
def test_certificate_is_a_true_bound(seed):
    check_bound(seed)


# ------------------------------------------------------------------------------- refusals


def test_refusals_name_the_option():
    with pytest.raises(ValueError, match="not convex in the scores"):
        family_duals.dual_for("smooth_top_k", {"k": 2}, N_CLASSES)
    with pytest.raises(ValueError, match="squared=True"):
        family_duals.dual_for("smooth_top_k", {"k": 1}, N_CLASSES, squared=True)
    with pytest.raises(ValueError, match="k must be an integer"):
        family_duals.dual_for("top_k_hinge", {"k": 5}, N_CLASSES)
    with pytest.raises(ValueError, match="variant"):
        family_duals.dual_for("top_k_hinge", {"variant": "gamma"}, N_CLASSES)
    with pytest.raises(ValueError, match="gamma"):
        family_duals.dual_for("reinforced_hinge", {"gamma": 1.5}, N_CLASSES)
    with pytest.raises(ValueError, match="wrong_weight"):
        family_duals.dual_for("unified_hinge", {"wrong_weight": -1.0}, N_CLASSES)
    with pytest.raises(ValueError, match="relative margins have no true-class term"):
        family_duals.dual_for("unified_hinge", {"classes": "true"}, N_CLASSES)
    with pytest.raises(ValueError, match="true_margin"):
        family_duals.dual_for("unified_hinge", {"true_margin": float("nan")}, N_CLASSES)
    with pytest.raises(ValueError, match="has no option 'k'"):
        family_duals.dual_for("lee_lin_wahba", {"k": 2}, N_CLASSES)


def test_user_loss_and_replaced_builtin_are_refused():
    entry = registry.get("weston_watkins")
    registry.register(entry._replace(name="my_hinge"))
    try:
        with pytest.raises(ValueError, match="'my_hinge' has no derived dual"):
            family_duals.dual_for("my_hinge", {}, N_CLASSES)
        registry.register(entry._replace(paper="mine"), replace=True)
        with pytest.raises(ValueError, match="'weston_watkins' has no derived dual"):
            family_duals.dual_for("weston_watkins", {}, N_CLASSES)
    finally:
        registry.unregister("my_hinge")
        registry.register(entry, replace=True)
    assert family_duals.dual_for("weston_watkins", {}, N_CLASSES) is entry.dual


def test_every_builtin_loss_has_a_dual():
    for name in registry.names():
        if registry.builtin(name):
            options = {"k": 1} if name == "smooth_top_k" else {}
            dual = family_duals.dual_for(name, options, N_CLASSES)
            assert dual.hinge is not None
