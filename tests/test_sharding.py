"""Rows sharded over devices and processes with JAX's own SPMD (``jax.sharding``): 8
virtual CPU devices, and 2 processes x 4 devices joined by ``jax.distributed``.

XLA fixes the device count when JAX starts, so the multi-device checks run in child
processes started with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``:
``python tests/test_sharding.py --out DIR`` runs every 8-device check in one process and
writes ``report.json`` (the measured differences) and ``reference.npz`` (the 2-process
case computed by one process holding every row), which the tests assert on (one child run,
shared through a module fixture); ``--process-id I --num-processes 2 --port P`` runs the
multi-process part, each process holding half the rows. Eight virtual devices on a 2-core
machine prove layout and correctness, not speed.

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

from svmjax import (
    _epoch,
    _inputs,
    analytic,
    batches,
    checkpoint,
    data,
    grid,
    linear,
    optim,
    registry,
    sharding,
    solve,
    train,
)

DEVICES = 8
# Sharded vs one device, float32, max-norm relative error (max |a - b| / max |b|).
LOSS_RTOL = 1e-6  # objective value and gradient (a different summation order)
FIT_RTOL = 2e-6  # fit params after 3 epochs vs one device fed the mesh's batch order
GRID_RTOL = 1e-6  # fit_grid params: each device runs whole configurations
HOSTS_RTOL = 2e-6  # 2 processes x 4 devices vs 1 process x 8 devices
SOLVE_RTOL = 1e-6  # solve(mesh=) objective vs one device (float32, tol 1e-3)
SOLVE_PARAMS_RTOL = 1e-4  # its parameters (the same iterations, rounded differently)
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


def _global_order(key, epoch, n, batch_size, devices):
    """The documented mesh order as global row indices ``[n_batches, devices * b]``: device
    ``d``'s local index ``i`` is row ``d * ceil(n / devices) + i``."""
    words, m = batches.key_words(key), -(-n // devices)
    local = np.stack(
        [
            batches.device_minibatches(words, epoch, n, devices, batch_size, d)
            for d in range(devices)
        ],
        axis=1,
    )
    rows = np.where(local >= 0, local + m * np.arange(devices)[None, :, None], -1)
    return rows.reshape(len(rows), -1)


def _emulate(params, X, y, case, devices, epochs=3, batch_size=30, validation=None):
    """One device, fed the mesh's documented batch order: what ``fit(mesh=)`` must equal."""
    optimizer, loss, squared = case
    tx = optim.make_optimizer(optimizer, 0.05)
    data = _inputs.prepare_data(params, X, y, validation)
    consts = _inputs.prepare_consts(params, 1.0, None)
    static = _epoch.Static(tx.update, loss, "analytic", squared, (), None)
    state, history = (params, tx.init(params)), []
    for epoch in range(1, epochs + 1):
        order = _global_order(jax.random.key(2), epoch, len(y), batch_size, devices)
        *state, metrics = _epoch.run_epoch(
            *state, order, jnp.float32(1e-3), data, consts, static=static
        )
        history.append(jax.device_get(metrics))
    return state[0], {k: np.array([h[k] for h in history]) for k in history[0]}


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
    # The three classic losses (every registered loss would compile 12 programs here; the
    # sharded code path is the same for all of them).
    losses = ("weston_watkins", "crammer_singer", "one_vs_rest")
    assert set(losses) <= set(registry.names())
    variants = [("analytic", loss, False) for loss in losses]
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


def _check_layout(mesh, report):
    """fit's data: split by rows, never replicated; each device holds ceil(N / 8) rows."""
    X, y = _problem()  # 203 rows: 26 per device, the last one 21 real + 5 padding
    X_val, y_val = _problem(n=50, seed=1)
    params = linear.init(jax.random.key(1), 12, 5)
    data, n = _inputs.shard_data(params, X, y, (X_val, y_val), mesh)
    shards = {
        name: sorted({shard.data.size for shard in getattr(data, name).addressable_shards})
        for name in ("X", "y", "X_val", "y_val")
    }
    report["layout"] = {
        "n": n,
        "elements_per_device": shards,
        "replicated": any(getattr(data, k).sharding.is_fully_replicated for k in shards),
        "padding_labels": int(np.sum(np.asarray(data.y) == -1)),
        "bytes_X_per_device": data.X.addressable_shards[0].data.nbytes,
    }


def _check_fit(mesh, report):
    """Row-sharded fit == one device fed the documented mesh order, four optimizer/loss
    cases, uneven N and batch."""
    X, y = _problem()
    X_val, y_val = _problem(n=50, seed=1)
    params = linear.init(jax.random.key(1), 12, 5)
    errors = {}
    for case in _FIT_CASES:
        want, want_history = _emulate(params, X, y, case, DEVICES, validation=(X_val, y_val))
        got, got_history = _fit(params, X, y, case, validation=(X_val, y_val), mesh=mesh)
        assert _replicated_on_all(got, mesh), case
        errors["/".join(map(str, case))] = _rel(got, want)
        assert_close(got_history["objective"], want_history["objective"], TRAIN_TOL)
        for name in ("train_accuracy", "val_accuracy"):
            np.testing.assert_allclose(got_history[name], want_history[name], atol=1.5 / 50)
    report["fit_rel_error"] = errors
    # A 2-D mesh is used as one flat data axis: the same order as the 1-D mesh. This one
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
    # Row-sharded inputs (shard_rows, as a process holding its rows makes them) and a
    # sharded jax.Array take the same path as host data: the same bits.
    Xg = jax.device_put(X, NamedSharding(mesh, PartitionSpec()))  # a jax.Array on the mesh
    Xs, ys = sharding.shard_rows(X, mesh, n=len(y)), sharding.shard_rows(y, mesh, n=len(y))
    b, _ = _fit(params, Xg, y, _FIT_CASES[0], mesh=mesh)
    c, _ = _fit(params, Xs, ys, _FIT_CASES[0], mesh=mesh)
    report["fit_sharded_input_bit_identical"] = _equal(b, flat) and _equal(c, flat)


def _check_solve(mesh, report):
    """solve(mesh=) == solve on one device: same objective to float rounding, converged,
    the same certificate; the compiled solver all-reduces and gathers nothing."""
    X, y = _problem(n=403, d=12, c=5)
    rng = np.random.default_rng(2)
    weight = rng.uniform(0.5, 2.0, len(y))
    errors, params_errors, certified = {}, {}, True
    # float32 and float64: in float32 a long run may drift apart by more than rounding (an
    # L-BFGS trajectory amplifies a different summation order), so the long case (an
    # intercept, ~50 iterations) is compared in float64, where it stays at rounding level.
    for loss, squared, intercept, x64 in [
        ("crammer_singer", False, False, False),
        ("weston_watkins", False, True, True),
    ]:
        options = dict(loss=loss, squared=squared, fit_intercept=intercept, C=0.5)
        options |= dict(sample_weight=weight)
        with jax.enable_x64(x64):
            Xd = X.astype(np.float64 if x64 else np.float32)
            want = solve.solve(Xd, y, **options)
            got = solve.solve(Xd, y, mesh=mesh, **options)
            name = f"{loss}/{squared}/{intercept}/{'float64' if x64 else 'float32'}"
            errors[name] = abs(float(got.objective - want.objective)) / float(want.objective)
            params_errors[name] = _rel(got.params, want.params)
            certified &= bool(got.converged) and bool(want.converged)
            certified &= 0 <= float(got.gap) <= 1e-3 * float(got.objective)
            assert _replicated_on_all(got.params, mesh)
    report["solve_objective_rel_error"] = errors
    report["solve_params_rel_error"] = params_errors
    report["solve_certified"] = bool(certified)


def _reference(out: Path):
    """The 2-process case on one process holding every row (8 devices): fit and solve."""
    mesh = sharding.data_mesh()
    X, y, params = _hosts_case()
    fitted, history = _fit(params, X, y, _FIT_CASES[0], mesh=mesh)
    with jax.enable_x64(True):  # float64: two layouts stay at rounding level (_check_solve)
        solved = solve.solve(X.astype(np.float64), y, fit_intercept=True, mesh=mesh)
    np.savez(
        out / "reference.npz",
        W=np.asarray(fitted["W"]), b=np.asarray(fitted["b"]), objective=history["objective"],
        solve_W=np.asarray(solved.params["W"]), solve_b=np.asarray(solved.params["b"]),
        solve_objective=np.asarray(solved.objective),
    )  # fmt: skip


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
    orders = split(np.stack([batches.minibatches([i], 1, len(y), 32) for i in range(k)]))
    data = _inputs.prepare_data(params, X, y, None, mesh)
    consts = sharding.put(_inputs.prepare_consts(params, 1.0, None), mesh)
    args = (stacked, opt_state, orders, split(np.zeros(k, np.float32)), split(np.ones(k, bool)))
    static = _epoch.Static(tx.update, "weston_watkins", "analytic", False, (), None)
    lowered = grid._grid_epoch.lower(*args, data, consts, static=static, mesh=mesh)
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
    # The checkpoint is plain arrays: it resumes without a mesh too (whose later epochs
    # follow the one-device order): finite and as good, not the same bits.
    single, single_history = _fit(params, X, y, case, resume_from=path, **(run | {"mesh": None}))
    report["resume_without_mesh_accuracy"] = [
        float(single_history["train_accuracy"][-1]),
        float(want_history["train_accuracy"][-1]),
    ]


def _check_divergence(mesh, report, tmp):
    """A poisoned batch under the mesh: the epoch named, last finite params, checkpoint kept."""
    from test_faults import BATCH, C, D, blobs, poisoned_batches

    X, y = blobs()
    params = linear.init(jax.random.key(1), D, C)
    path = Path(tmp) / "diverged.npz"
    run = dict(key=jax.random.key(0), batch_size=BATCH, mesh=mesh)
    before, _ = train.fit(params, X, y, epochs=2, **run)
    # A row that starts device 0's part of a batch (so the batch's first slot) in epoch 3
    # and in no earlier epoch: the poison strikes first in epoch 3.
    words = batches.key_words(run["key"])

    def starts(epoch):
        return set(batches.device_minibatches(words, epoch, len(y), DEVICES, BATCH, 0)[:, 0])

    fresh = sorted(starts(3) - starts(1) - starts(2))
    marker = float(X[fresh[0], 0])
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
        out=str(Path(tmp) / "demo"), dataset="blobs", epochs=1, grid_learning_rates=(0.1,),
        grid_regs=(0.0,), grid_seeds=(0,),
    )  # fmt: skip
    results = demo.main(config)
    saved = json.loads((Path(tmp) / "demo" / "results.json").read_text())
    assert saved["data_layout"] == results["data_layout"]
    assert saved["fit_collectives"] == results["fit_collectives"]
    report["demo"] = {
        "fit_collectives": sorted(results["fit_collectives"]),
        "solve_collectives": sorted(results["solve_collectives"]),
        "grid_collectives": sorted(results["grid_collectives"]),
        "bytes_X_per_device": results["bytes_X_per_device"],
        "fit_all_reduces_in_loop": sum(
            "(loop)" in x for x in results["fit_collectives"]["all-reduce"]
        ),
        "solve_all_reduces_in_loop": sum(
            "(loop)" in x for x in results["solve_collectives"]["all-reduce"]
        ),
        "fit_rel_error": results["fit_rel_error_vs_one_device"],
        "solve_rel_error": results["solve_objective_rel_error_vs_one_device"],
    }


