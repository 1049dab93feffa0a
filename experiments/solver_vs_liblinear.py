"""The exact solver (``svmjax.solve``) against liblinear (scikit-learn's ``LinearSVC``) and
against a long dual coordinate-ascent run: objective, duality gap, accuracy and time.

1. Crammer–Singer on standardised digits, ``fit_intercept=False``, for each C: both
   objectives computed by one formula (``svmjax.solve.primal_objective``, float64) from the
   weights, test accuracy, and wall time as a ratio to ``LinearSVC(multi_class=
   "crammer_singer", tol=1e-6, max_iter=100000)``'s, measured in this run.
2. Weston–Watkins and one-vs-rest (hinge and squared hinge, no intercept) against another
   method run to a tight duality gap: ``LinearSVC(multi_class="ovr")`` for one-vs-rest (the
   same objective), and for Weston–Watkins, which liblinear lacks, a float64 dual
   coordinate ascent written here (one coordinate at a time, exact steps).
3. Optionally (``--mnist1d``, slow): mnist1d at C=1 with LinearSVC's defaults — the setting
   a user gets, intercept on, which liblinear implements as a penalised constant feature —
   against ``solve`` on the same problem (``conventions.liblinear_features``).

Timings: svmjax's first call includes compilation and is reported separately; "time" is the
best of ``repeats`` warm runs, and so is LinearSVC's. Writes ``results.json`` and
``results.md`` into the output folder.

    python experiments/solver_vs_liblinear.py [--out results/solver_vs_liblinear] [--mnist1d]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import environment, header
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from svmjax import conventions, data
from svmjax.gradcheck import x64
from svmjax.solve import primal_objective, solve


@dataclasses.dataclass
class Config:
    out: str = "results/solver_vs_liblinear"
    Cs: tuple[float, ...] = (0.01, 0.1, 1.0)
    tol: float = 1e-3  # solve's relative duality gap (its default)
    tol_float64: float | None = 1e-5  # also run solve in float64 at this gap (None: skip)
    liblinear_tol: float = 1e-6
    liblinear_max_iter: int = 100_000
    repeats: int = 3
    max_train: int | None = None  # shrink the training set (smoke test)
    references: tuple[tuple[str, bool], ...] = (
        ("weston_watkins", False),
        ("weston_watkins", True),
        ("one_vs_rest", False),
        ("one_vs_rest", True),
    )
    reference_C: float = 0.1
    reference_gap: float = 1e-8  # the dual coordinate ascent runs to this relative gap
    reference_max_epochs: int = 20_000
    mnist1d: bool = False
    mnist1d_C: float = 1.0


def _best_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def _objective(W, X, y, C, loss="crammer_singer", squared=False, b=None) -> float:
    """liblinear's primal in float64, from the weights only (same formula for everyone)."""
    with x64():
        params = {"W": jnp.asarray(W, jnp.float64)}
        if b is not None:
            params["b"] = jnp.asarray(b, jnp.float64)
        X64 = jnp.asarray(np.asarray(X, np.float64))
        return float(primal_objective(params, X64, y, C=C, loss=loss, squared=squared))


def _accuracy(W, X, y, b=None) -> float:
    scores = np.asarray(X, np.float64) @ np.asarray(W, np.float64)
    if b is not None:
        scores = scores + np.asarray(b)[None, :]
    return float(np.mean(np.argmax(scores, axis=1) == y))


def _run_solve(X, y, C, *, tol, repeats, dtype=np.float32, **options):
    X = np.asarray(X, dtype)

    def run():
        result = solve(X, y, C=C, tol=tol, max_iter=100_000, **options)
        jax.block_until_ready(result)
        return result

    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    seconds, result = _best_time(run, repeats)
    return result, seconds, first


def _run_liblinear(X, y, C, repeats, **options):
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return LinearSVC(C=C, **options).fit(np.asarray(X, np.float64), y)

    seconds, model = _best_time(run, repeats)
    converged = bool(np.max(model.n_iter_) < options.get("max_iter", 1000))
    return model, seconds, converged


