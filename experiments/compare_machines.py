"""The empirical comparison of multiclass SVMs of Doğan, Glasmachers & Igel (JMLR 2016),
redone on data available offline with linear models (SGD and exact) and with random Fourier
features (exact), plus top-k accuracy of the top-k losses.

Every machine of the paper is a registered loss (the absolute-margin ones trained by
projected steps under the sum-to-zero constraint). For each data set and each of
``splits`` random train/validation/test splits (60/20/20 by default, features standardised
with training statistics), :func:`svmjax.grid.fit_grid` trains all ``learning_rates x
regs`` at once (momentum SGD, cosine decay); the configuration with the best validation
accuracy is scored on the test part. Reported: test accuracy mean ± std over the splits,
the chosen configurations, and the median wall time of one grid (every configuration
trained at once, compiled code reused after the first split).

Second part, the same machines at their optimum, on the same splits: each machine is solved
exactly (:func:`svmjax.solve.solve_path` over ``exact_Cs``, warm-started, with an
unpenalised intercept, to a certified relative duality gap ``exact_tol``) on the training
part, ``C`` is chosen by accuracy on the validation part (a hold-out, not k-fold), and that
solution is scored on the test part. Once on the standardised features ("exact linear"), once
on ``n_components`` random Fourier features of them (:mod:`svmjax.features`, a Gaussian
kernel's width ``gamma`` from the median heuristic on the training part, times each of
``gamma_scales``, chosen with ``C``; "exact with features", the nonlinear setting of Doğan et
al.). The unified template at its default options is Weston–Watkins' loss and is not solved
twice (``exact_machines``). Reported: test accuracy, the certified relative gaps, the solve
time of one path per machine (median over splits, compilation left out) and its ratio to
Weston–Watkins', every solve that stopped short of its gap or raised, and where the
machines' ranking changes between SGD, exact linear and exact with features.

Third part: top-1 … top-5 test accuracy (:func:`svmjax.metrics.top_k_accuracy`) of
Crammer–Singer, the top-k hinge (alpha, k = 1..5) and the smooth top-k loss on one data
set with many classes; each machine's configuration is chosen by validation top-k accuracy
at its own k.

Fashion-MNIST is read from IDX files (Debian's ``dataset-fashion-mnist`` puts them in
``/usr/share/datasets/fashion-mnist``); it is skipped when absent, and each split draws a
random subsample of ``fashion_subsample`` of its 70,000 images to keep the run short.

    python experiments/compare_machines.py [--out DIR] [--fashion-mnist DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np
from common import markdown_table, write

from svmjax import data, features, grid, linear, metrics, registry, solve

# The paper's machines: label -> (registered loss, loss_options).
MACHINES = {
    "WW": ("weston_watkins", {}),
    "CS": ("crammer_singer", {}),
    "OvR": ("one_vs_rest", {}),
    "LLW": ("lee_lin_wahba", {}),
    "ATS": ("absolute_sum_hinge", {}),
    "ATM": ("absolute_max_hinge", {}),
    "ADM": ("absolute_wrong_max_hinge", {}),
    "MMR": ("true_class_hinge", {}),
    "RM": ("reinforced_hinge", {}),
    "unified": ("unified_hinge", {}),
}
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


@dataclasses.dataclass
class Config:
    out: str = "results/compare_machines"
    datasets: tuple[str, ...] = ("iris", "wine", "digits", "mnist1d", "blobs", "fashion_mnist")
    fashion_mnist: str | None = FASHION_MNIST
    fashion_subsample: int = 3000  # images drawn per split (of 70,000)
    machines: tuple[str, ...] = tuple(MACHINES)
    splits: int = 5
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train / validation / test
    learning_rates: tuple[float, ...] = (0.01, 0.1)
    regs: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)
    optimizer: str = "momentum"
    schedule: str = "cosine"
    steps: int = 1000  # optimizer steps per run (epochs = ceil(steps / batches per epoch))
    batch_size: int = 64
    # exact part (solve_path with an intercept; C and gamma chosen on the validation part)
    exact: bool = True
    # The unified template at its default options is Weston–Watkins: not solved twice.
    exact_machines: tuple[str, ...] = tuple(m for m in MACHINES if m != "unified")
    exact_Cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)  # on the standardised features
    # Per data set instead of exact_Cs. Fashion-MNIST: validation accuracy falls from C =
    # 0.001 on (WW: .81, .79, .76 at 0.001, 0.01, 0.1) and a solve at C = 1 takes over
    # 5000 iterations.
    exact_Cs_per_dataset: dict[str, tuple[float, ...]] = dataclasses.field(
        default_factory=lambda: {"fashion_mnist": (0.0001, 0.001, 0.01, 0.1)}
    )
    features_Cs: tuple[float, ...] = (0.1, 1.0, 10.0)  # on the random Fourier features
    exact_tol: float = 1e-3  # certified relative duality gap
    exact_max_iter: int = 5000
    n_components: int = 1000  # random Fourier features
    gamma_scales: tuple[float, ...] = (1.0,)  # times the median heuristic's gamma
    # top-k part
    top_k_dataset: str = "fashion_mnist"  # falls back to digits when absent
    top_k_ks: tuple[int, ...] = (1, 2, 3, 4, 5)
    top_k_smooth_ks: tuple[int, ...] = (1, 2, 3, 5)
    top_k_tau: float = 1.0
    top_k_splits: int = 3


# ------------------------------------------------------------------------------ the machine


def machine_info() -> dict:
    """Where the numbers were measured (``common.machine`` when this checkout has it)."""
    try:
        from common import machine  # newer checkouts
    except ImportError:
        return {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        }
    return machine()


def machine_header(info: dict) -> str:
    try:
        from common import header
    except ImportError:
        return "machine: " + ", ".join(f"{k} {v}" for k, v in info.items())
    return header(info)


# --------------------------------------------------------------------------------- the data


def _builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """All examples of a built-in data set (train, validation and test pooled), unscaled."""
    if name in ("iris", "wine"):
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")()
        return bunch.data.astype(np.float32), bunch.target.astype(np.int32)
    if name == "fashion_mnist":
        raise ValueError("fashion_mnist is read by _pools")
    options = dict(n=2000, d=20, c=5) if name == "blobs" else {}
    ds = data.load(name, key=jax.random.key(0), preprocess=None, **options)
    X = np.concatenate([ds.X_train, ds.X_val, ds.X_test])
    return X, np.concatenate([ds.y_train, ds.y_val, ds.y_test])


def _fashion(path: str | None) -> tuple[np.ndarray, np.ndarray] | None:
    """All 70,000 Fashion-MNIST images (train and test pooled), or ``None`` when absent."""
    if path is None:
        return None
    try:
        ds = data.load_mnist(path, val_fraction=0.0, preprocess=None)
    except FileNotFoundError:
        return None
    return np.concatenate([ds.X_train, ds.X_test]), np.concatenate([ds.y_train, ds.y_test])


def _pools(config: Config, names) -> dict[str, tuple[np.ndarray, np.ndarray, int | None]]:
    """``name -> (X, y, subsample)``; Fashion-MNIST left out (with a note) when absent."""
    pools = {}
    for name in dict.fromkeys(names):
        if name == "fashion_mnist":
            pool = _fashion(config.fashion_mnist)
            if pool is None:
                print(f"Fashion-MNIST not found in {config.fashion_mnist}: skipped", flush=True)
                continue
            pools[name] = (*pool, config.fashion_subsample)
        else:
            pools[name] = (*_builtin(name), None)
    return pools


def split(X, y, fractions, seed: int, subsample: int | None = None):
    """A random train/validation/test split (of a random subsample), standardised with the
    training part's mean and standard deviation (floored at 5% of its mean, so near-constant
    features are not blown up)."""
    rng = np.random.default_rng([1234, seed])
    order = rng.permutation(len(y))[: subsample or len(y)]
    n_train, n_val = (round(f * len(order)) for f in fractions[:2])
    parts = np.split(order, [n_train, n_train + n_val])
    mean = X[parts[0]].mean(axis=0)
    std = X[parts[0]].std(axis=0)
    scale = np.maximum(std, 0.05 * std.mean() + 1e-12)
    return [(((X[i] - mean) / scale).astype(np.float32), y[i].astype(np.int32)) for i in parts]


# --------------------------------------------------------------------------------- training


def _take(stacked, k: int):
    return jax.tree.map(lambda p: p[k], stacked)


def _grid(config: Config, loss: str, options: dict, train, val, n_classes: int):
    """``fit_grid`` over ``learning_rates x regs``: (result, seconds)."""
    (X, y), n = train, len(train[1])
    batch_size = min(config.batch_size, n)
    epochs = max(1, math.ceil(config.steps / math.ceil(n / batch_size)))
    params = linear.init(jax.random.key(1), X.shape[1], n_classes)
    start = time.perf_counter()
    result = grid.fit_grid(
        params, X, y, key=jax.random.key(2), learning_rates=config.learning_rates,
        regs=config.regs, optimizer=config.optimizer, schedule=config.schedule,
        validation=val, epochs=epochs, batch_size=batch_size, loss=loss,
        loss_options=options or None,
    )  # fmt: skip
    jax.block_until_ready(result.params)
    return result, time.perf_counter() - start


def _accuracy(params, X, y) -> float:
    return float(np.mean(np.asarray(linear.predict(params, X)) == y))


def compare(config: Config, pools) -> list[dict]:
    results = []
    for ds_name, (X, y, subsample) in pools.items():
        n_classes = int(y.max()) + 1
        for label in config.machines:
            loss, options = MACHINES[label]
            tests, seconds, chosen = [], [], []
            for seed in range(config.splits):
                train, val, test = split(X, y, config.fractions, seed, subsample)
                result, took = _grid(config, loss, options, train, val, n_classes)
                tests.append(_accuracy(_take(result.params, result.best), *test))
                seconds.append(took)
                chosen.append(result.configs[result.best][:2])
            row = {
                "dataset": ds_name,
                "machine": label,
                "loss": loss,
                "n_train": len(train[1]),
                "n_features": X.shape[1],
                "n_classes": n_classes,
                "test_accuracy": tests,
                "mean": float(np.mean(tests)),
                "std": float(np.std(tests)),
                "chosen_lr_reg": chosen,
                "seconds_first": seconds[0],  # with compilation
                "seconds_median": float(np.median(seconds[1:] or seconds)),
            }
            results.append(row)
            print(
                f"{ds_name:>13} {label:>7}: {row['mean']:.4f} ± {row['std']:.4f} "
                f"({row['seconds_median']:.2f} s per grid)",
                flush=True,
            )
    return results


# ------------------------------------------------------------------------ exact solutions


def median_gamma(X: np.ndarray, seed: int, pairs: int = 2000) -> float:
    """The median heuristic: ``1 / median |x - x'|^2`` over random pairs of distinct rows."""
    rng = np.random.default_rng([4321, seed])
    i, j = rng.integers(len(X), size=(2, pairs))
    squared = np.sum((X[i] - X[j]).astype(np.float64) ** 2, axis=1)
    return float(1.0 / np.median(squared[squared > 0]))


