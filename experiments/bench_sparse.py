"""The exact solver on sparse text: ``svmjax.solve.solve`` against scikit-learn's
``LinearSVC`` on the same CSR matrices, Crammer–Singer and one-vs-rest, no intercept.

Collections (``experiments/text_corpus.py``): synthetic Zipf text at news20's size
(16,000 x 62,000, 20 classes), the gcloud manual pages of this machine (left out with a
note when ``--man-dir`` has none), and with ``--rcv1`` synthetic text at rcv1's size
(500,000 x 47,000, 53 classes). Each is split 80/20 (stratified, seed 0): train on the
80%, test accuracy on the 20%.

Both sides minimise the same primal ``½‖W‖² + C Σ_i L_i`` (docs/conventions.md):
``loss="crammer_singer"`` against ``LinearSVC(multi_class="crammer_singer")``,
``loss="one_vs_rest"`` against ``LinearSVC(loss="hinge")`` (one-vs-rest, liblinear's
dual solver), both with ``fit_intercept=False``. Both weight matrices are scored by
``svmjax.solve.primal_objective`` in float64. svmjax runs at its default ``tol`` (a
certified relative duality gap of 1e-3); *cold* is its first call with JAX's caches
cleared (compilation included), *warm* the second, identical call. LinearSVC runs with its
defaults, timed once (it compiles nothing). *Peak memory* is the growth of the process's
resident set during one fit over the resident set just before it (sampled every 5 ms by a
thread reading ``/proc/self/statm``, after ``malloc_trim`` returns freed memory to the
system); for svmjax it is the warm call. A shared machine: compare the ratios, measured
side by side. Writes ``results.json`` and ``results.md``.

    python experiments/bench_sparse.py [--out results/bench_sparse] [--Cs 0.1 1]
        [--losses crammer_singer one_vs_rest] [--collections news20 gcloud] [--rcv1]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import scipy.sparse
from common import PeakRSS, header, markdown_table, write
from text_corpus import NEWS20, RCV1, ZipfText, gcloud_pages, zipf_text

from svmjax import solve

PEERS = {  # svmjax loss -> LinearSVC options solving the same problem
    "crammer_singer": {"multi_class": "crammer_singer"},
    "one_vs_rest": {"multi_class": "ovr", "loss": "hinge"},
}


@dataclasses.dataclass(frozen=True)
class Config:
    out: str = "results/bench_sparse"
    man_dir: str = "/usr/share/man/man1"
    collections: tuple[str, ...] = ("news20", "gcloud")  # and "rcv1"
    Cs: tuple[float, ...] = (0.1, 1.0)
    losses: tuple[str, ...] = ("crammer_singer", "one_vs_rest")
    test_fraction: float = 0.2
    max_iter: int = 5000
    peer: bool = True  # False: svmjax alone
    synthetic: tuple[tuple[str, ZipfText], ...] = (("news20", NEWS20), ("rcv1", RCV1))


def _collection(name: str, config: Config):
    """``(X, y, description)`` of one collection, or ``None`` when it cannot be built."""
    if name == "gcloud":
        man_dir = Path(config.man_dir)
        if not any(man_dir.glob("gcloud_*.1.gz")):
            return None
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts, y, _ = gcloud_pages(man_dir, min_commands=40)
        vectorizer = TfidfVectorizer(
            sublinear_tf=True, min_df=2, ngram_range=(1, 2), dtype=np.float32
        )
        return vectorizer.fit_transform(texts).tocsr(), y, "gcloud man pages (TF-IDF)"
    spec = dict(config.synthetic)[name]
    X, y = zipf_text(spec)
    return X, y, f"Zipf text ({name} size)"


def _objective(W, X, y, C, loss) -> float:
    with jax.enable_x64(True):
        X64 = X.astype(np.float64)
        return float(
            solve.primal_objective({"W": np.asarray(W, np.float64)}, X64, y, C=C, loss=loss)
        )


def _accuracy(W, X, y) -> float:
    return float(np.mean(np.argmax(np.asarray(X @ np.asarray(W)), 1) == y))


def _ours(X, y, C, loss, config, X_test, y_test) -> dict:
    def run():
        result = solve.solve(X, y, loss=loss, C=C, max_iter=config.max_iter)
        return jax.block_until_ready(result)

    jax.clear_caches()
    start = time.perf_counter()
    run()
    cold = time.perf_counter() - start
    with PeakRSS() as memory:
        start = time.perf_counter()
        result = run()
        warm = time.perf_counter() - start
    W = np.asarray(result.params["W"])
    return {
        "cold_s": cold,
        "warm_s": warm,
        "objective": _objective(W, X, y, C, loss),
        "accuracy": _accuracy(W, X_test, y_test),
        "peak_mib": memory.mib,
        "iterations": int(result.n_iter),
        "converged": bool(result.converged),
        "certified_gap": float(result.gap / result.objective),
    }


def _theirs(X, y, C, loss, X_test, y_test) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    with PeakRSS() as memory, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        model = LinearSVC(C=C, fit_intercept=False, **PEERS[loss]).fit(X, y)
        seconds = time.perf_counter() - start
    W = model.coef_.T
    return {
        "seconds": seconds,
        "objective": _objective(W, X, y, C, loss),
        "accuracy": _accuracy(W, X_test, y_test),
        "peak_mib": memory.mib,
        "iterations": int(np.max(model.n_iter_)),
    }


def main(config: Config) -> dict:
    from sklearn.model_selection import train_test_split

    print(header(), flush=True)
    rows, notes, sizes = [], [], {}
    for name in config.collections:
        built = _collection(name, config)
        if built is None:
            notes.append(
                f"No gcloud manual pages in {config.man_dir}: that collection is left out."
            )
            continue
        X_all, y_all, description = built
        X, X_test, y, y_test = train_test_split(
            X_all, y_all, test_size=config.test_fraction, random_state=0, stratify=y_all
        )
        X, X_test = scipy.sparse.csr_matrix(X), scipy.sparse.csr_matrix(X_test)
        y, y_test = np.asarray(y, np.int32), np.asarray(y_test, np.int32)
        sizes[name] = {
            "description": description,
            "train": X.shape[0],
            "test": X_test.shape[0],
            "features": X.shape[1],
            "classes": int(y_all.max()) + 1,
            "nnz_per_row": round(X.nnz / X.shape[0], 1),
            "matrix_mib": (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20,
        }
        print(name, sizes[name], flush=True)
        for loss in config.losses:
            for C in config.Cs:
                row = {"collection": name, "loss": loss, "C": C}
                row["svmjax"] = _ours(X, y, C, loss, config, X_test, y_test)
                row["liblinear"] = _theirs(X, y, C, loss, X_test, y_test) if config.peer else None
                print(row, flush=True)
                rows.append(row)

    def cell(r, side, key, spec):
        return "–" if r[side] is None else spec.format(r[side][key])

    table = markdown_table(
        [
            "collection",
            "loss",
            "C",
            "svmjax cold / warm s",
            "LinearSVC s",
            "warm ratio",
            "svmjax obj.",
            "LinearSVC obj.",
            "rel. diff",
            "acc. svmjax / LinearSVC",
            "peak MiB svmjax / LinearSVC",
            "iters svmjax / LinearSVC",
        ],
        [
            [
                r["collection"],
                r["loss"],
                f"{r['C']:g}",
                f"{r['svmjax']['cold_s']:.2f} / {r['svmjax']['warm_s']:.2f}",
                cell(r, "liblinear", "seconds", "{:.2f}"),
                "–"
                if r["liblinear"] is None
                else f"{r['svmjax']['warm_s'] / r['liblinear']['seconds']:.2f}",
                f"{r['svmjax']['objective']:.6g}",
                cell(r, "liblinear", "objective", "{:.6g}"),
                "–"
                if r["liblinear"] is None
                else f"{100 * (r['svmjax']['objective'] / r['liblinear']['objective'] - 1):+.3f}%",
                f"{r['svmjax']['accuracy']:.4f} / " + cell(r, "liblinear", "accuracy", "{:.4f}"),
                f"{r['svmjax']['peak_mib']:.0f} / " + cell(r, "liblinear", "peak_mib", "{:.0f}"),
                f"{r['svmjax']['iterations']} / " + cell(r, "liblinear", "iterations", "{}"),
            ]
            for r in rows
        ],
    )
    size_table = markdown_table(
        ["collection", "train × features", "test", "classes", "nnz/row", "CSR MiB"],
        [
            [
                f"{name}: {s['description']}",
                f"{s['train']} × {s['features']}",
                s["test"],
                s["classes"],
                s["nnz_per_row"],
                f"{s['matrix_mib']:.1f}",
            ]
            for name, s in sizes.items()
        ],
    )
    markdown = "\n".join(
        [
            "# svmjax.solve vs LinearSVC on sparse text, no intercept",
            "",
            header(),
            "",
            size_table,
            "",
            "svmjax at its default tol (certified relative gap 1e-3): cold = first call with "
            "JAX's caches cleared, warm = the second call; LinearSVC with its defaults, timed "
            "once. Both objectives by primal_objective in float64; accuracy on the held-out "
            "split; peak memory = resident-set growth during one fit (svmjax: the warm call); "
            "LinearSVC's one-vs-rest iterations are the largest over its binary problems.",
            "",
            table,
            "",
            *notes,
        ]
    )
    results = {"config": dataclasses.asdict(config), "sizes": sizes, "rows": rows, "notes": notes}
    write(config.out, results, markdown)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--man-dir", default=Config.man_dir)
    parser.add_argument("--collections", nargs="+", default=Config.collections)
    parser.add_argument("--rcv1", action="store_true", help="add the rcv1-size collection (long)")
    parser.add_argument("--Cs", nargs="+", type=float, default=Config.Cs)
    parser.add_argument("--losses", nargs="+", default=Config.losses, choices=tuple(PEERS))
    parser.add_argument("--max-iter", type=int, default=Config.max_iter)
    parser.add_argument("--no-peer", action="store_true", help="svmjax alone, no LinearSVC")
    args = parser.parse_args()
    collections = tuple(args.collections) + (("rcv1",) if args.rcv1 else ())
    main(
        Config(
            out=args.out,
            man_dir=args.man_dir,
            collections=collections,
            Cs=tuple(args.Cs),
            losses=tuple(args.losses),
            max_iter=args.max_iter,
            peer=not args.no_peer,
        )
    )
