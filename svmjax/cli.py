"""The ``svmjax`` command line.

* ``svmjax demo`` — the main job: gradient table, then a linear SVM on digits;
* ``svmjax train`` — train on a built-in data set or your own files;
* ``svmjax sweep`` — a learning-rate × reg grid with ``fit_grid``, heatmap and JSON;
* ``svmjax gradcheck`` — analytic vs autodiff vs numeric gradients, every loss variant;

Every command takes ``--cache DIR`` (or the ``SVMJAX_CACHE`` environment variable): keep
compiled programs in ``DIR`` so that the next run skips compilation (:mod:`svmjax.cache`).

Errors in what the user typed or pointed at (a bad flag value, a missing file, unreadable
data) end with a one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from svmjax import cache, data, gradcheck, grid, linear, optim, registry, train


def _agreement_rows(
    key: jax.Array, losses: tuple[str, ...], *, n: int = 200, d: int = 20, c: int = 10
) -> list[dict]:
    return [
        gradcheck.compare(loss, n=n, d=d, c=c, key=key, dtype=dtype, squared=squared)
        for dtype in (jnp.float32, jnp.float64)
        for loss in losses
        for squared in (False, True)
    ]


def _gradcheck(args: argparse.Namespace) -> int:
    rows = _agreement_rows(jax.random.key(args.seed), tuple(args.loss or registry.names()))
    print(gradcheck.format_table(rows))
    return 0


def _accuracy(params, X, y) -> float:
    return float(np.mean(np.asarray(linear.predict(params, X)) == y))


def _demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    key = jax.random.key(args.seed)
    split_key, init_key, train_key, check_key = jax.random.split(key, 4)

    print("== Gradient agreement: analytic custom_vjp vs jax.grad vs float64 differences ==")
    print("(max-norm relative error over W and b on random 200x20x10 linear problems)\n")
    rows = _agreement_rows(check_key, registry.names(solver=True))  # the three classic losses
    print(gradcheck.format_table(rows), "\n")

    ds = data.load("digits", key=split_key)
    print(f"== Training a Weston-Watkins linear SVM on {ds.description} ==")
    print(
        f"train {len(ds.y_train)}, validation {len(ds.y_val)}, test {len(ds.y_test)}; "
        f"analytic gradient, SGD lr {args.lr}, {args.epochs} epochs, batch {args.batch_size}"
    )
    params = linear.init(init_key, ds.n_features, ds.n_classes)
    train_start = time.perf_counter()
    params, history = train.fit(
        params,
        ds.X_train,
        ds.y_train,
        key=train_key,
        optimizer=optim.make_optimizer("sgd", args.lr),
        reg=args.reg,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation=(ds.X_val, ds.y_val),
        progress=_progress(args),
    )
    jax.block_until_ready(params)
    train_seconds = time.perf_counter() - train_start
    metrics = dict(dataset="digits", loss="weston_watkins", grad="analytic", seed=args.seed)
    metrics |= dict(epochs=args.epochs, learning_rate=args.lr, reg=args.reg)
    metrics |= {
        "batch_size": args.batch_size,
        "train_accuracy": _accuracy(params, ds.X_train, ds.y_train),
        "val_accuracy": _accuracy(params, ds.X_val, ds.y_val),
        "test_accuracy": _accuracy(params, ds.X_test, ds.y_test),
        "final_objective": float(history["objective"][-1]),
        "train_seconds_including_compile": train_seconds,
        "gradient_agreement": rows,
    }

    from svmjax import plots

    out.mkdir(parents=True, exist_ok=True)
    plots.plot_history(history, out / "curves.png", title="Weston-Watkins SVM on digits")
    plots.plot_templates(
        params["W"], ds.image_shape or (8, 8), out / "templates.png", class_names=ds.class_names
    )
    metrics["total_seconds"] = time.perf_counter() - start
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    print(
        f"\ntest accuracy {metrics['test_accuracy']:.4f} "
        f"(train {metrics['train_accuracy']:.4f}, validation {metrics['val_accuracy']:.4f})"
    )
    print(
        f"training {train_seconds:.2f} s including compilation; "
        f"whole demo {metrics['total_seconds']:.1f} s"
    )
    print(f"wrote {out / 'metrics.json'}, {out / 'curves.png'}, {out / 'templates.png'}")
    return 0


class UsageError(Exception):
    """A mistake in the command line or in the files it names: printed as one line on
    stderr, exit status 2. Anything else is a bug and keeps its traceback."""


def _load(args: argparse.Namespace, key: jax.Array) -> data.Dataset:
    """The data set named by --dataset / --cifar10 / --mnist / --svmlight; a file that is
    missing or unreadable is a :class:`UsageError` naming it."""
    try:
        if args.cifar10:
            return data.load_cifar10(args.cifar10, key=key)
        if args.mnist:
            return data.load_mnist(args.mnist, key=key)
        if args.svmlight:
            return data.load_svmlight(args.svmlight, key=key)
        return data.load(args.dataset, key=key)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from error


def _progress(args: argparse.Namespace) -> bool:
    terminal = sys.stderr.isatty() and not getattr(args, "json", False)
    return terminal if args.progress is None else args.progress


def _train(args: argparse.Namespace) -> int:
    split_key, init_key, train_key = jax.random.split(jax.random.key(args.seed), 3)
    ds = _load(args, split_key)
    params = linear.init(init_key, ds.n_features, ds.n_classes)
    validation = (ds.X_val, ds.y_val) if len(ds.y_val) else None
    start = time.perf_counter()
    params, history = train.fit(
        params,
        ds.X_train,
        ds.y_train,
        key=train_key,
        loss=args.loss,
        grad=args.grad,
        squared=args.squared,
        optimizer=optim.make_optimizer(args.optimizer, args.lr),
        reg=args.reg,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation=validation,
        progress=_progress(args),
    )
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    metrics = dict(dataset=ds.description, loss=args.loss, squared=args.squared, grad=args.grad)
    metrics |= dict(optimizer=args.optimizer, learning_rate=args.lr, reg=args.reg)
    metrics |= dict(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    metrics |= {
        "train_accuracy": _accuracy(params, ds.X_train, ds.y_train),
        "val_accuracy": _accuracy(params, ds.X_val, ds.y_val) if validation else None,
        "test_accuracy": _accuracy(params, ds.X_test, ds.y_test) if len(ds.y_test) else None,
        "final_objective": float(history["objective"][-1]),
        "seconds_including_compile": seconds,
    }
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        np.savez(
            out / "params.npz", allow_pickle=False, **{k: np.asarray(v) for k, v in params.items()}
        )
    if args.json:
        print(json.dumps(metrics))
        return 0
    loss = args.loss + (" (squared)" if args.squared else "")
    print(
        f"{ds.description}: {loss}, {args.grad} gradient, {args.optimizer} lr {args.lr}, "
        f"reg {args.reg}, {args.epochs} epochs"
    )
    for split in ("train", "val", "test"):
        if metrics[f"{split}_accuracy"] is not None:
            print(f"  {split:>5} accuracy {metrics[f'{split}_accuracy']:.4f}")
    print(f"  final objective {metrics['final_objective']:.4g}; {seconds:.2f} s with compilation")
    if args.out:
        print(f"  wrote {Path(args.out) / 'metrics.json'} and params.npz")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    split_key, init_key, train_key = jax.random.split(jax.random.key(args.seed), 3)
    ds = _load(args, split_key)
    if not len(ds.y_val):
        raise UsageError("a sweep needs a validation split (this data set has none)")
    params = linear.init(init_key, ds.n_features, ds.n_classes)
    start = time.perf_counter()
    sweep = grid.fit_grid(
        params,
        ds.X_train,
        ds.y_train,
        key=train_key,
        learning_rates=tuple(args.lrs),
        regs=tuple(args.regs),
        optimizer=args.optimizer,
        loss=args.loss,
        grad=args.grad,
        squared=args.squared,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation=(ds.X_val, ds.y_val),
    )
    seconds = time.perf_counter() - start
    val = sweep.history["val_accuracy"][:, -1].reshape(len(args.lrs), len(args.regs))
    best_lr, best_reg, _ = sweep.configs[sweep.best]
    best = jax.tree.map(lambda leaf: leaf[sweep.best], sweep.params)
    result = {
        "dataset": ds.description,
        "loss": args.loss,
        "learning_rates": args.lrs,
        "regs": args.regs,
        "val_accuracy": val.tolist(),
        "best": {"learning_rate": best_lr, "reg": best_reg},
        "best_val_accuracy": float(val.max()) if np.isfinite(val).any() else None,
        "best_test_accuracy": _accuracy(best, ds.X_test, ds.y_test) if len(ds.y_test) else None,
        "configs": len(sweep.configs),
        "seconds_including_compile": seconds,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    from svmjax import plots

    plots.plot_heatmap(
        val,
        [f"{lr:g}" for lr in args.lrs],
        [f"{reg:g}" for reg in args.regs],
        out / "heatmap.png",
        xlabel="reg",
        ylabel="learning rate",
        title=f"validation accuracy: {args.loss}, {ds.description.split(':')[0]}",
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{len(sweep.configs)} configs in {seconds:.2f} s (one compiled, vmapped run)")
    test = result["best_test_accuracy"]
    print(
        f"best: lr {best_lr:g}, reg {best_reg:g}: validation {result['best_val_accuracy']:.4f}"
        + ("" if test is None else f", test {test:.4f}")
    )
    print(f"wrote {out / 'sweep.json'} and {out / 'heatmap.png'}")
    return 0


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        choices=("digits", "mnist1d", "blobs"),
        default="digits",
        help="built-in data set (digits)",
    )
    source.add_argument("--cifar10", metavar="DIR", help="CIFAR-10 binary folder")
    source.add_argument("--mnist", metavar="DIR", help="folder with MNIST IDX files")
    source.add_argument("--svmlight", metavar="FILE", help="a LIBSVM-format file")


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loss", choices=registry.names(), default="weston_watkins", help="loss (weston_watkins)"
    )
    parser.add_argument("--squared", action="store_true", help="squared hinge")
    parser.add_argument(
        "--grad", choices=linear.GRADS, default="analytic", help="gradient (analytic)"
    )
    parser.add_argument(
        "--optimizer", choices=optim.OPTIMIZERS, default="sgd", help="optimizer (sgd)"
    )
    parser.add_argument("--epochs", type=_positive_int, default=20, help="epochs (20)")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="batch size (64)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    _add_progress_flag(parser)


def _add_progress_flag(parser: argparse.ArgumentParser) -> None:
    text = "progress bar (default: when stderr is a terminal)"
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, help=text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="svmjax", description="Multiclass SVM losses in JAX with analytic gradients."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser(
        "demo",
        help="the main job: gradient table, then train a linear SVM on digits",
        description="Print the gradient-agreement table, train a Weston-Watkins linear SVM "
        "on scikit-learn's digits with the analytic gradient, and write metrics.json, "
        "curves.png and templates.png.",
    )
    demo.add_argument("--out", default="results/demo", help="output folder (results/demo)")
    demo.add_argument("--epochs", type=_positive_int, default=20, help="epochs (20)")
    demo.add_argument("--lr", type=_positive_float, default=0.1, help="SGD learning rate (0.1)")
    demo.add_argument("--reg", type=_non_negative_float, default=1e-4, help="L2 reg (1e-4)")
    demo.add_argument("--batch-size", type=_positive_int, default=64, help="batch size (64)")
    _add_progress_flag(demo)
    demo.set_defaults(run=_demo)

    fit = commands.add_parser(
        "train",
        help="train a linear SVM on a built-in data set or your own files",
        description="Train a linear SVM with svmjax.train.fit and print a summary "
        "(or one JSON object with --json).",
    )
    _add_data_flags(fit)
    _add_model_flags(fit)
    fit.add_argument("--lr", type=_positive_float, default=0.1, help="learning rate (0.1)")
    fit.add_argument("--reg", type=_non_negative_float, default=1e-4, help="L2 reg (1e-4)")
    fit.add_argument("--out", help="folder for metrics.json and params.npz (optional)")
    fit.set_defaults(run=_train)

    sweep = commands.add_parser(
        "sweep",
        help="learning rate x reg grid in one vmapped run; heatmap and JSON",
        description="Train every (learning rate, reg) pair at once with svmjax.grid.fit_grid "
        "and write the validation-accuracy heatmap (heatmap.png) and sweep.json.",
    )
    _add_data_flags(sweep)
    _add_model_flags(sweep)
    sweep.add_argument(
        "--lrs",
        type=_positive_float,
        nargs="+",
        default=[0.01, 0.03, 0.1, 0.3],
        help="learning rates (0.01 0.03 0.1 0.3)",
    )
    sweep.add_argument(
        "--regs",
        type=_non_negative_float,
        nargs="+",
        default=[0.0, 1e-4, 1e-3, 1e-2],
        help="L2 regularisation strengths (0 1e-4 1e-3 1e-2)",
    )
    sweep.add_argument("--out", default="results/sweep", help="output folder (results/sweep)")
    sweep.set_defaults(run=_sweep)

    check = commands.add_parser(
        "gradcheck",
        help="analytic vs autodiff vs numeric gradients, every loss variant",
        description="Print the gradient-agreement table for every registered loss (or those "
        "named), plain and squared, float32 and float64.",
    )
    check.add_argument(
        "--loss", nargs="+", choices=registry.names(), help="only these losses (default: all)"
    )
    check.set_defaults(run=_gradcheck)

    for sub in (demo, fit, sweep, check):
        sub.add_argument("--seed", type=int, default=0, help="random seed (0)")
        sub.add_argument(
            "--cache",
            metavar="DIR",
            default=os.environ.get(cache.ENV_VAR) or None,
            help=f"keep compiled programs in DIR for later runs (default: ${cache.ENV_VAR}, "
            "if set; otherwise no cache)",
        )
    return parser


def _number(kind: type, text: str, ok, requirement: str):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 1, "a positive integer")


def _positive_float(text: str) -> float:
    return _number(float, text, lambda v: v > 0, "a number > 0")


def _non_negative_float(text: str) -> float:
    return _number(float, text, lambda v: v >= 0, "a number >= 0")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus exit status 2), not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cache:
        try:
            cache.enable(args.cache)
        except PermissionError as error:  # a cache folder others could change
            print(f"svmjax {args.command}: error: {error}", file=sys.stderr)
            return 2
    try:
        return args.run(args)
    # Expected: bad input files, a missing optional extra (matplotlib, tqdm, scikit-learn),
    # a diverging run. Anything else propagates with its traceback.
    except (UsageError, ImportError, train.TrainingDiverged) as error:
        print(f"svmjax {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
