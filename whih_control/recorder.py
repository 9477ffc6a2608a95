"""A run's recording: the run folder, its event log, trace, telemetry, summary and plot.

:class:`RunRecorder` is the one object the runtime records through. Per cycle it is handed the
cycle's state once (:meth:`RunRecorder.end_cycle`) and keeps the figures of the summary (gap
range, peak forces, stale cycles); rows and frames leave the cycle through the telemetry writer
thread and the trace writer process, never formatted here. A write that fails is reported to
``on_failure`` (the runtime latches a RECORDING fault through the supervisor) and what the log
held is kept for close.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can

from firmware_iface.cia402 import DriveState
from firmware_iface.master import MasterStats
from firmware_iface.types import Commands, DriveGoal, Feedback
from whih_control import support
from whih_control.config import Config
from whih_control.errors import RunFolderError
from whih_control.events import EventLog
from whih_control.procedure import MOTION_PHASES, Phase
from whih_control.record import (
    Telemetry,
    TraceRecorder,
    plot_run,
    recording_failure,
    recording_losses,
    write_json_atomic,
)
from whih_control.types import LINEAR_AXES, Estimate

__all__ = ["RUN_FILES", "RunRecorder", "RunResult", "bus_line", "make_run_folder"]

RUN_FILES = (
    "summary.json",
    "events.jsonl",
    "trace.asc",
    "trace.log",
    "telemetry.csv",
    "telemetry.mcap",
    "plot.png",
)
"""The files of a run folder (docs/DESIGN.md section 3)."""
RUN_MARKER = "events.jsonl"
"""The first file of a run, created exclusively: of two runs into one folder, one gets it."""


@dataclass(frozen=True)
class RunResult:
    """What a procedure run ended with (also the body of ``summary.json``)."""

    outcome: str
    """'complete' (crossed and withdrawn), 'aborted', 'fault', 'timeout' or 'interrupted'."""
    crossed: bool
    sim_seconds: float
    wall_seconds: float
    cycles: int
    overruns: int
    stale_cycles: int
    min_gap: float
    max_gap: float
    max_force: Mapping[str, float]
    faults: tuple[str, ...]
    rewinds: int = 0
    """Rewinds the procedure's strategy started."""
    max_unsupported: Mapping[str, float] = field(default_factory=dict)
    """Per wire (``ante_wire``, ``retro_wire``): its largest estimated unsupported length (mm) in
    a cycle of a motion phase that advanced it, the figure the support limit bounds (invariant
    5); NaN when the wire never advanced."""
    reason: str = ""
    """Why the run ended the way it did (abort or fault text)."""
    loop: Mapping[str, float | int] = field(default_factory=dict)
    master: Mapping[str, Any] = field(default_factory=dict)
    """The master's counters of the cyclic exchange (``MasterStats``: unknown COB-IDs, queue
    drops, collisions, bad DLC, error frames, send errors, ...): what the bus did besides the
    drives' own frames."""
    trace_dropped: int = 0
    out: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


_BUS_COUNTS = (
    ("collisions", "collision(s)"),
    ("bad_dlc", "frame(s) of the wrong length"),
    ("queue_drops", "service frame(s) dropped"),
    ("error_frames", "error frame(s)"),
    ("send_errors", "send/receive error(s)"),
)


def bus_line(master: Mapping[str, Any]) -> str:
    """One line on what the bus did besides the drives' own frames (a summary's ``master``), or
    "" when nothing did."""
    parts: list[str] = []
    unknown = master.get("unknown_cob_ids")
    if isinstance(unknown, int) and unknown:
        first = master.get("first_unknown_cob_id")
        if isinstance(first, int) and first >= 0:
            ident = f"0x{first:08X}" if master.get("first_unknown_extended") else f"0x{first:03X}"
            parts.append(f"{unknown} frame(s) on unknown COB-IDs (first {ident})")
        else:
            parts.append(f"{unknown} frame(s) on unknown COB-IDs")
    for key, what in _BUS_COUNTS:
        n = master.get(key)
        if isinstance(n, int) and n:
            parts.append(f"{n} {what}")
    return "bus: " + ", ".join(parts) if parts else ""


