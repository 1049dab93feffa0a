"""Random Fourier features (svmjax.features): the Gaussian kernel they approximate, their
bits, and their checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as scipy_sparse
from conftest import F32_TOL, rel_error
from jax.experimental import sparse as jax_sparse

from svmjax.features import FourierFeatures, fourier_features, fourier_transform

GAMMA = 0.15
N, D = 24, 5
COMPONENTS = (64, 256, 1024, 4096, 16384)
KEYS = range(4)


def _points():
    return np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)


def _kernel(X):
    X = np.asarray(X, np.float64)
    distances = np.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
    return np.exp(-GAMMA * distances)


def _errors(X, seed):
    """``Z Z^T - K`` for the first ``m`` features of one draw, for every ``m`` of
    ``COMPONENTS`` (the features are independent, so each prefix is a draw of its own)."""
    params = fourier_features(jax.random.key(seed), D, COMPONENTS[-1], gamma=GAMMA)
    Z = np.asarray(fourier_transform(params, X), np.float64)
    scale = np.sqrt(np.array(COMPONENTS) / COMPONENTS[-1])  # sqrt(2/m) instead of sqrt(2/M)
    return [
        (Z[:, :m] / s) @ (Z[:, :m] / s).T - _kernel(X)
        for m, s in zip(COMPONENTS, scale, strict=True)
    ]


def test_inner_products_approach_the_gaussian_kernel():
    X = _points()
    pairs = N * (N + 1) // 2
    rms = np.zeros((len(KEYS), len(COMPONENTS)))
    for i, seed in enumerate(KEYS):
        for j, (m, error) in enumerate(zip(COMPONENTS, _errors(X, seed), strict=True)):
            # Hoeffding: each pair's estimate is a mean of m terms in [-2, 2], so
            # P(|error| >= t) <= 2 exp(-m t^2 / 8); with a union bound over the pairs, the
            # bound below fails with probability 1e-9 over the keys (and the keys are fixed).
            bound = math.sqrt(8 * math.log(2 * pairs / 1e-9) / m)
            assert np.abs(error).max() <= bound, (seed, m)
            rms[i, j] = np.sqrt(np.mean(error[np.triu_indices(N)] ** 2))
    # The error's scale is 1/sqrt(m): each term's variance is below 3/2, so rms * sqrt(m)
    # stays in a band, and the slope of log rms over log m is -1/2.
    scaled = rms.mean(axis=0) * np.sqrt(COMPONENTS)
    assert np.all((0.2 < scaled) & (scaled < math.sqrt(1.5))), scaled
    slope = np.polyfit(np.log(COMPONENTS), np.log(rms.mean(axis=0)), 1)[0]
    assert -0.6 < slope < -0.4, slope


def test_each_feature_vector_has_unit_norm_on_average():
    Z = np.asarray(
        fourier_transform(fourier_features(jax.random.key(0), D, 16384, gamma=GAMMA), _points())
    )
    assert Z.shape == (N, 16384) and Z.dtype == np.float32
    np.testing.assert_allclose(
        np.sum(Z.astype(np.float64) ** 2, axis=1), 1.0, atol=0.05
    )  # k(x, x) = 1


def test_the_draws_follow_their_distributions():
    params = fourier_features(jax.random.key(1), 4, 50000, gamma=2.0)
    assert params.omega.shape == (4, 50000) and params.phase.shape == (50000,)
    omega, phase = np.asarray(params.omega, np.float64), np.asarray(params.phase, np.float64)
    assert abs(omega.var() / (2 * 2.0) - 1) < 0.02  # N(0, 2 gamma)
    assert 0 <= phase.min() and phase.max() < 2 * np.pi
    assert abs(phase.mean() / np.pi - 1) < 0.02  # U[0, 2 pi)


def test_same_key_same_bits_typed_or_raw():
    X = _points()
    typed = fourier_features(jax.random.key(7), D, 300, gamma=GAMMA)
    again = fourier_features(jax.random.key(7), D, 300, gamma=GAMMA)
    raw = fourier_features(jax.random.PRNGKey(7), D, 300, gamma=GAMMA)
    for other in (again, raw):
        jax.tree.map(np.testing.assert_array_equal, typed, other)
        np.testing.assert_array_equal(fourier_transform(typed, X), fourier_transform(other, X))
    other_key = fourier_features(jax.random.key(8), D, 300, gamma=GAMMA)
    assert not np.array_equal(typed.omega, other_key.omega)


def test_jit_rows_and_sparse_inputs_agree():
    X = _points()
    X[X < 0.3] = 0.0  # some zeros for the sparse forms
    params = fourier_features(jax.random.key(2), D, 200, gamma=GAMMA)
    Z = fourier_transform(params, X)
    draw = jax.jit(fourier_features, static_argnums=(1, 2))  # gamma traced
    assert rel_error(draw(jax.random.key(2), D, 200, gamma=GAMMA), params) < F32_TOL
    csr = scipy_sparse.csr_matrix(X)
    transform = jax.jit(fourier_transform)
    others = {
        "jit": transform(params, X),
        "vmap": jax.vmap(lambda x: fourier_transform(params, x[None])[0])(X),  # rows apart
        "scipy csr": fourier_transform(params, csr),
        "scipy csc": fourier_transform(params, scipy_sparse.csc_array(X)),
        "BCOO, jit": transform(params, jax_sparse.BCOO.from_scipy_sparse(csr)),
        "BCSR, jit": transform(params, jax_sparse.BCSR.from_scipy_sparse(csr)),
    }
    for name, other in others.items():
        assert other.shape == Z.shape and other.dtype == Z.dtype, name
        assert rel_error(other, Z) < F32_TOL, name
    assert fourier_transform(params, (X > 0).astype(np.int32)).dtype == jnp.float32


def test_dtype_follows_the_parameters():
    params = fourier_features(jax.random.key(0), D, 8, gamma=GAMMA, dtype=jnp.bfloat16)
    assert params.omega.dtype == jnp.bfloat16
    assert fourier_transform(params, _points()).dtype == jnp.float32  # the wider input's
    with pytest.raises(TypeError, match="float dtype"):
        fourier_features(jax.random.key(0), D, 8, gamma=GAMMA, dtype=jnp.int32)


@pytest.mark.parametrize(
    "args, options, error, message",
    [
        ((D, 10), {"gamma": 0.0}, ValueError, "gamma must be a finite number > 0"),
        ((D, 10), {"gamma": -1.0}, ValueError, "gamma must be a finite number > 0"),
        ((D, 10), {"gamma": float("nan")}, ValueError, "gamma must be a finite number > 0"),
        ((D, 10), {"gamma": np.ones(2)}, ValueError, "gamma must be a scalar"),
        ((D, 0), {"gamma": 1.0}, ValueError, "n_components must be an integer >= 1"),
        ((D, 2.5), {"gamma": 1.0}, ValueError, "n_components must be an integer >= 1"),
        ((0, 10), {"gamma": 1.0}, ValueError, "n_features_in must be an integer >= 1"),
    ],
)
def test_bad_draws_are_named(args, options, error, message):
    with pytest.raises(error, match=message):
        fourier_features(jax.random.key(0), *args, **options)


def test_a_bad_key_is_named():
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        fourier_features(3, D, 10, gamma=1.0)


@pytest.mark.parametrize(
    "X, error, message",
    [
        (np.zeros((4, D + 1), np.float32), ValueError, rf"X must be \[N, {D}\]"),
        (np.zeros(D, np.float32), ValueError, rf"X must be \[N, {D}\]"),
        (np.zeros((4, D), np.complex64), TypeError, "X must be real"),
        (scipy_sparse.csr_matrix(np.zeros((4, 2))), ValueError, rf"X must be \[N, {D}\]"),
    ],
)
def test_bad_inputs_are_named(X, error, message):
    params = fourier_features(jax.random.key(0), D, 10, gamma=1.0)
    with pytest.raises(error, match=message):
        fourier_transform(params, X)


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="params must be FourierFeatures"):
        fourier_transform(FourierFeatures(jnp.zeros((D, 3)), jnp.zeros(4)), _points())
