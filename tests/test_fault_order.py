"""What a user reads of a fault: the cause first, its consequences after, alike in
``events.jsonl``, the procedure's reason, ``summary.json`` and ``whih inspect``; and a
missing TPDO1 named for what it is (one drive silent, every drive, or no SYNC sent).

Every run here is in simulated time, with injected faults (no sleeps).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import pytest

import whih_control as wc
from firmware_iface import pdo
from firmware_iface.simbus import SimTimeBus
from whih_control import events as events_module
from whih_control.api import Robot
from whih_control.events import fault_line, read_events
from whih_control.inspect_run import inspect_run

from .conftest import CONFIGS

CFG = wc.load_config(CONFIGS / "sim.toml")
AXES = tuple(CFG.drives)
STALL = "master stalled: 250.0 ms without a cycle on its own clock (allowed 50 ms"
HEARTBEAT_EMCY = 0x8130


@dataclass
class Run:
    result: wc.RunResult
    events: list[dict[str, Any]]
    """The events after the (first) ``inject`` event."""
    summary: dict[str, Any]
    inspected: list[str]
    """``whih inspect``'s faults, as ``axis-or-all: text``, in its order."""
    summary_faults: list[str]
    """``summary.json``'s faults without their times."""


def _run(tmp: Path, *inject: str, max_time: float = 4.0) -> Run:
    out = tmp / "run"
    result = wc.simulate(CFG, seed=0, out=out, inject=list(inject), max_time=max_time)
    events = read_events(out / "events.jsonl")
    first = next(i for i, e in enumerate(events) if e["kind"] == "inject")
    report = inspect_run(out, plot=False)
    assert report.ok, report.problems
    summary = json.loads((out / "summary.json").read_text())
    return Run(
        result=result,
        events=events[first + 1 :],
        summary=summary,
        inspected=[fault_line(f["axis"] or "all", f["text"]) for f in report.faults],
        summary_faults=[f.split("s ", 1)[1] for f in summary["faults"]],
    )


def _without_axis(line: str) -> str:
    return line.split(": ", 1)[1]


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """250 ms: longer than the drives' master heartbeat timeout (100 ms), so every drive has sent
    its heartbeat EMCY by the time the master cycles again."""
    return _run(tmp_path_factory.mktemp("freeze"), "master-freeze:250@3")


def test_after_a_stall_the_first_safety_event_is_the_stall_then_the_drives_emcys(frozen: Run) -> None:
    ev = frozen.events
    assert ev[0]["kind"] == "fault" and ev[0]["text"].startswith(STALL), ev[0]
    assert ev[0]["reason"] == "STALE_FEEDBACK" and ev[0]["axis"] == ""
    emcys = ev[1 : 1 + len(AXES)]
    assert [e["kind"] for e in emcys] == ["drive"] * len(AXES)
    assert {e["axis"] for e in emcys} == set(AXES)
    assert {e["code"] for e in emcys} == {HEARTBEAT_EMCY}
    assert {e["t"] for e in ev[: 1 + len(AXES)]} == {ev[0]["t"]}  # one cycle


def test_after_a_stall_the_procedures_why_is_the_stall(frozen: Run) -> None:
    stall = frozen.events[0]["text"]
    procedure = [e for e in frozen.events if e.get("source") == "inputs" or e["kind"] == "phase"]
    assert procedure, frozen.events
    assert procedure[0]["kind"] == "fault" and procedure[0]["text"] == stall
    assert procedure[1]["kind"] == "phase" and procedure[1]["to"] == "fault" and procedure[1]["why"] == stall
    # nothing after the freeze names an EMCY as a fault's cause
    causes = [e.get("text", e.get("why", "")) for e in frozen.events if e["kind"] in ("fault", "phase")]
    assert all("EMCY" not in c for c in causes), causes


def test_after_a_stall_summary_and_inspect_agree_cause_first(frozen: Run) -> None:
    stall = frozen.events[0]["text"]
    assert frozen.result.reason == stall and frozen.summary["reason"] == stall
    assert frozen.inspected == frozen.summary_faults, (frozen.inspected, frozen.summary_faults)
    assert frozen.inspected[0] == f"all: {stall}"
    assert len(frozen.inspected) == 1 + len(AXES)  # the stall once, then one EMCY per drive
    assert all("EMCY 0x8130" in f for f in frozen.inspected[1:])


