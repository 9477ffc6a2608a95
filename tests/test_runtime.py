"""The whole simulated WHIH procedure end to end: crossing, run folder, determinism, fault reactions."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import pytest

from firmware_iface import pdo
from firmware_iface.cia402 import CW_QUICK_STOP, DriveState
from firmware_iface.types import DriveGoal
from hil_tests.bench import BenchImaging, bench_robot
from whih_control import cli as cli_module
from whih_control import events as events_module
from whih_control import runtime as runtime_module
from whih_control.api import Robot, simulate
from whih_control.cli import main
from whih_control.config import Config, load_config
from whih_control.errors import RunFolderError, SafetyError, WhihError
from whih_control.events import read_events, verify_log
from whih_control.inspect_run import inspect_run
from whih_control.interrupts import Mode
from whih_control.record import read_telemetry
from whih_control.runtime import Progress, RunResult, Runtime
from whih_control.types import TipMeasurement

from .conftest import CONFIGS, FAULT_EXAMPLES

SIM_TOML = CONFIGS / "sim.toml"


@dataclass
class Run:
    result: RunResult
    out: Path
    cfg: Config


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Run:
    cfg = load_config(SIM_TOML)
    out = tmp_path_factory.mktemp("demo") / "run"
    return Run(simulate(cfg, seed=0, out=out), out, cfg)


def _rpdos(trace: Path) -> dict[int, list[tuple[float, int, int]]]:
    """Per node id: (t, controlword, target counts) of every RPDO1 in a trace."""
    out: dict[int, list[tuple[float, int, int]]] = {}
    for msg in can.LogReader(str(trace)):
        node = msg.arbitration_id - 0x200
        if 1 <= node <= 127 and msg.dlc == pdo.RPDO1_DLC:
            cw, target = pdo.RPDO1.unpack_from(bytes(msg.data))
            out.setdefault(node, []).append((msg.timestamp, cw, target))
    return out


def test_demo_procedure_crosses(demo: Run) -> None:
    r = demo.result
    assert r.outcome == "complete" and r.crossed
    assert r.faults == ()
    assert r.stale_cycles == 0
    assert r.cycles == pytest.approx(r.sim_seconds * demo.cfg.cycle.rate_hz, abs=2)


def test_run_folder_explains_itself(demo: Run) -> None:
    out = demo.out
    assert sorted(p.name for p in out.iterdir()) == [
        "events.jsonl",
        "plot.png",
        "summary.json",
        "telemetry.csv",
        "telemetry.mcap",
        "trace.asc",
    ]
    report = verify_log(out / "events.jsonl")
    assert report.ok, report.problem
    kinds = [e["kind"] for e in read_events(out / "events.jsonl")]
    assert "phase" in kinds and "calibrated" in kinds and kinds[-1] == "close"

    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "outcome",
        "crossed",
        "sim_seconds",
        "wall_seconds",
        "cycles",
        "overruns",
        "min_gap",
        "max_gap",
        "max_force",
        "faults",
        "axes",
    ):
        assert key in summary
    assert summary["axes"]["retro_mc"]["node_id"] == 6
    assert summary["axes"]["ante_wire"]["travel"] == [-200.0, 200.0]

    png = (out / "plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_trace_holds_every_cyclic_frame(demo: Run) -> None:
    frames = list(can.LogReader(str(demo.out / "trace.asc")))
    ids = {m.arbitration_id for m in frames}
    nodes = [d.node_id for d in demo.cfg.drives.values()]
    assert pdo.SYNC_COB in ids
    assert {0x200 + n for n in nodes} <= ids and {0x180 + n for n in nodes} <= ids
    syncs = sum(1 for m in frames if m.arbitration_id == pdo.SYNC_COB)
    assert syncs >= demo.result.cycles - 1
    stamps = [m.timestamp for m in frames]
    assert stamps == sorted(stamps)


def test_telemetry_at_most_100_hz(demo: Run) -> None:
    cols = read_telemetry(demo.out / "telemetry.csv")
    t = cols["t"]
    assert len(t) > 100
    assert min(b - a for a, b in itertools.pairwise(t)) >= 0.0099


def test_gap_held_on_the_plant_during_hand_in_hand(demo: Run) -> None:
    cols = read_telemetry(demo.out / "telemetry.csv")
    rows = [i for i, p in enumerate(cols["phase"]) if str(p).startswith("hand_in_hand")]
    assert len(rows) > 500
    p = demo.cfg.procedure
    gaps = [cols["gap_true"][i] for i in rows]
    in_band = sum(abs(g - p.gap_target) <= 1.0 for g in gaps) / len(gaps)
    assert in_band >= 0.95, in_band
    assert p.gap_min <= min(gaps) and max(gaps) <= p.gap_max
    coupling = [cols["coupling"][i] for i in rows]
    assert min(coupling) >= 0.0 and max(coupling) <= p.coupling_max


def test_same_seed_gives_the_same_frames(tmp_path: Path) -> None:
    cfg = load_config(SIM_TOML)
    runs = [simulate(cfg, seed=7, out=tmp_path / f"r{i}", max_time=12.0) for i in range(2)]
    assert runs[0].cycles == runs[1].cycles and runs[0].max_force == runs[1].max_force

    def frames(i: int) -> list[tuple[float, int, bytes]]:
        return [
            (m.timestamp, m.arbitration_id, bytes(m.data))
            for m in can.LogReader(str(tmp_path / f"r{i}" / "trace.asc"))
        ]

    first = frames(0)
    assert len(first) > 10_000 and first == frames(1)


def _hand_in_hand_window(demo: Run) -> tuple[float, float]:
    cols = read_telemetry(demo.out / "telemetry.csv")
    ts = [t for t, p in zip(cols["t"], cols["phase"], strict=True) if str(p).startswith("hand_in_hand")]
    return ts[0], ts[-1]


@pytest.mark.parametrize("kind", FAULT_EXAMPLES)
def test_fault_during_hand_in_hand_quick_stops_every_axis(
    kind: str, demo: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lo, hi = _hand_in_hand_window(demo)
    at = round(random.Random(kind).uniform(lo + 0.5, hi - 1.0), 4)
    spec = f"{kind}@{at}"
    out = tmp_path / "run"
    code = main(["run", "--config", str(SIM_TOML), "--out", str(out), "--seed", "0", "--inject", spec])
    capsys.readouterr()
    assert code == 1

    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"] == "fault" and not summary["crossed"]
    assert summary["faults"]
    assert [s.split("@")[0].split(":")[0] for s in summary["injected"]] == [kind.split(":", maxsplit=1)[0]]
    assert verify_log(out / "events.jsonl").ok
    events = read_events(out / "events.jsonl")
    latches = [e for e in events if e["kind"] == "fault"]
    assert latches, "the fault is not in events.jsonl"
    t_latch = latches[0]["t"]
    assert t_latch >= at

    period = demo.cfg.period
    for node, frames in _rpdos(out / "trace.asc").items():
        drive = next(d for d in demo.cfg.drives.values() if d.node_id == node)
        cpu = drive.counts_per_unit
        if drive.kind == "rotary":
            # a turning wire stops on its own quick-stop ramp (degrees; the mm bound is linear)
            v = drive.max_speed
            stop_max = v * v / (2.0 * drive.quick_stop_decel) + 2.0 * v * period
        else:
            stop_max = demo.cfg.safety.stop_distance_max
        after = [f for f in frames if f[0] >= t_latch - 1e-9]
        assert after, f"node {node}: no RPDO after the fault"
        # quick stop within one cycle of the fault, then never anything that moves
        first = [f for f in after if f[0] <= t_latch + period + 1e-9]
        assert first and all(cw == CW_QUICK_STOP for _, cw, _ in first), (node, first[:3])
        moving = [cw for _, cw, _ in after if cw not in (CW_QUICK_STOP, 0x0000, 0x0002)]
        assert moving == [], f"node {node}: controlwords after the fault {sorted(set(moving))}"
        ref = after[0][2]
        drift = max(abs(target - ref) for _, _, target in after) / cpu
        assert drift <= stop_max + 1e-6, f"node {node}: target moved {drift:.3f} after the fault"


class _Disk:
    """The event log's file, recording each write/flush/fsync and failing them when ``full``."""

    def __init__(self, f: Any, order: list[str]) -> None:
        self.f, self.order, self.full = f, order, False

    def _io(self, what: str) -> None:
        self.order.append(what)
        if self.full:
            raise OSError(28, "No space left on device")

    def write(self, b: bytes) -> int:
        self._io("write")
        return int(self.f.write(b))

    def flush(self) -> None:
        self._io("flush")
        self.f.flush()

    def fileno(self) -> int:
        return int(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _fault_cycles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, full: bool
) -> tuple[list[str], Runtime]:
    """Let a drive fault arrive in a robot with a run folder; list, in order, the cycles' RPDOs
    and every event-log write/flush/fsync (``full``: each of those fails with ENOSPC)."""
    order: list[str] = []
    robot = Robot(_sim_time_config(), out=tmp_path / "run")
    with robot:
        rt = robot.runtime
        robot.enable()
        assert rt.drives is not None and rt.log is not None
        disk = _Disk(rt.log._file, order)
        monkeypatch.setattr(rt.log, "_file", disk)
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            disk._io("fsync")
            real_fsync(fd)

        write = rt.master.write

        def traced_write() -> None:
            write()
            order.append("rpdo " + ",".join(f"0x{cw:x}" for cw in rt.master.last_controlword))

        monkeypatch.setattr(rt.master, "write", traced_write)
        monkeypatch.setattr(events_module.os, "fsync", fsync)
        rt.drives.inject("emcy:ante_mc:0x8611@0")
        disk.full = full
        for _ in range(4):
            rt._cycle()  # never raises for the log
        assert rt.core.supervisor.latched
        disk.full = False  # the disk recovers before close: nothing held is lost
    return order, rt


