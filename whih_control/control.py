"""Trajectory generation and the gap and coupling regulators (pure, per cycle, no allocation).

Every axis keeps a setpoint ``x`` (insertion, axis units) and its per-cycle velocity ``v``; each
cycle it computes a desired velocity, limits it to ``min(objective speed, max_speed)`` and the
change of velocity to ``max_accel * dt``, and integrates. Tip targets (``s``) become insertion
targets through the estimator's inverse slack model, so reversals take up the slack at once.

- ``HOLD``: brake at ``max_accel`` to rest and keep that setpoint.
- ``MOVE_TO``: time-optimal profile ``v = min(speed, v_brake(|e|), |e|/dt)`` toward the target.
- ``GAP_FOLLOW`` (ante MC): tip reference ``p_retro_mc(commanded) - gap_target + I`` with
  ``I = ki * integral(gap_est - gap_target)`` (conditional integration, bounded: anti-windup),
  tracked with ``v = ff * v_retro_mc + kp * e``. Feeding forward the retro MC's commanded motion
  removes the lag of a pure feedback loop while the train moves; the integral removes what the
  estimator sees of drag (via imaging) that the feed-forward cannot know about.
- ``COUPLE_FOLLOW`` (ante wire): tip reference ``p_retro_wire(commanded) - coupling_target``,
  tracked the same way with the retro wire's motion fed forward.

The leaders (all other axes) are computed before the followers, so the followers use this cycle's
commanded leader positions. Invalid objectives (non-finite or negative values, a follow motion on
the wrong axis) are rejected, counted in :attr:`Controller.rejected`, and the axis holds.
"""

from __future__ import annotations

import math

from firmware_iface.cia402 import DriveState
from firmware_iface.types import Commands, DriveGoal, Feedback
from whih_control.config import Config
from whih_control.errors import SafetyError
from whih_control.estimate import Estimator
from whih_control.limits import approach_speed
from whih_control.types import (
    ALL_AXES,
    AXIS_DIRECTION,
    LINEAR_AXES,
    AxisMotion,
    AxisObjective,
    Estimate,
    Objective,
)

__all__ = ["Controller", "profile_velocity"]

_isfinite = math.isfinite
_isnan = math.isnan
_sqrt = math.sqrt
_ENABLED = DriveState.OPERATION_ENABLED
_HOLD = AxisMotion.HOLD
_MOVE_TO = AxisMotion.MOVE_TO
_GAP = AxisMotion.GAP_FOLLOW
_COUPLE = AxisMotion.COUPLE_FOLLOW
_TARGET_ABS_MAX = 10_000.0
_HOLD_OBJECTIVE = AxisObjective()


def profile_velocity(error: float, v_limit: float, accel: float, dt: float) -> float:
    """Desired velocity toward a point ``error`` away that can still stop there at ``accel``.

    Braking from ``v`` by ``accel * dt`` per cycle covers ``v^2 / (2 a) + v dt / 2``; solving
    that for ``v`` (rather than the continuous ``sqrt(2 a e)``) avoids overshoot in discrete time.
    """
    e = abs(error)
    h = 0.5 * accel * dt
    v = min(v_limit, _sqrt(h * h + 2.0 * accel * e) - h, e / dt)
    return v if error > 0.0 else -v


