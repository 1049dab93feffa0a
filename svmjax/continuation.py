r"""The exact solver's loop: smoothing continuation with L-BFGS and a duality-gap
certificate, one ``jax.lax.while_loop`` inside one ``jit``.

:func:`svmjax.solve.solve` checks and pads the data and calls :data:`run`; the method is
described there. The loop is a few small functions over NamedTuple state: :func:`_evaluate`
(the smoothed objective, its analytic gradient and the pieces the certificate reuses),
:func:`_step` (one L-BFGS step, :mod:`svmjax.lbfgs`), :func:`_certificate` (the dual
value, :mod:`svmjax.duals`) and :func:`_iteration` (the stage logic). The per-loss pieces
come from the loss's registry entry (:func:`dual_of`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from svmjax import duals, lbfgs, registry
from svmjax.validation import one_hot

__all__ = ["SolveResult", "dual_of", "run", "solve_fn"]

_MU_FACTOR = 0.1  # continuation: mu shrinks by this factor per stage
_STAGE = 0.1  # next stage once |grad|^2 <= _STAGE * smoothing bias
_MEMORY = 30  # L-BFGS memory
_PATIENCE = 20  # iterations without a visible decrease before the next stage
_MU_MIN = 1e-7  # relative to the margin; below this float rounding dominates
_CERTIFY_EVERY = 4  # iterations between two dual certificates


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


# --------------------------------------------------------------------------------- solver
#
# Inside the solver everything is transposed (see svmjax.duals): V = W.T [C, D], scores
# Z = V @ X.T [C, N], dual variables [C, N]. The variables are one flat vector x: V.ravel()
# then b.


class _Problem(NamedTuple):
    """The (traced) data of one solve."""

    X: jax.Array  # [N, D], centred when fitting an intercept
    y: jax.Array  # [N]
    is_true: jax.Array  # [C, N]
    c: jax.Array  # per-example weights c_i [N] (0 for padding rows)
    margin: jax.Array
    fit_intercept: jax.Array


class _Spec(NamedTuple):
    """The static (hashable) settings of one solve."""

    loss: str
    squared: bool


class _State(NamedTuple):
    x: jax.Array  # the variables, flat
    value: jax.Array  # smoothed objective at x
    per: jax.Array  # its per-example terms c_i L_mu(z_i) [N]
    grad: jax.Array  # its gradient
    pending: jax.Array  # value, per and grad are stale (new smoothing): re-evaluate
    memory: lbfgs.Memory
    mu: jax.Array  # the smoothing
    n_iter: jax.Array
    stalled: jax.Array  # the smooth problem is solved to float precision at the last mu
    weak: jax.Array  # iterations in a row without a visible decrease
    best_x: jax.Array
    best_primal: jax.Array
    best_dual: jax.Array


def _unpack(p: _Problem, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    n_classes, n_features = p.is_true.shape[0], p.X.shape[1]
    V = x[: n_classes * n_features].reshape(n_classes, n_features)
    return V, jnp.where(p.fit_intercept, x[n_classes * n_features :], 0)


def _evaluate(p: _Problem, spec: _Spec, x: jax.Array, mu: jax.Array):
    """Smoothed objective, its gradient (analytic: ``V + u @ X``, the sum of ``u``), the
    pieces the certificate reuses (scores, dual variables, ``u @ X``) and the per-example
    terms."""
    dual = dual_of(spec.loss)
    V, b = _unpack(p, x)
    z = V @ p.X.T + b[:, None]
    values, a = dual.smooth(z, p.is_true, p.margin, mu, spec.squared)
    u = dual.dual_map(a, p.is_true, p.c)
    uX = u @ p.X
    gb = jnp.where(p.fit_intercept, jnp.sum(u, axis=1), 0)
    per = p.c * values
    value = 0.5 * jnp.sum(V * V) + jnp.sum(per)
    return value, jnp.concatenate([(V + uX).ravel(), gb]), (z, a, uX), per


def _primal(p: _Problem, spec: _Spec, x: jax.Array, pieces) -> jax.Array:
    """The primal objective at ``x``, from the pure loss on the scores in ``pieces``."""
    V, _ = _unpack(p, x)
    z = pieces[0]
    per_example = registry.get(spec.loss).pure(z.T, p.y, margin=p.margin, squared=spec.squared)
    return 0.5 * jnp.sum(V * V) + jnp.sum(p.c * per_example)


def _certificate(p: _Problem, spec: _Spec, pieces) -> jax.Array:
    """The dual value of the smoothed gradient's dual variables in ``pieces`` (repaired for
    the intercept, best-scaled); ``-inf`` if the repair fails."""
    dual = dual_of(spec.loss)
    _, a, uX = pieces

    def repaired(a):
        a, ok = dual.repair(a, p.is_true, p.c)
        return a, dual.dual_map(a, p.is_true, p.c) @ p.X, ok

    unchanged = (a, uX, jnp.array(True))
    a, uX, ok = jax.lax.cond(p.fit_intercept, repaired, lambda a: unchanged, a)
    value = dual.value(a, uX, p.c, p.margin, spec.squared)
    return jnp.where(ok, value, -jnp.inf)


def _step(p: _Problem, spec: _Spec, state: _State):
    """One L-BFGS step with Armijo backtracking; returns ``(state, moved, pieces)``.

    The decrease is summed from per-example differences (and the penalty's exact change),
    not taken as a difference of two totals: near the optimum the totals agree to a few
    float32 ulps, their per-example differences do not cancel like that. The objective is
    convex, so every accepted step has ``<s, y> >= 0``.

    When ``state.pending`` (the smoothing just changed) the "step" is zero and its one
    trial re-evaluates the objective at ``x``: the loop body holds a single copy of
    :func:`_evaluate` (inside the line search), which keeps the program small to compile.
    """
    d = jnp.where(state.pending, 0, lbfgs.direction(state.grad, state.memory))
    slope = jnp.vdot(state.grad, d)
    (V, _), (dV, _) = _unpack(p, state.x), _unpack(p, d)
    cross, square = jnp.vdot(V, dV), jnp.vdot(dV, dV)

    def trial(t):
        value, grad, pieces, per = _evaluate(p, spec, state.x + t * d, state.mu)
        change = jnp.sum(per - state.per) + t * cross + 0.5 * t * t * square
        return jnp.where(state.pending, -jnp.inf, change), (value, grad, pieces, per)

    t, change, (value, grad, pieces, per) = lbfgs.backtracking(trial, slope)
    moved = change <= 1e-4 * t * slope
    # A decrease below an ulp of the objective is rounding noise, not progress.
    visible = -change > jnp.finfo(state.x.dtype).eps * jnp.abs(state.value)
    x = jnp.where(moved, state.x + t * d, state.x)
    grad = jnp.where(moved, grad, state.grad)
    state = state._replace(
        x=x,
        value=jnp.where(moved, value, state.value),
        per=jnp.where(moved, per, state.per),
        grad=grad,
        memory=lbfgs.update_memory(
            state.memory, x - state.x, grad - state.grad, moved & ~state.pending
        ),
        weak=jnp.where(moved & visible, 0, state.weak + 1),
    )
    return state, moved, pieces


def _iteration(p: _Problem, spec: _Spec, state: _State, tol: jax.Array) -> _State:
    """Take one step (or, if the smoothing changed, re-evaluate), certify, and decide the
    stage.

    A failed line search first drops the L-BFGS memory (next step: steepest descent); if
    steepest descent fails too, or nothing visible was gained for ``_PATIENCE``
    iterations, the smooth problem is solved to float precision. The next stage (``mu``
    shrinks) starts once the smoothing bias dominates what is left to gain on the smooth
    problem (``|grad|^2 / 2`` bounds that gain: the objective is 1-strongly convex in V).
    """
    state, moved, pieces = _step(p, spec, state)
    primal = _primal(p, spec, state.x, pieces)
    better = primal < state.best_primal
    hopeless = (~moved & (state.memory.size == 0)) | (state.weak >= _PATIENCE)
    bias = state.value - primal
    can_shrink = dual_of(spec.loss).smoothed(spec.squared) & (state.mu > _MU_MIN * p.margin)
    next_stage = can_shrink & ((jnp.vdot(state.grad, state.grad) <= _STAGE * bias) | hopeless)
    # The dual (an intercept repair, another product with X) costs more than a step: it is
    # certified every _CERTIFY_EVERY iterations, and at every iteration that could end the
    # solve or a stage (near the tolerance, at the last smoothing, stalling); the best
    # dual seen is kept.
    near = primal - state.best_dual <= 10 * tol * jnp.abs(primal)
    check = (state.n_iter % _CERTIFY_EVERY == 0) | next_stage | hopeless | ~can_shrink | near
    no_value = jnp.asarray(-jnp.inf, primal.dtype)
    dual = jax.lax.cond(check, lambda: _certificate(p, spec, pieces), lambda: no_value)
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
    )


def _done(state: _State, tol: jax.Array) -> jax.Array:
    gap = state.best_primal - state.best_dual
    return jnp.isfinite(gap) & (gap <= tol * jnp.abs(state.best_primal))


def solve_fn(X, y, c, margin, tol, max_iter, mu0, init, fit_intercept, *, loss, squared):
    """The whole solve, one ``while_loop`` of :func:`_iteration` from ``init``."""
    spec = _Spec(loss, squared)
    p = _Problem(X, y, one_hot(y, init["W"].shape[1]).T, c, margin, fit_intercept)
    x0 = jnp.concatenate([init["W"].T.ravel(), jnp.where(fit_intercept, init["b"], 0)])
    zero, dtype = jnp.zeros((), jnp.int32), X.dtype
    state = _State(
        x=x0,
        value=jnp.zeros((), dtype),
        per=jnp.zeros_like(c),
        grad=jnp.zeros_like(x0),
        pending=jnp.array(True),
        memory=lbfgs.init_memory(_MEMORY, x0.size, dtype),
        mu=mu0,
        n_iter=zero,
        stalled=jnp.array(False),
        weak=zero,
        best_x=x0,
        best_primal=jnp.asarray(jnp.inf, dtype),
        best_dual=jnp.asarray(-jnp.inf, dtype),
    )
    state = jax.lax.while_loop(
        lambda s: (s.n_iter < max_iter) & ~_done(s, tol) & ~s.stalled,
        lambda s: _iteration(p, spec, s, tol),
        state,
    )
    V, b = _unpack(p, state.best_x)
    return SolveResult(
        params={"W": V.T, "b": b},
        objective=state.best_primal,
        dual=state.best_dual,
        gap=state.best_primal - state.best_dual,
        converged=_done(state, tol),
        n_iter=state.n_iter,
        smoothing=jnp.where(dual_of(loss).smoothed(squared), state.mu, 0),
        stalled=state.stalled & ~_done(state, tol),
    )


run = jax.jit(solve_fn, static_argnames=("loss", "squared"))


def dual_of(loss: str) -> duals.Dual:
    """The solver's pieces for ``loss``; a clear refusal for a loss without a dual."""
    dual = registry.get(loss).dual
    if dual is None:
        raise ValueError(
            f"the exact solver has no duality-gap certificate for loss {loss!r} (no dual "
            f"is derived for it); use svmjax.train.fit, or one of: "
            f"{', '.join(registry.names(solver=True))}"
        )
    return dual
