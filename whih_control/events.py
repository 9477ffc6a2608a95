"""Durable, hash-chained event log (``events.jsonl``).

One JSON object per line::

    {"seq": 0, "t": 0.0, "wall": 1763926800.123, "kind": "phase", "prev": "<sha256 hex>", ...fields}

- ``seq`` counts from 0 without gaps; ``t`` is the caller's run time (simulated or monotonic
  seconds); ``wall`` is ``time.time()`` when the line was written.
- ``prev`` is the SHA-256 (hex) of the previous line's bytes without its newline; the first line
  carries :data:`GENESIS` (the SHA-256 of the empty string). Removing, reordering or editing a line
  breaks the chain at the line that follows it; :meth:`EventLog.close` appends a ``close`` line so
  the last content line is covered too.
- Safety-relevant kinds (:data:`SAFETY_KINDS`: faults, phase changes, operator actions) are written
  and ``fsync``-ed before :meth:`EventLog.write` returns, unless :attr:`EventLog.hold_sync` holds
  them back until :meth:`EventLog.release_sync` (the runtime does, during a cycle; a held event
  may be written ``before_mark``, ahead of those held since :meth:`EventLog.mark`). Other kinds
  are buffered and flushed when 0.5 s of the supplied time has passed since the last flush
  (checked on every write and on :meth:`EventLog.poll`), and on close.

:func:`verify_log` returns a :class:`LogReport` (it does not raise); :meth:`LogReport.check`
raises :class:`~whih_control.errors.LogIntegrityError` for callers that want an exception.
Readers accept a torn (unterminated) last line: a crash can leave one, and it was never fsynced.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from whih_control.errors import LogIntegrityError

__all__ = [
    "GENESIS",
    "RESERVED_KEYS",
    "SAFETY_KINDS",
    "EventLog",
    "LogReport",
    "fault_line",
    "read_events",
    "verify_log",
]

GENESIS = hashlib.sha256(b"").hexdigest()
"""``prev`` of the first line."""
SAFETY_KINDS = frozenset({"fault", "phase", "operator", "abort", "open", "close"})
"""Kinds that are fsynced before :meth:`EventLog.write` returns."""
RESERVED_KEYS = ("seq", "t", "wall", "kind", "prev")
"""Keys every line carries; event fields may not use them."""


def fault_line(who: str, text: str) -> str:
    """``who: text`` (an axis, or 'all'), without naming it twice where the text starts with it."""
    return text if text.startswith(f"{who}:") else f"{who}: {text}"


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), allow_nan=False, default=str).encode()


def _jsonable(value: Any) -> Any:
    # strict JSON has no NaN/Infinity: keep the information as text
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


class EventLog:
    """Append events to ``path`` (usually ``<run>/events.jsonl``).

    A new file starts the chain at :data:`GENESIS`. An existing file is verified and continued;
    a torn last line is cut off first (it was never durable). A broken chain raises
    :class:`~whih_control.errors.LogIntegrityError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 0.5,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(flush_interval) and flush_interval > 0.0):
            raise ValueError(f"flush_interval (={flush_interval}) must be in (0...inf) s")
        self.path = Path(path)
        self._interval = flush_interval
        self._wall = wall_clock
        self._seq = 0
        self._prev = GENESIS
        if self.path.exists() and self.path.stat().st_size > 0:
            report = verify_log(self.path)
            report.check()
            with self.path.open("r+b") as f:
                f.truncate(report.good_bytes)
            self._seq = report.next_seq
            self._prev = report.last_hash
        self._file = self.path.open("ab")
        self._last_flush = -math.inf
        self._dirty = False
        self._synced_seq = self._seq - 1
        self._sync_due = False
        self._held: list[bytes] = []
        self._mark = 0
        """How many of :attr:`_held` came before :meth:`mark`."""
        self.hold_sync = False
        """While True, events are kept in memory, in order, and written (and fsynced if one of
        them is to be) by :meth:`release_sync`. The runtime holds them during a cycle, so nothing
        touches the disk before the cycle's commands, a quick stop included, are sent."""
        self.closed = False

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next event will carry."""
        return self._seq

    @property
    def synced_seq(self) -> int:
        """The highest ``seq`` known to be on disk (fsynced); -1 when none."""
        return self._synced_seq

    def write(
        self, t: float, kind: str, *, sync: bool | None = None, before_mark: bool = False, **fields: Any
    ) -> int:
        """Append one event and return its ``seq``.

        ``sync`` forces (True) or skips (False) the fsync; by default kinds in
        :data:`SAFETY_KINDS` are fsynced. ``before_mark`` (while :attr:`hold_sync` holds events):
        the event goes before those held since :meth:`mark`, which follow it renumbered and
        chained anew (the seqs returned for them move up by one). Raises ValueError for a
        reserved field name or a non-JSON-able field, and ``ValueError`` when the log is closed.
        """
        if self.closed:
            raise ValueError(f"event log {self.path} is closed (cannot write kind={kind!r})")
        bad = [k for k in fields if k in RESERVED_KEYS]
        if bad:
            raise ValueError(f"event field {bad[0]!r} is reserved (allowed: any name but {RESERVED_KEYS})")
        record: dict[str, Any] = {
            "seq": self._seq,
            "t": _jsonable(float(t)),
            "wall": self._wall(),
            "kind": kind,
            "prev": self._prev,
        }
        for key, value in fields.items():
            record[key] = _jsonable(value)
        try:
            line = _dumps(record)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event kind={kind!r} has a field that is not JSON-able ({exc})") from exc
        after: list[bytes] = []
        if before_mark and self.hold_sync and self._mark < len(self._held):
            # the held lines since the mark move behind this one: it takes the first one's place
            after = self._held[self._mark :]
            del self._held[self._mark :]
            first = json.loads(after[0])
            record["seq"] = self._seq = first["seq"]
            record["prev"] = self._prev = first["prev"]
            line = _dumps(record)
        self._prev = hashlib.sha256(line).hexdigest()
        seq = self._seq
        self._seq += 1
        safety = sync if sync is not None else kind in SAFETY_KINDS
        if self.hold_sync:
            self._held.append(line + b"\n")
            self._sync_due = self._sync_due or safety
            if after:
                self._mark += 1  # a second such event goes after this one
            for moved in after:  # our own lines: they load and dump back to the same bytes
                again = json.loads(moved)
                again["seq"], again["prev"] = self._seq, self._prev
                line = _dumps(again)
                self._held.append(line + b"\n")
                self._prev = hashlib.sha256(line).hexdigest()
                self._seq += 1
            return seq
        if self._held:  # left from a hold that ended without release: they come first
            self._write_held()
        self._file.write(line + b"\n")
        self._dirty = True
        if safety:
            self._sync()
            self._last_flush = t
        else:
            self.poll(t)
        return seq

    def poll(self, t: float) -> None:
        """Flush buffered events if ``flush_interval`` of the supplied time has passed."""
        if self._dirty and not t - self._last_flush < self._interval:
            self._file.flush()
            self._dirty = False
            self._last_flush = t

    def mark(self) -> None:
        """Remember how many events are held now (see :meth:`write`'s ``before_mark``)."""
        self._mark = len(self._held)

    def release_sync(self) -> None:
        """End :attr:`hold_sync`: write what it held back, and fsync it if a safety event was
        among it. On an I/O error the held lines are kept for the next attempt (or close)."""
        if self._write_held() and self._sync_due:
            self._sync()

    def _write_held(self) -> bool:
        """End the hold and hand the held lines to the file; True if there were any."""
        self.hold_sync = False
        self._mark = 0
        if self.closed or not self._held:
            return False
        self._file.write(b"".join(self._held))
        self._held.clear()
        self._dirty = True
        return True

    def flush(self) -> None:
        """Write buffered events to disk and fsync them."""
        if not self.closed:
            self._sync()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._dirty = False
        self._sync_due = False
        self._synced_seq = self._seq - 1

    def close(self, t: float | None = None) -> None:
        """Append a ``close`` line (covers the last event by its hash), fsync and close."""
        if self.closed:
            return
        try:
            self._write_held()  # fsynced with the close line
            self.write(self._last_t(t), "close")
        finally:
            self._file.close()
            self.closed = True

    def _last_t(self, t: float | None) -> float:
        if t is not None:
            return t
        return self._last_flush if math.isfinite(self._last_flush) else 0.0

    def __enter__(self) -> EventLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class LogReport:
    """Result of :func:`verify_log`."""

    ok: bool
    """Every complete line verified."""
    lines: int
    """Complete lines that verified (before the first problem, if any)."""
    problem: str = ""
    """What is wrong, naming the line number (1-based) — empty when ``ok``."""
    torn: bool = False
    """The file ends in an unterminated line (ignored: a crash can leave one)."""
    next_seq: int = 0
    """``seq`` that would follow the last verified line."""
    last_hash: str = GENESIS
    """SHA-256 of the last verified line (``prev`` of the next one)."""
    good_bytes: int = 0
    """Length of the verified prefix of the file in bytes."""
    events: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    """The verified events, in order."""

    def check(self) -> None:
        """Raise :class:`LogIntegrityError` unless ``ok``."""
        if not self.ok:
            raise LogIntegrityError(self.problem)


def _lines(data: bytes) -> Iterator[tuple[bytes, bool]]:
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            yield data[start:], False
            return
        yield data[start:end], True
        start = end + 1


def verify_log(path: str | os.PathLike[str]) -> LogReport:
    """Check the chain of ``path``: seq 0, 1, 2, ... and each ``prev`` = SHA-256 of the line before.

    Detects lines removed in the middle (seq gap and hash break), reordered and edited lines.
    A torn (unterminated) last line is reported in ``torn`` and does not make the log bad.
    """
    data = Path(path).read_bytes()
    prev = GENESIS
    seq = 0
    offset = 0
    events: list[dict[str, Any]] = []

    def bad(problem: str, torn: bool = False) -> LogReport:
        return LogReport(False, seq, problem, torn, seq, prev, offset, tuple(events))

    for number, (line, complete) in enumerate(_lines(data), start=1):
        if not complete:
            return LogReport(True, seq, "", True, seq, prev, offset, tuple(events))
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return bad(f"line {number}: not valid JSON ({exc})")
        if not isinstance(record, dict):
            return bad(f"line {number}: not a JSON object (got {type(record).__name__})")
        if record.get("seq") != seq:
            return bad(
                f"line {number}: seq (={record.get('seq')!r}) must be {seq} (lines missing or reordered)"
            )
        if record.get("prev") != prev:
            return bad(
                f"line {number}: prev hash does not match line {number - 1} (edited, missing or reordered)"
            )
        if not isinstance(record.get("kind"), str):
            return bad(f"line {number}: kind (={record.get('kind')!r}) must be a string")
        events.append(record)
        prev = hashlib.sha256(line).hexdigest()
        seq += 1
        offset += len(line) + 1
    return LogReport(True, seq, "", False, seq, prev, offset, tuple(events))


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All verified events of ``path`` (a torn last line is skipped); raises LogIntegrityError."""
    report = verify_log(path)
    report.check()
    return list(report.events)
