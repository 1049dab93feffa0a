"""svmjax against the libraries themselves: the losses against torch's multi_margin_loss and
optax's multiclass_hinge_loss, and each conversion of svmjax.conventions against its peer:
torch (MultiMarginLoss with SGD weight decay), optax (multiclass_hinge_loss with
add_decayed_weights), scikit-learn (LinearSVC's C, SGDClassifier's alpha), Keras (its
formula, re-implemented here: Keras is not installed), cs231n (svmjax.linear.objective)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import F32_TOL, assert_close, random_problem

from svmjax import analytic, conventions, linear, losses
from svmjax.solve import primal_objective, solve


def _torch():
    """torch, the `test` extra's reference (pinned to a CPU build; `make test` installs it):
    a checkout without it, e.g. on a Python whose CPU wheel is not at hand, skips its tests."""
    return pytest.importorskip(
        "torch", reason="torch is the `test` extra: pip install -e '.[test]'"
    )


# ------------------------------------------------------------------------------ the losses


@pytest.mark.parametrize("module", [losses, analytic], ids=["losses", "analytic"])
@pytest.mark.parametrize("margin", [1.0, 0.5])
@pytest.mark.parametrize("squared", [False, True], ids=["p1", "p2"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_weston_watkins_is_C_times_torch_multi_margin_loss(module, margin, squared, weighted):
    torch = _torch()
    scores, labels = random_problem(20, 50, 6, np.float64)
    weights = np.linspace(0.5, 2.0, 6) if weighted else None
    ours = module.weston_watkins(
        scores.astype(np.float32), labels, margin=margin, squared=squared, class_weights=weights
    )
    theirs = torch.nn.functional.multi_margin_loss(
        torch.from_numpy(scores),
        torch.from_numpy(labels.astype(np.int64)),
        p=2 if squared else 1,
        margin=margin,
        weight=None if weights is None else torch.from_numpy(weights),
        reduction="none",
    ).numpy()
    assert_close(ours, 6 * theirs, F32_TOL)  # float32 against torch in float64


@pytest.mark.parametrize("module", [losses, analytic], ids=["losses", "analytic"])
def test_crammer_singer_at_margin_1_is_optax_multiclass_hinge(module):
    scores, labels = random_problem(21, 64, 7, np.float32)
    assert_close(
        module.crammer_singer(scores, labels),
        optax.losses.multiclass_hinge_loss(jnp.asarray(scores), jnp.asarray(labels)),
        F32_TOL,
    )


# ------------------------------------------------------------------------- the conversions


def problem(seed=0, n=60, d=4, k=3):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = 1.5 * rng.standard_normal((k, d))[y] + rng.standard_normal((n, d))
    X = (X - X.mean(0)) / X.std(0)
    W = 0.3 * rng.standard_normal((d, k))
    b = 0.1 * rng.standard_normal(k)
    return X.astype(np.float32), y.astype(np.int32), W.astype(np.float32), b.astype(np.float32)


def scaled_primal_step(W, b, X, y, C, scale, lr, **loss_options):
    """One gradient step on P / scale (b unpenalised), with jax.grad."""

    def objective(params):
        return primal_objective(params, X, y, C=C, **loss_options) / scale

    g = jax.grad(objective)({"W": jnp.asarray(W), "b": jnp.asarray(b)})
    return np.asarray(W - lr * g["W"]), np.asarray(b - lr * g["b"])


def test_round_trips_and_errors():
    assert conventions.C_from_reg(conventions.reg_from_C(0.3, 70), 70) == pytest.approx(0.3)
    assert conventions.C_from_alpha(conventions.alpha_from_C(0.3, 70), 70) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="C must be a finite number > 0"):
        conventions.reg_from_C(0.0, 10)
    with pytest.raises(ValueError, match="n_samples"):
        conventions.alpha_from_C(1.0, 0)


@pytest.mark.parametrize("p, weighted", [(1, False), (2, True)])
def test_torch_multi_margin_loss_with_weight_decay(p, weighted):
    torch = _torch()
    X, y, W, b = problem()
    n, k = len(y), W.shape[1]
    C, lr, margin = 0.7, 0.1, 0.8
    class_weights = np.array([1.0, 2.0, 0.5], np.float32) if weighted else None
    # torch averages over examples *and* divides by the number of classes k.
    decay = conventions.alpha_from_C(C, n) / k
    W_t = torch.tensor(W, requires_grad=True)
    b_t = torch.tensor(b, requires_grad=True)
    weight = None if class_weights is None else torch.tensor(class_weights)
    criterion = torch.nn.MultiMarginLoss(p=p, margin=margin, weight=weight)
    optimizer = torch.optim.SGD(
        [{"params": [W_t], "weight_decay": decay}, {"params": [b_t], "weight_decay": 0.0}], lr=lr
    )
    loss = criterion(torch.tensor(X) @ W_t + b_t, torch.tensor(y, dtype=torch.int64))
    loss.backward()
    optimizer.step()
    options = dict(loss="weston_watkins", squared=p == 2, margin=margin)
    W_j, b_j = scaled_primal_step(
        W, b, X, y, C, C * n * k, lr, class_weights=class_weights, **options
    )
    assert_close(W_t.detach().numpy(), W_j, F32_TOL)
    assert_close(b_t.detach().numpy(), b_j, F32_TOL)
    # And the loss values: svmjax's Weston–Watkins is k times torch's.
    ours = losses.weston_watkins(
        X @ W + b, y, margin=margin, squared=p == 2, class_weights=class_weights
    )
    assert_close(float(jnp.mean(ours)) / k, loss.item(), F32_TOL)


def test_optax_multiclass_hinge_with_decayed_weights():
    X, y, W, b = problem(1)
    n, C, lr = len(y), 0.4, 0.05
    decay = conventions.alpha_from_C(C, n)
    tx = optax.chain(
        optax.masked(optax.add_decayed_weights(decay), {"W": True, "b": False}), optax.sgd(lr)
    )
    params = {"W": jnp.asarray(W), "b": jnp.asarray(b)}

    def mean_loss(params):
        scores = jnp.asarray(X) @ params["W"] + params["b"][None, :]
        return jnp.mean(optax.losses.multiclass_hinge_loss(scores, jnp.asarray(y)))

    updates, _ = tx.update(jax.grad(mean_loss)(params), tx.init(params), params)
    stepped = optax.apply_updates(params, updates)
    W_j, b_j = scaled_primal_step(W, b, X, y, C, C * n, lr, loss="crammer_singer")
    assert_close(stepped["W"], W_j, F32_TOL)
    assert_close(stepped["b"], b_j, F32_TOL)


def keras_categorical_hinge_reference(y_true_one_hot, y_pred):
    """Keras 3's formula (keras/src/losses/losses.py), in NumPy."""
    pos = np.sum(y_true_one_hot * y_pred, axis=-1)
    neg = np.max((1.0 - y_true_one_hot) * y_pred, axis=-1)
    return np.maximum(0.0, neg - pos + 1.0)


