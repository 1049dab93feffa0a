"""The fused analytic path (svmjax.fused) against autodiff of the pure definitions, at
several shapes and block sizes (N divisible by the block or not), every loss and option,
float32 and float64, under jit and vmap; its kink convention, NaN guard, bfloat16 data and
the benchmark script's smoke run."""

import functools
import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F32_TOL, LOSS_NAMES, TOL, assert_close

from svmjax import analytic, fused, linear

# (N, D, C, block): a scan of 4 blocks and a tail block after it. (One block: through
# linear.objective below; N divisible by the block: test_blocks_change_nothing_but_rounding.)
SHAPES = [(37, 5, 4, 8)]


def problem(seed, n, d, c, dtype):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, c, n).astype(np.int32)
    params = {
        "W": jnp.asarray(rng.standard_normal((d, c)) / np.sqrt(d), dtype),
        "b": jnp.asarray(0.1 * rng.standard_normal(c), dtype),
    }
    options = {
        "margin": jnp.asarray(0.75, dtype),
        "class_weights": jnp.asarray(np.linspace(0.5, 2.0, c), dtype),
        "sample_weight": jnp.asarray(rng.uniform(0.0, 2.0, n), dtype),
    }
    return params, jnp.asarray(X), jnp.asarray(y), options


def assert_trees_close(got, want, dtype):
    # Blocked sums run in another order than one big product: rounding only.
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == w.dtype
        assert_close(g, w, TOL[dtype])


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
def test_every_cotangent_matches_autodiff(dtype, loss, squared):
    # d/dW, b, X, margin, class_weights, sample_weight, all options on.
    problems = [problem(k, *shape[:3], dtype) for k, shape in enumerate(SHAPES)]

    def both(problems):
        out = []
        for (*_, block), (params, X, y, options) in zip(SHAPES, problems, strict=True):

            def fast(params, X, options, y=y, block=block):
                return fused.mean_loss(
                    params, X, y, loss=loss, squared=squared, block=block, **options
                )

            def reference(params, X, options, y=y):
                return linear.objective(
                    params, X, y, loss=loss, squared=squared, grad="autodiff", **options
                )

            args = (params, X, options)
            out.append(
                (
                    jax.value_and_grad(fast, argnums=(0, 1, 2))(*args),
                    jax.value_and_grad(reference, argnums=(0, 1, 2))(*args),
                )
            )
        return out

    for got, want in jax.jit(both)(problems):
        assert_trees_close(got, want, dtype)


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
@pytest.mark.parametrize("weighted", [False, True], ids=["no-options", "options"])
def test_objective_analytic_is_autodiff(dtype, loss, squared, weighted):
    # One block (small X), through the public objective, with and without the options.
    params, X, y, options = problem(1, 45, 7, 6, dtype)
    options = dict(options if weighted else {}, loss=loss, squared=squared, reg=0.1)

    def grad(g):
        f = functools.partial(linear.objective, grad=g, **options)
        return jax.jit(jax.value_and_grad(f))(params, X, y)

    assert_trees_close(grad("analytic"), grad("autodiff"), dtype)


def test_block_rule():
    assert fused.block_rows(49000, 3073, platform="cpu") == 49000  # long rows: one block
    assert fused.block_rows(60000, 1024, platform="cpu") == 1024  # 234 MiB, short rows
    assert fused.block_rows(49000, 3073, jnp.bfloat16, platform="cpu") == 1024  # bf16
    assert fused.sweep_rows(3073, jnp.float64) == 680  # a block holds <= 16 MiB
    assert fused.sweep_rows(10**7) == 8  # at least 8 rows
    assert fused.block_rows(2000, 784, platform="cpu") == 2000  # 6 MiB: one block
    assert fused.block_rows(10000, 3073, platform="cpu") == 10000  # 117 MiB: one block
    assert fused.block_rows(60000, 784, platform="cpu") == 1024  # 179 MiB: blocks
    assert fused.block_rows(2000, 784, jnp.bfloat16, platform="cpu") == 1024  # bf16: blocks
    assert fused.block_rows(4000, 40, platform="cpu") == 4000  # mnist1d: one block
    assert fused.block_rows(49000, 3073, platform="gpu") == 49000  # never a loop on GPU


