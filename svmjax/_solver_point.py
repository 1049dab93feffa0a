r"""Internal: the exact solver's evaluations at one point, and its duality-gap certificate.

:mod:`svmjax.continuation` loops over these small functions of a :class:`Problem` (the
traced data) and a :class:`Spec` (the static loss): :func:`scores` (the one product
``V @ X.T``), :func:`smoothed` (the smoothed loss and its dual variables, from the scores),
:func:`gradient` (the other product, ``u @ X``: :func:`times_x`), :func:`primal`,
:func:`intercept_step` (a Newton step on the intercept alone), :func:`certificate` and
:func:`combine` (the certified dual value). The per-loss pieces come from the loss's
registry entry (:func:`dual_of`). ``X`` is a dense array or sparse rows
(:class:`svmjax._sparse.SparseRows`). The method: docs page *How the solver works*.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from svmjax import duals, lbfgs, registry
from svmjax._sparse import SparseRows
from svmjax._sparse_products import class_gradient, class_scores

# Inside the solver everything is transposed (see svmjax.duals): V = W.T [C, D], scores
# Z = V @ X.T [C, N], dual variables [C, N]. The variables are one flat vector x: V.ravel()
# (for sparse X: V.T.ravel(), see flatten) then b.


class Problem(NamedTuple):
    """The (traced) data of one solve."""

    X: jax.Array | SparseRows  # [N, D], dense X centred when fitting an intercept
    XT: jax.Array | None  # [D, N]: a transposed copy of a small dense X (see scores), or None
    y: jax.Array  # [N]
    is_true: jax.Array  # [C, N]
    c: jax.Array  # per-example weights c_i [N] (0 for padding rows)
    margin: jax.Array
    fit_intercept: jax.Array


class Spec(NamedTuple):
    r"""The static (hashable) settings of one solve: the loss, its frozen options
    (:func:`svmjax.registry.loss_options`) and whether the model carries the sum-to-zero
    constraint (:math:`\sum_c w_c = 0`, :math:`\sum_c b_c = 0`)."""

    loss: str
    squared: bool
    options: tuple = ()
    sum_to_zero: bool = False


class Pool(NamedTuple):
    """A dual-feasible point kept across iterations by its two summaries: ``lin``, the
    linear part of the dual value (``margin * sum(c * a)``), and ``uX`` (``u @ X``), so
    that its value is ``lin - |uX|^2 / 2`` (hinge losses)."""

    lin: jax.Array
    uX: jax.Array


def unpack(p: Problem, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(V, b)`` of the flat variables ``x`` (``b`` zero without an intercept)."""
    n_classes, n_features = p.is_true.shape[0], p.X.shape[1]
    if isinstance(p.X, SparseRows):  # x holds W = V.T (see flatten)
        V = x[: n_classes * n_features].reshape(n_features, n_classes).T
    else:
        V = x[: n_classes * n_features].reshape(n_classes, n_features)
    return V, jnp.where(p.fit_intercept, x[n_classes * n_features :], 0)


def flatten(p: Problem, V: jax.Array) -> jax.Array:
    """The weights ``V`` ``[C, D]`` as the flat variables hold them: ``V.ravel()``, or for
    sparse ``X`` ``V.T.ravel()``, the layout whose rows the sparse products gather
    (``W = V.T``, one contiguous row per feature)."""
    return V.T.ravel() if isinstance(p.X, SparseRows) else V.ravel()


def scores(p: Problem, x: jax.Array) -> jax.Array:
    """``V @ X.T + b`` ``[C, N]`` for the variables (or a direction) ``x``: one pass over
    ``X``.

    A small ``X`` is kept transposed as well (``Problem.XT``): on XLA:CPU the product with
    a ``[D, N]`` copy beats the one with ``X.T`` for small ``X`` and loses for large ones,
    where the copy would also cost the most memory."""
    V, b = unpack(p, x)
    if isinstance(p.X, SparseRows):
        return class_scores(p.X, V) + b[:, None]
    return (V @ p.X.T if p.XT is None else V @ p.XT) + b[:, None]


