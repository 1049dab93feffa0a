"""Smoke tests: every experiment script runs end to end on a shrunk config."""

import importlib.util
import json
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_bench_train_smoke(tmp_path):
    bench = load("bench_train")
    config = bench.Config(
        out=str(tmp_path), dataset="digits", epochs=1, repeats=1, grid_sizes=(1, 2), grid_epochs=1
    )
    results = bench.main(config)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["per_step_us"].keys() == results["per_step_us"].keys()
    assert "python loop of jitted steps" in saved["per_step_us"]
    assert saved["fit_grid_cost_vs_one_config"]["1"] == 1.0
    assert (tmp_path / "results.md").read_text().startswith("# Training speed on digits")
