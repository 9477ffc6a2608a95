"""One contract suite for a rig: simulated drives on the virtual bus by default, real hardware when
``WHIH_HIL_CONFIG`` names a rig config. Everything runs on the wall clock."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import can
import pytest

from firmware_iface.cia402 import DriveState
from firmware_iface.faults import RUNTIME_FAULT_KINDS, FaultKind, parse_fault
from tests.conftest import EPOS4_DCF, FAULT_EXAMPLES
from tests.strict_drive import QSA, SOD, StrictDrives
from tests.test_strict_drive import _config as strict_config
from whih_control import Config, ProcedureError, Robot, SafetyError
from whih_control.types import LINEAR_AXES

from .bench import bench_robot

pytestmark = [pytest.mark.hil, pytest.mark.realtime]  # wall clock: a step of its own in CI

AT = 1.5
"""Cycle time (s) at which each fault kind is injected: the procedure is moving a wire then."""


def test_enable_reaches_operation_enabled(robot: Robot) -> None:
    robot.enable()
    master = robot.runtime.master
    assert all(a.state is DriveState.OPERATION_ENABLED for a in master.feedback.axes.values())
    assert robot.runtime.procedure.phase.value == "ready"


def test_jog_moves_by_the_requested_distance(robot: Robot) -> None:
    robot.enable()
    fb = robot.runtime.master.feedback.axes
    before = {a: f.position for a, f in fb.items()}
    robot.jog("ante_wire", 1.0)
    settled = robot.time + 20 * robot.runtime.cfg.period  # the last setpoint settles in the drive
    robot.wait(lambda s: s.t >= settled, timeout=1.0)
    assert fb["ante_wire"].position - before["ante_wire"] == pytest.approx(1.0, abs=0.05)
    others = [a for a in fb if a != "ante_wire"]
    assert all(abs(fb[a].position - before[a]) < 0.05 for a in others)


def test_jog_beyond_travel_is_refused_and_nothing_moves(robot: Robot, rig_config: Config) -> None:
    robot.enable()
    fb = robot.runtime.master.feedback.axes
    before = fb["retro_mc"].position
    span = rig_config.drives["retro_mc"].travel_max - rig_config.drives["retro_mc"].travel_min
    with pytest.raises((SafetyError, ValueError)):
        robot.jog("retro_mc", span + 1.0)
    assert fb["retro_mc"].position == pytest.approx(before, abs=0.01)


def test_jog_before_enable_is_refused(robot: Robot) -> None:
    with pytest.raises(ProcedureError):
        robot.jog("ante_wire", 0.5)


def test_full_procedure_in_real_time(rig_config: Config, simulated: bool, tmp_path: Path) -> None:
    if not simulated:
        pytest.skip("the full procedure runs only on the simulator (a real rig needs a lesion)")
    with Robot(rig_config, out=tmp_path / "run", auto_confirm=True) as robot:
        robot.enable()
        result = robot.run_procedure(max_time=120.0)
    assert result.outcome == "complete" and result.crossed, result.reason
    assert result.sim_seconds >= 10.0
    # a stale cycle is a drive-cycle without TPDO1; a loaded shared machine may cost a few
    assert result.stale_cycles <= 0.005 * result.cycles * len(rig_config.drives), result.stale_cycles
    loop = result.loop
    # reported, and sane: the budget itself is measured by benchmarks/bench_cycle.py
    assert loop["cycles"] == result.cycles and loop["rate_hz"] > 0.9 * rig_config.cycle.rate_hz
    assert loop["period_error_p99_ms"] >= 0.0 and "overruns" in loop
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["loop"]["period_error_max_ms"] == loop["period_error_max_ms"]
    # every frame, the closing stop's included, is stamped in the run's cycle time
    stamps = [m.timestamp for m in can.LogReader(str(tmp_path / "run" / "trace.asc"))]
    assert len(stamps) > 13 * result.cycles * 0.99
    assert min(stamps) >= 0.0 and max(stamps) < result.sim_seconds + 2.0, (min(stamps), max(stamps))


@pytest.mark.parametrize("kind", FAULT_EXAMPLES)
def test_each_fault_kind_ends_in_fault(kind: str, rig_config: Config, simulated: bool) -> None:
    """Every fault kind stops the rig; the stop distance is measured from the drives' own
    position actual (their TPDO1s, and after close the shutdown's). Kinds of the master and the
    operator (SYNC loss, master freeze, e-stop, dead-man, imaging loss) need no simulator and run
    on a real rig too; only the drives' own faults need the simulated drives."""
    spec = parse_fault(f"{kind}@{AT}")
    if not simulated and spec.kind not in RUNTIME_FAULT_KINDS:
        pytest.skip("a drive's own fault is injected inside the simulated drives")
    _fault_ends_in_a_short_stop(rig_config, kind)


RUNTIME_EXAMPLES = [k for k in FAULT_EXAMPLES if parse_fault(f"{k}@1").kind in RUNTIME_FAULT_KINDS]


@pytest.mark.parametrize("kind", RUNTIME_EXAMPLES)
def test_runtime_fault_kinds_against_drives_we_did_not_write(kind: str) -> None:
    """The kinds a rig runs, against six strict EPOS4 emulations built from maxon's DCF with
    canopen's LocalNode (tests/strict_drive.py: not whih's simulated drive, no plant, no fault
    injection): each stops the run, and the stop distance comes from their own position actual."""
    channel = f"whih-hil-strict-{os.getpid()}-{kind}"
    with StrictDrives(channel, EPOS4_DCF, list(range(1, 7))) as drives:
        _fault_ends_in_a_short_stop(strict_config(channel), kind)
        assert all(d.state in (SOD, QSA) for d in drives), [d.state for d in drives]


def _fault_ends_in_a_short_stop(rig_config: Config, kind: str) -> None:
    cfg = rig_config.replace(safety=dataclasses.replace(rig_config.safety, imaging_max_age_s=0.5))
    # every TPDO1 the master takes: (cycle time, node, position actual in counts)
    frames: list[tuple[float, int, int]] = []

    def tap(msg: can.Message, t: float, rx: bool) -> None:
        if rx and 0x181 <= msg.arbitration_id <= 0x1FF and msg.dlc == 8:
            frames.append(
                (t, msg.arbitration_id - 0x180, int.from_bytes(msg.data[2:6], "little", signed=True))
            )

    # the go and crossing confirmed from here: a procedure confirming its own gates passes ready
    # before enable() on the cycle thread sees it
    with bench_robot(cfg, inject=[f"{kind}@{AT}"]) as robot:
        rt = robot.runtime
        rt.master.tap = tap
        robot.enable()
        result = robot.run_procedure(max_time=10.0, confirm=lambda gate: True)
        t_latch = rt._latch_t
    assert result.outcome == "fault", (result.outcome, result.reason)
    assert result.faults and t_latch is not None
    # where the stop starts: the latch; for a master freeze the freeze itself (from there on no
    # cycle runs: the drives stop on their own heartbeat consumers)
    spec = parse_fault(f"{kind}@{AT}")
    t_ref = min(t_latch, AT) if spec.kind is FaultKind.MASTER_FREEZE else t_latch
    stop = {}
    speed = {}
    for axis in LINEAR_AXES:
        d = cfg.drives[axis]
        mine = [(t, c) for t, n, c in frames if n == d.node_id]
        # how fast the drive moved over the 0.2 s before the fault came (printed: a stop distance
        # means something only for a drive that was moving; in real time the procedure's phase at
        # AT varies with how long enable() took, so it is reported, not asserted)
        before = [(t, c) for t, c in mine if AT - 0.2 <= t < AT]
        if len(before) >= 2:
            dt = before[-1][0] - before[0][0]
            speed[axis] = abs(before[-1][1] - before[0][1]) / d.counts_per_unit / max(dt, 1e-9)
        # the reading the latching cycle took (for an encoder jump, the jumped one): what the
        # drive does after it is the stop
        # (with SYNC lost nothing answers after the latch: the last reading before it, then)
        at_latch = next((c for t, c in mine if t >= t_ref), [c for t, c in mine if t < t_ref][-1])
        # the last report: after close, once every drive answered again (a SYNC loss ends there)
        stop[axis] = abs(mine[-1][1] - at_latch) / d.counts_per_unit
    print(
        f"\n{kind}: stop distance from the drives' position actual (mm): {stop}; "
        f"speed before the fault (mm/s): { {a: round(v, 2) for a, v in speed.items()} }"
    )
    assert max(stop.values()) <= cfg.safety.stop_distance_max, stop
