"""Sweeps over folds and hyperparameters: cross-validation folds share one solver program,
``fit_grid`` trains a grid of configurations as one program, ``solve_path`` follows a path
of ``C`` values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F32_TOL, assert_close

from svmjax import continuation, grid, solve
from svmjax._epoch import _accuracies, gather_batches
from svmjax.gradcheck import x64


def _digits(n=1437):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(0)) / np.maximum(X.std(0), 1e-6)
    return X[:n].astype(np.float32), y[:n].astype(np.int32)


def test_cross_validation_folds_share_one_solver_program():
    from sklearn.model_selection import KFold

    X, y = _digits(1797)
    sizes = {len(train) for train, _ in KFold(5).split(X)}
    assert len({solve._bucket(n, 512, 8) for n in sizes}) == 1  # 1437 and 1438: one bucket
    before = continuation.run._cache_size()
    # every fold, with and without intercept, class weights or sample weights, any C, tol
    cases = [
        dict(fit_intercept=True),
        dict(fit_intercept=False, C=0.3),
        dict(class_weights=np.linspace(0.5, 2, 10), tol=1e-2),
        dict(sample_weight=True, max_iter=7),
    ]

    def run(X, y, case):
        case = dict(case) | {"max_iter": 5}
        if case.pop("sample_weight", False):
            case["sample_weight"] = np.linspace(0.5, 1.5, len(y))
        solve.solve(X, y, loss="crammer_singer", **case)

    for i, (train, _) in enumerate(KFold(5).split(X)):
        run(X[train], y[train], cases[i % len(cases)])
    for case in cases:
        run(X[:1450], y[:1450], case)
    assert continuation.run._cache_size() - before <= 1  # 1437, 1438 and 1450 rows: 1536


def test_group_scores_gradient_matches_autodiff():
    rng = np.random.default_rng(0)
    W = jnp.asarray(rng.standard_normal((3, 5, 4)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)
    X = jnp.asarray(rng.standard_normal((7, 5)), jnp.float32)
    T = jnp.asarray(rng.standard_normal((3, 7, 4)), jnp.float32)

    def reference(W, b, X):
        return jnp.einsum("nd,gdc->gnc", X, W) + b[:, None, :]

    def loss(f):
        return lambda W, b, X: jnp.sum(jnp.tanh(f(W, b, X)) * T)

    assert_close(grid._group_scores(W, b, X), reference(W, b, X), F32_TOL)
    ours = jax.grad(loss(grid._group_scores), argnums=(0, 1, 2))(W, b, X)
    theirs = jax.grad(loss(reference), argnums=(0, 1, 2))(W, b, X)
    for a, e, name in zip(ours, theirs, "WbX", strict=True):
        assert_close(a, e, F32_TOL, name)


def test_group_accuracy_and_top_k_are_each_models_ties_to_the_first_class():
    # Small integers: every score is exact in float32 whatever the order of the sums, so
    # the ties are ties on any machine.
    rng = np.random.default_rng(1)
    W = rng.integers(-3, 4, (4, 5, 3)).astype(np.float32)
    W[1] = 0  # every score tied: the first class is predicted
    W[2, :, 2] = W[2, :, 0]  # classes 0 and 2 tied: 0 wins
    b = rng.integers(-2, 3, (4, 3)).astype(np.float32)
    b[1] = 0
    b[2, 2] = b[2, 0]
    X = rng.integers(-2, 3, (50, 5)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    correct, in_top2 = [], []
    for g in range(4):
        scores = X @ W[g] + b[g]
        predicted = [np.flatnonzero(row == row.max())[0] for row in scores]
        correct.append(np.sum(np.asarray(predicted) == y))
        # top 2: the true class among the two first of a stable sort by decreasing score
        top2 = [np.argsort(-row, kind="stable")[:2] for row in scores]
        in_top2.append(sum(t in top for t, top in zip(y, top2, strict=True)))
    params = {"W": jnp.asarray(W), "b": jnp.asarray(b)}
    got = grid._group_accuracies(params, jnp.asarray(X), jnp.asarray(y), top_k=(2,))
    np.testing.assert_array_equal(np.round(np.asarray(got) * 50), [correct, in_top2])
    assert correct[1] == np.sum(y == 0) and in_top2[1] == np.sum(y <= 1)
    # fit's epoch: the same rule, model by model
    for g in range(4):
        one = jax.tree.map(lambda x, g=g: x[g], params)
        rates = _accuracies(one, jnp.asarray(X), jnp.asarray(y), None, (2,))
        np.testing.assert_array_equal(np.round(np.asarray(rates) * 50), [correct[g], in_top2[g]])


@pytest.mark.parametrize("seeds", [(0,), (0, 3, 3)])
def test_fit_grid_groups_by_seed_and_keeps_config_order(seeds):
    X, y = _digits(200)
    params = {"W": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
    result = grid.fit_grid(
        params,
        X,
        y,
        key=jax.random.key(0),
        learning_rates=(0.01, 0.1),
        regs=(0.0, 1e-2),
        seeds=seeds,
        epochs=2,
        batch_size=64,
    )
    k = 4 * len(seeds)
    assert result.params["W"].shape == (k, 64, 10) and result.history["objective"].shape == (k, 2)
    by_config = {config: result.params["W"][i] for i, config in enumerate(result.configs)}
    # the same seed twice: identical runs; a different learning rate: a different run
    if len(seeds) == 3:
        for i, config in enumerate(result.configs):
            if config[2] == 3:
                twin = result.configs.index(config)  # the first with this (lr, reg, seed)
                np.testing.assert_array_equal(result.params["W"][i], result.params["W"][twin])
    assert not np.allclose(by_config[(0.01, 0.0, 0)], by_config[(0.1, 0.0, 0)])


def test_fit_grid_gathers_once_per_epoch_or_per_step_with_the_same_result(monkeypatch):
    # X in batch order once per epoch (one copy per seed) while the copies fit the budget,
    # else batch by batch; the same batches either way.
    X, y = _digits(200)
    params = {"W": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
    options = dict(key=jax.random.key(0), learning_rates=(0.01, 0.1), seeds=(0, 1), epochs=2)
    gathered = []  # the rank of each order gathered: 2 for an epoch, 1 for a batch

    def gather(X, y, order):
        gathered.append(order.ndim)
        return gather_batches(X, y, order)

    def fresh_program(*_):  # a new function each call: traced again, with the patches
        def epoch(*args, **kwargs):
            return grid._epoch(*args, **kwargs)

        return jax.jit(epoch, static_argnames=("static", "mesh"))

    monkeypatch.setattr(grid, "gather_batches", gather)
    monkeypatch.setattr(grid, "_epoch_program", fresh_program)
    once = grid.fit_grid(params, X, y, batch_size=64, **options)
    assert gathered == [2]
    monkeypatch.setattr("svmjax._epoch.GATHER_ONCE_BYTES", X.nbytes)  # one copy fits, two not
    stepwise = grid.fit_grid(params, X, y, batch_size=64, **options)
    assert gathered == [2, 1]
    assert_close(once.params["W"], stepwise.params["W"], F32_TOL, "W")
    assert_close(once.history["objective"], stepwise.history["objective"], F32_TOL)


def test_fit_grid_picks_its_epoch_program_by_shape_and_both_give_the_same_run(monkeypatch):
    # The rule: XLA's own matrix products for a group of >= 128 score columns on <= 128
    # features, YNNPACK's otherwise (and always with a mesh).
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("configs",))
    assert grid._epoch_program(640, 40, None) is grid._grid_epoch_xla_dots
    assert grid._epoch_program(640, 784, None) is grid._grid_epoch
    assert grid._epoch_program(80, 40, None) is grid._grid_epoch
    assert grid._epoch_program(640, 40, mesh) is grid._grid_epoch
    # digits: 64 features, 16 configurations x 10 classes, so the XLA-dots program; the
    # same run forced through the other one agrees to float rounding.
    X, y = _digits(300)
    params = {"W": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
    options = dict(key=jax.random.key(0), learning_rates=tuple(np.geomspace(1e-3, 0.3, 16)))
    options |= dict(regs=(1e-3,), epochs=2, batch_size=64, validation=(X[:50], y[:50]))
    used = []
    original = grid._epoch_program
    monkeypatch.setattr(grid, "_epoch_program", lambda *a: used.append(original(*a)) or used[-1])
    xla = grid.fit_grid(params, X, y, **options)
    monkeypatch.setattr(grid, "_epoch_program", lambda *a: grid._grid_epoch)
    library = grid.fit_grid(params, X, y, **options)
    assert used == [grid._grid_epoch_xla_dots]
    assert_close(xla.params["W"], library.params["W"], F32_TOL, "W")
    assert_close(xla.params["b"], library.params["b"], F32_TOL, "b")
    assert_close(xla.history["objective"], library.history["objective"], F32_TOL, "objective")
    # a prediction may flip where two classes' scores differ by rounding: one of 50 at most
    gap = np.abs(xla.history["val_accuracy"] - library.history["val_accuracy"])
    assert gap.max() <= 1 / 50 + 1e-6


@pytest.mark.parametrize(
    "loss, fit_intercept", [("crammer_singer", True), ("weston_watkins", False)]
)
def test_solve_path_matches_independent_solves(loss, fit_intercept):
    X, y = _digits(300)
    Cs, tol = [0.3, 0.01, 0.1, 1.0], 1e-5
    options = dict(loss=loss, fit_intercept=fit_intercept, tol=tol)
    with x64():  # float32 stalls near 1e-4 (see svmjax.solve); the test needs a tight tol
        X = X.astype(np.float64)
        path = solve.solve_path(X, y, Cs, **options)
        assert len(path) == len(Cs)
        for C, result in zip(Cs, path, strict=True):
            alone = solve.solve(X, y, C=C, **options)
            assert bool(result.converged) and bool(alone.converged)
            # both certified within tol of the optimum: the objectives agree to 2 tol
            gap = abs(float(result.objective) - float(alone.objective))
            assert gap <= 2 * tol * float(alone.objective)
            objective = solve.primal_objective(result.params, X, y, C=C, loss=loss)
            np.testing.assert_allclose(objective, result.objective, rtol=1e-9)


def test_solve_path_refuses_C_and_init():
    X, y = _digits(50)
    with pytest.raises(ValueError, match="third argument"):
        solve.solve_path(X, y, [1.0], C=2.0)
    with pytest.raises(ValueError, match="C must be"):
        solve.solve_path(X, y, [1.0, -1.0])
