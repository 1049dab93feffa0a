"""Tests for svmjax.data: built-in datasets, file loaders, splits, preprocessing, bad files."""

import gzip
import struct
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svmjax.data import Dataset, load, load_cifar10, load_mnist, load_svmlight

STAT_ATOL = 1e-4  # float32 mean / std of preprocessed training features
VALUE_RTOL = 1e-5  # float32 preprocessed values against a float64 recomputation
FUZZ = settings(max_examples=50, deadline=None)
SPLITS = ("train", "val", "test")


def _arrays(data: Dataset) -> list[np.ndarray]:
    return [getattr(data, f"{a}_{s}") for s in SPLITS for a in ("X", "y")]


def _check_invariants(data: Dataset) -> None:
    for split in SPLITS:
        X, y = getattr(data, f"X_{split}"), getattr(data, f"y_{split}")
        assert X.dtype == np.float32 and X.shape == (len(y), data.n_features)
        assert not data.sparse or (X.format == "csr" and X.has_canonical_format)
        assert np.isfinite(X.data if data.sparse else X).all()
        assert y.dtype == np.int32 and (y.size == 0 or 0 <= y.min() <= y.max() < data.n_classes)


# --- built-in data ---------------------------------------------------------------------------


def test_digits_shapes():
    data = load("digits")
    _check_invariants(data)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 1797
    assert (len(data.y_val), len(data.y_test)) == (180, 359)
    assert (data.n_features, data.n_classes, data.image_shape) == (64, 10, (8, 8))
    assert data.class_names == tuple("0123456789")


def test_mnist1d_shapes_and_global_rng_untouched():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    data = load("mnist1d", val_fraction=0.25)
    assert np.random.rand() == expected  # mnist1d reseeds; load restores the state
    _check_invariants(data)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (3000, 1000, 1000)
    assert (data.n_features, data.n_classes) == (40, 10)


def test_blobs_are_learnable_but_not_trivial():
    data = load("blobs", key=jax.random.key(0))
    _check_invariants(data)
    assert (data.n_features, data.n_classes, len(data.y_test)) == (20, 5, 200)
    means = np.stack([data.X_train[data.y_train == k].mean(0) for k in range(5)])
    distances = ((data.X_test[:, None, :] - means) ** 2).sum(-1)
    accuracy = (distances.argmin(1) == data.y_test).mean()
    assert 0.7 < accuracy < 1.0


def test_blobs_options():
    data = load("blobs", key=jax.random.key(1), n=60, d=3, c=4, val_fraction=0, test_fraction=0.5)
    assert (data.X_train.shape, data.X_test.shape, data.y_val.shape) == ((30, 3), (30, 3), (0,))
    assert data.class_names == ("0", "1", "2", "3")


def test_blobs_need_a_key():
    with pytest.raises(ValueError, match="load\\('blobs'\\) needs a key"):
        load("blobs")


@pytest.mark.parametrize("name", ["digits", "blobs"])
def test_same_key_same_arrays(name):
    first, second = (load(name, key=jax.random.key(7)) for _ in range(2))
    for a, b in zip(_arrays(first), _arrays(second), strict=True):
        np.testing.assert_array_equal(a, b)


