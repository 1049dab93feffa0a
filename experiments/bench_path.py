"""A regularisation path: ``svmjax.solve.solve_path`` (warm-started) vs independent
``solve`` calls vs ``LinearSVC(multi_class="crammer_singer")`` fits, one per ``C``.

Data: a subset of Fashion-MNIST (pixels scaled to ``[0, 1]``, IDX files read with
``svmjax.data.load_mnist``) when its folder exists, else scikit-learn's digits (scaled
to ``[0, 1]``). No intercept on either side, so both minimise the same primal, and each
``LinearSVC`` solution is scored with ``svmjax.solve.primal_objective``. Compilation is
paid (and timed) once before the timed runs, which share that program. One repeat per
variant on a shared machine: compare ratios. Writes ``results.json`` and ``results.md``.

    python experiments/bench_path.py [--out results/bench_path] [--n 5000]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from common import header, markdown_table, write

from svmjax import data, solve


@dataclasses.dataclass(frozen=True)
class Config:
    out: str = "results/bench_path"
    data_dir: str = "/usr/share/datasets/fashion-mnist"
    n: int = 5000
    Cs: tuple[float, ...] = tuple(float(c) for c in np.geomspace(1e-3, 1e-1, 8))
    loss: str = "crammer_singer"
    tol: float = 1e-3


def _data(config: Config) -> tuple[np.ndarray, np.ndarray, str]:
    if Path(config.data_dir).is_dir():
        ds = data.load_mnist(config.data_dir, preprocess=None, val_fraction=0.0)
        name = f"Fashion-MNIST ({config.data_dir})"
        X, y = ds.X_train, ds.y_train
    else:
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X, name = X / 16.0, "digits (Fashion-MNIST not found)"
    n = min(config.n, len(y))
    return np.asarray(X[:n], np.float32), np.asarray(y[:n], np.int32), name


def main(config: Config) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    print(header(), flush=True)
    X, y, name = _data(config)
    options = dict(loss=config.loss, tol=config.tol)
    start = time.perf_counter()
    jax.block_until_ready(solve.solve(X, y, C=config.Cs[0], max_iter=1, **options))
    compile_s = time.perf_counter() - start

    start = time.perf_counter()
    path = jax.block_until_ready(solve.solve_path(X, y, config.Cs, **options))
    path_s = time.perf_counter() - start
    start = time.perf_counter()
    alone = [jax.block_until_ready(solve.solve(X, y, C=C, **options)) for C in config.Cs]
    alone_s = time.perf_counter() - start
    start, liblinear = time.perf_counter(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in config.Cs:
            model = LinearSVC(multi_class="crammer_singer", C=C, fit_intercept=False).fit(X, y)
            liblinear.append({"W": model.coef_.T.astype(np.float32)})
    liblinear_s = time.perf_counter() - start

    rows = []
    for C, ours, one, theirs in zip(config.Cs, path, alone, liblinear, strict=True):
        reference = float(solve.primal_objective(theirs, X, y, C=C, loss=config.loss))
        rows.append(
            {
                "C": C,
                "path_objective": float(ours.objective),
                "path_gap": float(ours.gap / ours.objective),
                "path_iterations": int(ours.n_iter),
                "solve_iterations": int(one.n_iter),
                "liblinear_objective": reference,
                "path_vs_liblinear": float(ours.objective) / reference - 1,
            }
        )
    results = {
        "config": dataclasses.asdict(config),
        "data": name,
        "shape": list(X.shape),
        "compile_s": compile_s,
        "path_s": path_s,
        "independent_solves_s": alone_s,
        "liblinear_s": liblinear_s,
        "rows": rows,
    }
    table = markdown_table(
        ["C", "path objective", "rel. gap", "path iters", "solve iters", "vs LinearSVC obj."],
        [
            [
                f"{r['C']:.3g}",
                f"{r['path_objective']:.5g}",
                f"{r['path_gap']:.1e}",
                r["path_iterations"],
                r["solve_iterations"],
                f"{100 * r['path_vs_liblinear']:+.3f}%",
            ]
            for r in rows
        ],
    )
    markdown = (
        f"# Regularisation path, {len(config.Cs)} values of C, {config.loss}, on {name} "
        f"{X.shape[0]}x{X.shape[1]}\n\n"
        f"solve_path {path_s:.2f} s, {len(config.Cs)} independent solves {alone_s:.2f} s, "
        f"{len(config.Cs)} LinearSVC fits {liblinear_s:.2f} s (compilation, paid once "
        f"before: {compile_s:.2f} s).\n\n" + table
    )
    write(config.out, results, markdown)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--n", type=int, default=Config.n)
    parser.add_argument("--data-dir", default=Config.data_dir)
    args = parser.parse_args()
    main(Config(out=args.out, n=args.n, data_dir=args.data_dir))