def test_row_chunk_rule():
    # Divisors of N only, chunks of 1024..8192 rows nearest 4096; GPU only.
    assert fused.row_chunks(20000, platform="gpu", devices=1) == 5  # 4000 rows each
    assert fused.row_chunks(200000, platform="gpu", devices=1) == 50
    assert fused.row_chunks(60000, platform="gpu", devices=1) == 15
    assert fused.row_chunks(8192, platform="gpu", devices=1) == 2
    for n in (2 * 10007, 10007, 1437):  # no divisor in range (10007 is prime), or too few rows
        assert fused.row_chunks(n, platform="gpu", devices=1) == 1
    assert fused.row_chunks(20000, platform="gpu", devices=4) == 4  # whole chunks per device
    assert fused.row_chunks(20000, platform="gpu", devices=3) == 1  # no multiple of 3 divides
    assert fused.row_chunks(200000, platform="cpu") == 1
    assert fused.row_chunks(200000, platform="tpu") == 1


@pytest.mark.parametrize("chunks", [1, 3, 8])
def test_rows_product_is_the_product(chunks, dtype):
    rng = np.random.default_rng(chunks)
    A, X = rng.standard_normal((4, 48)), rng.standard_normal((48, 7))  # float64 reference
    got = jax.jit(fused.rows_product, static_argnames="chunks")(
        jnp.asarray(A, dtype), jnp.asarray(X, dtype), chunks=chunks
    )
    assert got.dtype == dtype and got.shape == (4, 7)
    assert_close(got, A @ X, TOL[dtype])
    with pytest.raises(ValueError, match="5 chunks do not divide 48 rows"):
        fused.rows_product(jnp.asarray(A), jnp.asarray(X), chunks=5)


def test_chunked_weight_gradient_is_autodiffs(monkeypatch):
    # The GPU rule forced on this CPU: the fused gradient with M^T X in 4 chunks.
    monkeypatch.setattr(fused, "row_chunks", lambda n: 4)
    params, X, y, options = problem(3, 48, 5, 4, np.float32)

    def grad(how):
        objective = functools.partial(linear.objective, loss="crammer_singer", grad=how)
        return jax.jit(jax.grad(objective))(params, X, y, reg=0.0, **options)

    assert_trees_close(grad("analytic"), grad("autodiff"), np.float32)


