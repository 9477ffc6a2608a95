"""A small plant double for closed-loop tests of the control core, in simulated time.

Drives in CSP follow the commanded target with a one-cycle delay (quick stop: they decelerate at
``quick_stop_decel``). Insertion becomes tip through a true slack (play) model and a true offset;
a moving wire drags its microcatheter along (``drag`` mm of MC tip per mm of wire tip travel, a
disturbance the encoders never see). Imaging delivers frames at ``frame_rate`` with ``latency``,
Gaussian ``noise``, frame ``dropout`` and partially seen frames. Deterministic for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from firmware_iface.cia402 import SW_TARGET_REACHED, DriveState
from firmware_iface.types import Commands, DriveGoal, Feedback
from whih_control.config import Config
from whih_control.estimate import play
from whih_control.types import AXIS_DIRECTION, LINEAR_AXES, TipMeasurement

_STATE_FOR_GOAL = {
    DriveGoal.DISABLED: DriveState.SWITCH_ON_DISABLED,
    DriveGoal.SWITCHED_ON: DriveState.SWITCHED_ON,
    DriveGoal.ENABLED: DriveState.OPERATION_ENABLED,
    DriveGoal.QUICK_STOP: DriveState.QUICK_STOP_ACTIVE,
    DriveGoal.FAULT_RESET: DriveState.SWITCH_ON_DISABLED,
}

HAND_IN_HAND_TIPS: Mapping[str, float] = {
    "ante_mc": 0.0,
    "ante_wire": 1.0,
    "retro_wire": 1.5,
    "retro_mc": 4.5,
}
"""A hand-in-hand starting configuration: gap 4.5 mm, coupling 0.5 mm."""


class PlantDouble:
    """Insertion -> tips with slack and MC drag; CSP drives; delayed noisy imaging."""

    def __init__(
        self,
        cfg: Config,
        *,
        seed: int = 0,
        tips: Mapping[str, float] = HAND_IN_HAND_TIPS,
        slack: float | None = None,
        drag: Mapping[str, float] | None = None,
        frame_rate: float = 7.5,
        latency: float = 0.1,
        noise: float = 0.2,
        dropout: float = 0.05,
        partial: float = 0.05,
    ) -> None:
        self.cfg = cfg
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.axes = tuple(cfg.drives)
        self.half_slack = (cfg.estimate.slack if slack is None else slack) / 2.0
        self.drag = dict(drag if drag is not None else {"ante_mc": 0.08, "retro_mc": 0.04})
        self.insertion = dict.fromkeys(self.axes, 0.0)
        self.velocity = dict.fromkeys(self.axes, 0.0)
        self.x_eff = dict.fromkeys(LINEAR_AXES, 0.0)
        self.offset = {a: tips[a] for a in LINEAR_AXES}
        self.drift = dict.fromkeys(LINEAR_AXES, 0.0)
        self.feedback = Feedback.for_axes(self.axes)
        self.frame_period = 1.0 / frame_rate
        self.latency = latency
        self.noise = noise
        self.dropout = dropout
        self.partial = partial
        self._next_frame = 0.0
        self._in_flight: list[TipMeasurement] = []
        self._pending_target = dict.fromkeys(self.axes, 0.0)
        self._goal = dict.fromkeys(self.axes, DriveGoal.DISABLED)
        self.force = dict.fromkeys(self.axes, 0.0)
        for a in self.axes:
            af = self.feedback.axes[a]
            af.age_cycles = 0
            af.heartbeat_ok = True
            af.state = DriveState.SWITCH_ON_DISABLED

    def tips(self) -> dict[str, float]:
        """True tip positions (s, mm)."""
        return {a: self.offset[a] + AXIS_DIRECTION[a] * self.x_eff[a] + self.drift[a] for a in LINEAR_AXES}

    def step(self, t: float, dt: float, commands: Commands | None) -> list[TipMeasurement]:
        """Apply last cycle's commands, advance by ``dt`` to ``t``; return frames arriving now."""
        wire_tip_v = {}
        for a in self.axes:
            goal = self._goal[a]
            x = self.insertion[a]
            if goal == DriveGoal.ENABLED:
                new = self._pending_target[a]
            elif goal == DriveGoal.QUICK_STOP:
                v = self.velocity[a]
                dec = self.cfg.drives[a].quick_stop_decel * dt
                v = 0.0 if abs(v) <= dec else v - math.copysign(dec, v)
                new = x + v * dt
            else:
                new = x
            self.velocity[a] = (new - x) / dt
            self.insertion[a] = new
            if a in self.x_eff:
                old = self.x_eff[a]
                self.x_eff[a] = play(old, new, self.half_slack)
                wire_tip_v[a] = AXIS_DIRECTION[a] * (self.x_eff[a] - old) / dt
        # a moving wire drags its MC along (both move toward +s during hand-in-hand)
        self.drift["ante_mc"] += self.drag.get("ante_mc", 0.0) * wire_tip_v["ante_wire"] * dt
        self.drift["retro_mc"] += self.drag.get("retro_mc", 0.0) * wire_tip_v["retro_wire"] * dt
        if commands is not None:
            for a in self.axes:
                c = commands.axes[a]
                self._pending_target[a] = c.target
                self._goal[a] = c.goal
        fb = self.feedback
        fb.t = t
        fb.cycle += 1
        for a in self.axes:
            af = fb.axes[a]
            af.position = self.insertion[a]
            af.force = self.force[a]
            af.state = _STATE_FOR_GOAL[self._goal[a]]
            # CiA 402: in QUICK STOP ACTIVE, target reached (bit 10) means the ramp has ended
            stopped = af.state is DriveState.QUICK_STOP_ACTIVE and self.velocity[a] == 0.0
            af.statusword = SW_TARGET_REACHED if stopped else 0
        return self._imaging(t)

    def _imaging(self, t: float) -> list[TipMeasurement]:
        while self._next_frame <= t:
            # frames are taken on the cycle they fall due, so the true tips are those of now
            tc = t
            self._next_frame += self.frame_period
            if self.rng.random() < self.dropout:
                continue
            true = self.tips()
            seen = {
                a: float(p + self.rng.normal(0.0, self.noise))
                for a, p in true.items()
                if self.rng.random() >= self.partial
            }
            self._in_flight.append(TipMeasurement(tc, tc + self.latency, seen))
        arrived = [m for m in self._in_flight if m.t_arrival <= t]
        self._in_flight = [m for m in self._in_flight if m.t_arrival > t]
        return arrived
