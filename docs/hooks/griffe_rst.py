"""Griffe extension: render the reST bits of svmjax's Google-style docstrings as Markdown.

The docstrings are Google style (which mkdocstrings parses) with a few reST constructs that
Sphinx would understand and Markdown does not. Before mkdocstrings renders a docstring this
rewrites them:

* ``.. math::`` blocks (indented body, or the formula on the same line) become ``$$ ... $$``
  blocks, and ``:math:`x``` becomes ``\\(x\\)``; ``pymdownx.arithmatex`` marks them and
  ``docs/hooks/mathml.py`` renders them as MathML;
* ``:mod:``, ``:func:``, ``:class:``, ``:data:`` ... roles become optional cross-references:
  a link when the target has an API page, plain code otherwise (a private helper, a name
  outside svmjax), so a reference never breaks the strict build;
* an argument group wrapped before its colon (``a, b,`` then ``c: text`` on the next line)
  is joined into one line, which the Google parser reads as one entry named ``a, b, c``;
* a paragraph ending in ``::`` (a reST literal block) ends in ``:``; the indented block
  after it is a Markdown code block already.

Double backticks need nothing: ````x```` is a code span in Markdown too.
"""

from __future__ import annotations

import html
import re

import griffe

_ROLE = re.compile(r":(mod|func|class|data|attr|meth|exc|obj):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_LITERAL = re.compile(r"^(\s*)(?!\.\. )(.*\S)\s*::$")
_WRAPPED_NAMES = re.compile(r"^\s+\w+(, \w+)*,$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _math_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_DIRECTIVE.match(lines[i])
        if not match:
            literal = _LITERAL.match(lines[i])
            if _WRAPPED_NAMES.match(lines[i]) and i + 1 < len(lines):
                # "a, b,\n    c: text" (an argument list wrapped before its colon): one line.
                out.append(f"{lines[i]} {lines[i + 1].strip()}")
                i += 2
                continue
            out.append(f"{literal[1]}{literal[2]}:" if literal else lines[i])
            i += 1
            continue
        pad, inline = match[1], match[2].strip()
        body = [inline] if inline else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(pad)):
            body.append(lines[i])
            i += 1
        body = [line for line in body if line.strip()]
        cut = min((_indent(line) for line in body if line != inline), default=0)
        body = [line if line == inline else line[cut:] for line in body]
        out += ["", f"{pad}$$", *(f"{pad}{line}" for line in body), f"{pad}$$", ""]
    return out


class ReSTToMarkdown(griffe.Extension):
    """Rewrite every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        self._pkg = pkg
        self._visit(pkg)

    def _visit(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = self._convert(obj.docstring.value, obj)
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member)

    def _convert(self, text: str, obj: griffe.Object) -> str:
        text = "\n".join(_math_blocks(text.splitlines()))
        text = _MATH_ROLE.sub(lambda m: f"\\({m[1]}\\)", text)
        return _ROLE.sub(lambda m: self._reference(m, obj), text)

    def _reference(self, match: re.Match, obj: griffe.Object) -> str:
        short, target = match[2] == "~", match[3].strip().removesuffix("()")
        candidates = []
        scope = obj if obj.is_module or obj.is_class else obj.parent
        while scope is not None:  # innermost scope first, as Sphinx resolves
            candidates.append(f"{scope.path}.{target}")
            scope = scope.parent
        candidates.append(target)
        identifier = next((path for path in map(self._resolve, candidates) if path), target)
        title = target.rsplit(".", 1)[-1] if short else target
        return (
            f'<autoref identifier="{html.escape(identifier)}" optional>'
            f"<code>{html.escape(title)}</code></autoref>"
        )

    def _resolve(self, path: str) -> str | None:
        """The canonical path of ``path`` in the loaded package, or None if it is not there."""
        head, *parts = path.split(".")
        if head != self._pkg.name:
            return None
        obj = self._pkg
        try:
            for part in parts:
                obj = obj.members[part]
            return obj.final_target.path if obj.is_alias else obj.path
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
