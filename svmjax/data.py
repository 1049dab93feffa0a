"""Datasets for multiclass SVM experiments, as NumPy arrays or scipy CSR matrices.

Built-in data, no download: ``load("digits")``, ``load("mnist1d")``, ``load("blobs", key=...)``.
Your own files: :func:`load_cifar10`, :func:`load_mnist`, :func:`load_svmlight` (sparse by
default; the file formats: :mod:`svmjax.formats`). Every loader returns a :class:`Dataset`
(``X`` float32 ``[N, D]``, ``y`` int32 class indices in ``[0, C)``), split into train /
validation (and test, where the data has none) by a permutation drawn from a ``jax.random``
key (default ``jax.random.key(0)``: the same key, the same split). Pixels are scaled to
``[0, 1]``; preprocessing (:mod:`svmjax.preprocessing`) uses statistics from the training split
only. A bad file raises ``ValueError`` naming the file and the problem, a missing one
``FileNotFoundError``; no pickle, no network.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from svmjax import formats, preprocessing
from svmjax._checks import as_key

if TYPE_CHECKING:
    import jax
    import scipy.sparse

Preprocess = Literal["standardize", "center", "maxabs", "l2"] | None
_BUILTIN = ("digits", "mnist1d", "blobs")
_DIGITS = tuple(str(i) for i in range(10))
_BLOB_SEPARATION = 4.0  # expected distance between two class means, in units of the noise std


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Dataset:
    """A classification dataset split into train, validation and test parts.

    ``X_*`` are float32 ``[N, D]`` with the same ``D`` in every split, all NumPy arrays or all
    scipy CSR matrices; ``y_*`` are int32 ``[N]`` integer class indices in ``[0, C)``, and
    ``class_names[c]`` names class ``c``. A split may be empty (``N == 0``), e.g. validation
    with ``val_fraction=0``. ``image_shape`` is the shape of one example as an image, so
    ``X.reshape(-1, *image_shape)`` gives images (and a weight row reshaped the same way gives
    a template), or ``None`` for non-image data. ``scaling`` holds the preprocessing statistics
    (:func:`svmjax.preprocessing.apply_scaling` applies them to new data), ``None`` if none.
    """

    X_train: np.ndarray | scipy.sparse.csr_matrix
    y_train: np.ndarray
    X_val: np.ndarray | scipy.sparse.csr_matrix
    y_val: np.ndarray
    X_test: np.ndarray | scipy.sparse.csr_matrix
    y_test: np.ndarray
    class_names: tuple[str, ...]
    description: str
    image_shape: tuple[int, ...] | None = None
    scaling: preprocessing.Scaling | None = None

    def __post_init__(self) -> None:
        d, kind = self.n_features, _kind(self.X_train)
        for split in ("train", "val", "test"):
            X, y = getattr(self, f"X_{split}"), getattr(self, f"y_{split}")
            if X.dtype != np.float32 or X.ndim != 2 or X.shape[1] != d or _kind(X) != kind:
                got = f"{X.dtype} {X.shape} {_kind(X)}"
                raise ValueError(f"X_{split}: expected float32 [N, {d}] {kind}, got {got}")
            if y.dtype != np.int32 or y.shape != X.shape[:1]:
                raise ValueError(
                    f"y_{split}: expected int32 {X.shape[:1]}, got {y.dtype} {y.shape}"
                )
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise ValueError(f"y_{split}: class indices must lie in [0, {self.n_classes})")
        if self.image_shape is not None and math.prod(self.image_shape) != d:
            raise ValueError(f"image_shape {self.image_shape} does not hold {d} features")

    @property
    def sparse(self) -> bool:
        """Whether ``X_*`` are scipy CSR matrices (else NumPy arrays)."""
        return _kind(self.X_train) == "CSR matrix"

    @property
    def n_features(self) -> int:
        """``D``, the number of features per example."""
        return cast(tuple[int, int], self.X_train.shape)[1]

    @property
    def n_classes(self) -> int:
        """``C``, the number of classes (labels are indices in ``[0, C)``)."""
        return len(self.class_names)

    def __repr__(self) -> str:
        sizes = f"{len(self.y_train)}/{len(self.y_val)}/{len(self.y_test)}"
        return (
            f"Dataset({self.description!r}, train/val/test={sizes}, "
            f"n_features={self.n_features}, n_classes={self.n_classes})"
        )


def load(
    name: str,
    *,
    key: jax.Array | None = None,
    val_fraction: float = 0.1,
    test_fraction: float | None = None,
    preprocess: Preprocess = "standardize",
    n: int | None = None,
    d: int | None = None,
    c: int | None = None,
) -> Dataset:
    """Load a built-in dataset; nothing is downloaded.

    * ``"digits"``: scikit-learn's 1,797 8×8 handwritten digits (64 features, 10 classes,
      ``image_shape=(8, 8)``), pixels scaled from 0..16 to [0, 1].
    * ``"mnist1d"``: MNIST-1D generated procedurally by the ``mnist1d`` package with its default
      arguments (seed 42): 4,000 train and 1,000 test signals of 40 features, 10 classes.
      Python's and NumPy's global random states are restored afterwards.
    * ``"blobs"``: ``n`` examples (default 1000) of ``d`` features (default 20) in ``c`` balanced
      classes (default 5): class means drawn from ``key`` about 4 noise units apart, plus unit
      Gaussian noise, so a linear classifier does well but not perfectly. ``key`` is required.

    Args:
      name: one of ``"digits"``, ``"mnist1d"``, ``"blobs"``.
      key: ``jax.random`` key for the split (and for the blobs); ``jax.random.key(0)`` if None.
      val_fraction: fraction of the training data held out for validation.
      test_fraction: fraction held out for test where the data has no test set (digits, blobs);
        default 0.2. Not allowed for mnist1d, which has its own test set.
      preprocess: ``"standardize"`` (per-feature mean 0, std 1 on train; a feature constant on
        train is only centred), ``"center"`` (subtract the training mean), ``"maxabs"``,
        ``"l2"`` (:mod:`svmjax.preprocessing`) or ``None``.
      n, d, c: size of the blobs; not allowed for other datasets.

    Returns:
      A :class:`Dataset`; labels are int32 class indices in ``[0, C)``.

    Raises:
      ValueError: unknown name, bad option, or a missing key for blobs.
      ImportError: scikit-learn (digits) or mnist1d is not installed.

    Example:
      >>> import jax
      >>> data = load("digits", key=jax.random.key(1))
      >>> data.X_train.shape, data.X_val.shape, data.X_test.shape, data.n_classes
      ((1258, 64), (180, 64), (359, 64), 10)
      >>> load("blobs", key=jax.random.key(0), n=100, d=2, c=3).X_train.shape
      (70, 2)
    """
    _check_options(val_fraction, test_fraction, preprocess)
    if name not in _BUILTIN:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: {', '.join(map(repr, _BUILTIN))} "
            "(for files use load_cifar10, load_mnist or load_svmlight)"
        )
    if name != "blobs" and (n, d, c) != (None, None, None):
        raise ValueError(f"n, d and c apply only to 'blobs', not {name!r}")
    if name == "digits":
        datasets = _require("sklearn.datasets", "scikit-learn")
        X, y = datasets.load_digits(return_X_y=True)
        parts = _split_data(X, y, key, val_fraction, test_fraction)
        return _finish(parts, preprocess, _DIGITS, "sklearn digits", (8, 8), pixel_max=16)
    if name == "mnist1d":
        if test_fraction is not None:
            raise ValueError("mnist1d has its own test set; test_fraction does not apply")
        generated = _mnist1d()
        test = (generated["x_test"], generated["y_test"])
        parts = _split_data(generated["x"], generated["y"], key, val_fraction, test=test)
        return _finish(parts, preprocess, _DIGITS, "mnist1d")
    if key is None:
        raise ValueError("load('blobs') needs a key, e.g. key=jax.random.key(0)")
    n, d, c = 1000 if n is None else n, 20 if d is None else d, 5 if c is None else c
    if c < 2 or d < 1 or n < c:
        raise ValueError(
            f"blobs need c >= 2 classes, d >= 1 and n >= c examples; got {n=} {d=} {c=}"
        )
    import jax

    k_means, k_noise, k_split = jax.random.split(as_key(key), 3)
    means = jax.random.normal(k_means, (c, d)) * (_BLOB_SEPARATION / math.sqrt(2 * d))
    y = np.arange(n) % c
    X = np.asarray(means)[y] + np.asarray(jax.random.normal(k_noise, (n, d)))
    parts = _split_data(X, y, k_split, val_fraction, test_fraction)
    return _finish(parts, preprocess, tuple(map(str, range(c))), f"blobs {n=} {d=} {c=}")


def load_cifar10(
    path: str | os.PathLike[str],
    *,
    key: jax.Array | None = None,
    val_fraction: float = 0.1,
    preprocess: Preprocess = "center",
) -> Dataset:
    """Load CIFAR-10 from its binary version (``cifar-10-binary.tar.gz``, extracted).

    ``path`` is the ``cifar-10-batches-bin`` directory or the directory containing it, with
    ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train) and ``test_batch.bin`` (test), each
    any whole number of 3,073-byte records (:func:`svmjax.formats.read_cifar_batch`). Class
    names come from ``batches.meta.txt`` if present (10 non-empty lines), else the standard ones.

    Returns:
      A :class:`Dataset`: ``X`` float32 ``[N, 3072]`` in height-width-channel order
      (``image_shape=(32, 32, 3)``), pixels scaled to [0, 1]; ``y`` int32 in ``[0, 10)``.
      Validation is ``val_fraction`` of the training records, chosen by ``key``.
      ``preprocess="center"`` (the default, as in cs231n) subtracts the mean training image;
      see :func:`load` for the other options.

    Raises:
      FileNotFoundError: a data file is missing (the message lists which).
      ValueError: an empty file, a truncated record, a label byte above 9, a malformed
        ``batches.meta.txt``, or a bad option.

    Example:
      >>> data = load_cifar10("~/data/cifar-10-batches-bin")  # doctest: +SKIP
      >>> data.X_train.shape, data.image_shape  # doctest: +SKIP
      ((45000, 3072), (32, 32, 3))
    """
    _check_options(val_fraction, None, preprocess)
    batches, names = formats.read_cifar_directory(Path(path).expanduser())
    X = np.concatenate([pixels for pixels, _ in batches[:5]])
    y = np.concatenate([labels for _, labels in batches[:5]])
    parts = _split_data(X, y, key, val_fraction, test=batches[5])
    return _finish(parts, preprocess, names, "CIFAR-10", (32, 32, 3), pixel_max=255)


def load_mnist(
    path: str | os.PathLike[str],
    *,
    key: jax.Array | None = None,
    val_fraction: float = 0.1,
    preprocess: Preprocess = "center",
    rows: slice | Callable[[int], slice] | None = None,
) -> Dataset:
    """Load MNIST (or a dataset in the same format) from IDX files in the directory ``path``.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte``, each plain or gzipped (name + ``.gz``; plain wins if both
    exist), in the IDX format (:func:`svmjax.formats.read_idx`); labels must be 0..9.

    Returns:
      A :class:`Dataset`: ``X`` float32 ``[N, rows * cols]`` (``image_shape=(rows, cols)``),
      pixels scaled to [0, 1]; ``y`` int32 in ``[0, 10)``. Validation is ``val_fraction`` of
      the training images, chosen by ``key``; preprocessing as in :func:`load_cifar10`. With
      ``rows``, ``X_train`` and ``y_train`` are only those rows of the training split: a
      slice, or a function of the split's size returning one, e.g.
      ``rows=lambda n: svmjax.sharding.process_slice(n, mesh)`` to keep a process's share
      for ``fit(..., mesh=mesh)``. They equal the same rows of a full load: the split and
      the preprocessing statistics still use every training image (the files are read
      whole; only the slice is kept).

    Raises:
      FileNotFoundError: a file is missing in both plain and gzipped form.
      ValueError: bad gzip data, a wrong magic number, a size that disagrees with the header,
        an empty file, image and label counts that disagree, a label above 9, train and test
        images of different sizes, or a bad option.

    Example:
      >>> data = load_mnist("~/data/mnist")  # doctest: +SKIP
      >>> data.X_train.shape, data.X_test.shape  # doctest: +SKIP
      ((54000, 784), (10000, 784))
    """
    _check_options(val_fraction, None, preprocess)
    X, y, X_test, y_test = formats.read_mnist_directory(Path(path).expanduser())
    image_shape = X.shape[1:]
    X, X_test = X.reshape(len(X), -1), X_test.reshape(len(X_test), -1)
    parts = _split_data(X, y, key, val_fraction, test=(X_test, y_test))
    dataset = _finish(parts, preprocess, _DIGITS, "MNIST (IDX files)", image_shape, pixel_max=255)
    return dataset if rows is None else _train_rows(dataset, rows)


def load_svmlight(
    path: str | os.PathLike[str],
    n_features: int | None = None,
    *,
    test_path: str | os.PathLike[str] | None = None,
    key: jax.Array | None = None,
    val_fraction: float = 0.1,
    test_fraction: float | None = None,
    preprocess: Preprocess = "maxabs",
    sparse: bool = True,
) -> Dataset:
    """Load a dataset from a LIBSVM / svmlight text file, as CSR matrices or dense arrays.

    Each line is ``label index:value ... # comment`` with 1-based, increasing feature indices
    (:func:`svmjax.formats.parse_svmlight`); missing features are 0. Labels may be any numbers
    (``-1``/``+1``, ``1``..``K``, ...): the sorted distinct label values, over both files,
    become class indices ``0..C-1`` and their text (``"-1"``, ``"1"``, ``"2.5"``) the
    ``class_names``. With ``sparse=True`` no dense copy is made at any point.

    Args:
      path: training file (or the whole data set when ``test_path`` is None).
      n_features: number of features ``D``; inferred from the largest index if None.
      test_path: optional test file; otherwise a test split is held out by ``key``.
      key: ``jax.random`` key for the splits; ``jax.random.key(0)`` if None.
      val_fraction: fraction of the training examples held out for validation.
      test_fraction: fraction held out for test when ``test_path`` is None (default 0.2).
      preprocess: ``"maxabs"`` (default: each feature divided by its largest absolute
        training value), ``"l2"`` (unit-norm examples), or, for dense data only,
        ``"standardize"`` or ``"center"``; or ``None``. See :mod:`svmjax.preprocessing`.
      sparse: ``X`` as scipy CSR matrices (float32, sorted indices, no duplicates; needs
        scipy, which the ``data`` extra installs) if True, else dense NumPy arrays.

    Returns:
      A :class:`Dataset`: ``X`` float32 ``[N, D]``, ``y`` int32 class indices in ``[0, C)``.

    Raises:
      ValueError: naming the file and line, for a line that does not parse (including a
        feature index of 2**31 or more when sparse); also no examples, no features, fewer
        than 2 classes, a dense matrix of over 2**28 entries, a centring ``preprocess`` with
        ``sparse=True``, or a bad option.
      ImportError: ``sparse=True`` and scipy is not installed.

    Example:
      >>> data = load_svmlight("heart_scale", key=jax.random.key(0))  # doctest: +SKIP
      >>> data.class_names  # doctest: +SKIP
      ('-1', '1')
    """
    if test_path is not None and test_fraction is not None:
        raise ValueError("test_fraction does not apply when test_path is given")
    _check_options(val_fraction, test_fraction, preprocess, sparse)
    files = [Path(p).expanduser() for p in (path, test_path) if p is not None]
    pairs, names = formats.read_svmlight_files(files, n_features, sparse=sparse)
    test = None if test_path is None else pairs[1]
    parts = _split_data(*pairs[0], key, val_fraction, test_fraction, test)
    return _finish(parts, preprocess, names, f"svmlight {files[0].name}")


def _train_rows(dataset: Dataset, rows: slice | Callable[[int], slice]) -> Dataset:
    """``dataset`` with only the training rows ``rows`` (a slice, or ``n -> slice``)."""
    part = rows(len(dataset.y_train)) if callable(rows) else rows
    if not isinstance(part, slice):
        raise TypeError(f"rows must be a slice or a function returning one, got {part!r}")
    X, y = dataset.X_train[part].copy(), dataset.y_train[part].copy()
    return dataclasses.replace(dataset, X_train=X, y_train=y)


def _check_options(
    val_fraction: float, test_fraction: float | None, preprocess: object, sparse: bool = False
) -> None:
    if preprocess is not None:
        preprocessing.check_method(preprocess, sparse=sparse)
    test = 0.0 if test_fraction is None else test_fraction
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must lie in [0, 1), got {value}")
    if val_fraction + test >= 1:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test}")


def _require(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this dataset needs {package}: pip install {package} (or pip install 'svmjax[data]')"
        ) from err


def _kind(X: object) -> str:
    return "CSR matrix" if getattr(X, "format", None) == "csr" else type(X).__name__


def _mnist1d() -> dict[str, np.ndarray]:
    """Generate MNIST-1D offline (``get_dataset`` would download a pickle instead)."""
    data = _require("mnist1d.data", "mnist1d")
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:  # make_dataset reseeds the global generators
        return data.make_dataset(data.get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


_Parts = tuple[tuple[np.ndarray, np.ndarray], ...]


def _split_data(
    X: np.ndarray,
    y: np.ndarray,
    key: jax.Array | None,
    val_fraction: float,
    test_fraction: float | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> _Parts:
    """Shuffle ``X, y`` with ``key`` into (train, val, test); hold out test only if not given."""
    import jax

    if test is None:
        fractions = [val_fraction, 0.2 if test_fraction is None else test_fraction]
    else:
        fractions = [val_fraction]
    n = len(y)
    sizes = [round(f * n) for f in fractions]
    if n - sum(sizes) < 1:
        raise ValueError(f"{n} examples are too few to hold out {sizes} for validation/test")
    perm = np.asarray(jax.random.permutation(jax.random.key(0) if key is None else as_key(key), n))
    index = np.split(perm, np.cumsum([n - sum(sizes), *sizes])[:-1])
    parts = tuple((X[i], y[i]) for i in index)
    return parts if test is None else (*parts, test)


def _finish(
    parts: _Parts,
    preprocess: Preprocess,
    class_names: tuple[str, ...],
    description: str,
    image_shape: tuple[int, ...] | None = None,
    pixel_max: float | None = None,
) -> Dataset:
    """Cast, scale pixels to [0, 1], preprocess with training statistics, build the Dataset."""
    Xs = [X.astype(np.float32) for X, _ in parts]
    if pixel_max is not None:
        for X in Xs:
            X /= pixel_max
    scaling = None if preprocess is None else preprocessing.fit_scaling(Xs[0], preprocess)
    if scaling is not None:
        try:  # in place: these are our own float32 copies
            Xs = [preprocessing.apply_scaling(scaling, X, copy=False) for X in Xs]
        except ValueError as err:
            raise ValueError(f"{description}: {err}") from None
    ys = [y.astype(np.int32) for _, y in parts]
    sizes = f"{len(ys[0])} train / {len(ys[1])} val / {len(ys[2])} test"
    return Dataset(
        *(a for pair in zip(Xs, ys, strict=True) for a in pair),
        class_names=tuple(class_names),
        description=f"{description}: {sizes}, preprocess={preprocess}",
        image_shape=None if image_shape is None else tuple(image_shape),
        scaling=scaling,
    )
