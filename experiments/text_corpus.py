"""Sparse text collections for the benchmarks: a real one built from this machine's files, and
synthetic Zipf text at news20's and rcv1's sizes.

The real collection is the Google Cloud CLI's manual pages (``/usr/share/man/man1/gcloud_*``,
installed by the ``google-cloud-cli`` package): one document per command, its class the
command group (``compute``, ``container``, ``iam``, ...). A command documented in several
release tracks (GA, beta, alpha, preview) is kept once, from the first of those tracks it
has, so near-copies never land on both sides of a split. A group is a class when it has at
least ``min_commands`` commands. The NAME and SYNOPSIS sections and every ``gcloud [track]
<group>`` invocation are removed, so a page does not spell out its own class; what is left
is the description, flags and examples. Documents become TF-IDF rows over words and word
pairs found in at least two documents (scikit-learn's ``TfidfVectorizer``: sublinear term
frequencies, unit-length rows).

:func:`zipf_text` draws the synthetic collections (:data:`NEWS20`, :data:`RCV1`).

Both are written as LIBSVM files (labels ``0..C-1``) into the output folder, with their sizes
in ``results.json`` / ``results.md``:

    python experiments/text_corpus.py [--out DIR] [--man-dir DIR] [--rcv1]
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import re
import time
from pathlib import Path

import numpy as np
import scipy.sparse
from common import markdown_table, write

from svmjax import data


@dataclasses.dataclass(frozen=True)
class ZipfText:
    """A synthetic bag-of-words collection with class-dependent topics.

    Word ``w`` of the vocabulary has background frequency proportional to ``(w + 1) ** -zipf``.
    Each class has a topic: ``topic_words`` words drawn once at random (the 100 most frequent
    words excluded), with Zipf frequencies of their own. A document of class ``c`` has a
    log-normal number of tokens (mean ``tokens_per_doc``); each token comes from ``c``'s topic
    with probability ``topic_share``, else from the background. Classes are balanced.
    """

    n: int = 16_000
    d: int = 62_000
    classes: int = 20
    tokens_per_doc: float = 140.0
    zipf: float = 1.1
    topic_words: int = 2_000
    topic_share: float = 0.03
    seed: int = 0


NEWS20 = ZipfText()  # news20: 15,935 training documents, 62,061 features, 20 classes
RCV1 = ZipfText(n=500_000, d=47_000, classes=53, tokens_per_doc=120.0)  # rcv1: 53 classes


@dataclasses.dataclass
class Config:
    out: str = "results/text_corpus"
    man_dir: str = "/usr/share/man/man1"
    min_commands: int = 40  # a command group with fewer commands is left out
    min_df: int = 2  # a term in fewer documents is left out
    ngrams: int = 2  # terms: words and runs of up to this many words
    synthetic: tuple[ZipfText, ...] = (NEWS20,)


def zipf_text(spec: ZipfText) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """Draw ``spec``'s collection: TF-IDF rows (``1 + log tf`` times smoothed idf, unit
    length) as a float32 CSR matrix ``[n, d]``, and int32 labels ``[n]``. The same spec
    gives the same matrix."""
    rng = np.random.default_rng(spec.seed)
    background = np.cumsum((np.arange(spec.d) + 1.0) ** -spec.zipf)
    background /= background[-1]
    common = min(100, spec.d - spec.topic_words)
    topics = np.stack(
        [
            common + rng.choice(spec.d - common, spec.topic_words, replace=False)
            for _ in range(spec.classes)
        ]
    )
    topic = np.cumsum((np.arange(spec.topic_words) + 1.0) ** -spec.zipf)
    topic /= topic[-1]
    y = rng.permutation(np.arange(spec.n) % spec.classes).astype(np.int32)
    sigma = 0.5
    mu = np.log(spec.tokens_per_doc) - sigma**2 / 2
    lengths = np.maximum(1, np.round(rng.lognormal(mu, sigma, spec.n))).astype(np.int64)
    pieces = []
    for start in range(0, spec.n, 20_000):  # bounded memory at rcv1's size
        docs = np.arange(start, min(start + 20_000, spec.n))
        doc = np.repeat(docs, lengths[docs])
        from_topic = rng.random(len(doc)) < spec.topic_share
        word = np.searchsorted(background, rng.random(len(doc)), side="right")
        drawn = np.searchsorted(topic, rng.random(from_topic.sum()), side="right")
        word[from_topic] = topics[y[doc[from_topic]], drawn]
        counts = scipy.sparse.coo_matrix(
            (np.ones(len(doc), np.float32), (doc - start, np.minimum(word, spec.d - 1))),
            shape=(len(docs), spec.d),
        )
        pieces.append(counts.tocsr())
    X = scipy.sparse.vstack(pieces, format="csr", dtype=np.float32)
    X.sum_duplicates()
    return _tfidf(X), y


def _tfidf(counts: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
    """scikit-learn's ``TfidfTransformer(sublinear_tf=True)`` on a count matrix."""
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log((1 + counts.shape[0]) / (1 + df)) + 1
    X = counts.copy()
    X.data = ((1 + np.log(X.data)) * idf[X.indices]).astype(np.float32)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    norms = np.sqrt(np.bincount(rows, X.data.astype(np.float64) ** 2, X.shape[0]))
    X.data /= norms[rows].astype(np.float32)
    return X


_TRACKS = ("alpha", "beta", "preview")
_SECTION = re.compile(r'^\.SH\s+"?([^"\n]*)"?\s*$', re.M)
_ESCAPE = re.compile(r"\\(?:f(?:\(..|\[[^]]*\]|.)|\(..|\*.|.)")


