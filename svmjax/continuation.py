r"""The exact solver's loop: smoothing continuation with L-BFGS and a duality-gap
certificate, one ``jax.lax.while_loop`` inside one ``jit``.

:func:`svmjax.solve.solve` checks and pads the data and calls :data:`run`; the method is
described there. The loop is a few small functions over NamedTuple state: :func:`_scores`
(the one product ``V @ X.T``), :func:`_smoothed` (the smoothed loss and its dual variables,
from the scores), :func:`_gradient` (the other product, ``u @ X``), :func:`_step` (one
L-BFGS step, :mod:`svmjax.lbfgs`), :func:`_intercept_step` (a Newton step on the
intercept alone, every ``_CERTIFY_EVERY`` iterations), :func:`_certificate` and
:func:`_combine` (the dual value, :mod:`svmjax.duals`) and :func:`_iteration` (the stage
logic). The per-loss pieces come from the loss's registry entry (:func:`dual_of`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from svmjax import cache, duals, lbfgs, registry
from svmjax.validation import one_hot

__all__ = ["SolveResult", "dual_of", "run", "solve_fn"]

_MU_FACTOR = 0.1  # continuation: mu shrinks by this factor per stage
_STAGE = 0.1  # squared hinges: next stage once |grad|^2 <= _STAGE * smoothing bias
_ENOUGH = 1.0  # hinges: no next stage once the smoothing's share of the gap is below
# _ENOUGH * tol * P (the smoothing is then fine enough for the tolerance)
_MEMORY = 30  # L-BFGS memory on small problems
_LARGE_MEMORY = 100  # ... and once X has at least _LARGE elements
_LARGE = 1 << 22
_PATIENCE = 20  # iterations without a visible decrease before the next stage
_MU_MIN = 1e-7  # relative to the margin; below this float rounding dominates
_CERTIFY_EVERY = 4  # iterations between two dual certificates (and intercept steps)


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


# --------------------------------------------------------------------------------- solver
#
# Inside the solver everything is transposed (see svmjax.duals): V = W.T [C, D], scores
# Z = V @ X.T [C, N], dual variables [C, N]. The variables are one flat vector x: V.ravel()
# then b.


class _Problem(NamedTuple):
    """The (traced) data of one solve."""

    X: jax.Array  # [N, D], centred when fitting an intercept
    XT: jax.Array | None  # [D, N]: a transposed copy of a small X (see _scores), or None
    y: jax.Array  # [N]
    is_true: jax.Array  # [C, N]
    c: jax.Array  # per-example weights c_i [N] (0 for padding rows)
    margin: jax.Array
    fit_intercept: jax.Array


class _Spec(NamedTuple):
    """The static (hashable) settings of one solve."""

    loss: str
    squared: bool


class _Pool(NamedTuple):
    """A dual-feasible point kept across iterations by its two summaries: ``lin``, the
    linear part of the dual value (``margin * sum(c * a)``), and ``uX`` (``u @ X``), so
    that its value is ``lin - |uX|^2 / 2`` (hinge losses)."""

    lin: jax.Array
    uX: jax.Array


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
    pool: _Pool  # the best combination of the dual points certified so far


def _unpack(p: _Problem, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    n_classes, n_features = p.is_true.shape[0], p.X.shape[1]
    V = x[: n_classes * n_features].reshape(n_classes, n_features)
    return V, jnp.where(p.fit_intercept, x[n_classes * n_features :], 0)


def _scores(p: _Problem, x: jax.Array) -> jax.Array:
    """``V @ X.T + b`` ``[C, N]`` for the variables (or a direction) ``x``: one pass over
    ``X``.

    A small ``X`` (fewer than ``_LARGE`` elements) is kept transposed as well: XLA:CPU's
    product with ``X.T`` runs 1.4-1.8x slower than with a ``[D, N]`` copy at 1536 x 64 to
    8192 x 256, and faster from about 20000 x 784 on, where the copy would also cost the
    most memory."""
    V, b = _unpack(p, x)
    return (V @ p.X.T if p.XT is None else V @ p.XT) + b[:, None]


def _smoothed(p: _Problem, spec: _Spec, z: jax.Array, mu: jax.Array):
    """The smoothed per-example terms ``c_i L_mu(z_i)`` ``[N]`` and their dual variables
    ``a`` ``[C, N]`` at the scores ``z`` (no pass over ``X``)."""
    values, a = dual_of(spec.loss).smooth(z, p.is_true, p.margin, mu, spec.squared)
    return p.c * values, a


def _gradient(p: _Problem, spec: _Spec, x: jax.Array, a: jax.Array):
    """The smoothed objective's gradient (analytic: ``V + u @ X`` and the sum of ``u``)
    and ``u @ X``, which the certificate reuses: one pass over ``X``."""
    V, _ = _unpack(p, x)
    u = dual_of(spec.loss).dual_map(a, p.is_true, p.c)
    uX = u @ p.X
    gb = jnp.where(p.fit_intercept, jnp.sum(u, axis=1), 0)
    return jnp.concatenate([(V + uX).ravel(), gb]), uX


def _primal(p: _Problem, spec: _Spec, x: jax.Array, z: jax.Array) -> jax.Array:
    """The primal objective at ``x`` with scores ``z``: the loss's own values
    (``Dual.hinge``, those of its pure definition, in the solver's ``[C, N]`` layout; the
    pure definition itself on ``z.T`` for a ``Dual`` without one)."""
    V, _ = _unpack(p, x)
    hinge = dual_of(spec.loss).hinge
    if hinge is None:
        pure = registry.get(spec.loss).pure
        per_example = pure(z.T, p.y, margin=p.margin, squared=spec.squared)
    else:
        per_example = hinge(z, p.is_true, p.margin, spec.squared)
    return 0.5 * jnp.sum(V * V) + jnp.sum(p.c * per_example)


def _combine(pool: _Pool, new: _Pool) -> _Pool:
    r"""The best point :math:`\alpha A + \beta N` over :math:`\alpha, \beta \ge 0,\
    \alpha + \beta \le 1` (feasible: a convex combination of ``pool``, ``new`` and the
    zero point, all feasible).

    The dual value :math:`f(\alpha, \beta) = \alpha l_A + \beta l_N - \tfrac12 \lVert
    \alpha U_A + \beta U_N \rVert^2` is a concave quadratic; its maximum over the
    triangle is at the interior stationary point or on one of the three edges, each in
    closed form. Why: the dual points of successive L-BFGS iterates carry the iterates'
    gradient as an error (the smoothed gap of a gradient's dual point is
    :math:`\tfrac12\lVert g\rVert^2`), and those gradients oscillate; combining points
    cancels much of that error, where the newest point alone stays as good as its
    gradient.
    """
    tiny = jnp.finfo(pool.lin.dtype).tiny
    aa, nn, an = jnp.vdot(pool.uX, pool.uX), jnp.vdot(new.uX, new.uX), jnp.vdot(pool.uX, new.uX)

    def clip(num, den):
        return jnp.clip(num / jnp.maximum(den, tiny), 0, 1)

    det = aa * nn - an * an
    inner = jnp.stack([pool.lin * nn - new.lin * an, new.lin * aa - pool.lin * an]) / jnp.maximum(
        det, tiny
    )
    edge = clip(new.lin - pool.lin + aa - an, aa - 2 * an + nn)
    zero = jnp.zeros_like(edge)
    alpha = jnp.stack([clip(pool.lin, aa), zero, 1 - edge, inner[0]])
    beta = jnp.stack([zero, clip(new.lin, nn), edge, inner[1]])
    ok = (alpha >= 0) & (beta >= 0) & (alpha + beta <= 1) & (det > 0)
    value = (
        alpha * pool.lin
        + beta * new.lin
        - 0.5 * (alpha * alpha * aa + 2 * alpha * beta * an + beta * beta * nn)
    )
    best = jnp.argmax(jnp.where(ok.at[:3].set(True), value, -jnp.inf))
    return _Pool(
        alpha[best] * pool.lin + beta[best] * new.lin, alpha[best] * pool.uX + beta[best] * new.uX
    )


def _intercept_step(p: _Problem, spec: _Spec, z: jax.Array, per: jax.Array, a: jax.Array, mu):
    """A Newton step on the intercept alone (the weights held), with Armijo backtracking
    (:func:`svmjax.lbfgs.backtracking`), from the scores ``z`` with smoothed terms ``per``
    and dual variables ``a``: ``(db, per, a)`` after it, or ``(0, per, a)`` if no step
    length lowers the smoothed objective.

    Why: the unpenalised intercept is the worst-conditioned direction for L-BFGS, and
    its gradient is what the dual point misses (the intercept's constraint
    ``sum_i u_i = 0``), which the repair (``Dual.repair``) pays for in the dual value to
    first order: without this step the certificate lagged the primal by hundreds of
    iterations. The step is in score space (``b`` shifts every example's scores alike:
    no pass over ``X``), with the analytic curvature ``Dual.curvature`` (``[C, C]``).
    """
    dual = dual_of(spec.loss)
    g = jnp.sum(dual.dual_map(a, p.is_true, p.c), axis=1)
    hessian = dual.curvature(a, per, p.is_true, p.c, mu, spec.squared)
    # A small ridge: relative margins leave a shift of all classes alike free.
    ridge = 1e-6 * jnp.trace(hessian) / hessian.shape[0] + jnp.finfo(z.dtype).tiny
    db = -jnp.linalg.solve(hessian + ridge * jnp.eye(hessian.shape[0], dtype=z.dtype), g)
    db = jnp.where(jnp.all(jnp.isfinite(db)), db, 0)
    # Where a class's terms are all nearly linear its curvature is nearly 0 and the
    # Newton step huge: no step moves a score by more than the margin.
    db = db * jnp.minimum(1, p.margin / jnp.maximum(jnp.max(jnp.abs(db)), p.margin))

    def trial(t):
        new_per, new_a = _smoothed(p, spec, z + t * db[:, None], mu)
        return jnp.sum(new_per - per), (new_per, new_a)

    t, change, (new_per, new_a) = lbfgs.backtracking(trial, jnp.vdot(g, db), min_step=2.0**-10)
    lower = change < 0
    return jnp.where(lower, t * db, 0), jnp.where(lower, new_per, per), jnp.where(lower, new_a, a)


def _certificate(p: _Problem, spec: _Spec, a: jax.Array, uX: jax.Array, pool: _Pool):
    """The dual value certified with the smoothed gradient's dual variables ``a`` (``uX``
    is their ``u @ X``), repaired for the intercept, and the new ``pool``.

    Hinge losses: the best combination of ``a`` (scaled up to its largest feasible
    multiple) with ``pool`` (:func:`_combine`); its value is recomputed from the combined
    summaries. Squared hinges: the best multiple of ``a`` alone (their conjugate has a
    quadratic term that the summaries do not carry). If the repair fails: hinge losses
    keep ``pool`` and return its (still valid) value, squared hinges return ``-inf``.
    """
    dual = dual_of(spec.loss)

    def repaired(a):
        a, ok = dual.repair(a, p.is_true, p.c)
        return a, dual.dual_map(a, p.is_true, p.c) @ p.X, ok

    unchanged = (a, uX, jnp.array(True))
    a, uX, ok = jax.lax.cond(p.fit_intercept, repaired, lambda a: unchanged, a)
    if spec.squared:
        return jnp.where(ok, dual.value(a, uX, p.c, p.margin), -jnp.inf), pool
    t = dual.scale(a, p.c)
    new = _Pool(t * p.margin * jnp.sum(p.c[None, :] * a), t * uX.ravel())
    combined = _combine(pool, new)
    pool = jax.tree.map(lambda x, y: jnp.where(ok, x, y), combined, pool)
    return pool.lin - 0.5 * jnp.vdot(pool.uX, pool.uX), pool


def _step(p: _Problem, spec: _Spec, state: _State):
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
    (V, _), (dV, _) = _unpack(p, state.x), _unpack(p, d)
    cross, square = jnp.vdot(V, dV), jnp.vdot(dV, dV)
    dz = _scores(p, jnp.where(state.pending, state.x, d))

    def trial(t):
        increment = t * dz + state.z_error
        z = jnp.where(state.pending, dz, state.z + increment)
        z_error = jnp.where(state.pending, 0, increment - (z - state.z))
        per, a = _smoothed(p, spec, z, state.mu)
        change = jnp.sum(per - state.per) + t * cross + 0.5 * t * t * square
        return jnp.where(state.pending, -jnp.inf, change), (z, z_error, per, a)

    t, change, (z, z_error, per, a) = lbfgs.backtracking(trial, slope)
    moved = change <= 1e-4 * t * slope
    x = jnp.where(moved, state.x + t * d, state.x)
    # Every _CERTIFY_EVERY iterations with an intercept: one Newton step on b alone.
    shift = p.fit_intercept & moved & ~state.pending & (state.n_iter % _CERTIFY_EVERY == 0)
    db, per, a = jax.lax.cond(
        shift,
        lambda: _intercept_step(p, spec, z, per, a, state.mu),
        lambda: (jnp.zeros(z.shape[0], z.dtype), per, a),
    )
    n_weights = x.size - db.size
    x, z = x.at[n_weights:].add(db), z + db[:, None]
    grad, uX = _gradient(p, spec, x, a)
    # A decrease below an ulp of the objective is rounding noise, not progress.
    value = 0.5 * jnp.sum(_unpack(p, x)[0] ** 2) + jnp.sum(per)
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


def _smoothing_share(p: _Problem, state: _State, primal, a, uX) -> jax.Array:
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
    V, b = _unpack(p, state.x)
    dual = p.margin * jnp.sum(p.c[None, :] * a) - 0.5 * jnp.sum(uX * uX)
    g_V, g_b = state.grad[:n], state.grad[n:]
    return primal - dual - 0.5 * jnp.vdot(g_V, g_V) - jnp.vdot(b, g_b)


def _iteration(p: _Problem, spec: _Spec, state: _State, tol: jax.Array) -> _State:
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
    primal = _primal(p, spec, state.x, state.z)
    better = primal < state.best_primal
    hopeless = (~moved & (state.memory.size == 0)) | (state.weak >= _PATIENCE)
    can_shrink = dual_of(spec.loss).smoothed(spec.squared) & (state.mu > _MU_MIN * p.margin)
    g2 = jnp.vdot(state.grad, state.grad)
    if spec.squared:
        ready = g2 <= _STAGE * (state.value - primal)
    else:
        share = _smoothing_share(p, state, primal, a, uX)
        ready = moved & (share > _ENOUGH * tol * jnp.abs(primal)) & (g2 / 2 <= share)
    next_stage = can_shrink & (ready | hopeless)
    # The dual is certified every _CERTIFY_EVERY iterations and at every iteration that
    # could end a stage or stall; without an intercept also at every iteration that could
    # end the solve (near the tolerance, at the last smoothing). With one, the dual (its
    # repair, another product with X) costs more than a step and is only worth taking
    # right after the intercept's Newton step (_step, same iterations): its dual point
    # then nearly meets the intercept's constraint. The best dual seen is kept.
    near = primal - state.best_dual <= 10 * tol * jnp.abs(primal)
    check = (state.n_iter % _CERTIFY_EVERY == 0) | next_stage | hopeless
    check = check | ((~can_shrink | near) & ~p.fit_intercept)
    no_value = jnp.asarray(-jnp.inf, primal.dtype)

    dual, pool = jax.lax.cond(
        check, lambda: _certificate(p, spec, a, uX, state.pool), lambda: (no_value, state.pool)
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


def memory_size(n: int, d: int, c: int) -> int:
    """The L-BFGS memory for ``X`` of shape ``[n, d]`` and ``c`` classes.

    A longer memory means fewer iterations on the ill-conditioned problems of large data
    (see ``experiments/bench_solver_scale.py``), but its two-loop recursion, ``4 m``
    dependent vector operations, costs overhead that a small problem's passes over ``X``
    do not hide; so the memory grows with the size of ``X`` (a static shape: no extra
    compilation), and only while its ``2 m`` vectors of ``c·d`` variables take at most an
    eighth of ``X``'s memory (``n >= 16 m c``), so many classes never make it dominate.
    """
    large = n * d >= _LARGE and n >= 16 * _LARGE_MEMORY * c
    return _LARGE_MEMORY if large else _MEMORY


def solve_fn(X, y, c, margin, tol, max_iter, mu0, init, fit_intercept, *, loss, squared):
    """The whole solve, one ``while_loop`` of :func:`_iteration` from ``init``.

    Every product is traced at ``Precision.HIGHEST``: JAX's default float32 product runs on
    reduced-precision matrix units on recent GPUs (TF32, 10-bit mantissa) and TPUs
    (bfloat16), an error near ``1e-3`` relative in the scores, as large as the gap the
    certificate is asked to prove. The products here have ``C`` (few) columns, so they are
    bound by the pass over ``X``, not by arithmetic, and full precision costs little; on
    CPU the setting changes nothing."""
    with jax.default_matmul_precision("highest"):
        return _solve(X, y, c, margin, tol, max_iter, mu0, init, fit_intercept, loss, squared)


def _solve(X, y, c, margin, tol, max_iter, mu0, init, fit_intercept, loss, squared):
    spec = _Spec(loss, squared)
    XT = X.T if X.size < _LARGE else None
    p = _Problem(X, XT, y, one_hot(y, init["W"].shape[1]).T, c, margin, fit_intercept)
    x0 = jnp.concatenate([init["W"].T.ravel(), jnp.where(fit_intercept, init["b"], 0)])
    zero, dtype = jnp.zeros((), jnp.int32), X.dtype
    n, d = X.shape
    state = _State(
        x=x0,
        z=jnp.zeros((p.is_true.shape[0], X.shape[0]), dtype),
        z_error=jnp.zeros((p.is_true.shape[0], X.shape[0]), dtype),
        value=jnp.zeros((), dtype),
        per=jnp.zeros_like(c),
        grad=jnp.zeros_like(x0),
        pending=jnp.array(True),
        memory=lbfgs.init_memory(memory_size(n, d, init["W"].shape[1]), x0.size, dtype),
        mu=mu0,
        n_iter=zero,
        stalled=jnp.array(False),
        weak=zero,
        best_x=x0,
        best_primal=jnp.asarray(jnp.inf, dtype),
        best_dual=jnp.asarray(-jnp.inf, dtype),
        pool=_Pool(jnp.zeros((), dtype), jnp.zeros(x0.size - init["b"].size, dtype)),
    )
    state = jax.lax.while_loop(
        lambda s: (s.n_iter < max_iter) & ~_done(s, tol) & ~s.stalled,
        lambda s: _iteration(p, spec, s, tol),
        state,
    )
    # The scores were updated along the steps: the objective reported is recomputed.
    state = state._replace(best_primal=_primal(p, spec, state.best_x, _scores(p, state.best_x)))
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


run = cache.jit(
    solve_fn,
    cpu_options=cache.NO_TREE_SUMS,
    export_if=lambda static: registry.builtin(static["loss"]),
    static_argnames=("loss", "squared"),
)
"""``solve_fn`` compiled (with :func:`svmjax.cache.compiler_options` and, on CPU,
:data:`svmjax.cache.NO_TREE_SUMS`)."""


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
