"""The command line, driven in a subprocess as a user would."""

import json
import subprocess
import sys

import pytest


def run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "svmjax.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_trains_digits_and_writes_its_files(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "analytic~autodiff" in result.stdout and "test accuracy" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.95
    assert metrics["train_seconds_including_compile"] < 60
    assert len(metrics["gradient_agreement"]) == 12
    for name in ("curves.png", "templates.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradcheck_prints_every_variant():
    result = run("gradcheck")
    assert result.returncode == 0, result.stderr
    rows = [
        line for line in result.stdout.splitlines() if line.startswith(("weston", "cram", "one"))
    ]
    assert len(rows) == 12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--epochs", "0"], "must be a positive integer, got 0"),
        (["demo", "--lr", "-1"], "must be > 0, got -1"),
        (["demo", "--lr", "fast"], "invalid _positive_float value: 'fast'"),
        (["train"], "invalid choice: 'train'"),
    ],
)
def test_bad_flags_give_one_line_and_no_traceback(args, message):
    result = run(*args, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
