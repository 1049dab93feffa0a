"""Fuzzing the file readers with mutated valid files: each call either returns valid data or
raises ``ValueError``, never another exception and never a hang.

tests/test_data.py already fuzzes the three data loaders with random bytes and with
*generated* near-valid files (svmlight lines from a grammar, CIFAR records with random label
bytes, MNIST headers with edited bytes). Here hypothesis takes one *valid* file of each
format and applies byte-level mutations to it (flip, insert — random bytes or tokens that
mean something to the format —, delete, duplicate, truncate; for MNIST also inside and
outside the gzip stream), and it fuzzes :func:`svmjax.checkpoint.load` the same way.

Bounded: valid files are a few KB, at most 4 mutations each, the dense svmlight matrix is
capped at 2**16 entries for the duration of a test (the real cap, 2**28, would let an
inserted digit make one example allocate a GiB), and every load runs under a watchdog
alarm: a load that takes longer than ``HANG_SECONDS`` fails the test as a hang. 40 examples
per test by default; ``SVMJAX_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py`` hunts longer.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import struct
import tempfile
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svmjax import checkpoint, data, formats

HANG_SECONDS = 30  # far above the slowest load seen (~0.5 s with compilation)
EXAMPLES = int(os.environ.get("SVMJAX_FUZZ_EXAMPLES", "40"))  # e.g. 2000 for a long hunt
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
CIFAR_RECORD = 3073

# --- mutations ------------------------------------------------------------------------------


def _position(special: list[int]):
    """A byte offset: mostly a structurally interesting one, sometimes anywhere."""
    return st.one_of(st.sampled_from(special), st.integers(0, 1 << 16))


def _mutations(special: list[int], tokens: list[bytes]):
    payload = st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from(tokens))
    op = st.one_of(
        st.tuples(st.just("flip"), _position(special), st.integers(0, 255)),
        st.tuples(st.just("insert"), _position(special), payload),
        st.tuples(st.just("delete"), _position(special), st.integers(1, 64)),
        st.tuples(st.just("duplicate"), _position(special), st.integers(1, 64)),
        st.tuples(st.just("truncate"), _position(special), st.just(0)),
    )
    return st.lists(op, min_size=1, max_size=4)


def mutate(content: bytes, ops) -> bytes:
    out = bytearray(content)
    for kind, position, arg in ops:
        at = position % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] = arg
        elif kind == "insert":
            out[at:at] = arg
        elif kind == "delete":
            del out[at : at + arg]
        elif kind == "duplicate":
            out[at:at] = out[at : at + arg]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


@contextlib.contextmanager
def watchdog(seconds: int = HANG_SECONDS):
    """Fail (``TimeoutError``) instead of hanging when the block runs too long."""

    def alarm(signum, frame):
        raise TimeoutError(f"a load took more than {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def loads_or_value_error(load, *args, **kwargs):
    """``load(...)``; ``None`` when it raised ``ValueError``. Anything else propagates."""
    try:
        with watchdog():
            return load(*args, **kwargs)
    except ValueError:
        return None


def check_dataset(ds: data.Dataset | None) -> None:
    if ds is None:
        return
    for split in ("train", "val", "test"):
        X, y = getattr(ds, f"X_{split}"), getattr(ds, f"y_{split}")
        assert X.dtype == np.float32 and X.shape == (len(y), ds.n_features)
        assert np.isfinite(X.data if ds.sparse else X).all()
        assert y.dtype == np.int32 and (y.size == 0 or 0 <= y.min() <= y.max() < ds.n_classes)


# --- svmlight -------------------------------------------------------------------------------

SVMLIGHT = b"""# a valid file
1 1:0.5 3:-2 # comment
-1 qid:3 2:1e-1 4:4
2.5 1:1 2:2 3:3 4:4
1 4:-7.25
-1 1:.5 2:3.
2.5 2:1
1 1:1e3 3:0
-1 2:-1
2.5 1:0 4:1
1 3:2
"""
_SVMLIGHT_SPECIAL = [i for i, b in enumerate(SVMLIGHT) if b in b" :\n#"]
_SVMLIGHT_TOKENS = [
    b":", b" ", b"\n", b"\r", b"\t", b"#", b"0", b"-", b"+", b".", b"e", b"nan", b"inf",
    b"1e39", b"qid:1", b"0:1", b"99999:1", b"9" * 19, b"\xff", b"\x00", b"3:4 2:1",
]  # fmt: skip


@FUZZ
@given(_mutations(_SVMLIGHT_SPECIAL, _SVMLIGHT_TOKENS), st.booleans())
def test_fuzz_svmlight_mutated(ops, as_test_file):
    with (
        tempfile.TemporaryDirectory() as directory,
        mock.patch.object(formats, "MAX_DENSE", 1 << 16),
    ):
        valid, mutated = Path(directory) / "valid.svm", Path(directory) / "mutated.svm"
        valid.write_bytes(SVMLIGHT)
        mutated.write_bytes(mutate(SVMLIGHT, ops))
        if as_test_file:  # the mutation is in the test file, checked against the train file
            ds = loads_or_value_error(data.load_svmlight, valid, test_path=mutated)
        else:
            ds = loads_or_value_error(data.load_svmlight, mutated)
        check_dataset(ds)


# --- MNIST IDX (plain and gzip) ------------------------------------------------------------


def _idx(magic: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">{1 + len(shape)}I", magic, *shape) + payload


MNIST = {
    "train-images-idx3-ubyte": _idx(2051, (6, 3, 2), bytes(range(36))),
    "train-labels-idx1-ubyte": _idx(2049, (6,), bytes([0, 1, 2, 3, 1, 0])),
    "t10k-images-idx3-ubyte": _idx(2051, (3, 3, 2), bytes(range(100, 118))),
    "t10k-labels-idx1-ubyte": _idx(2049, (3,), bytes([9, 0, 1])),
}
_IDX_SPECIAL = list(range(20))  # magic and sizes


@FUZZ
@given(
    st.sampled_from(sorted(MNIST)),
    st.sampled_from(["plain", "gzip-then-mutate", "mutate-then-gzip"]),
    _mutations(_IDX_SPECIAL, [b"\x00", b"\xff" * 4, b"\x08\x03", b"\x08\x01", b"\x1f\x8b"]),
)
def test_fuzz_mnist_mutated(name, form, ops):
    with tempfile.TemporaryDirectory() as directory:
        for file, content in MNIST.items():
            path = Path(directory) / file
            if form == "plain":
                path.write_bytes(mutate(content, ops) if file == name else content)
            elif file != name:
                Path(f"{path}.gz").write_bytes(gzip.compress(content))
            elif form == "gzip-then-mutate":
                Path(f"{path}.gz").write_bytes(mutate(gzip.compress(content), ops))
            else:
                Path(f"{path}.gz").write_bytes(gzip.compress(mutate(content, ops)))
        check_dataset(loads_or_value_error(data.load_mnist, directory))


# --- CIFAR-10 binary ------------------------------------------------------------------------

_CIFAR_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def _cifar_file(index: int) -> bytes:
    records = [bytes([(index + r) % 10]) + bytes([r]) * 3072 for r in range(2)]
    return b"".join(records)


_CIFAR_SPECIAL = [0, 1, CIFAR_RECORD - 1, CIFAR_RECORD, CIFAR_RECORD + 1, 2 * CIFAR_RECORD]
_META = b"\n".join(b"class%d" % i for i in range(10)) + b"\n"


@FUZZ
@given(
    st.sampled_from([*_CIFAR_FILES, "batches.meta.txt"]),
    _mutations(_CIFAR_SPECIAL, [b"\x0a", b"\xff", bytes(3073), b"\n", b"\xc3"]),
)
def test_fuzz_cifar10_mutated(name, ops):
    with tempfile.TemporaryDirectory() as directory:
        for i, file in enumerate(_CIFAR_FILES):
            content = _cifar_file(i)
            Path(directory, file).write_bytes(mutate(content, ops) if file == name else content)
        meta = mutate(_META, ops) if name == "batches.meta.txt" else _META
        Path(directory, "batches.meta.txt").write_bytes(meta)
        check_dataset(loads_or_value_error(data.load_cifar10, directory))


# --- checkpoints ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    params = {"W": jnp.arange(6.0).reshape(3, 2), "b": jnp.ones(2)}
    optimizer = optax.adam(0.1)
    state = checkpoint.TrainState(params, optimizer.init(params), jax.random.key(0), 2, {})
    state = state._replace(history={"epoch": np.array([1, 2]), "objective": np.array([2.0, 1.0])})
    path = tmp_path_factory.mktemp("ckpt") / "valid.npz"
    checkpoint.save(path, state, options={"reg": 0.1})
    template = state._replace(epoch=0, history={})
    return path.read_bytes(), template


def _zip_offsets(content: bytes) -> list[int]:
    """Where the zip's local headers, central directory and end record start."""
    marks = (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06")
    return sorted({i + k for m in marks for i in _find_all(content, m) for k in (0, 8, 18, 26)})


def _find_all(content: bytes, needle: bytes) -> list[int]:
    out, at = [], content.find(needle)
    while at >= 0:
        out.append(at)
        at = content.find(needle, at + 1)
    return out


@FUZZ
@given(ops=st.data())
def test_fuzz_load_checkpoint_mutated(checkpoint_file, ops):
    valid, template = checkpoint_file
    special = _zip_offsets(valid)
    ops = ops.draw(_mutations(special, [b"PK", b"\x00" * 4, b"\xff" * 4, b"{", b"}"]))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ckpt.npz"
        path.write_bytes(mutate(valid, ops))
        state = loads_or_value_error(checkpoint.load, path, template)
    if state is not None:
        assert isinstance(state, checkpoint.TrainState)
        assert jax.tree.structure(state.params) == jax.tree.structure(template.params)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_load_checkpoint_random_bytes(content):
    params = {"W": jnp.zeros((2, 2))}
    template = checkpoint.TrainState(params, (), jax.random.key(0), 0, {})
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ckpt.npz"
        path.write_bytes(content)
        assert loads_or_value_error(checkpoint.load, path, template) is None
