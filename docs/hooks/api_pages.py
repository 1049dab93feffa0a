"""MkDocs hook: one API reference page per public module, from one list.

Adding a module to the site is one line in ``API_MODULES``. A module listed here whose file
does not exist (yet) is left out of the site, so the build never breaks on it.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

API_MODULES = [
    "losses",
    "analytic",
    "registry",
    "family",
    "duals",
    "family_duals",
    "topk_duals",
    "metrics",
    "linear",
    "fused",
    "gradcheck",
    "validation",
    "optim",
    "train",
    "batches",
    "grid",
    "checkpoint",
    "model",
    "lbfgs",
    "continuation",
    "dual_coordinate",
    "solve",
    "estimator",
    "conventions",
    "sharding",
    "cache",
    "data",
    "preprocessing",
    "features",
    "formats",
    "plots",
]

API_SECTION = "API reference"
_PACKAGE = Path(__file__).resolve().parents[2] / "svmjax"


def existing_modules() -> list[str]:
    """The modules of ``API_MODULES`` that exist in this checkout, in list order."""
    return [name for name in API_MODULES if (_PACKAGE / f"{name}.py").is_file()]


def _page(name: str) -> str:
    return f"::: svmjax.{name}\n"


def on_config(config):
    pages = [{"svmjax": "api/index.md"}]
    pages += [{f"svmjax.{name}": f"api/{name}.md"} for name in existing_modules()]
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and API_SECTION in entry:
            entry[API_SECTION] = pages
    return config


def on_files(files, config):
    index = "::: svmjax\n    options:\n      members: false\n"
    files.append(File.generated(config, "api/index.md", content=index))
    for name in existing_modules():
        files.append(File.generated(config, f"api/{name}.md", content=_page(name)))
    return files
