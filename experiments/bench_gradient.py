"""Speed of the Weston–Watkins loss and its weight gradient, several ways, and the effect of
``bfloat16`` data on speed and accuracy.

Methods, all computing the loss *and* the gradient on the same float32 problem (random
``X ~ N(0, 1)``, uniform labels, ``W ~ 1e-3 N(0, 1)`` as in cs231n, ``reg = 1e-3``):

* ``analytic``: ``jax.value_and_grad`` of ``svmjax.linear.objective(..., grad="analytic")``
  (the fused path of :mod:`svmjax.fused`), jitted;
* ``analytic_bf16``: the same with ``X`` stored in ``bfloat16`` (float32 products);
* ``two_pass``: the same ``custom_vjp`` forced to one block (``svmjax.fused.mean_loss``
  with ``block=N``): two passes over ``X``, weight gradient in the fast layout;
* ``blocked``: the same forced to the CPU block size (``min(1024, 16 MiB // row_bytes)``
  rows): one sweep over ``X`` in row blocks;
* ``scores_vjp``: ``svmjax.analytic``'s ``custom_vjp`` on the scores only, the weight
  gradient left to autodiff (the analytic loss without the fused path);
* ``autodiff``: ``objective(..., grad="autodiff")`` (``jax.grad`` of the pure loss);
* ``closed_form``: ``svmjax.linear.weston_watkins_closed_form``, jitted (no bias);
* ``numpy``: cs231n's vectorised ``svm_loss_vectorized`` in NumPy (no bias);
* ``torch``: ``C * multi_margin_loss`` and autograd (when torch is importable);
* ``floor``: one streaming read of ``X``, ``jnp.sum(X, 0)``, jitted; ``floor_total``:
  ``jnp.sum(X)``, another read of ``X`` (XLA:CPU runs it faster than the column sums).

Everything runs in one process, interleaved (one call of each method per round, the order
rotated from round to round), after two warm-up calls; min and median over the rounds.
Compare the *ratios* within one run, not absolute times (shared, noisy machines). Then a
linear Weston–Watkins SVM is trained on digits and mnist1d with ``X`` in float32 and in
bfloat16 (same initialisation, full-batch Adam) to show what the rounding of the data costs
in accuracy.

Instruction sets: ``--isas default AVX2`` repeats the timings in a fresh process per
instruction set, capped with ``XLA_FLAGS=--xla_cpu_max_isa=<ISA>`` (so a machine with
AVX-512 also shows what an AVX2-only CPU would get), and reports, per size and ISA, which
of the project's three gradient paths (one-pass blocked sweep, two passes in one block,
autodiff) is fastest and whether :func:`svmjax.fused.block_rows` picked it. The default
run does both (``--isas default AVX2``) and includes 20000 x 3073 x 10.

Writes ``results.json`` and ``timings.png`` into the output folder.

    python experiments/bench_gradient.py [--sizes 4000x40x10 10000x3073x10 ...] [--out DIR]
        [--isas default AVX2]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import environment, header, numpy_svm

import svmjax
from svmjax import data, fused, linear

# OpenMP threads (torch, some BLAS builds) otherwise spin after each parallel region and
# slow down whatever is timed next on a 2-core machine. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
try:
    import torch
except ImportError:  # optional
    torch = None

SIZES = {
    "tiny": (300, 16, 4),  # for the smoke test
    "4000x40x10": (4000, 40, 10),  # mnist1d
    "500x3073x10": (500, 3073, 10),  # a cs231n development subset
    "10000x784x10": (10000, 784, 10),  # MNIST-like
    "5000x3073x10": (5000, 3073, 10),  # 59 MiB
    "60000x784x10": (60000, 784, 10),  # MNIST's training set (179 MiB)
    "10000x3073x10": (10000, 3073, 10),
    "20000x3073x10": (20000, 3073, 10),  # 234 MiB: the headline size of docs/performance.md
    "49000x3073x10": (49000, 3073, 10),  # cs231n's CIFAR-10 training split (600 MB)
}
PATHS = ("blocked", "two_pass", "autodiff")  # the project's gradient paths
METHODS = (
    "analytic", "analytic_bf16", "two_pass", "blocked", "scores_vjp", "autodiff", "closed_form",
    "numpy", "torch", "floor", "floor_total",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Config:
    out: str = "results/bench_gradient"
    sizes: tuple[str, ...] = (
        "4000x40x10", "500x3073x10", "10000x784x10", "5000x3073x10", "10000x3073x10",
        "60000x784x10", "20000x3073x10",
    )  # fmt: skip
    repeats: int = 15
    reg: float = 1e-3
    seed: int = 0
    accuracy_datasets: tuple[str, ...] = ("digits", "mnist1d")
    accuracy_steps: int = 500
    learning_rate: float = 0.01
    accuracy_reg: float = 1e-3
    isas: tuple[str, ...] = ("default", "AVX2")  # "default" or an --xla_cpu_max_isa value


# ------------------------------------------------------------------------------- methods


def _methods(n: int, d: int, c: int, reg: float, seed: int) -> dict[str, Callable[[], object]]:
    """Zero-argument callables, each computing loss and gradient once (and waiting for it)."""
    rng = np.random.default_rng(seed)
    X_np = rng.standard_normal((n, d), dtype=np.float32)
    y_np = rng.integers(0, c, n).astype(np.int64)
    W_np = (1e-3 * rng.standard_normal((d, c))).astype(np.float32)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np.astype(np.int32))
    X_bf16 = X.astype(jnp.bfloat16)
    params = {"W": jnp.asarray(W_np), "b": jnp.zeros(c)}

    def objective(grad):
        return jax.jit(jax.value_and_grad(functools.partial(linear.objective, reg=reg, grad=grad)))

    analytic, autodiff = objective("analytic"), objective("autodiff")

    def two_pass(p, X, y):  # the same custom_vjp, forced to one block
        return fused.mean_loss(p, X, y, block=X.shape[0]) + reg * jnp.sum(p["W"] ** 2)

    def scores_vjp(p, X, y):  # the custom_vjp of svmjax.analytic on the scores only
        mean = jnp.mean(svmjax.analytic.weston_watkins(linear.scores(p, X), y))
        return mean + reg * jnp.sum(p["W"] ** 2)

    def blocked(p, X, y):  # the same custom_vjp, forced to the CPU block size
        rows = _cpu_block(d)
        return fused.mean_loss(p, X, y, block=rows) + reg * jnp.sum(p["W"] ** 2)

    two_pass, blocked, scores_vjp = (
        jax.jit(jax.value_and_grad(f)) for f in (two_pass, blocked, scores_vjp)
    )
    closed = jax.jit(lambda W, X, y: linear.weston_watkins_closed_form(W, X, y, reg=reg))
    floor = jax.jit(lambda X: jnp.sum(X, 0))
    floor_total = jax.jit(lambda X: jnp.sum(X))
    methods = {
        "analytic": lambda: jax.block_until_ready(analytic(params, X, y)),
        "analytic_bf16": lambda: jax.block_until_ready(analytic(params, X_bf16, y)),
        "two_pass": lambda: jax.block_until_ready(two_pass(params, X, y)),
        "blocked": lambda: jax.block_until_ready(blocked(params, X, y)),
        "scores_vjp": lambda: jax.block_until_ready(scores_vjp(params, X, y)),
        "autodiff": lambda: jax.block_until_ready(autodiff(params, X, y)),
        "closed_form": lambda: jax.block_until_ready(closed(params["W"], X, y)),
        "numpy": lambda: numpy_svm(W_np, X_np, y_np, reg),
        "floor": lambda: jax.block_until_ready(floor(X)),
        "floor_total": lambda: jax.block_until_ready(floor_total(X)),
    }
    if torch is not None:
        X_t, y_t = torch.from_numpy(X_np), torch.from_numpy(y_np)
        W_t = torch.from_numpy(W_np.copy()).requires_grad_()
        b_t = torch.zeros(c, requires_grad=True)

        def torch_step():
            W_t.grad = b_t.grad = None
            scores = X_t @ W_t + b_t
            loss = c * torch.nn.functional.multi_margin_loss(scores, y_t) + reg * (W_t**2).sum()
            loss.backward()
            return loss.item()

        methods["torch"] = torch_step
    return methods


def _time(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Interleaved rounds; each round runs every method once, in a rotated order (so no
    method always follows the same neighbour)."""
    for run in methods.values():  # warm up: compile, allocate
        run()
        run()
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            methods[name]()
            times[name].append(1e3 * (time.perf_counter() - start))
    return times


