"""``whih inspect RUN_DIR``: re-check a run folder from its files alone.

- ``events.jsonl``: the hash chain verifies (:func:`whih_control.events.verify_log`), and how it
  ends: *closed* (the run wrote its ``close`` line) or *cut by a crash* (no ``close`` line: the
  process died; what it had fsynced is what was recovered). A line that does not verify is
  named by its number.
- the trace (``trace.asc`` or ``trace.log``, read with python-can's readers): frame count, SYNC
  period statistics, SYNC gaps (missed cycles), TPDO1 missing per drive (a SYNC not answered by
  a drive before the next one), frames the recorder dropped (``summary.json``).
- ``telemetry.csv`` rows, and ``telemetry.mcap`` message counts per channel (equal to the rows
  for a finished run).
- ``summary.json`` and the faults with their times (from the event log, each text once, in
  the order of the summary's faults); ``plot.png`` redrawn from ``telemetry.csv``.

:func:`inspect_run` returns an :class:`InspectReport`; ``ok`` is False when anything does not
verify, and ``problems`` says what and where.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import can
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Channel, Message
from mcap.stream_reader import StreamReader

from firmware_iface.faults import FaultKind, parse_fault
from firmware_iface.pdo import SYNC_COB
from whih_control.errors import RunFolderError
from whih_control.events import fault_line, verify_log
from whih_control.record import plot_run, read_telemetry
from whih_control.recorder import bus_line
from whih_control.telemetry_mcap import EVENTS_TOPIC

__all__ = ["CUT_BY_A_CRASH", "InspectReport", "inspect_run", "read_trace"]

CUT_BY_A_CRASH = "cut by a crash"
TRACE_FILES = ("trace.asc", "trace.log")


@dataclass
class InspectReport:
    """What :func:`inspect_run` found (``as_dict`` for ``--json``, ``text`` for people)."""

    run_dir: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    """What does not verify, each naming the file and where (line, channel)."""
    ends: str = ""
    """How the event log ends: 'closed', 'cut by a crash', or 'broken' (does not verify)."""
    events: dict[str, Any] = field(default_factory=dict)
    trace: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)
    """Faults with their run times: ``{"t", "axis", "text"}``."""
    recovered: list[str] = field(default_factory=list)
    """For a run cut by a crash: what its files still hold."""
    notes: list[str] = field(default_factory=list)
    plot: str = ""

    def problem(self, text: str) -> None:
        """Record something that does not verify."""
        self.ok = False
        self.problems.append(text)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (strict JSON: a number not known is ``null``, never NaN)."""
        return dict(_strict(asdict(self)))

    def text(self) -> str:
        """The report for a terminal."""
        lines = [f"run folder: {self.run_dir}"]
        ev = self.events
        if ev:
            where = f"last seq {ev['last_seq']} at t={ev['last_t']:.3f} s" if ev.get("lines") else "empty"
            lines.append(f"events.jsonl: {ev['lines']} lines verified, {self.ends} ({where})")
        tr = self.trace
        if tr.get("frames") is not None:
            sync = tr["sync"]
            lines.append(f"{tr['file']}: {tr['frames']} frames, {sync['count']} SYNC")
            if sync["count"] > 1:
                lines.append(
                    f"  SYNC period: mean {sync['period_mean_ms']:.4f} ms, min {sync['period_min_ms']:.4f}, "
                    f"max {sync['period_max_ms']:.4f}, std {sync['period_std_ms']:.4f} ms; "
                    f"{sync['gaps']} gaps ({sync['missed_cycles']} cycles missed)"
                )
            missing = tr["tpdo1_missing"]
            lines.append(
                f"  dropped: {sum(missing.values())} TPDO1 missing"
                + (
                    f" ({', '.join(f'node {n}: {k}' for n, k in missing.items() if k)})"
                    if any(missing.values())
                    else ""
                )
                + f", {tr['recorder_dropped']} frames dropped by the recorder"
                + ("" if tr["complete"] else "; the file was not ended (writer stopped)")
            )
        tm = self.telemetry
        if tm:
            lines.append(
                f"telemetry.csv: {tm['rows']} rows"
                + (f", t {tm['t0']:.3f}..{tm['t1']:.3f} s" if tm["rows"] else "")
            )
            if "mcap" in tm:
                counts = tm["mcap"]
                lines.append(
                    "telemetry.mcap: "
                    + ", ".join(f"{topic} {n}" for topic, n in counts.items())
                    + ("" if tm.get("mcap_complete", True) else " (recovered from an unfinished file)")
                )
        s = self.summary
        if s is not None:
            lines.append(
                f"summary: outcome {s.get('outcome')}, crossed {'yes' if s.get('crossed') else 'no'}, "
                f"{_num(s.get('sim_seconds'), '.1f')} s, {s.get('cycles')} cycles, "
                f"{s.get('overruns')} overruns, "
                f"MC gap min {_num(s.get('min_gap'), '.2f')} / max {_num(s.get('max_gap'), '.2f')} mm"
            )
            if s.get("reason"):
                lines.append(f"  reason: {s['reason']}")
            if isinstance(s.get("master"), dict) and (bus := bus_line(s["master"])):
                lines.append(f"  {bus}")
        if self.faults:
            lines.append(f"faults ({len(self.faults)}):")
            lines += [
                f"  {f['t']:9.3f} s  {fault_line(f['axis'] or 'all', str(f['text']))}" for f in self.faults
            ]
        else:
            lines.append("faults: none")
        if self.recovered:
            lines.append(f"{CUT_BY_A_CRASH}; recovered:")
            lines += [f"  {r}" for r in self.recovered]
        lines += [f"note: {n}" for n in self.notes]
        if self.plot:
            lines.append(f"plot: {self.plot}")
        if self.ok:
            lines.append("verified: ok")
        else:
            lines.append(f"DOES NOT VERIFY ({len(self.problems)}):")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def _num(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, int | float) else str(v)


