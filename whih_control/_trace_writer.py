"""The trace writer process: packed frames on stdin -> ``trace.asc``.

Run as a script (``python _trace_writer.py PATH``) by :class:`whih_control.record.TraceRecorder`,
so it imports python-can only, not the package. It formats in its own interpreter, so the cycle
never waits for it on the interpreter lock; when its input closes (the run ended, or the process
that fed it died) it writes what it has and ends the file properly.

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

import can

HEADER = struct.Struct("<dIBBB")
RX, EXTENDED, REMOTE, ERROR, FD = 1, 2, 4, 8, 16
FLUSH_INTERVAL_S = 0.5
CHANNEL = "whih"
READY = b"R"
"""Written to stdout once the file is open."""


def write_records(writer: can.ASCWriter, data: bytes | memoryview, pos: int = 0) -> int:
    """Write every complete record of ``data`` from ``pos``; returns where the first incomplete one starts.

    Plain data frames are formatted here exactly as ``ASCWriter.on_message_received`` does (a
    test holds the two byte for byte); the writer itself does the header and the rarer kinds.
    """
    write = writer.file.write
    channel = writer.channel
    end = len(data)
    size = HEADER.size
    unpack = HEADER.unpack_from
    while pos + size <= end:
        t, cob, flags, dlc, n = unpack(data, pos)
        stop = pos + size + n
        if stop > end:
            break
        payload = bytes(data[pos + size : stop])
        pos = stop
        if writer.header_written and not flags & (EXTENDED | REMOTE | ERROR | FD):
            if t >= writer.started:
                t -= writer.started
            write(
                f"{t: 9.6f} {channel}  {cob:<15X} {'Rx' if flags & RX else 'Tx':<4} d {dlc:x} "
                f"{payload.hex(' ').upper()}\n"
            )
        else:
            writer.on_message_received(
                can.Message(
                    timestamp=t,
                    arbitration_id=cob,
                    is_extended_id=bool(flags & EXTENDED),
                    is_remote_frame=bool(flags & REMOTE),
                    is_error_frame=bool(flags & ERROR),
                    is_fd=bool(flags & FD),
                    is_rx=bool(flags & RX),
                    dlc=dlc,
                    data=payload,
                    channel=CHANNEL,
                )
            )
    return pos


def main(argv: list[str]) -> int:
    """Copy stdin's records into the ASC file ``argv[1]`` until stdin closes."""
    writer = can.ASCWriter(argv[1])
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
                pending = data[write_records(writer, data) :]
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
