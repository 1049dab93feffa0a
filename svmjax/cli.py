"""The ``svmjax`` command line: ``svmjax demo`` (the main job) and ``svmjax gradcheck``.

Errors in what the user typed or pointed at (a bad flag value, a missing file, unreadable
data) end with a one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from svmjax import data, gradcheck, linear, train


def _agreement_rows(key: jax.Array, *, n: int = 200, d: int = 20, c: int = 10) -> list[dict]:
    return [
        gradcheck.compare(loss, n=n, d=d, c=c, key=key, dtype=dtype, squared=squared)
        for dtype in (jnp.float32, jnp.float64)
        for loss in linear.LOSSES
        for squared in (False, True)
    ]


def _gradcheck(args: argparse.Namespace) -> int:
    rows = _agreement_rows(jax.random.key(args.seed))
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
    rows = _agreement_rows(check_key)
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
        optimizer=train.make_optimizer("sgd", args.lr),
        reg=args.reg,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation=(ds.X_val, ds.y_val),
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
    )
    jax.block_until_ready(params)
    train_seconds = time.perf_counter() - train_start
    metrics = {
        "dataset": "digits",
        "loss": "weston_watkins",
        "grad": "analytic",
        "seed": args.seed,
        "epochs": args.epochs,
        "learning_rate": args.lr,
        "reg": args.reg,
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
        params["W"], ds.image_shape, out / "templates.png", class_names=ds.class_names
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svmjax", description="Multiclass SVM losses in JAX with analytic gradients."
    )
    commands = parser.add_subparsers(dest="command", required=True)

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
    demo.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    demo.set_defaults(run=_demo)

    check = commands.add_parser(
        "gradcheck",
        help="analytic vs autodiff vs numeric gradients, every loss variant",
        description="Print the gradient-agreement table for every loss, plain and squared, "
        "float32 and float64.",
    )
    check.set_defaults(run=_gradcheck)

    for sub in (demo, check):
        sub.add_argument("--seed", type=int, default=0, help="random seed (0)")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, ImportError, train.TrainingDiverged) as error:
        print(f"svmjax {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