STOP = "rpdo " + ",".join(["0x2"] * 6)


def test_a_fault_is_latched_and_the_quick_stop_sent_before_the_log_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order, _ = _fault_cycles(tmp_path, monkeypatch, full=False)
    first_io = min(order.index(k) for k in ("write", "flush", "fsync") if k in order)
    assert STOP in order and order.index(STOP) < first_io, order
    assert "fsync" in order


def test_a_full_disk_stops_the_run_without_keeping_the_drives_from_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order, rt = _fault_cycles(tmp_path, monkeypatch, full=True)
    assert order.count(STOP) >= 3, order  # every cycle still sent its quick stop
    assert any("event log" in f and "No space left" in f for f in rt.faults), rt.faults
    # what the full disk held back was written at close: nothing lost, the chain intact
    events = read_events(tmp_path / "run" / "events.jsonl")
    assert verify_log(tmp_path / "run" / "events.jsonl").ok
    assert any(e["kind"] == "drive" and e.get("code") == 0x8611 for e in events)


def test_bad_inject_spec_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(SIM_TOML), "--inject", "meteor@3"]) == 2
    assert "meteor" in capsys.readouterr().err
    assert main(["run", "--config", str(SIM_TOML), "--inject", "emcy:spare_axis:0x8611@3"]) == 2
    assert "spare_axis" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_bad_max_time_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(SIM_TOML), "--max-time", value]) == 2
    err = capsys.readouterr().err
    assert "--max-time" in err and value in err and "Traceback" not in err


