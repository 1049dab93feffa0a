"""Conventions of other libraries, tested against the libraries themselves."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import F32_TOL, assert_close, random_problem

from svmjax import analytic, losses

# torch is the `test` extra's reference (pinned to a CPU build; `make test` installs it): a
# checkout without it, e.g. on a Python whose CPU wheel is not at hand, skips this file.
torch = pytest.importorskip("torch", reason="torch is the `test` extra: pip install -e '.[test]'")


@pytest.mark.parametrize("module", [losses, analytic], ids=["losses", "analytic"])
@pytest.mark.parametrize("margin", [1.0, 0.5])
@pytest.mark.parametrize("squared", [False, True], ids=["p1", "p2"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_weston_watkins_is_C_times_torch_multi_margin_loss(module, margin, squared, weighted):
    scores, labels = random_problem(20, 50, 6, np.float64)
    weights = np.linspace(0.5, 2.0, 6) if weighted else None
    ours = module.weston_watkins(
        scores.astype(np.float32), labels, margin=margin, squared=squared, class_weights=weights
    )
    theirs = torch.nn.functional.multi_margin_loss(
        torch.from_numpy(scores),
        torch.from_numpy(labels.astype(np.int64)),
        p=2 if squared else 1,
        margin=margin,
        weight=None if weights is None else torch.from_numpy(weights),
        reduction="none",
    ).numpy()
    assert_close(ours, 6 * theirs, F32_TOL)  # float32 against torch in float64


@pytest.mark.parametrize("module", [losses, analytic], ids=["losses", "analytic"])
def test_crammer_singer_at_margin_1_is_optax_multiclass_hinge(module):
    scores, labels = random_problem(21, 64, 7, np.float32)
    assert_close(
        module.crammer_singer(scores, labels),
        optax.losses.multiclass_hinge_loss(jnp.asarray(scores), jnp.asarray(labels)),
        F32_TOL,
    )
