"""Child process for the crash test: writes events forever until killed.

Usage: ``python tests/_event_writer.py PATH SEED``. After each fsynced write it prints the seq
that is durable (one line, flushed), so the parent knows which events must survive a SIGKILL.
"""

from __future__ import annotations

import random
import sys

from whih_control.events import EventLog


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    # mostly buffered kinds, so kills also land while a partial line sits in the file
    kinds = ("phase", "fault", "operator", *(["telemetry", "cmd"] * 6))
    log = EventLog(path)
    t = 0.0
    out = sys.stdout
    while True:
        t += 0.01
        kind = rng.choice(kinds)
        seq = log.write(t, kind, payload="x" * rng.randrange(0, 3000), value=rng.random())
        if log.synced_seq == seq:
            out.write(f"{seq}\n")
            out.flush()


if __name__ == "__main__":
    main()
