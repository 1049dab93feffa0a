"""Shared test settings: strict rank promotion, scoped float64, tolerances per dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svmjax.gradcheck import x64

# Implicit rank promotion hides shape bugs ([N] + [N, 1] -> [N, N]); make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")

# Tolerances, by dtype, for comparing against float64 references.
RTOL = {jnp.float32: 1e-6, jnp.float64: 1e-12}
ATOL = {jnp.float32: 1e-6, jnp.float64: 1e-12}

LOSS_NAMES = ("weston_watkins", "crammer_singer", "one_vs_rest")


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