def crammer_singer_vs_liblinear(ds, config: Config) -> list[dict]:
    X, y, X_test, y_test = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    rows = []
    for C in config.Cs:
        model, lib_time, lib_converged = _run_liblinear(
            X,
            y,
            C,
            config.repeats,
            multi_class="crammer_singer",
            fit_intercept=False,
            tol=config.liblinear_tol,
            max_iter=config.liblinear_max_iter,
        )
        lib_objective = _objective(model.coef_.T, X, y, C)
        runs = [("float32", np.float32, config.tol)]
        if config.tol_float64 is not None:
            runs.append(("float64", np.float64, config.tol_float64))
        for name, dtype, tol in runs:
            with x64() if dtype == np.float64 else contextlib.nullcontext():
                result, seconds, first = _run_solve(
                    X, y, C, tol=tol, repeats=config.repeats, dtype=dtype, loss="crammer_singer"
                )
                W = np.asarray(result.params["W"], np.float64)
                gap = float(result.gap / result.objective)
                converged, n_iter = bool(result.converged), int(result.n_iter)
            objective = _objective(W, X, y, C)
            rows.append(
                {
                    "C": C,
                    "svmjax dtype": name,
                    "svmjax tol": tol,
                    "svmjax objective": objective,
                    "liblinear objective": lib_objective,
                    "objective rel. diff": objective / lib_objective - 1,
                    "svmjax certified gap": gap,
                    "svmjax converged": converged,
                    "svmjax iterations": n_iter,
                    "svmjax test accuracy": _accuracy(W, X_test, y_test),
                    "liblinear test accuracy": _accuracy(model.coef_.T, X_test, y_test),
                    "svmjax time s": seconds,
                    "svmjax first call s": first,
                    "liblinear time s": lib_time,
                    "liblinear converged": lib_converged,
                    "time ratio svmjax/liblinear": seconds / lib_time,
                }
            )
    return rows


@jax.jit
def _ww_epoch(W, alpha, order, X, y, c, margin, squared):
    """One pass of dual coordinate ascent for Weston–Watkins (no intercept).

    Coordinates alpha_ij = c_i a_ij in [0, c_i] (hinge) or [0, inf) (squared), one at a time,
    each maximised exactly; W = sum_i x_i^T (sum_j alpha_ij e_{y_i} - alpha_i).
    """
    n_classes = W.shape[1]
    norms = jnp.sum(X * X, axis=1)

    def example(carry, i):
        W, alpha = carry
        x, yi, ci, q = X[i], y[i], c[i], norms[i]
        ridge = jnp.where(squared, 1 / (2 * ci), 0.0)

        def coordinate(j, state):
            s, a = state
            g = margin - (s[yi] - s[j]) - a[j] * ridge
            new = jnp.maximum(0.0, a[j] + g / (2 * q + ridge))
            new = jnp.where(squared, new, jnp.minimum(new, ci))
            new = jnp.where(j == yi, 0.0, new)
            d = new - a[j]
            s = s.at[yi].add(d * q).at[j].add(-d * q)
            return s, a.at[j].set(new)

        _, a = jax.lax.fori_loop(0, n_classes, coordinate, (x @ W, alpha[i]))
        delta = a - alpha[i]
        column = jax.nn.one_hot(yi, n_classes, dtype=W.dtype) * jnp.sum(delta) - delta
        return (W + jnp.outer(x, column), alpha.at[i].set(a)), None

    (W, alpha), _ = jax.lax.scan(example, (W, alpha), order)
    dual = margin * jnp.sum(alpha) - 0.5 * jnp.sum(W * W)
    dual = dual - jnp.where(squared, jnp.sum(alpha**2 / (4 * c[:, None])), 0.0)
    return W, alpha, dual


def weston_watkins_reference(X, y, C, squared, config: Config):
    """Dual coordinate ascent in float64 until its own duality gap is below the target."""
    with x64():
        X64 = jnp.asarray(np.asarray(X, np.float64))
        yj = jnp.asarray(y)
        n, k = X64.shape[0], int(y.max()) + 1
        W, alpha = jnp.zeros((X64.shape[1], k)), jnp.zeros((n, k))
        c = jnp.full(n, C, jnp.float64)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for epoch in range(1, config.reference_max_epochs + 1):
            order = jnp.asarray(rng.permutation(n))
            W, alpha, dual = _ww_epoch(W, alpha, order, X64, yj, c, 1.0, squared)
            if epoch % 25 == 0 or epoch == config.reference_max_epochs:
                primal = _objective(W, X, y, C, "weston_watkins", squared)
                if primal - float(dual) <= config.reference_gap * primal:
                    break
        seconds = time.perf_counter() - start
        return np.asarray(W), primal, float(dual), epoch, seconds


def against_other_methods(ds, config: Config) -> list[dict]:
    X, y, C = ds.X_train, ds.y_train, config.reference_C
    rows = []
    for loss, squared in config.references:
        if loss == "one_vs_rest":
            model, seconds, converged = _run_liblinear(
                X,
                y,
                C,
                1,
                multi_class="ovr",
                loss="squared_hinge" if squared else "hinge",
                fit_intercept=False,
                tol=config.liblinear_tol,
                max_iter=config.liblinear_max_iter,
            )
            reference = _objective(model.coef_.T, X, y, C, loss, squared)
            method, detail = "LinearSVC(ovr), tol=1e-6", f"converged: {converged}"
        else:
            _, reference, dual, epochs, seconds = weston_watkins_reference(X, y, C, squared, config)
            method = "dual coordinate ascent (float64)"
            detail = f"{epochs} epochs, relative gap {(reference - dual) / reference:.1e}"
        result, solve_seconds, _ = _run_solve(
            X, y, C, tol=config.tol, repeats=1, loss=loss, squared=squared
        )
        objective = _objective(result.params["W"], X, y, C, loss, squared)
        rows.append(
            {
                "loss": loss + (" (squared)" if squared else ""),
                "C": C,
                "svmjax objective": objective,
                "reference objective": reference,
                "objective rel. diff": objective / reference - 1,
                "svmjax certified gap": float(result.gap / result.objective),
                "svmjax time s": solve_seconds,
                "reference": method,
                "reference detail": detail,
                "reference time s": seconds,
            }
        )
    return rows


