"""Model files: a trained linear SVM with everything prediction needs, in one ``.npz``.

:func:`save` writes a :class:`Model` (or the ``{"W", "b"}`` parameters of
:func:`svmjax.train.fit` or :func:`svmjax.solve.solve`); :func:`load` reads it back with
``allow_pickle=False``, and never imports code: a model trained with a loss you registered
predicts without it. ``svmjax train --out`` writes model files, ``svmjax predict`` and
``SVMClassifier.load`` read them. The format and its version rules: ``docs/liblinear.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from svmjax._files import write_npz

__all__ = ["FORMAT", "VERSION", "Model", "load", "save"]

FORMAT = "svmjax-model"
"""The ``format`` entry of every model file's header."""
VERSION = 1
"""The format version :func:`save` writes; :func:`load` reads every version up to it."""

# The label dtypes a file may name: strings, integers, floats, booleans, or JSON values.
_CLASS_DTYPE = re.compile(r"[<>|=]?(U\d+|[iuf]\d|b1|\?|O)")


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A trained linear SVM and what it was trained with.

    The scores of raw features ``X`` ``[N, D]`` are ``Z @ W + b`` ``[N, C]`` with
    ``Z = (X - offset) / scale`` (each row then divided by its Euclidean norm where
    ``preprocess`` is ``"l2"``); column ``c`` belongs to ``classes[c]``.

    Attributes:
      W, b: float ``[D, C]`` and ``[C]``, as in :func:`svmjax.linear.init`.
      classes: ``[C]`` labels (strings, integers, floats or booleans; default ``0..C-1``).
      offset, scale: the preprocessing, ``[D]`` each, or ``None`` (none); ``scale > 0``.
      preprocess: the method they come from (:data:`svmjax.preprocessing.METHODS`) or
        ``None``.
      loss, squared, margin, loss_options: the training loss (a name: loading never needs
        it to be registered).
      training: the solver, its settings and results, as JSON values.
      history: per-epoch arrays (as :func:`svmjax.train.fit` returns them).
      svmjax_version: the svmjax that trained the model.
    """

    W: np.ndarray
    b: np.ndarray
    classes: Any = None
    offset: np.ndarray | None = None
    scale: np.ndarray | None = None
    preprocess: str | None = None
    loss: str = "weston_watkins"
    squared: bool = False
    margin: float = 1.0
    loss_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    history: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    svmjax_version: str = ""

    def __post_init__(self) -> None:
        W, b = np.asarray(self.W), np.asarray(self.b)
        if W.ndim != 2 or not np.issubdtype(W.dtype, np.floating):
            raise ValueError(f"W must be a float [D, C] array, got {W.dtype} {W.shape}")
        d, c = W.shape
        if b.shape != (c,) or not np.issubdtype(b.dtype, np.floating):
            raise ValueError(f"b must be a float [{c}] array, got {b.dtype} {b.shape}")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise ValueError("W and b must be finite")
        classes = np.arange(c) if self.classes is None else np.asarray(self.classes)
        if classes.shape != (c,) or len(set(classes.tolist())) != c:
            raise ValueError(f"classes must be {c} distinct labels, got {classes.shape}")
        for name in ("offset", "scale"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, np.float64)
                if value.shape != (d,) or not np.isfinite(value).all():
                    raise ValueError(f"{name} must be finite [{d}], got {value.shape}")
                object.__setattr__(self, name, value)
        if self.scale is not None and np.any(self.scale <= 0):
            raise ValueError("scale must be > 0")
        history = {k: np.asarray(v) for k, v in self.history.items()}
        for name, value in (("W", W), ("b", b), ("classes", classes), ("history", history)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "margin", float(self.margin))
        object.__setattr__(self, "squared", bool(self.squared))
        object.__setattr__(self, "loss_options", dict(self.loss_options))
        object.__setattr__(self, "training", dict(self.training))
        if not self.svmjax_version:
            from svmjax import __version__

            object.__setattr__(self, "svmjax_version", __version__)

    @property
    def n_features(self) -> int:
        """``D``."""
        return self.W.shape[0]

    @property
    def n_classes(self) -> int:
        """``C``."""
        return self.W.shape[1]

    def scores(self, X: Any) -> np.ndarray:
        """Float64 scores ``[N, C]`` of raw features ``X`` ``[N, D]``, a dense array or a
        SciPy sparse matrix (kept sparse: the preprocessing is folded into ``W`` and ``b``)."""
        sparse = hasattr(X, "tocsr")
        if not sparse:
            X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape [N, {self.n_features}], got {X.shape}")
        d = self.n_features
        inverse = 1 / self.scale if self.scale is not None else np.ones(d)
        offset = self.offset * inverse if self.offset is not None else np.zeros(d)
        W = self.W.astype(np.float64) * inverse[:, None]  # Z @ W0 = X @ W - offset @ W0
        scores = np.asarray(X @ W) - offset @ self.W.astype(np.float64)
        if self.preprocess == "l2":  # rows of Z = (X - offset) * inverse at unit norm
            if sparse:  # |x * inverse - offset|^2, expanded: X stays sparse
                scaled = X.multiply(inverse[None, :]).tocsr()
                squares = np.asarray(scaled.multiply(scaled).sum(axis=1)).ravel()
                squares += offset @ offset - 2 * np.asarray(scaled @ offset).ravel()
            else:
                squares = np.sum(np.square(X * inverse - offset), axis=1)
            norms = np.sqrt(np.maximum(squares, 0))
            scores /= np.where(norms == 0, 1.0, norms)[:, None]
        return scores + self.b.astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The label of the highest score, per row of ``X`` (ties: the first class)."""
        return np.asarray(self.classes)[np.argmax(self.scores(X), axis=1)]