def _feature_parts(config: Config, parts, seed: int):
    """``[(gamma, (train, val, test))]``: the three parts through random Fourier features,
    one map (drawn from the split's seed) per scale of the median heuristic's gamma."""
    train = parts[0]
    gamma = median_gamma(train[0], seed)
    mapped = []
    for scale in config.gamma_scales:
        params = features.fourier_features(
            jax.random.key(seed), train[0].shape[1], config.n_components, gamma=gamma * scale
        )
        to = [(np.asarray(features.fourier_transform(params, X)), y) for X, y in parts]
        mapped.append((gamma * scale, tuple(to)))
    return mapped


def _exact_split(config: Config, loss, options, candidates, Cs, n_classes: int) -> dict:
    """One machine on one split: a warm-started ``solve_path`` per candidate feature map;
    ``(gamma, C)`` chosen by validation accuracy (ties: the first, so the smaller ``C``)."""
    best, solves, failures, seconds = None, [], [], 0.0
    for gamma, (train, val, test) in candidates:
        start = time.perf_counter()
        try:
            path = solve.solve_path(
                *train, Cs, loss=loss, fit_intercept=True, n_classes=n_classes,
                tol=config.exact_tol, max_iter=config.exact_max_iter,
                loss_options=options or None,
            )  # fmt: skip
            jax.block_until_ready([r.params for r in path])
        except Exception as error:  # reported with the machine, data and Cs, never hidden
            failures.append({"gamma": gamma, "Cs": list(Cs), "error": repr(error)})
            continue
        seconds += time.perf_counter() - start
        for C, result in zip(Cs, path, strict=True):
            record = {
                "gamma": gamma,
                "C": C,
                "relative_gap": float(result.gap / result.objective),
                "converged": bool(result.converged),
                "stalled": bool(result.stalled),
                "n_iter": int(result.n_iter),
            }
            solves.append(record)
            if not record["converged"]:
                failures.append({**record, "error": "stopped short of the gap"})
            score = _accuracy(result.params, *val)
            if best is None or score > best[0]:
                best = (score, record, _accuracy(result.params, *test))
    if best is None:
        return {"test": float("nan"), "solves": solves, "failures": failures, "seconds": seconds}
    return {
        "test": best[2],
        "chosen": best[1],
        "solves": solves,
        "failures": failures,
        "seconds": seconds,
    }


