"""``cycle.realtime_priority``: the whole process under SCHED_FIFO while a real-time robot is open.

The cycle shares the interpreter lock with every other thread of its process, so a thread that
the scheduler keeps off the CPU while it holds the lock stalls the cycle as surely as the cycle
being kept off itself (benchmarks/bench_soak.py --diagnose shows both). No wall-clock bound here:
what is checked is which policy each thread has, and what happens when the system refuses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from whih_control import Robot, load_config
from whih_control.config import Config
from whih_control.errors import ConfigError

from .conftest import CONFIGS, ROOT

PRIORITY = 7


def _cfg(priority: int) -> Config:
    cfg = load_config(CONFIGS / "sim.toml")
    return cfg.replace(cycle=dataclasses.replace(cfg.cycle, realtime_priority=priority))


def _fifo_allowed() -> bool:
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        return False
    os.sched_setscheduler(0, policy, param)
    return True


def _policies() -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            out[tid] = (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority)
    return out


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="no POSIX scheduling on this OS")
def test_every_thread_runs_fifo_while_open_and_gets_its_policy_back() -> None:
    if not _fifo_allowed():
        pytest.skip("this machine refuses SCHED_FIFO (no CAP_SYS_NICE / rtprio limit)")
    before = _policies()
    assert before[threading.get_native_id()][0] != os.SCHED_FIFO
    with Robot(_cfg(PRIORITY), clock="real") as robot:
        rt = robot.runtime
        assert rt._thread is not None and rt._thread.alive
        robot.status()  # answered by the cycle thread: it has run its first lines
        during = _policies()
        cycle = rt._thread._thread
        drives = rt.drives._thread if rt.drives is not None else None
        assert cycle is not None and drives is not None
        # the cycle, the simulated drives (started after open() set the policy) and the
        # application's own threads, including this one
        for tid in (cycle.native_id, drives.native_id, threading.get_native_id(), *before):
            if tid in during:
                assert during[tid] == (os.SCHED_FIFO, PRIORITY), (tid, during[tid])
    after = _policies()
    for tid, was in before.items():
        if tid in after:
            assert after[tid] == was


def test_priority_zero_leaves_the_scheduler_alone() -> None:
    before = _policies()
    with Robot(_cfg(0), clock="real") as robot:
        robot.status()
        during = _policies()
    for tid, was in before.items():
        if tid in during:
            assert during[tid] == was
    assert all(policy != os.SCHED_FIFO for policy, _ in during.values())


def test_refused_priority_is_a_config_error_and_nothing_is_left_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    threads = set(threading.enumerate())
    robot = Robot(_cfg(PRIORITY), clock="real")
    with pytest.raises(ConfigError) as info:
        robot.open()
    text = str(info.value)
    assert "cycle.realtime_priority" in text and f"got {PRIORITY}" in text and "1-99" in text
    assert "Operation not permitted" in text
    assert set(threading.enumerate()) <= threads  # no cycle thread, no simulated drives
    # the same refusal does not concern simulated time (no threads, no wall clock)
    with Robot(_cfg(PRIORITY), clock="simulated") as sim:
        sim.step(3)


@pytest.mark.parametrize("command", ["run", "sim-drives"])
def test_cli_reports_a_refused_priority_as_a_usage_error(tmp_path: Path, command: str) -> None:
    """The CLI in a process of its own, where SCHED_FIFO is refused: exit 2, one clear line,
    for the master (``whih run --realtime``) and for the drives' own process alike."""
    text = (CONFIGS / "sim.toml").read_text().replace("realtime_priority = 0 ", "realtime_priority = 5 ")
    assert "realtime_priority = 5" in text
    cfg = tmp_path / "rt.toml"
    cfg.write_text(text)
    refuse = (
        "import os, sys\n"
        "def refuse(*a):\n"
        "    raise PermissionError(1, 'Operation not permitted')\n"
        "os.sched_setscheduler = refuse\n"
        "from whih_control.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = (
        ["run", "--config", str(cfg), "--realtime", "--out", str(tmp_path / "run")]
        if command == "run"
        else [
            "sim-drives",
            "--config",
            str(cfg),
            "--interface",
            "udp_multicast",
            "--channel",
            "239.74.1.13@45013",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", refuse, *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "cycle.realtime_priority" in proc.stderr and "Traceback" not in proc.stderr
