"""Fault injection: poisoned minibatches mid-training, checkpoint writes that fail or are
killed midway (and the temporary files they leave, which a later save removes), corrupt
checkpoint files.

Already covered in tests/test_train.py (not repeated here): a NaN *update* from a faulty
optimizer (``test_divergence_names_the_epoch_and_keeps_the_last_finite_state``), a
``np.savez`` that raises ``OSError`` after writing half a file
(``test_a_failed_write_leaves_the_previous_checkpoint``), and an interrupted-then-resumed
run being bit-identical (``test_interrupted_and_resumed_run_is_bit_identical``). The same
faults under a device mesh run in the 8-device subprocess of tests/test_sharding.py, which
imports :func:`poisoned_batches` from here.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svmjax import _files, checkpoint, linear, optim, train

N, D, C, BATCH = 40, 5, 3, 10  # 4 minibatches per epoch
POISON_EPOCH = 3


def blobs(n=N, d=D, c=C, seed=0):
    """Separable-ish float32 blobs whose first feature is a unique example id (0.01 * i)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n).astype(np.int32)
    X = (3 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d))).astype(np.float32)
    X[:, 0] = 0.01 * np.arange(n, dtype=np.float32)
    return X, y


def batch_starts(key: jax.Array, epoch: int, n: int, batch_size: int) -> list[int]:
    """Examples in the first slot of each minibatch of ``epoch`` (the documented order)."""
    words = np.asarray(jax.random.key_data(key)).ravel()
    order = np.random.default_rng([*words, epoch]).permutation(n)
    return order[::batch_size].tolist()


def poison_marker(X: np.ndarray, key: jax.Array, epoch: int, batch_size: int) -> float:
    """The id ``X[i, 0]`` of an example that starts a minibatch in ``epoch`` and in no
    earlier epoch, so a batch keyed on it is poisoned first in ``epoch``."""
    n = len(X)
    earlier = {i for e in range(1, epoch) for i in batch_starts(key, e, n, batch_size)}
    fresh = [i for i in batch_starts(key, epoch, n, batch_size) if i not in earlier]
    assert fresh, "no example starts a batch first in this epoch; pick another key"
    return float(X[fresh[0], 0])


@contextlib.contextmanager
def poisoned_batches(marker: float, mode: str):
    """Inside the block, every minibatch whose first example has ``X[0, 0] == marker`` is
    poisoned before the objective sees it: ``"nan"`` / ``"inf"`` replace its features by
    NaN / +inf, ``"overflow"`` multiplies them by 1e30 (finite numbers whose squared loss
    overflows to inf). This is the only change: ``svmjax.linear.objective`` is wrapped, and
    the compilation caches are cleared on entry and exit so that nothing traced with the
    poison is ever reused by another run."""
    objective = linear.objective

    def poisoned(params, X, y, **kwargs):
        bad = {
            "nan": jnp.full_like(X, jnp.nan),
            "inf": jnp.full_like(X, jnp.inf),
            "overflow": X * 1e30,
        }[mode]
        return objective(params, jnp.where(X[0, 0] == marker, bad, X), y, **kwargs)

    jax.clear_caches()
    linear.objective = poisoned
    try:
        yield
    finally:
        linear.objective = objective
        jax.clear_caches()


def _init():
    return linear.init(jax.random.key(1), D, C)


def _assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _template(optimizer=optim.DEFAULT_OPTIMIZER):
    return checkpoint.TrainState(_init(), optimizer.init(_init()), jax.random.key(0), 0, {})