def _eight_devices(out: Path) -> None:
    assert jax.device_count() == DEVICES, jax.devices()
    mesh = sharding.data_mesh()
    report, times = {"devices": jax.device_count(), "jax": jax.__version__}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, check in [
            ("objective", lambda: _check_objective(mesh, report)),
            ("layout", lambda: _check_layout(mesh, report)),
            ("fit", lambda: _check_fit(mesh, report)),
            ("solve", lambda: _check_solve(mesh, report)),
            ("reference", lambda: _reference(out)),
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
    X, y = _problem(n=203)  # uneven: process 0 holds rows 0:104, process 1 rows 104:203
    return X, y, linear.init(jax.random.key(1), 12, 5)


def _two_processes(out: Path, process_id: int, num_processes: int, port: int) -> None:
    try:  # CPU collectives across processes (gloo ships with jaxlib)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:
        pass
    jax.distributed.initialize(f"localhost:{port}", num_processes, process_id)
    mesh = sharding.data_mesh()  # every device of every process
    X_all, y_all, params = _hosts_case()
    n = len(y_all)
    # Each process holds only its rows (as if it had loaded just them) and assembles them
    # into global arrays laid out by rows; nothing is gathered.
    sweep = grid.fit_grid(  # fit_grid keeps its data replicated: every process passes all
        params, X_all, y_all, key=jax.random.key(3), learning_rates=(0.01, 0.1),
        regs=(0.0,), seeds=(0,), epochs=1, batch_size=32, mesh=mesh,
    )  # fmt: skip
    mine = sharding.process_slice(n, mesh)
    X, y = X_all[mine].copy(), y_all[mine].copy()
    del X_all, y_all
    X_rows, y_rows = sharding.shard_rows(X, mesh, n=n), sharding.shard_rows(y, mesh, n=n)
    resident = sorted({s.data.nbytes for s in X_rows.addressable_shards})
    fitted, history = _fit(
        params, X_rows, y_rows, _FIT_CASES[0], mesh=mesh, checkpoint=out / "hosts.npz"
    )
    with jax.enable_x64(True):  # float64, as the reference
        X64 = sharding.shard_rows(X.astype(np.float64), mesh, n=n)
        solved = solve.solve(X64, y_rows, fit_intercept=True, mesh=mesh)
    np.savez(
        out / f"process{process_id}.npz",
        W=np.asarray(fitted["W"]), b=np.asarray(fitted["b"]), objective=history["objective"],
        solve_W=np.asarray(solved.params["W"]), solve_b=np.asarray(solved.params["b"]),
        solve_objective=np.asarray(solved.objective), converged=np.asarray(solved.converged),
        grid_W=np.asarray(sweep.params["W"]), rows=np.array([mine.start, mine.stop]),
        bytes_X_per_device=np.array(resident),
        devices=np.array([jax.device_count(), jax.local_device_count(), jax.process_count()]),
    )  # fmt: skip
    jax.distributed.shutdown()


# --- pytest ---------------------------------------------------------------------------------


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return env


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory) -> tuple[dict, Path]:
    """One child run of every 8-device check: its report and its output folder."""
    out = tmp_path_factory.mktemp("eight_devices")
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, __file__, "--out", str(out)],
        env=_env(DEVICES),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    report["seconds"]["child process"] = round(time.perf_counter() - start, 1)
    return report, out