def test_default_key_is_key_zero():
    for a, b in zip(
        _arrays(load("digits")), _arrays(load("digits", key=jax.random.key(0))), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    legacy = load("digits", key=jax.random.PRNGKey(0))  # raw uint32 keys work too
    np.testing.assert_array_equal(legacy.y_train, load("digits").y_train)


def test_different_key_different_split():
    a, b = load("digits", key=jax.random.key(0)), load("digits", key=jax.random.key(1))
    assert a.y_train.shape == b.y_train.shape
    assert not np.array_equal(a.X_train, b.X_train)
    assert not np.array_equal(a.y_test, b.y_test)


def _train_statistics(raw: Dataset, preprocess: str) -> tuple[np.ndarray, np.ndarray]:
    X = raw.X_train.astype(np.float64)
    mean = X.mean(0)
    if preprocess == "center":
        return mean, np.ones_like(mean)
    return mean, np.where(X.max(0) == X.min(0), 1.0, X.std(0))


@pytest.mark.parametrize("preprocess", ["standardize", "center"])
def test_preprocessing_uses_training_statistics_only(preprocess):
    key = jax.random.key(3)
    raw = load("digits", key=key, preprocess=None)
    data = load("digits", key=key, preprocess=preprocess)
    assert raw.X_train.min() == 0 and raw.X_train.max() == 1  # pixels scaled from 0..16
    mean, scale = _train_statistics(raw, preprocess)
    for split in SPLITS:
        expected = (getattr(raw, f"X_{split}") - mean) / scale
        np.testing.assert_allclose(
            getattr(data, f"X_{split}"), expected, rtol=VALUE_RTOL, atol=1e-5
        )
    np.testing.assert_allclose(data.X_train.mean(0), 0, atol=STAT_ATOL)
    if preprocess == "standardize":
        varying = raw.X_train.max(0) > raw.X_train.min(0)
        assert not varying.all()  # digits has constant border pixels: left at 0, not divided
        np.testing.assert_allclose(data.X_train.std(0)[varying], 1, atol=STAT_ATOL)
        np.testing.assert_array_equal(data.X_train[:, ~varying], 0)
    assert np.abs(data.X_val.mean(0)).max() > 10 * STAT_ATOL  # val is not re-centred
    np.testing.assert_allclose(data.scaling.offset, mean, rtol=VALUE_RTOL)
    np.testing.assert_allclose(data.scaling.scale, scale, rtol=VALUE_RTOL)


@pytest.mark.parametrize("preprocess", ["maxabs", "l2"])
def test_sparse_preserving_preprocessing_of_dense_data(preprocess):
    key = jax.random.key(3)
    raw = load("blobs", key=key, preprocess=None)
    data = load("blobs", key=key, preprocess=preprocess)
    assert data.scaling.method == preprocess
    scale = np.abs(raw.X_train).max(0) if preprocess == "maxabs" else np.ones(raw.n_features)
    for split in SPLITS:
        expected = getattr(raw, f"X_{split}") / scale
        if preprocess == "l2":
            expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(getattr(data, f"X_{split}"), expected, rtol=VALUE_RTOL)
    if preprocess == "maxabs":  # the training split's largest absolute value, 1 per feature
        np.testing.assert_allclose(np.abs(data.X_train).max(0), 1, rtol=VALUE_RTOL)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "cifar"}, "unknown dataset 'cifar'; valid names: 'digits', 'mnist1d', 'blobs'"),
        ({"name": "digits", "preprocess": "whiten"}, "preprocess must be one of"),
        ({"name": "digits", "val_fraction": 1.0}, "val_fraction must lie in \\[0, 1\\)"),
        ({"name": "digits", "test_fraction": -0.1}, "test_fraction must lie in"),
        ({"name": "digits", "val_fraction": 0.5, "test_fraction": 0.5}, "must be < 1"),
        ({"name": "digits", "n": 10}, "apply only to 'blobs'"),
        ({"name": "mnist1d", "test_fraction": 0.2}, "mnist1d has its own test set"),
        ({"name": "blobs", "key": jax.random.key(0), "c": 1}, "blobs need c >= 2"),
        (
            {
                "name": "blobs",
                "key": jax.random.key(0),
                "n": 2,
                "c": 2,
                "test_fraction": 0.4,
                "val_fraction": 0.5,
            },
            "2 examples are too few to hold out \\[1, 1\\] for validation/test",
        ),
    ],
)
def test_load_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load(**kwargs)


@pytest.mark.parametrize(
    ("name", "module"), [("digits", "sklearn.datasets"), ("mnist1d", "mnist1d.data")]
)
def test_missing_optional_dependency(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match="pip install 'svmjax\\[data\\]'"):
        load(name)


def test_dataset_checks_its_arrays():
    X, y = np.zeros((3, 2), np.float32), np.array([0, 1, 1], np.int32)
    Dataset(X, y, X, y, X, y, ("a", "b"), "ok")
    with pytest.raises(ValueError, match="X_val: expected float32"):
        Dataset(X, y, X.astype(np.float64), y, X, y, ("a", "b"), "bad")
    with pytest.raises(ValueError, match="y_test: class indices must lie in \\[0, 2\\)"):
        Dataset(X, y, X, y, X, y + 1, ("a", "b"), "bad")


