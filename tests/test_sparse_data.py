"""Sparse data: the svmlight reader's vectorised and line-by-line paths agree, CSR loading
equals the dense loading, and the sparse-preserving scaling of svmjax.preprocessing."""

import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.sparse
from hypothesis import example, given, settings
from hypothesis import strategies as st

from svmjax import formats, preprocessing
from svmjax.data import load_svmlight

FUZZ = settings(max_examples=60, deadline=None, database=None)
VALUE_RTOL = 1e-6  # float32 scaling: one rounding of a division, against float64

# --- the reader: vectorised blocks == line by line -------------------------------------------

VALID = b"""# a comment line
+1 1:0.5 3:-2 # trailing comment
-1 2:1e-1 3:4

2.5 1:1 2:2 3:3 4:4
1 4:-7.25\r
-1 1:.5 2:3.
2.5
1 1:1E3 3:0 9:+1
"""
_TOKENS = [
    b":", b" ", b"\n", b"\r", b"\t", b"#", b"0", b"-", b"+", b".", b"e", b"E", b"nan", b"inf",
    b"1e39", b"qid:1", b"0:1", b"99999:1", b"2147483648:1", b"9" * 19, b"\xff", b"\x00",
    b"3:4 2:1", b"1:1", b"5", b"x", b"1_0", b"\x0b", b"::", b"7:" + b"1" * 50,
    b"-0.21879203617572784", b"1e-30", b"-1e-45", b"123456789012345678", b"1e+5", b"-.5e-3",
]  # fmt: skip
_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "flip"]),
        st.integers(0, len(VALID)),
        st.one_of(st.sampled_from(_TOKENS), st.binary(min_size=1, max_size=3)),
    ),
    max_size=4,
)


def _edit(content: bytes, edits) -> bytes:
    out = bytearray(content)
    for kind, at, payload in edits:
        at = min(at, len(out))
        if kind == "insert":
            out[at:at] = payload
        elif kind == "delete":
            del out[at : at + len(payload)]
        elif at < len(out):
            out[at] = payload[0]
    return bytes(out)


def _outcome(parse):
    try:
        return parse()
    except ValueError as err:
        return str(err)


def _line_by_line(path: Path, n_features, max_index) -> formats.Svmlight | str:
    """The reference: the whole file through the line-by-line reader."""
    data = path.read_bytes()
    labels, counts, indices, values = formats._parse_lines(
        data, path.name, 1, n_features, max_index
    )
    if not labels.size:
        return f"{path.name}: no examples (empty file or only comments)"
    indptr = np.concatenate([[0], np.cumsum(counts)])
    largest = int(indices.max()) + 1 if indices.size else 0
    return formats.Svmlight(labels, indptr, indices, values.astype(np.float32), largest)


def _assert_same(got, expected) -> None:
    assert type(got) is type(expected), (got, expected)
    if isinstance(got, str):
        assert got == expected
        return
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert got.indices.dtype == np.int64 and got.values.dtype == np.float32


@FUZZ
@given(_EDITS, st.sampled_from([None, 4, 9]), st.sampled_from([2**31 - 1, 10**18 - 1]))
def test_blocks_parse_as_line_by_line(edits, n_features, max_index):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "f.svm"
        path.write_bytes(_edit(VALID, edits))
        got = _outcome(lambda: formats.parse_svmlight(path, n_features, max_index))
        _assert_same(got, _outcome(lambda: _line_by_line(path, n_features, max_index)))


def _near_halfway(f: float, steps: int) -> str:
    """A decimal ``steps`` float64 steps from halfway between float32 ``f`` and the next."""
    with np.errstate(over="ignore"):
        up = float(np.nextafter(np.float32(f), np.float32(np.inf)))
    up = 2.0**128 if up == np.inf and np.isfinite(f) else up  # float32 rounds to inf from there
    halfway = (f + up) / 2
    return f"{halfway + steps * np.spacing(halfway):.18g}"


_FLOAT32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
_DECIMAL = st.one_of(
    st.from_regex(r"[+-]?(\d{1,18}\.?\d{0,18}|\.\d{1,18})([eE][+-]?\d{1,3})?", fullmatch=True),
    _FLOAT32.map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.16g}"),
    st.builds(_near_halfway, _FLOAT32, st.integers(-8, 8)),
)


