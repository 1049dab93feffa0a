"""The loss family works everywhere a loss is named: training, grids, the solver's refusal,
the estimator, gradient checks and the command line; and a loss added through the registry
alone is picked up by all of them."""

import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svmjax import cli, data, gradcheck, grid, linear, registry, solve, train
from svmjax._loss_parts import one_hot, prepare, true_score, weigh
from svmjax.estimator import SVMClassifier

# The options a loss needs to be more than its default (k = 1 top-k is Crammer–Singer).
OPTIONS = {
    "top_k_hinge": {"k": 2},
    "smooth_top_k": {"k": 2, "tau": 0.5},
    "reinforced_hinge": {"gamma": 0.3},
}
CONSTRAINED = tuple(n for n in registry.names() if registry.get(n).constraint == "sum_to_zero")
GRADS = ("analytic", "autodiff")
# max |sum_c W[:, c]| (and |sum_c b_c|) relative to max |W| after projected training, float32
SUM_TO_ZERO_RTOL = 1e-6
# analytic vs autodiff vs centred differences in float64, away from kinks
GRAD_RTOL = 1e-7


@functools.cache
def blobs():
    ds = data.load("blobs", key=jax.random.key(0), n=120, d=5, c=4)
    return ds.X_train, ds.y_train, ds.X_test, ds.y_test


def init(d=5, c=4):
    return linear.init(jax.random.key(1), d, c)


def sum_to_zero_error(params):
    W = np.asarray(params["W"], np.float64)
    b = np.asarray(params["b"], np.float64)
    scale = max(np.abs(W).max(), 1e-30)
    return max(np.abs(W.sum(axis=-1)).max(), np.abs(b.sum(axis=-1)).max()) / scale


# ------------------------------------------------------------------------------ a toy loss


def _toy_pure(scores, labels, *, margin=1.0, squared=False, class_weights=None, scale=1.0):
    """Softplus of the Weston–Watkins margins, times ``scale``: smooth, so both gradients agree
    everywhere."""
    if squared:
        raise ValueError("the toy loss has no squared form")
    scores, _, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    v = scores - true_score(scores, is_true)[..., None] + margin
    loss = scale * jnp.sum(jnp.where(is_true, 0, jax.nn.softplus(v)), axis=-1)
    return weigh(loss, is_true, class_weights)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _toy(scale, scores, labels, margin):
    return _toy_fwd(scale, scores, labels, margin)[0]


def _toy_fwd(scale, scores, labels, margin):
    is_true = one_hot(labels, scores.shape[-1])
    v = scores - true_score(scores, is_true)[..., None] + margin
    loss = scale * jnp.sum(jnp.where(is_true, 0, jax.nn.softplus(v)), axis=-1)
    return loss, (is_true, jnp.where(is_true, 0, scale * jax.nn.sigmoid(v)))


def _toy_bwd(scale, residuals, g):
    is_true, coef = residuals
    count = jnp.sum(coef, axis=-1)
    d_scores = g[..., None] * (coef - jnp.where(is_true, count[..., None], 0))
    return d_scores, None, jnp.sum(g * count)


_toy.defvjp(_toy_fwd, _toy_bwd)


def _toy_analytic(scores, labels, *, margin=1.0, squared=False, class_weights=None, scale=1.0):
    if squared:
        raise ValueError("the toy loss has no squared form")
    scores, labels, is_true, margin, class_weights = prepare(scores, labels, margin, class_weights)
    return weigh(_toy(float(scale), scores, labels, margin), is_true, class_weights)


@pytest.fixture
def toy():
    name = "toy_softplus"
    registry.register(registry.Loss(name, _toy_pure, _toy_analytic, options=("scale",)))
    try:
        yield name
    finally:
        registry.unregister(name)
    assert name not in registry.names()