# ------------------------------------------------------------------------------- accuracy


def _train(X, y, n_classes: int, config: Config):
    """Full-batch Adam on the analytic objective; returns the final parameters."""
    optimizer = optax.adam(config.learning_rate)
    params = linear.init(jax.random.key(config.seed), X.shape[1], n_classes)

    def step(carry, _):
        params, state = carry
        value, g = jax.value_and_grad(linear.objective)(params, X, y, reg=config.accuracy_reg)
        updates, state = optimizer.update(g, state, params)
        return (optax.apply_updates(params, updates), state), value

    (params, _), _ = jax.lax.scan(
        step, (params, optimizer.init(params)), length=config.accuracy_steps
    )
    return params


def _accuracy_rows(config: Config) -> list[dict]:
    rows = []
    train = jax.jit(_train, static_argnames=("n_classes", "config"))
    for name in config.accuracy_datasets:
        ds = data.load(name)
        n_classes = len(ds.class_names)
        y = jnp.asarray(ds.y_train)
        for dtype in ("float32", "bfloat16"):
            X = jnp.asarray(ds.X_train).astype(dtype)
            params = train(X, y, n_classes=n_classes, config=config)
            objective = linear.objective(params, ds.X_train, ds.y_train, reg=config.accuracy_reg)

            def accuracy(X_split, y_split, params=params, dtype=dtype):
                if len(y_split) == 0:
                    return None
                predicted = linear.predict(params, jnp.asarray(X_split).astype(dtype))
                return float(np.mean(np.asarray(predicted) == y_split))

            rows.append(
                {
                    "dataset": name,
                    "X_dtype": dtype,
                    "train_objective": float(objective),  # float32 data, for comparison
                    "train_accuracy": accuracy(ds.X_train, ds.y_train),
                    "val_accuracy": accuracy(ds.X_val, ds.y_val),
                    "test_accuracy": accuracy(ds.X_test, ds.y_test),
                }
            )
    return rows


