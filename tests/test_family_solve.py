"""The exact solver on every machine of the family, against a generic convex solver.

``svmjax.solve.solve`` (float64) against cvxpy/Clarabel on the primal alone
(``test_family_duals.cvxpy_optimum``, written from the losses' definitions with slack
variables): the objective and the weights agree, the certified interval ``[dual,
objective]`` holds the generic solver's optimum, and the sum-to-zero constraint holds in
the solution. ``SVMClassifier(solver="exact")`` fits every machine. The long runs (every
setting, 320 random problems) carry the ``slow`` marker.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_family_duals import (
    CASES,
    N_CLASSES,
    case_id,
    cvxpy_optimum,
    has_intercept_optimum,
    machine,
    tiny_problem,
)

from svmjax import SVMClassifier, registry, solve
from svmjax.gradcheck import x64

SETTINGS = [
    (name, options, squared, fit_intercept)
    for name, options in CASES
    for squared in (False, True)
    for fit_intercept in (False, True)
    if not (name == "smooth_top_k" and squared)
    and (not fit_intercept or has_intercept_optimum(name, options))
]
QUICK = [  # the constraint with an intercept, a squared maximum, top-k with options
    ("lee_lin_wahba", {}, False, True),
    ("absolute_max_hinge", {}, True, False),
    ("top_k_hinge", {"k": 3, "variant": "beta"}, False, True),
]


def setting_id(setting):
    return case_id(setting[:3]) + f",b={int(setting[3])}"


def _solved(name, options, squared, fit_intercept, X, y, c, tol):
    """``solve`` in float64 with per-example weights ``c`` (as sample weights, C = 1)."""
    with x64():
        return solve.solve(
            X, y, loss=name, loss_options=options, squared=squared, C=1.0, sample_weight=c,
            fit_intercept=fit_intercept, n_classes=N_CLASSES, tol=tol, max_iter=20000,
        )  # fmt: skip


def check_against_cvxpy(setting, seed=0):
    name, options, squared, fit_intercept = setting
    X, y, c = tiny_problem(seed, weighted=True)
    optimum, W_ref, _ = cvxpy_optimum(name, options, X, y, c, fit_intercept, squared)
    result = _solved(name, options, squared, fit_intercept, X, y, c, tol=1e-9)
    objective, dual = float(result.objective), float(result.dual)
    W = np.asarray(result.params["W"])
    slack = 1e-8 * (1 + abs(optimum))  # Clarabel's own tolerance
    assert dual <= optimum + slack and optimum <= objective + slack, (dual, optimum, objective)
    assert objective - optimum <= 1e-6 * abs(optimum), (objective, optimum)
    # 1-strong convexity in W: |W - W*|^2 / 2 <= objective - optimum.
    scale = max(1.0, float(np.max(np.abs(W_ref))))
    assert np.max(np.abs(W - W_ref)) <= 1e-3 * scale  # the bound from a gap of ~1e-7
    assert np.max(np.abs(W - W_ref)) <= math.sqrt(2 * max(objective - optimum, 0) + 2 * slack)
    if machine(name, options).sum_to_zero:
        assert np.max(np.abs(W.sum(axis=1))) <= 1e-12 * scale
        assert abs(float(np.sum(np.asarray(result.params["b"])))) <= 1e-12 * (1 + abs(objective))


def _marked(settings):
    return [
        pytest.param(s, id=setting_id(s), marks=() if s in QUICK else pytest.mark.slow)
        for s in settings
    ]


@pytest.mark.float64
@pytest.mark.parametrize("setting", _marked(SETTINGS))
def test_solution_and_certificate_against_cvxpy(setting):
    check_against_cvxpy(setting)


@pytest.mark.float64
@pytest.mark.parametrize(
    "seed", [pytest.param(s, marks=() if s < 1 else pytest.mark.slow) for s in range(320)]
)
def test_the_certificate_holds_the_optimum(seed):
    # A random machine, weights and C on problems of one fixed shape, solved to the
    # default tolerance: the generic solver's optimum lies in [dual, objective].
    rng = np.random.default_rng(1000 + seed)
    name, options, squared, fit_intercept = SETTINGS[rng.integers(len(SETTINGS))]
    X, y, c = tiny_problem(seed, weighted=bool(rng.integers(2)))
    c = c * math.exp(rng.uniform(math.log(0.05), math.log(20)))
    optimum, _, _ = cvxpy_optimum(name, options, X, y, c, fit_intercept, squared)
    result = _solved(name, options, squared, fit_intercept, X, y, c, tol=1e-3)
    slack = 1e-8 * (1 + abs(optimum))
    assert float(result.dual) <= optimum + slack, (name, options, squared, fit_intercept)
    assert optimum <= float(result.objective) + slack
    assert bool(result.converged)


ESTIMATOR_QUICK = ("top_k_hinge",)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=() if name in ESTIMATOR_QUICK else pytest.mark.slow)
        for name in registry.names(solver=True)
    ],
)
def test_the_estimator_fits_every_machine(name):
    # Float32, the estimator's defaults (an intercept, tol 1e-3): certified and accurate.
    rng = np.random.default_rng(3)
    y = rng.integers(0, N_CLASSES, 200)
    X = (rng.standard_normal((200, 5)) + 1.5 * rng.standard_normal((N_CLASSES, 5))[y]).astype(
        np.float32
    )
    options = {"k": 2} if name == "top_k_hinge" else None
    model = SVMClassifier(loss=name, C=0.5, solver="exact", loss_options=options).fit(X, y)
    assert model.dual_gap_ <= 1e-3 * model.objective_
    assert model.score(X, y) > 0.6
