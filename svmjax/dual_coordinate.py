r"""Crammer–Singer by dual coordinate ascent: the exact solver's method for many classes.

:func:`svmjax.solve.solve` runs it (``method="coordinate"``, and by default for
Crammer–Singer beyond :data:`MANY_CLASSES` classes on CPU) in place of
the smoothing continuation of :mod:`svmjax.continuation`, and returns the same
:class:`svmjax.continuation.SolveResult` with the same certificate.

The dual of Crammer–Singer in the solver's parametrisation (docs page *How the solver
works*): variables :math:`a_i \in \mathbb{R}^C` per example, :math:`a_{iy_i} = 0`,
:math:`a_i \ge 0`, :math:`\sum_j a_{ij} \le 1`; :math:`u_i = c_i (a_i - (\textstyle\sum_j
a_{ij}) e_{y_i})`, :math:`V = -\sum_i u_i x_i^\top` (``[C, D]``, ``W = V.T``) and

.. math::

    D(a) = \Delta \sum_i c_i \sum_j a_{ij} - \tfrac12 \lVert V \rVert_F^2 .

Its gradient in :math:`a_{ij}` is :math:`c_i v_{ij}` with :math:`v_{ij} = z_{ij} - z_{iy_i} +
\Delta` the margins of the scores :math:`z_i = V x_i`, so the best change of one example's
variables alone (others fixed), with :math:`\beta_i = c_i \lVert x_i \rVert^2`, maximises
:math:`\langle \delta, v_i \rangle - \tfrac{\beta_i}2 (\lVert \delta \rVert^2 + (\sum_j
\delta_j)^2)`: its solution is :math:`a_i' = (p - \theta)_+` with :math:`p = a_i + v_i /
\beta_i` and :math:`\theta = \max(\theta_1, \theta_2)`, the roots of :math:`\sum_j (p_j -
\theta)_+ = \sum_j a_{ij} + \theta` (the sum constraint inactive) and :math:`\sum_j (p_j -
\theta)_+ = 1` (active), each found by Newton's method from below (:func:`_threshold`).
This is the sub-problem of Keerthi et al. (2008), the method of liblinear's Crammer–Singer
solver, solved without a sort.

**Why the code is the way it is.** A pass visits the examples one at a time in a random
order (from ``key``): each step is a few operations on vectors of length ``C``, inside a
``lax.fori_loop``. Computing ``z_i = V x_i`` and updating ``V`` at every step would read the
``[C, D]`` weights twice per example; instead the examples come in blocks of
:data:`BLOCK`: one product gives the block's scores, the Gram matrix ``K`` of its rows
keeps them current (an update of example ``i`` moves example ``k``'s scores by ``-c_i
G(\delta_i) K_{ik}``: ``[BLOCK, C]`` work), and one product applies the block's changes to
``V``. A pass then costs two products with ``X`` (what one L-BFGS iteration costs) plus
``N`` small sequential steps; on many classes the passes it needs (tens) are far fewer
than the continuation's iterations (hundreds), on few classes the sequential steps cost
more than they save (measured: docs/performance.md, many classes). Every
:data:`CERTIFY_EVERY` passes ``V`` is recomputed from the dual variables (the updates'
rounding does not accumulate), and the primal at that ``V`` and the dual value give the
certified gap.

The unpenalised intercept's constraint :math:`\sum_i u_i = 0` couples every example; it
is kept by the method of multipliers (:func:`solve_fn`), whose penalty only adds a constant
to the block's Gram matrix.

Layout: examples-major, dual variables ``A [N, C]`` (a block's rows are gathered). Dense
``X``, one device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from svmjax import _sparse, duals
from svmjax.continuation import SolveResult

__all__ = ["BLOCK", "CERTIFY_EVERY", "MANY_CLASSES", "applies", "run", "solve_fn", "takes_path"]

BLOCK = 64  # examples per block (their scores kept current by their Gram matrix)
CERTIFY_EVERY = 5  # passes between two certificates
MANY_CLASSES = 64  # solve's default method: this one beyond this many classes (CPU)
_NEWTON_STEPS = 64  # cap on Newton's steps for a threshold (they stop at the root)
_INSIDE = 0.99  # the loop stops at this fraction of tol (as the continuation's)
PENALTY = 0.1  # the intercept's rho, relative to the mean squared norm of the rows


_METHODS = ("auto", "continuation", "coordinate")


def applies(method, loss, squared, options, init, mesh, sparse, n_classes) -> bool:
    """Whether :func:`svmjax.solve.solve`'s ``method`` means this method for these settings
    (``"auto"``: where it applies, on CPU, where its sequential steps are cheap, beyond
    :data:`MANY_CLASSES` classes); a clear refusal where ``method="coordinate"`` asks for a
    setting it does not cover."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    unsupported = [
        what
        for what, bad in (
            (f"loss {loss!r} (only 'crammer_singer')", loss != "crammer_singer"),
            ("squared=True", bool(squared)),
            ("loss_options", bool(options)),
            ("init", init is not None),
            ("a mesh", mesh is not None),
            ("sparse X", sparse),
        )
        if bad
    ]
    if method == "coordinate" and unsupported:
        raise ValueError(
            "method='coordinate' solves the Crammer-Singer hinge without warm start, "
            f"options or mesh on dense X; got {', '.join(unsupported)} "
            "(method='continuation' takes them)"
        )
    if method == "auto":
        cpu = jax.default_backend() == "cpu"
        return not unsupported and cpu and n_classes > MANY_CLASSES
    return method == "coordinate"