@pytest.mark.parametrize("value", [-1.0, 0.0, math.nan, math.inf, "5"])
def test_simulate_refuses_a_bad_max_time_before_opening(value: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"max_time \(="):
        simulate(load_config(SIM_TOML), max_time=value, out=tmp_path / "run")  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()


def test_a_drive_fault_without_simulated_drives_and_a_negative_seed_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rig = str(CONFIGS / "rig-epos4.toml")
    assert main(["run", "--config", rig, "--inject", "heartbeat-loss:ante_mc@1"]) == 2
    assert "drive faults need simulated drives" in capsys.readouterr().err
    assert main(["run", "--config", str(SIM_TOML), "--seed", "-1"]) == 2
    assert "--seed (=-1)" in capsys.readouterr().err
    # external drives run in another process: a drive fault cannot be injected from here
    ext = ["run", "--config", str(SIM_TOML), "--realtime", "--external-drives", "--max-time", "1"]
    assert main([*ext, "--inject", "heartbeat-loss:retro_mc@2"]) == 2
    err = capsys.readouterr().err
    assert "drive faults cannot be injected into external drives" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "code"),
    [(["diagram"], 0), (["run", "--config", str(SIM_TOML), "--max-time", "1"], 1)],
    ids=["diagram", "run-timeout"],
)
def test_a_closed_output_pipe_changes_neither_the_run_nor_its_exit_code(args: list[str], code: int) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "whih_control.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before anything is written
        err = proc.stderr.read().decode()
        got = proc.wait(timeout=120)
    assert got == code and "Traceback" not in err, err