# ------------------------------------------------------------------------------- output


def _table(rows: list[dict]) -> str:
    names = [m for m in METHODS if any(m in r["min_ms"] for r in rows)]
    header = ["size", *names, *rows[0]["ratios"]]
    lines = []
    for r in rows:
        lo, med = r["min_ms"], r["median_ms"]
        cells = [r["size"]]
        cells += [f"{lo[m]:.2f} ({med[m]:.2f})" if m in lo else "-" for m in names]
        cells += [f"{v:.2f}" if v is not None else "-" for v in r["ratios"].values()]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) for cells in lines]
    return "\n".join(out)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in METHODS if any(m in r["min_ms"] for r in rows)]
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(rows), 4))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        xs = [i + k * width for i, r in enumerate(rows) if name in r["min_ms"]]
        ys = [r["min_ms"][name] for r in rows if name in r["min_ms"]]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], [r["size"] for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("loss + gradient, min over rounds (ms)")
    ax.set_title("Weston–Watkins loss and dW (N x D x C), float32")
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cpu_block(d: int) -> int:
    """The rows per block of the sweep (:func:`svmjax.fused.sweep_rows`), float32 rows of ``d``."""
    return fused.sweep_rows(d)


def _rule_row(size: str, lo: dict, isa: str) -> dict:
    """Which of the three gradient paths was fastest here (each timed explicitly: the
    sweep forced to the CPU block size, one block, autodiff), which one the block rule
    picks, and how much slower the pick is than the fastest (1.0: the rule's pick won)."""
    n, d, _ = SIZES[size]
    picked = "two_pass" if fused.block_rows(n, d, platform="cpu") >= n else "blocked"
    timed = {name: lo[name] for name in PATHS}
    fastest = min(timed, key=timed.__getitem__)
    return {
        "size": size,
        "isa": isa,
        "x_mib": n * d * 4 / 2**20,
        **{f"{name}_ms": value for name, value in timed.items()},
        "rule_picks": picked,
        "fastest": fastest,
        "default_vs_fastest": timed[picked] / timed[fastest],
    }


def _other_isa(config: Config, isa: str) -> list[dict]:
    """The timings of ``config`` rerun in a fresh process with code generation capped."""
    out = Path(config.out) / f"isa-{isa}"
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
           f"--xla_cpu_max_isa={isa}".strip()}  # fmt: skip
    command = [sys.executable, __file__, "--out", str(out), "--repeats", str(config.repeats)]
    command += ["--accuracy-steps", "0", "--isas", "default", "--sizes", *config.sizes]
    subprocess.run(command, env=env, check=True)
    return json.loads((out / "results.json").read_text())["timings"]