def takes_path(X, y, options: dict) -> bool:
    """Whether :func:`svmjax.solve.solve` takes this method for the first solve of
    :func:`svmjax.solve.solve_path` with ``options``
    (``method="coordinate"``, or ``"auto"`` where it applies): then every ``C`` takes it,
    not a warm-started continuation (at many classes tens of passes from zero beat hundreds
    of warm iterations)."""
    loss, squared, loss_options = (options.get(k) for k in ("loss", "squared", "loss_options"))
    n_classes = options.get("n_classes") or int(np.max(np.asarray(y))) + 1
    mesh, sparse = options.get("mesh"), _sparse.is_sparse(X)
    method = options.get("method", "auto")
    return applies(method, loss, squared, loss_options, None, mesh, sparse, n_classes)


def _root(p: jax.Array, offset, extra, start) -> jax.Array:
    r"""The root of :math:`g(t) = \sum_j (p_j - t)_+ - \mathrm{offset} - \mathrm{extra}\, t`
    (``extra`` 0 or 1) by Newton's method from ``start <= root``.

    ``g`` is convex, piecewise linear and decreasing, so each Newton step from the left
    stays left of the root and the steps stop, exactly, once the set ``p > t`` repeats
    (at most one step per distinct value of ``p``, usually a few)."""

    def step(state):
        t, _, k = state
        on = p > t
        n = jnp.sum(on).astype(p.dtype) + extra
        new = (jnp.sum(jnp.where(on, p, 0)) - offset) / jnp.maximum(n, 1)
        return jnp.where(n > 0, jnp.maximum(new, t), t), t, k + 1

    def going(state):
        t, old, k = state
        return (t != old) & (k < _NEWTON_STEPS)

    t = jax.lax.while_loop(going, step, step((start, start, 0)))[0]
    return t


def _threshold(p: jax.Array, total: jax.Array) -> jax.Array:
    r"""``theta`` of the sub-problem (module docstring) for ``p`` ``[C]`` (``-inf`` on the
    true class) and ``total``, the example's current :math:`\sum_j a_j`: the larger of the
    root with the sum constraint inactive (started at ``-total``, where :math:`g \ge 0`)
    and the one with it active (started at ``max(p) - 1``)."""
    inactive = _root(p, total, 1, -total)
    active = _root(p, 1.0, 0, jnp.max(p) - 1)
    return jnp.maximum(inactive, active)


def _dual_map(A, y, c):
    r""":math:`u_i = c_i (a_i - (\sum_j a_{ij}) e_{y_i})` ``[N, C]`` for dual variables (or
    their changes) ``A`` ``[N, C]``: :func:`svmjax.duals` relative map in this layout."""
    true = jnp.arange(A.shape[1])[None, :] == y[:, None]
    return c[:, None] * jnp.where(true, -jnp.sum(A, axis=1)[:, None], A)


