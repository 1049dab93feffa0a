"""The command line, driven in a subprocess as a user would."""

import inspect
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from svmjax import cli, data, linear, model, optim, registry, solve, train


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


BAD_FLAGS = [
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
]

# Every bad command line of BAD_FLAGS through ``cli.main`` in one fresh process (one
# start-up of JAX instead of ten): its exit status (``main``'s return value, or argparse's
# SystemExit) and what it wrote to stderr, a traceback included if anything escaped.
_BAD_FLAGS_DRIVER = """
import contextlib, io, json, sys, traceback
from svmjax import cli
runs = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit:
            code = exit.code
        except BaseException:
            traceback.print_exc()
            code = None
    runs.append([code, err.getvalue()])
print(json.dumps(runs))
"""


@pytest.fixture(scope="module")
def bad_flag_runs():
    argvs = json.dumps([args for args, _ in BAD_FLAGS])
    result = subprocess.run(
        [sys.executable, "-c", _BAD_FLAGS_DRIVER, argvs],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)), ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_give_one_line_and_no_traceback(case, bad_flag_runs):
    code, stderr = bad_flag_runs[case]
    assert code == 2
    assert BAD_FLAGS[case][1] in stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", [0, 9], ids=["usage", "diverged"])
def test_a_bad_flag_alone_in_its_process_prints_one_line(case):
    # The whole process: exit status and stderr, start-up included (JAX's own messages).
    args, message = BAD_FLAGS[case]
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
    saved = model.load(tmp_path / "model.npz")
    assert saved.W.shape == (64, 10) and saved.b.shape == (10,)
    assert saved.classes.tolist() == [str(i) for i in range(10)]
    assert (saved.loss, saved.squared, saved.preprocess) == ("crammer_singer", True, "standardize")


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


# ------------------------------------------------- train -> model file -> predict, as a tool


def svmlight_file(path, n, seed, labels=("1", "2", "3"), d=5):
    """``n`` rows of ``len(labels)`` separable-ish classes, about half the values absent."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        c = i % len(labels)
        x = rng.standard_normal(d) + 2.5 * np.eye(d)[c]
        values = " ".join(f"{j + 1}:{v:.4f}" for j, v in enumerate(x) if v > 0)
        lines.append(f"{labels[c]} {values}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path):
    train_file = svmlight_file(tmp_path / "train.svm", 150, 0)
    return train_file, svmlight_file(tmp_path / "test.svm", 60, 1)


def status(argv) -> int:
    """``cli.main``'s exit status, also where argparse exits."""
    try:
        return cli.main(argv)
    except SystemExit as exit:
        return int(exit.code or 0)


