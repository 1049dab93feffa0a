"""Internal: the products of sparse features (:class:`svmjax._sparse.SparseRows`) with
dense matrices, and the minibatch of sparse rows.

* :func:`matmul` is ``X @ W`` ``[N, K]``, differentiable with respect to ``W`` (its
  ``custom_vjp`` takes ``X^T G`` with :func:`rmatmul`); :func:`rmatmul` is ``X^T M``
  ``[D, K]``. The exact solver's layout: :func:`class_scores` (``V X^T``, ``[K, N]``) and
  :func:`class_gradient` (``(u X)^T``, ``[D, K]``), with :func:`transposed`.
* :func:`take_rows` gathers a minibatch of rows, its non-zeros padded to a static count,
  inside ``jit``.

Each product reads the non-zeros once, slot by slot (:class:`svmjax._sparse.SparseRows`):
it gathers the rows of the dense matrix a slot's entries point to, scales and adds them
(one fused kernel), and sums the slots into their row (column) with a segment sum over
sorted ids. ``X^T M`` reads the column slots when ``X`` has them, else scatters each
entry into its column. Row blocks (a mesh's devices) are
``jax.vmap``-ed over, so each device reads only its own non-zeros; ``X^T M`` then sums
the blocks' ``[D, K]`` parts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from svmjax._sparse import SparseRows


def _slot_sums(values, index, owner, src, size: int, is_sorted: bool):
    """``sum_e values[e, s] src[index[e, s]]`` per slot ``s``, summed into ``owner[s]``
    ``[size, K]``: the rows of ``src`` gathered, scaled and added in one pass (the loop
    over the ``E`` entries of a slot is unrolled, so XLA fuses it into one kernel with no
    ``[nnz, K]`` intermediate), then one segment sum of the slots."""
    total = None
    for e in range(values.shape[0]):
        term = values[e][:, None] * src.at[index[e]].get(mode="promise_in_bounds")
        total = term if total is None else total + term
    assert total is not None
    return jax.ops.segment_sum(total, owner, size, indices_are_sorted=is_sorted, mode="drop")


def _transposed_times(X: SparseRows, M, d: int):
    """One block's ``X_p^T @ M_p`` ``[D, K]`` (``M_p`` its ``[m, K]`` rows)."""
    if X.t_values is not None and X.t_index is not None and X.t_owner is not None:
        return _slot_sums(X.t_values, X.t_index, X.t_owner, M, d, True)  # column slots
    # No column slots (a minibatch, a BCOO): each entry scattered into its column.
    picked = M.at[X.owner].get(mode="fill", fill_value=0)  # padding slots: 0
    entries = X.values[:, :, None] * picked[None]  # [E, S, K]
    flat = entries.reshape(-1, M.shape[1])
    return jax.ops.segment_sum(flat, X.index.reshape(-1), d, mode="drop")


def times(X: SparseRows, W: jax.Array) -> jax.Array:
    """``X @ W`` ``[P m, K]`` for ``W`` ``[D, K]`` (no derivative rule: see :func:`matmul`)."""
    if W.shape[0] != X.n_cols:
        raise ValueError(f"X {X.shape} and W {W.shape} do not match")
    W = jnp.asarray(W, jnp.result_type(X.values, W))
    out = jax.vmap(lambda v, i, o: _slot_sums(v, i, o, W, X.block_rows, X.sorted))(
        X.values, X.index, X.owner
    )
    return out.reshape(-1, W.shape[1])


def rmatmul(X: SparseRows, M: jax.Array) -> jax.Array:
    """``X^T @ M`` ``[D, K]`` for ``M`` ``[P m, K]``."""
    if M.shape[0] != X.shape[0]:
        raise ValueError(f"X {X.shape} and M {M.shape} do not match")
    M = jnp.asarray(M, jnp.result_type(X.values, M))
    blocks = M.reshape(X.blocks, X.block_rows, M.shape[1])
    leaves = dataclasses.replace(X, block_rows=0)  # vmapped: one block's arrays
    parts = jax.vmap(lambda x, m: _transposed_times(x, m, X.n_cols))(leaves, blocks)
    return parts[0] if X.blocks == 1 else jnp.sum(parts, axis=0)


