"""Shared output helpers for the experiment scripts (results/<name>/: JSON, markdown, PNG)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import jax

import svmjax


def environment() -> dict[str, str]:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "svmjax": svmjax.__version__,
    }


def write(out: str | Path, results: dict, markdown: str) -> Path:
    """Write ``results.json`` and ``results.md`` into ``out`` (created); print the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "environment": environment()}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / "results.md").write_text(markdown.rstrip() + "\n")
    print(markdown)
    return out


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
