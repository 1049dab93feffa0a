"""The command line against liblinear's: ``svmjax train --solver exact`` and ``svmjax
predict`` against ``liblinear-train -s 4`` (Crammer–Singer) and ``liblinear-predict`` on the
same LIBSVM files, no preprocessing, no intercept (``-B -1``).

Both minimise ``½‖W‖² + C Σ_i L_i^CS`` at the same ``C`` (docs/conventions.md); each
model's objective is computed by one formula, ``svmjax.solve.primal_objective`` in float64
on the training file, from the weights each tool wrote (liblinear's model file, svmjax's
``model.npz``). The times are each command's wall time, process start included (svmjax's
also includes JAX's start and compilation; its own ``seconds_including_compile`` is
reported beside it). Accuracy is each ``predict`` command's on the test file. The data: a
LIBSVM file given by ``--data``/``--test``, or generated (sparse class-mean features with
noise, ``n_train`` + ``n_test`` rows). Needs ``liblinear-train`` and ``liblinear-predict``
(Debian's ``liblinear-tools``). Writes ``results.json``, ``results.md`` and both models.

    python experiments/bench_cli_liblinear.py [--out results/bench_cli_liblinear]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import header, markdown_table, write

from svmjax import data, model
from svmjax.gradcheck import x64
from svmjax.solve import primal_objective


@dataclasses.dataclass(frozen=True)
class Config:
    out: str = "results/bench_cli_liblinear"
    data: str | None = None  # a LIBSVM training file; None: generate one
    test: str | None = None  # its test file (with data)
    n_train: int = 20_000
    n_test: int = 5_000
    n_features: int = 300
    n_classes: int = 10
    density: float = 0.1  # share of non-zero features per row
    noise: float = 1.0  # feature noise, in units of the class means' scale
    C: float = 0.1
    liblinear_tol: float = 0.01  # liblinear-train -e
    tol: float = 1e-3  # svmjax train --tol (relative duality gap)
    sparse: bool = True  # svmjax train --sparse (False: --no-sparse, dense arrays)
    seed: int = 0


def _generate(path: Path, n: int, config: Config, seed: int) -> Path:
    """``n`` rows: class means on a random ``density`` share of the features, plus noise
    on those features only (so rows stay sparse); labels ``1..n_classes``."""
    shape = (config.n_classes, config.n_features)
    means = np.random.default_rng(config.seed).standard_normal(shape)
    rng = np.random.default_rng(seed)
    y = rng.integers(config.n_classes, size=n)
    lines = []
    for label in y:
        columns = np.flatnonzero(rng.random(config.n_features) < config.density)
        values = means[label, columns] + config.noise * rng.standard_normal(len(columns))
        pairs = " ".join(f"{j + 1}:{v:.5g}" for j, v in zip(columns, values, strict=True))
        lines.append(f"{label + 1} {pairs}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr or result.stdout}")
    return seconds, result


def _liblinear_weights(path: Path, class_names: tuple[str, ...], d: int) -> np.ndarray:
    """``W`` ``[d, C]`` of a liblinear model file, its columns in ``class_names``' order
    (liblinear orders classes by first appearance in the training file)."""
    lines = path.read_text().splitlines()
    fields = dict(line.split(" ", 1) for line in lines[: lines.index("w")])
    labels = fields["label"].split()
    if float(fields["bias"]) >= 0:
        raise ValueError("a model with a bias feature; train with -B -1")
    W = np.loadtxt(lines[lines.index("w") + 1 :], ndmin=2)
    W = np.pad(W, ((0, d - len(W)), (0, 0)))  # features beyond the file's largest index
    names = [_name(float(label)) for label in labels]
    return W[:, [names.index(name) for name in class_names]]


def _name(value: float) -> str:
    """A LIBSVM label's class name, as :func:`svmjax.data.load_svmlight` writes it."""
    return str(int(value)) if value.is_integer() else repr(value)


