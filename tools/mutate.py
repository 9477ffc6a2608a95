"""Mutation testing of the safety-critical code: does the test suite notice a changed operator?

Each mutant changes one thing in one function (a comparison, an arithmetic or boolean operator,
a unary minus or ``not``, a number, True/False); the module is rewritten with it in a scratch
copy of the repository and the chosen test files run against it (``pytest -x``, hypothesis
profile ``mutation``: the ``ci`` examples without shrinking, unless ``HYPOTHESIS_PROFILE`` says
otherwise). A mutant is *killed* when a test fails or the run exceeds its time limit,
*survived* otherwise. The limit is CPU time (3x the unmutated run's, plus 30 s; the kernel ends
the run with SIGXCPU), so a busy machine does not turn a slow survivor into a kill; a wall-clock
limit ten times as long only ends a run that waits without spending CPU. Each run leads a
process group of its own, killed whole when the run ends or overruns, so nothing a test spawned
outlives it. Mutants judged equivalent (no observable change of behaviour) are listed, with the
reason, in ``tools/mutate_equivalent.txt`` and left out of the score.

To be cheap enough on a busy machine, a mutant first runs only the tests that execute its
statement (one coverage run of the target's tests, per-test contexts), those that killed
earlier mutants of the same function first, then the fastest. A selection can only miss a
kill, never invent one: every survivor of it is run again against the target's whole tests in
file order, and only that run decides; the unmutated tests must also pass in reverse order and
fastest first, and a selection has the whole run's time limit. ``--no-select`` runs every
mutant against the whole tests.

    python tools/mutate.py [--target NAME]... [--jobs N] [--list] [--limit N] [--keys FILE]

Prints, per target: mutants, killed, survived, equivalent-marked, the score
killed / (mutants - equivalent), the minutes it took and the load average at start and end,
then every survivor with its location and change.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT_FILE = ROOT / "tools" / "mutate_equivalent.txt"


@dataclass(frozen=True)
class Target:
    """A module, the functions in it to mutate (``Class.method`` or ``function``), the tests
    (pytest arguments)."""

    name: str
    path: str
    functions: tuple[str, ...]
    tests: tuple[str, ...]


TARGETS = (
    # each module against its own tests: the limits are property-tested alone
    Target("limits", "whih_control/limits.py", ("*",), ("tests/test_limits.py",)),
    Target(
        "safety",
        "whih_control/safety.py",
        ("SafetySupervisor.*",),
        # the supervisor alone, its support rule, then its escalation on a running robot
        # (hostile frames, stalls)
        ("tests/test_safety.py", "tests/test_support.py", "tests/test_hostile.py", "tests/test_stall.py"),
    ),
    Target(
        "master-intake",
        "firmware_iface/master.py",
        ("Master.read", "Master._take", "Master.service", "Master._service_frame"),
        # the set-up test reads a vendor EDS outside the repository (and is not frame intake)
        (
            "tests/test_master_intake.py",
            "tests/test_master.py",
            "tests/test_intake.py",
            "tests/test_hostile.py",
            "tests/test_foreign_nodes.py",
            "--deselect=tests/test_master.py::test_incapable_drive_refused_before_talking",
        ),
    ),
)

_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BIN_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}


@dataclass(frozen=True)
class Mutant:
    """One change: where (function, line, column), what (a short description), its site index."""

    target: str
    function: str
    line: int
    col: int
    change: str
    index: int

    @property
    def key(self) -> str:
        """Stable name used in the equivalent list: target:function:line:col:change."""
        return f"{self.target}:{self.function}:{self.line}:{self.col}:{self.change}"


def _wanted(qualname: str, patterns: tuple[str, ...]) -> bool:
    for pat in patterns:
        if pat in ("*", qualname):
            return True
        if pat.endswith(".*") and qualname.startswith(pat[:-1]):
            return True
    return False


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    yield f"{node.name}.{item.name}", item


def _skip_nodes(func: ast.FunctionDef) -> set[int]:
    """Node ids not to mutate: docstrings, f-strings, messages of raise, annotations."""
    skip: set[int] = set()
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        skip.add(id(body[0].value))
    for node in ast.walk(func):
        if isinstance(node, ast.JoinedStr | ast.Raise):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.AnnAssign) and node.annotation is not None:
            skip.update(id(n) for n in ast.walk(node.annotation))
        if isinstance(node, ast.arg) and node.annotation is not None:
            skip.update(id(n) for n in ast.walk(node.annotation))
    if func.returns is not None:
        skip.update(id(n) for n in ast.walk(func.returns))
    return skip


def _sites(node: ast.AST) -> list[str]:
    """The changes possible at one node (descriptions; applied by :func:`_apply`)."""
    out: list[str] = []
    if isinstance(node, ast.Compare):
        for k, op in enumerate(node.ops):
            new = _CMP_SWAP.get(type(op))
            if new is not None:
                out.append(f"cmp{k}:{type(op).__name__}->{new.__name__}")
    elif isinstance(node, ast.BinOp | ast.AugAssign):
        new_op = _BIN_SWAP.get(type(node.op))
        if new_op is not None:
            out.append(f"op:{type(node.op).__name__}->{new_op.__name__}")
    elif isinstance(node, ast.BoolOp):
        out.append("bool:And->Or" if isinstance(node.op, ast.And) else "bool:Or->And")
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.Not):
        out.append(f"unary:drop-{type(node.op).__name__}")
    elif isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            out.append(f"const:{v}->{not v}")
        elif isinstance(v, int | float):
            out.append(f"const:{v!r}->{(v + 1)!r}")
            if v != 0:
                out.append(f"const:{v!r}->0")
    return out


def _apply(node: ast.AST, change: str) -> ast.AST:
    kind, _, rest = change.partition(":")
    if kind.startswith("cmp"):
        assert isinstance(node, ast.Compare)
        k = int(kind[3:])
        node.ops[k] = _CMP_SWAP[type(node.ops[k])]()
        return node
    if kind == "op":
        assert isinstance(node, ast.BinOp | ast.AugAssign)
        node.op = _BIN_SWAP[type(node.op)]()
        return node
    if kind == "bool":
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return node
    if kind == "unary":
        assert isinstance(node, ast.UnaryOp)
        return node.operand
    assert isinstance(node, ast.Constant)
    new_text = rest.split("->", 1)[1]
    return ast.Constant(ast.literal_eval(new_text))


class _Rewriter(ast.NodeTransformer):
    def __init__(self, wanted: int, change: str, nodes: dict[int, int]) -> None:
        self.wanted = wanted
        self.change = change
        self.nodes = nodes

    def visit(self, node: ast.AST) -> ast.AST:
        node = self.generic_visit(node)
        if self.nodes.get(id(node)) == self.wanted:
            return _apply(node, self.change)
        return node


_SOURCES: dict[str, str] = {}


def _source(target: Target) -> str:
    """The target's source as it was when first read (edits during a campaign do not count)."""
    if target.path not in _SOURCES:
        _SOURCES[target.path] = (ROOT / target.path).read_text(encoding="utf-8")
    return _SOURCES[target.path]


