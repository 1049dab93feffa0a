"""Rows sharded over devices with JAX's own SPMD: where the data lives, what XLA inserts.

Builds a 1-D mesh over all devices (:func:`svmjax.sharding.data_mesh`) and shows how
``train.fit(..., mesh=mesh)`` and ``solve.solve(..., mesh=mesh)`` lay the data out: the
rows of ``X`` split over the devices (the bytes each device holds, from the arrays'
``addressable_shards``), the parameters replicated. It lists the collectives XLA put into
the compiled ``fit`` epoch and the compiled solver (from their compiled HLO text; those in
a loop body run once per step / per solver iteration), and those of a ``fit_grid`` step
(configurations split over the devices: none). Finally it compares the results with one
device: ``fit`` against one device fed the mesh's documented batch order (the mesh order
itself differs from the one-device order), ``solve`` and ``fit_grid`` against plain runs.

On a CPU-only machine it re-executes itself with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``: eight *virtual* devices sharing
the machine's cores. That shows layout and correctness, **not speed**.

    python experiments/sharding_demo.py [--out results/sharding_demo] [--devices 8]

Writes ``results.json`` and ``results.md`` (the same text as printed) into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import common
import jax
import jax.numpy as jnp
import numpy as np

from svmjax import (
    _epoch,
    _inputs,
    batches,
    continuation,
    data,
    grid,
    linear,
    optim,
    sharding,
    solve,
    train,
)

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
    solve_C: float = 0.01  # converges in ~160 iterations on digits (float32)


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
    """The collective ops of a compiled HLO module: ``{op: ["shape (where)", ...]}``, where
    is ``loop`` for an op inside a while loop's body (run every step or iteration) and
    ``once`` otherwise."""
    computations: dict[str, list[str]] = {}
    name = ""
    for line in compiled_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            name = header.group(1)
            computations[name] = []
        elif name:
            computations[name].append(line)
    calls = {
        name: set(re.findall(r"%([\w.\-]+)", " ".join(lines)))
        for name, lines in computations.items()
    }
    in_loop, todo = set(), [b for lines in computations.values() for line in lines
                            for b in re.findall(r"body=%([\w.\-]+)", line)]  # fmt: skip
    while todo:
        here = todo.pop()
        if here in computations and here not in in_loop:
            in_loop.add(here)
            todo.extend(calls[here])
    found: dict[str, list[str]] = {}
    for name, lines in computations.items():
        for line in lines:
            for op in COLLECTIVES:
                match = re.search(rf"= ([^=]+?) {op}(-start)?\(", line)
                if match:
                    where = "loop" if name in in_loop else "once"
                    found.setdefault(op, []).append(f"{match.group(1)} ({where})")
    return found


@contextlib.contextmanager
def compiled_text(module, name: str, texts: list[str]):
    """Inside the block, the first call of the jitted ``module.name`` also appends the
    compiled HLO text of that call to ``texts`` (the program the run executes)."""
    original = getattr(module, name)

    def recording(*args, **kwargs):
        if not texts:
            texts.append(original.lower(*args, **kwargs).compile().as_text())
        return original(*args, **kwargs)

    setattr(module, name, recording)
    try:
        yield
    finally:
        setattr(module, name, original)


def data_layout(mesh, X: np.ndarray) -> tuple[list[str], list[int]]:
    """``X`` laid out as ``fit``/``solve`` lay it out: the rows and bytes on each device."""
    Xs = sharding.shard_rows(X, mesh)
    lines = [describe("X (shard_rows)", Xs)]
    per_device = [shard.data.nbytes for shard in Xs.addressable_shards]
    lines.append(
        f"bytes of X per device: {sorted(set(per_device))} (all of X: {X.nbytes}; "
        f"{X.nbytes / mesh.size:.0f} per device plus padding)"
    )
    return lines, per_device


def fit_reference(params, X, y, options, devices: int):
    """One device, fed the mesh's documented batch order (``batches.device_minibatches``:
    device ``d``'s local row ``i`` is global row ``d * ceil(N / devices) + i``)."""
    n, m = len(y), -(-len(y) // devices)
    tx = options["optimizer"]
    prepared = _inputs.prepare_data(params, X, y, None)
    consts = _inputs.prepare_consts(params, 1.0, None)
    static = _epoch.Static(tx.update, "weston_watkins", "analytic", False, (), None)
    words = batches.key_words(options["key"])
    state = (params, tx.init(params))
    for epoch in range(1, options["epochs"] + 1):
        local = np.stack(
            [
                batches.device_minibatches(words, epoch, n, devices, options["batch_size"], d)
                for d in range(devices)
            ],
            axis=1,
        )
        rows = np.where(local >= 0, local + m * np.arange(devices)[None, :, None], -1)
        *state, _ = _epoch.run_epoch(
            *state, rows.reshape(len(rows), -1), jnp.float32(0), prepared, consts, static=static
        )
    return state[0]


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
        f"Mesh: {dict(mesh.shape)} over devices {[d.id for d in mesh.devices.flat]}; "
        f"data: {ds.description}.",
    ]
    if devices[0].platform == "cpu" and len(devices) > 1:
        header.append(
            f"These are {len(devices)} *virtual* CPU devices on {os.cpu_count()} core(s): this "
            "run shows layout and correctness, not speed."
        )
    layout_lines, per_device = data_layout(mesh, X)

    fit_options = dict(
        key=jax.random.key(2),
        optimizer=optim.make_optimizer("sgd", config.learning_rate),
        epochs=config.epochs,
        batch_size=config.batch_size,
    )
    fit_texts: list[str] = []
    with compiled_text(train, "run_epoch", fit_texts):
        sharded, _ = train.fit(params, X, y, mesh=mesh, **fit_options)
    reference = fit_reference(params, X, y, fit_options, mesh.size)
    fit_collectives = collectives(fit_texts[0])

    solve_texts: list[str] = []
    with compiled_text(continuation, "run", solve_texts):
        solved = solve.solve(X, y, C=config.solve_C, fit_intercept=True, mesh=mesh)
    single = solve.solve(X, y, C=config.solve_C, fit_intercept=True)
    solve_collectives = collectives(solve_texts[0])
    solve_error = abs(float(solved.objective - single.objective)) / float(single.objective)

    k = len(config.grid_learning_rates) * len(config.grid_regs) * len(config.grid_seeds)
    k_split = -(-k // mesh.size) * mesh.size
    grid_lines, grid_collectives = _grid_layout(mesh, params, X, y, config.batch_size, k_split)
    grid_options = dict(
        key=jax.random.key(3),
        learning_rates=config.grid_learning_rates,
        regs=config.grid_regs,
        seeds=config.grid_seeds,
        epochs=config.epochs,
        batch_size=config.batch_size,
    )
    grid_one = grid.fit_grid(params, X, y, **grid_options)
    grid_many = grid.fit_grid(params, X, y, mesh=mesh, **grid_options)

    results = {
        "config": dataclasses.asdict(config),
        "devices": len(devices),
        "platform": devices[0].platform,
        "cpu_count": os.cpu_count(),
        "environment": common.environment(),
        "data_layout": layout_lines,
        "bytes_X_per_device": per_device,
        "fit_collectives": fit_collectives,
        "solve_collectives": solve_collectives,
        "grid_layout": grid_lines,
        "grid_collectives": grid_collectives,
        "fit_rel_error_vs_one_device": _rel(sharded, reference),
        "solve_objective_rel_error_vs_one_device": solve_error,
        "solve_params_rel_error_vs_one_device": _rel(solved.params, single.params),
        "solve_converged": [bool(solved.converged), bool(single.converged)],
        "solve_iterations": [int(solved.n_iter), int(single.n_iter)],
        "grid_configs": len(grid_one.configs),
        "grid_rel_error_vs_one_device": _rel(grid_many.params, grid_one.params),
        "grid_best_equal": grid_one.best == grid_many.best,
    }

    def listing(found: dict[str, list[str]], none: str) -> list[str]:
        lines = [f"- `{op}` x{len(shapes)}: {', '.join(shapes)}" for op, shapes in found.items()]
        return lines or [f"- none{none}"]

    markdown = "\n".join(
        header
        + ["", "## Data: rows split over the devices (`sharding.shard_rows`)", ""]
        + ["```", *layout_lines, "```"]
        + ["", "Parameters, optimizer state and L-BFGS memory are replicated on every device."]
        + ["", "## Collectives in the compiled programs (from the compiled HLO text)", ""]
        + ["`(loop)`: inside a loop body, i.e. every step / solver iteration (or line-search"]
        + ["trial); `(once)`: once per call.", ""]
        + [f"`fit` epoch ({config.batch_size} rows per step):", ""]
        + listing(fit_collectives, "")
        + ["", "`solve` (the whole L-BFGS loop):", ""]
        + listing(solve_collectives, "")
        + ["", f"A `fit_grid` step, {k_split} configurations split over the devices:", ""]
        + ["```", *grid_lines, "```", ""]
        + listing(grid_collectives, ": each device trains its own configurations")
        + ["", "## Correctness: the mesh against one device (not speed)", ""]
        + [
            f"- `fit`, {config.epochs} epochs: max-norm relative difference of the parameters "
            f"from one device fed the mesh's batch order: "
            f"{results['fit_rel_error_vs_one_device']:.1e} (float rounding).",
            f"- `solve`: relative difference of the objective {solve_error:.1e}, of the "
            f"parameters (max-norm) {results['solve_params_rel_error_vs_one_device']:.1e}; "
            f"converged {results['solve_converged']}, iterations "
            f"{results['solve_iterations']} (mesh, one device).",
            f"- `fit_grid`, {len(grid_one.configs)} configurations: max-norm relative "
            f"difference {results['grid_rel_error_vs_one_device']:.1e}; same best "
            f"configuration: {results['grid_best_equal']}.",
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
