"""The master against a strict CiA 301/402 drive built from the maxon EPOS4 DCF (tests/strict_drive.py).

Six such drives answer on python-can's virtual bus in real time, from a thread of this process;
the master has never seen them and they accept only what the DCF allows.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import can
import pytest

from firmware_iface.cia402 import DriveState
from firmware_iface.spec import frame_bits_worst_case
from hil_tests.bench import bench_robot
from whih_control import Config, load_config

from .conftest import CONFIGS, EPOS4_DCF
from .strict_drive import OE, SOD, StrictDrives

NODES = range(1, 7)


def _config(channel: str, **cycle: object) -> Config:
    cfg = load_config(CONFIGS / "rig-epos4.toml")
    # the strict drives answer from a thread of this process: give their TPDOs 90 % of the cycle
    return cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="virtual", channel=channel, boot_timeout_s=2.0),
        cycle=dataclasses.replace(cfg.cycle, tpdo_deadline=0.9, **cycle),
    )


@pytest.fixture
def channel(request: pytest.FixtureRequest) -> str:
    return f"whih-strict-{os.getpid()}-{request.node.name}"


@pytest.fixture
def bus(channel: str) -> Iterator[can.BusABC]:
    b = can.Bus(interface="virtual", channel=channel)
    yield b
    b.shutdown()


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
            # what the issue measured before the factory PDOs were switched off: 131 %
            assert check.ratio < 0.7
        # closed: every node quick-stopped then disabled
        assert all(d.state == SOD for d in drives), [d.state for d in drives]
