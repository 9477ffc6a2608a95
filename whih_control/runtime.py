"""The cycle and what runs it: a thread in real time, the caller in simulated time.

One :class:`Runtime` owns one robot's parts (bus, master, optional simulated drives/plant/imaging,
control core, procedure, recorder). :meth:`Runtime._cycle_body` is the whole cycle, top to bottom:

1. **commands**: the operator verbs queued since the last cycle are taken, each answered;
2. **read**: ``master.read`` sends SYNC and collects one TPDO1 per drive (the hot path);
3. **service**: EMCY, heartbeats, boot-ups and collisions become supervisor inputs;
4. **supervise**: stale feedback, drives that left OPERATION ENABLED, operator inputs;
5. **procedure**: the estimator's last estimate and the supervisor's latch tick the phase machine,
   which yields the objective;
6. **update**: estimate, trajectories and regulators, then the safety supervisor makes the
   commands safe (the one owner of faults);
7. **write**: ``master.write`` sends one RPDO1 per drive;
8. **record**: only now is anything logged or fsynced; frames go to the trace writer process,
   telemetry rows to a writer thread. A fault latched on a master stall is logged ahead of
   everything the cycle logged since it began to read (the drives' EMCYs are its consequence).

**Never unattended** (docs/DESIGN.md section 2): in real time, from the first ``enable()`` (the SDO
set-up) to ``close()``, a thread of its own runs the cycle at the configured rate whatever the
application does between calls; verbs reach it through a queue and wait for its answer. In
simulated time there are no threads: each verb runs the cycle that takes it, and
:meth:`Runtime.step` / :meth:`Runtime.wait` run the cycles in between, deterministically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import can

from firmware_iface.bus import SIM_INTERFACE, open_bus, simulated_time_bus
from firmware_iface.cia402 import DriveState
from firmware_iface.faults import RUNTIME_FAULT_KINDS, FaultKind, FaultSpec, parse_fault
from firmware_iface.master import Master
from firmware_iface.sim import SimulatedDrives
from firmware_iface.types import DriveEvent, DriveEventKind, DriveGoal
from whih_control.config import Config
from whih_control.core import ControlCore
from whih_control.errors import (
    CommandTimeoutError,
    ConfigError,
    ProcedureError,
    SafetyError,
    WhihError,
)
from whih_control.events import fault_line
from whih_control.interrupts import HOLD_CODES, InterruptGuard, sigint_held
from whih_control.limits import stale
from whih_control.procedure import MOTION_PHASES, Phase, Procedure, ProcedureInputs
from whih_control.recorder import RUN_FILES, RunRecorder, RunResult
from whih_control.runtime_clock import LoopStats, RealTimePacer, SimPacer
from whih_control.sim import ImagingSource, Plant
from whih_control.status import DriveStatus, Status
from whih_control.types import LINEAR_AXES, CycleInputs, Objective, OperatorInput, Reason, TipMeasurement

if TYPE_CHECKING:
    from firmware_iface.simbus import SimKernel

__all__ = ["RUN_FILES", "Progress", "RunResult", "Runtime", "realtime_scheduling"]

T = TypeVar("T")
Clock = Literal["real", "simulated"]

_EVENT_REASON: Mapping[DriveEventKind, Reason] = {
    DriveEventKind.EMCY: Reason.DRIVE_FAULT,
    DriveEventKind.HEARTBEAT_LOST: Reason.HEARTBEAT,
    DriveEventKind.BOOTUP: Reason.DRIVE_FAULT,
    DriveEventKind.COLLISION: Reason.BUS_FAULT,
    DriveEventKind.STALE: Reason.STALE_FEEDBACK,
    DriveEventKind.DRIVE_FAULT: Reason.DRIVE_FAULT,
    DriveEventKind.SYNC_LOSS: Reason.BUS_FAULT,
    DriveEventKind.BUS_ERROR: Reason.BUS_FAULT,
    DriveEventKind.IMPLAUSIBLE: Reason.DRIVE_FAULT,
}

SETUP_LOST_REMEDY = (
    "a reset drive is back at its power-on values (heartbeat consumer 0x1016, mode 0x6060, "
    "limits, PDO mapping) and only set-up restores them; close this robot and open a new one "
    "(wc.Robot(cfg), or whih run again): its enable() sets every drive up again"
)
"""What acknowledge says when a drive booted since set-up (nothing in a running robot sets a
drive up again: set-up runs once, in the first enable())."""
STOP_SETTLE_S = 0.5
"""How long a run waits in fault after the quick stop, so the ramps finish and are recorded."""
WAIT_POLL_S = 0.01
"""Real time: how often a waiting application thread looks at the cycle's state."""
_OE = DriveState.OPERATION_ENABLED


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress report, about ten times per simulated or real second of a wait."""

    t: float
    phase: str
    gap: float
    ante_wire_tip: float
    lesion_length: float
    crossing_at: float
    cycle: int


def check_max_time(max_time: float | None) -> None:
    """Refuse a ``max_time`` that is not None or a finite number of seconds > 0."""
    check_time_bound("max_time", max_time)


def check_time_bound(name: str, value: float | None) -> None:
    """Refuse a time bound ``name`` that is not None or a finite number of seconds > 0."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < math.inf:
        raise ValueError(f"{name} (={value!r}) must be None or a finite number of seconds > 0")


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


class _Command:
    """An operator verb on its way to the cycle; answered (result or error) by the cycle."""

    __slots__ = ("answered", "args", "cancelled", "error", "fn", "result", "verb")

    def __init__(self, verb: str, fn: Callable[[], Any], args: Mapping[str, Any]) -> None:
        self.verb = verb
        self.fn = fn
        self.args = dict(args)
        self.answered = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancelled = False


def _set_realtime_priority(priority: int) -> None:
    """SCHED_FIFO at ``priority`` for the calling thread (Linux: per thread; threads it starts
    inherit it); 0 leaves the thread as it is."""
    if priority > 0:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))


def realtime_scheduling(priority: int) -> Callable[[], None]:
    """Every thread of this process SCHED_FIFO at ``priority`` (threads and processes started
    later inherit it); returns what puts the threads that still exist back as they were.

    The whole process, not the cycle thread alone: a thread holding the interpreter lock while
    the scheduler keeps it off the CPU stalls the cycle just the same (measured: the application's
    thread, preempted with the lock held, kept a SCHED_FIFO cycle waiting 81 ms).
    A refusal is a :class:`ConfigError` naming the key (before anything is opened).
    """
    if priority <= 0:
        return lambda: None
    before: dict[int, tuple[int, os.sched_param]] = {}
    try:
        for tid in (int(t) for t in os.listdir("/proc/self/task")):
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                before[tid] = (os.sched_getscheduler(tid), os.sched_getparam(tid))
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError) as exc:
        _restore_policies(before)
        raise ConfigError(
            [
                f"cycle.realtime_priority: this system refuses SCHED_FIFO (got {priority}: {exc}); "
                "allowed: 0 (the normal scheduler), or 1-99 where the process has CAP_SYS_NICE or "
                "an rtprio limit (ulimit -r)"
            ]
        ) from None
    return lambda: _restore_policies(before)


