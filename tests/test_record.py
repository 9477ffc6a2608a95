"""The trace recorder writes what python-can's ASC writer writes, never blocks a real-time cycle and
keeps what it was given when the recording process dies."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import can
import pytest

from whih_control import record as record_module
from whih_control.record import TraceRecorder


def _frames() -> list[can.Message]:
    frames = []
    for i in range(40):
        t = 0.0025 * i
        frames.append(
            can.Message(timestamp=t, arbitration_id=0x80, data=b"", is_extended_id=False, is_rx=False)
        )
        frames.append(
            can.Message(
                timestamp=t + 1e-4,
                arbitration_id=0x181 + i % 6,
                data=bytes((i, 0xAB, 0, 255, 7, i * 3 % 256)),
                is_extended_id=False,
            )
        )
        frames.append(
            can.Message(
                timestamp=t + 2e-4,
                arbitration_id=0x201,
                data=bytes(range(6)),
                is_extended_id=False,
                is_rx=False,
            )
        )
    frames.append(
        can.Message(timestamp=0.2, arbitration_id=0x601, is_remote_frame=True, dlc=8, is_extended_id=False)
    )
    frames.append(can.Message(timestamp=0.21, is_error_frame=True))
    frames.append(can.Message(timestamp=0.22, arbitration_id=0x1ABCDE, data=b"\x01\x02", is_extended_id=True))
    frames.append(
        can.Message(timestamp=0.23, arbitration_id=0x7E5, data=bytes(12), is_fd=True, is_extended_id=False)
    )
    frames.append(can.Message(timestamp=0.24, arbitration_id=0x701, data=b"\x05", is_extended_id=False))
    return frames


def _body(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]  # line 0 holds the wall-clock date the file was opened


def _record(rec: TraceRecorder, frames: list[can.Message]) -> None:
    for i, msg in enumerate(frames):
        rec.record(msg, msg.timestamp, msg.is_rx)
        if i % 3 == 2:
            rec.flush()  # a cycle's worth


def test_trace_lines_equal_python_can_asc_writer(tmp_path: Path) -> None:
    reference = can.ASCWriter(str(tmp_path / "ref.asc"))
    for msg in _frames():
        msg.channel = "whih"
        reference.on_message_received(msg)
    reference.stop()
    rec = TraceRecorder(tmp_path / "trace.asc", blocking=True)
    _record(rec, _frames())
    rec.close()
    assert rec.written == len(_frames()) and rec.dropped == 0
    assert _body(tmp_path / "trace.asc") == _body(tmp_path / "ref.asc")
    back = list(can.LogReader(str(tmp_path / "trace.asc")))
    assert [m.arbitration_id for m in back if not m.is_error_frame] == [
        m.arbitration_id for m in _frames() if not m.is_error_frame
    ]


def test_a_reused_message_is_recorded_as_it_was(tmp_path: Path) -> None:
    rec = TraceRecorder(tmp_path / "trace.asc", blocking=True)
    msg = can.Message(arbitration_id=0x201, data=bytearray(6), is_extended_id=False)
    for k in range(5):
        msg.data[0] = k  # the master reuses its RPDO frames
        rec.record(msg, k * 0.0025, False)
    rec.close()
    assert [m.data[0] for m in can.LogReader(str(tmp_path / "trace.asc"))] == [0, 1, 2, 3, 4]


def test_real_time_never_waits_for_a_stalled_writer(tmp_path: Path) -> None:
    rec = TraceRecorder(tmp_path / "trace.asc", maxsize=1, blocking=False)
    os.kill(rec._proc.pid, signal.SIGSTOP)  # the writer gets no CPU: the pipe fills up
    try:
        frames = _frames()[:120] * 200  # 24,000 frames, far more than a pipe holds
        _record(rec, frames)
        rec.flush()
        assert rec.dropped > 0
        assert rec.written + rec.dropped == len(frames)
    finally:
        os.kill(rec._proc.pid, signal.SIGCONT)
    rec.close()
    assert len(list(can.LogReader(str(tmp_path / "trace.asc")))) == rec.written


def test_the_trace_survives_the_process_that_fed_it(tmp_path: Path) -> None:
    """SIGKILL the recording process: the writer still ends the file, every flushed frame in it."""
    script = (
        "import can, os, signal, sys\n"
        "from pathlib import Path\n"
        "from whih_control.record import TraceRecorder\n"
        "rec = TraceRecorder(Path(sys.argv[1]), blocking=True)\n"
        "msg = can.Message(arbitration_id=0x181, data=bytes(6), is_extended_id=False)\n"
        "for k in range(300):\n"
        "    rec.record(msg, k * 0.0025, True)\n"
        "    rec.flush()\n"
        "print(rec._proc.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    path = tmp_path / "trace.asc"
    child = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        check=False,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL
    writer_pid = int(child.stdout.split()[0])
    for _ in range(600):  # the writer sees its input close and finishes on its own
        try:
            os.kill(writer_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    assert path.read_text().rstrip().endswith("End TriggerBlock")
    assert len(list(can.LogReader(str(path)))) == 300


def test_a_write_cut_short_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the middle of a blocking write: the next flush sends the rest, not all again."""
    rec = TraceRecorder(tmp_path / "trace.asc", blocking=True)
    frames = _frames()[:90]
    for msg in frames:
        rec.record(msg, msg.timestamp, msg.is_rx)
    real_write = os.write
    calls = [0]

    def interrupted_write(fd: int, data: Any) -> int:
        # what a signal does to a blocking write: cut short (the count says how much went in,
        # here ending inside a record), or, before anything went in, the handler's exception
        calls[0] += 1
        if calls[0] == 1:
            return real_write(fd, bytes(data[:37]))
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real_write(fd, data)

    monkeypatch.setattr(record_module.os, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        rec.flush()
    monkeypatch.undo()
    rec.close()
    back = list(can.LogReader(str(tmp_path / "trace.asc")))
    assert [(m.arbitration_id, bytes(m.data)) for m in back] == [
        (m.arbitration_id, bytes(m.data)) for m in frames
    ]


def test_a_trace_that_cannot_be_opened_fails_at_start_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing-folder" / "trace.asc"
    with pytest.raises(OSError, match="missing-folder"):
        TraceRecorder(path)


def test_frames_after_close_are_counted_not_written(tmp_path: Path) -> None:
    rec = TraceRecorder(tmp_path / "trace.asc")
    msg = _frames()[1]
    rec.record(msg, 0.0, True)
    rec.close()
    rec.record(msg, 0.1, True)
    rec.end_cycle()
    rec.close()
    assert (rec.written, rec.dropped) == (1, 1)
    assert len(list(can.LogReader(str(tmp_path / "trace.asc")))) == 1


def test_summary_json_is_strict_json_with_null_for_what_was_not_measured(tmp_path: Path) -> None:
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    path = tmp_path / "summary.json"
    record_module.write_json_atomic(path, {"min_gap": math.nan, "f": [math.inf, 1.5], "u": {"a": -math.inf}})
    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "min_gap": None,
        "f": [None, 1.5],
        "u": {"a": None},
    }
