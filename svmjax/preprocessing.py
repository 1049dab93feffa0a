"""Feature scaling with statistics from the training data, for dense and sparse matrices.

:func:`fit_scaling` computes a :class:`Scaling` from training examples and
:func:`apply_scaling` applies it to any split (or to new data at prediction time). The
methods, by name (the ``preprocess`` option of :mod:`svmjax.data`'s loaders):

* ``"standardize"``: per feature, subtract the training mean and divide by the training
  standard deviation (a feature constant on the training data is only centred);
* ``"center"``: subtract the training mean;
* ``"maxabs"``: divide each feature by its largest absolute training value (a feature
  that is 0 throughout is left as it is), so values lie in ``[-1, 1]`` on the training data;
* ``"l2"``: scale each example to unit Euclidean norm (an all-zero example stays 0); no
  statistics.

``"maxabs"`` and ``"l2"`` keep every zero a zero, so they apply to scipy sparse matrices and
keep them sparse. Centring a sparse matrix would make it dense, so ``"standardize"`` and
``"center"`` refuse one with a ``ValueError`` naming the alternatives.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, NamedTuple

import numpy as np

__all__ = ["METHODS", "Method", "Scaling", "apply_scaling", "check_method", "fit_scaling"]

Method = Literal["standardize", "center", "maxabs", "l2"]

METHODS: tuple[Method, ...] = ("standardize", "center", "maxabs", "l2")
_CENTRING = ("standardize", "center")


class Scaling(NamedTuple):
    """Scaling statistics: ``x ↦ (x - offset) / scale`` per feature, then, for ``"l2"``,
    each example divided by its Euclidean norm.

    Plain float32 arrays and a string, so they can be stored beside a model (e.g.
    ``np.savez(path, **scaling._asdict())``) and rebuilt with ``Scaling(**arrays)``.
    """

    method: str  # one of METHODS
    offset: np.ndarray  # float32 [D], subtracted (zeros unless the method centres)
    scale: np.ndarray  # float32 [D], divided by after the offset (ones for "center", "l2")


def check_method(method: object, *, sparse: bool = False) -> None:
    """Raise ``ValueError`` unless ``method`` is one of :data:`METHODS` that applies to the
    data: ``"standardize"`` and ``"center"`` do not apply to sparse data."""
    if method not in METHODS:
        raise ValueError(f"preprocess must be one of {(*METHODS, None)}, got {method!r}")
    if sparse and method in _CENTRING:
        raise ValueError(
            f"preprocess={method!r} centres each feature, which would make sparse data dense; "
            "use preprocess='maxabs' (divide each feature by its largest absolute value), "
            "'l2' (unit-norm examples) or None"
        )


def fit_scaling(X: Any, method: Method) -> Scaling:
    """The :class:`Scaling` ``method`` computes from the training examples ``X``.

    Args:
      X: training features ``[N, D]``: a NumPy array or a scipy sparse matrix (any format).
      method: one of :data:`METHODS`; ``"standardize"`` and ``"center"`` need dense ``X``.

    Returns:
      A :class:`Scaling` with float32 ``offset`` and ``scale`` of length ``D``, computed in
      float64.

    Raises:
      ValueError: an unknown method, or a centring method for sparse ``X``.

    Example:
      >>> import numpy as np
      >>> fit_scaling(np.array([[1.0, -4.0], [3.0, 0.0]]), "maxabs").scale
      array([3., 4.], dtype=float32)
    """
    sparse = _is_sparse(X)
    check_method(method, sparse=sparse)
    d = X.shape[1]
    offset, scale = np.zeros(d), np.ones(d)
    if method == "maxabs":
        if sparse:
            X = X.tocsr()
            if not X.has_canonical_format:  # duplicates summed, on a copy
                X = X.copy()
                X.sum_duplicates()
            scale = np.zeros(d)
            np.maximum.at(scale, X.indices, np.abs(X.data, dtype=np.float64))
        else:
            scale = np.abs(X).max(axis=0, initial=0).astype(np.float64)
        scale[scale == 0] = 1.0
    elif method in _CENTRING:
        X = np.asarray(X, np.float32)
        offset = X.mean(axis=0, dtype=np.float64)
        if method == "standardize":
            std = X.std(axis=0, dtype=np.float64)
            scale = np.where(X.max(axis=0) == X.min(axis=0), 1.0, std)
    return Scaling(method, offset.astype(np.float32), scale.astype(np.float32))


def apply_scaling(scaling: Scaling, X: Any, *, copy: bool = True) -> Any:
    """``X`` scaled by ``scaling`` (from :func:`fit_scaling`), as float32.

    Args:
      scaling: the statistics, from the training data.
      X: features ``[N, D]``: a NumPy array, or a scipy sparse matrix (returned as CSR in
        canonical form: sorted indices, duplicates summed).
      copy: if False and ``X`` is already float32 (a CSR matrix for sparse ``X``), scale it
        in place.

    Returns:
      The scaled float32 array or CSR matrix.

    Raises:
      ValueError: ``D`` differs from the statistics', a centring method for sparse ``X``,
        or values that overflow float32 after scaling.
    """
    check_method(scaling.method, sparse=_is_sparse(X))
    if X.shape[-1] != len(scaling.scale):
        raise ValueError(f"X has {X.shape[-1]} features, the scaling {len(scaling.scale)}")
    if _is_sparse(X):
        X = X.tocsr(copy=copy).astype(np.float32, copy=False)
        X.sum_duplicates()
        values, rows = X.data, np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    else:
        X = np.array(X, np.float32) if copy else np.asarray(X, np.float32)
        values, rows = X, None
    with np.errstate(over="ignore", invalid="ignore"):
        if rows is None:
            values -= scaling.offset
            values /= scaling.scale
        else:
            values /= scaling.scale[X.indices]
        if scaling.method == "l2":
            squares = np.square(values, dtype=np.float64)
            norms = np.sqrt(squares.sum(axis=1) if rows is None else np.bincount(rows, squares))
            norms = np.where(norms == 0, 1.0, norms).astype(np.float32)
            values /= norms[:, None] if rows is None else norms[rows]
    if not np.isfinite(values).all():
        raise ValueError(f"values overflow float32 after preprocess={scaling.method}")
    return X


def _is_sparse(X: object) -> bool:
    """Whether ``X`` is a scipy sparse matrix or array (without importing scipy)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)
