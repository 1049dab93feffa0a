"""Internal: the data of training and of the exact solver, checked once at the entry point
and placed on its devices.

:func:`prepare_data` (one device, or replicated on a mesh) and :func:`shard_data` (laid
out by rows on a mesh) build the :class:`Data` that :func:`svmjax.train.fit` and
:func:`svmjax.grid.fit_grid` train on; :func:`prepare_consts` the loss constants.
:func:`on_host`, :func:`on_devices` and :func:`check_rows` serve :func:`svmjax.solve.solve`
too: where host data is checked, which arrays are checked where they live, and the check
of row-laid-out data on the devices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from svmjax import _checks as checks
from svmjax import _sparse, sharding
from svmjax._sparse import SparseRows
from svmjax.validation import validate

Params = dict[str, jax.Array]


class Data(NamedTuple):
    """Checked training data: features cast to the dtype of ``W`` (sparse features as
    their non-zeros, :class:`svmjax._sparse.SparseRows`), labels int32."""

    X: jax.Array | SparseRows
    y: jax.Array
    X_val: jax.Array | SparseRows | None
    y_val: jax.Array | None


class Consts(NamedTuple):
    """Checked loss constants, as arrays of the dtype of ``W``."""

    margin: jax.Array
    class_weights: jax.Array | None


def on_host():
    """A context in which new JAX arrays land on the host's CPU device: where the entry
    points check host data (checks convert to ``jax.Array``) without first copying all
    of it onto one accelerator."""
    return jax.default_device(jax.local_devices(backend="cpu")[0])


def on_devices(mesh: Mesh, *xs) -> bool:
    """True when one of ``xs`` is a ``jax.Array`` to be checked and used where it lives:
    one with shards on other processes' devices, or one laid out by rows on ``mesh``
    already (:func:`svmjax.sharding.shard_rows`); others are host data."""

    def resident(x) -> bool:
        if not isinstance(x, jax.Array):
            return False
        rows = NamedSharding(mesh, sharding.batch_spec(mesh, x.ndim)) if x.ndim else None
        return not x.is_fully_addressable or (mesh.size > 1 and x.sharding == rows)

    return any(resident(x) for x in xs)


@jax.jit
def _row_summary(X, y):
    real = y >= 0
    n = jnp.sum(real)
    finite = jnp.all(jnp.where(real.reshape(-1, *[1] * (X.ndim - 1)), jnp.isfinite(X), True))
    smallest = jnp.min(jnp.where(real, y, jnp.iinfo(y.dtype).max))
    trailing = jnp.all(real == (jnp.arange(y.shape[0]) < n)) & jnp.all(real | (y == -1))
    return finite, smallest, jnp.max(y), n, trailing


def check_rows(X: jax.Array, y: jax.Array, n_classes: int | None, name: str = "X") -> int:
    """Check row-laid-out data on the devices (nothing is gathered) and return ``N``, its
    number of real rows; labels ``-1`` mark padding rows, which must all come last.

    Raises ``ValueError`` for a non-finite real row or a label outside ``[0, n_classes)``
    (``n_classes=None``: any label ``>= 0``).
    """
    finite, smallest, largest, n, trailing = (x.item() for x in jax.device_get(_row_summary(X, y)))
    if not trailing or n == 0:
        raise ValueError(
            f"labels of {name}: -1 marks padding rows (svmjax.sharding.shard_rows), which must "
            "all come after at least one real row; other labels must lie in [0, C)"
        )
    if not finite:
        raise ValueError(f"{name} is not finite (in a row with a label >= 0)")
    if smallest < 0 or (n_classes is not None and largest >= n_classes):
        bad = smallest if smallest < 0 else largest
        raise ValueError(f"label {bad} of {name} is outside [0, {n_classes})")
    return int(n)


def _host(x, mesh: Mesh | None):
    """``x``, gathered to every process first when it is a global array spanning others."""
    if mesh is not None and isinstance(x, jax.Array) and not x.is_fully_addressable:
        return sharding.put(x, mesh)
    return x


def _features(X, dtype):
    """``X`` with integer or boolean features converted to ``dtype``; others unchanged."""
    X = X if isinstance(X, jax.Array | np.ndarray) else np.asarray(X)
    if np.issubdtype(X.dtype, np.integer) or X.dtype == np.bool_:
        return X.astype(dtype)
    return X


def _sparse_rows(params: Params, X, y, name: str, blocks: int = 1, batch_size=None):
    """A sparse ``X`` checked (:func:`svmjax._sparse.to_csr`) and laid out in ``blocks``
    row blocks in the dtype of ``W`` (integer and boolean values converted, as dense
    features are), with the non-zero bound of minibatches of ``batch_size`` rows over
    all blocks; its labels checked as :func:`svmjax.validate` checks them. Host arrays:
    ``(X, y)``."""
    W = params["W"]
    csr, y = _sparse.to_csr(X, name), np.asarray(y)
    if csr.shape[1] != W.shape[0]:
        raise ValueError(f"{name} must have shape [N, {W.shape[0]}] to match W, got {csr.shape}")
    data = _features(csr.data, W.dtype)
    checks.check_dtypes(data, y, name)
    if y.shape != csr.shape[:1]:
        raise ValueError(f"labels shape {y.shape} does not match {name} shape {csr.shape}")
    if csr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {csr.shape})")
    checks.check_labels(y, W.shape[1])
    rows = None if batch_size is None else -(-min(batch_size, csr.shape[0]) // blocks)
    laid_out = _sparse.lay_out(csr, W.dtype, blocks=blocks, batch_rows=rows)
    return laid_out, y.astype(np.int32)


def prepare_data(
    params: Params, X, y, validation_data, mesh: Mesh | None = None, batch_size=None
) -> Data:
    """:class:`Data` checked (once, here at the boundary) and cast to the dtype of ``W``;
    with ``mesh``, replicated on it (as :func:`svmjax.grid.fit_grid` uses it;
    :func:`svmjax.train.fit` lays the rows out with :func:`shard_data` instead). Sparse
    training features are laid out for minibatches of ``batch_size`` rows."""
    W = params["W"]

    def arrays(X, y, name):
        if _sparse.is_sparse(X):
            size = batch_size if name == "X" else None
            X, y = _sparse_rows(params, X, _host(y, mesh), name, batch_size=size)
            return jax.device_put((X, y)) if mesh is None else sharding.put((X, y), mesh)
        X = _features(_host(X, mesh), W.dtype)
        if X.ndim != 2 or X.shape[1] != W.shape[0]:
            raise ValueError(f"{name} must have shape [N, {W.shape[0]}] to match W, got {X.shape}")
        X, y = validate(X, _host(y, mesh), W.shape[1], name=name)
        X, y = X.astype(W.dtype), y.astype(jnp.int32)
        return (X, y) if mesh is None else (sharding.put(X, mesh), sharding.put(y, mesh))

    X, y = arrays(X, y, "X")
    if validation_data is None:
        return Data(X, y, None, None)
    X_val, y_val = validation_data
    X_val, y_val = arrays(X_val, y_val, "X_val")
    return Data(X, y, X_val, y_val)


def shard_data(
    params: Params, X, y, validation_data, mesh: Mesh, batch_size=None
) -> tuple[Data, int]:
    """:class:`Data` laid out by rows on ``mesh`` (:func:`svmjax.sharding.shard_rows`;
    padding rows have label ``-1``), checked, and the number ``N`` of real training rows.
    Sparse features: one block of rows per device, each device receiving only its rows'
    non-zeros, laid out for minibatches of ``batch_size`` rows over all devices.

    Host data is checked on the host, then each device receives only its rows. Global
    ``jax.Array`` s spanning other processes (e.g. from ``shard_rows(rows, mesh, n=N)``
    on every process) are checked on the devices, never gathered.
    """
    W = params["W"]

    def arrays(X, y, name):
        if _sparse.is_sparse(X):
            size = batch_size if name == "X" else None
            X, y = _sparse_rows(params, X, y, name, mesh.size, size)
            n = len(y)
            return _sparse.place(X, mesh), sharding.shard_rows(y, mesh), n
        if not on_devices(mesh, X, y):
            X = _features(X, W.dtype)
            if X.ndim != 2 or X.shape[1] != W.shape[0]:
                raise ValueError(
                    f"{name} must have shape [N, {W.shape[0]}] to match W, got {X.shape}"
                )
            with on_host():  # not all of X onto one device
                X, y = validate(X, y, W.shape[1], name=name)
                X, y = np.asarray(X, W.dtype), np.asarray(y, np.int32)
            return sharding.shard_rows(X, mesh), sharding.shard_rows(y, mesh), len(y)
        checks.check_dtypes(X, y, name)
        if X.ndim != 2 or X.shape[1] != W.shape[0] or y.shape != X.shape[:1]:
            raise ValueError(
                f"{name} must have shape [N, {W.shape[0]}] and labels [N] to match W, got "
                f"{X.shape} and {y.shape}"
            )
        X = sharding.shard_rows(X, mesh).astype(W.dtype)
        y = sharding.shard_rows(y, mesh).astype(jnp.int32)
        return X, y, check_rows(X, y, W.shape[1], name)

    X, y, n = arrays(X, y, "X")
    if validation_data is None:
        return Data(X, y, None, None), n
    X_val, y_val = validation_data
    X_val, y_val, _ = arrays(X_val, y_val, "X_val")
    return Data(X, y, X_val, y_val), n


def prepare_consts(params: Params, margin, class_weights) -> Consts:
    """:class:`Consts` checked: ``margin`` finite and ``> 0``, class weights ``[C]``,
    finite and ``>= 0``."""
    dtype, n_classes = params["W"].dtype, params["W"].shape[1]
    margin = jnp.asarray(checks.scalar("margin", margin, positive=True), dtype)
    weights = checks.class_weights(class_weights, n_classes)
    return Consts(margin, None if weights is None else jnp.asarray(weights, dtype))