# --- CIFAR-10 binary files -------------------------------------------------------------------

CIFAR_RECORD = 3073
CIFAR_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def _write_cifar(directory: Path, per_file: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write all six files; the red pixel at (0, 0) of each record is a unique marker."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for f, name in enumerate(CIFAR_FILES):
        labels = (np.arange(per_file) + f) % 10
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        pixels[:, 0] = f * per_file + np.arange(per_file)
        records = np.concatenate([labels[:, None].astype(np.uint8), pixels], axis=1)
        (directory / name).write_bytes(records.tobytes())
        written[name] = (labels, pixels)
    return written


def _by_marker(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(X[:, 0])
    return X[order], y[order]


def _cifar_expected(pixels: np.ndarray) -> np.ndarray:
    """Channel-major file bytes -> height-width-channel rows, written out index by index."""
    n = len(pixels)
    out = np.empty((n, 32, 32, 3), np.float32)
    for channel in range(3):
        for row in range(32):
            start = channel * 1024 + row * 32
            out[:, row, :, channel] = pixels[:, start : start + 32]
    return out.reshape(n, -1) / np.float32(255)


def test_cifar10_round_trip(tmp_path):
    written = _write_cifar(tmp_path / "cifar-10-batches-bin")
    data = load_cifar10(tmp_path, val_fraction=0, preprocess=None)  # the parent directory works
    _check_invariants(data)
    assert (data.image_shape, data.class_names[0], data.n_classes) == ((32, 32, 3), "airplane", 10)
    X, y = _by_marker(data.X_train, data.y_train)
    train = [written[name] for name in CIFAR_FILES[:5]]
    np.testing.assert_array_equal(X, _cifar_expected(np.concatenate([p for _, p in train])))
    np.testing.assert_array_equal(y, np.concatenate([labels for labels, _ in train]))
    labels, pixels = written["test_batch.bin"]  # the test set keeps its file order
    np.testing.assert_array_equal(data.X_test, _cifar_expected(pixels))
    np.testing.assert_array_equal(data.y_test, labels)
    green = data.X_test.reshape(-1, 32, 32, 3)[:, 1, 2, 1]
    np.testing.assert_array_equal(green, pixels[:, 1024 + 32 + 2] / np.float32(255))


def test_cifar10_split_center_and_names(tmp_path):
    _write_cifar(tmp_path, per_file=4)
    names = [f"class{i}" for i in range(10)]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    data = load_cifar10(tmp_path, val_fraction=0.2, key=jax.random.key(5))
    raw = load_cifar10(tmp_path, val_fraction=0.2, key=jax.random.key(5), preprocess=None)
    assert data.class_names == tuple(names)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (16, 4, 4)
    markers = np.round(np.concatenate([raw.X_train[:, 0], raw.X_val[:, 0]]) * 255)
    np.testing.assert_array_equal(np.sort(markers), np.arange(20))  # a partition of train
    mean = raw.X_train.astype(np.float64).mean(0)
    np.testing.assert_allclose(data.X_test, raw.X_test - mean, rtol=VALUE_RTOL, atol=1e-6)


def _corrupt(directory: Path, name: str, content: bytes) -> None:
    _write_cifar(directory)
    (directory / name).write_bytes(content)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "data_batch_2.bin",
            bytes(2 * CIFAR_RECORD + 1200),
            "data_batch_2.bin: record 3 is truncated \\(1200 of 3073 bytes\\)",
        ),
        ("data_batch_1.bin", b"", "data_batch_1.bin: empty file, no records"),
        (
            "test_batch.bin",
            bytes(CIFAR_RECORD) + b"\x0a" + bytes(3072),
            "test_batch.bin: record 2 has label 10",
        ),
        ("batches.meta.txt", b"a\nb\nc\n", "batches.meta.txt: 3 class names, expected 10"),
        ("batches.meta.txt", b"\xff\xfe\n" * 10, "batches.meta.txt: not UTF-8"),
    ],
)
def test_cifar10_bad_files(tmp_path, name, content, message):
    _corrupt(tmp_path, name, content)
    with pytest.raises(ValueError, match=message):
        load_cifar10(tmp_path)