def main(config: Config) -> dict:
    print(header(), flush=True)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    for tool in ("liblinear-train", "liblinear-predict"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found (Debian: apt-get install liblinear-tools)")
    if config.data is None:
        train_file = _generate(out / "train.svm", config.n_train, config, config.seed + 1)
        test_file = _generate(out / "test.svm", config.n_test, config, config.seed + 2)
    else:
        train_file, test_file = Path(config.data), Path(config.test or config.data)
    C = f"{config.C:g}"
    svmjax_cli = [sys.executable, "-m", "svmjax.cli"]
    train_cmd = [*svmjax_cli, "train", "--svmlight", str(train_file), "--solver", "exact"]
    train_cmd += ["--loss", "crammer_singer", "--preprocess", "none", "--no-intercept", "-C", C]
    train_cmd += ["--tol", f"{config.tol:g}", "--val-fraction", "0", "--test-fraction", "0"]
    train_cmd += ["--out", str(out / "svmjax"), "--json"]
    train_cmd += [] if config.sparse else ["--no-sparse"]
    svmjax_s, result = _timed(train_cmd)
    metrics = json.loads(result.stdout)
    predict_cmd = [*svmjax_cli, "predict", str(out / "svmjax" / "model.npz"), str(test_file)]
    predict_cmd += ["-o", str(out / "svmjax" / "predictions")]
    svmjax_predict_s, result = _timed(predict_cmd)
    svmjax_accuracy = float(re.search(r"accuracy ([\d.]+)", result.stdout)[1])

    model_file = out / "liblinear.model"
    liblinear_cmd = ["liblinear-train", "-s", "4", "-c", C, "-e", f"{config.liblinear_tol:g}"]
    liblinear_cmd += ["-B", "-1", "-q", str(train_file), str(model_file)]
    liblinear_s, _ = _timed(liblinear_cmd)
    liblinear_predict_s, result = _timed(
        ["liblinear-predict", str(test_file), str(model_file), str(out / "liblinear.predictions")]
    )
    liblinear_accuracy = float(re.search(r"Accuracy = ([\d.]+)%", result.stdout)[1]) / 100

    ds = data.load_svmlight(
        train_file, val_fraction=0.0, test_fraction=0.0, preprocess=None, sparse=False
    )
    saved = model.load(out / "svmjax" / "model.npz")
    weights = {
        "svmjax": saved.W,
        "liblinear": _liblinear_weights(model_file, ds.class_names, ds.n_features),
    }
    X = ds.X_train.astype(np.float64)
    with x64():
        objective = {
            name: float(
                primal_objective(
                    {"W": W.astype(np.float64)}, X, ds.y_train, C=config.C, loss="crammer_singer"
                )  # fmt: skip
            )
            for name, W in weights.items()
        }
    results = {
        "config": dataclasses.asdict(config),
        "data": {
            "train": str(train_file),
            "test": str(test_file),
            "rows": len(ds.y_train),
            "features": ds.n_features,
            "classes": ds.n_classes,
        },  # fmt: skip
        "commands": {
            "svmjax": " ".join(["svmjax", *train_cmd[3:]]),
            "liblinear": " ".join(liblinear_cmd),
        },
        "objective": objective,
        "svmjax_vs_liblinear": objective["svmjax"] / objective["liblinear"] - 1,
        "svmjax_certified_gap": metrics["dual_gap"] / metrics["objective"],
        "svmjax_iterations": metrics["n_iter"],
        "seconds": {
            "svmjax train": svmjax_s,
            "svmjax fit inside": metrics["seconds_including_compile"],
            "liblinear-train": liblinear_s,
            "svmjax predict": svmjax_predict_s,
            "liblinear-predict": liblinear_predict_s,
        },
        "test_accuracy": {"svmjax": svmjax_accuracy, "liblinear": liblinear_accuracy},
    }
    rows = [
        ["svmjax train --solver exact", f"{objective['svmjax']:.6g}", f"{svmjax_s:.2f}",
         f"{svmjax_accuracy:.4f}"],
        [f"liblinear-train -s 4 -e {config.liblinear_tol:g}", f"{objective['liblinear']:.6g}",
         f"{liblinear_s:.2f}", f"{liblinear_accuracy:.4f}"],
    ]  # fmt: skip
    markdown = (
        f"# `svmjax train` vs `liblinear-train -s 4` ({len(ds.y_train)} × {ds.n_features}, "
        f"{ds.n_classes} classes, C = {C}, no intercept, no preprocessing)\n\n"
        + markdown_table(["command", "objective (float64)", "wall s", "test accuracy"], rows)
        + f"\n\nsvmjax's objective is {100 * results['svmjax_vs_liblinear']:+.3f}% of "
        f"liblinear's; its certified relative gap {results['svmjax_certified_gap']:.2g} "
        f"after {metrics['n_iter']} iterations (fit {metrics['seconds_including_compile']:.2f} "
        f"s of the command's {svmjax_s:.2f} s). Predict: svmjax {svmjax_predict_s:.2f} s, "
        f"liblinear {liblinear_predict_s:.2f} s.\n"
    )
    write(out, results, markdown)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--data", help="LIBSVM training file (default: generated)")
    parser.add_argument("--test", help="its test file")
    parser.add_argument("--C", type=float, default=Config.C)
    parser.add_argument("--n-train", type=int, default=Config.n_train)
    parser.add_argument("--no-sparse", action="store_true", help="svmjax on dense arrays")
    args = parser.parse_args()
    options = dict(data=args.data, test=args.test, C=args.C, n_train=args.n_train)
    main(Config(out=args.out, sparse=not args.no_sparse, **options))
