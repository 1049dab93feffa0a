"""Every public function that takes a key accepts a typed key (``jax.random.key``) and a
legacy raw key (``jax.random.PRNGKey``, uint32 data), and the same seed gives the same bits
either way."""

import jax
import numpy as np
import pytest

import svmjax
from svmjax import data, grid, linear, sharding, train
from svmjax._checks import as_key

SEED = 3


def _equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)  # bits promised: the same program


def _problem():
    rng = np.random.default_rng(0)
    y = (np.arange(60) % 3).astype(np.int32)
    X = (rng.standard_normal((3, 4))[y] + rng.standard_normal((60, 4))).astype(np.float32)
    return X, y


@pytest.fixture(params=["typed", "raw"])
def key(request):
    return jax.random.key(SEED) if request.param == "typed" else jax.random.PRNGKey(SEED)


def test_as_key_gives_the_typed_key_of_the_same_seed(key):
    typed = as_key(key)
    assert jax.dtypes.issubdtype(typed.dtype, jax.dtypes.prng_key) and typed.shape == ()
    _equal(jax.random.key_data(typed), jax.random.key_data(jax.random.key(SEED)))
    _equal(jax.random.normal(typed, (5,)), jax.random.normal(jax.random.key(SEED), (5,)))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(2, np.float32), "key must be a JAX PRNG key"),
        (np.zeros(3, np.uint32), r"raw key must be uint32 of shape \(2,\)"),
        (7, "key must be a JAX PRNG key"),
        (jax.random.split(jax.random.key(0), 2), "a single key"),
    ],
)
def test_a_bad_key_is_named(bad, message):
    with pytest.raises(TypeError, match=message):
        as_key(bad)


def test_linear_init(key):
    _equal(linear.init(key, 4, 3), linear.init(jax.random.key(SEED), 4, 3))


def test_fit_and_fit_grid(key):
    X, y = _problem()
    params = linear.init(jax.random.key(0), 4, 3)
    run = dict(epochs=2, batch_size=16)
    _equal(
        train.fit(params, X, y, key=key, **run),
        train.fit(params, X, y, key=jax.random.key(SEED), **run),
    )
    options = dict(learning_rates=(0.1,), regs=(0.0,), seeds=(0, 1), **run)
    a = grid.fit_grid(params, X, y, key=key, **options)
    b = grid.fit_grid(params, X, y, key=jax.random.key(SEED), **options)
    _equal(a.params, b.params)


def test_fit_on_a_mesh(key):
    X, y = _problem()
    params = linear.init(jax.random.key(0), 4, 3)
    mesh = sharding.data_mesh()
    run = dict(epochs=1, batch_size=16, mesh=mesh)
    _equal(
        train.fit(params, X, y, key=key, **run)[0],
        train.fit(params, X, y, key=jax.random.key(SEED), **run)[0],
    )


def test_data_load(key):
    a = data.load("blobs", key=key, n=90, d=3, c=3)
    b = data.load("blobs", key=jax.random.key(SEED), n=90, d=3, c=3)
    _equal((a.X_train, a.y_train, a.X_test), (b.X_train, b.y_train, b.X_test))


def test_estimator_random_state(key):
    pytest.importorskip("sklearn")
    X, y = _problem()
    fit = dict(solver="sgd", max_iter=2)
    a = svmjax.SVMClassifier(random_state=key, **fit).fit(X, y)
    b = svmjax.SVMClassifier(random_state=jax.random.key(SEED), **fit).fit(X, y)
    _equal(a.coef_, b.coef_)
    c = svmjax.SVMClassifier(random_state=5, **fit).fit(X, y)  # sklearn's int seeds still work
    d = svmjax.SVMClassifier(random_state=5, **fit).fit(X, y)
    _equal(c.coef_, d.coef_)
