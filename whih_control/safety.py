"""The safety supervisor: every command passes through :meth:`SafetySupervisor.enforce`.

Like ros2_control's ``joint_limits`` ``enforce(current, desired, dt)``, it takes the requested
insertion targets and rewrites them in place into safe ones, given feedback, estimate, objective
and operator state, and returns a :class:`~whih_control.types.Verdict` (built only when something
happened). Invariants (docs/DESIGN.md section 4), in the order they are applied each cycle:

- **Faults** (latched only here; every axis ``QUICK_STOP`` in the same cycle, targets track the
  actual positions), every one an input of the cycle: the master stalled
  (``CycleInputs.stall_s``, :func:`~whih_control.limits.stalled`; first, since it explains the
  rest); a fault reported through :meth:`SafetySupervisor.raise_fault` (EMCY, heartbeat loss,
  recording failure; latched by the next ``enforce``); e-stop pressed; ``feedback.bus_ok``
  false; a drive that left OPERATION ENABLED under an
  ``ENABLED`` goal (:func:`~whih_control.limits.left_enabled`); stale feedback while the drives
  are wanted enabled; a drive that does not follow its target (the target sent a cycle ago
  beyond its ``following_error_window`` plus two cycles at max speed from the fresh position,
  for more than its ``following_error_timeout_ms`` plus two cycles: the master's own check,
  whatever 0x6065/0x6066 say now); ``|force| >= force_stop``; the dead-man released in a motion phase;
  imaging lost for twice its allowed age while moving or paused for it; wire coupling outside
  ``[0, coupling_max]`` during hand-in-hand for more than ``safety.coupling_fault_cycles``.
- **Escalation** (invariant 9): while a fault is latched, a drive seen back in a powered state
  (READY TO SWITCH ON, SWITCHED ON, OPERATION ENABLED) after it had reached its stop, still
  reporting one after the quick-stop ramp, or silent (feedback older than
  ``safety.feedback_max_age_cycles``) after the ramp, gets ``AxisCommand.escalate`` (disable
  voltage, then NMT stop) in that same cycle and every cycle after; acknowledge then refuses for
  the rest of the run, as nothing in a running robot starts the drive again. So does
  a drive that has not finished its own stop by the *stop deadline* (twice the slowest
  quick-stop ramp from max speed, plus the frames' two cycles, plus the feedback age allowed;
  ``stop_deadline_cycles``): fresh and still in FAULT REACTION ACTIVE, in QUICK STOP ACTIVE
  without "target reached" (at rest), or in either of them with its position more than its
  ``position_jump_tolerance`` away from where it stood at the deadline (a drive whose ramp was
  made slower, e.g. 0x6085 rewritten by another node). Each escalation is named once in
  ``escalation_log`` (the run's events and faults).
- **Rejected input** (invariant 7; counted in ``rejected``, every axis holds): non-finite or
  out-of-range ``dt`` (then braking runs on the nominal period), feedback position/force,
  estimate; a non-finite requested target holds that axis.
- **Motion permission** (invariant 1; every axis holds): ``objective.motion_allowed``,
  ``operator.enable_held``, every drive OPERATION ENABLED, feedback not stale
  (:func:`~whih_control.limits.stale`), heartbeat OK. Linear axes also need a valid (calibrated)
  estimate, since the geometry cannot be checked without one. A drive that is not enabled has
  its target track its actual position.
- **Holds brake** (invariant 3): a held axis ramps down at its ``max_accel``
  (:func:`~whih_control.limits.hold`), so a drive at speed is never asked to stop in one cycle;
  a fault's quick stop is the one exception.
- **Per-axis limits** (invariants 3 and 4, :func:`~whih_control.limits.enforce_axis`): speed,
  force alarm (no acceleration forward, only the braking ramp), travel looked ahead by the
  stopping distance, acceleration; see :mod:`whih_control.limits` for how they combine.
- **Gap and coupling** (invariants 2 and 5, :func:`~whih_control.limits.geometry`): with ``x``
  the actual insertion and ``n`` the new target, the tip can move at most from ``x`` to where
  ``n`` comes to rest (slack only shortens that), so the worst-case commanded gap is ``gap -
  max(0, n_ante_mc + s_ante_mc - x) - max(0, n_retro_mc + s_retro_mc - x)`` with ``s`` the
  stopping distances (and the symmetric upper bound). An MC that would take the worst case out
  of ``[gap_min, gap_max]`` brakes; if even the worst case without stopping distances leaves the
  window it holds. When the estimated gap is already outside the window (e.g. before the approach
  closes it), MC motions that move it further out are stopped and motions back toward the window
  are allowed; the wires do not change the gap. The floor applies always; the ceiling bounds the
  MCs only outside hand-in-hand and withdraw (``Objective.part_mcs``): there the retrograde MC may
  withdraw past it while the support rule holds. During any ``hand_in_hand*`` phase (unless the
  ``no-coupling`` ablation clears ``Objective.coupled``) the same rule keeps the wire coupling
  within ``[0, coupling_max]``.
- **Support** (invariant 5, :mod:`whih_control.support`): a change that would take a wire's
  worst-case unsupported length past ``procedure.unsupported_max`` (or, already past it,
  further) brakes: ante wire advance, ante MC retreat, retro MC withdrawal, retro wire advance,
  in that order until the bound holds (all where no one alone does). Pulling back is never held.
- **Closing** (``CycleInputs.stop_goal``): QUICK_STOP, then DISABLED on every axis, targets at
  the actual positions; nothing after the supervisor changes a goal.

Watchdogs count cycles of the supplied time, never the wall clock. Same inputs, same outputs.
"""