def main(config: Config) -> dict:
    unknown = set(config.sizes) - set(SIZES)
    if unknown:
        raise ValueError(f"unknown sizes {sorted(unknown)}; choose from {', '.join(SIZES)}")
    print(header(), flush=True)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in config.sizes:
        times = _time(_methods(*SIZES[size], config.reg, config.seed), config.repeats)
        lo = {name: min(t) for name, t in times.items()}
        med = {name: float(np.median(t)) for name, t in times.items()}
        ratios = {
            "autodiff/analytic": lo["autodiff"] / lo["analytic"],
            "two_pass/analytic": lo["two_pass"] / lo["analytic"],
            "torch/analytic": lo["torch"] / lo["analytic"] if "torch" in lo else None,
            "analytic/floor": lo["analytic"] / lo["floor"],
            "analytic/floor_total": lo["analytic"] / lo["floor_total"],
        }
        rows.append({"size": size, "min_ms": lo, "median_ms": med, "ratios": ratios})
        print(_table(rows[-1:]), flush=True)
    isa_name = os.environ.get("XLA_FLAGS", "").rpartition("--xla_cpu_max_isa=")[2].split(" ")[0]
    by_isa = {isa_name or "default": rows}
    for isa in config.isas:
        if isa != "default":
            by_isa[isa] = _other_isa(config, isa)
    rules = [_rule_row(r["size"], r["min_ms"], isa) for isa, rs in by_isa.items() for r in rs]
    accuracy = _accuracy_rows(config) if config.accuracy_steps > 0 else []  # 0: timings only
    results = {
        "config": dataclasses.asdict(config),
        "timings": rows,
        "block_rule": rules,
        "ratios_by_isa": {isa: {r["size"]: r["ratios"] for r in rs} for isa, rs in by_isa.items()},
        "bf16_accuracy": accuracy,
        "environment": environment() | {"torch": None if torch is None else torch.__version__},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot(rows, out / "timings.png")
    print("\nloss + gradient, ms: min (median) over", config.repeats, "interleaved rounds")
    print(_table(rows))
    print("\nblock rule: the default path vs the fastest of", ", ".join(PATHS), "(min ms)")
    for r in rules:
        print(
            f"  {r['size']:>14s} ({r['x_mib']:5.0f} MiB) {r['isa']:>8s}: blocked "
            f"{r['blocked_ms']:.2f}  two-pass {r['two_pass_ms']:.2f}  autodiff "
            f"{r['autodiff_ms']:.2f}  rule picks {r['rule_picks']}, fastest {r['fastest']} "
            f"(pick / fastest {r['default_vs_fastest']:.2f}x)"
        )
    print("\nthe default path (analytic) per instruction set (min over rounds):")
    for isa, rs in by_isa.items():
        for r in rs:
            q = r["ratios"]
            print(
                f"  {r['size']:>14s} {isa:>8s}: autodiff / analytic {q['autodiff/analytic']:.2f}"
                f"  analytic / read of X {q['analytic/floor']:.2f} (sum(X, 0)), "
                f"{q['analytic/floor_total']:.2f} (sum(X))"
            )
    if accuracy:
        print("\nbfloat16 data (float32 parameters and products):")
    for r in accuracy:
        scores = "  ".join(
            f"{split} {r[f'{split}_accuracy']:.4f}"
            for split in ("train", "val", "test")
            if r[f"{split}_accuracy"] is not None
        )
        objective = f"objective {r['train_objective']:.6f}"
        print(f"  {r['dataset']:8s} X {r['X_dtype']:8s} {objective}  {scores}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(Config.sizes))
    parser.add_argument("--repeats", type=int, default=Config.repeats)
    parser.add_argument("--accuracy-steps", type=int, default=Config.accuracy_steps)
    parser.add_argument("--isas", nargs="+", default=list(Config.isas))
    args = parser.parse_args()
    main(
        Config(
            out=args.out,
            sizes=tuple(args.sizes),
            repeats=args.repeats,
            accuracy_steps=args.accuracy_steps,
            isas=tuple(args.isas),
        )
    )