def centre(p: Problem, spec: Spec, v: jax.Array) -> jax.Array:
    r"""``v`` (weights or ``u @ X`` in the flat variables' layout, or an intercept ``[C]``)
    with its mean over the classes removed under the sum-to-zero constraint (the
    projection onto :math:`\sum_c v_c = 0`), else ``v`` itself.

    Why: the constrained problem's gradients are the projected ones, so L-BFGS's steps
    and every iterate stay in the subspace (to float rounding); its dual value is
    ``lin - |P uX|^2 / 2``, as the weights that minimise ``|V|^2 / 2 + <V, uX>`` over
    the subspace are ``-P uX``.
    """
    if not spec.sum_to_zero:
        return v
    axis = 1 if isinstance(p.X, SparseRows) and v.ndim == 2 else 0  # W = V.T for sparse X
    return v - jnp.mean(v, axis=axis, keepdims=True)


def project(p: Problem, spec: Spec, x: jax.Array) -> jax.Array:
    """The flat variables ``x`` projected onto the sum-to-zero constraint (weights and
    intercept centred over the classes) where the model has it, else ``x``: each step
    stays in the subspace only to the rounding of its own arithmetic, so the iterate is
    projected again after every step, and those roundings never add up."""
    if not spec.sum_to_zero:
        return x
    n_classes, n_features = p.is_true.shape[0], p.X.shape[1]
    size = n_classes * n_features
    shape = (n_features, n_classes) if isinstance(p.X, SparseRows) else (n_classes, n_features)
    weights = centre(p, spec, x[:size].reshape(shape)).ravel()
    return jnp.concatenate([weights, centre(p, spec, x[size:])])


def times_x(p: Problem, u: jax.Array) -> jax.Array:
    """``u @ X`` ``[C, D]`` for ``u`` ``[C, N]``, in the layout of the flat variables (for
    sparse ``X`` its transpose ``X^T u^T`` ``[D, C]``, as the sparse product gives it; its
    users add it to the weights in that layout or sum its squares): one pass over ``X``."""
    return class_gradient(p.X, u) if isinstance(p.X, SparseRows) else u @ p.X


def smoothed(p: Problem, spec: Spec, z: jax.Array, mu: jax.Array):
    """The smoothed per-example terms ``c_i L_mu(z_i)`` ``[N]`` and their dual variables
    ``a`` ``[C, N]`` at the scores ``z`` (no pass over ``X``)."""
    values, a = dual_for(p, spec).smooth(z, p.is_true, p.margin, mu, spec.squared)
    return p.c * values, a


def gradient(p: Problem, spec: Spec, x: jax.Array, a: jax.Array):
    """The smoothed objective's gradient (analytic: ``V + u @ X`` and the sum of ``u``)
    and ``u @ X``, which the certificate reuses: one pass over ``X``."""
    u = dual_for(p, spec).dual_map(a, p.is_true, p.c)
    uX = centre(p, spec, times_x(p, u))
    weights = x[: uX.size].reshape(uX.shape)  # V, or W = V.T for sparse X (see flatten)
    gb = jnp.where(p.fit_intercept, centre(p, spec, jnp.sum(u, axis=1)), 0)
    return jnp.concatenate([(weights + uX).ravel(), gb]), uX


def primal(p: Problem, spec: Spec, x: jax.Array, z: jax.Array) -> jax.Array:
    """The primal objective at ``x`` with scores ``z``: the loss's own values
    (``Dual.hinge``, those of its pure definition, in the solver's ``[C, N]`` layout; the
    pure definition itself on ``z.T`` for a ``Dual`` without one)."""
    V, _ = unpack(p, x)
    hinge = dual_for(p, spec).hinge
    if hinge is None:
        pure = registry.get(spec.loss).pure
        options = dict(spec.options)
        per_example = pure(z.T, p.y, margin=p.margin, squared=spec.squared, **options)
    else:
        per_example = hinge(z, p.is_true, p.margin, spec.squared)
    return 0.5 * jnp.sum(V * V) + jnp.sum(p.c * per_example)


def combine(pool: Pool, new: Pool) -> Pool:
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
    return Pool(
        alpha[best] * pool.lin + beta[best] * new.lin, alpha[best] * pool.uX + beta[best] * new.uX
    )