def test_eight_devices(eight_devices):
    report, _ = eight_devices
    print(json.dumps(report, indent=2))  # the measured tolerances, with pytest -s
    assert report["objective_rel_error"] <= F32_TOL
    assert report["analytic_per_example_rel_error"] <= F32_TOL
    assert report["objective_collectives"]["all-reduce"] >= 1
    assert report["objective_collectives"]["all-gather"] == 0
    layout = report["layout"]  # 203 rows of 12 features over 8 devices: 26 rows each
    assert layout["n"] == 203 and not layout["replicated"] and layout["padding_labels"] == 5
    assert layout["elements_per_device"] == {"X": [26 * 12], "y": [26], "X_val": [7 * 12],
                                             "y_val": [7]}  # fmt: skip
    assert max(report["fit_rel_error"].values()) <= FIT_RTOL
    assert report["fit_2d_mesh_rel_error"] <= FIT_RTOL
    assert report["fit_same_mesh_bit_identical"]
    assert report["fit_second_run_traces"] == 0
    assert report["fit_sharded_input_bit_identical"]
    assert max(report["solve_objective_rel_error"].values()) <= SOLVE_RTOL
    assert max(report["solve_params_rel_error"].values()) <= SOLVE_PARAMS_RTOL
    assert report["solve_certified"]
    assert report["grid_16_rel_error"] <= GRID_RTOL and report["grid_12_rel_error"] <= GRID_RTOL
    assert sum(report["grid_epoch_collectives"].values()) == 0
    assert report["resume_under_mesh_bit_identical"]
    assert min(report["resume_without_mesh_accuracy"]) > 0.5
    assert report["divergence_under_mesh"]
    # The compiled fit epoch and solver (measured by the demo on its own run): all-reduces,
    # some in the loop body (every step / iteration), nothing gathered.
    assert report["demo"]["fit_collectives"] == ["all-reduce"]
    assert report["demo"]["solve_collectives"] == ["all-reduce"]
    assert report["demo"]["fit_all_reduces_in_loop"] >= 1
    assert report["demo"]["solve_all_reduces_in_loop"] >= 1
    assert report["demo"]["grid_collectives"] == []
    assert report["demo"]["fit_rel_error"] <= FIT_RTOL
    assert report["demo"]["solve_rel_error"] <= SOLVE_RTOL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path, eight_devices):
    """2 processes x 4 devices, each holding about half the rows == 1 process x 8 devices
    holding all of them (the same mesh shape, so the same batch order), for fit and solve."""
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
    assert results[0]["rows"].tolist() == [0, 104] and results[1]["rows"].tolist() == [104, 203]
    assert results[0]["bytes_X_per_device"].tolist() == [26 * 12 * 4]  # its rows, no more
    for name in results[0].files:  # every process holds the same replicated results
        if name not in ("rows", "bytes_X_per_device"):
            np.testing.assert_array_equal(results[0][name], results[1][name])
    want = np.load(eight_devices[1] / "reference.npz")
    got = results[0]
    fit_error = _rel({"W": got["W"], "b": got["b"]}, {"W": want["W"], "b": want["b"]})
    solve_error = abs(float(got["solve_objective"] - want["solve_objective"])) / float(
        want["solve_objective"]
    )
    print(f"2 processes x 4 devices vs 1 process x 8: fit {fit_error:.2e}, solve {solve_error:.2e}")
    assert fit_error <= HOSTS_RTOL
    np.testing.assert_allclose(got["objective"], want["objective"], rtol=1e-5)
    assert solve_error <= SOLVE_RTOL and bool(got["converged"])
    solve_params = {"W": got["solve_W"], "b": got["solve_b"]}
    assert _rel(solve_params, {"W": want["solve_W"], "b": want["solve_b"]}) <= SOLVE_PARAMS_RTOL
    X, y, params = _hosts_case()
    template = checkpoint.TrainState(
        params, optim.make_optimizer("sgd", 0.05).init(params), jax.random.key(2), 0, {}
    )
    saved = checkpoint.load(tmp_path / "hosts.npz", template)  # written by process 0 only
    assert saved.epoch == 3
    np.testing.assert_array_equal(saved.params["W"], got["W"])
    assert sorted(p.name for p in tmp_path.glob("hosts*")) == ["hosts.npz"]


