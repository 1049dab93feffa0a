"""The tests whose meaning changes on an accelerator, as one command that fits a few minutes
of device time and names every failure.

    make test-accelerator                       # OUT=results/accelerator
    PYTHONPATH=$PWD python3 tests/run_accelerator.py --out DIR [--deadline 300] [--timeout 90]

It runs the selection :data:`AREAS` (the losses, the fused path, linear, train, grid, solve,
the estimator, sharding on a mesh of one device, the precision checks) on the device JAX
picks: a GPU when JAX's CUDA plugin sees one, else the CPU (``JAX_PLATFORMS=cpu`` forces
it). pytest runs in a child process that reports each test as it ends; this process rewrites
``DIR/summary.txt`` (backend, device kind, versions, counts, one line per failure, skip and
test not run) and ``DIR/junit.xml`` after every test, so a run that is killed still leaves
both. The areas take turns, so a run cut short has sampled each of them.

Limits: a test that runs past ``--timeout`` seconds fails (an alarm raised in its Python
code); one that does not return within ``--grace`` more seconds (stuck in native code) has
its process killed, counts as a timeout, and the rest run in a new process; no test starts
after ``--deadline`` seconds from the start, and one running then is stopped: those are
listed as not run. Tests marked ``cpu_only`` skip on other backends, with their reason in
the summary (``tests/conftest.py``).

Exit status: 0 when every selected test passed or skipped; 1 when one failed, timed out,
crashed its process or its file did not import; 2 when none did but the deadline left tests
not run. ``--list`` prints the selection without running it, ``--areas`` keeps some of its
areas, ``--paths`` runs the given test files instead; arguments after ``--`` go to pytest.
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Area:
    """Tests of one test file in one area: those whose name contains one of ``keep`` (all
    when empty) and none of ``drop``."""

    name: str
    path: str  # relative to the repository root
    keep: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()


# The selection. Left out: the 8-device and 2-process checks (child processes on the host's
# CPU), experiments' smoke tests (timings and plots, not numerics), the peers (torch is pinned
# to a version the device image lacks) and the rest of the suite, which runs on CPU.
AREAS = (
    Area("losses", "tests/test_losses.py"),
    Area("losses", "tests/test_family.py"),
    Area("analytic", "tests/test_analytic.py"),
    Area("analytic", "tests/test_gradcheck.py"),
    Area("fused", "tests/test_fused.py", drop=("test_bench_script_smoke",)),
    Area("linear", "tests/test_linear.py"),
    Area("train", "tests/test_train.py", drop=("fit_grid",)),
    Area("grid", "tests/test_train.py", keep=("fit_grid",)),
    Area("grid", "tests/test_keys.py", keep=("test_fit_and_fit_grid",)),
    Area("solve", "tests/test_solve.py", drop=("liblinear_smoke",)),
    Area("solve", "tests/test_lbfgs.py"),
    Area("estimator", "tests/test_estimator.py"),
    Area("sharding", "tests/test_sharding.py", drop=("test_eight_devices", "test_two_processes")),
    Area("precision", "tests/test_accelerator_command.py", keep=("precision",)),
)
GIVEN = "given"  # the area of every test of --paths
STACKS = "stuck-test-stacks.txt"  # the Python stacks of a test stuck past its timeout


def area_of(nodeid: str, areas=AREAS) -> str | None:
    """The area of a pytest node id (``tests/test_x.py::test_y[z]``), or None when the
    selection leaves it out."""
    path, _, name = nodeid.partition("::")
    for area in areas:
        if path != area.path:
            continue
        if (not area.keep or any(k in name for k in area.keep)) and not any(
            d in name for d in area.drop
        ):
            return area.name
    return None


def interleave(tests: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(nodeid, area)`` pairs reordered so the areas take turns, each in its own order."""
    by_area: dict[str, list[tuple[str, str]]] = {}
    for test in tests:
        by_area.setdefault(test[1], []).append(test)
    turns = itertools.zip_longest(*by_area.values())
    return [test for turn in turns for test in turn if test is not None]


# --- the child: pytest with a plugin that reports each test -------------------------------