DENSE_NEWTON = 64  # the intercept's Newton step forms the [C, C] Hessian up to this many classes
_NEWTON_CG_STEPS = 12  # ... and beyond, takes this many conjugate-gradient steps


def intercept_step(p: Problem, spec: Spec, z: jax.Array, per: jax.Array, a: jax.Array, mu):
    """A Newton step on the intercept alone (the weights held), with Armijo backtracking
    (:func:`svmjax.lbfgs.backtracking`), from the scores ``z`` with smoothed terms ``per``
    and dual variables ``a``: ``(db, per, a)`` after it, or ``(0, per, a)`` if no step
    length lowers the smoothed objective.

    Why: the unpenalised intercept is the worst-conditioned direction for L-BFGS, and
    its gradient is what the dual point misses (the intercept's constraint
    ``sum_i u_i = 0``), which the repair (``Dual.repair``) pays for in the dual value to
    first order: without this step the certificate lags the primal by many iterations.
    The step is in score space (``b`` shifts every example's scores alike: no pass over
    ``X``), with the analytic curvature ``Dual.curvature`` (Hessian-vector products,
    ``O(C N)`` each): up to :data:`DENSE_NEWTON` classes the ``[C, C]`` Hessian is formed
    from ``C`` of them and solved exactly; beyond, :func:`conjugate_gradients` runs a few
    of them (forming it would cost ``O(C^2 N)``, more than a pass over ``X`` at a thousand
    classes).
    """
    dual = dual_for(p, spec)
    g = centre(p, spec, jnp.sum(dual.dual_map(a, p.is_true, p.c), axis=1))
    curvature = dual.curvature(a, per, p.is_true, p.c, mu, spec.squared)

    def times(v):  # projected onto the constraint's subspace where the model has it
        return centre(p, spec, curvature(centre(p, spec, v)))

    if g.shape[0] <= DENSE_NEWTON:
        hessian = jax.vmap(times, in_axes=1, out_axes=1)(jnp.eye(g.shape[0], dtype=z.dtype))
        # A small ridge: relative margins leave a shift of all classes alike free.
        ridge = 1e-6 * jnp.trace(hessian) / hessian.shape[0] + jnp.finfo(z.dtype).tiny
        db = -jnp.linalg.solve(hessian + ridge * jnp.eye(hessian.shape[0], dtype=z.dtype), g)
    else:
        db = -conjugate_gradients(times, g, _NEWTON_CG_STEPS)
    db = jnp.where(jnp.all(jnp.isfinite(db)), db, 0)
    # Where a class's terms are all nearly linear its curvature is nearly 0 and the
    # Newton step huge: no step moves a score by more than the margin.
    db = db * jnp.minimum(1, p.margin / jnp.maximum(jnp.max(jnp.abs(db)), p.margin))
    db = centre(p, spec, db)

    def trial(t):
        new_per, new_a = smoothed(p, spec, z + t * db[:, None], mu)
        return jnp.sum(new_per - per), (new_per, new_a)

    t, change, (new_per, new_a) = lbfgs.backtracking(trial, jnp.vdot(g, db), min_step=2.0**-10)
    lower = change < 0
    return jnp.where(lower, t * db, 0), jnp.where(lower, new_per, per), jnp.where(lower, new_a, a)


def conjugate_gradients(times, g: jax.Array, steps: int) -> jax.Array:
    """An approximate solution of ``H x = g`` by ``steps`` conjugate-gradient iterations from
    0 (fewer once the residual is below ``1e-4 |g|``), ``H`` positive semi-definite given as
    ``times(v) = H v``.

    Why: a Newton step followed by a line search needs a good direction, not an exact
    solve; each iteration is one product, and the iterate after any number of them is a
    descent direction (its inner product with ``g`` is positive). Relative margins make
    ``H`` singular (a common shift of all classes), with ``g`` orthogonal to that null
    direction: the iterates stay orthogonal to it too.
    """
    tiny = jnp.finfo(g.dtype).tiny
    stop = 1e-8 * jnp.vdot(g, g)

    def body(_, carry):
        x, r, d, rr = carry
        hd = times(d)
        dhd = jnp.vdot(d, hd)
        go = (rr > stop) & (dhd > tiny)
        alpha = jnp.where(go, rr / jnp.where(go, dhd, 1), 0)
        x, r = x + alpha * d, r - alpha * hd
        new_rr = jnp.vdot(r, r)
        beta = jnp.where(go, new_rr / jnp.maximum(rr, tiny), 0)
        return x, r, jnp.where(go, r + beta * d, d), jnp.where(go, new_rr, 0)

    x0 = jnp.zeros_like(g)
    return jax.lax.fori_loop(0, steps, body, (x0, g, g, jnp.vdot(g, g)))[0]