def test_without_a_stall_a_drives_emcy_comes_first_as_before(tmp_path: Path) -> None:
    """The EMCY is the cause: it is logged as read, the procedure takes it up, the latch follows."""
    run = _run(tmp_path, "emcy:ante_mc:0x8611@3")
    ev = [e for e in run.events if e["kind"] in ("drive", "fault", "phase")]
    assert [e["kind"] for e in ev[:5]] == ["drive", "drive", "fault", "phase", "fault"], ev
    emcy = ev[0]["text"]
    assert ev[0]["axis"] == "ante_mc" and ev[0]["code"] == 0x8611 and "EMCY 0x8611" in emcy
    assert ev[2]["source"] == "inputs" and ev[2]["text"] == emcy
    assert ev[3]["why"] == emcy
    assert ev[4]["reason"] == "DRIVE_FAULT" and ev[4]["text"] == emcy
    assert run.result.reason == emcy
    # inspect lists each fault once, as the summary does: the EMCY, then the drive's FAULT state
    assert run.inspected == run.summary_faults and len(run.inspected) == 2, run.inspected
    assert run.inspected[0] == f"ante_mc: {emcy}"


def _stop_inside_a_cycle(out: Path, at_call: int, seconds: float) -> tuple[Robot, list[dict[str, Any]]]:
    """A real-time stop inside one cycle (SIGSTOP, starvation) shows only in ``pacer.elapsed``:
    it returns ``seconds`` at its ``at_call``-th call of that cycle, else 0."""
    robot = Robot(CFG, clock="simulated", out=out, auto_confirm=True)
    robot.__enter__()
    robot.enable()
    robot.start_procedure()
    rt = robot.runtime
    robot.step(200)
    assert not rt.core.supervisor.latched
    calls = 0
    real: Callable[[], float] = rt.pacer.elapsed

    def elapsed() -> float:
        nonlocal calls
        calls += 1
        return seconds if calls == at_call else real()

    rt.pacer.elapsed = elapsed  # type: ignore[method-assign]
    robot.step(1)
    rt.pacer.elapsed = real  # type: ignore[method-assign]
    robot.step(1)
    return robot, read_events(out / "events.jsonl")


def test_a_stop_before_the_procedure_decides_is_its_reason_with_the_same_figure(tmp_path: Path) -> None:
    """Stopped in read or service (first look at the time): the procedure already names the
    stall, with the very text the supervisor latches."""
    robot, events = _stop_inside_a_cycle(tmp_path / "run", 1, 0.2)
    try:
        rt = robot.runtime
        latched = rt.core.supervisor.latched_verdict.text
        assert latched.startswith("master stalled: 200.0 ms"), latched
        assert rt.procedure.phase.value == "fault" and rt.procedure.reason == latched
        assert rt.faults[0].endswith(latched)
        latch = next(e for e in events if e["kind"] == "fault" and "reason" in e)
        phase = next(e for e in events if e["kind"] == "phase" and e["to"] == "fault")
        assert phase["t"] == latch["t"] and phase["why"] == latched  # in the same cycle
    finally:
        robot.__exit__(None, None, None)


def test_a_stop_after_the_procedure_decided_still_latches_the_stall(tmp_path: Path) -> None:
    """Stopped between the procedure's tick and the supervisor (second look at the time): the
    supervisor latches the stall in that cycle, the procedure takes it up in the next."""
    robot, events = _stop_inside_a_cycle(tmp_path / "run", 2, 0.2)
    try:
        rt = robot.runtime
        latched = rt.core.supervisor.latched_verdict.text
        assert latched.startswith("master stalled: 200.0 ms"), latched
        assert rt.procedure.phase.value == "fault" and rt.procedure.reason == latched
        latch = next(e for e in events if e["kind"] == "fault" and "reason" in e)
        phase = next(e for e in events if e["kind"] == "phase" and e["to"] == "fault")
        assert phase["t"] == pytest.approx(latch["t"] + CFG.period) and phase["why"] == latched
    finally:
        robot.__exit__(None, None, None)


# --- what a missing TPDO1 names ---------------------------------------------------------------


