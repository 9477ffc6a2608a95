"""The control core the runtime calls every cycle: estimate -> control -> safety -> commands.

Pure and deterministic: no I/O, no threads, no clock reads (time is passed in); one preallocated
:class:`~firmware_iface.types.Commands` mutated in place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from firmware_iface.types import Commands, DriveGoal, Feedback
from whih_control.config import Config
from whih_control.control import Controller
from whih_control.errors import SafetyError
from whih_control.estimate import Estimator
from whih_control.safety import SafetySupervisor
from whih_control.types import CycleInputs, Objective, OperatorInput, TipMeasurement, Verdict

__all__ = ["ControlCore"]


class ControlCore:
    """``update(t, feedback, objective, operator) -> Verdict``; the result is in ``commands``.

    Drive goals: every axis gets :attr:`goal` (set it with :meth:`request_goal`; DISABLED at
    start) unless the supervisor overrides it (QUICK_STOP while a fault is latched, FAULT_RESET
    for one cycle after an accepted acknowledge, after which :attr:`goal` is SWITCHED_ON until the
    runtime or procedure requests ENABLED again).
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.estimator = Estimator(cfg)
        self.supervisor = SafetySupervisor(cfg)
        self.controller = Controller(cfg, self.estimator)
        self.commands = Commands.for_axes(cfg.drives)
        self._period = cfg.period
        self._t_prev = math.nan
        self._generation = self.supervisor.generation

    @property
    def goal(self) -> DriveGoal:
        """The drive goal requested for every axis while no fault is latched."""
        return self.controller.goal

    def request_goal(self, goal: DriveGoal) -> None:
        """Ask for a drive goal on every axis: DISABLED, SWITCHED_ON or ENABLED (to move).

        QUICK_STOP and FAULT_RESET are the supervisor's to send.
        """
        if goal not in (DriveGoal.DISABLED, DriveGoal.SWITCHED_ON, DriveGoal.ENABLED):
            raise ValueError(f"request_goal: goal (={goal!r}) must be DISABLED, SWITCHED_ON or ENABLED")
        self.controller.goal = goal

    def acknowledge(self, feedback: Feedback, *, imaging_watched: bool = False) -> bool:
        """Acknowledge a latched fault (see ``SafetySupervisor.acknowledge``); False, with the
        reason in ``supervisor.ack_blocker``, while a cause remains."""
        return self.supervisor.acknowledge(feedback, imaging_watched=imaging_watched)

    def update(
        self,
        t: float,
        feedback: Feedback,
        objective: Objective,
        operator: OperatorInput,
        measurements: Sequence[TipMeasurement] = (),
        inputs: CycleInputs | None = None,
    ) -> Verdict:
        """One cycle: estimate, trajectories/regulators, supervisor; ``commands`` holds the result.

        ``inputs`` carries the cycle's other fault conditions to the supervisor. Nothing after
        the supervisor changes a goal or a target: the controller only takes them back.
        """
        t_prev = self._t_prev
        dt = self._period if math.isnan(t_prev) else t - t_prev
        if math.isfinite(t):
            self._t_prev = t
        sup = self.supervisor
        self.estimator.update(t, feedback, measurements)
        ctl = self.controller
        if sup.generation != self._generation:
            # an acknowledge was accepted: nothing may move, start again from where we are
            self._generation = sup.generation
            ctl.reset(feedback)
            ctl.goal = DriveGoal.SWITCHED_ON
        ctl.compute(dt, feedback, objective, self.commands)
        verdict = sup.enforce(
            t, dt, self.commands, feedback, self.estimator.estimate, objective, operator, inputs
        )
        ctl.accept(dt, self.commands)
        if sup.latched:
            jog = ctl.jog_target
            for i in range(len(jog)):
                jog[i] = math.nan
        return verdict

    def jog(self, axis: str, delta: float) -> None:
        """Request a relative move of ``delta`` axis units, applied through every limit.

        Raises ValueError for an unknown axis or a non-finite/too large delta, SafetyError while a
        fault is latched or when the target would leave the travel range.
        """
        if self.supervisor.latched:
            why = self.supervisor.latched_verdict.text
            raise SafetyError(f"jog: {axis} refused: fault latched ({why}); acknowledge first")
        self.controller.jog(axis, delta)
