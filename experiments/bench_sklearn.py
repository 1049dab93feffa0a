"""What a scikit-learn user feels: ``SVMClassifier`` vs ``LinearSVC`` (Crammer–Singer) in
cross-validation and a grid search, each in a fresh process, cold and with a warm cache.

Tasks, on digits (1797 x 64, 10 classes) with ``StandardScaler``:

* ``cv``: 5-fold cross-validation (``cross_validate``, which also hands back each fold's
  estimator and so its ``n_iter_``) of ``SVMClassifier(loss="crammer_singer", C=0.1)`` vs
  ``LinearSVC(multi_class="crammer_singer", C=0.1)``, both fitting an intercept (their
  defaults);
* ``grid``: ``GridSearchCV`` over 3 values of ``C`` x 3 folds (and the refit);
* ``fits``: three fits on new row counts (1797, 1437 and 1000 rows, in that order), each
  of which may need a program of its own.

Every measurement runs in a new Python process, as a user's script would: ``cold`` starts
with an empty persistent compilation cache (:func:`svmjax.cache.enable` on a new folder,
so it pays for compilation and fills the cache), ``warm`` is the next process on the same
folder; for ``cv`` and ``grid``, ``warm, tol=0.01`` runs once more on that folder with
``SVMClassifier(tol=1e-2)``, a certified relative duality gap of 1% (the same program:
``tol`` is not static), to show the speed at LinearSVC's accuracy (its default stops
about 1.5% above the optimum on these folds). The times are the task alone (``task_s``),
the part of it JAX spent building programs (``compile_s``: tracing, lowering and XLA
compilation or loading them from the cache, from JAX's monitoring events) and the rest
(``run_s``), and the imports (``import_s``: svmjax and JAX, or scikit-learn's
estimator). One repeat per variant on a shared machine: compare ratios, and expect
noise. Writes ``results.json`` and ``results.md``.

    python experiments/bench_sklearn.py [--out results/bench_sklearn]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import compile_seconds, compile_since, header, markdown_table, write


@dataclasses.dataclass(frozen=True)
class Config:
    out: str = "results/bench_sklearn"
    tasks: tuple[str, ...] = ("cv", "grid", "fits")
    C: float = 0.1
    folds: int = 5
    grid_Cs: tuple[float, ...] = (0.01, 0.1, 1.0)
    grid_folds: int = 3
    n_samples: int | None = None  # None: all of digits
    max_iter: int | None = None  # None: the estimators' defaults
    fit_rows: tuple[int, ...] = (1797, 1437, 1000)
    tol: float | None = None  # None: SVMClassifier's default (a certified gap of 1e-3)
    # cv and grid also run warm at this looser certified gap (same program: tol is not
    # static), the speed at LinearSVC's accuracy; None: not run.
    loose_tol: float | None = 1e-2


def _child(kind: str, task: str, config: Config, cache_dir: str | None) -> dict:
    """Run one task in this (fresh) process; return its timings."""
    start = time.perf_counter()
    if kind == "svmjax":
        import svmjax.cache
        from svmjax.estimator import SVMClassifier

        if cache_dir is not None:
            svmjax.cache.enable(cache_dir)
        estimator = SVMClassifier(loss="crammer_singer", C=config.C)
        if config.tol is not None:
            estimator.set_params(tol=config.tol)
        if config.max_iter is not None:
            estimator.set_params(max_iter=config.max_iter)
    else:
        from sklearn.svm import LinearSVC

        estimator = LinearSVC(multi_class="crammer_singer", C=config.C)
        if config.max_iter is not None:
            estimator.set_params(max_iter=config.max_iter)
    import warnings

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.simplefilter("ignore", ConvergenceWarning)
    import_s = time.perf_counter() - start
    X, y = load_digits(return_X_y=True)
    X, y = X[: config.n_samples], y[: config.n_samples]
    pipeline = make_pipeline(StandardScaler(), estimator)
    compiled = compile_seconds()
    start, fits, iterations = time.perf_counter(), [], []
    if task == "cv":
        cv = cross_validate(pipeline, X, y, cv=config.folds, return_estimator=True)
        score = float(cv["test_score"].mean())
        iterations = [int(np.max(fitted.steps[-1][1].n_iter_)) for fitted in cv["estimator"]]
    elif task == "grid":
        name = pipeline.steps[-1][0]
        search = GridSearchCV(pipeline, {f"{name}__C": list(config.grid_Cs)}, cv=config.grid_folds)
        score = float(search.fit(X, y).best_score_)
    else:  # one fit per row count, each timed
        for n in config.fit_rows:
            before, fit_start = compile_seconds(), time.perf_counter()
            pipeline.fit(X[:n], y[:n])
            fits.append(
                {
                    "rows": n,
                    "s": time.perf_counter() - fit_start,
                    "compile_s": compile_since(before),
                }
            )
        score = float(pipeline.score(X, y))
    task_s, compile_s = time.perf_counter() - start, compile_since(compiled)
    return {
        "import_s": import_s,
        "task_s": task_s,
        "compile_s": compile_s,
        "run_s": task_s - compile_s,
        "score": score,
        "fits": fits,
        "iterations": iterations,
    }


def _spawn(kind: str, task: str, config: Config, cache_dir: Path | None) -> dict:
    fields = json.dumps(dataclasses.asdict(config))
    command = [sys.executable, __file__, "--child", kind, task, fields]
    if cache_dir is not None:
        command.append(str(cache_dir))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} {task} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(config: Config) -> dict:
    out = Path(config.out)
    print(header(), flush=True)
    rows = []
    for task in config.tasks:
        cache_dir = out / "cache" / task
        shutil.rmtree(cache_dir, ignore_errors=True)
        liblinear = _spawn("liblinear", task, config, None)
        cold = _spawn("svmjax", task, config, cache_dir)  # empty cache: compiles, fills it
        warm = _spawn("svmjax", task, config, cache_dir)
        runs = [("LinearSVC", liblinear), ("cold", cold), ("warm", warm)]
        if config.loose_tol is not None and task != "fits":
            loose = dataclasses.replace(config, tol=config.loose_tol)
            runs.append(
                (f"warm, tol={config.loose_tol:g}", _spawn("svmjax", task, loose, cache_dir))
            )
        for variant, timing in runs:
            rows.append({"task": task, "variant": variant, **timing})
            rows[-1]["vs_LinearSVC"] = timing["task_s"] / liblinear["task_s"]
        print(json.dumps(rows[-len(runs) :]), flush=True)
    table = markdown_table(
        [
            "task",
            "run",
            "task (s)",
            "compile (s)",
            "rest (s)",
            "imports (s)",
            "vs LinearSVC",
            "score",
            "iterations per fold",
        ],
        [
            [
                r["task"],
                r["variant"],
                f"{r['task_s']:.2f}",
                f"{r['compile_s']:.2f}",
                f"{r['run_s']:.2f}",
                f"{r['import_s']:.2f}",
                f"{r['vs_LinearSVC']:.1f}x",
                f"{r['score']:.4f}",
                " ".join(map(str, r["iterations"])),
            ]
            for r in rows
        ],
    )
    fit_rows = [
        [r["variant"], *(f"{f['s']:.2f} ({f['compile_s']:.2f})" for f in r["fits"])]
        for r in rows
        if r["fits"]
    ]
    fits = ""
    if fit_rows:
        fits = "\n\nOne fit per row count, seconds (of which building programs):\n\n" + (
            markdown_table(["run", *(f"{n} rows" for n in config.fit_rows)], fit_rows)
        )
    markdown = (
        f"# SVMClassifier vs LinearSVC (Crammer-Singer, C={config.C}) on digits, "
        "fresh processes\n\n" + table + fits
    )
    results = {"config": dataclasses.asdict(config), "rows": rows}
    write(out, results, markdown)
    shutil.rmtree(out / "cache", ignore_errors=True)
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, task, fields = sys.argv[2:5]
        values = json.loads(fields)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        cache = sys.argv[5] if len(sys.argv) > 5 else None
        print(json.dumps(_child(kind, task, Config(**values), cache)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument(
        "--tasks", nargs="+", choices=("cv", "grid", "fits"), default=list(Config.tasks)
    )
    args = parser.parse_args()
    main(Config(out=args.out, tasks=tuple(args.tasks)))
