"""The L-BFGS pieces of the exact solver, each alone, on quadratics with known minimisers."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import F64_TOL, assert_close

from svmjax import lbfgs
from svmjax.gradcheck import x64


def _quadratic(seed=0, n=6, condition=50.0):
    """f(x) = 1/2 x^T A x - b^T x with A symmetric positive definite; minimiser A^-1 b."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = Q @ np.diag(np.geomspace(1.0, condition, n)) @ Q.T
    b = rng.standard_normal(n)
    return jnp.asarray(A), jnp.asarray(b), np.linalg.solve(A, b)


def _minimise(A, b, memory_size, steps):
    """``steps`` L-BFGS iterations from 0, composed from the pieces (one jitted step)."""

    def f(x):
        return 0.5 * x @ A @ x - b @ x

    @jax.jit
    def step(x, memory):
        g = A @ x - b
        d = lbfgs.direction(g, memory)
        t, _, _ = lbfgs.backtracking(lambda t: (f(x + t * d) - f(x), None), g @ d)
        memory = lbfgs.update_memory(memory, t * d, A @ (x + t * d) - b - g)
        return x + t * d, memory

    x, memory = jnp.zeros(b.shape[0], b.dtype), lbfgs.init_memory(memory_size, b.shape[0], b.dtype)
    for _ in range(steps):
        x, memory = step(x, memory)
    return x, memory


def test_lbfgs_finds_the_minimiser_of_a_quadratic():
    with x64():
        A, b, want = _quadratic()
        x, memory = _minimise(A, b, memory_size=10, steps=60)
        assert_close(x, want, 1e-9)
        assert int(memory.size) == 10  # the ring buffer filled and wrapped around


def test_empty_memory_gives_a_short_steepest_descent_step():
    g = jnp.array([3.0, -4.0])  # |g| = 5: the first step has length 1
    d = lbfgs.direction(g, lbfgs.init_memory(4, 2, jnp.float32))
    assert_close(d, -g / 5.0, 1e-7)
    small = jnp.array([0.03, -0.04])  # |g| < 1: the plain negative gradient
    assert_close(lbfgs.direction(small, lbfgs.init_memory(4, 2, jnp.float32)), -small, 1e-7)


def test_secant_condition_and_the_newton_step_on_conjugate_pairs():
    with x64():
        A, b, _ = _quadratic(seed=1, n=4, condition=10.0)
        memory = lbfgs.init_memory(4, 4, jnp.float64)
        # The newest pair always satisfies the secant condition H y = s.
        s, y = jnp.array([1.0, 2.0, 0.0, -1.0]), None
        y = A @ s
        memory = lbfgs.update_memory(memory, s, y)
        assert_close(lbfgs.direction(y, memory), -s, F64_TOL * 1e3)
        # n A-conjugate pairs (A's eigenvectors) determine H = A^{-1} exactly: the
        # direction is then the Newton step -A^{-1} g.
        _, vectors = np.linalg.eigh(np.asarray(A))
        memory = lbfgs.init_memory(4, 4, jnp.float64)
        for v in vectors.T:
            memory = lbfgs.update_memory(memory, jnp.asarray(v), A @ jnp.asarray(v))
        g = jnp.array([1.0, -2.0, 0.5, 3.0])
        assert_close(lbfgs.direction(g, memory), -jnp.linalg.solve(A, g), F64_TOL * 1e3)


def _two_loop(g, pairs):
    """Nocedal and Wright's Algorithm 7.4 in float64 over ``pairs`` (oldest first)."""
    q, alphas = np.array(g, np.float64), []
    for s, y in reversed(pairs):
        alphas.append(s @ q / (s @ y))
        q = q - alphas[-1] * y
    if not pairs:
        return -min(1.0, 1.0 / np.linalg.norm(g)) * q
    s, y = pairs[-1]
    r = (s @ y) / (y @ y) * q
    for (s, y), alpha in zip(pairs, reversed(alphas), strict=True):
        r = r + (alpha - y @ r / (s @ y)) * s
    return -r


def test_direction_is_the_two_loop_recursion():
    # The compact representation against the two-loop recursion in float64, through a
    # ring buffer that wraps around, is partly filled, and is emptied (forget).
    rng = np.random.default_rng(3)
    n, m = 40, 6
    A = rng.standard_normal((n, n))
    A = A @ A.T / n + np.diag(np.geomspace(1e-2, 1e2, n))  # SPD, condition ~1e4
    direction, update = jax.jit(lbfgs.direction), jax.jit(lbfgs.update_memory)
    for dtype, tol in ((jnp.float64, 1e-10), (jnp.float32, 1e-3)):
        with x64():
            memory, kept = lbfgs.init_memory(m, n, dtype), []
            for step in range(15):
                g = rng.standard_normal(n)
                got = direction(jnp.asarray(g, dtype), memory)
                want = _two_loop(g, kept)
                assert np.max(np.abs(np.asarray(got) - want)) <= tol * np.max(np.abs(want))
                s = rng.standard_normal(n)
                memory = update(memory, jnp.asarray(s, dtype), jnp.asarray(A @ s, dtype))
                kept = [*kept, (s, A @ s)][-m:]
                if step == 9:
                    memory, kept = lbfgs.forget(memory), []
            assert int(memory.size) == 5


def test_update_memory_rejects_pairs_without_positive_curvature():
    memory = lbfgs.init_memory(3, 2, jnp.float32)
    s = jnp.array([1.0, 0.0])
    for y, accept in [(jnp.array([-1.0, 0.0]), True), (jnp.array([1.0, 0.0]), False)]:
        kept = lbfgs.update_memory(memory, s, y, accept)
        assert int(kept.size) == 0  # negative curvature, or the step was not accepted
    kept = lbfgs.update_memory(memory, s, jnp.array([2.0, 0.0]))
    assert int(kept.size) == 1 and float(kept.rho[kept.newest]) == 0.5
    assert int(lbfgs.forget(kept).size) == 0 and int(lbfgs.forget(kept, False).size) == 1


def test_backtracking_halves_until_armijo_holds():
    # change(t) = t^2 - 0.2 t, slope -0.2 at t = 0. With c1 = 0.5 Armijo asks
    # t^2 - 0.2 t <= -0.1 t, i.e. t <= 0.1: 1, 1/2, 1/4 and 1/8 fail, 1/16 is accepted.
    def change(t):
        return t * t - 0.2 * t, t

    t, decrease, aux = lbfgs.backtracking(change, jnp.asarray(-0.2), c1=0.5)
    assert float(t) == 0.0625 and float(aux) == 0.0625
    assert float(decrease) <= 0.5 * float(t) * -0.2
    assert float(change(0.125)[0]) > 0.5 * 0.125 * -0.2  # the step before was rejected


def test_pieces_run_under_jit():
    A, b, want = _quadratic(seed=2, n=3, condition=5.0)
    A, b = A.astype(jnp.float32), b.astype(jnp.float32)
    step = jax.jit(lambda g, m: lbfgs.direction(g, m))
    memory = lbfgs.init_memory(2, 3, jnp.float32)
    assert step(b, memory).shape == (3,)
    x, _ = _minimise(A, b, memory_size=3, steps=40)
    assert_close(x, want, 1e-5)