def enumerate_mutants(target: Target) -> list[Mutant]:
    """Every mutant of ``target``, in source order."""
    tree = ast.parse(_source(target))
    out: list[Mutant] = []
    for qualname, func in _functions(tree):
        if not _wanted(qualname, target.functions):
            continue
        skip = _skip_nodes(func)
        for node in ast.walk(func):
            if id(node) in skip:
                continue
            for change in _sites(node):
                line = getattr(node, "lineno", func.lineno)
                col = getattr(node, "col_offset", 0)
                out.append(Mutant(target.name, qualname, line, col, change, len(out)))
    return out


def mutated_source(target: Target, mutant: Mutant) -> str:
    """The module's source with ``mutant`` applied."""
    tree = ast.parse(_source(target))
    nodes: dict[int, int] = {}
    k = 0
    for qualname, func in _functions(tree):
        if not _wanted(qualname, target.functions):
            continue
        skip = _skip_nodes(func)
        for node in ast.walk(func):
            if id(node) in skip:
                continue
            for change in _sites(node):
                if k == mutant.index:
                    assert change == mutant.change
                    nodes[id(node)] = k
                k += 1
    new_tree = _Rewriter(mutant.index, mutant.change, nodes).visit(tree)
    return ast.unparse(ast.fix_missing_locations(new_tree))


