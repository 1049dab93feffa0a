"""The documentation site: every tutorial's code runs, and the site builds without a warning.

Tutorial pages are Markdown; each ```` ```python ```` block is executed, in page order, in
one namespace per page, from a temporary working directory (pages write checkpoints). A block
right after an ``<!-- not tested: reason -->`` comment is skipped (e.g. one that needs
several hosts); say why in the comment.
"""

import html
import html.parser
import importlib.util
import logging
import os
import re
import subprocess
import sys
import types
import urllib.parse
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


@pytest.fixture
def registry_restored():
    """The loss registry as it was, after a page that registers its own losses."""
    from svmjax import registry

    before = {name: registry.get(name) for name in registry.names()}
    yield
    for name in registry.names():
        if name not in before:
            registry.unregister(name)
    for entry in before.values():
        registry.register(entry, replace=True)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_code_runs(page, tmp_path, monkeypatch, registry_restored):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for line, source in code_blocks(page):
        # Padded so that a traceback names the page and its line numbers.
        exec(compile("\n" * (line - 1) + source, str(page), "exec"), namespace)


_NEEDS_MKDOCS = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed (the docs extra)"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once by ``mkdocs build --strict`` for the tests below."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return site_dir


@_NEEDS_MKDOCS
def test_site_builds_strict(site):
    """``mkdocs build --strict``: a broken link, reference, docstring or formula fails the build."""
    for page in ["index.html", "api/losses/index.html", "tutorials/gradient/index.html"]:
        assert (site / page).is_file(), page


def test_pages_with_code_include_extending():
    assert DOCS / "extending.md" in PAGES and code_blocks(DOCS / "extending.md")


# ---------------------------------------------------------------- the site works offline