def _restore_policies(before: Mapping[int, tuple[int, os.sched_param]]) -> None:
    for tid, (policy, param) in before.items():
        with contextlib.suppress(OSError):  # ended meanwhile
            os.sched_setscheduler(tid, policy, param)


class _CycleThread:
    """Real time: runs the runtime's cycles on a thread of its own until stopped.

    Until the drives are set up there is nothing to cycle for: the thread only answers verbs.
    A cycle that raises ends the thread (the error is kept in :attr:`error`); the drives'
    heartbeat consumers then stop them by themselves, and the next verb reports it.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._stop = threading.Event()
        self.wake = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="whih-cycle", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the cycle running now; the caller then owns the bus."""
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        rt = self._rt
        period = rt.cfg.period
        try:
            # whatever thread starts the cycle again after an exclusive block
            _set_realtime_priority(rt.cfg.cycle.realtime_priority)
            while not self._stop.is_set():
                if rt.set_up:
                    rt._cycle()
                else:
                    rt._take_commands()
                    self.wake.wait(period)
                    self.wake.clear()
        except BaseException as exc:
            self.error = exc
            rt._answer_all(WhihError(f"the cycle stopped: {type(exc).__name__}: {exc}"))
            if rt.set_up:
                # best effort: a cycle that raised once may raise again; the drives' own heartbeat
                # consumers stop them in any case once the master heartbeat is gone
                with contextlib.suppress(BaseException):
                    rt._safe_stop()