def test_keras_categorical_hinge():
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((500, 4)).astype(np.float32)
    scores[:100] -= 3.0  # many rows with every wrong-class score negative
    y = rng.integers(0, 4, 500)
    reference = keras_categorical_hinge_reference(np.eye(4)[y], scores)
    assert_close(conventions.keras_categorical_hinge(scores, y), reference, F32_TOL)
    cs = np.asarray(losses.crammer_singer(scores, y))
    wrong = np.where(np.eye(4, dtype=bool)[y], -np.inf, scores)
    all_negative = np.max(wrong, axis=1) < 0
    assert_close(cs[~all_negative], reference[~all_negative], F32_TOL)
    differs = all_negative & (scores[np.arange(500), y] < 1)  # the hinge is active there
    assert differs.any() and np.all(reference[differs] > cs[differs])
    # Keras's l2(reg) regulariser on a mean-reduced loss is cs231n's reg.
    X, yy, W, _ = problem(3, k=4)
    C = 0.2
    reg = conventions.reg_from_C(C, len(yy))
    keras_objective = np.mean(
        keras_categorical_hinge_reference(np.eye(4)[yy], X @ W)
    ) + reg * np.sum(W**2)
    ours = 0.5 * np.sum(W**2) + C * np.sum(conventions.keras_categorical_hinge(X @ W, yy))
    assert_close(keras_objective, ours / (C * len(yy)), F32_TOL)


