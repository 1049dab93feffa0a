"""Bad input gets a clear error that names the problem, and never a silently wrong number."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svmjax import analytic, losses, validate

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


# --- messages that name the real problem (issue: a fresh machine passes) ----------------


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
    # still known, so they are checked (this once crashed with TracerArrayConversionError).
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
