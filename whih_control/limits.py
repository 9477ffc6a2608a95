"""Motion limits and fault conditions as pure functions over plain numbers (no state, no I/O).

The shape of ros2_control's ``joint_limits``: each function takes where an axis is commanded
(``p``, the last target sent), how fast that target last moved (``v0``), what is requested
(``n``) and the cycle time ``dt``, and returns what may be sent. The supervisor
(:mod:`whih_control.safety`) composes them with permission, latch and acknowledge; these
functions are tested alone (``tests/test_limits.py``).

How the limits combine, per axis (invariants 3 and 4 of docs/DESIGN.md section 4):

- **Speed**: ``|v| <= v_max``.
- **Force alarm** ("no further advance"): no acceleration forward, only the braking ramp. An
  axis that advances under a force alarm keeps braking at ``a_max`` (``v <= v0 - a_max*dt``
  while ``v0 > 0``, then ``v <= 0``); retreat is free. Stopping dead in one cycle would break
  the acceleration limit; the force *stop* threshold is the fault that quick-stops.
- **Travel**, looked ahead: a target never leaves ``[travel_min, travel_max]``, and the speed
  toward a limit is capped so that one cycle at it plus braking at ``a_max`` (stopping distance
  ``v^2 / (2 a_max)``) still ends inside. The cap only shrinks as the axis closes in, and
  braking at ``a_max`` always satisfies it again one cycle later, so an axis that starts inside
  never needs to stop harder than ``a_max``. Outside the range only motion back toward it.
- **Acceleration** last: ``|v - v0| <= a_max*dt``. It bounds everything above, holds included:
  a *hold* is a ramped stop (:func:`hold`), never a frozen target. The one thing allowed to
  break it is a travel limit or the gap/coupling floor that the ramp itself would cross (a
  measurement showed less room than the look-ahead assumed): then the axis holds where it is.
  A fault's quick stop is not decided here (the drives ramp by their own 0x6085).
- **Gap and coupling** (:func:`geometry`, invariants 2 and 5): the worst case commanded
  distance between two tips, each running on for its stopping distance, stays in the window;
  an axis that would take it out brakes at ``a_max``; if even the hard worst case (without the
  stopping distances) leaves the window, the offending axis holds.

Velocities are those of the *target* (what the drive is asked to follow); ``n`` within every
limit passes bit for bit.
"""

from __future__ import annotations

import math

from whih_control.types import Reason

__all__ = [
    "approach_speed",
    "brake_velocity",
    "enforce_axis",
    "geometry",
    "hold",
    "imaging_lost",
    "left_enabled",
    "stale",
    "stall_limit",
    "stalled",
    "stopping_distance",
    "worst_case",
]

_sqrt = math.sqrt
_OK = Reason.OK
_SPEED = Reason.SPEED_LIMIT
_ACCEL = Reason.ACCEL_LIMIT
_TRAVEL = Reason.TRAVEL_LIMIT
_FORCE = Reason.FORCE_ALARM
_EPS = 1e-9
"""Slack on the speed and acceleration tests, so that a request at a limit passes unchanged."""


# ---------------------------------------------------------------------------- conditions


def stale(age_cycles: int, max_age_cycles: int) -> bool:
    """Feedback older than the allowed number of cycles (invariant 1): the one definition."""
    return age_cycles > max_age_cycles


def left_enabled(was_enabled: bool, enabled_now: bool) -> bool:
    """A drive seen OPERATION ENABLED under an ENABLED goal is no longer there (e.g. safe torque
    off, its own fault, a quick stop it took): the one definition, always a fault."""
    return was_enabled and not enabled_now


def imaging_lost(imaging_age_s: float, imaging_max_age_s: float) -> bool:
    """Imaging gone for twice its allowed age (first the procedure pauses, then this faults)."""
    return imaging_age_s > 2.0 * imaging_max_age_s


