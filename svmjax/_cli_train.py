"""Internal: ``svmjax train`` — fit a linear SVM by SGD (:func:`svmjax.train.fit`) or the
exact solver (:func:`svmjax.solve.solve`, :func:`svmjax.solve.solve_path`), optionally
cross-validated, and write a model file (:mod:`svmjax.model`), metrics and curves."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from svmjax import continuation, data, linear, optim, registry, solve, train
from svmjax import model as models
from svmjax._cli_args import (
    PIXEL_MAX,
    UsageError,
    add_data_flags,
    add_import_flag,
    add_progress_flag,
    default_preprocess,
    load_data,
    non_negative_float,
    positive_float,
    positive_int,
    progress,
    source,
)

_SGD_ONLY = ("grad", "optimizer", "lr", "reg", "epochs", "batch_size", "checkpoint", "resume_from")
_EXACT_ONLY = ("C", "tol", "max_iter", "C_path")


def _defaults(function) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(function).parameters.items()}


# The API's defaults are the command line's: train.fit's, solve.solve's, and the learning
# rate of svmjax.optim.DEFAULT_OPTIMIZER (what train.fit uses without an optimizer).
FIT = _defaults(train.fit) | {"optimizer": "sgd", "lr": 0.1}
SOLVE = _defaults(solve.solve)


def add_parser(commands) -> argparse.ArgumentParser:
    fit = commands.add_parser(
        "train",
        help="train a linear SVM (SGD or the exact solver) and write a model file",
        description="Train a linear SVM on a built-in data set or your own files, print a "
        "summary (or one JSON object with --json) and, with --out, write model.npz (for "
        "svmjax predict), metrics.json (with the per-epoch history) and curves.png. "
        "Defaults are the API's: svmjax.train.fit's for --solver sgd, svmjax.solve.solve's "
        "for --solver exact, the loader's for the data.",
    )
    add_data_flags(fit)
    sgd = fit.add_argument_group("--solver sgd")
    add_model_flags(fit, sgd)
    fit.add_argument(
        "--solver", choices=("sgd", "exact"), default="sgd", help="minibatch SGD (train.fit) "
        "or the exact solver with a duality-gap certificate (solve.solve) (sgd)",
    )  # fmt: skip
    fit.add_argument(
        "--intercept",
        action=argparse.BooleanOptionalAction,
        help="fit an unpenalised intercept (default: yes for sgd, as train.fit; no for "
        "exact, as solve)",
    )
    sgd.add_argument("--lr", type=positive_float, help=f"learning rate ({FIT['lr']})")
    sgd.add_argument("--reg", type=non_negative_float, help=f"L2 regularisation ({FIT['reg']})")
    sgd.add_argument("--checkpoint", metavar="FILE", help="checkpoint written every epoch")
    sgd.add_argument("--resume-from", metavar="FILE", help="continue from this checkpoint")
    exact = fit.add_argument_group("--solver exact")
    exact.add_argument(
        "-C", type=positive_float, help=f"liblinear's C, weight of the loss ({SOLVE['C']})"
    )
    exact.add_argument("--tol", type=positive_float, help=f"relative duality gap ({SOLVE['tol']})")
    exact.add_argument(
        "--max-iter",
        type=positive_int,
        help=f"L-BFGS iterations or coordinate passes ({SOLVE['max_iter']})",
    )
    exact.add_argument(
        "--C-path", type=positive_float, nargs="+", metavar="C", help="solve for every C "
        "(solve_path, warm-started) and keep the best by validation (or --cv) accuracy",
    )  # fmt: skip
    fit.add_argument(
        "--cv", type=positive_int, metavar="K", help="K-fold cross-validation on the training "
        "split, reported (the model is then trained on the whole split)",
    )  # fmt: skip
    fit.add_argument("--out", help="folder for model.npz, metrics.json and curves.png")
    return fit


def add_model_flags(parser: argparse.ArgumentParser, sgd=None) -> None:
    """Flags of the loss and of SGD (into the group ``sgd`` if given), shared by ``train``
    and ``sweep``."""
    sgd = parser if sgd is None else sgd
    parser.add_argument(
        "--loss", choices=registry.names(), default=FIT["loss"], help=f"loss ({FIT['loss']})"
    )
    parser.add_argument(
        "--loss-option",
        action="append",
        metavar="NAME=VALUE",
        help="an option of the loss (e.g. k=2 for top_k_hinge), VALUE read as JSON "
        "(else text); repeatable",
    )
    parser.add_argument("--squared", action="store_true", help="squared hinge")
    parser.add_argument(
        "--margin", type=positive_float, default=FIT["margin"], help=f"margin ({FIT['margin']})"
    )
    parser.add_argument(
        "--class-weight",
        action="append",
        metavar="LABEL=W",
        help="weight of the loss of class LABEL (liblinear's -wi), repeatable; or 'balanced'",
    )
    sgd.add_argument("--grad", choices=linear.GRADS, help=f"gradient ({FIT['grad']})")
    sgd.add_argument(
        "--optimizer", choices=optim.OPTIMIZERS, help=f"optimizer ({FIT['optimizer']})"
    )
    sgd.add_argument("--epochs", type=positive_int, help=f"epochs ({FIT['epochs']})")
    sgd.add_argument("--batch-size", type=positive_int, help=f"batch size ({FIT['batch_size']})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_progress_flag(parser)
    add_import_flag(parser)


def fill_defaults(args: argparse.Namespace, names=_SGD_ONLY) -> None:
    """Set the flags of ``names`` that were not given to the API's defaults."""
    for name in names:
        if getattr(args, name, None) is None and name in FIT | SOLVE:
            setattr(args, name, FIT[name] if name in FIT else SOLVE[name])


