"""Simulated seconds per wall second for a whole WHIH procedure at 400 Hz, without and with recording.

    python benchmarks/bench_sim.py [--repeat N] [--seed S]

Prints the median over N runs of each variant, measured alternately in one process so that a
noisy machine affects both alike, and their ratio. Target (docs/DESIGN.md section 5): >= 100x real time.

A third variant is the floor under the target: the same number of cycles passing only the frames
of a cycle (SYNC, six TPDO1, six RPDO1) through ``SimTimeBus`` between six devices that do nothing
but answer, with preallocated frames and no drive, plant, control or procedure logic. Whatever it
costs per cycle is spent before any of the work is done; 100x at 400 Hz allows 25 us in all.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import can

import whih_control as wc
from firmware_iface import pdo
from firmware_iface.simbus import SimTimeBus


def _once(cfg: wc.Config, seed: int, out: Path | None) -> tuple[float, float, float, str]:
    """(simulated s, wall s, CPU s of this process, outcome) of one whole procedure."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = wc.simulate(cfg, seed=seed, out=out)
    wall = time.perf_counter() - t0
    return result.sim_seconds, wall, time.process_time() - c0, result.outcome


class _Echo:
    """A device that answers SYNC with one preallocated TPDO1 and takes RPDO1 targets: no logic."""

    def __init__(self, kernel: Any, node: int) -> None:
        self._kernel = kernel
        self._rpdo = pdo.rpdo1_cob(node)
        self._tpdo = can.Message(arbitration_id=pdo.tpdo1_cob(node), data=bytearray(8), is_extended_id=False)
        self._target = 0

    def on_sync(self, t: float, dt: float) -> None:
        pdo.TPDO1.pack_into(self._tpdo.data, 0, 0x0237, self._target, 0)
        self._kernel.device_send(self._tpdo)

    def on_frame(self, msg: can.Message) -> None:
        if msg.arbitration_id == self._rpdo:
            _cw, self._target = pdo.RPDO1.unpack_from(msg.data)


def _frames_only(cycles: int, period: float, drives: int) -> tuple[float, float]:
    """(wall s, CPU s) for ``cycles`` cycles of frames alone (see the module docstring)."""
    bus = SimTimeBus(period=period)
    try:
        # SimKernel behind the bus; before it was split off (older commits) the bus itself
        kernel = getattr(bus, "kernel", bus)
        for node in range(1, drives + 1):
            kernel.attach(_Echo(kernel, node))
        sync = can.Message(arbitration_id=pdo.SYNC_COB, data=b"", is_extended_id=False)
        rpdos = [
            can.Message(arbitration_id=pdo.rpdo1_cob(n), data=bytearray(6), is_extended_id=False)
            for n in range(1, drives + 1)
        ]
        index = {pdo.tpdo1_cob(n): n - 1 for n in range(1, drives + 1)}
        actual = [0] * drives
        unpack, pack_into = pdo.TPDO1.unpack_from, pdo.RPDO1.pack_into
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(cycles):
            bus.send(sync)
            while (msg := bus.recv(0.0)) is not None:
                _sw, actual[index[msg.arbitration_id]], _torque = unpack(msg.data)
            for i, rpdo in enumerate(rpdos):
                pack_into(rpdo.data, 0, 0x000F, actual[i] + 1)
                bus.send(rpdo)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        bus.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = wc.load_config(wc.default_config_path())
    plain: list[float] = []
    recorded: list[float] = []
    floor: list[float] = []
    cpu: list[float] = []
    cpu_floor: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            sim_s, wall, cpu_s, outcome = _once(cfg, args.seed, None)
            plain.append(sim_s / wall)
            cycles = round(sim_s * cfg.cycle.rate_hz)
            cpu.append(cpu_s / cycles * 1e6)
            sim_r, wall_r, _, _ = _once(cfg, args.seed, Path(tmp) / f"run{i}")
            recorded.append(sim_r / wall_r)
            wall_f, cpu_f = _frames_only(cycles, cfg.period, len(cfg.drives))
            floor.append(sim_s / wall_f)
            cpu_floor.append(cpu_f / cycles * 1e6)
            print(
                f"run {i}: {sim_s:.1f} simulated s ({outcome}); "
                f"no recording {plain[-1]:6.1f}x, recording {recorded[-1]:6.1f}x, "
                f"frames only {floor[-1]:6.1f}x real time",
                flush=True,
            )
    p, r, f = statistics.median(plain), statistics.median(recorded), statistics.median(floor)
    c, cf = statistics.median(cpu), statistics.median(cpu_floor)
    us = 1e6 / cfg.cycle.rate_hz
    print(f"median over {args.repeat} runs at {cfg.cycle.rate_hz:g} Hz, {len(cfg.drives)} drives:")
    print(f"  without recording: {p:7.1f}x real time, {us / p:5.1f} us a cycle (target >= 100x)")
    print(f"  with recording:    {r:7.1f}x real time, {us / r:5.1f} us a cycle")
    print(f"  recording costs:   {p / r:7.2f}x")
    print(f"  frames only:       {f:7.1f}x real time, {us / f:5.1f} us a cycle (no logic at all)")
    print(f"  left for the logic at 100x: {us / 100 - us / f:5.1f} us a cycle")
    print(f"  whole stack / frames only: {f / p:5.1f}x wall (budget <= 5x), {c / cf:5.1f}x CPU")
    print(f"  CPU a cycle: whole stack {c:5.1f} us (start-up included), frames only {cf:5.1f} us")


if __name__ == "__main__":
    main()
