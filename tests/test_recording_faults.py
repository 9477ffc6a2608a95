"""Recording is part of safety: a full disk or a dead writer stops the run, says what was lost;
a killed run leaves a verifiable event log, a readable trace and its telemetry.

The full disk is a real 1 MiB tmpfs where the test may mount one (root, as in CI containers), in
simulated time and (marker ``realtime``) in real time;
the dead writers are the real writer process killed, and the writer thread's file failing with
ENOSPC.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import pty
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import pytest

from whih_control.api import Robot
from whih_control.cli import main
from whih_control.config import Config, load_config
from whih_control.errors import SafetyError
from whih_control.events import verify_log

from .conftest import CONFIGS, ROOT, THOROUGH

SIM_TOML = CONFIGS / "sim.toml"


def _cfg() -> Config:
    cfg = load_config(SIM_TOML)
    return cfg.replace(bus=dataclasses.replace(cfg.bus, interface="whih-sim"))


@contextlib.contextmanager
def _tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=False, capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode(errors='replace').strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_stops_the_run_with_a_message_exit_1_and_the_summary_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the trace writer and telemetry thread died silently, motion went on, then three
    tracebacks and no summary."""
    with _tmpfs(tmp_path / "disk") as disk:
        code = main(["run", "--config", str(SIM_TOML), "--out", str(disk / "run")])
        out, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in err
    assert "outcome: fault" in out
    # the first recording failure stopped the run, long before the procedure could have ended
    reason = next(line for line in out.splitlines() if line.startswith("reason: "))
    assert "trace writer" in reason or "telemetry writer" in reason or "event log" in reason
    assert "the run folder is incomplete" in err and "No space left on device" in err
    printed = json.loads(err[err.index("{") : err.rindex("}") + 1])
    assert printed["outcome"] == "fault" and printed["recording"]["failures"]
    assert printed["sim_seconds"] < 10.0


@pytest.mark.realtime
def test_a_full_disk_in_real_time_stops_the_run_with_a_message_exit_1_and_the_summary_printed(
    tmp_path: Path,
) -> None:
    """The same 1 MiB tmpfs under ``whih run --realtime`` (its own process, as an operator runs
    it): before, the whole real-time run went unrecorded with no fault."""
    with _tmpfs(tmp_path / "disk") as disk:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "whih_control.cli", "run", "--config", str(SIM_TOML)),
                *("--realtime", "--out", str(disk / "run"), "--max-time", "60"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    out, err = done.stdout, done.stderr
    assert done.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    assert "outcome: fault" in out
    reason = next(line for line in out.splitlines() if line.startswith("reason: "))
    assert "trace writer" in reason or "telemetry writer" in reason or "event log" in reason
    assert "the run folder is incomplete" in err and "No space left on device" in err
    printed = json.loads(err[err.index("{") : err.rindex("}") + 1])
    assert printed["outcome"] == "fault" and printed["recording"]["failures"]
    assert printed["sim_seconds"] < 30.0  # stopped by the full disk, not by the procedure's end


def test_a_dead_trace_writer_is_a_recording_fault_and_the_summary_says_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with Robot(_cfg(), out=out, auto_confirm=True) as robot:
        robot.enable()
        rt = robot.runtime
        assert rt.recorder.trace is not None
        rt.procedure.confirm()
        for _ in range(200):
            rt._cycle()
        assert not rt.core.supervisor.latched
        rt.recorder.trace._proc.kill()
        rt.recorder.trace._proc.wait()
        rt._cycle()
        assert rt.core.supervisor.latched  # in the cycle that saw it gone
        assert set(rt.master.last_controlword) == {0x02}
        result = rt.run_procedure(max_time=2.0)
        with pytest.raises(OSError, match="trace writer failed"):
            rt.close()
    assert result.outcome == "fault" and "trace writer" in result.reason
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recording"]["failures"] == [result.reason]
    assert summary["recording"]["trace_frames_dropped"] > 0


class _FullFile:
    """telemetry.csv's file object whose writes fail as on a full disk."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def write(self, s: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        self.f.close()


def test_a_failing_telemetry_writer_is_a_recording_fault(tmp_path: Path) -> None:
    robot = Robot(_cfg(), out=tmp_path / "run", auto_confirm=True)
    with pytest.raises(OSError, match="telemetry writer failed"), robot:
        robot.enable()
        rt = robot.runtime
        assert rt.recorder.telemetry is not None
        rt.recorder.telemetry._file = _FullFile(rt.recorder.telemetry._file)  # type: ignore[assignment]
        result = rt.run_procedure(max_time=5.0)
    assert result.outcome == "fault"
    assert "telemetry writer" in result.reason and "No space left" in result.reason
    assert rt.recorder.telemetry.dropped > 0
    # the summary (on a disk that works) says what was lost; closing says the rest
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["recording"]["telemetry_rows_dropped"] > 0


# --------------------------------------------------------------------------- SIGKILL at random

_PROGRESS = re.compile(rb"\[\s*(\d+\.\d) s\]")


class _Run:
    """``whih run`` (simulated time) in its own process, its output on a terminal so progress is
    reported ten times per run second; ``seen`` holds (wall time read, run time) of each."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "whih_control.cli", "run", "--config", str(SIM_TOML), "--out", str(out)],
            stdout=slave,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        os.close(slave)
        self.seen: list[tuple[float, float]] = []
        self.killed = math.inf
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            self.seen.extend((now, float(m.group(1))) for m in _PROGRESS.finditer(chunk))

    def kill(self) -> None:
        self.killed = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.reader.join(timeout=5.0)
        os.close(self.master)


def _trace_frames(path: Path) -> int:
    """Frames in the trace, once its writer (which outlives the killed run) has ended it."""
    deadline = time.monotonic() + 10.0
    while "End TriggerBlock" not in path.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.05)
    return sum(1 for _ in can.LogReader(str(path)))


