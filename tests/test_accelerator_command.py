"""The accelerator command (tests/run_accelerator.py) and the matmul precision it checks.

The command's smoke tests run it on small planted test files (a pass, a failure, a skip, a
timeout, a test stuck where the alarm cannot reach it, a deadline) and list its real
selection; the precision tests (``precision`` in their names) are part of that selection:
on CPU they hold trivially, on a GPU or TPU they check the tolerances of
``tests/conftest.py`` against the device's products.
"""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import DEFAULT_MATMUL_TOL, HIGHEST_MATMUL_TOL, assert_close, backend_skip_reason
from run_accelerator import AREAS, area_of, interleave

from svmjax import fused, linear
from svmjax.solve import primal_objective, solve

RUNNER = Path(__file__).resolve().parent / "run_accelerator.py"
REQUIRED = (
    "losses",
    "analytic",
    "fused",
    "linear",
    "train",
    "grid",
    "solve",
    "estimator",
    "sharding",
    "precision",
)

PLANTED = """
import signal
import time

import pytest


def test_passes():
    pass


def test_fails():
    assert 1 == 2, "planted failure"


@pytest.mark.skip(reason="planted skip")
def test_skips():
    pass


def test_times_out():
    time.sleep(30)


def test_stuck():
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # as native code: the alarm never lands
    time.sleep(30)


def test_after_the_stuck_one():
    pass
"""

SLOW = """
import time

import pytest


@pytest.mark.parametrize("i", range(30))
def test_sleeps(i):
    time.sleep(0.3)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The command three ways at once (its selection listed, the planted tests, a deadline),
    each in its own process: ``{name: (exit status, output, out folder)}``."""
    tmp = tmp_path_factory.mktemp("accelerator")
    (tmp / "planted").mkdir()
    (tmp / "planted" / "test_planted.py").write_text(PLANTED)
    (tmp / "slow").mkdir()
    (tmp / "slow" / "test_slow.py").write_text(SLOW)
    commands = {
        "list": ["--list"],
        "planted": ["--paths", str(tmp / "planted"), "--timeout", "0.5", "--grace", "1"],
        "deadline": ["--paths", str(tmp / "slow"), "--deadline", "4"],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(RUNNER), "--out", str(tmp / name), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, args in commands.items()
    }
    try:
        outputs = {name: proc.communicate(timeout=120)[0] for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return {name: (proc.returncode, outputs[name], tmp / name) for name, proc in procs.items()}


def test_the_selection_covers_every_area(runs):
    status, output, out = runs["list"]
    assert status == 0, output[-3000:]
    selected = [line.split(None, 1) for line in (out / "selection.txt").read_text().splitlines()]
    assert all(area_of(nodeid) == area for area, nodeid in selected), output[-3000:]
    areas = {area for area, _ in selected}
    assert set(REQUIRED) <= areas, f"areas without a test: {set(REQUIRED) - areas}"
    assert {a.name for a in AREAS} == set(REQUIRED)
    nodeids = {nodeid for _, nodeid in selected}
    assert not any("test_eight_devices" in n or "liblinear_smoke" in n for n in nodeids)


def test_area_of_and_interleave():
    assert area_of("tests/test_train.py::test_fit_grid_matches_separate_fits[sgd]") == "grid"
    assert area_of("tests/test_train.py::test_fit_learns_blobs_and_reports_history") == "train"
    assert area_of("tests/test_sharding.py::test_eight_devices") is None
    assert area_of("tests/test_cli.py::test_anything") is None
    tests = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("c2", "c")]
    assert [t for t, _ in interleave(tests)] == ["a1", "b1", "c1", "a2", "c2", "a3"]


def _summary(out: Path) -> list[str]:
    return (out / "summary.txt").read_text().splitlines()


def test_each_failure_timeout_and_skip_is_one_line(runs):
    status, output, out = runs["planted"]
    assert status == 1, output[-3000:]
    lines = _summary(out)
    assert lines[0].endswith(": complete")
    assert lines[1].startswith(f"backend: {jax.default_backend()}, ")
    assert lines[2].startswith(f"jax {jax.__version__}, jaxlib ")
    assert "selected 6: passed 2, failed 3, skipped 1, not run 0" in lines
    assert "FAILED test_planted.py::test_fails - AssertionError: planted failure" in lines
    assert (
        "FAILED test_planted.py::test_times_out - Failed: timeout: no result after 0.5 s" in lines
    )
    stuck = [line for line in lines if line.startswith("TIMEOUT test_planted.py::test_stuck - ")]
    assert len(stuck) == 1 and "stuck outside Python" in stuck[0], lines
    assert "SKIPPED test_planted.py::test_skips - planted skip" in lines
    # The stuck test's process was killed; the test after it ran in a new one.
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert {k: suite.get(k) for k in ("tests", "failures", "skipped")} == {
        "tests": "6",
        "failures": "3",
        "skipped": "1",
    }
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["test_after_the_stuck_one"].find("failure") is None
    stacks = cases["test_stuck"].find("failure")
    assert stacks is not None and "test_planted.py" in (stacks.text or ""), "its stacks"