def test_a_lone_inject_spec_string_is_refused_not_split_into_characters() -> None:
    with pytest.raises(TypeError, match=r"inject \(='estop@1'\) must be a list"):
        simulate(load_config(SIM_TOML), inject="estop@1")


def test_an_out_folder_that_cannot_be_created_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["run", "--config", str(SIM_TOML), "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot create the run folder" in err and str(blocker / "run") in err and "Traceback" not in err


@pytest.mark.parametrize(
    "existing", ["summary.json", "events.jsonl", "trace.asc", "telemetry.csv", "plot.png"]
)
def test_an_out_folder_holding_a_run_is_refused_and_left_as_it_was(
    existing: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / existing).write_bytes(b"an earlier run\n")
    assert main(["run", "--config", str(SIM_TOML), "--out", str(out)]) == 2
    assert existing in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [existing]
    assert (out / existing).read_bytes() == b"an earlier run\n"
    with pytest.raises(RunFolderError, match="already holds a run"), Robot(_sim_time_config(), out=out):
        pass


def test_demo_run_folders_started_in_one_second_do_not_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_module.time, "strftime", lambda fmt: "20261123-120000")
    first = cli_module._default_out("demo")
    first.mkdir(parents=True)
    second = cli_module._default_out("demo")
    second.mkdir()
    third = cli_module._default_out("demo")
    assert [first.name, second.name, third.name] == [
        "demo-20261123-120000",
        "demo-20261123-120000-2",
        "demo-20261123-120000-3",
    ]


def _sim_time_config() -> Config:
    cfg = load_config(SIM_TOML)
    return cfg.replace(bus=dataclasses.replace(cfg.bus, interface="whih-sim"))


def test_a_rig_without_imaging_enables_and_jogs_on_bench_imaging() -> None:
    """What the contract suite does on a real rig with ``imaging.source = "external"``."""
    cfg = _sim_time_config()
    cfg = cfg.replace(imaging=dataclasses.replace(cfg.imaging, source="external"))
    with Robot(cfg) as robot, pytest.raises(WhihError, match="calibration"):
        robot.enable()  # nothing to calibrate on: refused, not hanging
    imaging = BenchImaging(cfg)
    with Robot(cfg) as robot:
        imaging.robot = robot
        imaging(Progress(0.0, "idle", math.nan, math.nan, 27.6, 32.6, 0))
        assert not robot.runtime._external  # no drive has reported a position: no origin yet
    with bench_robot(cfg) as robot:
        robot.enable()
        assert robot.runtime.procedure.phase.value == "ready"
        fb = robot.runtime.master.feedback.axes
        before = fb["ante_wire"].position
        robot.jog("ante_wire", 1.0)
        assert fb["ante_wire"].position - before == pytest.approx(1.0, abs=0.05)
        assert robot.runtime.core.estimator.calibrated