@pytest.mark.parametrize("runs", [30 if THOROUGH else 6])
def test_sigkill_at_random_moments_leaves_a_verifiable_record(tmp_path: Path, runs: int) -> None:
    """Before: telemetry.csv was 0 bytes after a SIGKILL at up to 8.7 s. Each run is killed at a
    random moment of its first 3 s of run (wall) time, two side by side (a run is CPU-bound)."""
    rng = random.Random(13)
    procs: list[_Run] = []
    for wave in range(0, runs, 2):
        batch = [_Run(tmp_path / f"run{k}") for k in range(wave, min(wave + 2, runs))]
        procs += batch
        for run in batch:
            # the interpreter's start-up is not the run: count from its first progress report
            deadline = time.monotonic() + 60.0
            while not run.seen and time.monotonic() < deadline and run.proc.poll() is None:
                time.sleep(0.02)
        kill_at = sorted(
            (run.seen[0][0] + rng.uniform(0.05, 3.0) if run.seen else 0.0, i) for i, run in enumerate(batch)
        )
        for at, i in kill_at:
            time.sleep(max(0.0, at - time.monotonic()))
            batch[i].kill()
    checked = 0
    for run in procs:
        out = run.out
        if (out / "events.jsonl").exists():
            report = verify_log(out / "events.jsonl")
            assert report.ok, report.problem
        if (out / "trace.asc").exists():
            _trace_frames(out / "trace.asc")  # readable to its end (raises otherwise)
        if not (out / "telemetry.csv").exists():
            continue
        # every row sampled more than 0.5 s (wall) before the kill is in telemetry.csv
        before = [t for wall, t in run.seen if wall <= run.killed - 0.5]
        lines = (out / "telemetry.csv").read_bytes().split(b"\n")[1:-1]  # header; torn tail
        rows = [float(line.split(b",", 1)[0]) for line in lines]
        if before:
            assert rows and rows[-1] >= before[-1] - 0.011, (out, rows[-1:], before[-1])
            checked += 1
        assert all(0.0 < b - a < 0.011 for a, b in itertools.pairwise(rows))  # no gap
    assert checked >= runs // 2  # most kills came more than 0.5 s into the run


def test_a_recording_fault_is_never_acknowledged(tmp_path: Path) -> None:
    """The writers that failed do not come back: whatever moved after an acknowledge would go
    unrecorded, so acknowledge refuses for the rest of the run and names what was lost."""
    robot = Robot(_cfg(), out=tmp_path / "run")
    answers: list[str] = []
    # (close() raises for the lost recording: the answers are checked after it)
    with pytest.raises(OSError, match="telemetry writer failed"), robot:
        robot.enable()
        robot.start_procedure()
        robot.wait(until="approach")
        rt = robot.runtime
        assert rt.recorder.telemetry is not None
        rt.recorder.telemetry._file = _FullFile(rt.recorder.telemetry._file)  # type: ignore[assignment]
        answers.append(robot.wait(until="fault", timeout=1.0).fault)
        for _ in range(3):
            robot.step(200)  # the quick stops have long finished: only the loss remains
            try:
                robot.acknowledge()
                answers.append("accepted")
            except SafetyError as exc:
                answers.append(str(exc))
        answers.append(robot.status().phase)
    assert "telemetry writer" in answers[0]
    for answer in answers[1:4]:
        assert re.search(r"refused: recording lost \(telemetry writer .*start a new run", answer), answer
    assert answers[4] == "fault"
