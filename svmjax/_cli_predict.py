"""Internal: ``svmjax predict MODEL DATA`` — labels from a model file (:mod:`svmjax.model`)
for a LIBSVM, IDX or NumPy file, in liblinear's predict format, and the accuracy where the
file has labels. Prediction needs NumPy and SciPy only: no JAX backend, no loss code."""

from __future__ import annotations

import argparse
import gzip
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from svmjax import formats
from svmjax import model as models
from svmjax._cli_args import UsageError, positive_int


def add_parser(commands) -> argparse.ArgumentParser:
    predict = commands.add_parser(
        "predict",
        help="labels for a data file from a model file (liblinear's predict)",
        description="Predict with a model file written by svmjax train --out (or "
        "svmjax.model.save, SVMClassifier.save): one label per line, in the training labels' "
        "names, to standard output or --output FILE; the accuracy, where the data has labels, "
        "to standard output with --output (else to standard error).",
    )
    predict.add_argument("model", metavar="MODEL", help="a model file")
    predict.add_argument(
        "data",
        metavar="DATA",
        help="LIBSVM text (label index:value ...), IDX images (plain or .gz), .npy features "
        "[N, D] or .npz with X [N, D] and optionally y [N]",
    )
    predict.add_argument("-o", "--output", metavar="FILE", help="write the labels to FILE")
    predict.add_argument(
        "--scores",
        action="store_true",
        help="each label followed by the C decision scores; a first line 'labels c1 c2 ...' "
        "names their classes (liblinear's -b 1 layout)",
    )
    predict.add_argument(
        "--top-k",
        type=positive_int,
        metavar="K",
        help="the K best labels per line, best first (and the top-K accuracy)",
    )
    predict.add_argument(
        "--labels", metavar="FILE", help="true labels for DATA (IDX label file or .npy)"
    )
    return predict


def _open(path: Path) -> bytes:
    """The first bytes of ``path`` (decompressed when gzipped)."""
    with open(path, "rb") as file:
        head = file.read(4)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path) as file:
                return file.read(4)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path.name}: corrupt gzip data ({error})") from None
    return head


def _idx(path: Path, head: bytes) -> np.ndarray:
    if path.suffix != ".gz" and head[:2] == b"\x1f\x8b":
        raise ValueError(f"{path.name}: gzipped, but its name does not end in .gz")
    return formats.read_idx(path, magic=int.from_bytes(head, "big"), ndim=head[3])


def read(path: Path, n_features: int) -> tuple[Any, np.ndarray | None]:
    """``(X, labels)`` of a data file: dense or CSR features ``[N, n_features]``, and the
    labels as stored (``None`` where the file has none)."""
    head = _open(path)
    labels = None
    if head.startswith(b"\x93NUM"):
        X = np.load(path, allow_pickle=False)
    elif head.startswith(b"PK\x03\x04"):
        with np.load(path, allow_pickle=False) as arrays:
            if "X" not in arrays.files:
                raise ValueError(f"{path.name}: no array 'X' (has {', '.join(arrays.files)})")
            X = arrays["X"]
            labels = arrays["y"] if "y" in arrays.files else None
    elif head[:3] == b"\x00\x00\x08" and head[3] >= 1:  # IDX of unsigned bytes
        X = _idx(path, head)
        if X.ndim == 1:
            raise ValueError(f"{path.name}: IDX labels, not images; give it as --labels")
        X = X.reshape(len(X), -1)
    else:
        parsed = formats.parse_svmlight(path, None)
        if parsed.largest > n_features:
            raise ValueError(
                f"{path.name} has feature index {parsed.largest}, the model {n_features} features"
            )
        shape = (len(parsed.labels), n_features)
        X = scipy.sparse.csr_matrix((parsed.values, parsed.indices, parsed.indptr), shape=shape)
        return X, parsed.labels
    if X.ndim < 2 or X.dtype.kind not in "iufb":
        raise ValueError(f"{path.name}: expected numbers [N, D], got {X.dtype} {X.shape}")
    X = X.reshape(len(X), -1)
    if X.shape[1] != n_features:
        raise ValueError(
            f"{path.name} has {X.shape[1]} features per example, the model {n_features}"
        )
    if labels is not None and labels.shape != (len(X),):
        raise ValueError(f"{path.name}: y has shape {labels.shape}, expected ({len(X)},)")
    return X, labels


def _labels(path: Path) -> np.ndarray:
    head = _open(path)
    if head[:3] == b"\x00\x00\x08":
        return _idx(path, head)
    return np.load(path, allow_pickle=False)


def class_index(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The index in ``classes`` of each label (``-1`` where it is none of them): numbers
    are matched by value, anything else by its text (a LIBSVM label by its class name)."""
    numeric = classes.dtype.kind in "iufb" and labels.dtype.kind in "iufb"
    text = float if numeric else formats.label_name if labels.dtype.kind == "f" else str
    lookup: dict = {(float if numeric else str)(c): i for i, c in enumerate(classes.tolist())}
    keys = [text(label) for label in labels.tolist()]
    return np.array([lookup.get(key, -1) for key in keys], np.int64)


def run(args: argparse.Namespace) -> int:
    try:
        model = models.load(args.model)
        X, labels = read(Path(args.data), model.n_features)
        if args.labels:
            labels = _labels(Path(args.labels))
            if labels.shape != (X.shape[0],):
                raise ValueError(f"{args.labels}: {labels.shape} labels for {X.shape[0]} rows")
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UsageError(str(error)) from error
    scores = model.scores(X)
    k = min(args.top_k or 1, model.n_classes)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties: the first class
    names = np.array([str(c) for c in model.classes.tolist()])
    rows = [" ".join(row) for row in names[best]]
    if args.scores:
        columns = [" ".join(f"{s:.6g}" for s in line) for line in scores]
        rows = [f"{row} {line}" for row, line in zip(rows, columns, strict=True)]
        rows.insert(0, "labels " + " ".join(names))
    text = "".join(row + "\n" for row in rows)
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as error:
            raise UsageError(str(error)) from error
    else:
        sys.stdout.write(text)
    if labels is not None:
        truth = class_index(model.classes, labels)
        summary = _accuracy(truth, best[:, 0], "accuracy")
        if k > 1:
            hits = (best == truth[:, None]).any(axis=1)
            summary += f", top-{k} " + _accuracy(hits, True, "accuracy")
        unknown = int(np.sum(truth < 0))
        if unknown:
            summary += f" ({unknown} labels are not among the model's classes)"
        print(summary, file=sys.stdout if args.output else sys.stderr)
    return 0


def _accuracy(truth, predicted, what: str) -> str:
    right = np.asarray(truth == predicted)
    return f"{what} {right.mean():.4f} ({int(right.sum())}/{right.size})"