def _grid_of(config: Config, ds_name: str, setting: str) -> tuple[float, ...]:
    """The values of ``C`` a data set's paths run over in ``setting``."""
    if setting == "features":
        return config.features_Cs
    return config.exact_Cs_per_dataset.get(ds_name, config.exact_Cs)


def exact_compare(config: Config, pools, setting: str) -> list[dict]:
    """Every machine solved exactly on every split: ``setting`` is ``"exact"`` (the
    standardised features) or ``"features"`` (random Fourier features of them)."""
    results = []
    for ds_name, (X, y, subsample) in pools.items():
        n_classes = int(y.max()) + 1
        machines = [m for m in config.machines if m in config.exact_machines]
        runs = {label: [] for label in machines}
        start = time.perf_counter()
        for seed in range(config.splits):
            parts = split(X, y, config.fractions, seed, subsample)
            if setting == "exact":
                candidates, Cs = [(None, tuple(parts))], _grid_of(config, ds_name, setting)
            else:
                candidates = _feature_parts(config, parts, seed)
                Cs = _grid_of(config, ds_name, setting)
            for label in machines:
                loss, options = MACHINES[label]
                run = _exact_split(config, loss, options, candidates, Cs, n_classes)
                runs[label].append(run)
                for failure in run["failures"]:
                    print(f"{ds_name} {setting} {label} split {seed}: {failure}", flush=True)
        print(f"{ds_name} {setting}: {time.perf_counter() - start:.0f} s", flush=True)
        for label, per_split in runs.items():
            tests = [r["test"] for r in per_split]
            seconds = [r["seconds"] for r in per_split]
            chosen = [r.get("chosen") for r in per_split]
            gaps = [s["relative_gap"] for r in per_split for s in r["solves"]]
            row = {
                "dataset": ds_name,
                "machine": label,
                "loss": MACHINES[label][0],
                "setting": setting,
                "n_features": candidates[0][1][0][0].shape[1],
                "test_accuracy": tests,
                "mean": float(np.mean(tests)),
                "std": float(np.std(tests)),
                "chosen_C": [c and c["C"] for c in chosen],
                "chosen_gamma": [c and c["gamma"] for c in chosen],
                "gap_chosen_max": max((c["relative_gap"] for c in chosen if c), default=None),
                "gap_max": max(gaps, default=None),
                "n_solves": len(gaps),
                "failures": [
                    {"split": seed, **f} for seed, r in enumerate(per_split) for f in r["failures"]
                ],
                "seconds": seconds,
                "seconds_first": seconds[0],  # with compilation
                "seconds_median": float(np.median(seconds[1:] or seconds)),
            }
            results.append(row)
            print(
                f"{ds_name:>13} {label:>7} {setting:>8}: {row['mean']:.4f} ± {row['std']:.4f} "
                f"({row['seconds_median']:.2f} s per path, largest relative gap "
                f"{row['gap_max'] if row['gap_max'] is None else format(row['gap_max'], '.1e')})",
                flush=True,
            )
    return results


