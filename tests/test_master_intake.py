"""The master's frame intake (read, service) on what the other tests leave alone: the SYNC
counter, the tap's timestamps and the real-time deadline with a silent drive."""

from __future__ import annotations

import time
import tomllib
from typing import Any

import can
import pytest

from firmware_iface import pdo
from firmware_iface.cia402 import DriveState, encode_statusword
from firmware_iface.master import OWED_MAX, PLAUSIBLE_SPEED_FACTOR, SYNC_COUNTER_MAX, Master
from firmware_iface.simbus import SimTimeBus
from tests.conftest import CONFIGS
from whih_control import load_config
from whih_control.config import Config


def _config(**cycle: Any) -> Config:
    data = tomllib.loads((CONFIGS / "sim.toml").read_text())
    data["cycle"].update(cycle)
    return load_config(data, base_dir=CONFIGS)


def _tpdo(node: int, counts: int) -> can.Message:
    buf = bytearray(8)
    pdo.encode_tpdo1(buf, encode_statusword(DriveState.OPERATION_ENABLED), counts, 0)
    return can.Message(arbitration_id=pdo.tpdo1_cob(node), data=buf, is_extended_id=False)


def test_sync_counter_counts_1_to_max_and_wraps_to_1() -> None:
    cfg = _config(sync_counter=True)
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        seen: list[int] = []
        m.tap = lambda msg, t, rx: seen.append(msg.data[0]) if msg.arbitration_id == pdo.SYNC_COB else None
        for k in range(SYNC_COUNTER_MAX + 2):
            m.read(k * cfg.period, None)
        assert seen == [*range(1, SYNC_COUNTER_MAX + 1), 1, 2]
    finally:
        bus.shutdown()


def test_the_tap_sees_the_sync_sent_and_every_frame_taken_at_the_cycle_time() -> None:
    cfg = _config()
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        frames: list[tuple[int, float, bool]] = []
        m.tap = lambda msg, t, rx: frames.append((msg.arbitration_id, t, rx))
        bus.kernel.device_send(_tpdo(1, 100))
        m.read(0.0025, None)
        assert frames == [(pdo.SYNC_COB, 0.0025, False), (pdo.tpdo1_cob(1), 0.0025, True)]
        m.tap = None
        bus.kernel.device_send(_tpdo(1, 200))
        assert m.read(0.005, None).axes["ante_wire"].position == pytest.approx(200 / 1000.0)
    finally:
        bus.shutdown()


def test_real_time_read_waits_for_the_deadline_only_while_a_drive_is_silent() -> None:
    """Five drives answer, one is silent: read returns at the deadline (not later), the five are
    fresh and the silent one ages; the tap stamps frames within [t, t + time spent]."""
    cfg = _config()
    channel = f"intake-{time.monotonic_ns()}"
    master_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    drives_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    try:
        m = Master(cfg, master_bus)
        stamps: list[float] = []
        m.tap = lambda msg, t, rx: stamps.append(t) if rx else None
        nodes = [d.node_id for d in cfg.drives.values()]
        for node in nodes[:-1]:
            drives_bus.send(_tpdo(node, 5))
        t0 = time.perf_counter()
        budget = 0.05
        fb = m.read(1.0, t0 + budget)
        spent = time.perf_counter() - t0
        assert budget <= spent < budget + 0.5
        ages = [a.age_cycles for a in fb.axes.values()]
        assert ages[:-1] == [0] * (len(nodes) - 1) and ages[-1] > 0
        assert len(stamps) == len(nodes) - 1
        assert all(1.0 <= s <= 1.0 + spent for s in stamps)
        # every drive answers: read returns as soon as the last frame is in, long before the deadline
        for node in nodes:
            drives_bus.send(_tpdo(node, 6))
        t0 = time.perf_counter()
        fb = m.read(2.0, t0 + 5.0)
        assert time.perf_counter() - t0 < 2.5
        assert all(a.age_cycles == 0 for a in fb.axes.values())
    finally:
        master_bus.shutdown()
        drives_bus.shutdown()


def test_without_sync_simulated_time_still_advances_one_period_per_cycle() -> None:
    """An injected SYNC loss sends nothing, but the simulated-time bus must still step its drives'
    clock (their heartbeat consumers are what notice the silence)."""
    cfg = _config()
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        m.sync_enabled = False
        t0 = bus.kernel.time
        for k in range(3):
            m.read((k + 1) * cfg.period, None)
        assert bus.kernel.time == pytest.approx(t0 + 3 * cfg.period)
    finally:
        bus.shutdown()


@pytest.mark.parametrize("late", [OWED_MAX, OWED_MAX + 1])
def test_a_late_drive_may_answer_at_most_owed_max_syncs_at_once(late: int) -> None:
    """A drive silent for longer than the master keeps count answers its missed SYNCs in one
    cycle: the master takes up to ``OWED_MAX`` of them; one more has a second sender."""
    cfg = _config()
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        k = 0
        for k in range(OWED_MAX + 2):
            m.read(k * cfg.period, None)
        for _ in range(late):
            bus.kernel.device_send(_tpdo(1, 100))
        fb = m.read((k + 1) * cfg.period, None)
        extra = late > OWED_MAX
        assert m.stats.collisions == int(extra) and fb.bus_ok is not extra
        assert fb.axes["ante_wire"].age_cycles == 0
    finally:
        bus.shutdown()