def stall_limit(heartbeat_timeout_s: float) -> float:
    """Longest the master may go without a cycle: half the drives' consumer timeout for its
    heartbeat (``bus.master_heartbeat_timeout_ms``).

    A late cycle alone is no hazard: the drives hold their last target and feedback staleness
    is counted per cycle (:func:`stale`). What a stall risks is the drives' own watchdog: a
    drive quick-stops once the master's heartbeat has been silent for the timeout, and a stall
    of ``timeout - heartbeat period`` may already do that. At half the timeout the master names
    its own stall first whenever the heartbeat period is below half the timeout (sim.toml: 20 of
    100 ms), while the late cycles a busy application thread causes (a few ms; bench_attended.py)
    stay far below it. ``safety.feedback_max_age_cycles`` periods (5 ms at 400 Hz) would fault
    on those.
    """
    return 0.5 * heartbeat_timeout_s


def stalled(stall_s: float, heartbeat_timeout_s: float) -> bool:
    """The master did not cycle for longer than :func:`stall_limit` (a frozen or starved
    process, an injected freeze): the one definition, in real and simulated time. ``stall_s``
    is the time between two cycles beyond one period, on the master's own clock."""
    return stall_s > stall_limit(heartbeat_timeout_s)


# ---------------------------------------------------------------------------- one axis


def brake_velocity(v0: float, dv: float) -> float:
    """Velocity one braking cycle after ``v0``: toward 0 by at most ``dv`` (= ``a_max * dt``)."""
    if v0 > dv:
        return v0 - dv
    if v0 < -dv:
        return v0 + dv
    return 0.0


def stopping_distance(v: float, a_max: float) -> float:
    """Distance to rest from speed ``v`` braking at ``a_max`` (the continuous bound, which is
    never less than the per-cycle ramp's)."""
    return v * v / (2.0 * a_max)


def approach_speed(room: float, dt: float, a_max: float) -> float:
    """Largest speed toward a limit ``room`` ahead from which one cycle at that speed and then
    braking at ``a_max`` stops at the limit: ``v*dt + v^2/(2 a_max) <= room`` (0 if no room)."""
    if room <= 0.0:
        return 0.0
    return a_max * (_sqrt(dt * dt + 2.0 * room / a_max) - dt)


def _travel(p: float, n: float, tmin: float, tmax: float) -> float:
    """The hard travel clamp: never beyond a limit, and outside it only back toward it."""
    if n > tmax and n > p:
        return tmax if tmax > p else p
    if n < tmin and n < p:
        return tmin if tmin < p else p
    return n


def hold(p: float, v0: float, dt: float, a_max: float, tmin: float, tmax: float) -> float:
    """Target of a held axis: a ramped stop, the velocity brought toward 0 by ``a_max * dt``."""
    v = brake_velocity(v0, a_max * dt)
    if v == 0.0:
        return p
    return _travel(p, p + v * dt, tmin, tmax)


def enforce_axis(
    p: float,
    v0: float,
    n: float,
    dt: float,
    v_max: float,
    a_max: float,
    tmin: float,
    tmax: float,
    no_advance: bool,
) -> tuple[float, Reason]:
    """Limit the request ``n`` (speed, force alarm, travel look-ahead, acceleration, travel).

    Returns the target to send and why it differs from ``n`` (``Reason.OK`` if it does not).
    ``no_advance`` is the force alarm. Every input is assumed finite, ``dt > 0``.
    """
    v = (n - p) / dt
    r = _OK
    if v > v_max + _EPS:
        v, r = v_max, _SPEED
    elif v < -v_max - _EPS:
        v, r = -v_max, _SPEED
    dv = a_max * dt
    if no_advance:
        cap = v0 - dv if v0 > dv else 0.0
        if v > cap:
            v, r = cap, _FORCE
    # the square root only when the stopping point would pass the limit
    if v > 0.0 and v * dt + v * v / (2.0 * a_max) > tmax - p:
        up = approach_speed(tmax - p, dt, a_max)
        if v > up + _EPS:
            v, r = up, _TRAVEL
    elif v < 0.0 and -v * dt + v * v / (2.0 * a_max) > p - tmin:
        down = -approach_speed(p - tmin, dt, a_max)
        if v < down - _EPS:
            v, r = down, _TRAVEL
    # never faster than a_max either way: the limits above are braked to, not jumped to
    if v > v0 + dv + _EPS:
        v = v0 + dv
        if not r:
            r = _ACCEL
    elif v < v0 - dv - _EPS:
        v = v0 - dv
        if not r:
            r = _ACCEL
    if not r and _travel(p, n, tmin, tmax) == n:  # (n is within travel, or on its way back)
        return n, r  # a request within the limits passes bit for bit
    out = _travel(p, p + v * dt, tmin, tmax)
    return out, (_TRAVEL if out != p + v * dt else r)


