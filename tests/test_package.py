"""The package stands on its own: the wheel installs into a fresh venv and works there.

Installing jax and friends from scratch would need the network, so the fresh venv borrows
the *installed* dependencies: a ``.pth`` file adds the current environment's site-packages
directory to its path. A path in a ``.pth`` file is not itself scanned for ``.pth`` files,
so an editable install of svmjax there (a checkout on the path) stays out; the test checks
that ``svmjax`` is imported from the wheel in the new venv and that no other copy is
reachable. Everything runs from a temporary directory outside the checkout (about 30 s,
most of it ``svmjax gradcheck``).
"""

import importlib.util
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import svmjax

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("hatchling") is None,
    reason="hatchling not installed (the dev extra); the wheel is built offline with it",
)

_CHECK_IMPORTS = """
import importlib, importlib.metadata, pkgutil, sys
from pathlib import Path
import svmjax
site = Path(sys.argv[1]).resolve()
assert Path(svmjax.__file__).resolve().is_relative_to(site), svmjax.__file__
others = [p for p in sys.path if p and (Path(p) / "svmjax" / "__init__.py").exists()]
assert [Path(p).resolve() for p in others] == [site], others
assert importlib.metadata.version("svmjax") == svmjax.__version__
for name in svmjax.__all__:
    getattr(svmjax, name)
for module in pkgutil.iter_modules(svmjax.__path__):
    importlib.import_module(f"svmjax.{module.name}")
print("imported", len(svmjax.__all__), "public names")
"""


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run([*cmd, "--quiet", "--wheel-dir", str(out), str(ROOT)], cwd=out, env=dict(os.environ))
    (path,) = out.glob("svmjax-*.whl")
    return path


def test_wheel_contents(wheel):
    assert wheel.name.startswith(f"svmjax-{svmjax.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "svmjax/py.typed" in names  # PEP 561: type checkers read the package's hints
    sources = {f"svmjax/{p.name}" for p in (ROOT / "svmjax").glob("*.py")}
    assert sources <= names
    assert not any(n.startswith(("tests/", "docs/", "experiments/")) for n in names)


def test_wheel_works_in_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=None)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
            env=None,
        ).strip()
    )
    # The dependencies (jax, optax, ...) from this environment; not the checkout.
    (site / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    _run([*pip, "--no-deps", "--no-index", str(wheel)], cwd=tmp_path, env=dict(os.environ))

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert "imported" in _run([str(python), "-c", _CHECK_IMPORTS, str(site)], cwd=work, env=env)
    assert "usage" in _run([str(venv / "bin" / "svmjax"), "demo", "--help"], cwd=work, env=env)
    table = _run(
        [str(venv / "bin" / "svmjax"), "gradcheck", "--loss", "weston_watkins"], cwd=work, env=env
    )
    assert "weston_watkins" in table and "float64" in table
