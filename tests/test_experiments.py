"""Smoke tests: every experiment script runs end to end on a shrunk config."""

import dataclasses
import importlib.util
import json
import platform
import sys
from pathlib import Path

import jax
import numpy as np

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
sys.path.insert(0, str(EXPERIMENTS))  # the scripts import their sibling `common`


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_bench_train_smoke(tmp_path):
    bench = load("bench_train")
    config = bench.Config(
        out=str(tmp_path),
        dataset="digits",
        epochs=1,
        repeats=1,
        grid_sizes=(1, 2),
        grid_epochs=1,
        grid_repeats=2,
        torch=False,
        scaling_shapes=("300x20x3",),
        scaling_sizes=(1, 4),
    )
    results = bench.main(config)
    (scaling,) = results["grid_scaling"]
    assert scaling["shape"] == "300x20x3" and scaling["ratio"] > 0
    assert (
        scaling["cost_model"]["4"]["flops_per_step"]
        == 4 * scaling["cost_model"]["1"]["flops_per_step"]
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["per_step_us"].keys() == results["per_step_us"].keys()
    assert "python loop of jitted steps" in saved["per_step_us"]
    assert saved["fit_grid_cost_vs_one_config"]["1"] == 1.0
    assert (tmp_path / "results.md").read_text().startswith("# Training speed on digits")


def test_bench_gradient_smoke(tmp_path):
    bench = load("bench_gradient")
    # AVX2: a capped subprocess (XLA's ISA names are x86's; elsewhere only the default)
    isas = ("default", "AVX2") if platform.machine() in ("x86_64", "AMD64") else ("default",)
    config = bench.Config(
        out=str(tmp_path), sizes=("tiny",), repeats=2, accuracy_steps=0, isas=isas
    )
    results = bench.main(config)
    rules = results["block_rule"]
    assert [r["isa"] for r in rules] == list(isas)
    assert all(r["rule_picks"] == "two_pass" for r in rules)  # a tiny X is one block
    assert all(np.isfinite(r["default_vs_fastest"]) for r in rules)
    assert {"two_pass/analytic", "analytic/floor"} <= set(results["timings"][0]["ratios"])
    assert set(results["ratios_by_isa"]) == set(isas)
    assert json.loads((tmp_path / "results.json").read_text())["environment"]["cores"] >= 1


def test_bench_sklearn_smoke(tmp_path):
    bench = load("bench_sklearn")
    config = bench.Config(out=str(tmp_path), tasks=("cv",), folds=2, n_samples=300, max_iter=20)
    rows = bench.main(config)["rows"]
    assert [r["variant"] for r in rows] == ["LinearSVC", "cold", "warm", "warm, tol=0.01"]
    assert all(r["task_s"] > 0 and r["score"] > 0.5 for r in rows)
    assert not (tmp_path / "cache").exists()  # the benchmark's cache is removed


def test_bench_path_smoke(tmp_path):
    bench = load("bench_path")
    config = bench.Config(out=str(tmp_path), data_dir=str(tmp_path / "none"), n=200, Cs=(0.01, 0.1))
    results = bench.main(config)
    assert results["data"].startswith("digits") and len(results["rows"]) == 2
    assert all(abs(r["path_vs_liblinear"]) < 0.05 for r in results["rows"])
    assert "solve_path" in (tmp_path / "results.md").read_text()


def test_bench_solver_scale_smoke(tmp_path):
    bench = load("bench_solver_scale")
    config = bench.Config(
        out=str(tmp_path), data_dir=str(tmp_path / "none"), runs=((0.1, 300),), tol=1e-2
    )
    results = bench.main(config)
    (row,) = results["rows"]
    assert results["data"].startswith("digits") and row["rows"] == 300
    assert row["converged"] and row["certified_gap"] <= 1e-2
    assert row["rel_diff"] <= 1e-2 and row["ratio"] > 0  # certified: at most tol above P*
    assert "LinearSVC" in (tmp_path / "results.md").read_text()
    alone = bench.main(dataclasses.replace(config, out=str(tmp_path / "alone"), peer=False))
    (row,) = alone["rows"]
    assert row["converged"] and row["liblinear_s"] is None and row["ratio"] is None
    assert "| – |" in (tmp_path / "alone" / "results.md").read_text()


def test_bench_gpu_smoke(tmp_path):
    bench = load("bench_gpu")
    config = bench.Config(
        out=str(tmp_path), sizes=("300x40x5",), copy_mib=8, peak_tbs=1.0, rounds=2, calls=2
    )
    results = bench.main(config)
    (row,) = results["rows"]
    assert results["copy"]["bytes_per_s"] > 0 and row["x_bytes"] == 300 * 40 * 4
    assert set(row["seconds"]) == {
        "default",
        "highest",
        "autodiff",
        "floor",
        "XW",
        "MtX",
        "MtX_chunked",
    }
    assert row["chunks"] == 1  # the GPU rule only: one piece on CPU
    # Full float32 at HIGHEST and (JAX's default product) on CPU: dW within float32
    # rounding of float64. A GPU's default product is TF32 (about 4e-4).
    assert max(row["dW_rel_error"]["highest"], row["dW_rel_error"]["autodiff"]) < 1e-5
    if jax.default_backend() == "cpu":
        assert row["dW_rel_error"]["default"] < 1e-5
    assert "share of datasheet" in (tmp_path / "results.md").read_text()


def test_gradient_agreement_smoke(tmp_path):
    experiment = load("gradient_agreement")
    config = experiment.Config(
        out=str(tmp_path),
        n=30,
        d=4,
        c=3,
        num_z=50,
        dtypes=("float64",),
        squared=(False,),
        losses=("weston_watkins", "crammer_singer", "one_vs_rest"),
    )
    result = experiment.main(config)
    assert [row["loss"] for row in result["table"]] == [
        "weston_watkins",
        "crammer_singer",
        "one_vs_rest",
    ]
    assert all(row["analytic_vs_numeric"] < 1e-7 for row in result["table"])
    for row in result["kinks"]:
        assert row["analytic_violations"] == 0 and row["autodiff_violations"] == 0
        assert row["analytic_gradient"] != row["autodiff_gradient"]  # two different subgradients
    assert (tmp_path / "kinks.png").exists() and (tmp_path / "results.json").exists()
    assert "# Gradient agreement" in (tmp_path / "results.md").read_text()


def test_compare_losses_smoke(tmp_path):
    experiment = load("compare_losses")
    config = experiment.Config(
        out=str(tmp_path), datasets=("blobs",), seeds=(0, 1), learning_rates=(0.01, 0.1), epochs=2
    )
    results = experiment.main(config)["results"]
    assert len(results) == 6  # 3 losses x plain/squared
    assert all(len(r["test_accuracy"]) == 2 and r["test_accuracy_mean"] > 0.5 for r in results)
    assert json.loads((tmp_path / "results.json").read_text())["results"] == results


def _fake_cifar(folder: Path, records: int = 20) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, records, dtype=np.uint8)
        pixels = rng.integers(0, 256, (records, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
    return folder


def test_cs231n_replication_smoke_on_digits_and_cifar_format(tmp_path):
    experiment = load("cs231n_replication")
    small = dict(learning_rates=(0.01, 0.1), regs=(0.0, 0.01), epochs=2)
    result = experiment.main(experiment.Config(out=str(tmp_path / "digits"), **small))
    assert result["val_accuracy"].shape == (2, 2) and result["test_accuracy"] > 0.5
    for name in ("heatmap.png", "templates.png", "results.json", "results.md"):
        assert (tmp_path / "digits" / name).exists()
    cifar = _fake_cifar(tmp_path / "cifar-10-batches-bin")
    config = experiment.Config(
        out=str(tmp_path / "cifar"),
        cifar10=str(cifar),
        cifar_learning_rates=(0.01,),
        cifar_regs=(0.1,),
        cifar_epochs=1,
    )
    result = experiment.main(config)
    assert result["val_accuracy"].shape == (1, 1)
    assert (tmp_path / "cifar" / "templates.png").exists()  # 32x32x3 templates


def test_mnist1d_baseline_smoke(tmp_path):
    experiment = load("mnist1d_baseline")
    config = experiment.Config(out=str(tmp_path), seeds=(0,), linear_epochs=2, mlp_epochs=2)
    results = experiment.main(config)
    assert len(results) == 3
    assert all(0.0 <= r["test_accuracy"][0] <= 1.0 for r in results.values())


def test_compare_machines_smoke(tmp_path):
    experiment = load("compare_machines")
    config = experiment.Config(
        out=str(tmp_path),
        datasets=("iris",),
        fashion_mnist=None,
        machines=("WW", "LLW"),
        splits=2,
        learning_rates=(0.1,),
        regs=(1e-4, 1e-2),
        steps=40,
        top_k_dataset="iris",
        top_k_ks=(1, 2),
        top_k_smooth_ks=(2,),
        top_k_splits=1,
        exact_Cs=(0.1, 1.0),
        features_Cs=(0.1, 1.0),
        n_components=12,  # the linear problems' column bucket: no program of its own
    )
    result = experiment.main(config)
    rows = {(r["dataset"], r["machine"]): r for r in result["results"]}
    assert len(rows) == 2 and all(len(r["test_accuracy"]) == 2 for r in rows.values())
    for setting in ("exact", "features"):  # the same splits, every machine solved exactly
        exact = {(r["dataset"], r["machine"]): r for r in result[setting]}
        assert exact.keys() == rows.keys()
        assert all(len(r["test_accuracy"]) == 2 and 0.5 < r["mean"] <= 1.0 for r in exact.values())
        assert all(r["n_solves"] == 4 and 0 <= r["gap_max"] < 1.0 for r in exact.values())
        Cs = config.exact_Cs if setting == "exact" else config.features_Cs
        assert all(c in Cs for r in exact.values() for c in r["chosen_C"])
    assert all(r["n_features"] == 12 for r in result["features"])
    assert set(result["rankings"]) == {"iris"}
    assert set(result["rankings"]["iris"]["ranks"]) == {"sgd", "exact", "features"}
    assert (tmp_path / "exact.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(0.5 < r["mean"] <= 1.0 for r in rows.values())
    assert [r["machine"] for r in result["top_k"]] == [
        "CS",
        "top-1 hinge",
        "top-2 hinge",
        "smooth top-2",
    ]
    assert all(r["mean"][0] <= r["mean"][1] for r in result["top_k"])  # top-1 <= top-2
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["test_accuracy"] for r in saved["results"]] == [
        r["test_accuracy"] for r in result["results"]
    ]
    assert "machine" in saved
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp_path / "results.md").read_text()
    assert "| WW | weston_watkins |" in markdown
    assert "### Test accuracy, exact + RFF" in markdown and "## Rankings" in markdown


def test_bench_cli_liblinear_smoke(tmp_path):
    import shutil

    import pytest

    if shutil.which("liblinear-train") is None:
        pytest.skip("liblinear-train not installed (Debian: liblinear-tools)")
    bench = load("bench_cli_liblinear")
    config = bench.Config(
        out=str(tmp_path), n_train=300, n_test=100, n_features=20, n_classes=3, density=0.5
    )
    results = bench.main(config)
    assert results["svmjax_certified_gap"] <= config.tol
    assert results["svmjax_vs_liblinear"] <= 1e-3  # at most 0.1% above liblinear's
    assert min(results["test_accuracy"].values()) > 0.5
    assert "liblinear-train -s 4" in (tmp_path / "results.md").read_text()


def test_text_corpus_smoke(tmp_path):
    import gzip

    corpus = load("text_corpus")
    man = tmp_path / "man1"
    man.mkdir()
    for group in ("compute", "container", "iam"):
        for i in range(4):
            for track in ("", "beta_"):  # one document per command: the GA page
                roff = (
                    f'.TH "X" 1\n.SH "NAME"\n{group} c{i}\n.SH "DESCRIPTION"\n'
                    f"\\fBgcloud {track[:-1]} {group} c{i}\\fR {group}{i} {track}word{i % 2}\n"
                )
                (man / f"gcloud_{track}{group}_c{i}.1.gz").write_bytes(gzip.compress(roff.encode()))
    (man / "gcloud_iam.1.gz").write_bytes(gzip.compress(b".TH X 1\n"))  # a group's own page
    spec = corpus.ZipfText(n=300, d=2000, classes=5, topic_words=50, topic_share=0.3)
    config = corpus.Config(out=str(tmp_path / "out"), man_dir=str(man), min_commands=4,
                           min_df=1, synthetic=(spec,))  # fmt: skip
    real, synthetic = corpus.main(config)["collections"]
    assert (real["documents"], real["classes"], real["class_names"]) == (
        12, 3, ["compute", "container", "iam"]
    )  # fmt: skip
    texts, _, _ = corpus.gcloud_pages(man, 4)
    assert not any("beta" in t or "gcloud" in t or "compute c" in t for t in texts)
    assert (synthetic["documents"], synthetic["features"], synthetic["classes"]) == (300, 2000, 5)
    X, y = corpus.zipf_text(spec)
    again, _ = corpus.zipf_text(spec)
    assert (X != again).nnz == 0 and np.bincount(y).tolist() == [60] * 5
    np.testing.assert_allclose(np.sqrt(X.multiply(X).sum(axis=1)), 1, rtol=1e-5)
    assert (tmp_path / "out" / "gcloud_man.svm").exists()
    assert "| gcloud man pages | 12 |" in (tmp_path / "out" / "results.md").read_text()


def test_bench_sparse_kernels_smoke(tmp_path):
    bench = load("bench_sparse_kernels")
    config = bench.Config(out=str(tmp_path), n=300, d=500, classes=3, loop=2, repeats=2)
    results = bench.main(config)
    assert max(results["max_rel_error"].values()) < 1e-5
    assert {"scipy/XW", "slots_8/XtM", "svmjax/XtM", "class_major/XW"} <= set(results["timings"])
    assert (tmp_path / "results.md").read_text().startswith("# Sparse products, 300 x 500")


def test_bench_sparse_smoke(tmp_path):
    bench = load("bench_sparse")
    tiny = bench.ZipfText(n=500, d=3000, classes=4, topic_words=200, topic_share=0.2)
    config = bench.Config(
        out=str(tmp_path),
        man_dir=str(tmp_path),  # no gcloud pages here: that collection is left out
        collections=("tiny", "gcloud"),
        Cs=(0.1,),
        synthetic=(("tiny", tiny),),
    )
    results = bench.main(config)
    assert [(r["loss"], r["C"]) for r in results["rows"]] == [
        ("crammer_singer", 0.1),
        ("one_vs_rest", 0.1),
    ]
    assert results["notes"] and "gcloud" in results["notes"][0]
    for r in results["rows"]:
        ours, theirs = r["svmjax"], r["liblinear"]
        assert ours["converged"] and ours["cold_s"] > 0 and ours["warm_s"] > 0
        # a certified gap of 1e-3 (tol) puts svmjax within 0.1% above the optimum
        assert ours["objective"] <= theirs["objective"] * (1 + 2e-3)
        assert ours["accuracy"] > 0.5 and theirs["accuracy"] > 0.5
    assert (tmp_path / "results.md").read_text().startswith("# svmjax.solve vs LinearSVC")


def test_bench_many_classes_smoke(tmp_path, monkeypatch):
    import importlib.util

    bench = load("bench_many_classes")
    probe = load("linear_probe")
    X, y = probe.features(3, 9000, 24, 7, workers=2)
    again, _ = probe.features(3, 9000, 24, 7, workers=1)
    np.testing.assert_array_equal(again, X)
    head, y_head = probe.features(3, 100, 24, 7)  # a smaller draw is a prefix
    np.testing.assert_array_equal(y_head, y[:100])
    np.testing.assert_allclose(head, X[:100], rtol=1e-5, atol=1e-5 * np.abs(X).max())
    assert X.dtype == np.float32 and X.min() == 0 and 0.3 < np.mean(X == 0) < 0.7
    assert set(np.unique(y)) == set(range(7))
    # 480 training rows x 16 features x 10 classes throughout: one compiled solver program
    # (the caches are kept: cold = warm here)
    monkeypatch.setattr(jax, "clear_caches", lambda: None)
    peer = importlib.util.find_spec("sklearn") is not None
    config = bench.Config(
        out=str(tmp_path),
        modes=("probe", "table", "fit", "imagenet"),
        problems=((600, 16, 10),),
        Cs=(0.1,),
        peer=peer,
        table_shape=(480, 16),
        table_classes=(10,),
        fit_shape=(300, 16, 10),
        fit_batch=64,
        fit_epochs=1,
        grid_learning_rates=(0.1,),
        imagenet_shape=(480, 16, 10),
        imagenet_test=100,
        imagenet_max_iter=30,
    )
    results = bench.main(config)
    (row,) = results["probe"]["rows"]
    fits = row["fits"]
    assert list(fits) == [*bench.FITS, *(bench.PEERS if peer else ())]
    for name in bench.FITS:
        assert fits[name]["converged"] and fits[name]["gap"] <= 1e-3
        assert 0 < fits[name]["top1"] <= fits[name]["top5"] <= 1
    # the same problem: solve and the estimator without intercept agree
    ours = fits["solve"]["objective"]
    assert abs(fits["SVMClassifier, no intercept"]["objective"] / ours - 1) < 2e-3
    assert fits["SVMClassifier"]["objective"] <= ours * (1 + 2e-3)  # a free intercept helps
    if peer:  # a certified gap of 1e-3 puts svmjax within 0.1% above the optimum
        assert ours <= fits["LinearSVC"]["objective"] * (1 + 2e-3)
    assert row["intercept_overhead"] > 0
    assert [r["classes"] for r in results["table"]["rows"]] == [10]
    fit = results["fit"]
    assert fit["steps_per_epoch"] == 5 and fit["grid_size"] == 2
    assert all(fit[k]["per_step_ms"] > 0 for k in ("fit", "fit_top5", "fit_grid"))
    imagenet = results["imagenet"]
    assert 1 < imagenet["iterations"] <= 30 and np.isfinite(imagenet["per_iteration_s"])
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("# Many classes") and "## ImageNet-sized linear probe" in text
