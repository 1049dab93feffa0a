r"""Exact (full-batch, deterministic) solver for the regularised linear multiclass SVM.

:func:`solve` minimises liblinear's primal

.. math::

    P(W, b) = \tfrac12 \lVert W \rVert_F^2 + \sum_{i=1}^{N} c_i\, L(x_i W + b,\ y_i),
    \qquad c_i = C\, s_i\, w_{y_i},

for every loss of :mod:`svmjax.losses` (Weston–Watkins, Crammer–Singer, one-vs-rest; hinge
or squared hinge, any margin :math:`\Delta`), with sample weights :math:`s_i`, class
weights :math:`w_y` and an optional *unpenalised* intercept :math:`b`. It stops on a
**duality gap**: every iterate yields a dual-feasible point, so the returned ``gap`` is a
certified upper bound on :math:`P(W, b) - P^\star` (up to floating-point rounding).

Method: smoothing continuation with L-BFGS. The hinge is replaced by its entropy smoothing
(:math:`\mu\,\mathrm{softplus}(v/\mu)` per hinge term; :math:`\mu \log(1 + \sum_{j \ne y}
e^{v_j/\mu})` for Crammer–Singer), which overestimates the loss by at most
:math:`\mu \log 2` per term (:math:`\mu \log C` for Crammer–Singer). L-BFGS (memory 30,
Armijo backtracking from step 1, analytic gradient) minimises the smooth objective; once the
squared gradient norm is below a tenth of the smoothing bias (or progress stalls at float
precision), :math:`\mu` shrinks tenfold and L-BFGS restarts from the current point. Squared
Weston–Watkins and one-vs-rest are differentiable already and are solved without smoothing.
The whole loop is one ``jax.lax.while_loop`` inside one ``jit``; shapes are padded to
buckets (rows of weight 0, zero columns: the same problem), so data of similar size share
one compiled program, and a second call with new data, ``C``, weights, ``tol`` or
``max_iter`` compiles nothing.

Why this method: liblinear's own algorithm, dual block coordinate ascent, is sequential
over examples, which in JAX becomes a slow ``lax.scan``; full-batch L-BFGS runs on
matrix products. ``optax.lbfgs`` with its zoom line search costs about twice as much per
iteration here and compiles more slowly, so the pieces are our own
(:mod:`svmjax.lbfgs`). The per-loss smoothing and dual live in :mod:`svmjax.duals` and
reach the solver through the loss registry (:mod:`svmjax.registry`); a loss without a
derived dual is refused, never given a fake certificate. With an intercept, the dual's
sum constraint is restored exactly by rescaling whole classes; if that fails (a class
with no active dual variable) ``gap`` is ``inf`` for that iterate. The best primal and
the best dual seen are kept, so ``gap`` never increases.

Precision: in float32 (JAX's default) the certificate reliably reaches a relative gap of
1e-3 (the default ``tol``) and often 1e-4; below that the smoothed problems cannot be
solved accurately enough and the solver stops with ``converged=False`` and
``stalled=True``. In float64 (``jax_enable_x64``) it reaches 1e-6 and beyond.

References: Y. Nesterov, "Smooth minimization of non-smooth functions", Math. Program.
2005 (smoothing); K. Crammer and Y. Singer, JMLR 2001; S. S. Keerthi et al., "A sequential
dual method for large scale multi-class linear SVMs", KDD 2008 (liblinear's
Crammer–Singer solver, the dual used here); R.-E. Fan et al., "LIBLINEAR", JMLR 2008.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.typing import ArrayLike

from svmjax import duals, lbfgs, registry, sharding
from svmjax import validation as checks
from svmjax.validation import one_hot, validate

__all__ = ["SolveResult", "solve", "solve_path", "primal_objective"]

_MU0 = 0.1  # initial smoothing, relative to the margin
_MU_FACTOR = 0.1  # continuation: mu shrinks by this factor per stage
_STAGE = 0.1  # next stage once |grad|^2 <= _STAGE * smoothing bias
_MEMORY = 30  # L-BFGS memory
_PATIENCE = 20  # iterations without a visible decrease before the next stage
_MU_MIN = 1e-7  # relative to the margin; below this float rounding dominates
_CERTIFY_EVERY = 4  # iterations between two dual certificates


class SolveResult(NamedTuple):
    """What :func:`solve` returns (all fields are JAX arrays).

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
    dual = _dual(spec.loss)
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
    dual = _dual(spec.loss)
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
    can_shrink = _dual(spec.loss).smoothed(spec.squared) & (state.mu > _MU_MIN * p.margin)
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