def test_toy_loss_through_the_registry_alone(toy):
    assert toy in registry.names() and toy not in registry.names(solver=True)
    X, y, X_test, y_test = blobs()
    for grad in GRADS:
        params, history = train.fit(
            init(), X, y, key=jax.random.key(2), loss=toy, grad=grad, epochs=3,
            batch_size=32, loss_options={"scale": 2.0},
        )  # fmt: skip
        assert np.all(np.isfinite(history["objective"]))
        assert history["objective"][-1] < history["objective"][0]
        assert np.mean(np.asarray(linear.predict(params, X_test)) == y_test) > 0.5
        result = grid.fit_grid(
            init(), X, y, key=jax.random.key(2), loss=toy, grad=grad, learning_rates=(0.1,),
            regs=(0.0, 1e-2), epochs=1, batch_size=32, validation=(X_test, y_test),
        )  # fmt: skip
        assert np.all(np.isfinite(result.history["objective"]))
    row = gradcheck.compare(toy, n=20, d=3, c=4, key=jax.random.key(3))
    assert row["kink_share"] is None  # no kinks registered
    assert max(row["analytic_vs_autodiff"], row["analytic_vs_numeric"]) < GRAD_RTOL
    with pytest.raises(ValueError, match=f"{toy}.*no dual.*weston_watkins, crammer_singer"):
        solve.solve(np.asarray(X), np.asarray(y), loss=toy)
    with pytest.raises(ValueError, match=r"no option 'k' \(its options: scale\)"):
        train.fit(init(), X, y, key=jax.random.key(2), loss=toy, loss_options={"k": 2})


