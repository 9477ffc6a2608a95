"""Simulated runs are replayable: the same seed gives the same CAN frames, frame for frame.

The fast paths of the simulated drives, the simulated-time bus and the plant must not change
what goes over the bus; these tests compare whole frame sequences of independent runs.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import can
import pytest

import whih_control as wc
from firmware_iface import pdo
from firmware_iface.sim import SimulatedDrives
from firmware_iface.simbus import SYNC_COB_ID, SimTimeBus
from whih_control.api import Robot, simulate
from whih_control.runtime import RunResult

from .conftest import CONFIGS

MAX_TIME = 5.0
Frame = tuple[str, float, int, bytes]


def _sim_config() -> wc.Config:
    cfg = wc.load_config(CONFIGS / "sim.toml")
    return cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="whih-sim"),
        sim=dataclasses.replace(cfg.sim, enabled=True, seed=0),
    )


class _Recorder:
    """Attached to the bus before the drives: sees every master frame and SYNC, and (as a
    listener) every device frame, in bus order."""

    def __init__(self, bus: SimTimeBus) -> None:
        self.bus = bus
        self.frames: list[Frame] = []
        bus.kernel.attach(self)
        bus.kernel.add_listener(self._device)

    def on_frame(self, msg: can.Message) -> None:
        self.frames.append(("master", self.bus.kernel.time, msg.arbitration_id, bytes(msg.data)))

    def on_sync(self, t: float, dt: float) -> None:
        self.frames.append(("sync", t, SYNC_COB_ID, b""))

    def _device(self, msg: can.Message) -> None:
        self.frames.append(("device", msg.timestamp, msg.arbitration_id, bytes(msg.data)))


def _recorded_run(max_time: float = MAX_TIME) -> tuple[list[Frame], RunResult]:
    cfg = _sim_config()
    bus = SimTimeBus(period=cfg.period)
    rec = _Recorder(bus)
    try:
        with Robot(cfg, bus=bus, seed=0) as robot:
            result = robot.enable_and_run(max_time=max_time)  # what simulate runs
    finally:
        bus.shutdown()
    return rec.frames, result


def _comparable(r: RunResult) -> tuple[object, ...]:
    return (r.outcome, r.crossed, r.sim_seconds, r.cycles, r.min_gap, r.max_gap, dict(r.max_force), r.faults)


def test_two_runs_with_the_same_seed_put_identical_frames_on_the_bus() -> None:
    a, ra = _recorded_run()
    b, rb = _recorded_run()
    kinds = {k for k, *_ in a}
    assert kinds == {"master", "sync", "device"}
    # set-up over SDO plus MAX_TIME s of cycles at 400 Hz: one SYNC, six TPDOs, six RPDOs each
    assert sum(1 for k, *_ in a if k == "sync") >= MAX_TIME * 400
    assert len(a) > 13 * MAX_TIME * 400
    assert a == b
    assert _comparable(ra) == _comparable(rb)


def test_a_run_on_a_given_bus_matches_simulate() -> None:
    """The bus handed in from outside runs exactly what ``simulate`` runs on its own bus."""
    _, given = _recorded_run()
    own = simulate(wc.load_config(CONFIGS / "sim.toml"), seed=0, max_time=MAX_TIME)
    assert _comparable(given) == _comparable(own)


def _trace_body(path: Path) -> list[str]:
    # The header carries the wall-clock date; every frame line starts with its timestamp.
    lines = path.read_text().splitlines()
    return [ln for ln in lines if ln[:1] == " " and ln.strip()[:1].isdigit()]


def test_recorded_traces_of_two_runs_are_identical(tmp_path: Path) -> None:
    """With recording on, the master's tap keeps every frame: none may be changed afterwards."""
    cfg = wc.load_config(CONFIGS / "sim.toml")
    simulate(cfg, seed=0, max_time=1.0, out=tmp_path / "a")
    simulate(cfg, seed=0, max_time=1.0, out=tmp_path / "b")
    a = _trace_body(tmp_path / "a" / "trace.asc")
    b = _trace_body(tmp_path / "b" / "trace.asc")
    assert len(a) > 13 * 400  # SYNC, 6 TPDOs and 6 RPDOs per cycle for at least 1 s
    assert a == b
    # every TPDO1 line is a distinct frame: a reused message object would repeat the last payload
    tpdo = [ln for ln in a if " 181 " in ln]
    assert len(tpdo) >= 400
    assert len({ln.split(None, 2)[2] for ln in tpdo}) > 1


# --- the same drives on both transports ------------------------------------------------------------

_ENABLE_WALK = (0x06, 0x07, 0x0F)
_SYNCS_PER_STEP = 5
_WAIT_S = 5.0


def _script(nodes: list[int]) -> list[list[tuple[int, bytes]]]:
    """Batches of master frames, each ending in a SYNC: NMT start, then the enable walk at rest."""
    batches: list[list[tuple[int, bytes]]] = [[(pdo.NMT_COB, b"\x01\x00"), (SYNC_COB_ID, b"")]]
    for cw in _ENABLE_WALK:
        for _ in range(_SYNCS_PER_STEP):
            batches.append([(0x200 + n, pdo.RPDO1.pack(cw, 0)) for n in nodes] + [(SYNC_COB_ID, b"")])
    return batches


def _tpdos(frames: list[can.Message], nodes: list[int]) -> list[tuple[int, bytes]]:
    cobs = {0x180 + n for n in nodes}
    return [(m.arbitration_id, bytes(m.data)) for m in frames if m.arbitration_id in cobs]


def test_thread_mode_and_simulated_time_answer_the_enable_walk_alike() -> None:
    """At rest (target = position) drive time cannot matter, so both transports must give the same
    TPDO1 payloads, SYNC by SYNC, while the drives are started and walked to OPERATION ENABLED."""
    cfg = wc.load_config(CONFIGS / "sim.toml")
    nodes = [d.node_id for d in cfg.drives.values()]
    script = _script(nodes)

    simbus = SimTimeBus(period=cfg.period)
    try:
        with SimulatedDrives(cfg, simbus):
            sim_frames: list[can.Message] = []
            for batch in script:
                for cob, data in batch:
                    simbus.send(can.Message(arbitration_id=cob, data=data, is_extended_id=False))
                sim_frames.extend(iter(lambda: simbus.recv(0.0), None))
    finally:
        simbus.shutdown()

    channel = f"whih-determinism-{threading.get_ident()}"
    master = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    drives_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    try:
        with SimulatedDrives(cfg, drives_bus) as drives:
            thread_frames: list[can.Message] = []
            for batch in script:
                for cob, data in batch:
                    master.send(can.Message(arbitration_id=cob, data=data, is_extended_id=False))
                # every SYNC after NMT start is answered by one TPDO1 per drive
                want = len(_tpdos(thread_frames, nodes)) + len(nodes)
                while len(_tpdos(thread_frames, nodes)) < want:
                    msg = master.recv(_WAIT_S)
                    if msg is None:
                        pytest.fail(f"drive thread gave no TPDO1 within {_WAIT_S} s")
                    thread_frames.append(msg)
            assert drives.drive("ante_wire").state.name == "OPERATION_ENABLED"
    finally:
        drives_bus.shutdown()
        master.shutdown()

    sim_tpdos = _tpdos(sim_frames, nodes)
    assert len(sim_tpdos) == len(script) * len(nodes)
    assert _tpdos(thread_frames, nodes) == sim_tpdos
