"""The trace writer process: packed frames on stdin -> ``trace.asc`` or ``trace.log``.

Run as a script (``python _trace_writer.py PATH [CHANNEL]``) by
:class:`whih_control.record.TraceRecorder`,
so it imports python-can only, not the package. It formats in its own interpreter, so the cycle
never waits for it on the interpreter lock; when its input closes (the run ended, or the process
that fed it died) it writes what it has and ends the file properly.

The format follows the suffix, as python-can's ``Logger`` does: ``.asc`` (Vector ASC,
``can.ASCWriter``) or ``.log`` (``candump -L`` as ``can.CanutilsLogWriter`` writes it, the file
``canplayer`` replays; CHANNEL names the interface in it).

Record layout (little endian): ``<dIBBB`` time (s), arbitration id, flags, DLC, data length,
then the data bytes. Flags: see ``RX``, ``EXTENDED``, ``REMOTE``, ``ERROR``, ``FD``.
"""

from __future__ import annotations

import signal

if __name__ == "__main__":
    # before the slow imports: the process that feeds this one decides when the trace ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)

import os
import select
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import can

HEADER = struct.Struct("<dIBBB")
RX, EXTENDED, REMOTE, ERROR, FD = 1, 2, 4, 8, 16
FLUSH_INTERVAL_S = 0.5
CHANNEL = "whih"
READY = b"R"
"""Written to stdout once the file is open."""
FORMATS = (".asc", ".log")
"""File suffixes the writer knows."""


def write_records(writer: can.ASCWriter, data: bytes | memoryview, pos: int = 0) -> int:
    """Write every complete record of ``data`` from ``pos``; returns where the first incomplete one starts.

    Plain data frames are formatted here exactly as ``ASCWriter.on_message_received`` does (a
    test holds the two byte for byte); the writer itself does the header and the rarer kinds.
    """
    write = writer.file.write
    channel = writer.channel
    for t, cob, flags, dlc, payload, stop in _records(data, pos):
        pos = stop
        if writer.header_written and not flags & (EXTENDED | REMOTE | ERROR | FD):
            rel = t - writer.started if t >= writer.started else t
            write(
                f"{rel: 9.6f} {channel}  {cob:<15X} {'Rx' if flags & RX else 'Tx':<4} d {dlc:x} "
                f"{payload.hex(' ').upper()}\n"
            )
        else:
            writer.on_message_received(_message(t, cob, flags, dlc, payload, CHANNEL))
    return pos


def _records(data: bytes | memoryview, pos: int) -> Iterator[tuple[float, int, int, int, bytes, int]]:
    """``(t, cob, flags, dlc, payload, next_pos)`` of every complete record from ``pos``."""
    end = len(data)
    size = HEADER.size
    unpack = HEADER.unpack_from
    while pos + size <= end:
        t, cob, flags, dlc, n = unpack(data, pos)
        stop = pos + size + n
        if stop > end:
            return
        yield t, cob, flags, dlc, bytes(data[pos + size : stop]), stop
        pos = stop


def write_log_records(writer: can.CanutilsLogWriter, data: bytes | memoryview, pos: int = 0) -> int:
    """Like :func:`write_records`, for the ``candump -L`` format of ``can.CanutilsLogWriter``."""
    write = writer.file.write
    channel = writer.channel
    for t, cob, flags, dlc, payload, stop in _records(data, pos):
        pos = stop
        if writer.last_timestamp is not None and not flags & (EXTENDED | REMOTE | ERROR | FD):
            stamp = max(t, writer.last_timestamp)  # as the writer does: never back in time
            write(f"({stamp:f}) {channel} {cob:03X}#{payload.hex().upper()} {'R' if flags & RX else 'T'}\n")
        else:
            writer.on_message_received(_message(t, cob, flags, dlc, payload, channel))
    return pos


def _message(t: float, cob: int, flags: int, dlc: int, payload: bytes, channel: str) -> can.Message:
    return can.Message(
        timestamp=t,
        arbitration_id=cob,
        is_extended_id=bool(flags & EXTENDED),
        is_remote_frame=bool(flags & REMOTE),
        is_error_frame=bool(flags & ERROR),
        is_fd=bool(flags & FD),
        is_rx=bool(flags & RX),
        dlc=dlc,
        data=payload,
        channel=channel,
    )


def main(argv: list[str]) -> int:
    """Copy stdin's records into the trace file ``argv[1]`` until stdin closes."""
    path = argv[1]
    writer: Any
    write: Callable[[Any, bytes | memoryview], int]
    if path.endswith(".log"):
        writer = can.CanutilsLogWriter(path, channel=argv[2] if len(argv) > 2 else CHANNEL)
        write = write_log_records
    elif path.endswith(".asc"):
        writer = can.ASCWriter(path)
        write = write_records
    else:
        print(f"trace file {path!r}: the suffix must be one of {FORMATS}", file=sys.stderr)
        return 2
    os.write(1, READY)
    pending = b""
    last_flush = time.monotonic()
    dirty = False
    try:
        while True:
            # wake at least every FLUSH_INTERVAL_S, so what arrived before a pause is on disk
            if select.select([0], [], [], FLUSH_INTERVAL_S)[0]:
                chunk = os.read(0, 1 << 20)
                if not chunk:
                    break
                data = pending + chunk if pending else chunk
                pending = data[write(writer, data) :]
                dirty = True
            now = time.monotonic()
            if dirty and now - last_flush >= FLUSH_INTERVAL_S:
                writer.file.flush()
                last_flush = now
                dirty = False
    finally:
        writer.stop()
    if pending:
        print(f"trace ended inside a record ({len(pending)} bytes dropped)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