# --- NaN / inf mid-training ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nan", "inf", "overflow"])
def test_poisoned_batch_names_the_epoch_keeps_finite_params_and_the_checkpoint(tmp_path, mode):
    X, y = blobs()
    key = jax.random.key(0)
    path = tmp_path / "ckpt.npz"
    run = dict(key=key, batch_size=BATCH, squared=mode == "overflow")
    before, before_history = train.fit(_init(), X, y, epochs=POISON_EPOCH - 1, **run)
    marker = poison_marker(X, key, POISON_EPOCH, BATCH)
    with poisoned_batches(marker, mode), pytest.raises(train.TrainingDiverged) as caught:
        train.fit(_init(), X, y, epochs=6, checkpoint=path, **run)
    error = caught.value
    assert type(error) is train.TrainingDiverged and isinstance(error, FloatingPointError)
    assert f"training diverged in epoch {POISON_EPOCH}" in str(error)
    assert error.epoch == POISON_EPOCH
    _assert_trees_equal(error.params, before)  # the last finite params, bit for bit
    _assert_trees_equal(error.history, before_history)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(error.params))
    saved = checkpoint.load(path, _template())  # the last checkpoint is intact
    assert saved.epoch == POISON_EPOCH - 1
    _assert_trees_equal(saved.params, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]
    # With the poison gone (the caches were cleared), resuming from that checkpoint ends
    # bit-identical to a run that never met it.
    resumed, _ = train.fit(_init(), X, y, epochs=4, resume_from=path, **run)
    clean, _ = train.fit(_init(), X, y, epochs=4, **run)
    _assert_trees_equal(resumed, clean)


def test_poison_in_the_validation_set_is_refused_before_training():
    X, y = blobs()
    X_val = X[:5].copy()
    X_val[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"X_val is not finite: X_val\[\(3, 1\)\] = inf"):
        train.fit(_init(), X, y, key=jax.random.key(0), validation=(X_val, y[:5]))


# --- checkpoint writes that fail midway ------------------------------------------------------


