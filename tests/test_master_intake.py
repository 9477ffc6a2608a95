"""The master's frame intake (read, service) on what the other tests leave alone: the SYNC
counter, the tap's timestamps and the real-time deadline with a silent drive."""

from __future__ import annotations

import time
import tomllib
from typing import Any

import can
import canopen
import canopen.emcy
import pytest

from firmware_iface import pdo
from firmware_iface.cia402 import DriveState, encode_statusword
from firmware_iface.master import OWED_MAX, PLAUSIBLE_SPEED_FACTOR, SYNC_COUNTER_MAX, Master
from firmware_iface.sim import SimulatedDrives
from firmware_iface.simbus import SimTimeBus
from firmware_iface.types import DriveEventKind
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


# ---------------------------------------------------------------------------- service()


def _emcy(node: int, data: bytes) -> can.Message:
    return can.Message(arbitration_id=pdo.emcy_cob(node), data=data, is_extended_id=False)


def _heartbeat(node: int, data: bytes) -> can.Message:
    return can.Message(arbitration_id=pdo.heartbeat_cob(node), data=data, is_extended_id=False)


def test_an_emcy_needs_its_error_code_and_its_error_register_is_the_third_byte() -> None:
    """CiA 301: an EMCY is the error code (2 bytes, little-endian), the error register, then the
    manufacturer field. Shorter than the code it is counted as malformed and reported as nothing;
    with the code but without the register it is reported with no register bit set; otherwise the
    register is its third byte, whatever the manufacturer field holds."""
    cfg = _config()
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        for data in (b"", b"\x10"):
            bus.kernel.device_send(_emcy(1, data))
        m.read(cfg.period, None)
        assert m.service(cfg.period) == [] and m.stats.bad_dlc == 2
        bus.kernel.device_send(_emcy(1, b"\x11\x86"))  # the code alone
        bus.kernel.device_send(_emcy(2, b"\x10\x23\x81"))  # code and register, no manufacturer field
        bus.kernel.device_send(_emcy(3, bytes([0x11, 0x86, 0x21, 0xFF, 0x01, 0x02, 0x03, 0x04])))
        m.read(2 * cfg.period, None)
        events = m.service(2 * cfg.period)
        assert [(e.kind, e.axis, e.code) for e in events] == [
            (DriveEventKind.EMCY, "ante_wire", 0x8611),
            (DriveEventKind.EMCY, "ante_wire_rot", 0x2310),
            (DriveEventKind.EMCY, "ante_mc", 0x8611),
        ]
        assert [e.text.rsplit("(", 1)[1] for e in events] == [
            "error register 0x00)",
            "error register 0x81)",
            "error register 0x21)",
        ]
        assert m.stats.bad_dlc == 2
    finally:
        bus.shutdown()


def test_a_heartbeat_of_the_wrong_length_is_counted_once_and_changes_nothing() -> None:
    """CiA 301: a heartbeat is one byte, the NMT state. Empty or longer it is no heartbeat: each
    is counted as malformed once, and the watchdog still misses the drive."""
    cfg = _config()
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        assert m.service(0.0) == []
        timeout = cfg.drives["ante_wire"].heartbeat_timeout_ms / 1000.0
        for data in (b"", b"\x05\x00"):
            bus.kernel.device_send(_heartbeat(1, data))
        m.read(timeout, None)
        events = m.service(2 * timeout)
        assert (DriveEventKind.HEARTBEAT_LOST, "ante_wire") in [(e.kind, e.axis) for e in events]
        assert m.stats.bad_dlc == 2
    finally:
        bus.shutdown()


def test_a_lost_heartbeat_is_reported_once_until_the_drive_is_operational_again() -> None:
    """A drive whose heartbeat came back pre-operational (it was reset) is still not OK: falling
    silent again is no new loss. Once it is operational again, the next silence is a new loss."""
    cfg = _config()
    bus = SimTimeBus(period=cfg.period)
    timeout = cfg.drives["ante_wire"].heartbeat_timeout_ms / 1000.0
    try:
        m = Master(cfg, bus)
        nodes = [d.node_id for d in cfg.drives.values()]
        t = 0.0

        def lost_after(node_1: bytes | None) -> list[str]:
            """One heartbeat from every drive (node 1's as given, or none), then 1.5 timeouts
            of silence: the axes reported lost."""
            nonlocal t
            for node in nodes:
                if node != 1:
                    bus.kernel.device_send(_heartbeat(node, b"\x05"))
            if node_1 is not None:
                bus.kernel.device_send(_heartbeat(1, node_1))
            m.read(t, None)
            lost = [e.axis for e in m.service(t) if e.kind is DriveEventKind.HEARTBEAT_LOST]
            for _ in range(3):
                t += timeout / 2
                for node in nodes:
                    if node != 1:
                        bus.kernel.device_send(_heartbeat(node, b"\x05"))
                m.read(t, None)
                lost += [e.axis for e in m.service(t) if e.kind is DriveEventKind.HEARTBEAT_LOST]
            return lost

        assert lost_after(None) == ["ante_wire"]
        assert lost_after(bytes([pdo.NMT_PRE_OPERATIONAL])) == []
        assert not m.feedback.axes["ante_wire"].heartbeat_ok
        assert lost_after(bytes([pdo.NMT_OPERATIONAL])) == ["ante_wire"]
    finally:
        bus.shutdown()