def test_cs231n_reg_is_linear_objective():
    X, y, W, b = problem(4)
    reg = 1e-2
    C = conventions.C_from_reg(reg, len(y))
    params = {"W": jnp.asarray(W), "b": jnp.asarray(b)}
    cs231n = linear.objective(params, X, y, reg=reg)
    assert_close(float(cs231n), float(primal_objective(params, X, y, C=C)) / (C * len(y)), F32_TOL)


def _liblinear_svc(**kwargs):
    sklearn_svm = pytest.importorskip("sklearn.svm")
    return sklearn_svm.LinearSVC(tol=1e-8, max_iter=100_000, **kwargs)


@pytest.mark.parametrize(
    "multi_class, sk_loss, loss, squared",
    [
        ("crammer_singer", "hinge", "crammer_singer", False),
        ("ovr", "hinge", "one_vs_rest", False),
        ("ovr", "squared_hinge", "one_vs_rest", True),
    ],
)
def test_liblinear_C_is_svmjax_C(multi_class, sk_loss, loss, squared):
    X, y, _, _ = problem(5)
    C = 0.3
    model = _liblinear_svc(C=C, multi_class=multi_class, loss=sk_loss, fit_intercept=False)
    model.fit(X, y)
    theirs = float(primal_objective({"W": model.coef_.T}, X, y, C=C, loss=loss, squared=squared))
    result = solve(X, y, loss=loss, squared=squared, C=C, tol=1e-4)
    assert float(result.dual) <= theirs * (1 + 1e-5)  # our lower bound holds for theirs
    assert float(result.objective) <= theirs * (1 + 2e-4)
    # 1-strong convexity: both within their suboptimality of the same optimum.
    distance = np.linalg.norm(np.asarray(result.params["W"]) - model.coef_.T)
    assert distance <= np.sqrt(2 * float(result.gap)) + np.sqrt(2 * (theirs - float(result.dual)))


def test_liblinear_intercept_is_a_penalised_feature():
    X, y, _, _ = problem(6)
    C, scaling = 0.3, 2.0
    model = _liblinear_svc(C=C, multi_class="crammer_singer", intercept_scaling=scaling)
    model.fit(X, y)
    Xa = conventions.liblinear_features(X, scaling)
    W_theirs = np.vstack([model.coef_.T, model.intercept_[None, :] / scaling])
    theirs = float(primal_objective({"W": W_theirs}, Xa, y, C=C, loss="crammer_singer"))
    result = solve(Xa, y, loss="crammer_singer", C=C, tol=1e-4)
    assert float(result.dual) <= theirs * (1 + 1e-5)
    assert float(result.objective) <= theirs * (1 + 2e-4)
    W = np.asarray(result.params["W"])
    np.testing.assert_allclose(W[:-1].T, model.coef_, atol=0.05)
    np.testing.assert_allclose(scaling * W[-1], model.intercept_, atol=0.1)


def test_sgdclassifier_alpha():
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y, _, _ = problem(7, n=300, d=5)
    alpha = 0.01
    model = linear_model.SGDClassifier(
        loss="hinge", alpha=alpha, max_iter=3000, tol=None, average=True, random_state=0
    ).fit(X, y)
    params = {"W": model.coef_.T.astype(np.float32), "b": model.intercept_.astype(np.float32)}

    def distance_to_optimum(C):
        result = solve(X, y, loss="one_vs_rest", C=C, fit_intercept=True, tol=1e-4)
        return np.linalg.norm(params["W"] - result.params["W"]) / np.linalg.norm(result.params["W"])

    C = conventions.C_from_alpha(alpha, len(y))
    assert distance_to_optimum(C) < 0.02  # measured 0.002: averaged SGD is at the optimum
    assert distance_to_optimum(2 * C) > 0.05  # a factor 2 off in C is clearly visible