def loss_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--loss-option`` pairs, checked against the loss's registered options."""
    options = {}
    for item in args.loss_option or ():
        name, equals, text = item.partition("=")
        if not equals or not name:
            raise UsageError(f"--loss-option: expected NAME=VALUE, got {item!r}")
        try:
            options[name] = json.loads(text)
        except ValueError:
            options[name] = text
    try:
        registry.loss_options(args.loss, options)
    except (ValueError, TypeError) as error:
        raise UsageError(f"--loss-option: {error}") from error
    return options


def class_weights(args: argparse.Namespace, ds: data.Dataset) -> np.ndarray | None:
    """``[C]`` weights from ``--class-weight`` (missing classes weigh 1)."""
    if not args.class_weight:
        return None
    if args.class_weight == ["balanced"]:
        counts = np.bincount(ds.y_train, minlength=ds.n_classes)
        return len(ds.y_train) / (ds.n_classes * np.maximum(counts, 1))
    weights = np.ones(ds.n_classes)
    for item in args.class_weight:
        label, _, text = item.rpartition("=")
        if label not in ds.class_names:
            known = ", ".join(ds.class_names)
            raise UsageError(f"--class-weight {item!r}: no class {label!r} (classes: {known})")
        try:
            weights[ds.class_names.index(label)] = float(text)
        except ValueError:
            raise UsageError(f"--class-weight {item!r}: expected LABEL=WEIGHT") from None
    if not np.all(np.isfinite(weights) & (weights >= 0)):
        raise UsageError("--class-weight: weights must be finite and >= 0")
    return weights


def _scaling(ds: data.Dataset, pixel_max: float):
    """The model's preprocessing: the loader's statistics (``ds.scaling``) in the units of
    the raw file (pixels before the loader's division by ``pixel_max``)."""
    if ds.scaling is None:
        return None, None, None if pixel_max == 1 else np.full(ds.n_features, pixel_max)
    offset, scale = (np.asarray(a, np.float64) * pixel_max for a in ds.scaling[1:])
    return ds.scaling.method, offset, scale


def _score(params, X, y) -> float:
    """Accuracy of ``params`` on (preprocessed) ``X``, dense or sparse."""
    scores = np.asarray(X @ np.asarray(params["W"], np.float64)) + np.asarray(params["b"])
    return float(np.mean(np.argmax(scores, axis=1) == y))


def _accuracy(params, X, y) -> float | None:
    return _score(params, X, y) if len(y) else None


def _folds(n: int, k: int, key: jax.Array) -> list[np.ndarray]:
    if not 2 <= k <= n:
        raise UsageError(f"--cv {k}: needs 2 <= K <= {n} (the training examples)")
    return np.array_split(np.asarray(jax.random.permutation(key, n)), k)


def _check(args: argparse.Namespace) -> None:
    """Flags of the other solver, and the options the API checks first, as usage errors."""
    other = _EXACT_ONLY if args.solver == "sgd" else _SGD_ONLY
    given = [name for name in other if getattr(args, name) is not None]
    if given:
        flag = ("-" if given[0] == "C" else "--") + given[0].replace("_", "-")
        raise UsageError(f"{flag} does not apply to --solver {args.solver}")
    if args.solver == "exact" and args.loss not in registry.names(solver=True):
        duals = ", ".join(registry.names(solver=True))
        raise UsageError(
            f"--solver exact takes the losses with a dual ({duals}), not {args.loss!r}; "
            "use --solver sgd"
        )


