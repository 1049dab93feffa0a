"""Shared output helpers for the experiment scripts (results/<name>/: JSON, markdown, PNG)."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import threading
from pathlib import Path

import jax
import jaxlib
import numpy as np

import svmjax

# The instruction-set extensions that change XLA:CPU's generated code (and so its rounding).
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve")


def machine() -> dict:
    """Where a benchmark ran: the CPU (model, cores, ISA flags from ``/proc/cpuinfo``), the
    ``XLA_FLAGS`` in force (``--xla_cpu_max_isa=AVX2`` caps the generated code), versions,
    and JAX's backend and devices."""
    model, flags = None, None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key in ("model name", "Model") and model is None:
                model = value
            elif key in ("flags", "Features") and flags is None:
                flags = set(value.split())
    except OSError:  # not Linux: no ISA flags
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    devices = jax.devices()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cores": cores,
        "avx2": None if flags is None else "avx2" in flags,
        "avx512f": None if flags is None else "avx512f" in flags,
        "isa": None if flags is None else [f for f in ISA_FLAGS if f in flags],
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "backend": jax.default_backend(),
        "devices": f"{len(devices)} x {devices[0].device_kind}",
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "svmjax": svmjax.__version__,
    }


def header(info: dict | None = None) -> str:
    """:func:`machine` (or ``info``, a dict it returned) in one line, for the top of a
    benchmark's output."""
    m = machine() if info is None else info
    isa = "unknown" if m["isa"] is None else " ".join(m["isa"]) or "none listed"
    return (
        f"# {m['cpu']} ({m['arch']}, {m['cores']} cores; ISA: {isa}); "
        f"XLA_FLAGS={m['XLA_FLAGS'] or '(none)'}; {m['backend']}: {m['devices']}; "
        f"jax {m['jax']}, jaxlib {m['jaxlib']}, numpy {m['numpy']}, python {m['python']}"
    )


def environment() -> dict:
    """What the numbers were measured on (:func:`machine`, plus the platform string)."""
    return {"platform": platform.platform(), "device": jax.devices()[0].device_kind} | machine()


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


def numpy_svm(W: np.ndarray, X: np.ndarray, y: np.ndarray, reg: float):
    """cs231n's ``svm_loss_vectorized``: the Weston–Watkins loss (margin 1, no bias) plus
    ``reg * ||W||^2`` and its ``dW``, in NumPy, in the inputs' dtype."""
    n = X.shape[0]
    scores = X @ W
    correct = scores[np.arange(n), y][:, None]
    margins = np.maximum(0, scores - correct + 1)
    margins[np.arange(n), y] = 0
    loss = margins.sum() / n + reg * np.sum(W * W)
    M = (margins > 0).astype(X.dtype)
    M[np.arange(n), y] = -M.sum(axis=1)
    return loss, X.T @ M / n + 2 * reg * W


# JAX's monitoring events for the three stages of building a program (jax >= 0.4.3x).
_COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}
_compile_totals: dict[str, float] = {}


def compile_seconds() -> dict[str, float]:
    """Seconds JAX has spent tracing, lowering and compiling (XLA, or loading from the
    persistent cache) since the first call, which starts listening; take differences
    around a task to split its time into building programs and running them."""
    if not _compile_totals:
        _compile_totals.update(dict.fromkeys(_COMPILE_EVENTS.values(), 0.0))

        def listen(event: str, duration: float, **_) -> None:
            if event in _COMPILE_EVENTS:
                _compile_totals[_COMPILE_EVENTS[event]] += duration

        jax.monitoring.register_event_duration_secs_listener(listen)
    return dict(_compile_totals)


def compile_since(before: dict[str, float]) -> float:
    """Trace + lower + compile seconds since ``before`` (a :func:`compile_seconds`)."""
    now = compile_seconds()
    return sum(now[k] - before[k] for k in now)


class PeakRSS:
    """The growth of the resident set while the block runs, in MiB (``.mib``): a thread
    samples ``/proc/self/statm`` every 5 ms, after ``malloc_trim`` has returned freed
    memory to the system."""

    def __enter__(self):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * self._page

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.mib = (self.peak - self.start) / 2**20
