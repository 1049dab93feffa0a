"""How svmjax's programs compile: an opt-in persistent compilation cache (compile a program
once per machine, not per process), and the compile options of svmjax's own programs.

:func:`enable` keeps compiled programs in a folder (also the command line's ``--cache DIR``
or the ``SVMJAX_CACHE`` environment variable); nothing changes on import. svmjax runs the
programs it loads from there, so the folder must be as trusted as the code: :func:`enable`
refuses one that others can write or replace (see "Files and trust" in the docs).

Example:
  >>> import tempfile, svmjax.cache
  >>> path = svmjax.cache.enable(tempfile.mkdtemp(suffix="-svmjax-cache"))
  >>> path.name.endswith("-svmjax-cache")
  True
  >>> svmjax.cache.disable()

Besides JAX's compiled programs, svmjax's own (:func:`jit` of a function defined in
svmjax) are kept in their lowered form, exported with :mod:`jax.export` into the folder's
``svmjax-exported`` subfolder, so that a later process skips tracing them too (this needs
``flatbuffers``: ``pip install 'svmjax[cache]'``). Every key covers what changes the
program (the code, the JAX and XLA versions, the device, the settings and options, the
argument types), so a stale entry is never used; delete the folder to reclaim space.

:func:`compiler_options` is what svmjax's programs pass to XLA on CPU (the loop emitters,
and :data:`NO_TREE_SUMS`, :data:`DOTS_ONLY` or :data:`XLA_DOTS` for some programs), each
left out where the installed XLA does not know it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from svmjax._checks import is_concrete
from svmjax._files import remove_stale, trusted_folder

__all__ = [
    "enable",
    "disable",
    "default_path",
    "compiler_options",
    "jit",
    "ENV_VAR",
    "SHARED_ENV_VAR",
    "NO_TREE_SUMS",
    "DOTS_ONLY",
    "XLA_DOTS",
    "serializable",
]

ENV_VAR = "SVMJAX_CACHE"
SHARED_ENV_VAR = "SVMJAX_CACHE_SHARED"
_folder: Path | None = None  # the enabled cache folder, where exporting is possible
_mode = 0o700  # of the folders created in it: 0o777 (less the umask) for a shared cache
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


DOTS_ONLY: dict[str, Any] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
}
"""CPU options for a program of many short sums (``fit_grid``'s epoch: per-example sums
over ``C`` classes for ``G·B`` rows): YNNPACK runs the matrix products alone, and XLA's
own loops the sums it would otherwise hand to YNNPACK along with their neighbours
(slower there for rows of ten; an XLA without this option leaves it out)."""


XLA_DOTS: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""CPU options for a program whose matrix products are wide and short (``fit_grid``'s
epoch for a large group on few features: ``[G·C, D] x [D, B]`` with ``G·C`` in the
hundreds and ``D`` below ~128): no YNNPACK at all, XLA's own emitters (Eigen) for the
products too, which run such shapes faster; YNNPACK's are faster on narrower or longer
ones (the rule and its measurements: ``svmjax.grid``, ``docs/performance.md``)."""