def test_data_mesh_and_put_on_one_device():
    mesh = sharding.data_mesh(jax.devices()[:1])
    assert mesh.axis_names == ("data",) and mesh.size == 1
    x = sharding.put(np.arange(6.0).reshape(3, 2), mesh, sharding.batch_spec(mesh, 2, 1))
    assert x.sharding == NamedSharding(mesh, PartitionSpec(None, "data"))
    assert sharding.put(x, mesh, PartitionSpec(None, "data")) is x  # already placed
    np.testing.assert_array_equal(sharding.put(jnp.ones(3), mesh), np.ones(3))
    with pytest.raises(ValueError, match="at least one device"):
        sharding.data_mesh([])


def test_fit_on_a_one_device_mesh_follows_the_documented_order():
    X, y = _problem(n=50, d=4, c=3)
    params = linear.init(jax.random.key(1), 4, 3)
    want, want_history = _emulate(params, X, y, _FIT_CASES[0], 1, batch_size=16)
    got, history = _fit(
        params, X, y, _FIT_CASES[0], batch_size=16, mesh=sharding.data_mesh(jax.devices()[:1])
    )
    assert _rel(got, want) <= FIT_RTOL
    np.testing.assert_allclose(history["objective"], want_history["objective"], rtol=1e-6)


def test_estimator_passes_the_mesh_through():
    from sklearn.base import clone

    from svmjax.estimator import SVMClassifier

    mesh = sharding.data_mesh()
    X, y = _problem(n=60, d=4, c=3)
    clf = SVMClassifier(C=0.5, mesh=mesh)
    assert clf.get_params()["mesh"] is mesh and clone(clf).mesh == mesh
    assert clf.fit(X, y).dual_gap_ <= 1e-3 * clf.objective_
    sgd = SVMClassifier(solver="sgd", max_iter=2, mesh=mesh, random_state=0).fit(X, y)
    assert sgd.coef_.shape == (3, 4)