def train_json(capsys, *args) -> dict:
    assert cli.main(["train", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("solver", ["exact", "sgd"])
def test_a_model_predicts_in_a_fresh_process_as_the_api_does(tmp_path, files, capsys, solver):
    train_file, test_file = files
    extra = ["--epochs", 5] if solver == "sgd" else []
    args = ["--svmlight", train_file, "--test", test_file, "--solver", solver, *extra]
    metrics = train_json(capsys, *args, "--out", tmp_path / "run")
    result = run("predict", str(tmp_path / "run" / "model.npz"), str(test_file), timeout=120)
    assert result.returncode == 0, result.stderr
    # The Python API on the same data: the loader's defaults, the seed's keys.
    split_key, init_key, train_key = jax.random.split(jax.random.key(0), 3)
    ds = data.load_svmlight(train_file, test_path=test_file, key=split_key)
    if solver == "exact":
        params = solve.solve(ds.X_train, ds.y_train, n_classes=ds.n_classes).params
    else:
        params, _ = train.fit(linear.init(init_key, ds.n_features, ds.n_classes), ds.X_train,
                              ds.y_train, key=train_key, epochs=5)  # fmt: skip
    scores = np.asarray(ds.X_test @ np.asarray(params["W"])) + np.asarray(params["b"])
    assert result.stdout.split() == [ds.class_names[i] for i in np.argmax(scores, axis=1)]
    assert f"accuracy {metrics['test_accuracy']:.4f} (" in result.stderr
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["model"] == str(tmp_path / "run" / "model.npz")
    if solver == "sgd":  # the per-epoch history and its curves
        assert saved["history"]["epoch"] == [1, 2, 3, 4, 5] and len(saved["history"]) == 4
        assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
        assert model.load(tmp_path / "run" / "model.npz").history["objective"].shape == (5,)
    else:
        assert metrics["converged"] and metrics["dual_gap"] <= 1e-3 * metrics["objective"]


def test_no_preprocessing_and_no_intercept_train_on_the_raw_file(tmp_path, files, capsys):
    train_file, test_file = files
    args = ["--svmlight", train_file, "--solver", "exact", "--preprocess", "none"]
    metrics = train_json(capsys, *args, "--no-intercept", "-C", 0.5, "--out", tmp_path)
    saved = model.load(tmp_path / "model.npz")
    assert saved.preprocess is None and saved.offset is None and saved.scale is None
    assert not saved.b.any() and saved.training["C"] == 0.5 == metrics["C"]
    split_key = jax.random.split(jax.random.key(0), 3)[0]
    ds = data.load_svmlight(train_file, key=split_key, preprocess=None)
    want = solve.solve(ds.X_train, ds.y_train, C=0.5, n_classes=3)
    np.testing.assert_allclose(saved.W, want.params["W"], rtol=1e-6, atol=1e-6)
    assert metrics["objective"] == pytest.approx(float(want.objective), rel=1e-6)


def test_predict_reads_numpy_and_idx_files_and_writes_scores_and_top_k(tmp_path, capsys):
    W = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    classes = np.array([7, 8, 9])
    path = model.save(tmp_path / "m.npz", model.Model(W, np.zeros(3), classes=classes))
    X = np.array([[3, 1, 2, 0], [0, 5, 1, 9], [1, 0, 4, 2]], np.uint8)
    np.save(tmp_path / "X.npy", X)
    np.savez(tmp_path / "Xy.npz", X=X, y=np.array([7, 8, 7]))
    idx = (tmp_path / "X.idx").open("wb")
    idx.write(bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big") for n in (3, 2, 2)))
    idx.write(X.tobytes())
    idx.close()
    (tmp_path / "y.idx").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 9, 8, 9]))
    assert cli.main(["predict", str(path), str(tmp_path / "X.npy")]) == 0
    out = capsys.readouterr()
    assert out.out == "7\n8\n9\n" and out.err == ""  # no labels, no accuracy
    assert cli.main(["predict", str(path), str(tmp_path / "Xy.npz"), "--top-k", "2"]) == 0
    out = capsys.readouterr()
    assert out.out == "7 9\n8 9\n9 7\n"
    assert out.err == "accuracy 0.6667 (2/3), top-2 accuracy 1.0000 (3/3)\n"
    output = tmp_path / "out.txt"
    args = [str(path), str(tmp_path / "X.idx"), "--labels", str(tmp_path / "y.idx")]
    assert cli.main(["predict", *args, "--scores", "-o", str(output)]) == 0
    assert capsys.readouterr().out == "accuracy 0.6667 (2/3)\n"  # to stdout with --output
    assert output.read_text().splitlines() == ["labels 7 8 9", "7 3 1 2", "8 0 5 1", "9 1 0 4"]