def mnist1d_default_liblinear(config: Config) -> list[dict]:
    ds = data.load("mnist1d")
    X, y, C = ds.X_train, ds.y_train, config.mnist1d_C
    model, lib_time, converged = _run_liblinear(X, y, C, 1, multi_class="crammer_singer")
    Xa, Xa_test = conventions.liblinear_features(X), conventions.liblinear_features(ds.X_test)
    W_lib = np.vstack([model.coef_.T, model.intercept_[None, :]])
    lib_objective = _objective(W_lib, Xa, y, C)
    rows = []
    for name, dtype, tol in (("float32", np.float32, 1e-3), ("float64", np.float64, 1e-4)):
        with x64() if dtype == np.float64 else contextlib.nullcontext():
            result, seconds, first = _run_solve(
                Xa, y, C, tol=tol, repeats=1, dtype=dtype, loss="crammer_singer"
            )
            W = np.asarray(result.params["W"], np.float64)
            gap = float(result.gap / result.objective)
        objective = _objective(W, Xa, y, C)
        rows.append(
            {
                "C": C,
                "svmjax dtype": name,
                "svmjax tol": tol,
                "svmjax objective": objective,
                "liblinear objective": lib_objective,
                "objective rel. diff": objective / lib_objective - 1,
                "svmjax certified gap": gap,
                "svmjax test accuracy": _accuracy(W, Xa_test, ds.y_test),
                "liblinear test accuracy": _accuracy(W_lib, Xa_test, ds.y_test),
                "svmjax time s": seconds,
                "svmjax first call s": first,
                "liblinear time s": lib_time,
                "liblinear converged": converged,
                "time ratio svmjax/liblinear": seconds / lib_time,
            }
        )
    return rows


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(results: dict) -> str:
    cs = [
        "C",
        "svmjax dtype",
        "svmjax objective",
        "liblinear objective",
        "objective rel. diff",
        "svmjax certified gap",
        "svmjax test accuracy",
        "liblinear test accuracy",
        "svmjax time s",
        "liblinear time s",
        "time ratio svmjax/liblinear",
        "svmjax first call s",
    ]
    parts = [
        "# svmjax.solve vs liblinear",
        "",
        f"{header(results['environment']).lstrip('# ')}; scikit-learn "
        f"{results['environment']['sklearn']}. "
        "Objectives: liblinear's primal, one float64 formula for every solver. Times: best "
        "of the warm runs; svmjax's first call (compilation included) separately.",
        "",
        f"## Crammer–Singer on digits ({results['n_train']} train, standardised, no intercept)",
        "",
        _table(results["crammer_singer"], cs),
        "",
        f"## Against other methods (digits, C={results['reference_C']}, no intercept)",
        "",
        _table(
            results["references"],
            [
                "loss",
                "svmjax objective",
                "reference objective",
                "objective rel. diff",
                "svmjax certified gap",
                "svmjax time s",
                "reference",
                "reference detail",
                "reference time s",
            ],
        ),
    ]
    if results.get("mnist1d"):
        parts += [
            "",
            "## mnist1d, LinearSVC(multi_class='crammer_singer') defaults (penalised intercept)",
            "",
            _table(results["mnist1d"], cs[:-1] + ["liblinear converged"]),
        ]
    return "\n".join(parts) + "\n"


def main(config: Config) -> dict:
    import sklearn

    print(header(), flush=True)
    ds = data.load("digits")
    if config.max_train is not None:
        ds = dataclasses.replace(
            ds, X_train=ds.X_train[: config.max_train], y_train=ds.y_train[: config.max_train]
        )
    results = {
        "config": dataclasses.asdict(config),
        "environment": environment() | {"sklearn": sklearn.__version__},
        "n_train": int(ds.X_train.shape[0]),
        "reference_C": config.reference_C,
        "crammer_singer": crammer_singer_vs_liblinear(ds, config),
        "references": against_other_methods(ds, config),
    }
    if config.mnist1d:
        results["mnist1d"] = mnist1d_default_liblinear(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(_markdown(results))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--repeats", type=int, default=Config.repeats)
    parser.add_argument("--mnist1d", action="store_true", help="also the slow mnist1d run")
    args = parser.parse_args()
    results = main(Config(out=args.out, repeats=args.repeats, mnist1d=args.mnist1d))
    print(_markdown(results))
