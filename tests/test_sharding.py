"""Multi-device training with JAX's own SPMD (``jax.sharding``): 8 virtual CPU devices, and
2 processes x 4 devices joined by ``jax.distributed``.

XLA fixes the device count when JAX starts, so the multi-device checks run in child
processes started with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``:
``python tests/test_sharding.py --out DIR`` runs every 8-device check in one process and
writes ``report.json`` (the measured differences), which :func:`test_eight_devices` asserts
on; ``--process-id I --num-processes 2 --port P`` runs the multi-process part. Eight virtual
devices on a 2-core machine prove layout and correctness, not speed.

The pytest process itself has one device; the tests at the bottom cover
:mod:`svmjax.sharding` there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F32_TOL, TRAIN_TOL, assert_close, rel_error
from jax.sharding import NamedSharding, PartitionSpec

from svmjax import analytic, checkpoint, grid, linear, optim, registry, sharding, train

DEVICES = 8
# Sharded vs one device, float32, max-norm relative error (conftest.rel_error): the
# objective and gradient of one batch within F32_TOL (a different summation order); fit
# params after 3 epochs (SGD, momentum, Adam on the squared hinge), fit_grid params and
# 2 processes x 4 devices within TRAIN_TOL. Measured: 1e-7..3e-7, and 0 for the grid.
SUBPROCESS_TIMEOUT = 240

_FIT_CASES = [  # (optimizer, loss, squared)
    ("sgd", "weston_watkins", False),
    ("momentum", "crammer_singer", False),
    ("adam", "weston_watkins", True),
    ("sgd", "one_vs_rest", False),
]


def _problem(n=203, d=12, c=5, seed=0):
    """float32 X [n, d], int32 y [n], from a few Gaussian blobs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n).astype(np.int32)
    X = 0.5 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d))  # overlapping
    return X.astype(np.float32), y


_rel = rel_error  # max-norm relative difference over the leaves of two pytrees


def _equal(a, b) -> bool:
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _replicated_on_all(tree, mesh) -> bool:
    return all(
        leaf.sharding.is_fully_replicated and leaf.sharding.device_set == set(mesh.devices.flat)
        for leaf in jax.tree.leaves(tree)
    )


def _collectives(hlo: str) -> dict[str, int]:
    names = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
    return {name: len(re.findall(rf"= [^=]*\b{name}(-start)?\(", hlo)) for name in names}


def _fit(params, X, y, case, **kwargs):
    optimizer, loss, squared = case
    return train.fit(
        params,
        X,
        y,
        key=jax.random.key(2),
        loss=loss,
        squared=squared,
        optimizer=optim.make_optimizer(optimizer, 0.05),
        reg=1e-3,
        **({"epochs": 3, "batch_size": 30} | kwargs),  # 30: padded to 32 slots on 8 devices
    )


# --- the 8-device checks (child process) -----------------------------------------------------


def _check_objective(mesh, report):
    """Sharded analytic loss and gradient == unsharded, every loss, plain and squared."""
    X, y = _problem(n=400, d=20, c=7)
    rng = np.random.default_rng(1)
    weight = rng.uniform(0.5, 2.0, len(y)).astype(np.float32)
    class_weights = rng.uniform(0.5, 2.0, 7).astype(np.float32)
    params = linear.init(jax.random.key(0), 20, 7, scale=0.5)
    rows = NamedSharding(mesh, sharding.batch_spec(mesh, 1))
    Xs = jax.device_put(X, NamedSharding(mesh, sharding.batch_spec(mesh, 2)))
    ys, ws = jax.device_put(y, rows), jax.device_put(weight, rows)
    ps = sharding.put(params, mesh)
    variants = [("analytic", loss, False) for loss in registry.names()]
    variants += [("analytic", "weston_watkins", True), ("autodiff", "crammer_singer", True)]
    worst = 0.0
    for grad, loss, squared in variants:
        options = dict(loss=loss, squared=squared, grad=grad, reg=1e-3, margin=1.5)
        options |= dict(class_weights=class_weights)

        def objective(p, X, y, w, options=options):
            return linear.objective(p, X, y, sample_weight=w, **options)

        f = jax.jit(jax.value_and_grad(objective))
        want, got = f(params, X, y, weight), f(ps, Xs, ys, ws)
        assert _replicated_on_all(got, mesh), (grad, loss, squared)
        worst = max(worst, _rel(got, want))
    report["objective_rel_error"] = worst
    # The per-example analytic losses and their score gradients are row-wise: the same
    # numbers (bit-identical here, but another program, so not promised on every CPU).
    scores = np.asarray(linear.scores(params, X))
    scores_s = jax.device_put(scores, Xs.sharding)
    exact, worst = True, 0.0
    for fn in (analytic.weston_watkins, analytic.crammer_singer, analytic.one_vs_rest):

        def both(s, y, fn=fn):
            return fn(s, y), jax.grad(lambda s: jnp.sum(fn(s, y)))(s)

        both = jax.jit(both)
        got, want = both(scores_s, ys), both(scores, y)
        exact &= _equal(got, want)
        worst = max(worst, _rel(got, want))
    report["analytic_per_example_bit_identical"] = bool(exact)
    report["analytic_per_example_rel_error"] = worst
    # Layout: the compiled gradient all-reduces [C, D]-sized partial sums, gathers nothing.
    f = jax.jit(jax.grad(lambda p, X, y: linear.objective(p, X, y)))
    report["objective_collectives"] = _collectives(f.lower(ps, Xs, ys).compile().as_text())


