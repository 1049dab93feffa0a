"""How svmjax's programs compile: an opt-in persistent compilation cache (compile a program
once per machine, not per process), and the compile options of svmjax's own programs.

A fresh Python process pays for XLA compilation again (the exact solver's program takes a
couple of seconds to compile on CPU, more than solving a small problem). JAX can keep
compiled programs on disk; :func:`enable` turns that on for svmjax's programs (and every
other JAX program of the process), with thresholds low enough that small programs are
kept too. Nothing is changed on import: call it yourself, or use the command line's
``--cache DIR`` flag (or the ``SVMJAX_CACHE`` environment variable).

Example:
  >>> import svmjax.cache
  >>> path = svmjax.cache.enable("/tmp/svmjax-cache-doctest")
  >>> path.name
  'svmjax-cache-doctest'
  >>> svmjax.cache.disable()

The cache key covers the program, the JAX and XLA versions, the device and the compile
options, so a stale entry is never used; delete the folder to reclaim space.

:func:`compiler_options` is what svmjax's programs (the exact solver's loop, ``fit``'s and
``fit_grid``'s epochs; :func:`jit`) pass to XLA: on CPU, XLA's older loop emitters instead
of its MLIR fusion emitters, which compile their many small fusions in about two thirds
of the time and run as fast or faster; the solver's loop also without the tree rewrite of
its sums (:data:`NO_TREE_SUMS`). Measured in ``experiments/bench_sklearn.py`` and
``experiments/bench_train.py``. Elsewhere, or where the installed XLA does not know an
option, that option is left out.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = [
    "enable",
    "disable",
    "default_path",
    "compiler_options",
    "jit",
    "ENV_VAR",
    "NO_TREE_SUMS",
]

ENV_VAR = "SVMJAX_CACHE"
_SETTINGS = {  # keep every program, however small or quick to compile
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": -1,
}


# On CPU, every program: XLA's older loop emitters instead of its MLIR fusion emitters.
_CPU_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}

NO_TREE_SUMS: dict[str, Any] = {"xla_disable_hlo_passes": "tree_reduction_rewriter"}
"""CPU options for a loop of many small sums (the exact solver's): no tree rewrite of
reductions. XLA:CPU rewrites each sum of more than 32 elements inside a loop into a
``reduce-window`` and a reduce, the first a kernel of its own; without it such a sum is
one vectorised reduction, as accurate at the sizes measured. Not for every program:
``fit``'s epoch compiles slower without it (one reduction became a large kernel)."""


def compiler_options(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The compile options of svmjax's programs (:func:`jit`) on the default backend: on
    CPU those of ``_CPU_OPTIONS`` and ``extra`` that this XLA accepts (each tried once,
    on a one-operation program; an XLA that does not know one refuses it), elsewhere
    ``{}``. Decided at the first call, not on import (that would start the backend)."""
    if jax.default_backend() != "cpu":
        return {}
    wanted = {**_CPU_OPTIONS, **(extra or {})}
    return {name: value for name, value in wanted.items() if _accepts(name, value)}


@functools.cache
def _accepts(name: str, value: Any) -> bool:
    try:
        jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(np.float32(0)).compile()
    except Exception:  # an XLA without the option: "No such compile option"
        return False
    return True


class jit:  # noqa: N801 - used like jax.jit
    """``jax.jit(fun, **options)`` compiled with :func:`compiler_options` (and, on CPU,
    ``cpu_options`` on top, e.g. :data:`NO_TREE_SUMS`), built at its first use (the
    options depend on the backend, which must not start on import).

    Calls, ``lower`` and every other attribute go to the ``jax.jit`` object
    (:attr:`jitted`)."""

    def __init__(
        self,
        fun: Callable[..., Any],
        *,
        cpu_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self.fun, self.cpu_options, self.options = fun, cpu_options, options
        functools.update_wrapper(self, fun)

    @functools.cached_property
    def jitted(self) -> Any:
        compile_options = compiler_options(self.cpu_options)
        return jax.jit(self.fun, compiler_options=compile_options, **self.options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.jitted(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("fun", "cpu_options", "options", "jitted"):  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.jitted, name)


def default_path() -> Path:
    """``$SVMJAX_CACHE`` if set, else ``$XDG_CACHE_HOME/svmjax/jax`` (``~/.cache/...``)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "svmjax" / "jax"


def _reset() -> None:
    # JAX opens its cache once, at the first compilation; reset it so that a folder set
    # after that is used. Private API, hence the guard.
    try:
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
        pass


def enable(path: str | os.PathLike | None = None) -> Path:
    """Keep compiled programs in ``path`` (created; default :func:`default_path`) and
    reuse them in later processes. Returns the folder.

    Sets ``jax_compilation_cache_dir`` and lowers the thresholds
    ``jax_persistent_cache_min_compile_time_secs`` (to 0) and
    ``jax_persistent_cache_min_entry_size_bytes`` (to -1, no minimum) for this process.
    """
    folder = Path(path).expanduser() if path is not None else default_path()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    for name, value in _SETTINGS.items():
        jax.config.update(name, value)
    _reset()
    return folder


def disable() -> None:
    """Stop using a persistent cache in this process (what is on disk stays)."""
    jax.config.update("jax_compilation_cache_dir", None)
    _reset()