def test_measurements_added_from_another_thread_are_all_taken() -> None:
    cfg = _sim_time_config()
    cfg = cfg.replace(imaging=dataclasses.replace(cfg.imaging, source="external"))
    taken: list[int] = []
    with Robot(cfg) as robot:
        rt = robot.runtime
        gather = rt._gather_measurements

        def counting(t: float) -> None:
            gather(t)
            taken.append(len(rt._measurements))

        rt._gather_measurements = counting  # type: ignore[method-assign]
        with pytest.raises(TypeError, match="must be a TipMeasurement"):
            robot.add_measurement({"ante_wire": 1.0})  # type: ignore[arg-type]
        tips = {"ante_wire": -15.0}
        feeder = threading.Thread(
            target=lambda: [robot.add_measurement(TipMeasurement(0.0, 0.0, tips)) for _ in range(20_000)]
        )
        feeder.start()
        while feeder.is_alive():
            rt._cycle()
        feeder.join()
        rt._cycle()
        assert sum(taken) == 20_000 and robot.time == rt.time > 0.0


def test_a_jog_held_short_raises_and_leaves_nothing_pending() -> None:
    with Robot(_sim_time_config()) as robot:
        robot.enable()
        # the MCs start 31.6 mm apart, beyond the window: opening the gap further is held
        with pytest.raises(SafetyError, match="not reached"):
            robot.jog("ante_mc", -1.0)
        ctl = robot.runtime.core.controller
        assert all(math.isnan(x) for x in ctl.jog_target)
        before = robot.runtime.master.feedback.axes["ante_mc"].position
        robot.runtime.procedure.confirm()  # the approach starts: nothing of the jog may follow
        for _ in range(40):
            robot.runtime._cycle()
        assert robot.runtime.master.feedback.axes["ante_mc"].position >= before - 1e-3


def test_a_drive_leaving_operation_enabled_on_its_own_is_a_fault() -> None:
    with Robot(_sim_time_config(), auto_confirm=True) as robot:
        robot.enable()
        rt = robot.runtime
        for _ in range(400):
            rt._cycle()
        drive = rt.drives._drives["retro_mc"]  # e.g. safe torque off cut the power stage
        drive._state = DriveState.SWITCH_ON_DISABLED
        drive._cw_state = None
        drive._vel = 0.0
        for _ in range(3):
            rt._cycle()
        assert rt.core.supervisor.latched
        assert "retro_mc: left OPERATION ENABLED" in rt.core.supervisor.latched_verdict.text


def test_the_robot_refuses_work_after_close() -> None:
    robot = Robot(_sim_time_config())
    with robot:
        robot.enable()
    with pytest.raises(WhihError, match="not open"):
        robot.enable()