def _check_fit(mesh, report):
    """Data-parallel fit == one-device fit, four optimizer/loss cases, uneven N and batch."""
    X, y = _problem()
    X_val, y_val = _problem(n=50, seed=1)
    params = linear.init(jax.random.key(1), 12, 5)
    errors = {}
    for case in _FIT_CASES:
        want, want_history = _fit(params, X, y, case, validation=(X_val, y_val))
        got, got_history = _fit(params, X, y, case, validation=(X_val, y_val), mesh=mesh)
        assert _replicated_on_all(got, mesh), case
        errors["/".join(map(str, case))] = _rel(got, want)
        assert_close(got_history["objective"], want_history["objective"], TRAIN_TOL)
        for name in ("train_accuracy", "val_accuracy"):
            np.testing.assert_allclose(got_history[name], want_history[name], atol=1.5 / 50)
    report["fit_rel_error"] = errors
    # A 2-D mesh is used as one flat data axis: the same numbers as the 1-D mesh. This one
    # comes from jax.make_mesh, whose axes are Explicit by default (fit makes them Auto).
    mesh_2d = jax.make_mesh((4, 2), ("a", "b"))
    flat, _ = _fit(params, X, y, _FIT_CASES[0], mesh=mesh)
    two_d, _ = _fit(params, X, y, _FIT_CASES[0], mesh=mesh_2d)
    report["fit_2d_mesh_rel_error"] = _rel(two_d, flat)
    # Same key, same mesh: bit-identical; and a second run compiles nothing.
    again, _ = _fit(params, X, y, _FIT_CASES[0], mesh=mesh)
    report["fit_same_mesh_bit_identical"] = _equal(again, flat)
    traces = []
    objective = linear.objective
    linear.objective = lambda *a, **k: traces.append(1) or objective(*a, **k)
    try:
        X2, y2 = _problem(seed=7)
        _fit(linear.init(jax.random.key(5), 12, 5), X2, y2, _FIT_CASES[0], mesh=mesh, epochs=2)
    finally:
        linear.objective = objective
    report["fit_second_run_traces"] = len(traces)
    # A global array sharded over rows is gathered, then takes the same path.
    X_glob = _problem(n=200)[0]
    Xg = jax.device_put(X_glob, NamedSharding(mesh, sharding.batch_spec(mesh, 2)))
    a, _ = _fit(params, X_glob, y[:200], _FIT_CASES[0], mesh=mesh)
    b, _ = _fit(params, Xg, y[:200], _FIT_CASES[0], mesh=mesh)
    report["fit_global_array_input_bit_identical"] = _equal(a, b)


