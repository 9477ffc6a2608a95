"""events.jsonl: hash chain, durability policy, verification and torn tails."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from whih_control.errors import LogIntegrityError
from whih_control.events import GENESIS, EventLog, read_events, verify_log


def write_some(path: Path, n: int = 6) -> list[bytes]:
    with EventLog(path, wall_clock=lambda: 1000.0) as log:
        for i in range(n):
            log.write(0.1 * i, "phase" if i % 3 == 0 else "cmd", i=i, text=f"event {i}")
    return path.read_bytes().splitlines(keepends=True)


def test_lines_are_chained_json_with_seq_t_wall_kind_prev(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = write_some(path)
    assert len(lines) == 7  # six events and the close line
    prev = GENESIS
    for seq, raw in enumerate(lines):
        assert raw.endswith(b"\n")
        record = json.loads(raw)
        assert record["seq"] == seq and record["prev"] == prev and record["wall"] == 1000.0
        assert list(record)[:5] == ["seq", "t", "wall", "kind", "prev"]
        prev = hashlib.sha256(raw[:-1]).hexdigest()
    assert json.loads(lines[-1])["kind"] == "close"
    report = verify_log(path)
    assert report.ok and report.lines == 7 and not report.torn and report.problem == ""
    assert [e["i"] for e in read_events(path)[:-1]] == list(range(6))
    assert hashlib.sha256(b"").hexdigest() == GENESIS


@pytest.mark.parametrize(
    ("damage", "expect"),
    [
        ("drop_middle", "seq"),
        ("swap", "seq"),
        ("edit", "prev hash"),
        ("edit_seq_kept", "prev hash"),
        ("garbage", "not valid JSON"),
        ("drop_first", "seq"),
        ("duplicate", "seq"),
    ],
)
def test_verify_detects_truncation_reordering_and_edits(tmp_path: Path, damage: str, expect: str) -> None:
    path = tmp_path / "events.jsonl"
    lines = write_some(path)
    if damage == "drop_middle":
        del lines[3]
    elif damage == "swap":
        lines[2], lines[3] = lines[3], lines[2]
    elif damage == "edit":
        lines[2] = lines[2].replace(b"event 2", b"event X")
    elif damage == "edit_seq_kept":
        lines[4] = lines[4].replace(b'"i":4', b'"i":5')
        assert b'"i":5' in lines[4]
    elif damage == "garbage":
        lines.insert(3, b"{not json\n")
    elif damage == "drop_first":
        del lines[0]
    elif damage == "duplicate":
        lines.insert(3, lines[2])
    path.write_bytes(b"".join(lines))
    report = verify_log(path)
    assert not report.ok and expect in report.problem
    assert report.problem.startswith("line ")
    with pytest.raises(LogIntegrityError, match="line "):
        report.check()
    with pytest.raises(LogIntegrityError):
        read_events(path)


def test_torn_last_line_is_accepted_and_cut_when_reopened(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = write_some(path)
    torn = [*lines[:5], lines[5][:17]]
    path.write_bytes(b"".join(torn))
    report = verify_log(path)
    assert report.ok and report.torn and report.lines == 5 and report.next_seq == 5
    assert len(read_events(path)) == 5
    # a complete-looking but unterminated line is torn too (it may be cut mid-number)
    path.write_bytes(b"".join(lines[:5]) + lines[5].rstrip(b"\n"))
    assert verify_log(path).torn and verify_log(path).lines == 5
    with EventLog(path) as log:
        assert log.next_seq == 5
        log.write(9.0, "phase", to="resumed")
    report = verify_log(path)
    assert report.ok and not report.torn and report.lines == 7


def test_reopening_a_broken_log_refuses(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = write_some(path)
    del lines[2]
    path.write_bytes(b"".join(lines))
    with pytest.raises(LogIntegrityError, match="line 3"):
        EventLog(path)


def test_held_events_touch_the_disk_only_on_release_in_order_and_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write(0.5, "telemetry", gap=4.5)  # not safety: flushed, not fsynced
    size = path.stat().st_size
    log.hold_sync = True
    log.write(1.0, "fault", reason="HEARTBEAT")
    log.write(1.0, "telemetry", gap=4.6)
    log.write(1.0, "phase", to="fault")
    assert synced == [] and log.synced_seq == -1 and path.stat().st_size == size  # nothing written
    log.release_sync()
    assert len(synced) == 1 and log.synced_seq == 3 and not log.hold_sync
    assert [e["seq"] for e in read_events(path)] == [0, 1, 2, 3]
    log.release_sync()  # nothing held: no second fsync
    log.hold_sync = True
    log.write(1.1, "operator", action="ack")
    log.close()  # close writes what is held before its own line, and fsyncs
    assert [e["kind"] for e in read_events(path)][-2:] == ["operator", "close"]
    assert verify_log(path).ok and len(synced) == 2


def test_events_held_by_a_hold_that_ended_without_release_keep_their_place(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.hold_sync = True
    log.write(1.0, "fault", reason="HEARTBEAT")
    log.hold_sync = False  # a cycle that raised: no release
    log.write(1.1, "end", outcome="fault")
    log.close()
    assert [e["kind"] for e in read_events(path)] == ["fault", "end", "close"] and verify_log(path).ok


def test_a_failed_write_keeps_the_held_events_for_the_next_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.hold_sync = True
    log.write(1.0, "fault", reason="HEARTBEAT")
    real_write = log._file.write
    monkeypatch.setattr(log._file, "write", lambda b: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError, match="No space"):
        log.release_sync()
    assert not log.hold_sync
    monkeypatch.setattr(log._file, "write", real_write)
    log.close()
    assert [e["kind"] for e in read_events(path)] == ["fault", "close"] and verify_log(path).ok


def test_safety_events_fsync_others_flush_every_half_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for kind in ("phase", "fault", "operator"):
        n = len(synced)
        seq = log.write(1.0, kind)
        assert len(synced) == n + 1 and log.synced_seq == seq
    n = len(synced)
    size = path.stat().st_size
    log.write(1.1, "telemetry", gap=4.5)
    log.write(1.3, "telemetry", gap=4.6)
    assert len(synced) == n and path.stat().st_size == size  # buffered
    assert log.synced_seq == 2
    log.poll(1.49)
    assert path.stat().st_size == size
    log.poll(1.5)  # 0.5 s after the last flush
    assert path.stat().st_size > size
    log.write(1.6, "telemetry", sync=True)
    assert len(synced) == n + 1 and log.synced_seq == 5
    log.close()
    assert log.closed and verify_log(path).lines == 7
    with pytest.raises(ValueError, match="closed"):
        log.write(2.0, "phase")
    log.close()  # idempotent


def test_field_rules(tmp_path: Path) -> None:
    with EventLog(tmp_path / "e.jsonl") as log:
        with pytest.raises(ValueError, match="'seq' is reserved"):
            log.write(0.0, "cmd", seq=3)
        log.write(float("nan"), "cmd", value=float("inf"), other=float("-inf"))
    events = read_events(tmp_path / "e.jsonl")
    assert events[0]["t"] == "nan" and events[0]["value"] == "inf" and events[0]["other"] == "-inf"
    with pytest.raises(ValueError, match="flush_interval"):
        EventLog(tmp_path / "f.jsonl", flush_interval=0.0)


def test_empty_file_is_a_valid_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"")
    report = verify_log(path)
    assert report.ok and report.lines == 0 and report.last_hash == GENESIS
