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
  axes (a 2-D mesh is used as one flat data axis);
* :func:`shard_rows` lays a data set out by rows, the layout of ``fit(..., mesh=)`` and
  ``solve(..., mesh=)``: device ``d`` of the flattened mesh holds rows
  ``[d * m, (d + 1) * m)`` with ``m = rows_per_device(N, mesh) = ceil(N / devices)``; the
  last ``devices * m - N`` rows are padding (zeros; ``-1`` for integer arrays, so padded
  labels mark padding rows). :func:`process_slice` is the part of those rows one process
  holds, so each process can load only its own rows.

Nothing here depends on the number of processes: with one process, :func:`put` is
``jax.device_put``. With several (after ``jax.distributed.initialize()``), every process
calls the same functions with the same host values and gets its part of one global array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from svmjax._checks import dtype_of

__all__ = [
    "data_mesh",
    "auto_axes",
    "batch_spec",
    "put",
    "rows_per_device",
    "process_slice",
    "shard_rows",
]


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


# ------------------------------------------------------------------------------ row layout


def rows_per_device(n: int, mesh: Mesh) -> int:
    """``m = ceil(n / mesh.size)``: the rows each device holds of ``n`` laid out by
    :func:`shard_rows` (the last devices hold padding where ``n`` does not divide)."""
    return -(-int(n) // mesh.size)


def process_slice(n: int, mesh: Mesh) -> slice:
    """The rows of an ``[n, ...]`` data set that this process holds under :func:`shard_rows`.

    Device ``d`` of the flattened mesh holds rows ``[d m, (d + 1) m)``; a process holds
    those of its devices, which must be consecutive in ``mesh.devices.flat`` (as in
    :func:`data_mesh`). Load these rows, then pass them to ``shard_rows(rows, mesh, n=n)``.

    Example:
      >>> process_slice(10, data_mesh()) == slice(0, 10)  # one process holds every row
      True
    """
    here = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    if not here or here != list(range(here[0], here[-1] + 1)):
        raise ValueError(
            f"process {jax.process_index()} must own consecutive devices of the mesh "
            "(build it with svmjax.sharding.data_mesh())"
        )
    m = rows_per_device(n, mesh)
    return slice(min(here[0] * m, n), min((here[-1] + 1) * m, n))


def shard_rows(x, mesh: Mesh, *, n: int | None = None, fill: Any = None) -> jax.Array:
    """``x`` laid out by rows over every device of ``mesh``, padded to ``mesh.size * m``.

    Device ``d`` gets rows ``[d m, (d + 1) m)``, ``m = rows_per_device(N, mesh)``; rows past
    ``N`` are ``fill`` (default: ``-1`` for integer arrays, which marks a padding row's
    label, else ``0``). Only each device's rows are copied to it; nothing is replicated.

    Args:
      x: with ``n=None``, the whole ``[N, ...]`` array: host data, the same on every
        process (only the rows of this process's devices are read), or a global
        ``jax.Array`` (resharded on the devices). With ``n``: only this process's rows,
        ``x = X[process_slice(n, mesh)]``, of a global ``[n, ...]`` array.
      mesh: the mesh; all its axes are used as one flat row axis.
      n: the global number of rows when ``x`` holds only this process's.
      fill: the value of padding rows.

    Example:
      >>> y = shard_rows(np.arange(3, dtype=np.int32), data_mesh())
      >>> y.shape[0] % jax.device_count(), y.sharding.spec == batch_spec(data_mesh(), 1)
      (0, True)
    """
    integer = np.issubdtype(dtype_of(x), np.integer)
    fill = (-1 if integer else 0) if fill is None else fill
    if n is None:
        n = int(np.shape(x)[0])
    m = rows_per_device(n, mesh)
    shape = (mesh.size * m, *np.shape(x)[1:])
    rows = NamedSharding(mesh, batch_spec(mesh, len(shape)))
    if isinstance(x, jax.Array) and shape[0] == x.shape[0] and x.sharding == rows:
        return x  # laid out already
    if isinstance(x, jax.Array) and not x.is_fully_addressable:

        def pad(a):
            widths = [(0, shape[0] - a.shape[0])] + [(0, 0)] * (a.ndim - 1)
            return jnp.pad(a, widths, constant_values=fill)

        return jax.jit(pad, out_shardings=rows)(x)
    x = np.asarray(x)
    if x.shape[0] != n:  # this process's rows only
        mine = process_slice(n, mesh)
        if x.shape[0] != mine.stop - mine.start:
            raise ValueError(
                f"process {jax.process_index()} holds rows {mine.start}:{mine.stop} of {n} "
                f"(svmjax.sharding.process_slice), got {x.shape[0]} rows"
            )
        offset = mine.start
    else:
        offset = 0

    def piece(index) -> np.ndarray:
        start, stop, _ = index[0].indices(shape[0])
        out = np.full((stop - start, *shape[1:]), fill, x.dtype)
        have = max(0, min(stop, n) - start)
        out[:have] = x[start - offset : start - offset + have]
        return out

    return jax.make_array_from_callback(shape, rows, piece)