def inspect_run(run_dir: Path, *, plot: bool = True) -> InspectReport:
    """Check the run folder ``run_dir`` (see the module docstring); ``plot=False`` leaves
    ``plot.png`` as it is. :class:`RunFolderError` when ``run_dir`` is not a run folder."""
    if not run_dir.is_dir():
        raise RunFolderError(f"RUN_DIR (={str(run_dir)!r}) is not a folder")
    if not (run_dir / "events.jsonl").exists() and not (run_dir / "summary.json").exists():
        raise RunFolderError(f"RUN_DIR (={str(run_dir)!r}) holds no run (no events.jsonl, no summary.json)")
    report = InspectReport(run_dir=str(run_dir))
    _check_summary(run_dir, report)
    _check_events(run_dir, report)
    _check_trace(run_dir, report)
    _check_telemetry(run_dir, report)
    if plot:
        _redraw_plot(run_dir, report)
    return report


def _check_summary(run_dir: Path, report: InspectReport) -> None:
    path = run_dir / "summary.json"
    if not path.exists():
        report.notes.append("no summary.json: the run did not reach its end")
        return
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        report.problem(f"summary.json: not valid JSON ({exc})")
        return
    if not isinstance(summary, dict):
        report.problem(f"summary.json: not a JSON object (got {type(summary).__name__})")
        return
    report.summary = summary


