r"""The minibatch order of every epoch of :func:`svmjax.train.fit` and
:func:`svmjax.grid.fit_grid`, drawn on the host with NumPy from the key alone.

One device: epoch ``e`` (1-based) visits the ``N`` examples in the order
``np.random.default_rng([*key_words(key), e]).permutation(N)``, cut into
``ceil(N / batch_size)`` batches (:func:`minibatches`); the last one is padded with slots
``-1``, which get weight 0, so every example counts and none is dropped.

A mesh of ``P`` devices: device ``d`` holds rows ``[d m, (d + 1) m)``, ``m = ceil(N / P)``,
and permutes its own ``n_d`` real rows with ``default_rng([*key_words(key), e,
d]).permutation(n_d)``, cut into ``ceil(m / b)`` batches of ``b = ceil(batch_size / P)``
slots (:func:`device_minibatches`); step ``k`` trains on every device's batch ``k``.

The order depends only on ``(key, e)`` (and ``P``), so the same key gives the same bits, a
resumed run sees the same batches as an uninterrupted one, and a raw key
(``jax.random.PRNGKey``) and a typed key (``jax.random.key``) of the same seed give the
same order. NumPy draws it on the host: ``jax.random.permutation`` sorts, which XLA:CPU
does slowly.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from svmjax import sharding

__all__ = ["device_minibatches", "key_words", "mesh_order", "minibatches"]


def key_words(key: jax.Array) -> list[int]:
    """The key's data as Python ints (the seed of the NumPy batch order)."""
    return np.asarray(jax.random.key_data(key)).ravel().tolist()


def minibatches(words: list[int], epoch: int, n: int, batch_size: int) -> np.ndarray:
    """Row indices ``[ceil(n / batch_size), batch_size]`` of epoch ``epoch`` on one device:
    row ``r`` is batch ``r`` of the order above, seeded by ``words = key_words(key)``; the
    slots past ``n`` in the last batch are ``-1`` (padding).

    Example:
      >>> minibatches(key_words(jax.random.key(0)), 1, 5, 2).shape
      (3, 2)
    """
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
    """The epoch's ``[n_batches, devices, b]`` local indices under ``mesh`` as one global
    array, the order ``fit(..., mesh=mesh)`` trains on: each device's column built (by
    :func:`device_minibatches`) only on the process that owns the device."""
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