SETTINGS = {"sgd": "SGD", "exact": "exact linear", "features": "exact + RFF"}


def _clear(a: list[float], b: list[float]) -> int:
    """+1 / -1 when ``a`` beats / trails ``b`` by more than twice the standard error of the
    paired differences over the splits (the same splits), 0 otherwise."""
    diff = np.asarray(a) - np.asarray(b)
    if len(diff) < 2 or not np.all(np.isfinite(diff)):
        return 0
    error = diff.std(ddof=1) / np.sqrt(len(diff))
    mean = diff.mean()
    return int(np.sign(mean)) if abs(mean) > 2 * error and mean != 0 else 0


def rankings(by_setting: dict[str, list[dict]]) -> dict:
    """Per data set: each setting's ranks (1 = best mean test accuracy; ties share the
    better rank), Kendall's tau between settings, and the clear flips: pairs of machines
    whose order is clear (:func:`_clear`) in two settings and opposite."""
    from scipy import stats

    out = {}
    datasets = list(dict.fromkeys(r["dataset"] for rows in by_setting.values() for r in rows))
    for ds_name in datasets:
        tables = {
            s: {r["machine"]: r for r in rows if r["dataset"] == ds_name and np.isfinite(r["mean"])}
            for s, rows in by_setting.items()
        }
        machines = [m for m in next(iter(tables.values())) if all(m in t for t in tables.values())]
        ranks = {
            s: {m: 1 + sum(t[o]["mean"] > t[m]["mean"] for o in machines) for m in machines}
            for s, t in tables.items()
        }
        taus, flips = {}, []
        names = list(tables)
        for i, s1 in enumerate(names):
            for s2 in names[i + 1 :]:
                tau = stats.kendalltau(
                    [ranks[s1][m] for m in machines], [ranks[s2][m] for m in machines]
                )
                taus[f"{s1}~{s2}"] = float(tau.statistic)
                for j, a in enumerate(machines):
                    for b in machines[j + 1 :]:
                        one = _clear(tables[s1][a]["test_accuracy"], tables[s1][b]["test_accuracy"])
                        two = _clear(tables[s2][a]["test_accuracy"], tables[s2][b]["test_accuracy"])
                        if one * two < 0:
                            first, second = (a, b) if one > 0 else (b, a)
                            flips.append(
                                {
                                    "from": s1,
                                    "to": s2,
                                    "ahead": first,
                                    "behind": second,
                                    "from_means": [
                                        tables[s1][first]["mean"],
                                        tables[s1][second]["mean"],
                                    ],
                                    "to_means": [
                                        tables[s2][first]["mean"],
                                        tables[s2][second]["mean"],
                                    ],
                                }
                            )
        out[ds_name] = {"ranks": ranks, "kendall_tau": taus, "flips": flips}
    return out


