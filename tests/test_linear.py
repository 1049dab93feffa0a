"""The linear model: closed form, analytic, autodiff and a naive loop give the same dW."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F32_TOL, LOSS_NAMES, TOL, assert_close

from svmjax import linear


def naive_weston_watkins_dW(W, X, y, reg, margin):
    """cs231n's svm_loss_naive: loops over examples and classes."""
    W, X = np.asarray(W, np.float64), np.asarray(X, np.float64)
    dW, loss = np.zeros_like(W), 0.0
    for i in range(X.shape[0]):
        s = X[i] @ W
        for j in range(W.shape[1]):
            if j == y[i]:
                continue
            v = s[j] - s[y[i]] + margin
            if v > 0:
                loss += v
                dW[:, j] += X[i]
                dW[:, y[i]] -= X[i]
    n = X.shape[0]
    return loss / n + reg * np.sum(W * W), dW / n + 2 * reg * W


def problem(seed, n, d, c, dtype):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, c, n).astype(np.int32)
    W = (rng.standard_normal((d, c)) / np.sqrt(d)).astype(dtype)
    return W, X, y


@pytest.mark.parametrize("margin", [1.0, 0.5])
@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_four_ways_to_dW_agree(dtype, margin, reg):
    W, X, y = problem(0, 80, 12, 6, dtype)
    want_loss, want_dW = naive_weston_watkins_dW(W, X, y, reg, margin)
    loss, dW = jax.jit(linear.weston_watkins_closed_form)(W, X, y, reg=reg, margin=margin)
    params = {"W": jnp.asarray(W), "b": jnp.zeros(6, dtype)}
    assert_close(loss, want_loss, TOL[dtype])
    assert_close(dW, want_dW, TOL[dtype])
    for grad in ("analytic", "autodiff"):
        value, g = jax.jit(jax.value_and_grad(linear.objective), static_argnames="grad")(
            params, X, y, reg=reg, margin=margin, grad=grad
        )
        assert g["W"].dtype == dtype
        assert_close(value, want_loss, TOL[dtype], grad)
        assert_close(g["W"], want_dW, TOL[dtype], grad)


def test_closed_form_by_hand():
    # One example, scores [2, 1.5, -1], true class 0, margin 1: only class 1 violates
    # (v = 0.5), so M = [[-1, 1, 0]] and dW = x^T M.
    X = jnp.array([[1.0, 2.0]])
    W = jnp.array([[2.0, 1.5, -1.0], [0.0, 0.0, 0.0]])
    loss, dW = linear.weston_watkins_closed_form(W, X, jnp.array([0]))
    assert float(loss) == 0.5
    np.testing.assert_array_equal(dW, [[-1.0, 1.0, 0.0], [-2.0, 2.0, 0.0]])
    assert dW.shape == W.shape  # [D, C], not the [N, D] of the common X * count mistake


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
def test_objective_gradients_analytic_vs_autodiff(loss, squared):
    W, X, y = problem(1, 64, 10, 5, np.float32)
    params = {"W": jnp.asarray(W), "b": jnp.linspace(-0.1, 0.1, 5)}
    options = dict(loss=loss, squared=squared, reg=0.05, class_weights=jnp.linspace(0.5, 2, 5))
    g_a = jax.grad(linear.objective)(params, X, y, grad="analytic", **options)
    g_b = jax.grad(linear.objective)(params, X, y, grad="autodiff", **options)
    for name in ("W", "b"):
        assert_close(g_a[name], g_b[name], F32_TOL, name)


def test_bias_is_not_regularised_and_objective_is_the_mean():
    W, X, y = problem(2, 30, 4, 3, np.float32)
    params = {"W": jnp.asarray(W), "b": jnp.array([5.0, -5.0, 0.0])}
    base = linear.objective(params, X, y)
    scores = X @ W + params["b"][None, :]
    from svmjax import losses

    assert_close(base, np.mean(losses.weston_watkins(scores, y)), F32_TOL)
    with_reg = linear.objective(params, X, y, reg=0.5)
    assert_close(with_reg - base, 0.5 * np.sum(W**2), F32_TOL)


def test_sample_weight_is_a_weighted_mean_and_masks():
    W, X, y = problem(3, 10, 4, 3, np.float32)
    params = {"W": jnp.asarray(W), "b": jnp.zeros(3)}
    mask = jnp.array([1.0] * 6 + [0.0] * 4)
    masked = linear.objective(params, X, y, sample_weight=mask)
    assert_close(masked, linear.objective(params, X[:6], y[:6]), F32_TOL)
    g = jax.grad(linear.objective)(params, X, y, sample_weight=mask)
    g6 = jax.grad(linear.objective)(params, X[:6], y[:6])
    assert_close(g, g6, F32_TOL)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(10,\)"):
        linear.objective(params, X, y, sample_weight=jnp.ones(9))


def test_init_scores_predict():
    params = linear.init(jax.random.key(0), 7, 4, scale=0.01)
    assert params["W"].shape == (7, 4) and params["b"].shape == (4,)
    assert 0.001 < float(jnp.std(params["W"])) < 0.05
    np.testing.assert_array_equal(params["b"], 0)
    again = linear.init(jax.random.key(0), 7, 4, scale=0.01)
    np.testing.assert_array_equal(params["W"], again["W"])  # same key, same bits
    X = jnp.eye(7)[:3]
    np.testing.assert_allclose(linear.scores(params, X), params["W"][:3])
    np.testing.assert_array_equal(linear.predict(params, X), jnp.argmax(params["W"][:3], axis=1))


def test_bad_model_inputs_name_the_problem():
    params = linear.init(jax.random.key(0), 3, 2)
    with pytest.raises(ValueError, match=r"X must have shape \[N, 3\] to match W"):
        linear.scores(params, jnp.ones((4, 5)))
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        linear.objective(params, jnp.ones((4, 3)), jnp.zeros(4, int), loss="hinge")
    with pytest.raises(ValueError, match="unknown grad 'numeric'"):
        linear.objective(params, jnp.ones((4, 3)), jnp.zeros(4, int), grad="numeric")
    with pytest.raises(ValueError, match="label 2 at position 1 is outside"):
        linear.objective(params, jnp.ones((4, 3)), jnp.array([0, 2, 1, 0]))
    with pytest.raises(ValueError, match="n_classes >= 2, got 3, 1"):
        linear.init(jax.random.key(0), 3, 1)


def test_out_of_range_label_under_jit_makes_objective_and_gradient_nan():
    params = linear.init(jax.random.key(0), 3, 2)
    X, y = jnp.ones((4, 3)), jnp.array([0, 2, 1, 0])
    for grad in ("analytic", "autodiff"):
        value, g = jax.jit(jax.value_and_grad(linear.objective), static_argnames="grad")(
            params, X, y, grad=grad
        )
        assert np.isnan(value) and np.isnan(g["W"]).any(), grad
    loss, dW = jax.jit(linear.weston_watkins_closed_form)(params["W"], X, y)
    assert np.isnan(loss) and np.isnan(dW).any()
