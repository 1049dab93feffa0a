"""Weston–Watkins vs Crammer–Singer vs one-vs-rest, plain and squared, on several data sets.

For every (data set, loss, squared) the learning rate is chosen on the validation split
(mean over seeds), then the test accuracy at that learning rate is reported as mean ± std
over the seeds. A seed changes the minibatch order (``fit_grid`` trains all learning rates
and seeds of one variant in a single vmapped run); the split and the initial weights are
fixed. CIFAR-10 and MNIST join when their folders are given.

    python experiments/compare_losses.py [--out DIR] [--cifar10 DIR] [--mnist DIR]
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np
from common import markdown_table, write

from svmjax import data, grid, linear


@dataclasses.dataclass
class Config:
    out: str = "results/compare_losses"
    datasets: tuple[str, ...] = ("digits", "mnist1d", "blobs")
    cifar10: str | None = None
    mnist: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    learning_rates: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)
    reg: float = 1e-4
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "momentum"


def _datasets(config: Config) -> dict[str, data.Dataset]:
    key = jax.random.key(0)
    sets = {}
    for name in config.datasets:
        if name == "blobs":
            sets[name] = data.load("blobs", n=2000, d=20, c=5, key=key)
        else:
            sets[name] = data.load(name, key=key)
    if config.cifar10:
        sets["cifar10"] = data.load_cifar10(config.cifar10, key=key)
    if config.mnist:
        sets["mnist"] = data.load_mnist(config.mnist, key=key)
    return sets


def _test_accuracy(params, ds: data.Dataset) -> float:
    return float(np.mean(np.asarray(linear.predict(params, ds.X_test)) == ds.y_test))


def main(config: Config) -> dict:
    rows, results = [], []
    for ds_name, ds in _datasets(config).items():
        params = linear.init(jax.random.key(1), ds.n_features, ds.n_classes)
        for loss in ("weston_watkins", "crammer_singer", "one_vs_rest"):  # compare_machines: all
            for squared in (False, True):
                sweep = grid.fit_grid(
                    params,
                    ds.X_train,
                    ds.y_train,
                    key=jax.random.key(2),
                    learning_rates=config.learning_rates,
                    regs=(config.reg,),
                    seeds=config.seeds,
                    optimizer=config.optimizer,
                    loss=loss,
                    squared=squared,
                    epochs=config.epochs,
                    batch_size=config.batch_size,
                    validation=(ds.X_val, ds.y_val),
                )
                n_lr, n_seed = len(config.learning_rates), len(config.seeds)
                val = sweep.history["val_accuracy"][:, -1].reshape(n_lr, n_seed)
                best_lr = int(np.argmax(np.nan_to_num(val.mean(axis=1), nan=-1.0)))
                test = [
                    _test_accuracy(jax.tree.map(lambda p, k=k: p[k], sweep.params), ds)
                    for k in range(best_lr * n_seed, (best_lr + 1) * n_seed)
                ]
                result = {
                    "dataset": ds_name,
                    "loss": loss,
                    "squared": squared,
                    "learning_rate": config.learning_rates[best_lr],
                    "val_accuracy_mean": float(val[best_lr].mean()),
                    "test_accuracy": test,
                    "test_accuracy_mean": float(np.mean(test)),
                    "test_accuracy_std": float(np.std(test)),
                }
                results.append(result)
                rows.append(
                    [
                        ds_name,
                        loss + (" (squared)" if squared else ""),
                        f"{result['learning_rate']:g}",
                        f"{result['val_accuracy_mean']:.4f}",
                        f"{result['test_accuracy_mean']:.4f} ± {result['test_accuracy_std']:.4f}",
                    ]
                )
                print(" | ".join(rows[-1]), flush=True)
    markdown = "\n".join(
        [
            "# Loss comparison: linear SVMs",
            "",
            f"{config.optimizer}, {config.epochs} epochs, batch {config.batch_size}, "
            f"reg {config.reg:g}; learning rate chosen from {list(config.learning_rates)} on "
            f"validation; test accuracy mean ± std over seeds {list(config.seeds)} "
            "(minibatch order).",
            "",
            markdown_table(["data", "loss", "lr", "validation (mean)", "test accuracy"], rows),
        ]
    )
    write(config.out, {"config": dataclasses.asdict(config), "results": results}, markdown)
    return {"results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--cifar10", metavar="DIR")
    parser.add_argument("--mnist", metavar="DIR")
    args = parser.parse_args()
    main(Config(out=args.out, cifar10=args.cifar10, mnist=args.mnist))
