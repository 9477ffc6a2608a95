"""The safety supervisor: every command passes through :meth:`SafetySupervisor.enforce`.

Like ros2_control's ``joint_limits`` ``enforce(current, desired, dt)``, it takes the requested
insertion targets and rewrites them in place into safe ones, given feedback, estimate, objective
and operator state, and returns a :class:`~whih_control.types.Verdict` (built only when something
happened). Invariants (docs/DESIGN.md section 4), in the order they are applied each cycle:

- **Faults** (latched; every axis ``QUICK_STOP`` in the same cycle, targets track the actual
  positions): e-stop pressed; ``feedback.bus_ok`` false; a drive that was running under an
  ``ENABLED`` goal reports FAULT, FAULT REACTION ACTIVE or QUICK STOP ACTIVE; ``|force| >=
  force_stop``; wire coupling outside ``[0, coupling_max]`` during hand-in-hand for more than
  ``safety.coupling_fault_cycles`` cycles; :meth:`SafetySupervisor.raise_fault` (EMCY, heartbeat
  loss, bus errors from the runtime).
- **Escalation** (invariant 9): while a fault is latched, a drive seen back in a powered state
  (READY TO SWITCH ON, SWITCHED ON, OPERATION ENABLED) after it had reached its stop, still
  reporting one after the quick-stop ramp, or silent (feedback older than
  ``safety.feedback_max_age_cycles``) after the ramp, gets ``AxisCommand.escalate`` (disable voltage, then NMT
  stop) in that same cycle and every cycle after, until an acknowledge.
- **Rejected input** (invariant 7; counted in ``rejected``, every axis holds): non-finite or
  out-of-range ``dt``, feedback position/force, estimate; a non-finite requested target holds
  that axis.
- **Motion permission** (invariant 1; every axis holds): ``objective.motion_allowed``,
  ``operator.enable_held``, every drive OPERATION ENABLED, feedback age <=
  ``safety.feedback_max_age_cycles``, heartbeat OK. Linear axes also need a valid (calibrated)
  estimate, since the geometry cannot be checked without one. A drive that is not enabled has
  its target track its actual position.
- **Per-axis limits** (invariant 3): ``|v| <= max_speed``; ``|v - v_prev| <= max_accel * dt``;
  travel ``[travel_min, travel_max]`` (outside it only motion back toward it). A *hold* (the
  target kept where it was) is a stop and always allowed, like a quick stop; the acceleration
  limit bounds every cycle in which the axis keeps moving.
- **Force alarm** (invariant 4): ``|force| >= force_alarm`` -> no advance (insertion increase);
  retreat allowed.
- **Gap** (invariant 2): with ``x`` the actual insertion and ``n`` the new target, the tip can
  move at most ``|n - x|`` toward ``n`` (slack only shortens that), so the worst-case commanded
  gap is ``gap - max(0, n_ante_mc - x) - max(0, n_retro_mc - x)`` (and the symmetric upper
  bound). An MC change that would take the worst case out of ``[gap_min, gap_max]`` is held.
  When the estimated gap is already outside the window (e.g. before the approach closes it),
  MC motions that move it further out are held and motions back toward the window are allowed;
  the wires do not change the gap and are not held by this rule. While the MCs part after
  crossing (``Objective.part_mcs``, set only by the procedure's withdraw) the ceiling is raised by
  ``procedure.withdraw_distance``; the floor applies always.
- **Coupling** (invariant 5): during any ``hand_in_hand*`` phase the same worst-case rule keeps
  the wire coupling within ``[0, coupling_max]``; a persistent violation faults (above).

Watchdogs count cycles of the supplied time, never the wall clock. Same inputs, same outputs.
"""

from __future__ import annotations

import math

from firmware_iface.cia402 import SW_TARGET_REACHED, DriveState
from firmware_iface.types import AxisCommand, AxisFeedback, Commands, DriveGoal, Feedback
from whih_control.config import Config
from whih_control.types import ALL_AXES, LINEAR_AXES, Estimate, Objective, OperatorInput, Reason, Verdict

__all__ = ["SafetySupervisor"]

_isfinite = math.isfinite
_isnan = math.isnan
_ENABLED = DriveState.OPERATION_ENABLED
_STOPPED_STATES = frozenset(
    {DriveState.FAULT, DriveState.FAULT_REACTION_ACTIVE, DriveState.QUICK_STOP_ACTIVE}
)
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
_GOAL_ENABLED = DriveGoal.ENABLED
_QUICK_STOP = DriveGoal.QUICK_STOP
_OK = Verdict()
_RESET = Verdict(Reason.OK, "fault reset sent; targets = actual positions")
_EPS = 1e-9
_BIG = math.inf