def _check_grid(mesh, report):
    """A 16-config grid over 8 devices == the unsharded grid; 12 configs (padded) too."""
    X, y = _problem()
    X_val, y_val = _problem(n=50, seed=1)
    params = linear.init(jax.random.key(1), 12, 5)
    grids = {
        16: dict(learning_rates=(0.01, 0.03, 0.1, 0.3)),
        12: dict(learning_rates=(0.01, 0.1, 0.3)),
    }
    for k, axes in grids.items():
        run = dict(key=jax.random.key(3), regs=(0.0, 1e-3), seeds=(0, 1), epochs=3, batch_size=32)
        run |= dict(validation=(X_val, y_val), optimizer="momentum", **axes)
        want = grid.fit_grid(params, X, y, **run)
        got = grid.fit_grid(params, X, y, mesh=mesh, **run)
        assert len(got.configs) == k and got.params["W"].shape == (k, 12, 5)
        assert got.configs == want.configs and got.best == want.best
        assert _replicated_on_all(got.params, mesh)
        assert_close(got.history["objective"], want.history["objective"], TRAIN_TOL)
        report[f"grid_{k}_rel_error"] = _rel(got.params, want.params)
    # Layout of one grid epoch: configurations split over the devices, no collectives.
    report["grid_epoch_collectives"] = _grid_collectives(mesh, params, X, y)


def _grid_collectives(mesh, params, X, y):
    k = 16
    tx = optim.make_optimizer("sgd", 0.1)

    def split(tree):
        return jax.tree.map(
            lambda x: sharding.put(x, mesh, sharding.batch_spec(mesh, x.ndim)), tree
        )

    stacked = split(jax.tree.map(lambda p: np.broadcast_to(p, (k, *p.shape)), params))
    opt_state = split(jax.tree.map(lambda *s: np.stack(s), *[tx.init(params)] * k))
    orders = split(np.stack([train.minibatches([i], 1, len(y), 32) for i in range(k)]))
    data = train.prepare_data(params, X, y, None, mesh)
    consts = sharding.put(train.prepare_consts(params, 1.0, None), mesh)
    args = (stacked, opt_state, orders, split(np.zeros(k, np.float32)), split(np.ones(k, bool)))
    static = train.Static(tx.update, "weston_watkins", "analytic", False, (), None)
    lowered = grid.grid_epoch.lower(*args, data, consts, static=static, mesh=mesh)
    return _collectives(lowered.compile().as_text())


def _check_resume(mesh, report, tmp):
    """Interrupted and resumed under the mesh == uninterrupted under the mesh, bit for bit."""
    from unittest import mock

    X, y = _problem()
    X_val, y_val = _problem(n=50, seed=1)
    params = linear.init(jax.random.key(1), 12, 5)
    path = Path(tmp) / "mesh.npz"
    run = dict(epochs=5, validation=(X_val, y_val), mesh=mesh)
    case = ("adam", "weston_watkins", True)
    want, want_history = _fit(params, X, y, case, **run)
    save = checkpoint.save

    def save_then_crash(path, state, **kwargs):
        save(path, state, **kwargs)
        if state.epoch == 2:
            raise KeyboardInterrupt

    with mock.patch.object(checkpoint, "save", save_then_crash):
        try:
            _fit(params, X, y, case, checkpoint=path, **run)
        except KeyboardInterrupt:
            pass
    got, got_history = _fit(params, X, y, case, resume_from=path, **run)
    report["resume_under_mesh_bit_identical"] = _equal(got, want) and _equal(
        got_history, want_history
    )
    # The checkpoint is plain arrays: it resumes without a mesh too (to float rounding).
    single, _ = _fit(params, X, y, case, resume_from=path, **(run | {"mesh": None}))
    report["resume_without_mesh_rel_error"] = _rel(single, want)


def _check_divergence(mesh, report, tmp):
    """A poisoned batch under the mesh: the epoch named, last finite params, checkpoint kept."""
    from test_faults import BATCH, C, D, blobs, poison_marker, poisoned_batches

    X, y = blobs()
    params = linear.init(jax.random.key(1), D, C)
    path = Path(tmp) / "diverged.npz"
    run = dict(key=jax.random.key(0), batch_size=BATCH, mesh=mesh)
    before, _ = train.fit(params, X, y, epochs=2, **run)
    marker = poison_marker(X, run["key"], 3, BATCH)
    with poisoned_batches(marker, "nan"):
        try:
            train.fit(params, X, y, epochs=5, checkpoint=path, **run)
            raise AssertionError("a poisoned batch did not stop training")
        except train.TrainingDiverged as error:
            assert "epoch 3" in str(error) and error.epoch == 3
            kept = _equal(error.params, before)
    template = checkpoint.TrainState(
        params, optim.DEFAULT_OPTIMIZER.init(params), run["key"], 0, {}
    )
    saved = checkpoint.load(path, template)
    report["divergence_under_mesh"] = bool(
        kept and saved.epoch == 2 and _equal(saved.params, before)
    )


