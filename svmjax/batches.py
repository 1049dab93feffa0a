r"""What training reads: the data, checked once and placed on its devices, and the
minibatch order of every epoch.

Shared by :func:`svmjax.train.fit` and :func:`svmjax.grid.fit_grid`; the orders are
documented in :mod:`svmjax.train`. Without a mesh, the data is cast to the dtype of ``W``
and every epoch's order is drawn on the host with NumPy (:func:`minibatches`); with a mesh,
the rows are split over the devices (:func:`shard_data`, padding labelled ``-1``) and each
device permutes its own rows (:func:`device_minibatches`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from svmjax import sharding
from svmjax import validation as checks

__all__ = [
    "Consts",
    "Data",
    "device_minibatches",
    "key_words",
    "mesh_order",
    "minibatches",
    "prepare_consts",
    "prepare_data",
    "shard_data",
]

Params = dict[str, jax.Array]


class Data(NamedTuple):
    """Checked training data: features cast to the dtype of ``W``, labels int32."""

    X: jax.Array
    y: jax.Array
    X_val: jax.Array | None
    y_val: jax.Array | None


class Consts(NamedTuple):
    """Checked loss constants, as arrays of the dtype of ``W``."""

    margin: jax.Array
    class_weights: jax.Array | None


def key_words(key: jax.Array) -> list[int]:
    """The key's data as Python ints (the seed of the NumPy batch order)."""
    return np.asarray(jax.random.key_data(key)).ravel().tolist()


def minibatches(words: list[int], epoch: int, n: int, batch_size: int) -> np.ndarray:
    """Row indices ``[ceil(n / batch_size), batch_size]`` of one epoch: row ``r`` is batch
    ``r`` of :func:`svmjax.train.fit`'s documented order; the slots past ``n`` in the last
    batch are ``-1`` (padding)."""
    n_batches = -(-n // batch_size)
    order = np.full(n_batches * batch_size, -1, np.int32)
    order[:n] = np.random.default_rng([*words, epoch]).permutation(n)
    return order.reshape(n_batches, batch_size)


def _device_layout(n: int, devices: int, batch_size: int) -> tuple[int, int, int]:
    """``(m, b, n_batches)``: rows per device, slots per device and batch, batches."""
    m = -(-n // devices)
    b = -(-batch_size // devices)
    return m, b, -(-m // b)


def device_minibatches(
    words: list[int], epoch: int, n: int, devices: int, batch_size: int, device: int
) -> np.ndarray:
    """Local row indices ``[n_batches, b]`` that device ``device`` (of ``devices``) draws in
    one epoch under a mesh, ``-1`` marking padding slots.

    The device holds rows ``[device * m, (device + 1) * m)`` of the ``n`` (``m =
    ceil(n / devices)``), ``n_d`` of them real. It visits them in the order
    ``np.random.default_rng([*key_words, epoch, device]).permutation(n_d)``, cut into
    ``n_batches = ceil(m / b)`` batches of ``b = ceil(batch_size / devices)`` slots; the slots
    past ``n_d`` are ``-1``. Every device has the same ``n_batches``.
    """
    m, b, n_batches = _device_layout(n, devices, batch_size)
    mine = min(max(n - device * m, 0), m)
    order = np.full(n_batches * b, -1, np.int32)
    order[:mine] = np.random.default_rng([*words, epoch, device]).permutation(mine)
    return order.reshape(n_batches, b)


def mesh_order(words, epoch, n, batch_size, mesh: Mesh) -> jax.Array:
    """The epoch's ``[n_batches, devices, b]`` local indices, each device's column built
    (by :func:`device_minibatches`) only on the process that owns the device."""
    devices = mesh.size
    _, b, n_batches = _device_layout(n, devices, batch_size)
    shape = (n_batches, devices, b)
    spec = NamedSharding(mesh, sharding.batch_spec(mesh, 3, 1))

    def piece(index) -> np.ndarray:
        start, stop, _ = index[1].indices(devices)
        columns = range(start, stop)
        return np.stack(
            [device_minibatches(words, epoch, n, devices, batch_size, d) for d in columns], axis=1
        )

    return jax.make_array_from_callback(shape, spec, piece)


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


def prepare_data(params: Params, X, y, validation_data, mesh: Mesh | None = None) -> Data:
    """:class:`Data` checked (once, here at the boundary) and cast to the dtype of ``W``;
    with ``mesh``, replicated on it (as :func:`svmjax.grid.fit_grid` uses it; :func:`fit`
    lays the rows out with :func:`shard_data` instead)."""
    W = params["W"]

    def arrays(X, y, name):
        X = _features(_host(X, mesh), W.dtype)
        if X.ndim != 2 or X.shape[1] != W.shape[0]:
            raise ValueError(f"{name} must have shape [N, {W.shape[0]}] to match W, got {X.shape}")
        X, y = checks.validate(X, _host(y, mesh), W.shape[1], name=name)
        X, y = X.astype(W.dtype), y.astype(jnp.int32)
        return (X, y) if mesh is None else (sharding.put(X, mesh), sharding.put(y, mesh))

    X, y = arrays(X, y, "X")
    if validation_data is None:
        return Data(X, y, None, None)
    X_val, y_val = validation_data
    X_val, y_val = arrays(X_val, y_val, "X_val")
    return Data(X, y, X_val, y_val)


def shard_data(params: Params, X, y, validation_data, mesh: Mesh) -> tuple[Data, int]:
    """:class:`Data` laid out by rows on ``mesh`` (:func:`svmjax.sharding.shard_rows`;
    padding rows have label ``-1``), checked, and the number ``N`` of real training rows.

    Host data is checked on the host, then each device receives only its rows. Global
    ``jax.Array`` s spanning other processes (e.g. from ``shard_rows(rows, mesh, n=N)``
    on every process) are checked on the devices, never gathered.
    """
    W = params["W"]

    def arrays(X, y, name):
        if not sharding.on_devices(mesh, X, y):
            X = _features(X, W.dtype)
            if X.ndim != 2 or X.shape[1] != W.shape[0]:
                raise ValueError(
                    f"{name} must have shape [N, {W.shape[0]}] to match W, got {X.shape}"
                )
            with sharding.on_host():  # not all of X onto one device
                X, y = checks.validate(X, y, W.shape[1], name=name)
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
        return X, y, sharding.check_rows(X, y, W.shape[1], name)

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
