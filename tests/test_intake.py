"""The master's frame intake (invariant 7): collisions and implausible positions are faults."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import can
import pytest

from firmware_iface import master as master_module
from firmware_iface import pdo
from firmware_iface.cia402 import DriveState, encode_statusword
from firmware_iface.master import PLAUSIBLE_SPEED_FACTOR, Master
from firmware_iface.sim import SimulatedDrives
from firmware_iface.simbus import SimTimeBus
from firmware_iface.types import DriveEventKind
from whih_control.api import Robot, simulate
from whih_control.config import Config, load_config

from .conftest import CONFIGS

ENABLED = encode_statusword(DriveState.OPERATION_ENABLED)


@pytest.fixture(scope="module")
def cfg() -> Config:
    cfg = load_config(CONFIGS / "sim.toml")
    return cfg.replace(bus=dataclasses.replace(cfg.bus, interface="whih-sim"))


@pytest.fixture
def simbus(cfg: Config) -> Iterator[SimTimeBus]:
    bus = SimTimeBus(period=cfg.period)
    yield bus
    bus.shutdown()


def _tpdo(node: int, counts: int, *, dlc: int = 8, sw: int = ENABLED) -> can.Message:
    buf = bytearray(8)
    pdo.encode_tpdo1(buf, sw, counts, 0)
    return can.Message(arbitration_id=pdo.tpdo1_cob(node), data=buf[:dlc], is_extended_id=False)


def _answered_cycle(m: Master, bus: SimTimeBus, t: float, counts: int = 0) -> None:
    """Every drive answers; node 1 (ante_wire) reports ``counts``, the others 0."""
    for node in m.nodes:
        bus.kernel.device_send(_tpdo(node, counts if node == 1 else 0))
    assert m.read(t, None).bus_ok
    m.service(t)


def test_a_second_tpdo1_in_one_cycle_is_a_collision_naming_its_cob_id(
    cfg: Config, simbus: SimTimeBus
) -> None:
    m = Master(cfg, simbus)
    _answered_cycle(m, simbus, 0.0025)
    for node in m.nodes:
        simbus.kernel.device_send(_tpdo(node, 10))
    simbus.kernel.device_send(_tpdo(3, 4_000))  # someone else's ante_mc: the gap would be 4 mm wrong
    fb = m.read(0.005, None)
    assert not fb.bus_ok
    assert fb.axes["ante_mc"].position == pytest.approx(0.010)  # the first is kept
    coll = [e for e in m.service(0.005) if e.kind is DriveEventKind.COLLISION]
    assert [(e.axis, e.code) for e in coll] == [("ante_mc", 0x183)]
    assert "0x183" in coll[0].text and "second time" in coll[0].text


def test_a_drive_running_late_is_not_a_collision(cfg: Config, simbus: SimTimeBus) -> None:
    """A drive may answer earlier SYNCs late, several in one cycle (a busy machine is not a
    second node): every TPDO1 is taken while the SYNCs sent outnumber them; the newest is kept."""
    m = Master(cfg, simbus)
    _answered_cycle(m, simbus, 0.0025)
    for node in m.nodes[1:]:
        simbus.kernel.device_send(_tpdo(node, 0))
    assert m.read(0.005, None).bus_ok  # ante_wire missed this one
    simbus.kernel.device_send(_tpdo(1, 20))  # ... and answers it now, with the next one
    assert m.read(0.0075, None).bus_ok
    for t in (0.01, 0.0125, 0.015):  # then always one late: one answer each cycle
        for node in m.nodes[1:]:
            simbus.kernel.device_send(_tpdo(node, 0))
        simbus.kernel.device_send(_tpdo(1, 25))
        assert m.read(t, None).bus_ok
    for node in m.nodes:
        simbus.kernel.device_send(_tpdo(node, 30))
    simbus.kernel.device_send(_tpdo(1, 35))  # caught up (the late one) ...
    assert m.read(0.0175, None).bus_ok
    assert m.feedback.axes["ante_wire"].position == pytest.approx(0.035)
    simbus.kernel.device_send(_tpdo(1, 40))
    simbus.kernel.device_send(_tpdo(1, 45))  # ... so one more than the SYNCs sent is a second sender
    assert not m.read(0.02, None).bus_ok


@pytest.mark.parametrize("dlc", [0, 6, 7])
def test_a_tpdo1_of_the_wrong_length_is_a_collision(cfg: Config, simbus: SimTimeBus, dlc: int) -> None:
    m = Master(cfg, simbus)
    simbus.kernel.device_send(_tpdo(4, 0, dlc=dlc))
    assert not m.read(0.0025, None).bus_ok
    (event,) = m.service(0.0025)
    assert event.kind is DriveEventKind.COLLISION and event.axis == "retro_wire" and event.code == 0x184
    assert f"DLC {dlc} (expected 8)" in event.text


def test_a_position_jump_beyond_physics_is_a_fault_in_the_cycle_it_arrives(
    cfg: Config, simbus: SimTimeBus
) -> None:
    m = Master(cfg, simbus)
    d = cfg.drives["ante_wire"]
    per_cycle = PLAUSIBLE_SPEED_FACTOR * d.max_speed * cfg.period + d.position_jump_tolerance
    _answered_cycle(m, simbus, 0.0025)
    step = int(per_cycle * d.counts_per_unit)  # the most one cycle allows: taken
    _answered_cycle(m, simbus, 0.005, counts=step)
    for node in m.nodes:
        simbus.kernel.device_send(_tpdo(node, 2 * step + 2 if node == 1 else 0))
    assert not m.read(0.0075, None).bus_ok
    (event,) = m.service(0.0075)
    assert event.kind is DriveEventKind.IMPLAUSIBLE and event.axis == "ante_wire"
    assert "jumped +" in event.text and "position_jump_tolerance" in event.text
    # a drive silent for cycles may have moved further: the allowance grows with its age
    m.read(0.01, None)
    m.read(0.0125, None)
    for node in m.nodes:
        further = int(
            (3 * PLAUSIBLE_SPEED_FACTOR * d.max_speed * cfg.period + d.position_jump_tolerance)
            * d.counts_per_unit
        )
        simbus.kernel.device_send(_tpdo(node, 2 * step + 2 + further if node == 1 else 0))
    assert m.read(0.015, None).bus_ok


class _PerfClock:
    """``time`` for the master's real-time read: ``perf_counter`` is set by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


