"""``Robot(cfg, clock="real", cycle="process")``: the cycle in a process of its own, proxied.

The wall-clock tests are marked ``realtime`` (out of the default run, like tests/test_realtime.py);
the argument checks run always.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import can
import pytest

import whih_control as wc
from whih_control.events import read_events, verify_log
from whih_control.runtime import Progress

from .conftest import CONFIGS
from .test_realtime import _assert_attended
from .test_realtime import _rt_config as realtime_config

ROOT = Path(__file__).resolve().parents[1]


def _rt_config() -> wc.Config:
    return realtime_config("whih-proc")


# --- arguments (no process started) ---------------------------------------------------------------


def test_bad_cycle_arguments_are_refused_naming_them() -> None:
    cfg = _rt_config()
    with pytest.raises(ValueError, match=r"cycle \(='fork'\) must be 'thread' or 'process'"):
        wc.Robot(cfg, cycle="fork")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs clock='real'"):
        wc.Robot(cfg, clock="simulated", cycle="process")
    bus = can.Bus(interface="virtual", channel="whih-proc-arg")
    try:
        with pytest.raises(ValueError, match=r"bus .* must be None"):
            wc.Robot(cfg, bus, cycle="process")
    finally:
        bus.shutdown()
    with pytest.raises(TypeError, match="inject"):
        wc.Robot(cfg, cycle="process", inject="estop@1")
    with pytest.raises(wc.WhihError, match="runtime lives in the cycle's process"):
        _ = wc.Robot(cfg, cycle="process").runtime


# --- real time ------------------------------------------------------------------------------------


@pytest.mark.realtime
def test_two_idle_seconds_after_enable_keep_sync_heartbeat_and_targets(tmp_path: Path) -> None:
    """The acceptance check of the thread (tests/test_realtime.py), against the process."""
    cfg = _rt_config()
    out = tmp_path / "run"
    with wc.Robot(cfg, clock="real", out=out, cycle="process") as robot:
        robot.enable()
        t0 = robot.time
        before = robot.status()
        time.sleep(2.0)  # the application does nothing at all: that is the condition under test
        after = robot.status()
        t1 = robot.time
    assert t1 - t0 >= 1.9
    assert after.phase == "ready" and not after.fault and not after.faults, after.faults
    assert all(d.state == "OPERATION_ENABLED" for d in after.drives.values()), after.drives
    _assert_attended(cfg, out, before, after, t0, t1)
    assert json.loads((out / "summary.json").read_text())["outcome"] == "closed"


@pytest.mark.realtime
def test_verbs_are_answered_as_by_the_thread(tmp_path: Path) -> None:
    """Refusals arrive as the same errors with the same text; a jog moves; predicates and
    progress run in the application; step() is refused as in real time."""
    cfg = _rt_config()
    with wc.Robot(cfg, clock="real", out=tmp_path / "run", cycle="process") as robot:
        with pytest.raises(wc.ProcedureError, match="start_procedure: the robot is not enabled"):
            robot.start_procedure()
        robot.enable()
        with pytest.raises(wc.ProcedureError, match="pause: not allowed in phase 'ready'"):
            robot.pause()
        with pytest.raises(ValueError, match="teleop: velocity for ante_wire"):
            robot.teleop("ante_wire", 1e9)
        with pytest.raises(wc.WhihError, match="step: only in simulated time"):
            robot.step()
        robot.jog("ante_wire", 0.5)
        assert robot.status().drives["ante_wire"].target == pytest.approx(0.5)
        t = robot.time
        status = robot.wait(lambda s: s.t >= t + 0.2, timeout=5.0)
        assert status.t >= t + 0.2
        with pytest.raises(wc.CommandTimeoutError):
            robot.wait(lambda s: False, timeout=0.1)
        robot.set_inputs(estop=True)
        status = robot.wait("fault", timeout=1.0)
        assert "emergency stop" in status.fault
        with pytest.raises(wc.SafetyError, match="e-stop still pressed"):
            robot.acknowledge()
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    answers = [(e["verb"], e["answer"]) for e in events if e["kind"] == "command"]
    assert ("pause", "refused") in answers and ("jog", "accepted") in answers
    assert ("acknowledge", "refused") in answers


_APP = """
import dataclasses, sys, time
import whih_control as wc
from whih_control.events import read_events, verify_log
from whih_control.runtime import Progress
cfg = wc.load_config(sys.argv[1])
cfg = cfg.replace(
    bus=dataclasses.replace(cfg.bus, interface="virtual", channel=sys.argv[3]),
    cycle=dataclasses.replace(cfg.cycle, tpdo_deadline=0.9),
)
with wc.Robot(cfg, clock="real", out=sys.argv[2], cycle="process") as robot:
    robot.enable()
    print(robot._runtime._proc.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.realtime
def test_the_application_killed_the_cycle_process_stops_the_drives_and_ends(tmp_path: Path) -> None:
    """SIGKILL of the application (no close): the child sees its pipe end, closes the robot
    (quick stop, disable, run folder) and exits."""
    out = tmp_path / "run"
    app = subprocess.Popen(
        [sys.executable, "-c", _APP, str(CONFIGS / "sim.toml"), str(out), f"whih-kill-{os.getpid()}"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert app.stdout is not None
        child = int(app.stdout.readline())
        app.send_signal(signal.SIGKILL)
        app.wait()
        end = time.monotonic() + 60.0
        while time.monotonic() < end and not (out / "summary.json").exists():
            time.sleep(0.1)
        summary = json.loads((out / "summary.json").read_text())
        while time.monotonic() < end:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the cycle process outlived its application")
    finally:
        if app.poll() is None:
            app.kill()
        app.communicate()
    assert summary["outcome"] == "closed"
    assert verify_log(out / "events.jsonl").ok
    kinds = [e["kind"] for e in read_events(out / "events.jsonl")]
    assert kinds[-2:] == ["end", "close"]
    # the safe stop went out: every drive's last RPDO1 says "disable voltage" (controlword 0)
    last: dict[int, int] = {}
    for m in can.LogReader(str(out / "trace.asc")):
        if 0x201 <= m.arbitration_id <= 0x27F and not m.is_rx:
            last[m.arbitration_id - 0x200] = int.from_bytes(m.data[:2], "little")
    assert sorted(last) == sorted(d.node_id for d in wc.load_config(CONFIGS / "sim.toml").drives.values())
    assert set(last.values()) == {0}, last


@pytest.mark.realtime
def test_run_procedure_returns_its_result_and_progress_runs_in_the_application() -> None:
    cfg = _rt_config()
    seen: list[Progress] = []
    with wc.Robot(cfg, clock="real", cycle="process", progress=seen.append) as robot:
        robot.enable()
        result = robot.run_procedure(max_time=1.0, confirm=lambda gate: True)
    assert result.outcome == "timeout" and result.cycles > 0
    assert len(seen) >= 5 and seen[-1].phase == "approach"
    assert all(b.t >= a.t for a, b in itertools.pairwise(seen))
