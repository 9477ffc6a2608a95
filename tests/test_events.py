"""events.jsonl: hash chain, durability policy, verification and torn tails."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_an_event_before_the_mark_goes_ahead_of_the_held_events_since_the_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle logs what it read, then finds that a cause came before it (a master stall)."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "events.jsonl"
    log = EventLog(path, wall_clock=lambda: 7.0)
    log.write(0.0, "open")
    log.hold_sync = True
    log.write(1.0, "inject", spec="master-freeze:250@1")
    log.mark()
    log.write(1.25, "drive", sync=True, axis="ante_wire", text="EMCY 0x8130", note=[1.5, "ü", None])
    log.write(1.25, "drive", sync=True, axis="retro_mc", text="EMCY 0x8130")
    before = [dict(json.loads(b)) for b in log._held]
    assert log.write(1.25, "fault", before_mark=True, text="master stalled") == 2
    assert log.write(1.25, "fault", before_mark=True, text="second cause") == 3  # after the first
    assert log.write(1.25, "phase", to="fault") == 6  # after everything
    assert len(synced) == 1 and path.stat().st_size > 0  # only the open line is on disk
    log.release_sync()
    assert len(synced) == 2  # one fsync for the whole cycle
    log.close()
    events = read_events(path)
    assert [e["seq"] for e in events] == list(range(8)) and verify_log(path).ok
    assert [e.get("text", e["kind"]) for e in events] == [
        "open",
        "inject",
        "master stalled",
        "second cause",
        "EMCY 0x8130",
        "EMCY 0x8130",
        "phase",
        "close",
    ]
    # the moved lines are the same events, renumbered and chained anew
    moved = [{k: v for k, v in e.items() if k not in ("seq", "prev")} for e in events[4:6]]
    assert moved == [{k: v for k, v in b.items() if k not in ("seq", "prev")} for b in before[1:]]


def test_an_event_before_the_mark_is_a_plain_append_when_nothing_follows_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write(0.0, "a", before_mark=True)  # not holding: in order
    log.hold_sync = True
    log.write(0.1, "b")
    log.mark()
    log.write(0.2, "c", before_mark=True)  # nothing held since the mark
    log.release_sync()
    log.hold_sync = True
    log.write(0.3, "d")  # a new hold: the mark of the last one is gone
    log.write(0.3, "e", before_mark=True)
    log.close()
    assert [e["kind"] for e in read_events(path)] == ["a", "b", "c", "e", "d", "close"]
    assert verify_log(path).ok


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.sampled_from(["write", "first", "mark", "release"]), st.booleans()), max_size=40)
)
def test_the_chain_holds_whatever_is_put_before_a_mark(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, bool]]
) -> None:
    """Model: a hold is a list, the mark an index into it; every line verifies, in the model's order."""
    path = tmp_path_factory.mktemp("chain") / "events.jsonl"
    log = EventLog(path)
    written: list[int] = []
    held: list[int] = []
    mark = 0
    for n, (op, safety) in enumerate(ops):
        if op == "release":
            log.release_sync()
            written += held
            held, mark = [], 0
            log.hold_sync = True
        elif op == "mark":
            log.mark()
            mark = len(held)
        else:
            if not log.hold_sync:
                log.hold_sync = True
            log.write(float(n), "phase" if safety else "cmd", n=n, before_mark=op == "first")
            if op == "first" and mark < len(held):
                held.insert(mark, n)
                mark += 1
            else:
                held.append(n)
    log.close()
    written += held
    events = read_events(path)
    assert verify_log(path).ok and [e["seq"] for e in events] == list(range(len(events)))
    assert [e["n"] for e in events[:-1]] == written
