"""The master against a strict CiA 301/402 drive built from the maxon EPOS4 DCF (tests/strict_drive.py).

Six such drives answer on python-can's virtual bus in real time, from a thread of this process;
the master has never seen them and they accept only what the DCF allows.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Iterator

import can
import canopen
import pytest
from canopen.sdo.exceptions import SdoAbortedError

from firmware_iface.cia402 import DriveState
from firmware_iface.errors import DriveError, DriveSetupError, DriveTimeoutError
from firmware_iface.master import Master
from firmware_iface.plan import plan_system
from firmware_iface.spec import frame_bits_worst_case
from firmware_iface.types import DriveGoal
from hil_tests.bench import bench_robot
from whih_control import Config, load_config
from whih_control.probe import probe

from .conftest import CONFIGS, EPOS4_DCF
from .strict_drive import NMT_OP, NMT_PREOP, NMT_STOPPED, OE, QSA, SO, SOD, StrictDrives

NODES = range(1, 7)


def _config(channel: str, **cycle: object) -> Config:
    cfg = load_config(CONFIGS / "rig-epos4.toml")
    # The strict drives answer from a thread of this process, on a machine other tests load too:
    # 200 Hz (half the rig's rate; linear axes at 10 mm/s keep the stop distance) and 90 % of
    # the cycle for their TPDOs.
    drives = {
        a: dataclasses.replace(d, max_speed=10.0) if d.kind == "linear" else d for a, d in cfg.drives.items()
    }
    return cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="virtual", channel=channel, boot_timeout_s=2.0),
        cycle=dataclasses.replace(cfg.cycle, rate_hz=200.0, tpdo_deadline=0.9, **cycle),
        drives=drives,
    )


@pytest.fixture
def channel(request: pytest.FixtureRequest) -> str:
    return f"whih-strict-{os.getpid()}-{request.node.name}"


@pytest.fixture
def bus(channel: str) -> Iterator[can.BusABC]:
    """The master's handle on the channel. The interpreter switches threads every 0.5 ms meanwhile
    (as Robot does in real time), else each SDO round trip to the drives' thread waits up to 5 ms."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    b = can.Bus(interface="virtual", channel=channel)
    yield b
    b.shutdown()
    sys.setswitchinterval(interval)


