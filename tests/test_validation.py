"""Bad input gets a clear error that names the problem, and never a silently wrong number:
one test per case, the exact error type and a part of the message, at every entry point
(``svmjax.validate``, the losses, ``linear.objective``, ``train.fit``, ``grid.fit_grid``,
the scikit-learn estimator ``svmjax.estimator.SVMClassifier``, the CLI).

Decisions pinned here (also in the docstrings):

* **margin <= 0**: the loss functions accept any finite margin (``margin=0`` is the
  multiclass perceptron criterion, used by ``gradcheck``); ``fit`` and ``fit_grid`` refuse
  it with ``ValueError``, because with a margin ``<= 0`` the zero model already minimises
  the objective and training could learn nothing.
* **negative class weights**: ``ValueError`` at every eager entry point (a negative weight
  rewards violating the margin); inside ``jit`` the losses give that example a NaN loss and
  gradient.
* **integer X**: ``fit`` and ``fit_grid`` convert integer (and boolean) features to the
  parameters' float dtype, unscaled; the losses refuse integer scores (``TypeError``).
* **empty input**: the losses return an empty ``[0]`` array (nothing to reduce);
  ``objective``, ``fit`` and ``fit_grid`` raise.

Covered elsewhere, not repeated: ``fit``'s bad options, out-of-range label, feature count
and validation label (tests/test_train.py::test_bad_inputs_raise_before_training); every
corrupt, truncated, wrong-magic and malformed-line file through the loaders themselves
(tests/test_data.py). Here those files go through the CLI.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import struct
import subprocess
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import svmjax
import svmjax.cache
from svmjax import analytic, cli, grid, linear, losses, optim, train, validate

# --- svmjax.validate and the losses' own checks -------------------------------------------

SCORES = np.zeros((4, 3), np.float32)


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (np.array([0.0, 1.0, 2.0, 1.0]), TypeError, r"labels must be integer.*got dtype float64"),
        (np.array([0, 1, -1, 2]), ValueError, r"label -1 at position 2 is outside \[0, 3\)"),
        (np.array([0, 3, 1, 7]), ValueError, r"label 3 at position 1 is outside \[0, 3\) \(2 bad"),
        (
            np.array([0, 1, 2]),
            ValueError,
            r"labels shape \(3,\) does not match scores shape \(4, 3\)",
        ),
        (np.zeros((4, 1), int), ValueError, r"expected labels of shape \(4,\)"),
    ],
)
def test_validate_rejects_bad_labels(labels, error, message):
    with pytest.raises(error, match=message):
        validate(SCORES, labels)


def test_validate_rejects_bad_scores():
    labels = np.array([0, 1, 2, 1])
    bad = SCORES.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"scores is not finite: scores\[\(2, 1\)\] = nan"):
        validate(bad, labels)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"X is not finite: X\[\(2, 1\)\] = inf"):
        validate(bad, labels, name="X")
    with pytest.raises(TypeError, match="scores must be floating point, got dtype int64"):
        validate(np.zeros((4, 3), np.int64), labels)
    with pytest.raises(ValueError, match=r"scores is empty \(shape \(0, 3\)\)"):
        validate(np.zeros((0, 3), np.float32), np.zeros(0, int))
    with pytest.raises(ValueError, match="need at least 2 classes, got 1"):
        validate(np.zeros((4, 1), np.float32), np.zeros(4, int))


def test_validate_uses_n_classes_for_features():
    X = np.ones((3, 8), np.float32)  # 8 features, 4 classes
    validate(X, np.array([0, 3, 1]), n_classes=4, name="X")
    with pytest.raises(ValueError, match=r"label 5 at position 2 is outside \[0, 4\)"):
        validate(X, np.array([0, 3, 5]), n_classes=4, name="X")


def test_validate_returns_jax_arrays():
    scores, labels = validate(SCORES, np.array([0, 1, 2, 1]))
    assert isinstance(scores, jax.Array) and isinstance(labels, jax.Array)


@pytest.mark.parametrize("module", [losses, analytic], ids=["losses", "analytic"])
@pytest.mark.parametrize("name", ["weston_watkins", "crammer_singer", "one_vs_rest"])
def test_losses_check_their_inputs(module, name):
    fn = getattr(module, name)
    labels = jnp.array([0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"label 4 at position 0 is outside \[0, 3\)"):
        fn(SCORES, jnp.array([4, 1, 2, 1]))  # eager: concrete labels are checked
    with pytest.raises(TypeError, match="labels must be integer"):
        fn(SCORES, labels.astype(jnp.float32))
    with pytest.raises(TypeError, match="scores must be floating point"):
        fn(SCORES.astype(np.int32), labels)
    with pytest.raises(ValueError, match=r"labels shape \(3,\) does not match"):
        fn(SCORES, labels[:3])
    with pytest.raises(ValueError, match=r"class_weights must have shape \(3,\).*got shape \(2,\)"):
        fn(SCORES, labels, class_weights=jnp.ones(2))
    with pytest.raises(ValueError, match=r"margin must be a scalar, got shape \(2,\)"):
        fn(SCORES, labels, margin=jnp.ones(2))
    with pytest.raises(ValueError, match="need at least 2 classes"):
        fn(SCORES[:, :1], jnp.zeros(4, int))
    # Shape errors are static, so they are raised under jit too.
    with pytest.raises(ValueError, match="does not match"):
        jax.jit(fn)(SCORES, labels[:3])


# --- messages that name the real problem -------------------------------------------------


@pytest.mark.parametrize("module", [losses, analytic], ids=["losses", "analytic"])
def test_scores_without_a_class_axis(module):
    with pytest.raises(ValueError, match=r"scores need a class axis \[\.\.\., C\], got a 0-d"):
        module.weston_watkins(jnp.float32(1.0), jnp.int32(0))
    with pytest.raises(ValueError, match=r"needs a class axis \[\.\.\., C\], got a 0-d"):
        validate(np.float32(1.0), np.int32(0))


@pytest.mark.parametrize("module", [losses, analytic], ids=["losses", "analytic"])
def test_the_callers_dtype_is_named(module):
    # JAX would convert int64 to int32; the message names what the caller passed.
    with pytest.raises(TypeError, match="scores must be floating point, got dtype int64"):
        module.crammer_singer(np.ones((2, 3), np.int64), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="got dtype int64"):
        validate(np.ones((2, 3), np.int64), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="labels must be integer .* got dtype float64"):
        module.crammer_singer(np.ones((2, 3), np.float32), np.zeros(2, np.float64))


@pytest.mark.parametrize("name", ["weston_watkins", "crammer_singer", "one_vs_rest"])
@pytest.mark.parametrize("module", [losses, analytic], ids=["losses", "analytic"])
def test_negative_class_weights_raise_eagerly_and_give_nan_under_jit(module, name):
    loss = getattr(module, name)
    scores = jnp.array([[1.0, 2.0, 0.5], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]])
    labels = jnp.array([0, 1, 2])
    weights = jnp.array([1.0, -2.0, 1.0])  # class 1 negative: example 1 is poisoned
    with pytest.raises(ValueError, match=r"class_weights\[1\] = -2.0"):
        loss(scores, labels, class_weights=weights)

    @jax.jit
    def total(s, w):
        return jnp.sum(loss(s, labels, class_weights=w))

    per_example = np.asarray(
        jax.jit(lambda s, w: loss(s, labels, class_weights=w))(scores, weights)
    )
    assert np.isnan(per_example[1]) and np.isfinite(per_example[[0, 2]]).all()
    g = np.asarray(jax.grad(total)(scores, weights))
    assert np.isnan(g[1]).all() and np.isfinite(g[[0, 2]]).all()
    # Valid weights under jit: the plain weighted loss, no NaN.
    ok = jnp.array([1.0, 2.0, 0.5])
    want = loss(scores, labels) * ok[labels]
    np.testing.assert_allclose(jax.jit(lambda s: loss(s, labels, class_weights=ok))(scores), want)


@pytest.mark.parametrize("name", ["weston_watkins", "crammer_singer", "one_vs_rest"])
@pytest.mark.parametrize("module", [losses, analytic], ids=["losses", "analytic"])
def test_numpy_labels_and_weights_closed_over_by_jit_are_checked(module, name):
    # Inside a trace, jnp.asarray of a NumPy array closed over is a tracer: the values are
    # still known, so they are checked (read from the caller's array, not the tracer, which
    # would raise TracerArrayConversionError).
    loss = getattr(module, name)
    scores = jnp.array([[1.0, 2.0, 0.5], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]])
    labels, weights = np.array([0, 1, 2]), np.array([1.0, 2.0, 0.5])
    got = jax.jit(lambda s: loss(s, labels, class_weights=weights))(scores)
    np.testing.assert_allclose(got, loss(scores, jnp.asarray(labels)) * weights[labels])
    with pytest.raises(ValueError, match=r"label 5 at position 1 is outside \[0, 3\)"):
        jax.jit(lambda s: loss(s, np.array([0, 5, 2])))(scores)
    with pytest.raises(ValueError, match=r"class_weights\[2\] = -1.0"):
        jax.jit(lambda s: loss(s, labels, class_weights=np.array([1.0, 1.0, -1.0])))(scores)
    with pytest.raises(ValueError, match=r"class_weights\[1\] = inf"):  # too large for float32
        jax.jit(lambda s: loss(s, labels, class_weights=np.array([1.0, 1e40, 1.0])))(scores)


# --- every entry point -----------------------------------------------------------------------

N, D, C = 4, 5, 3
KEY = jax.random.key(0)
PARAMS = linear.init(jax.random.key(1), D, C)
X = np.arange(N * D, dtype=np.float32).reshape(N, D) / 10
Y = np.array([0, 1, 2, 1])


def _with(array, index, value):
    array = np.array(array, copy=True)
    array[index] = value
    return array


def _objective(X=X, y=Y, **kwargs):
    return linear.objective(PARAMS, X, y, **kwargs)


def _fit(X=X, y=Y, **kwargs):
    return train.fit(PARAMS, X, y, key=KEY, epochs=1, batch_size=2, **kwargs)


def _grid(X=X, y=Y, **kwargs):
    options = dict(learning_rates=(0.1,), regs=(0.0,), epochs=1, batch_size=2) | kwargs
    return grid.fit_grid(PARAMS, X, y, key=KEY, **options)


_LIBRARY = [
    # --- labels: float, negative, >= C, wrong shape
    ("objective-labels-float", lambda: _objective(y=Y.astype(np.float32)), TypeError,
     "labels must be integer class indices in [0, C), got dtype float32"),
    ("fit-labels-float", lambda: _fit(y=Y.astype(float)), TypeError,
     "got dtype float64 (convert with labels.astype(int))"),
    ("grid-labels-float", lambda: _grid(y=Y.astype(float)), TypeError,
     "labels must be integer class indices"),
    ("objective-labels-negative", lambda: _objective(y=_with(Y, 1, -1)), ValueError,
     "label -1 at position 1 is outside [0, 3)"),
    ("fit-labels-negative", lambda: _fit(y=_with(Y, 3, -2)), ValueError,
     "label -2 at position 3 is outside [0, 3)"),
    ("grid-labels-negative", lambda: _grid(y=_with(Y, 0, -1)), ValueError,
     "label -1 at position 0 is outside [0, 3)"),
    ("objective-labels-too-large", lambda: _objective(y=_with(Y, 2, 3)), ValueError,
     "label 3 at position 2 is outside [0, 3) (1 bad label(s) in all)"),
    ("grid-labels-too-large", lambda: _grid(y=np.array([5, 1, 2, 9])), ValueError,
     "label 5 at position 0 is outside [0, 3) (2 bad label(s) in all)"),
    ("objective-labels-shape", lambda: _objective(y=Y[:3]), ValueError,
     "labels shape (3,) does not match X shape (4, 5)"),
    ("fit-labels-shape", lambda: _fit(y=Y[:, None]), ValueError,
     "labels shape (4, 1) does not match X shape (4, 5): expected labels of shape (4,)"),
    ("grid-labels-shape", lambda: _grid(y=Y[:2]), ValueError,
     "labels shape (2,) does not match X shape (4, 5)"),
    # --- features: NaN, inf, wrong shape or dtype
    ("fit-X-nan", lambda: _fit(X=_with(X, (3, 4), np.nan)), ValueError,
     "X is not finite: X[(3, 4)] = nan"),
    ("grid-X-nan", lambda: _grid(X=_with(X, (0, 0), np.nan)), ValueError,
     "X is not finite: X[(0, 0)] = nan"),
    ("fit-X-inf", lambda: _fit(X=_with(X, (1, 0), np.inf)), ValueError,
     "X is not finite: X[(1, 0)] = inf"),
    ("fit-X_val-inf", lambda: _fit(validation=(_with(X, (0, 3), np.inf), Y)), ValueError,
     "X_val is not finite: X_val[(0, 3)] = inf"),
    ("fit-X-1d", lambda: _fit(X=X[0], y=Y[:1]), ValueError,
     "X must have shape [N, 5] to match W, got (5,)"),
    ("fit-X-strings", lambda: _fit(X=np.full((N, D), "1.0")), TypeError,
     "X must be floating point, got dtype <U3"),
    # --- empty arrays
    ("objective-empty", lambda: _objective(X=X[:0], y=Y[:0]), ValueError,
     "X is empty (shape (0, 5))"),
    ("fit-empty", lambda: _fit(X=X[:0], y=Y[:0]), ValueError, "X is empty (shape (0, 5))"),
    ("grid-empty", lambda: _grid(X=X[:0], y=Y[:0]), ValueError, "X is empty (shape (0, 5))"),
    ("fit-validation-empty", lambda: _fit(validation=(X[:0], Y[:0])), ValueError,
     "X_val is empty (shape (0, 5))"),
    # --- fewer than 2 classes
    ("init-one-class", lambda: linear.init(KEY, D, 1), ValueError,
     "need n_features >= 1 and n_classes >= 2, got 5, 1"),
    ("loss-one-class", lambda: analytic.crammer_singer(X[:, :1], np.zeros(N, int)), ValueError,
     "need at least 2 classes, got scores with 1 column(s)"),
    ("fit-one-class-params",
     lambda: train.fit({"W": jnp.zeros((D, 1)), "b": jnp.zeros(1)}, X, 0 * Y, key=KEY),
     ValueError, "need at least 2 classes, got 1"),
    # --- class weights: wrong length, negative, not finite
    ("objective-class-weights-length", lambda: _objective(class_weights=np.ones(2)), ValueError,
     "class_weights must have shape (3,) (one weight per class), got shape (2,)"),
    ("fit-class-weights-length", lambda: _fit(class_weights=[1.0, 2.0, 3.0, 4.0]), ValueError,
     "class_weights must have shape (3,) (one weight per class), got shape (4,)"),
    ("grid-class-weights-length", lambda: _grid(class_weights=np.ones((3, 1))), ValueError,
     "class_weights must have shape (3,) (one weight per class), got shape (3, 1)"),
    ("loss-class-weights-negative",
     lambda: losses.weston_watkins(X[:, :3], Y, class_weights=np.array([1.0, -0.5, 1.0])),
     ValueError, "class_weights must be finite and >= 0, got class_weights[1] = -0.5"),
    ("analytic-class-weights-negative",
     lambda: analytic.one_vs_rest(X[:, :3], Y, class_weights=np.array([0.0, 1.0, -1.0])),
     ValueError, "class_weights must be finite and >= 0, got class_weights[2] = -1.0"),
    ("objective-class-weights-negative",
     lambda: _objective(class_weights=np.array([-1.0, 1.0, 1.0])), ValueError,
     "class_weights must be finite and >= 0, got class_weights[0] = -1.0"),
    ("fit-class-weights-negative", lambda: _fit(class_weights=[1.0, 1.0, -3.0]), ValueError,
     "class_weights must be finite and >= 0, got class_weights[2] = -3.0"),
    ("grid-class-weights-negative", lambda: _grid(class_weights=[1.0, -1e-9, 1.0]), ValueError,
     "class_weights must be finite and >= 0, got class_weights[1] = -1e-09"),
    ("fit-class-weights-nan", lambda: _fit(class_weights=[1.0, np.nan, 1.0]), ValueError,
     "class_weights must be finite and >= 0, got class_weights[1] = nan"),
    # --- margin <= 0 (refused by training; see test_losses_accept_any_finite_margin)
    ("fit-margin-zero", lambda: _fit(margin=0.0), ValueError,
     "margin must be a finite number > 0, got 0.0"),
    ("fit-margin-negative", lambda: _fit(margin=-1), ValueError,
     "margin must be a finite number > 0, got -1"),
    ("fit-margin-nan", lambda: _fit(margin=float("nan")), ValueError,
     "margin must be a finite number > 0, got nan"),
    ("fit-margin-vector", lambda: _fit(margin=np.ones(3)), ValueError,
     "margin must be a scalar, got shape (3,)"),
    ("grid-margin-zero", lambda: _grid(margin=0), ValueError,
     "margin must be a finite number > 0, got 0"),
    # --- other hyperparameters
    ("fit-reg-negative", lambda: _fit(reg=-1e-3), ValueError,
     "reg must be a finite number >= 0, got -0.001"),
    ("fit-reg-inf", lambda: _fit(reg=np.inf), ValueError, "reg must be a finite number >= 0"),
    ("grid-reg-negative", lambda: _grid(regs=(0.0, -1.0)), ValueError,
     "reg must be a finite number >= 0, got -1.0"),
    ("grid-learning-rate-zero", lambda: _grid(learning_rates=(0.1, 0.0)), ValueError,
     "learning rate must be a finite number > 0, got 0.0"),
    ("fit-mesh-not-a-mesh", lambda: _fit(mesh=jax.devices()), TypeError,
     "mesh must be a jax.sharding.Mesh"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [pytest.param(call, error, message, id=name) for name, call, error, message in _LIBRARY],
)
def test_library_rejects(call, error, message):
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error
    assert message in str(caught.value)


@pytest.mark.parametrize("grad", ["analytic", "autodiff"])
@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_objective_on_non_finite_features_is_nan_not_a_number(grad, bad):
    # linear.objective checks shapes, dtypes and labels, but not the values of X: an eager
    # loop of jax.grad(objective) must not copy X to the host every step (fit, solve and
    # svmjax.validate check X once, at the boundary). A bad X gives a NaN objective and
    # gradient, never a plausible number.
    X_bad = _with(X, (2, 1), bad)
    value, g = jax.value_and_grad(linear.objective)(PARAMS, X_bad, Y, grad=grad)
    assert np.isnan(float(value))
    assert np.isnan(np.asarray(g["W"])).any()
    with pytest.raises(ValueError, match=r"X is not finite: X\[\(2, 1\)\]"):
        svmjax.validate(X_bad, Y, n_classes=3, name="X")


@pytest.mark.parametrize("margin", [0.0, -0.5])
@pytest.mark.parametrize("module", [losses, analytic], ids=["losses", "analytic"])
def test_losses_accept_any_finite_margin(module, margin):
    scores = jnp.array([[2.0, 1.0, 3.0], [0.0, 0.5, -1.0]])
    labels = jnp.array([0, 1])
    want = jnp.sum(jnp.maximum(0.0, scores - scores[jnp.arange(2), labels][:, None] + margin), 1)
    want = want - jnp.maximum(0.0, margin)  # the j = y term contributes max(0, margin)
    np.testing.assert_allclose(module.weston_watkins(scores, labels, margin=margin), want)


def test_losses_return_empty_for_an_empty_batch():
    out = analytic.weston_watkins(jnp.zeros((0, 3)), jnp.zeros(0, int))
    assert out.shape == (0,)


def test_losses_propagate_nan_scores():  # no value check on scores; validate() has one
    out = losses.crammer_singer(jnp.array([[jnp.nan, 0.0], [1.0, 0.0]]), jnp.array([0, 0]))
    assert np.isnan(out[0]) and out[1] == 0.0


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.bool_])
def test_fit_converts_integer_features(dtype):
    X_int = (np.arange(40 * D).reshape(40, D) % 7 > 2) if dtype == np.bool_ else None
    X_int = (np.arange(40 * D).reshape(40, D) % 7).astype(dtype) if X_int is None else X_int
    y = np.arange(40) % C
    run = dict(key=KEY, epochs=2, batch_size=8, optimizer=optim.make_optimizer("sgd", 0.01))
    got, _ = train.fit(PARAMS, X_int, y, **run)
    want, _ = train.fit(PARAMS, X_int.astype(np.float32), y, **run)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    sweep = grid.fit_grid(PARAMS, X_int, y, key=KEY, learning_rates=(0.01,), regs=(0.0,))
    assert sweep.params["W"].dtype == np.float32


# --- the scikit-learn estimator --------------------------------------------------------------
# Labels there are arbitrary values (stored in ``classes_``), as in scikit-learn: float,
# negative or large labels are legal, continuous ones are not. Inputs go through
# scikit-learn's own validation, so its messages appear.

_EX = np.arange(20, dtype=np.float64).reshape(10, 2) / 10
_EY = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def _estimator(**kwargs):
    from svmjax.estimator import SVMClassifier

    return SVMClassifier(**({"solver": "sgd", "max_iter": 1} | kwargs))


_ESTIMATOR = [
    ("labels-continuous", lambda: _estimator().fit(_EX, _EY + 0.01 * np.arange(10)),
     ValueError, "Unknown label type: continuous"),
    ("labels-two-columns", lambda: _estimator().fit(_EX, np.stack([_EY, _EY], 1)), ValueError,
     "y should be a 1d array, got an array of shape (10, 2) instead"),
    ("labels-wrong-length", lambda: _estimator().fit(_EX, _EY[:5]), ValueError,
     "Found input variables with inconsistent numbers of samples: [10, 5]"),
    ("X-nan", lambda: _estimator().fit(_with(_EX, (2, 1), np.nan), _EY), ValueError,
     "Input X contains NaN"),
    ("X-inf", lambda: _estimator().fit(_with(_EX, (3, 0), np.inf), _EY), ValueError,
     "Input X contains infinity"),
    ("X-strings", lambda: _estimator().fit(np.full((10, 2), "a"), _EY), ValueError,
     "could not convert string to float"),
    ("empty", lambda: _estimator().fit(_EX[:0], _EY[:0]), ValueError,
     "Found array with 0 sample(s) (shape=(0, 2))"),
    ("one-class", lambda: _estimator().fit(_EX, 0 * _EY), ValueError,
     "needs at least 2 classes, got 1"),
    ("class-weight-negative-sgd", lambda: _estimator(class_weight={0: -1.0}).fit(_EX, _EY),
     ValueError, "class_weights must be finite and"),
    ("class-weight-negative-exact",
     lambda: _estimator(class_weight={1: -0.5}, solver="exact").fit(_EX, _EY),
     ValueError, "class_weights must be finite and"),
    ("class-weight-unknown-label", lambda: _estimator(class_weight={7: 1.0}).fit(_EX, _EY),
     ValueError, "class_weight has labels not in y: ['7']"),
    ("margin-zero", lambda: _estimator(margin=0).fit(_EX, _EY), ValueError,
     "margin must be a finite number > 0, got 0"),
    ("margin-negative", lambda: _estimator(margin=-1.0).fit(_EX, _EY), ValueError,
     "margin must be a finite number > 0, got -1.0"),
    ("sample-weight-negative", lambda: _estimator().fit(_EX, _EY, sample_weight=-np.ones(10)),
     ValueError, "sample_weight must be finite and non-negative"),
    ("predict-wrong-features", lambda: _estimator().fit(_EX, _EY).predict(np.ones((2, 3))),
     ValueError, "X has 3 features, but SVMClassifier is expecting 2 features"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [pytest.param(call, error, message, id=name) for name, call, error, message in _ESTIMATOR],
)
def test_estimator_rejects(call, error, message):
    pytest.importorskip("sklearn")
    pytest.importorskip("svmjax.estimator")
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error
    assert message in str(caught.value)


def test_estimator_unfitted_and_column_vector_labels():
    pytest.importorskip("sklearn")
    pytest.importorskip("svmjax.estimator")
    from sklearn.exceptions import DataConversionWarning, NotFittedError

    with pytest.raises(NotFittedError, match="is not fitted yet"):
        _estimator().predict(_EX)
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed"):
        _estimator().fit(_EX, _EY[:, None])  # scikit-learn's convention: warn, then ravel


def test_estimator_accepts_any_label_values_and_integer_features():
    pytest.importorskip("sklearn")
    pytest.importorskip("svmjax.estimator")
    labels = np.array([-1.0, 2.0, 7.0])[_EY]  # float, negative, beyond the class count
    clf = _estimator(random_state=0).fit((_EX * 10).astype(np.int64), labels)
    assert clf.classes_.tolist() == [-1.0, 2.0, 7.0] and clf.coef_.dtype == np.float64
    same = _estimator(random_state=0).fit(_EX * 10, labels)
    np.testing.assert_array_equal(clf.coef_, same.coef_)  # integer X converted, not refused


# --- the CLI --------------------------------------------------------------------------------
# Every case runs `python -m svmjax.cli ...` in its own process; they are started together
# (a few at a time) once per module, and each test checks its own: exit status 2, exactly
# one line on stderr naming the problem, no traceback.


def _idx(magic: int, shape: tuple[int, ...], data: bytes) -> bytes:
    return struct.pack(f">{1 + len(shape)}I", magic, *shape) + data


def _write_mnist(directory: Path, **replace: bytes) -> Path:
    directory.mkdir(parents=True)
    files = {
        "train-images-idx3-ubyte": _idx(2051, (6, 2, 2), bytes(24)),
        "train-labels-idx1-ubyte": _idx(2049, (6,), bytes([0, 1, 2, 0, 1, 2])),
        "t10k-images-idx3-ubyte": _idx(2051, (3, 2, 2), bytes(12)),
        "t10k-labels-idx1-ubyte": _idx(2049, (3,), bytes([0, 1, 2])),
    } | replace
    for name, content in files.items():
        if content is not None:  # None: leave the file out
            (directory / name).write_bytes(content)
    return directory


def _write_cifar(directory: Path, **replace: bytes) -> Path:
    directory.mkdir(parents=True)
    record = bytes([1]) + bytes(3072)
    for i in range(1, 6):
        (directory / f"data_batch_{i}.bin").write_bytes(record * 2)
    (directory / "test_batch.bin").write_bytes(record)
    for name, content in replace.items():
        (directory / name).write_bytes(content)
    return directory


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _overflowing(directory: Path) -> Path:  # finite values whose centring overflows float32
    return _write(directory / "f.svm", b"1 1:3e38\n1 1:3e38\n2 1:-3e38\n" * 3)


_CLI = {
    # name: (arguments, message); a callable argument builds a file in the directory given
    "unknown-flag": (["train", "--bogus"], "unrecognized arguments: --bogus"),
    "no-command": ([], "the following arguments are required: command"),
    "unknown-command": (["fit"], "invalid choice: 'fit'"),
    "epochs-zero": (["train", "--epochs", "0"], "expected a positive integer, got '0'"),
    "batch-size-float": (["train", "--batch-size", "1e3"], "expected a positive integer"),
    "lr-nan": (["train", "--lr", "nan"], "argument --lr: expected a number > 0, got 'nan'"),
    "reg-negative": (["sweep", "--regs", "0", "-1"], "expected a number >= 0, got '-1'"),
    "unknown-dataset": (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    "two-sources": (
        ["train", "--mnist", "a", "--svmlight", "b"],
        "argument --svmlight: not allowed with argument --mnist",
    ),
    "svmlight-missing": (["train", "--svmlight", "{dir}/none.svm"], "No such file or directory"),
    "svmlight-directory": (["train", "--svmlight", "{dir}"], "Is a directory"),
    "mnist-missing": (
        ["train", "--mnist", "{dir}/none"],
        "neither train-images-idx3-ubyte nor train-images-idx3-ubyte.gz found",
    ),
    "cifar10-missing": (["train", "--cifar10", "{dir}"], "missing CIFAR-10 file(s)"),
    "svmlight-index-zero": (
        ["train", "--svmlight", lambda d: _write(d / "a.svm", b"1 1:1\n2 0:1\n")],
        "a.svm: line 2: feature index 0, indices start at 1",
    ),
    "svmlight-not-a-number": (
        ["train", "--svmlight", lambda d: _write(d / "b.svm", b"1 1:nan\n2 1:1\n")],
        "b.svm: line 1: cannot parse value 'nan' for feature 1",
    ),
    "svmlight-bad-token": (
        ["train", "--svmlight", lambda d: _write(d / "c.svm", b"1 1:1\n2 1:1 7\n")],
        "c.svm: line 2: expected index:value, got '7'",
    ),
    "svmlight-one-class": (
        ["train", "--svmlight", lambda d: _write(d / "d.svm", b"1 1:1\n1 2:1\n1 1:3\n")],
        "d.svm: 1 distinct label(s), need at least 2",
    ),
    "svmlight-empty": (
        ["train", "--svmlight", lambda d: _write(d / "e.svm", b"# nothing\n")],
        "e.svm: no examples",
    ),
    "svmlight-overflow": (
        ["train", "--svmlight", _overflowing, "--preprocess", "standardize"],
        "values overflow float32 after preprocess=standardize",
    ),
    "mnist-wrong-magic": (
        ["train", "--mnist", lambda d: _write_mnist(
            d / "magic", **{"train-images-idx3-ubyte": _idx(1234, (6, 2, 2), bytes(24))})],
        "train-images-idx3-ubyte: magic number 1234, expected 2051",
    ),
    "mnist-truncated": (
        ["train", "--mnist", lambda d: _write_mnist(
            d / "cut", **{"t10k-images-idx3-ubyte": _idx(2051, (3, 2, 2), bytes(11))})],
        "t10k-images-idx3-ubyte: header sizes (3, 2, 2) need 12 data bytes, found 11",
    ),
    "mnist-bad-gzip": (
        ["train", "--mnist", lambda d: _write_mnist(
            d / "gz", **{"train-labels-idx1-ubyte": None, "train-labels-idx1-ubyte.gz":
                         gzip.compress(_idx(2049, (6,), bytes(6)))[:-9]})],
        "train-labels-idx1-ubyte.gz: corrupt or truncated gzip data",
    ),
    "cifar10-truncated": (
        ["train", "--cifar10", lambda d: _write_cifar(
            d / "cifar", **{"data_batch_3.bin": bytes(3073 + 100)})],
        "data_batch_3.bin: record 2 is truncated (100 of 3073 bytes)",
    ),
    "cifar10-label-out-of-range": (
        ["train", "--cifar10", lambda d: _write_cifar(
            d / "cifar10", **{"test_batch.bin": bytes([10]) + bytes(3072)})],
        "test_batch.bin: record 1 has label 10, expected 0..9",
    ),
    "training-diverges": (
        ["train", "--lr", "1e30", "--squared", "--epochs", "2"],
        "training diverged in epoch 1",
    ),
}  # fmt: skip


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    """``svmjax.cli.main(args)`` in this process, as a finished command: its exit status
    (argparse's ``SystemExit`` included) and what it printed. An exception that escapes
    ``main`` (a traceback for the user) propagates and fails the test."""
    stdout, stderr = io.StringIO(), io.StringIO()
    environment = {k: v for k, v in os.environ.items() if k != svmjax.cache.ENV_VAR}
    with (
        mock.patch.dict(os.environ, environment, clear=True),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            status = cli.main(args)
        except SystemExit as exit_:
            status = exit_.code
    return subprocess.CompletedProcess(args, status, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Every CLI case, run in this process (a fresh interpreter per case cost ~1 s; the
    command's own entry point, ``python -m svmjax.cli``, is driven in a subprocess by
    tests/test_cli.py::test_bad_flags_give_one_line_and_no_traceback);
    ``{name: CompletedProcess}``."""
    directory = tmp_path_factory.mktemp("cli")

    def argv(args):
        return [str(a(directory)) if callable(a) else a.format(dir=directory) for a in args]

    return {name: _run_cli(argv(args)) for name, (args, _) in _CLI.items()}


@pytest.mark.parametrize("name", list(_CLI))
def test_cli_rejects(cli_results, name):
    result, message = cli_results[name], _CLI[name][1]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0], lines[0]
