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
    # the master's frames carry the times they stand for: a master on a steady period
    master = can.Bus(interface="virtual", channel=channel, ignore_config=True, preserve_timestamps=True)
    held = _Held(can.Bus(interface="virtual", channel=channel, ignore_config=True))

    def send(cob: int, data: bytes, at: float) -> None:
        master.send(can.Message(arbitration_id=cob, data=data, is_extended_id=False, timestamp=at))

    beat_cob, beat = 0x700 + CFG.bus.master_node_id, b"\x05"
    drives = SimulatedDrives(CFG, held)  # type: ignore[arg-type]
    try:
        drives.start()
        for _ in range(5):  # running, SYNC by SYNC
            last = time.time()
            send(pdo.SYNC_COB, b"", last)
            time.sleep(PERIOD)
        held.reading.clear()
        held.held.clear()
        send(beat_cob, beat, last + PERIOD / 2)  # ends the read under way; the next one waits
        assert held.reading.wait(1.0)
        t0, s0 = drives.time, drives._syncs
        n = 40
        for k in range(1, n + 1):  # one period apart; the first frame read afterwards is no SYNC
            send(beat_cob, beat, last + k * PERIOD)
            send(pdo.SYNC_COB, b"", last + k * PERIOD)
        # the span those frames stand for passes with the drives' thread reading nothing
        time.sleep(max(0.0, last + (n + 1) * PERIOD - time.time()))
        held.held.set()
        deadline = time.monotonic() + 5.0
        while drives._syncs < s0 + n and time.monotonic() < deadline:  # every queued SYNC read
            time.sleep(0.01)
        advanced, bus_time = drives.time - t0, time.time() - last
        assert drives._syncs == s0 + n
        # n SYNC steps, and time without SYNC only after the last one: drive time never runs
        # ahead of the bus's (counting the held span again gave about n periods more)
        assert n * PERIOD - 1e-9 <= advanced <= bus_time + PERIOD, (advanced, n * PERIOD, bus_time)
    finally:
        held.held.set()
        drives.stop()
        held.bus.shutdown()
        master.shutdown()
