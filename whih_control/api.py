"""The public entry points: :class:`Robot` (any bus, real or simulated time) and :func:`simulate`.

::

    with wc.Robot(cfg) as robot:          # bus from cfg; simulated drives only if cfg.sim.enabled
        robot.enable()
        robot.jog("ante_wire", 1.0)
        result = robot.run_procedure()
    result = wc.simulate(cfg, seed=0, inject=["heartbeat-loss:retro_mc@2.0"], out="runs/x")

Every operator verb is a command the cycle takes at the start of its next cycle; the call returns
the cycle's answer or raises :class:`~whih_control.errors.ProcedureError` /
:class:`~whih_control.errors.SafetyError` naming the phase or cause (every verb and its answer
goes to ``events.jsonl``). From the first :meth:`Robot.enable` to the end of the ``with`` block the
drives are never unattended: in real time a thread of the robot's own keeps the cycle going
between calls; in simulated time (``clock="simulated"``) nothing happens between calls and
:meth:`Robot.step` / :meth:`Robot.wait` advance time.

Leaving the ``with`` block always quick-stops then disables every drive and shuts the bus down,
also on exceptions and Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import can

from whih_control.config import Config
from whih_control.cycle_process import ProcessRuntime
from whih_control.errors import WhihError
from whih_control.interrupts import HOLD_CODES
from whih_control.runtime import Clock, Progress, RunResult, Runtime, check_max_time
from whih_control.status import Status
from whih_control.types import TipMeasurement

__all__ = ["Progress", "Robot", "RunResult", "simulate"]


class Robot:
    """A two-sided WHIH robot on a CAN bus.

    ``clock="simulated"`` runs the simulated drives on the simulated-time bus (needs
    ``sim.enabled``), deterministic for a seed; ``"real"`` runs on the wall clock over the
    configured bus (or ``bus``). By default the configured interface decides: ``whih-sim`` is
    simulated time. Simulated drives, plant and imaging are started only when ``cfg.sim.enabled``.

    ``cycle="process"`` (real time only, opt-in): the cycle, the bus and the simulated drives run
    in a child process of their own and this object is its proxy (see
    :mod:`whih_control.cycle_process`): a busy application then competes with the cycle for a
    CPU, not for the interpreter lock. Choose it for an application that keeps the interpreter
    busy with pure Python (``benchmarks/bench_attended.py`` on a quiet machine: SYNC period
    p99 0.07-0.12 ms against 1.3-1.5 ms on the thread); each ``status()`` then costs a pipe
    round trip.
    """

    def __init__(
        self,
        cfg: Config,
        bus: can.BusABC | None = None,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        out: str | os.PathLike[str] | None = None,
        inject: Sequence[str] = (),
        progress: Callable[[Progress], None] | None = None,
        auto_confirm: bool = False,
        cycle: Literal["thread", "process"] = "thread",
    ) -> None:
        """``auto_confirm``: the procedure confirms its own gates and resumes its automatic
        pauses (simulation); otherwise :meth:`start_procedure` is the go and crossing follows
        ``procedure.confirm_crossing``. ``progress`` is called about ten times a second of the
        robot's clock while a call waits (never from inside the cycle)."""
        if cycle not in ("thread", "process"):
            raise ValueError(f"cycle (={cycle!r}) must be 'thread' or 'process'")
        self._runtime: Runtime | ProcessRuntime
        if cycle == "process":
            if clock == "simulated":
                raise ValueError("cycle (='process') needs clock='real' (simulated time has no cycle thread)")
            self._runtime = ProcessRuntime(
                cfg,
                bus=bus,
                seed=cfg.sim.seed if seed is None else seed,
                out=None if out is None else Path(out),
                inject=inject,
                progress=progress,
                auto_confirm=auto_confirm,
            )
            return
        self._runtime = Runtime(
            cfg,
            clock=clock,
            bus=bus,
            seed=cfg.sim.seed if seed is None else seed,
            out=None if out is None else Path(out),
            inject=inject,
            progress=progress,
            auto_confirm=auto_confirm,
        )

    @property
    def runtime(self) -> Runtime:
        """The cycle runner underneath (master, control core, procedure, recording); not
        reachable with ``cycle="process"`` (it lives in the cycle's process)."""
        if not isinstance(self._runtime, Runtime):
            raise WhihError("runtime: with cycle='process' the runtime lives in the cycle's process")
        return self._runtime

    def __enter__(self) -> Robot:
        self._runtime.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._runtime.close()

    def open(self) -> None:
        """Open the bus and start what the config simulates (``with`` does it for you)."""
        self._runtime.open()

    def close(self) -> None:
        """Quick-stop, disable every drive, shut the bus down (``with`` does it for you)."""
        self._runtime.close()

    @property
    def time(self) -> float:
        """Time of the latest cycle, seconds since the first (the clock of tip measurements)."""
        return self._runtime.time

    def add_measurement(self, m: TipMeasurement) -> None:
        """Feed an external tip measurement (``imaging.source = "external"``), from any thread;
        ``t_capture``/``t_arrival`` in :attr:`time`'s clock."""
        self._runtime.add_measurement(m)

    # --- operator verbs ------------------------------------------------------------------------------

    def enable(self, *, timeout: float | None = None) -> None:
        """Preflight (SDO set-up, read-back) and CiA 402 walk of every drive to OPERATION ENABLED
        (CSP); returns once calibrated, in ready. From here the cycle never stops until close.

        Waits at most ``bus.boot_timeout_s`` + 5 s for the drives and calibration and, when
        given, ``timeout`` seconds of the robot's clock from the call (set-up included):
        :class:`~whih_control.errors.CommandTimeoutError` names the bound that ended it.
        """
        self._runtime.enable(timeout=timeout)

    def start_procedure(self) -> None:
        """The go: ready -> approach; returns at once (see :meth:`wait`)."""
        self._runtime.start_procedure()

    def run_procedure(
        self,
        *,
        max_time: float | None = None,
        confirm: Callable[[str], bool] | None = None,
        hold_on_fault: bool = False,
    ) -> RunResult:
        """:meth:`start_procedure` (in ready), then wait until complete, aborted or fault, or
        ``max_time`` seconds; return the result (also written to ``summary.json``).

        ``confirm("crossed")`` is polled while the procedure waits at crossed (it must not block)
        when ``procedure.confirm_crossing`` is set; True confirms. ``hold_on_fault`` (real time):
        a fault does not end the run; another thread acknowledges and resumes, or aborts.
        """
        return self._runtime.run_procedure(max_time=max_time, confirm=confirm, hold_on_fault=hold_on_fault)

    def enable_and_run(
        self,
        *,
        max_time: float | None = None,
        confirm: Callable[[str], bool] | None = None,
        hold_on_fault: bool = False,
    ) -> RunResult:
        """:meth:`enable`, then :meth:`run_procedure` with the time left: ``max_time`` bounds the
        whole run, enabling included (what ``whih run --max-time`` and :func:`simulate` do). A
        bound that ends during enable gives outcome ``"timeout"``, its ``reason`` saying so."""
        return self._runtime.enable_and_run(max_time=max_time, confirm=confirm, hold_on_fault=hold_on_fault)

    def pause(self) -> None:
        """Hold every axis (each ramps down at its max_accel): motion phase -> paused."""
        self._runtime.pause()

    def resume(self) -> None:
        """paused -> where the procedure stopped (enable held, no fault, drives ready)."""
        self._runtime.resume()

    def abort(self) -> None:
        """End the procedure: aborted, every axis holds."""
        self._runtime.abort()

    def acknowledge(self) -> None:
        """After a latched fault: refused (SafetyError) while any cause remains or any drive is
        still stopping; never moves anything; lands in paused (ready/idle before motion)."""
        self._runtime.acknowledge()

    def confirm_crossing(self) -> None:
        """crossed -> withdraw."""
        self._runtime.confirm_crossing()

    def jog(self, axis: str, delta: float) -> None:
        """Relative move of ``axis`` by ``delta`` (mm or deg), through every limit, in ready or
        paused. Returns once the axis has arrived: its position actual, as the master read it,
        within ``drives.<axis>.position_window`` of the target. Raises SafetyError, the jog
        cancelled, if a fault latches, a limit holds it short, or the axis does not arrive in
        time (a blocked axis, a stuck encoder), naming the axis, target, actual and window."""
        self._runtime.jog(axis, delta)

    def teleop(self, axis: str, velocity: float) -> None:
        """Velocity jog of ``axis`` (mm/s or deg/s) in ready or paused, through every limit; it
        ramps down to rest unless renewed within ``operator.teleop_timeout_s``."""
        self._runtime.teleop(axis, velocity)

    def set_inputs(self, *, enable_held: bool | None = None, estop: bool | None = None) -> None:
        """The dead-man pedal and e-stop as the application reads them (None: unchanged). In
        simulation the robot holds the pedal itself until this is called."""
        self._runtime.set_inputs(enable_held=enable_held, estop=estop)

    def status(self) -> Status:
        """A snapshot of phase, faults, gap, tips, forces and every drive (any thread)."""
        return self._runtime.status()

    def wait(
        self, until: str | Callable[[Status], bool] | None = None, timeout: float | None = None
    ) -> Status:
        """Until phase ``until`` (or one of its sub-phases), a predicate on :class:`Status`, or the
        end of the procedure; ``timeout`` in the robot's clock (CommandTimeoutError)."""
        return self._runtime.wait(until, timeout)

    def step(self, n: int = 1) -> None:
        """Simulated time: run ``n`` cycles."""
        self._runtime.step(n)


HOLD_CODES.add(Robot.__exit__.__code__)  # a Ctrl-C as the block ends still gets the safe stop
HOLD_CODES.add(Robot.close.__code__)


def simulate(
    cfg: Config,
    *,
    seed: int = 0,
    inject: Sequence[str] = (),
    out: str | os.PathLike[str] | None = None,
    max_time: float | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Run the whole procedure on simulated drives in simulated time (deterministic for a seed).

    ``max_time`` (simulated seconds) bounds the whole run, enabling included (outcome
    ``"timeout"``). A run folder is written only when ``out`` is given.
    """
    check_max_time(max_time)
    sim_cfg = cfg.replace(sim=dataclasses.replace(cfg.sim, enabled=True, seed=seed))
    with Robot(
        sim_cfg, clock="simulated", seed=seed, out=out, inject=inject, progress=progress, auto_confirm=True
    ) as robot:
        return robot.enable_and_run(max_time=max_time)