def test_cifar10_missing_file(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_4.bin").unlink()
    with pytest.raises(FileNotFoundError, match="missing CIFAR-10 file\\(s\\) data_batch_4.bin"):
        load_cifar10(tmp_path)


# --- MNIST IDX files -------------------------------------------------------------------------

MNIST_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx(magic: int, shape: tuple[int, ...], data: bytes) -> bytes:
    return struct.pack(f">{1 + len(shape)}I", magic, *shape) + data


def _mnist_files(shape=(28, 28), sizes=(6, 4)) -> tuple[dict[str, bytes], dict]:
    """Contents of the four IDX files; pixel (0, 0) of each image is a unique marker."""
    rng = np.random.default_rng(1)
    files, arrays = {}, {}
    for (split, (images_name, labels_name)), n in zip(MNIST_NAMES.items(), sizes, strict=True):
        images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)
        labels = (np.arange(n) * 3 % 10).astype(np.uint8)
        files[images_name] = _idx(2051, images.shape, images.tobytes())
        files[labels_name] = _idx(2049, labels.shape, labels.tobytes())
        arrays[split] = (images, labels)
    return files, arrays


def _write_mnist(directory: Path, shape=(28, 28), gz=False, sizes=(6, 4)) -> dict:
    files, arrays = _mnist_files(shape, sizes)
    for name, content in files.items():
        path = directory / (name + ".gz" if gz else name)
        path.write_bytes(gzip.compress(content) if gz else content)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(28, 28), (5, 7)])
def test_mnist_round_trip(tmp_path, gz, shape):
    written = _write_mnist(tmp_path, shape, gz)
    data = load_mnist(tmp_path, val_fraction=0, preprocess=None)
    _check_invariants(data)
    assert (data.image_shape, data.n_features, data.n_classes) == (shape, shape[0] * shape[1], 10)
    for split, (X, y) in (
        ("train", _by_marker(data.X_train, data.y_train)),
        ("test", (data.X_test, data.y_test)),
    ):
        images, labels = written[split]
        np.testing.assert_array_equal(X, images.reshape(len(images), -1) / np.float32(255))
        np.testing.assert_array_equal(y, labels)


def test_mnist_center_with_validation(tmp_path):
    _write_mnist(tmp_path, sizes=(10, 3))
    raw = load_mnist(tmp_path, val_fraction=0.3, preprocess=None)
    data = load_mnist(tmp_path, val_fraction=0.3)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (7, 3, 3)
    mean = raw.X_train.astype(np.float64).mean(0)
    np.testing.assert_allclose(data.X_val, raw.X_val - mean, rtol=VALUE_RTOL, atol=1e-6)
    np.testing.assert_allclose(data.X_train.mean(0), 0, atol=STAT_ATOL)


def _image_bytes(n: int, rows: int = 28, cols: int = 28) -> bytes:
    return bytes(n * rows * cols)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "train-images-idx3-ubyte",
            _idx(1234, (6, 28, 28), _image_bytes(6)),
            "train-images-idx3-ubyte: magic number 1234, expected 2051",
        ),
        (
            "t10k-labels-idx1-ubyte",
            _idx(2051, (4,), bytes(4)),
            "t10k-labels-idx1-ubyte: magic number 2051, expected 2049",
        ),
        (
            "train-images-idx3-ubyte",
            _idx(2051, (6, 28, 28), _image_bytes(5)),
            "train-images-idx3-ubyte: header sizes \\(6, 28, 28\\) "
            "need 4704 data bytes, found 3920",
        ),
        (
            "train-labels-idx1-ubyte",
            _idx(2049, (6,), bytes(7)),
            "train-labels-idx1-ubyte: header sizes \\(6,\\) need 6 data bytes, found 7",
        ),
        (
            "train-images-idx3-ubyte",
            _idx(2051, (2**32 - 1, 2**32 - 1, 2**32 - 1), b""),
            "need 79228162458924105385300197375 data bytes, found 0",
        ),
        (
            "train-images-idx3-ubyte",
            b"\x00\x00\x08\x03\x00",
            "5 bytes, shorter than the 16-byte header",
        ),
        ("t10k-images-idx3-ubyte", _idx(2051, (0, 28, 28), b""), "t10k-images-idx3-ubyte: no data"),
        (
            "train-labels-idx1-ubyte",
            _idx(2049, (5,), bytes(5)),
            "train-images-idx3-ubyte has 6 images but train-labels-idx1-ubyte has 5 labels",
        ),
        (
            "t10k-labels-idx1-ubyte",
            _idx(2049, (4,), bytes([1, 2, 10, 3])),
            "t10k-labels-idx1-ubyte: label 3 is 10, expected 0..9",
        ),
        (
            "t10k-images-idx3-ubyte",
            _idx(2051, (4, 27, 28), _image_bytes(4, 27)),
            "train images are \\(28, 28\\) but test images are \\(27, 28\\)",
        ),
    ],
)
def test_mnist_bad_files(tmp_path, name, content, message):
    _write_mnist(tmp_path)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not gzip data",
        gzip.compress(_idx(2051, (6, 28, 28), _image_bytes(6)), mtime=0)[:-12],  # truncated
        gzip.compress(b"x", mtime=0)[:5],  # truncated header
        gzip.compress(b"x", mtime=0) + b"trailing garbage",
    ],
    ids=["not-gzip", "truncated-stream", "truncated-header", "trailing-garbage"],
)
def test_mnist_bad_gzip(tmp_path, content):
    _write_mnist(tmp_path, gz=True)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(content)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_mnist(tmp_path)


