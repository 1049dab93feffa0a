"""Loss values: both modules against a readable naive loop, plus the checklist properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F32_TOL, LOSS_NAMES, TOL, assert_close, random_problem

from svmjax import analytic, losses

MODULES = {"losses": losses, "analytic": analytic}
TRANSFORMS = {"eager": lambda f: f, "jit": jax.jit}


def naive_loss(name, scores, labels, margin=1.0, squared=False, class_weights=None):
    """The three losses written as plain Python loops over examples and classes."""

    def h(v):
        return max(0.0, v) ** 2 if squared else max(0.0, v)

    out = []
    for s, y in zip(
        np.asarray(scores, np.float64).tolist(), np.asarray(labels).tolist(), strict=True
    ):
        if name == "weston_watkins":
            loss = sum(h(s[j] - s[y] + margin) for j in range(len(s)) if j != y)
        elif name == "crammer_singer":
            loss = h(max(s[j] for j in range(len(s)) if j != y) - s[y] + margin)
        else:
            loss = sum(h(margin - (1.0 if j == y else -1.0) * s[j]) for j in range(len(s)))
        out.append(loss * (1.0 if class_weights is None else float(class_weights[y])))
    return np.array(out)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("margin", [1.0, 0.5])
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_matches_naive_loop(dtype, module, transform, name, margin, squared, weighted):
    scores, labels = random_problem(0, 64, 7, dtype, scale=2.5)
    weights = np.linspace(0.5, 2.0, 7).astype(dtype) if weighted else None
    fn = getattr(MODULES[module], name)
    got = TRANSFORMS[transform](
        lambda s, y, w: fn(s, y, margin=margin, squared=squared, class_weights=w)
    )(scores, labels, weights)
    assert got.shape == (64,) and got.dtype == dtype
    want = naive_loss(name, scores, labels, margin, squared, weights)
    if name != "one_vs_rest":  # the data exercises both sides of the hinge
        assert 0.1 < np.mean(want > 0) < 0.95
    assert_close(got, want, TOL[dtype])


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_cs231n_worked_example(name):
    # cs231n's example: scores for (cat, car, frog), true class cat, margin 1.
    scores = jnp.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    labels = jnp.array([0, 1, 2])
    if name == "weston_watkins":  # cs231n: 2.9, 0, 12.9 (mean 5.27)
        assert_close(losses.weston_watkins(scores, labels), np.array([2.9, 0.0, 12.9]), F32_TOL)
    want = naive_loss(name, scores, labels)
    assert_close(getattr(analytic, name)(scores, labels), want, F32_TOL)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_zero_once_margins_are_met(module, name):
    # True class ahead by more than the margin (and, for one-vs-rest, every score on the
    # right side of +-margin): the loss is exactly zero.
    scores = jnp.array([[2.5, -1.5, -1.2], [-1.1, -3.0, 1.7]])
    labels = jnp.array([0, 2])
    fn = getattr(MODULES[module], name)
    np.testing.assert_array_equal(fn(scores, labels), [0.0, 0.0])
    assert float(fn(scores, labels, margin=5.0)[0]) > 0  # a larger margin is violated


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_batch_shapes_are_preserved(module, name):
    scores, labels = random_problem(1, 24, 5, np.float32)
    fn = getattr(MODULES[module], name)
    flat = fn(scores, labels)
    nested = fn(scores.reshape(2, 3, 4, 5), labels.reshape(2, 3, 4))
    assert nested.shape == (2, 3, 4)
    assert_close(nested.reshape(-1), flat, F32_TOL)  # another program: rounding may differ
    single = fn(scores[3], labels[3])
    assert single.shape == ()
    assert_close(single, flat[3], F32_TOL)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
def test_vmap_of_single_example_equals_batched_call(module, name, squared):
    scores, labels = random_problem(2, 32, 6, np.float32)
    fn = getattr(MODULES[module], name)
    mapped = jax.jit(jax.vmap(lambda s, y: fn(s, y, squared=squared)))(scores, labels)
    # Equal up to float32 summation order (XLA may fuse the two programs differently).
    assert_close(mapped, fn(scores, labels, squared=squared), F32_TOL)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_infinite_scores(module, name):
    # A wrong class at +inf makes every loss +inf (not NaN); -inf wrong classes cost nothing
    # in Weston-Watkins / Crammer-Singer.
    fn = getattr(MODULES[module], name)
    scores = jnp.array([[0.0, jnp.inf, 0.0]])
    assert float(fn(scores, jnp.array([0]))[0]) == np.inf
    far = jnp.array([[0.0, -jnp.inf, -jnp.inf]])
    if name != "one_vs_rest":
        assert float(fn(far, jnp.array([0]))[0]) == 0.0


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_margin_can_be_traced(module, name):
    # margin is an array argument, so it can be jitted over or vmapped without recompiling.
    scores, labels = random_problem(3, 16, 4, np.float32)
    fn = getattr(MODULES[module], name)
    by_margin = jax.vmap(lambda m: fn(scores, labels, margin=m))(jnp.array([0.5, 1.0, 2.0]))
    for row, m in zip(by_margin, [0.5, 1.0, 2.0], strict=True):
        assert_close(row, naive_loss(name, scores, labels, m), F32_TOL)