def _json(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def save(path: str | os.PathLike, model: Model | Mapping[str, ArrayLike]) -> Path:
    """Write ``model`` to the file ``path`` (any name; ``.npz`` by convention) atomically.

    ``model`` is a :class:`Model`, or parameters ``{"W": [D, C], "b": [C]}`` (classes
    ``0..C-1``, no preprocessing). The file holds the arrays ``W``, ``b``, ``offset`` and
    ``scale`` (when set), ``history_<name>`` per history entry, and ``header``, a JSON
    string with ``format`` (:data:`FORMAT`), ``version`` (:data:`VERSION`) and the other
    fields of :class:`Model`. Nothing is pickled. Missing directories are created.

    Returns:
      The path written.

    Raises:
      TypeError: a class label, loss option or ``training`` value that JSON cannot hold.

    Example:
      >>> import os, tempfile
      >>> params = {"W": np.eye(3, 2), "b": np.zeros(2)}
      >>> path = save(os.path.join(tempfile.mkdtemp(), "model.npz"), Model(
      ...     params["W"], params["b"], classes=["cat", "dog"], training={"solver": "sgd"}))
      >>> load(path).predict(np.array([[0.0, 1.0, 0.0]])).tolist()
      ['dog']
    """
    if not isinstance(model, Model):
        model = Model(np.asarray(model["W"]), np.asarray(model["b"]))
    classes = np.asarray(model.classes)
    if not _CLASS_DTYPE.fullmatch(classes.dtype.str):
        raise TypeError(f"class labels of dtype {classes.dtype} cannot be saved (use strings)")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "svmjax_version": model.svmjax_version,
        "n_features": model.n_features,
        "n_classes": model.n_classes,
        "classes": classes.tolist(),
        "classes_dtype": classes.dtype.str,
        "preprocess": model.preprocess,
        "loss": {"name": model.loss, "squared": model.squared, "margin": model.margin},
        "loss_options": model.loss_options,
        "training": model.training,
        "history": sorted(model.history),
    }
    try:
        text = json.dumps(header, default=_json)
    except (TypeError, ValueError) as error:
        raise TypeError(f"the model cannot be saved as JSON: {error}") from None
    arrays = {"header": np.array(text), "W": model.W, "b": model.b}
    arrays |= {name: getattr(model, name) for name in ("offset", "scale")}
    arrays |= {f"history_{k}": v for k, v in model.history.items()}
    return write_npz(path, {k: v for k, v in arrays.items() if v is not None})


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as file:
            loaded = np.load(file, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("an .npy array, not an .npz archive")
            with loaded:
                return {name: loaded[name] for name in loaded.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,  # zipfile on an unknown compression or flag
        RuntimeError,
    ) as error:
        raise ValueError(
            f"{path}: cannot be read as a model file (truncated or corrupt: {error})"
        ) from None


def load(path: str | os.PathLike) -> Model:
    """Read a model file written by :func:`save` (any format version up to
    :data:`VERSION`), without pickle and without importing code.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: one line naming the file and the problem: not a model file (no header,
        another format), a newer format version, a truncated or corrupt file, or
        inconsistent contents.
    """
    path = Path(path)
    arrays = _read(path)
    header_array = arrays.get("header")
    if header_array is None or header_array.shape != () or header_array.dtype.kind != "U":
        raise ValueError(f"{path}: not an svmjax model file (no header)")
    try:
        header = json.loads(str(header_array))
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path}: not an svmjax model file (format {found!r}, not {FORMAT!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: corrupt model file (format version {version!r})")
    if version > VERSION:
        written = header.get("svmjax_version", "a newer svmjax")
        raise ValueError(
            f"{path}: model format version {version} (written by svmjax {written}) is newer "
            f"than this svmjax reads ({VERSION}); upgrade svmjax"
        )
    try:
        return _model(header, arrays)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        what = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise ValueError(f"{path}: corrupt model file ({what})") from None


def _model(header: dict, arrays: dict[str, np.ndarray]) -> Model:
    """The :class:`Model` of a version-checked header and its arrays."""
    dtype = header.get("classes_dtype", "O")
    if not isinstance(dtype, str) or not _CLASS_DTYPE.fullmatch(dtype):
        raise ValueError(f"classes_dtype {dtype!r}")
    classes = header["classes"]
    if not isinstance(classes, list) or any(isinstance(c, list | dict) for c in classes):
        raise ValueError("classes must be a list of labels")
    loss = header.get("loss") or {}
    model = Model(
        arrays["W"],
        arrays["b"],
        classes=np.array(classes, dtype=np.dtype(dtype)),
        offset=arrays.get("offset"),
        scale=arrays.get("scale"),
        preprocess=header.get("preprocess"),
        loss=str(loss.get("name", "weston_watkins")),
        squared=bool(loss.get("squared", False)),
        margin=float(loss.get("margin", 1.0)),
        loss_options=dict(header.get("loss_options") or {}),
        training=dict(header.get("training") or {}),
        history={name: arrays[f"history_{name}"] for name in header.get("history", [])},
        svmjax_version=str(header.get("svmjax_version") or "unknown"),
    )
    if (model.n_features, model.n_classes) != (header["n_features"], header["n_classes"]):
        raise ValueError(
            f"W is {model.W.shape}, the header says [{header['n_features']}, {header['n_classes']}]"
        )
    return model
