"""Readers for the file formats :mod:`svmjax.data` loads, each checking what it reads.

* CIFAR-10's binary version: records of one label byte and 3072 pixel bytes;
* IDX (MNIST, Fashion-MNIST), plain or gzipped;
* LIBSVM / svmlight text: ``label index:value ...`` per line.

Every problem raises ``ValueError`` naming the file (and the line or record) and what is
wrong; nothing here uses pickle or the network.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "CIFAR_NAMES",
    "MAX_DENSE",
    "Svmlight",
    "dense_svmlight",
    "parse_svmlight",
    "read_cifar_batch",
    "read_cifar_directory",
    "read_cifar_names",
    "read_idx",
    "read_mnist_directory",
    "read_mnist_pair",
]

CIFAR_NAMES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())
_CIFAR_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then 1024 R, 1024 G, 1024 B bytes (row-major)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_DENSE = 2**28  # elements of a dense svmlight matrix (1 GiB of float32)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR-10 binary batch: 3,073-byte records, each one label byte (0..9), then
    1,024 red, 1,024 green and 1,024 blue pixel bytes of a row-major 32×32 image. Returns
    uint8 pixels ``[n, 3072]`` in height-width-channel order and labels ``[n]``."""
    data = path.read_bytes()
    n, rest = divmod(len(data), _CIFAR_RECORD)
    if rest:
        raise ValueError(
            f"{path.name}: record {n + 1} is truncated ({rest} of {_CIFAR_RECORD} bytes)"
        )
    if n == 0:
        raise ValueError(f"{path.name}: empty file, no records")
    records = np.frombuffer(data, np.uint8).reshape(n, _CIFAR_RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        i = bad[0]
        raise ValueError(f"{path.name}: record {i + 1} has label {labels[i]}, expected 0..9")
    pixels = records[:, 1:].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1).reshape(n, -1)
    return pixels, labels


