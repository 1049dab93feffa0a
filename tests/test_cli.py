"""The command line, driven in a subprocess as a user would."""

import json
import subprocess
import sys

import numpy as np
import pytest

from svmjax import cli


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
    result = run("gradcheck", "--loss", "weston_watkins", "crammer_singer", "one_vs_rest")
    assert result.returncode == 0, result.stderr
    rows = [
        line for line in result.stdout.splitlines() if line.startswith(("weston", "cram", "one"))
    ]
    assert len(rows) == 12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--epochs", "0"], "--epochs: expected a positive integer, got '0'"),
        (["demo", "--lr", "-1"], "--lr: expected a number > 0, got '-1'"),
        (["demo", "--lr", "fast"], "--lr: expected a number > 0, got 'fast'"),
        (["fit"], "invalid choice: 'fit'"),
        (["train", "--loss", "hinge"], "argument --loss: invalid choice: 'hinge'"),
        (["train", "--dataset", "digits", "--svmlight", "x.svm"], "not allowed with argument"),
        (["train", "--svmlight", "/no/such/file.svm"], "No such file or directory"),
        (["train", "--mnist", "/no/such/dir"], "train: error:"),
        (["sweep", "--lrs"], "expected at least one argument"),
        (["train", "--lr", "1e30", "--squared", "--epochs", "2"], "diverged in epoch 1"),
    ],
)
def test_bad_flags_give_one_line_and_no_traceback(args, message):
    result = run(*args, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_train_json_and_outputs(tmp_path):
    result = run(
        "train",
        "--loss",
        "crammer_singer",
        "--squared",
        "--epochs",
        "5",
        "--json",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["loss"] == "crammer_singer" and metrics["squared"] is True
    assert metrics["test_accuracy"] > 0.9
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    with np.load(tmp_path / "params.npz", allow_pickle=False) as params:
        assert params["W"].shape == (64, 10) and params["b"].shape == (10,)


def test_train_reads_a_libsvm_file(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(60):
        label = i % 3
        x = rng.standard_normal(4) + 3 * np.eye(4)[label]
        lines.append(f"{label + 1} " + " ".join(f"{j + 1}:{v:.4f}" for j, v in enumerate(x)))
    path = tmp_path / "toy.svm"
    path.write_text("\n".join(lines) + "\n")
    result = run("train", "--svmlight", str(path), "--epochs", "30", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["train_accuracy"] > 0.9


def test_sweep_writes_heatmap_and_json(tmp_path):
    result = run(
        "sweep",
        "--lrs",
        "0.03",
        "0.3",
        "--regs",
        "0",
        "1e-3",
        "--epochs",
        "3",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert np.array(sweep["val_accuracy"]).shape == (2, 2)
    assert sweep["best"]["learning_rate"] in (0.03, 0.3)
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_a_library_error_keeps_its_traceback(monkeypatch):
    # Only expected user errors (bad files, missing extras, divergence) become one line;
    # a ValueError from a bug inside the library must propagate with its traceback.
    def broken(args):
        raise ValueError("an internal bug")

    monkeypatch.setattr(cli, "_train", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        cli.main(["train"])


def test_user_errors_are_one_line(monkeypatch, capsys):
    def bad_file(args):
        raise cli.UsageError("x.svm: line 2: feature index 0, indices start at 1")

    monkeypatch.setattr(cli, "_train", bad_file)
    assert cli.main(["train"]) == 2
    assert capsys.readouterr().err.strip() == (
        "svmjax train: error: x.svm: line 2: feature index 0, indices start at 1"
    )
