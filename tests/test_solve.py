"""Tests for svmjax.solve: certified gaps for every loss, against an independent dual
coordinate-ascent reference, weights, warm starts, padding, errors, compile-once."""

import importlib
import importlib.util
import itertools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F32_TOL, F64_TOL, assert_close

from svmjax import _dual_parts, _solver_point, continuation, duals, losses, registry
from svmjax.gradcheck import x64
from svmjax.solve import primal_objective, solve

# The module itself (svmjax.solve may also name the function, if the package exports it).
solve_module = importlib.import_module("svmjax.solve")

LOSSES = ("weston_watkins", "crammer_singer", "one_vs_rest")
CASES = list(itertools.product(LOSSES, (False, True)))
REF_TOL = 1e-7  # the reference solver's own relative duality gap
EXPERIMENT = Path(__file__).resolve().parent.parent / "experiments" / "solver_vs_liblinear.py"


def blobs(seed=0, n=45, d=4, k=3, spread=1.0):
    """Standardised Gaussian blobs: a small, not separable, well-conditioned problem."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = 1.5 * rng.standard_normal((k, d))[y] + spread * rng.standard_normal((n, d))
    X = (X - X.mean(0)) / X.std(0)
    return X.astype(np.float32), y.astype(np.int32)


def reference_dual_cd(X, y, c, k, *, loss, squared, epochs=300, margin=1.0):
    """Dual coordinate ascent (float64 NumPy), no intercept: Weston–Watkins or one-vs-rest.

    One coordinate alpha_ij = c_i a_ij at a time, each maximised exactly (clipped Newton
    step on a 1-D concave quadratic). Independent of svmjax.solve; returns (W, dual value).
    """
    X = np.asarray(X, np.float64)
    n, d = X.shape
    W, alpha, sq = np.zeros((d, k)), np.zeros((n, k)), np.sum(X * X, axis=1)
    for _ in range(epochs):
        for i in range(n):
            x, yi, s = X[i], y[i], X[i] @ W
            for j in range(k):
                if loss == "weston_watkins":
                    if j == yi:
                        continue
                    g, h = margin - (s[yi] - s[j]), 2 * sq[i]
                else:  # one_vs_rest: column j is a binary SVM with target t
                    t = 1.0 if j == yi else -1.0
                    g, h = margin - t * s[j], sq[i]
                if squared:
                    g, h = g - alpha[i, j] / (2 * c[i]), h + 1 / (2 * c[i])
                new = max(0.0, alpha[i, j] + g / h)
                new = new if squared else min(new, c[i])
                delta = new - alpha[i, j]
                alpha[i, j] = new
                if loss == "weston_watkins":
                    W[:, yi] += delta * x
                    W[:, j] -= delta * x
                    s[yi] += delta * sq[i]
                    s[j] -= delta * sq[i]
                else:
                    W[:, j] += delta * t * x
                    s[j] += delta * t * sq[i]
    dual = margin * alpha.sum() - 0.5 * np.sum(W * W)
    if squared:
        dual -= np.sum(alpha**2 / (4 * c[:, None]))
    return W, dual


def objective64(W, X, y, C, *, loss, squared, b=None):
    with x64():
        params = {"W": jnp.asarray(W, jnp.float64)}
        if b is not None:
            params["b"] = jnp.asarray(b, jnp.float64)
        X64 = jnp.asarray(X, jnp.float64)
        return float(primal_objective(params, X64, y, C=C, loss=loss, squared=squared))


@pytest.mark.parametrize("loss,squared", CASES)
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_gap_is_certified_and_small(loss, squared, fit_intercept):
    X, y = blobs()
    result = solve(X, y, loss=loss, squared=squared, C=0.5, fit_intercept=fit_intercept)
    assert bool(result.converged)
    assert 0 <= float(result.gap) <= 1e-3 * float(result.objective)
    assert float(result.dual) <= float(result.objective)
    # The reported objective is svmjax.losses' value at the returned parameters.
    again = primal_objective(result.params, X, y, C=0.5, loss=loss, squared=squared)
    np.testing.assert_allclose(float(result.objective), float(again), rtol=1e-5)
    if not fit_intercept:
        assert not np.any(np.asarray(result.params["b"]))


def test_pooled_certificate_stays_below_a_float64_optimum():
    # The certified dual value must not exceed P*, so not a float64 solution's objective
    # (>= P*, and within 1e-5 of it: float64 certifies that much here), in the pooled dual
    # point's hardest case: Crammer-Singer, an intercept (the repair), sample and class
    # weights; the float32 evaluation of the dual value gets 1e-6 of rounding slack.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 12)) + 0.3
    y = rng.integers(0, 4, 200).astype(np.int32)
    X[np.arange(200), y] += 1.5
    options = dict(
        loss="crammer_singer",
        C=1.0,
        fit_intercept=True,
        sample_weight=rng.uniform(0.2, 2.0, 200),
        class_weights=np.array([1.0, 2.0, 0.5, 1.5]),
    )
    with x64():
        reference = solve(X, y, tol=1e-10, max_iter=20000, **options)
        above_optimum = float(reference.objective)
        assert reference.dual.dtype == np.float64
        assert float(reference.gap) <= 1e-5 * above_optimum
    result = solve(X.astype(np.float32), y, **options)
    assert bool(result.converged)
    assert float(result.dual) <= above_optimum * (1 + 1e-6)
    assert float(result.objective) >= float(reference.dual) * (1 - 1e-6)


@pytest.mark.parametrize("loss,squared", [c for c in CASES if c[0] != "crammer_singer"])
def test_matches_dual_coordinate_ascent(loss, squared):
    # Another method, converged far beyond solve's tolerance: its dual value bounds the
    # optimum from below, its primal from above.
    X, y = blobs(n=30)
    C = 0.3
    W_ref, dual_ref = reference_dual_cd(X, y, np.full(len(y), C), 3, loss=loss, squared=squared)
    primal_ref = objective64(W_ref, X, y, C, loss=loss, squared=squared)
    assert primal_ref - dual_ref <= REF_TOL * primal_ref, "the reference did not converge"
    result = solve(X, y, loss=loss, squared=squared, C=C, tol=1e-4)
    assert float(result.objective) <= primal_ref * (1 + 2e-4)
    assert float(result.dual) <= primal_ref * (1 + 1e-6)  # a valid lower bound
    # 1-strong convexity in W: |W - W*|^2 <= 2 * gap.
    distance = np.linalg.norm(np.asarray(result.params["W"]) - W_ref)
    assert distance <= np.sqrt(2 * float(result.gap)) + 1e-3


@pytest.mark.parametrize("loss", ["weston_watkins", "one_vs_rest"])
def test_intercept_against_a_penalised_intercept(loss):
    # With a constant feature s appended (liblinear's intercept), the reference's solution
    # (W, w) gives the intercept b = s * w: a feasible point of the unpenalised problem,
    # whose value bounds the certified dual from above; the solver must match or beat it.
    X, y = blobs(n=30, seed=1)
    C, s = 0.3, 3.0
    Xa = np.hstack([X, np.full((len(y), 1), s, np.float32)])
    W_ref, _ = reference_dual_cd(Xa, y, np.full(len(y), C), 3, loss=loss, squared=False)
    upper = objective64(W_ref[:-1], X, y, C, loss=loss, squared=False, b=s * W_ref[-1])
    result = solve(X, y, loss=loss, C=C, fit_intercept=True, tol=1e-4)
    assert float(result.dual) <= upper * (1 + 1e-6)
    assert float(result.objective) <= upper * (1 + 1e-4)


def test_float64_reaches_a_tight_gap():
    X, y = blobs()
    with x64():
        result = solve(X.astype(np.float64), y, loss="crammer_singer", C=0.5, tol=1e-7)
        assert result.params["W"].dtype == jnp.float64
        assert bool(result.converged) and float(result.gap) <= 1e-7 * float(result.objective)


def test_weight_two_equals_duplicating_the_example():
    X, y = blobs()
    weights = np.ones(len(y))
    weights[:10] = 2.0
    dup_X, dup_y = np.concatenate([X, X[:10]]), np.concatenate([y, y[:10]])
    for loss in ("weston_watkins", "crammer_singer"):
        weighted = solve(X, y, loss=loss, C=0.5, sample_weight=weights, tol=1e-4)
        repeated = solve(dup_X, dup_y, loss=loss, C=0.5, tol=1e-4)
        np.testing.assert_allclose(float(weighted.objective), float(repeated.objective), rtol=2e-4)
        # Both are within their gap of the same optimum (1-strong convexity in W).
        bound = np.sqrt(2 * float(weighted.gap)) + np.sqrt(2 * float(repeated.gap))
        diff = np.linalg.norm(np.asarray(weighted.params["W"] - repeated.params["W"]))
        assert diff <= bound + 1e-4


def test_class_weights_are_per_class_sample_weights():
    X, y = blobs()
    class_weights = np.array([1.0, 3.0, 0.5])
    a = solve(X, y, C=0.5, class_weights=class_weights, tol=1e-4)
    b = solve(X, y, C=0.5, sample_weight=class_weights[y], tol=1e-4)
    np.testing.assert_allclose(float(a.objective), float(b.objective), rtol=1e-4)
    expected = primal_objective(a.params, X, y, C=0.5, class_weights=class_weights)
    np.testing.assert_allclose(float(a.objective), float(expected), rtol=1e-5)


def test_zero_weight_examples_do_not_count():
    X, y = blobs()
    junk = np.random.default_rng(5).standard_normal((7, X.shape[1])).astype(np.float32)
    X2, y2 = np.concatenate([X, 9 * junk]), np.concatenate([y, np.zeros(7, np.int32)])
    weights = np.concatenate([np.ones(len(y)), np.zeros(7)])
    a = solve(X, y, C=0.5, tol=1e-4)
    b = solve(X2, y2, C=0.5, sample_weight=weights, tol=1e-4)
    np.testing.assert_allclose(float(a.objective), float(b.objective), rtol=2e-4)


def test_warm_start_and_max_iter():
    X, y = blobs()
    cold = solve(X, y, loss="crammer_singer", C=0.5)
    warm = solve(X, y, loss="crammer_singer", C=0.5, init=cold.params)
    assert int(warm.n_iter) < int(cold.n_iter)
    stopped = solve(X, y, loss="crammer_singer", C=0.5, max_iter=2)  # no exception
    assert int(stopped.n_iter) == 2 and not bool(stopped.converged)
    assert float(stopped.gap) > 0


def test_padding_buckets():
    assert solve_module._bucket(3, 8, 4) == 8
    assert solve_module._bucket(40, 8, 4) == 40
    assert solve_module._bucket(1258, 512, 8) == 1280  # at most 1/8 padding
    assert all(solve_module._bucket(n, 512, 8) >= n for n in range(1, 5000, 7))
    assert all(solve_module._bucket(n, 512, 8) <= 1.125 * n for n in range(512, 5000, 7))


def test_a_second_solve_compiles_nothing():
    X, y = blobs(n=37, d=3)
    solve(X, y, C=0.5)  # compiled here or by an earlier test
    # Count calls of the loss's smoothing, made while tracing only, never at run time: wrap
    # it in a registry entry of the same name (the compiled program is keyed by the name).
    entry, traces = registry.get("weston_watkins"), []

    def counted(*args):
        traces.append(1)
        return entry.dual.smooth(*args)

    registry.register(entry._replace(dual=entry.dual._replace(smooth=counted)), replace=True)
    try:
        X2, y2 = blobs(seed=3, n=50, d=5)  # the same buckets: 512 rows, 16 columns
        weights, init = np.linspace(1, 2, 50), {"W": np.ones((5, 3))}
        result = solve(X2, y2, C=3.0, tol=1e-2, max_iter=50, margin=2.0, fit_intercept=True,
                       sample_weight=weights, init=init)  # fmt: skip
        assert int(result.n_iter) > 0
        assert not traces, "new data, C, tol, max_iter, margin, weights or intercept recompiled"
        # A new shape bucket does trace it (else this test could never fail).
        solve(*blobs(seed=4, n=700, d=40), C=1.0, max_iter=2)
        assert traces
    finally:
        registry.register(entry, replace=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss": "hinge"}, "unknown loss"),
        ({"C": 0.0}, "C must be a finite number > 0"),
        ({"margin": -1.0}, "margin must be"),
        ({"tol": 0.0}, "tol must be"),
        ({"max_iter": 0}, "max_iter must be"),
        ({"sample_weight": np.ones(3)}, "sample_weight must have shape"),
        ({"sample_weight": -np.ones(45)}, "non-negative"),
        ({"sample_weight": np.zeros(45)}, "all zero"),
        ({"class_weights": np.ones(2)}, "class_weights must have shape"),
        ({"init": {"W": np.zeros((3, 3))}}, "init must be"),
        ({"n_classes": 2}, "outside"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    X, y = blobs()
    with pytest.raises(ValueError, match=message):
        solve(X, y, **kwargs)


def test_primal_objective_is_liblinears_formula():
    X, y = blobs()
    rng = np.random.default_rng(0)
    W, b = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3)
    s = rng.uniform(0, 2, len(y))
    value = primal_objective({"W": W, "b": b}, X, y, C=0.7, loss="one_vs_rest", sample_weight=s)
    per_example = losses.one_vs_rest(X @ W + b[None, :].astype(np.float32), y)
    expected = 0.5 * np.sum(W * W) + 0.7 * np.sum(s * np.asarray(per_example))
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_combine_is_the_best_point_of_the_triangle():
    # The pooled dual point is max over alpha, beta >= 0, alpha + beta <= 1 of
    # alpha l_A + beta l_N - |alpha U_A + beta U_N|^2 / 2: compare with a fine grid.
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 401)
    alpha, beta = (g.ravel() for g in np.meshgrid(grid, grid))
    alpha, beta = alpha[alpha + beta <= 1], beta[alpha + beta <= 1]
    with x64():
        for _ in range(20):
            U_A, U_N = rng.standard_normal((2, 6)) * rng.uniform(0.1, 3, 2)[:, None]
            l_A, l_N = rng.uniform(-1, 4, 2)
            U = alpha[:, None] * U_A + beta[:, None] * U_N
            brute = np.max(alpha * l_A + beta * l_N - 0.5 * np.sum(U * U, axis=1))
            pool = _solver_point.combine(
                _solver_point.Pool(jnp.asarray(l_A), jnp.asarray(U_A)),
                _solver_point.Pool(jnp.asarray(l_N), jnp.asarray(U_N)),
            )
            value = float(pool.lin - 0.5 * jnp.vdot(pool.uX, pool.uX))
            # the combination's coefficients, recovered: feasible, and consistent with lin
            coef, *_ = np.linalg.lstsq(np.stack([U_A, U_N], 1), np.asarray(pool.uX), rcond=None)
            assert np.all(coef >= -1e-9) and coef.sum() <= 1 + 1e-9
            assert_close(float(pool.lin), coef @ [l_A, l_N], 1e-9)
            assert brute - 1e-4 <= value <= brute + 1e-4 * max(1.0, abs(brute))


def test_reductions_over_classes():
    v = np.random.default_rng(1).standard_normal((7, 33))
    with x64():
        assert_close(duals.class_sum(jnp.asarray(v)), v.sum(0), F64_TOL)
        assert_close(duals.class_max(jnp.asarray(v)), v.max(0), 0.0)


@pytest.mark.parametrize("loss,squared", CASES)
@pytest.mark.parametrize("margin,k", [(1.0, 6), (0.5, 6), (1.0, 70)])
def test_dual_hinge_is_the_pure_loss(loss, squared, margin, k, dtype):
    # The solver's primal in its [C, N] layout against svmjax.losses' definition on the
    # [N, C] rows, with ties and exact kinks (integer scores, margins 0 and 1); 70 classes
    # take the other branch of the class maximum (_dual_parts._UNROLL).
    rng = np.random.default_rng(5)
    z = rng.integers(-2, 3, (k, 50)).astype(dtype)  # [C, N]
    z[:, :25] = rng.standard_normal((k, 25))
    y = rng.integers(0, k, 50)
    is_true = jnp.asarray(np.eye(k, dtype=bool)[y].T)
    got = continuation.dual_of(loss).hinge(jnp.asarray(z), is_true, margin, squared)
    want = registry.get(loss).pure(jnp.asarray(z.T), jnp.asarray(y), margin=margin, squared=squared)
    assert got.dtype == want.dtype == dtype
    assert_close(got, want, F64_TOL if dtype == jnp.float64 else F32_TOL)


def test_a_dual_without_hinge_solves_with_the_pure_loss():
    # Dual.hinge is optional (a Dual written before it existed): the solver then takes
    # the pure definition on z.T, and certifies the same problem.
    X, y = blobs()
    entry = registry.get("crammer_singer")
    dual = entry.dual._replace(hinge=None)
    registry.register(entry._replace(name="crammer_singer_pure_primal", dual=dual))
    try:
        ours = solve(X, y, loss="crammer_singer_pure_primal", C=0.5, tol=1e-4)
    finally:
        registry.unregister("crammer_singer_pure_primal")
    reference = solve(X, y, loss="crammer_singer", C=0.5, tol=1e-4)
    assert bool(ours.converged) and bool(reference.converged)
    assert abs(float(ours.objective) - float(reference.objective)) <= 2e-4 * float(
        reference.objective
    )


def _smooth_problem(loss, squared, seed=2, n=40, k=5):
    """Scores ``z`` ``[k, n]`` with labels, weights and a solver problem around them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n).astype(np.int32)
    X = jnp.asarray(rng.standard_normal((n, 3)))
    c = jnp.asarray(rng.uniform(0.1, 2, n)).at[-3:].set(0)  # zero weights, as padding rows
    is_true = jnp.asarray(np.eye(k, dtype=bool)[y].T)
    problem = _solver_point.Problem(
        X, X.T, jnp.asarray(y), is_true, c, jnp.asarray(1.0), jnp.asarray(True)
    )
    return jnp.asarray(2 * rng.standard_normal((k, n))), problem


