"""Data-parallel training with JAX's own SPMD: where every array lives, and what XLA inserts.

Builds a 1-D mesh over all devices (:func:`svmjax.sharding.data_mesh`) and shows, for one
training step of the linear SVM laid out the way ``train.fit(..., mesh=mesh)`` lays it out,
the sharding of the parameters (replicated), the minibatch (rows split over the devices)
and the gradients (replicated, after XLA's all-reduce), then the collectives in the
compiled HLO of that step and of a ``fit_grid``-style step (configurations split over the
devices: no collectives). Finally it runs ``train.fit`` and ``grid.fit_grid`` with and
without the mesh and reports how far apart the results are.

On a CPU-only machine it re-executes itself with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``: eight *virtual* devices sharing
the machine's cores. That proves layout and correctness, **not speed** -- the timings it
prints measure partitioning overhead on the same cores, not a speed-up.

    python experiments/sharding_demo.py [--out results/sharding_demo] [--devices 8]

Writes ``results.json`` and ``results.md`` (the same text as printed) into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path

import common
import jax
import numpy as np
from jax.sharding import NamedSharding

from svmjax import data, grid, linear, optim, sharding, train

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


@dataclasses.dataclass
class Config:
    out: str = "results/sharding_demo"
    devices: int = 8  # virtual CPU devices to ask for when run as a script on CPU
    dataset: str = "digits"
    batch_size: int = 64
    epochs: int = 5
    learning_rate: float = 0.1
    grid_learning_rates: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    grid_regs: tuple[float, ...] = (0.0, 1e-4)
    grid_seeds: tuple[int, ...] = (0, 1)


def describe(name: str, x: jax.Array) -> str:
    """One line per array: shape, spec, and which rows (dim 0) each device holds."""
    spec = getattr(x.sharding, "spec", None)
    head = f"{name}: {x.dtype}{list(x.shape)}  spec={spec}"
    if x.sharding.is_fully_replicated:
        return f"{head}  replicated on {len(x.sharding.device_set)} device(s)"
    pieces = []
    for device, index in sorted(x.sharding.devices_indices_map(x.shape).items(), key=_by_id):
        rows = index[0] if index else slice(None)
        start, stop, _ = rows.indices(x.shape[0])
        pieces.append(f"d{device.id}:{start}-{stop}")
    return f"{head}  dim 0 split: {' '.join(pieces)}"


def _by_id(item):
    return item[0].id


def collectives(compiled_text: str) -> dict[str, list[str]]:
    """The collective ops of a compiled HLO module: ``{op: [result shape, ...]}``."""
    found: dict[str, list[str]] = {}
    for line in compiled_text.splitlines():
        for op in COLLECTIVES:
            match = re.search(rf"= ([^=]+?) {op}(-start)?\(", line)
            if match:
                found.setdefault(op, []).append(match.group(1))
    return found


def _step_layout(mesh, params, X, y, batch_size: int) -> tuple[list[str], dict]:
    """One data-parallel step laid out as ``fit`` does: its arrays and its collectives."""
    rows = sharding.batch_spec(mesh, 1)
    index = sharding.put(np.arange(batch_size, dtype=np.int32), mesh, rows)  # one batch
    Xr, yr, pr = sharding.put((X, y, params), mesh)  # data and params replicated

    @jax.jit
    def step(params, X, y, index):
        X_b = jax.lax.with_sharding_constraint(X[index], NamedSharding(mesh, rows))
        y_b = jax.lax.with_sharding_constraint(y[index], NamedSharding(mesh, rows))
        return X_b, jax.grad(linear.objective)(params, X_b, y_b)

    X_b, grads = step(pr, Xr, yr, index)
    lines = [
        describe("params W", pr["W"]),
        describe("params b", pr["b"]),
        describe("dataset X", Xr),
        describe("batch X_b", X_b),
        describe("grad W", grads["W"]),
        describe("grad b", grads["b"]),
    ]
    return lines, collectives(step.lower(pr, Xr, yr, index).compile().as_text())


def _grid_layout(mesh, params, X, y, batch_size: int, k: int) -> tuple[list[str], dict]:
    """A ``fit_grid``-style step: K configurations split over the devices."""

    def split(x):  # leading (configuration) axis over the devices
        return sharding.put(x, mesh, sharding.batch_spec(mesh, x.ndim))

    stacked = {name: split(np.broadcast_to(p, (k, *p.shape))) for name, p in params.items()}
    regs = split(np.linspace(0, 1e-3, k, dtype=np.float32))
    Xr, yr = sharding.put((X[:batch_size], y[:batch_size]), mesh)

    @jax.jit
    def step(stacked, regs, X, y):
        grad = jax.grad(lambda p, r: linear.objective(p, X, y, reg=r))
        return jax.vmap(grad)(stacked, regs)

    grads = step(stacked, regs, Xr, yr)
    lines = [describe("stacked W", stacked["W"]), describe("grads W", grads["W"])]
    return lines, collectives(step.lower(stacked, regs, Xr, yr).compile().as_text())


def _rel(a, b) -> float:
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    num = max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b, strict=True)
    )
    return num / max(float(np.max(np.abs(np.asarray(y)))) for y in b)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree.leaves(out))
    return out, time.perf_counter() - start


def main(config: Config) -> dict:
    print(common.header(), flush=True)
    mesh = sharding.data_mesh()
    ds = data.load(config.dataset, key=jax.random.key(0))
    params = linear.init(jax.random.key(1), ds.n_features, ds.n_classes)
    X, y = ds.X_train, ds.y_train
    devices = jax.devices()
    header = [
        f"# Sharding demo: {len(devices)} {devices[0].platform} device(s), "
        f"{jax.process_count()} process(es), jax {jax.__version__}",
        "",
        f"Mesh: {dict(mesh.shape)} over devices {[d.id for d in mesh.devices.flat]}.",
    ]
    if devices[0].platform == "cpu" and len(devices) > 1:
        header.append(
            f"These are {len(devices)} *virtual* CPU devices on {os.cpu_count()} core(s): this "
            "run proves layout and correctness, not speed."
        )

    step_lines, step_collectives = _step_layout(mesh, params, X, y, config.batch_size)
    k = len(config.grid_learning_rates) * len(config.grid_regs) * len(config.grid_seeds)
    k_split = -(-k // mesh.size) * mesh.size
    grid_lines, grid_collectives = _grid_layout(mesh, params, X, y, config.batch_size, k_split)

    fit_options = dict(
        key=jax.random.key(2),
        optimizer=optim.make_optimizer("sgd", config.learning_rate),
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation=(ds.X_val, ds.y_val),
    )
    (one, one_history), one_seconds = _timed(lambda: train.fit(params, X, y, **fit_options))
    (many, many_history), many_seconds = _timed(
        lambda: train.fit(params, X, y, mesh=mesh, **fit_options)
    )
    grid_options = dict(
        key=jax.random.key(3),
        learning_rates=config.grid_learning_rates,
        regs=config.grid_regs,
        seeds=config.grid_seeds,
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation=(ds.X_val, ds.y_val),
    )
    grid_one, grid_one_seconds = _timed(lambda: grid.fit_grid(params, X, y, **grid_options))
    grid_many, grid_many_seconds = _timed(
        lambda: grid.fit_grid(params, X, y, mesh=mesh, **grid_options)
    )

    results = {
        "config": dataclasses.asdict(config),
        "devices": len(devices),
        "platform": devices[0].platform,
        "cpu_count": os.cpu_count(),
        "environment": common.environment(),
        "step_layout": step_lines,
        "step_collectives": step_collectives,
        "grid_layout": grid_lines,
        "grid_collectives": grid_collectives,
        "fit_rel_error_vs_one_device": _rel(many, one),
        "fit_val_accuracy": {
            "one device": float(one_history["val_accuracy"][-1]),
            "mesh": float(many_history["val_accuracy"][-1]),
        },
        "grid_configs": len(grid_one.configs),
        "grid_rel_error_vs_one_device": _rel(grid_many.params, grid_one.params),
        "grid_best_equal": grid_one.best == grid_many.best,
        "seconds_including_compile": {
            "fit one device": one_seconds,
            "fit mesh": many_seconds,
            "fit_grid one device": grid_one_seconds,
            "fit_grid mesh": grid_many_seconds,
        },
    }
    markdown = "\n".join(
        header
        + ["", f"## One training step as `fit(..., mesh=mesh)` lays it out ({ds.description})"]
        + ["", "```", *step_lines, "```", "", "Collectives in the compiled step:", ""]
        + [
            f"- `{op}`: {len(shapes)} ({', '.join(shapes)})"
            for op, shapes in step_collectives.items()
        ]
        + (["- none"] if not step_collectives else [])
        + ["", f"## A `fit_grid` step: {k_split} configurations split over the devices", ""]
        + ["```", *grid_lines, "```", "", "Collectives in the compiled grid step:", ""]
        + [f"- `{op}`: {len(shapes)}" for op, shapes in grid_collectives.items()]
        + (["- none: each device trains its own configurations"] if not grid_collectives else [])
        + ["", "## Results: mesh against one device", ""]
        + [
            f"- `fit`, {config.epochs} epochs: max-norm relative difference of the parameters "
            f"{results['fit_rel_error_vs_one_device']:.1e} (float rounding: the gradient is "
            "summed in another order); final validation accuracy "
            f"{results['fit_val_accuracy']['one device']:.4f} vs "
            f"{results['fit_val_accuracy']['mesh']:.4f}.",
            f"- `fit_grid`, {len(grid_one.configs)} configurations: max-norm relative "
            f"difference {results['grid_rel_error_vs_one_device']:.1e}; same best "
            f"configuration: {results['grid_best_equal']}.",
            "- Seconds including compilation (one device / mesh): `fit` "
            f"{one_seconds:.2f} / {many_seconds:.2f}, `fit_grid` {grid_one_seconds:.2f} / "
            f"{grid_many_seconds:.2f}. With virtual devices on shared cores these measure "
            "overhead, not a speed-up.",
        ]
    )
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / "results.md").write_text(markdown + "\n")
    print(markdown)
    return results


def _ensure_devices(count: int) -> None:
    """On a CPU-only machine with fewer devices, re-run this script with virtual devices."""
    flag = "--xla_force_host_platform_device_count"
    if jax.device_count() >= count or jax.default_backend() != "cpu":
        return
    if flag in os.environ.get("XLA_FLAGS", ""):
        return  # asked already; run with what there is
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flag}={count}".strip())
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--devices", type=int, default=Config.devices)
    args = parser.parse_args()
    _ensure_devices(args.devices)
    main(Config(out=args.out, devices=args.devices))
