"""Other nodes on a running robot's bus: another SDO client on our drives, a drive reset mid-run,
and frames on COB-IDs nobody here uses.

The hostile SDO client is the ``canopen`` library's own (``RemoteNode.sdo``) on the simulated-time
bus: what it sends, the simulated drives and the master both hear; what the drives answer, it
hears. The drives' SDO servers are ``canopen``'s too (``LocalNode``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import canopen
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_iface import pdo
from firmware_iface.master import Master
from firmware_iface.sim import SimulatedDrives
from firmware_iface.simbus import SimKernel, SimTimeBus
from firmware_iface.types import DriveEventKind
from whih_control.api import Robot
from whih_control.config import Config, load_config
from whih_control.errors import SafetyError
from whih_control.events import read_events
from whih_control.inspect_run import inspect_run
from whih_control.types import Reason

from .conftest import CONFIGS

CW_QUICK_STOP = 0x02
"""What the master sends every drive in the cycle a fault latches (QUICK_STOP goal)."""


def _sim_time_config() -> Config:
    cfg = load_config(CONFIGS / "sim.toml")
    return cfg.replace(bus=dataclasses.replace(cfg.bus, interface="whih-sim"))


class _PeerBus(can.BusABC):
    """Another node's handle on the simulated-time bus: the drives and the master hear what it
    sends (the request first, then the drive's answer, as on a wire)."""

    def __init__(self, kernel: SimKernel, drives: SimulatedDrives) -> None:
        super().__init__(channel="peer")
        self._kernel = kernel
        self._drives = drives

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        del timeout
        self._kernel.device_send(msg)  # the master's receive queue
        self._drives.on_frame(msg)  # the drive answers at once (into the same queue)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        del timeout
        return None, False


class _SdoPeer:
    """The ``canopen`` library as a second SDO client of one drive, with that drive's EDS."""

    def __init__(self, robot: Robot, axis: str) -> None:
        rt = robot.runtime
        assert isinstance(rt.bus, SimTimeBus) and rt.drives is not None
        self._kernel = rt.bus.kernel
        self.bus = _PeerBus(self._kernel, rt.drives)
        self.network = canopen.Network(self.bus)
        d = rt.cfg.drives[axis]
        self.node = canopen.RemoteNode(d.node_id, str(d.eds))
        self.network.add_node(self.node)
        self.node.sdo.RESPONSE_TIMEOUT = 0.05  # the answer is there before the client waits
        self._kernel.add_listener(self._heard)

    def _heard(self, msg: can.Message) -> None:
        self.network.notify(msg.arbitration_id, msg.data, msg.timestamp)

    def close(self) -> None:
        self._kernel.remove_listener(self._heard)
        self.bus.shutdown()


@pytest.fixture
def moving_robot() -> Iterator[Robot]:
    """A simulated-time robot in the middle of its procedure (the wires moving)."""
    with Robot(_sim_time_config(), auto_confirm=True) as robot:
        robot.enable()
        robot.runtime.procedure.confirm()
        for _ in range(400):
            robot.runtime._cycle()
        assert not robot.runtime.core.supervisor.latched
        yield robot


def _write_quick_stop_decel(node: canopen.RemoteNode) -> Any:
    node.sdo[0x6085].raw = 1  # the quick-stop ramp made 1 count/s^2: a drive that never stops
    return node.sdo.upload(0x6085, 0)  # and read back, as set-up does


def _read_statusword(node: canopen.RemoteNode) -> Any:
    return node.sdo[0x6041].raw


@pytest.mark.parametrize(
    ("exchange", "what", "frames"),
    [(_write_quick_stop_decel, "write of 0x6085:0", 4), (_read_statusword, "read of 0x6041:0", 2)],
    ids=["write-0x6085", "read-0x6041"],
)
def test_another_sdo_client_on_a_drive_faults_the_cycle_it_arrives(
    moving_robot: Robot, exchange: Any, what: str, frames: int
) -> None:
    """An SDO exchange with retro_mc (node 6) between two cycles: the next cycle latches a
    COLLISION naming 0x606 (the request) and 0x586 (the answer) and quick-stops every drive."""
    rt = moving_robot.runtime
    peer = _SdoPeer(moving_robot, "retro_mc")
    try:
        exchange(peer.node)  # the drive's SDO server answered: the exchange went through
    finally:
        peer.close()
    assert not rt.core.supervisor.latched
    rt._cycle()
    sup = rt.core.supervisor
    assert sup.latched
    v = sup.latched_verdict
    assert v.reason is Reason.BUS_FAULT and v.axis == "retro_mc"
    assert "0x606" in v.text and what in v.text and "another SDO client" in v.text
    assert any("0x586" in f and "answer from node 6" in f for f in rt.faults)
    assert set(rt.master.last_controlword) == {CW_QUICK_STOP}  # this same cycle
    assert rt.master.stats.collisions == frames  # each request and each answer
    assert rt.master.stats.unknown_cob_ids == 0
    # a write may have changed what set-up wrote and read back: no acknowledge re-enables the
    # drive on it (as after a reset); a read changed nothing, and the acknowledge goes through
    moving_robot.step(400)  # every ramp over
    if exchange is _write_quick_stop_decel:
        assert rt.master.needs_setup() and "write of 0x6085:0" in rt.master.needs_setup()[0]
        with pytest.raises(SafetyError, match=r"write of 0x6085:0.*close this robot and open a new one"):
            moving_robot.acknowledge()
        assert sup.latched
    else:
        assert rt.master.needs_setup() == []
        moving_robot.acknowledge()
        assert not sup.latched


def test_sdo_frames_are_no_collision_before_set_up_and_a_default_run_has_none() -> None:
    """Set-up's own SDO is not a collision (the procedure runs as before), and frames on an SDO
    COB-ID before the master runs are only counted: nobody's collision yet."""
    cfg = _sim_time_config()
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        bus.kernel.device_send(can.Message(arbitration_id=0x586, data=bytes(8), is_extended_id=False))
        bus.kernel.device_send(can.Message(arbitration_id=0x606, data=bytes(8), is_extended_id=False))
        fb = m.read(cfg.period, None)
        assert fb.bus_ok and m.service(cfg.period) == [] and m.stats.collisions == 0
        assert m.stats.unknown_cob_ids == 2
    finally:
        bus.shutdown()
    with Robot(cfg, auto_confirm=True) as robot:
        robot.enable()
        robot.runtime.procedure.confirm()
        robot.step(2000)  # 5 s of the procedure
        stats = robot.runtime.master.stats
        assert not robot.runtime.core.supervisor.latched
        assert (stats.collisions, stats.unknown_cob_ids, stats.bad_dlc) == (0, 0, 0)


@contextlib.contextmanager
def _master_set_up() -> Iterator[tuple[Master, SimTimeBus]]:
    """A master that has set up the simulated drives on the simulated-time bus."""
    cfg = _sim_time_config()
    bus = SimTimeBus(period=cfg.period)
    drives = SimulatedDrives(cfg, bus)
    drives.start()
    try:
        m = Master(cfg, bus)
        m.setup()
        yield m, bus
    finally:
        drives.stop()
        bus.shutdown()


@pytest.fixture(scope="module")
def set_up_master() -> Iterator[tuple[Master, SimTimeBus]]:
    with _master_set_up() as master_and_bus:
        yield master_and_bus


_SDO_COBS = [base + n for base in (0x580, 0x600) for n in range(1, 7)]


@settings(deadline=None)
@given(frames=st.lists(st.tuples(st.sampled_from(_SDO_COBS), st.binary(max_size=8)), min_size=1, max_size=8))
def test_any_sdo_frame_of_a_drive_once_set_up_is_one_collision_naming_it(
    set_up_master: tuple[Master, SimTimeBus], frames: list[tuple[int, bytes]]
) -> None:
    """Whatever its length or content, each SDO frame of a configured drive is one COLLISION in
    the cycle that reads it, naming its COB-ID and the drive's axis; the cycle's bus is not OK."""
    m, bus = set_up_master
    before = m.stats.collisions
    for cob, data in frames:
        bus.kernel.device_send(can.Message(arbitration_id=cob, data=data, is_extended_id=False))
    fb = m.read(bus.kernel.time + bus.kernel.period, None)
    events = [e for e in m.service(fb.t) if e.kind is DriveEventKind.COLLISION]
    assert not fb.bus_ok
    assert m.stats.collisions - before == len(frames)
    assert [(e.code, e.axis) for e in events] == [
        (cob, m.axes[m.nodes.index(cob & 0x7F)]) for cob, _ in frames
    ]
    for (cob, _), e in zip(frames, events, strict=True):
        assert f"COB-ID 0x{cob:03X}" in e.text and f"node {cob & 0x7F} " in e.text


@pytest.mark.parametrize(
    ("cob", "data", "lost"),
    [
        (0x606, b"", True),  # nothing to tell it by: taken for a write
        (0x606, b"\x20", True),  # initiate download (write), cut short
        (0x606, b"\x23\x85\x60\x00\x01\x00\x00\x00", True),  # 0x6085 := 1
        (0x606, b"\x00" * 8, True),  # download segment
        (0x606, b"\xc0" + b"\x00" * 7, True),  # block download
        (0x606, b"\x40", False),  # initiate upload (read), one byte
        (0x606, b"\x40\x41\x60\x00\x00\x00\x00\x00", False),  # read of 0x6041
        (0x606, b"\xa0" + b"\x00" * 7, False),  # block upload
        (0x606, b"\x80" + b"\x00" * 7, False),  # abort
        (0x586, b"\x60\x85\x60\x00\x00\x00\x00\x00", False),  # an answer changes nothing
    ],
    ids=[
        "empty",
        "write-1-byte",
        "write",
        "segment",
        "block-down",
        "read-1-byte",
        "read",
        "block-up",
        "abort",
        "answer",
    ],
)
def test_an_sdo_write_after_set_up_loses_that_drive_s_set_up_a_read_does_not(
    set_up_master: tuple[Master, SimTimeBus], cob: int, data: bytes, lost: bool
) -> None:
    """What another client wrote may be anything set-up wrote and read back: as after a reset,
    no acknowledge may re-enable the drive on it. A read, an abort or an answer changes nothing
    (still a collision: another client is on the drive)."""
    m, bus = set_up_master
    m.setup_lost[:] = [""] * len(m.axes)  # as after set-up (the master is shared by the module)
    bus.kernel.device_send(can.Message(arbitration_id=cob, data=data, is_extended_id=False))
    fb = m.read(bus.kernel.time + bus.kernel.period, None)
    assert [e.code for e in m.service(fb.t) if e.kind is DriveEventKind.COLLISION] == [cob]
    assert bool(m.needs_setup()) is lost
    assert m.setup_lost[m.axes.index("retro_mc")] == (m.needs_setup()[0] if lost else "")


# --------------------------------------------------------------------------- a drive reset mid-run


def _starts_itself(drives: SimulatedDrives, axis: str, heartbeat_ms: int) -> None:
    """The drive's own firmware after power-up: heartbeat producer on (0x1017 written in its own
    object dictionary, no frame) and NMT start of itself (heard by no other node)."""
    drive = drives.drive(axis)
    drive.node.sdo[0x1017].raw = heartbeat_ms
    drives.on_frame(
        can.Message(arbitration_id=pdo.NMT_COB, data=bytes([0x01, drive.node_id]), is_extended_id=False)
    )


@pytest.mark.parametrize("self_start", [True, False], ids=["starts-itself", "stays-pre-operational"])
def test_acknowledge_is_refused_while_a_drive_that_booted_is_not_set_up_again(self_start: bool) -> None:
    """boot-up:retro_mc while the wires move: a fault. Once the drive is up again and every other
    blocker is gone, acknowledge is still refused, naming node 6 and the real remedy (a new
    robot: nothing in a running one sets a drive up again)."""
    cfg = _sim_time_config()
    with Robot(cfg, auto_confirm=True, inject=["boot-up:retro_mc@2.0"]) as robot:
        rt = robot.runtime
        assert rt.drives is not None
        robot.enable()
        rt.procedure.confirm()
        robot.wait(until=lambda s: s.t >= 2.0 + 2 * cfg.period)
        sup = rt.core.supervisor
        assert sup.latched and "node 6 booted" in sup.latched_verdict.text
        assert rt.master.needs_setup() and "node 6 (retro_mc) booted at 2.0" in rt.master.needs_setup()[0]
        if self_start:
            _starts_itself(rt.drives, "retro_mc", cfg.drives["retro_mc"].heartbeat_ms)
        robot.step(400)  # 1 s: every ramp over, heartbeats fresh
        if self_start:
            assert rt.drives.drive("retro_mc").nmt_state == pdo.NMT_OPERATIONAL
            assert rt.master.feedback.axes["retro_mc"].heartbeat_ok  # nothing else would refuse
            assert rt.drives.drive("retro_mc").heartbeat_period > 0.0
        for _ in range(2):
            with pytest.raises(SafetyError) as refused:
                robot.acknowledge()
            text = str(refused.value)
            assert "node 6 (retro_mc) booted at 2.0" in text
            assert "0x1016" in text and "close this robot and open a new one" in text
            assert sup.latched
            robot.step(40)
        assert rt.master.stats.collisions == 0  # the self-start put no frame of another node on the bus


def _heartbeat(node: int, state: int) -> can.Message:
    return can.Message(arbitration_id=pdo.heartbeat_cob(node), data=bytes([state]), is_extended_id=False)


def test_set_up_is_lost_on_a_boot_up_or_a_fall_back_to_pre_operational_and_restored_by_set_up() -> None:
    """The master knows the boot: a boot-up, or a pre-operational heartbeat after operational
    ones (a reset whose boot-up was missed, or another node's NMT command), loses the drive's
    set-up until the next set-up; a pre-operational heartbeat before any operational one (left
    over from set-up) does not."""
    with _master_set_up() as (m, bus):
        assert m.needs_setup() == []
        t = 1.0
        bus.kernel.device_send(_heartbeat(4, pdo.NMT_PRE_OPERATIONAL))  # before any operational
        m.read(t, None)
        assert [e.kind for e in m.service(t)] == [] and m.needs_setup() == []
        for state in (pdo.NMT_OPERATIONAL, pdo.NMT_PRE_OPERATIONAL, pdo.NMT_PRE_OPERATIONAL):
            bus.kernel.device_send(_heartbeat(4, state))
        bus.kernel.device_send(_heartbeat(1, pdo.NMT_BOOTUP))
        bus.kernel.device_send(_heartbeat(1, pdo.NMT_PRE_OPERATIONAL))  # what a booted drive says next
        m.read(t, None)
        events = [e for e in m.service(t) if e.kind is DriveEventKind.BOOTUP]
        assert [e.axis for e in events] == ["retro_wire", "ante_wire"]  # once each
        assert "went pre-operational while running" in events[0].text
        assert m.needs_setup() == [
            "node 1 (ante_wire) booted at 1.000 s (boot-up)",
            "node 4 (retro_wire) went pre-operational at 1.000 s after it was operational "
            "(reset, or another node's NMT command)",
        ]
        m.setup()
        assert m.needs_setup() == []


# --------------------------------------------------------------------------- the run folder says why


def test_the_first_unknown_frame_is_kept_29_bit_or_not() -> None:
    cfg = _sim_time_config()
    bus = SimTimeBus(period=cfg.period)
    try:
        m = Master(cfg, bus)
        assert (m.stats.first_unknown_cob_id, m.stats.unknown_cob_ids) == (-1, 0)
        for cob, extended in ((0x181, True), (0x001, False), (0x182, True)):
            bus.kernel.device_send(can.Message(arbitration_id=cob, data=bytes(8), is_extended_id=extended))
        fb = m.read(cfg.period, None)
        assert m.service(cfg.period) == [] and fb.bus_ok
        assert m.stats.unknown_cob_ids == 3
        assert (m.stats.first_unknown_cob_id, m.stats.first_unknown_extended) == (0x181, True)
        assert fb.axes["ante_wire"].age_cycles > 0  # a 29-bit 0x181 is no TPDO1
    finally:
        bus.shutdown()


def test_a_flood_of_an_unknown_cob_id_is_one_event_and_its_count_in_the_summary(tmp_path: Path) -> None:
    """Another node floods 0x001 (nobody's here): no fault, one ``unknown_cob_id`` event naming
    it, the master's counters in summary.json; then a 29-bit frame changes neither."""
    cfg = _sim_time_config()
    out = tmp_path / "run"
    flood = can.Message(arbitration_id=0x001, data=bytes(8), is_extended_id=False)
    with Robot(cfg, auto_confirm=True, out=out) as robot:
        rt = robot.runtime
        assert isinstance(rt.bus, SimTimeBus)
        robot.enable()
        rt.procedure.confirm()
        robot.step(40)
        for _ in range(50):
            for _ in range(20):
                rt.bus.kernel.device_send(flood)
            rt._cycle()
        rt.bus.kernel.device_send(can.Message(arbitration_id=0x181, data=bytes(8), is_extended_id=True))
        robot.step(40)
        assert not rt.core.supervisor.latched
    events = read_events(out / "events.jsonl")
    unknown = [e for e in events if e["kind"] == "unknown_cob_id"]
    assert len(unknown) == 1
    assert unknown[0]["cob_id"] == "0x001" and unknown[0]["count"] == 20
    assert "0x001" in unknown[0]["text"] and "not a fault" in unknown[0]["text"]
    assert not [e for e in events if e["kind"] == "fault"]
    summary = json.loads((out / "summary.json").read_text())
    master = summary["master"]
    assert master["unknown_cob_ids"] == 50 * 20 + 1
    assert master["first_unknown_cob_id"] == 0x001 and master["first_unknown_extended"] is False
    assert master["collisions"] == 0 and master["queue_drops"] == 0
    assert 130 < master["cycles"] <= rt.master.stats.cycles  # as of the end of the run, before close
    assert set(master) >= {"bad_dlc", "error_frames", "send_errors", "stale_cycles", "rejected_targets"}
    report = inspect_run(out, plot=False)
    assert report.ok, report.problems
    assert "  bus: 1001 frame(s) on unknown COB-IDs (first 0x001)\n" in report.text()


def test_a_run_without_foreign_frames_has_no_such_event_and_zero_counts(tmp_path: Path) -> None:
    cfg = _sim_time_config()
    out = tmp_path / "run"
    with Robot(cfg, auto_confirm=True, out=out) as robot:
        robot.enable()
        robot.step(100)
    assert not [e for e in read_events(out / "events.jsonl") if e["kind"] == "unknown_cob_id"]
    master = json.loads((out / "summary.json").read_text())["master"]
    assert (master["unknown_cob_ids"], master["collisions"], master["first_unknown_cob_id"]) == (0, 0, -1)
    assert "bus:" not in inspect_run(out, plot=False).text()


def test_the_bus_line_names_what_happened_and_is_empty_when_nothing_did() -> None:
    from whih_control.recorder import bus_line  # noqa: PLC0415

    quiet = {"unknown_cob_ids": 0, "first_unknown_cob_id": -1, "collisions": 0, "bad_dlc": 0}
    assert bus_line(quiet) == ""
    busy = quiet | {
        "unknown_cob_ids": 3,
        "first_unknown_cob_id": 0x181,
        "first_unknown_extended": True,
        "collisions": 2,
        "queue_drops": 7,
    }
    assert bus_line(busy) == (
        "bus: 3 frame(s) on unknown COB-IDs (first 0x00000181), 2 collision(s), 7 service frame(s) dropped"
    )
