"""L-BFGS pieces for the exact solver, as small pure functions of flat vectors and a
NamedTuple state; :mod:`svmjax.continuation` composes them in one ``jax.lax.while_loop``:

* :class:`Memory`, :func:`init_memory`, :func:`update_memory`, :func:`forget`: the ring
  buffer of the last ``m`` step / gradient-change pairs;
* :func:`direction`: the two-loop recursion, ``-H g`` with ``H`` the L-BFGS inverse-Hessian
  approximation (steepest descent, scaled to a step of length at most 1, when empty);
* :func:`backtracking`: Armijo backtracking from step 1, halving the step.

Reference: J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., Springer 2006,
Algorithms 7.4 (two-loop recursion) and 3.1 (backtracking).

Example: minimise a quadratic ``f(x) = 1/2 x^T A x - b^T x``.

  >>> import jax.numpy as jnp
  >>> A, b = jnp.diag(jnp.array([1.0, 10.0])), jnp.array([1.0, 1.0])
  >>> f, grad = lambda x: 0.5 * x @ A @ x - b @ x, lambda x: A @ x - b
  >>> x, memory = jnp.zeros(2), init_memory(5, 2, jnp.float32)
  >>> for _ in range(10):
  ...     d = direction(grad(x), memory)
  ...     t, _, _ = backtracking(lambda t: (f(x + t * d) - f(x), None), jnp.vdot(grad(x), d))
  ...     memory = update_memory(memory, t * d, grad(x + t * d) - grad(x))
  ...     x = x + t * d
  >>> x.round(4).tolist()  # the minimiser A^-1 b
  [1.0, 0.1]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Memory", "init_memory", "update_memory", "forget", "direction", "backtracking"]


class Memory(NamedTuple):
    """The last ``m`` pairs ``(s, y)`` (steps and gradient changes) in a ring buffer.

    ``S``, ``Y``: ``[m, P]``; ``rho``: ``1 / <s, y>`` ``[m]``; ``size``: pairs stored (at
    most ``m``); ``newest``: the slot of the newest pair.
    """

    S: jax.Array
    Y: jax.Array
    rho: jax.Array
    size: jax.Array
    newest: jax.Array


def init_memory(m: int, p: int, dtype: Any) -> Memory:
    """An empty memory of ``m`` pairs of ``p``-vectors."""
    zeros = jnp.zeros((m, p), dtype)
    return Memory(
        zeros, zeros, jnp.zeros(m, dtype), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)
    )


def update_memory(memory: Memory, s: jax.Array, y: jax.Array, accept: Any = True) -> Memory:
    """``memory`` with the pair ``(s, y)`` added, dropping the oldest when full.

    The pair is kept only when ``accept`` and the curvature condition
    ``<s, y> > eps |y|^2`` hold (otherwise ``H`` would lose positive definiteness, or the
    pair is rounding noise); else ``memory`` comes back unchanged.
    """
    sy = jnp.vdot(s, y)
    keep = accept & (sy > jnp.finfo(s.dtype).eps * jnp.vdot(y, y))
    slot = (memory.newest + 1) % memory.S.shape[0]
    return Memory(
        S=jnp.where(keep, memory.S.at[slot].set(s), memory.S),
        Y=jnp.where(keep, memory.Y.at[slot].set(y), memory.Y),
        rho=jnp.where(keep, memory.rho.at[slot].set(1 / jnp.where(keep, sy, 1)), memory.rho),
        size=jnp.where(keep, jnp.minimum(memory.size + 1, memory.S.shape[0]), memory.size),
        newest=jnp.where(keep, slot, memory.newest),
    )


def forget(memory: Memory, when: Any = True) -> Memory:
    """``memory`` emptied (the next direction is steepest descent) where ``when``."""
    return memory._replace(size=jnp.where(when, 0, memory.size))


def direction(g: jax.Array, memory: Memory) -> jax.Array:
    """The L-BFGS direction ``-H g`` by the two-loop recursion over the ring buffer.

    The initial matrix is ``gamma I`` with ``gamma = <s, y> / <y, y>`` of the newest pair;
    with an empty memory, ``gamma = min(1, 1 / |g|)``, so the first step has length at
    most 1.
    """
    S, Y, rho, size, newest = memory
    m = S.shape[0]

    def backward(i, carry):
        q, alphas = carry
        j = (newest - i) % m
        a = jnp.where(i < size, rho[j] * jnp.vdot(S[j], q), 0)
        return q - a * Y[j], alphas.at[j].set(a)

    q, alphas = jax.lax.fori_loop(0, m, backward, (g, jnp.zeros(m, g.dtype)))
    yy = jnp.vdot(Y[newest], Y[newest])
    first = jnp.minimum(1, 1 / jnp.maximum(jnp.linalg.norm(g), jnp.finfo(g.dtype).tiny))
    gamma = jnp.where(size > 0, jnp.vdot(S[newest], Y[newest]) / jnp.where(yy > 0, yy, 1), first)

    def forward(i, r):
        age = m - 1 - i
        j = (newest - age) % m
        beta = rho[j] * jnp.vdot(Y[j], r)
        return r + jnp.where(age < size, alphas[j] - beta, 0) * S[j]

    return -jax.lax.fori_loop(0, m, forward, gamma * q)


def backtracking(
    trial: Callable[[jax.Array], tuple[jax.Array, Any]],
    slope: jax.Array,
    *,
    c1: float = 1e-4,
    min_step: float = 2.0**-30,
) -> tuple[jax.Array, jax.Array, Any]:
    """Armijo backtracking: the first ``t`` in ``1, 1/2, 1/4, ...`` with
    ``change(t) <= c1 * t * slope``.

    Args:
      trial: ``t -> (change, aux)``, where ``change = f(x + t d) - f(x)`` (the caller may
        compute it more accurately than a difference of two totals) and ``aux`` anything
        the caller wants back from the accepted trial (a pytree of arrays).
      slope: the directional derivative ``<grad f(x), d>`` (negative for a descent
        direction).
      c1: the sufficient-decrease constant.
      min_step: give up below this step; the caller checks the returned ``change``.

    Returns:
      ``(t, change, aux)`` of the last trial (accepted, or the smallest when none was).
    """
    dtype = jnp.result_type(slope)

    def failed(carry):
        t, change, _ = carry
        return (change > c1 * t * slope) & (t > min_step)

    def halve(carry):
        t = carry[0] / 2
        change, aux = trial(t)
        return t, change, aux

    # Start "at t = 2, failed", so that the one copy of `trial` in the body runs t = 1.
    shapes = jax.eval_shape(trial, jnp.ones((), dtype))
    change0, aux0 = jax.tree.map(lambda s: jnp.full(s.shape, jnp.inf, s.dtype), shapes)
    return jax.lax.while_loop(failed, halve, (jnp.asarray(2.0, dtype), change0, aux0))
