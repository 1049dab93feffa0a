"""The exact solver's loop: smoothing continuation with L-BFGS and a duality-gap
certificate, one ``jax.lax.while_loop`` inside one ``jit``.

:func:`svmjax.solve.solve` checks and pads the data and calls :data:`run` (:func:`solve_fn`
compiled), which returns a :class:`SolveResult`. Each iteration takes one L-BFGS step
(:mod:`svmjax.lbfgs`), certifies a dual value every few iterations and decides when the
smoothing shrinks; :func:`memory_size` sets the L-BFGS memory. The method: docs page *How
the solver works*.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from svmjax import _solver_point as point
from svmjax import cache, lbfgs, registry
from svmjax._loss_parts import one_hot
from svmjax._solver_point import dual_of
from svmjax._sparse import SparseRows

__all__ = ["SolveResult", "dual_of", "run", "solve_fn"]

_MU_FACTOR = 0.1  # continuation: mu shrinks by this factor per stage
_STAGE = 0.1  # squared hinges: next stage once |grad|^2 <= _STAGE * smoothing bias
_ENOUGH = 1.0  # hinges: no next stage once the smoothing's share of the gap is below
# _ENOUGH * tol * P (the smoothing is then fine enough for the tolerance)
_MEMORY = 30  # L-BFGS memory on small problems
_LARGE_MEMORY = 100  # ... and once X has at least _LARGE elements
_LARGE = 1 << 22
_WIDE = 1 << 28  # sparse X: the memory's 2 m vectors hold at most this many values...
_LEAST_MEMORY = 5  # ...with at least this many pairs
_PATIENCE = 20  # iterations without a visible decrease before the next stage
_MU_MIN = 1e-7  # relative to the margin; below this float rounding dominates
_CERTIFY_EVERY = 4  # iterations between two dual certificates (and intercept steps)...
_MANY_CERTIFY_EVERY = 8  # ...beyond point.DENSE_NEWTON classes (see _certify_every)
_INSIDE = 0.99  # the loop stops at this fraction of tol (see _solve)


@cache.serializable
class SolveResult(NamedTuple):
    """What :func:`svmjax.solve.solve` returns (all fields are JAX arrays).

    ``params`` is ``{"W": [D, C], "b": [C]}`` (``b`` is zero without an intercept);
    ``objective`` the primal :math:`P` at ``params``; ``dual`` the best dual value found
    (a lower bound on :math:`P^\\star`); ``gap = objective - dual`` (certified bound on the
    suboptimality, ``inf`` if no dual point could be certified); ``converged`` is
    ``gap <= tol * objective``; ``n_iter`` counts L-BFGS iterations; ``smoothing`` is the
    final :math:`\\mu` (0 for losses solved without smoothing); ``stalled`` is True when it
    stopped short of ``tol`` because the smooth problem was solved to float precision at
    the smallest smoothing (more iterations would not help; raise ``tol`` or use float64).
    """

    params: dict[str, jax.Array]
    objective: jax.Array
    dual: jax.Array
    gap: jax.Array
    converged: jax.Array
    n_iter: jax.Array
    smoothing: jax.Array
    stalled: jax.Array


class _State(NamedTuple):
    x: jax.Array  # the variables, flat
    z: jax.Array  # the scores V @ X.T + b at x [C, N] (updated along the steps)
    z_error: jax.Array  # the rounding error of z's updates, compensated (Kahan) [C, N]
    value: jax.Array  # smoothed objective at x
    per: jax.Array  # its per-example terms c_i L_mu(z_i) [N]
    grad: jax.Array  # its gradient
    pending: jax.Array  # z, value, per and grad are stale (new smoothing): re-evaluate
    memory: lbfgs.Memory
    mu: jax.Array  # the smoothing
    n_iter: jax.Array
    stalled: jax.Array  # the smooth problem is solved to float precision at the last mu
    weak: jax.Array  # iterations in a row without a visible decrease
    best_x: jax.Array
    best_primal: jax.Array
    best_dual: jax.Array
    pool: point.Pool  # the best combination of the dual points certified so far


def _certify_every(p: point.Problem) -> int:
    """Iterations between two certificates (and intercept steps): 4, or 8 beyond
    ``point.DENSE_NEWTON`` classes, where the intercept's repair (a ``[C, C]`` solve and an
    extra product with ``X``) and its Newton step (conjugate gradients) cost the most and
    the iterations they save are fewer (measured: docs/performance.md, many classes)."""
    many = p.is_true.shape[0] > point.DENSE_NEWTON
    return _MANY_CERTIFY_EVERY if many else _CERTIFY_EVERY


def _step(p: point.Problem, spec: point.Spec, state: _State):
    """One L-BFGS step with Armijo backtracking; returns ``(state, moved, a, uX)``, the
    dual variables of the last trial point and their ``u @ X``.

    Two passes over ``X`` per step, however many trials: the scores of the direction,
    ``dz = dV @ X.T + db``, are computed once, every trial scores ``z + t dz`` (the loss
    is a function of the scores), and only the accepted point's gradient needs
    ``u @ X``. The updates of ``z`` are summed with Kahan's compensation: a plain ``z + t
    dz`` rounds at the scale of ``z`` every step, and that drift, divided by a small
    ``mu``, would make the gradients inconsistent with the objective. (``z`` is also
    recomputed at every new smoothing, and the final objective from ``X``.)

    The decrease is summed from per-example differences (and the penalty's exact change),
    not taken as a difference of two totals: near the optimum the totals agree to a few
    float32 ulps, their per-example differences do not cancel like that. The objective is
    convex, so every accepted step has ``<s, y> >= 0``.

    When ``state.pending`` (the smoothing just changed) the "step" is zero, the product
    computes the scores of ``x`` itself, and the one trial re-evaluates the objective
    there: the loop body holds a single copy of each product, which keeps the program
    small to compile.
    """
    d = jnp.where(state.pending, 0, lbfgs.direction(state.grad, state.memory))
    slope = jnp.vdot(state.grad, d)
    (V, _), (dV, _) = point.unpack(p, state.x), point.unpack(p, d)
    cross, square = jnp.vdot(V, dV), jnp.vdot(dV, dV)
    dz = point.scores(p, jnp.where(state.pending, state.x, d))

    def trial(t):
        increment = t * dz + state.z_error
        z = jnp.where(state.pending, dz, state.z + increment)
        z_error = jnp.where(state.pending, 0, increment - (z - state.z))
        per, a = point.smoothed(p, spec, z, state.mu)
        change = jnp.sum(per - state.per) + t * cross + 0.5 * t * t * square
        return jnp.where(state.pending, -jnp.inf, change), (z, z_error, per, a)

    t, change, (z, z_error, per, a) = lbfgs.backtracking(trial, slope)
    moved = change <= 1e-4 * t * slope
    x = jnp.where(moved, point.project(p, spec, state.x + t * d), state.x)
    # Every few iterations with an intercept: one Newton step on b alone.
    shift = p.fit_intercept & moved & ~state.pending & (state.n_iter % _certify_every(p) == 0)
    db, per, a = jax.lax.cond(
        shift,
        lambda: point.intercept_step(p, spec, z, per, a, state.mu),
        lambda: (jnp.zeros(z.shape[0], z.dtype), per, a),
    )
    n_weights = x.size - db.size
    x, z = x.at[n_weights:].add(db), z + db[:, None]
    grad, uX = point.gradient(p, spec, x, a)
    # A decrease below an ulp of the objective is rounding noise, not progress.
    value = 0.5 * jnp.sum(point.unpack(p, x)[0] ** 2) + jnp.sum(per)
    visible = -change > jnp.finfo(state.x.dtype).eps * jnp.abs(state.value)
    grad = jnp.where(moved, grad, state.grad)
    state = state._replace(
        x=x,
        z=jnp.where(moved, z, state.z),
        z_error=jnp.where(moved, z_error, state.z_error),
        value=jnp.where(moved, value, state.value),
        per=jnp.where(moved, per, state.per),
        grad=grad,
        memory=lbfgs.update_memory(
            state.memory, x - state.x, grad - state.grad, moved & ~state.pending
        ),
        weak=jnp.where(moved & visible, 0, state.weak + 1),
    )
    return state, moved, a, uX


def _smoothing_share(p: point.Problem, spec: point.Spec, state: _State, primal, a, uX) -> jax.Array:
    r"""The smoothing's share of the gap of the current point's own dual point ``a``.

    With :math:`D(a) = \Delta \sum_i c_i \textstyle\sum_j a_{ij} - \tfrac12 \lVert u
    X\rVert^2` (hinge), Fenchel–Young for the smoothed loss gives

    .. math::

        P(x) - D(a) = \tfrac12 \lVert g_V \rVert^2 + \langle b, g_b \rangle
            + \big(\mu \textstyle\sum_i c_i H(a_i) - (P_\mu(x) - P(x))\big),

    the first terms vanish as the smooth problem is solved, the last (the entropy of the
    dual variables less the smoothing bias, >= 0) only as ``mu`` shrinks: it is returned,
    computed as the difference, with no loss-specific entropy.
    """
    n = p.is_true.size // p.is_true.shape[1] * p.X.shape[1]
    V, b = point.unpack(p, state.x)
    dual = point.linear_part(p, spec, a) - 0.5 * jnp.sum(uX * uX)
    g_V, g_b = state.grad[:n], state.grad[n:]
    return primal - dual - 0.5 * jnp.vdot(g_V, g_V) - jnp.vdot(b, g_b)


def _iteration(p: point.Problem, spec: point.Spec, state: _State, tol: jax.Array) -> _State:
    """Take one step (or, if the smoothing changed, re-evaluate), certify, and decide the
    stage.

    A failed line search first drops the L-BFGS memory (next step: steepest descent); if
    steepest descent fails too, or nothing visible was gained for ``_PATIENCE``
    iterations, the smooth problem is solved to float precision. Hinge losses: the next
    stage (``mu`` shrinks) starts once the smoothing's share of the current point's gap
    (:func:`_smoothing_share`) exceeds the share that solving the smooth problem further
    can remove (``|g|^2 / 2``), unless that share is already small against the tolerance.
    Squared hinges: once the smoothing bias dominates what is left to gain on the smooth
    problem (``|grad|^2 / 2`` bounds that gain: the objective is 1-strongly convex in V).
    """
    state, moved, a, uX = _step(p, spec, state)
    primal = point.primal(p, spec, state.x, state.z)
    better = primal < state.best_primal
    hopeless = (~moved & (state.memory.size == 0)) | (state.weak >= _PATIENCE)
    can_shrink = point.dual_for(p, spec).smoothed(spec.squared) & (state.mu > _MU_MIN * p.margin)
    g2 = jnp.vdot(state.grad, state.grad)
    if spec.squared:
        ready = g2 <= _STAGE * (state.value - primal)
    else:
        share = _smoothing_share(p, spec, state, primal, a, uX)
        ready = moved & (share > _ENOUGH * tol * jnp.abs(primal)) & (g2 / 2 <= share)
    next_stage = can_shrink & (ready | hopeless)
    # The dual is certified every few iterations and at every iteration that
    # could end a stage or stall; without an intercept also at every iteration that could
    # end the solve (near the tolerance, at the last smoothing). With one, the dual (its
    # repair, another product with X) costs more than a step and is only worth taking
    # right after the intercept's Newton step (_step, same iterations): its dual point
    # then nearly meets the intercept's constraint. The best dual seen is kept.
    near = primal - state.best_dual <= 10 * tol * jnp.abs(primal)
    check = (state.n_iter % _certify_every(p) == 0) | next_stage | hopeless
    check = check | ((~can_shrink | near) & ~p.fit_intercept)
    no_value = jnp.asarray(-jnp.inf, primal.dtype)

    dual, pool = jax.lax.cond(
        check, lambda: point.certificate(p, spec, a, uX, state.pool), lambda: (no_value, state.pool)
    )
    return state._replace(
        pending=next_stage,
        memory=lbfgs.forget(state.memory, next_stage | ~moved),
        mu=jnp.where(next_stage, state.mu * _MU_FACTOR, state.mu),
        n_iter=state.n_iter + 1,
        stalled=hopeless & ~can_shrink,
        weak=jnp.where(next_stage, 0, state.weak),
        best_x=jnp.where(better, state.x, state.best_x),
        best_primal=jnp.minimum(primal, state.best_primal),
        best_dual=jnp.maximum(dual, state.best_dual),
        pool=pool,
    )


def _done(state: _State, tol: jax.Array) -> jax.Array:
    gap = state.best_primal - state.best_dual
    return jnp.isfinite(gap) & (gap <= tol * jnp.abs(state.best_primal))


def memory_size(n: int, d: int, c: int, nnz: int | None = None) -> int:
    """The L-BFGS memory for ``X`` of shape ``[n, d]`` and ``c`` classes: 30, or 100 once
    ``X`` has at least ``2**22`` elements and ``n >= 1600 c``. For a sparse ``X`` with
    ``nnz`` stored entries, at most ``nnz / (4 d)`` pairs and ``2**28 / (2 c d)`` (but 5 at
    least).

    A longer memory means fewer iterations on the ill-conditioned problems of large data
    (see ``experiments/bench_solver_scale.py``), but its two-loop recursion reads the
    ``2 m`` stored vectors of ``c·d`` variables twice per iteration (``4 m c d`` values),
    overhead that a small problem's passes over ``X`` do not hide; so the memory grows
    with the size of ``X`` (a static shape: no extra compilation), and only while those
    vectors take at most an eighth of ``X``'s memory (``n >= 16 m c``). A sparse ``X``'s
    two products read about ``2 nnz c`` values: the bound ``m <= nnz / (4 d)`` keeps the
    recursion at most half of that (on text, where ``nnz`` is a few times ``d``, the
    shorter memory costs a few more iterations and saves more time per iteration: see the
    performance page), and the second keeps very wide data's memory (the weights the
    largest array) within 1 GiB of float32.

    Example:
      >>> memory_size(60000, 784, 10), memory_size(2000, 2_000_000, 3, nnz=40_000)
      (100, 5)
    """
    if nnz is None:
        large = n * d >= _LARGE and n >= 16 * _LARGE_MEMORY * c
        return _LARGE_MEMORY if large else _MEMORY
    large = nnz >= _LARGE and nnz >= 16 * _LARGE_MEMORY * c * d  # the budget against nnz
    size = min(_LARGE_MEMORY if large else _MEMORY, nnz // (4 * d), _WIDE // (2 * c * d))
    return max(_LEAST_MEMORY, size)


def solve_fn(
    X, y, c, margin, tol, max_iter, mu0, init, fit_intercept, *, loss, squared, options=()
):
    """The whole solve from ``init``: one ``while_loop`` of L-BFGS iterations, returning a
    :class:`SolveResult` (the arguments are those :func:`svmjax.solve.solve` prepares).

    Every product is traced at ``Precision.HIGHEST``: JAX's default float32 product runs on
    reduced-precision matrix units on recent GPUs (TF32, 10-bit mantissa) and TPUs
    (bfloat16), an error near ``1e-3`` relative in the scores, as large as the gap the
    certificate is asked to prove. The products here have ``C`` (few) columns, so they are
    bound by the pass over ``X``, not by arithmetic, and full precision costs little; on
    CPU the setting changes nothing."""
    with jax.default_matmul_precision("highest"):
        spec = point.Spec(loss, squared, options, registry.get(loss).constraint == "sum_to_zero")
        return _solve(X, y, c, margin, tol, max_iter, mu0, init, fit_intercept, spec)


def _solve(X, y, c, margin, tol, max_iter, mu0, init, fit_intercept, spec):
    sparse = isinstance(X, SparseRows)
    XT = None if sparse or X.size >= _LARGE else X.T
    p = point.Problem(X, XT, y, one_hot(y, init["W"].shape[1]).T, c, margin, fit_intercept)
    # Under the sum-to-zero constraint the start is projected onto it (every step stays).
    W0, b0 = init["W"], init["b"]
    if spec.sum_to_zero:
        W0, b0 = W0 - jnp.mean(W0, axis=1, keepdims=True), b0 - jnp.mean(b0)
    x0 = jnp.concatenate([point.flatten(p, W0.T), jnp.where(fit_intercept, b0, 0)])
    zero, dtype = jnp.zeros((), jnp.int32), X.dtype
    n, d = X.shape
    nnz = X.stored if sparse else None
    state = _State(
        x=x0,
        z=jnp.zeros((p.is_true.shape[0], X.shape[0]), dtype),
        z_error=jnp.zeros((p.is_true.shape[0], X.shape[0]), dtype),
        value=jnp.zeros((), dtype),
        per=jnp.zeros_like(c),
        grad=jnp.zeros_like(x0),
        pending=jnp.array(True),
        memory=lbfgs.init_memory(memory_size(n, d, init["W"].shape[1], nnz), x0.size, dtype),
        mu=mu0,
        n_iter=zero,
        stalled=jnp.array(False),
        weak=zero,
        best_x=x0,
        best_primal=jnp.asarray(jnp.inf, dtype),
        best_dual=jnp.asarray(-jnp.inf, dtype),
        pool=point.Pool(jnp.zeros((), dtype), jnp.zeros(x0.size - init["b"].size, dtype)),
    )
    # The loop stops a little inside tol: the objective reported is recomputed from X
    # below, and can differ from the loop's (from scores updated along the steps) by
    # rounding, which must not leave a solve that met tol just above it.
    state = jax.lax.while_loop(
        lambda s: (s.n_iter < max_iter) & ~_done(s, _INSIDE * tol) & ~s.stalled,
        lambda s: _iteration(p, spec, s, tol),
        state,
    )
    # The scores were updated along the steps: the objective reported is recomputed.
    state = state._replace(
        best_primal=point.primal(p, spec, state.best_x, point.scores(p, state.best_x))
    )
    V, b = point.unpack(p, state.best_x)
    return SolveResult(
        params={"W": V.T, "b": b},
        objective=state.best_primal,
        dual=state.best_dual,
        gap=state.best_primal - state.best_dual,
        converged=_done(state, tol),
        n_iter=state.n_iter,
        smoothing=jnp.where(point.dual_for(p, spec).smoothed(spec.squared), state.mu, 0),
        stalled=state.stalled & ~_done(state, tol),
    )


run = cache.jit(
    solve_fn,
    cpu_options=cache.NO_TREE_SUMS,
    export_if=lambda static: registry.builtin(static["loss"]),
    static_argnames=("loss", "squared", "options"),
)
"""``solve_fn`` compiled (with :func:`svmjax.cache.compiler_options` and, on CPU,
:data:`svmjax.cache.NO_TREE_SUMS`)."""