def _solve_fn(X, y, c, margin, tol, max_iter, mu0, init, fit_intercept, *, loss, squared):
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
        smoothing=jnp.where(_dual(loss).smoothed(squared), state.mu, 0),
        stalled=state.stalled & ~_done(state, tol),
    )


_solve = jax.jit(_solve_fn, static_argnames=("loss", "squared"))


def _dual(loss: str) -> duals.Dual:
    """The solver's pieces for ``loss``; a clear refusal for a loss without a dual."""
    dual = registry.get(loss).dual
    if dual is None:
        raise ValueError(
            f"the exact solver has no duality-gap certificate for loss {loss!r} (no dual "
            f"is derived for it); use svmjax.train.fit, or one of: "
            f"{', '.join(registry.names(solver=True))}"
        )
    return dual


def bucket(n: int, minimum: int, steps_per_octave: int) -> int:
    """``n`` rounded up to ``minimum`` or to a multiple of ``2**k / steps_per_octave`` with
    ``2**k <= n`` (so at most ``1 / steps_per_octave`` is padding)."""
    if n <= minimum:
        return minimum
    step = max(1, (1 << (n.bit_length() - 1)) // steps_per_octave)
    return -(-n // step) * step


def _weights(y, n, sample_weight, class_weights, C, n_classes):
    """``c_i = C * s_i * w_{y_i}`` ``[N]``, checked."""
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},) (one per example), got {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("sample_weight must be finite and non-negative")
    w = checks.class_weights(class_weights, n_classes)
    c = checks.scalar("C", C, positive=True) * s * (1.0 if w is None else w.astype(float)[y])
    if not np.any(c > 0):
        raise ValueError("the weights are all zero: sample_weight * class_weights is 0 everywhere")
    return c


def _global_rows(X, y, sample_weight, class_weights, C, n_classes, loss, mesh):
    """``(X, y, c, n_classes)`` of arrays that stay on the devices (spanning several
    processes, or laid out by rows already), laid out by rows
    (:func:`svmjax.sharding.shard_rows`) and checked there (nothing gathered)."""
    _dual(loss)
    checks.check_dtypes(X, y, "X")
    if X.ndim != 2 or y.shape != X.shape[:1]:
        raise ValueError(f"X must have shape [N, D] and y [N], got {X.shape} and {y.shape}")
    X, y = sharding.shard_rows(X, mesh), sharding.shard_rows(y, mesh)
    n = sharding.check_rows(X, y, n_classes)
    if n_classes is None:
        n_classes = int(jnp.max(y)) + 1
    s = jnp.ones(X.shape[0], X.dtype) if sample_weight is None else sample_weight
    s = sharding.shard_rows(s, mesh, fill=0).astype(X.dtype)
    if s.shape != y.shape or not bool(jnp.all(jnp.isfinite(s) & (s >= 0))):
        raise ValueError(f"sample_weight must have shape ({n},), finite and non-negative")
    w = checks.class_weights(class_weights, n_classes)
    w = jnp.ones(n_classes, X.dtype) if w is None else jnp.asarray(w, X.dtype)
    C = checks.scalar("C", C, positive=True)
    c = jnp.where(y >= 0, C * s * w[jnp.maximum(y, 0)], 0)
    if not bool(jnp.any(c > 0)):
        raise ValueError("the weights are all zero: sample_weight * class_weights is 0 everywhere")
    return X, jnp.maximum(y, 0), c, n_classes


def _check(X, y, loss, n_classes):
    _dual(loss)  # an unknown loss, or one without a dual, is refused here
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must have shape [N, D], got {X.shape}")
    if n_classes is None:
        n_classes = int(y.max()) + 1 if y.size and np.issubdtype(y.dtype, np.integer) else 2
    X, y = validate(X, y, n_classes=n_classes, name="X")
    return np.asarray(X), np.asarray(y, np.int32), n_classes


def primal_objective(
    params: Mapping[str, ArrayLike],
    X: ArrayLike,
    y: ArrayLike,
    *,
    C: float = 1.0,
    loss: str = "weston_watkins",
    squared: bool = False,
    margin: float = 1.0,
    sample_weight: ArrayLike | None = None,
    class_weights: ArrayLike | None = None,
    loss_options: Mapping[str, Any] | None = None,
) -> jax.Array:
    r"""liblinear's primal :math:`\tfrac12 \lVert W \rVert^2 + C \sum_i s_i w_{y_i} L_i`.

    The loss values come from :mod:`svmjax.losses`; the intercept ``params["b"]`` (``[C]``)
    is not penalised. This is the quantity :func:`solve` minimises, and the one to compare
    with scikit-learn's ``LinearSVC``: ``{"W": model.coef_.T, "b": model.intercept_}``
    (``LinearSVC`` penalises its intercept, so compare with ``fit_intercept=False``).

    Args:
      params: ``{"W": [D, C], "b": [C]}`` (``"b"`` optional).
      X, y: float features ``[N, D]``, integer labels ``[N]`` in ``[0, C)``.
      C: the weight of the data term (liblinear's ``C``).
      loss, squared, margin: which loss (see :mod:`svmjax.losses`).
      sample_weight: ``s_i`` ``[N]``; class_weights: ``w_y`` ``[C]``.
      loss_options: the loss's extra hyperparameters (any registered loss works here,
        not only those :func:`solve` takes).

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"W": jnp.array([[1.0, -1.0]])}
      >>> float(primal_objective(params, jnp.array([[1.0], [0.5]]), jnp.array([0, 1]), C=2.0))
      5.0
    """
    options = registry.loss_options(loss, loss_options)
    W = jnp.asarray(params["W"])
    b = jnp.asarray(params["b"]) if "b" in params else jnp.zeros(W.shape[1], W.dtype)
    return _primal_objective(
        W,
        b,
        X,
        y,
        C,
        margin,
        sample_weight,
        class_weights,
        loss=loss,
        squared=bool(squared),
        options=options,
    )


@functools.partial(jax.jit, static_argnames=("loss", "squared", "options"))
def _primal_objective(
    W, b, X, y, C, margin, sample_weight, class_weights, *, loss, squared, options
):
    scores = jnp.asarray(X) @ W + b[None, :]
    per_example = registry.get(loss).pure(
        scores, y, margin=margin, squared=squared, class_weights=class_weights, **dict(options)
    )
    if sample_weight is not None:
        per_example = per_example * jnp.asarray(sample_weight, per_example.dtype)
    return 0.5 * jnp.sum(W * W) + C * jnp.sum(per_example)


def solve(
    X: ArrayLike,
    y: ArrayLike,
    *,
    loss: str = "weston_watkins",
    squared: bool = False,
    C: float = 1.0,
    margin: float = 1.0,
    sample_weight: ArrayLike | None = None,
    class_weights: ArrayLike | None = None,
    fit_intercept: bool = False,
    n_classes: int | None = None,
    tol: float = 1e-3,
    max_iter: int = 5000,
    init: dict[str, ArrayLike] | None = None,
    mesh: Mesh | None = None,
) -> SolveResult:
    r"""Minimise :func:`primal_objective` to a relative duality gap ``tol``.

    Args:
      X: float features ``[N, D]`` (the solver works in this dtype: float32, or float64
        with ``jax_enable_x64``).
      y: integer class indices ``[N]`` in ``[0, n_classes)``.
      loss: ``"weston_watkins"``, ``"crammer_singer"`` or ``"one_vs_rest"``.
      squared: squared hinge instead of hinge.
      C: liblinear's ``C``: weight of the summed (not averaged) loss against
        :math:`\tfrac12\lVert W\rVert^2`.
      margin: the hinge margin :math:`\Delta` (liblinear uses 1).
      sample_weight: optional non-negative ``[N]``; weight 2 is the same as the example
        appearing twice.
      class_weights: optional non-negative ``[n_classes]``, multiplying the loss of each
        example of that class.
      fit_intercept: fit an unpenalised intercept ``b`` (liblinear instead appends a
        constant feature, which penalises it).
      n_classes: number of classes; default ``max(y) + 1``.
      tol: stop when ``P - D <= tol * P`` (relative duality gap).
      max_iter: cap on L-BFGS iterations (each costs a few passes over the data).
      init: optional warm start ``{"W": [D, C], "b": [C]}``.
      mesh: a ``jax.sharding.Mesh``: ``X``, ``y`` and the weights ``c_i`` are laid out by
        rows over all its devices (:func:`svmjax.sharding.shard_rows`, padding rows of
        weight 0); the variables and the L-BFGS memory are replicated. The objective,
        gradient and duality gap are sums over the rows, so XLA all-reduces their partial
        sums (a few ``[C, D]``-sized all-reduces and some scalars per iteration); the
        result equals the one-device solve to float rounding. ``X``, ``y`` and
        ``sample_weight`` may be host arrays (the same on every process) or global
        ``jax.Array`` s spanning several processes, e.g. from ``shard_rows(rows, mesh,
        n=N)`` on each process (label ``-1`` marks padding rows); those are checked and
        centred on the devices, never gathered. ``None`` (default): one device.

    Returns:
      A :class:`SolveResult`. It does not raise when ``max_iter`` is reached first; check
      ``converged`` (or ``gap``).

    Example:
      >>> import jax.numpy as jnp
      >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
      >>> result = solve(X, jnp.array([0, 1, 2]), C=10.0)
      >>> bool(result.converged), result.params["W"].shape
      (True, (2, 3))
      >>> bool(0 <= result.gap <= 1e-3 * result.objective)  # a certified relative gap
      True
    """
    if mesh is not None:
        checks.check_mesh(mesh)
        mesh = sharding.auto_axes(mesh)
    on_devices = mesh is not None and sharding.on_devices(mesh, X, y, sample_weight)
    if on_devices:
        X, y, c, n_classes = _global_rows(
            X, y, sample_weight, class_weights, float(C), n_classes, loss, mesh
        )
    else:
        with sharding.on_host():  # the checks make jax.Arrays: not all of X on one device
            X, y, n_classes = _check(X, y, loss, n_classes)
        c = _weights(y, len(y), sample_weight, class_weights, float(C), n_classes)
    n, d = X.shape
    dtype = X.dtype
    margin = checks.scalar("margin", margin, positive=True)
    tol = checks.scalar("tol", tol, positive=True)
    max_iter = checks.count("max_iter", max_iter)
    init = {} if init is None else init
    W0 = np.asarray(init.get("W", np.zeros((d, n_classes))), dtype)
    b0 = np.asarray(init.get("b", np.zeros(n_classes)), dtype)
    if W0.shape != (d, n_classes) or b0.shape != (n_classes,):
        raise ValueError(
            f"init must be {{'W': ({d}, {n_classes}), 'b': ({n_classes},)}}, got "
            f"W {W0.shape}, b {b0.shape}"
        )
    # With an (unpenalised) intercept, centring the features is an exact change of
    # variables, b' = b + mean @ W, and it keeps uncentred data (say, all x near 100) from
    # being needlessly ill-conditioned.
    if on_devices:  # global arrays: centred where they live, not padded further
        mean = np.asarray(c @ X / jnp.sum(c), np.float64) if fit_intercept else np.zeros(d)
        Xc, n_pad, d_pad = X - jnp.asarray(mean, dtype)[None, :], 0, 0
    else:
        mean = np.average(X, axis=0, weights=c) if fit_intercept else np.zeros(d)
        Xc = (X - mean[None, :]).astype(dtype)
        # Pad to a bucketed shape (rows of weight 0, columns of zeros: the solution is the
        # same) so that problems of similar size share one compiled program; under a mesh,
        # to a multiple of the devices too.
        devices = 1 if mesh is None else mesh.size
        n_pad, d_pad = -(-bucket(n, 512, 8) // devices) * devices - n, bucket(d, 16, 4) - d
    b0 = b0 + (mean @ W0).astype(dtype) if fit_intercept else b0

    def rows(x):  # split by rows over the mesh (on one device: as is)
        if mesh is None:
            return x
        return sharding.put(x, mesh, sharding.batch_spec(mesh, np.ndim(x)))

    def same(x):  # replicated
        return x if mesh is None else sharding.put(x, mesh)

    # Host arrays of the final dtypes: jnp.asarray(value, dtype) would compile a small
    # conversion program per argument in a fresh process.
    pad = (lambda x, widths: x) if on_devices else np.pad
    result = _solve(
        rows(pad(Xc, ((0, n_pad), (0, d_pad)))),
        rows(pad(y, (0, n_pad))),
        rows(pad(c, (0, n_pad)).astype(dtype)),
        same(np.asarray(margin, dtype)),
        same(np.asarray(tol, dtype)),
        same(np.asarray(int(max_iter), np.int32)),
        same(np.asarray(_MU0 * margin, dtype)),
        same({"W": np.pad(W0, ((0, d_pad), (0, 0))), "b": np.asarray(b0, dtype)}),
        same(np.asarray(bool(fit_intercept))),
        loss=loss,
        squared=bool(squared),
    )
    if mesh is not None:  # replicated global arrays: unpad where they live
        W = result.params["W"][:d]
        b = result.params["b"]
        b = b - jnp.asarray(mean, dtype) @ W if fit_intercept else b
        return result._replace(params={"W": W, "b": b})
    # One device: unpad and undo the centring on the host; eager JAX ops here would each
    # compile a small program of their own in a fresh process.
    W = np.asarray(result.params["W"])[:d]
    b = np.asarray(result.params["b"])
    if fit_intercept:
        b = (b - np.asarray(mean).astype(dtype) @ W).astype(dtype)
    return result._replace(params={"W": jnp.asarray(W), "b": jnp.asarray(b)})


def solve_path(
    X: ArrayLike,
    y: ArrayLike,
    Cs: tuple[float, ...] | list[float],
    **options,
) -> list[SolveResult]:
    """:func:`solve` for every ``C`` in ``Cs``, each warm-started from the previous solution
    (in increasing ``C``); one :class:`SolveResult` per ``C``, in the order of ``Cs``.

    Every result carries its own certificate, so each meets ``tol`` (or says it did not)
    exactly as an independent :func:`solve` would; the path only saves iterations. All
    solves share one compiled program (same shapes).

    Args:
      X, y: as for :func:`solve`.
      Cs: the values of ``C`` (each ``> 0``).
      **options: any other keyword argument of :func:`solve` except ``C`` and ``init``.

    Example:
      >>> import jax.numpy as jnp
      >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [0.5, 0.4]])
      >>> path = solve_path(X, jnp.array([0, 1, 2, 0]), [1.0, 0.1, 10.0])
      >>> len(path), all(bool(r.converged) for r in path)
      (3, True)
    """
    if "C" in options or "init" in options:
        raise ValueError("solve_path takes the Cs as its third argument and warm-starts itself")
    Cs = [checks.scalar("C", C, positive=True) for C in Cs]
    results: dict[int, SolveResult] = {}
    init: dict[str, ArrayLike] | None = None
    for i in sorted(range(len(Cs)), key=Cs.__getitem__):
        results[i] = solve(X, y, C=Cs[i], init=init, **options)
        init = dict(results[i].params)
    return [results[i] for i in range(len(Cs))]
