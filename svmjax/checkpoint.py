"""Checkpoints: a training state in one ``.npz`` file, written atomically, read without pickle.

A checkpoint is for resuming :func:`svmjax.train.fit`; a trained model for prediction goes
to a model file (:mod:`svmjax.model`).

A checkpoint holds the leaves of ``(params, opt_state)``, the key's data, the history and a
JSON manifest (format, epoch, tree structure, leaf names, shapes and dtypes, key
implementation, the training options). It is written to a temporary file in the same
directory and moved into place with ``os.replace``, so a crash mid-write leaves the previous
checkpoint intact (and a temporary file, which a later save removes), and read with
``allow_pickle=False``. Arrays are plain (layout-free): a run checkpointed on a mesh resumes
on one device or another mesh.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from svmjax._files import write_npz

__all__ = ["TrainState", "save", "load"]

_FORMAT = "svmjax-checkpoint/1"


class TrainState(NamedTuple):
    """Everything needed to continue training; what a checkpoint holds.

    ``params`` and ``opt_state`` are pytrees of arrays, ``key`` is the typed base key,
    ``epoch`` the number of finished epochs and ``history`` a dict of NumPy arrays with one
    entry per finished epoch (as returned by :func:`svmjax.train.fit`).
    """

    params: Any
    opt_state: optax.OptState
    key: jax.Array
    epoch: int
    history: dict[str, np.ndarray]


def _check_state(state: Any, name: str) -> None:
    if not isinstance(state, TrainState):
        raise TypeError(
            f"checkpoint.{name} takes a TrainState (params, optimizer state, key, epoch, "
            f"history: what resuming training needs), got {type(state).__name__}; to save "
            "trained parameters for prediction use svmjax.model.save(path, params)"
        )


def _leaves(state: TrainState) -> tuple[list[str], list[np.ndarray], str]:
    """Names, values and tree structure of the leaves of ``(params, opt_state)``."""
    flat, treedef = jax.tree_util.tree_flatten_with_path((state.params, state.opt_state))
    names = [jax.tree_util.keystr(path) for path, _ in flat]
    return names, [np.asarray(leaf) for _, leaf in flat], str(treedef)


def save(
    path: str | os.PathLike, state: TrainState, *, options: dict[str, Any] | None = None
) -> None:
    """Write ``state`` to the file ``path`` atomically (temporary file + ``os.replace``).

    The ``.npz`` file holds the leaves of ``(params, opt_state)`` as ``leaf_0, leaf_1, ...``,
    ``jax.random.key_data(state.key)`` as ``key``, the history as ``history_<name>``, and
    ``manifest``: a JSON string with the format, epoch, tree structure, leaf names, shapes
    and dtypes, key implementation, history names and ``options`` (any JSON-serialisable
    dict; :func:`svmjax.train.fit` stores its options there). Nothing is pickled. Missing
    directories are created; a failure while writing leaves any previous file at ``path``
    untouched. A process killed mid-write leaves a ``<name>.<8 characters>.tmp`` file next
    to it, never read; a later successful save removes those older than five minutes (a
    live writer's is younger) and no other file.

    Example:
      >>> import os, tempfile
      >>> state = TrainState({"w": jnp.ones(2)}, (), jax.random.key(0), 3, {})
      >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
      >>> save(path, state)
      >>> load(path, state._replace(epoch=0)).epoch
      3

    Raises:
      TypeError: ``state`` is not a :class:`TrainState` (a model's parameters go to
        :func:`svmjax.model.save`).
    """
    _check_state(state, "save")
    path = os.path.abspath(os.fspath(path))
    names, leaves, treedef = _leaves(state)
    manifest = {"format": _FORMAT, "epoch": int(state.epoch), "treedef": treedef}
    manifest |= {"leaves": names, "shapes": [x.shape for x in leaves]}
    manifest |= {"dtypes": [str(x.dtype) for x in leaves], "history": sorted(state.history)}
    manifest |= {"key_impl": str(jax.random.key_impl(state.key)), "options": options}
    arrays = {f"leaf_{i}": x for i, x in enumerate(leaves)}
    arrays |= {f"history_{name}": np.asarray(v) for name, v in state.history.items()}
    arrays["key"] = np.asarray(jax.random.key_data(state.key))
    arrays["manifest"] = np.array(json.dumps(manifest))
    write_npz(path, arrays)


def load(
    path: str | os.PathLike, template: TrainState, *, options: dict[str, Any] | None = None
) -> TrainState:
    """Read a checkpoint written by :func:`save` into the structure of ``template``.

    ``template`` is a freshly initialised state, e.g. ``TrainState(params,
    optimizer.init(params), key, 0, {})``. The file's tree structure, leaf shapes and dtypes
    and key implementation must equal the template's (so any optax optimizer whose state is
    a pytree of arrays works); with ``options``, the stored options must equal them too.

    Returns:
      The stored :class:`TrainState` (params, optimizer state, key, epoch, history).

    Raises:
      TypeError: ``template`` is not a :class:`TrainState`.
      FileNotFoundError: no file at ``path``.
      ValueError: naming the file and the problem: a file that cannot be read as a
        checkpoint (truncated, corrupt, not an ``.npz``), one that lacks an array, or the
        first mismatch, e.g. ``shape of [0]['W'] is (64, 10), expected (32, 10)``.

    Example: see :func:`save`.
    """
    _check_state(template, "load")
    try:
        with open(path, "rb") as file:
            loaded = np.load(file, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("an .npy file, not an .npz archive")
            with loaded:
                arrays = dict(loaded.items())
        manifest = json.loads(str(arrays.pop("manifest", "{}")))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(
            f"checkpoint {path} cannot be read (truncated or not a checkpoint): {error}"
        ) from error
    except (NotImplementedError, RuntimeError) as error:  # zipfile on a corrupt flag field
        raise ValueError(
            f"checkpoint {path} cannot be read (corrupt zip entry): {error}"
        ) from error
    if not isinstance(manifest, dict):
        manifest = {}
    names, leaves, treedef = _leaves(template)
    shapes, dtypes = manifest.get("shapes", []), manifest.get("dtypes", [])
    per_leaf = list(zip(names, shapes, dtypes, leaves, strict=False))  # lengths checked below
    stored = manifest.get("options") or {}
    checks = [
        ("format", manifest.get("format"), _FORMAT),
        ("tree structure", manifest.get("treedef"), treedef),
        ("number of leaves", len(shapes), len(leaves)),
        *[(f"shape of {name}", tuple(s), x.shape) for name, s, _, x in per_leaf],
        *[(f"dtype of {name}", d, str(x.dtype)) for name, _, d, x in per_leaf],
        ("key implementation", manifest.get("key_impl"), str(jax.random.key_impl(template.key))),
        *[(f"option {k!r}", stored.get(k), v) for k, v in (options or {}).items()],
    ]
    for what, got, want in checks:
        if got != want:
            raise ValueError(f"checkpoint {path} does not match: {what} is {got}, expected {want}")
    names = [f"leaf_{i}" for i in range(len(leaves))] + ["key"]
    names += [f"history_{name}" for name in manifest.get("history", [])]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete: no {', '.join(missing)}")
    bad = [i for i, x in enumerate(leaves) if arrays[f"leaf_{i}"].shape != x.shape]
    if bad:
        raise ValueError(f"checkpoint {path} is inconsistent: leaf_{bad[0]} has the wrong shape")
    restored = [jnp.asarray(arrays[f"leaf_{i}"], x.dtype) for i, x in enumerate(leaves)]
    structure = jax.tree.structure((template.params, template.opt_state))
    params, opt_state = jax.tree.unflatten(structure, restored)
    key = jax.random.wrap_key_data(
        jnp.asarray(arrays["key"]), impl=jax.random.key_impl(template.key)
    )
    history = {name: arrays[f"history_{name}"] for name in manifest["history"]}
    return TrainState(params, opt_state, key, manifest["epoch"], history)
