"""Internal: sparse features, from the caller's matrix to the rows the products read.

Every entry point that takes ``X`` takes a sparse one too: a ``scipy.sparse`` matrix or
array (CSR, CSC, COO, or any format with ``tocsr``) or a ``jax.experimental.sparse``
``BCOO`` / ``BCSR`` with two sparse dimensions. It becomes a :class:`SparseRows`: the
non-zeros in row order (values, column and row of each), optionally with a copy in column
order for the product ``X^T M``, split into row blocks (one per device of a mesh, else
one). Nothing here builds the dense ``[N, D]`` array.

* :func:`is_sparse` tells the kinds apart; :func:`to_csr` checks a concrete matrix and
  returns it in canonical form on the host (:func:`check_csr` names the first problem);
* :func:`lay_out` builds the blocks from a checked CSR matrix: the non-zeros of each row
  cut into slots of :data:`SLOT` entries, the slots padded to a bucket
  (so data of similar size shares a compiled program); :func:`place` puts them on a
  device or a mesh; :func:`as_rows` does all of it for one block;
* :func:`from_jax` reads a ``BCOO`` / ``BCSR`` inside ``jit`` with no host work.

The canonical form: duplicate entries are summed (scipy's ``sum_duplicates``, what the
matrix means in scipy's own products) and each row's entries sorted by column. Explicit
zeros, empty rows and empty columns are allowed. An index outside the matrix is an error,
except an entry of value 0 of a ``BCOO`` / ``BCSR`` with an index equal to or beyond the
dimension's size: JAX's own sparse operations pad so, and the entry is dropped. A
non-finite value is an error. Inside ``jit`` (a traced ``BCOO``) the same bad entries make
the products NaN instead, so a model trained on them is visibly NaN, never silently wrong.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as scipy_sparse
from jax.experimental import sparse as jax_sparse
from jax.sharding import Mesh

from svmjax import sharding
from svmjax._checks import is_concrete

Csr = Any  # a scipy.sparse CSR matrix (scipy's annotations leave its shape optional)
_MIN_SLOTS = 1024  # the smallest bucket of slots per block
_STEPS = 8  # buckets per octave: at most 1/8 of a block's slots are padding
# Entries per slot. One width for every matrix, so that folds of one data set never
# differ in it: on text-like data 8 is the fastest of 4, 8 and 16 or within 1.3x of it
# for both products (experiments/bench_sparse_kernels.py times the three).
SLOT = 8


@dataclasses.dataclass(frozen=True)
class SparseRows:
    """Sparse ``[P m, D]`` features as ``P`` row blocks of ``m`` rows (a pytree).

    Block ``p`` holds rows ``[p m, (p + 1) m)``. Its non-zeros are cut into *slots* of up
    to ``E`` entries of one row: ``values[p]`` and ``index[p]`` (``[E, S]``: the value and
    column of entry ``e`` of slot ``s``; padding entries are 0) and ``owner[p]`` (``[S]``:
    each slot's row within the block, ascending when ``sorted``; ``m`` marks a padding
    slot). ``t_values``, ``t_index``, ``t_owner`` hold the same entries in slots of one
    column each (``t_index`` their rows, ``t_owner`` the column, ``D`` for padding), or
    ``None``. ``block_rows`` (``m``), ``n_cols`` (``D``), ``sorted`` and ``batch_slots``
    (for training data: the slots a minibatch of a block's rows can have at most) are
    static.
    """

    values: jax.Array
    index: jax.Array
    owner: jax.Array
    t_values: jax.Array | None
    t_index: jax.Array | None
    t_owner: jax.Array | None
    block_rows: int
    n_cols: int
    sorted: bool = True
    batch_slots: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.values.shape[0] * self.block_rows, self.n_cols)

    @property
    def dtype(self) -> Any:
        return self.values.dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def blocks(self) -> int:
        return self.values.shape[0]

    @property
    def stored(self) -> int:
        """Entries stored in row slots, padding included (over all blocks)."""
        return self.values.size

    def astype(self, dtype) -> SparseRows:
        return dataclasses.replace(
            self,
            values=self.values.astype(dtype),
            t_values=None if self.t_values is None else self.t_values.astype(dtype),
        )


_FIELDS = ["values", "index", "owner", "t_values", "t_index", "t_owner"]
jax.tree_util.register_dataclass(
    SparseRows, data_fields=_FIELDS, meta_fields=["block_rows", "n_cols", "sorted", "batch_slots"]
)
try:  # so that a compiled program taking one can be exported (svmjax.cache)
    jax.export.register_pytree_node_serialization(
        SparseRows,
        serialized_name="svmjax._sparse.SparseRows",
        serialize_auxdata=lambda aux: repr(tuple(aux)).encode(),
        deserialize_auxdata=lambda raw: tuple(eval(raw.decode(), {})),  # ints and a bool
    )
except (AttributeError, ValueError):  # an older JAX, or registered already
    pass


def is_sparse(X: object) -> bool:
    """Whether ``X`` is a sparse matrix svmjax reads as such (scipy, JAX, or laid out)."""
    return isinstance(X, SparseRows | jax_sparse.BCOO | jax_sparse.BCSR) or scipy_sparse.issparse(X)


# ----------------------------------------------------------------------- checks on the host


def _position(csr: Csr, k: int) -> str:
    """Where entry ``k`` of ``csr`` (in storage order) sits, as ``(row, column)``."""
    row = int(np.searchsorted(csr.indptr, k, side="right")) - 1
    return f"({row}, {int(csr.indices[k])})"


def check_csr(csr: Csr, name: str = "X", *, csc: bool = False) -> None:
    """Raise ``ValueError`` naming the first problem of a CSR matrix (with ``csc``: of the
    CSC matrix whose transpose ``csr`` is): a malformed row pointer, a negative or
    out-of-range column index, a non-finite value."""
    row, col = ("column", "row") if csc else ("row", "column")
    n, d = csr.shape
    indptr, indices = np.asarray(csr.indptr), np.asarray(csr.indices)
    if indptr.shape != (n + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{name}: its {row} pointers (indptr) are not non-decreasing from 0")
    if indptr[-1] > indices.size or indices.size != csr.data.size:
        raise ValueError(f"{name}: its {row} pointers (indptr) point past its indices")
    if indptr[-1] < indices.size:  # entries past the last row pointer are not part of it
        csr.indices, csr.data = indices[: indptr[-1]], csr.data[: indptr[-1]]
        indices = csr.indices
    bad = np.flatnonzero((indices < 0) | (indices >= d))
    if bad.size:
        raise ValueError(
            f"{name} has a {col} index outside [0, {d}): {int(indices[bad[0]])} in {row} "
            f"{int(np.searchsorted(indptr, bad[0], side='right')) - 1}"
        )
    if csr.data.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {csr.data.dtype}")
    if csr.data.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(csr.data))
        if bad.size:
            k = int(bad[0])
            where = _position(csr, k)
            if csc:
                where = "(" + ", ".join(where[1:-1].split(", ")[::-1]) + ")"
            raise ValueError(f"{name} is not finite: {name}{where} = {csr.data[k]}")


def _coo_indices(indices: np.ndarray, data: np.ndarray, shape, name: str):
    """Entries of a JAX sparse matrix's ``[nnz, 2]`` indices on the host: padding
    (an index at or beyond the size, value 0) dropped, other out-of-range ones refused."""
    beyond = np.any(indices >= np.asarray(shape), axis=1)
    bad = np.flatnonzero(np.any(indices < 0, axis=1) | (beyond & (data != 0)))
    if bad.size:
        row, col = (int(i) for i in indices[bad[0]])
        raise ValueError(
            f"{name} has an index outside its shape {tuple(shape)}: ({row}, {col}) "
            f"(entry {int(bad[0])}, value {data[bad[0]]})"
        )
    return indices[~beyond], data[~beyond]


def to_csr(X: Any, name: str = "X") -> Csr:
    """A concrete sparse ``X`` (scipy or JAX) as a checked CSR matrix in canonical form
    (duplicates summed, columns sorted within each row) on the host; the caller's matrix
    is never modified. ``TypeError`` / ``ValueError`` naming the first problem."""
    if isinstance(X, jax_sparse.BCSR):
        X = X.to_bcoo()
    if isinstance(X, jax_sparse.BCOO):
        if X.n_batch or X.n_dense or X.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D BCOO with two sparse dimensions, got n_batch="
                f"{X.n_batch}, n_dense={X.n_dense}, shape {X.shape}"
            )
        data, indices = np.asarray(X.data), np.asarray(X.indices)
        indices, data = _coo_indices(indices, data, X.shape, name)
        X = scipy_sparse.csr_matrix((data, (indices[:, 0], indices[:, 1])), shape=X.shape)
    elif not scipy_sparse.issparse(X):
        raise TypeError(f"{name} must be a sparse matrix, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape [N, D], got {X.shape}")
    if X.format == "coo":  # check the indices before scipy sums them into rows
        row, col = np.asarray(X.row), np.asarray(X.col)
        bad = np.flatnonzero((row < 0) | (row >= X.shape[0]) | (col < 0) | (col >= X.shape[1]))
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"{name} has an index outside its shape {X.shape}: ({row[k]}, {col[k]})"
            )
    if X.format == "csc":  # its transpose is a CSR view: check it before scipy converts
        check_csr(scipy_sparse.csr_matrix(X.T), name, csc=True)
    csr = scipy_sparse.csr_matrix(X.tocsr(), copy=X.format == "csr")
    check_csr(csr, name)
    if not csr.has_canonical_format:
        csr.sum_duplicates()  # sums duplicates and sorts each row's columns
    return csr


# --------------------------------------------------------------------------- layout


def bucket(n: int, minimum: int = _MIN_SLOTS, steps_per_octave: int = _STEPS) -> int:
    """``n`` rounded up to ``minimum`` or to a multiple of ``2**k / steps_per_octave``
    with ``2**k <= n`` (so at most ``1 / steps_per_octave`` is padding)."""
    if n <= minimum:
        return minimum
    step = max(1, (1 << (n.bit_length() - 1)) // steps_per_octave)
    return -(-n // step) * step


def _slots(indptr, indices, values, width: int, size: int, pad_owner: int, dtype):
    """The entries of a compressed matrix (row ``r``: ``indptr[r]:indptr[r + 1]``) in
    slots of ``width``: ``(values [E, size], index [E, size], owner [size])``."""
    lengths = np.diff(indptr)
    count = -(-lengths // width)
    owner = np.repeat(np.arange(lengths.size), count)
    first = np.cumsum(count) - count
    row = np.repeat(np.arange(lengths.size), lengths)
    within = np.arange(indices.size) - np.asarray(indptr)[row]
    slot, position = first[row] + within // width, within % width
    out = (np.zeros((width, size), dtype), np.zeros((width, size), np.int32))
    out[0][position, slot], out[1][position, slot] = values, indices
    padded = np.full(size, pad_owner, np.int32)
    padded[: owner.size] = owner
    return (*out, padded)


def lay_out(
    csr: Csr,
    dtype: Any,
    *,
    blocks: int = 1,
    block_rows: int | None = None,
    n_cols: int | None = None,
    transposed: bool = False,
    batch_rows: int | None = None,
) -> SparseRows:
    """``csr`` (checked, canonical) as a :class:`SparseRows` of NumPy arrays: ``blocks``
    blocks of ``block_rows`` rows (default ``ceil(N / blocks)``; rows past ``N`` are
    empty), ``n_cols`` columns (default ``D``; more adds empty columns), with
    ``transposed`` the column slots too. Slots hold :data:`SLOT` entries; each block's
    slots are padded to the bucket of the largest block's count, so data of similar size
    shares a compiled program. With
    ``batch_rows``, ``batch_slots`` holds every minibatch of that many rows of a block:
    the bucket of the largest sum of the slot counts of the ``batch_rows`` longest rows
    of a block (data only, not the batch order, so every epoch runs one program)."""
    n, d = csr.shape
    m = -(-n // blocks) if block_rows is None else int(block_rows)
    width = d if n_cols is None else int(n_cols)
    if blocks * m < n or width < d:
        raise ValueError(f"{blocks} blocks of {m} rows and {width} columns cannot hold {csr.shape}")
    parts = [csr[min(p * m, n) : min((p + 1) * m, n)] for p in range(blocks)]
    lengths = np.zeros((blocks, m), np.int64)
    lengths.reshape(-1)[:n] = np.diff(csr.indptr)
    per_row = -(-lengths // SLOT)
    size = bucket(int(np.max(np.sum(per_row, axis=1))))
    rows = [_slots(b.indptr, b.indices, b.data, SLOT, size, m, dtype) for b in parts]
    arrays: dict[str, Any] = dict(
        zip(_FIELDS, [*map(np.stack, zip(*rows, strict=True))] + 3 * [None], strict=True)
    )
    if transposed:
        columns = [b.tocsc() for b in parts]  # each column's rows sorted
        t_size = bucket(max(int(np.sum(-(-np.diff(c.indptr) // SLOT))) for c in columns))
        t = [_slots(c.indptr, c.indices, c.data, SLOT, t_size, width, dtype) for c in columns]
        arrays.update(zip(_FIELDS[3:], map(np.stack, zip(*t, strict=True)), strict=True))
    batch_slots = 0
    if batch_rows is not None:
        longest = -np.sort(-per_row, axis=1)[:, :batch_rows]
        batch_slots = bucket(int(np.max(np.sum(longest, axis=1))))
    return SparseRows(**arrays, block_rows=m, n_cols=width, batch_slots=batch_slots)


def as_rows(X: Any, name: str = "X") -> SparseRows:
    """Any sparse ``X`` as one block on the default device: a :class:`SparseRows` as it
    is, a JAX matrix by :func:`from_jax`, a scipy one checked (:func:`to_csr`) and laid out
    with its column-order copy, in JAX's canonical dtype of its values."""
    if isinstance(X, SparseRows):
        return X
    if isinstance(X, jax_sparse.BCOO | jax_sparse.BCSR):
        return from_jax(X, name)
    csr = to_csr(X, name)
    dtype = jax.dtypes.canonicalize_dtype(csr.dtype)
    return place(lay_out(csr, dtype, transposed=True))


def place(X: SparseRows, mesh: Mesh | None = None) -> SparseRows:
    """``X`` (host arrays) on the default device, or with ``mesh`` one block per device
    (``X.blocks == mesh.size``): each device receives only its rows' non-zeros."""
    if mesh is None:
        return jax.device_put(X)
    return sharding.put(X, mesh, sharding.batch_spec(mesh, 2))


# ------------------------------------------------------------------------- in jit


def from_jax(X: jax_sparse.BCOO | jax_sparse.BCSR, name: str = "X") -> SparseRows:
    """A ``BCOO`` / ``BCSR`` as one block, with no host work (also inside ``jit``).

    Concrete input is checked first (:func:`check_jax`). Traced input: padding entries
    (an index at or beyond the size, value 0) are dropped; an entry with a negative
    index, or an out-of-range one with a non-zero value, becomes NaN (so the products
    are NaN); rows count as sorted when the ``BCOO`` says its indices are."""
    if isinstance(X, jax_sparse.BCSR):
        X = X.to_bcoo()
    if X.n_batch or X.n_dense or X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D BCOO with two sparse dimensions, got n_batch={X.n_batch}, "
            f"n_dense={X.n_dense}, shape {X.shape}"
        )
    if is_concrete(X.data, X.indices):
        check_jax(X, name)
    n, d = X.shape
    row, col = X.indices[:, 0], X.indices[:, 1]
    beyond = (row >= n) | (col >= d)
    bad = (row < 0) | (col < 0) | (beyond & (X.data != 0))
    data = jnp.where(bad, jnp.nan, jnp.where(beyond, 0, X.data))
    row, col = jnp.clip(row, 0, n - 1), jnp.clip(col, 0, d - 1)
    return SparseRows(  # one entry per slot
        data[None, None], col[None, None].astype(jnp.int32), row[None].astype(jnp.int32),
        None, None, None, block_rows=n, n_cols=d, sorted=bool(X.indices_sorted),
    )  # fmt: skip