def _check_events(run_dir: Path, report: InspectReport) -> None:
    path = run_dir / "events.jsonl"
    if not path.exists():
        report.problem("events.jsonl: missing")
        report.ends = "missing"
        return
    log = verify_log(path)
    events = log.events
    last = events[-1] if events else {}
    report.events = {
        "lines": log.lines,
        "last_seq": last.get("seq", -1),
        "last_t": last.get("t", 0.0) if isinstance(last.get("t"), int | float) else math.nan,
        "last_kind": last.get("kind", ""),
        "torn_bytes": path.stat().st_size - log.good_bytes if log.torn else 0,
    }
    listed: set[str] = set()
    for e in events:
        if e.get("kind") == "fault":
            text = e.get("text", "")
            if text in listed:
                # the latch of a cause already listed (a drive's EMCY), or the procedure taking
                # it up: one fault, once, as in summary.json's faults
                continue
            listed.add(str(text))
            report.faults.append({"t": e.get("t"), "axis": e.get("axis"), "text": text})
        elif e.get("kind") == "enable_failed":
            report.faults.append(
                {"t": e.get("t"), "axis": None, "text": f"enable failed: {e.get('text', '')}"}
            )
        elif e.get("kind") in ("drive", "escalated"):
            text = e.get("text", e.get("event"))
            listed.add(str(text))
            report.faults.append({"t": e.get("t"), "axis": e.get("axis"), "text": text})
    if not log.ok:
        report.ends = "broken"
        report.problem(f"events.jsonl {log.problem}")
        return
    phases = [e.get("to") for e in events if e.get("kind") == "phase"]
    report.events["last_phase"] = phases[-1] if phases else None
    ended = [e for e in events if e.get("kind") == "end"]
    if ended and report.summary is not None and ended[-1].get("outcome") != report.summary.get("outcome"):
        report.problem(
            f"summary.json: outcome (={report.summary.get('outcome')!r}) differs from the event log's "
            f"end event (={ended[-1].get('outcome')!r}, seq {ended[-1].get('seq')})"
        )
    if last.get("kind") == "close":
        report.ends = "closed"
        return
    report.ends = CUT_BY_A_CRASH
    report.recovered.append(
        f"events.jsonl: {log.lines} events verified, up to seq {report.events['last_seq']} "
        f"at t={report.events['last_t']:.3f} s (last phase: {report.events['last_phase'] or 'none'})"
    )
    if log.torn:
        report.recovered.append(
            f"events.jsonl: an unfinished last line ({report.events['torn_bytes']} bytes), "
            "never durable, left out"
        )


def read_trace(path: Path) -> list[can.Message]:
    """Every frame of a ``trace.asc`` or ``trace.log`` (python-can's readers)."""
    reader: can.ASCReader | can.CanutilsLogReader
    reader = can.ASCReader(str(path)) if path.suffix == ".asc" else can.CanutilsLogReader(str(path))
    with reader:
        return list(reader)