def test_epos4_six_nodes_enable_jog_close(channel: str, bus: can.BusABC) -> None:
    """The acceptance run: enable, jog 1 mm, factory PDOs off, bus load as checked, 0x6085 in
    the drive's unit, close -> SWITCH ON DISABLED on every node."""
    cfg = _config(channel)
    with StrictDrives(channel, EPOS4_DCF, NODES) as drives:
        # the DCF's factory PDOs are on at boot: TPDO1-3 on every SYNC, as the real drive does
        assert all(drives[n].raw(0x1801, 1) == 0x280 + n for n in NODES)
        with bench_robot(cfg, bus=bus) as robot:
            robot.enable()
            master = robot.runtime.master
            assert all(fb.state is DriveState.OPERATION_ENABLED for fb in master.feedback.axes.values())
            assert all(d.state == OE for d in drives)
            assert not any(d.aborts for d in drives), [d.aborts for d in drives]

            before = drives[1].target
            robot.jog("ante_wire", 1.0)
            # RPDOs take effect on the next SYNC: cycles of another jog bring the last one in
            robot.jog("ante_wire_rot", 10.0)
            moved = drives[1].target - before
            assert abs(moved - 8192) <= 1, moved  # 1 mm at 8192 counts/mm, +/- 1 count

            # every PDO but RPDO1/TPDO1 is off, in the drive and on the wire
            for d in drives:
                for comm in (0x1401, 0x1402, 0x1403, 0x1801, 0x1802, 0x1803):
                    assert d.raw(comm, 1) & 0x8000_0000, (d.node_id, hex(comm))
            on_wire = {cob for _, cob, _ in drives.log[-2000:]}
            factory = {base + n for base in (0x280, 0x380, 0x480, 0x300, 0x400, 0x500) for n in NODES}
            assert not on_wire & factory, sorted(on_wire & factory)

            # the quick-stop deceleration in the EPOS4's rpm/s: 2000 mm/s^2 x 8192/16384 rev/mm x 60
            for n, axis in zip(NODES, cfg.drives, strict=True):
                d = cfg.drives[axis]
                expected = round(d.quick_stop_decel * d.counts_per_unit / d.encoder_counts_per_rev * 60)
                assert drives[n].raw(0x6085) == expected, (axis, drives[n].raw(0x6085), expected)
                # read back by the drive in its own units, it is the configured ramp
                wanted = d.quick_stop_decel * d.counts_per_unit
                assert drives[n].quick_stop_decel() == pytest.approx(wanted, rel=1e-3)
            assert drives[1].raw(0x6085) == 60000

            robot.jog("ante_wire_rot", -10.0)  # more cycles to measure over

            # bus load: every frame between the first and the last SYNC of the cyclic exchange
            # (set-up's SDO traffic comes before the first). The cyclic frames are counted per
            # SYNC, the heartbeats per second (a loaded machine may stretch a cycle, never a
            # heartbeat period), both at worst-case bit stuffing.
            log = list(drives.log)
            syncs = [i for i, (_, cob, _) in enumerate(log) if cob == 0x080]
            cycles = len(syncs) - 1
            assert cycles >= 100
            window = log[syncs[0] : syncs[-1]]
            seconds = log[syncs[-1]][0] - log[syncs[0]][0]
            assert not any(0x580 < cob < 0x680 for _, cob, _ in window)  # no SDO in the window
            beats = sum(frame_bits_worst_case(dlc) for _, cob, dlc in window if 0x700 < cob < 0x780)
            cyclic = sum(frame_bits_worst_case(dlc) for _, cob, dlc in window if not 0x700 < cob < 0x780)
            measured = (cyclic / cycles * cfg.cycle.rate_hz + beats / seconds) / cfg.bus.bitrate
            check = cfg.bus_load()
            assert measured == pytest.approx(check.ratio, rel=0.02), (measured, check.describe())
            # 18 TPDOs a cycle (the factory TPDO2/3 left on) would have measured about twice this
        # closed: every node quick-stopped then disabled
        assert all(d.state == SOD for d in drives), [d.state for d in drives]


# --- the strict drive itself, driven by canopen's own SDO client (a peer we did not write) -------


@pytest.fixture
def peer(channel: str, bus: can.BusABC) -> Iterator[tuple[StrictDrives, canopen.RemoteNode]]:
    with StrictDrives(channel, EPOS4_DCF, [1]) as drives:
        network = canopen.Network(bus)
        node = canopen.RemoteNode(1, canopen.import_od(str(EPOS4_DCF), 1))
        network.add_node(node)
        notifier = can.Notifier(bus, [_Feed(network)], timeout=0.05)
        try:
            yield drives, node
        finally:
            notifier.stop()


class _Feed(can.Listener):
    def __init__(self, network: canopen.Network) -> None:
        self.network = network

    def on_message_received(self, msg: can.Message) -> None:
        self.network.notify(msg.arbitration_id, msg.data, msg.timestamp)


def _abort(node: canopen.RemoteNode, index: int, sub: int, value: int) -> int:
    obj = node.sdo[index]
    var = obj if sub == 0 and not hasattr(obj, "__getitem__") else obj[sub]
    with pytest.raises(SdoAbortedError) as err:
        var.raw = value
    return err.value.code