def read_cifar_names(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return CIFAR_NAMES
    try:
        names = [line.strip() for line in path.read_bytes().decode("utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path.name}: not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    names = [name for name in names if name]
    if len(names) != 10:
        raise ValueError(f"{path.name}: {len(names)} class names, expected 10")
    return tuple(names)


def read_cifar_directory(
    directory: Path,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """The six batches (:func:`read_cifar_batch`) of a ``cifar-10-batches-bin`` directory,
    or of the one inside ``directory``: ``data_batch_1.bin`` .. ``data_batch_5.bin``, then
    ``test_batch.bin``; and the class names (:func:`read_cifar_names`)."""
    if (directory / "cifar-10-batches-bin").is_dir():
        directory = directory / "cifar-10-batches-bin"
    missing = [name for name in _CIFAR_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: missing CIFAR-10 file(s) {', '.join(missing)}")
    batches = [read_cifar_batch(directory / name) for name in _CIFAR_FILES]
    return batches, read_cifar_names(directory / "batches.meta.txt")


def read_mnist_directory(directory: Path) -> tuple[np.ndarray, ...]:
    """``(X, y, X_test, y_test)`` of MNIST's four IDX files in ``directory``
    (:func:`read_mnist_pair`), images ``[n, rows, cols]``, train and test of one size."""
    X, y = read_mnist_pair(directory, *_MNIST_FILES["train"])
    X_test, y_test = read_mnist_pair(directory, *_MNIST_FILES["test"])
    if X.shape[1:] != X_test.shape[1:]:
        raise ValueError(f"train images are {X.shape[1:]} but test images are {X_test.shape[1:]}")
    return X, y, X_test, y_test


def read_mnist_pair(directory: Path, images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST image file (IDX, magic 2051, ``[n, rows, cols]``) and its label file
    (magic 2049, ``[n]``, labels 0..9) from ``directory``, each plain or gzipped."""
    images_path, labels_path = _find(directory, images), _find(directory, labels)
    X = read_idx(images_path, magic=2051, ndim=3)
    y = read_idx(labels_path, magic=2049, ndim=1)
    if len(X) != len(y):
        raise ValueError(
            f"{images_path.name} has {len(X)} images but {labels_path.name} has {len(y)} labels"
        )
    bad = np.flatnonzero(y > 9)
    if bad.size:
        i = bad[0]
        raise ValueError(f"{labels_path.name}: label {i + 1} is {y[i]}, expected 0..9")
    return X, y


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory}: neither {name} nor {name}.gz found")


def read_idx(path: Path, *, magic: int, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes: magic, ``ndim`` big-endian uint32 sizes, then
    exactly that many bytes of data (a ``.gz`` name is decompressed first)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path.name}: corrupt or truncated gzip data ({err})") from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path.name}: {len(data)} bytes, shorter than the {header}-byte header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path.name}: magic number {found}, expected {magic}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if 0 in shape:
        raise ValueError(f"{path.name}: no data (header sizes {shape})")
    size, have = math.prod(shape), len(data) - header
    if size != have:
        raise ValueError(f"{path.name}: header sizes {shape} need {size} data bytes, found {have}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _to_float(text: str) -> float | None:
    """``float(text)`` for a plain decimal number within float32 range, else None."""
    if _NUMBER.fullmatch(text) is None:
        return None
    value = float(text)
    return value if abs(value) <= _FLOAT32_MAX else None


class Svmlight(NamedTuple):
    """A parsed svmlight file, in coordinate form (:func:`parse_svmlight`)."""

    labels: np.ndarray  # float64 [N], the label values as written
    rows: list[int]  # example of each stored value
    cols: list[int]  # 0-based feature of each stored value
    vals: list[float]
    largest: int  # largest feature index (1-based), 0 if none


def parse_svmlight(path: Path, n_features: int | None) -> Svmlight:
    """Parse a LIBSVM / svmlight text file.

    Each line is ``label index:value index:value ... # comment``: 1-based feature indices,
    strictly increasing within the line (none above ``n_features`` when given), values and
    labels plain decimal numbers within float32 range (no nan/inf). ``qid:...`` tokens are
    ignored, blank and comment-only lines skipped; a non-ASCII byte outside a comment is an
    error.
    """
    labels: list[float] = []
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    largest = 0
    for lineno, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        where = f"{path.name}: line {lineno}"
        try:
            tokens = line.split(b"#", 1)[0].decode("ascii").split()
        except UnicodeDecodeError:
            raise ValueError(f"{where}: non-ASCII byte outside a comment") from None
        if not tokens:
            continue
        label = _to_float(tokens[0])
        if label is None:
            raise ValueError(f"{where}: cannot parse label {tokens[0]!r}")
        last = 0
        for token in tokens[1:]:
            text, colon, value_text = token.partition(":")
            if text == "qid" and colon:
                continue
            if not colon or not text.isdigit() or len(text) > 18:
                raise ValueError(f"{where}: expected index:value, got {token!r}")
            index, value = int(text), _to_float(value_text)
            if index == 0:
                raise ValueError(f"{where}: feature index 0, indices start at 1")
            if index <= last:
                raise ValueError(
                    f"{where}: feature indices must increase, got {index} after {last}"
                )
            if n_features is not None and index > n_features:
                raise ValueError(f"{where}: feature index {index} exceeds n_features={n_features}")
            if value is None:
                raise ValueError(f"{where}: cannot parse value {value_text!r} for feature {index}")
            rows.append(len(labels))
            cols.append(index - 1)
            vals.append(value)
            last = index
        largest = max(largest, last)
        labels.append(label)
    if not labels:
        raise ValueError(f"{path.name}: no examples (empty file or only comments)")
    return Svmlight(np.array(labels), rows, cols, vals, largest)


def dense_svmlight(path: Path, parsed: Svmlight, n_features: int) -> np.ndarray:
    """The float32 matrix ``[N, n_features]`` of ``parsed`` (missing features 0), refused
    above :data:`MAX_DENSE` entries."""
    n = len(parsed.labels)
    if n * n_features > MAX_DENSE:
        raise ValueError(
            f"{path.name}: {n} examples x {n_features} features is too large to hold densely "
            f"(more than {MAX_DENSE} entries)"
        )
    X = np.zeros((n, n_features), np.float32)
    X[np.array(parsed.rows, np.intp), np.array(parsed.cols, np.intp)] = parsed.vals
    return X