def test_toy_loss_is_a_choice_of_the_command_line(toy, capsys):
    assert cli.main(["train", "--loss", toy, "--dataset", "blobs", "--epochs", "1", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["loss"] == toy and np.isfinite(metrics["final_objective"])


# --------------------------------------------------------------------- every registered loss


@pytest.mark.parametrize("name", registry.names())
def test_every_loss_trains_with_both_gradients(name):
    X, y, X_test, y_test = blobs()
    objectives = {}
    for grad in GRADS:
        params, history = train.fit(
            init(), X, y, key=jax.random.key(2), loss=name, grad=grad, epochs=2,
            batch_size=32, loss_options=OPTIONS.get(name), reg=1e-3,
        )  # fmt: skip
        assert np.all(np.isfinite(history["objective"])), (name, grad)
        assert np.mean(np.asarray(linear.predict(params, X_test)) == y_test) > 0.5, (name, grad)
        objectives[grad] = history["objective"]
        if name in CONSTRAINED:
            assert sum_to_zero_error(params) < SUM_TO_ZERO_RTOL, (name, grad)
    # the same batches, the same gradients away from kinks: the same objectives to rounding
    np.testing.assert_allclose(objectives["analytic"], objectives["autodiff"], rtol=1e-3)


def test_loss_options_pass_through_and_unknown_ones_raise():
    X, y, _, _ = blobs()

    def objective(name, options):
        return float(linear.objective(init(), X, y, loss=name, loss_options=options))

    assert objective("top_k_hinge", {"k": 2}) < objective("top_k_hinge", {"k": 1})
    assert objective("smooth_top_k", {"k": 2, "tau": 0.5}) != objective("smooth_top_k", {"k": 2})
    assert objective("reinforced_hinge", {"gamma": 0.1}) != objective("reinforced_hinge", {})
    cases = {
        "top_k_hinge": ("tau", "k, variant"),
        "smooth_top_k": ("gamma", "k, tau"),
        "reinforced_hinge": ("k", "gamma"),
        "weston_watkins": ("k", "none"),
    }
    for name, (bad, accepted) in cases.items():
        message = rf"loss '{name}' has no option '{bad}' \(its options: {accepted}\)"
        with pytest.raises(ValueError, match=message):
            train.fit(init(), X, y, key=jax.random.key(2), loss=name, loss_options={bad: 1})
        with pytest.raises(ValueError, match=message):
            grid.fit_grid(init(), X, y, key=jax.random.key(2), loss=name, loss_options={bad: 1})
    with pytest.raises(ValueError, match="k must be an integer in"):  # a bad value, eagerly
        train.fit(init(), X, y, key=jax.random.key(2), loss="top_k_hinge", loss_options={"k": 9})


@pytest.mark.parametrize("name", CONSTRAINED)
def test_sum_to_zero_holds_after_fit_grid(name):
    X, y, X_test, y_test = blobs()
    result = grid.fit_grid(
        init(), X, y, key=jax.random.key(2), loss=name, learning_rates=(0.1, 0.3),
        regs=(0.0, 1e-3), epochs=3, batch_size=32, optimizer="momentum",
        loss_options=OPTIONS.get(name), validation=(X_test, y_test),
    )  # fmt: skip
    for k in range(len(result.configs)):
        params = jax.tree.map(lambda p, k=k: p[k], result.params)
        assert sum_to_zero_error(params) < SUM_TO_ZERO_RTOL, (name, result.configs[k])


# ------------------------------------------------------------------ solver and estimator


def test_exact_solver_refuses_a_loss_without_a_dual(toy):
    # Every built-in machine has a dual (svmjax.family_duals); a user's loss without one,
    # and a setting no derivation covers, are refused with their reasons.
    X, y, _, _ = blobs()
    solvers = ", ".join(registry.names(solver=True))
    assert "lee_lin_wahba" in solvers and toy not in solvers
    with pytest.raises(ValueError, match=f"'{toy}'.*{solvers}"):
        solve.solve(np.asarray(X), np.asarray(y), loss=toy)
    with pytest.raises(ValueError, match=f"{solvers} for solver='exact', got '{toy}'"):
        SVMClassifier(loss=toy).fit(np.asarray(X), np.asarray(y))
    with pytest.raises(ValueError, match="smooth_top_k with k=2 has no duality-gap certificate"):
        solve.solve(np.asarray(X), np.asarray(y), loss="smooth_top_k", loss_options={"k": 2})


def test_estimator_sgd_fits_a_constrained_loss():
    X, y, X_test, y_test = (np.asarray(a) for a in blobs())
    labels = np.array(["a", "b", "c", "d"])
    clf = SVMClassifier(loss="lee_lin_wahba", solver="sgd", max_iter=10, random_state=0)
    clf.fit(X, labels[y])
    assert clf.coef_.shape == (4, 5) and np.isfinite(clf.objective_)
    assert np.mean(clf.predict(X_test) == labels[y_test]) > 0.5
    assert sum_to_zero_error({"W": clf.coef_.T, "b": clf.intercept_}) < SUM_TO_ZERO_RTOL


# ------------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("name", registry.names())
def test_gradcheck_compare_every_loss(name):
    row = gradcheck.compare(
        name, n=24, d=3, c=5, key=jax.random.key(4), loss_options=OPTIONS.get(name)
    )
    assert row["loss"] == name
    if row["kink_share"] is None or row["kink_share"] == 0:  # away from kinks all three agree
        assert row["analytic_vs_autodiff"] < GRAD_RTOL, row
        assert row["analytic_vs_numeric"] < GRAD_RTOL, row
        assert row["autodiff_vs_numeric"] < GRAD_RTOL, row


# ----------------------------------------------------------------------------- command line


def test_command_line_trains_a_new_loss(tmp_path):
    command = [sys.executable, "-m", "svmjax.cli", "train", "--loss", "top_k_hinge"]
    command += ["--dataset", "blobs", "--epochs", "1", "--json", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["loss"] == "top_k_hinge" and np.isfinite(metrics["final_objective"])


def test_estimator_passes_loss_options():
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    X = rng.standard_normal((3, 4))[y] * 2 + rng.standard_normal((90, 4))
    fit = dict(solver="sgd", max_iter=3, random_state=0)
    clf = SVMClassifier(loss="top_k_hinge", loss_options={"k": 2}, **fit).fit(X, y)
    assert clf.score(X, y) > 0.5 and np.isfinite(clf.objective_)
    other = SVMClassifier(loss="top_k_hinge", loss_options={"k": 1}, **fit).fit(X, y)
    assert not np.allclose(clf.coef_, other.coef_)  # the option reached the loss
    with pytest.raises(ValueError, match="has no option 'tau'"):
        SVMClassifier(loss="top_k_hinge", loss_options={"tau": 1.0}, **fit).fit(X, y)