@jax.custom_vjp
def _matmul(X: SparseRows, W: jax.Array) -> jax.Array:
    return times(X, W)


def _matmul_fwd(X, W):
    if X.values.perturbed or (X.t_values is not None and X.t_values.perturbed):
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


_IDENTITY_MAX = 128  # transposed: as a product with the identity up to this short side


def transposed(a: jax.Array) -> jax.Array:
    """``a.T`` of a 2-D ``a``; when its short side ``k`` is at most 128, as a product with
    the ``k x k`` identity at full precision (exact: each entry times 1, plus zeros).

    Why: XLA:CPU fuses a plain transpose (and whatever computes ``a``) into every gather
    that reads it, one strided pass per gathered entry; the product materialises the
    transpose once, at the speed of a matrix product (``O(n k^2)``, so only for short
    sides)."""
    k = min(a.shape)
    if k > _IDENTITY_MAX:
        return a.T
    eye = jnp.eye(k, dtype=a.dtype)
    spec = "kn,kj->nj" if a.shape[0] == k else "nk,kj->jn"
    return jnp.einsum(spec, a, eye, precision=jax.lax.Precision.HIGHEST)


def class_scores(X: SparseRows, V: jax.Array) -> jax.Array:
    """``V @ X^T`` ``[K, N]`` for ``V`` ``[K, D]``: the exact solver's layout (``V.T`` is
    read as it lies when ``V`` is the transpose of a ``[D, K]`` array)."""
    return times(X, V.T).T


def class_gradient(X: SparseRows, u: jax.Array) -> jax.Array:
    """``(u @ X)^T = X^T u^T`` ``[D, K]`` for ``u`` ``[K, N]`` (the exact solver's dual
    variables): the gradient in the layout of ``W``."""
    return rmatmul(X, transposed(u))


# ------------------------------------------------------------------------------ minibatches


def _take_block(values, index, owner, rows, m: int, size: int):
    """The rows ``rows`` ``[b]`` (``-1``: an empty padding row) of one block: their slots,
    at most ``size``, owned by their position in ``rows``."""
    b = rows.shape[0]
    starts = jnp.searchsorted(owner, jnp.arange(m + 1, dtype=owner.dtype), side="left")
    real = rows >= 0
    at = jnp.where(real, rows, 0)
    counts = jnp.where(real, starts[at + 1] - starts[at], 0)
    ends = jnp.cumsum(counts)
    slot = jnp.arange(size, dtype=ends.dtype)
    batch_row = jnp.searchsorted(ends, slot, side="right")  # the batch row of each slot
    inside = batch_row < b
    row = jnp.minimum(batch_row, b - 1)
    source = jnp.where(inside, starts[at[row]] + slot - (ends[row] - counts[row]), 0)
    return (
        jnp.where(inside[None], values[:, source], 0),
        jnp.where(inside[None], index[:, source], 0),
        jnp.where(inside, batch_row, b).astype(jnp.int32),
    )


def take_rows(X: SparseRows, rows: jax.Array, size: int) -> SparseRows:
    """The minibatch ``X[rows]`` as a :class:`SparseRows` without column slots: ``rows``
    ``[P, b]`` row indices within each block (``-1`` for an empty padding row); batch
    block ``p`` holds block ``p``'s rows ``rows[p]`` in at most ``size`` slots
    (``X.batch_slots`` bounds them; more would be dropped). ``X``'s slot owners must be
    sorted."""
    take = jax.vmap(lambda v, i, o, r: _take_block(v, i, o, r, X.block_rows, size))
    values, index, owner = take(X.values, X.index, X.owner, rows)
    return SparseRows(values, index, owner, None, None, None, rows.shape[1], X.n_cols, True)