def _fail_fsync(monkeypatch):
    def fsync(fd):
        raise OSError("fsync: input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    return OSError, "input/output error"


def _fail_replace(monkeypatch):
    def replace(src, dst):
        raise OSError("rename: read-only file system")

    monkeypatch.setattr(os, "replace", replace)
    return OSError, "read-only file system"


def _interrupt_savez(monkeypatch):
    def savez(file, **arrays):
        file.write(b"PK\x03\x04 a third of a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez)
    return KeyboardInterrupt, None


@pytest.mark.parametrize("fault", [_fail_fsync, _fail_replace, _interrupt_savez])
def test_a_write_failing_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch, fault):
    X, y = blobs()
    path = tmp_path / "ckpt.npz"
    run = dict(key=jax.random.key(0), batch_size=BATCH, checkpoint=path)
    first, _ = train.fit(_init(), X, y, epochs=1, **run)
    error, message = fault(monkeypatch)
    with pytest.raises(error, match=message) as caught:
        train.fit(_init(), X, y, epochs=2, resume_from=path, **run)
    assert type(caught.value) is error
    monkeypatch.undo()
    state = checkpoint.load(path, _template())
    assert state.epoch == 1
    _assert_trees_equal(state.params, first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]  # temporary file removed


_KILLED_WRITER = """
import os, sys
import jax, numpy as np
from svmjax import checkpoint, linear, optim, train
sys.path.insert(0, {tests!r})
from test_faults import BATCH, C, D, blobs

savez = np.savez
def killed_at_epoch_2(file, **arrays):
    if int(__import__("json").loads(str(arrays["manifest"]))["epoch"]) == 2:
        file.write(b"PK\\x03\\x04 half a zip")
        file.flush()
        os._exit(17)  # killed mid-write: no exception handler, no cleanup
    savez(file, **arrays)
np.savez = killed_at_epoch_2
X, y = blobs()
train.fit(linear.init(jax.random.key(1), D, C), X, y, key=jax.random.key(0), batch_size=BATCH,
          optimizer=optim.make_optimizer("momentum", 0.05), epochs=4, checkpoint={path!r})
"""


def test_a_writer_killed_midway_leaves_the_previous_checkpoint_and_resume_is_exact(tmp_path):
    path = tmp_path / "ckpt.npz"
    script = _KILLED_WRITER.format(tests=os.path.dirname(__file__), path=str(path))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 17, result.stderr
    stray = sorted(p.name for p in tmp_path.iterdir() if p.name != "ckpt.npz")
    assert len(stray) == 1 and stray[0].endswith(".tmp")  # what a kill leaves; never read
    optimizer = optim.make_optimizer("momentum", 0.05)
    assert checkpoint.load(path, _template(optimizer)).epoch == 1
    X, y = blobs()
    run = dict(key=jax.random.key(0), batch_size=BATCH, optimizer=optimizer, epochs=4)
    resumed, resumed_history = train.fit(_init(), X, y, resume_from=path, **run)
    clean, clean_history = train.fit(_init(), X, y, **run)
    _assert_trees_equal(resumed, clean)  # across processes, bit for bit
    _assert_trees_equal(resumed_history, clean_history)


_SIGKILLED_WRITER = """
import sys, time
import jax, numpy as np
from svmjax import checkpoint

def stalled(file, **arrays):
    file.write(b"PK\\x03\\x04 part of a zip")
    file.flush()
    print("writing", flush=True)
    time.sleep(300)  # until killed

np.savez = stalled
state = checkpoint.TrainState({{"w": np.ones(3, np.float32)}}, (), jax.random.key(0), 1, {{}})
checkpoint.save({path!r}, state)
"""


def test_a_save_removes_its_own_old_temporary_files_and_nothing_else(tmp_path):
    path = tmp_path / "ckpt.npz"
    writer = subprocess.Popen(
        [sys.executable, "-c", _SIGKILLED_WRITER.format(path=str(path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    finally:
        writer.kill()  # SIGKILL on POSIX: mid-save, nothing cleaned up
        writer.wait(timeout=60)
        if writer.stdout is not None:
            writer.stdout.close()
    assert writer.returncode == (-signal.SIGKILL if hasattr(signal, "SIGKILL") else 1)
    (killed,) = tmp_path.iterdir()
    assert re.fullmatch(r"ckpt\.npz\.[a-z0-9_]{8}\.tmp", killed.name)
    old, young = _files.STALE_SECONDS + 60, _files.STALE_SECONDS - 60
    live = tmp_path / "ckpt.npz.live0001.tmp"  # a concurrent writer's, written a while ago
    foreign = [
        tmp_path / "other.npz.abcd1234.tmp",  # another checkpoint's
        tmp_path / "ckpt.npz.abcd1234.tmp.bak",
        tmp_path / "xckpt.npz.abcd1234.tmp",
        tmp_path / "ckpt.npz.notes",
    ]
    for file in [live, *foreign]:
        file.write_bytes(b"not this save's to remove")
    (tmp_path / "ckpt.npz.dir12345.tmp").mkdir()  # a folder, whatever its name
    now = time.time()
    for file, age in [(killed, old), (live, young), *[(f, old) for f in foreign]]:
        os.utime(file, (now - age, now - age))
    os.utime(tmp_path / "ckpt.npz.dir12345.tmp", (now - old, now - old))
    left = {p.name for p in tmp_path.iterdir()} - {killed.name}

    template = _template()
    checkpoint.save(path, template._replace(epoch=2))
    assert {p.name for p in tmp_path.iterdir()} == left | {"ckpt.npz"}
    assert checkpoint.load(path, template).epoch == 2
    os.utime(live, (now - old, now - old))  # the same file once it is old: a dead writer's
    checkpoint.save(path, template._replace(epoch=3))
    assert {p.name for p in tmp_path.iterdir()} == left - {live.name} | {"ckpt.npz"}


# --- corrupt checkpoint files ----------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 1, 30, "half", -1])
def test_a_truncated_checkpoint_is_a_value_error(tmp_path, cut):
    X, y = blobs()
    path = tmp_path / "ckpt.npz"
    run = dict(key=jax.random.key(0), batch_size=BATCH)
    train.fit(_init(), X, y, epochs=1, checkpoint=path, **run)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2 if cut == "half" else cut])
    with pytest.raises(ValueError, match=r"ckpt.npz cannot be read \(truncated or not a ch"):
        checkpoint.load(path, _template())
    with pytest.raises(ValueError, match="cannot be read"):
        train.fit(_init(), X, y, epochs=2, resume_from=path, **run)


def test_a_checkpoint_missing_an_array_is_a_value_error(tmp_path):
    X, y = blobs()
    path = tmp_path / "ckpt.npz"
    train.fit(_init(), X, y, key=jax.random.key(0), epochs=1, batch_size=BATCH, checkpoint=path)
    with np.load(path) as f:
        arrays = {name: f[name] for name in f.files if name != "leaf_1"}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="ckpt.npz is incomplete: no leaf_1"):
        checkpoint.load(path, _template())


def test_a_missing_checkpoint_is_file_not_found(tmp_path):
    X, y = blobs()
    with pytest.raises(FileNotFoundError):
        train.fit(_init(), X, y, key=jax.random.key(0), resume_from=tmp_path / "none.npz")
