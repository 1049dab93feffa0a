"""Many classes: the exact solver and ``SVMClassifier`` against scikit-learn's ``LinearSVC``
at 100 and 1,000 classes on synthetic linear-probe features, minibatch training at 1,000
classes, and an ImageNet-sized linear probe on an accelerator.

Each mode is a section of ``results.md`` / a key of ``results.json``; give several to run
several (none: ``--probe``):

``--probe``: ``linear_probe.features`` (class means on a smooth low-dimensional manifold,
overlapping classes, ReLU-like features; see that module) at 50,000 x 512 with 100 classes
and 20,000 x 512 with 1,000 classes, the rows split 80/20 in draw order (labels come in
random balanced blocks and examples are independent given their labels: a stratified
random split). Crammer–Singer at C = 0.01 and 0.1, five fits of the same
training rows in one process:

- ``solve``: ``svmjax.solve.solve`` (no intercept);
- ``SVMClassifier``: ``SVMClassifier(loss="crammer_singer", C=C)`` (``solver="exact"``,
  with its intercept, which is not penalised);
- ``SVMClassifier, no intercept``: the same with ``fit_intercept=False``;
- ``LinearSVC``: ``LinearSVC(multi_class="crammer_singer", C=C, fit_intercept=False)``, the
  problem ``solve`` solves;
- ``LinearSVC + intercept``: ``fit_intercept=True``. liblinear appends a constant feature,
  so it penalises its intercept (``+ ½‖b‖²``): a slightly different problem from
  ``SVMClassifier``'s, its peer by default in a user's script.

svmjax runs at ``tol=1e-3`` (a certified relative duality gap); *cold* is its first call
after ``jax.clear_caches()`` (compilation included), *warm* the second, identical call.
LinearSVC runs with its defaults, timed once (it compiles nothing). Every fit's ``(W, b)``
is scored by ``svmjax.solve.primal_objective`` in float64 (``b`` unpenalised, so LinearSVC
+ intercept's score leaves out its ``½‖b‖²``); top-1 and top-5 accuracy on the held-out
20% by ``svmjax.metrics.top_k_accuracy``. *Peak memory* is the growth of the resident set
during one fit (``common.PeakRSS``; svmjax's warm call). The intercept's overhead is
``SVMClassifier``'s warm time over ``SVMClassifier, no intercept``'s.

``--table``: well-separated Gaussian classes (``linear_probe.blobs``), 10,000 x 256 with
10, 100 and 1,000 classes, C = 0.1, no intercept: ``solve`` warm against ``LinearSVC``,
with its method (by default the continuation up to ``dual_coordinate.MANY_CLASSES``
classes, dual coordinate ascent beyond, on CPU), its iterations or passes and the time
of each (warm time / count).

``--fit``: ``svmjax.train.fit`` at 1,000 classes (batch 256, D = 2048, Crammer–Singer,
the default SGD; linear-probe features, 25,600 rows: 100 steps an epoch): time per step
(warm; an epoch's time includes its accuracy pass over all rows, also shown alone),
peak memory, the cost of ``top_k=(5,)`` in the history; ``svmjax.grid.fit_grid`` on a
2 x 2 grid (learning rates x regs): time per step of the whole grid.

``--imagenet`` (for an accelerator; ``experiments/run_accelerator.sh``): 1,281,167 x 2048
linear-probe features (10.5 GB float32, drawn on the host) with 1,000 classes and 50,000
more rows held out; ``solve`` at C = 0.01, ``tol=1e-3``, float32 with full-precision
products (on an accelerator ``jax.default_matmul_precision("highest")``; CPU's are full
precision already), at most ``--imagenet-max-iter``
iterations: a first call with ``max_iter=1`` (compilation, checks, padding and the copy to
the device: the fixed costs, cold), the same again (fixed costs, warm), then the solve
(warm); per iteration = (solve − fixed) / (iterations − 1). Reports the certified gap,
top-1/top-5 on the held-out rows, the device's peak memory.

``--scale`` multiplies every row count; ``--classes`` keeps the problems and table rows with
those class counts; ``--no-peer`` leaves LinearSVC out.

    python experiments/bench_many_classes.py [--out results/bench_many_classes] [--probe]
        [--table] [--fit] [--imagenet] [--Cs 0.01 0.1] [--classes 100 1000] [--scale 1]
        [--no-peer] [--imagenet-max-iter 200]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from common import PeakRSS, header, markdown_table, write
from linear_probe import blobs, describe, features

from svmjax import SVMClassifier, dual_coordinate, grid, linear, metrics, solve, train

LOSS = "crammer_singer"
FITS = ("solve", "SVMClassifier", "SVMClassifier, no intercept")
PEERS = ("LinearSVC", "LinearSVC + intercept")


@dataclasses.dataclass(frozen=True)
class Config:
    out: str = "results/bench_many_classes"
    modes: tuple[str, ...] = ("probe",)  # any of probe, table, fit, imagenet
    # (rows before the 80/20 split, features, classes)
    problems: tuple[tuple[int, int, int], ...] = ((50_000, 512, 100), (20_000, 512, 1000))
    classes: tuple[int, ...] | None = None  # None: every class count
    Cs: tuple[float, ...] = (0.01, 0.1)
    scale: float = 1.0  # every row count times this
    seed: int = 0
    test_fraction: float = 0.2
    tol: float = 1e-3
    max_iter: int = 5000
    peer: bool = True  # False: svmjax alone
    table_shape: tuple[int, int] = (10_000, 256)
    table_classes: tuple[int, ...] = (10, 100, 1000)
    table_C: float = 0.1
    fit_shape: tuple[int, int, int] = (25_600, 2048, 1000)
    fit_batch: int = 256
    fit_epochs: int = 2
    grid_learning_rates: tuple[float, ...] = (0.03, 0.1)
    grid_regs: tuple[float, ...] = (0.0, 1e-4)
    imagenet_shape: tuple[int, int, int] = (1_281_167, 2048, 1000)
    imagenet_test: int = 50_000
    imagenet_C: float = 0.01
    imagenet_max_iter: int = 200


def _rows(n: int, config: Config) -> int:
    return max(1, round(n * config.scale))


def _wanted(classes: int, config: Config) -> bool:
    return config.classes is None or classes in config.classes


def _objective(W, b, X, y, C) -> float:
    """``primal_objective`` of ``(W, b)`` in float64 (``b`` unpenalised)."""
    with jax.enable_x64(True):
        params = {"W": np.asarray(W, np.float64), "b": np.asarray(b, np.float64)}
        return float(solve.primal_objective(params, X.astype(np.float64), y, C=C, loss=LOSS))


def _top(W, b, X, y, ks=(1, 5)) -> dict:
    """Top-k accuracies of ``X @ W + b`` (float32 on the host) for each ``k`` (at most C)."""
    scores = jnp.asarray(np.asarray(X, np.float32) @ np.asarray(W, np.float32) + b)
    return {
        f"top{k}": float(metrics.top_k_accuracy(scores, jnp.asarray(y), k))
        for k in ks
        if k <= scores.shape[1]
    }


def _svmjax_fit(name: str, X, y, C: float, config: Config):
    """One fit: ``(W [D, C], b [C], facts)``."""
    n_classes = int(y.max()) + 1
    if name == "solve":
        result = solve.solve(X, y, loss=LOSS, C=C, tol=config.tol, max_iter=config.max_iter)
        result = jax.block_until_ready(result)
        gap = float(result.gap / result.objective)
        facts = {"iterations": int(result.n_iter), "converged": bool(result.converged)}
        return np.asarray(result.params["W"]), np.zeros(n_classes), facts | {"gap": gap}
    model = SVMClassifier(
        loss=LOSS,
        C=C,
        solver="exact",
        fit_intercept=name == "SVMClassifier",
        tol=config.tol,
        max_iter=config.max_iter,
    ).fit(X, y)
    gap = float(model.dual_gap_ / model.objective_)
    facts = {"iterations": int(model.n_iter_), "converged": gap <= config.tol, "gap": gap}
    return model.coef_.T, model.intercept_, facts


def _peer_fit(name: str, X, y, C: float):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LinearSVC(multi_class=LOSS, C=C, fit_intercept=name != "LinearSVC").fit(X, y)
    b = np.broadcast_to(model.intercept_, model.coef_.shape[:1])  # a scalar 0 without one
    return model.coef_.T, b, {"iterations": int(np.max(model.n_iter_))}


def _measure(name: str, X, y, X_test, y_test, C: float, config: Config) -> dict:
    """Time one fit (svmjax: cold, then warm with its peak memory; LinearSVC: once) and
    score it."""
    row: dict = {}
    if name in FITS:
        jax.clear_caches()
        start = time.perf_counter()
        _svmjax_fit(name, X, y, C, config)
        row["cold_s"] = time.perf_counter() - start
        fit = _svmjax_fit
        args = (name, X, y, C, config)
    else:
        fit, args = _peer_fit, (name, X, y, C)
    with PeakRSS() as memory:
        start = time.perf_counter()
        W, b, facts = fit(*args)
        row["seconds"] = time.perf_counter() - start
    row |= facts | {"peak_mib": memory.mib, "objective": _objective(W, b, X, y, C)}
    return row | _top(W, b, X_test, y_test)


def _split(X, y, test_fraction: float):
    """The first rows for training, the rest held out (views, no copies; a stratified
    random split of a :func:`linear_probe.features` draw)."""
    n_train = round(len(y) * (1 - test_fraction))
    X, X_test, y, y_test = X[:n_train], X[n_train:], y[:n_train], y[n_train:]
    n_classes = int(max(y.max(), y_test.max())) + 1
    if np.bincount(y, minlength=n_classes).min() == 0:
        raise ValueError(f"a class has no training row in {len(y)} rows: draw more rows")
    return X, y, X_test, y_test


# ------------------------------------------------------------------------------- modes


def _probe(config: Config) -> tuple[dict, str]:
    rows, sizes = [], []
    for n, d, n_classes in config.problems:
        if not _wanted(n_classes, config):
            continue
        X_all, y_all = features(config.seed, _rows(n, config), d, n_classes)
        X, y, X_test, y_test = _split(X_all, y_all, config.test_fraction)
        problem = f"{len(y)} x {d}, {n_classes} classes"
        sizes.append({"problem": problem, "test": len(y_test)} | describe(X_all, y_all))
        print(sizes[-1], flush=True)
        for C in config.Cs:
            fits = {}
            for name in FITS + (PEERS if config.peer else ()):
                fits[name] = _measure(name, X, y, X_test, y_test, C, config)
                print(problem, C, name, fits[name], flush=True)
            with_b, without_b = fits["SVMClassifier"], fits["SVMClassifier, no intercept"]
            overhead = with_b["seconds"] / without_b["seconds"]
            rows.append({"problem": problem, "C": C, "fits": fits, "intercept_overhead": overhead})

    def peer_of(name):  # the LinearSVC fit of the same intercept setting
        return "LinearSVC + intercept" if name == "SVMClassifier" else "LinearSVC"

    table = []
    for r in rows:
        for name, f in r["fits"].items():
            peer = r["fits"].get(peer_of(name)) if name in FITS else None
            table.append(
                [
                    r["problem"],
                    f"{r['C']:g}",
                    name,
                    f"{f['cold_s']:.2f}" if "cold_s" in f else "–",
                    f"{f['seconds']:.2f}",
                    "–" if peer is None else f"{f['seconds'] / peer['seconds']:.2f}",
                    f"{f['objective']:.6g}",
                    "–"
                    if peer is None
                    else f"{100 * (f['objective'] / peer['objective'] - 1):+.3f}%",
                    f"{f['top1']:.4f} / {f.get('top5', float('nan')):.4f}",
                    f"{f['peak_mib']:.0f}",
                    f["iterations"],
                    f"{f['gap']:.1e}" if "gap" in f else "–",
                ]
            )
    overheads = [
        f"- {r['problem']}, C = {r['C']:g}: SVMClassifier's intercept costs "
        f"{r['intercept_overhead']:.2f}x the fit without it"
        for r in rows
    ]
    markdown = "\n".join(
        [
            "## Linear-probe features: svmjax vs LinearSVC (Crammer–Singer)",
            "",
            markdown_table(
                ["problem", "train", "test", "mean", "zeros", "row norm", "scale p90/p10"],
                [
                    [
                        s["problem"],
                        f"{s['n'] - s['test']} x {s['d']}",
                        s["test"],
                        f"{s['mean']:.3f}",
                        f"{s['zeros']:.2f}",
                        f"{s['row_norm']:.1f}",
                        f"{s['scale_p90_p10']:.1f}",
                    ]
                    for s in sizes
                ],
            ),
            "",
            "svmjax at tol = 1e-3: cold = first call after jax.clear_caches(), warm = the "
            "second; LinearSVC with its defaults, timed once (+ intercept: penalised). "
            "÷ LinearSVC and the objective's difference: against the LinearSVC fit of the "
            "same intercept setting. Objectives by primal_objective in float64 (intercept "
            "unpenalised); top-1 / top-5 on the held-out rows; peak memory = resident-set "
            "growth during the (warm) fit; LinearSVC's iterations are its passes.",
            "",
            markdown_table(
                [
                    "problem",
                    "C",
                    "fit",
                    "cold s",
                    "warm s",
                    "÷ LinearSVC",
                    "objective",
                    "vs LinearSVC",
                    "top-1 / top-5",
                    "peak MiB",
                    "iterations",
                    "certified gap",
                ],
                table,
            ),
            "",
            *overheads,
        ]
    )
    return {"sizes": sizes, "rows": rows}, markdown


def _table(config: Config) -> tuple[dict, str]:
    n, d = config.table_shape
    n, C, rows = _rows(n, config), config.table_C, []
    for n_classes in config.table_classes:
        if not _wanted(n_classes, config):
            continue
        X, y = blobs(config.seed, n, d, n_classes)
        ours = _measure("solve", X, y, X, y, C, config)
        theirs = _measure("LinearSVC", X, y, X, y, C, config) if config.peer else None
        # solve's default method for this problem (no intercept, dense X): see solve(method=)
        coordinate = n_classes > dual_coordinate.MANY_CLASSES and jax.default_backend() == "cpu"
        method = "coordinate" if coordinate else "continuation"
        rows.append({"classes": n_classes, "method": method, "svmjax": ours, "liblinear": theirs})
        print(rows[-1], flush=True)
    table = [
        [
            r["classes"],
            r["method"],
            f"{r['svmjax']['seconds']:.2f} s",
            r["svmjax"]["iterations"],
            f"{1e3 * r['svmjax']['seconds'] / max(r['svmjax']['iterations'], 1):.1f} ms",
            *(
                ["–"] * 4 + [f"{r['svmjax']['objective']:.4f}"]
                if r["liblinear"] is None
                else [
                    f"{r['liblinear']['seconds']:.2f} s",
                    r["liblinear"]["iterations"],
                    f"{r['svmjax']['seconds'] / r['liblinear']['seconds']:.2f}",
                    f"{r['svmjax']['objective']:.4f} vs {r['liblinear']['objective']:.4f}",
                ]
            ),
        ]
        for r in rows
    ]
    markdown = "\n".join(
        [
            f"## Well-separated classes, {n} x {d}, C = {C:g}, no intercept: solve (warm) vs "
            "LinearSVC",
            "",
            markdown_table(
                [
                    "classes",
                    "method",
                    "svmjax",
                    "iterations / passes",
                    "per iteration / pass",
                    "LinearSVC",
                    "passes",
                    "ratio",
                    "objective (svmjax vs LinearSVC)",
                ],
                table,
            ),
        ]
    )
    return {"shape": [n, d], "C": C, "rows": rows}, markdown


def _device_peak_mib() -> float | None:
    """The device's peak memory in use since the process started (None where JAX does not
    report it, as on CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def _fit(config: Config) -> tuple[dict, str]:
    n, d, n_classes = config.fit_shape
    n = _rows(n, config)
    X, y = features(config.seed, n, d, n_classes)
    params = linear.init(jax.random.key(0), d, n_classes)
    steps = -(-n // config.fit_batch)
    run = dict(key=jax.random.key(1), batch_size=config.fit_batch, loss=LOSS)
    results: dict = {"shape": [n, d, n_classes], "steps_per_epoch": steps}

    def timed(fn, **options):
        """Cold (one epoch, compiling) then warm (``fit_epochs``) seconds, RSS growth."""
        jax.clear_caches()
        start = time.perf_counter()
        jax.block_until_ready(fn(params, X, y, epochs=1, **run, **options))
        cold = time.perf_counter() - start
        with PeakRSS() as memory:
            start = time.perf_counter()
            jax.block_until_ready(fn(params, X, y, epochs=config.fit_epochs, **run, **options))
            warm = time.perf_counter() - start
        per_step = warm / (config.fit_epochs * steps)
        return {"cold_s": cold, "warm_s": warm, "per_step_ms": 1e3 * per_step} | {
            "peak_mib": memory.mib,
            "device_peak_mib": _device_peak_mib(),
        }

    results["fit"] = timed(train.fit)
    print("fit", results["fit"], flush=True)
    results["fit_top5"] = timed(train.fit, top_k=(5,))
    print("fit, top_k=(5,)", results["fit_top5"], flush=True)
    accuracy = jax.jit(lambda p, X, y: jnp.mean(linear.predict(p, X) == y))
    X_device, y_device = jax.device_put(X), jax.device_put(y)
    jax.block_until_ready(accuracy(params, X_device, y_device))
    start = time.perf_counter()
    jax.block_until_ready(accuracy(params, X_device, y_device))
    results["accuracy_pass_s"] = time.perf_counter() - start
    per_step = (results["fit"]["warm_s"] / config.fit_epochs - results["accuracy_pass_s"]) / steps
    results["fit"]["per_step_ms_without_accuracy_pass"] = 1e3 * per_step
    lrs, regs = config.grid_learning_rates, config.grid_regs
    results["grid_size"] = len(lrs) * len(regs)
    results["fit_grid"] = timed(grid.fit_grid, learning_rates=lrs, regs=regs)
    print("fit_grid", results["fit_grid"], flush=True)
    cells = [
        ["fit", results["fit"]],
        ["fit, top_k=(5,)", results["fit_top5"]],
        [f"fit_grid, {len(lrs)} x {len(regs)} grid", results["fit_grid"]],
    ]
    markdown = "\n".join(
        [
            f"## Minibatch training at {n_classes} classes: {n} x {d}, batch "
            f"{config.fit_batch} ({steps} steps an epoch), {LOSS}",
            "",
            markdown_table(
                ["run", "cold s (1 epoch)", f"warm s ({config.fit_epochs} epochs)", "ms / step"]
                + ["peak MiB (RSS)", "device peak MiB"],
                [
                    [
                        name,
                        f"{r['cold_s']:.2f}",
                        f"{r['warm_s']:.2f}",
                        f"{r['per_step_ms']:.2f}",
                        f"{r['peak_mib']:.0f}",
                        "–" if r["device_peak_mib"] is None else f"{r['device_peak_mib']:.0f}",
                    ]
                    for name, r in cells
                ],
            ),
            "",
            f"An epoch includes its accuracy pass over all {n} rows "
            f"({results['accuracy_pass_s']:.3f} s alone): without it, fit takes "
            f"{results['fit']['per_step_ms_without_accuracy_pass']:.2f} ms a step. fit_grid's "
            f"ms / step is the whole grid's ({results['grid_size']} configurations).",
        ]
    )
    return results, markdown


def _imagenet(config: Config) -> tuple[dict, str]:
    n, d, n_classes = config.imagenet_shape
    n, n_test = _rows(n, config), _rows(config.imagenet_test, config)
    start = time.perf_counter()
    X_all, y_all = features(config.seed, n + n_test, d, n_classes)
    drawn = time.perf_counter() - start
    X, y, X_test, y_test = X_all[:n], y_all[:n], X_all[n:], y_all[n:]
    results: dict = {"shape": [n, d, n_classes], "test": n_test, "draw_s": drawn}
    results["GiB"] = X.nbytes / 2**30
    print(f"drew {n + n_test} x {d} in {drawn:.1f} s ({results['GiB']:.1f} GiB)", flush=True)
    C = config.imagenet_C

    # Full-precision float32 products: accelerators round them shorter by default; CPU's
    # are full precision already (and the context would compile another program there).
    cpu = jax.default_backend() == "cpu"

    def run(max_iter: int):
        start = time.perf_counter()
        with contextlib.nullcontext() if cpu else jax.default_matmul_precision("highest"):
            result = solve.solve(X, y, loss=LOSS, C=C, tol=config.tol, max_iter=max_iter)
            result = jax.block_until_ready(result)
        return result, time.perf_counter() - start

    _, results["first_call_s"] = run(1)
    print(f"first call (max_iter=1, compiles): {results['first_call_s']:.1f} s", flush=True)
    _, results["fixed_s"] = run(1)
    print(f"fixed costs (max_iter=1, warm): {results['fixed_s']:.1f} s", flush=True)
    result, results["solve_s"] = run(config.imagenet_max_iter)
    iterations = int(result.n_iter)
    per = (results["solve_s"] - results["fixed_s"]) / max(iterations - 1, 1)
    results |= {
        "C": C,
        "iterations": iterations,
        "max_iter": config.imagenet_max_iter,
        "per_iteration_s": per,
        "converged": bool(result.converged),
        "gap": float(result.gap / result.objective),
        "objective": float(result.objective),
        "device_peak_mib": _device_peak_mib(),
    }
    results |= _top(np.asarray(result.params["W"]), 0.0, X_test, y_test)
    line = (
        f"solve (warm): {results['solve_s']:.1f} s = fixed {results['fixed_s']:.1f} s + "
        f"{iterations} iterations x {1e3 * per:.1f} ms; converged {results['converged']}, "
        f"certified relative gap {results['gap']:.2e}, top-1 {results['top1']:.4f}, top-5 "
        f"{results.get('top5', float('nan')):.4f}"
    )
    print(line, flush=True)
    peak = results["device_peak_mib"]
    markdown = "\n".join(
        [
            f"## ImageNet-sized linear probe: {n} x {d} float32, {n_classes} classes, "
            f"C = {C:g}, tol = {config.tol:g}, full-precision products",
            "",
            f"- features drawn on the host in {drawn:.1f} s ({results['GiB']:.1f} GiB)",
            f"- first call, max_iter = 1 (compilation, checks, padding, copy to the device): "
            f"{results['first_call_s']:.1f} s",
            f"- the same again (the fixed costs, warm): {results['fixed_s']:.1f} s",
            f"- {line}",
            f"- device peak memory: {'–' if peak is None else f'{peak:.0f} MiB'}",
        ]
    )
    return results, markdown


MODES = {"probe": _probe, "table": _table, "fit": _fit, "imagenet": _imagenet}


def main(config: Config) -> dict:
    print(header(), flush=True)
    results: dict = {"config": dataclasses.asdict(config)}
    sections = ["# Many classes: svmjax vs LinearSVC, training, a linear probe", "", header()]
    for mode in config.modes:
        results[mode], markdown = MODES[mode](config)
        sections += ["", markdown]
    write(config.out, results, "\n".join(sections))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    for mode in MODES:
        parser.add_argument(f"--{mode}", action="store_true", help=f"run the {mode} mode")
    parser.add_argument("--Cs", nargs="+", type=float, default=Config.Cs)
    parser.add_argument("--classes", nargs="+", type=int, help="only these class counts")
    parser.add_argument("--scale", type=float, default=Config.scale, help="row counts times this")
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--max-iter", type=int, default=Config.max_iter)
    parser.add_argument("--no-peer", action="store_true", help="svmjax alone, no LinearSVC")
    parser.add_argument("--fit-epochs", type=int, default=Config.fit_epochs)
    parser.add_argument("--imagenet-C", type=float, default=Config.imagenet_C)
    parser.add_argument("--imagenet-max-iter", type=int, default=Config.imagenet_max_iter)
    args = parser.parse_args()
    modes = tuple(mode for mode in MODES if getattr(args, mode)) or ("probe",)
    main(
        Config(
            out=args.out,
            modes=modes,
            Cs=tuple(args.Cs),
            classes=None if args.classes is None else tuple(args.classes),
            scale=args.scale,
            seed=args.seed,
            max_iter=args.max_iter,
            peer=not args.no_peer,
            fit_epochs=args.fit_epochs,
            imagenet_C=args.imagenet_C,
            imagenet_max_iter=args.imagenet_max_iter,
        )
    )