def _sgd(args, keys, splits, ds, weights, options, metrics) -> tuple[dict, dict]:
    """Train by :func:`svmjax.train.fit`; cross-validate first with ``--cv``."""
    init_key, train_key, cv_key = keys
    optimizer = optim.make_optimizer(args.optimizer, args.lr)
    if not args.intercept:  # keep b at zero
        mask = {"W": False, "b": True}
        optimizer = optax.chain(optimizer, optax.masked(optax.set_to_zero(), mask))
    settings = dict(grad=args.grad, reg=args.reg, epochs=args.epochs, batch_size=args.batch_size)
    metrics |= settings | dict(optimizer=args.optimizer, learning_rate=args.lr)

    def fit(X, y, validation, **extra):
        params = linear.init(init_key, ds.n_features, ds.n_classes)
        return train.fit(params, X, y, key=train_key, optimizer=optimizer, class_weights=weights,
                         validation=validation, **options, **settings, **extra)  # fmt: skip

    X, X_val, _ = splits
    if args.cv:
        scores = []
        for held in _folds(len(ds.y_train), args.cv, cv_key):
            rest = np.setdiff1d(np.arange(len(ds.y_train)), held)
            params, _ = fit(X[rest], ds.y_train[rest], None)
            scores.append(_score(params, X[held], ds.y_train[held]))
        metrics["cv_accuracy"] = float(np.mean(scores))
    validation = (X_val, ds.y_val) if len(ds.y_val) else None
    params, history = fit(X, ds.y_train, validation, progress=progress(args),
                          checkpoint=args.checkpoint, resume_from=args.resume_from)  # fmt: skip
    metrics["final_objective"] = float(history["objective"][-1])
    return params, history


def _exact(args, keys, splits, ds, weights, options, metrics) -> tuple[dict, dict]:
    """Solve exactly (:func:`svmjax.solve.solve`), over ``--C-path`` and ``--cv`` folds."""
    settings: dict[str, Any] = dict(fit_intercept=bool(args.intercept), tol=args.tol)
    settings |= dict(max_iter=args.max_iter, class_weights=weights, **options)
    X, X_val, _ = splits
    y, n, Cs = ds.y_train, len(ds.y_train), args.C_path or [args.C]

    def path(rows):  # one solve per C, warm-started along the path
        return solve.solve_path(X[rows], y[rows], Cs, n_classes=ds.n_classes, **settings)

    rows = np.arange(n)
    if args.cv:
        accuracy = np.zeros(len(Cs))
        for held in _folds(n, args.cv, keys[2]):
            fold = path(np.setdiff1d(rows, held))
            accuracy += [_score(r.params, X[held], y[held]) for r in fold]
        accuracy /= args.cv
        best = int(np.argmax(accuracy))  # ties: the first C given
        result = solve.solve(X, y, C=Cs[best], n_classes=ds.n_classes, **settings)
    else:
        if args.C_path and not len(ds.y_val):
            raise UsageError("--C-path needs a validation split (--val-fraction > 0) or --cv")
        results = path(rows)
        accuracy = np.array(
            [_score(r.params, X_val, ds.y_val) for r in results] if args.C_path else [1.0]
        )
        best = int(np.argmax(accuracy))
        result = results[best]
    if args.C_path:
        name = "cv_accuracy" if args.cv else "val_accuracy"
        metrics |= {"C_path": Cs, f"{name}_by_C": accuracy.tolist(), "best_C": Cs[best]}
    elif args.cv:
        metrics["cv_accuracy"] = float(accuracy[0])
    metrics |= {"C": Cs[best], "tol": settings["tol"], "max_iter": settings["max_iter"]}
    metrics |= {"objective": float(result.objective), "dual_gap": float(result.gap)}
    metrics |= {"converged": bool(result.converged), "n_iter": int(result.n_iter)}
    return dict(result.params), {}