@pytest.mark.parametrize("loss,squared", CASES)
def test_curvature_is_the_hessian_in_the_intercept(loss, squared):
    dual = continuation.dual_of(loss)
    with x64():
        z, p = _smooth_problem(loss, squared)
        for mu in (0.3, 0.01):

            def data_term(b, mu=mu):
                values, _ = dual.smooth(z + b[:, None], p.is_true, 1.0, mu, squared)
                return jnp.sum(p.c * values)

            expected = jax.jit(jax.hessian(data_term))(jnp.zeros(z.shape[0]))

            @jax.jit
            def got(eye, mu=mu):
                values, a = dual.smooth(z, p.is_true, 1.0, mu, squared)
                times = dual.curvature(a, p.c * values, p.is_true, p.c, mu, squared)
                return jax.vmap(times, in_axes=1, out_axes=1)(eye)

            got = got(jnp.eye(z.shape[0]))
            assert_close(got, expected, 1e3 * F64_TOL)


def test_curvature_ignores_weights_too_small_to_count():
    # Squared Crammer–Singer recovers m from c m^2: where that underflows (float32, c =
    # 1e-25 on examples whose true class wins by 5, m down to 1e-14), the example must
    # add (almost) nothing, not a huge term from a lost m.
    dual = continuation.dual_of("crammer_singer")
    z, p = _smooth_problem("crammer_singer", True)
    z = jnp.where(p.is_true & (jnp.arange(z.shape[1]) < 5)[None, :], z + 5, z)
    z = z.astype(jnp.float32)
    tiny = p.c.astype(jnp.float32).at[:5].set(1e-25)
    values, a = dual.smooth(z, p.is_true, 1.0, 0.3, True)
    eye = jnp.eye(z.shape[0], dtype=z.dtype)
    got = jax.vmap(dual.curvature(a, tiny * values, p.is_true, tiny, 0.3, True))(eye)
    zeroed = tiny.at[:5].set(0)
    want = jax.vmap(dual.curvature(a, zeroed * values, p.is_true, zeroed, 0.3, True))(eye)
    assert bool(jnp.all(jnp.isfinite(got)))
    assert_close(got, want, 1e-5)