class Runtime:
    """Owns everything a run needs and runs its cycles; used through :class:`whih_control.Robot`."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock | None = None,
        bus: can.BusABC | None = None,
        seed: int = 0,
        out: Path | None = None,
        inject: Sequence[str] = (),
        progress: Callable[[Progress], None] | None = None,
        auto_confirm: bool = False,
    ) -> None:
        if clock is None:
            clock = "simulated" if cfg.bus.interface == SIM_INTERFACE else "real"
        if clock not in ("real", "simulated"):
            raise ValueError(f"clock (={clock!r}) must be 'real' or 'simulated'")
        if clock == "simulated":
            if not cfg.sim.enabled:
                raise ValueError("clock (='simulated') needs simulated drives (sim.enabled = true)")
            if bus is not None:
                simulated_time_bus(bus, period=cfg.period)  # refuses any other bus
            if cfg.bus.interface != SIM_INTERFACE:
                cfg = cfg.replace(bus=dataclasses.replace(cfg.bus, interface=SIM_INTERFACE))
        elif cfg.bus.interface == SIM_INTERFACE:
            raise ValueError(
                f"clock (='real') cannot run on bus.interface (={SIM_INTERFACE!r}): "
                "give a real-time interface such as 'virtual', or clock='simulated'"
            )
        if isinstance(inject, str):  # a lone spec would be taken apart character by character
            raise TypeError(f"inject (={inject!r}) must be a list of fault specs, e.g. [{inject!r}]")
        self.cfg = cfg
        self.clock: Clock = clock
        self.simulated_time = clock == "simulated"
        self.auto_confirm = auto_confirm
        self.seed = seed
        self.out = out
        self._progress = progress
        self._given_bus = bus
        self.faults_planned: list[FaultSpec] = [check_fault_spec(cfg, s) for s in inject]
        self._pending = sorted(self.faults_planned, key=lambda f: f.t)
        self.axes = tuple(cfg.drives)
        self.operator = OperatorInput(enable_held=False)
        self._inputs_set_by_app = False
        self._closers: list[Callable[[], None]] = []
        self._opened = False
        self.set_up = False
        """The drives have been set up (SDO) and the cycle runs."""
        self._want_enabled = False
        self._t = 0.0
        self._t_start_wall = 0.0
        self._measurements: list[TipMeasurement] = []
        # appended by the application's thread, taken one at a time by the cycle (both atomic)
        self._external: deque[TipMeasurement] = deque()
        self._commands: deque[_Command] = deque()
        self._fault_stop_t: float | None = None
        self._imaging_lost = False
        self._inputs = ProcedureInputs(operator=self.operator)
        self._cycle_in = CycleInputs()
        """The cycle's fault conditions for the supervisor (the one owner of faults)."""
        self._switch_interval: float | None = None
        self._restore_scheduling: Callable[[], None] = lambda: None
        self._jogging = False
        self._jog_objective = {
            p: Objective(phase=p.value, motion_allowed=True) for p in (Phase.READY, Phase.PAUSED)
        }
        self._teleop_until: dict[str, float] = {}
        self._stop_reason = ""
        """Why the run stopped when the procedure does not say: enable failed, or its time bound."""
        self._latch_t: float | None = None
        """Cycle time at which the present latched fault was first commanded (quick stop)."""
        self._position_doubted = ""
        """A linear axis whose position actual jumped since the last acknowledge ('' none): the
        calibration tying its encoder to its tip is no longer to be trusted."""
        self._calibrate_from = -math.inf
        """Only tip images taken at or after this cycle time may calibrate (after a reset of it)."""
        self._stopped = False
        self._was_opened = False
        self._summary_written = False
        self.interrupts = InterruptGuard()
        self._lock = threading.Lock()
        """Held by the cycle thread for a whole cycle; status() reads between cycles."""
        self._thread: _CycleThread | None = None
        self._owner = 0
        """The thread that opened the robot (in simulated time the only one that may call it)."""

    @property
    def faults(self) -> list[str]:
        """Every fault seen so far, ``'<t>s <axis>: <text>'``."""
        return self.recorder.faults

    @property
    def log(self) -> Any:
        """The event log (None without a run folder)."""
        return self.recorder.log

    # --- set-up and tear-down --------------------------------------------------------------------

    def open(self) -> None:
        """Open the bus, start simulated drives if configured, create the run folder."""
        if self._opened:
            raise WhihError("open: the robot is already open")
        if self._was_opened:
            # its drives were set up by its first enable(), once: a second life would run them
            # without their set-up (and write into a folder that already holds a run)
            raise WhihError("open: this robot was opened and closed before; make a new one (wc.Robot(cfg))")
        self._was_opened = True
        cfg = self.cfg
        if not self.simulated_time:
            # first, so that every thread and process started below inherits it
            self._restore_scheduling = realtime_scheduling(cfg.cycle.realtime_priority)
        try:
            self.recorder = RunRecorder(
                cfg, self.out, blocking_trace=self.simulated_time, on_failure=self._recording_failed
            )
            self._closers.append(self.recorder.close)
            bus = self._given_bus
            self._kernel: SimKernel | None = None
            if self.simulated_time:
                simbus = simulated_time_bus(bus, period=cfg.period)
                self._kernel = simbus.kernel
                bus = simbus
                if self._given_bus is None:
                    self._closers.append(bus.shutdown)
            elif bus is None:
                bus = open_bus(cfg.bus, period=cfg.period)
                self._closers.append(bus.shutdown)
            self.bus = bus
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
            self.master = Master(cfg, bus)
            self.master.tap = self.recorder.tap
            self.recorder.watch_master(self.master.stats)
            self.core = ControlCore(cfg)
            self.core.request_goal(DriveGoal.SWITCHED_ON)
            self.procedure = Procedure(cfg, log=self.recorder.log, auto_confirm=self.auto_confirm)
            kernel = self._kernel
            if kernel is not None:
                self.pacer: SimPacer | RealTimePacer = SimPacer(
                    cfg.period, clock=lambda: kernel.time + cfg.period
                )
            else:
                self.pacer = RealTimePacer(
                    cfg.period,
                    busy_wait_s=cfg.cycle.busy_wait_us * 1e-6,
                    tpdo_fraction=cfg.cycle.tpdo_deadline,
                    wait=self.master.wait_until,
                )
                # background threads (telemetry writer, simulated drives, the application) must
                # not keep the interpreter lock for the default 5 ms: that is two cycles at 400 Hz
                self._switch_interval = sys.getswitchinterval()
                sys.setswitchinterval(min(self._switch_interval, cfg.period / 10))
            self._opened = True
            self._owner = threading.get_ident()
            self.interrupts.install()
            gc.collect()
            gc.freeze()  # keep the collector off the objects that live for the whole run
            self._t_start_wall = time.perf_counter()
            if not self.simulated_time:
                self._thread = _CycleThread(self)
                self._thread.start()
        except BaseException:
            self._opened = False
            self.interrupts.release()
            self._close_all()
            self._restore_scheduling()
            raise

    def close(self) -> None:
        """Quick-stop then disable every drive, shut everything down. Safe to call twice.

        A Ctrl-C that arrives meanwhile is held until the drives are stopped and the bus is shut
        down, then raised as ``KeyboardInterrupt``, or handed to the application's own SIGINT
        handler if it had one (main thread only: signals go nowhere else).
        """
        if not self.interrupts.installed:  # e.g. the application has its own handler
            with sigint_held() as deliver_held:
                try:
                    self._close()
                except BaseException:
                    deliver_held()  # a Ctrl-C held meanwhile wins, with the close error as its cause
                    raise
            deliver_held()
            return
        with self.interrupts.closing():
            self._close()

    def _close(self) -> None:
        if not self._opened:
            self._close_all()
            return
        self._opened = False
        errors: list[BaseException] = []
        if self._thread is not None:
            self._thread.stop()  # from here this thread owns the bus
        self._answer_all(WhihError("the robot was closed"))
        self._pending.clear()  # injections still scheduled must not fire during the safe stop
        self.master.sync_enabled = True  # an injected SYNC loss ends with the run
        if self.set_up:
            try:
                if not self._stopped:  # an interrupted run_procedure has just done it
                    self._safe_stop()
            except BaseException as exc:
                errors.append(exc)
            if not self._summary_written and self.out is not None:
                try:
                    self._finish(self._closing_outcome())
                except BaseException as exc:
                    errors.append(exc)
            try:
                self.master.shutdown()
            except BaseException as exc:
                errors.append(exc)
        self.interrupts.drives_safe()
        try:
            self._close_all()
        except BaseException as exc:
            errors.append(exc)
        gc.unfreeze()
        self._restore_scheduling()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        if errors:
            raise errors[0]

    def _closing_outcome(self) -> str:
        if self.procedure.done:
            return self.procedure.outcome
        if self.procedure.phase is Phase.FAULT:
            return "fault"
        return "closed"

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
        """Quick stop on every axis for a moment, then disable voltage; recorded like any cycle.

        Runs on the calling thread: the cycle thread must be stopped (see :meth:`_exclusive`).
        """
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
        self.core.request_goal(DriveGoal.DISABLED)  # cycles that follow (real time) keep them so
        self._stopped = True  # until the application acts again (_require_open)

    def _exclusive(self) -> _Exclusive:
        """The calling thread runs cycles or SDO itself: the cycle thread waits for it."""
        return _Exclusive(self._thread)

    # --- verbs: queued to the cycle, answered by it --------------------------------------------------

    def _require_open(self, action: str) -> None:
        if not self._opened:
            raise WhihError(f"{action}: the robot is not open (use it inside its 'with' block)")
        if self._thread is not None and self._thread.error is not None:
            err = self._thread.error
            raise WhihError(f"{action}: the cycle stopped ({type(err).__name__}: {err})") from err
        if self._thread is None and threading.get_ident() != self._owner:
            raise WhihError(
                f"{action}: in simulated time the robot runs on the thread that opened it (no cycle "
                "thread); call it from that thread, or use clock='real'"
            )
        self.interrupts.resumed()  # the application caught an interrupt and goes on
        self._stopped = False

    def command(self, verb: str, fn: Callable[[], T], **args: Any) -> T:
        """Queue ``fn`` for the start of the next cycle and return its answer (or raise its error).

        Simulated time runs that cycle here; real time waits up to ``operator.command_timeout_s``
        for the cycle thread (:class:`~whih_control.errors.CommandTimeoutError` after that).
        """
        self._require_open(verb)
        cmd = _Command(verb, fn, args)
        self._commands.append(cmd)
        if self._thread is None:
            if self.set_up:
                self._cycle()
            else:
                self._idle_cycle()
        else:
            self._thread.wake.set()
            if not cmd.answered.wait(self.cfg.operator.command_timeout_s):
                cmd.cancelled = True
                raise CommandTimeoutError(
                    f"{verb}: the cycle did not answer within operator.command_timeout_s "
                    f"(={self.cfg.operator.command_timeout_s:g} s)"
                )
        if cmd.error is not None:
            raise cmd.error
        return cmd.result  # type: ignore[no-any-return]

    def _take_commands(self) -> None:
        """Answer every queued verb, in order; each is logged with its answer."""
        commands = self._commands
        while commands:
            cmd = commands.popleft()
            if cmd.cancelled:
                self.recorder.event(
                    self._t, "command", verb=cmd.verb, answer="timeout", safety=True, **cmd.args
                )
                continue
            try:
                cmd.result = cmd.fn()
            except Exception as exc:
                cmd.error = exc
                self.recorder.event(
                    self._t,
                    "command",
                    verb=cmd.verb,
                    answer="refused",
                    reason=str(exc),
                    safety=True,
                    **cmd.args,
                )
            else:
                self.recorder.event(
                    self._t, "command", verb=cmd.verb, answer="accepted", safety=True, **cmd.args
                )
            cmd.answered.set()

    def _answer_all(self, error: BaseException) -> None:
        """Refuse every queued verb (the cycle stopped or the robot closes)."""
        while self._commands:
            cmd = self._commands.popleft()
            cmd.error = error
            cmd.answered.set()

    def _idle_cycle(self) -> None:
        """Simulated time before set-up: answer verbs, let one period pass."""
        self._take_commands()
        if self._kernel is not None:
            self._kernel.advance(1)
            self._t = self._kernel.time

    def enable(self, *, timeout: float | None = None) -> None:
        """Set up every drive over SDO (cycle stopped: nothing is enabled yet), then walk them to
        OPERATION ENABLED and calibrate; returns in ready.

        Bounded by ``bus.boot_timeout_s`` + 5 s of waiting for the drives and calibration, and,
        when given, by ``timeout`` seconds of the robot's clock from this call (the SDO set-up
        included; it is not interrupted): whichever ends first raises
        :class:`~whih_control.errors.CommandTimeoutError`. When ``timeout`` ends it, what the
        enable began is withdrawn: the drives go back to SWITCHED ON (no torque) and the
        procedure is aborted, so nothing goes on enabling, or moving, by itself.
        """
        check_time_bound("enable: timeout", timeout)
        self._require_not_enabled()
        try:
            if not self._enable(timeout):
                text = (
                    f"enable: timeout (={timeout:g} s) ended in phase {self.procedure.phase.value}, "
                    "before the drives reached OPERATION ENABLED and calibration"
                )
                self._withdraw_enable(text)
                raise CommandTimeoutError(text)
        except WhihError as exc:
            self._enable_failed(exc)
            raise

    def _withdraw_enable(self, why: str) -> None:
        """A caller's bound ended the enable: drives back to SWITCHED ON, the procedure aborted
        with ``why`` (with auto_confirm it would otherwise start moving once calibrated)."""

        def withdraw() -> None:
            self._want_enabled = False
            self.core.request_goal(DriveGoal.SWITCHED_ON)
            if not self.procedure.done:
                self.procedure.abort(why, reason=why)

        self.command("withdraw_enable", withdraw)

    def _require_not_enabled(self) -> None:
        self._require_open("enable")
        if self.set_up and self.procedure.phase is not Phase.IDLE:
            raise ProcedureError(f"enable: already enabled (phase {self.procedure.phase.value})")

    def _enable_failed(self, exc: WhihError) -> None:
        # the run folder says why nothing ran, not only the application's console
        self._stop_reason = str(exc)
        with self._lock:
            self.recorder.event(
                self._t, "enable_failed", error=type(exc).__name__, text=str(exc), safety=True
            )

    def _now(self) -> float:
        """The robot's clock for measuring a call: simulated seconds, or wall seconds (in real
        time the cycle's own clock starts only after the SDO set-up)."""
        return self._kernel.time if self._kernel is not None else time.perf_counter()

    def _enable(self, timeout: float | None) -> bool:
        """:meth:`enable`'s work; False when ``timeout`` (from the call) ended it first."""
        start = self._now()
        if not self.set_up:
            with self._exclusive():
                self.master.setup()
                self.set_up = True
                for axis, ident in self.master.identities.items():
                    self.recorder.identities[axis] = ident.as_dict()
                    self.recorder.event(
                        self._t,
                        "identity",
                        axis=axis,
                        identity=ident.as_dict(),
                        notes=self.master.plans[axis].notes,
                    )
        deadline = math.inf if timeout is None else start + timeout
        if self._now() >= deadline:
            return False  # the set-up used the time up: enable nothing
        self.command("enable", self._do_enable)
        left = deadline - self._now()
        limit = self.cfg.bus.boot_timeout_s + 5.0
        caller_bound = left < limit
        # with auto_confirm, ready lasts one cycle: a wait in real time may first see approach
        try:
            self._wait_for(
                lambda: self.procedure.phase not in (Phase.IDLE, Phase.PREFLIGHT, Phase.CALIBRATE),
                timeout=max(left, 0.0) if caller_bound else limit,
                what="enable: drives did not reach OPERATION ENABLED and calibration",
            )
        except CommandTimeoutError:
            if caller_bound:
                return False
            raise
        if self.procedure.phase in (Phase.FAULT, Phase.ABORTED):
            raise WhihError(f"enable: ended in {self.procedure.phase.value}: {self._end_reason()}")
        return True

    def _do_enable(self) -> None:
        if not self._inputs_set_by_app:
            self.operator.enable_held = True  # the runtime holds the pedal unless the application does
        self._want_enabled = True
        self.core.request_goal(DriveGoal.ENABLED)
        self.procedure.enable(True)
        self.procedure.start()

    def _require_enabled(self, verb: str) -> None:
        if not self.set_up or self.procedure.phase is Phase.IDLE:
            raise ProcedureError(f"{verb}: the robot is not enabled (phase idle); call enable() first")

    def start_procedure(self) -> None:
        """The operator's go: ready -> approach (non-blocking)."""

        def start() -> None:
            self._require_enabled("start_procedure")
            if self.procedure.phase is Phase.READY:
                self.procedure.confirm()
            elif not (self.auto_confirm and self.procedure.phase is Phase.APPROACH):
                raise ProcedureError(f"start_procedure: not in ready (phase {self.procedure.phase.value})")

        self.command("start_procedure", start)

    def pause(self) -> None:
        """Hold every axis (ramped down at max_accel): motion phase -> paused."""
        self.command("pause", self.procedure.pause)

    def resume(self) -> None:
        """paused -> the interrupted phase (enable held, no fault, drives ready, imaging fresh)."""
        self.command("resume", self.procedure.resume)

    def abort(self) -> None:
        """End the procedure (aborted); every axis holds."""
        self.command("abort", lambda: self.procedure.abort("operator"))

    def confirm_crossing(self) -> None:
        """crossed -> withdraw."""

        def confirm() -> None:
            if self.procedure.phase is not Phase.CROSSED:
                raise ProcedureError(f"confirm_crossing: not at crossed (phase {self.procedure.phase.value})")
            self.procedure.confirm()

        self.command("confirm_crossing", confirm)

    def acknowledge(self) -> None:
        """Clear a latched fault once every cause is gone and every drive is at rest; never moves
        anything; the procedure lands in paused (or ready/idle before motion began)."""

        def ack() -> None:
            sup = self.core.supervisor
            if not sup.latched and self.procedure.phase is not Phase.FAULT:
                raise ProcedureError(f"acknowledge: no fault latched (phase {self.procedure.phase.value})")
            lost = self.master.needs_setup()
            if lost:  # the master knows the boot; no acknowledge restores what set-up wrote
                raise SafetyError(f"acknowledge refused: {'; '.join(lost)}: {SETUP_LOST_REMEDY}")
            if sup.latched and self.recorder.lost:
                # the writers are gone for good: nothing may move again without its record
                raise SafetyError(
                    f"acknowledge refused: recording lost ({self.recorder.lost[0]}); this run cannot "
                    "move again: close it and start a new run"
                )
            # it lands in paused (which watches imaging) when there is a phase to resume
            lands_paused = self.procedure.resume_target is not None
            if sup.latched and not self.core.acknowledge(self.master.feedback, imaging_watched=lands_paused):
                raise SafetyError(f"acknowledge refused: {sup.ack_blocker}")
            if self._position_doubted:
                # the jumped encoder may be the one that is right now: only a new image can say
                # where the tips are, so the linear axes hold until one calibrates them again
                self.core.estimator.forget_calibration()
                self._calibrate_from = self._t
                self.recorder.event(
                    self._t,
                    "calibration_cleared",
                    axis=self._position_doubted,
                    text="position actual jumped: linear axes hold until the next image calibrates",
                    safety=True,
                )
                self._position_doubted = ""
            inputs = self._inputs
            inputs.fault_active = sup.latched
            inputs.verdict = sup.latched_verdict
            inputs.fault_text = ""
            self.procedure.acknowledge()
            self._fault_stop_t = None

        self.command("acknowledge", ack)
        sup = self.core.supervisor
        est = self.core.estimator
        if self._want_enabled:
            # the drives are reset and enabled again where they stand: return once they hold torque
            self._wait_for(
                lambda: sup.latched or self._drives_ready(),
                timeout=self.cfg.bus.boot_timeout_s,
                what="acknowledge: drives back in OPERATION ENABLED",
                give_up=False,
            )
        if not sup.latched and not est.calibrated and math.isfinite(self._calibrate_from):
            # calibration cleared above: a resume right after this call must find it again
            try:
                self._wait_for(
                    lambda: sup.latched or est.calibrated,
                    timeout=self.cfg.bus.boot_timeout_s,
                    what="acknowledge: a new image to calibrate from",
                    give_up=False,
                )
            except CommandTimeoutError as exc:
                raise SafetyError(
                    f"acknowledge: accepted, but {exc}; the linear axes hold (resume is refused) "
                    "until an image of every tip calibrates them"
                ) from None
        if sup.latched:
            raise SafetyError(
                f"acknowledge: accepted, then a fault latched again: {sup.latched_verdict.text}"
            )

    def set_inputs(self, *, enable_held: bool | None = None, estop: bool | None = None) -> None:
        """The dead-man pedal and e-stop as the application reads them from its devices."""
        for name, value in (("enable_held", enable_held), ("estop", estop)):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"set_inputs: {name} (={value!r}) must be True, False or None")

        def apply() -> None:
            if enable_held is not None:
                self.operator.enable_held = enable_held
                self._inputs_set_by_app = True
            if estop is not None:
                self.operator.estop = estop

        self.command("set_inputs", apply, enable_held=enable_held, estop=estop)

    def jog(self, axis: str, delta: float) -> None:
        """Relative move through every limit; only in ready or paused.

        Returns once the axis has *arrived*: the setpoint is at the target and the position actual
        the master read (the value the supervisor judges) is within ``drives.<axis>.position_window``
        of it. Raises SafetyError, and cancels the jog, when a fault latches, when a limit holds
        the setpoint short of the target, or when the axis does not arrive within the jog's time
        budget (e.g. a blocked axis or a stuck encoder); the message names the axis, the target,
        the last position actual and the window.
        """
        self._check_axis("jog", axis)
        ctl = self.core.controller
        i = ctl.index[axis]

        def start() -> float:
            if not self.procedure.jog_allowed():
                raise ProcedureError(
                    f"jog: not allowed in phase {self.procedure.phase.value} (only ready/paused)"
                )
            if not self.operator.enable_held:  # the supervisor would hold it: say so at once
                raise SafetyError(f"jog: {axis} refused: enable (dead-man) released; hold it to move")
            self.core.jog(axis, delta)
            self._jogging = True
            return ctl.jog_target[i]

        target = self.command("jog", start, axis=axis, delta=delta)
        d = self.cfg.drives[axis]
        window = d.position_window
        feedback = self.master.feedback.axes
        v = d.max_speed * self.cfg.control.jog_speed_fraction
        budget = abs(delta) / v + 2 * v / d.max_accel + 1.0
        sup = self.core.supervisor

        def arrived() -> bool:
            # the setpoint first (a limit may hold it), then the axis itself
            return not math.isfinite(ctl.jog_target[i]) and abs(feedback[axis].position - target) <= window

        failure = ""
        try:
            self._wait_for(lambda: sup.latched or arrived(), timeout=budget, what=f"jog {axis} {delta:+g}")
        except CommandTimeoutError:
            with self._lock:
                failure = self._jog_failure(
                    axis, delta, target, budget, held=math.isfinite(ctl.jog_target[i])
                )
            raise SafetyError(failure) from None
        finally:
            # a jog never outlives this call: nothing pending may move in a later phase
            if self._opened:
                end_args = {"reason": failure} if failure else {}
                self.command("jog_end", lambda: self._end_jog(i), axis=axis, **end_args)
        if sup.latched:
            raise SafetyError(f"jog {axis} {delta:+g}: {sup.latched_verdict.text}")

    def _jog_failure(self, axis: str, delta: float, target: float, budget: float, *, held: bool) -> str:
        """Why a jog ended without arriving: axis, target, last position actual and window."""
        d = self.cfg.drives[axis]
        unit = "mm" if d.kind == "linear" else "deg"
        actual = self.master.feedback.axes[axis].position
        where = (
            f"target {target:.3f} {unit}, position actual {actual:.3f} {unit}, "
            f"window +/-{d.position_window:g} {unit} (drives.{axis}.position_window)"
        )
        if held:
            by = self.core.supervisor.latched_verdict.text or "a limit"
            return (
                f"jog {axis} {delta:+g}: target not reached within {budget:.3g} s (held by: {by}); "
                f"{where}; cancelled"
            )
        return (
            f"jog {axis} {delta:+g}: {axis} did not arrive within {budget:.3g} s: the setpoint is at "
            f"the target but the position actual is not; {where}; cancelled"
        )

    def _end_jog(self, i: int) -> None:
        self.core.controller.jog_target[i] = math.nan
        self._jogging = any(math.isfinite(x) for x in self.core.controller.jog_target)

    def teleop(self, axis: str, velocity: float) -> None:
        """Move ``axis`` at ``velocity`` (mm/s or deg/s) through every limit, only in ready or
        paused; the axis ramps down to rest unless renewed within ``operator.teleop_timeout_s``."""
        self._check_axis("teleop", axis)
        vmax = self.cfg.drives[axis].max_speed * self.cfg.control.jog_speed_fraction
        if (
            isinstance(velocity, bool)
            or not isinstance(velocity, int | float)
            or not -vmax <= velocity <= vmax
        ):
            raise ValueError(
                f"teleop: velocity for {axis} (={velocity!r}) must be a number in [{-vmax:g}...{vmax:g}] "
                "(max_speed x control.jog_speed_fraction)"
            )

        def start() -> None:
            if not self.procedure.jog_allowed():
                raise ProcedureError(
                    f"teleop: not allowed in phase {self.procedure.phase.value} (only ready/paused)"
                )
            if self.core.supervisor.latched:
                raise SafetyError(f"teleop: {axis} refused: fault latched; acknowledge first")
            if not self.operator.enable_held:
                raise SafetyError(f"teleop: {axis} refused: enable (dead-man) released; hold it to move")
            self.core.controller.teleop(axis, float(velocity))
            self._teleop_until[axis] = self._t + self.cfg.operator.teleop_timeout_s
            self._jogging = True

        self.command("teleop", start, axis=axis, velocity=velocity)

    def _check_axis(self, verb: str, axis: str) -> None:
        if axis not in self.cfg.drives:
            raise ValueError(
                f"{verb}: axis (={axis!r}) is not configured (configured: {', '.join(self.cfg.drives)})"
            )

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

    # --- status and waiting --------------------------------------------------------------------------

    def status(self) -> Status:
        """A snapshot between two cycles (safe from any thread); raises once the cycle thread has
        stopped on an error (a frozen snapshot would look like a healthy robot)."""
        if self._thread is not None and self._thread.error is not None:
            err = self._thread.error
            raise WhihError(f"status: the cycle stopped ({type(err).__name__}: {err})") from err
        with self._lock:
            return self._status()

    def _status(self) -> Status:
        est = self.core.estimator.estimate
        proc = self.procedure
        fb = self.master.feedback.axes
        cmd = self.master.commands.axes
        ctl = self.core.controller
        sup = self.core.supervisor
        return Status(
            t=self._t,
            cycle=self.pacer.cycles,
            phase=proc.phase.value,
            outcome=proc.outcome if proc.done else None,
            fault=sup.latched_verdict.text if sup.latched else "",
            faults=tuple(self.recorder.faults),
            crossed=proc.crossed,
            steps=proc.steps,
            rewinds=proc.rewinds,
            gap=est.gap,
            coupling=est.coupling,
            tips=dict(est.tips),
            drives={
                a: DriveStatus(
                    state=fb[a].state.name,
                    position=fb[a].position,
                    target=cmd[a].target,
                    force=fb[a].force,
                    age_cycles=fb[a].age_cycles,
                    heartbeat_ok=fb[a].heartbeat_ok,
                )
                for a in self.axes
            },
            enable_held=self.operator.enable_held,
            estop=self.operator.estop,
            jogging=tuple(a for a in ctl.axes if math.isfinite(ctl.jog_target[ctl.index[a]])),
            teleop=tuple(self._teleop_until),
        )

    def step(self, n: int = 1) -> None:
        """Simulated time: run ``n`` cycles."""
        self._require_open("step")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"step: n (={n!r}) must be an integer >= 0")
        if self._thread is not None:
            raise WhihError("step: only in simulated time (clock='simulated'); real time cycles by itself")
        for _ in range(n):
            if self.set_up:
                self._cycle()
            else:
                self._idle_cycle()

    def wait(
        self,
        until: str | Callable[[Status], bool] | None = None,
        timeout: float | None = None,
    ) -> Status:
        """Wait until phase ``until`` (or a sub-phase of it), a predicate on :class:`Status`, or
        (None) the end of the procedure (complete, aborted, or a fault the drives have stopped on).

        ``timeout`` is in the robot's clock (simulated seconds in simulated time); on timeout
        :class:`~whih_control.errors.CommandTimeoutError` is raised. A condition that can no longer
        come true (the procedure ended first) raises :class:`~whih_control.errors.ProcedureError`.
        """
        self._require_open("wait")
        check_time_bound("wait: timeout", timeout)
        if isinstance(until, str):
            names = {p.value for p in Phase}
            if until not in names and not any(n.startswith(until + "_") for n in names):
                raise ValueError(f"wait: until (={until!r}) must be a phase name: {', '.join(sorted(names))}")
            phase = until

            def reached() -> bool:
                v = self.procedure.phase.value
                return v == phase or v.startswith(phase + "_")
        elif until is None:
            reached = self._ended
        elif callable(until):
            predicate = until

            def reached() -> bool:
                return bool(predicate(self._status()))
        else:
            raise TypeError(f"wait: until (={until!r}) must be a phase name, a predicate on Status or None")
        self._wait_for(reached, timeout=timeout, what=f"wait until {until!r}", give_up=until is not None)
        return self.status()

    def _ended(self) -> bool:
        if self.procedure.done:
            return True
        if self.procedure.phase is Phase.FAULT:
            if self._fault_stop_t is None:
                self._fault_stop_t = self._t
            return self._t - self._fault_stop_t >= STOP_SETTLE_S
        self._fault_stop_t = None
        return False

    def _wait_for(
        self,
        reached: Callable[[], bool],
        *,
        timeout: float | None,
        what: str,
        give_up: bool = True,
        confirm: Callable[[str], bool] | None = None,
    ) -> None:
        """Cycle (simulated time) or watch the cycle (real time) until ``reached()``; progress and
        the crossing gate are served from here, never from inside the cycle."""
        end = math.inf if timeout is None else self._t + timeout
        last_progress = -math.inf
        while True:
            with self._lock:
                if reached():
                    return
                if give_up and self.procedure.done:
                    raise ProcedureError(f"{what}: the procedure ended ({self.procedure.outcome}) first")
                if self._t >= end:
                    raise CommandTimeoutError(f"{what}: not reached within {timeout:g} s")
                at_gate = self.procedure.phase is Phase.CROSSED and not self.auto_confirm
                report = None
                if self._progress is not None and self._t - last_progress >= 0.1:
                    last_progress = self._t
                    report = self._progress_report()
            if at_gate and confirm is not None and confirm("crossed"):
                with contextlib.suppress(ProcedureError):  # e.g. enable released: asked again
                    self.confirm_crossing()
            if report is not None and self._progress is not None:
                self._progress(report)
            if self._thread is None:
                self._cycle()
            else:
                err = self._thread.error
                if err is not None:
                    raise WhihError(f"{what}: the cycle stopped ({type(err).__name__}: {err})") from err
                time.sleep(WAIT_POLL_S)

    def _progress_report(self) -> Progress:
        est = self.core.estimator.estimate
        p = self.cfg.procedure
        return Progress(
            t=self._t,
            phase=self.procedure.phase.value,
            gap=est.gap,
            ante_wire_tip=est.tips.get("ante_wire", math.nan),
            lesion_length=p.lesion_length,
            crossing_at=p.lesion_length + p.distal_margin,
            cycle=self.pacer.cycles,
        )

    def run_procedure(
        self,
        *,
        max_time: float | None = None,
        confirm: Callable[[str], bool] | None = None,
        hold_on_fault: bool = False,
    ) -> RunResult:
        """Start (in ready) and wait until the procedure ends, or ``max_time`` seconds pass.

        Crossing is confirmed by ``confirm("crossed")`` returning True (polled while the
        procedure waits at crossed), or without asking when ``procedure.confirm_crossing`` is false.
        A fault ends the run once the drives have stopped, unless ``hold_on_fault``: then the run
        waits in fault for another thread to acknowledge and resume, or abort (bounded by
        ``operator.wait_timeout_s``).
        """
        check_max_time(max_time)
        self._require_open("run_procedure")
        if not self.set_up or self.procedure.phase is Phase.IDLE:
            raise ProcedureError("run_procedure: the robot is not enabled (phase idle); call enable() first")
        return self._run_procedure(max_time, max_time, confirm, hold_on_fault)

    def _run_procedure(
        self,
        left: float | None,
        max_time: float | None,
        confirm: Callable[[str], bool] | None,
        hold_on_fault: bool,
    ) -> RunResult:
        """:meth:`run_procedure` with ``left`` seconds of the run's bound ``max_time`` to go."""
        self._stop_reason = ""  # an earlier enable failure or bound says nothing about this run
        end = None if left is None else self._t + left  # from the call, its start included
        if self.procedure.phase is Phase.READY and not self.auto_confirm:
            self.start_procedure()
        try:
            try:
                ended = (lambda: self.procedure.done) if hold_on_fault else self._ended
                self._wait_for(
                    ended,
                    timeout=None if end is None else max(end - self._t, 0.0),
                    what="run_procedure",
                    give_up=False,
                    confirm=confirm,
                )
                outcome = self.procedure.outcome if self.procedure.done else "fault"
            except CommandTimeoutError:
                outcome = "timeout"
                self._stop_reason = f"max_time (={max_time:g} s) ended in phase {self.procedure.phase.value}"
        except KeyboardInterrupt:
            self.interrupts.unwinding()  # (also when the application raised it, e.g. in progress)
            try:
                with self._exclusive():
                    self._safe_stop()  # the drives first, then the run folder tells what happened
            finally:
                self._finish("interrupted")
            raise
        return self._finish(outcome)

    def enable_and_run(
        self,
        *,
        max_time: float | None = None,
        confirm: Callable[[str], bool] | None = None,
        hold_on_fault: bool = False,
    ) -> RunResult:
        """:meth:`enable`, then :meth:`run_procedure` with the time left: ``max_time`` seconds of
        the robot's clock from this call bound the whole run, enabling included.

        A bound that ends before the robot is enabled ends the run as ``"timeout"`` (summary and
        result say so in ``reason``); any other failure of enable raises as from :meth:`enable`.
        """
        check_max_time(max_time)
        self._require_not_enabled()
        start = self._now()
        try:
            enabled = self._enable(max_time)
        except WhihError as exc:
            self._enable_failed(exc)
            raise
        left = None if max_time is None else max_time - (self._now() - start)
        if left is not None and (not enabled or left <= 0.0):
            phase = self.procedure.phase.value
            self._stop_reason = (
                f"max_time (={max_time:g} s) ended during enable, in phase {phase}, before the drives "
                "reached OPERATION ENABLED and calibration"
                if not enabled
                else f"max_time (={max_time:g} s) ended in phase {phase}, before the procedure started"
            )
            if not enabled:
                self._withdraw_enable(self._stop_reason)
            return self._finish("timeout")
        return self._run_procedure(left, max_time, confirm, hold_on_fault)

    # --- the cycle -------------------------------------------------------------------------------

    def _cycle(self) -> None:
        """One cycle, a Ctrl-C held until its end."""
        guard = self.interrupts
        guard.enter_cycle()
        try:
            self._cycle_body()
        except BaseException as exc:
            self.recorder.cycle_raised()
            if guard.leave_cycle():
                raise KeyboardInterrupt from exc  # one interrupt, not one now and one later
            raise
        if guard.leave_cycle():
            raise KeyboardInterrupt

    def _cycle_body(self) -> None:
        """commands -> read -> service -> supervise -> procedure -> update -> write -> record."""
        rec = self.recorder
        with self._lock:  # status() and waits read between the cycle's two halves, never inside
            rec.hold_sync()  # safety events of this cycle are fsynced after the RPDOs
            # 1. commands: the verbs queued since the last cycle, and injected faults now due
            self._take_commands()
            self._apply_scheduled_faults()
        t = self.pacer.next()  # real time: sleeps until the cycle's slot, the lock free meanwhile
        core, master, procedure = self.core, self.master, self.procedure
        estimator, supervisor = core.estimator, core.supervisor
        with self._lock:
            # the master's own clock (slots skipped in real time, a kernel advanced in simulated
            # time): a stopped, starved or frozen master is one input of the supervisor
            self._cycle_in.stall_s = t - self._t - self.cfg.period if self.pacer.cycles > 1 else 0.0
            self._t = t
            seen = len(rec.faults)
            rec.mark_read()  # a stall found below is logged before what the cycle reads
            # 2. read: SYNC out, one TPDO1 per drive in
            fb = master.read(t, self.pacer.deadline())
            # 3. service: EMCY, heartbeats, boot-ups, collisions -> supervisor
            for event in master.service(t):
                self._drive_event(event)
            rec.poll(t)  # a dead trace or telemetry writer -> supervisor
            # 4. supervise: the cycle's fault conditions are inputs of the supervisor (step 6)
            cyc = self._cycle_in
            # a process stopped in read or service (SIGSTOP, starved) stalled this cycle too: what
            # they brought in (the drives' heartbeat EMCYs) is then its consequence
            cyc.stall_s = max(cyc.stall_s, self.pacer.elapsed())
            stall = supervisor.stalled(cyc.stall_s)
            self._expire_teleop(t)
            self._gather_measurements(t)
            # 5. procedure: decides on the previous cycle's estimate (one cycle old)
            est = estimator.estimate
            if not estimator.calibrated:
                self._calibrate()
            # the fault step 6 latches first, a stall included: the procedure names the same cause
            verdict = supervisor.next_fault(cyc.stall_s) if stall else supervisor.fault_verdict
            inputs = self._inputs  # one record, refreshed in place every cycle
            inputs.estimate = est
            inputs.verdict = verdict
            inputs.drives_ready = self._drives_ready()
            inputs.fault_active = verdict.fault
            inputs.fault_text = verdict.text
            inputs.imaging_fresh = est.imaging_age <= self.cfg.safety.imaging_max_age_s
            before = procedure.phase
            objective = procedure.tick(t, inputs)
            if self._jogging and procedure.jog_allowed() and self.operator.enable_held:
                objective = self._jog_objective[procedure.phase]  # every axis holds but the jog
            if self._want_enabled and not supervisor.latched and core.goal is DriveGoal.SWITCHED_ON:
                core.request_goal(DriveGoal.ENABLED)  # after an acknowledge's fault reset
            # 6. update: estimate, regulators, then the supervisor makes the commands safe
            if not stall:
                # stopped since step 4: still this cycle's stall (a stall seen already keeps the
                # figure the procedure was given)
                cyc.stall_s = max(cyc.stall_s, self.pacer.elapsed())
            cyc.drives_wanted_enabled = self._want_enabled
            cyc.motion_phase = before in MOTION_PHASES
            cyc.imaging_watched = before in MOTION_PHASES or before is Phase.PAUSED
            cyc.calibrated = estimator.calibrated
            core.update(t, fb, objective, self.operator, self._measurements, cyc)
            cmds = master.commands.axes
            for axis, src in core.commands.axes.items():
                dst = cmds[axis]
                dst.target = src.target
                dst.goal = src.goal  # the supervisor's: nothing after it changes a goal
                dst.escalate = src.escalate
            # 7. write: one RPDO1 per drive
            master.write()
            # 8. record: the commands are out (a quick stop included); only now is anything logged
            latched = supervisor.latched
            if latched and self._latch_t is None:
                self._latch_t = t
                v = supervisor.latched_verdict
                # a new latch under a stall is the stall (it comes first): the cause goes before
                # what this cycle read of its consequences (the drives' EMCYs), in the faults
                # list and in the event log alike; any other latch follows what led to it
                first = supervisor.stalled(cyc.stall_s)
                if not any(f.endswith(v.text) for f in rec.faults):
                    line = f"{t:.3f}s {fault_line(v.axis or 'all', v.text)}"
                    if first:
                        rec.faults.insert(seen, line)
                    else:
                        rec.faults.append(line)
                rec.event(
                    t, "fault", reason=v.reason.name, axis=v.axis, text=v.text, safety=True, before_read=first
                )
            elif not latched:
                self._latch_t = None
            if supervisor.escalation_log:
                for axis, text in supervisor.take_escalations():
                    rec.faults.append(f"{t:.3f}s {fault_line(axis, text)}")
                    rec.event(t, "escalated", axis=axis, text=text, safety=True)
            rec.end_cycle(
                t,
                procedure.phase,
                estimator.estimate,
                estimator.calibrated,
                fb,
                master.commands,
                # the true gap only goes into telemetry rows
                self._true_gap() if rec.telemetry is not None else math.nan,
                self._want_enabled,
            )

    def _true_gap(self) -> float:
        if self.plant is None:
            return math.nan
        tips = self.plant.tips()
        return tips["retro_mc"] - tips["ante_mc"]

    def _expire_teleop(self, t: float) -> None:
        if not self._teleop_until:
            return
        ctl = self.core.controller
        for axis, until in list(self._teleop_until.items()):
            if t > until or not self.procedure.jog_allowed() or self.core.supervisor.latched:
                ctl.teleop(axis, math.nan)
                del self._teleop_until[axis]
        if not self._teleop_until:
            self._jogging = any(math.isfinite(x) for x in ctl.jog_target)

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
            if m.t_capture >= self._calibrate_from and all(a in m.tips for a in LINEAR_AXES):
                insertion = {a: self.master.feedback.axes[a].position for a in LINEAR_AXES}
                self.core.estimator.calibrate(insertion, m.tips)
                self.recorder.event(self._t, "calibrated", tips={a: round(m.tips[a], 3) for a in LINEAR_AXES})
                return

    # --- faults and operator --------------------------------------------------------------------

    def _apply_scheduled_faults(self) -> None:
        while self._pending and self._pending[0].t <= self._t:
            spec = self._pending.pop(0)
            self.recorder.event(self._t, "inject", spec=str(spec), safety=True)
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
        if self._kernel is not None:
            self._kernel.advance(round(seconds / self.cfg.period))
        else:
            time.sleep(seconds)  # the injected fault itself: the cycle really stalls
        # the next cycle's time shows the stall, as for any other (see _cycle_body)

    def _drives_ready(self) -> bool:
        """Every drive OPERATION ENABLED with feedback no older than the supervisor allows."""
        limit = self.cfg.safety.feedback_max_age_cycles
        for a in self.master.feedback.axes.values():  # a loop, not a generator: every cycle
            if not (a.state is _OE and not stale(a.age_cycles, limit) and a.heartbeat_ok):
                return False
        return True

    def _drive_event(self, event: DriveEvent) -> None:
        text = event.text or event.kind.name
        self.recorder.faults.append(f"{event.t:.3f}s {event.axis or 'bus'}: {text}")
        # latched before it is logged: a failing disk must not keep the fault from stopping the drives
        self.core.supervisor.raise_fault(_EVENT_REASON[event.kind], text, event.axis)
        if event.kind is DriveEventKind.IMPLAUSIBLE and event.axis in LINEAR_AXES:
            self._position_doubted = event.axis
        self.recorder.event(
            event.t, "drive", event=event.kind.name, axis=event.axis, code=event.code, text=text, safety=True
        )

    def _recording_failed(self, text: str) -> None:
        """The run folder could not be written: stop the run (the drives first), keep cycling."""
        self.core.supervisor.raise_fault(Reason.RECORDING, text)

    # --- the end ----------------------------------------------------------------------------------

    def _end_reason(self) -> str:
        if self.core.supervisor.latched:
            return self.core.supervisor.latched_verdict.text
        return self.procedure.reason or self._stop_reason

    def _finish(self, outcome: str) -> RunResult:
        """The result as of now, logged and written to ``summary.json`` (the plot follows at close)."""
        with self._lock:  # the cycle thread may be running: the log is written by one thread at a time
            stats: LoopStats = self.pacer.stats()
            result = self.recorder.result(
                outcome=outcome,
                crossed=self.procedure.crossed,
                t=self._t,
                wall_seconds=time.perf_counter() - self._t_start_wall,
                cycles=stats.cycles,
                overruns=stats.overruns,
                reason=self._end_reason(),
                loop=stats.as_dict() if not self.simulated_time else {"cycles": stats.cycles},
                rewinds=self.procedure.rewinds,
            )
            self.recorder.event(self._t, "end", outcome=outcome, crossed=result.crossed, safety=True)
        self.recorder.write_summary(result, seed=self.seed, injected=[str(f) for f in self.faults_planned])
        self._summary_written = True
        return result


class _Exclusive:
    """Stops the cycle thread (if any) for the block and starts it again after, unless closing."""

    def __init__(self, thread: _CycleThread | None) -> None:
        self._thread = thread
        self._was_alive = False

    def __enter__(self) -> None:
        if self._thread is not None and self._thread.alive:
            self._was_alive = True
            self._thread.stop()

    def __exit__(self, *exc: object) -> None:
        if self._was_alive and self._thread is not None:
            self._thread.start()


HOLD_CODES.update((Runtime.close.__code__, Runtime._close.__code__))