class Controller:
    """Per-axis trajectories and regulators; writes requested targets into a ``Commands``."""

    _rest_shortcut: bool = True
    """Skip the braking and limit arithmetic of an axis held at rest inside its travel (its
    result is then known). Off, every cycle computes it in full: the tests compare the two."""

    def __init__(self, cfg: Config, estimator: Estimator) -> None:
        names = [a for a in ALL_AXES if a in cfg.drives]
        # followers last: they use this cycle's commanded leader positions
        names.sort(key=lambda a: a in ("ante_wire", "ante_mc"))
        names.sort(key=lambda a: a == "ante_mc")
        self.axes: tuple[str, ...] = tuple(names)
        self.index: dict[str, int] = {a: i for i, a in enumerate(self.axes)}
        self._lin: tuple[int, ...] = tuple(LINEAR_AXES.index(a) if a in LINEAR_AXES else -1 for a in names)
        drives = [cfg.drives[a] for a in names]
        self._vmax: tuple[float, ...] = tuple(d.max_speed for d in drives)
        self._amax: tuple[float, ...] = tuple(d.max_accel for d in drives)
        self._tmin: tuple[float, ...] = tuple(d.travel_min for d in drives)
        self._tmax: tuple[float, ...] = tuple(d.travel_max for d in drives)
        self._dir: tuple[float, ...] = tuple(AXIS_DIRECTION[a] for a in names)
        c = cfg.control
        self._gap_kp = c.gap_kp
        self._gap_ki = c.gap_ki
        self._gap_ff = c.gap_feedforward
        self._gap_imax = c.gap_integral_max
        self._cpl_kp = c.coupling_kp
        self._cpl_ff = c.coupling_feedforward
        self._deadzone = c.slack_deadzone
        self._jog_frac = c.jog_speed_fraction
        self._gap_target = cfg.procedure.gap_target
        self._cpl_target = cfg.procedure.coupling_target
        self._dt_max = cfg.safety.max_dt_cycles * cfg.period
        self._est = estimator
        self._i_amc = self.index["ante_mc"]
        self._i_rmc = self.index["retro_mc"]
        self._i_aw = self.index["ante_wire"]
        self._i_rw = self.index["retro_wire"]
        n = len(names)
        self.setpoint: list[float] = [math.nan] * n
        """Present setpoint per axis (insertion, axis units); NaN before the first feedback."""
        self.velocity: list[float] = [0.0] * n
        """Velocity of the last setpoint change per axis (axis units/s)."""
        self._prev: list[float] = [math.nan] * n
        self.jog_target: list[float] = [math.nan] * n
        """Pending jog target per axis (NaN = none)."""
        self.teleop_velocity: list[float] = [math.nan] * n
        """Teleop velocity per axis (NaN = none); the runtime clears it when not renewed."""
        self.integral: float = 0.0
        """Gap regulator's integral correction of the ante MC tip reference (mm)."""
        self.goal: DriveGoal = DriveGoal.DISABLED
        """Drive goal requested for every axis while no fault is latched."""
        self.rejected: int = 0
        """Count of rejected objectives and time steps."""

    def reset(self, feedback: Feedback) -> None:
        """Setpoints to the actual positions, at rest; jogs and integral cleared (after a fault)."""
        axes = feedback.axes
        for i, a in enumerate(self.axes):
            pos = axes[a].position
            self.setpoint[i] = pos if _isfinite(pos) else math.nan
            self.velocity[i] = 0.0
            self.jog_target[i] = math.nan
            self.teleop_velocity[i] = math.nan
        self.integral = 0.0

    def teleop(self, axis: str, velocity: float) -> None:
        """Move ``axis`` at ``velocity`` (axis units/s, bounded by the jog speed) until set to NaN."""
        i = self.index.get(axis)
        if i is None:
            raise ValueError(f"teleop: axis (={axis!r}) must be one of {', '.join(self.axes)}")
        self.teleop_velocity[i] = velocity

    def jog(self, axis: str, delta: float) -> None:
        """Queue a relative move of ``delta`` axis units (added to a pending jog)."""
        i = self.index.get(axis)
        if i is None:
            raise ValueError(f"jog: axis (={axis!r}) must be one of {', '.join(self.axes)}")
        span = self._tmax[i] - self._tmin[i]
        if isinstance(delta, bool) or not isinstance(delta, int | float) or not _isfinite(delta):
            raise ValueError(f"jog: delta for {axis} (={delta!r}) must be a finite number")
        if abs(delta) > span:
            raise ValueError(f"jog: delta for {axis} (={delta:g}) must be in [{-span:g}...{span:g}]")
        base = self.jog_target[i]
        if _isnan(base):
            base = self.setpoint[i]
        if _isnan(base):
            raise SafetyError(f"jog: {axis} has no position feedback yet; nothing moves")
        target = base + delta
        if not self._tmin[i] <= target <= self._tmax[i]:
            lo, hi = self._tmin[i], self._tmax[i]
            raise SafetyError(f"jog: {axis} target (={target:g}) must be within travel [{lo:g}...{hi:g}]")
        self.jog_target[i] = target

    def compute(self, dt: float, feedback: Feedback, objective: Objective, commands: Commands) -> None:
        """Write this cycle's requested insertion targets and goals into ``commands``."""
        fb_axes = feedback.axes
        cmd_axes = commands.axes
        sp = self.setpoint
        vel = self.velocity
        prev = self._prev
        goal = self.goal
        est = self._est
        estimate: Estimate = est.estimate
        est_ok = estimate.valid
        dt_ok = _isfinite(dt) and 0.0 < dt <= self._dt_max
        if not dt_ok:
            self.rejected += 1
        lin = self._lin
        amax_t, vmax_t, tmin_t, tmax_t = self._amax, self._vmax, self._tmin, self._tmax
        jog = self.jog_target
        i_amc, i_aw = self._i_amc, self._i_aw
        deadzone = self._deadzone
        for i, name in enumerate(self.axes):
            af = fb_axes[name]
            cmd = cmd_axes[name]
            cmd.goal = goal
            x = sp[i]
            prev[i] = x
            if af.state != _ENABLED or x != x:  # noqa: PLR0124 (NaN test without a call)
                # a drive that is not enabled: its target tracks its actual position
                pos = af.position
                if _isfinite(pos):
                    sp[i] = pos
                    cmd.target = pos
                vel[i] = 0.0
                if i == i_amc:
                    self.integral = 0.0
                continue
            if not dt_ok:
                vel[i] = 0.0
                cmd.target = x
                continue
            v0 = vel[i]
            amax = amax_t[i]
            li = lin[i]
            jt = jog[i]
            tv = self.teleop_velocity[i]
            if tv == tv:  # noqa: PLR0124
                vj = vmax_t[i] * self._jog_frac
                v_des = vj if tv > vj else -vj if tv < -vj else tv
                # brake in time for the travel limits rather than hit them
                if v_des > 0.0:
                    v_des = min(v_des, profile_velocity(tmax_t[i] - x, vj, amax, dt))
                elif v_des < 0.0:
                    v_des = max(v_des, profile_velocity(tmin_t[i] - x, vj, amax, dt))
            elif jt == jt:  # noqa: PLR0124
                v_des = profile_velocity(jt - x, vmax_t[i] * self._jog_frac, amax, dt)
                if abs(jt - x) < 1e-9 and abs(v0) <= amax * dt:
                    jog[i] = math.nan
            else:
                ax = objective.axes.get(name, _HOLD_OBJECTIVE)
                motion = ax.motion
                if motion == _HOLD:
                    if v0 == 0.0 and tmin_t[i] <= x <= tmax_t[i] and self._rest_shortcut:
                        # held at rest inside its travel (most cycles of most axes): what the
                        # braking and limits below give then, to the bit (v = +0.0, x + 0.0)
                        if i == i_amc:
                            self.integral = 0.0
                        x_new = x + 0.0
                        sp[i] = x_new
                        vel[i] = 0.0
                        cmd.target = x_new
                        continue
                    v_des = 0.0
                else:
                    speed = ax.speed
                    if not 0.0 <= speed < math.inf:
                        self.rejected += 1
                        v_des = 0.0
                    elif motion == _MOVE_TO:
                        target = ax.target
                        if not -_TARGET_ABS_MAX <= target <= _TARGET_ABS_MAX:
                            self.rejected += 1
                            v_des = 0.0
                        elif li >= 0 and not est_ok:
                            v_des = 0.0
                        else:
                            xt = target if li < 0 else est.insertion_for(li, target, x, deadzone)
                            # brake in time for the travel limits rather than hit them
                            lo, hi = tmin_t[i], tmax_t[i]
                            xt = lo if xt < lo else hi if xt > hi else xt
                            v_des = profile_velocity(xt - x, min(speed, vmax_t[i]), amax, dt)
                    elif motion == _GAP and i == i_amc:
                        v_des = self._gap_velocity(x, dt, speed, estimate.gap) if est_ok else 0.0
                    elif motion == _COUPLE and i == i_aw:
                        v_des = self._couple_velocity(x, speed) if est_ok else 0.0
                    else:
                        self.rejected += 1
                        v_des = 0.0
                if i == i_amc and motion != _GAP:
                    self.integral = 0.0
            # brake for the travel limits exactly as the supervisor will (limits.approach_speed)
            room = tmax_t[i] - x
            if v_des > 0.0 and v_des * dt + v_des * v_des / (2.0 * amax) > room:
                cap = approach_speed(room, dt, amax)
                v_des = cap if v_des > cap else v_des
            room = x - tmin_t[i]
            if v_des < 0.0 and -v_des * dt + v_des * v_des / (2.0 * amax) > room:
                cap = -approach_speed(room, dt, amax)
                v_des = cap if v_des < cap else v_des
            # acceleration limit (braking included: the controller itself never stops abruptly)
            dv = amax * dt
            v = v0 + dv if v_des > v0 + dv else v0 - dv if v_des < v0 - dv else v_des
            x_new = x + v * dt
            # followers can still run into a travel limit: stop there rather than pass it
            hi = tmax_t[i]
            lo = tmin_t[i]
            if x_new > hi:
                x_new = x if x > hi else hi
                v = (x_new - x) / dt
            elif x_new < lo:
                x_new = x if x < lo else lo
                v = (x_new - x) / dt
            sp[i] = x_new
            vel[i] = v
            cmd.target = x_new

    def _gap_velocity(self, x: float, dt: float, speed: float, gap: float) -> float:
        est = self._est
        ir = self._i_rmc
        vmax = min(speed, self._vmax[self._i_amc])
        ref = est.tip_of(3, self.setpoint[ir]) - self._gap_target + self.integral
        xt = est.insertion_for(1, ref, x, self._deadzone)
        # retro MC tip velocity (-1 * insertion velocity); ante MC insertion = +tip
        vff = -self._gap_ff * self.velocity[ir]
        v_des = vff + self._gap_kp * (xt - x)
        saturated = abs(v_des) >= vmax
        if saturated:
            v_des = vmax if v_des > 0.0 else -vmax
        if not saturated and _isfinite(gap):
            integral = self.integral + self._gap_ki * (gap - self._gap_target) * dt
            imax = self._gap_imax
            self.integral = imax if integral > imax else -imax if integral < -imax else integral
        return v_des

    def _couple_velocity(self, x: float, speed: float) -> float:
        est = self._est
        irw = self._i_rw
        vmax = min(speed, self._vmax[self._i_aw])
        ref = est.tip_of(2, self.setpoint[irw]) - self._cpl_target
        xt = est.insertion_for(0, ref, x, self._deadzone)
        vff = -self._cpl_ff * self.velocity[irw]
        v_des = vff + self._cpl_kp * (xt - x)
        return vmax if v_des > vmax else -vmax if v_des < -vmax else v_des

    def accept(self, dt: float, commands: Commands) -> None:
        """Take the supervisor's final targets as the setpoints (held axes come to rest)."""
        cmd_axes = commands.axes
        sp = self.setpoint
        vel = self.velocity
        prev = self._prev
        dt_ok = _isfinite(dt) and dt > 0.0
        for i, name in enumerate(self.axes):
            target = cmd_axes[name].target
            if target != sp[i]:
                if not _isfinite(target):
                    continue
                p = prev[i]
                vel[i] = (target - p) / dt if dt_ok and not _isnan(p) else 0.0
                sp[i] = target
