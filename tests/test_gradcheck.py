"""The gradient-checking tools, checked against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svmjax import gradcheck


def test_x64_is_scoped_and_restored_even_on_error():
    assert not jax.config.jax_enable_x64
    with gradcheck.x64():
        assert jnp.ones(2, jnp.float64).dtype == jnp.float64
    assert not jax.config.jax_enable_x64
    with pytest.raises(RuntimeError, match="boom"), gradcheck.x64():
        raise RuntimeError("boom")
    assert not jax.config.jax_enable_x64
    assert jnp.asarray(1.0).dtype == jnp.float32


def test_numerical_gradient_of_a_pytree_matches_the_closed_form():
    with gradcheck.x64():
        x = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([[3.0]])}

        def f(p):
            return jnp.sum(p["a"] ** 3) + jnp.sin(p["b"][0, 0]) * jnp.sum(p["a"])

        g = gradcheck.numerical_gradient(f, x)
        exact = jax.grad(f)(x)
        assert g["a"].shape == (3,) and g["b"].shape == (1, 1)
        np.testing.assert_allclose(g["a"], 3 * x["a"] ** 2 + np.sin(3.0), rtol=1e-9)
        np.testing.assert_allclose(g["b"], [[np.cos(3.0) * -0.5]], rtol=1e-8)
        assert gradcheck.rel_error(g, exact) < 1e-8


def test_rel_error_is_max_norm_relative():
    assert gradcheck.rel_error(jnp.zeros(3), jnp.zeros(3)) == 0.0
    assert gradcheck.rel_error(jnp.array([1.0, 2.0]), jnp.array([1.0, 2.0])) == 0.0
    a, b = jnp.array([1.0, 100.0]), jnp.array([1.1, 100.0])
    np.testing.assert_allclose(gradcheck.rel_error(a, b), 0.1 / 200.0, rtol=1e-5)
    # Opposite signs: 1, whatever the scale. Pytrees are compared leaf by leaf.
    assert gradcheck.rel_error({"w": jnp.array([3.0])}, {"w": jnp.array([-3.0])}) == 1.0
    with pytest.raises(ValueError, match="sizes differ"):
        gradcheck.rel_error(jnp.zeros(3), jnp.zeros(4))


def test_sparse_check_finds_a_wrong_gradient():
    with gradcheck.x64():
        w = jnp.linspace(-1.0, 2.0, 50)

        def f(w):
            return jnp.sum(w**2)

        good = gradcheck.sparse_check(f, w, 2 * w, key=jax.random.key(0), num_checks=20)
        assert good.shape == (20,) and good.max() < 1e-8
        wrong = (2 * w).at[:].multiply(1.01)
        bad = gradcheck.sparse_check(f, w, wrong, key=jax.random.key(0), num_checks=20)
        assert bad.min() > 1e-3


@pytest.mark.parametrize("loss", ["weston_watkins", "crammer_singer", "one_vs_rest"])
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
def test_compare_float64_meets_the_acceptance_thresholds(loss, squared):
    row = gradcheck.compare(loss, n=100, d=8, c=5, key=jax.random.key(1), squared=squared)
    assert row["dtype"] == "float64" and row["kink_share"] == 0.0
    assert row["analytic_vs_autodiff"] < 1e-12
    assert row["analytic_vs_numeric"] < 1e-7
    assert row["autodiff_vs_numeric"] < 1e-7
    if loss == "weston_watkins" and not squared:
        assert row["closed_form_vs_analytic"] < 1e-12
    else:
        assert row["closed_form_vs_analytic"] is None
    assert not jax.config.jax_enable_x64  # compare restored the setting


def test_compare_float32_and_table():
    row = gradcheck.compare(
        "weston_watkins", n=100, d=8, c=5, key=jax.random.key(1), dtype=jnp.float32
    )
    assert row["dtype"] == "float32"
    assert row["analytic_vs_numeric"] < 1e-3  # float32 gradient vs float64 differences
    table = gradcheck.format_table([row])
    assert "weston_watkins" in table and "float32" in table and len(table.splitlines()) == 3
    with pytest.raises(ValueError, match="unknown loss"):
        gradcheck.compare("hinge", n=4, d=2, c=2, key=jax.random.key(0))


def test_compare_reports_kinks_when_the_data_sits_on_them():
    # A tiny-variance problem puts many Weston-Watkins margins within reach of zero.
    row = gradcheck.compare(
        "weston_watkins", n=400, d=2, c=10, key=jax.random.key(3), margin=0.0, eps=1e-2
    )
    assert row["kink_share"] > 0.0


def test_compare_runs_at_full_matmul_precision(monkeypatch):
    # On a GPU the default float32 product is TF32 (~1e-3): the check must not measure it.
    # CPU ignores the setting, so the setting in force at each objective call is recorded.
    from svmjax import linear

    seen, objective = [], linear.objective

    def recording(*args, **kwargs):
        seen.append(jax.config.jax_default_matmul_precision)
        return objective(*args, **kwargs)

    monkeypatch.setattr(linear, "objective", recording)
    with jax.default_matmul_precision("bfloat16"):
        gradcheck.compare(
            "weston_watkins", n=20, d=3, c=3, key=jax.random.key(2), dtype=jnp.float32
        )
        assert jax.config.jax_default_matmul_precision == "bfloat16"  # restored on exit
    assert seen and set(seen) == {"highest"}
