"""Shared test settings: strict rank promotion, scoped float64, tolerances per dtype."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

from svmjax import registry
from svmjax.gradcheck import x64

# Implicit rank promotion hides shape bugs ([N] + [N, 1] -> [N, N]); make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")
# The tests hold float32 results against float64 references at float32 tolerances. On a GPU
# JAX's default float32 product is TF32 (a TPU's bfloat16), ~1e-3 off; CPUs ignore this.
jax.config.update("jax_default_matmul_precision", "highest")

# --- comparing two float computations ---------------------------------------------------------
#
# Two different computations of the same numbers (a fused path vs a loop, analytic vs
# autodiff, vmap vs a loop, sharded vs one device, float32 vs a float64 reference) agree
# only up to rounding, and the rounding depends on the summation order XLA picks, which
# depends on the CPU (AVX-512 vs AVX2 vector width, FMA contraction, the matmul kernels).
# They are compared by the max-norm relative error over all leaves of two pytrees,
#
#     max_k |a_k - b_k| / max(tiny, max_k |a_k| + max_k |b_k|)
#
# (svmjax.gradcheck.rel_error's rule, computed here in float64 NumPy). It is relative to
# the scale of the whole array, so an entry that is exactly or nearly 0 (a hinge that is
# barely active, a bias gradient that is an integer count over N) does not turn an
# absolute rounding error of 1e-9 into an entrywise relative error of 1; `rtol` alone does.
# Measured on an AVX-512 Xeon, by default and with XLA's code capped at AVX2 and at SSE4.2
# (tests/test_isa.py reruns a selection so): at most 1.3e-7 in float32 (1.1e-7 after a few
# training steps) and 6e-16 in float64. A real bug (a dropped partial batch, a wrong weight,
# a missing 1/N) is 1e-3 or more. The tolerances sit two to three orders above the former.
#
# Bit-exact comparisons (np.testing.assert_array_equal) are for bits that are promised:
# the same program with the same key, a resumed run vs an uninterrupted one, the same mesh
# twice, results that are exact by construction (0 from max(0, -x), small integers).

F32_TOL = 1e-5  # one float32 evaluation in another order, or against a float64 reference
F64_TOL = 1e-12  # the same in float64
TOL = {jnp.float32: F32_TOL, jnp.float64: F64_TOL}
# Several float32 optimizer steps in another order (fit vs a hand-written loop, fit_grid's
# vmap vs separate fits, a mesh vs one device): each step carries the last one's rounding
# and adds its own. Fine for SGD and momentum; not for Adam on the plain hinge (see
# docs/tutorials/scaling.md).
TRAIN_TOL = 1e-4

# The three classic losses: a hand-tuned backward rule and a dual of their own
# (svmjax.duals); the rest of the family is solved through svmjax.family_duals.
LOSS_NAMES = ("weston_watkins", "crammer_singer", "one_vs_rest")
assert all(registry.get(name).dual is not None for name in LOSS_NAMES)


@functools.cache
def compiled(fn, squared, options):
    """Jitted total loss, its gradient and a vmap over candidate scores, for the loss ``fn``
    with hashable ``options`` (a tuple of items); the margin is an argument (no
    recompiles). For the property tests, which call them on many small problems: op by
    op, every new shape compiles each operation anew."""

    def total(s, y, margin):
        return jnp.sum(fn(s, y, margin=margin, squared=squared, **dict(options)))

    return jax.jit(total), jax.jit(jax.grad(total)), jax.jit(jax.vmap(total, (0, None, None)))


def rel_error(a, b) -> float:
    """Max-norm relative error between two pytrees of arrays (or numbers) of equal structure
    and shapes, in float64: 0 means identical, 1 unrelated, inf a NaN or inf in one place
    of one tree and not the other."""
    a_leaves, b_leaves = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(a_leaves) != len(b_leaves):
        raise ValueError(f"rel_error: {len(a_leaves)} leaves vs {len(b_leaves)}")
    diff, scale_a, scale_b = 0.0, 0.0, 0.0
    for x, y in zip(a_leaves, b_leaves, strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            raise ValueError(f"rel_error: shapes differ, {x.shape} vs {y.shape}")
        finite = np.isfinite(x)
        if np.any(np.isfinite(y) != finite):
            return float("inf")
        if not np.array_equal(x[~finite], y[~finite], equal_nan=True):
            return float("inf")
        x, y = x[finite], y[finite]
        if x.size:
            diff = max(diff, float(np.max(np.abs(x - y))))
            scale_a = max(scale_a, float(np.max(np.abs(x))))
            scale_b = max(scale_b, float(np.max(np.abs(y))))
    return diff / max(np.finfo(np.float64).tiny, scale_a + scale_b)


def assert_close(got, want, tol: float, err_msg: str = "") -> None:
    """Assert ``rel_error(got, want) <= tol``: two float computations of the same numbers
    agree up to rounding, on any CPU (see the comment above)."""
    error = rel_error(got, want)
    assert error <= tol, f"max-norm relative error {error:.3g} > {tol:g} {err_msg}".rstrip()


@pytest.fixture(params=[jnp.float32, jnp.float64], ids=["float32", "float64"])
def dtype(request):
    """Run the test in float32 and (inside a restoring x64 scope) in float64."""
    if request.param == jnp.float64:
        with x64():
            yield request.param
    else:
        yield request.param


def random_problem(seed, n, c, dtype, scale=3.0):
    """Scores ~ scale * N(0, 1) [n, c] and labels uniform in [0, c), as NumPy arrays."""
    rng = np.random.default_rng(seed)
    scores = (scale * rng.standard_normal((n, c))).astype(dtype)
    labels = rng.integers(0, c, size=n).astype(np.int32)
    return scores, labels


@st.composite
def tied_problem(draw, n=None, c=None, dtype=np.float64):
    """``(scores [n, c], labels [n], margin, seed)``: small integer scores in ``[-2, 2]``
    with margin 1 or 1/2, so exact kinks and ties are everywhere. ``n`` (1 to 4) and ``c``
    (2 to 5) are drawn unless given (a fixed shape compiles once)."""
    n = draw(st.integers(1, 4)) if n is None else n
    c = draw(st.integers(2, 5)) if c is None else c
    scores = draw(st.lists(st.integers(-2, 2), min_size=n * c, max_size=n * c))
    labels = draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n))
    margin = draw(st.sampled_from([1.0, 0.5]))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.array(scores, dtype).reshape(n, c), np.array(labels, np.int32), margin, seed


# --- accelerators: matmul precision, and tests that hold on CPU only --------------------------
#
# JAX's default float32 product is the backend's: float32 on CPU, TF32 (10-bit mantissa) on
# NVIDIA GPUs since Ampere, one bfloat16 pass (8 bits) on a TPU. svmjax leaves that default
# to the user where a training step may round (linear.scores and objective, the fused
# gradient path, fit, fit_grid's dW, the estimator's SGD solver) and forces Precision.HIGHEST
# where results must certify or check something (solve, solve_path and primal_objective, the
# dual's class sums, fit_grid's db, gradcheck.compare); the estimator predicts in NumPy
# float64. This suite runs at HIGHEST (above), where a GPU multiplies float32 in float32 and
# a TPU in six bfloat16 passes, so F32_TOL (= HIGHEST_MATMUL_TOL) and TRAIN_TOL hold on every
# backend. A test of a path at the backend's default precision compares with
# DEFAULT_MATMUL_TOL[backend]: a float32 product against float64, max-norm relative error.
# TF32 rounds each input by up to 2^-11 = 4.9e-4 (the product was 3.7e-4 off on an H200,
# docs/performance.md), one bfloat16 pass by up to 2^-8 = 3.9e-3.
HIGHEST_MATMUL_TOL = F32_TOL
DEFAULT_MATMUL_TOL = {"cpu": F32_TOL, "gpu": 2e-3, "tpu": 2e-2}
FLOAT64_BACKENDS = ("cpu", "gpu")  # a TPU has no float64


def backend_skip_reason(item, backend: str) -> str | None:
    """Why the test ``item`` cannot hold on ``backend`` (None: it runs there). A test marked
    ``@pytest.mark.cpu_only("why")`` (bits or programs promised on CPU only) skips off the
    CPU; one marked ``float64``, or a ``dtype`` case in float64, where the backend has none."""
    marker = item.get_closest_marker("cpu_only")
    if marker is not None:
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.cpu_only needs a reason")
        if backend != "cpu":
            return f"cpu_only: {reason}"
    params = item.callspec.params if hasattr(item, "callspec") else {}
    float64 = item.get_closest_marker("float64") is not None or params.get("dtype") is jnp.float64
    if float64 and backend not in FLOAT64_BACKENDS:
        return f"float64: the {backend} backend has no float64"
    return None


def pytest_runtest_setup(item):
    reason = backend_skip_reason(item, jax.default_backend())
    if reason is not None:
        pytest.skip(reason)


# `make test` runs pytest-xdist with --dist loadfile, which hands whole files to the two
# workers in collection order: the longest files go first, so that the files handed out
# last are short and neither worker waits long for the other at the end.
_LONGEST_FIRST = (
    "test_sparse.py",
    "test_experiments.py",
    "test_cli.py",
    "test_fused.py",
    "test_solve.py",
    "test_sharding.py",
    "test_machines.py",
    "test_family.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    # A stable sort: the other files keep their order.
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