def _check_trace(run_dir: Path, report: InspectReport) -> None:
    present = [run_dir / name for name in TRACE_FILES if (run_dir / name).exists()]
    if not present:
        report.notes.append("no trace (record.trace = false?)")
        return
    if len(present) > 1:
        report.problem(f"{present[0].name} and {present[1].name} both present: one run writes one trace")
    path = present[0]
    try:
        frames = read_trace(path)
    except (ValueError, IndexError) as exc:
        report.problem(f"{path.name}: cannot be read ({exc})")
        return
    syncs = [m.timestamp for m in frames if m.arbitration_id == SYNC_COB and not m.is_extended_id]
    periods = [b - a for a, b in itertools.pairwise(syncs)]
    nominal = statistics.median(periods) if periods else math.nan
    gaps = [p for p in periods if p > 1.5 * nominal]
    sync: dict[str, Any] = {"count": len(syncs), "gaps": len(gaps)}
    sync["missed_cycles"] = sum(round(p / nominal) - 1 for p in gaps) if gaps else 0
    if periods:
        sync |= {
            "period_mean_ms": statistics.fmean(periods) * 1e3,
            "period_min_ms": min(periods) * 1e3,
            "period_max_ms": max(periods) * 1e3,
            "period_std_ms": statistics.pstdev(periods) * 1e3,
        }
    report.trace = {
        "file": path.name,
        "frames": len(frames),
        "sync": sync,
        "tpdo1_missing": _tpdo1_missing(frames, report.summary),
        "recorder_dropped": int((report.summary or {}).get("trace_dropped", 0)),
        "complete": _trace_complete(path),
    }
    if report.ends == CUT_BY_A_CRASH:
        t1 = frames[-1].timestamp if frames else 0.0
        report.recovered.append(f"{path.name}: {len(frames)} frames, {len(syncs)} cycles, up to t={t1:.3f} s")
    elif report.ends == "closed":
        # a run that ended properly has a whole trace: ended by its writer, every cycle in it
        if not report.trace["complete"]:
            report.problem(
                f"{path.name}: not ended by its writer although the run closed ({len(frames)} frames)"
            )
        summary = report.summary or {}
        cycles = summary.get("cycles")
        counted = len(syncs)
        lost_at = _sync_loss_at(summary)
        if lost_at is not None and isinstance(cycles, int):
            # an injected sync-loss: the master withholds SYNC from then on, by design; each cycle
            # before it still has its SYNC (the first at t = 0)
            rate = summary.get("config", {}).get("cycle", {}).get("rate_hz")
            if isinstance(rate, int | float) and rate > 0:
                counted = sum(1 for t in syncs if t < lost_at)
                # (in real time a late cycle skips its slot: at most the run's overruns are missing)
                overruns = summary.get("overruns")
                skipped = overruns if isinstance(overruns, int) else 0
                cycles = min(cycles, math.ceil(lost_at * rate - 1e-9) - skipped)
            else:
                cycles = None
        if isinstance(cycles, int) and not report.trace["recorder_dropped"] and counted < cycles:
            before = f" before the injected sync-loss at {lost_at:g} s" if lost_at is not None else ""
            report.problem(
                f"{path.name}: {counted} SYNC frames, fewer than the summary's {cycles} cycles{before} "
                "(frames missing, none counted as dropped)"
            )


def _sync_loss_at(summary: dict[str, Any]) -> float | None:
    """Time of the first injected ``sync-loss`` (``summary.json``'s ``injected`` specs), or None."""
    times = []
    for text in summary.get("injected") or ():
        try:
            spec = parse_fault(str(text))
        except ValueError:
            continue  # not a spec this tool knows: nothing to allow for
        if spec.kind is FaultKind.SYNC_LOSS:
            times.append(spec.t)
    return min(times) if times else None


def _tpdo1_missing(frames: list[can.Message], summary: dict[str, Any] | None) -> dict[str, int]:
    """Per node, the SYNCs its TPDO1 did not answer before the next SYNC (or the end)."""
    if summary is not None and isinstance(summary.get("axes"), dict):
        nodes = sorted(int(a["node_id"]) for a in summary["axes"].values())
    else:  # a run cut short has no summary: the drives are those that ever answered
        nodes = sorted({m.arbitration_id - 0x180 for m in frames if 0x181 <= m.arbitration_id <= 0x1FF})
    missing = dict.fromkeys(nodes, 0)
    seen: set[int] = set()
    started = False
    for m in frames:
        cob = m.arbitration_id
        if cob == SYNC_COB:
            if started:
                for n in nodes:
                    if n not in seen:
                        missing[n] += 1
            started = True
            seen.clear()
        elif 0x181 <= cob <= 0x1FF:
            seen.add(cob - 0x180)
    return {str(n): k for n, k in missing.items()}


def _trace_complete(path: Path) -> bool:
    """An ASC trace ends with its writer's end marker; a candump log has none (always True)."""
    if path.suffix != ".asc":
        return True
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 64))
        return f.read().rstrip().endswith(b"End TriggerBlock")