def test_device_minibatches_cover_each_row_once():
    n, devices, batch_size = 203, 8, 30  # 26 rows per device, the last with 21 real
    for d in range(devices):
        order = batches.device_minibatches([1, 2], 3, n, devices, batch_size, d)
        assert order.shape == (7, 4)  # ceil(26 / 4) batches of ceil(30 / 8) slots
        real = order[order >= 0]
        assert sorted(real.tolist()) == list(range(26 if d < 7 else 21))
    rows = _global_order(jax.random.key(0), 1, n, batch_size, devices)
    assert sorted(rows[rows >= 0].tolist()) == list(range(n))


def test_shard_rows_and_process_slice_on_one_device():
    mesh = sharding.data_mesh(jax.devices()[:1])
    assert sharding.process_slice(7, mesh) == slice(0, 7)
    y = sharding.shard_rows(np.arange(3, dtype=np.int32), mesh)
    np.testing.assert_array_equal(y, np.arange(3))  # one device: no padding
    assert _inputs.check_rows(jnp.zeros((4, 2)), jnp.array([0, 1, -1, -1]), 2) == 2
    with pytest.raises(ValueError, match="padding rows"):
        _inputs.check_rows(jnp.zeros((3, 2)), jnp.array([0, -1, 1]), 2)
    with pytest.raises(ValueError, match="label 2"):
        _inputs.check_rows(jnp.zeros((2, 2)), jnp.array([0, 2]), 2)
    with pytest.raises(ValueError, match="holds rows 0:7"):
        sharding.shard_rows(np.zeros(3), mesh, n=7)


def test_load_mnist_rows_are_those_of_a_full_load(tmp_path):
    from test_data import _mnist_files

    files, _ = _mnist_files(sizes=(20, 4))
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    full = data.load_mnist(tmp_path, val_fraction=0.2)
    part = data.load_mnist(tmp_path, val_fraction=0.2, rows=lambda n: slice(n // 2, n))
    np.testing.assert_array_equal(part.X_train, full.X_train[8:])
    np.testing.assert_array_equal(part.y_train, full.y_train[8:])
    np.testing.assert_array_equal(part.X_val, full.X_val)


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