def test_an_implausible_jump_is_reported_once_and_not_again_with_another_axis() -> None:
    """Each jump is one IMPLAUSIBLE event naming its axis; a later jump of another axis is that
    axis's event alone."""
    cfg = _config()
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        nodes = [d.node_id for d in cfg.drives.values()]
        far = 1_000_000  # counts: 1 m at 1000 counts/mm, beyond any axis's allowance in a cycle
        reported: list[tuple[str, int | None]] = []
        # node 1 jumps in cycle 1, node 4 in cycle 3; each stays where it jumped to
        jumps_at = {1: 1, 4: 3}
        for k, moved in enumerate((None, 1, None, 4, None)):
            for node in nodes:
                bus.kernel.device_send(_tpdo(node, far if k >= jumps_at.get(node, k + 1) else 0))
            t = (k + 1) * cfg.period
            m.read(t, None)
            events = [e for e in m.service(t) if e.kind is DriveEventKind.IMPLAUSIBLE]
            reported += [(e.axis, e.code) for e in events]
            assert len(events) == (moved is not None), f"cycle {k}"
        assert reported == [("ante_wire", far), ("retro_wire", far)]
    finally:
        bus.shutdown()


class _StateBus(SimTimeBus):
    """The simulated-time bus with an interface state that the test sets, counting its reads (a
    query to the interface's driver on real hardware)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.now = can.BusState.ACTIVE
        self.reads = 0

    @property
    def state(self) -> can.BusState:
        self.reads += 1
        return self.now

    @state.setter
    def state(self, new_state: can.BusState) -> None:
        self.now = new_state


def test_the_heartbeat_goes_out_on_its_schedule_and_the_bus_state_is_polled_with_it() -> None:
    """Once running, the master heartbeat goes out at every step of its schedule, in the call
    at that very time, and is tapped as sent. The interface's state is polled with it (not every
    cycle); error passive is reported at the first poll. After a stall the schedule restarts from
    the late beat: the next beat one period after it, not at once."""
    cfg = _config()
    bus = _StateBus(period=cfg.period)
    period = cfg.bus.master_heartbeat_ms / 1000.0
    master_hb = pdo.heartbeat_cob(cfg.bus.master_node_id)
    try:
        with SimulatedDrives(cfg, bus):
            m = Master(cfg, bus)
            m.setup()
            sent: list[bool] = []  # the tap's "received" flag of each master heartbeat
            m.tap = lambda msg, t, rx: sent.append(rx) if msg.arbitration_id == master_hb else None

            def service(t: float) -> tuple[int, int, list[DriveEventKind]]:
                """Heartbeats sent, state polls and bus errors of one call (the drives are not
                cycled here: their heartbeats are missed, which is beside the point)."""
                beats, reads = len(sent), bus.reads
                events: list[DriveEventKind] = [
                    e.kind for e in m.service(t) if e.kind is DriveEventKind.BUS_ERROR
                ]
                return len(sent) - beats, bus.reads - reads, events

            t = 10.0
            calls = []
            for k in range(6):
                # the step itself (the schedule's own sum, so exactly equal), then between steps
                calls.append(service(t))
                if k == 3:
                    bus.now = can.BusState.PASSIVE
                calls.append(service(t + period / 2))
                t += period
            assert calls[::2] == [(1, 1, [])] * 4 + [(1, 1, [DriveEventKind.BUS_ERROR]), (1, 1, [])]
            assert calls[1::2] == [(0, 0, [])] * 6
            assert sent == [False] * 6
            # a stall: the call one whole period late sends at once, the next one a period later
            late = t + period
            assert [service(x)[0] for x in (late, late + period / 2, late + period)] == [1, 0, 1]
            m.tap = None
            m.shutdown()
    finally:
        bus.shutdown()


def test_a_collision_on_the_rpdo1_of_the_lowest_and_highest_node_ids_names_the_axis() -> None:
    """A frame on a drive's RPDO1 COB-ID (0x200 + node, nodes 1...127) names that drive's axis."""
    data = tomllib.loads((CONFIGS / "sim.toml").read_text())
    data["bus"]["master_node_id"] = 100
    data["drives"]["retro_mc"]["node_id"] = 127
    cfg = load_config(data, base_dir=CONFIGS)
    assert cfg.drives["ante_wire"].node_id == 1
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        for k, node in enumerate((1, 127)):
            bus.kernel.device_send(
                can.Message(arbitration_id=pdo.rpdo1_cob(node), data=b"\x0f\x00", is_extended_id=False)
            )
            m.read((k + 1) * cfg.period, None)
            events = m.service((k + 1) * cfg.period)
            assert [(e.kind, e.axis, e.code) for e in events] == [
                (DriveEventKind.COLLISION, "ante_wire" if node == 1 else "retro_mc", pdo.rpdo1_cob(node))
            ]
    finally:
        bus.shutdown()


def test_emcy_frames_from_canopen_s_producer_are_read_as_it_packs_them() -> None:
    """The ``canopen`` library's EMCY producer (code, register, manufacturer field: 8 bytes) as a
    drive: the master reports its code and error register, and its error reset (code 0) as no
    fault."""
    cfg = _config()
    channel = f"intake-emcy-{time.monotonic_ns()}"
    master_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    network = canopen.Network()
    network.connect(interface="virtual", channel=channel, receive_own_messages=False)
    try:
        m = Master(cfg, master_bus)
        producer = canopen.emcy.EmcyProducer(pdo.emcy_cob(3))
        producer.network = network
        producer.send(0x8611, 0x21, b"\x01\x02\x03\x04\x05")
        producer.reset()
        m.read(1.0, None)
        events = m.service(1.0)
        assert [(e.kind, e.axis, e.code) for e in events] == [(DriveEventKind.EMCY, "ante_mc", 0x8611)]
        assert "error register 0x21" in events[0].text and m.stats.emcy_resets == 1
        assert m.stats.bad_dlc == 0
    finally:
        network.disconnect()
        master_bus.shutdown()