def _check_telemetry(run_dir: Path, report: InspectReport) -> None:
    csv_path = run_dir / "telemetry.csv"
    if not csv_path.exists():
        report.notes.append("no telemetry.csv")
        return
    try:
        cols = read_telemetry(csv_path)
    except ValueError as exc:
        report.problem(f"telemetry.csv: {exc}")
        return
    t = cols.get("t", [])
    report.telemetry = {"rows": len(t), "t0": t[0] if t else math.nan, "t1": t[-1] if t else math.nan}
    end = (report.summary or {}).get("sim_seconds")
    end_t = float(end) if report.ends == "closed" and isinstance(end, int | float) else math.nan
    # rows are at most 1 s apart (telemetry_hz >= 1) and run through the end of the run
    if math.isfinite(end_t) and (not t or t[-1] < end_t - 1.0):
        report.problem(
            f"telemetry.csv: rows end at t={t[-1] if t else math.nan:.3f} s, the run at t={end_t:.3f} s"
        )
    if report.ends == CUT_BY_A_CRASH:
        report.recovered.append(f"telemetry.csv: {len(t)} rows" + (f", up to t={t[-1]:.3f} s" if t else ""))
    mcap_path = run_dir / "telemetry.mcap"
    if mcap_path.exists():
        _check_mcap(mcap_path, len(t), report)


_MCAP_READ_ERRORS = (McapError, OSError, EOFError, ValueError, KeyError, struct.error)
"""What the mcap readers raise on a file cut short or damaged."""


def _check_mcap(path: Path, rows: int, report: InspectReport) -> None:
    counts: dict[str, int] = {}
    complete = True
    try:
        with path.open("rb") as f:
            summary = make_reader(f).get_summary()
        if summary is None or summary.statistics is None:
            raise McapError("no summary section")
        for cid, ch in summary.channels.items():
            counts[ch.topic] = summary.statistics.channel_message_counts.get(cid, 0)
    except _MCAP_READ_ERRORS:
        # unfinished (cut by a crash): read record by record up to where it stops
        complete = False
        topics: dict[int, str] = {}
        counts.clear()
        try:
            with path.open("rb") as f:
                for record in StreamReader(f, skip_magic=False).records:
                    if isinstance(record, Channel):
                        topics[record.id] = record.topic
                        counts.setdefault(record.topic, 0)
                    elif isinstance(record, Message):
                        counts[topics[record.channel_id]] += 1
        except _MCAP_READ_ERRORS:
            pass  # where the file stops: what was read is what it kept
    report.telemetry["mcap"] = counts
    report.telemetry["mcap_complete"] = complete
    if complete:
        wrong = {t: n for t, n in counts.items() if t != EVENTS_TOPIC and n != rows}
        if wrong:
            report.problem(
                "telemetry.mcap: message counts differ from telemetry.csv's "
                f"{rows} rows on {', '.join(f'{t} ({n})' for t, n in wrong.items())}"
            )
    elif report.ends == CUT_BY_A_CRASH:
        kept = max((n for t, n in counts.items() if t != EVENTS_TOPIC), default=0)
        report.recovered.append(f"telemetry.mcap (unfinished): {kept} rows in its flushed chunks")
    else:
        report.problem("telemetry.mcap: unfinished (no summary section) although the run closed")


def _redraw_plot(run_dir: Path, report: InspectReport) -> None:
    if not report.telemetry.get("rows"):
        report.plot = "not redrawn (no telemetry rows)"
        return
    s = report.summary or {}
    axes = s.get("axes") if isinstance(s.get("axes"), dict) else None
    window = s.get("gap_window")
    lesion = s.get("lesion_length")
    margin = (
        s.get("config", {}).get("procedure", {}).get("distal_margin")
        if isinstance(s.get("config"), dict)
        else None
    )
    try:
        plot_run(
            run_dir / "telemetry.csv",
            run_dir / "plot.png",
            lesion_length=lesion,
            gap_window=tuple(window) if isinstance(window, list) and len(window) == 3 else None,
            force_limits={a: (d["force_alarm"], d["force_stop"]) for a, d in axes.items()} if axes else None,
            crossing_at=lesion + margin
            if isinstance(lesion, int | float) and isinstance(margin, int | float)
            else None,
            title=f"whih inspect: {s.get('outcome', report.ends)}",
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.plot = f"not redrawn ({exc})"
        return
    report.plot = str(run_dir / "plot.png") + (
        "" if s else " (without the configured limits: no summary.json)"
    )
