"""The compile cache and compile options (:mod:`svmjax.cache`): programs kept on disk across
processes, svmjax's own programs exported and loaded instead of traced, what is not exported,
and the XLA options svmjax's programs are compiled with. Which folders the cache accepts:
tests/test_files.py."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svmjax import cache, cli, continuation, metrics, registry, solve
from svmjax.gradcheck import x64

CACHE_TEST = """
import sys, jax, svmjax.cache
jax.jit(lambda x: x + 1)(1.0)  # a compilation before enable(): the cache must still work
svmjax.cache.enable(sys.argv[1])
jax.jit(lambda x: x * 3.0)(2.0)
"""


def test_cache_enable_keeps_programs_across_processes(tmp_path):
    folder = tmp_path / "cache"
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", CACHE_TEST, str(folder)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
    entries = list(folder.iterdir())
    assert len(entries) == 1  # the program compiled after enable(), stored once


def _built(lazy):
    """The exported programs a ``cache.jit`` object runs (not fallen back to jit)."""
    return [p for p in lazy.programs.values() if p is not None]


def test_exported_programs_are_saved_and_loaded(tmp_path, monkeypatch):
    pytest.importorskip("flatbuffers")
    rng = np.random.default_rng(0)
    scores, labels = jnp.asarray(rng.standard_normal((20, 5)), jnp.float32), jnp.arange(20) % 5
    plain = jax.jit(metrics.top_k_accuracy, static_argnames=("k",))
    folder = tmp_path / "svmjax-exported"
    try:
        cache.enable(tmp_path)
        first = cache.jit(metrics.top_k_accuracy, static_argnames=("k",))
        assert float(first(scores, labels, k=2)) == float(plain(scores, labels, k=2))
        saved = sorted(folder.iterdir())
        assert [p.name.split("-")[0] for p in saved] == ["svmjax.metrics.top_k_accuracy"]
        assert len(_built(first)) == 1  # the exported program ran, not jit
        first(scores + 1, labels, k=2)  # same types and statics: the same program
        first(scores, labels, k=3)  # another static value: another program
        with x64():  # another setting that changes tracing: another program
            got = first(scores, labels, k=2)
            assert got.dtype == plain(scores, labels, k=2).dtype
        assert len(list(folder.iterdir())) == 3

        # A later process (a new object, nothing in memory) loads instead of tracing.
        def no_export(*args, **kwargs):
            raise RuntimeError("traced again")

        monkeypatch.setattr(jax.export, "export", no_export)
        again = cache.jit(metrics.top_k_accuracy, static_argnames=("k",))
        assert float(again(scores, labels, k=2)) == float(plain(scores, labels, k=2))
        assert len(_built(again)) == 1
        monkeypatch.undo()
        # A damaged file is exported again and replaced.
        saved[0].write_bytes(b"not a program")
        damaged = cache.jit(metrics.top_k_accuracy, static_argnames=("k",))
        assert float(damaged(scores, labels, k=2)) == float(plain(scores, labels, k=2))
        assert len(_built(damaged)) == 1
        assert jax.export.deserialize(bytearray(saved[0].read_bytes())).in_avals
    finally:
        cache.disable()


def test_what_is_not_exported_runs_under_jit(tmp_path, monkeypatch):
    pytest.importorskip("flatbuffers")
    scores, labels = jnp.eye(4), jnp.arange(4)
    folder = tmp_path / "svmjax-exported"
    try:
        cache.enable(tmp_path)
        # Code outside svmjax (not in the key), a static by position, a tracer.
        outside = cache.jit(lambda s, y: metrics.top_k_accuracy(s, y))
        assert float(outside(scores, labels)) == 1.0
        positional = cache.jit(metrics.top_k_accuracy, static_argnames=("k",))
        assert float(positional(scores, labels, 1)) == 1.0
        nested = jax.jit(lambda s: positional(s, labels, k=1))
        assert float(nested(scores)) == 1.0
        assert not folder.exists() and not _built(positional)
        # A function's repr (its address) does not identify it across processes.
        assert cache._plain([("k", 2), ("name", "x")]) and not cache._plain([("f", jnp.sin)])

        # A folder that cannot be written: the exported program serves this process.
        def refuse(*args, **kwargs):
            raise OSError("read-only file system")

        monkeypatch.setattr(cache.os, "replace", refuse)
        unwritable = cache.jit(metrics.top_k_accuracy, static_argnames=("k",))
        assert float(unwritable(scores, labels, k=1)) == 1.0
        assert len(_built(unwritable)) == 1 and not list(folder.iterdir())  # no partial file
        monkeypatch.undo()

        # A program that cannot be exported: jit, and nothing saved.
        def fail(*args, **kwargs):
            raise ValueError("cannot serialise")

        monkeypatch.setattr(jax.export, "export", fail)
        failing = cache.jit(metrics.top_k_accuracy, static_argnames=("k",))
        assert float(failing(scores, labels, k=1)) == 1.0
        assert not _built(failing) and not list(folder.iterdir())
    finally:
        cache.disable()


def test_the_solver_runs_from_its_exported_program(tmp_path, monkeypatch):
    pytest.importorskip("flatbuffers")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)).astype(np.float32), rng.integers(0, 3, 60)
    plain = solve.solve(X, y, loss="crammer_singer", C=1.0)
    try:
        cache.enable(tmp_path)
        exported = solve.solve(X, y, loss="crammer_singer", C=1.0)
        assert len(list((tmp_path / "svmjax-exported").iterdir())) == 1
        assert _built(continuation.run)

        # A later process: loaded from the file, not traced.
        def no_export(*args, **kwargs):
            raise RuntimeError("traced again")

        def no_probe(options):
            raise RuntimeError("probed the compile options")

        monkeypatch.setattr(jax.export, "export", no_export)
        if cache.compiler_options(cache.NO_TREE_SUMS) == cache._wanted(cache.NO_TREE_SUMS):
            # Where XLA takes every option asked for, loading never probes them.
            monkeypatch.setattr(cache, "_accepts", no_probe)
        fresh = cache.jit(
            continuation.solve_fn,
            cpu_options=cache.NO_TREE_SUMS,
            static_argnames=("loss", "squared", "options"),
        )
        monkeypatch.setattr(continuation, "run", fresh)
        loaded = solve.solve(X, y, loss="crammer_singer", C=1.0)
        assert len(_built(fresh)) == 1
    finally:
        cache.disable()
    for result in (exported, loaded):
        assert isinstance(result, continuation.SolveResult)
        assert int(result.n_iter) == int(plain.n_iter)
        for got, want in zip(jax.tree.leaves(result), jax.tree.leaves(plain), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(plain.objective))


def test_the_solver_is_not_exported_for_a_loss_the_user_registered(tmp_path):
    # A replaced entry's code is not svmjax's (not in the exported program's key): a later
    # process with another replacement must not load this one's program.
    pytest.importorskip("flatbuffers")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)).astype(np.float32), rng.integers(0, 3, 60)
    entry = registry.get("crammer_singer")
    assert registry.builtin("crammer_singer") and not registry.builtin("no_such_loss")
    try:
        cache.enable(tmp_path)
        registry.register(entry._replace(paper="a user's copy"), replace=True)
        assert not registry.builtin("crammer_singer")
        solve.solve(X, y, loss="crammer_singer", C=1.0, max_iter=3)
        assert not (tmp_path / "svmjax-exported").exists()
        registry.register(entry, replace=True)  # svmjax's own again: exported
        assert registry.builtin("crammer_singer")
        solve.solve(X, y, loss="crammer_singer", C=1.0, max_iter=3)
        assert len(list((tmp_path / "svmjax-exported").iterdir())) == 1
    finally:
        registry.register(entry, replace=True)
        cache.disable()


def test_an_option_xla_refuses_is_left_out(tmp_path, monkeypatch):
    # The exported path compiles with the options unprobed; where XLA refuses one (as
    # JAX 0.11 refuses xla_cpu_use_fusion_emitters), with the probed options.
    pytest.importorskip("flatbuffers")
    if jax.default_backend() != "cpu":
        pytest.skip("compile options are svmjax's on CPU only")
    refused = {"xla_cpu_no_such_option_here": True}
    monkeypatch.setattr(cache, "_CPU_OPTIONS", {**cache._CPU_OPTIONS, **refused})
    scores, labels = jnp.eye(4), jnp.arange(4)
    try:
        cache.enable(tmp_path)
        lazy = cache.jit(metrics.top_k_accuracy, static_argnames=("k",))
        assert float(lazy(scores, labels, k=1)) == 1.0
        assert len(_built(lazy)) == 1  # the exported program, compiled without it
        assert len(list((tmp_path / "svmjax-exported").iterdir())) == 1
        assert "xla_cpu_no_such_option_here" not in cache.compiler_options()
    finally:
        cache.disable()


def test_cache_default_path_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "here"))
    assert cache.default_path() == tmp_path / "here"
    monkeypatch.delenv(cache.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.default_path() == tmp_path / "svmjax" / "jax"


def test_cli_cache_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_gradcheck", lambda args: 0)  # only the flag is under test
    try:
        assert cli.main(["gradcheck", "--cache", str(tmp_path / "c")]) == 0
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")
    finally:
        cache.disable()
    assert jax.config.jax_compilation_cache_dir is None


def test_compiler_options_fall_back_where_xla_lacks_them():
    options = cache.compiler_options()
    assert options.items() <= cache._CPU_OPTIONS.items()
    with_extra = cache.compiler_options(cache.NO_TREE_SUMS)
    assert with_extra.items() <= {**cache._CPU_OPTIONS, **cache.NO_TREE_SUMS}.items()
    if jax.default_backend() == "cpu":  # the options compile here (or were dropped)
        jax.jit(lambda x: x * 2, compiler_options=with_extra).lower(1.0).compile()
        refused = {"xla_cpu_no_such_option_here": True}
        # refused by XLA: left out, not an error, and the others kept
        assert cache.compiler_options(refused) == options
        assert cache.compiler_options({**refused, **cache.NO_TREE_SUMS}) == with_extra


def test_sums_in_loops_stay_one_kernel_and_accurate():
    # Without XLA's tree rewrite a sum over 1536 elements inside a loop is one reduction,
    # not a reduce-window kernel, and still within a few float32 ulps of float64's sum.
    x = np.random.default_rng(0).random(1536).astype(np.float32) + 1

    def total(v):
        return jax.lax.fori_loop(0, 3, lambda i, s: s + jnp.sum(v * (1 + i)), jnp.float32(0))

    compiled = cache.jit(total, cpu_options=cache.NO_TREE_SUMS).lower(x).compile()
    rewritten = cache.jit(total).lower(x).compile().as_text()
    if "xla_disable_hlo_passes" in cache.compiler_options(cache.NO_TREE_SUMS):
        # Where this XLA rewrites the sum (the control), the option keeps it one reduction.
        assert "reduce-window" not in compiled.as_text() or "reduce-window" not in rewritten
    exact = 6 * np.sum(x.astype(np.float64))
    assert abs(float(compiled(x)) - exact) <= 8 * np.finfo(np.float32).eps * exact


def test_cache_jit_is_jax_jit_built_at_first_use():
    def affine(x, *, scale):
        return scale * x + 1.0

    lazy = cache.jit(affine, static_argnames=("scale",))
    assert "jitted" not in vars(lazy) and lazy.__name__ == "affine"  # nothing built yet
    x = jnp.arange(5.0)
    assert bool(jnp.all(lazy(x, scale=3.0) == 3.0 * x + 1.0))
    assert lazy._cache_size() == 1  # attributes reach the jax.jit object
    compiled = lazy.lower(x, scale=2.0).compile()  # ahead of time, as jax.jit allows
    assert bool(jnp.all(compiled(x) == 2.0 * x + 1.0))
    lazy(x + 1, scale=3.0)
    assert lazy._cache_size() == 1  # same shapes and statics: no new program
