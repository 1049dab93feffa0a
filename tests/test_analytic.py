"""Gradients: the analytic custom_vjp rules against closed forms, autodiff, finite
differences, and (at kinks) the subgradient inequality."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    F32_TOL,
    LOSS_NAMES,
    TOL,
    assert_close,
    compiled,
    random_problem,
    tied_problem,
    x64,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from svmjax import analytic, gradcheck, losses, registry


def naive_gradient(name, scores, labels, margin=1.0, squared=False, class_weights=None):
    """d loss_i / d scores_i by the textbook rules, strict > 0 at kinks, lowest-index argmax."""
    scores = np.asarray(scores, np.float64)
    grad = np.zeros_like(scores)
    for i, (s, y) in enumerate(zip(scores, np.asarray(labels), strict=True)):
        w = 1.0 if class_weights is None else float(class_weights[y])

        def dh(v, w=w):
            return (2 * max(v, 0.0) if squared else float(v > 0)) * w

        for j in range(len(s)):
            if name == "weston_watkins" and j != y:
                grad[i, j] += dh(s[j] - s[y] + margin)
                grad[i, y] -= dh(s[j] - s[y] + margin)
            if name == "one_vs_rest":
                t = 1.0 if j == y else -1.0
                grad[i, j] = -t * dh(margin - t * s[j])
        if name == "crammer_singer":
            others = [j for j in range(len(s)) if j != y]
            best = max(others, key=lambda j: (s[j], -j))  # highest score, lowest index on ties
            grad[i, best] += dh(s[best] - s[y] + margin)
            grad[i, y] -= dh(s[best] - s[y] + margin)
    return grad


def grad_of_sum(fn, **options):
    return jax.jit(jax.grad(lambda s, y: jnp.sum(fn(s, y, **options))))


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
@pytest.mark.parametrize("margin", [1.0, 0.5])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_analytic_gradient_is_the_closed_form(dtype, name, squared, margin, weighted):
    scores, labels = random_problem(10, 48, 6, dtype)
    weights = np.linspace(0.5, 2.0, 6).astype(dtype) if weighted else None
    options = dict(margin=margin, squared=squared, class_weights=weights)
    got = grad_of_sum(getattr(analytic, name), **options)(scores, labels)
    assert got.dtype == dtype
    want = naive_gradient(name, scores, labels, **options)
    assert_close(got, want, TOL[dtype])


def test_weston_watkins_gradient_is_the_indicator_count():
    # Plain hinge, margin 1: every violating class gets +1, the true class minus their count.
    scores = jnp.array([[3.2, 5.1, -1.7, 2.5], [1.3, 4.9, 2.0, 4.0]])
    labels = jnp.array([0, 1])
    got = grad_of_sum(analytic.weston_watkins)(scores, labels)
    np.testing.assert_array_equal(got, [[-2.0, 1.0, 0.0, 1.0], [0.0, -1.0, 0.0, 1.0]])


_HALF_SUMS = (
    "value_and_grad and the plain forward are two programs; their half-precision sums agree "
    "to 1e-6 only where the backend orders both sums the same way (XLA:CPU does)"
)


@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(jnp.bfloat16, marks=pytest.mark.cpu_only(_HALF_SUMS)),
        pytest.param(jnp.float16, marks=pytest.mark.cpu_only(_HALF_SUMS)),
        jnp.float32,
        pytest.param(jnp.float64, marks=pytest.mark.float64),
    ],
)
def test_weston_watkins_one_pass_sums_in_every_float_type(dtype):
    # The forward sums the loss and the violation count in one pass (one complex sum) where
    # the type has a complex counterpart, and in two sums where not (half precision). Either
    # way: the loss of the plain evaluation and, on the true class, the exact count.
    with x64() if dtype == jnp.float64 else contextlib.nullcontext():
        _check_weston_watkins_sums(dtype)


def _check_weston_watkins_sums(dtype):
    raw, labels = random_problem(12, 64, 40, np.float32)  # 40 classes: over XLA's 32
    scores = jnp.asarray(4 * raw, dtype)  # many violations per example
    value, got = jax.jit(jax.value_and_grad(lambda s: jnp.sum(analytic.weston_watkins(s, labels))))(
        scores
    )
    plain = jnp.sum(jax.jit(analytic.weston_watkins)(scores, labels))
    assert value.dtype == got.dtype == dtype
    assert abs(float(value) - float(plain)) <= 1e-6 * abs(float(plain))
    # Reference in numpy, from the margins as this type rounds them (a half-precision
    # margin near 0 can round to the other side of the kink than its float64 value).
    is_true = np.arange(40)[None, :] == np.asarray(labels)[:, None]
    own = jnp.take_along_axis(scores, jnp.asarray(labels)[:, None], axis=1)
    violates = np.asarray((scores - own + jnp.asarray(1, dtype)) > 0) & ~is_true
    want = violates - is_true * violates.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(np.asarray(got, np.float64), want)
    assert violates.sum(axis=1).max() > 20  # counts that need more than a few bits


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_analytic_matches_autodiff_away_from_kinks(dtype, name, squared, weighted):
    scores, labels = random_problem(11, 64, 8, dtype)
    weights = np.linspace(0.5, 2.0, 8).astype(dtype) if weighted else None
    options = dict(squared=squared, class_weights=weights, margin=0.75)
    got = grad_of_sum(getattr(analytic, name), **options)(scores, labels)
    want = grad_of_sum(getattr(losses, name), **options)(scores, labels)
    scale = float(jnp.max(jnp.abs(want)))
    assert scale > 0
    assert_close(got, want, TOL[dtype])


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
def test_analytic_matches_finite_differences_in_float64(name, squared):
    with gradcheck.x64():
        scores, labels = random_problem(12, 16, 5, np.float64)
        scores, labels = jnp.asarray(scores), jnp.asarray(labels)
        eps = 1e-4  # hinges are piecewise linear/quadratic: only rounding limits a big step
        # No hinge argument (or Crammer-Singer tie) within 2 eps of its kink: every
        # centred difference stays on one smooth piece.
        assert float(jnp.min(registry.get(name).kinks(scores, labels, 1.0))) > 2 * eps
        weights = jnp.arange(1.0, 6.0)

        def per_example(s):
            return getattr(analytic, name)(s, labels, squared=squared, class_weights=weights)

        # Centred differences of each example's own loss (differencing the batch sum would
        # add the other examples' rounding noise to entries whose true value is exactly 0).
        def numeric_entry(k):
            i, j = k // scores.shape[1], k % scores.shape[1]
            step = jnp.zeros_like(scores).at[i, j].set(eps)
            return (per_example(scores + step)[i] - per_example(scores - step)[i]) / (2 * eps)

        numeric = jax.jit(jax.vmap(numeric_entry))(jnp.arange(scores.size)).reshape(scores.shape)
        exact = jax.jit(jax.grad(lambda s: jnp.sum(per_example(s))))(scores)
        assert exact.dtype == jnp.float64
        # Entrywise relative error where the gradient is non-zero; where it is exactly zero,
        # the difference must be zero up to rounding of the loss value (u * |L| / eps).
        nonzero = exact != 0
        assert 0.3 < float(jnp.mean(nonzero)) < 1.0 or name == "one_vs_rest"
        assert gradcheck.rel_error(exact[nonzero], numeric[nonzero]) < 1e-7
        assert float(jnp.max(jnp.abs(numeric[~nonzero]), initial=0.0)) < 1e-9


# --------------------------------------------------------------------------- kinks and ties


def test_kink_conventions_are_pinned():
    # Weston-Watkins with a margin exactly at its kink: v = 1 - 2 + 1 = 0.
    scores, labels = jnp.array([[2.0, 1.0, -5.0]]), jnp.array([0])
    np.testing.assert_array_equal(
        grad_of_sum(analytic.weston_watkins)(scores, labels), [[0.0, 0.0, 0.0]]
    )  # strict > 0: derivative 0 at the kink
    np.testing.assert_array_equal(
        grad_of_sum(losses.weston_watkins)(scores, labels), [[-0.5, 0.5, 0.0]]
    )  # jnp.maximum: 1/2 at the kink
    # Crammer-Singer with two wrong classes tied for the maximum.
    scores, labels = jnp.array([[0.0, 3.0, 1.0, 3.0]]), jnp.array([0])
    np.testing.assert_array_equal(
        grad_of_sum(analytic.crammer_singer)(scores, labels), [[-1.0, 1.0, 0.0, 0.0]]
    )  # lowest-index maximiser takes it all
    np.testing.assert_array_equal(
        grad_of_sum(losses.crammer_singer)(scores, labels), [[-1.0, 0.5, 0.0, 0.5]]
    )  # jnp.max splits evenly among tied maxima
    # One-vs-rest at its kink (margin - t s = 0).
    scores, labels = jnp.array([[1.0, -1.0]]), jnp.array([0])
    np.testing.assert_array_equal(grad_of_sum(analytic.one_vs_rest)(scores, labels), [[0.0, 0.0]])
    np.testing.assert_array_equal(grad_of_sum(losses.one_vs_rest)(scores, labels), [[-0.5, 0.5]])


@settings(max_examples=40, deadline=None)
@given(problem=tied_problem(), name=st.sampled_from(LOSS_NAMES), squared=st.booleans())
def test_both_gradients_are_subgradients_at_kinks(problem, name, squared):
    # f is convex in the scores, so g is a subgradient at s iff f(z) >= f(s) + <g, z - s>
    # for every z. Check many random z, near s (where a wrong "gradient" shows first) and far.
    scores, labels, margin, seed = problem
    with gradcheck.x64():
        s, y = jnp.asarray(scores), jnp.asarray(labels)
        step_sizes = np.array([1e-3, 1e-1, 3.0, 10.0]).repeat(50)[:, None, None]
        z = s[None] + np.random.default_rng(seed).standard_normal((200, *s.shape)) * step_sizes
        for module in (analytic, losses):
            f, grad, f_many = compiled(getattr(module, name), squared, ())
            g = grad(s, y, margin)
            lower = f(s, y, margin) + jnp.sum(g[None] * (z - s[None]), axis=(1, 2))
            assert bool(jnp.all(f_many(z, y, margin) >= lower - 1e-9)), module.__name__


# --------------------------------------------------------------------------- transformations


@pytest.mark.parametrize("module", [analytic, losses], ids=["analytic", "losses"])
@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
def test_vmap_grad_gives_per_example_gradients(module, name, squared):
    scores, labels = random_problem(13, 32, 6, np.float32)
    fn = getattr(module, name)
    per_example = jax.jit(jax.vmap(jax.grad(lambda s, y: fn(s, y, squared=squared))))(
        scores, labels
    )
    batch = grad_of_sum(fn, squared=squared)(scores, labels)
    assert_close(per_example, batch, F32_TOL)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_margin_and_class_weight_gradients_match_autodiff(name):
    scores, labels = random_problem(14, 40, 5, np.float32)

    def total(module, margin, weights):
        return jnp.sum(getattr(module, name)(scores, labels, margin=margin, class_weights=weights))

    weights = jnp.linspace(0.5, 2.0, 5)
    for argnums in (1, 2):
        got = jax.grad(total, argnums)(analytic, 0.75, weights)
        want = jax.grad(total, argnums)(losses, 0.75, weights)
        assert_close(got, want, F32_TOL)


def test_forward_mode_is_not_supported_and_says_so():
    scores, labels = random_problem(15, 4, 3, np.float32)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda s: analytic.weston_watkins(s, labels), (scores,), (scores,))


# --------------------------------------------------------------------------- NaN and bad labels


@pytest.mark.parametrize("module", [analytic, losses], ids=["analytic", "losses"])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_out_of_range_label_under_jit_gives_nan_loss_and_gradient(module, name):
    scores, _ = random_problem(16, 4, 3, np.float32)
    labels = jnp.array([0, 3, 1, -1])  # 3 and -1 are out of range for C = 3
    fn = jax.jit(getattr(module, name))
    loss = fn(scores, labels)
    assert np.isnan(loss[1]) and np.isnan(loss[3])
    assert np.isfinite(loss[0]) and np.isfinite(loss[2])
    # Labels passed as jit arguments (closed-over constants would be checked, and raise).
    g = jax.jit(jax.grad(lambda s, y: jnp.sum(getattr(module, name)(s, y))))(scores, labels)
    assert np.isnan(g[1]).all() and np.isnan(g[3]).all()
    assert np.isfinite(g[0]).all() and np.isfinite(g[2]).all()


# One loss per backward rule (the other template losses share unified_hinge's).
RULES = [
    "weston_watkins",
    "crammer_singer",
    "one_vs_rest",
    "unified_hinge",
    "absolute_max_hinge",
    "top_k_hinge",
    "smooth_top_k",
]


@pytest.mark.parametrize("module", [analytic, losses], ids=["analytic", "losses"])
@pytest.mark.parametrize("name", RULES)
def test_unsigned_labels_and_bad_class_weights_under_jit_give_nan(module, name):
    # uint8 labels (MNIST's type): a bad label must not wrap into a valid-looking one; and
    # a negative class weight makes its example's loss, score gradient and class-weight
    # gradient NaN, in both modules.
    entry = registry.get(name)
    fn = entry.analytic if module is analytic else entry.pure
    scores, _ = random_problem(17, 3, 4, np.float32)
    labels = jnp.array([0, 200, 2], jnp.uint8)  # 200 is out of range for C = 4
    loss = np.asarray(jax.jit(fn)(scores, labels))
    assert np.isnan(loss[1]) and np.isfinite(loss[[0, 2]]).all()
    g = np.asarray(jax.jit(jax.grad(lambda s, y: jnp.sum(fn(s, y))))(scores, labels))
    assert np.isnan(g[1]).all() and np.isfinite(g[[0, 2]]).all()
    weights = jnp.array([1.0, 1.0, -1.0, 1.0])  # class 2 negative: example 2 is bad
    good = jnp.array([0, 1, 2], jnp.uint8)

    def total(s, w):
        return jnp.sum(fn(s, good, class_weights=w))

    g_s, g_w = map(np.asarray, jax.jit(jax.grad(total, argnums=(0, 1)))(scores, weights))
    assert np.isnan(g_s[2]).all() and np.isfinite(g_s[:2]).all()
    assert np.isnan(g_w[2]) and np.isfinite(g_w[[0, 1, 3]]).all()


def test_true_margin_gradient_of_a_bad_example_is_nan():
    scores, _ = random_problem(18, 3, 4, np.float32)
    options = dict(margins="absolute", classes="true", squared=True)

    def grad_true_margin(module, labels, weights=None):
        def total(nu, y, w):  # as arguments: closed over, bad values would raise
            return jnp.sum(
                module.unified_hinge(scores, y, true_margin=nu, class_weights=w, **options)
            )

        return jax.jit(jax.grad(total))(1.0, labels, jnp.ones(4) if weights is None else weights)

    good = jnp.array([0, 1, 2])
    # the analytic rule: a bad label makes the true margin's gradient NaN (autodiff of the
    # pure loss drops that example from it instead: its true-class mask is empty)
    assert np.isnan(grad_true_margin(analytic, jnp.array([0, 7, 2])))
    negative = jnp.array([1.0, -1.0, 1.0, 1.0])  # example 1's class weight: NaN in both
    for module in (analytic, losses):
        assert np.isnan(grad_true_margin(module, good, negative))
    # and with good inputs the two modules agree
    assert_close(grad_true_margin(analytic, good), grad_true_margin(losses, good), F32_TOL)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_nan_score_gives_nan_gradient_row(name):
    scores = jnp.array([[0.0, jnp.nan, 1.0], [0.5, 0.1, 2.0]])
    labels = jnp.array([0, 2])
    g = grad_of_sum(getattr(analytic, name))(scores, labels)
    assert np.isnan(g[0]).all()
    assert np.isfinite(g[1]).all()