def make_run_folder(out: Path) -> None:
    """Create ``out``; refuse one that holds a run already, so no earlier run is overwritten."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(
            f"out (={str(out)!r}): cannot create the run folder: {exc.strerror or exc}"
        ) from exc
    taken = [name for name in RUN_FILES if (out / name).exists()]
    if taken:
        raise RunFolderError(
            f"out (={str(out)!r}) already holds a run ({', '.join(taken)}); give a new folder"
        )
    try:  # O_EXCL: of two runs started into one folder at once, exactly one gets it
        os.close(os.open(out / RUN_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        raise RunFolderError(
            f"out (={str(out)!r}) was just taken by another run; give a new folder"
        ) from None
    except OSError as exc:
        raise RunFolderError(
            f"out (={str(out)!r}): cannot write in the run folder: {exc.strerror or exc}"
        ) from exc


class RunRecorder:
    """Records one robot's run into ``out`` (or only keeps the summary figures when ``out`` is None).

    ``on_failure(text)`` is called once when the event log cannot be written; the recorder keeps
    what it holds and tries again each cycle and at close.
    """

    def __init__(
        self,
        cfg: Config,
        out: Path | None,
        *,
        blocking_trace: bool,
        on_failure: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.out = out
        self.axes = tuple(cfg.drives)
        self._on_failure = on_failure
        self.log_error: OSError | None = None
        self.lost: list[str] = []
        """What stopped being recorded (event log, trace, telemetry): each a RECORDING fault."""
        self.summary: dict[str, Any] | None = None
        self.summary_error: OSError | None = None
        """Why ``summary.json`` could not be written (the caller can still show :attr:`summary`)."""
        self.min_gap = math.inf
        self.max_gap = -math.inf
        self.max_force = dict.fromkeys(self.axes, 0.0)
        self.max_unsupported = [-math.inf, -math.inf]
        """(ante, retro) wire: largest estimated unsupported length while advancing (mm)."""
        self._reach = cfg.procedure.coupling_max
        self._last_wire = (math.inf, math.inf)
        """(ante, retro) wire targets of the previous cycle (insertion)."""
        self.stale_cycles = 0
        self.identities: dict[str, dict[str, int | None]] = {}
        """Per axis: identity 0x1018 the drive gave at set-up (into ``summary.json``)."""
        self.faults: list[str] = []
        """One line per fault seen, ``'<t>s <axis>: <text>'``."""
        self.log: EventLog | None = None
        self.trace: TraceRecorder | None = None
        self.telemetry: Telemetry | None = None
        self._t = 0.0
        self._master_stats: MasterStats | None = None
        self._unknown_reported = False
        self.result_written: RunResult | None = None
        """The last result written to ``summary.json`` (its plot is drawn at close)."""
        if out is None:
            return
        make_run_folder(out)
        self.log = EventLog(out / "events.jsonl")
        if cfg.record.trace:
            # simulated time waits for the writer and never drops; real time never blocks the cycle
            self.trace = TraceRecorder(
                out / f"trace.{cfg.record.trace_format}",
                maxsize=cfg.record.trace_queue,
                blocking=blocking_trace,
                channel=cfg.bus.channel,
            )
        self._phase_index = {p: i for i, p in enumerate(Phase)}
        cols: list[str] = ["phase", "gap", "coupling", "gap_true"]
        cols += [f"tip_{a}" for a in LINEAR_AXES]
        cols += [f"force_{a}" for a in self.axes]
        cols += [f"target_{a}" for a in self.axes]
        cols += [f"actual_{a}" for a in self.axes]
        cols += [f"state_{a}" for a in self.axes]
        cols += [f"statusword_{a}" for a in self.axes]
        self._row = [0.0] * len(cols)
        states = [s.name for s in DriveState]
        self.telemetry = Telemetry(
            out / "telemetry.csv",
            cols,
            rate_hz=cfg.record.telemetry_hz,
            labels={"phase": [p.value for p in Phase]} | {f"state_{a}": states for a in self.axes},
            mcap=out / "telemetry.mcap" if cfg.record.mcap else None,
            events=self.log.path,
            blocking=blocking_trace,  # simulated time waits for its writers; real time never does
        )

    @property
    def tap(self) -> Callable[[can.Message, float, bool], None] | None:
        """What the master hands every frame to (None when nothing records frames)."""
        return self.trace.record if self.trace is not None else None

    # --- events ------------------------------------------------------------------------------------

    def event(
        self, t: float, kind: str, *, safety: bool = False, before_read: bool = False, **fields: Any
    ) -> None:
        """One line of ``events.jsonl``; safety events are fsynced (after the cycle's RPDOs).
        ``before_read``: ahead of what the cycle logged since :meth:`mark_read` (a cause that
        came before what the cycle read of its consequences: a master stall)."""
        if self.log is None:
            return
        try:
            self.log.write(t, kind, sync=True if safety else None, before_mark=before_read, **fields)
        except OSError as exc:
            self._failed(t, exc)

    def hold_sync(self) -> None:
        """A cycle starts: its safety events wait for :meth:`release_sync` (after the RPDOs)."""
        if self.log is not None:
            self.log.hold_sync = True

    def mark_read(self) -> None:
        """The cycle is about to read the bus (see :meth:`event`'s ``before_read``)."""
        if self.log is not None:
            self.log.mark()

    def cycle_raised(self) -> None:
        """A cycle raised: what it held goes out before the next event, or at close."""
        if self.log is not None:
            self.log.hold_sync = False

    def _failed(self, t: float, exc: OSError) -> None:
        if self.log_error is None:
            self.log_error = exc
            self._lost(t, f"event log {self.out}: cannot write ({exc.strerror or exc})")

    def _lost(self, t: float, text: str) -> None:
        self.lost.append(text)
        self.faults.append(f"{t:.3f}s all: {text}")
        self._on_failure(text)

    def watch_master(self, stats: MasterStats) -> None:
        """Report ``stats`` in the summary, and the first frame on an unknown COB-ID as an event."""
        self._master_stats = stats

    def _report_unknown(self, t: float, stats: MasterStats) -> None:
        """The first frame on a COB-ID nobody here uses: one event per run (not a fault; a flood
        would otherwise fill the log), the count goes into the summary."""
        self._unknown_reported = True
        cob = stats.first_unknown_cob_id
        ident = f"0x{cob:08X} (29-bit)" if stats.first_unknown_extended else f"0x{cob:03X}"
        self.event(
            t,
            "unknown_cob_id",
            cob_id=ident,
            count=stats.unknown_cob_ids,
            text=f"frames on {ident}, which neither a configured drive nor this master uses, are on "
            "the bus: another node is there; counted (summary.json master.unknown_cob_ids), not a "
            "fault, reported once",
        )

    def poll(self, t: float) -> None:
        """Once per cycle, before the commands are made: a trace or telemetry writer that has
        failed (a full disk, a killed writer) is a RECORDING fault, in this very cycle; the first
        frame of another node on an unknown COB-ID is an event."""
        ms = self._master_stats
        if ms is not None and ms.unknown_cob_ids and not self._unknown_reported:
            self._report_unknown(t, ms)
        if not self.lost and (why := recording_failure(self.trace, self.telemetry)) is not None:
            self._lost(t, why)

    # --- per cycle ---------------------------------------------------------------------------------

    def end_cycle(
        self,
        t: float,
        phase: Phase,
        estimate: Estimate,
        calibrated: bool,
        feedback: Feedback,
        commands: Commands,
        true_gap: float,
        count_stale: bool,
    ) -> None:
        """The cycle's RPDOs are out: fsync its safety events, account, sample telemetry."""
        self._t = t
        if self.log is not None:
            try:
                self.log.release_sync()
                self.log.poll(t)
            except OSError as exc:
                self._failed(t, exc)
        if self.trace is not None:
            self.trace.end_cycle()
        gap = estimate.gap
        if calibrated and math.isfinite(gap):
            self.min_gap = min(self.min_gap, gap)
            self.max_gap = max(self.max_gap, gap)
            # invariant 5 bounds a wire's unsupported length while it advances: a cycle of a motion
            # phase counts for a wire whose drive is to follow its target and whose target moved
            # forward (insertion up, on either side); a quick stop's target is the drive's position
            cmd = commands.axes
            ca, cr = cmd["ante_wire"], cmd["retro_wire"]
            ta, tr = ca.target, cr.target
            fwd_a = ta > self._last_wire[0] and ca.goal is DriveGoal.ENABLED
            fwd_r = tr > self._last_wire[1] and cr.goal is DriveGoal.ENABLED
            self._last_wire = (ta, tr)
            if (fwd_a or fwd_r) and phase in MOTION_PHASES:
                tp = estimate.tips
                aw, am, rw, rm = tp["ante_wire"], tp["ante_mc"], tp["retro_wire"], tp["retro_mc"]
                mu = self.max_unsupported
                if fwd_a:
                    mu[0] = max(mu[0], support.unsupported_ante(aw, am, rw, rm, self._reach))
                if fwd_r:
                    mu[1] = max(mu[1], support.unsupported_retro(aw, am, rw, rm, self._reach))
        max_force = self.max_force
        for axis, af in feedback.axes.items():
            f = abs(af.force)
            if f > max_force[axis]:  # noqa: PLR1730 (max() as a test: the same, NaN too, without a call)
                max_force[axis] = f
            if count_stale and af.age_cycles > 0:
                self.stale_cycles += 1
        tel = self.telemetry
        if tel is None or not tel.due(t):
            return
        row = self._row
        row[0] = self._phase_index[phase]
        row[1] = gap
        row[2] = estimate.coupling
        row[3] = true_gap
        i = 4
        tips = estimate.tips
        for a in LINEAR_AXES:
            row[i] = tips.get(a, math.nan)
            i += 1
        fb = feedback.axes
        cmd = commands.axes
        n = len(self.axes)
        for k, a in enumerate(self.axes):  # one pass: force, target, actual, state, statusword blocks
            af = fb[a]
            j = i + k
            row[j] = af.force
            row[j + n] = cmd[a].target
            row[j + 2 * n] = af.position
            row[j + 3 * n] = af.state
            row[j + 4 * n] = af.statusword
        tel.sample(t, row)

    # --- the end -----------------------------------------------------------------------------------

    def result(
        self,
        *,
        outcome: str,
        crossed: bool,
        t: float,
        wall_seconds: float,
        cycles: int,
        overruns: int,
        reason: str,
        loop: Mapping[str, float | int],
        rewinds: int,
    ) -> RunResult:
        """The run's result as of now (``rewinds``: what the procedure counted)."""
        mu = self.max_unsupported
        return RunResult(
            outcome=outcome,
            crossed=crossed,
            sim_seconds=t,
            wall_seconds=wall_seconds,
            cycles=cycles,
            overruns=overruns,
            stale_cycles=self.stale_cycles,
            min_gap=self.min_gap if math.isfinite(self.min_gap) else math.nan,
            max_gap=self.max_gap if math.isfinite(self.max_gap) else math.nan,
            max_force=dict(self.max_force),
            faults=tuple(self.faults),
            rewinds=rewinds,
            max_unsupported={
                "ante_wire": mu[0] if math.isfinite(mu[0]) else math.nan,
                "retro_wire": mu[1] if math.isfinite(mu[1]) else math.nan,
            },
            reason=reason,
            loop=loop,
            master=dataclasses.asdict(self._master_stats) if self._master_stats is not None else {},
            trace_dropped=self.trace.dropped if self.trace is not None else 0,
            out=str(self.out) if self.out is not None else None,
        )

    def write_summary(self, result: RunResult, *, seed: int, injected: Sequence[str]) -> None:
        """``summary.json``, atomically; ``plot.png`` follows at :meth:`close`, once the telemetry
        is complete."""
        if self.out is None:
            return
        cfg = self.cfg
        summary = result.as_dict()
        summary["axes"] = {
            axis: {
                "node_id": d.node_id,
                "kind": d.kind,
                "counts_per_unit": d.counts_per_unit,
                "max_speed": d.max_speed,
                "max_accel": d.max_accel,
                "travel": [d.travel_min, d.travel_max],
                "force_alarm": d.force_alarm,
                "force_stop": d.force_stop,
                "eds": Path(d.eds).name,
            }
            for axis, d in cfg.drives.items()
        }
        for axis, identity in self.identities.items():
            summary["axes"][axis]["identity"] = identity
        summary["lesion_length"] = cfg.procedure.lesion_length
        summary["gap_window"] = [cfg.procedure.gap_min, cfg.procedure.gap_target, cfg.procedure.gap_max]
        summary["seed"] = seed
        summary["injected"] = list(injected)
        summary["config"] = cfg.to_dict()
        summary["recording"] = recording_losses(self.trace, self.telemetry, self.lost)
        self.summary = summary
        self.result_written = result
        try:
            write_json_atomic(self.out / "summary.json", summary)
        except OSError as exc:  # e.g. a full disk: the caller still has the result to show
            self.summary_error = exc

    def _plot(self) -> None:
        result = self.result_written
        if self.out is None or result is None or self.telemetry is None or not self.cfg.record.plot:
            return
        cfg = self.cfg
        p = cfg.procedure
        plot_run(
            self.out / "telemetry.csv",
            self.out / "plot.png",
            lesion_length=p.lesion_length,
            gap_window=(p.gap_min, p.gap_target, p.gap_max),
            force_limits={a: (d.force_alarm, d.force_stop) for a, d in cfg.drives.items()},
            crossing_at=p.lesion_length + p.distal_margin,
            title=f"whih: {result.outcome}, crossed={result.crossed}, L={p.lesion_length:g} mm",
        )

    def close(self) -> None:
        """Close the telemetry (then draw the plot), the trace and (last, with its closing line)
        the event log; every step is tried, the first error raised."""
        errors: list[BaseException] = []
        steps: list[Callable[[], None]] = []
        if self.telemetry is not None:
            steps += [self.telemetry.close, self._plot]
        if self.trace is not None:
            steps.append(self.trace.close)
        if self.log is not None:
            log = self.log
            steps.append(lambda: log.close(self._t))
        for step in steps:
            try:
                step()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