@pytest.mark.parametrize("block", [8, 16, None])
def test_blocks_change_nothing_but_rounding(block):
    params, X, y, options = problem(2, 48, 5, 4, np.float32)
    run = jax.jit(jax.value_and_grad(fused.mean_loss), static_argnames="block")
    assert_trees_close(run(params, X, y, block=block), run(params, X, y, block=48), jnp.float32)
    # The value is the same with or without differentiation (up to XLA's fusion choices).
    value = jax.jit(fused.mean_loss, static_argnames="block")(params, X, y, block=block)
    assert_close(value, run(params, X, y, block=block)[0], F32_TOL)


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_kinks_follow_the_analytic_convention(loss):
    # W = 0: every score is 0, so with margin 0 every hinge sits at its kink (strict > 0
    # gives 0; autodiff would give 1/2), and for Crammer-Singer with margin 1 all wrong
    # classes tie (the lowest index gets the whole gradient).
    X = jnp.asarray(np.random.default_rng(3).standard_normal((19, 4)), jnp.float32)
    y = jnp.arange(19, dtype=jnp.int32) % 3
    params = {"W": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
    for margin in (0.0, 1.0):

        def per_scores(p, margin=margin):
            return jnp.mean(getattr(analytic, loss)(linear.scores(p, X), y, margin=margin))

        want = jax.grad(per_scores)(params)
        got = jax.jit(jax.grad(fused.mean_loss), static_argnames=("loss", "block"))(
            params, X, y, loss=loss, margin=margin, block=8
        )
        assert_trees_close(got, want, jnp.float32)


@pytest.mark.parametrize("block", [8, None], ids=["blocks", "one-block"])
def test_out_of_range_label_under_jit_gives_nan(block):
    params, X, y, _ = problem(4, 21, 3, 4, np.float32)
    bad = y.at[2].set(4).at[20].set(-1)  # one in the first block, one in the tail
    run = jax.jit(jax.value_and_grad(fused.mean_loss), static_argnames="block")
    value, g = run(params, X, bad, block=block)
    assert np.isnan(value) and np.isnan(g["W"]).any() and np.isnan(g["b"]).any()
    with pytest.raises(ValueError, match="label 4 at position 2 is outside"):
        fused.mean_loss(params, X, bad)


def test_vmap_of_grad_is_a_loop_over_problems():
    # As svmjax.grid.fit_grid does: parameters, data and weights batched.
    problems = [problem(5 + k, 30, 4, 3, np.float32) for k in range(3)]
    stack = jax.tree.map(lambda *a: jnp.stack(a), *[(p, X, y, o) for p, X, y, o in problems])

    def grad(params, X, y, options):
        return jax.grad(fused.mean_loss)(params, X, y, block=8, **options)

    batched = jax.jit(jax.vmap(grad))(*stack)
    for k, (params, X, y, options) in enumerate(problems):
        assert_trees_close(
            jax.tree.map(lambda a, k=k: a[k], batched), grad(params, X, y, options), jnp.float32
        )


def test_bfloat16_data_is_widened_exactly():
    params, X, y, options = problem(6, 45, 6, 4, np.float32)
    X16 = X.astype(jnp.bfloat16)
    run = jax.jit(jax.value_and_grad(functools.partial(linear.objective, grad="autodiff")))
    for block in (8, None):
        got = jax.jit(jax.value_and_grad(fused.mean_loss, argnums=(0, 1)), static_argnames="block")(
            params, X16, y, block=block, **options
        )
        want = run(params, X16.astype(jnp.float32), y, **options)
        assert got[0].dtype == jnp.float32 and got[1][0]["W"].dtype == jnp.float32
        assert got[1][1].dtype == jnp.bfloat16  # the cotangent of X has X's dtype
        assert_trees_close((got[0], got[1][0]), want, jnp.float32)
    value = linear.objective(params, X16, y, reg=0.1)  # through the public objective
    assert value.dtype == jnp.float32


def test_forward_mode_is_not_supported_and_says_so():
    params, X, y, _ = problem(7, 6, 3, 3, np.float32)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda p: linear.objective(p, X, y), (params,), (params,))


def test_bad_inputs_name_the_problem():
    params, X, y, _ = problem(8, 6, 3, 3, np.float32)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        fused.mean_loss(params, X, y, sample_weight=jnp.ones(5))
    with pytest.raises(ValueError, match="unknown loss"):
        fused.mean_loss(params, X, y, loss="hinge")
    with pytest.raises(ValueError, match="do not match"):
        fused.mean_loss(params, X[:, :2], y)
    with pytest.raises(TypeError, match="integer class indices"):
        fused.mean_loss(params, X, y.astype(jnp.float32))
    with pytest.raises(ValueError, match="block must be a positive"):
        fused.mean_loss(params, X, y, block=0)


def test_bench_script_smoke(tmp_path, monkeypatch):
    path = Path(__file__).resolve().parent.parent / "experiments" / "bench_gradient.py"
    monkeypatch.syspath_prepend(str(path.parent))  # the script imports its sibling `common`
    spec = importlib.util.spec_from_file_location("bench_gradient", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_gradient"] = bench  # dataclasses look their module up
    spec.loader.exec_module(bench)
    config = bench.Config(
        out=str(tmp_path),
        sizes=("tiny",),
        repeats=2,
        accuracy_datasets=("digits",),
        accuracy_steps=3,
        isas=("default",),  # the capped rerun is test_experiments.py's smoke test
    )
    results = bench.main(config)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "timings.png").stat().st_size > 0
    assert saved["timings"][0]["size"] == "tiny"
    assert {"analytic", "autodiff", "floor"} <= set(saved["timings"][0]["min_ms"])
    assert results["timings"][0]["min_ms"]["analytic"] > 0
    assert [r["X_dtype"] for r in saved["bf16_accuracy"]] == ["float32", "bfloat16"]