def test_strict_drive_enforces_the_dcf(peer: tuple[StrictDrives, canopen.RemoteNode]) -> None:
    drives, node = peer
    assert _abort(node, 0x6066, 0, 20) == 0x06090030  # fixed at 0 by the DCF
    node.sdo[0x6066].raw = 0  # the one value it takes
    assert _abort(node, 0x6064, 0, 5) == 0x06010002  # position actual is read-only
    assert _abort(node, 0x6085, 0, 0) == 0x06090030  # LowLimit 1
    # CiA 301 PDO order: no mapping change while the PDO is valid, no entry while count != 0,
    # no COB-ID change while valid
    assert _abort(node, 0x1A01, 0, 0) == 0x08000022
    assert _abort(node, 0x1801, 1, 0x290) == 0x06090030
    node.sdo[0x1801][1].raw = 0x8000_0281
    assert _abort(node, 0x1A01, 1, 0x60410010) == 0x08000022
    node.sdo[0x1A01][0].raw = 0
    node.sdo[0x1A01][1].raw = 0x60FF0020
    node.sdo[0x1A01][2].raw = 0x60FF0020
    node.sdo[0x1A01][3].raw = 0x60FF0020
    assert _abort(node, 0x1A01, 0, 3) == 0x06040042  # 96 bits do not fit in a frame
    with pytest.raises(SdoAbortedError) as err:
        node.sdo.upload(0x2FFF, 0)
    assert err.value.code == 0x06020000
    assert [a[2] for a in drives[1].aborts][:2] == [0x06090030, 0x06090030]


# --- the master's set-up and shutdown against strict drives ---------------------------------------


def _cycles(m: Master, n: int, goal: DriveGoal | None = None) -> None:
    """``n`` real-time cycles of the bare master (SYNC, TPDO1s, RPDO1s, service)."""
    period = 1.0 / m._cycle_cfg.rate_hz
    if goal is not None:
        for cmd in m.commands.axes.values():
            cmd.goal = goal
    t = m.feedback.t
    for _ in range(n):
        start = time.perf_counter()
        t += period
        m.read(t, start + 0.9 * period)
        m.write()
        m.service(t)
        m.wait_until(start + period)


def _flush(bus: can.BusABC, drives: StrictDrives) -> None:
    """Send a marker frame and wait until the drives saw it: whatever was sent before it was
    received before it (the virtual bus keeps the order)."""
    bus.send(can.Message(arbitration_id=0x7E5, data=b"", is_extended_id=False))
    deadline = time.monotonic() + 5.0
    while not any(cob == 0x7E5 for _, cob, _ in drives.log[-10:]):
        assert time.monotonic() < deadline, "the drives never saw the marker frame"
        time.sleep(0.001)


def _enabled(m: Master) -> bool:
    return all(fb.state is DriveState.OPERATION_ENABLED for fb in m.feedback.axes.values())


def test_drives_found_in_any_state_are_set_up(channel: str, bus: can.BusABC) -> None:
    """Operational and enabled, FAULT, QUICK STOP ACTIVE, stopped, pre-operational with the
    factory PDOs on: set-up brings every drive to SWITCH ON DISABLED and operational."""
    cfg = _config(channel)
    with StrictDrives(channel, EPOS4_DCF, NODES) as drives:

        def scramble() -> None:
            for n in (1, 2, 3, 4):
                drives[n].nmt = NMT_OP
            drives[1].state = OE
            drives[2].fault(0x7121)
            drives[3].state = QSA
            drives[4].state = SO
            drives[5].nmt = NMT_STOPPED

        drives.call(scramble)
        m = Master(cfg, bus)
        m.setup()
        assert all(d.state == SOD and d.nmt == NMT_OP for d in drives), [(d.state, d.nmt) for d in drives]
        assert 0x80 in drives[2].controlwords  # the fault was reset by a rising edge of bit 7
        _cycles(m, 20, DriveGoal.ENABLED)
        assert _enabled(m)
        m.shutdown()
        assert all(d.state == SOD for d in drives)


def test_refused_values_named_for_every_drive_before_anything_is_sent(channel: str, bus: can.BusABC) -> None:
    cfg = _config(channel)
    drives_cfg = {a: dataclasses.replace(d, accept_fixed=()) for a, d in cfg.drives.items()}
    drives_cfg["retro_mc"] = dataclasses.replace(drives_cfg["retro_mc"], encoder_counts_per_rev=0.0)
    cfg = cfg.replace(drives=drives_cfg)
    with StrictDrives(channel, EPOS4_DCF, NODES) as drives:
        sent_before = len(drives.log)
        with pytest.raises(DriveSetupError) as err:
            Master(cfg, bus).setup()
        text = str(err.value)
        for n, axis in zip(NODES, cfg.drives, strict=True):
            assert f"node {n} ({axis}), maxon_epos4_50_15_node1.dcf: 0x6066:0" in text
            assert "fixed at 0" in text
            assert f'add "0x6066" to drives.{axis}.accept_fixed' in text
        assert "node 6 (retro_mc)" in text and "0x60AA" in text and "encoder_counts_per_rev" in text
        _flush(bus, drives)
        assert len(drives.log) == sent_before + 1  # refused offline: only the marker was sent


