"""Readers for the file formats :mod:`svmjax.data` loads, each checking what it reads.

* CIFAR-10's binary version: records of one label byte and 3072 pixel bytes;
* IDX (MNIST, Fashion-MNIST), plain or gzipped;
* LIBSVM / svmlight text: ``label index:value ...`` per line.

Every problem raises ``ValueError`` naming the file (and the line or record) and what is
wrong; nothing here uses pickle or the network.
"""

from __future__ import annotations

import gzip
import importlib
import math
import re
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "CIFAR_NAMES",
    "MAX_DENSE",
    "Svmlight",
    "dense_svmlight",
    "label_name",
    "parse_svmlight",
    "read_svmlight_files",
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
_BLOCK = 1 << 22  # bytes of whole lines parsed at a time
_BLOCK_BYTES = b"0123456789.+-eE: \t\r\n"  # what a block parsed at once may hold
_LONGEST = 40  # characters of a token parsed at once (the block's tokens are padded to it)
_POW10 = 10.0 ** np.arange(23)  # the powers of ten that are exact in float64


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
    """A parsed svmlight file in compressed-row form (:func:`parse_svmlight`): example ``i``
    has the values ``values[indptr[i]:indptr[i + 1]]`` at the 0-based features
    ``indices[indptr[i]:indptr[i + 1]]``, strictly increasing."""

    labels: np.ndarray  # float64 [N], the label values as written
    indptr: np.ndarray  # int64 [N + 1]
    indices: np.ndarray  # int64 [nnz]
    values: np.ndarray  # float32 [nnz]
    largest: int  # largest feature index (1-based), 0 if none


# One piece of a file: labels, values per example, 0-based indices, values.
_Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def parse_svmlight(path: Path, n_features: int | None, max_index: int = 10**18 - 1) -> Svmlight:
    """Parse a LIBSVM / svmlight text file.

    Each line is ``label index:value index:value ... # comment``: 1-based feature indices,
    strictly increasing within the line, none above ``n_features`` when given nor above
    ``max_index``; values and labels plain decimal numbers within float32 range (no
    nan/inf). ``qid:...`` tokens are ignored, blank and comment-only lines skipped; a
    non-ASCII byte outside a comment is an error, naming the file and line.

    The file is read in blocks of whole lines, each parsed with vectorised NumPy; a block
    holding anything else (``qid``, a bad token, ...) is parsed line by line, which names
    the first bad line.
    """
    data = path.read_bytes()
    limit = min(max_index, 2**31 - 1, n_features or max_index)
    parts: list[_Part] = []
    lineno, start = 1, 0
    while start < len(data):
        end = data.find(b"\n", start + _BLOCK)
        end = len(data) if end < 0 else end + 1
        block = data[start:end]
        part = _parse_block(block, limit)
        if part is None:
            part = _parse_lines(block, path.name, lineno, n_features, max_index)
        parts.append(part)
        lineno, start = lineno + block.count(b"\n"), end
    if not sum(len(part[0]) for part in parts):
        raise ValueError(f"{path.name}: no examples (empty file or only comments)")
    labels, counts, indices, values = (
        np.concatenate(column) for column in zip(*parts, strict=True)
    )
    indptr = np.concatenate([[0], np.cumsum(counts)])
    largest = int(indices.max()) + 1 if indices.size else 0
    return Svmlight(labels, indptr, indices, values.astype(np.float32), largest)


def _parse_block(block: bytes, limit: int) -> _Part | None:
    """Parse whole lines at once; None when anything needs the line-by-line reader."""
    if b"#" in block:
        block = b"\n".join(line.split(b"#", 1)[0] for line in block.split(b"\n"))
    if block.translate(None, _BLOCK_BYTES):  # letters (qid, nan), other bytes
        return None
    text = np.frombuffer(block, np.uint8)
    space = (text == 32) | (text == 9) | (text == 10) | (text == 13)
    starts = np.flatnonzero(~space & np.concatenate([[True], space[:-1]]))
    ends = np.flatnonzero(~space & np.concatenate([space[1:], [True]])) + 1
    if not starts.size:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    colons = np.flatnonzero(text == 58)
    token = np.searchsorted(starts, colons, side="right") - 1  # the token holding each colon
    pair = np.bincount(token, minlength=starts.size) == 1
    first = np.concatenate(
        [[True], np.diff(np.searchsorted(np.flatnonzero(text == 10), starts)) > 0]
    )
    if (
        (ends - starts).max() > _LONGEST
        or (colons == starts[token]).any()
        or (colons >= ends[token] - 1).any()
        or len(colons) != pair.sum()  # a token with two colons
        or (pair == first).any()  # a label is the first token of a line, then index:value
    ):
        return None
    labels, _ = _decimals(text, starts[first], ends[first])
    indices, plain = _decimals(text, starts[pair], colons)
    values, _ = _decimals(text, colons + 1, ends[pair], single=True)
    example = np.cumsum(first)[pair] - 1
    if (
        not plain.all()  # an index is digits only
        or not (np.abs(labels) <= _FLOAT32_MAX).all()  # also false for NaN: not a number
        or not (np.abs(values) <= _FLOAT32_MAX).all()
        or (indices.size and (indices.min() < 1 or indices.max() > limit))
        or (np.diff(indices)[example[1:] == example[:-1]] <= 0).any()
    ):
        return None
    counts = np.bincount(example, minlength=len(labels))
    return labels, counts, indices.astype(np.int64) - 1, values