def run(args: argparse.Namespace) -> int:
    _check(args)
    fill_defaults(args, _SGD_ONLY if args.solver == "sgd" else _EXACT_ONLY)
    if args.intercept is None:  # train.fit always fits b; solve's fit_intercept
        args.intercept = True if args.solver == "sgd" else SOLVE["fit_intercept"]
    split_key, init_key, train_key = jax.random.split(jax.random.key(args.seed), 3)
    ds = load_data(args, split_key, preprocess=default_preprocess(args))
    splits = [ds.X_train, ds.X_val, ds.X_test]
    preprocess, offset, scale = _scaling(ds, PIXEL_MAX.get(source(args), 1.0))
    weights, extra = class_weights(args, ds), loss_options(args)
    if args.solver == "exact":  # a setting no derived dual covers: before any work
        try:
            continuation.dual_of(
                args.loss, registry.loss_options(args.loss, extra), ds.n_classes, args.squared
            )
        except ValueError as error:
            raise UsageError(str(error)) from None
    options: dict[str, Any] = dict(loss=args.loss, squared=args.squared, margin=args.margin)
    if extra:
        options["loss_options"] = extra
    description = ds.description
    metrics: dict[str, Any] = dict(dataset=description, solver=args.solver, **options)
    metrics |= dict(fit_intercept=args.intercept, seed=args.seed, preprocess=preprocess)
    metrics["class_weights"] = None if weights is None else weights.tolist()
    keys = (init_key, train_key, jax.random.fold_in(split_key, 1))
    start = time.perf_counter()
    solver = _exact if args.solver == "exact" else _sgd
    params, history = solver(args, keys, splits, ds, weights, options, metrics)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    labels = (ds.y_train, ds.y_val, ds.y_test)
    for split, X, y in zip(("train", "val", "test"), splits, labels, strict=True):
        metrics[f"{split}_accuracy"] = _accuracy(params, X, y)
    metrics["seconds_including_compile"] = seconds
    metrics["history"] = {k: v.tolist() for k, v in history.items()}
    if args.out:
        out = Path(args.out)
        model = models.Model(
            np.asarray(params["W"]), np.asarray(params["b"]), classes=list(ds.class_names),
            offset=offset, scale=scale, preprocess=preprocess, loss=args.loss,
            squared=args.squared, margin=args.margin, loss_options=extra, history=history,
            training={k: v for k, v in metrics.items() if k != "history"},
        )  # fmt: skip
        metrics["model"] = str(models.save(out / "model.npz", model))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if history:
            _curves(history, out / "curves.png", f"{args.loss} on {description.split(':')[0]}")
    if args.json:
        print(json.dumps(metrics))
    else:
        _summary(metrics, args)
    return 0


def _curves(history, path: Path, title: str) -> None:
    from svmjax import plots

    try:
        plots.plot_history(history, path, title=title)
    except ImportError as error:  # the model and metrics are written: a note, not a failure
        print(f"svmjax train: {path.name} not written: {error}", file=sys.stderr)


def _summary(metrics: dict, args: argparse.Namespace) -> None:
    loss = args.loss + (" (squared)" if args.squared else "")
    if args.solver == "exact":
        how = f"exact solver, C {metrics['C']:g}, tol {metrics['tol']:g}"
    else:
        how = f"{metrics['grad']} gradient, {metrics['optimizer']} lr {metrics['learning_rate']}"
        how += f", reg {metrics['reg']}, {metrics['epochs']} epochs"
    print(f"{metrics['dataset']}: {loss}, {how}")
    if "C_path" in metrics:
        by_C = metrics["cv_accuracy_by_C" if args.cv else "val_accuracy_by_C"]
        pairs = zip(metrics["C_path"], by_C, strict=True)
        print("  accuracy by C: " + ", ".join(f"{C:g}: {a:.4f}" for C, a in pairs))
    elif "cv_accuracy" in metrics:
        print(f"  {args.cv}-fold cross-validation accuracy {metrics['cv_accuracy']:.4f}")
    for split in ("train", "val", "test"):
        if metrics[f"{split}_accuracy"] is not None:
            print(f"  {split:>5} accuracy {metrics[f'{split}_accuracy']:.4f}")
    seconds = f"{metrics['seconds_including_compile']:.2f} s with compilation"
    if args.solver == "exact":
        state = "converged" if metrics["converged"] else "NOT converged"
        print(
            f"  objective {metrics['objective']:.6g}, duality gap {metrics['dual_gap']:.2g} "
            f"({state}, {metrics['n_iter']} iterations); {seconds}"
        )
    else:
        print(f"  final objective {metrics['final_objective']:.4g}; {seconds}")
    if "model" in metrics:
        curves = ", curves.png" if metrics["history"] else ""
        print(f"  wrote {metrics['model']}, metrics.json{curves}")