def _top_k_accuracies(result, X, y, k: int) -> list[float]:
    """Validation top-``k`` accuracy of every configuration of a grid (diverged ones: -1)."""
    accuracies = []
    for i in range(len(result.configs)):
        value = float(metrics.top_k_accuracy(linear.scores(_take(result.params, i), X), y, k))
        alive = np.isfinite(result.history["objective"][i, -1])
        accuracies.append(value if alive and np.isfinite(value) else -1.0)
    return accuracies


def top_k(config: Config, X, y, subsample, ds_name: str) -> list[dict]:
    """Top-1 … top-5 test accuracy of CS, the top-k hinge and the smooth top-k loss."""
    n_classes = int(y.max()) + 1
    ks = [k for k in config.top_k_ks if k <= n_classes]
    variants = [("CS", "crammer_singer", {}, 1)]
    variants += [(f"top-{k} hinge", "top_k_hinge", {"k": k}, k) for k in ks]
    variants += [
        (f"smooth top-{k}", "smooth_top_k", {"k": k, "tau": config.top_k_tau}, k)
        for k in config.top_k_smooth_ks
        if k < n_classes
    ]
    rows = []
    for label, loss, options, own_k in variants:
        per_split, seconds = [], []
        for seed in range(config.top_k_splits):
            train, val, test = split(X, y, config.fractions, seed, subsample)
            result, took = _grid(config, loss, options, train, val, n_classes)
            picked = int(np.argmax(_top_k_accuracies(result, *val, own_k)))
            scores = linear.scores(_take(result.params, picked), test[0])
            per_split.append([float(metrics.top_k_accuracy(scores, test[1], j)) for j in ks])
            seconds.append(took)
        per_split = np.array(per_split)
        row = {
            "dataset": ds_name,
            "machine": label,
            "loss": loss,
            "loss_options": options,
            "k": own_k,
            "top_j": ks,
            "mean": per_split.mean(axis=0).tolist(),
            "std": per_split.std(axis=0).tolist(),
            "seconds_median": float(np.median(seconds[1:] or seconds)),
        }
        rows.append(row)
        cells = " ".join(f"{m:.4f}" for m in row["mean"])
        print(f"{ds_name:>13} {label:>15}: top-1..{ks[-1]} {cells}", flush=True)
    return rows


# ---------------------------------------------------------------------------------- outputs