def _decimals(
    text: np.ndarray, starts: np.ndarray, ends: np.ndarray, single: bool = False
) -> tuple[np.ndarray, ...]:
    """The numbers ``text[starts[i]:ends[i]]`` (bytes of ``0-9 . + - e E`` only) as float64,
    correctly rounded (NaN where the text is not a plain decimal number, ``_NUMBER``), and
    whether each is digits only. With ``single``, only their rounding to float32 is correct.

    Read one character position at a time for all numbers at once. Up to 15 significant digits
    and a power of ten up to 22, the value is an exact integer times or over an exact power of
    ten: one rounding (Clinger's fast path). With ``single``, up to 18 digits: two roundings,
    within 2**-52 of the value, which rounds to the same float32 unless it lies within 4
    float64 steps of a point halfway between two float32s. The rest go through ``float``."""
    n, length = len(starts), ends - starts
    whole, shift = np.zeros(n, np.int64), np.zeros(n, np.int64)
    n_digits, significant, n_exponent, after_dot = (np.zeros(n, np.int64) for _ in range(4))
    dot, e, bad, minus, e_minus, nonzero = (np.zeros(n, bool) for _ in range(6))
    plain = np.ones(n, bool)  # digits only
    after_e = np.zeros(n, bool)  # the previous character is e/E
    for k in range(int(length.max(initial=0))):
        c = np.where(k < length, text[np.minimum(starts + k, len(text) - 1)], 0)
        d = c - np.uint8(48)  # a digit is below 10; the padding 0 wraps above
        digit = d < 10
        in_mantissa, in_exponent = digit & ~e, digit & e
        whole = np.where(in_mantissa, whole * 10 + d, whole)
        shift = np.where(in_exponent, shift * 10 + d, shift)
        n_digits += in_mantissa
        nonzero |= in_mantissa & (d > 0)
        significant += in_mantissa & nonzero  # leading zeros do not count
        n_exponent += in_exponent
        after_dot += in_mantissa & dot
        is_dot, is_e, is_sign = c == 46, (c == 101) | (c == 69), (c == 43) | (c == 45)
        bad |= (is_dot & (dot | e)) | (is_e & (e | (n_digits == 0)))
        bad |= is_sign & ~after_e & (k > 0)
        minus |= (c == 45) & (k == 0)
        e_minus |= (c == 45) & after_e
        plain &= digit | (k >= length)
        dot, e, after_e = dot | is_dot, e | is_e, is_e
    bad |= (n_digits == 0) | (e & (n_exponent == 0))
    power = np.where(e_minus, -shift, shift) - after_dot
    fast = (n_exponent <= 4) & (np.abs(power) <= 22)
    exact = fast & (significant <= 15)
    scale = _POW10[np.minimum(np.abs(power), 22)]
    value = np.where(power >= 0, whole * scale, whole / scale)
    if single:
        with np.errstate(over="ignore"):
            nearest = value.astype(np.float32)
        wide = nearest.astype(np.float64)
        with np.errstate(over="ignore"):  # float32's largest value steps to infinity...
            steps = [
                np.nextafter(nearest, np.float32(to)).astype(np.float64) for to in (-np.inf, np.inf)
            ]
        # ...where rounding goes to infinity from the largest value plus half its spacing.
        steps = [
            np.where(np.isinf(t) & np.isfinite(nearest), np.sign(t) * 2.0**128, t) for t in steps
        ]
        halfway = [(wide + t) / 2 for t in steps]
        margin = 4 * np.spacing(np.abs(value))
        clear = (np.abs(value - halfway[0]) > margin) & (np.abs(value - halfway[1]) > margin)
        exact |= fast & (significant <= 18) & clear
    value = np.where(bad, np.nan, np.where(minus, -value, value))
    for i in np.flatnonzero(~exact & ~bad):
        value[i] = float(text[starts[i] : ends[i]].tobytes())
    return value, plain


