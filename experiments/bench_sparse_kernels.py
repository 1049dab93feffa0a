"""Speed of the two sparse products a linear SVM needs, ``X @ W`` (scores) and ``X^T M``
(the weight gradient), several ways, against scipy's CSR products on the same matrix.

The matrix is text-like: ``N`` documents with Poisson(``per_row``) terms drawn from a
Zipf law over ``D`` terms (exponent ``zipf``; repeated terms summed), values in
``[0.1, 1.1)``; ``W`` ``[D, C]`` and ``M`` ``[N, C]`` are standard normal float32. Methods:

* ``scipy``: ``X @ W`` and ``X.T @ M`` on the CSR matrix (one thread);
  ``scipy_csr_of_transpose``: ``Xt @ M`` with ``Xt`` the CSR matrix of ``X^T`` built once;
* ``slots_<E>``: each row's (for ``X^T M``: each column's) entries cut into slots of
  ``E``, padded with zeros; the rows of ``W`` (``M``) a slot's entries point to gathered,
  scaled and added in one fused kernel (the loop over ``E`` unrolled), then a segment sum
  of the slots over sorted ids. svmjax lays sparse data out so, with ``E = 8``;
* ``segment_sum``: the same with one entry per slot, i.e. a ``[nnz, C]`` gather and a
  segment sum; for ``X^T M`` over the entries in column order;
* ``scatter``: ``X^T M`` summed per column from the row-order entries (unsorted ids);
* ``bcoo``: ``jax.experimental.sparse.BCOO`` ``@`` (``dot_general``) and ``.T @``;
* ``svmjax``: the public entry point, ``svmjax.linear.scores`` on the scipy matrix (laid
  out once, at trace time) and ``jax.grad`` of ``<scores, M>`` with respect to ``W``
  (``X^T M`` from the column slots): the exact solver's products;
  ``svmjax_bcoo``: the same on a ``BCOO``, read inside ``jit`` with no host work (one
  entry per slot, ``X^T M`` scattered by column);
* ``class_major``: the exact solver's layout, scores ``[C, N]`` (``slots_8`` transposed)
  and the gradient from its ``[C, N]`` dual variables ``u`` (``slots_8`` reading ``u.T``:
  XLA fuses the transpose into the gathers); ``class_major_identity``: ``u.T`` as
  ``u.T @ I``, a product with the ``C x C`` identity, which XLA materialises once (the
  solver's choice, ``svmjax._sparse_products.transposed``).

The JAX methods are timed as they run in the solver's and the trainer's loops: ``loop``
products inside one compiled ``fori_loop`` (buffers reused), time per product; scipy per
call. Each method is warmed up, then rounds of one measurement of each method, the order
rotated from round to round; min and median over the rounds. The load average before
and after is recorded: time on an idle machine (load <= 1). Writes ``results.json`` and
``results.md`` into the output folder.

    python experiments/bench_sparse_kernels.py [--n 50000 --d 38000 --per-row 14
        --classes 51] [--repeats 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from common import header, markdown_table, write
from jax.experimental import sparse as jax_sparse

from svmjax import linear


@dataclasses.dataclass
class Config:
    out: str = "results/bench_sparse_kernels"
    n: int = 50_000  # documents
    d: int = 38_000  # terms
    per_row: float = 14.0  # mean terms per document
    classes: int = 51
    zipf: float = 1.1  # term frequencies ~ rank ** -zipf
    slot_widths: tuple[int, ...] = (4, 8, 16)
    loop: int = 10  # products per compiled loop
    repeats: int = 10
    seed: int = 0


def text_matrix(config: Config) -> scipy.sparse.csr_matrix:
    """A canonical float32 CSR matrix of Zipf-distributed terms (see the module docstring)."""
    rng = np.random.default_rng(config.seed)
    lengths = np.maximum(1, rng.poisson(config.per_row, config.n))
    p = 1.0 / np.arange(1, config.d + 1) ** config.zipf
    cols = rng.choice(config.d, size=int(lengths.sum()), p=p / p.sum())
    rows = np.repeat(np.arange(config.n), lengths)
    values = (rng.random(cols.size) + 0.1).astype(np.float32)
    X = scipy.sparse.csr_matrix((values, (rows, cols)), shape=(config.n, config.d))
    X.sum_duplicates()
    return X


def slots(indptr, indices, values, width):
    """A compressed matrix's rows cut into slots of ``width`` entries: ``(index [E, S],
    value [E, S], owner [S])``, entry ``e`` of slot ``s`` (zeros pad), ``owner`` sorted."""
    lengths = np.diff(indptr)
    count = -(-lengths // width)
    owner = np.repeat(np.arange(lengths.size), count)
    first = np.cumsum(count) - count
    row = np.repeat(np.arange(lengths.size), lengths)
    within = np.arange(indices.size) - indptr[row]
    slot, position = first[row] + within // width, within % width
    index = np.zeros((width, owner.size), np.int32)
    value = np.zeros((width, owner.size), values.dtype)
    index[position, slot], value[position, slot] = indices, values
    return jnp.asarray(index), jnp.asarray(value), jnp.asarray(owner, jnp.int32)


def slot_product(index, value, owner, src, size):
    """``sum_e value[e] * src[index[e]]`` per slot, segment-summed into ``owner``."""
    total = value[0][:, None] * src[index[0]]
    for e in range(1, index.shape[0]):
        total = total + value[e][:, None] * src[index[e]]
    return jax.ops.segment_sum(total, owner, size, indices_are_sorted=True)


def in_loop(product: Callable, count: int) -> Callable:
    """``count`` calls of ``product(A, *rest)`` in one compiled ``fori_loop``, each on an
    ``A`` perturbed by the last result (so none is hoisted or skipped); ``count = 0``:
    one call, returning the product."""
    if count == 0:
        return jax.jit(product)

    def run(A, *rest):
        def body(_, A):
            out = product(A, *rest)
            return A + 1e-30 * jnp.sum(out[:1])

        return jax.lax.fori_loop(0, count, body, A)

    return jax.jit(run)


def methods(X: scipy.sparse.csr_matrix, W: np.ndarray, M: np.ndarray, config: Config):
    """``{name: (X @ W call, X^T M call)}`` (``None`` where a method has one product);
    a JAX call runs ``config.loop`` products."""
    n, d = X.shape
    Xt = X.T.tocsr()
    coo, csc = X.tocoo(), X.tocsc()
    rows, cols = jnp.asarray(coo.row, jnp.int32), jnp.asarray(coo.col, jnp.int32)
    data = jnp.asarray(coo.data)
    t_cols = jnp.asarray(np.repeat(np.arange(d), np.diff(csc.indptr)), jnp.int32)
    t_rows, t_data = jnp.asarray(csc.indices, jnp.int32), jnp.asarray(csc.data)
    Wj, Mj = jnp.asarray(W), jnp.asarray(M)
    bcoo = jax_sparse.BCOO.from_scipy_sparse(X)
    bcoo = jax_sparse.BCOO((bcoo.data, bcoo.indices), shape=X.shape, indices_sorted=True)
    b = jnp.zeros(W.shape[1], jnp.float32)
    loop = functools.partial(in_loop, count=config.loop)

    def public(features):
        scores = loop(lambda W: linear.scores({"W": W, "b": b}, features))
        gradient = loop(
            lambda M: jax.grad(lambda W: jnp.vdot(linear.scores({"W": W, "b": b}, features), M))(Wj)
        )
        return lambda: scores(Wj), lambda: gradient(Mj)

    segment = loop(lambda W: jax.ops.segment_sum(data[:, None] * W[cols], rows, n))
    segment_t = loop(lambda M: jax.ops.segment_sum(t_data[:, None] * M[t_rows], t_cols, d))
    scatter = loop(lambda M: jax.ops.segment_sum(data[:, None] * M[rows], cols, d))
    bcoo_times = loop(lambda W: bcoo @ W)
    bcoo_transposed = loop(lambda M: bcoo.T @ M)
    table: dict[str, tuple[Callable | None, Callable | None]] = {
        "scipy": (lambda: X @ W, lambda: X.T @ M),
        "scipy_csr_of_transpose": (None, lambda: Xt @ M),
        "segment_sum": (lambda: segment(Wj), lambda: segment_t(Mj)),
        "scatter": (None, lambda: scatter(Mj)),
        "bcoo": (lambda: bcoo_times(Wj), lambda: bcoo_transposed(Mj)),
        "svmjax": public(X),
        "svmjax_bcoo": public(bcoo),
    }
    for width in config.slot_widths:
        by_row = slots(X.indptr, X.indices, X.data, width)
        by_col = slots(csc.indptr, csc.indices, csc.data, width)
        forward = loop(lambda W, r=by_row: slot_product(*r, W, n))
        backward = loop(lambda M, c=by_col: slot_product(*c, M, d))
        table[f"slots_{width}"] = (lambda f=forward: f(Wj), lambda f=backward: f(Mj))
        if width == 8:
            u = Mj.T
            scores = loop(lambda W, r=by_row: slot_product(*r, W, n).T)
            plain = loop(lambda u, c=by_col: slot_product(*c, u.T, d))
            eye = jnp.eye(W.shape[1], dtype=jnp.float32)
            identity = loop(lambda u, c=by_col, e=eye: slot_product(*c, jnp.dot(u.T, e), d))
            table["class_major"] = (lambda f=scores: f(Wj), lambda f=plain, u=u: f(u))
            table["class_major_identity"] = (None, lambda f=identity, u=u: f(u))
    return table


def _block(result):
    return jax.block_until_ready(result) if isinstance(result, jax.Array) else result


def time_all(table, config: Config) -> dict[str, dict[str, float]]:
    """``{method/product: {"min_ms", "median_ms"}}`` per product, interleaved rounds."""
    calls = {
        f"{name}/{product}": fn
        for name, pair in table.items()
        for product, fn in zip(("XW", "XtM"), pair, strict=True)
        if fn is not None
    }
    for fn in calls.values():
        _block(fn())
        _block(fn())
    samples: dict[str, list[float]] = {key: [] for key in calls}
    keys = list(calls)
    for r in range(config.repeats):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            start = time.perf_counter()
            _block(calls[key]())
            per = 1 if key.startswith("scipy") else config.loop
            samples[key].append((time.perf_counter() - start) / per)
    return {
        key: {"min_ms": 1e3 * min(s), "median_ms": 1e3 * float(np.median(s))}
        for key, s in samples.items()
    }


def check(table) -> dict[str, float]:
    """Max-norm relative error of every method's products against scipy's."""
    want = {"XW": table["scipy"][0](), "XtM": table["scipy"][1]()}
    errors = {}
    for name, pair in table.items():
        for product, fn in zip(("XW", "XtM"), pair, strict=True):
            if fn is None:
                continue
            got = np.asarray(fn(), np.float64)
            if name == "class_major" and product == "XW":  # [C, N]
                got = got.T
            reference = np.asarray(want[product], np.float64)
            errors[f"{name}/{product}"] = float(
                np.max(np.abs(got - reference)) / np.max(np.abs(reference))
            )
    return errors


def main(config: Config) -> dict:
    X = text_matrix(config)
    rng = np.random.default_rng(config.seed + 1)
    W = rng.standard_normal((config.d, config.classes)).astype(np.float32)
    M = rng.standard_normal((config.n, config.classes)).astype(np.float32)
    errors = check(methods(X, W, M, dataclasses.replace(config, loop=0)))
    table = methods(X, W, M, config)
    load_before = os.getloadavg()[0]
    timings = time_all(table, config)
    load_after = os.getloadavg()[0]
    scipy_ms = {p: timings[f"scipy/{p}"]["min_ms"] for p in ("XW", "XtM")}
    rows = []
    for key, t in timings.items():
        product = key.split("/")[1]
        ratio = t["min_ms"] / scipy_ms[product]
        t["vs_scipy"] = ratio
        rows.append([key, f"{t['min_ms']:.1f}", f"{t['median_ms']:.1f}", f"{ratio:.2f}"])
    lengths = np.diff(X.indptr)
    results = {
        "config": dataclasses.asdict(config),
        "matrix": {
            "shape": list(X.shape),
            "nnz": int(X.nnz),
            "longest_row": int(lengths.max()),
            "longest_column": int(np.bincount(X.indices, minlength=X.shape[1]).max()),
        },
        "timings": timings,
        "max_rel_error": errors,
        "load_average": {"before": load_before, "after": load_after},
    }
    markdown = "\n\n".join(
        [
            f"# Sparse products, {X.shape[0]} x {X.shape[1]}, {X.nnz} non-zeros, "
            f"{config.classes} classes",
            header(),
            f"Load average {load_before:.2f} before, {load_after:.2f} after; min and "
            f"median of {config.repeats} interleaved rounds; JAX: per product, "
            f"{config.loop} in a compiled loop.",
            markdown_table(["method/product", "min ms", "median ms", "vs scipy"], rows),
        ]
    )
    write(config.out, results, markdown)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Config()
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--n", type=int, default=defaults.n)
    parser.add_argument("--d", type=int, default=defaults.d)
    parser.add_argument("--per-row", type=float, default=defaults.per_row)
    parser.add_argument("--classes", type=int, default=defaults.classes)
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--loop", type=int, default=defaults.loop)
    args = parser.parse_args()
    main(
        Config(
            out=args.out, n=args.n, d=args.d, per_row=args.per_row, classes=args.classes,
            repeats=args.repeats, loop=args.loop,
        )
    )  # fmt: skip