def _check_demo(report, tmp):
    """Smoke test of experiments/sharding_demo.py on a shrunk config, on the 8 devices."""
    path = Path(__file__).resolve().parent.parent / "experiments" / "sharding_demo.py"
    sys.path.insert(0, str(path.parent))  # the script imports its sibling `common`
    spec = importlib.util.spec_from_file_location("sharding_demo", path)
    demo = importlib.util.module_from_spec(spec)
    sys.modules["sharding_demo"] = demo  # dataclasses look their module up
    spec.loader.exec_module(demo)
    config = demo.Config(
        out=str(Path(tmp) / "demo"), dataset="blobs", epochs=1, grid_learning_rates=(0.1,)
    )
    results = demo.main(config)
    saved = json.loads((Path(tmp) / "demo" / "results.json").read_text())
    assert saved["step_layout"] == results["step_layout"]
    report["demo"] = {
        "step_collectives": sorted(results["step_collectives"]),
        "grid_collectives": sorted(results["grid_collectives"]),
        "fit_rel_error": results["fit_rel_error_vs_one_device"],
        "batch_split": any("batch X_b" in line and "d7:" in line for line in saved["step_layout"]),
    }


def _eight_devices(out: Path) -> None:
    assert jax.device_count() == DEVICES, jax.devices()
    mesh = sharding.data_mesh()
    report, times = {"devices": jax.device_count(), "jax": jax.__version__}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, check in [
            ("objective", lambda: _check_objective(mesh, report)),
            ("fit", lambda: _check_fit(mesh, report)),
            ("grid", lambda: _check_grid(mesh, report)),
            ("resume", lambda: _check_resume(mesh, report, tmp)),
            ("divergence", lambda: _check_divergence(mesh, report, tmp)),
            ("demo", lambda: _check_demo(report, tmp)),
        ]:
            start = time.perf_counter()
            check()
            times[name] = round(time.perf_counter() - start, 2)
            print(name, times[name], flush=True)
    report["seconds"] = times
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


# --- the multi-process part (two child processes) ---------------------------------------------


def _hosts_case():
    X, y = _problem(n=200)  # 200 rows: 100 per process, 25 per device
    return X, y, linear.init(jax.random.key(1), 12, 5)


def _two_processes(out: Path, process_id: int, num_processes: int, port: int) -> None:
    try:  # CPU collectives across processes (gloo ships with jaxlib)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:
        pass
    jax.distributed.initialize(f"localhost:{port}", num_processes, process_id)
    mesh = sharding.data_mesh()  # every device of every process
    X, y, params = _hosts_case()
    case = _FIT_CASES[0]
    # 1. Every process passes the same host data.
    a, history = _fit(params, X, y, case, mesh=mesh, checkpoint=out / "hosts.npz")
    # 2. Per-process loading: each process holds only its rows, assembled into one array.
    rows = NamedSharding(mesh, sharding.batch_spec(mesh, 1))
    per = len(y) // jax.process_count()
    mine = slice(jax.process_index() * per, (jax.process_index() + 1) * per)
    X_global = jax.make_array_from_process_local_data(
        NamedSharding(mesh, sharding.batch_spec(mesh, 2)), X[mine]
    )
    y_global = jax.make_array_from_process_local_data(rows, y[mine])
    b, _ = _fit(params, X_global, y_global, case, mesh=mesh)
    sweep = grid.fit_grid(
        params, X, y, key=jax.random.key(3), learning_rates=(0.01, 0.1), regs=(0.0, 1e-3),
        seeds=(0, 1), epochs=2, batch_size=32, mesh=mesh,
    )  # fmt: skip
    np.savez(
        out / f"process{process_id}.npz",
        W=np.asarray(a["W"]), b=np.asarray(a["b"]), W_local=np.asarray(b["W"]),
        objective=history["objective"], grid_W=np.asarray(sweep.params["W"]),
        devices=np.array([jax.device_count(), jax.local_device_count(), jax.process_count()]),
    )  # fmt: skip
    jax.distributed.shutdown()


# --- pytest ---------------------------------------------------------------------------------


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return env


