"""The documentation site: every tutorial's code runs, and the site builds without a warning.

Tutorial pages are Markdown; each ```` ```python ```` block is executed, in page order, in
one namespace per page, from a temporary working directory (pages write checkpoints). A block
right after an ``<!-- not tested: reason -->`` comment is skipped (e.g. one that needs
several hosts); say why in the comment.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The site's pages, and the README's tour.
PAGES = sorted(p for p in DOCS.rglob("*.md") if "python" in p.read_text()) + [ROOT / "README.md"]
_FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_SKIP = re.compile(r"<!-- not tested: .+ -->\s*$")


def code_blocks(page: Path) -> list[tuple[int, str]]:
    """``(line number, source)`` of each tested ```` ```python ```` block of ``page``."""
    text = page.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        if not _SKIP.search(text[: match.start()].rstrip() + "\n"):
            blocks.append((text.count("\n", 0, match.start()) + 2, match[1]))
    return blocks


def test_pages_have_code():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES if p.is_relative_to(DOCS)}
    assert {"tutorials/gradient.md", "tutorials/training.md"} <= names
    assert all(code_blocks(p) for p in DOCS.glob("tutorials/*.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for line, source in code_blocks(page):
        # Padded so that a traceback names the page and its line numbers.
        exec(compile("\n" * (line - 1) + source, str(page), "exec"), namespace)


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed (the docs extra)"
)
def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: a broken link, reference or docstring fails the build."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for page in ["index.html", "api/losses/index.html", "tutorials/gradient/index.html"]:
        assert (tmp_path / page).is_file(), page