def gcloud_pages(man_dir: Path, min_commands: int) -> tuple[list[str], np.ndarray, list[str]]:
    """The documents, their int32 classes and the class names (command groups, sorted) of
    the gcloud manual pages in ``man_dir``."""
    chosen: dict[tuple[str, ...], tuple[int, Path]] = {}
    for path in sorted(man_dir.glob("gcloud_*.1.gz")):
        parts = path.name.removesuffix(".1.gz").split("_")[1:]
        rank = 1 + _TRACKS.index(parts[0]) if parts and parts[0] in _TRACKS else 0
        command = tuple(parts[1:] if rank else parts)
        if len(command) >= 2 and (command not in chosen or rank < chosen[command][0]):
            chosen[command] = (rank, path)
    groups: dict[str, list[Path]] = {}
    for command, (_, path) in sorted(chosen.items()):
        groups.setdefault(command[0], []).append(path)
    names = sorted(group for group, paths in groups.items() if len(paths) >= min_commands)
    texts, labels = [], []
    for label, group in enumerate(names):
        for path in groups[group]:
            texts.append(_man_text(gzip.decompress(path.read_bytes()).decode("utf-8", "replace")))
            labels.append(label)
    return texts, np.array(labels, np.int32), names


def _man_text(roff: str) -> str:
    """A manual page's words: NAME and SYNOPSIS dropped, roff requests and escapes removed,
    ``gcloud [track] <group>`` invocations removed."""
    kept, sections = [], _SECTION.split(roff)
    for title, body in zip(sections[1::2], sections[2::2], strict=True):
        if title.strip().upper() not in ("NAME", "SYNOPSIS"):
            kept.append(body)
    lines = [line for line in "\n".join(kept).splitlines() if not line.startswith((".", "'"))]
    text = _ESCAPE.sub(lambda m: "-" if m.group(0) == "\\-" else " ", "\n".join(lines))
    return re.sub(r"\bgcloud(?:\s+(?:alpha|beta|preview))?\s+[\w-]+", " ", text)


def _sizes(name: str, X, y: np.ndarray, classes: list[str], path: Path, seconds: float) -> dict:
    per_class = np.bincount(y, minlength=len(classes))
    return {
        "collection": name,
        "documents": X.shape[0],
        "features": X.shape[1],
        "nnz": int(X.nnz),
        "nnz_per_row": round(X.nnz / X.shape[0], 1),
        "density": X.nnz / (X.shape[0] * X.shape[1]),
        "classes": len(classes),
        "smallest_class": int(per_class.min()),
        "largest_class": int(per_class.max()),
        "file": path.name,
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "build_s": round(seconds, 1),
    }


def _save(X, y: np.ndarray, path: Path) -> None:
    """Write a LIBSVM file and check that :func:`svmjax.data.load_svmlight` reads it back."""
    from sklearn.datasets import dump_svmlight_file

    dump_svmlight_file(X, y, str(path), zero_based=False)
    back = data.load_svmlight(path, X.shape[1], preprocess=None, val_fraction=0, test_fraction=0)
    assert back.X_train.shape == X.shape and back.X_train.nnz == X.nnz, (back, X.shape)


def main(config: Config) -> dict:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, notes = [], []
    man_dir = Path(config.man_dir)
    if any(man_dir.glob("gcloud_*.1.gz")):
        from sklearn.feature_extraction.text import TfidfVectorizer

        start = time.perf_counter()
        texts, y, names = gcloud_pages(man_dir, config.min_commands)
        vectorizer = TfidfVectorizer(
            sublinear_tf=True,
            min_df=config.min_df,
            ngram_range=(1, config.ngrams),
            dtype=np.float32,
        )
        X = vectorizer.fit_transform(texts)
        seconds = time.perf_counter() - start
        _save(X, y, out / "gcloud_man.svm")
        rows.append(_sizes("gcloud man pages", X, y, names, out / "gcloud_man.svm", seconds))
        rows[-1]["class_names"] = names
    else:
        notes.append(f"No gcloud manual pages in {man_dir}: the real collection is left out.")
    for spec in config.synthetic:
        start = time.perf_counter()
        X, y = zipf_text(spec)
        seconds = time.perf_counter() - start
        path = out / f"zipf_{spec.n}x{spec.d}x{spec.classes}.svm"
        _save(X, y, path)
        classes = [str(c) for c in range(spec.classes)]
        name = f"Zipf text, n={spec.n} d={spec.d} C={spec.classes}"
        rows.append(_sizes(name, X, y, classes, path, seconds))
    header = ["collection", "documents", "features", "nnz/row", "classes", "class sizes", "MB"]
    table = [
        [
            r["collection"],
            r["documents"],
            r["features"],
            r["nnz_per_row"],
            r["classes"],
            f"{r['smallest_class']}–{r['largest_class']}",
            r["file_mb"],
        ]
        for r in rows
    ]
    markdown = "\n".join(
        ["# Sparse text collections", "", markdown_table(header, table), "", *notes]
    )
    results = {"config": dataclasses.asdict(config), "collections": rows}
    write(out, results, markdown)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--man-dir", default=Config.man_dir)
    parser.add_argument("--rcv1", action="store_true", help="also rcv1's size (500,000 rows)")
    args = parser.parse_args()
    synthetic = (NEWS20, RCV1) if args.rcv1 else (NEWS20,)
    main(Config(out=args.out, man_dir=args.man_dir, synthetic=synthetic))