def test_eight_devices(tmp_path):
    result = subprocess.run(
        [sys.executable, __file__, "--out", str(tmp_path)],
        env=_env(DEVICES),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    print(json.dumps(report, indent=2))  # the measured tolerances, with pytest -s
    assert report["objective_rel_error"] <= F32_TOL
    assert report["analytic_per_example_rel_error"] <= F32_TOL
    assert report["objective_collectives"]["all-reduce"] >= 1
    assert report["objective_collectives"]["all-gather"] == 0
    assert max(report["fit_rel_error"].values()) <= TRAIN_TOL
    assert report["fit_2d_mesh_rel_error"] <= TRAIN_TOL
    assert report["fit_same_mesh_bit_identical"]
    assert report["fit_second_run_traces"] == 0
    assert report["fit_global_array_input_bit_identical"]
    assert report["grid_16_rel_error"] <= TRAIN_TOL and report["grid_12_rel_error"] <= TRAIN_TOL
    assert sum(report["grid_epoch_collectives"].values()) == 0
    assert report["resume_under_mesh_bit_identical"]
    assert report["resume_without_mesh_rel_error"] <= TRAIN_TOL
    assert report["divergence_under_mesh"]
    assert report["demo"]["step_collectives"] == ["all-reduce"]
    assert report["demo"]["grid_collectives"] == []
    assert report["demo"]["fit_rel_error"] <= TRAIN_TOL and report["demo"]["batch_split"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_device(tmp_path):
    port, n = _free_port(), 2
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--out", str(tmp_path), "--process-id", str(i)]
            + ["--num-processes", str(n), "--port", str(port)],
            env=_env(DEVICES // n),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(n)
    ]
    try:
        logs = [p.communicate(timeout=SUBPROCESS_TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * n, "\n".join(logs)[-5000:]
    results = [np.load(tmp_path / f"process{i}.npz") for i in range(n)]
    assert results[0]["devices"].tolist() == [DEVICES, DEVICES // n, n]
    for name in results[0].files:  # every process holds the same replicated results
        np.testing.assert_array_equal(results[0][name], results[1][name])
    np.testing.assert_array_equal(results[0]["W"], results[0]["W_local"])  # per-process data
    X, y, params = _hosts_case()
    want, history = _fit(params, X, y, _FIT_CASES[0])
    error = _rel({"W": results[0]["W"], "b": results[0]["b"]}, want)
    print(f"2 processes x 4 devices vs one device: max-norm relative difference {error:.2e}")
    assert error <= TRAIN_TOL
    assert_close(results[0]["objective"], history["objective"], TRAIN_TOL)
    template = checkpoint.TrainState(
        params, optim.make_optimizer("sgd", 0.05).init(params), jax.random.key(2), 0, {}
    )
    saved = checkpoint.load(tmp_path / "hosts.npz", template)  # written by process 0
    assert saved.epoch == 3
    np.testing.assert_array_equal(saved.params["W"], results[0]["W"])
    assert sorted(p.name for p in tmp_path.glob("hosts*")) == ["hosts.npz"]


def test_data_mesh_and_put_on_one_device():
    mesh = sharding.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    x = sharding.put(np.arange(6.0).reshape(3, 2), mesh, sharding.batch_spec(mesh, 2, 1))
    assert x.sharding == NamedSharding(mesh, PartitionSpec(None, "data"))
    assert sharding.put(x, mesh, PartitionSpec(None, "data")) is x  # already placed
    np.testing.assert_array_equal(sharding.put(jnp.ones(3), mesh), np.ones(3))
    with pytest.raises(ValueError, match="at least one device"):
        sharding.data_mesh([])


def test_fit_with_a_one_device_mesh_equals_fit_without():
    X, y = _problem(n=50, d=4, c=3)
    params = linear.init(jax.random.key(1), 4, 3)
    want, _ = _fit(params, X, y, _FIT_CASES[0], batch_size=16)
    got, _ = _fit(params, X, y, _FIT_CASES[0], batch_size=16, mesh=sharding.data_mesh())
    jax.tree.map(np.testing.assert_array_equal, got, want)  # no padding, same code: exact


def test_fit_rejects_a_mesh_that_is_not_a_mesh():
    X, y = _problem(n=20, d=4, c=3)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        train.fit(linear.init(jax.random.key(1), 4, 3), X, y, key=jax.random.key(0), mesh="all")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    jax.config.update("jax_numpy_rank_promotion", "raise")
    if args.process_id is None:
        _eight_devices(args.out)
    else:
        _two_processes(args.out, args.process_id, args.num_processes, args.port)