def test_identity_mismatch_refuses_unless_accepted(channel: str, bus: can.BusABC) -> None:
    cfg = _config(channel)
    nodes: dict[int, dict[str, object]] = {n: {} for n in NODES}
    nodes[4] = {"identity": (0xFB, 0x12345678)}
    with StrictDrives(channel, EPOS4_DCF, nodes) as drives:
        with pytest.raises(DriveSetupError) as err:
            Master(cfg, bus).setup()
        assert "node 4 (retro_wire): identity 0x1018 does not match" in str(err.value)
        assert "product 0x12345678 (file: 0x65520000)" in str(err.value)
        assert "node 1 " not in str(err.value)
        assert all(d.nmt != NMT_OP for d in drives)  # nobody was started
        drives_cfg = dict(cfg.drives)
        drives_cfg["retro_wire"] = dataclasses.replace(
            drives_cfg["retro_wire"], accept_identity_mismatch=True
        )
        m = Master(cfg.replace(drives=drives_cfg), bus)
        m.setup()
        assert m.identities["retro_wire"].product == 0x12345678
        assert m.identities["ante_wire"].vendor == 0xFB  # maxon
        assert any("accepted by accept_identity_mismatch" in n for n in m.plans["retro_wire"].notes)
        m.shutdown()


def test_a_drive_that_does_not_answer_is_named(channel: str, bus: can.BusABC) -> None:
    cfg = _config(channel)
    cfg = cfg.replace(bus=dataclasses.replace(cfg.bus, boot_timeout_s=0.3))
    with StrictDrives(channel, EPOS4_DCF, NODES) as drives:
        drives.silent.add(5)
        with pytest.raises(DriveTimeoutError) as err:
            Master(cfg, bus).setup()
        assert "node 5 (retro_wire_rot) sent no boot-up" in str(err.value)
        assert "node 4" not in str(err.value)


def test_shutdown_starts_a_drive_that_dropped_to_pre_operational(channel: str, bus: can.BusABC) -> None:
    cfg = _config(channel)
    with StrictDrives(channel, EPOS4_DCF, NODES) as drives:
        m = Master(cfg, bus)
        m.setup()
        _cycles(m, 20, DriveGoal.ENABLED)
        assert _enabled(m)
        # someone sends node 3 to pre-operational: it ignores RPDOs, stays OPERATION ENABLED
        bus.send(can.Message(arbitration_id=0, data=bytes([0x80, 3]), is_extended_id=False))
        _cycles(m, 10)
        assert drives[3].nmt == NMT_PREOP and drives[3].state == OE
        m.shutdown()
        assert all(d.state == SOD for d in drives), [d.state for d in drives]
        assert drives[3].nmt == NMT_OP


def test_shutdown_names_a_drive_that_stays_enabled(channel: str, bus: can.BusABC) -> None:
    cfg = _config(channel)
    with StrictDrives(channel, EPOS4_DCF, NODES) as drives:
        m = Master(cfg, bus)
        m.setup()
        _cycles(m, 20, DriveGoal.ENABLED)
        assert _enabled(m)
        stuck = drives[2]
        stuck._controlword = lambda cw: None  # type: ignore[method-assign]  # ignores the master
        with pytest.raises(DriveError) as err:
            m.shutdown()
        text = str(err.value)
        # enabled, or quick-stopped by its own heartbeat consumer if this machine stalled the master
        assert re.search(
            r"node 2 \(ante_wire_rot\) did not confirm SWITCH ON DISABLED: reports "
            r"(OPERATION_ENABLED|QUICK_STOP_ACTIVE) \(statusword 0x02(37|17), NMT operational\)",
            text,
        ), text
        assert "node 1 " not in text