def test_an_injected_sync_loss_names_the_sync_and_every_drive(tmp_path: Path) -> None:
    run = _run(tmp_path, "sync-loss@3")
    reason = run.result.reason
    assert reason == (
        f"SYNC lost: the master sent no SYNC for 3 cycles; no TPDO1 from any of the {len(AXES)} "
        "drives for 3 cycles (allowed 2)"
    )
    assert run.summary_faults[0] == f"all: {reason}" and run.inspected == run.summary_faults
    assert not any(a in reason for a in AXES)  # no drive is blamed
    # the silent drives are escalated after the quick-stop ramp: that too says why they are silent
    for line in run.summary_faults[1:]:
        assert "escalated" in line and "the master sent no SYNC for" in line, line
    assert run.result.outcome == "fault"
    assert [e["why"] for e in run.events if e["kind"] == "phase" and e["to"] == "fault"] == [reason]


def test_one_silent_drive_is_named(tmp_path: Path) -> None:
    run = _run(tmp_path, "tpdo-drop:retro_mc:5@2", max_time=3.0)
    assert run.result.reason == "retro_mc: no TPDO1 for 3 cycles (allowed 2)"
    assert run.summary_faults == [run.result.reason] and run.inspected == run.summary_faults


def test_every_drive_silent_while_the_master_sends_sync_is_sync_lost_or_bus_down(tmp_path: Path) -> None:
    run = _run(tmp_path, *(f"tpdo-drop:{a}:5@2" for a in AXES), max_time=3.0)
    assert run.result.reason == (
        f"no TPDO1 from any of the {len(AXES)} drives for 3 cycles (allowed 2): SYNC lost or bus down"
    )
    assert run.summary_faults == [f"all: {run.result.reason}"]


class _SyncRefusingBus(SimTimeBus):
    """The interface refuses SYNC (only SYNC) for ``fail_for`` seconds from ``fail_at``; the
    cycle's time passes all the same (a refused SYNC steps no drive)."""

    def __init__(self, *, fail_at: float, fail_for: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_at = fail_at
        self.fail_for = fail_for

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        t = self.kernel.time
        if msg.arbitration_id == pdo.SYNC_COB and self.fail_at <= t < self.fail_at + self.fail_for:
            self.kernel.advance(1)
            raise can.CanOperationError("Transmit buffer full")
        super().send(msg, timeout)


def test_a_sync_the_interface_refused_is_named() -> None:
    bus = _SyncRefusingBus(fail_at=1.0, fail_for=0.05, period=CFG.period)
    try:
        with Robot(CFG, clock="simulated", bus=bus, auto_confirm=True) as robot:
            robot.enable()
            result = robot.run_procedure(max_time=2.0)
    finally:
        bus.shutdown()
    assert result.outcome == "fault"
    assert "sending SYNC failed: CanOperationError: Transmit buffer full" in result.reason, result.reason
    t = float(result.faults[0].split("s ", 1)[0])
    assert 1.0 <= t <= 1.0 + 2 * CFG.period


def test_after_a_stall_the_quick_stop_goes_out_before_the_log_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reordering the cycle's events costs no time before the RPDOs: they are held in memory
    until then, and written and fsynced once, in the order above."""
    order: list[str] = []
    out = tmp_path / "run"
    with Robot(CFG, clock="simulated", out=out, inject=["master-freeze:250@0.5"], auto_confirm=True) as robot:
        robot.enable()
        rt = robot.runtime
        assert rt.log is not None
        robot.wait(lambda s: s.t >= 0.45, timeout=1.0)
        file = rt.log._file

        class Disk:
            def write(self, b: bytes) -> int:
                order.append("write")
                return int(file.write(b))

            def flush(self) -> None:
                order.append("flush")
                file.flush()

            def fileno(self) -> int:
                return int(file.fileno())

            def close(self) -> None:
                file.close()

        real_fsync = events_module.os.fsync
        monkeypatch.setattr(rt.log, "_file", Disk())
        monkeypatch.setattr(events_module.os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
        write = rt.master.write

        def traced_write() -> None:
            write()
            order.append("rpdo " + ",".join(f"0x{cw:x}" for cw in rt.master.last_controlword))

        monkeypatch.setattr(rt.master, "write", traced_write)
        while not rt.core.supervisor.latched:
            rt._cycle()
        stop = order.index("rpdo " + ",".join(["0x2"] * len(AXES)))
        assert order[stop - 1].startswith("rpdo "), order[-6:]  # nothing before it in its cycle
        assert order[stop + 1 :] == ["write", "flush", "fsync"], order[-6:]  # once, after it
    events = read_events(out / "events.jsonl")
    first = next(i for i, e in enumerate(events) if e["kind"] == "inject")
    assert events[first + 1]["kind"] == "fault" and events[first + 1]["text"].startswith("master stalled")