def _pass(X, y, c, margin, A, V, shift, rho, order, live, blocks):
    r"""One pass over the first ``blocks`` blocks of the examples in ``order`` (``live``
    False on padding) with the intercept's multipliers ``shift`` ``[C]`` and penalty
    ``rho`` (0 without intercept; see :func:`solve_fn`): returns the new ``A``, ``V`` and
    :math:`r = \sum_i u_i` at the end of the pass."""
    n_classes = A.shape[1]
    classes = jnp.arange(n_classes)
    squares = jnp.sum(X * X, axis=1) + rho

    def block(k, carry):
        A, V, r = carry
        rows = jax.lax.dynamic_slice(order, (k * BLOCK,), (BLOCK,))
        on = jax.lax.dynamic_slice(live, (k * BLOCK,), (BLOCK,))
        Xb, yb, ab = X[rows], y[rows], A[rows]
        cb = jnp.where(on, c[rows], 0)
        beta = cb * squares[rows]
        moves = beta > 0  # an example of weight 0 (or x = 0) has nothing to gain
        beta = jnp.where(moves, beta, 1)
        gram = Xb @ Xb.T + rho  # the penalty couples every pair through r

        def example(i, carry):
            Z, ab = carry
            z, label, a = Z[i], yb[i], ab[i]
            true = classes == label
            p = a + jnp.where(true, -jnp.inf, z - z[label] + margin) / beta[i]
            new = jnp.maximum(p - _threshold(p, jnp.sum(a)), 0)
            new = new / jnp.maximum(jnp.sum(new), 1)  # rounding: keep sum(a) <= 1
            d = jnp.where(moves[i], new - a, 0)
            g = jnp.where(true, -jnp.sum(d), d)  # G(d): the change of u_i / c_i
            return Z - (cb[i] * gram[i])[:, None] * g[None, :], ab.at[i].add(d)

        scores = Xb @ V.T + (shift - rho * r)[None, :]
        _, new = jax.lax.fori_loop(0, BLOCK, example, (scores, ab))
        G = _dual_map(new - ab, yb, cb)
        # Padding entries are dropped (out of range), never written over a real row.
        A = A.at[jnp.where(on, rows, A.shape[0])].set(new, mode="drop")
        return A, V - G.T @ Xb, r + jnp.sum(G, axis=0)

    r = jnp.sum(_dual_map(A, y, c), axis=0)  # from A, not carried: no drift across passes
    return jax.lax.fori_loop(0, blocks, block, (A, V, r))


def _primal(X, y, c, margin, V, b):
    """The primal objective at ``(V, b)`` and each example's largest margin ``[N]``."""
    true = jnp.arange(V.shape[0])[None, :] == y[:, None]
    Z = X @ V.T + b[None, :]
    z_true = jnp.sum(jnp.where(true, Z, 0), axis=1)
    worst = jnp.max(jnp.where(true, -jnp.inf, Z - z_true[:, None] + margin), axis=1)
    return 0.5 * jnp.sum(V * V) + jnp.sum(c * jnp.maximum(worst, 0)), worst


def _weights(A, y, c, X):
    """``V = -u @ X`` of the dual variables ``A``."""
    return -(_dual_map(A, y, c).T @ X)


def _certify(X, y, c, margin, A, b, fit_intercept):
    r"""``V = -u @ X`` from the dual variables, the better primal point of ``(V, b)`` and
    (with an intercept) the repaired point's ``(V', b)``, its value, the dual value (of
    the repaired variables, which meet :math:`\sum_i u_i = 0`; ``-inf`` if the repair
    fails), and which examples the next passes visit (:func:`_solve`)."""
    V = _weights(A, y, c, X)
    primal, worst = _primal(X, y, c, margin, V, b)
    visit = ((jnp.sum(A, axis=1) > 0) | (worst >= 0)) & (c > 0)
    if not fit_intercept:
        dual = margin * jnp.sum(c[:, None] * A) - 0.5 * jnp.sum(V * V)
        return V, V, primal, dual, visit
    true = jnp.arange(A.shape[1])[None, :] == y[:, None]
    fixed, ok = duals.CRAMMER_SINGER.repair(A.T, true.T, c)
    fixed_V = _weights(fixed.T, y, c, X)
    fixed_primal = _primal(X, y, c, margin, fixed_V, b)[0]
    dual = margin * jnp.sum(c[None, :] * fixed) - 0.5 * jnp.sum(fixed_V * fixed_V)
    better = fixed_primal < primal
    best = jnp.where(better, fixed_V, V)
    primal = jnp.minimum(primal, fixed_primal)
    return V, best, primal, jnp.where(ok, dual, -jnp.inf), visit