@pytest.mark.parametrize("deadline", ["passed", "none"])
def test_read_without_time_left_takes_what_is_queued_and_never_waits(deadline: str) -> None:
    """A deadline already past (a late cycle), or none at all: read takes the frames already
    received and returns at once, even though one drive is silent."""
    cfg = _config()
    channel = f"intake-late-{deadline}-{time.monotonic_ns()}"
    master_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    drives_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    try:
        m = Master(cfg, master_bus)
        nodes = [d.node_id for d in cfg.drives.values()]
        for node in nodes[:-1]:
            drives_bus.send(_tpdo(node, 5))
        t0 = time.perf_counter()
        fb = m.read(1.0, t0 - 1.0 if deadline == "passed" else None)
        assert time.perf_counter() - t0 < 0.5
        ages = [a.age_cycles for a in fb.axes.values()]
        assert ages[:-1] == [0] * (len(nodes) - 1) and ages[-1] > 0
    finally:
        master_bus.shutdown()
        drives_bus.shutdown()


def test_frames_that_are_no_answer_do_not_end_the_wait_for_the_answers() -> None:
    """Heartbeats, unknown frames, error frames, TPDO1s of the wrong length and 29-bit or CAN FD
    frames with a TPDO1's number queued ahead of the TPDO1s: none counts as an answer, read goes
    on until every drive has answered (before the deadline), so all of them are fresh."""
    cfg = _config()
    channel = f"intake-others-{time.monotonic_ns()}"
    master_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    drives_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    try:
        m = Master(cfg, master_bus)
        nodes = [d.node_id for d in cfg.drives.values()]
        for node in nodes:
            drives_bus.send(
                can.Message(arbitration_id=pdo.heartbeat_cob(node), data=bytes([0x05]), is_extended_id=False)
            )
            drives_bus.send(can.Message(arbitration_id=0x6F0, data=b"\x00", is_extended_id=False))
            drives_bus.send(can.Message(is_error_frame=True))
            # a TPDO1 of the wrong length is a collision (a fault), and no answer either
            drives_bus.send(
                can.Message(arbitration_id=pdo.tpdo1_cob(node), data=b"\x00" * 6, is_extended_id=False)
            )
            look_alike = _tpdo(node, 9)
            drives_bus.send(can.Message(arbitration_id=look_alike.arbitration_id, data=look_alike.data))
            drives_bus.send(
                can.Message(
                    arbitration_id=look_alike.arbitration_id,
                    data=look_alike.data,
                    is_extended_id=False,
                    is_fd=True,
                )
            )
        for node in nodes:
            drives_bus.send(_tpdo(node, 7))
        fb = m.read(1.0, time.perf_counter() + 5.0)
        assert all(a.age_cycles == 0 for a in fb.axes.values())
        assert all(a.position == 7 / cfg.drives[name].counts_per_unit for name, a in fb.axes.items())
        # a second TPDO1 for one SYNC (another sender: a collision) is no second answer either
        drives_bus.send(_tpdo(nodes[0], 8))
        for node in nodes:
            drives_bus.send(_tpdo(node, 8))
        fb = m.read(2.0, time.perf_counter() + 5.0)
        assert not fb.bus_ok and all(a.age_cycles == 0 for a in fb.axes.values())
        # a late drive answering two SYNCs in one cycle is one drive's answer, not two
        for node in nodes[1:]:
            drives_bus.send(_tpdo(node, 9))
        assert m.read(3.0, time.perf_counter() + 0.05).axes["ante_wire"].age_cycles == 1
        drives_bus.send(_tpdo(nodes[0], 9))
        for node in nodes:
            drives_bus.send(_tpdo(node, 10))
        fb = m.read(4.0, time.perf_counter() + 5.0)
        assert fb.bus_ok and all(a.age_cycles == 0 for a in fb.axes.values())
    finally:
        master_bus.shutdown()
        drives_bus.shutdown()


def test_a_jump_of_exactly_the_allowance_either_way_is_taken_one_count_more_faults() -> None:
    """Invariant 7's bound, "no further than the axis can move": PLAUSIBLE_SPEED_FACTOR x
    max_speed x the time since its last TPDO1, plus the tolerance. With numbers exact in binary
    (256 Hz, 16 mm/s at 1000 counts/mm, 0.25 mm: 2 x 16000 / 256 + 250 = 375 counts) a jump of
    exactly 375 counts back or forth is taken, 376 either way is implausible."""
    data = tomllib.loads((CONFIGS / "sim.toml").read_text())
    data["cycle"]["rate_hz"] = 256.0
    data["drives"]["ante_wire"].update(max_speed=16.0, position_jump_tolerance=0.25)
    cfg = load_config(data, base_dir=CONFIGS)
    assert PLAUSIBLE_SPEED_FACTOR == 2.0 and cfg.drives["ante_wire"].counts_per_unit == 1000.0
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        nodes = [d.node_id for d in cfg.drives.values()]
        for k, counts in enumerate((0, -375, 0, 375, -1, 375)):
            for node in nodes:
                bus.kernel.device_send(_tpdo(node, counts if node == 1 else 0))
            fb = m.read((k + 1) * cfg.period, None)
            assert fb.bus_ok == (k < 4), f"cycle {k}: {counts} counts"
            m.service((k + 1) * cfg.period)
    finally:
        bus.shutdown()