from __future__ import annotations

import math

from firmware_iface.cia402 import SW_TARGET_REACHED, DriveState
from firmware_iface.types import AxisCommand, AxisFeedback, Commands, DriveGoal, Feedback
from whih_control import limits, support
from whih_control.config import Config
from whih_control.types import (
    ALL_AXES,
    LINEAR_AXES,
    CycleInputs,
    Estimate,
    Objective,
    OperatorInput,
    Reason,
    Verdict,
)

__all__ = ["SafetySupervisor"]

_isfinite = math.isfinite
_enforce_axis = limits.enforce_axis
_hold = limits.hold
_geometry = limits.geometry
_stale = limits.stale
_left_enabled = limits.left_enabled
_stalled = limits.stalled
_imaging_lost = limits.imaging_lost
_ENABLED = DriveState.OPERATION_ENABLED
_AT_STOP = frozenset(
    {
        DriveState.FAULT,
        DriveState.FAULT_REACTION_ACTIVE,
        DriveState.QUICK_STOP_ACTIVE,
        DriveState.SWITCH_ON_DISABLED,
    }
)
_LEAVING_STOP = frozenset(
    {DriveState.READY_TO_SWITCH_ON, DriveState.SWITCHED_ON, DriveState.OPERATION_ENABLED}
)
_STOPPING = frozenset({DriveState.FAULT_REACTION_ACTIVE, DriveState.QUICK_STOP_ACTIVE})
"""The stop states in which the drive still holds torque: its own ramp may still move it."""
_GOAL_ENABLED = DriveGoal.ENABLED
_QUICK_STOP = DriveGoal.QUICK_STOP
_DISABLED = DriveGoal.DISABLED
_OK = Verdict()
_RESET = Verdict(Reason.OK, "fault reset sent; targets = actual positions")
_CLOSING = Verdict(Reason.OK, "closing: every axis stopped, targets = actual positions")
_NO_INPUTS = CycleInputs()
_NO_ESTIMATE = Estimate()
_EPS = 1e-9
_BIG = math.inf
_DIR4 = (1.0, 1.0, -1.0, -1.0)
"""d(tip s)/d(insertion) of ante_wire, ante_mc, retro_wire, retro_mc."""
_SUPPORT_CANDIDATES = ((0, 1.0), (1, -1.0), (3, 1.0), (2, -1.0))
"""Tip motions that can lengthen a free wire segment: ante wire advancing, ante MC retreating,
retro MC withdrawing, retro wire advancing (it may pass the ante wire tip and end the coupling)."""


def _rest_point(n: float, p: float, h: float, a_max: float) -> float:
    """Where an axis commanded from ``p`` to ``n`` in ``h`` s comes to rest braking at ``a_max``."""
    v = (n - p) / h
    return n + v * abs(v) / (2.0 * a_max)


# how much a reason matters when several happen in one cycle (higher wins; of equal ones, the first)
_RANK: dict[int, int] = {
    Reason.ACCEL_LIMIT: 1,
    Reason.SPEED_LIMIT: 2,
    Reason.TRAVEL_LIMIT: 3,
    Reason.COUPLING: 4,
    Reason.SUPPORT: 5,
    Reason.GAP_WINDOW: 5,
    Reason.GAP_FLOOR: 6,
    Reason.FORCE_ALARM: 7,
    Reason.ESTIMATE_INVALID: 8,
    Reason.NO_MOTION_PHASE: 9,
    Reason.ENABLE_RELEASED: 10,
    Reason.DRIVE_NOT_ENABLED: 11,
    Reason.STALE_FEEDBACK: 12,
    Reason.HEARTBEAT: 13,
    Reason.NON_FINITE: 14,
}