def _intercept_gradient(p, loss, a):
    return jnp.sum(continuation.dual_of(loss).dual_map(a, p.is_true, p.c), axis=1)


@pytest.mark.parametrize("loss,squared", CASES)
def test_intercept_step_is_a_newton_step(loss, squared, monkeypatch):
    spec, mu = _solver_point.Spec(loss, squared), 0.3
    with x64():
        z, p = _smooth_problem(loss, squared)
        smoothed = jax.jit(lambda z: _solver_point.smoothed(p, spec, z, mu))
        step = jax.jit(lambda z, per, a: _solver_point.intercept_step(p, spec, z, per, a, mu))
        per, a = smoothed(z)
        norms = [float(jnp.linalg.norm(_intercept_gradient(p, loss, a)))]
        for _ in range(10):
            db, new_per, a = step(z, per, a)
            assert float(jnp.sum(new_per - per)) <= 0  # never uphill
            z, per = z + db[:, None], new_per
            assert_close(smoothed(z)[0], per, F64_TOL)
            norms.append(float(jnp.linalg.norm(_intercept_gradient(p, loss, a))))
        # Newton on a smooth convex problem in C variables (each step moves a score by at
        # most the margin): the intercept's gradient (what the dual point misses) vanishes.
        assert norms[-1] <= 1e-8 * norms[0], norms
        # A direction uphill (here: from a curvature of the wrong sign) is refused.
        dual = continuation.dual_of(loss)
        wrong = dual._replace(curvature=lambda a, *args: lambda v: -v)
        monkeypatch.setattr(_solver_point, "dual_of", lambda loss, *args: wrong)
        z = _smooth_problem(loss, squared, seed=3)[0]  # far from the best intercept
        per, a = smoothed(z)
        assert float(jnp.linalg.norm(_intercept_gradient(p, loss, a))) > 1
        db, same_per, same_a = _solver_point.intercept_step(p, spec, z, per, a, mu)
        assert float(jnp.max(jnp.abs(db))) == 0.0
        assert bool(jnp.all(same_per == per)) and bool(jnp.all(same_a == a))