def test_probe_reads_identity_and_touches_no_motion_object(channel: str, bus: can.BusABC) -> None:
    cfg = _config(channel)
    nodes: dict[int, dict[str, object]] = {n: {} for n in (*NODES, 9)}
    nodes[6] = {"identity": (0x1234, 0x65520000)}
    with StrictDrives(channel, EPOS4_DCF, nodes) as drives:
        drives.silent.add(3)
        result = probe(cfg, all_nodes=True, listen_s=0.05)
        _flush(bus, drives)
        by_node = {n.node_id: n for n in result.nodes}
        assert sorted(by_node) == [1, 2, 3, 4, 5, 6, 9]  # configured ones, and whoever answered
        assert not by_node[3].answered and by_node[3].lines() == ["node 3 (ante_mc): no answer"]
        one = by_node[1]
        assert one.ok and one.identity is not None
        assert (one.identity.vendor, one.identity.product) == (0xFB, 0x65520000)  # maxon EPOS4
        assert one.eds_match == "maxon_epos4_50_15_node1.dcf: vendor and product match"
        assert one.capability.startswith("ok: CSP supported (0x6502 = 0x3A5)")
        assert not by_node[6].ok and "vendor 0x00001234 (file: 0x000000FB)" in by_node[6].eds_match
        assert by_node[9].axis is None and by_node[9].answered
        assert not result.ok
        # read-only: SDO uploads (0x40) and nothing else from the probe; every drive as it booted
        sdo = [cob for _, cob, _ in drives.log if 0x600 < cob < 0x680]
        assert sdo and all(d.controlwords == [] and d.aborts == [] for d in drives)
        assert not any(cob in {0x000, 0x080} or 0x200 <= cob < 0x580 for _, cob, _ in drives.log)
        assert all(d.nmt == NMT_PREOP and d.state == SOD for d in drives)


def test_drives_quick_stop_themselves_when_the_master_goes_quiet(channel: str, bus: can.BusABC) -> None:
    """0x1016 (consumer of the master's heartbeat) and 0x6007 = 3, as set-up wrote them: a master
    that stops (no cycle, no heartbeat) leaves no drive enabled beyond bus.master_heartbeat_timeout_ms."""
    cfg = _config(channel)
    with StrictDrives(channel, EPOS4_DCF, NODES) as drives:
        m = Master(cfg, bus)
        m.setup()
        assert all(d.raw(0x1016, 1) == (127 << 16) | 100 and d.raw(0x6007) == 3 for d in drives)
        _cycles(m, 20, DriveGoal.ENABLED)
        assert _enabled(m)
        quiet = time.monotonic()
        deadline = quiet + 5.0
        while not all(d.state == QSA for d in drives):  # the master is silent meanwhile
            assert time.monotonic() < deadline, [d.state for d in drives]
            time.sleep(0.005)
        assert all(d.heartbeat_lost for d in drives)
        assert any(cob == 0x81 for _, cob, _ in drives.log)  # EMCY 0x8130 heartbeat error
        m.shutdown()
        assert all(d.state == SOD for d in drives)


def test_a_value_out_of_the_objects_type_is_not_offered_accept_fixed() -> None:
    # 1e7 counts/mm x 3600 deg of travel overflows 0x607D's INTEGER32: accept_fixed (a value the
    # drive fixes) cannot help, the configuration has to change
    cfg = load_config(CONFIGS / "rig-epos4.toml")
    rot = dataclasses.replace(cfg.drives["ante_wire_rot"], counts_per_unit=1e7)
    cfg = cfg.replace(drives={**cfg.drives, "ante_wire_rot": rot})
    _plans, problems = plan_system(cfg)
    text = "\n".join(problems)
    assert "0x607D:1" in text and "INTEGER32" in text
    assert "the configured value that gives it must change" in text
    assert "to drives.ante_wire_rot.accept_fixed" not in text