def test_ctrl_c_inside_a_cycle_is_raised_when_the_cycle_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never between two drives' RPDOs: every drive gets this cycle's frame, then the interrupt."""
    with Robot(_sim_time_config()) as robot:
        robot.enable()
        rt = robot.runtime
        write = rt.master.write
        sent: list[int] = []
        send = rt.bus.send

        def counting_send(msg: can.Message, timeout: float | None = None) -> None:
            sent.append(msg.arbitration_id)
            send(msg, timeout)

        def ctrl_c_then_write() -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # bytecodes for the handler to run at, as a real Ctrl-C would
                pass
            write()

        monkeypatch.setattr(rt.bus, "send", counting_send)
        monkeypatch.setattr(rt.master, "write", ctrl_c_then_write)
        with pytest.raises(KeyboardInterrupt):
            rt._cycle()
        assert sorted(c for c in sent if 0x201 <= c <= 0x27F) == [
            0x200 + d.node_id for d in rt.cfg.drives.values()
        ]
        monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _ctrl_c_in_first_cycle(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, stopping: list[DriveGoal | None] | None = None
) -> list[DriveGoal | None]:
    """From now on the runtime's cycles are listed (in ``stopping``) by the stop goal they give
    the supervisor; the first one gets a Ctrl-C (the operator presses it again as the safe stop
    begins)."""
    cycle = rt._cycle
    seen: list[DriveGoal | None] = [] if stopping is None else stopping

    def cycle_with_ctrl_c() -> None:
        if not seen:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # bytecodes for the handler to run at, as a real Ctrl-C would
                pass
        seen.append(rt._cycle_in.stop_goal)
        cycle()

    monkeypatch.setattr(rt, "_cycle", cycle_with_ctrl_c)
    return seen


def test_ctrl_c_during_close_waits_until_the_drives_are_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    robot = Robot(_sim_time_config())
    robot.__enter__()
    robot.enable()
    rt = robot.runtime
    stopping = _ctrl_c_in_first_cycle(rt, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        robot.__exit__(None, None, None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # the whole quick stop ran, then the disable, before the interrupt was raised
    assert stopping.count(DriveGoal.QUICK_STOP) == int(0.2 / rt.cfg.period)
    assert stopping[-1] is DriveGoal.DISABLED
    states = {a.state for a in rt.master.feedback.axes.values()}
    assert states <= {DriveState.SWITCH_ON_DISABLED}, states
    with pytest.raises(can.CanOperationError):
        rt.bus.send(can.Message(arbitration_id=0x80, data=b"", is_extended_id=False))


def test_an_application_sigint_handler_gets_a_ctrl_c_held_during_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int]] = []
    stopping: list[DriveGoal | None] = []
    robot = Robot(_sim_time_config())
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append((signum, len(stopping))))
    try:
        robot.__enter__()
        robot.enable()
        rt = robot.runtime
        _ctrl_c_in_first_cycle(rt, monkeypatch, stopping)
        robot.__exit__(None, None, None)
        # called once, after the whole safe stop, not in the middle of it
        assert calls == [(signal.SIGINT, len(stopping))]
        assert stopping.count(DriveGoal.QUICK_STOP) == int(0.2 / rt.cfg.period)
    finally:
        signal.signal(signal.SIGINT, previous)


def _press_ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # bytecodes for the handler to run at, as a real Ctrl-C would
        pass


def test_ctrl_c_between_robot_calls_interrupts_at_once() -> None:
    with Robot(_sim_time_config()) as robot:
        robot.enable()
        with pytest.raises(KeyboardInterrupt):
            _press_ctrl_c()
        robot.jog("ante_wire", 0.2)  # the application caught it and goes on
        with pytest.raises(KeyboardInterrupt):
            _press_ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_while_the_first_unwinds_is_held(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The operator presses again while the run folder is being written: the drives are stopped
    first, the summary is still written, and one KeyboardInterrupt comes out."""
    robot = Robot(_sim_time_config(), out=tmp_path / "run", auto_confirm=True)
    with pytest.raises(KeyboardInterrupt) as caught, robot:
        robot.enable()
        rt = robot.runtime
        finish = rt._finish

        def finish_with_second_ctrl_c(outcome: str) -> RunResult:
            _press_ctrl_c()
            return finish(outcome)

        monkeypatch.setattr(rt, "_finish", finish_with_second_ctrl_c)
        cycle_body = rt._cycle_body

        def first_ctrl_c() -> None:
            if rt.procedure.phase.value.startswith("hand_in_hand") and rt.interrupts.mode is Mode.IN_CYCLE:
                _press_ctrl_c()
            cycle_body()

        monkeypatch.setattr(rt, "_cycle_body", first_ctrl_c)
        robot.run_procedure()
    assert caught.value.__traceback__ is not None
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["outcome"] == "interrupted"
    states = {a.state for a in robot.runtime.master.feedback.axes.values()}
    assert states <= {DriveState.SWITCH_ON_DISABLED}, states
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_as_the_with_block_ends_still_gets_the_safe_stop() -> None:
    robot = Robot(_sim_time_config())
    with pytest.raises(KeyboardInterrupt), robot:  # raised once close has stopped the drives
        robot.enable()
        rt = robot.runtime

        class Frame:  # where the handler finds the main thread: the first steps of __exit__
            f_code = Robot.__exit__.__code__

        try:
            rt.interrupts.on_sigint(signal.SIGINT, Frame())  # type: ignore[arg-type]
        except KeyboardInterrupt:
            pytest.fail("raised in the first steps of __exit__: close would never run")
        assert rt.interrupts.pending  # held, not raised: close will run, then raise it
    states = {a.state for a in robot.runtime.master.feedback.axes.values()}
    assert states <= {DriveState.SWITCH_ON_DISABLED}, states