# how much a reason matters when several happen in one cycle (higher wins the verdict)
_RANK: dict[int, int] = {
    Reason.ACCEL_LIMIT: 1,
    Reason.SPEED_LIMIT: 2,
    Reason.TRAVEL_LIMIT: 3,
    Reason.COUPLING: 4,
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
        self._part_extra = p.withdraw_distance
        self._pairs = (
            (self._i_amc, self._i_rmc, p.gap_min, p.gap_max, False),
            (self._i_aw, self._i_rw, 0.0, p.coupling_max, True),
        )
        s = cfg.safety
        self._max_age = s.feedback_max_age_cycles
        self._cpl_cycles = s.coupling_fault_cycles
        self._dt_max = s.max_dt_cycles * cfg.period
        self._pmax = s.position_abs_max
        self._fmax = s.force_abs_max
        n = len(names)
        # invariant 9: a drive still reporting (fresh) a powered state this many cycles into a
        # latch has not stopped on its own: the ramp from max speed, plus the frames' two cycles
        self._stop_cycles = max(math.ceil(d.max_speed / d.quick_stop_decel / cfg.period) + 2 for d in drives)
        self._latched_cycles = 0
        self._stop_seen = [False] * n
        self.escalated: list[bool] = [False] * n
        """Per axis (``axes`` order): seen leaving its stop under the present latch, so the
        master disables its voltage and NMT-stops it every cycle until an acknowledge."""
        self.target: list[float] = [math.nan] * n
        """Last target sent per axis (in ``axes`` order)."""
        self.velocity: list[float] = [0.0] * n
        """Velocity of the last target change per axis."""
        self._was_enabled = [False] * n
        self._new: list[float] = [0.0] * n
        self._cmds: list[AxisCommand] = []
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
        """Latch an external fault (EMCY, heartbeat loss, bus error); the first cause is kept."""
        if not isinstance(reason, Reason) or reason == Reason.OK:
            raise ValueError(f"raise_fault: reason (={reason!r}) must be a Reason other than OK")
        self._latch(Verdict(reason, text, True, axis))

    def _latch(self, verdict: Verdict) -> None:
        self.faults += 1
        if not self.latched:
            self.latched = True
            self.latched_verdict = verdict
            self._reset_pending = False
            self._latched_cycles = 0
            for i in range(len(self.axes)):
                self._stop_seen[i] = self.escalated[i] = False

    def acknowledge(self, feedback: Feedback) -> bool:
        """Clear the latch if every cause is gone; never moves anything.

        Needs: e-stop released (as last seen), bus OK, every drive at rest (none in FAULT REACTION
        ACTIVE, none in QUICK STOP ACTIVE before it reports target reached: re-enabling walks
        through a state without holding torque), every drive's heartbeat OK, fresh and finite
        feedback, force below ``force_alarm``. A drive's own FAULT state is not a blocker: the
        next cycle sends FAULT_RESET (targets = actual positions) and the runtime re-enables.
        After a coupling fault, the coupling is held to account at once: the first hand-in-hand
        cycle with it still outside ``[0, coupling_max]`` faults again, without the usual
        ``coupling_fault_cycles`` of grace (it can only be brought back by motion, e.g. a jog,
        which needs the latch cleared).
        """
        if not self.latched:
            self.ack_blocker = ""
            return True
        why = ""
        if self._estop:
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
                elif af.age_cycles > self._max_age:
                    why = f"{name}: feedback stale (age {af.age_cycles} cycles)"
                elif not (_isfinite(af.position) and _isfinite(af.force)):
                    why = f"{name}: feedback not finite (position {af.position}, force {af.force})"
                elif abs(af.force) >= self._falarm[i]:
                    why = f"{name}: force {af.force:.3g} N still >= force_alarm {self._falarm[i]:g} N"
                if why:
                    break
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
    ) -> Verdict:
        """Rewrite ``commands`` in place into safe ones; return what happened (OK if nothing)."""
        names = self.axes
        fb_axes = feedback.axes
        cmd_axes = commands.axes
        fbs = [fb_axes[a] for a in names]
        cmds = [cmd_axes[a] for a in names]
        self._estop = estop = operator.estop
        if self.latched:
            return self._hold_latched(fbs, cmds)
        fault = self._detect_fault(fbs, cmds, estimate, objective, estop, feedback.bus_ok)
        if fault is not None:
            self._latch(fault)
            return self._hold_latched(fbs, cmds)
        target = self.target
        vel = self.velocity
        if self._reset_pending:
            self._reset_pending = False
            for i, af in enumerate(fbs):
                cmd = cmds[i]
                cmd.goal = DriveGoal.FAULT_RESET
                cmd.escalate = False
                pos = af.position
                if _isfinite(pos):
                    target[i] = pos
                cmd.target = target[i] if _isfinite(target[i]) else 0.0
                vel[i] = 0.0
            return _RESET

        # invariant 7: inputs; invariant 1: permission to move at all
        hold_all = Reason.OK
        if not 0.0 < dt <= self._dt_max:
            hold_all = Reason.NON_FINITE
        pmax, fmax, max_age = self._pmax, self._fmax, self._max_age
        all_enabled = True
        fresh = True
        beats = True
        for af in fbs:
            pos, f = af.position, af.force
            # range tests are False for NaN and +/-inf: no isfinite calls on the hot path
            if not (-pmax <= pos <= pmax and -fmax <= f <= fmax):
                hold_all = Reason.NON_FINITE
            if af.state != _ENABLED:
                all_enabled = False
            if af.age_cycles > max_age:
                fresh = False
            if not af.heartbeat_ok:
                beats = False
        est_valid = estimate.valid
        gap = estimate.gap
        cpl = estimate.coupling
        # gap and coupling are differences of the four tips: both finite <=> every tip finite
        if est_valid and not (-_BIG < gap < _BIG and -_BIG < cpl < _BIG):
            hold_all = Reason.NON_FINITE
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
        for i, af in enumerate(fbs):
            cmd = cmds[i]
            p = target[i]
            pos = af.position
            if af.state != _ENABLED or p != p:  # noqa: PLR0124 (NaN test without a call)
                if _isfinite(pos):
                    p = target[i] = pos
                vel[i] = 0.0
                new[i] = p
                continue
            n = cmd.target
            if n != p:
                r: int = 0
                if not -_BIG < n < _BIG:
                    self.rejected += 1
                    n = p
                    r = Reason.NON_FINITE
                elif hold_all:
                    n = p
                    r = hold_all
                elif linear_t[i] and not est_valid:
                    n = p
                    r = Reason.ESTIMATE_INVALID
                else:
                    v = (n - p) / dt
                    vmax = vmax_t[i]
                    if v > vmax + _EPS:
                        v, r = vmax, Reason.SPEED_LIMIT
                    elif v < -vmax - _EPS:
                        v, r = -vmax, Reason.SPEED_LIMIT
                    v0 = vel[i]
                    dv = amax_t[i] * dt
                    if v > v0 + dv + _EPS:
                        v, r = v0 + dv, Reason.ACCEL_LIMIT
                    elif v < v0 - dv - _EPS:
                        v, r = v0 - dv, Reason.ACCEL_LIMIT
                    if r:
                        n = p + v * dt  # a request within the limits passes bit for bit
                    if n > p and abs(af.force) >= falarm_t[i]:
                        n, r = p, Reason.FORCE_ALARM
                    hi = tmax_t[i]
                    lo = tmin_t[i]
                    if n > hi and n > p:
                        n, r = (hi if hi > p else p), Reason.TRAVEL_LIMIT
                    elif n < lo and n < p:
                        n, r = (lo if lo < p else p), Reason.TRAVEL_LIMIT
                if r and _RANK[r] > rank:
                    reason, rank, axis_i = r, _RANK[r], i
            new[i] = n

        if est_valid and not hold_all:
            phase = objective.phase
            r, i = self._geometry(new, fbs, gap, cpl, phase.startswith("hand_in_hand"), objective.part_mcs)
            if r and _RANK[r] > rank:
                reason, rank, axis_i = r, _RANK[r], i

        for i in range(len(names)):
            n = new[i]
            p = target[i]
            if n != n:  # noqa: PLR0124
                # a drive whose position was never known: nothing to track, keep the target finite
                c = cmds[i].target
                cmds[i].target = c if _isfinite(c) else 0.0
                vel[i] = 0.0
                continue
            cmds[i].target = n
            if n != p:
                vel[i] = (n - p) / dt
                target[i] = n
            else:
                vel[i] = 0.0
        if not reason:
            return _OK
        hold_verdict = self._hold_verdicts.get(Reason(reason))
        if hold_verdict is not None:
            return hold_verdict
        return self._verdict(Reason(reason), axis_i, fbs, estimate)

    def _geometry(
        self,
        new: list[float],
        fbs: list[AxisFeedback],
        gap: float,
        cpl: float,
        hih: bool,
        parting: bool,
    ) -> tuple[Reason, int]:
        """Invariants 2 and 5 on the worst-case tip motion; holds offending changes in ``new``.

        While the MCs part after crossing (``Objective.part_mcs``) the gap ceiling is raised by
        ``procedure.withdraw_distance``; the floor is unchanged.
        """
        target = self.target
        reason: Reason = Reason.OK
        axis_i = -1
        for ia, ir, lo, hi, is_coupling in self._pairs:
            if is_coupling and not hih:
                continue
            value = cpl if is_coupling else gap
            ceiling = hi + self._part_extra if parting and not is_coupling else hi
            pa, pr = target[ia], target[ir]
            xa, xr = fbs[ia].position, fbs[ir].position
            # for both pairs an insertion increase of either axis decreases the distance; holding
            # one change can worsen the other bound, so repeat until nothing more is held
            for _ in range(3):
                na, nr = new[ia], new[ir]
                low = value - max(0.0, na - xa) - max(0.0, nr - xr)
                high = value + max(0.0, xa - na) + max(0.0, xr - nr)
                block_adv = value < lo or low < lo
                block_ret = value > ceiling or high > ceiling
                held = False
                for i, n, p in ((ia, na, pa), (ir, nr, pr)):
                    if (block_adv and n > p) or (block_ret and n < p):
                        new[i] = p
                        held = True
                        axis_i = i
                        if is_coupling:
                            reason = Reason.COUPLING
                        elif block_adv and n > p and value >= lo:
                            reason = Reason.GAP_FLOOR
                        else:
                            reason = Reason.GAP_WINDOW
                if not held:
                    break
        return reason, axis_i

    def _detect_fault(
        self,
        fbs: list[AxisFeedback],
        cmds: list[AxisCommand],
        estimate: Estimate,
        objective: Objective,
        estop: bool,
        bus_ok: bool,
    ) -> Verdict | None:
        if estop:
            return Verdict(Reason.ESTOP, "emergency stop pressed", True)
        if not bus_ok:
            return Verdict(Reason.BUS_FAULT, "bus fault (collision, bus error or SYNC loss)", True)
        was = self._was_enabled
        fstop = self._fstop
        for i, af in enumerate(fbs):
            st = af.state
            if cmds[i].goal != _GOAL_ENABLED:
                was[i] = False
            elif st == _ENABLED:
                was[i] = True
            elif was[i] and st in _STOPPED_STATES:
                name = self.axes[i]
                return Verdict(
                    Reason.DRIVE_FAULT, f"{name}: drive left OPERATION ENABLED into {st.name}", True, name
                )
            f = af.force
            if (f >= fstop[i] or -f >= fstop[i]) and f < _BIG and -f < _BIG:
                name = self.axes[i]
                return Verdict(
                    Reason.FORCE_STOP,
                    f"{name}: force {f:.3g} N >= force_stop {self._fstop[i]:g} N",
                    True,
                    name,
                )
        cpl = estimate.coupling
        in_range = 0.0 <= cpl <= self._cmax
        if estimate.valid and objective.phase.startswith("hand_in_hand") and not in_range:
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

    def _hold_latched(self, fbs: list[AxisFeedback], cmds: list[AxisCommand]) -> Verdict:
        target = self.target
        self._latched_cycles += 1
        late = self._latched_cycles > self._stop_cycles
        seen, escalated = self._stop_seen, self.escalated
        for i, af in enumerate(fbs):
            st = af.state
            if af.age_cycles > self._max_age:
                # silent (e.g. put in pre-operational by another node): its stop cannot be seen
                if late:
                    escalated[i] = True
            elif st in _AT_STOP:
                seen[i] = True
            elif st in _LEAVING_STOP and (seen[i] or late):
                # invariant 9: back out of its stop (another node's controlwords), or never
                # stopped: escalate within this cycle and for as long as the latch lasts
                escalated[i] = True
            cmds[i].escalate = escalated[i]
            pos = af.position
            if _isfinite(pos):
                target[i] = pos
            cmd = cmds[i]
            cmd.goal = _QUICK_STOP
            cmd.target = target[i] if _isfinite(target[i]) else 0.0
            self.velocity[i] = 0.0
        return self.latched_verdict

    def _verdict(self, reason: Reason, i: int, fbs: list[AxisFeedback], estimate: Estimate) -> Verdict:
        name = self.axes[i] if i >= 0 else ""
        if reason in (Reason.GAP_FLOOR, Reason.GAP_WINDOW):
            text = f"MC gap {estimate.gap:.3f} mm: {name} held to stay in [{self._gmin:g}...{self._gmax:g}]"
        elif reason == Reason.COUPLING:
            text = f"wire coupling {estimate.coupling:.3f} mm: {name} held to stay in [0...{self._cmax:g}]"
        elif reason == Reason.FORCE_ALARM:
            text = f"{name}: force {fbs[i].force:.3g} N >= force_alarm {self._falarm[i]:g} N: no advance"
        elif reason == Reason.TRAVEL_LIMIT:
            text = f"{name}: target limited to travel [{self._tmin[i]:g}...{self._tmax[i]:g}]"
        elif reason == Reason.SPEED_LIMIT:
            text = f"{name}: speed limited to {self._vmax[i]:g}/s"
        elif reason == Reason.ACCEL_LIMIT:
            text = f"{name}: acceleration limited to {self._amax[i]:g}/s^2"
        else:
            text = f"{name}: requested target not finite: held"
        return Verdict(reason, text, False, name)