def certificate(p: Problem, spec: Spec, a: jax.Array, uX: jax.Array, pool: Pool):
    """The dual value certified with the smoothed gradient's dual variables ``a`` (``uX``
    is their ``u @ X``), repaired for the intercept, and the new ``pool``.

    Hinge losses: the best combination of ``a`` (scaled up to its largest feasible
    multiple) with ``pool`` (:func:`combine`); its value is recomputed from the combined
    summaries. Squared hinges: the best multiple of ``a`` alone (their conjugate has a
    quadratic term that the summaries do not carry). If the repair fails: hinge losses
    keep ``pool`` and return its (still valid) value, squared hinges return ``-inf``.
    """
    dual = dual_for(p, spec)

    def repaired(a):
        a, ok = dual.repair(a, p.is_true, p.c)
        return a, centre(p, spec, times_x(p, dual.dual_map(a, p.is_true, p.c))), ok

    unchanged = (a, uX, jnp.array(True))
    a, uX, ok = jax.lax.cond(p.fit_intercept, repaired, lambda a: unchanged, a)
    if spec.squared:
        if dual.conjugate is None:
            return jnp.where(ok, dual.value(a, uX, p.c, p.margin), -jnp.inf), pool
        # The best point t * a of the ray: phi(t a) = t^2 phi(a) (see Dual).
        lin, uu = linear_part(p, spec, a), jnp.vdot(uX, uX)
        quad = uu + 2 * dual.conjugate(a, p.is_true, p.c, True)
        t = jnp.maximum(lin, 0) / jnp.maximum(quad, jnp.finfo(a.dtype).tiny)
        return jnp.where(ok, t * lin - 0.5 * t * t * quad, -jnp.inf), pool
    t = dual.scale(a, p.c)
    lin = linear_part(p, spec, t * a)
    if dual.conjugate is not None:
        lin = lin - dual.conjugate(t * a, p.is_true, p.c, False)
    new = Pool(lin, t * uX.ravel())
    combined = combine(pool, new)
    pool = jax.tree.map(lambda x, y: jnp.where(ok, x, y), combined, pool)
    return pool.lin - 0.5 * jnp.vdot(pool.uX, pool.uX), pool


def linear_part(p: Problem, spec: Spec, a: jax.Array) -> jax.Array:
    """The linear part of the dual value at ``a``: ``Dual.linear``, or ``margin * sum(c *
    a)`` for a loss without one (every target margin the margin, every weight 1)."""
    linear = dual_for(p, spec).linear
    if linear is None:
        return p.margin * jnp.sum(p.c[None, :] * a)
    return linear(a, p.is_true, p.c, p.margin)


def dual_of(
    loss: str, options: tuple = (), n_classes: int = 2, squared: bool = False
) -> duals.Dual:
    """The solver's pieces for ``loss`` with its frozen ``options`` at ``n_classes``
    classes; a clear refusal for a loss without a dual, or for options no derived dual
    covers (the registry entry's ``dual`` is a :class:`svmjax.duals.Dual`, or a function
    of the options, the number of classes and ``squared`` that builds one)."""
    dual = registry.get(loss).dual
    if dual is None:
        raise ValueError(
            f"the exact solver has no duality-gap certificate for loss {loss!r} (no dual "
            f"is derived for it); use svmjax.train.fit, or one of: "
            f"{', '.join(registry.names(solver=True))}"
        )
    if isinstance(dual, duals.Dual):
        return dual
    return dual(dict(options), n_classes, squared)


def dual_for(p: Problem, spec: Spec) -> duals.Dual:
    """:func:`dual_of` for the loss of ``spec`` at the classes of ``p``."""
    return dual_of(spec.loss, spec.options, p.is_true.shape[0], spec.squared)