def test_mnist_missing_file(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(
        FileNotFoundError, match="neither t10k-labels-idx1-ubyte nor t10k-labels-idx1-ubyte.gz"
    ):
        load_mnist(tmp_path)


# --- svmlight / LIBSVM text files ------------------------------------------------------------

SVMLIGHT_TRAIN = """# a comment line
+1 1:0.5 3:-2 # trailing comment
-1 qid:7 2:1e-1 3:4

+1
-1 1:1.5 2:.25 3:3.
"""
SVMLIGHT_TRAIN_X = [[0.5, 0, -2], [0, 0.1, 4], [0, 0, 0], [1.5, 0.25, 3]]
SVMLIGHT_TRAIN_Y = [1, 0, 1, 0]


def _sorted_rows(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    rows = np.column_stack([y, X]).astype(np.float64)
    return rows[np.lexsort(rows.T[::-1])]


def _dense(X) -> np.ndarray:
    return X.toarray() if hasattr(X, "toarray") else X


@pytest.mark.parametrize("sparse", [True, False])
def test_svmlight_round_trip(tmp_path, sparse):
    (tmp_path / "train.svm").write_text(SVMLIGHT_TRAIN)
    (tmp_path / "test.svm").write_text("-1 2:7\n+1 1:-1e3 4:2\n")
    data = load_svmlight(
        tmp_path / "train.svm",
        test_path=tmp_path / "test.svm",
        val_fraction=0,
        preprocess=None,
        sparse=sparse,
    )
    _check_invariants(data)
    assert (data.class_names, data.n_features, data.image_shape) == (("-1", "1"), 4, None)
    assert data.sparse == sparse and data.scaling is None
    expected = np.array([row + [0] for row in SVMLIGHT_TRAIN_X], np.float32)
    np.testing.assert_array_equal(
        _sorted_rows(_dense(data.X_train), data.y_train),
        _sorted_rows(expected, np.array(SVMLIGHT_TRAIN_Y)),
    )
    np.testing.assert_array_equal(
        _dense(data.X_test), np.array([[0, 7, 0, 0], [-1000, 0, 0, 2]], np.float32)
    )
    np.testing.assert_array_equal(data.y_test, [0, 1])


@pytest.mark.parametrize("sparse", [True, False])
def test_svmlight_labels_any_numbers_and_splits(tmp_path, sparse):
    lines = [
        f"{label} 1:{i} 2:{i % 3}" for i, label in enumerate(["3", "1", "2.5", "3", "1.0"] * 4)
    ]
    (tmp_path / "multi.txt").write_text("\n".join(lines))
    data = load_svmlight(
        tmp_path / "multi.txt", 5, key=jax.random.key(2), preprocess=None, sparse=sparse
    )
    assert (data.class_names, data.n_features) == (("1", "2.5", "3"), 5)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (14, 2, 4)
    X = np.concatenate([_dense(data.X_train), _dense(data.X_val), _dense(data.X_test)])
    y = np.concatenate([data.y_train, data.y_val, data.y_test])
    np.testing.assert_array_equal(np.sort(X[:, 0]), np.arange(20))  # every line exactly once
    np.testing.assert_array_equal(y[np.argsort(X[:, 0])], [2, 0, 1, 2, 0] * 4)
    np.testing.assert_array_equal(X[:, 2:], 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 1:1\n2 0:1 2:3\n", "train.svm: line 2: feature index 0, indices start at 1"),
        ("1 3:1 2:1\n", "train.svm: line 1: feature indices must increase, got 2 after 3"),
        ("1 2:1 2:1\n", "line 1: feature indices must increase, got 2 after 2"),
        ("1 1:1\n\n2 1:2 3:abc\n", "train.svm: line 3: cannot parse value 'abc' for feature 3"),
        ("1 1:nan\n", "line 1: cannot parse value 'nan' for feature 1"),
        ("1 1:1e39\n", "line 1: cannot parse value '1e39' for feature 1"),
        ("1 1:\n", "line 1: cannot parse value '' for feature 1"),
        ("one 1:1\n", "train.svm: line 1: cannot parse label 'one'"),
        ("1 1:1 7\n", "line 1: expected index:value, got '7'"),
        ("1 x:1\n", "line 1: expected index:value, got 'x:1'"),
        ("1 -1:1\n", "line 1: expected index:value, got '-1:1'"),
        ("1 1:1\n2 5:1\n", "train.svm: line 2: feature index 5 exceeds n_features=4"),
        ("", "train.svm: no examples"),
        ("# only\n\n  # comments\n", "train.svm: no examples"),
        ("1 1:1\n1 2:1\n", "train.svm: 1 distinct label\\(s\\), need at least 2"),
        ("1\n2\n", "no feature values"),
        ("1 1:1\n2 \xe9:1\n", "train.svm: line 2: non-ASCII byte outside a comment"),
        ("1 1:1\n2 99999999999:1\n", "2 examples x 99999999999 features is too large"),
        ("1 1:1\n2 2147483648:1\n", "line 2: feature index 2147483648 is above the largest"),
    ],
)
@pytest.mark.parametrize("sparse", [True, False])
def test_svmlight_bad_files(tmp_path, text, message, sparse):
    if ("too large" in message and sparse) or ("2147483648" in text and not sparse):
        pytest.skip("a dense matrix is refused by size, a sparse one by index")
    path = tmp_path / "train.svm"
    path.write_bytes(text.encode("latin-1"))
    n_features = 4 if "n_features" in message else None
    with pytest.raises(ValueError, match=message):
        load_svmlight(path, n_features, sparse=sparse)


def test_svmlight_error_names_the_test_file_and_comments_may_be_utf8(tmp_path):
    (tmp_path / "train.svm").write_text("1 1:1 # café\n2 2:1\n", encoding="utf-8")
    (tmp_path / "test.svm").write_text("1 1:1\n2 2:x\n")
    with pytest.raises(ValueError, match="test.svm: line 2: cannot parse value 'x' for feature 2"):
        load_svmlight(tmp_path / "train.svm", test_path=tmp_path / "test.svm")


def test_svmlight_options(tmp_path):
    path = tmp_path / "a.svm"
    path.write_text("1 1:3e38\n1 1:3e38\n2 1:-3e38\n")
    with pytest.raises(ValueError, match="values overflow float32 after preprocess=center"):
        load_svmlight(path, val_fraction=0, test_fraction=0, preprocess="center", sparse=False)
    with pytest.raises(ValueError, match="test_fraction does not apply"):
        load_svmlight(path, test_path=path, test_fraction=0.1)
    with pytest.raises(ValueError, match="n_features must be positive"):
        load_svmlight(path, 0)
    with pytest.raises(ValueError, match="n_features must be positive and at most 2147483647"):
        load_svmlight(path, 2**31)
    for centring in ("standardize", "center"):
        with pytest.raises(ValueError, match=f"preprocess='{centring}' centres each feature"):
            load_svmlight(path, preprocess=centring)


# --- fuzzing: any bytes give a Dataset or a ValueError ---------------------------------------
# Each strategy mixes random bytes with near-valid files, so that both the success path and
# every error path are reached.


def _loads_or_value_error(load_fn, path) -> None:
    try:
        data = load_fn(path)
    except ValueError:
        return
    _check_invariants(data)


_SVMLIGHT_LINE = st.one_of(
    st.sets(st.integers(1, 6), max_size=4).map(sorted),  # valid indices
    st.lists(st.integers(0, 6), max_size=3),  # possibly 0, repeated or decreasing
).flatmap(
    lambda indices: st.lists(
        st.sampled_from(["1", "-2.5", ".5", "1e3", "3e38", "-3e38", "0"]),
        min_size=len(indices),
        max_size=len(indices),
    ).map(lambda values: " ".join(f"{i}:{v}" for i, v in zip(indices, values, strict=True)))
)
_SVMLIGHT_JUNK = [
    "",
    "",
    "# note \xe9",
    "qid:3",
    "7",
    ":",
    "\xe9",
    "9:abc",
    "9:nan",
    "9:",
    "9:1e99",
]


def _svmlight_text(n_labels: int, features: list[str], junk: str, junk_line: int) -> bytes:
    """Lines cycling through ``n_labels`` labels, with one junk token on one line."""
    lines = [f"{('-1', '1', '2.5')[i % n_labels]} {f}" for i, f in enumerate(features)]
    lines[junk_line % len(lines)] += f" {junk}"
    return "\n".join(lines).encode("latin-1")


_SVMLIGHT_TEXT = st.builds(
    _svmlight_text,
    st.integers(1, 3),
    st.lists(_SVMLIGHT_LINE, min_size=1, max_size=8),
    st.sampled_from(_SVMLIGHT_JUNK),
    st.integers(0, 7),
)


@FUZZ
@given(st.one_of(st.binary(max_size=200), _SVMLIGHT_TEXT))
def test_fuzz_svmlight(content):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.svm"
        path.write_bytes(content)
        _loads_or_value_error(load_svmlight, path)


_CIFAR_CONTENT = st.one_of(
    st.binary(max_size=100),
    st.builds(  # whole records, possibly cut short
        lambda labels, cut: b"".join(bytes([b]) + bytes(3072) for b in labels)[: -cut or None],
        st.lists(st.integers(0, 12), max_size=3),
        st.sampled_from([0, 0, 0, 1, 3000, 3073]),
    ),
    st.lists(st.text(max_size=4), min_size=9, max_size=11).map(lambda n: "\n".join(n).encode()),
)


@FUZZ
@given(st.sampled_from(CIFAR_FILES + ["batches.meta.txt"]), _CIFAR_CONTENT)
def test_fuzz_cifar10(name, content):
    with tempfile.TemporaryDirectory() as directory:
        _corrupt(Path(directory), name, content)
        _loads_or_value_error(load_cifar10, directory)


def _mutate(valid: bytes, edits: list[tuple[int, int]], length: int | None) -> bytes:
    """Overwrite some bytes of a valid file (header fields, labels), then cut or pad it."""
    content = bytearray(valid)
    for position, byte in edits:
        content[position % len(content)] = byte
    return (
        bytes(content[:length])
        if length is None or length <= len(content)
        else bytes(content) + bytes(1)
    )


_EDITS = st.lists(
    st.tuples(st.one_of(st.integers(0, 15), st.integers(0, 99)), st.integers(0, 255)), max_size=2
)


@FUZZ
@given(
    st.sampled_from([name for pair in MNIST_NAMES.values() for name in pair]),
    st.booleans(),
    st.one_of(
        st.binary(max_size=80), st.tuples(_EDITS, st.sampled_from([None, None, 0, 10, 17, 999]))
    ),
    st.sampled_from([None, None, 0, 5, 20]),
)
def test_fuzz_mnist(name, gz, change, gz_length):
    files, _ = _mnist_files(shape=(2, 2), sizes=(6, 4))
    files[name] = change if isinstance(change, bytes) else _mutate(files[name], *change)
    with tempfile.TemporaryDirectory() as directory:
        for file, content in files.items():
            if gz:
                compressed = gzip.compress(content)
                content = compressed[:gz_length] if file == name else compressed
            (Path(directory) / (file + ".gz" if gz else file)).write_bytes(content)
        _loads_or_value_error(load_mnist, directory)