def _parse_lines(
    block: bytes, name: str, first_line: int, n_features: int | None, max_index: int
) -> _Part:
    """Parse line by line, the first numbered ``first_line``; a bad line raises
    ``ValueError`` naming the file ``name`` and the line."""
    labels: list[float] = []
    counts: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for lineno, line in enumerate(block.split(b"\n"), start=first_line):
        at = f"{name}: line {lineno}"
        try:
            tokens = line.split(b"#", 1)[0].decode("ascii").split()
        except UnicodeDecodeError:
            raise ValueError(f"{at}: non-ASCII byte outside a comment") from None
        if not tokens:
            continue
        label = _to_float(tokens[0])
        if label is None:
            raise ValueError(f"{at}: cannot parse label {tokens[0]!r}")
        last, count = 0, 0
        for token in tokens[1:]:
            text, colon, value_text = token.partition(":")
            if text == "qid" and colon:
                continue
            if not colon or not text.isdigit() or len(text) > 18:
                raise ValueError(f"{at}: expected index:value, got {token!r}")
            index, value = int(text), _to_float(value_text)
            if index == 0:
                raise ValueError(f"{at}: feature index 0, indices start at 1")
            if index <= last:
                raise ValueError(f"{at}: feature indices must increase, got {index} after {last}")
            if n_features is not None and index > n_features:
                raise ValueError(f"{at}: feature index {index} exceeds n_features={n_features}")
            if index > max_index:
                raise ValueError(f"{at}: feature index {index} is above the largest, {max_index}")
            if value is None:
                raise ValueError(f"{at}: cannot parse value {value_text!r} for feature {index}")
            cols.append(index - 1)
            vals.append(value)
            last, count = index, count + 1
        labels.append(label)
        counts.append(count)
    return np.array(labels), np.array(counts, np.int64), np.array(cols, np.int64), np.array(vals)


def label_name(label: float) -> str:
    """The class name of a LIBSVM label: its integer text when whole (``"3"`` for 3.0),
    else ``repr`` of the float (``"0.5"``)."""
    return str(int(label)) if float(label).is_integer() else repr(float(label))


def read_svmlight_files(
    paths: list[Path], n_features: int | None, *, sparse: bool
) -> tuple[list[tuple[Any, np.ndarray]], tuple[str, ...]]:
    """Read svmlight files (:func:`parse_svmlight`) that share their features and classes.

    Returns one ``(X, y)`` per file, ``X`` ``[N, D]`` float32 (a scipy CSR matrix if
    ``sparse``, else a NumPy array, :func:`dense_svmlight`), ``D = n_features`` or the
    largest index over the files, ``y`` int32 class indices: the position of each label
    among the sorted distinct label values of all files. Also the class names, those values
    as text (``"-1"``, ``"1"``, ``"2.5"``). Sparse, indices must stay below 2**31.
    """
    largest = 2**31 - 1 if sparse else 10**18 - 1
    if n_features is not None and not 1 <= n_features <= largest:
        raise ValueError(f"n_features must be positive and at most {largest}, got {n_features}")
    csr_matrix = _scipy_sparse().csr_matrix if sparse else None
    parsed = [parse_svmlight(path, n_features, largest) for path in paths]
    if n_features is None:
        n_features = max(p.largest for p in parsed)
        if n_features == 0:
            raise ValueError(f"{paths[0].name}: no feature values in the file; give n_features")
    values, classes = np.unique(np.concatenate([p.labels for p in parsed]), return_inverse=True)
    if len(values) < 2:
        raise ValueError(f"{paths[0].name}: {len(values)} distinct label(s), need at least 2")
    names = tuple(label_name(v) for v in values)
    ys = np.split(classes.astype(np.int32), np.cumsum([len(p.labels) for p in parsed])[:-1])
    Xs = [
        dense_svmlight(path, p, n_features)
        if csr_matrix is None
        else csr_matrix((p.values, p.indices, p.indptr), (len(p.labels), n_features))
        for path, p in zip(paths, parsed, strict=True)
    ]
    return list(zip(Xs, ys, strict=True)), names


def _scipy_sparse() -> ModuleType:
    try:
        return importlib.import_module("scipy.sparse")
    except ImportError as err:
        raise ImportError(
            "sparse svmlight data needs scipy: pip install scipy (or pip install "
            "'svmjax[data]'), or load it with sparse=False"
        ) from err


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
    X[np.repeat(np.arange(n), np.diff(parsed.indptr)), parsed.indices] = parsed.values
    return X