def test_solver_vs_liblinear_smoke(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(EXPERIMENT.parent))  # the script imports `common`
    spec = importlib.util.spec_from_file_location("solver_vs_liblinear", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["solver_vs_liblinear"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    config = module.Config(
        out=str(tmp_path),
        Cs=(0.1,),
        tol_float64=None,
        repeats=1,
        max_train=150,
        references=(("weston_watkins", False),),
        reference_max_epochs=25,
    )
    results = module.main(config)
    saved = json.loads((tmp_path / "results.json").read_text())
    row = saved["crammer_singer"][0]
    assert row["svmjax converged"] and abs(row["objective rel. diff"]) < 5e-3
    assert row["time ratio svmjax/liblinear"] > 0
    assert saved["references"][0]["loss"] == results["references"][0]["loss"]
    assert (tmp_path / "results.md").read_text().startswith("# svmjax.solve vs liblinear")


@pytest.mark.parametrize("default", [None, "bfloat16", "tensorfloat32"])
def test_every_product_is_full_precision(default):
    # JAX's default float32 product is TF32 on recent GPUs and bfloat16 on TPUs: about
    # 1e-3 relative, as large as the gap to certify. The solve and the objective must ask
    # for HIGHEST whatever the default is (CPU ignores it, so the program text is checked).
    rng = np.random.default_rng(0)
    n, d, k = 12, 5, 3
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (np.arange(n) % k).astype(np.int32)
    args = (
        X, y, np.ones(n, np.float32), np.float32(1), np.float32(1e-3), np.int32(10),
        np.float32(0.1), {"W": np.zeros((d, k), np.float32), "b": np.zeros(k, np.float32)},
        np.bool_(True),
    )  # fmt: skip
    W, b = jnp.zeros((d, k)), jnp.zeros(k)
    with jax.default_matmul_precision(default):
        texts = {
            "uncentre": solve_module._uncentre.lower(b, jnp.zeros(d), W).as_text(),
            "solve": continuation.run.lower(*args, loss="crammer_singer", squared=False).as_text(),
            "objective": jax.jit(lambda X: primal_objective({"W": W, "b": b}, X, y))
            .lower(X)
            .as_text(),
        }
    for name, text in texts.items():
        dots = [line for line in text.splitlines() if "dot_general" in line]
        assert dots, name
        assert all("precision = [HIGHEST, HIGHEST]" in line for line in dots), (name, dots)


# The three hinges and the squared Crammer–Singer (the squared maximum's own curvature).
MANY_CASES = [case for case in CASES if not case[1]] + [("crammer_singer", True)]


@pytest.mark.parametrize("loss,squared", MANY_CASES)
def test_many_class_curvature_and_flow_match_their_dense_forms(loss, squared):
    # Beyond _UNROLL classes the flow is a segment sum by label and the Hessian-vector
    # products never form [C, C] blocks: both against the one-hot product and jax.hessian.
    dual = continuation.dual_of(loss)
    with x64():
        z, p = _smooth_problem(loss, squared, n=60, k=_dual_parts._UNROLL + 6)
        mu = 0.3
        values, a = dual.smooth(z, p.is_true, 1.0, mu, squared)
        flow = _dual_parts.flow(a, p.is_true, p.c)
        assert_close(flow, (p.is_true * p.c[None, :]) @ a.T, F64_TOL)

        def data_term(b):
            return jnp.sum(p.c * dual.smooth(z + b[:, None], p.is_true, 1.0, mu, squared)[0])

        v = jnp.asarray(np.random.default_rng(5).standard_normal(z.shape[0]))
        expected = jax.jvp(jax.grad(data_term), (jnp.zeros(z.shape[0]),), (v,))[1]
        got = dual.curvature(a, p.c * values, p.is_true, p.c, mu, squared)(v)
        assert_close(got, expected, 1e3 * F64_TOL)


def test_relative_repair_finds_the_laplacians_null_vector():
    # The repair's linear solve against a null vector from the singular value
    # decomposition of the flow's Laplacian, with a class left out of the flow entirely.
    rng = np.random.default_rng(7)
    with x64():
        for k in (4, _dual_parts._UNROLL + 6):
            y = np.arange(200) % (k - 1)  # class k - 1 has no example...
            is_true = jnp.asarray(np.eye(k, dtype=bool)[y].T)
            a = jnp.asarray(rng.uniform(0, 1, (k, 200))).at[k - 1].set(0)  # ...nor any flow
            a = jnp.where(is_true, 0, a)
            c = jnp.asarray(rng.uniform(0.5, 2, 200))
            repaired, ok = duals._repair_relative(a, is_true, c)
            u = duals._relative_map(repaired, is_true, c)
            assert bool(ok)
            assert float(jnp.max(jnp.abs(jnp.sum(u, axis=1)))) <= 1e-9 * float(jnp.sum(c))
            flow = np.asarray((is_true * c[None, :]) @ a.T)[: k - 1, : k - 1]
            laplacian = np.diag(flow.sum(1)) - flow.T
            null = np.linalg.svd(laplacian)[2][-1]
            null = null / null[np.argmax(np.abs(null))]
            ratio = np.asarray(repaired / jnp.where(a > 0, a, 1)).max(axis=0)  # lam[y_i]
            lam = np.array([ratio[y == j][0] for j in range(k - 1)])
            np.testing.assert_allclose(lam / lam.max(), null / null.max(), atol=1e-9)


@pytest.mark.parametrize("loss,squared", MANY_CASES)
def test_conjugate_gradient_intercept_step_is_a_newton_step(loss, squared, monkeypatch):
    # The many-class path (conjugate gradients on Hessian-vector products) forced at five
    # classes: its steps drive the intercept's gradient to zero like the exact Newton step.
    monkeypatch.setattr(_solver_point, "DENSE_NEWTON", 0)
    spec, mu = _solver_point.Spec(loss, squared), 0.3
    with x64():
        z, p = _smooth_problem(loss, squared)
        per, a = _solver_point.smoothed(p, spec, z, mu)
        step = jax.jit(lambda z, per, a: _solver_point.intercept_step(p, spec, z, per, a, mu))
        norms = [float(jnp.linalg.norm(_intercept_gradient(p, loss, a)))]
        for _ in range(10):
            db, new_per, a = step(z, per, a)
            assert float(jnp.sum(new_per - per)) <= 0
            z, per = z + db[:, None], new_per
            norms.append(float(jnp.linalg.norm(_intercept_gradient(p, loss, a))))
        assert norms[-1] <= 1e-8 * norms[0], norms
