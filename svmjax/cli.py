"""The ``svmjax`` command line.

* ``svmjax demo`` — the main job: gradient table, then a linear SVM on digits;
* ``svmjax train`` — SGD or the exact solver on a built-in data set or your own files,
  cross-validation and C paths; writes a model file (:mod:`svmjax.model`);
* ``svmjax predict`` — labels from a model file, in liblinear's predict format;
* ``svmjax sweep`` — a learning-rate × reg grid with ``fit_grid``, heatmap and JSON;
* ``svmjax gradcheck`` — analytic vs autodiff vs numeric gradients, every loss variant.

Every command but ``predict`` takes ``--cache DIR`` (or the ``SVMJAX_CACHE`` environment
variable): keep compiled programs in ``DIR`` so that the next run skips compilation
(:mod:`svmjax.cache`), and ``--import MODULE``, to register losses first. Flags map to
liblinear's on the page ``docs/liblinear.md``.

Errors in what the user typed or pointed at (a bad flag value, a missing or unreadable file,
a model that does not fit the data, a JAX backend that cannot start) end with a one-line
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from svmjax import _cli_predict, _cli_train, cache, data, gradcheck, grid, linear, optim, registry
from svmjax import train as training
from svmjax._cli_args import (
    Parser,
    UsageError,
    add_data_flags,
    add_import_flag,
    add_progress_flag,
    check_backend,
    default_preprocess,
    import_modules,
    load_data,
    non_negative_float,
    positive_float,
    positive_int,
    progress,
)

__all__ = ["UsageError", "build_parser", "main"]


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


def _features(ds: data.Dataset) -> tuple[Any, Any]:
    """``X_train`` and ``X_val``: NumPy arrays or CSR matrices, both of which ``fit`` and
    ``fit_grid`` take (their ``ArrayLike`` annotation names the first only)."""
    return ds.X_train, ds.X_val


def _demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    key = jax.random.key(args.seed)
    split_key, init_key, train_key, check_key = jax.random.split(key, 4)

    print("== Gradient agreement: analytic custom_vjp vs jax.grad vs float64 differences ==")
    print("(max-norm relative error over W and b on random 200x20x10 linear problems)\n")
    rows = _agreement_rows(check_key, ("weston_watkins", "crammer_singer", "one_vs_rest"))
    print(gradcheck.format_table(rows), "\n")

    ds = data.load("digits", key=split_key)
    print(f"== Training a Weston-Watkins linear SVM on {ds.description} ==")
    print(
        f"train {len(ds.y_train)}, validation {len(ds.y_val)}, test {len(ds.y_test)}; "
        f"analytic gradient, SGD lr {args.lr}, {args.epochs} epochs, batch {args.batch_size}"
    )
    params = linear.init(init_key, ds.n_features, ds.n_classes)
    X_train, X_val = _features(ds)
    train_start = time.perf_counter()
    params, history = training.fit(
        params,
        X_train,
        ds.y_train,
        key=train_key,
        optimizer=optim.make_optimizer("sgd", args.lr),
        reg=args.reg,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation=(X_val, ds.y_val),
        progress=progress(args),
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


def _sweep(args: argparse.Namespace) -> int:
    split_key, init_key, train_key = jax.random.split(jax.random.key(args.seed), 3)
    ds = load_data(args, split_key, preprocess=default_preprocess(args))
    _cli_train.fill_defaults(args)
    options = dict(margin=args.margin, loss_options=_cli_train.loss_options(args))
    options["class_weights"] = _cli_train.class_weights(args, ds)
    if not len(ds.y_val):
        raise UsageError("a sweep needs a validation split (this data set has none)")
    params = linear.init(init_key, ds.n_features, ds.n_classes)
    X_train, X_val = _features(ds)
    start = time.perf_counter()
    sweep = grid.fit_grid(
        params,
        X_train,
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
        validation=(X_val, ds.y_val),
        **options,
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


# The commands' run functions, looked up when the parser is built (tests replace them).
_train, _predict = _cli_train.run, _cli_predict.run


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="svmjax", description="Multiclass SVM losses in JAX with analytic gradients."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    demo = commands.add_parser(
        "demo",
        help="the main job: gradient table, then train a linear SVM on digits",
        description="Print the gradient-agreement table, train a Weston-Watkins linear SVM "
        "on scikit-learn's digits with the analytic gradient, and write metrics.json, "
        "curves.png and templates.png.",
    )
    demo.add_argument("--out", default="results/demo", help="output folder (results/demo)")
    demo.add_argument("--epochs", type=positive_int, default=20, help="epochs (20)")
    demo.add_argument("--lr", type=positive_float, default=0.1, help="SGD learning rate (0.1)")
    demo.add_argument("--reg", type=non_negative_float, default=1e-4, help="L2 reg (1e-4)")
    demo.add_argument("--batch-size", type=positive_int, default=64, help="batch size (64)")
    add_progress_flag(demo)
    demo.set_defaults(run=_demo)

    fit = _cli_train.add_parser(commands)
    fit.set_defaults(run=_train)
    _cli_predict.add_parser(commands).set_defaults(run=_predict)

    sweep = commands.add_parser(
        "sweep",
        help="learning rate x reg grid in one vmapped run; heatmap and JSON",
        description="Train every (learning rate, reg) pair at once with svmjax.grid.fit_grid "
        "and write the validation-accuracy heatmap (heatmap.png) and sweep.json. Defaults are "
        "fit_grid's.",
    )
    add_data_flags(sweep)
    _cli_train.add_model_flags(sweep)
    grid_defaults = {k: p.default for k, p in inspect.signature(grid.fit_grid).parameters.items()}
    lrs, regs = grid_defaults["learning_rates"], grid_defaults["regs"]
    sweep.add_argument(
        "--lrs",
        type=positive_float,
        nargs="+",
        default=list(lrs),
        help=f"learning rates ({' '.join(map(str, lrs))})",
    )
    sweep.add_argument(
        "--regs",
        type=non_negative_float,
        nargs="+",
        default=list(regs),
        help=f"L2 regularisation strengths ({' '.join(map(str, regs))})",
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
    add_import_flag(check)
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "svmjax")
    try:
        import_modules(argv)  # first: the losses they register are --loss choices
    except UsageError as error:
        print(f"svmjax {command}: error: {error}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        if args.command != "predict":  # predict needs NumPy only
            check_backend()
            if args.cache:
                cache.enable(args.cache)
        return args.run(args)
    # Expected: bad input files, a cache folder others could change, a missing optional
    # extra (matplotlib, tqdm, scikit-learn), a diverging run. Anything else propagates
    # with its traceback.
    except (UsageError, PermissionError, ImportError, training.TrainingDiverged) as error:
        print(f"svmjax {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
