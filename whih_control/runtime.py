"""The cycle: read -> update -> write, in real time or simulated time, with recording.

One :class:`Runtime` owns the bus, the master, the optional simulated drives/plant/imaging, the
control core, the procedure and the run folder. Per cycle:

1. ``master.read`` sends SYNC and collects one TPDO1 per drive (the hot path);
2. ``master.service`` handles what else arrived (EMCY, heartbeats, boot-ups) -> faults;
3. the estimator fuses the feedback with any imaging frame; the procedure ticks and yields the
   objective; the control core computes commands and the safety supervisor makes them safe;
4. ``master.write`` sends one RPDO1 per drive;
5. the cycle's CAN frames go to the trace writer process in one pipe write, telemetry rows to a
   writer thread (never formatting here; in real time never blocking).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import can

from firmware_iface.bus import open_bus
from firmware_iface.cia402 import DriveState
from firmware_iface.faults import RUNTIME_FAULT_KINDS, FaultKind, FaultSpec, parse_fault
from firmware_iface.master import Master
from firmware_iface.sim import SimulatedDrives
from firmware_iface.simbus import SimTimeBus
from firmware_iface.types import DriveEvent, DriveEventKind, DriveGoal
from whih_control.config import Config
from whih_control.core import ControlCore
from whih_control.errors import ProcedureError, RunFolderError, SafetyError, WhihError
from whih_control.events import EventLog
from whih_control.limits import stale
from whih_control.procedure import MOTION_PHASES, Phase, Procedure, ProcedureInputs
from whih_control.record import Telemetry, TraceRecorder, plot_run, write_json_atomic
from whih_control.runtime_clock import LoopStats, RealTimePacer, SimPacer
from whih_control.sim import ImagingSource, Plant
from whih_control.types import LINEAR_AXES, CycleInputs, Objective, OperatorInput, Reason, TipMeasurement

__all__ = ["Progress", "RunResult", "Runtime"]


@contextlib.contextmanager
def _sigint_held() -> Iterator[Callable[[], None]]:
    """Hold SIGINT inside the block; the yielded function delivers a held one afterwards.

    Main thread only (signals go nowhere else). An ignored SIGINT stays ignored; a held one is
    handed to the handler that was in place (Python's default raises ``KeyboardInterrupt``).
    """
    got: list[int] = []
    previous = None
    installed = False
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
            installed = True

    def deliver() -> None:
        if not got:
            return
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signal.SIGINT, None)
        else:
            raise KeyboardInterrupt

    try:
        yield deliver
    finally:
        if installed:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


_HOLD_CODES: set[CodeType] = set()
"""Functions whose first steps a Ctrl-C must not cut (the ones that lead into the safe stop)."""

_EVENT_REASON: Mapping[DriveEventKind, Reason] = {
    DriveEventKind.EMCY: Reason.DRIVE_FAULT,
    DriveEventKind.HEARTBEAT_LOST: Reason.HEARTBEAT,
    DriveEventKind.BOOTUP: Reason.DRIVE_FAULT,
    DriveEventKind.COLLISION: Reason.BUS_FAULT,
    DriveEventKind.STALE: Reason.STALE_FEEDBACK,
    DriveEventKind.DRIVE_FAULT: Reason.DRIVE_FAULT,
    DriveEventKind.SYNC_LOSS: Reason.BUS_FAULT,
    DriveEventKind.BUS_ERROR: Reason.BUS_FAULT,
}

STOP_SETTLE_S = 0.5
"""How long the cycle keeps running after a quick stop so the ramps finish and are recorded."""


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress report, about ten times per simulated or real second."""

    t: float
    phase: str
    gap: float
    ante_wire_tip: float
    lesion_length: float
    crossing_at: float
    cycle: int


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
    reason: str = ""
    """Why the run ended the way it did (abort or fault text)."""
    loop: Mapping[str, float | int] = field(default_factory=dict)
    trace_dropped: int = 0
    out: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


RUN_FILES = ("summary.json", "events.jsonl", "trace.asc", "telemetry.csv", "plot.png")
"""The files of a run folder (docs/DESIGN.md section 3)."""


def check_max_time(max_time: float | None) -> None:
    """Refuse a ``max_time`` that is not None or a finite number of seconds > 0."""
    if max_time is None:
        return
    if isinstance(max_time, bool) or not isinstance(max_time, int | float) or not 0.0 < max_time < math.inf:
        raise ValueError(f"max_time (={max_time!r}) must be None or a finite number of seconds > 0")


def check_fault_spec(cfg: Config, text: str) -> FaultSpec:
    """Parse a fault spec and check it against ``cfg`` (a configured axis; drive faults need
    simulated drives); ``ValueError`` names the spec and what is wrong."""
    spec = parse_fault(text)
    if spec.kind not in RUNTIME_FAULT_KINDS and not cfg.sim.enabled:
        raise ValueError(f"fault spec {text!r}: drive faults need simulated drives (sim.enabled = true)")
    if spec.axis and spec.axis not in cfg.drives:
        raise ValueError(
            f"fault spec {text!r}: unknown axis {spec.axis!r} (configured: {', '.join(cfg.drives)})"
        )
    return spec


def _make_run_folder(out: Path) -> None:
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


class Runtime:
    """Owns everything a run needs; used through :class:`whih_control.Robot`."""

    def __init__(
        self,
        cfg: Config,
        *,
        bus: can.BusABC | None = None,
        seed: int = 0,
        out: Path | None = None,
        inject: Sequence[str] = (),
        progress: Callable[[Progress], None] | None = None,
        auto_confirm: bool = False,
    ) -> None:
        self.cfg = cfg
        self.auto_confirm = auto_confirm
        self.seed = seed
        self.out = out
        self._progress = progress
        self._given_bus = bus
        if isinstance(inject, str):  # a lone spec would be taken apart character by character
            raise TypeError(f"inject (={inject!r}) must be a list of fault specs, e.g. [{inject!r}]")
        self.faults_planned: list[FaultSpec] = [check_fault_spec(cfg, s) for s in inject]
        self._pending = sorted(self.faults_planned, key=lambda f: f.t)
        self.axes = tuple(cfg.drives)
        self.operator = OperatorInput(enable_held=False)
        self.faults: list[str] = []
        self._closers: list[Callable[[], None]] = []
        self._opened = False
        self._want_enabled = False
        self._t = 0.0
        self._t_start_wall = 0.0
        self._measurements: list[TipMeasurement] = []
        # appended by the application's thread, taken one at a time by the cycle (both atomic)
        self._external: deque[TipMeasurement] = deque()
        self._log_error: OSError | None = None
        self._min_gap = math.inf
        self._max_gap = -math.inf
        self._max_force = dict.fromkeys(self.axes, 0.0)
        self._stale_cycles = 0
        self._fault_stop_t: float | None = None
        self._imaging_lost = False
        self._last_progress = -math.inf
        self._inputs = ProcedureInputs(operator=self.operator)
        self._cycle_in = CycleInputs()
        """The cycle's fault conditions for the supervisor (the one owner of faults)."""
        self._switch_interval: float | None = None
        self._jogging = False
        self._jog_objective = {
            p: Objective(phase=p.value, motion_allowed=True) for p in (Phase.READY, Phase.PAUSED)
        }
        self._latch_t: float | None = None
        """Cycle time at which the present latched fault was first commanded (quick stop)."""
        # Ctrl-C (see _on_sigint): held inside a cycle, while an interrupt unwinds and while
        # closing; let through at once once the drives are stopped
        self._in_cycle = False
        self._closing = False
        self._interrupting = False
        self._drives_safe = False
        self._stopped = False
        self._sigint_pending = False
        self._sigint_installed = False
        self._sigint_thread = 0

    # --- set-up and tear-down --------------------------------------------------------------------

    def open(self) -> None:
        """Open the bus, start simulated drives if configured, create the run folder."""
        if self._opened:
            raise WhihError("open: the robot is already open")
        cfg = self.cfg
        try:
            if self.out is not None:
                _make_run_folder(self.out)
            self.log: EventLog | None = None
            if self.out is not None:
                log = self.log = EventLog(self.out / "events.jsonl")
                self._closers.append(lambda: log.close(self._t))
            bus = self._given_bus
            if bus is None:
                bus = open_bus(cfg.bus, period=cfg.period)
                self._closers.append(bus.shutdown)
            self.bus = bus
            self.simulated_time = isinstance(bus, SimTimeBus)
            self.plant: Plant | None = None
            self.imaging: ImagingSource | None = None
            self.drives: SimulatedDrives | None = None
            if cfg.sim.enabled:
                self.plant = Plant(cfg, seed=self.seed)
                drives_bus = bus
                if not self.simulated_time:
                    # the drives get their own handle on the same channel, like separate nodes
                    drives_bus = open_bus(cfg.bus, period=cfg.period)
                    self._closers.append(drives_bus.shutdown)
                self.drives = SimulatedDrives(cfg, drives_bus, load=self.plant, seed=self.seed)
                self.drives.start()
                self._closers.append(self.drives.stop)
                if cfg.imaging.source == "sim":
                    self.imaging = ImagingSource(cfg, self.plant, seed=self.seed)
            self.trace: TraceRecorder | None = None
            self.telemetry: Telemetry | None = None
            if self.out is not None and cfg.record.trace:
                self.trace = TraceRecorder(
                    self.out / "trace.asc",
                    maxsize=cfg.record.trace_queue,
                    blocking=self.simulated_time,  # simulated time waits for the writer, never drops
                )
                self._closers.append(self.trace.close)
            self.master = Master(cfg, bus)
            if self.trace is not None:
                self.master.tap = self.trace.record
            self.core = ControlCore(cfg)
            self.core.request_goal(DriveGoal.SWITCHED_ON)
            self.procedure = Procedure(cfg, log=self.log, auto_confirm=self.auto_confirm)
            if self.out is not None:
                self.telemetry = self._open_telemetry(self.out / "telemetry.csv")
                self._closers.append(self.telemetry.close)
            self.pacer: SimPacer | RealTimePacer = (
                SimPacer(cfg.period, clock=self._sim_clock)
                if self.simulated_time
                else RealTimePacer(
                    cfg.period,
                    busy_wait_s=cfg.cycle.busy_wait_us * 1e-6,
                    tpdo_fraction=cfg.cycle.tpdo_deadline,
                    wait=self.master.wait_until,
                )
            )
            if not self.simulated_time:
                # background threads (telemetry writer, simulated drives) must not keep the
                # interpreter lock for the default 5 ms: that is two cycles at 400 Hz
                self._switch_interval = sys.getswitchinterval()
                sys.setswitchinterval(min(self._switch_interval, cfg.period / 10))
            self._opened = True
            self._hold_sigint_in_cycle()
            gc.collect()
            gc.freeze()  # keep the collector off the objects that live for the whole run
            self._t_start_wall = time.perf_counter()
        except BaseException:
            self._opened = False
            self._release_sigint()
            self._close_all()
            raise

    def _sim_clock(self) -> float:
        """Time of the SYNC about to be sent on the simulated-time bus."""
        assert isinstance(self.bus, SimTimeBus)
        return self.bus.time + self.cfg.period

    def close(self) -> None:
        """Quick-stop then disable every drive, shut everything down. Safe to call twice.

        A Ctrl-C that arrives meanwhile is held until the drives are stopped and the bus is shut
        down, then raised as ``KeyboardInterrupt``, or handed to the application's own SIGINT
        handler if it had one (main thread only: signals go nowhere else).
        """
        if not self._sigint_installed:  # e.g. the application has its own handler
            with _sigint_held() as deliver_held:
                try:
                    self._close()
                except BaseException:
                    deliver_held()  # a Ctrl-C held meanwhile wins, with the close error as its cause
                    raise
            deliver_held()
            return
        self._closing = True  # our handler holds Ctrl-C from here to the end
        try:
            self._close()
        finally:
            pending, self._sigint_pending = self._sigint_pending, False
            self._release_sigint()
            self._closing = self._interrupting = self._drives_safe = False
            if pending:
                raise KeyboardInterrupt  # with a close error, if any, as its context

    def _hold_sigint_in_cycle(self) -> None:
        """Install :meth:`_on_sigint` in place of Python's default handler (main thread only)."""
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            signal.signal(signal.SIGINT, self._on_sigint)
            self._sigint_installed = True
            self._sigint_thread = threading.get_ident()

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-C: at once between robot calls, as Python's default; inside a cycle when the
        cycle ends, never between two drives' frames; while one interrupt unwinds and while the
        drives are being stopped, held until close has stopped them. Once they are stopped, a
        further Ctrl-C gets out of a close step that hangs (e.g. a stalled disk)."""
        if self._drives_safe:
            raise KeyboardInterrupt
        if (
            self._in_cycle
            or self._closing
            or self._interrupting
            or (frame is not None and frame.f_code in _HOLD_CODES)  # the first steps of close
        ):
            self._sigint_pending = True
            return
        self._interrupting = True
        raise KeyboardInterrupt

    def _release_sigint(self) -> None:
        if not self._sigint_installed:
            return
        self._sigint_installed = False
        with contextlib.suppress(ValueError):  # not the main thread: it cannot be put back here
            if signal.getsignal(signal.SIGINT) == self._on_sigint:  # not an application's since
                signal.signal(signal.SIGINT, signal.default_int_handler)

    def _close(self) -> None:
        if not self._opened:
            self._close_all()
            return
        self._opened = False
        errors: list[BaseException] = []
        self._pending.clear()  # injections still scheduled must not fire during the safe stop
        self.master.sync_enabled = True  # an injected SYNC loss ends with the run
        try:
            if not self._stopped:  # an interrupted run_procedure has just done it
                self._safe_stop()
        except BaseException as exc:
            errors.append(exc)
        try:
            self.master.shutdown()
        except BaseException as exc:
            errors.append(exc)
        self._drives_safe = True
        try:
            self._close_all()
        except BaseException as exc:
            errors.append(exc)
        gc.unfreeze()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
        if errors:
            raise errors[0]

    def _close_all(self) -> None:
        errors: list[BaseException] = []
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _safe_stop(self) -> None:
        """Quick stop on every axis for a moment, then disable voltage; recorded like any cycle."""
        self._want_enabled = False
        self.core.request_goal(DriveGoal.SWITCHED_ON)
        stop_cycles = max(1, int(0.2 / self.cfg.period))
        self._cycle_in.stop_goal = DriveGoal.QUICK_STOP  # applied by the supervisor
        for _ in range(stop_cycles):
            self._cycle()
        self._cycle_in.stop_goal = DriveGoal.DISABLED
        for _ in range(max(1, int(0.05 / self.cfg.period))):
            self._cycle()
        self._cycle_in.stop_goal = None
        self._stopped = True  # until the application acts again (_require_open)

    # --- operator-facing actions -----------------------------------------------------------------

    def _require_open(self, action: str) -> None:
        if not self._opened:
            raise WhihError(f"{action}: the robot is not open (use it inside its 'with' block)")
        self._interrupting = False  # the application caught an interrupt and goes on
        self._stopped = False

    def enable(self) -> None:
        """Set up every drive over SDO, then walk them to OPERATION ENABLED and calibrate."""
        self._require_open("enable")
        self.master.setup()
        self._event("operator", action="enable")
        self.operator.enable_held = True
        self._want_enabled = True
        self.core.request_goal(DriveGoal.ENABLED)
        self.procedure.enable(True)
        self.procedure.start()
        limit = self._t + self.cfg.bus.boot_timeout_s + 5.0
        while self.procedure.phase not in (Phase.READY, Phase.FAULT, Phase.ABORTED):
            self._cycle()
            if self._t > limit:
                raise WhihError(
                    f"enable: drives did not reach OPERATION ENABLED and calibration within "
                    f"{limit:.1f} s (phase {self.procedure.phase.value})"
                )
        if self.procedure.phase is not Phase.READY:
            raise WhihError(f"enable: ended in {self.procedure.phase.value}: {self._end_reason()}")

    def jog(self, axis: str, delta: float) -> None:
        """Relative move through every limit; only in ready or paused. Raises SafetyError (and
        cancels the jog) when a limit holds it short of its target or a fault latches."""
        self._require_open("jog")
        if axis not in self.cfg.drives:
            raise ValueError(
                f"jog axis {axis!r} is not configured (configured: {', '.join(self.cfg.drives)})"
            )
        if not self.procedure.jog_allowed():
            raise ProcedureError(
                f"jog: not allowed in phase {self.procedure.phase.value} (only ready/paused)"
            )
        self._event("operator", action="jog", axis=axis, delta=delta)
        self.core.jog(axis, delta)
        d = self.cfg.drives[axis]
        v = d.max_speed * self.cfg.control.jog_speed_fraction
        budget = abs(delta) / v + 2 * v / d.max_accel + 1.0
        end = self._t + budget
        ctl = self.core.controller
        i = ctl.axes.index(axis)
        self._jogging = True
        try:
            while math.isfinite(ctl.jog_target[i]):
                if self.core.supervisor.latched:
                    raise SafetyError(f"jog {axis} {delta:+g}: {self.core.supervisor.latched_verdict.text}")
                if self._t >= end:
                    raise SafetyError(
                        f"jog {axis} {delta:+g}: target not reached within {budget:.1f} s "
                        f"(held by: {self.core.supervisor.latched_verdict.text or 'a limit'}); cancelled"
                    )
                self._cycle()
        finally:
            # a jog never outlives this call: nothing pending may move in a later phase
            ctl.jog_target[i] = math.nan
            self._jogging = False

    @property
    def time(self) -> float:
        """Time of the latest cycle: seconds since the first one (simulated or monotonic). Stamp
        external measurements in this clock."""
        return self._t

    def add_measurement(self, m: TipMeasurement) -> None:
        """Feed an external tip measurement (imaging.source = 'external'); safe to call from
        another thread while the robot cycles. It is taken by the next cycle."""
        if not isinstance(m, TipMeasurement):
            raise TypeError(f"add_measurement: m (={m!r}) must be a TipMeasurement")
        self._external.append(m)

    def run_procedure(
        self, *, max_time: float | None = None, confirm: Callable[[str], bool] | None = None
    ) -> RunResult:
        """Cycle until the procedure ends (or ``max_time`` seconds of run time pass).

        Calling this is the operator's go (ready -> approach). Crossing is confirmed by
        ``confirm("crossed")`` returning True, or without asking when
        ``procedure.confirm_crossing`` is false.
        """
        check_max_time(max_time)
        self._require_open("run_procedure")
        end = math.inf if max_time is None else self._t + max_time
        if self.procedure.phase is Phase.READY and not self.auto_confirm:
            self.procedure.confirm()
        outcome = ""
        try:
            while not outcome:
                self._cycle()
                if self.procedure.phase is Phase.CROSSED and not self.auto_confirm:
                    gate_ok = (
                        confirm("crossed") if confirm is not None else not self.cfg.procedure.confirm_crossing
                    )
                    if gate_ok:
                        self.procedure.confirm()
                if self.procedure.done:
                    outcome = self.procedure.outcome
                elif self.procedure.phase is Phase.FAULT:
                    if self._fault_stop_t is None:
                        self._fault_stop_t = self._t
                    elif self._t - self._fault_stop_t >= STOP_SETTLE_S:
                        outcome = "fault"
                elif self._t >= end:
                    outcome = "timeout"
        except KeyboardInterrupt:
            self._interrupting = True  # (also when the application raised it, e.g. in progress)
            try:
                self._safe_stop()  # the drives first, then the run folder tells what happened
            finally:
                self._finish("interrupted")
            raise
        return self._finish(outcome)

    # --- the cycle -------------------------------------------------------------------------------

    def _cycle(self) -> None:
        # only the thread that owns the handler holds Ctrl-C; another thread's cycles cannot
        self._in_cycle = self._sigint_installed and threading.get_ident() == self._sigint_thread
        try:
            self._cycle_body()
        except BaseException as exc:
            self._in_cycle = False
            if self.log is not None:
                self.log.hold_sync = False  # what it held goes out before the next event, or at close
            if self._interrupt_due():
                raise KeyboardInterrupt from exc  # one interrupt, not one now and one later
            raise
        self._in_cycle = False
        if self._interrupt_due():
            raise KeyboardInterrupt

    def _interrupt_due(self) -> bool:
        """A Ctrl-C held during the cycle is to be raised now (not while closing or unwinding)."""
        if not self._sigint_pending or self._closing or self._interrupting:
            return False
        self._sigint_pending = False
        self._interrupting = True
        return True

    def _cycle_body(self) -> None:
        if self.log is not None:
            self.log.hold_sync = True  # safety events of this cycle are fsynced after the RPDOs
        self._apply_scheduled_faults()
        t = self.pacer.next()
        self._t = t
        fb = self.master.read(t, self.pacer.deadline())
        for event in self.master.service(t):
            self._drive_event(event)
        self._gather_measurements(t)
        # the procedure decides on the estimate of the previous cycle (one cycle old)
        est = self.core.estimator.estimate
        if not self.core.estimator.calibrated:
            self._calibrate()
        verdict = self.core.supervisor.latched_verdict
        inputs = self._inputs  # one record, refreshed in place every cycle
        inputs.estimate = est
        inputs.verdict = verdict
        inputs.drives_ready = self._drives_ready()
        inputs.fault_active = self.core.supervisor.fault_pending
        inputs.fault_text = verdict.text
        inputs.imaging_fresh = est.imaging_age <= self.cfg.safety.imaging_max_age_s
        before = self.procedure.phase
        objective = self.procedure.tick(t, inputs)
        if self._jogging and self.procedure.jog_allowed() and self.operator.enable_held:
            objective = self._jog_objective[self.procedure.phase]  # every axis holds but the jog
        cyc = self._cycle_in
        cyc.drives_wanted_enabled = self._want_enabled
        cyc.motion_phase = before in MOTION_PHASES
        cyc.imaging_watched = before in MOTION_PHASES or before is Phase.PAUSED
        cyc.calibrated = self.core.estimator.calibrated
        self.core.update(t, fb, objective, self.operator, self._measurements, cyc)
        cyc.stall_s = 0.0
        cmds = self.master.commands.axes
        for axis, src in self.core.commands.axes.items():
            dst = cmds[axis]
            dst.target = src.target
            dst.goal = src.goal
        self.master.write()
        # the commands are out (a quick stop included); only now is anything logged or fsynced
        latched = self.core.supervisor.latched
        if latched and self._latch_t is None:
            self._latch_t = t
            v = self.core.supervisor.latched_verdict
            if not any(f.endswith(v.text) for f in self.faults):
                self.faults.append(f"{t:.3f}s {v.axis or 'all'}: {v.text}")
            self._event("fault", reason=v.reason.name, axis=v.axis, text=v.text, safety=True)
        elif not latched:
            self._latch_t = None
        if self.log is not None:
            try:
                self.log.release_sync()
                self.log.poll(t)
            except OSError as exc:
                self._log_failed(exc)
        if self.trace is not None:
            self.trace.end_cycle()
        self._account(t, est.gap)

    def _gather_measurements(self, t: float) -> None:
        self._measurements.clear()
        if self._imaging_lost:  # injected imaging loss: nothing arrives, simulated or external
            self._external.clear()
            return
        if self.imaging is not None:
            self._measurements.extend(self.imaging.poll(t))
        external = self._external
        while external:
            self._measurements.append(external.popleft())

    def _calibrate(self) -> None:
        """Tie encoder insertion to tip position with the first complete tip measurement."""
        for m in self._measurements:
            if all(a in m.tips for a in LINEAR_AXES):
                insertion = {a: self.master.feedback.axes[a].position for a in LINEAR_AXES}
                self.core.estimator.calibrate(insertion, m.tips)
                self._event("calibrated", tips={a: round(m.tips[a], 3) for a in LINEAR_AXES})
                return

    def _account(self, t: float, gap: float) -> None:
        fb = self.master.feedback
        if math.isfinite(gap) and self.core.estimator.calibrated:
            self._min_gap = min(self._min_gap, gap)
            self._max_gap = max(self._max_gap, gap)
        for axis, a in fb.axes.items():
            self._max_force[axis] = max(self._max_force[axis], abs(a.force))
            if a.age_cycles > 0 and self._want_enabled:
                self._stale_cycles += 1
        if self.telemetry is not None and self.telemetry.due(t):
            self._telemetry_row(t)
        if self._progress is not None and t - self._last_progress >= 0.1:
            self._last_progress = t
            est = self.core.estimator.estimate
            self._progress(
                Progress(
                    t=t,
                    phase=self.procedure.phase.value,
                    gap=est.gap,
                    ante_wire_tip=est.tips.get("ante_wire", math.nan),
                    lesion_length=self.cfg.procedure.lesion_length,
                    crossing_at=self.cfg.procedure.lesion_length + self.cfg.procedure.distal_margin,
                    cycle=self.pacer.cycles,
                )
            )

    # --- telemetry --------------------------------------------------------------------------------

    def _open_telemetry(self, path: Path) -> Telemetry:
        cols: list[str] = ["phase", "gap", "coupling", "gap_true"]
        cols += [f"tip_{a}" for a in LINEAR_AXES]
        cols += [f"force_{a}" for a in self.axes]
        cols += [f"target_{a}" for a in self.axes]
        cols += [f"actual_{a}" for a in self.axes]
        self._phase_names = [p.value for p in Phase]
        self._phase_index = {p: i for i, p in enumerate(Phase)}
        self._row = [0.0] * len(cols)
        return Telemetry(
            path, cols, rate_hz=self.cfg.record.telemetry_hz, labels={"phase": self._phase_names}
        )

    def _telemetry_row(self, t: float) -> None:
        assert self.telemetry is not None
        row = self._row
        est = self.core.estimator.estimate
        fb = self.master.feedback.axes
        cmd = self.master.commands.axes
        row[0] = self._phase_index[self.procedure.phase]
        row[1] = est.gap
        row[2] = est.coupling
        if self.plant is not None:
            tips = self.plant.tips()
            row[3] = tips["retro_mc"] - tips["ante_mc"]
        else:
            row[3] = math.nan
        i = 4
        for a in LINEAR_AXES:
            row[i] = est.tips.get(a, math.nan)
            i += 1
        for a in self.axes:
            row[i] = fb[a].force
            i += 1
        for a in self.axes:
            row[i] = cmd[a].target
            i += 1
        for a in self.axes:
            row[i] = fb[a].position
            i += 1
        self.telemetry.sample(t, row)

    # --- faults and operator --------------------------------------------------------------------

    def _apply_scheduled_faults(self) -> None:
        while self._pending and self._pending[0].t <= self._t:
            spec = self._pending.pop(0)
            self._event("inject", spec=str(spec), safety=True)
            if spec.kind not in RUNTIME_FAULT_KINDS:
                assert self.drives is not None  # checked with the spec
                self.drives.inject(dataclasses.replace(spec, t=min(spec.t, self.drives.time)))
            elif spec.kind is FaultKind.ESTOP:
                self.operator.estop = True
            elif spec.kind is FaultKind.DEADMAN_RELEASE:
                self.operator.enable_held = False
                self.procedure.enable(False)
            elif spec.kind is FaultKind.IMAGING_LOSS:
                self._imaging_lost = True
            elif spec.kind is FaultKind.SYNC_LOSS:
                self.master.sync_enabled = False
            elif spec.kind is FaultKind.MASTER_FREEZE:
                self._freeze(float(spec.arg or 0.0) / 1000.0)

    def _freeze(self, seconds: float) -> None:
        """The master stops for ``seconds``: no SYNC, no heartbeat, no RPDO."""
        if self.simulated_time:
            assert isinstance(self.bus, SimTimeBus)
            self.bus.advance(round(seconds / self.cfg.period))
        else:
            time.sleep(seconds)  # the injected fault itself: the cycle really stalls
        self._cycle_in.stall_s = seconds  # the supervisor judges it

    def _drives_ready(self) -> bool:
        """Every drive OPERATION ENABLED with feedback no older than the supervisor allows."""
        limit = self.cfg.safety.feedback_max_age_cycles
        return all(
            a.state is DriveState.OPERATION_ENABLED and not stale(a.age_cycles, limit) and a.heartbeat_ok
            for a in self.master.feedback.axes.values()
        )

    def _drive_event(self, event: DriveEvent) -> None:
        text = event.text or event.kind.name
        self.faults.append(f"{event.t:.3f}s {event.axis or 'bus'}: {text}")
        # latched before it is logged: a failing disk must not keep the fault from stopping the drives
        self.core.supervisor.raise_fault(_EVENT_REASON[event.kind], text, event.axis)
        self._event("drive", event=event.kind.name, axis=event.axis, code=event.code, text=text, safety=True)

    def _log_failed(self, exc: OSError) -> None:
        """The event log could not be written: stop the run (the drives first), keep cycling.

        What it holds is kept and tried again each cycle and at close, which raises if the disk
        is still failing, after the drives are stopped."""
        if self._log_error is None:
            self._log_error = exc
            text = f"event log {self.out}: cannot write ({exc.strerror or exc})"
            self.faults.append(f"{self._t:.3f}s all: {text}")
            self.core.supervisor.raise_fault(Reason.RECORDING, text)

    def _event(self, kind: str, *, safety: bool = False, **fields: Any) -> None:
        if self.log is not None:
            try:
                self.log.write(self._t, kind, sync=True if safety else None, **fields)
            except OSError as exc:
                self._log_failed(exc)

    # --- the end ----------------------------------------------------------------------------------

    def _end_reason(self) -> str:
        if self.core.supervisor.latched:
            return self.core.supervisor.latched_verdict.text
        return getattr(self.procedure, "reason", "")

    def _finish(self, outcome: str) -> RunResult:
        stats: LoopStats = self.pacer.stats()
        result = RunResult(
            outcome=outcome,
            crossed=self.procedure.crossed,
            sim_seconds=self._t,
            wall_seconds=time.perf_counter() - self._t_start_wall,
            cycles=stats.cycles,
            overruns=stats.overruns,
            stale_cycles=self._stale_cycles,
            min_gap=self._min_gap if math.isfinite(self._min_gap) else math.nan,
            max_gap=self._max_gap if math.isfinite(self._max_gap) else math.nan,
            max_force=dict(self._max_force),
            faults=tuple(self.faults),
            reason=self._end_reason(),
            loop=stats.as_dict() if not self.simulated_time else {"cycles": stats.cycles},
            trace_dropped=self.trace.dropped if self.trace is not None else 0,
            out=str(self.out) if self.out is not None else None,
        )
        self._event("end", outcome=outcome, crossed=result.crossed, safety=True)
        if self.out is not None:
            self._write_summary(result)
        return result

    def _write_summary(self, result: RunResult) -> None:
        assert self.out is not None
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
        summary["lesion_length"] = cfg.procedure.lesion_length
        summary["gap_window"] = [cfg.procedure.gap_min, cfg.procedure.gap_target, cfg.procedure.gap_max]
        summary["seed"] = self.seed
        summary["injected"] = [str(f) for f in self.faults_planned]
        summary["config"] = cfg.to_dict()
        write_json_atomic(self.out / "summary.json", summary)
        if self.telemetry is not None and cfg.record.plot:
            self.telemetry.close()
            plot_run(
                self.out / "telemetry.csv",
                self.out / "plot.png",
                lesion_length=cfg.procedure.lesion_length,
                gap_window=(cfg.procedure.gap_min, cfg.procedure.gap_target, cfg.procedure.gap_max),
                force_limits={a: (d.force_alarm, d.force_stop) for a, d in cfg.drives.items()},
                crossing_at=cfg.procedure.lesion_length + cfg.procedure.distal_margin,
                title=(
                    f"whih: {result.outcome}, crossed={result.crossed}, L={cfg.procedure.lesion_length:g} mm"
                ),
            )


_HOLD_CODES.update((Runtime.close.__code__, Runtime._close.__code__))
