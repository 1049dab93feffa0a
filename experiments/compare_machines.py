"""The empirical comparison of multiclass SVMs of Doğan, Glasmachers & Igel (JMLR 2016),
redone with linear models on data available offline, plus top-k accuracy of the top-k losses.

Every machine of the paper is a registered loss (the absolute-margin ones trained by
projected steps under the sum-to-zero constraint). For each data set and each of
``splits`` random train/validation/test splits (60/20/20 by default, features standardised
with training statistics), :func:`svmjax.grid.fit_grid` trains all ``learning_rates x
regs`` at once (momentum SGD, cosine decay); the configuration with the best validation
accuracy is scored on the test part. Reported: test accuracy mean ± std over the splits,
the chosen configurations, and the median wall time of one grid (every configuration
trained at once, compiled code reused after the first split).

Second part: top-1 … top-5 test accuracy (:func:`svmjax.metrics.top_k_accuracy`) of
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

from svmjax import data, grid, linear, metrics, registry

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
    fashion_subsample: int = 5000  # images drawn per split (of 70,000)
    machines: tuple[str, ...] = tuple(MACHINES)
    splits: int = 5
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train / validation / test
    learning_rates: tuple[float, ...] = (0.01, 0.1)
    regs: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)
    optimizer: str = "momentum"
    schedule: str = "cosine"
    steps: int = 1000  # optimizer steps per run (epochs = ceil(steps / batches per epoch))
    batch_size: int = 64
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
    results = compare(config, {d: pools[d] for d in config.datasets if d in pools})
    rows_top_k = []
    if config.top_k_splits:
        name = config.top_k_dataset if config.top_k_dataset in pools else "digits"
        if name not in pools:
            pools[name] = (*_builtin(name), None)
        rows_top_k = top_k(config, *pools[name], name)
    figure = _figure(results, rows_top_k, Path(config.out) / "accuracy.png")
    markdown = _markdown(config, results, rows_top_k, header, pools)
    seconds = time.perf_counter() - start
    markdown += f"\n\nTotal run time {seconds:.0f} s. Figure: accuracy.png."
    payload = {
        "config": dataclasses.asdict(config),
        "machine": info,
        "results": results,
        "top_k": rows_top_k,
        "seconds": seconds,
    }
    write(config.out, payload, markdown)
    return {"results": results, "top_k": rows_top_k, "figure": str(figure)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--fashion-mnist", default=Config.fashion_mnist, metavar="DIR")
    args = parser.parse_args()
    main(Config(out=args.out, fashion_mnist=args.fashion_mnist))
