"""Simulated drives in thread mode (real time) when their thread is kept off the CPU.

The SYNCs sent meanwhile wait in the bus queue; each steps the drives by one period when it is
read. Drive time must follow the frames' own times on the bus: counting the gap once more as
time without SYNC (when the first frame read afterwards is no SYNC) moved the drives twice as
far as the SYNCs allowed, and the master's position plausibility check saw a jump (the
real-time soak on a loaded machine: node 5 "position actual jumped -1.980 since its last TPDO1").
"""

from __future__ import annotations

import threading
import time
from typing import Any

import can

from firmware_iface import pdo
from firmware_iface.sim import SimulatedDrives
from whih_control import load_config

from .conftest import CONFIGS

CFG = load_config(CONFIGS / "sim.toml")
PERIOD = CFG.period


class _Held:
    """The drives' bus handle; while ``held`` is clear their thread cannot read a frame, as if
    the scheduler kept it off the CPU (frames queue meanwhile, stamped when sent)."""

    def __init__(self, bus: can.BusABC) -> None:
        self.bus = bus
        self.held = threading.Event()
        self.held.set()
        self.reading = threading.Event()

    def recv(self, timeout: float | None = None) -> can.Message | None:
        self.reading.set()
        self.held.wait()
        return self.bus.recv(timeout)

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        self.bus.send(msg, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)


def test_syncs_queued_while_the_thread_was_held_advance_drive_time_once(request: Any) -> None:
    channel = f"whih-held-{request.node.name}"
    master = can.Bus(interface="virtual", channel=channel, ignore_config=True)
    held = _Held(can.Bus(interface="virtual", channel=channel, ignore_config=True))
    sync = can.Message(arbitration_id=pdo.SYNC_COB, data=b"", is_extended_id=False)
    beat = can.Message(arbitration_id=0x700 + CFG.bus.master_node_id, data=b"\x05", is_extended_id=False)
    drives = SimulatedDrives(CFG, held)  # type: ignore[arg-type]
    try:
        drives.start()
        for _ in range(5):  # running, SYNC by SYNC
            master.send(sync)
            time.sleep(PERIOD)
        held.reading.clear()
        held.held.clear()
        master.send(beat)  # ends the read under way; the next one waits
        assert held.reading.wait(1.0)
        t0, s0 = drives.time, drives._syncs
        n = 20
        sent_from = time.time()
        for _ in range(n):  # the master keeps its period; the drives' thread reads nothing
            master.send(beat)  # the first frame read afterwards is no SYNC
            master.send(sync)
            time.sleep(PERIOD)
        wall = time.time() - sent_from
        held.held.set()
        deadline = time.monotonic() + 5.0
        while drives._syncs < s0 + n and time.monotonic() < deadline:  # every queued SYNC read
            time.sleep(0.01)
        assert drives._syncs == s0 + n
        advanced = drives.time - t0
        # n SYNC steps; the gap before the first queued SYNC (< one period plus the sleep's
        # lateness) may count as time without SYNC, never the whole held span again
        assert advanced >= n * PERIOD - 1e-9
        assert advanced < n * PERIOD + 0.5 * wall, (advanced, n * PERIOD, wall)
    finally:
        held.held.set()
        drives.stop()
        held.bus.shutdown()
        master.shutdown()