def test_an_error_and_a_ctrl_c_in_one_cycle_give_one_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    with Robot(_sim_time_config()) as robot:
        robot.enable()
        rt = robot.runtime
        cycle_body = rt._cycle_body

        def broken() -> None:
            _press_ctrl_c()
            raise RuntimeError("a cycle that fails")

        monkeypatch.setattr(rt, "_cycle_body", broken)
        with pytest.raises(KeyboardInterrupt) as caught:
            rt._cycle()
        assert isinstance(caught.value.__cause__, RuntimeError)
        monkeypatch.setattr(rt, "_cycle_body", cycle_body)
        robot.jog("ante_wire", 0.2)  # goes on; the interrupt is not delivered a second time


def test_a_failed_open_puts_the_sigint_handler_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def freeze() -> None:
        raise RuntimeError("late failure in open")

    monkeypatch.setattr(runtime_module.gc, "freeze", freeze)
    robot = Robot(_sim_time_config())
    with pytest.raises(RuntimeError, match="late failure"):
        robot.__enter__()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not robot.runtime._opened


def test_injections_still_pending_do_not_fire_during_close() -> None:
    with Robot(_sim_time_config(), inject=["sync-loss@1.3"], auto_confirm=True) as robot:
        robot.enable()
        robot.run_procedure(max_time=1.0)
    assert robot.runtime.master.sync_enabled


def test_ctrl_c_stops_safely_and_keeps_the_run_folder(tmp_path: Path) -> None:
    def operator_presses_ctrl_c(p: Progress) -> None:
        if p.phase.startswith("hand_in_hand"):
            raise KeyboardInterrupt

    robot = Robot(
        _sim_time_config(), out=tmp_path / "run", progress=operator_presses_ctrl_c, auto_confirm=True
    )
    with pytest.raises(KeyboardInterrupt), robot:
        robot.enable()
        robot.run_procedure()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["outcome"] == "interrupted"
    assert verify_log(tmp_path / "run" / "events.jsonl").ok
    states = {a.state for a in robot.runtime.master.feedback.axes.values()}
    assert states <= {DriveState.SWITCH_ON_DISABLED}, states


def test_a_set_up_that_times_out_is_not_called_a_recording_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # external imaging with nothing feeding it: enable() waits for the first tip measurement
    text = SIM_TOML.read_text().replace('source = "sim"', 'source = "external"', 1)
    assert 'source = "external"' in text
    cfg = tmp_path / "ext.toml"
    cfg.write_text(text)
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "calibration: not reached within 10 s" in err
    assert "recording failed" not in err
    # the run folder says why nothing ran: an event, the summary's reason, and inspect's faults
    failed = [e for e in read_events(tmp_path / "run" / "events.jsonl") if e["kind"] == "enable_failed"]
    assert len(failed) == 1 and "calibration: not reached within 10 s" in failed[0]["text"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "calibration: not reached" in summary["reason"]
    report = inspect_run(tmp_path / "run", plot=False)
    assert report.ok and any(f["text"].startswith("enable failed: ") for f in report.faults)
