"""Acceptance: the ``canopen`` library, as an independent master, drives the simulated firmware.

The drives run in their own thread on a python-can ``virtual`` bus handle (real time); canopen's
``BaseNode402`` takes one from boot to OPERATION ENABLED in CSP and moves it with RPDO targets.
Waits poll with bounded timeouts on TPDO reception; nothing sleeps.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

import can
import canopen
import pytest

from firmware_iface.cia402 import DriveState
from firmware_iface.sim import DRIVE_FAULT_EMCY, SimulatedDrives
from firmware_iface.spec import BUILTIN_EDS_DIR, CycleConfig, DriveConfig

from .test_sim_drives import System

EDS = str(BUILTIN_EDS_DIR / "whih_sim_drive.eds")
PERIOD = 0.01


@pytest.fixture
def setup() -> Iterator[tuple[canopen.Network, SimulatedDrives]]:
    channel = f"whih-interop-{uuid.uuid4().hex}"
    system = System(
        cycle=CycleConfig(rate_hz=1.0 / PERIOD),
        drives=MappingProxyType({"ante_wire": DriveConfig(node_id=1)}),
    )
    drive_bus = can.Bus(interface="virtual", channel=channel)
    network = canopen.Network()
    sim = SimulatedDrives(system, drive_bus)  # type: ignore[arg-type]
    try:
        network.connect(interface="virtual", channel=channel)
        sim.start()
        yield network, sim
    finally:
        try:
            network.sync.stop()
            network.disconnect()
        finally:
            try:
                sim.stop()
            finally:
                drive_bus.shutdown()


def _poll(read: Callable[[], int], want: int, timeout: float, what: str) -> None:
    """Repeat a blocking read (TPDO reception or SDO round trip) until it gives ``want``."""
    deadline = time.monotonic() + timeout
    while (got := read()) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {got} != {want}")


def test_base_node_402_enables_csp_and_moves_the_drive_with_rpdo_targets(
    setup: tuple[canopen.Network, SimulatedDrives],
) -> None:
    network, sim = setup
    node = canopen.BaseNode402(1, EDS)
    network.add_node(node)
    node.nmt.state = "PRE-OPERATIONAL"
    node.sdo[0x1017].raw = 20
    node.nmt.wait_for_heartbeat(timeout=2.0)
    assert node.nmt.state == "PRE-OPERATIONAL"

    # PDO configuration through canopen's own PDO objects (SDO under the hood).
    node.setup_402_state_machine(read_pdos=True)
    node.tpdo[1].trans_type = 1
    node.tpdo[1].enabled = True
    node.rpdo[1].trans_type = 1
    node.rpdo[1].enabled = True
    node.tpdo.save()
    node.rpdo.save()
    node.tpdo.read()
    node.rpdo.read()
    assert [v.index for v in node.tpdo[1]] == [0x6041, 0x6064, 0x6077]
    assert [v.index for v in node.rpdo[1]] == [0x6040, 0x607A]

    assert node.is_op_mode_supported("CYCLIC SYNCHRONOUS POSITION")
    node.sdo[0x6060].raw = 8
    assert node.op_mode == "CYCLIC SYNCHRONOUS POSITION"

    node.nmt.state = "OPERATIONAL"
    network.sync.start(PERIOD)
    # Synchronous RPDO: canopen sends it periodically; writing a mapped value updates the task.
    node.rpdo[1]["Controlword"].raw = 0x00
    node.rpdo[1]["Target position"].raw = 0
    node.rpdo[1].start(PERIOD)
    assert node.tpdo[1].wait_for_reception(timeout=2.0) is not None
    assert node.state == "SWITCH ON DISABLED"

    deadline = time.monotonic() + 5.0
    while node.state != "OPERATION ENABLED":
        try:
            node.state = "OPERATION ENABLED"
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
    assert sim.drive("ante_wire").state is DriveState.OPERATION_ENABLED

    # A ramp of RPDO targets, one per received TPDO: position actual follows.
    tpdo, rpdo = node.tpdo[1], node.rpdo[1]
    step = 10  # counts per cycle = 1 mm/s
    worst = 0
    for k in range(1, 101):
        assert tpdo.wait_for_reception(timeout=1.0) is not None
        actual = tpdo["Position actual value"].raw
        worst = max(worst, abs(actual - (k - 1) * step))
        rpdo["Target position"].raw = k * step
    assert worst <= 5 * step  # a few cycles of latency between unsynchronised threads at most

    def position() -> int:
        tpdo.wait_for_reception(timeout=0.5)
        return int(tpdo["Position actual value"].raw)

    _poll(position, 1000, 2.0, "position actual")
    assert sim.drive("ante_wire").position == pytest.approx(1.0, abs=1e-3)
    assert node.state == "OPERATION ENABLED"

    node.state = "SWITCH ON DISABLED"
    assert sim.drive("ante_wire").state is DriveState.SWITCH_ON_DISABLED
    node.rpdo.stop()


def test_without_sync_drive_time_follows_the_wall_clock_and_the_heartbeat_consumer_fires(
    setup: tuple[canopen.Network, SimulatedDrives],
) -> None:
    network, sim = setup
    node = canopen.RemoteNode(1, EDS)
    network.add_node(node)
    node.sdo[0x1016][1].raw = (127 << 16) | 100
    node.sdo[0x6007].raw = 2  # disable voltage on connection loss
    for cw in (0x06, 0x07):
        node.sdo[0x6040].raw = cw
    assert sim.drive("ante_wire").state is DriveState.SWITCHED_ON
    network.send_message(0x77F, [0x05])  # one master heartbeat arms the consumer, then silence
    t0 = time.monotonic()
    code = node.emcy.wait(0x8130, timeout=3.0)
    assert code is not None and code.code == 0x8130
    assert time.monotonic() - t0 >= 0.09
    _poll(lambda: int(node.sdo[0x6041].raw) & 0x4F, 0x40, 1.0, "SWITCH ON DISABLED")
    assert sim.drive("ante_wire").state is DriveState.SWITCH_ON_DISABLED


def test_faults_are_injected_in_the_drive_thread(
    setup: tuple[canopen.Network, SimulatedDrives],
) -> None:
    network, sim = setup
    node = canopen.RemoteNode(1, EDS)
    network.add_node(node)
    sim.inject("drive-fault:ante_wire@0")
    code = node.emcy.wait(DRIVE_FAULT_EMCY, timeout=2.0)
    assert code is not None
    _poll(lambda: int(node.sdo[0x603F].raw), DRIVE_FAULT_EMCY, 1.0, "error code")


class NanLoad:
    def step(self, t: float, dt: float, insertion: Mapping[str, float]) -> Mapping[str, float]:
        return {axis: math.nan for axis in insertion}


def test_a_failing_plant_stops_the_drive_thread_and_stop_reports_it() -> None:
    channel = f"whih-interop-{uuid.uuid4().hex}"
    system = System(cycle=CycleConfig(rate_hz=1.0 / PERIOD))
    drive_bus = can.Bus(interface="virtual", channel=channel)
    master_bus = can.Bus(interface="virtual", channel=channel)
    try:
        sim = SimulatedDrives(system, drive_bus, load=NanLoad())  # type: ignore[arg-type]
        before = set(threading.enumerate())
        sim.start()
        (thread,) = set(threading.enumerate()) - before
        master_bus.send(can.Message(arbitration_id=0x080, is_extended_id=False))
        thread.join(timeout=5.0)  # the thread ends on the error...
        assert not thread.is_alive()
        with pytest.raises(RuntimeError, match=r"load force of ante_wire \(=nan\)"):
            sim.stop()  # ...and stop() raises what it died of
    finally:
        master_bus.shutdown()
        drive_bus.shutdown()
