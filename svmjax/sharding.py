"""Placing arrays on a device mesh, the same way on one process or many (``jax.sharding``).

:func:`svmjax.train.fit` and :func:`svmjax.grid.fit_grid` take ``mesh=``; these are the
helpers they use, public so that scripts can build the same layouts:

* :func:`data_mesh` builds a 1-D mesh over every device of every process, and
  :func:`auto_axes` turns any mesh into one whose axes XLA may partition freely;
* :func:`put` places host data (identical on every process) or an existing global
  ``jax.Array`` on the mesh with a given ``PartitionSpec``, using only what each process
  can address (``jax.make_array_from_process_local_data``), so the same code runs on one
  process or many;
* :func:`batch_spec` is the ``PartitionSpec`` that splits a dimension over *all* mesh
  axes (a 2-D mesh is used as one flat data axis).

Nothing here depends on the number of processes: with one process, :func:`put` is
``jax.device_put``. With several (after ``jax.distributed.initialize()``), every process
calls the same functions with the same host values and gets its part of one global array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

__all__ = ["data_mesh", "auto_axes", "batch_spec", "put"]


def _mesh(devices: np.ndarray, names: tuple[str, ...]) -> Mesh:
    return Mesh(devices, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))


def data_mesh(devices: Sequence[Any] | None = None, *, axis_name: str = "data") -> Mesh:
    """A 1-D mesh named ``axis_name`` over ``devices`` (default: ``jax.devices()``, i.e.
    every device of every process).

    Its axis is of type ``Auto``: XLA propagates the shardings and inserts the collectives
    (``jax.make_mesh`` makes ``Explicit`` axes by default since jax 0.7; see
    :func:`auto_axes`).

    Example:
      >>> mesh = data_mesh()
      >>> mesh.axis_names, mesh.size == jax.device_count()
      (('data',), True)
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device")
    return _mesh(np.array(devices), (axis_name,))


def auto_axes(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis of type ``Auto`` (same devices, same axis names).

    ``svmjax.train`` lets XLA's partitioner place the intermediate arrays, which needs
    ``Auto`` axes; meshes from ``jax.make_mesh`` have ``Explicit`` ones by default, so
    :func:`svmjax.train.fit` and :func:`~svmjax.grid.fit_grid` pass any mesh through this.

    Example:
      >>> auto_axes(data_mesh()) == data_mesh()
      True
    """
    return _mesh(mesh.devices, tuple(mesh.axis_names))


def batch_spec(mesh: Mesh, ndim: int, dim: int = 0) -> PartitionSpec:
    """``PartitionSpec`` of an ``ndim``-d array split along ``dim`` over all axes of ``mesh``.

    Example:
      >>> batch_spec(data_mesh(), 2, dim=1) == PartitionSpec(None, "data")
      True
    """
    spec: list = [None] * ndim
    names = tuple(mesh.axis_names)
    spec[dim] = names[0] if len(names) == 1 else names
    return PartitionSpec(*spec)


def put(x, mesh: Mesh, spec: PartitionSpec | None = None):
    """Place the array ``x`` (or every leaf of the pytree ``x``) on ``mesh`` with
    ``NamedSharding(mesh, spec)`` (default: replicated).

    Each leaf is either host data with the *global* shape, the same on every process (a
    NumPy array, or a fully addressable ``jax.Array``), or a global ``jax.Array`` spanning
    other processes' devices, e.g. one assembled from per-process shards with
    ``jax.make_array_from_process_local_data``; that one is resharded on the devices (XLA
    inserts the all-gather or slicing), never fetched to one host. Each sharded dimension
    must be divisible by the number of devices it is split over.

    Example:
      >>> x = put(np.arange(4.0), data_mesh())
      >>> x.sharding.is_fully_replicated, x.shape
      (True, (4,))
    """
    sharding = NamedSharding(mesh, PartitionSpec() if spec is None else spec)
    return jax.tree.map(lambda leaf: _put(leaf, sharding), x)


def _put(x: ArrayLike, sharding: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array):
        if x.sharding == sharding:
            return x
        if not x.is_fully_addressable:  # spans other processes: reshard on device
            return jax.jit(lambda a: a, out_shardings=sharding)(x)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, x.shape)