# ---------------------------------------------------------------------------- two tips


def worst_case(
    value: float, na: float, nr: float, xa: float, xr: float, sa: float, sr: float
) -> tuple[float, float]:
    """Lowest and highest the distance between two tips can become.

    ``value`` is the estimated distance now, ``x`` the actual insertions, ``n`` the targets and
    ``s`` the stopping distances (signed: > 0 advancing). An insertion increase of either axis
    decreases the distance; slack only shortens a tip's motion, so a tip moves at most from its
    actual position to where its target comes to rest.
    """
    ea = na + sa
    er = nr + sr
    low = value - max(0.0, max(na, ea) - xa) - max(0.0, max(nr, er) - xr)
    high = value + max(0.0, xa - min(na, ea)) + max(0.0, xr - min(nr, er))
    return low, high


def geometry(
    new: list[float],
    target: list[float],
    vel: list[float],
    pos: list[float],
    amax: tuple[float, ...],
    dt: float,
    ia: int,
    ir: int,
    value: float,
    lo: float,
    hi: float,
) -> tuple[int, int]:
    """Keep the distance between the tips of axes ``ia`` and ``ir`` within ``[lo, hi]``.

    ``new`` holds the targets about to be sent (changed in place), ``target``/``vel`` the last
    ones and their velocities, ``pos`` the actual positions. Returns ``(kind, axis)``: kind 0
    nothing changed, 1 an advance was braked or held (floor), 2 a retreat (ceiling); ``axis``
    the last axis changed (-1 if none). When ``value`` is already outside the window, motion that
    takes it further out is braked and motion back toward it passes.
    """
    kind = 0
    axis = -1
    xa, xr = pos[ia], pos[ir]
    pa, pr = target[ia], target[ir]
    aa, ar = amax[ia], amax[ir]
    # braking one axis can make the other's bound worse: repeat until nothing more changes.
    # Only an axis that takes the distance out of the window (its own share of the worst case)
    # is braked, and only if it moves that way.
    for _ in range(3):
        na, nr = new[ia], new[ir]
        va, vr = (na - pa) / dt, (nr - pr) / dt
        ea = na + va * abs(va) / (2.0 * aa)
        er = nr + vr * abs(vr) / (2.0 * ar)
        # worst_case(), written out: this runs every cycle
        ua = na if na > ea else ea
        ur = nr if nr > er else er
        da = na if na < ea else ea
        dr = nr if nr < er else er
        low = value - (ua - xa if ua > xa else 0.0) - (ur - xr if ur > xr else 0.0)
        high = value + (xa - da if xa > da else 0.0) + (xr - dr if xr > dr else 0.0)
        block_adv = value < lo or low < lo
        block_ret = value > hi or high > hi
        if not (block_adv or block_ret):
            return kind, axis
        changed = False
        for i, n, e, p, x, a in ((ia, na, ea, pa, xa, aa), (ir, nr, er, pr, xr, ar)):
            b = p + brake_velocity(vel[i], a * dt) * dt
            if block_adv and n > p and b < n and max(n, e) > x:
                new[i], kind, axis, changed = b, 1, i, True
            elif block_ret and n < p and b > n and min(n, e) < x:
                new[i], kind, axis, changed = b, 2, i, True
        if not changed:
            break
    # the ramp itself would leave the window (less room than the look-ahead assumed): hold the
    # axis with the larger share first (ia on a tie), then see whether the other still has to
    for _ in range(2):
        na, nr = new[ia], new[ir]
        low, high = worst_case(value, na, nr, xa, xr, 0.0, 0.0)
        if (value < lo or low < lo) and (na > pa or nr > pr):
            da = na - xa if na > pa else -math.inf
            dr = nr - xr if nr > pr else -math.inf
            i, p, k = (ia, pa, 1) if da >= dr else (ir, pr, 1)
        elif (value > hi or high > hi) and (na < pa or nr < pr):
            da = xa - na if na < pa else -math.inf
            dr = xr - nr if nr < pr else -math.inf
            i, p, k = (ia, pa, 2) if da >= dr else (ir, pr, 2)
        else:
            break
        new[i], kind, axis = p, k, i
    return kind, axis