def _scratch_copy(dest: Path) -> None:
    for name in ("whih_control", "firmware_iface", "tests", "configs", "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)


def _preload() -> None:
    """Import the heavy third-party modules once; each test run is a fork of this process, so
    it starts with them loaded but imports the project (mutated or not) from its scratch copy."""
    for name in ("can", "canopen", "pytest", "coverage"):  # not plugins (hypothesis): pytest rewrites them
        importlib.import_module(name)


KILLER_FILE = ".mutate-killer"
"""Written in the work directory by a test run: the node id of the first test that failed."""
MAP_FILE = ".mutate-map.json"
"""Written by the coverage run: which tests execute which line of the target, how long each took."""


class _Plugin:
    """pytest plugin of a forked run: keeps only the chosen tests, in the chosen order; notes
    the first failing test; with coverage, names the measured context after the running test."""

    def __init__(self, order: list[str] | None, cov: Any = None) -> None:
        self.order = order
        self.cov = cov
        self.durations: dict[str, float] = {}
        self.seen: list[str] = []
        self.killer_written = False
        self.started = 0.0

    def pytest_collection_modifyitems(self, config: Any, items: list[Any]) -> None:
        if self.order is None:
            return
        rank = {nodeid: k for k, nodeid in enumerate(self.order)}
        keep = sorted((it for it in items if it.nodeid in rank), key=lambda it: rank[it.nodeid])
        dropped = [it for it in items if it.nodeid not in rank]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep

    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        if self.cov is not None:
            self.cov.switch_context(nodeid)
        self.seen.append(nodeid)
        self.started = time.perf_counter()

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        self.durations[nodeid] = time.perf_counter() - self.started
        if self.cov is not None:
            self.cov.switch_context("")

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed and not self.killer_written:
            Path(KILLER_FILE).write_text(report.nodeid, encoding="utf-8")
            self.killer_written = True


def _start(
    workdir: Path,
    tests: tuple[str, ...],
    order: list[str] | None = None,
    cover: str | None = None,
    cpu_limit: float | None = None,
) -> int:
    """Fork a child that runs ``pytest -x`` on ``tests`` in ``workdir``; returns its pid.

    ``order``: run only these node ids, in this order. ``cover``: measure which test executes
    which line of this file (relative to ``workdir``) and write it to :data:`MAP_FILE`.
    ``cpu_limit``: CPU seconds after which the kernel ends the child (SIGXCPU)."""
    pid = os.fork()
    if pid:
        # a process group of its own (set on both sides of the fork: no race), so that the
        # backstop and the clean-up reach whatever the tests spawned too
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        _LIVE.add(pid)
        return pid
    try:  # the child: never returns
        os.setpgid(0, 0)
        if cpu_limit is not None:
            # within a hard limit the tool was started under; no core file from SIGXCPU
            _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
            cap = math.inf if hard == resource.RLIM_INFINITY else hard
            soft = int(min(math.ceil(cpu_limit), cap))
            resource.setrlimit(resource.RLIMIT_CPU, (soft, int(min(soft + 5, cap))))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.chdir(workdir)
        sys.path.insert(0, str(workdir))
        Path(KILLER_FILE).unlink(missing_ok=True)
        if not os.environ.get("MUTATE_SHOW_OUTPUT"):
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        cov = None
        if cover is not None:
            coverage = importlib.import_module("coverage")
            cov = coverage.Coverage(data_file=None, include=[str(workdir / cover)], config_file=False)
            cov.start()
        plugin = _Plugin(order, cov)
        # the campaign's own time limit applies, not pytest-timeout's per test (a loaded machine)
        args = ["-x", "-q", "-p", "no:cacheprovider", "--timeout=0", *tests]
        rc = importlib.import_module("pytest").main(args, plugins=[plugin])
        if cov is not None:
            cov.stop()
            data = cov.get_data()
            lines: dict[int, list[str]] = {}
            for f in data.measured_files():
                for line, contexts in data.contexts_by_lineno(f).items():
                    lines.setdefault(line, []).extend(c for c in contexts if c)
            record = {"lines": lines, "durations": plugin.durations, "order": plugin.seen}
            Path(MAP_FILE).write_text(json.dumps(record), encoding="utf-8")
        os._exit(int(rc))
    except BaseException:
        if os.environ.get("MUTATE_SHOW_OUTPUT"):
            traceback.print_exc()
        os._exit(99)


# the test runs under way: their groups no longer get the terminal's Ctrl-C, so they are ended
# when the campaign ends however it ends
_LIVE: set[int] = set()


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group a test run leads (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wait(pids: dict[int, float]) -> tuple[int, bool, float]:
    """Wait for one child of ``pids`` (pid -> wall-clock deadline); (pid, passed, its CPU
    seconds). Over its deadline: killed."""
    while True:
        pid, status, usage = os.wait4(-1, os.WNOHANG)
        if pid:
            # a test's leftover subprocess must not run on into the next mutant's
            _kill_group(pid)
            _LIVE.discard(pid)
            return pid, os.waitstatus_to_exitcode(status) == 0, usage.ru_utime + usage.ru_stime
        now = time.monotonic()
        for p, deadline in pids.items():
            if now > deadline:
                _kill_group(p)
        time.sleep(0.05)


def _run_tests(
    workdir: Path, tests: tuple[str, ...], timeout: float, cover: str | None = None
) -> tuple[bool, float, float]:
    """(passed, wall seconds, CPU seconds) for the tests in ``workdir``; a time-out counts as a
    failure."""
    t0 = time.perf_counter()
    pid = _start(workdir, tests, cover=cover)
    _, passed, cpu = _wait({pid: time.monotonic() + timeout})
    return passed, time.perf_counter() - t0, cpu


def load_equivalent() -> dict[str, str]:
    """Mutant key -> why it is equivalent (from tools/mutate_equivalent.txt; '#' comments)."""
    out: dict[str, str] = {}
    if EQUIVALENT_FILE.exists():
        for raw in EQUIVALENT_FILE.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, _, why = line.partition("  ")
            out[key.strip()] = why.strip()
    return out


def _owners(node: ast.AST, stmt: ast.stmt, owner: dict[int, ast.stmt | None]) -> None:
    """Map every node under ``node`` to the innermost statement that holds it."""
    for child in ast.iter_child_nodes(node):
        inner = child if isinstance(child, ast.stmt) else stmt
        owner[id(child)] = inner
        _owners(child, inner, owner)


def statement_lines(target: Target) -> dict[int, tuple[int, int] | None]:
    """Mutant index -> the source lines of the statement that evaluates it (from the statement's
    first line to the mutated node's last), or None when it is evaluated outside the function's
    body (a default value, a decorator: at import, so no test can be singled out)."""
    tree = ast.parse(_source(target))
    out: dict[int, tuple[int, int] | None] = {}
    k = 0
    for qualname, func in _functions(tree):
        if not _wanted(qualname, target.functions):
            continue
        skip = _skip_nodes(func)
        owner: dict[int, ast.stmt | None] = {}
        for stmt in func.body:
            owner[id(stmt)] = stmt
            _owners(stmt, stmt, owner)
        for node in ast.walk(func):
            if id(node) in skip:
                continue
            for _ in _sites(node):
                st = owner.get(id(node))
                if st is None:
                    out[k] = None
                else:
                    end = getattr(node, "end_lineno", None) or st.lineno
                    out[k] = (st.lineno, max(st.lineno, end))
                k += 1
    return out


@dataclass
class _Map:
    """What the coverage run of a target's tests found."""

    lines: dict[int, set[str]]
    durations: dict[str, float]
    order: list[str]

    def tests_for(self, span: tuple[int, int] | None) -> list[str] | None:
        """The tests that execute any line of ``span`` (None: every test)."""
        if span is None:
            return None
        hit: set[str] = set()
        for line in range(span[0], span[1] + 1):
            hit |= self.lines.get(line, set())
        return [t for t in self.order if t in hit]


def _load_map(workdir: Path) -> _Map:
    raw = json.loads((workdir / MAP_FILE).read_text(encoding="utf-8"))
    return _Map(
        {int(k): set(v) for k, v in raw["lines"].items()},
        {str(k): float(v) for k, v in raw["durations"].items()},
        [str(t) for t in raw["order"]],
    )


def _files_of(tests: tuple[str, ...], nodeids: list[str]) -> tuple[str, ...]:
    """The target's pytest arguments cut to the files that hold one of ``nodeids`` (options kept),
    so that a run collects no module it does not need."""
    files = {n.split("::", 1)[0] for n in nodeids}
    return tuple(a for a in tests if a.startswith("-") or a in files)


@dataclass
class _Job:
    mutant: Mutant
    workdir: Path
    deadline: float
    confirm: bool
    selected: int


def run_target(
    t: Target,
    todo: list[Mutant],
    workdirs: list[Path],
    select: bool,
    log: Any,
    verbose: bool = False,
) -> tuple[dict[Mutant, str], dict[str, int]]:
    """Run every mutant of ``todo``; mutant -> "killed" / "survived", and counts of how.

    With ``select``, a mutant first runs only the tests that execute its statement (found once
    with coverage), those that killed earlier mutants of the same function first, then the rest
    fastest first; ``-x`` stops at the first failure. A selection can only miss a kill (code run
    in a subprocess or by a module fixture's set-up, state carried to a later test), never invent
    one: every survivor of it is run again against the target's whole tests, and only a survivor
    of that run counts. Without ``select`` every mutant runs the whole tests, in file order."""
    stats = {"selected_killed": 0, "confirm_runs": 0, "confirm_killed": 0, "timeouts": 0}
    ok, base, base_cpu = _run_tests(workdirs[0], t.tests, timeout=3600, cover=t.path if select else None)
    if not ok:
        raise RuntimeError(f"{t.name}: the tests fail without any mutant; fix them first")
    cpu_limit = 3 * base_cpu + 30
    # a backstop for a run that waits without spending CPU (the CPU limit ends a busy loop)
    full_limit = 10 * base + 120
    spans = statement_lines(t)
    cmap = _load_map(workdirs[0]) if select else None
    if cmap is not None:
        # a selection runs tests apart from the rest and out of file order: a test that needs
        # another before it would fail without any mutant, a kill that is not one
        checks = {
            "in reverse order": cmap.order[::-1],
            "fastest first": sorted(cmap.order, key=lambda n: cmap.durations.get(n, 0.0)),
        }
        pending: dict[int, str] = {}
        deadlines: dict[int, float] = {}
        for k, (what, check) in enumerate(checks.items()):
            pid = _start(workdirs[k % len(workdirs)], t.tests, order=check, cpu_limit=cpu_limit)
            pending[pid], deadlines[pid] = what, time.monotonic() + full_limit
            if len(pending) == len(workdirs) or k == len(checks) - 1:
                while pending:
                    pid, passed, _cpu = _wait(deadlines)
                    how_run = pending.pop(pid)
                    del deadlines[pid]
                    if not passed:
                        raise RuntimeError(
                            f"{t.name}: the tests fail {how_run} without any mutant; fix them first"
                        )
    how = " (with coverage)" if select else ""
    print(
        f"{t.name}: {len(todo)} to run; tests {base:.0f} s, {base_cpu:.0f} CPU s{how}; "
        f"limit {cpu_limit:.0f} CPU s",
        file=log,
        flush=True,
    )
    killers: dict[str, dict[str, int]] = {}
    results: dict[Mutant, str] = {}
    free = list(workdirs)
    running: dict[int, _Job] = {}
    # (mutant, confirm?) in order: selected runs first, confirmations appended as survivors appear
    queue: list[tuple[Mutant, bool]] = [(m, not select) for m in todo]
    done = 0
    while queue or running:
        while queue and free:
            m, confirm = queue.pop(0)
            w = free.pop()
            order: list[str] | None = None
            args = t.tests
            if not confirm:
                assert cmap is not None
                chosen = cmap.tests_for(spans[m.index])
                if not chosen:  # evaluated at import, or no test executes it: the whole tests
                    confirm = True
                else:
                    kills = killers.get(m.function, {})
                    chosen.sort(key=lambda n: (-kills.get(n, 0), cmap.durations.get(n, 0.0)))
                    order = chosen
                    args = _files_of(t.tests, chosen)
            (w / KILLER_FILE).unlink(missing_ok=True)
            (w / t.path).write_text(mutated_source(t, m), encoding="utf-8")
            pid = _start(w, args, order=order, cpu_limit=cpu_limit)
            running[pid] = _Job(m, w, time.monotonic() + full_limit, confirm, len(order or ()))
        pid, passed, _cpu = _wait({p: j.deadline for p, j in running.items()})
        job = running.pop(pid)
        m, w = job.mutant, job.workdir
        (w / t.path).write_text(_source(t), encoding="utf-8")
        killer_path = w / KILLER_FILE
        killer = killer_path.read_text(encoding="utf-8") if killer_path.exists() else ""
        free.append(w)
        if job.confirm and select:
            stats["confirm_runs"] += 1
        if not passed and not killer:
            stats["timeouts"] += 1
        if passed and not job.confirm:
            # a survivor of the selection: the whole tests decide. (Over the whole run's time
            # limit a part of its tests, in any order, is a kill: the whole run fails first or
            # runs them all and takes longer.)
            queue.append((m, True))
            continue
        done += 1
        results[m] = "survived" if passed else "killed"
        if not passed and killer:
            per = killers.setdefault(m.function, {})
            per[killer] = per.get(killer, 0) + 1
        if not passed:
            stats["confirm_killed" if (job.confirm and select) else "selected_killed"] += 1
        if passed:
            print(f"  [{done}/{len(todo)}] SURVIVED {m.key}", file=log, flush=True)
        elif job.confirm and select:
            print(
                f"  [{done}/{len(todo)}] killed only by the whole tests: {m.key} ({killer or 'time-out'})",
                file=log,
                flush=True,
            )
        elif verbose:
            print(
                f"  [{done}/{len(todo)}] killed {m.key} by {killer or 'time-out'} ({job.selected} selected)",
                file=log,
                flush=True,
            )
        elif done % 25 == 0:
            print(f"  [{done}/{len(todo)}]", file=log, flush=True)
    return results, stats


def main(argv: list[str] | None = None) -> int:
    """Run the mutation campaign and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", action="append", choices=[t.name for t in TARGETS])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--limit", type=int, default=0, help="run only the first N mutants per target")
    parser.add_argument("--keys", type=Path, help="run only the mutants whose keys this file lists")
    parser.add_argument(
        "--no-select",
        action="store_true",
        help="run every mutant against the target's whole tests (no coverage selection, no reordering)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every mutant's outcome and its killer")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs (={args.jobs}) must be >= 1")
    targets = [t for t in TARGETS if not args.target or t.name in args.target]
    equivalent = load_equivalent()
    plans = {t.name: enumerate_mutants(t) for t in targets}
    # keys carry line numbers: an entry that names no mutant any more was left behind by an edit
    known = {m.key for t in TARGETS for m in (plans.get(t.name) or enumerate_mutants(t))}
    names = {t.name for t in TARGETS}
    for key in sorted(k for k in equivalent if k not in known and k.split(":", 1)[0] in names):
        print(f"warning: {EQUIVALENT_FILE.name}: no such mutant (moved by an edit?): {key}", file=sys.stderr)
    if args.limit:
        plans = {k: v[: args.limit] for k, v in plans.items()}
    if args.keys is not None:
        keys = {
            line.split()[-1] for line in args.keys.read_text(encoding="utf-8").splitlines() if line.strip()
        }
        plans = {k: [m for m in v if m.key in keys] for k, v in plans.items()}
    if args.list:
        for t in targets:
            for m in plans[t.name]:
                print(m.key)
        return 0
    results: dict[str, list[tuple[Mutant, str]]] = {t.name: [] for t in targets}
    stats: dict[str, dict[str, int]] = {}
    took: dict[str, tuple[float, float, float]] = {}
    os.environ.setdefault("HYPOTHESIS_PROFILE", "mutation")
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    _preload()
    with tempfile.TemporaryDirectory(prefix="whih-mutate-") as tmp:
        workdirs = [Path(tmp) / f"w{j}" for j in range(args.jobs)]
        for w in workdirs:
            w.mkdir()
            _scratch_copy(w)
        for t in targets:
            todo = [m for m in plans[t.name] if m.key not in equivalent]
            marked = [m for m in plans[t.name] if m.key in equivalent]
            results[t.name] += [(m, "equivalent") for m in marked]
            print(f"{t.name}: {len(marked)} marked equivalent", flush=True)
            t0, load0 = time.perf_counter(), os.getloadavg()[0]
            try:
                outcome, stats[t.name] = run_target(
                    t, todo, workdirs, not args.no_select, sys.stdout, args.verbose
                )
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
                return 1
            took[t.name] = (time.perf_counter() - t0, load0, os.getloadavg()[0])
            results[t.name] += [(m, outcome[m]) for m in todo]
    print()
    head = f"{'target':<15}{'mutants':>8}{'killed':>8}{'survived':>9}{'equiv':>7}{'score':>8}"
    print(f"{head}{'minutes':>9}  load")
    for t in targets:
        rows = results[t.name]
        n = len(rows)
        killed = sum(1 for _, o in rows if o == "killed")
        survived = sum(1 for _, o in rows if o == "survived")
        eq = sum(1 for _, o in rows if o == "equivalent")
        score = killed / (n - eq) if n > eq else 1.0
        secs, l0, l1 = took[t.name]
        print(
            f"{t.name:<15}{n:>8}{killed:>8}{survived:>9}{eq:>7}{score:>8.1%}{secs / 60:>9.1f}"
            f"  {l0:.1f}-{l1:.1f}"
        )
    for t in targets:
        s = stats[t.name]
        if not args.no_select:
            print(
                f"{t.name}: {s['selected_killed']} killed by the selected tests; {s['confirm_runs']} "
                f"rerun against the whole tests, {s['confirm_killed']} of them killed there; "
                f"{s['timeouts']} killed by the time limit"
            )
    for t in targets:
        for m, o in results[t.name]:
            if o == "survived":
                print(f"survivor: {m.key}")
            elif o == "equivalent":
                print(f"equivalent: {m.key}  ({equivalent[m.key]})")
    return 0


if __name__ == "__main__":
    # a SIGTERM ends the campaign through the clean-up below too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        raise SystemExit(main())
    finally:
        for _pid in _LIVE:
            _kill_group(_pid)
