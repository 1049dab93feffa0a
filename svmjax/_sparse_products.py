"""Internal: the products of sparse features (:class:`svmjax._sparse.SparseRows`) with
dense matrices, and the minibatch of sparse rows.

* :func:`matmul` is ``X @ W`` ``[N, K]``, differentiable with respect to ``W`` (its
  ``custom_vjp`` takes ``X^T G`` with :func:`rmatmul`); :func:`rmatmul` is ``X^T M``
  ``[D, K]``. The exact solver's layout: :func:`class_scores` (``V X^T``, ``[K, N]``) and
  :func:`class_gradient` (``u X``, ``[K, D]``).
* :func:`take_rows` gathers a minibatch of rows, its non-zeros padded to a static count,
  inside ``jit``.

Each product reads the non-zeros once: it gathers the rows of the dense matrix the
entries point to, scales them by the values and sums them into their row (column) with a
segment sum over sorted ids. ``X^T M`` reads the column-order copy when ``X`` has one
(sorted ids again), else scatters by column. Row blocks (a mesh's devices) are
``jax.vmap``-ed over, so each device reads only its own non-zeros; ``X^T M`` then sums
the blocks' ``[D, K]`` parts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from svmjax._sparse import SparseRows


def _times(data, cols, rows, W, m: int, is_sorted: bool):
    """One block's ``X_p @ W`` ``[m, K]``."""
    picked = W.at[cols].get(mode="promise_in_bounds")
    return jax.ops.segment_sum(
        data[:, None] * picked, rows, m, indices_are_sorted=is_sorted, mode="drop"
    )


def _transposed_times(X: SparseRows, M, d: int):
    """One block's ``X_p^T @ M_p`` ``[D, K]`` (``M_p`` its ``[m, K]`` rows)."""
    if X.t_data is not None and X.t_rows is not None and X.t_cols is not None:  # by column
        picked = M.at[X.t_rows].get(mode="promise_in_bounds")
        return jax.ops.segment_sum(
            X.t_data[:, None] * picked, X.t_cols, d, indices_are_sorted=True, mode="drop"
        )
    picked = jnp.take(M, X.rows, axis=0, mode="fill", fill_value=0)  # padding rows: 0
    return jax.ops.segment_sum(X.data[:, None] * picked, X.cols, d, mode="drop")


def times(X: SparseRows, W: jax.Array) -> jax.Array:
    """``X @ W`` ``[P m, K]`` for ``W`` ``[D, K]`` (no derivative rule: see :func:`matmul`)."""
    if W.shape[0] != X.n_cols:
        raise ValueError(f"X {X.shape} and W {W.shape} do not match")
    W = jnp.asarray(W, jnp.result_type(X.data, W))
    out = jax.vmap(lambda d, c, r: _times(d, c, r, W, X.block_rows, X.sorted))(
        X.data, X.cols, X.rows
    )
    return out.reshape(-1, W.shape[1])


def rmatmul(X: SparseRows, M: jax.Array) -> jax.Array:
    """``X^T @ M`` ``[D, K]`` for ``M`` ``[P m, K]``."""
    if M.shape[0] != X.shape[0]:
        raise ValueError(f"X {X.shape} and M {M.shape} do not match")
    M = jnp.asarray(M, jnp.result_type(X.data, M))
    blocks = M.reshape(X.blocks, X.block_rows, M.shape[1])
    leaves = dataclasses.replace(X, block_rows=0)  # vmapped: one block's arrays
    parts = jax.vmap(lambda x, m: _transposed_times(x, m, X.n_cols))(leaves, blocks)
    return parts[0] if X.blocks == 1 else jnp.sum(parts, axis=0)


@jax.custom_vjp
def _matmul(X: SparseRows, W: jax.Array) -> jax.Array:
    return times(X, W)


def _matmul_fwd(X, W):
    if X.data.perturbed or (X.t_data is not None and X.t_data.perturbed):
        raise NotImplementedError(
            "svmjax differentiates with respect to the weights only, not the values of a sparse X"
        )
    X, W = jax.tree.map(lambda p: p.value, (X, W))
    return times(X, W), X


def _matmul_bwd(X, g):
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        return None, None
    return None, rmatmul(X, g)


_matmul.defvjp(_matmul_fwd, _matmul_bwd, symbolic_zeros=True)


def matmul(X: SparseRows, W: jax.Array) -> jax.Array:
    """``X @ W`` ``[N, K]``; ``jax.grad`` with respect to ``W`` gives ``X^T G`` by
    :func:`rmatmul` (one more pass over the non-zeros). Not in forward mode; a gradient
    with respect to ``X``'s values raises ``NotImplementedError``."""
    return _matmul(X, W)


def class_scores(X: SparseRows, V: jax.Array) -> jax.Array:
    """``V @ X^T`` ``[K, N]`` for ``V`` ``[K, D]``: the exact solver's layout."""
    return times(X, V.T).T


def class_gradient(X: SparseRows, u: jax.Array) -> jax.Array:
    """``u @ X`` ``[K, D]`` for ``u`` ``[K, N]``: the exact solver's layout."""
    return rmatmul(X, u.T).T


# ------------------------------------------------------------------------------ minibatches


def _take_block(data, cols, rows, index, m: int, nnz: int):
    """The rows ``index`` ``[b]`` (``-1``: an empty padding row) of one block."""
    starts = jnp.searchsorted(rows, jnp.arange(m + 1, dtype=rows.dtype), side="left")
    real = index >= 0
    at = jnp.where(real, index, 0)
    lengths = jnp.where(real, starts[at + 1] - starts[at], 0)
    ends = jnp.cumsum(lengths)
    slot = jnp.arange(nnz, dtype=ends.dtype)
    owner = jnp.searchsorted(ends, slot, side="right")  # the batch row of each slot
    inside = owner < index.shape[0]
    owner_at = jnp.minimum(owner, index.shape[0] - 1)
    source = starts[at[owner_at]] + slot - (ends[owner_at] - lengths[owner_at])
    source = jnp.where(inside, source, 0)
    return (
        jnp.where(inside, data[source], 0),
        jnp.where(inside, cols[source], 0),
        jnp.where(inside, owner, index.shape[0]).astype(jnp.int32),
    )


def take_rows(X: SparseRows, index: jax.Array, nnz: int) -> SparseRows:
    """The minibatch ``X[index]`` as a :class:`SparseRows` without the column-order copy:
    ``index`` ``[P, b]`` row indices within each block (``-1`` for an empty padding row);
    batch block ``p`` holds block ``p``'s rows ``index[p]`` and at most ``nnz``
    non-zeros (``X.batch_nnz`` bounds them; more would be dropped)."""
    take = jax.vmap(lambda d, c, r, i: _take_block(d, c, r, i, X.block_rows, nnz))
    data, cols, rows = take(X.data, X.cols, X.rows, index)
    return SparseRows(data, cols, rows, None, None, None, index.shape[1], X.n_cols, True)