def compiler_options(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The compile options of svmjax's programs (:func:`jit`) on the default backend: on
    CPU those of ``_CPU_OPTIONS`` and ``extra`` that this XLA accepts (tried once, all
    together on a one-operation program, and one by one only if that is refused: an XLA
    that does not know an option refuses it), elsewhere ``{}``. Decided at the first
    call, not on import (that would start the backend)."""
    wanted = _wanted(extra)
    if not wanted or _accepts(tuple(sorted(wanted.items()))):
        return wanted
    return {name: value for name, value in wanted.items() if _accepts(((name, value),))}


def _wanted(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options :func:`compiler_options` asks for, before XLA is asked whether it
    knows them: on CPU ``_CPU_OPTIONS`` and ``extra``, elsewhere ``{}``."""
    if jax.default_backend() != "cpu":
        return {}
    return {**_CPU_OPTIONS, **(extra or {})}


@functools.cache
def _accepts(options: tuple[tuple[str, Any], ...]) -> bool:
    """Whether this XLA compiles a one-operation program with ``options``."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(np.float32(0)).compile()
    except Exception:  # an XLA without an option: "No such compile option"
        return False
    return True


class jit:  # noqa: N801 - used like jax.jit
    """``jax.jit(fun, **options)`` compiled with :func:`compiler_options` (and, on CPU,
    ``cpu_options`` on top, e.g. :data:`NO_TREE_SUMS`), built at its first use (the
    options depend on the backend, which must not start on import). While a cache is
    enabled (:func:`enable`), calls of a function of svmjax's own (its code is in the
    key) go through the program's exported form (see the module docstring).

    Called inside another ``jit`` (or ``vmap``, ``grad``), it is a plain nested
    ``jax.jit`` (:attr:`nested`). ``lower`` and every other attribute go to the
    ``jax.jit`` object (:attr:`jitted`)."""

    def __init__(
        self,
        fun: Callable[..., Any],
        *,
        cpu_options: Mapping[str, Any] | None = None,
        export_if: Callable[[dict[str, Any]], bool] | None = None,
        **options: Any,
    ) -> None:
        self.fun, self.cpu_options, self.options = fun, cpu_options, options
        self.export_if = export_if  # static arguments -> whether their code is svmjax's
        self.programs: dict[str, Any] = {}  # compiled exported programs by file (None: jit)
        functools.update_wrapper(self, fun)

    @functools.cached_property
    def jitted(self) -> Any:
        compile_options = compiler_options(self.cpu_options)
        return jax.jit(self.fun, compiler_options=compile_options, **self.options)

    @functools.cached_property
    def nested(self) -> Any:
        """``jax.jit(fun, **options)`` without compile options (JAX takes them only at
        the top level), for calls inside another ``jit`` or transformation."""
        return jax.jit(self.fun, **self.options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not is_concrete(*jax.tree.leaves((args, kwargs))):
            return self.nested(*args, **kwargs)
        if _folder is None:
            return self.jitted(*args, **kwargs)
        static, dynamic = self._split(kwargs)
        program = self._exported(args, static, dynamic)
        if program is None:
            return self.jitted(*args, **kwargs)
        return program(*args, **dynamic)

    def _split(self, kwargs: dict) -> tuple[list, dict]:
        """``kwargs`` as the static ones (sorted ``(name, value)`` pairs) and the rest."""
        names = self.options.get("static_argnames", ())
        static = sorted((k, v) for k, v in kwargs.items() if k in names)
        return static, {k: v for k, v in kwargs.items() if k not in names}

    def _key(self, args: tuple, static: list, dynamic: dict) -> str | None:
        """The exported program's key for these arguments, or None where it is not
        exported: a function not of svmjax's own or with a closure (its code would not
        be in the key), statics passed by position or not plain values or refused by
        ``export_if``, arguments on other devices than the default one, or
        ``jax.disable_jit``."""
        module, name = getattr(self.fun, "__module__", None), getattr(self.fun, "__qualname__", "")
        own = isinstance(module, str) and module.startswith("svmjax.") and "<" not in name
        if not own or getattr(self.fun, "__closure__", None) or "static_argnums" in self.options:
            return None
        if getattr(jax.config, "jax_disable_jit", False):
            return None
        if len(static) != len(self.options.get("static_argnames", ())) or not _plain(static):
            return None  # a static passed by position (or left to its default)
        if self.export_if is not None and not self.export_if(dict(static)):
            return None  # e.g. a loss registered by the user: its code is not in the key
        leaves, tree = jax.tree.flatten((args, dynamic))
        if not all(_local(leaf) for leaf in leaves):
            return None
        types = [str(jax.typeof(leaf)) for leaf in leaves]  # shape, dtype, weak type
        # The options asked for, not probed (the key has the XLA version, which decides
        # which it accepts): a process that loads a program never compiles the probe.
        options = sorted(_wanted(self.cpu_options).items())
        described = repr((module, name, static, str(tree), types, options, _trace_settings()))
        digest = hashlib.sha256((_environment() + described).encode()).hexdigest()[:40]
        return f"{module}.{name}-{digest}"

    def _exported(self, args: tuple, static: list, dynamic: dict) -> Any:
        """The compiled program from the exported form, loaded from the cache folder or
        exported and saved there; None where it is not exported or fails to build (then
        ``jit`` runs the call, as without a cache)."""
        try:
            key = self._key(args, static, dynamic)
        except Exception:  # e.g. an argument JAX cannot type: jit will say why
            return None
        if key is None:
            return None
        assert _folder is not None
        path = _folder / "svmjax-exported" / key
        if str(path) in self.programs:
            return self.programs[str(path)]
        self.programs[str(path)] = None  # until built
        try:
            exported = _load(path)
            if exported is None:  # exporting only lowers: no compile options needed
                exported = jax.export.export(self.nested)(*args, **dict(static), **dynamic)
                _save(path, exported.serialize())
            self.programs[str(path)] = self._compile(exported, args, dynamic)
        except Exception:  # e.g. an output type not registered for serialisation
            return None
        return self.programs[str(path)]

    def _compile(self, exported: Any, args: tuple, dynamic: dict) -> Any:
        """``exported`` compiled with the options asked for, unprobed (the probe is a
        compilation of its own, which a process that loads its programs need not pay);
        where XLA refuses one (it fails before anything runs), with the probed options
        (:func:`compiler_options`)."""
        lowered = jax.jit(exported.call).lower(*args, **dynamic)
        wanted = _wanted(self.cpu_options)
        try:
            return lowered.compile(compiler_options=wanted)
        except Exception:  # "No such compile option": an XLA without one of them
            probed = compiler_options(self.cpu_options)
            if probed == wanted:  # every option is known: another failure, not retried
                raise
            return lowered.compile(compiler_options=probed)

    def __getattr__(self, name: str) -> Any:
        if name in ("fun", "cpu_options", "export_if", "options", "programs", "jitted", "nested"):
            raise AttributeError(name)
        return getattr(self.jitted, name)


def serializable(cls: type) -> type:
    """Register the NamedTuple ``cls`` for :mod:`jax.export` serialisation (by its
    qualified name), so a program returning it can be exported; returns ``cls``."""
    try:
        jax.export.register_namedtuple_serialization(
            cls, serialized_name=f"{cls.__module__}.{cls.__qualname__}"
        )
    except (AttributeError, ValueError):  # an older JAX, or registered already
        pass
    return cls


def _plain(value: Any) -> bool:
    """Whether ``value``'s ``repr`` identifies it across processes."""
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, bool, int, float))


