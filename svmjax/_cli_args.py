"""Internal: what the commands of :mod:`svmjax.cli` share — the one-line usage error, flag
types and flags, the data sources, ``--import`` and the backend check."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

from svmjax import data, preprocessing

# Dividing raw pixels by this gives the loaders' [0, 1] pixels (svmjax.data).
PIXEL_MAX = {"digits": 16.0, "cifar10": 255.0, "mnist": 255.0}
_LOADERS = {
    "cifar10": data.load_cifar10,
    "mnist": data.load_mnist,
    "svmlight": data.load_svmlight,
}


class UsageError(Exception):
    """A mistake in the command line or in the files it names: printed as one line on
    stderr, exit status 2. Anything else is a bug and keeps its traceback."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus exit status 2), not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, text: str, ok, requirement: str):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 1, "a positive integer")


def positive_float(text: str) -> float:
    return _number(float, text, lambda v: 0 < v < float("inf"), "a number > 0")


def non_negative_float(text: str) -> float:
    return _number(float, text, lambda v: 0 <= v < float("inf"), "a number >= 0")


def fraction(text: str) -> float:
    return _number(float, text, lambda v: 0 <= v < 1, "a number in [0, 1)")


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    text = "progress bar (default: when stderr is a terminal)"
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, help=text)


def progress(args: argparse.Namespace) -> bool:
    terminal = sys.stderr.isatty() and not getattr(args, "json", False)
    return terminal if args.progress is None else args.progress


def add_import_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="import MODULE (a name, searched from the current folder first, or a .py file) "
        "before anything else, e.g. to register losses; repeatable",
    )


def import_modules(argv: list[str]) -> None:
    """Import the modules the ``--import`` flags of ``argv`` name (before the parser is
    built, so their losses are choices of ``--loss``)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--import", dest="imports", action="append", default=[])
    for name in pre.parse_known_args(argv)[0].imports:
        try:
            if name.endswith(".py"):
                spec = importlib.util.spec_from_file_location(Path(name).stem, name)
                if spec is None or spec.loader is None or not Path(name).is_file():
                    raise ImportError(f"no file {name}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            else:
                if os.getcwd() not in sys.path:
                    sys.path.insert(0, os.getcwd())
                importlib.import_module(name)
        except ImportError as error:
            raise UsageError(f"--import {name}: {error}") from error


def check_backend() -> None:
    """A :class:`UsageError` when JAX cannot start the platform ``JAX_PLATFORMS`` names."""
    import jax

    try:
        jax.devices()
    except (RuntimeError, AssertionError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        platforms = os.environ.get("JAX_PLATFORMS", "")
        raise UsageError(
            f"JAX cannot start the backend JAX_PLATFORMS={platforms!r} asks for ({detail}); "
            "install that platform's jaxlib plugin, or set JAX_PLATFORMS=cpu (or unset it)"
        ) from error


def add_data_flags(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--test", metavar="FILE", help="LIBSVM-format test file (--svmlight)")
    parser.add_argument(
        "--n-features", type=positive_int, metavar="D", help="features (--svmlight; default: "
        "the largest index in the files)",
    )  # fmt: skip
    parser.add_argument(
        "--preprocess",
        choices=(*preprocessing.METHODS, "none"),
        help="fitted on the training split (default: the loader's: maxabs for --svmlight, "
        "center for --cifar10 and --mnist, standardize otherwise)",
    )
    parser.add_argument(
        "--sparse",
        action=argparse.BooleanOptionalAction,
        help="--svmlight data as sparse matrices (default: yes, as load_svmlight, unless "
        "--preprocess centres)",
    )
    parser.add_argument(
        "--val-fraction", type=fraction, help="held out for validation (0.1, as the loaders)"
    )
    parser.add_argument(
        "--test-fraction",
        type=fraction,
        help="held out for test where the data has no test set (0.2, as the loaders)",
    )


def source(args: argparse.Namespace) -> str:
    """The data source the flags name: ``"cifar10"``, ``"mnist"``, ``"svmlight"`` or a
    built-in data set's name."""
    return next((name for name in _LOADERS if getattr(args, name)), args.dataset)


def default_preprocess(args: argparse.Namespace) -> str | None:
    """``--preprocess`` as the loader takes it: its own default when the flag is not given."""
    if args.preprocess is not None:
        return None if args.preprocess == "none" else args.preprocess
    loader = _LOADERS.get(source(args), data.load)
    return inspect.signature(loader).parameters["preprocess"].default


def load_data(args: argparse.Namespace, key, *, preprocess: str | None) -> data.Dataset:
    """The data set the flags name; a file that is missing or unreadable, or a flag that
    does not apply to the source, is a :class:`UsageError` naming it."""
    name = source(args)
    options: dict = dict(key=key, preprocess=preprocess)
    if args.val_fraction is not None:
        options["val_fraction"] = args.val_fraction
    svmlight_only = ("--test", args.test), ("--n-features", args.n_features)
    for flag, value in (*svmlight_only, ("--sparse", args.sparse)):
        if value is not None and name != "svmlight":
            raise UsageError(f"{flag} applies to --svmlight files only")
    if args.test_fraction is not None:
        if name in ("cifar10", "mnist", "mnist1d") or args.test is not None:
            raise UsageError(f"--test-fraction does not apply: {name} has a test set")
        options["test_fraction"] = args.test_fraction
    try:
        if name == "svmlight":
            centres = preprocess in ("standardize", "center")
            options["sparse"] = not centres if args.sparse is None else args.sparse
            return data.load_svmlight(
                args.svmlight, args.n_features, test_path=args.test, **options
            )
        if name in _LOADERS:
            return _LOADERS[name](getattr(args, name), **options)
        return data.load(name, **options)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from error