def test_in_real_time_a_sync_sent_late_allows_what_the_drive_moved_meanwhile(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A master held up between its cycle's slot and its SYNC (the scheduler, a collection) finds
    a drive in CSP moved on toward its target meanwhile: the bound counts the time between the
    SYNCs, so that is no position jump; one cycle later the bound is one period's again."""
    clock = _PerfClock()
    monkeypatch.setattr(master_module, "time", clock)
    rt = cfg.replace(bus=dataclasses.replace(cfg.bus, interface="virtual", channel="intake-late-sync"))
    master_bus = can.Bus(interface="virtual", channel="intake-late-sync", ignore_config=True)
    drive_bus = can.Bus(interface="virtual", channel="intake-late-sync", ignore_config=True)
    try:
        m = Master(rt, master_bus)
        d = rt.drives["ante_wire"]
        per_cycle = int(
            (PLAUSIBLE_SPEED_FACTOR * d.max_speed * rt.period + d.position_jump_tolerance) * d.counts_per_unit
        )
        late = 0.1  # the second SYNC went out 100 ms after the first, in the next slot

        def cycle(t: float, counts: int) -> bool:
            for node in m.nodes:
                drive_bus.send(_tpdo(node, counts if node == 1 else 0))
            ok = m.read(t, clock.now + 0.5).bus_ok
            m.service(t)
            return ok

        assert cycle(0.0025, 0)
        clock.now += late
        moved = int(PLAUSIBLE_SPEED_FACTOR * d.max_speed * late * d.counts_per_unit)  # at full speed
        assert cycle(0.005, moved)
        assert m.feedback.axes["ante_wire"].position == pytest.approx(moved / d.counts_per_unit)
        clock.now += rt.period
        assert not cycle(0.0075, moved + 2 * per_cycle)  # on time again: one period's bound
    finally:
        master_bus.shutdown()
        drive_bus.shutdown()


def test_feedback_age_counts_from_the_start_of_the_exchange(cfg: Config, simbus: SimTimeBus) -> None:
    """enable() failed at once with 'no TPDO1 for 1000001 cycles' when the first TPDO1 was late."""
    with SimulatedDrives(cfg, simbus):
        m = Master(cfg, simbus)
        m.setup()
        assert all(a.age_cycles == 0 for a in m.feedback.axes.values())
        simbus.kernel.advance(0)
        m.sync_enabled = False  # no SYNC, no TPDO1 this cycle
        fb = m.read(simbus.kernel.time, None)
        assert all(a.age_cycles == 1 for a in fb.axes.values())


def test_feedback_counts_the_cycles_in_a_row_the_master_sent_no_sync(cfg: Config, simbus: SimTimeBus) -> None:
    """What lets a fault name a lost SYNC rather than a drive (safety: missing TPDO1s)."""
    with SimulatedDrives(cfg, simbus):
        m = Master(cfg, simbus)
        m.setup()
        assert m.read(simbus.kernel.time, None).sync_missed == 0
        m.sync_enabled = False
        assert [m.read(simbus.kernel.time, None).sync_missed for _ in range(3)] == [1, 2, 3]
        m.sync_enabled = True
        fb = m.read(simbus.kernel.time, None)
        assert fb.sync_missed == 0 and all(a.age_cycles == 0 for a in fb.axes.values())


@pytest.mark.parametrize(
    "axis", ["ante_wire", "ante_wire_rot", "ante_mc", "retro_wire", "retro_wire_rot", "retro_mc"]
)
def test_an_encoder_jump_faults_in_the_cycle_it_arrives_on_every_axis(cfg: Config, axis: str) -> None:
    """3 mm (or degrees) at once: before, only the drive's own following error noticed, 20 ms on."""
    result = simulate(cfg, seed=0, inject=[f"encoder-jump:{axis}:3.0@1.0"], max_time=3.0)
    assert result.outcome == "fault"
    first = result.faults[0]
    t = float(first.split("s ", 1)[0])
    assert 1.0 <= t <= 1.0 + 1.5 * cfg.period
    assert f"{axis}:" in first and "position actual jumped +" in first
    jumped = float(first.split("jumped ", 1)[1].split(" ", 1)[0])
    assert jumped == pytest.approx(3.0, abs=0.1)  # the axis' own motion of the cycle besides


def test_frames_of_another_node_stop_a_running_robot(cfg: Config) -> None:
    """End to end: a second sender of ante_mc's TPDO1 latches a fault and quick-stops at once."""
    with Robot(cfg, auto_confirm=True) as robot:
        robot.enable()
        rt = robot.runtime
        assert isinstance(rt.bus, SimTimeBus)
        for _ in range(40):
            rt._cycle()
        assert not rt.core.supervisor.latched
        rt.bus.kernel.device_send(_tpdo(3, 0))  # queued before the drive's own answer to the next SYNC
        rt._cycle()
        assert rt.core.supervisor.latched
        assert "0x183" in rt.core.supervisor.latched_verdict.text or any("0x183" in f for f in rt.faults)
        assert set(rt.master.last_controlword) == {0x02}  # quick stop, this same cycle
