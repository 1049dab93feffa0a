"""The coordinate method for Crammer–Singer (svmjax.dual_coordinate): its one-example
sub-problem against its optimality conditions and a brute-force search, its solves against
the continuation's in float64 (a different method) with the certificate, and solve's choice
of method."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

from svmjax import dual_coordinate, solve
from svmjax.gradcheck import x64


def _subproblem_value(new, a, v, beta):
    d = new - a
    return float(d @ v - 0.5 * beta * (d @ d + d.sum() ** 2))


@pytest.mark.parametrize("seed", range(6))
def test_threshold_solves_the_one_example_subproblem(seed):
    # a' = (p - theta)_+ must satisfy the sub-problem's optimality conditions (stationarity
    # with a multiplier lam >= 0 of sum(a') <= 1, complementary) and beat every feasible
    # point of a random search.
    rng = np.random.default_rng(seed)
    k, beta = 12, float(rng.uniform(0.1, 5))
    with x64():
        a = rng.dirichlet(np.ones(k)) * rng.uniform(0, 1)
        a[0] = 0.0  # the true class
        a = a * (rng.uniform(size=k) < 0.6)
        v = rng.normal(0, 2, k)
        p = a + v / beta
        p[0] = -np.inf
        theta = float(dual_coordinate._threshold(jnp.asarray(p), jnp.asarray(a.sum())))
    new = np.maximum(p - theta, 0)
    total = new.sum()
    assert total <= 1 + 1e-12 and new[0] == 0
    lam = beta * (theta - (total - a.sum()))  # stationarity: p_j - theta = a'_j on the support
    assert lam >= -1e-9 and (total >= 1 - 1e-9 or abs(lam) <= 1e-9)
    best = _subproblem_value(new, a, v, beta)
    for _ in range(2000):
        trial = rng.dirichlet(np.ones(k)) * rng.uniform(0, 1) * (rng.uniform(size=k) < 0.7)
        trial[0] = 0.0
        assert _subproblem_value(trial, a, v, beta) <= best + 1e-12


def _problem(seed, n=240, d=12, k=70, scale=1.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, scale, (k, d))
    y = rng.integers(0, k, n)
    X = means[y] + rng.normal(0, 1, (n, d))
    return X, y


@pytest.mark.float64
@pytest.mark.parametrize("C, intercept", [(0.05, False), (0.2, True)])
def test_coordinate_solve_meets_the_continuations_optimum(C, intercept):
    X, y = _problem(0)
    if intercept:
        X = X + 3.0  # uncentred: solve centres X and uncentres b
    tol = 1e-5 if intercept else 1e-6
    weights = np.random.default_rng(1).uniform(0, 2, len(y))
    weights[:10] = 0.0  # examples of weight 0 take no part
    with x64():
        settings = dict(loss="crammer_singer", C=C, sample_weight=weights, tol=tol)
        settings["fit_intercept"] = intercept
        ours = solve.solve(X, y, method="coordinate", **settings)
        theirs = solve.solve(X, y, method="continuation", **settings)
        objective = float(
            solve.primal_objective(
                ours.params, X, y, loss="crammer_singer", C=C, sample_weight=weights
            )  # b unpenalised
        )
    assert bool(ours.converged) and bool(theirs.converged)
    assert float(ours.gap) <= tol * float(ours.objective)
    assert abs(objective - float(ours.objective)) <= 1e-10 * objective  # the reported objective
    # Both certified intervals [dual, objective] hold the optimum: they overlap.
    assert float(ours.dual) <= float(theirs.objective) * (1 + 1e-12)
    assert float(theirs.dual) <= float(ours.objective) * (1 + 1e-12)
    assert abs(float(ours.objective) - float(theirs.objective)) <= 2 * tol * objective
    if not intercept:
        assert not np.any(np.asarray(ours.params["b"]))


def test_float32_solve_is_certified_and_reproducible():
    X, y = _problem(2, n=600, d=20, k=80, scale=0.5)
    X = X.astype(np.float32)
    one = solve.solve(X, y, loss="crammer_singer", C=0.1)  # auto: beyond 64 classes
    again = solve.solve(X, y, loss="crammer_singer", C=0.1, key=jax.random.key(0))
    other = solve.solve(X, y, loss="crammer_singer", C=0.1, key=jax.random.key(7))
    assert int(one.n_iter) % dual_coordinate.CERTIFY_EVERY == 0  # passes: the coordinate method
    for result in (one, other):
        assert bool(result.converged) and 0 <= float(result.gap) <= 1e-3 * float(result.objective)
    assert np.array_equal(np.asarray(one.params["W"]), np.asarray(again.params["W"]))
    reference = solve.solve(X, y, loss="crammer_singer", C=0.1, method="continuation")
    assert float(one.dual) <= float(reference.objective) * (1 + 1e-6)
    assert float(reference.dual) <= float(one.objective) * (1 + 1e-6)


@pytest.fixture
def calls(monkeypatch):
    """The class counts of every run of the coordinate method, in order."""
    seen = []
    real = dual_coordinate.run

    def spy(*args, **kwargs):
        seen.append(kwargs["n_classes"])
        return real(*args, **kwargs)

    monkeypatch.setattr(dual_coordinate, "run", spy)
    return seen


def test_auto_picks_the_coordinate_method_only_where_it_applies(calls):
    X, y = _problem(3, n=200, d=6, k=66)
    X = X.astype(np.float32)
    solve.solve(X, y, loss="crammer_singer", C=0.1, max_iter=5, fit_intercept=True)
    assert calls == [66]
    solve.solve(X, y % 8, loss="crammer_singer", C=0.1, max_iter=5)  # 8 classes: continuation
    assert calls == [66]
    solve.solve(X, y % 8, loss="crammer_singer", C=0.1, max_iter=5, method="coordinate")
    assert calls == [66, 8]
    # Which settings "auto" gives the coordinate method (the class count aside), on CPU:
    plain = dict(loss="crammer_singer", squared=False, options=(), init=None, mesh=None)
    plain |= dict(sparse=False, n_classes=65)
    assert dual_coordinate.applies("auto", **plain) == (jax.default_backend() == "cpu")
    assert not dual_coordinate.applies("auto", **(plain | dict(n_classes=64)))
    for change in (
        dict(loss="weston_watkins"),
        dict(squared=True),
        dict(options=(("k", 2),)),
        dict(init={"W": None}),
        dict(sparse=True),
    ):
        assert not dual_coordinate.applies("auto", **(plain | change))
        assert not dual_coordinate.applies("continuation", **(plain | change))
    assert not dual_coordinate.applies("continuation", **plain)


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(sparse=True), "sparse X"),
        (dict(squared=True), "squared=True"),
        (dict(loss="one_vs_rest"), "loss 'one_vs_rest'"),
        (dict(init={"W": np.zeros((6, 5)), "b": np.zeros(5)}), "init"),
    ],
)
def test_coordinate_method_refuses_what_it_does_not_solve(options, named):
    X, y = _problem(4, n=40, d=6, k=5)
    if options.pop("sparse", False):
        X = scipy.sparse.csr_matrix(X)
    settings = dict(loss="crammer_singer", method="coordinate") | options
    with pytest.raises(ValueError, match="method='coordinate'") as error:
        solve.solve(X, y, **settings)
    assert named in str(error.value)


def test_unknown_method_is_refused():
    X, y = _problem(4, n=40, d=6, k=5)
    with pytest.raises(ValueError, match="method must be one of"):
        solve.solve(X, y, loss="crammer_singer", method="newton")


def test_a_path_on_many_classes_takes_the_coordinate_method_for_every_C(calls):
    X, y = _problem(5, n=200, d=6, k=66)
    X = X.astype(np.float32)
    path = solve.solve_path(X, y, [0.3, 0.1], loss="crammer_singer")
    assert calls == [66, 66]  # each from zero, not a warm-started continuation
    alone = solve.solve(X, y, loss="crammer_singer", C=0.3)
    assert np.array_equal(np.asarray(path[0].params["W"]), np.asarray(alone.params["W"]))
    assert all(bool(r.converged) for r in path)
    solve.solve_path(X, y % 8, [0.3, 0.1], loss="crammer_singer", max_iter=5)
    assert calls == [66, 66, 66]  # 8 classes: the continuation, warm-started
