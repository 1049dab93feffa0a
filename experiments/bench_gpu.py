"""The gradient path on an accelerator: effective bandwidth of the default (fused) path
against the device's copy bandwidth, beside ``jax.grad`` of the pure loss and one read of
``X``; and what the accelerator's default float32 product (TF32 on NVIDIA GPUs since
Ampere, bfloat16 passes on TPUs) does to the gradient's accuracy.

Runs on ``jax.devices()[0]`` (on a CPU too, where it is a smoke test of the script).

* ``copy``: ``X + 1`` over ``--copy-mib`` of float32, counting the bytes read and
  written: the bandwidth a streaming kernel can reach on this device (the ceiling;
  ``--peak-tbs`` adds the datasheet's figure, which the tool cannot read off the device).
* per size ``NxDxC``, float32, ``X ~ N(0, 1)``, uniform labels, ``W ~ 1e-3 N(0, 1)``,
  ``reg = 1e-3`` (as ``bench_gradient.py``), loss and gradient of the Weston–Watkins
  objective :func:`svmjax.linear.objective`:

  - ``default``: ``grad="analytic"`` (:mod:`svmjax.fused`; one block on an accelerator:
    scores, then ``M.T @ X``, two reads of ``X``), at JAX's default precision;
  - ``highest``: the same traced under ``jax.default_matmul_precision("highest")``;
  - ``autodiff``: ``grad="autodiff"`` (``jax.grad`` of the pure loss);
  - ``floor``: ``jnp.sum(X, 0)``, one read of ``X``;
  - the default path's two products alone: ``XW`` (``X @ W``), ``MtX``
    (:func:`svmjax.fused.rows_product` of a random ``M^T`` in one piece) and
    ``MtX_chunked`` (the same in :func:`svmjax.fused.row_chunks` chunks, the GPU default).

  Each is timed as the median over rounds of ``--calls`` back-to-back calls (so dispatch
  overlaps the device's work) after a warm-up; the effective bandwidth is the bytes of one
  read of ``X`` over that time, and ``share`` is that over the copy bandwidth. The
  accuracy column is the max-norm relative error of ``dW`` against a float64 NumPy
  reference, on the first ``--check-rows`` rows (the same functions on that slice).

Writes ``results.json`` and ``results.md``.

    python experiments/bench_gpu.py [--sizes 20000x3073x10 200000x3073x10] [--peak-tbs 4.8]
        [--out results/bench_gpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from common import header, markdown_table, numpy_svm, write

from svmjax import fused, linear


@dataclasses.dataclass(frozen=True)
class Config:
    out: str = "results/bench_gpu"
    sizes: tuple[str, ...] = ("20000x3073x10", "200000x3073x10")
    copy_mib: int = 2048
    peak_tbs: float | None = None  # the datasheet's memory bandwidth, TB/s (printed beside)
    rounds: int = 15
    calls: int = 20
    check_rows: int = 4000
    reg: float = 1e-3
    seed: int = 0


def _timed(fn: Callable[[], object], config: Config) -> float:
    """Median seconds per call over ``rounds`` rounds of ``calls`` back-to-back calls."""
    jax.block_until_ready(fn())
    jax.block_until_ready(fn())
    per_call = []
    for _ in range(config.rounds):
        start = time.perf_counter()
        out = None
        for _ in range(config.calls):
            out = fn()
        jax.block_until_ready(out)
        per_call.append((time.perf_counter() - start) / config.calls)
    return statistics.median(per_call)


def _functions(reg: float) -> dict[str, Callable]:
    """``jit(value_and_grad)`` of the objective: the default path, the same at HIGHEST
    precision, and autodiff."""

    def grad_fn(how: str, precision: str | None = None):
        def value_and_grad(params, X, y):
            with jax.default_matmul_precision(precision):
                return jax.value_and_grad(linear.objective)(params, X, y, reg=reg, grad=how)

        return jax.jit(value_and_grad)

    return {
        "default": grad_fn("analytic"),
        "highest": grad_fn("analytic", "highest"),
        "autodiff": grad_fn("autodiff"),
    }


def _copy_bandwidth(config: Config) -> dict:
    n = config.copy_mib * 2**20 // 4
    x = jax.random.normal(jax.random.key(config.seed), (n,), jnp.float32)
    add = jax.jit(lambda x: x + 1.0)
    seconds = _timed(lambda: add(x), dataclasses.replace(config, calls=5))
    moved = 2 * x.nbytes
    return {"bytes": moved, "seconds": seconds, "bytes_per_s": moved / seconds}


def _size_row(size: str, config: Config, copy: dict) -> dict:
    n, d, c = (int(v) for v in size.split("x"))
    keys = jax.random.split(jax.random.key(config.seed), 4)
    X = jax.random.normal(keys[0], (n, d), jnp.float32)
    y = jax.random.randint(keys[1], (n,), 0, c, jnp.int32)
    params = {"W": 1e-3 * jax.random.normal(keys[2], (d, c), jnp.float32), "b": jnp.zeros(c)}
    fns = _functions(config.reg)
    floor = jax.jit(lambda X: jnp.sum(X, 0))
    xw = jax.jit(lambda X, W: X @ W)
    mtx = jax.jit(fused.rows_product, static_argnames="chunks")
    Mt = jax.random.normal(keys[3], (c, n), jnp.float32)
    methods = {name: functools.partial(f, params, X, y) for name, f in fns.items()}
    methods["floor"] = functools.partial(floor, X)
    methods["XW"] = functools.partial(xw, X, params["W"])
    methods["MtX"] = functools.partial(mtx, Mt, X, chunks=1)
    methods["MtX_chunked"] = functools.partial(mtx, Mt, X, chunks=fused.row_chunks(n))
    seconds = {name: _timed(fn, config) for name, fn in methods.items()}
    m = min(n, config.check_rows)
    X_check, y_check = X[:m], y[:m]
    # float64 reference; the bias is 0 here, as numpy_svm (cs231n's form) assumes
    W64, X64 = np.asarray(params["W"], np.float64), np.asarray(X_check, np.float64)
    reference = numpy_svm(W64, X64, np.asarray(y_check), config.reg)[1]
    errors = {}
    for name, fn in fns.items():
        dW = np.asarray(fn(params, X_check, y_check)[1]["W"], np.float64)
        errors[name] = float(np.max(np.abs(dW - reference)) / np.max(np.abs(reference)))
    x_bytes = X.nbytes
    bandwidth = {name: x_bytes / s for name, s in seconds.items()}
    return {
        "size": size,
        "x_bytes": x_bytes,
        "seconds": seconds,
        "one_read_bytes_per_s": bandwidth,
        "share_of_copy": {k: v / copy["bytes_per_s"] for k, v in bandwidth.items()},
        "share_of_peak": None
        if config.peak_tbs is None
        else {k: v / (config.peak_tbs * 1e12) for k, v in bandwidth.items()},
        "autodiff_over_default": seconds["autodiff"] / seconds["default"],
        "default_over_floor": seconds["default"] / seconds["floor"],
        "products_over_floor": {
            k: seconds[k] / seconds["floor"] for k in ("XW", "MtX", "MtX_chunked")
        },
        "chunks": fused.row_chunks(n),
        "dW_rel_error": errors,
        "check_rows": m,
    }


def main(config: Config) -> dict:
    print(header(), flush=True)
    device = jax.devices()[0]
    copy = _copy_bandwidth(config)
    print(f"copy: {copy['bytes_per_s'] / 1e12:.3f} TB/s (read + write)", flush=True)
    rows = []
    for size in config.sizes:
        rows.append(_size_row(size, config, copy))
        print(rows[-1], flush=True)
    methods = ("default", "highest", "autodiff", "floor")
    peak = "" if config.peak_tbs is None else f", datasheet {config.peak_tbs:g} TB/s"
    table = markdown_table(
        ["size", "X MiB", *(f"{m} ms" for m in methods), "default GB/s", "share of copy"]
        + (["share of datasheet"] if config.peak_tbs else [])
        + ["autodiff / default", "default / floor", "XW, MtX, chunked / floor"]
        + ["dW error default / highest"],
        [
            [
                r["size"],
                f"{r['x_bytes'] / 2**20:.0f}",
                *(f"{1e3 * r['seconds'][m]:.3f}" for m in methods),
                f"{r['one_read_bytes_per_s']['default'] / 1e9:.0f}",
                f"{r['share_of_copy']['default']:.0%}",
            ]
            + ([f"{r['share_of_peak']['default']:.0%}"] if r["share_of_peak"] else [])
            + [
                f"{r['autodiff_over_default']:.2f}",
                f"{r['default_over_floor']:.2f}",
                ", ".join(f"{v:.2f}" for v in r["products_over_floor"].values())
                + f" ({r['chunks']} chunks)",
                f"{r['dW_rel_error']['default']:.1e} / {r['dW_rel_error']['highest']:.1e}",
            ]
            for r in rows
        ],
    )
    markdown = (
        f"# The gradient path on {device.device_kind} ({device.platform})\n\n{header()}\n\n"
        f"Copy bandwidth (X + 1, read + write): {copy['bytes_per_s'] / 1e9:.0f} GB/s{peak}. "
        f"Bandwidth columns: one read of X over the time (the fused path reads X twice). "
        f"Median of {config.rounds} rounds of {config.calls} calls.\n\n" + table
    )
    results = {"config": dataclasses.asdict(config), "copy": copy, "rows": rows}
    write(config.out, results, markdown)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--sizes", nargs="+", default=list(Config.sizes))
    parser.add_argument("--copy-mib", type=int, default=Config.copy_mib)
    parser.add_argument("--peak-tbs", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=Config.rounds)
    parser.add_argument("--calls", type=int, default=Config.calls)
    parser.add_argument("--check-rows", type=int, default=Config.check_rows)
    args = parser.parse_args()
    main(
        Config(
            out=args.out,
            sizes=tuple(args.sizes),
            copy_mib=args.copy_mib,
            peak_tbs=args.peak_tbs,
            rounds=args.rounds,
            calls=args.calls,
            check_rows=args.check_rows,
        )
    )