# What a page LOADS (as opposed to links the reader follows, ``<a href>``), by tag: the
# attributes holding a URL the browser fetches by itself.
_LOADING_ATTRIBUTES = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "frame": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "source": ("src", "srcset"),
    "track": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "input": ("src",),
    "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"),
}
# ``<link rel=...>`` kinds that only name a page; every other ``<link>`` (stylesheet, icon,
# preload, modulepreload, preconnect, dns-prefetch, manifest, ...) makes the browser connect.
_LINK_RELS_NOT_LOADED = {"canonical", "alternate", "prev", "next", "author", "license", "help"}
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)|@import\s+(['"])(.*?)\3""", re.IGNORECASE)
# In scripts: a string literal that starts with an absolute URL (what ``import()``,
# ``importScripts``, ``fetch``, ``el.src = ...`` and script loaders are given).
_JS_URL = re.compile(r"""(['"`])((?:https?:)?//[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+[^'"`\s]*)""")
# The theme's bundle holds a few such URLs that it fetches only when a condition holds that
# this site does not meet; each is listed with the condition the test checks.
_THEME_CONDITIONAL_URLS = {
    # loaded only by a browser without ResizeObserver (none since 2020)
    "https://unpkg.com/resize-observer-polyfill": None,
    # loaded only on a page with a Mermaid diagram
    "https://unpkg.com/mermaid@": lambda site, config: (
        not any('class="mermaid"' in page.read_text() for page in site.rglob("*.html"))
    ),
    # loaded only when mkdocs.yml sets repo_url (the repository's stars and forks)
    "https://api.github.com/": lambda site, config: "repo_url:" not in config,
}


def _is_remote(url: str) -> bool:
    """Whether fetching ``url`` from a page of the site goes to another host."""
    url = html.unescape(url.strip())
    return url.startswith("//") or urllib.parse.urlsplit(url).netloc != ""


class _LoadedURLs(html.parser.HTMLParser):
    """Collect ``(where, url)`` for every URL an HTML page makes the browser fetch."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        names = _LOADING_ATTRIBUTES.get(tag, ())
        rel = set((attributes.get("rel") or "").lower().split())
        if tag == "link" and not rel <= _LINK_RELS_NOT_LOADED:
            names = ("href", "imagesrcset")
        for name in names:
            value = attributes.get(name) or ""
            # a srcset is "url width, url width"
            urls = value.split(",") if name.endswith("srcset") else [value]
            self.found += [(f"<{tag} {name}>", url.split()[0]) for url in urls if url.strip()]
        if "style" in attributes:
            self.found += [("style attribute", url) for url in _css_urls(attributes["style"])]
        self._in = tag if tag in ("style", "script") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self.found += [("<style>", url) for url in _css_urls(data)]
        elif self._in == "script":
            self.found += [("<script>", url) for url in _js_urls(data)]


def _css_urls(text: str) -> list[str]:
    return [m[2] if m[2] is not None and m[3] is None else m[4] for m in _CSS_URL.finditer(text)]


def _js_urls(text: str) -> list[str]:
    return [m[2] for m in _JS_URL.finditer(text)]


def remote_loads(site: Path, config: str) -> list[str]:
    """``"file: where: url"`` for everything the built ``site`` loads from another host."""
    conditional = {
        prefix: condition
        for prefix, condition in _THEME_CONDITIONAL_URLS.items()
        if condition is None or condition(site, config)
    }
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix == ".html":
            parser = _LoadedURLs()
            parser.feed(path.read_text(encoding="utf-8"))
            urls = parser.found
        elif path.suffix == ".css":
            urls = [("url()", url) for url in _css_urls(path.read_text(encoding="utf-8"))]
        elif path.suffix in (".js", ".mjs"):
            urls = [("string", url) for url in _js_urls(path.read_text(encoding="utf-8"))]
        else:
            continue
        for where, url in urls:
            if _is_remote(url) and not any(url.startswith(p) for p in conditional):
                found.append(f"{path.relative_to(site)}: {where}: {url}")
    return found


@_NEEDS_MKDOCS
def test_site_loads_nothing_from_another_host(site):
    """Offline (a cluster node, a train), every page works: no script, stylesheet, font or
    image comes from another host. Links the reader clicks may go anywhere."""
    loads = remote_loads(site, (ROOT / "mkdocs.yml").read_text())
    assert not loads, "\n".join(loads[:40])


def test_remote_loads_are_found(tmp_path):
    """The scan itself: each kind of remote load is reported, links and local files are not."""
    (tmp_path / "index.html").write_text(
        '<html><head><link rel="stylesheet" href="https://cdn.example.org/a.css">'
        '<link rel="preconnect" href="https://fonts.example.org">'
        '<link rel="canonical" href="https://example.org/">'
        '<script src="//cdn.example.org/m.js"></script><script src="assets/local.js"></script>'
        "<style>@import 'https://example.org/b.css';</style></head><body>"
        '<a href="https://example.org/page">a link</a><img src="kinks.png">'
        '<img srcset="x.png 1x, https://example.org/y.png 2x">'
        '<div style="background: url(https://example.org/bg.png)"></div>'
        "<script>var s = document.createElement('script'); s.src = 'https://e.org/x.js';</script>"
        "</body></html>"
    )
    (tmp_path / "a.css").write_text(
        "@font-face{src:url(https://fonts.example.org/f.woff2)}"
        ".x{background:url(\"data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg'/>\")}"
        ".y{background:url(../img/local.png)}"
    )
    (tmp_path / "b.js").write_text(
        'importScripts("https://example.org/w.js"); import(`https://example.org/m.mjs`);'
        'console.warn("see https://example.org/help");'
    )
    found = remote_loads(tmp_path, "")
    assert found == [
        "a.css: url(): https://fonts.example.org/f.woff2",
        "b.js: string: https://example.org/w.js",
        "b.js: string: https://example.org/m.mjs",
        "index.html: <link href>: https://cdn.example.org/a.css",
        "index.html: <link href>: https://fonts.example.org",
        "index.html: <script src>: //cdn.example.org/m.js",
        "index.html: <style>: https://example.org/b.css",
        "index.html: <img srcset>: https://example.org/y.png",
        "index.html: style attribute: https://example.org/bg.png",
        "index.html: <script>: https://e.org/x.js",
    ]


@_NEEDS_MKDOCS
def test_site_formulas_are_mathml(site):
    """Every formula is MathML in the built pages (no TeX left for a script to typeset)."""
    for page in ["index.html", "api/losses/index.html"]:
        assert "<math" in (site / page).read_text(), page
    raw = re.compile(r'class="arithmatex">\s*\\[(\[]')
    left = [
        p.relative_to(site).as_posix() for p in site.rglob("*.html") if raw.search(p.read_text())
    ]
    assert not left, left


@pytest.mark.skipif(
    importlib.util.find_spec("latex2mathml") is None, reason="latex2mathml not installed (docs)"
)
def test_a_formula_that_cannot_be_rendered_is_a_warning_naming_it(caplog):
    """``mkdocs build --strict`` fails on the warning; the formula stays TeX."""
    spec = importlib.util.spec_from_file_location("mathml_hook", DOCS / "hooks" / "mathml.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = types.SimpleNamespace(file=types.SimpleNamespace(src_uri="page.md"))
    content = (
        '<p><span class="arithmatex">\\(s_j &lt; s_y\\)</span></p>'
        '<div class="arithmatex">\\[\\nosuchmacro{x}\\]</div>'
    )
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.mathml"):
        out = hook.on_page_content(content, page=page)
    assert '<span class="arithmatex"><math' in out and "<mo>&#x0003C;</mo>" in out
    assert '<div class="arithmatex">\\[\\nosuchmacro{x}\\]</div>' in out
    assert [r.getMessage() for r in caplog.records] == [
        "page.md: cannot render `\\nosuchmacro{x}` as MathML (not converted: \\nosuchmacro)"
    ]
