"""MkDocs hook: render every formula to MathML when the site is built.

``pymdownx.arithmatex`` (generic mode) leaves each formula as TeX in
``<span class="arithmatex">\\(...\\)</span>`` or ``<div class="arithmatex">\\[...\\]</div>``,
on the written pages and on the API pages (``docs/hooks/griffe_rst.py`` turns the docstrings'
``.. math::`` and ``:math:`` into the same). This hook replaces the TeX inside each wrapper with
MathML from ``latex2mathml``; browsers draw MathML themselves, so the site needs no script and
no network to show its formulas.

A formula the converter cannot handle (an exception, or a TeX command left in its output) is
left as TeX and logged as a warning naming the page and the formula, which fails
``mkdocs build --strict``.
"""

from __future__ import annotations

import html
import logging
import re

from latex2mathml.converter import convert

log = logging.getLogger("mkdocs.hooks.mathml")

_FORMULA = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*'
    r"(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<block>.*?)\\\])"
    r"\s*</(?P=tag)>",
    re.DOTALL,
)
_TAG = re.compile(r"<[^>]*>")

# TeX that latex2mathml does not read, rewritten to TeX it does (same rendering).
_DELIMITERS = {
    r"\lVert": "\u2016",
    r"\rVert": "\u2016",
    r"\Vert": "\u2016",
    r"\|": "\u2016",
    r"\lvert": "|",
    r"\rvert": "|",
    r"\vert": "|",
    r"\langle": "\u27e8",
    r"\rangle": "\u27e9",
}
# A delimiter given as a command after \big, \Big, \bigl, ...: latex2mathml sizes only
# delimiters written as characters.
_SIZED_DELIMITER = re.compile(
    r"(\\[bB]igg?[lrm]?)\s*(" + "|".join(re.escape(d) for d in _DELIMITERS) + r")(?![A-Za-z])"
)
# An escaped character in a \text{...} argument: latex2mathml keeps the backslash.
_TEXT_ARGUMENT = re.compile(r"(\\text(?:tt|rm|bf|it|sf)?\{)([^{}]*)\}")
_TEXT_ESCAPE = re.compile(r"\\([_#%&$])")
_OPERATORS = re.compile(r"\\(arg)(?![A-Za-z])")


def _rewrite(tex: str) -> str:
    tex = _SIZED_DELIMITER.sub(lambda m: m[1] + _DELIMITERS[m[2]], tex)
    tex = _TEXT_ARGUMENT.sub(lambda m: m[1] + _TEXT_ESCAPE.sub(r"\1", m[2]) + "}", tex)
    return _OPERATORS.sub(r"\\operatorname{\1}", tex)


def to_mathml(tex: str, *, display: bool) -> str:
    """The MathML of the TeX formula ``tex`` (a ``ValueError`` if latex2mathml cannot read it)."""
    try:
        mathml = convert(_rewrite(tex.strip()), display="block" if display else "inline")
    except Exception as error:  # latex2mathml raises its own exception types and a few others
        raise ValueError(f"{type(error).__name__}: {error}") from error
    leftover = re.findall(r"\\[A-Za-z]+|\\.", html.unescape(_TAG.sub(" ", mathml)))
    if leftover:
        raise ValueError(f"not converted: {' '.join(dict.fromkeys(leftover))}")
    return mathml


def on_page_content(html_text: str, page, **kwargs) -> str:
    def replace(match: re.Match) -> str:
        display = match["block"] is not None
        tex = html.unescape(match["block"] if display else match["inline"])
        try:
            mathml = to_mathml(tex, display=display)
        except ValueError as error:
            formula = " ".join(tex.split())
            log.warning("%s: cannot render `%s` as MathML (%s)", page.file.src_uri, formula, error)
            return match[0]
        return f'<{match["tag"]} class="arithmatex">{mathml}</{match["tag"]}>'

    return _FORMULA.sub(replace, html_text)