def _first_line(text: str, limit: int = 300) -> str:
    """The first line of ``text`` (and the second where the first only names the error)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines[0] = f"{lines[0]} {lines[1]}"
    return (lines[0] if lines else "(no message)")[:limit]


def _message(report) -> str:
    """One line: the exception's type and message (pytest's crash line), or a skip reason."""
    if hasattr(report, "wasxfail"):
        return _first_line(f"xfail: {report.wasxfail}")
    if report.skipped and isinstance(report.longrepr, tuple):
        return _first_line(report.longrepr[2].removeprefix("Skipped: "))
    crash = getattr(report.longrepr, "reprcrash", None)
    return _first_line(crash.message if crash is not None else report.longrepr)


class _Reporter:
    """pytest plugin of the child: selects, orders, times and reports the tests."""

    def __init__(self, args):
        self.events = open(args.out / "events.jsonl", "a")
        self.stacks = open(args.out / STACKS, "w")
        self.deadline_at = args.deadline_at
        self.timeout, self.grace = args.timeout, args.grace
        self.given = args.paths is not None
        self.areas = set(args.areas or {a.name for a in AREAS} | {GIVEN})
        done = args.out / "done.txt"
        self.done = set(done.read_text().splitlines()) if done.exists() else set()
        self.cut: str | None = None  # what the armed alarm means: "timeout" or "deadline"
        self.phases: list = []

    def emit(self, **event) -> None:
        self.events.write(json.dumps(event) + "\n")
        self.events.flush()
        os.fsync(self.events.fileno())

    def pytest_sessionstart(self, session):
        import jax
        import jaxlib

        device = jax.devices()[0]
        self.emit(
            event="session",
            backend=jax.default_backend(),
            devices=jax.device_count(),
            device_kind=device.device_kind,
            jax=jax.__version__,
            jaxlib=getattr(jaxlib, "__version__", "?"),
            python=platform.python_version(),
            machine=f"{platform.system()} {platform.machine()}",
        )

    def pytest_collectreport(self, report):
        if report.failed:  # a file that does not import: its tests cannot run
            self.emit(
                event="result",
                id=report.nodeid,
                area=None,
                outcome="failed",
                message="collection: " + _message(report),
                text=report.longreprtext[-4000:],
                duration=0.0,
            )

    def pytest_collection_modifyitems(self, session, config, items):
        keep, drop = [], []
        for item in items:
            area = GIVEN if self.given else area_of(item.nodeid)
            if area not in self.areas or item.nodeid in self.done:
                drop.append(item)
            else:
                keep.append((item.nodeid, area))
        order = interleave(keep) if not self.given else keep
        by_id = {item.nodeid: item for item in items}
        items[:] = [by_id[nodeid] for nodeid, _ in order]
        if drop:
            config.hook.pytest_deselected(items=drop)
        self.emit(event="selected", tests=order)

    @property
    def _left(self) -> float:
        return self.deadline_at - time.time()

    def _alarm(self, signum, frame):
        if self.cut == "deadline":
            pytest.fail("stopped at the deadline")
        pytest.fail(f"timeout: no result after {self.timeout:g} s")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        if self._left <= 0:
            item.session.shouldstop = "the deadline"
            self.emit(event="deadline")
            return True  # not run; pytest stops before the next
        self.phases = []
        self.emit(event="start", id=item.nodeid, t=time.time())
        self.cut = "timeout" if self.timeout <= self._left else "deadline"
        signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, max(min(self.timeout, self._left), 1e-3))
        # A test stuck in native code never sees the alarm: its stacks, before the kill.
        self.stacks.seek(0)
        self.stacks.truncate()
        self.stacks.write(f"{item.nodeid}: no result after {self.timeout + self.grace / 2:g} s\n")
        self.stacks.flush()
        faulthandler.dump_traceback_later(self.timeout + self.grace / 2, file=self.stacks)
        return None

    def pytest_runtest_logreport(self, report):
        self.phases.append(report)

    def pytest_runtest_logfinish(self, nodeid, location):
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        duration = sum(r.duration for r in self.phases)
        failed = [r for r in self.phases if r.failed]
        skipped = [r for r in self.phases if r.skipped]
        if failed:
            outcome, report = "failed", failed[0]
            if report.when != "call":
                outcome = "error"
            message = _message(report)
            if message.endswith("stopped at the deadline"):
                outcome, message = "not run", "stopped at the deadline"
        elif skipped:
            outcome, report, message = "skipped", skipped[0], _message(skipped[0])
        else:
            outcome, report, message = "passed", None, ""
        text = report.longreprtext[-4000:] if report is not None and failed else ""
        self.emit(
            event="result",
            id=nodeid,
            outcome=outcome,
            message=message,
            text=text,
            duration=duration,
        )

    def pytest_sessionfinish(self, session, exitstatus):
        self.emit(event="finished", exitstatus=int(exitstatus))


def _child(args) -> int:
    areas = [a for a in AREAS if args.areas is None or a.name in args.areas]
    files = args.paths if args.paths is not None else list(dict.fromkeys(a.path for a in areas))
    missing = [f for f in files if not (ROOT / f).exists()]
    if missing:  # a renamed test file: said, and the others run
        with open(args.out / "events.jsonl", "a") as events:
            for path in missing:
                events.write(
                    json.dumps(
                        {
                            "event": "result",
                            "id": path,
                            "outcome": "error",
                            "message": "the selection names a missing file",
                            "duration": 0.0,
                        }
                    )
                    + "\n"
                )
        files = [f for f in files if f not in missing]
    options = ["-p", "no:cacheprovider", "-p", "no:benchmark", "--continue-on-collection-errors"]
    if args.paths is not None:  # node ids relative to the given files' folder, wherever run from
        folders = [str(Path(f).parent if Path(f).is_file() else Path(f)) for f in files]
        options += ["--rootdir", os.path.commonpath(folders)] if folders else []
    if args.list:
        options += ["--collect-only", "-q"]  # with pyproject's -q: a count per file
    return int(pytest.main([*files, *options, *args.pytest_args], plugins=[_Reporter(args)]))


# --- the parent: supervises the child and writes the summary -----------------------------


@dataclasses.dataclass
class _State:
    """Everything the events file says so far."""

    session: dict = dataclasses.field(default_factory=dict)
    tests: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> area, in order
    results: dict[str, dict] = dataclasses.field(default_factory=dict)
    running: tuple[str, float] | None = None
    finished: bool = False
    deadline: bool = False
    lines_read: int = 0

    def read(self, path: Path) -> bool:
        text = path.read_text() if path.exists() else ""
        lines = text[: text.rfind("\n") + 1].splitlines()  # complete lines only
        new = lines[self.lines_read :]
        for line in new:
            self.apply(json.loads(line))
        self.lines_read = len(lines)
        return bool(new)

    def apply(self, event: dict) -> None:
        kind = event["event"]
        if kind == "session" and not self.session:
            self.session = event
        elif kind == "selected":
            for nodeid, area in event["tests"]:
                self.tests.setdefault(nodeid, area)
        elif kind == "start":
            self.running = (event["id"], event["t"])
        elif kind == "result":
            self.results[event["id"]] = event
            self.running = None
        elif kind == "deadline":
            self.deadline = True
        elif kind == "finished":
            self.finished = True

    def left(self) -> list[str]:
        return [t for t in self.tests if t not in self.results]


def _append(path: Path, event: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


FAILED = ("failed", "error", "timeout", "crashed")


def _summary(state: _State, status: str, elapsed: float, command: str) -> str:
    s, results = state.session, state.results
    failures = [r for r in results.values() if r["outcome"] in FAILED]
    skips = [r for r in results.values() if r["outcome"] == "skipped"]
    running = state.running[0] if state.running is not None else None
    not_run = [
        t
        for t in state.tests
        if t != running and results.get(t, {"outcome": "not run"})["outcome"] == "not run"
    ]
    passed = sum(r["outcome"] == "passed" for r in results.values())
    head = f"svmjax tests on an accelerator: {status}"
    counts = (
        f"selected {len(state.tests)}: passed {passed}, failed {len(failures)}, "
        f"skipped {len(skips)}, not run {len(not_run)}"
    )
    lines = [
        head,
        f"backend: {s.get('backend', '?')}, {s.get('devices', '?')} device(s), "
        f"device kind: {s.get('device_kind', '?')}",
        f"jax {s.get('jax', '?')}, jaxlib {s.get('jaxlib', '?')}, Python "
        f"{s.get('python', '?')}, {s.get('machine', '?')}",
        f"command: {command}",
        f"elapsed: {elapsed:.1f} s",
        counts,
    ]
    areas: dict[str, list[int]] = {}
    for nodeid, area in state.tests.items():
        ran = results.get(nodeid, {"outcome": "not run"})["outcome"] != "not run"
        area_counts = areas.setdefault(area, [0, 0])
        area_counts[0], area_counts[1] = area_counts[0] + ran, area_counts[1] + 1
    lines.append("run/selected: " + ", ".join(f"{a} {r}/{t}" for a, (r, t) in areas.items()))
    # The long lists first, the failures last: the end of a log shows them.
    for nodeid in not_run:
        reason = results[nodeid]["message"] if nodeid in results else ""
        lines.append(f"NOT RUN {nodeid}" + (f" - {reason}" if reason else ""))
    lines += [f"SKIPPED {r['id']} - {r['message']}" for r in skips]
    slow = sorted(results.values(), key=lambda r: -r.get("duration", 0.0))[:5]
    lines += [f"slowest: {r['duration']:.1f} s {r['id']}" for r in slow if r["duration"] >= 0.1]
    labels = {"failed": "FAILED", "error": "ERROR", "timeout": "TIMEOUT", "crashed": "CRASHED"}
    lines += [f"{labels[r['outcome']]} {r['id']} - {r['message']}" for r in failures]
    if state.running is not None:
        lines.append(f"RUNNING {running} (for {time.time() - state.running[1]:.0f} s)")
    lines.append(f"{head}; {counts}")
    return "\n".join(lines) + "\n"


def _xml_text(text: str) -> str:
    """``text`` without the control characters XML 1.0 forbids (terminal colour codes)."""
    return "".join(c for c in text if c >= " " or c in "\t\n\r")


def _junit(state: _State, elapsed: float) -> ET.ElementTree:
    suite = ET.Element("testsuite", name="svmjax-accelerator", time=f"{elapsed:.3f}")
    properties = ET.SubElement(suite, "properties")
    for key in ("backend", "devices", "device_kind", "jax", "jaxlib", "python", "machine"):
        ET.SubElement(properties, "property", name=key, value=str(state.session.get(key, "?")))
    counts = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    extra = [t for t in state.results if t not in state.tests]  # files that did not import
    for nodeid in [*state.tests, *extra]:
        path, _, name = nodeid.partition("::")
        classname = path.removesuffix(".py").replace("/", ".")
        result = state.results.get(nodeid, {"outcome": "not run", "message": "the deadline"})
        case = ET.SubElement(
            suite,
            "testcase",
            classname=classname,
            name=name or path,
            time=f"{result.get('duration', 0.0):.3f}",
        )
        counts["tests"] += 1
        outcome, message = result["outcome"], result["message"]
        if outcome in ("failed", "timeout", "crashed"):
            ET.SubElement(case, "failure", message=_xml_text(message)).text = _xml_text(
                result.get("text", "")
            )
            counts["failures"] += 1
        elif outcome == "error":
            ET.SubElement(case, "error", message=_xml_text(message)).text = _xml_text(
                result.get("text", "")
            )
            counts["errors"] += 1
        elif outcome in ("skipped", "not run"):
            reason = message if outcome == "skipped" else f"not run: {message or 'the deadline'}"
            ET.SubElement(case, "skipped", message=_xml_text(reason))
            counts["skipped"] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.ElementTree(root)


def _write(out: Path, state: _State, status: str, start: float, command: str) -> None:
    """summary.txt and junit.xml, each replaced whole (a reader never sees half a file)."""
    elapsed = time.time() - start
    tmp = out / "summary.txt.tmp"
    tmp.write_text(_summary(state, status, elapsed, command))
    os.replace(tmp, out / "summary.txt")
    _junit(state, elapsed).write(out / "junit.xml.tmp", encoding="unicode", xml_declaration=True)
    os.replace(out / "junit.xml.tmp", out / "junit.xml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "accelerator")
    parser.add_argument(
        "--deadline",
        type=float,
        default=300.0,
        help="seconds from the start after which no test starts",
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per test")
    parser.add_argument(
        "--grace",
        type=float,
        default=20.0,
        help="seconds past --timeout before a stuck test's process is killed",
    )
    parser.add_argument("--list", action="store_true", help="print the selection, run nothing")
    parser.add_argument("--areas", nargs="+", help="only these areas of the selection")
    parser.add_argument("--paths", nargs="+", help="test files to run instead of the selection")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--deadline-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = set(args.areas or ()) - {a.name for a in AREAS}
    if unknown:
        parser.error(
            f"unknown areas {sorted(unknown)}; the areas: {sorted({a.name for a in AREAS})}"
        )
    args.out = args.out.resolve()
    if args.child:
        return _child(args)
    args.out.mkdir(parents=True, exist_ok=True)
    events = args.out / "events.jsonl"
    for name in ("events.jsonl", "done.txt", STACKS):
        (args.out / name).unlink(missing_ok=True)
    start = time.time()
    deadline_at = start + args.deadline
    command = " ".join(["tests/run_accelerator.py", *(argv if argv is not None else sys.argv[1:])])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # room for tests' own processes
    child_args = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--out",
        str(args.out),
        "--deadline-at",
        repr(deadline_at),
        "--timeout",
        repr(args.timeout),
        "--grace",
        repr(args.grace),
    ]
    if args.list:
        child_args.append("--list")
    if args.areas is not None:
        child_args += ["--areas", *args.areas]
    if args.paths is not None:
        child_args += ["--paths", *(str(Path(p).resolve()) for p in args.paths)]
    child_args += ["--", *args.pytest_args]
    state = _State()
    status = "running (this file is rewritten after each test)"
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append("terminated"))
    while True:
        child = subprocess.Popen(child_args, cwd=ROOT, env=env)
        killed = None
        while child.poll() is None:
            time.sleep(0.2)
            if state.read(events) and not args.list:
                _write(args.out, state, status, start, command)
            now = time.time()
            stuck = state.running is not None and now - state.running[1] > args.timeout + args.grace
            if stuck or now > deadline_at + args.grace or stopped:
                killed = "timeout" if stuck else "terminated" if stopped else "deadline"
                child.kill()
                child.wait()
        state.read(events)
        if state.running is not None:  # its process died or was killed under it
            nodeid, started = state.running
            if killed == "timeout":
                outcome = "timeout"
                message = f"killed after {time.time() - started:.0f} s (stuck outside Python)"
            elif killed is not None:
                outcome, message = "not run", f"killed: {killed}"
            else:
                outcome, message = "crashed", f"its process exited with status {child.returncode}"
            stacks = args.out / STACKS
            text = stacks.read_text()[:4000] if outcome == "timeout" and stacks.exists() else ""
            _append(
                events,
                {
                    "event": "result",
                    "id": nodeid,
                    "outcome": outcome,
                    "text": text,
                    "message": message,
                    "duration": time.time() - started,
                },
            )
            state.read(events)
            if outcome != "not run" and state.left() and time.time() < deadline_at and not stopped:
                (args.out / "done.txt").write_text("\n".join(state.results) + "\n")
                continue  # the rest, in a new process
        break
    selection = "".join(f"{area:10} {nodeid}\n" for nodeid, area in state.tests.items())
    (args.out / "selection.txt").write_text(selection)
    if args.list:
        print(selection, end="")
        print(f"{len(state.tests)} tests selected (also in {args.out / 'selection.txt'})")
        failed = [r for r in state.results.values() if r["outcome"] in FAILED]
        for r in failed:
            print(f"FAILED {r['id']} - {r['message']}")
        return 1 if failed or child.returncode != 0 else 0
    failures = any(r["outcome"] in FAILED for r in state.results.values())
    incomplete = bool(state.left()) or any(
        r["outcome"] == "not run" for r in state.results.values()
    )
    if not state.finished and not state.results and not state.tests:
        failures = True  # the child died before selecting anything
        state.results["(pytest)"] = {
            "id": "(pytest)",
            "outcome": "crashed",
            "duration": 0.0,
            "message": f"exit status {child.returncode} before any test",
        }
    if stopped:
        status = "terminated (SIGTERM)"
    elif state.deadline or (incomplete and time.time() >= deadline_at):
        status = f"stopped at the deadline ({args.deadline:g} s)"
    else:
        status = "complete"
    _write(args.out, state, status, start, command)
    print((args.out / "summary.txt").read_text(), end="")
    return 1 if failures else 2 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
