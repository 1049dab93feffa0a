"""Griffe extension: document the functions a module builds at import as functions.

``lee_lin_wahba = _members.member("lee_lin_wahba", unified_hinge)`` in
``svmjax/losses.py`` is an assignment to static analysis, but at runtime a function with
its own signature and docstring. Every module attribute whose value is a function that
names that module as its home (``__module__``) and that attribute as its name is replaced
by the function as :func:`griffe.inspect` sees it, so its page shows the signature and the
docstring. Listed before the reST extension, which then rewrites that docstring too.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import griffe


def _built_here(module: str, name: str) -> bool:
    value = getattr(importlib.import_module(module), name, None)
    return inspect.isfunction(value) and (value.__module__, value.__name__) == (module, name)


class BuiltFunctions(griffe.Extension):
    """Replace attributes that are functions built at import by the inspected functions."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        self._visit(pkg)

    def _visit(self, module: griffe.Module) -> None:
        for member in list(module.members.values()):
            if not member.is_alias and member.is_module:
                self._visit(member)  # ty: ignore[invalid-argument-type]
        built = [
            name
            for name, member in module.members.items()
            if not member.is_alias and member.is_attribute and _built_here(module.path, name)
        ]
        if not built:
            return
        docstring = module.docstring
        inspected = griffe.inspect(
            module.name,
            filepath=module.filepath if isinstance(module.filepath, Path) else None,
            parent=module.parent,  # ty: ignore[invalid-argument-type]
            docstring_parser=docstring.parser if docstring else None,
            docstring_options=docstring.parser_options if docstring else None,
        )
        for name in built:
            function = inspected.members[name]
            function.lineno, function.endlineno = module[name].lineno, module[name].endlineno
            module.set_member(name, function)