@FUZZ
@given(st.lists(_DECIMAL, min_size=1, max_size=40))
@example(numbers=["0", "3.4028234663852886e+38", "-3.4028234663852886e+38"])
@example(numbers=["3.4028235677973366e+38", "3.4028235677973362e+38", "3.4028235677973370e+38"])
def test_numbers_parse_as_float_parses_them(numbers):
    """Correct rounding: each label and value equals Python's ``float`` of its text (the
    values then rounded to float32), or both readers refuse the same line."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "n.svm"
        path.write_text("".join(f"{x} 1:{x} 2:{x}\n" for x in numbers))
        got = _outcome(lambda: formats.parse_svmlight(path, None))
        _assert_same(got, _outcome(lambda: _line_by_line(path, None, 10**18 - 1)))
        if not isinstance(got, str):
            expected = np.array([float(x) for x in numbers])
            np.testing.assert_array_equal(got.labels, expected)
            np.testing.assert_array_equal(got.values, np.repeat(expected, 2).astype(np.float32))


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 22])
def test_blocks_of_any_size_and_line_numbers_across_blocks(tmp_path, monkeypatch, block):
    monkeypatch.setattr(formats, "_BLOCK", block)
    path = tmp_path / "f.svm"
    path.write_bytes(VALID * 5)
    _assert_same(formats.parse_svmlight(path, None), _line_by_line(path, None, 10**18 - 1))
    path.write_bytes(VALID * 5 + b"1 1:1\n2 2:x\n")
    line = VALID.count(b"\n") * 5 + 2
    with pytest.raises(ValueError, match=f"^f.svm: line {line}: cannot parse value 'x'"):
        formats.parse_svmlight(path, None)


def _random_svmlight(rng, n: int, d: int, nnz: int, classes: int) -> tuple[bytes, np.ndarray]:
    X = np.zeros((n, d), np.float32)
    lines = []
    for i in range(n):
        cols = np.sort(rng.choice(d, size=nnz, replace=False))
        vals = rng.standard_normal(nnz).astype(np.float32)
        X[i, cols] = vals
        pairs = " ".join(f"{c + 1}:{v!r}" for c, v in zip(cols, vals.tolist(), strict=True))
        lines.append(f"{i % classes} {pairs}")
    return ("\n".join(lines) + "\n").encode(), X


def test_reader_matches_scikit_learn(tmp_path):
    datasets = pytest.importorskip("sklearn.datasets")
    content, X = _random_svmlight(np.random.default_rng(0), 300, 500, 12, 5)
    path = tmp_path / "r.svm"
    path.write_bytes(content)
    parsed = formats.parse_svmlight(path, None)
    X_sk, y_sk = datasets.load_svmlight_file(path, n_features=500, dtype=np.float32)
    np.testing.assert_array_equal(parsed.indptr, X_sk.indptr)
    np.testing.assert_array_equal(parsed.indices, X_sk.indices)
    np.testing.assert_array_equal(parsed.values, X_sk.data)
    np.testing.assert_array_equal(parsed.labels, y_sk)
    np.testing.assert_array_equal(X_sk.toarray(), X)


# --- loading: CSR == dense --------------------------------------------------------------------


@pytest.mark.parametrize("preprocess", ["maxabs", "l2", None])
def test_sparse_load_equals_dense_load(tmp_path, preprocess):
    content, _ = _random_svmlight(np.random.default_rng(1), 200, 50, 6, 4)
    (tmp_path / "train.svm").write_bytes(content)
    (tmp_path / "test.svm").write_bytes(b"0 1:2 50:-1\n3\n2 7:0.5\n")
    kwargs = dict(test_path=tmp_path / "test.svm", key=jax.random.key(3), preprocess=preprocess)
    sparse = load_svmlight(tmp_path / "train.svm", **kwargs)
    dense = load_svmlight(tmp_path / "train.svm", sparse=False, **kwargs)
    assert sparse.sparse and not dense.sparse
    assert (sparse.class_names, sparse.n_features) == (dense.class_names, dense.n_features)
    for split in ("train", "val", "test"):
        X = getattr(sparse, f"X_{split}")
        assert isinstance(X, scipy.sparse.csr_matrix) and X.dtype == np.float32
        assert X.has_canonical_format and X.indices.dtype == np.int32
        np.testing.assert_array_equal(X.toarray(), getattr(dense, f"X_{split}"))
        np.testing.assert_array_equal(getattr(sparse, f"y_{split}"), getattr(dense, f"y_{split}"))
    if preprocess is None:
        assert sparse.scaling is None and dense.scaling is None
    else:
        for a, b in zip(sparse.scaling, dense.scaling, strict=True):
            np.testing.assert_array_equal(a, b)


def test_sparse_load_never_densifies(tmp_path):
    """2,000 x 2,000,000 (16 GB dense): CSR in a few MB."""
    rng = np.random.default_rng(2)
    lines = []
    for i in range(2000):
        cols = np.sort(rng.choice(2_000_000, size=20, replace=False)) + 1
        lines.append(f"{i % 3} " + " ".join(f"{c}:1" for c in cols))
    path = tmp_path / "wide.svm"
    path.write_text("\n".join(lines))
    data = load_svmlight(path, 2_000_000, preprocess="l2")
    assert data.X_train.shape == (1400, 2_000_000) and data.X_train.nnz == 1400 * 20
    np.testing.assert_allclose(data.X_train.multiply(data.X_train).sum(axis=1), 1, VALUE_RTOL)
    with pytest.raises(ValueError, match="too large to hold densely"):
        load_svmlight(path, 2_000_000, sparse=False)


def test_sparse_needs_scipy(tmp_path, monkeypatch):
    path = tmp_path / "a.svm"
    path.write_text("1 1:1\n2 2:1\n1 1:2\n2 2:3\n1 1:1\n")
    monkeypatch.setitem(sys.modules, "scipy.sparse", None)  # import scipy.sparse fails
    with pytest.raises(ImportError, match="sparse svmlight data needs scipy.*sparse=False"):
        load_svmlight(path, val_fraction=0, test_fraction=0)
    assert not load_svmlight(path, val_fraction=0, test_fraction=0, sparse=False).sparse


# --- preprocessing ----------------------------------------------------------------------------


def _matrices(seed: int = 0) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((30, 8)) * rng.integers(0, 2, (30, 8))).astype(np.float32)
    X[:, 3] = 0  # a feature that is 0 throughout
    X[5] = 0  # an example that is 0 throughout
    return X, scipy.sparse.csr_matrix(X)


@pytest.mark.parametrize("method", ["maxabs", "l2"])
def test_scaling_sparse_equals_dense(method):
    X, S = _matrices()
    dense, sparse = preprocessing.fit_scaling(X, method), preprocessing.fit_scaling(S, method)
    for a, b in zip(dense, sparse, strict=True):
        np.testing.assert_array_equal(a, b)
    scaled = preprocessing.apply_scaling(sparse, S)
    assert isinstance(scaled, scipy.sparse.csr_matrix) and scaled.nnz == S.nnz
    np.testing.assert_allclose(scaled.toarray(), preprocessing.apply_scaling(dense, X), VALUE_RTOL)
    np.testing.assert_array_equal(S.toarray(), X)  # copy=True leaves the input alone


def test_maxabs_statistics_and_l2_rows():
    X, S = _matrices()
    scaling = preprocessing.fit_scaling(S, "maxabs")
    expected = np.abs(X).max(axis=0).astype(np.float64)
    expected[3] = 1.0
    np.testing.assert_array_equal(scaling.scale, expected.astype(np.float32))
    np.testing.assert_array_equal(scaling.offset, 0)
    scaled = preprocessing.apply_scaling(scaling, S).toarray()
    np.testing.assert_allclose(np.abs(scaled).max(axis=0), [1, 1, 1, 0, 1, 1, 1, 1], VALUE_RTOL)
    unit = preprocessing.apply_scaling(preprocessing.fit_scaling(S, "l2"), S).toarray()
    norms = np.linalg.norm(unit, axis=1)
    np.testing.assert_allclose(np.delete(norms, 5), 1, VALUE_RTOL)
    assert norms[5] == 0


def test_scaling_applies_training_statistics_to_new_data_and_is_storable(tmp_path):
    X, S = _matrices()
    scaling = preprocessing.fit_scaling(S[:20], "maxabs")
    np.savez(tmp_path / "s.npz", **scaling._asdict())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as stored:
        again = preprocessing.Scaling(**{k: stored[k] for k in stored.files})
    new = preprocessing.apply_scaling(again, scipy.sparse.coo_matrix(X[20:]))
    assert new.format == "csr" and str(again.method) == "maxabs"
    np.testing.assert_allclose(new.toarray(), X[20:] / scaling.scale, VALUE_RTOL)


def test_scaling_in_place_and_canonical_form():
    _, S = _matrices()
    scaling = preprocessing.fit_scaling(S, "maxabs")
    same = preprocessing.apply_scaling(scaling, S, copy=False)
    assert same is S
    duplicated = scipy.sparse.csr_matrix(
        (np.array([1.0, 2.0, 4.0]), np.array([2, 2, 0]), np.array([0, 3])), shape=(1, 8)
    )
    np.testing.assert_array_equal(
        preprocessing.fit_scaling(duplicated, "maxabs").scale[:3], [4, 1, 3]
    )
    assert duplicated.nnz == 3  # the statistics summed duplicates on a copy
    out = preprocessing.apply_scaling(preprocessing.fit_scaling(duplicated, "l2"), duplicated)
    assert out.has_canonical_format and out.nnz == 2
    np.testing.assert_allclose(out.toarray()[0, [0, 2]], [4 / 5, 3 / 5], VALUE_RTOL)


@pytest.mark.parametrize("method", ["standardize", "center"])
def test_centring_sparse_data_is_an_error(method):
    _, S = _matrices()
    message = f"preprocess='{method}' centres each feature.*'maxabs'.*'l2'.*None"
    with pytest.raises(ValueError, match=message):
        preprocessing.fit_scaling(S, method)
    dense = preprocessing.fit_scaling(S.toarray(), method)
    with pytest.raises(ValueError, match=message):
        preprocessing.apply_scaling(dense, S)


def test_scaling_bad_input():
    X, _ = _matrices()
    with pytest.raises(ValueError, match="preprocess must be one of"):
        preprocessing.fit_scaling(X, "whiten")
    with pytest.raises(ValueError, match="X has 7 features, the scaling 8"):
        preprocessing.apply_scaling(preprocessing.fit_scaling(X, "l2"), X[:, :7])
    tiny = preprocessing.Scaling("maxabs", np.zeros(1, np.float32), np.full(1, 1e-30, np.float32))
    with pytest.raises(ValueError, match="values overflow float32 after preprocess=maxabs"):
        preprocessing.apply_scaling(tiny, scipy.sparse.csr_matrix(np.array([[3e38]], np.float32)))