def test_predict_matches_labels_by_name_and_counts_unknown_ones(tmp_path, files, capsys):
    train_file, _ = files
    train_json(capsys, "--svmlight", train_file, "--solver", "exact", "--out", tmp_path)
    other = svmlight_file(tmp_path / "other.svm", 6, 2, labels=("1", "2", "4"))
    assert cli.main(["predict", str(tmp_path / "model.npz"), str(other)]) == 0
    err = capsys.readouterr().err
    assert "(2 labels are not among the model's classes)" in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.npz", "No such file or directory"),
        (lambda d: svmlight_file(d / "m.npz", 3, 0), "cannot be read as a model file"),
        (lambda d: np.savez(d / "m.npz", W=np.eye(5, 3)) or d / "m.npz", "no header"),
        (
            lambda d: (
                np.savez(d / "m.npz", header=np.array('{"format": "svmjax-model", "version": 99}'))
                or d / "m.npz"
            ),
            "model format version 99",
        ),
    ],  # fmt: skip
)
def test_an_unreadable_model_is_one_line(tmp_path, capsys, make, message):
    data_file = svmlight_file(tmp_path / "x.svm", 3, 0)
    assert cli.main(["predict", str(make(tmp_path)), str(data_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("svmjax predict: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "write", "message"),
    [
        (
            "wide.svm",
            lambda p: p.write_text("1 2:1 9:0.5\n"),
            "wide.svm has feature index 9, the model 5 features",
        ),
        (
            "wide.npy",
            lambda p: np.save(p, np.ones((2, 6))),
            "wide.npy has 6 features per example, the model 5",
        ),
        (
            "y.idx",
            lambda p: p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 3])),
            "IDX labels, not images; give it as --labels",
        ),
        ("bad.svm", lambda p: p.write_text("1 0:1\n"), "bad.svm: line 1: feature index 0"),
        ("none.svm", lambda p: None, "No such file or directory"),
    ],  # fmt: skip
)
def test_data_that_does_not_fit_the_model_is_one_line(tmp_path, capsys, name, write, message):
    path = model.save(tmp_path / "m.npz", model.Model(np.ones((5, 2)), np.zeros(2)))
    write(tmp_path / name)
    assert cli.main(["predict", str(path), str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-C", "2"], "-C does not apply to --solver sgd"),
        (["--solver", "exact", "--lr", "0.5"], "--lr does not apply to --solver exact"),
        (
            ["--solver", "exact", "--loss", "smooth_top_k", "--loss-option", "k=2"],
            "smooth_top_k with k=2 has no duality-gap certificate",
        ),
        (["--loss-option", "k=2"], "--loss-option: loss 'weston_watkins' has no option 'k'"),
        (["--loss", "top_k_hinge", "--loss-option", "q=1"], "has no option 'q' (its options: k"),
        (["--loss", "top_k_hinge", "--loss-option", "k"], "expected NAME=VALUE, got 'k'"),
        (["--solver", "exact", "--C-path", "1", "2", "--val-fraction", "0"], "needs a validation"),
        (["--class-weight", "5=2"], "no class '5' (classes: 1, 2, 3)"),
        (["--class-weight", "1=heavy"], "expected LABEL=WEIGHT"),
        (["--cv", "1"], "--cv 1: needs 2 <= K <="),
        (["--import", "no_such_module_31"], "--import no_such_module_31: No module named"),
        (["--preprocess", "standardize", "--sparse"], "would make sparse data dense"),
        (["--val-fraction", "1"], "--val-fraction: expected a number in [0, 1), got '1'"),
    ],
)
def test_train_mistakes_are_one_line(files, capsys, args, message):
    assert status(["train", "--svmlight", str(files[0]), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args", [["--test", "x.svm"], ["--n-features", "3"], ["--no-sparse"], ["--test-fraction", ".1"]]
)
def test_file_flags_refuse_other_sources(capsys, args):
    dataset = ["--mnist", "/no/such/dir"] if "--test-fraction" in args else []
    assert cli.main(["train", *dataset, *args]) == 2
    err = capsys.readouterr().err
    assert "does not apply" in err or "applies to --svmlight files only" in err


def test_a_missing_jax_backend_is_one_line(tmp_path):
    absent = "tpu" if jax.default_backend() == "gpu" else "cuda"
    result = subprocess.run(
        [sys.executable, "-m", "svmjax.cli", "train", "--epochs", "1"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": absent},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"svmjax train: error: JAX cannot start the backend JAX_PLATFORMS='{absent}' asks for ("
    )
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_backend_check_catches_a_bare_assertion(monkeypatch, capsys):
    def no_backend():
        raise AssertionError

    monkeypatch.setattr(jax, "devices", no_backend)
    assert cli.main(["gradcheck"]) == 2
    assert "asks for (AssertionError); install that platform" in capsys.readouterr().err


def test_loss_options_and_a_users_loss(tmp_path, files, capsys, monkeypatch):
    train_file, test_file = files
    args = ["--svmlight", train_file, "--loss", "top_k_hinge", "--loss-option", "k=2"]
    metrics = train_json(capsys, *args, "--epochs", 2, "--out", tmp_path / "k2")
    assert metrics["loss_options"] == {"k": 2}
    assert model.load(tmp_path / "k2" / "model.npz").loss_options == {"k": 2}
    (tmp_path / "my_losses.py").write_text(
        "from svmjax import registry\n"
        "entry = registry.get('weston_watkins')._replace(name='my_ww', dual=None)\n"
        "registry.register(entry, replace=True)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        args = ["--svmlight", train_file, "--loss", "my_ww", "--epochs", 2, "--out", tmp_path]
        assert train_json(capsys, "--import", "my_losses", *args)["loss"] == "my_ww"
        assert cli.build_parser().parse_args(["gradcheck", "--loss", "my_ww"]).loss == ["my_ww"]
    finally:
        registry.unregister("my_ww")
        sys.modules.pop("my_losses", None)
    # The model predicts without the loss registered.
    assert cli.main(["predict", str(tmp_path / "model.npz"), str(test_file)]) == 0
    assert len(capsys.readouterr().out.split()) == 60


def test_exact_cross_validation_over_a_C_path(tmp_path, files, capsys):
    args = ["--svmlight", files[0], "--solver", "exact", "--C-path", 0.01, 1, 100]
    metrics = train_json(capsys, *args, "--cv", 3, "--out", tmp_path)
    assert metrics["C_path"] == [0.01, 1.0, 100.0] and len(metrics["cv_accuracy_by_C"]) == 3
    best = int(np.argmax(metrics["cv_accuracy_by_C"]))
    assert metrics["best_C"] == metrics["C"] == metrics["C_path"][best]
    assert model.load(tmp_path / "model.npz").training["best_C"] == metrics["best_C"]
    by_validation = train_json(capsys, *args)
    assert len(by_validation["val_accuracy_by_C"]) == 3 and "cv_accuracy_by_C" not in by_validation
    assert cli.main(["train", "--svmlight", str(files[0]), "--cv", "3", "--epochs", "1"]) == 0
    assert "3-fold cross-validation accuracy" in capsys.readouterr().out


def test_defaults_are_the_apis(files, capsys):
    fit, solve_ = (inspect.signature(f).parameters for f in (train.fit, solve.solve))
    state = optim.DEFAULT_OPTIMIZER.init({"w": np.zeros(1)})
    sgd = train_json(capsys, "--svmlight", files[0])
    assert (sgd["epochs"], sgd["batch_size"], sgd["reg"], sgd["grad"], sgd["loss"]) == tuple(
        fit[k].default for k in ("epochs", "batch_size", "reg", "grad", "loss"))  # fmt: skip
    assert sgd["learning_rate"] == pytest.approx(float(state.hyperparams["learning_rate"]))
    assert sgd["margin"] == fit["margin"].default and sgd["preprocess"] == "maxabs"
    exact = train_json(capsys, "--svmlight", files[0], "--solver", "exact")
    assert (exact["C"], exact["tol"], exact["max_iter"], exact["fit_intercept"]) == tuple(
        solve_[k].default for k in ("C", "tol", "max_iter", "fit_intercept"))  # fmt: skip
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    shown = ["epochs (10)", "batch size (256)", "learning rate (0.1)", "L2 regularisation (0.0)"]
    shown += ["C, weight of the loss (1.0)", "duality gap (0.001)", "coordinate passes (5000)"]
    assert all(item in text for item in shown), [item for item in shown if item not in text]


def test_checkpoint_and_resume_flags(tmp_path, files, capsys):
    args = ["--svmlight", files[0], "--no-progress"]
    train_json(capsys, *args, "--epochs", 3, "--out", tmp_path / "whole")
    train_json(capsys, *args, "--epochs", 2, "--checkpoint", tmp_path / "ckpt.npz")
    resumed = ["--epochs", 3, "--resume-from", tmp_path / "ckpt.npz", "--out", tmp_path / "two"]
    assert train_json(capsys, *args, *resumed)["history"]["epoch"] == [1, 2, 3]
    whole, two = (model.load(tmp_path / name / "model.npz") for name in ("whole", "two"))
    np.testing.assert_array_equal(whole.W, two.W)