@jax.jit
def _jax_problems(data, indices, shape):
    """The first bad index entry and the first non-finite value, each ``(found, entry,
    its indices, its value)``."""
    beyond = jnp.any(indices >= shape[None, :], axis=1)
    bad_index = jnp.any(indices < 0, axis=1) | (beyond & (data != 0))
    finite = jnp.isfinite(data) if jnp.issubdtype(data.dtype, jnp.inexact) else data == data

    def first(mask):
        k = jnp.argmax(mask)
        return jnp.any(mask), k, indices[k], data[k]

    return first(bad_index), first(~finite)


def check_jax(X: jax_sparse.BCOO, name: str = "X") -> None:
    """Raise ``ValueError`` naming the first bad entry of a concrete ``BCOO``: a
    negative index, an out-of-range one with a non-zero value, a non-finite value."""
    if X.data.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {X.data.dtype}")
    with jax.ensure_compile_time_eval():  # concrete also where X is closed over in a trace
        shape = jnp.asarray(X.shape, X.indices.dtype)
        bad_index, not_finite = jax.device_get(_jax_problems(X.data, X.indices, shape))
    if X.nse and bad_index[0]:
        row, col = (int(i) for i in bad_index[2])
        raise ValueError(f"{name} has an index outside its shape {X.shape}: ({row}, {col})")
    if X.nse and not_finite[0]:
        row, col = (int(i) for i in not_finite[2])
        raise ValueError(f"{name} is not finite: {name}({row}, {col}) = {not_finite[3]}")
