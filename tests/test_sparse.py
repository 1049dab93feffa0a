"""Sparse features at every entry point: the same results as on the dense copy of a small
matrix, bad sparse input refused (or NaN inside ``jit``), nothing densified.

Two parts run in child processes: the 8-device mesh checks (``python tests/test_sparse.py
--devices DIR``, with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``, as
``tests/test_sharding.py`` does) and the memory acceptance (``--memory DIR``): every entry
point fits and predicts on a 2,000 x 2,000,000 CSR matrix (a dense copy would take 16 GB)
and its peak resident memory is read from ``resource.getrusage``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as scipy_sparse
from conftest import F32_TOL, F64_TOL, TRAIN_TOL, assert_close
from jax.experimental import sparse as jax_sparse

from svmjax import _sparse, continuation, grid, linear, sharding, solve, train
from svmjax._sparse_products import rmatmul, take_rows, times, transposed
from svmjax.gradcheck import x64

SUBPROCESS_TIMEOUT = 240
MEMORY_LIMIT_GB = 2.0  # peak resident memory of the whole child process, after imports
SOLVE_TOL = 1e-6  # float64 solves compared sparse vs dense: each certified to this gap


def _problem(n=60, d=17, c=4, density=0.25, seed=0, dtype=np.float32):
    """A CSR matrix with an empty row and an empty column, and labels."""
    rng = np.random.default_rng(seed)
    X = scipy_sparse.random(n, d, density=density, format="csr", random_state=seed, dtype=dtype)
    X = X.tolil()
    X[3, :] = 0
    X[:, 5] = 0
    X = X.tocsr()
    X.eliminate_zeros()
    X.data += np.sign(X.data) * 0.5  # values away from 0: every stored entry counts
    y = rng.integers(0, c, n).astype(np.int32)
    return X, y


def _formats(X):
    """The same matrix in every accepted form."""
    coo = X.tocoo()
    return {
        "csr_matrix": X,
        "csr_array": scipy_sparse.csr_array(X),
        "csc_matrix": X.tocsc(),
        "csc_array": scipy_sparse.csc_array(X),
        "coo_matrix": coo,
        "coo_array": scipy_sparse.coo_array(X),
        "lil_matrix": X.tolil(),
        "bcoo": jax_sparse.BCOO.from_scipy_sparse(X),
        "bcsr": jax_sparse.BCSR.from_scipy_sparse(X),
    }


# --- the products --------------------------------------------------------------------------


@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("transposed", [False, True])
def test_products_equal_dense_ones(blocks, transposed):
    X, _ = _problem()
    rng = np.random.default_rng(1)
    W = rng.standard_normal((17, 5)).astype(np.float32)
    rows = _sparse.place(_sparse.lay_out(X, np.float32, blocks=blocks, transposed=transposed))
    M = np.zeros((rows.shape[0], 5), np.float32)
    M[:60] = rng.standard_normal((60, 5))
    dense = X.toarray()
    assert_close(jax.jit(times)(rows, W)[:60], dense @ W, F32_TOL)
    assert_close(jax.jit(rmatmul)(rows, M), dense.T @ M[:60], F32_TOL)


@pytest.mark.parametrize("shape", [(5, 300), (300, 7), (130, 140)])
def test_transposed_is_exact(shape):
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(jax.jit(transposed)(a), a.T)


def test_take_rows_gathers_the_rows_asked_for():
    X, _ = _problem()
    rows = _sparse.place(_sparse.lay_out(X, np.float32, blocks=2, batch_rows=7))
    index = np.array([[0, 3, 29, 10, 4, -1, 2], [1, 0, 5, -1, -1, 29, 12]], np.int32)
    batch = jax.jit(take_rows, static_argnums=2)(rows, index, rows.batch_slots)
    want = np.zeros((14, 17), np.float32)
    for p in range(2):
        for j, i in enumerate(index[p]):
            if i >= 0:
                want[7 * p + j] = X[30 * p + i].toarray()
    W = np.eye(17, dtype=np.float32)
    np.testing.assert_array_equal(times(batch, W), want)


def test_batch_bound_holds_the_longest_rows():
    X, _ = _problem()
    rows = _sparse.lay_out(X, np.float32, batch_rows=5)
    slots = -(-np.diff(X.indptr) // rows.values.shape[1])
    assert rows.batch_slots >= np.sort(slots)[-5:].sum()


# --- entry points, sparse vs dense --------------------------------------------------------


@pytest.mark.parametrize("form", list(_formats(_problem()[0])))
def test_scores_and_predict_take_every_format(form):
    X, _ = _problem()
    params = linear.init(jax.random.key(0), 17, 4)
    params["b"] = jnp.arange(4.0)
    sparse = _formats(X)[form]
    dense = jnp.asarray(X.toarray())
    assert_close(linear.scores(params, sparse), linear.scores(params, dense), F32_TOL)
    np.testing.assert_array_equal(linear.predict(params, sparse), linear.predict(params, dense))


@pytest.mark.parametrize("grad", ["analytic", "autodiff"])
@pytest.mark.parametrize("loss", ["weston_watkins", "crammer_singer", "one_vs_rest"])
def test_objective_and_its_gradient_equal_dense(grad, loss):
    X, y = _problem()
    params = linear.init(jax.random.key(0), 17, 4, scale=0.5)
    weights = np.linspace(0.5, 1.5, 60).astype(np.float32)

    def objective(params, X):
        return linear.objective(params, X, y, loss=loss, reg=0.1, grad=grad, sample_weight=weights)

    value_grad = jax.value_and_grad(objective)
    dense = value_grad(params, jnp.asarray(X.toarray()))
    assert_close(value_grad(params, X), dense, F32_TOL)
    bcoo = jax_sparse.BCOO.from_scipy_sparse(X)
    assert_close(jax.jit(value_grad)(params, bcoo), dense, F32_TOL)  # traced BCOO


def test_gradient_with_respect_to_sparse_values_is_refused():
    X, y = _problem()
    params = linear.init(jax.random.key(0), 17, 4)
    bcoo = jax_sparse.BCOO.from_scipy_sparse(X)

    def objective(values):
        return linear.objective(params, jax_sparse.BCOO((values, bcoo.indices), shape=X.shape), y)

    with pytest.raises(NotImplementedError, match="not the values of a sparse X"):
        jax.grad(objective)(bcoo.data)


@pytest.mark.float64
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("loss", ["weston_watkins", "crammer_singer", "one_vs_rest"])
def test_solve_equals_dense(loss, fit_intercept):
    X, y = _problem(dtype=np.float64)
    options = dict(loss=loss, C=2.0, fit_intercept=fit_intercept, tol=SOLVE_TOL)
    with x64():
        sparse = solve.solve(X, y, **options)
        dense = solve.solve(X.toarray(), y, **options)
        assert bool(sparse.converged) and bool(dense.converged)
        # Both within tol of the optimum, and each one's objective the same on either form.
        assert_close(sparse.objective, dense.objective, 2 * SOLVE_TOL)
        for result in (sparse, dense):
            on_sparse = solve.primal_objective(result.params, X, y, loss=loss, C=2.0)
            on_dense = solve.primal_objective(result.params, X.toarray(), y, loss=loss, C=2.0)
            assert_close(on_sparse, on_dense, F64_TOL)
            assert_close(on_sparse, result.objective, F64_TOL)
        # 1-strongly convex in W: |W - W*|^2 <= 2 gap.
        assert_close(sparse.params["W"], dense.params["W"], 3e-2)


def test_solve_path_and_weights_on_sparse_data():
    X, y = _problem(dtype=np.float64)
    options = dict(sample_weight=np.linspace(0.5, 2, 60), class_weights=np.array([1, 2, 1, 0.5]))
    with x64():
        path = solve.solve_path(X, y, [0.1, 1.0], tol=SOLVE_TOL, **options)
        for C, result in zip([0.1, 1.0], path, strict=True):
            alone = solve.solve(X.toarray(), y, C=C, tol=SOLVE_TOL, **options)
            assert bool(result.converged)
            assert_close(result.objective, alone.objective, 2 * SOLVE_TOL)


def test_solve_programs_are_shared_by_folds_of_similar_size():
    X, y = _problem(n=400, d=40, density=0.1)
    before = continuation.run._cache_size()
    for fold in range(4):
        keep = np.arange(400) % 4 != fold
        solve.solve(X[keep], y[keep], max_iter=3)
    assert continuation.run._cache_size() - before <= 1


@pytest.mark.parametrize("grad", ["analytic", "autodiff"])
def test_fit_equals_dense(grad):
    X, y = _problem()
    params = linear.init(jax.random.key(0), 17, 4)
    options = dict(key=jax.random.key(1), epochs=3, batch_size=16, reg=1e-3, grad=grad)
    sparse, history = train.fit(params, X, y, validation=(X, y), **options)
    dense, dense_history = train.fit(params, X.toarray(), y, validation=(X.toarray(), y), **options)
    assert_close(sparse, dense, TRAIN_TOL)
    assert_close(history["objective"], dense_history["objective"], TRAIN_TOL)
    np.testing.assert_array_equal(history["val_accuracy"], dense_history["val_accuracy"])


def test_fit_converts_integer_sparse_features():
    X, y = _problem()
    counts = X.copy()
    counts.data = np.round(counts.data * 4).astype(np.int64)
    params = linear.init(jax.random.key(0), 17, 4)
    options = dict(key=jax.random.key(1), epochs=1, batch_size=16)
    sparse, _ = train.fit(params, counts, y, **options)
    dense, _ = train.fit(params, counts.toarray(), y, **options)
    assert_close(sparse, dense, TRAIN_TOL)


def test_fit_grid_equals_dense():
    X, y = _problem()
    params = linear.init(jax.random.key(0), 17, 4)
    options = dict(key=jax.random.key(1), epochs=2, batch_size=16, seeds=(0, 1))
    sparse = grid.fit_grid(params, X, y, validation=(X, y), **options)
    dense = grid.fit_grid(params, X.toarray(), y, validation=(X.toarray(), y), **options)
    assert_close(sparse.params, dense.params, TRAIN_TOL)
    assert_close(sparse.history["objective"], dense.history["objective"], TRAIN_TOL)
    assert sparse.best == dense.best


def test_estimator_on_sparse_data_equals_dense():
    from svmjax import SVMClassifier

    X, y = _problem(n=90)
    labels = np.array(["a", "b", "c", "d"])[y]
    for solver, tol in [("sgd", TRAIN_TOL), ("exact", None)]:
        options = dict(C=1.0, solver=solver, random_state=0, tol=1e-4)
        sparse = SVMClassifier(**options).fit(X, labels)
        dense = SVMClassifier(**options).fit(X.toarray(), labels)
        assert_close(sparse.objective_, dense.objective_, 1e-4 if solver == "exact" else tol)
        if solver == "exact":  # W is unique (the objective is 1-strongly convex in W), the
            # unpenalised intercept need not be: |W - W*|^2 / 2 <= each certified gap.
            bound = math.sqrt(2 * sparse.dual_gap_) + math.sqrt(2 * dense.dual_gap_)
            assert np.linalg.norm(sparse.coef_ - dense.coef_) <= bound
        else:
            assert_close(sparse.decision_function(X), dense.decision_function(X.toarray()), tol)
        assert sparse.score(X.tocsc(), labels) == pytest.approx(dense.score(X.toarray(), labels))
        np.testing.assert_array_equal(sparse.predict(X), sparse.predict(X.toarray()))
    bcoo = jax_sparse.BCOO.from_scipy_sparse(X)
    assert SVMClassifier(C=1.0).fit(bcoo, labels).predict(bcoo).shape == (90,)


def _documents(n=120, seed=0):
    """A small text collection: three topics, Zipf-like common words."""
    rng = np.random.default_rng(seed)
    topics = [
        "ball goal team match score league coach season",
        "vote party law senate election court minister policy",
        "cpu code compile kernel memory cache thread driver",
    ]
    common = "the a of and to in is that for it".split()
    texts, labels = [], []
    for i in range(n):
        label = i % 3
        words = [*rng.choice(topics[label].split(), 6), *rng.choice(common, 8, p=_zipf(10))]
        words += list(rng.choice(" ".join(topics).split(), 3))
        texts.append(" ".join(rng.permutation(words)))
        labels.append(["sport", "politics", "computing"][label])
    return texts, np.array(labels)


def _zipf(n):
    p = 1 / np.arange(1, n + 1)
    return p / p.sum()


def test_pipeline_with_tfidf_and_cross_validation():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    from svmjax import SVMClassifier

    texts, labels = _documents()
    pipeline = make_pipeline(TfidfVectorizer(), SVMClassifier(C=1.0))
    scores = cross_val_score(pipeline, texts, labels, cv=3)
    assert scores.min() >= 0.9
    features = pipeline.fit(texts, labels)[0].transform(texts)
    assert scipy_sparse.issparse(features)
    assert pipeline.score(texts, labels) >= 0.95


def test_primal_objective_equals_dense():
    X, y = _problem()
    params = {"W": np.random.default_rng(0).standard_normal((17, 4)), "b": np.arange(4.0)}
    for loss in ("weston_watkins", "crammer_singer"):
        sparse = solve.primal_objective(params, X, y, loss=loss, C=0.5)
        dense = solve.primal_objective(params, X.toarray(), y, loss=loss, C=0.5)
        assert_close(sparse, dense, F32_TOL)


def test_mesh_of_one_device():
    X, y = _problem()
    mesh = sharding.data_mesh(jax.devices()[:1])
    params = linear.init(jax.random.key(0), 17, 4)
    options = dict(key=jax.random.key(1), epochs=2, batch_size=16)
    assert_close(
        train.fit(params, X, y, mesh=mesh, **options)[0],
        train.fit(params, X.toarray(), y, mesh=mesh, **options)[0],
        TRAIN_TOL,
    )
    result = solve.solve(X, y, mesh=mesh, tol=1e-4)
    assert bool(result.converged)


# --- canonical form and bad input ---------------------------------------------------------


def test_duplicates_are_summed_and_unsorted_entries_sorted():
    row, col = np.array([0, 2, 0, 1, 0]), np.array([3, 1, 3, 0, 1])
    values = np.array([1.0, 2.0, 0.5, -1.0, 4.0], np.float32)
    coo = scipy_sparse.coo_matrix((values, (row, col)), shape=(3, 4))
    csr = scipy_sparse.csr_matrix((values[[2, 0, 4, 3, 1]], [3, 3, 1, 0, 1], [0, 3, 4, 5]), (3, 4))
    bcoo = jax_sparse.BCOO((jnp.asarray(values), jnp.stack([row, col], 1)), shape=(3, 4))
    dense = np.zeros((3, 4), np.float32)
    np.add.at(dense, (row, col), values)
    W = np.arange(8.0, dtype=np.float32).reshape(4, 2)
    params = {"W": jnp.asarray(W), "b": jnp.zeros(2)}
    for X in (coo, csr, bcoo):
        assert_close(linear.scores(params, X), dense @ W, F32_TOL)
    traced = jax.jit(linear.scores)(params, bcoo)  # unsorted, duplicated, inside jit
    assert_close(traced, dense @ W, F32_TOL)
    assert not csr.has_canonical_format or csr.nnz == 5  # the caller's matrix untouched
    np.testing.assert_array_equal(csr.indices, [3, 3, 1, 0, 1])


def test_jax_padding_entries_are_dropped():
    X, _ = _problem()
    bcoo = jax_sparse.BCOO.from_scipy_sparse(X)
    padded = jax_sparse.bcoo_sum_duplicates(bcoo, nse=bcoo.nse + 5)  # JAX pads at the shape
    assert int(jnp.max(padded.indices[:, 0])) == X.shape[0]
    params = linear.init(jax.random.key(0), 17, 4)
    want = linear.scores(params, X.toarray())
    assert_close(linear.scores(params, padded), want, F32_TOL)
    assert_close(jax.jit(linear.scores)(params, padded), want, F32_TOL)


def _bad_inputs():
    dense = [[1, 0, 2, 0, 0], [0, 3, 0, 0, 4], [5, 0, 0, 6, 0], [0, 0, 7, 0, 0], [8, 0, 0, 0, 9]]
    X = scipy_sparse.csr_matrix(np.array([*dense, [0, 1, 0, 1, 0]], np.float32))
    nan = X.copy()
    nan.data[2] = np.nan
    inf = X.tocoo().copy()  # tocoo shares X's arrays
    inf.data[1] = np.inf
    index = X.copy()
    index.indices[3] = 5
    negative = X.copy()
    negative.indices[0] = -1
    coo = X.tocoo().copy()
    coo.col[0] = 7
    csc = X.tocsc().copy()
    csc.indices[1] = 6  # a row index, in CSC
    bcoo = jax_sparse.BCOO.from_scipy_sparse(X)
    bcoo_index = jax_sparse.BCOO((bcoo.data, bcoo.indices.at[0, 1].set(-2)), shape=X.shape)
    bcoo_nan = jax_sparse.BCOO((bcoo.data.at[0].set(jnp.nan), bcoo.indices), shape=X.shape)
    return {
        "nan csr": (nan, "is not finite: X\\(1, 1\\) = nan"),
        "inf coo": (inf, "is not finite: X\\(0, 2\\) = inf"),
        "index past the columns": (index, "column index outside \\[0, 5\\): 5 in row 1"),
        "negative index": (negative, "column index outside \\[0, 5\\): -1 in row 0"),
        "coo index": (coo, "index outside its shape \\(6, 5\\): \\(0, 7\\)"),
        "csc row index": (csc, "row index outside \\[0, 6\\): 6 in column 0"),
        "bcoo negative index": (bcoo_index, "index outside its shape"),
        "bcoo nan": (bcoo_nan, "is not finite"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_sparse_input_is_refused_at_every_entry_point(case):
    from svmjax import SVMClassifier

    X, message = _bad_inputs()[case]
    y = np.array([0, 1, 2, 0, 1, 2], np.int32)
    params = linear.init(jax.random.key(0), 5, 3)
    calls = {
        "scores": lambda: linear.scores(params, X),
        "objective": lambda: linear.objective(params, X, y),
        "solve": lambda: solve.solve(X, y),
        "primal_objective": lambda: solve.primal_objective(params, X, y),
        "fit": lambda: train.fit(params, X, y, key=jax.random.key(0), epochs=1),
        "fit_grid": lambda: grid.fit_grid(params, X, y, key=jax.random.key(0), epochs=1),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=message):
            call()
            pytest.fail(f"{name} accepted {case}")
    with pytest.raises(ValueError, match=message):
        SVMClassifier().fit(X, y)


def test_bad_bcoo_inside_jit_gives_nan():
    X, y = _problem(n=6, d=7, density=0.5)
    bcoo = jax_sparse.BCOO.from_scipy_sparse(X)
    params = linear.init(jax.random.key(0), 7, 4)
    for indices in (bcoo.indices.at[0, 1].set(-1), bcoo.indices.at[0, 1].set(9)):
        bad = jax_sparse.BCOO((bcoo.data, indices), shape=X.shape)
        value, g = jax.jit(jax.value_and_grad(linear.objective))(params, bad, y)
        assert np.isnan(value) and np.isnan(g["W"]).any()
    good = jax.jit(linear.objective)(params, bcoo, y)
    assert np.isfinite(good)


def test_label_count_mismatch_is_named():
    X, y = _problem()
    params = linear.init(jax.random.key(0), 17, 4)
    for call in (
        lambda: solve.solve(X, y[:-1]),
        lambda: train.fit(params, X, y[:-1], key=jax.random.key(0), epochs=1),
        lambda: grid.fit_grid(params, X, y[:-1], key=jax.random.key(0), epochs=1),
        lambda: linear.objective(params, X, y[:-1]),
    ):
        with pytest.raises(ValueError, match="labels shape \\(59,\\) does not match"):
            call()


def test_empty_rows_and_columns_are_fine():
    X, y = _problem()
    assert X[3].nnz == 0 and X[:, 5].nnz == 0
    result = solve.solve(X, y, fit_intercept=True)
    assert bool(result.converged)
    assert np.all(np.asarray(result.params["W"])[5] == 0)  # an empty column: zero weights


def test_intercept_on_uncentred_sparse_counts():
    X, y = _problem(dtype=np.float64)
    X.data = np.ceil(np.abs(X.data) * 4)  # counts 1 to 6: the dense path centres such data
    with x64():
        result = solve.solve(X, y, fit_intercept=True, tol=SOLVE_TOL)
        assert bool(result.converged)
        dense = solve.solve(X.toarray(), y, fit_intercept=True, tol=SOLVE_TOL)
        assert_close(result.objective, dense.objective, 2 * SOLVE_TOL)


# --- 8 devices and the memory bound, in child processes ----------------------------------


def _eight_devices(out: Path) -> None:
    mesh = sharding.data_mesh()
    X, y = _problem(n=203, d=19, c=5, density=0.2)
    params = linear.init(jax.random.key(0), 19, 5)
    report = {"devices": jax.device_count()}
    options = dict(key=jax.random.key(1), epochs=2, batch_size=32, reg=1e-3)
    fitted, _ = train.fit(params, X, y, mesh=mesh, **options)
    dense, _ = train.fit(params, X.toarray(), y, mesh=mesh, **options)
    report["fit_rel_error"] = _rel(fitted, dense)
    with x64():
        X64 = X.astype(np.float64)
        solved = solve.solve(X64, y, mesh=mesh, fit_intercept=True, tol=SOLVE_TOL)
        alone = solve.solve(X64, y, fit_intercept=True, tol=SOLVE_TOL)
        report["solve_converged"] = bool(solved.converged)
        report["solve_objective_rel_error"] = _rel(solved.objective, alone.objective)
    swept = grid.fit_grid(params, X, y, mesh=mesh, key=jax.random.key(1), epochs=1)
    alone = grid.fit_grid(params, X, y, key=jax.random.key(1), epochs=1)
    report["grid_rel_error"] = _rel(swept.params, alone.params)
    # The compiled programs: each device reads its own non-zeros, nothing is gathered.
    report["solve_collectives"] = _collectives(
        continuation, "run", lambda: solve.solve(X, y, mesh=mesh, max_iter=2)
    )
    report["fit_collectives"] = _collectives(
        train, "run_epoch", lambda: train.fit(params, X, y, mesh=mesh, **options | {"epochs": 1})
    )
    laid_out = _sparse.place(_sparse.lay_out(X, np.float32, blocks=8), mesh)
    shards = laid_out.values.addressable_shards
    report["blocks_per_device"] = sorted({s.data.shape[0] for s in shards})
    report["devices_holding_blocks"] = len({s.device for s in shards})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def _collectives(module, name: str, call) -> dict[str, int]:
    """The collectives in the program ``module.name`` (a ``cache.jit``) compiles for the
    arguments ``call`` passes it."""
    compiled, seen = getattr(module, name), {}

    def spy(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        return compiled(*args, **kwargs)

    setattr(module, name, spy)
    try:
        call()
    finally:
        setattr(module, name, compiled)
    hlo = compiled.jitted.lower(*seen["args"], **seen["kwargs"]).compile().as_text()
    kinds = ("all-reduce", "all-gather", "all-to-all", "collective-permute")
    return {kind: len(re.findall(rf"= [^=]*\b{kind}(-start)?\(", hlo)) for kind in kinds}


def _rel(a, b) -> float:
    from conftest import rel_error

    return float(rel_error(a, b))


def _child(flag: str, out: Path, devices: int = 1) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    result = subprocess.run(
        [sys.executable, __file__, flag, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((out / "report.json").read_text())


def test_eight_devices(tmp_path):
    report = _child("--devices", tmp_path, devices=8)
    assert report["devices"] == 8
    assert report["fit_rel_error"] <= TRAIN_TOL
    assert report["solve_converged"]
    assert report["solve_objective_rel_error"] <= 2 * SOLVE_TOL
    assert report["grid_rel_error"] <= TRAIN_TOL
    assert report["blocks_per_device"] == [1] and report["devices_holding_blocks"] == 8
    for program in ("solve_collectives", "fit_collectives"):
        assert report[program]["all-reduce"] >= 1, report[program]
        assert report[program]["all-gather"] == report[program]["all-to-all"] == 0


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _wide_problem(n=2_000, d=2_000_000, per_row=20, c=3):
    """``n x d`` CSR with ``per_row`` non-zeros per row (float32: 16 GB dense)."""
    rng = np.random.default_rng(0)
    cols = rng.integers(0, d, n * per_row)
    rows = np.repeat(np.arange(n), per_row)
    values = rng.random(n * per_row).astype(np.float32) + 0.1
    X = scipy_sparse.csr_matrix((values, (rows, cols)), shape=(n, d))
    return X, rng.integers(0, c, n).astype(np.int32)


def _memory(out: Path) -> None:
    from svmjax import SVMClassifier

    X, y = _wide_problem()
    n, d = X.shape
    report = {"dense_gb": n * d * 4 / 2**30, "start_gb": _peak_gb(), "seconds": {}}
    params = linear.init(jax.random.key(0), d, 3)

    def run(name, call):
        start = time.perf_counter()
        call()
        report["seconds"][name] = round(time.perf_counter() - start, 2)

    run("linear", lambda: jax.grad(linear.objective)(params, X, y)["W"].block_until_ready())
    run("predict", lambda: linear.predict(params, X).block_until_ready())
    fit = dict(key=jax.random.key(1), epochs=1, batch_size=500)
    run("fit", lambda: train.fit(params, X, y, **fit))
    run("fit_grid", lambda: grid.fit_grid(params, X, y, learning_rates=(0.1,), **fit))
    solved = {}
    run("solve", lambda: solved.update(r=solve.solve(X, y, max_iter=3, fit_intercept=True)))
    run("primal_objective", lambda: float(solve.primal_objective(solved["r"].params, X, y)))
    estimator = SVMClassifier(solver="sgd", max_iter=1)
    run("estimator", lambda: estimator.fit(X, y).predict(X))
    report["peak_gb"] = _peak_gb()
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def test_every_entry_point_fits_a_matrix_too_large_to_densify(tmp_path):
    report = _child("--memory", tmp_path)
    print(json.dumps(report, indent=2))
    assert report["dense_gb"] > 10
    assert report["peak_gb"] - report["start_gb"] <= MEMORY_LIMIT_GB, report


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=Path)
    parser.add_argument("--memory", type=Path)
    args = parser.parse_args()
    jax.config.update("jax_numpy_rank_promotion", "raise")
    if args.devices is not None:
        _eight_devices(args.devices)
    else:
        _memory(args.memory)