def _local(x: Any) -> bool:
    """Whether ``x`` is a host value or an array on the default device alone (not a
    tracer, not laid out over several devices or on another one): what the exported
    program, compiled for the default device, takes."""
    if not is_concrete(x):
        return False
    sharding = getattr(x, "sharding", None)
    return sharding is None or sharding.device_set == {jax.devices()[0]}


def _trace_settings() -> str:
    """The JAX settings that change what tracing produces (x64, matmul precision, dtype
    promotion, ...), as JAX keys its own in-memory cache of traced programs; object
    addresses stripped. Private API, hence the fallback to the settings named."""
    try:
        from jax._src import config

        return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(config.trace_context()))
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
        names = ("jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_rank_promotion")
        return repr([getattr(jax.config, name, None) for name in names])


def _sources() -> str:
    """A digest of svmjax's source files as imported (read once, at import: a checkout
    edited later must not save old code under the new sources' key)."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()


_SOURCES = _sources()


@functools.cache
def _environment() -> str:
    """What every exported program's key shares: svmjax's sources, the JAX and jaxlib
    versions and the device."""
    import jaxlib

    device = jax.devices()[0]
    versions = (jax.__version__, getattr(jaxlib, "__version__", None))
    return repr((_SOURCES, versions, device.platform, device.device_kind))


def _save(path: Path, data: bytes | bytearray) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees all of it or nothing); in a
    folder that cannot be written, nothing (the program then serves this process only)."""
    try:
        path.parent.mkdir(mode=_mode, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError:
        return
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(partial, path)
    except OSError:
        Path(partial).unlink(missing_ok=True)
        return
    remove_stale(path.parent, r"\..+\.[a-z0-9_]{8}")  # what killed writers left


def _load(path: Path) -> Any:
    """The exported program saved at ``path``, or None (missing, or unreadable: then it
    is exported again and the file replaced)."""
    if not path.is_file():
        return None
    try:
        return jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception:
        return None


def default_path() -> Path:
    """``$SVMJAX_CACHE`` if set, else ``$XDG_CACHE_HOME/svmjax/jax`` (``~/.cache/...``);
    :func:`enable` creates the missing folders with mode 0o700."""
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


def enable(path: str | os.PathLike | None = None, *, shared: bool | None = None) -> Path:
    """Keep compiled programs in ``path`` (default :func:`default_path`) and reuse them in
    later processes. Returns the folder, symlinks resolved.

    svmjax runs what it loads from the folder, so the folder must be as trusted as the
    code: it is refused where someone other than you (or root) could change it, i.e. if
    it, anything in it or a folder above it belongs to another user, or it or anything in
    it can be written by others, or a folder above it can be written by others and lacks
    the sticky bit (as ``/tmp`` has). Missing folders are created with mode 0o700. A
    cache shared by a team on purpose (``shared=True``, or ``SVMJAX_CACHE_SHARED=1``
    where ``shared`` is None) gives a warning instead. Not checked where ``os.geteuid``
    does not exist (Windows).

    Sets ``jax_compilation_cache_dir`` and lowers the thresholds
    ``jax_persistent_cache_min_compile_time_secs`` (to 0) and
    ``jax_persistent_cache_min_entry_size_bytes`` (to -1, no minimum) for this process;
    with ``flatbuffers`` installed, svmjax's programs are also kept exported in
    ``path / "svmjax-exported"`` (see the module docstring).

    Raises:
      PermissionError: the folder is not trusted, e.g. ``cache folder /tmp/c can be
        written by others (mode 0o777), and svmjax runs the programs it loads from there:
        run "chmod go-w /tmp/c" or choose a folder you own (...)``.
    """
    global _folder, _mode
    if shared is None:
        shared = os.environ.get(SHARED_ENV_VAR, "").lower() in ("1", "true", "yes", "on")
    folder = trusted_folder(path if path is not None else default_path(), shared=shared)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    for name, value in _SETTINGS.items():
        jax.config.update(name, value)
    _reset()
    _folder = folder if importlib.util.find_spec("flatbuffers") is not None else None
    _mode = 0o777 if shared else 0o700
    return folder


def disable() -> None:
    """Stop using a persistent cache in this process (what is on disk stays)."""
    global _folder
    jax.config.update("jax_compilation_cache_dir", None)
    _reset()
    _folder = None
