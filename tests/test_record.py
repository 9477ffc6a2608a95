"""The trace recorder writes what python-can's ASC writer writes, and never blocks the cycle."""

from __future__ import annotations

from pathlib import Path

import can

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


def test_trace_lines_equal_python_can_asc_writer(tmp_path: Path) -> None:
    reference = can.ASCWriter(str(tmp_path / "ref.asc"))
    for msg in _frames():
        msg.channel = "whih"
        reference.on_message_received(msg)
    reference.stop()
    rec = TraceRecorder(tmp_path / "trace.asc")
    for msg in _frames():
        rec.put(msg)
    rec.close()
    assert rec.written == len(_frames()) and rec.dropped == 0
    assert _body(tmp_path / "trace.asc") == _body(tmp_path / "ref.asc")
    back = list(can.LogReader(str(tmp_path / "trace.asc")))
    assert [m.arbitration_id for m in back if not m.is_error_frame] == [
        m.arbitration_id for m in _frames() if not m.is_error_frame
    ]


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    rec = TraceRecorder(tmp_path / "trace.asc", maxsize=10)
    rec._stop.set()  # the writer drains what is queued and stops: nothing is consumed later
    rec._thread.join()
    frames = _frames()
    for msg in frames:
        rec.put(msg)
    assert rec.dropped == len(frames) - 10
    rec.close()