def test_the_deadline_lists_what_did_not_run(runs):
    status, output, out = runs["deadline"]
    assert status == 2, output[-3000:]
    lines = _summary(out)
    assert lines[0].endswith("stopped at the deadline (4 s)"), lines[0]
    not_run = [line for line in lines if line.startswith("NOT RUN test_slow.py::test_sleeps[")]
    counts = next(line for line in lines if line.startswith("selected 30: "))
    assert not_run and counts.endswith(f"not run {len(not_run)}"), lines
    assert "failed 0" in counts
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("skipped") == str(len(not_run))


def test_cpu_only_skips_off_the_cpu_with_its_reason():
    class Item:
        nodeid = "tests/test_x.py::test_y"

        def __init__(self, marks, params=None):
            self.marks = {m.name: m for m in marks}
            if params is not None:
                self.callspec = type("Callspec", (), {"params": params})

        def get_closest_marker(self, name):
            return self.marks.get(name)

    marked = Item([pytest.mark.cpu_only("XLA:CPU's summation order").mark])
    assert backend_skip_reason(marked, "cpu") is None
    assert backend_skip_reason(marked, "gpu") == "cpu_only: XLA:CPU's summation order"
    assert backend_skip_reason(Item([]), "gpu") is None
    with pytest.raises(pytest.UsageError, match="needs a reason"):
        backend_skip_reason(Item([pytest.mark.cpu_only.mark]), "cpu")
    float64 = Item([], params={"dtype": jax.numpy.float64})
    assert backend_skip_reason(float64, "gpu") is None
    assert backend_skip_reason(float64, "tpu") == "float64: the tpu backend has no float64"
    assert backend_skip_reason(Item([pytest.mark.float64.mark]), "tpu") is not None


# --- precision: run by the accelerator command on its device ---------------------------------


@pytest.mark.parametrize("precision", ["default", "highest"])
def test_precision_of_the_products_on_this_backend(precision):
    # The two products of the training path, the scores X W and the weight gradient's
    # M^T X (in the row chunks a GPU uses), at the backend's default precision and at
    # HIGHEST, against float64: within the tolerance conftest names for each.
    rng = np.random.default_rng(0)
    n, d, c = 8192, 256, 10
    X = rng.standard_normal((n, d)).astype(np.float32)
    W = (rng.standard_normal((d, c)) / np.sqrt(d)).astype(np.float32)
    A = rng.standard_normal((c, n)).astype(np.float32)
    params = {"W": W, "b": np.zeros(c, np.float32)}
    with jax.default_matmul_precision(precision):
        scores = jax.jit(linear.scores)(params, X)
        product = jax.jit(fused.rows_product, static_argnames="chunks")(
            A, X, chunks=fused.row_chunks(n)
        )
    backend = jax.default_backend()
    tol = DEFAULT_MATMUL_TOL[backend] if precision == "default" else HIGHEST_MATMUL_TOL
    X64 = X.astype(np.float64)
    assert_close(scores, X64 @ W.astype(np.float64), tol, f"scores on {backend}")
    assert_close(product, A.astype(np.float64) @ X64, tol, f"M^T X on {backend}")


def test_precision_the_solver_ignores_a_reduced_default():
    # The exact solver and primal_objective trace their products at HIGHEST: under a
    # bfloat16 default their objective is still the float64 one to float32 rounding.
    rng = np.random.default_rng(1)
    n, d, c = 240, 12, 4
    y = (np.arange(n) % c).astype(np.int32)
    X = (rng.standard_normal((n, d)) + 2 * rng.standard_normal((c, d))[y]).astype(np.float32)
    with jax.default_matmul_precision("bfloat16"):
        result = solve(X, y, C=1.0, fit_intercept=True)
        objective = primal_objective(result.params, X, y, C=1.0)
    W = np.asarray(result.params["W"], np.float64)
    scores = X.astype(np.float64) @ W + np.asarray(result.params["b"], np.float64)
    margins = scores - scores[np.arange(n), y][:, None] + 1.0
    margins[np.arange(n), y] = 0.0
    want = 0.5 * np.sum(W * W) + np.sum(np.maximum(margins, 0.0))
    assert bool(result.converged)
    assert_close(result.objective, want, HIGHEST_MATMUL_TOL, "the solver's objective")
    assert_close(objective, want, HIGHEST_MATMUL_TOL, "primal_objective")
    assert float(result.dual) <= want * (1 + HIGHEST_MATMUL_TOL)  # a lower bound on P*
