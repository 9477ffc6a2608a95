"""The public entry points: :class:`Robot` (any bus, real or simulated) and :func:`simulate`.

::

    with wc.Robot(cfg) as robot:          # bus from cfg; simulated drives only if cfg.sim.enabled
        robot.enable()
        robot.jog("ante_wire", 1.0)
        result = robot.run_procedure()
    result = wc.simulate(cfg, seed=0, inject=["heartbeat-loss:retro_mc@2.0"], out="runs/x")

Leaving the ``with`` block always quick-stops then disables every drive and shuts the bus down,
also on exceptions and Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import can

from whih_control.config import Config
from whih_control.runtime import _HOLD_CODES, Progress, RunResult, Runtime, check_max_time
from whih_control.types import TipMeasurement

__all__ = ["Progress", "Robot", "RunResult", "simulate"]


class Robot:
    """A two-sided WHIH robot on a CAN bus.

    ``bus=None`` opens the bus from ``cfg.bus``; simulated drives (and the simulated plant and
    imaging) are started only when ``cfg.sim.enabled``. With a simulated-time bus (interface
    ``whih-sim``) every cycle runs in simulated time; otherwise cycles follow the wall clock.
    """

    def __init__(
        self,
        cfg: Config,
        bus: can.BusABC | None = None,
        *,
        seed: int | None = None,
        out: str | os.PathLike[str] | None = None,
        inject: Sequence[str] = (),
        progress: Callable[[Progress], None] | None = None,
        auto_confirm: bool = False,
    ) -> None:
        """``auto_confirm``: the procedure confirms its own gates and resumes its automatic
        pauses (simulation); otherwise :meth:`run_procedure` is the go and crossing follows
        ``procedure.confirm_crossing``."""
        self._runtime = Runtime(
            cfg,
            bus=bus,
            seed=cfg.sim.seed if seed is None else seed,
            out=None if out is None else Path(out),
            inject=inject,
            progress=progress,
            auto_confirm=auto_confirm,
        )

    @property
    def runtime(self) -> Runtime:
        """The cycle runner underneath (master, control core, procedure, recording)."""
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

    @property
    def time(self) -> float:
        """Time of the latest cycle, seconds since the first (the clock of tip measurements)."""
        return self._runtime.time

    def add_measurement(self, m: TipMeasurement) -> None:
        """Feed an external tip measurement (``imaging.source = "external"``), from any thread;
        ``t_capture``/``t_arrival`` in :attr:`time`'s clock."""
        self._runtime.add_measurement(m)

    def enable(self) -> None:
        """Preflight and CiA 402 walk of every drive to OPERATION ENABLED (CSP)."""
        self._runtime.enable()

    def jog(self, axis: str, delta: float) -> None:
        """Relative move of ``axis`` by ``delta`` (mm or deg), through every limit."""
        self._runtime.jog(axis, delta)

    def run_procedure(
        self, *, max_time: float | None = None, confirm: Callable[[str], bool] | None = None
    ) -> RunResult:
        """Run WHIH until crossed-and-complete, aborted or fault; return the result.

        Calling it confirms the start; ``confirm("crossed")`` (polled every cycle while the
        procedure waits at crossed) confirms crossing when ``procedure.confirm_crossing`` is set.
        """
        return self._runtime.run_procedure(max_time=max_time, confirm=confirm)


_HOLD_CODES.add(Robot.__exit__.__code__)  # a Ctrl-C as the block ends still gets the safe stop


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

    A run folder is written only when ``out`` is given.
    """
    check_max_time(max_time)
    sim_cfg = cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="whih-sim"),
        sim=dataclasses.replace(cfg.sim, enabled=True, seed=seed),
    )
    with Robot(sim_cfg, seed=seed, out=out, inject=inject, progress=progress, auto_confirm=True) as robot:
        robot.enable()
        return robot.run_procedure(max_time=max_time)