def solve_fn(
    X, y, c, margin, tol, max_passes, key, fit_intercept, *, n_classes: int
) -> SolveResult:
    r"""Passes of dual coordinate ascent until the certified relative gap is at most
    ``tol`` or ``max_passes`` passes are done (the arguments as :func:`svmjax.solve.solve`
    prepares them: dense ``X [N, D]``, centred with an intercept, labels ``y [N]``, weights
    ``c [N]``, 0 on padding rows); ``n_iter`` of the result counts passes. Products at
    ``Precision.HIGHEST`` (see :func:`svmjax.continuation.solve_fn`).

    The intercept (``fit_intercept``, static) by the method of multipliers: the passes
    maximise :math:`D(a) + \langle b, r \rangle - \tfrac\rho2 \lVert r \rVert^2` with
    :math:`r = \sum_i u_i`, whose one-example sub-problem is the one without intercept
    with scores shifted by :math:`b - \rho r` and :math:`\lVert x_i \rVert^2 + \rho` in
    place of :math:`\lVert x_i \rVert^2`; after each pass :math:`b \leftarrow b - \rho
    r`. :math:`\rho` is :data:`PENALTY` times the mean :math:`\lVert x_i \rVert^2`. The
    certificate's dual point is repaired to :math:`r = 0` exactly (as the continuation's)."""
    with jax.default_matmul_precision("highest"):
        return _solve(X, y, c, margin, tol, max_passes, key, fit_intercept, n_classes)


def _solve(X, y, c, margin, tol, max_passes, key, fit_intercept, n_classes):
    n, dtype = X.shape[0], X.dtype
    blocks = -(-n // BLOCK)
    A = jnp.zeros((n, n_classes), dtype)
    V = jnp.zeros((n_classes, X.shape[1]), dtype)
    b = jnp.zeros(n_classes, dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    counted = c > 0
    mean_square = jnp.sum(jnp.where(counted, jnp.sum(X * X, axis=1), 0)) / jnp.maximum(
        jnp.sum(counted), 1
    )
    rho = PENALTY * mean_square if fit_intercept else jnp.zeros((), dtype)

    def done(primal, dual, tol):
        return jnp.isfinite(primal - dual) & (primal - dual <= tol * jnp.abs(primal))

    def round_(state):
        A, V, b, best_V, best_b, passes, primal, dual, visit = state
        # Shrinking: the passes visit only the examples that the last certificate found
        # with dual variables or a margin not met (the others' steps would be zero there);
        # every certificate looks at all of them again.
        visited = jnp.sum(visit)
        count_blocks = -(-visited // BLOCK)
        live = jnp.arange(blocks * BLOCK) < visited

        def one(t, carry):
            A, V, b = carry
            order = jax.random.permutation(jax.random.fold_in(key, passes + t), n)
            order = order[jnp.argsort(~visit[order], stable=True)]  # the visited first
            order = jnp.pad(order, (0, blocks * BLOCK - n))
            A, V, r = _pass(X, y, c, margin, A, V, b, rho, order, live, count_blocks)
            return A, V, b - rho * r

        count = jnp.minimum(CERTIFY_EVERY, max_passes - passes)
        A, V, b = jax.lax.fori_loop(0, count, one, (A, V, b))
        V, new_V, new_primal, new_dual, visit = _certify(X, y, c, margin, A, b, fit_intercept)
        better = new_primal < primal
        return (
            A,
            V,
            b,
            jnp.where(better, new_V, best_V),
            jnp.where(better, b, best_b),
            passes + count,
            jnp.minimum(new_primal, primal),
            jnp.maximum(new_dual, dual),
            visit,
        )

    visit = jnp.ones(n, bool)
    state = (A, V, b, V, b, jnp.zeros((), jnp.int32), inf, -inf, visit)
    # The loop stops a little inside tol, as the continuation's does.
    state = jax.lax.while_loop(
        lambda s: (s[5] < max_passes) & ~done(s[6], s[7], _INSIDE * tol), round_, state
    )
    *_, best_V, best_b, passes, primal, dual, _ = state
    return SolveResult(
        params={"W": best_V.T, "b": best_b},
        objective=primal,
        dual=dual,
        gap=primal - dual,
        converged=done(primal, dual, tol),
        n_iter=passes,
        smoothing=jnp.zeros((), dtype),
        stalled=jnp.array(False),
    )


# Plain jax.jit, not svmjax.cache.jit: the loop emitters that cache.compiler_options asks
# XLA:CPU for (fusion emitters off) make the many small sequential steps here about twice
# as slow (measured: 100 classes, 40 passes, 4.8 s against 2.4 s).
run = jax.jit(solve_fn, static_argnames=("fit_intercept", "n_classes"))
"""``solve_fn`` compiled."""
