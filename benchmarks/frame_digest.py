"""A digest of every frame on the bus of whole simulated procedures, to compare two commits.

    python benchmarks/frame_digest.py [--seeds 0,1] [--inject SPEC ...] [--ablate NAME ...]

For each seed: the shipped configuration run as ``wc.simulate`` runs it, every master frame,
SYNC and device frame (in bus order, with its simulated time and payload) hashed with SHA-256,
and the run's result. Speed work on the simulated drives, the bus, the control core or the
procedure must leave both unchanged: run this on both commits and compare the lines.
tests/test_sim_determinism.py checks the same property within one commit on 5 s of a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import struct

import can

import whih_control as wc
from firmware_iface.simbus import SimTimeBus
from whih_control.api import Robot

_HEAD = struct.Struct("<BdI")


class _Digest:
    """Attached before the drives: sees every master frame and SYNC, and every device frame."""

    def __init__(self, bus: SimTimeBus) -> None:
        self.bus = bus
        self.h = hashlib.sha256()
        self.frames = 0
        bus.kernel.attach(self)
        bus.kernel.add_listener(self._device)

    def _add(self, kind: int, t: float, cob: int, data: bytes | bytearray) -> None:
        self.frames += 1
        self.h.update(_HEAD.pack(kind, t, cob))
        self.h.update(bytes(data))

    def on_frame(self, msg: can.Message) -> None:
        self._add(0, self.bus.kernel.time, msg.arbitration_id, msg.data)

    def on_sync(self, t: float, dt: float) -> None:
        self._add(1, t, 0x080, b"")

    def _device(self, msg: can.Message) -> None:
        self._add(2, msg.timestamp, msg.arbitration_id, msg.data)


def digest(seed: int, inject: tuple[str, ...] = (), ablations: tuple[str, ...] = ()) -> str:
    """One line: seed, result and frame digest of the shipped configuration's whole procedure."""
    cfg = wc.load_config(wc.default_config_path())
    cfg = cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="whih-sim"),
        sim=dataclasses.replace(cfg.sim, enabled=True, seed=seed),
        procedure=dataclasses.replace(cfg.procedure, ablations=ablations),
    )
    bus = SimTimeBus(period=cfg.period)
    d = _Digest(bus)
    try:
        with Robot(cfg, bus=bus, seed=seed, inject=inject, auto_confirm=True) as robot:
            robot.enable()
            r = robot.run_procedure()
    finally:
        bus.shutdown()
    return (
        f"seed {seed}: {r.outcome} crossed={r.crossed} cycles={r.cycles} "
        f"gap=[{r.min_gap!r}, {r.max_gap!r}] faults={len(r.faults)} "
        f"frames={d.frames} sha256={d.h.hexdigest()[:24]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--inject", action="append", default=[])
    parser.add_argument("--ablate", action="append", default=[])
    args = parser.parse_args()
    for s in args.seeds.split(","):
        print(digest(int(s), tuple(args.inject), tuple(args.ablate)), flush=True)


if __name__ == "__main__":
    main()