class SafetySupervisor:
    """Enforces the safety invariants on the commands, latches faults, counts rejections."""

    def __init__(self, cfg: Config) -> None:
        names = tuple(a for a in ALL_AXES if a in cfg.drives)
        self.axes: tuple[str, ...] = names
        drives = [cfg.drives[a] for a in names]
        self._vmax = tuple(d.max_speed for d in drives)
        self._amax = tuple(d.max_accel for d in drives)
        self._tmin = tuple(d.travel_min for d in drives)
        self._tmax = tuple(d.travel_max for d in drives)
        self._falarm = tuple(d.force_alarm for d in drives)
        self._fstop = tuple(d.force_stop for d in drives)
        self._linear = tuple(a in LINEAR_AXES for a in names)
        self._i_amc = names.index("ante_mc")
        self._i_rmc = names.index("retro_mc")
        self._i_aw = names.index("ante_wire")
        self._i_rw = names.index("retro_wire")
        p = cfg.procedure
        self._gmin, self._gmax, self._cmax = p.gap_min, p.gap_max, p.coupling_max
        self._u_max = p.unsupported_max
        self._lin4 = (self._i_aw, self._i_amc, self._i_rw, self._i_rmc)
        self._s_moves = [0.0, 0.0, 0.0, 0.0]
        self._s_held = [0.0, 0.0, 0.0, 0.0]
        self._s_braked = [0.0, 0.0, 0.0, 0.0]
        self._s_len = [False, False, False, False]
        s = cfg.safety
        self._max_age = s.feedback_max_age_cycles
        self._img_max = s.imaging_max_age_s
        self._period = cfg.period
        self._hb_timeout = cfg.bus.master_heartbeat_timeout_ms / 1000.0
        self._cpl_cycles = s.coupling_fault_cycles
        self._dt_max = s.max_dt_cycles * cfg.period
        self._pmax = s.position_abs_max
        self._fmax = s.force_abs_max
        n = len(names)
        # invariant 9: a drive still reporting (fresh) a powered state this many cycles into a
        # latch has not stopped on its own: the ramp from max speed, plus the frames' two cycles
        self._stop_cycles = max(math.ceil(d.max_speed / d.quick_stop_decel / cfg.period) + 2 for d in drives)
        # invariant 9: by this many cycles into a latch every drive has finished its own stop:
        # twice the slowest ramp from max speed (a drive catching up on its target may run above
        # max_speed, up to its own 0x607F; the quick-stop ramp is 0x6085 = quick_stop_decel,
        # written by set-up and read back), plus the frames' two cycles, plus the feedback age
        # allowed. A drive still stopping, or still moving, then has not stopped on its own.
        ramp = max(d.max_speed / d.quick_stop_decel for d in drives)
        self.stop_deadline_cycles: int = math.ceil(2.0 * ramp / cfg.period) + 2 + self._max_age
        """Cycles into a latch by which every drive's own stop must be over (see escalation)."""
        self._still_tol = tuple(d.position_jump_tolerance for d in drives)
        # a drive follows its target (the master's own check, whatever 0x6065/0x6066 say now):
        # the drive's own following-error window plus two cycles of motion at max speed (the
        # target compared was sent one cycle before the position was measured, and a frame may
        # be one cycle late), for longer than the drive's own time-out plus the frames' two
        # cycles. A drive that follows within its own set-up window never reaches it.
        self._follow_win = tuple(d.following_error_window + 2.0 * d.max_speed * cfg.period for d in drives)
        self._follow_cycles = tuple(
            math.ceil(d.following_error_timeout_ms / 1000.0 / cfg.period) + 2 for d in drives
        )
        self._lag = [0] * len(drives)
        self._latched_cycles = 0
        self._stop_pos: list[float] = [math.nan] * n
        self.escalation_log: list[tuple[str, str]] = []
        """(axis, why) of each escalation, once per axis and latch; the runtime takes them
        (:meth:`take_escalations`) into the run's events and fault list."""
        # the last cycle's estimate and inputs (for acknowledge: would imaging fault again?)
        self._estimate = _NO_ESTIMATE
        self._inputs = _NO_INPUTS
        self._stop_seen = [False] * n
        self.escalated: list[bool] = [False] * n
        """Per axis (``axes`` order): seen leaving its stop under the present latch, so the
        master disables its voltage and NMT-stops it every cycle; acknowledge refuses while any is."""
        self.target: list[float] = [math.nan] * n
        """Last target sent per axis (in ``axes`` order)."""
        self.velocity: list[float] = [0.0] * n
        """Velocity of the last target change per axis."""
        self._was_enabled = [False] * n
        self._new: list[float] = [0.0] * n
        # this cycle's inputs in axis order, refilled in place (no list built per cycle)
        self._fbs: list[AxisFeedback] = [AxisFeedback() for _ in names]
        self._cmds: list[AxisCommand] = [AxisCommand() for _ in names]
        self._pos: list[float] = [math.nan] * n
        self._reported: Verdict | None = None
        self._cpl_bad = 0
        self._cpl_recheck = False
        """A coupling fault was acknowledged and the coupling not seen back in range since."""
        self._estop = False
        self._reset_pending = False
        self.latched: bool = False
        self.latched_verdict: Verdict = _OK
        self.rejected: int = 0
        """Count of rejected inputs (non-finite or out of range): each one held, never moved."""
        self.faults: int = 0
        """Count of faults latched (raise_fault included)."""
        self.generation: int = 0
        """Incremented by every successful acknowledge (the controller resynchronises on it)."""
        self.ack_blocker: str = ""
        """Why the last acknowledge was refused ('' if it was accepted)."""
        self._hold_verdicts = {
            r: Verdict(r, text)
            for r, text in (
                (Reason.NO_MOTION_PHASE, "phase does not allow motion: holding"),
                (Reason.ENABLE_RELEASED, "enable (dead-man) released: holding"),
                (Reason.DRIVE_NOT_ENABLED, "a drive is not OPERATION ENABLED: holding"),
                (Reason.STALE_FEEDBACK, "feedback stale: holding"),
                (Reason.HEARTBEAT, "a heartbeat is missing: holding"),
                (Reason.ESTIMATE_INVALID, "no valid tip estimate (not calibrated): linear axes hold"),
            )
        }

    # ------------------------------------------------------------------ faults

    def raise_fault(self, reason: Reason, text: str, axis: str = "") -> None:
        """Report an external fault (EMCY, heartbeat loss, bus or recording error).

        An input of the next :meth:`enforce`, which latches it (quick stop in that cycle); the
        first cause reported is kept, and reports while a fault is latched are only counted.
        """
        if not isinstance(reason, Reason) or reason == Reason.OK:
            raise ValueError(f"raise_fault: reason (={reason!r}) must be a Reason other than OK")
        if not self.latched and self._reported is None:
            self._reported = Verdict(reason, text, True, axis)  # counted when latched
        else:
            self.faults += 1

    @property
    def fault_pending(self) -> bool:
        """A fault is latched, or reported and latched by the next cycle."""
        return self.latched or self._reported is not None

    @property
    def fault_verdict(self) -> Verdict:
        """The latched fault, else the one reported for the next cycle, else OK."""
        if self.latched or self._reported is None:
            return self.latched_verdict
        return self._reported

    def stalled(self, stall_s: float) -> bool:
        """Whether ``stall_s`` (``CycleInputs.stall_s``) is a master stall: the one definition,
        :func:`~whih_control.limits.stalled` at this configuration's heartbeat timeout."""
        return _stalled(stall_s, self._hb_timeout)

    def next_fault(self, stall_s: float) -> Verdict:
        """What the next :meth:`enforce` latches first, as far as known before it: the latched
        fault; else a master stall of ``stall_s`` (``CycleInputs.stall_s`` so far), which comes
        before anything reported in its cycle; else :attr:`fault_verdict`. The procedure reads it
        before the supervisor runs, so both name the same cause."""
        if not self.latched and _stalled(stall_s, self._hb_timeout):
            return self._stall_verdict(stall_s)
        return self.fault_verdict

    def _stall_verdict(self, stall_s: float) -> Verdict:
        return Verdict(
            Reason.STALE_FEEDBACK,
            f"master stalled: {stall_s * 1e3:.1f} ms without a cycle on its own clock "
            f"(allowed {limits.stall_limit(self._hb_timeout) * 1e3:.0f} ms, half the drives' "
            "master heartbeat timeout)",
            True,
        )

    def _latch(self, verdict: Verdict) -> None:
        self.faults += 1
        if not self.latched:
            self.latched = True
            self.latched_verdict = verdict
            self._reset_pending = False
            self._latched_cycles = 0
            for i in range(len(self.axes)):
                self._stop_seen[i] = self.escalated[i] = False
                self._stop_pos[i] = math.nan

    def acknowledge(self, feedback: Feedback, *, imaging_watched: bool = False) -> bool:
        """Clear the latch if every cause is gone; never moves anything.

        Needs: e-stop released (as last seen), bus OK, every drive at rest (none in FAULT REACTION
        ACTIVE, none in QUICK STOP ACTIVE before it reports target reached: re-enabling walks
        through a state without holding torque), every drive's heartbeat OK, fresh and finite
        feedback, force below ``force_alarm`` as read now. (With torque off a drive reads 0 N
        whatever its load: re-enabled where it stands, a load still at ``force_stop`` faults again
        in the cycle it is read, and one at ``force_alarm`` lets the axis move only away from
        it, e.g. a jog back; a latch that waited for the load to go could never be cleared, as
        nothing reads it with torque off.) With
        ``imaging_watched`` (the acknowledge lands in a phase that watches imaging, i.e. paused)
        and the estimator calibrated, imaging must not be lost (its age at most twice
        ``imaging_max_age_s``), or the next cycle would fault again. A drive's own FAULT state is
        not a blocker: the next cycle sends FAULT_RESET (targets = actual positions) and the
        runtime re-enables.
        After a coupling fault, the coupling is held to account at once: the first hand-in-hand
        cycle with it still outside ``[0, coupling_max]`` faults again, without the usual
        ``coupling_fault_cycles`` of grace (it can only be brought back by motion, e.g. a jog,
        which needs the latch cleared).
        """
        if not self.latched:
            self.ack_blocker = ""
            return True
        why = ""
        cut = [name for i, name in enumerate(self.axes) if self.escalated[i]]
        if cut:
            # NMT-stopped with its voltage disabled: its feedback and heartbeat stay silent, and
            # nothing in a running robot starts it again (only set-up and shutdown do)
            why = (
                f"{cut[0]}: escalated under this fault (disable voltage, NMT stop): nothing starts "
                "it again in this robot: close this robot and open a new one"
            )
        elif self._estop:
            why = "e-stop still pressed"
        elif not feedback.bus_ok:
            why = "bus not OK"
        else:
            for i, name in enumerate(self.axes):
                af = feedback.axes[name]
                st = af.state
                if st is DriveState.FAULT_REACTION_ACTIVE or (
                    st is DriveState.QUICK_STOP_ACTIVE and not af.statusword & SW_TARGET_REACHED
                ):
                    why = f"{name}: still stopping ({st.name})"
                elif not af.heartbeat_ok:
                    why = f"{name}: no heartbeat"
                elif _stale(af.age_cycles, self._max_age):
                    why = f"{name}: feedback stale (age {af.age_cycles} cycles)"
                elif not (_isfinite(af.position) and _isfinite(af.force)):
                    why = f"{name}: feedback not finite (position {af.position}, force {af.force})"
                elif abs(af.force) >= self._falarm[i]:
                    why = f"{name}: force {af.force:.3g} N still >= force_alarm {self._falarm[i]:g} N"
                if why:
                    break
        age = self._estimate.imaging_age
        lost = self._inputs.calibrated and _imaging_lost(age, self._img_max)
        if not why and imaging_watched and lost:
            why = (
                f"imaging lost for {age:.2f} s (allowed {2.0 * self._img_max:g} s, twice "
                "imaging_max_age_s, in the paused phase this acknowledge lands in): wait for imaging"
            )
        self.ack_blocker = why
        if why:
            return False
        self._cpl_recheck = self._cpl_recheck or self.latched_verdict.reason is Reason.COUPLING
        self.latched = False
        self.latched_verdict = _OK
        self._reset_pending = True
        self._cpl_bad = 0
        for i in range(len(self.axes)):
            self._was_enabled[i] = False
            self.target[i] = math.nan
            self.velocity[i] = 0.0
        self.generation += 1
        return True

    # ------------------------------------------------------------------ the cycle

    def enforce(
        self,
        t: float,
        dt: float,
        commands: Commands,
        feedback: Feedback,
        estimate: Estimate,
        objective: Objective,
        operator: OperatorInput,
        inputs: CycleInputs | None = None,
    ) -> Verdict:
        """Rewrite ``commands`` in place into safe ones; return what happened (OK if nothing)."""
        cyc = _NO_INPUTS if inputs is None else inputs
        names = self.axes
        fb_axes = feedback.axes
        cmd_axes = commands.axes
        fbs = self._fbs
        cmds = self._cmds
        pos = self._pos
        for i, a in enumerate(names):
            af = fbs[i] = fb_axes[a]
            cmds[i] = cmd_axes[a]
            pos[i] = af.position
        self._estop = operator.estop
        self._estimate = estimate
        self._inputs = cyc
        stop_goal = cyc.stop_goal
        if not self.latched:
            fault = self._detect_fault(estimate, objective, operator, feedback, cyc)
            if fault is not None:
                self._latch(fault)
        if self.latched:
            self._stop_all(_DISABLED if stop_goal is _DISABLED else _QUICK_STOP, feedback.sync_missed)
            return self.latched_verdict
        if stop_goal is not None:
            self._stop_all(_DISABLED if stop_goal is _DISABLED else _QUICK_STOP, feedback.sync_missed)
            return _CLOSING
        target = self.target
        vel = self.velocity
        if self._reset_pending:
            self._reset_pending = False
            for i in range(len(names)):
                cmd = cmds[i]
                cmd.goal = DriveGoal.FAULT_RESET
                cmd.escalate = False
                x = pos[i]
                if _isfinite(x):
                    target[i] = x
                cmd.target = target[i] if _isfinite(target[i]) else 0.0
                vel[i] = 0.0
            return _RESET

        # invariant 7: inputs; invariant 1: permission to move at all
        hold_all = Reason.OK
        h = dt
        if not 0.0 < dt <= self._dt_max:
            hold_all = Reason.NON_FINITE
            h = self._period  # the drives still get one target per SYNC: brake on that clock
        pmax, fmax, max_age = self._pmax, self._fmax, self._max_age
        pos_ok = True
        all_enabled = True
        fresh = True
        beats = True
        for af in fbs:
            x, f = af.position, af.force
            # range tests are False for NaN and +/-inf: no isfinite calls on the hot path
            if not (-pmax <= x <= pmax and -fmax <= f <= fmax):
                hold_all = Reason.NON_FINITE
                pos_ok = False
            if af.state != _ENABLED:
                all_enabled = False
            if _stale(af.age_cycles, max_age):
                fresh = False
            if not af.heartbeat_ok:
                beats = False
        est_valid = estimate.valid
        gap = estimate.gap
        cpl = estimate.coupling
        # gap and coupling are differences of the four tips: both finite <=> every tip finite
        geometry_ok = est_valid and pos_ok
        if est_valid and not (-_BIG < gap < _BIG and -_BIG < cpl < _BIG):
            hold_all = Reason.NON_FINITE
            geometry_ok = False
        if hold_all:
            self.rejected += 1
        elif not objective.motion_allowed:
            hold_all = Reason.NO_MOTION_PHASE
        elif not operator.enable_held:
            hold_all = Reason.ENABLE_RELEASED
        elif not all_enabled:
            hold_all = Reason.DRIVE_NOT_ENABLED
        elif not fresh:
            hold_all = Reason.STALE_FEEDBACK
        elif not beats:
            hold_all = Reason.HEARTBEAT

        reason: int = Reason.OK
        rank = 0
        axis_i = -1
        new = self._new
        vmax_t, amax_t, tmin_t, tmax_t = self._vmax, self._amax, self._tmin, self._tmax
        falarm_t, linear_t = self._falarm, self._linear
        for i in range(len(names)):
            af = fbs[i]
            p = target[i]
            if af.state != _ENABLED or p != p:  # noqa: PLR0124 (NaN test without a call)
                x = pos[i]
                if _isfinite(x):
                    p = target[i] = x
                vel[i] = 0.0
                new[i] = p
                continue
            req = cmds[i].target
            v0 = vel[i]
            if req == p and v0 == 0.0:
                new[i] = p  # at rest and asked to stay: nothing to limit
                continue
            r: int = 0
            if not -_BIG < req < _BIG:
                self.rejected += 1
                r = Reason.NON_FINITE
            elif hold_all:
                r = hold_all
            elif linear_t[i] and not est_valid:
                r = Reason.ESTIMATE_INVALID
            if r:
                n = _hold(p, v0, h, amax_t[i], tmin_t[i], tmax_t[i])
            else:
                f = af.force
                n, r = _enforce_axis(
                    p,
                    v0,
                    req,
                    h,
                    vmax_t[i],
                    amax_t[i],
                    tmin_t[i],
                    tmax_t[i],
                    f >= falarm_t[i] or -f >= falarm_t[i],
                )
            if r and n != req and _RANK[r] > rank:
                reason, rank, axis_i = r, _RANK[r], i
            new[i] = n

        if geometry_ok:
            # wire support first (invariant 5): what it brakes, the gap and coupling rules account for
            tp = estimate.tips
            tips = (tp["ante_wire"], tp["ante_mc"], tp["retro_wire"], tp["retro_mc"])
            k, i = self._support(new, target, vel, pos, amax_t, h, tips)
            if k and _RANK[Reason.SUPPORT] > rank:
                reason, rank, axis_i = Reason.SUPPORT, _RANK[Reason.SUPPORT], i
            # the gap (invariant 2): the floor always; the ceiling only while the MCs close -- in
            # hand-in-hand and withdraw the support rule bounds the retrograde MC instead
            hih = objective.phase.startswith("hand_in_hand")
            ceiling = _BIG if hih or objective.part_mcs else self._gmax
            k, i = _geometry(
                new, target, vel, pos, amax_t, h, self._i_amc, self._i_rmc, gap, self._gmin, ceiling
            )
            if k:
                r = Reason.GAP_FLOOR if k == 1 and gap >= self._gmin else Reason.GAP_WINDOW
                if _RANK[r] > rank:
                    reason, rank, axis_i = r, _RANK[r], i
            if hih and objective.coupled:
                k, i = _geometry(
                    new, target, vel, pos, amax_t, h, self._i_aw, self._i_rw, cpl, 0.0, self._cmax
                )
                if k and _RANK[Reason.COUPLING] > rank:
                    reason, rank, axis_i = Reason.COUPLING, _RANK[Reason.COUPLING], i

        for i in range(len(names)):
            n = new[i]
            p = target[i]
            cmd = cmds[i]
            if n != n:  # noqa: PLR0124
                # a drive whose position was never known: nothing to track, keep the target finite
                c = cmd.target
                cmd.target = c if _isfinite(c) else 0.0
                vel[i] = 0.0
                continue
            cmd.target = n
            if n != p:
                vel[i] = (n - p) / h
                target[i] = n
            else:
                vel[i] = 0.0
        if not reason:
            return _OK
        hold_verdict = self._hold_verdicts.get(Reason(reason))
        if hold_verdict is not None:
            return hold_verdict
        return self._verdict(Reason(reason), axis_i, estimate)

    def _detect_fault(
        self,
        estimate: Estimate,
        objective: Objective,
        operator: OperatorInput,
        feedback: Feedback,
        cyc: CycleInputs,
    ) -> Verdict | None:
        """Every fault condition of the cycle, in order of precedence; None if there is none.

        A stall of the master comes first: whatever else this cycle shows (the drives'
        heartbeat EMCYs, lost or stale feedback) is its consequence, so a fault reported in the
        same cycle is only counted, like reports under a latch. A reported fault comes next: it
        happened before this cycle, and its text is the specific one (the bus check below only
        knows that the bus was not OK).
        """
        if _stalled(cyc.stall_s, self._hb_timeout):
            if self._reported is not None:
                self._reported = None
                self.faults += 1
            return self._stall_verdict(cyc.stall_s)
        reported = self._reported
        if reported is not None:
            self._reported = None
            return reported
        if operator.estop:
            return Verdict(Reason.ESTOP, "emergency stop pressed", True)
        if not feedback.bus_ok:
            return Verdict(Reason.BUS_FAULT, "bus fault (collision, bus error or SYNC loss)", True)
        was = self._was_enabled
        lag = self._lag
        fstop = self._fstop
        cmds = self._cmds
        max_age = self._max_age
        watch_age = cyc.drives_wanted_enabled
        for i, af in enumerate(self._fbs):
            st = af.state
            enabled = st == _ENABLED
            if cmds[i].goal != _GOAL_ENABLED:
                was[i] = False
                lag[i] = 0
            elif _left_enabled(was[i], enabled):
                name = self.axes[i]
                return Verdict(
                    Reason.DRIVE_FAULT, f"{name}: left OPERATION ENABLED (now {st.name})", True, name
                )
            elif enabled:
                if was[i] and not af.age_cycles:
                    # enabled since the last cycle, fresh: it has had its last target a cycle
                    e = self.target[i] - af.position
                    if e > self._follow_win[i] or -e > self._follow_win[i]:
                        lag[i] += 1
                        if lag[i] > self._follow_cycles[i]:
                            return self._not_following(i, e)
                    else:
                        lag[i] = 0
                was[i] = True
            if watch_age and _stale(af.age_cycles, max_age):
                return self._silent_verdict(i, feedback.sync_missed)
            f = af.force
            if (f >= fstop[i] or -f >= fstop[i]) and f < _BIG and -f < _BIG:
                name = self.axes[i]
                return Verdict(
                    Reason.FORCE_STOP,
                    f"{name}: force {f:.3g} N >= force_stop {self._fstop[i]:g} N",
                    True,
                    name,
                )
        if cyc.motion_phase and not operator.enable_held:
            return Verdict(Reason.ENABLE_RELEASED, "dead-man released during motion", True)
        if cyc.imaging_watched and cyc.calibrated and _imaging_lost(estimate.imaging_age, self._img_max):
            return Verdict(
                Reason.STALE_FEEDBACK, f"imaging lost for {estimate.imaging_age:.1f} s during motion", True
            )
        cpl = estimate.coupling
        in_range = 0.0 <= cpl <= self._cmax
        coupling_phase = objective.coupled and objective.phase.startswith("hand_in_hand")
        if estimate.valid and coupling_phase and not in_range:
            self._cpl_bad += 1
            if self._cpl_bad > self._cpl_cycles or self._cpl_recheck:
                return Verdict(
                    Reason.COUPLING,
                    f"wire coupling {cpl:.3g} mm outside [0...{self._cmax:g}] for {self._cpl_bad} cycles",
                    True,
                )
        else:
            self._cpl_bad = 0
            if estimate.valid and in_range:
                self._cpl_recheck = False
        return None

    def _silent_verdict(self, i: int, sync_missed: int) -> Verdict:
        """The fault of stale feedback, first seen on axis ``i``: the text names what the
        supervisor can tell apart (one drive silent, several, every one), and a SYNC the master
        did not send (``Feedback.sync_missed``), since every drive answers SYNC alone."""
        max_age = self._max_age
        fbs = self._fbs
        silent = [k for k, af in enumerate(fbs) if _stale(af.age_cycles, max_age)]
        cause = f"SYNC lost: the master sent no SYNC for {sync_missed} cycles; " if sync_missed > 0 else ""
        n = len(self.axes)
        if len(silent) == n:  # (a configuration has at least the four linear axes)
            age = min(fbs[k].age_cycles for k in silent)
            text = f"no TPDO1 from any of the {n} drives for {age} cycles (allowed {max_age})"
            return Verdict(
                Reason.STALE_FEEDBACK, cause + text if cause else f"{text}: SYNC lost or bus down", True
            )
        name = self.axes[i]
        text = f"no TPDO1 for {fbs[i].age_cycles} cycles (allowed {max_age})"
        if len(silent) > 1:
            text += " (also silent: " + ", ".join(self.axes[k] for k in silent if k != i) + ")"
        return Verdict(Reason.STALE_FEEDBACK, f"{name}: {cause}{text}", True, name)

    def _stop_all(self, goal: DriveGoal, sync_missed: int) -> None:
        """Every axis gets ``goal`` (a quick stop or disable) and a target at its actual position;
        while a fault is latched, a drive seen leaving its stop is escalated (invariant 9).
        ``sync_missed`` (``Feedback.sync_missed``) only goes into the text of a silent drive's."""
        target = self.target
        vel = self.velocity
        pos = self._pos
        fbs = self._fbs
        latched = self.latched
        if latched:
            self._latched_cycles += 1
        late = self._latched_cycles > self._stop_cycles
        overdue = self._latched_cycles > self.stop_deadline_cycles
        seen, escalated = self._stop_seen, self.escalated
        stop_pos = self._stop_pos
        for i, cmd in enumerate(self._cmds):
            if latched:
                af = fbs[i]
                st = af.state
                if escalated[i]:
                    pass  # for as long as the latch lasts
                elif _stale(af.age_cycles, self._max_age):
                    # silent (e.g. put in pre-operational by another node): its stop cannot be seen
                    if late:
                        why = f"no TPDO1 for {af.age_cycles} cycles after the quick-stop ramp"
                        if sync_missed > 0:  # what it was given to answer: nothing
                            why += f" (the master sent no SYNC for {sync_missed} cycles)"
                        self._escalate(i, why)
                elif st in _AT_STOP:
                    seen[i] = True
                    x = af.position
                    if not overdue or stop_pos[i] != stop_pos[i]:  # NaN: not seen before
                        stop_pos[i] = x
                    elif st in _STOPPING:
                        # invariant 9: its own stop is overdue (a ramp made slower than set up,
                        # e.g. 0x6085 rewritten), or it still moves while claiming to be at rest
                        moved = x - stop_pos[i]
                        if st is DriveState.FAULT_REACTION_ACTIVE or not af.statusword & SW_TARGET_REACHED:
                            self._escalate(i, f"still {st.name} {self._stop_late_text()}")
                        elif moved > self._still_tol[i] or -moved > self._still_tol[i]:
                            self._escalate(i, f"moved {moved:+.3f} in {st.name} {self._stop_late_text()}")
                elif st in _LEAVING_STOP and (seen[i] or late):
                    # invariant 9: back out of its stop (another node's controlwords), or never
                    # stopped: escalate within this cycle and for as long as the latch lasts
                    self._escalate(i, f"{'left its stop' if seen[i] else 'never stopped'} (now {st.name})")
                cmd.escalate = escalated[i]
            else:
                cmd.escalate = False
            x = pos[i]
            if _isfinite(x):
                target[i] = x
            cmd.goal = goal
            cmd.target = target[i] if _isfinite(target[i]) else 0.0
            vel[i] = 0.0

    def _not_following(self, i: int, error: float) -> Verdict:
        name = self.axes[i]
        return Verdict(
            Reason.DRIVE_FAULT,
            f"{name}: does not follow its target: position {self._fbs[i].position:.3f}, target sent "
            f"{self.target[i]:.3f}, error {error:+.3f} beyond {self._follow_win[i]:.3g} for "
            f"{self._lag[i]} cycles (its following-error window plus two cycles at max speed, for "
            "its time-out plus two cycles)",
            True,
            name,
        )

    def _escalate(self, i: int, why: str) -> None:
        self.escalated[i] = True
        name = self.axes[i]
        self.escalation_log.append((name, f"{name}: escalated (disable voltage, NMT stop): {why}"))

    def _stop_late_text(self) -> str:
        p = self._period
        return (
            f"{self._latched_cycles * p:.4f} s into the fault (every drive's stop is over by "
            f"{self.stop_deadline_cycles * p:.4f} s)"
        )

    def take_escalations(self) -> list[tuple[str, str]]:
        """The escalations since the last call, as (axis, text); empties the log."""
        out = list(self.escalation_log)
        self.escalation_log.clear()
        return out

    def _support(
        self,
        new: list[float],
        target: list[float],
        vel: list[float],
        pos: list[float],
        amax: tuple[float, ...],
        h: float,
        tips: tuple[float, float, float, float],
    ) -> tuple[int, int]:
        """Invariant 5: no command takes a wire's worst-case unsupported length past
        ``unsupported_max`` (or, already past it, further than braking would leave it); pulling a
        wire back is never held. Only changes that lengthen a free segment brake (at a_max).

        Each tip's range runs from where it is to where its command would bring it to rest
        braking at a_max (the look-ahead of :func:`limits.geometry`): checking only the next
        target let a tip at speed brake up to v^2/(2 a_max) past the limit. Where no single hold
        is enough (one wire's advance ends the coupling that supports the other), every
        lengthening motion is held."""
        order = self._lin4
        reach = self._cmax
        # scratch lists of the supervisor, refilled every cycle (nothing allocated per cycle)
        moves, held, braked, lengthening = self._s_moves, self._s_held, self._s_braked, self._s_len
        some = False
        for k, sign in _SUPPORT_CANDIDATES:
            i = order[k]
            lengthening[k] = (new[i] - target[i]) * _DIR4[k] * sign > 0.0
            some = some or lengthening[k]
        if not some:
            return 0, -1
        for k in range(4):
            i = order[k]
            moves[k] = _DIR4[k] * (_rest_point(new[i], target[i], h, amax[i]) - pos[i])
        ua, ur = support.worst_unsupported(tips, (moves[0], moves[1], moves[2], moves[3]), reach)
        u_max = self._u_max + _EPS
        if ua <= u_max and ur <= u_max:
            # within the limit itself, which no bound below is under: nothing to hold
            return 0, -1
        for k in range(4):
            held[k] = moves[k]
            braked[k] = 0.0
            if lengthening[k]:
                i = order[k]
                b = target[i] + limits.brake_velocity(vel[i], amax[i] * h) * h
                braked[k] = b
                held[k] = _DIR4[k] * (_rest_point(b, target[i], h, amax[i]) - pos[i])
        best = support.worst_unsupported(tips, (held[0], held[1], held[2], held[3]), reach)
        bound_a = max(self._u_max, best[0]) + _EPS
        bound_r = max(self._u_max, best[1]) + _EPS
        kind, axis_i = 0, -1
        for k, _sign in _SUPPORT_CANDIDATES:
            if ua <= bound_a and ur <= bound_r:
                break
            if not lengthening[k]:
                continue
            trial = list(moves)
            trial[k] = held[k]
            ta, tr = support.worst_unsupported(tips, (trial[0], trial[1], trial[2], trial[3]), reach)
            if ta < ua or tr < ur:
                moves = trial
                ua, ur = ta, tr
                i = order[k]
                new[i] = braked[k]
                kind, axis_i = 1, i
        if ua > bound_a or ur > bound_r:
            # no single hold was enough (one wire's advance ends the coupling that supports the
            # other): hold every lengthening motion, which leaves at most ``best``
            for k, _sign in _SUPPORT_CANDIDATES:
                if lengthening[k]:
                    i = order[k]
                    new[i] = braked[k]
                    kind, axis_i = 1, i
        return kind, axis_i

    def _verdict(self, reason: Reason, i: int, estimate: Estimate) -> Verdict:
        name = self.axes[i] if i >= 0 else ""
        if reason in (Reason.GAP_FLOOR, Reason.GAP_WINDOW):
            text = f"MC gap {estimate.gap:.3f} mm: {name} held to stay in [{self._gmin:g}...{self._gmax:g}]"
        elif reason == Reason.SUPPORT:
            text = f"{name} held: a wire's unsupported length would exceed {self._u_max:g} mm"
        elif reason == Reason.COUPLING:
            text = f"wire coupling {estimate.coupling:.3f} mm: {name} held to stay in [0...{self._cmax:g}]"
        elif reason == Reason.FORCE_ALARM:
            text = (
                f"{name}: force {self._fbs[i].force:.3g} N >= force_alarm {self._falarm[i]:g} N: no advance"
            )
        elif reason == Reason.TRAVEL_LIMIT:
            text = f"{name}: target limited to travel [{self._tmin[i]:g}...{self._tmax[i]:g}]"
        elif reason == Reason.SPEED_LIMIT:
            text = f"{name}: speed limited to {self._vmax[i]:g}/s"
        elif reason == Reason.ACCEL_LIMIT:
            text = f"{name}: acceleration limited to {self._amax[i]:g}/s^2"
        else:
            text = f"{name}: requested target not finite: held"
        return Verdict(reason, text, False, name)