def _figure(results, rows_top_k, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    machines = list(dict.fromkeys(r["machine"] for r in results))
    panels = len(datasets) + (1 if rows_top_k else 0)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")(np.arange(len(machines)) % 10)
    for ax, ds_name in zip(axes.flat, datasets, strict=False):
        by = {r["machine"]: r for r in results if r["dataset"] == ds_name}
        means = np.array([by[m]["mean"] for m in machines])
        stds = np.array([by[m]["std"] for m in machines])
        ax.bar(np.arange(len(machines)), means, yerr=stds, color=colours, capsize=2)
        low = max(0.0, float((means - stds).min()) - 0.05)
        ax.set_ylim(low, min(1.0, float((means + stds).max()) + 0.02))
        ax.set_xticks(np.arange(len(machines)), machines, rotation=60, fontsize=8)
        ax.set_title(ds_name, fontsize=10)
        ax.set_ylabel("test accuracy")
    if rows_top_k:
        ax = axes.flat[len(datasets)]
        for row in rows_top_k:
            style = "-" if row["loss"] != "smooth_top_k" else "--"
            ax.errorbar(row["top_j"], row["mean"], yerr=row["std"], fmt=style, label=row["machine"])
        ax.set_xlabel("j")
        ax.set_ylabel("test top-j accuracy")
        ax.set_title(f"top-j accuracy, {rows_top_k[0]['dataset']}", fontsize=10)
        ax.legend(fontsize=6, ncol=2)
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _figure_exact(by_setting: dict[str, list[dict]], path: Path) -> Path:
    """Per data set, each machine's test accuracy in every setting (bars, ± std over the
    splits); last panel, each machine's solve time per path relative to Weston–Watkins'.
    Machines solved exactly only (the unified template at its defaults is WW)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    settings = list(by_setting)
    exact_rows = [r for s in settings if s != "sgd" for r in by_setting[s]]
    rows = [r for rs in by_setting.values() for r in rs]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    machines = list(dict.fromkeys(r["machine"] for r in exact_rows or rows))
    by = {(r.get("setting", "sgd"), r["dataset"], r["machine"]): r for r in rows}
    panels = len(datasets) + 1
    cols = min(3, panels)
    n_rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.6 * cols, 3.3 * n_rows), squeeze=False)
    width = 0.8 / len(settings)
    x = np.arange(len(machines))
    for ax, ds_name in zip(axes.flat, datasets, strict=False):
        lows, highs = [], []
        for k, setting in enumerate(settings):
            cells = [by.get((setting, ds_name, m)) for m in machines]
            means = np.array([c["mean"] if c else np.nan for c in cells])
            stds = np.array([c["std"] if c else np.nan for c in cells])
            ax.bar(x + (k - (len(settings) - 1) / 2) * width, means, width, yerr=stds,
                   capsize=1.5, label=SETTINGS[setting])  # fmt: skip
            lows.append(np.nanmin(means - stds))
            highs.append(np.nanmax(means + stds))
        ax.set_ylim(max(0.0, min(lows) - 0.05), min(1.0, max(highs) + 0.02))
        ax.set_xticks(x, machines, rotation=60, fontsize=8)
        ax.set_title(ds_name, fontsize=10)
        ax.set_ylabel("test accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(settings), fontsize=8)
    ax = axes.flat[len(datasets)]
    markers = {"exact": "o", "features": "s"}
    colours = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(datasets)}
    for setting in [s for s in settings if s != "sgd"]:
        for ds_name in datasets:
            ww = by.get((setting, ds_name, "WW"))
            if ww is None:
                continue
            ratios = [
                by[setting, ds_name, m]["seconds_median"] / ww["seconds_median"]
                if (setting, ds_name, m) in by
                else np.nan
                for m in machines
            ]
            ax.scatter(x + (0.15 if setting == "features" else -0.15), ratios, s=12,
                       marker=markers[setting], color=colours[ds_name])  # fmt: skip
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axhline(2.0, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_yticks([0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0])
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(x, machines, rotation=60, fontsize=8)
    ax.set_ylabel("solve time / WW's")
    ax.set_title("one solve_path: o linear, s RFF", fontsize=10)
    legend = [Line2D([], [], ls="", marker="o", color=c, label=d) for d, c in colours.items()]
    ax.legend(handles=legend, fontsize=6, ncol=2)
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cell(row: dict | None) -> str:
    if row is None:
        return "–"
    if not np.isfinite(row["mean"]):
        return "raised"
    return f"{row['mean']:.4f} ± {row['std']:.4f}"


def _exact_markdown(config: Config, by_setting: dict[str, list[dict]], ranks: dict) -> list[str]:
    exact_settings = [s for s in by_setting if s != "sgd"]
    rows = [r for s in exact_settings for r in by_setting[s]]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    machines = list(dict.fromkeys(r["machine"] for r in rows))
    by = {(r["setting"], r["dataset"], r["machine"]): r for r in rows}
    lines = [
        "",
        "## Exact solutions",
        "",
        f"The same splits. Every machine solved by `solve_path` over C in "
        f"{list(config.exact_Cs)} (standardised features"
        + "".join(
            f"; {d}: {list(Cs)}" for d, Cs in config.exact_Cs_per_dataset.items() if d in datasets
        )
        + f") or {list(config.features_Cs)} (random Fourier features), warm-started, "
        "with an intercept, to a certified "
        f"relative duality gap of {config.exact_tol:g} (float32, at most "
        f"{config.exact_max_iter} L-BFGS iterations per C); C chosen on the validation "
        "part (a hold-out), the chosen solution scored on the test part. Random Fourier "
        f"features: {config.n_components} components of the Gaussian kernel, gamma = "
        f"{' or '.join(f'{g:g}' for g in config.gamma_scales)} × the median heuristic "
        "(1 / median squared distance between training rows)"
        + (", chosen with C" if len(config.gamma_scales) > 1 else "")
        + ", a new map drawn per split. The unified template at its default options is "
        "Weston–Watkins' loss, so it is not solved twice.",
    ]
    for setting in exact_settings:
        chosen = {
            d: [
                c
                for r in rows
                if r["setting"] == setting and r["dataset"] == d
                for c in r["chosen_C"]
            ]
            for d in datasets
        }
        edges = ", ".join(
            f"{d} {sum(c == min(Cs) for c in cs)} / {sum(c == max(Cs) for c in cs)} of {len(cs)}"
            for d, cs in chosen.items()
            for Cs in [_grid_of(config, d, setting)]
        )
        lines += [
            "",
            f"C chosen at the grid's lower / upper end, {SETTINGS[setting]}: {edges}.",
        ]
    for setting in exact_settings:
        table = [[m] + [_cell(by.get((setting, d, m))) for d in datasets] for m in machines]
        lines += [
            "",
            f"### Test accuracy, {SETTINGS[setting]} (mean ± std over splits)",
            "",
            markdown_table(["machine", *datasets], table),
        ]
    for setting in exact_settings:
        table = []
        for m in machines:
            cells = [m]
            for d in datasets:
                row, ww = by.get((setting, d, m)), by.get((setting, d, "WW"))
                if row is None:
                    cells.append("–")
                    continue
                ratio = f" ({row['seconds_median'] / ww['seconds_median']:.2f}×)" if ww else ""
                cells.append(f"{row['seconds_median']:.2f}{ratio}")
            table.append(cells)
        lines += [
            "",
            f"### Seconds per path, {SETTINGS[setting]} (median over splits after the first; "
            "in brackets, relative to WW's)",
            "",
            markdown_table(["machine", *datasets], table),
        ]
    table = []
    for m in machines:
        cells = [m]
        for setting in exact_settings:
            gaps = [by[setting, d, m]["gap_max"] for d in datasets if (setting, d, m) in by]
            gaps = [g for g in gaps if g is not None]
            solves = sum(by[setting, d, m]["n_solves"] for d in datasets if (setting, d, m) in by)
            short = sum(
                f["error"] == "stopped short of the gap"
                for d in datasets
                if (setting, d, m) in by
                for f in by[setting, d, m]["failures"]
            )
            cells += [f"{max(gaps):.1e}" if gaps else "–", f"{short} of {solves}"]
        table.append(cells)
    header = ["machine"]
    for setting in exact_settings:
        header += [f"{SETTINGS[setting]}: largest gap", f"{SETTINGS[setting]}: short of it"]
    lines += [
        "",
        "### Certified relative gaps (largest over every data set, split and C; solves "
        "that stopped short of the gap)",
        "",
        markdown_table(header, table),
    ]
    settings = list(by_setting)
    table = []
    for m in machines:
        cells = [m]
        for d in datasets:
            r = ranks.get(d, {}).get("ranks", {})
            cells.append(" / ".join(str(r.get(s, {}).get(m, "–")) for s in settings))
        table.append(cells)
    lines += [
        "",
        f"## Rankings: {' / '.join(SETTINGS[s] for s in settings)}",
        "",
        "Rank of each machine's mean test accuracy per data set (1 = best; ties share the "
        "better rank).",
        "",
        markdown_table(["machine", *datasets], table),
        "",
        "Kendall's tau between the settings' rankings, and the clear reversals: a pair of "
        "machines whose order is clear in two settings (mean paired difference over the same "
        "splits above twice its standard error) and opposite.",
        "",
    ]
    for d in datasets:
        info = ranks.get(d)
        if info is None:
            continue
        taus = ", ".join(
            f"{' ~ '.join(SETTINGS[s] for s in key.split('~'))} "
            + (f"{tau:.2f}" if np.isfinite(tau) else "undefined (all tied in one)")
            for key, tau in info["kendall_tau"].items()
        )
        flips = "; ".join(
            f"{f['ahead']} ahead of {f['behind']} with {SETTINGS[f['from']]} "
            f"({f['from_means'][0]:.3f} vs {f['from_means'][1]:.3f}), behind with "
            f"{SETTINGS[f['to']]} ({f['to_means'][0]:.3f} vs {f['to_means'][1]:.3f})"
            for f in info["flips"]
        )
        lines.append(
            f"- {d}: tau {taus}. " + (f"Reversals: {flips}." if flips else "No clear reversal.")
        )
    failures = [
        f"- {SETTINGS[r['setting']]}, {r['dataset']}, {r['machine']} (`{r['loss']}`), split "
        f"{f['split']}"
        + (f", gamma {f['gamma']:.4g}" if f.get("gamma") is not None else "")
        + (
            f", C = {f['C']:g}: relative gap {f['relative_gap']:.2e} after {f['n_iter']} "
            f"iterations{' (stalled)' if f['stalled'] else ''}"
            if "C" in f
            else f", Cs {f['Cs']}: raised {f['error']}"
        )
        for r in rows
        for f in r["failures"]
    ]
    lines += ["", "## Solves that stopped short of the gap or raised", ""]
    lines += failures or ["None."]
    return lines


def _markdown(config: Config, results, rows_top_k, header: str, pools) -> str:
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    machines = list(dict.fromkeys(r["machine"] for r in results))
    by = {(r["dataset"], r["machine"]): r for r in results}
    accuracy = [
        [m, registry.get(MACHINES[m][0]).name]
        + [f"{by[d, m]['mean']:.4f} ± {by[d, m]['std']:.4f}" for d in datasets]
        for m in machines
    ]
    times = [[m] + [f"{by[d, m]['seconds_median']:.2f}" for d in datasets] for m in machines]
    sizes = [
        f"{d}: {by[d, machines[0]]['n_train']} train examples, "
        f"{by[d, machines[0]]['n_features']} features, {by[d, machines[0]]['n_classes']} classes"
        + (
            f" (a subsample of {pools[d][2]} of {len(pools[d][1])} per split)"
            if pools[d][2]
            else ""
        )
        for d in datasets
    ]
    lines = [
        "# Multiclass SVMs compared (Doğan, Glasmachers & Igel 2016, linear models)",
        "",
        header,
        "",
        f"{config.splits} random {'/'.join(f'{f:g}' for f in config.fractions)} "
        "train/validation/test splits per data set, features standardised on the training "
        f"part. {config.optimizer} with {config.schedule} decay, about {config.steps} steps of "
        f"batch {config.batch_size}; learning rate in {list(config.learning_rates)} and reg "
        f"in {list(config.regs)} chosen on validation accuracy (one fit_grid per split).",
        "",
        *[f"- {s}" for s in sizes],
        "",
        "## Test accuracy (mean ± std over splits)",
        "",
        markdown_table(["machine", "loss", *datasets], accuracy),
        "",
        "## Seconds per grid (median over splits; all configurations trained at once)",
        "",
        markdown_table(["machine", *datasets], times),
    ]
    if rows_top_k:
        ks = rows_top_k[0]["top_j"]
        table = [
            [r["machine"]]
            + [f"{m:.4f} ± {s:.4f}" for m, s in zip(r["mean"], r["std"], strict=True)]
            for r in rows_top_k
        ]
        lines += [
            "",
            f"## Top-j test accuracy on {rows_top_k[0]['dataset']} "
            f"(mean ± std over {config.top_k_splits} splits; smooth top-k with tau = "
            f"{config.top_k_tau:g}; each machine tuned for validation top-k at its own k)",
            "",
            markdown_table(["machine", *[f"top-{j}" for j in ks]], table),
        ]
    return "\n".join(lines)


def main(config: Config) -> dict:
    info = machine_info()
    header = machine_header(info)
    print(header, flush=True)
    start = time.perf_counter()
    names = [*config.datasets, *([config.top_k_dataset] if config.top_k_splits else [])]
    pools = _pools(config, names)
    compared = {d: pools[d] for d in config.datasets if d in pools}
    results = compare(config, compared)
    rows_top_k = []
    if config.top_k_splits:
        name = config.top_k_dataset if config.top_k_dataset in pools else "digits"
        if name not in pools:
            pools[name] = (*_builtin(name), None)
        rows_top_k = top_k(config, *pools[name], name)
    by_setting, ranks, exact_figure = {"sgd": results}, {}, None
    if config.exact:
        for setting in ("exact", "features"):
            by_setting[setting] = exact_compare(config, compared, setting)
        ranks = rankings(by_setting)
        exact_figure = _figure_exact(by_setting, Path(config.out) / "exact.png")
    figure = _figure(results, rows_top_k, Path(config.out) / "accuracy.png")
    markdown = _markdown(config, results, rows_top_k, header, pools)
    if config.exact:
        markdown += "\n" + "\n".join(_exact_markdown(config, by_setting, ranks))
    seconds = time.perf_counter() - start
    figures = "accuracy.png" + (", exact.png" if exact_figure else "")
    markdown += f"\n\nTotal run time {seconds:.0f} s. Figures: {figures}."
    payload = {
        "config": dataclasses.asdict(config),
        "machine": info,
        "results": results,
        "exact": by_setting.get("exact", []),
        "features": by_setting.get("features", []),
        "rankings": ranks,
        "top_k": rows_top_k,
        "seconds": seconds,
    }
    write(config.out, payload, markdown)
    return {
        "results": results,
        "exact": by_setting.get("exact", []),
        "features": by_setting.get("features", []),
        "rankings": ranks,
        "top_k": rows_top_k,
        "figure": str(figure),
        "exact_figure": str(exact_figure) if exact_figure else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--fashion-mnist", default=Config.fashion_mnist, metavar="DIR")
    args = parser.parse_args()
    main(Config(out=args.out, fashion_mnist=args.fashion_mnist))
