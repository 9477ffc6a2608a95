"""The pure limits (whih_control.limits) alone: each function, then sequences of cycles.

The sequences push axes past their speed and acceleration limits for many cycles, toward travel
limits and toward each other, and check invariants 2-5 of docs/DESIGN.md section 4 on every
cycle with nothing exempted: an axis that starts inside its range at rest never needs to stop
harder than its a_max.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whih_control import limits
from whih_control.types import Reason

TOL = 1e-9
PERIOD = 0.0025

DT = st.floats(0.5 * PERIOD, 1.5 * PERIOD)
VMAX = st.floats(1.0, 50.0)
AMAX = st.floats(10.0, 1000.0)


def close_below(a: float, b: float) -> bool:
    """``a <= b`` up to rounding."""
    return a <= b + 1e-9 * max(1.0, abs(b))


# ---------------------------------------------------------------------------- single functions


@given(st.floats(-100.0, 100.0), st.floats(1e-6, 10.0))
def test_brake_velocity_slows_toward_zero_by_at_most_dv(v0: float, dv: float) -> None:
    v = limits.brake_velocity(v0, dv)
    assert abs(v) <= abs(v0) and v * v0 >= 0
    assert close_below(abs(v0 - v), dv)
    assert (v == 0.0) == (abs(v0) <= dv)
    if v != 0.0:
        assert abs(v0 - v) == pytest.approx(dv)  # braking is at a_max, not gentler


@given(st.floats(0.0, 50.0), DT, AMAX)
def test_approach_speed_stops_exactly_at_the_limit(room: float, dt: float, amax: float) -> None:
    v = limits.approach_speed(room, dt, amax)
    assert v >= 0.0
    assert v * dt + limits.stopping_distance(v, amax) == pytest.approx(room, abs=1e-9)
    assert limits.approach_speed(-room - 1e-3, dt, amax) == 0.0


@given(st.floats(-5.0, 5.0), st.floats(-60.0, 60.0), DT, AMAX)
def test_hold_ramps_to_rest_within_the_stopping_distance(
    p0: float, v0: float, dt: float, amax: float
) -> None:
    """A hold never stops harder than a_max and covers at most v0^2/(2 a_max) (invariant 3)."""
    p, v = p0, v0
    cycles = 0
    while v != 0.0:
        n = limits.hold(p, v, dt, amax, -1e6, 1e6)
        v_new = (n - p) / dt
        assert close_below(abs(v_new - v), amax * dt), "a hold stopped harder than a_max"
        assert v_new * v >= 0 and abs(v_new) < abs(v), "a hold sped up or turned"
        p, v = n, v_new
        cycles += 1
        assert cycles <= math.ceil(abs(v0) / (amax * dt)) + 1
    assert abs(p - p0) <= limits.stopping_distance(v0, amax) + 1e-9
    assert limits.hold(p, 0.0, dt, amax, -1.0, 1.0) == p


def test_hold_moves_at_the_braked_speed() -> None:
    # binary-exact numbers: a_max * dt = 0.5, so the braked speed is exactly 1.0, -1.0, 0.5
    for v in (1.0, -1.0, 0.5):
        assert limits.hold(2.0, v + math.copysign(0.5, v), 0.25, 2.0, -5.0, 5.0) == 2.0 + v * 0.25


def test_hold_never_leaves_travel() -> None:
    assert limits.hold(0.99, 20.0, PERIOD, 10.0, -1.0, 1.0) == 1.0
    assert limits.hold(-0.99, -20.0, PERIOD, 10.0, -1.0, 1.0) == -1.0
    assert limits.hold(1.5, 20.0, PERIOD, 10.0, -1.0, 1.0) == 1.5  # outside: no further out


def test_request_within_every_limit_passes_bit_for_bit() -> None:
    n = 0.1 + 1e-4
    out, r = limits.enforce_axis(0.1, 0.04, n, PERIOD, 20.0, 200.0, -200.0, 200.0, False)
    assert out == n and r == Reason.OK


@pytest.mark.parametrize(
    ("v0", "request_v", "reason", "expected_v"),
    [
        (0.0, 100.0, Reason.SPEED_LIMIT, 0.5),  # speed first, then the accel ramp (reason kept)
        (0.0, 5.0, Reason.ACCEL_LIMIT, 0.5),
        (0.0, -5.0, Reason.ACCEL_LIMIT, -0.5),
        (10.0, 0.0, Reason.ACCEL_LIMIT, 9.5),  # asked to stop dead: ramps down
        (-10.0, 0.0, Reason.ACCEL_LIMIT, -9.5),
    ],
)
def test_enforce_axis_examples(v0: float, request_v: float, reason: Reason, expected_v: float) -> None:
    out, r = limits.enforce_axis(0.0, v0, request_v * PERIOD, PERIOD, 20.0, 200.0, -200.0, 200.0, False)
    assert r == reason
    assert out / PERIOD == pytest.approx(expected_v)


def test_force_alarm_allows_only_the_braking_ramp_forward_and_free_retreat() -> None:
    out, r = limits.enforce_axis(0.0, 10.0, 20.0 * PERIOD, PERIOD, 20.0, 200.0, -200.0, 200.0, True)
    assert r == Reason.FORCE_ALARM and out / PERIOD == pytest.approx(9.5)
    out, r = limits.enforce_axis(0.0, 0.2, 1.0 * PERIOD, PERIOD, 20.0, 200.0, -200.0, 200.0, True)
    assert r == Reason.FORCE_ALARM and out == 0.0
    out, r = limits.enforce_axis(0.0, 0.0, -1e-4, PERIOD, 20.0, 200.0, -200.0, 200.0, True)
    assert r == Reason.OK and out == -1e-4


def test_travel_is_braked_to_before_it_is_reached() -> None:
    """At 20 mm/s with a_max 200 the stopping distance is 1 mm: the cap starts before that."""
    out, r = limits.enforce_axis(0.0, 20.0, 20.0 * PERIOD, PERIOD, 20.0, 200.0, -200.0, 0.9, False)
    assert r == Reason.TRAVEL_LIMIT and out / PERIOD == pytest.approx(19.5)  # braking at a_max
    out, r = limits.enforce_axis(5.0, 0.0, 4.99, PERIOD, 20.0, 200.0, -1.0, 1.0, False)
    assert r == Reason.ACCEL_LIMIT and 4.99 < out < 5.0  # outside: back toward the range only
    out, r = limits.enforce_axis(5.0, 0.0, 6.0, PERIOD, 20.0, 200.0, -1.0, 1.0, False)
    assert r == Reason.TRAVEL_LIMIT and out == 5.0


def test_in_a_short_range_the_limit_ahead_is_the_one_braked_for() -> None:
    """Running down at 10/s in a 0.2 wide range, the far upper limit must not hide the lower one."""
    out, r = limits.enforce_axis(0.0, -10.0, -10.0 * PERIOD, PERIOD, 20.0, 200.0, -0.1, 0.1, False)
    assert r == Reason.TRAVEL_LIMIT and out / PERIOD == pytest.approx(-9.5)
    out, r = limits.enforce_axis(0.0, 10.0, 10.0 * PERIOD, PERIOD, 20.0, 200.0, -0.1, 0.1, False)
    assert r == Reason.TRAVEL_LIMIT and out / PERIOD == pytest.approx(9.5)


def test_conditions_have_one_definition_each() -> None:
    assert not limits.stale(2, 2) and limits.stale(3, 2)
    assert limits.left_enabled(True, False)
    assert not limits.left_enabled(False, False) and not limits.left_enabled(True, True)
    assert not limits.imaging_lost(1.0, 0.5) and limits.imaging_lost(1.01, 0.5)
    assert not limits.stalled(0.05, 0.1) and limits.stalled(0.0501, 0.1)


TIMEOUT = st.floats(0.01, 10.0)
"""The drives' consumer timeout for the master's heartbeat (s)."""


@given(st.floats(-1.0, 20.0), st.floats(-1.0, 20.0), TIMEOUT)
def test_stalled_is_one_threshold_and_monotone(a: float, b: float, timeout: float) -> None:
    """One threshold, half the heartbeat timeout; a longer stall is never judged milder."""
    assert limits.stalled(a, timeout) == (a > limits.stall_limit(timeout))
    assert limits.stall_limit(timeout) == 0.5 * timeout
    lo, hi = min(a, b), max(a, b)
    assert not limits.stalled(lo, timeout) or limits.stalled(hi, timeout)


@given(TIMEOUT, st.floats(0.0, 0.5), st.floats(0.0, 1.0))
def test_a_stall_the_drives_watchdog_may_act_on_is_always_the_masters_fault(
    timeout: float, hb_share: float, extra: float
) -> None:
    """The drives quick-stop once the master's heartbeat is silent for longer than the timeout;
    a stall of ``s`` is a silence of up to ``s`` + one heartbeat period. With the heartbeat
    period at most half the timeout, every stall after which a drive may have stopped by itself
    is judged a stall of the master (its own cause, named before the drives' EMCYs)."""
    hb = hb_share * timeout
    stall = (timeout - hb) * (1.0 + extra) + 1e-9
    assert stall + hb > timeout
    assert limits.stalled(stall, timeout)


@given(TIMEOUT, st.floats(0.0, 1.0))
def test_a_cycle_late_by_less_than_the_limit_is_no_stall(timeout: float, share: float) -> None:
    """Late cycles (a busy application, a slow disk) below half the timeout only hold, never fault."""
    assert not limits.stalled(share * limits.stall_limit(timeout), timeout)
    assert not limits.stalled(0.0, timeout)


# ---------------------------------------------------------------------------- sequences


@st.composite
def requests(draw: st.DrawFn, vmax: float) -> list[float]:
    """Requested velocities, cycle by cycle: runs that push at up to 10x v_max one way, jumps."""
    out: list[float] = []
    for _ in range(draw(st.integers(1, 4))):
        v = draw(
            st.one_of(st.floats(-10.0 * vmax, 10.0 * vmax), st.sampled_from([0.0, 10 * vmax, -10 * vmax]))
        )
        out += [v] * draw(st.integers(1, 50))
    return out


@given(st.data(), VMAX, AMAX, st.floats(0.2, 5.0))
def test_one_axis_never_breaks_speed_accel_or_travel(
    data: st.DataObject, vmax: float, amax: float, half_span: float
) -> None:
    """Invariant 3 with no exemption: speed, acceleration (holds and braking included) and travel,
    for an axis pushed at and past its limits, toward its travel limits, under force alarms."""
    draw = data.draw
    tmin, tmax = -half_span, half_span
    p = draw(st.floats(tmin, tmax))
    v0 = 0.0
    for v_req in draw(requests(vmax)):
        dt = draw(DT)
        alarm = draw(st.integers(0, 9)) == 0
        held = draw(st.integers(0, 9)) == 0
        if held:
            n = limits.hold(p, v0, dt, amax, tmin, tmax)
            r = Reason.OK
        else:
            n, r = limits.enforce_axis(p, v0, p + v_req * dt, dt, vmax, amax, tmin, tmax, alarm)
        v = (n - p) / dt
        assert close_below(abs(v), vmax), f"speed {v} > {vmax}"
        assert close_below(abs(v - v0), amax * dt), f"accel {(v - v0) / dt} > {amax}"
        assert tmin <= n <= tmax, f"target {n} left travel [{tmin}, {tmax}]"
        if held:
            assert v * v0 >= 0 and abs(v) <= abs(v0), "a hold sped up or turned"
        else:
            if (v_req >= 0) == (v0 >= 0) and v_req != 0:
                assert v * v_req >= 0, f"asked {v_req:+g}, moved {v:+g} (v0 {v0:+g})"
            if alarm and v > 0:
                assert v0 > 0 and close_below(v, v0 - amax * dt), "advance under a force alarm"
            if r == Reason.OK:
                assert n == p + v_req * dt
        p, v0 = n, v


@given(st.data())
def test_two_tips_never_cross_the_floor_or_stop_harder_than_a_max(data: st.DataObject) -> None:
    """Invariant 2/5 with 3: two axes pushed toward each other (and apart) at up to 10x their
    speed, the tips following their targets: the worst-case distance stays in the window, and
    the look-ahead brakes early enough that no axis is ever held abruptly."""
    draw = data.draw
    lo, hi = 2.0, 20.0
    vmax, amax = (10.0, 10.0), (100.0, 150.0)
    # from anywhere in the window, often close to the floor or the ceiling (reached at speed)
    value = draw(st.one_of(st.floats(lo + 0.5, hi - 0.5), st.floats(lo, lo + 0.5), st.floats(hi - 0.5, hi)))
    target = [0.0, 0.0]
    vel = [0.0, 0.0]
    pos = [0.0, 0.0]
    plan = [draw(requests(vmax[0])), draw(requests(vmax[1]))]
    for k in range(min(len(plan[0]), len(plan[1]))):
        dt = draw(DT)
        new = [0.0, 0.0]
        for i in (0, 1):
            new[i], _ = limits.enforce_axis(
                target[i], vel[i], target[i] + plan[i][k] * dt, dt, vmax[i], amax[i], -1e3, 1e3, False
            )
        limits.geometry(new, target, vel, pos, amax, dt, 0, 1, value, lo, hi)
        low, high = limits.worst_case(value, new[0], new[1], pos[0], pos[1], 0.0, 0.0)
        assert low >= lo - TOL and high <= hi + TOL, f"worst case [{low}, {high}] left [{lo}, {hi}]"
        for i in (0, 1):
            v = (new[i] - target[i]) / dt
            assert close_below(abs(v - vel[i]), amax[i] * dt), f"axis {i}: accel {(v - vel[i]) / dt}"
            vel[i] = v
        # the tips reach their targets; an insertion increase of either axis closes the distance
        value -= (new[0] - pos[0]) + (new[1] - pos[1])
        target[:] = new
        pos[:] = new
    assert lo - TOL <= value <= hi + TOL


def test_geometry_holds_when_even_the_ramp_would_cross() -> None:
    """A measurement showing less room than assumed: the advancing axis holds (the exemption)."""
    new = [0.01, 0.0]
    target, vel, pos = [0.0, 0.0], [4.0, 0.0], [0.0, 0.0]
    kind, axis = limits.geometry(new, target, vel, pos, (100.0, 100.0), PERIOD, 0, 1, 2.0, 2.0, 20.0)
    assert (kind, axis) == (1, 0) and new == [0.0, 0.0]


def test_geometry_holds_the_retreating_axis_when_even_its_ramp_would_cross_the_ceiling() -> None:
    """The mirror at the ceiling: axis 1 withdraws at 10 mm/s 0.01 below it, its ramp alone
    (without the stopping distance) would cross: it holds, and the answer says retreat (2) and
    names axis 1. Axis 0, at rest, is left alone."""
    new = [0.0, -0.025]
    target, vel, pos = [0.0, 0.0], [0.0, -10.0], [0.0, 0.0]
    kind, axis = limits.geometry(new, target, vel, pos, (100.0, 100.0), PERIOD, 0, 1, 19.99, 2.0, 20.0)
    assert (kind, axis) == (2, 1) and new == [0.0, 0.0]


def test_geometry_brakes_the_axis_that_closes_and_lets_the_other_go() -> None:
    new = [0.025, -0.01]  # axis 0 advances at 10 mm/s, axis 1 withdraws
    target, vel, pos = [0.0, 0.0], [10.0, -4.0], [0.0, 0.0]
    kind, axis = limits.geometry(new, target, vel, pos, (100.0, 100.0), PERIOD, 0, 1, 2.5, 2.0, 20.0)
    assert (kind, axis) == (1, 0)
    assert new[0] == pytest.approx((10.0 - 100.0 * PERIOD) * PERIOD) and new[1] == -0.01


def test_braking_one_tip_can_take_the_other_out_and_the_next_pass_brakes_that_one_too() -> None:
    """Braking one axis can make the other's bound worse (why the braking repeats): axis 0
    advances toward the floor with its tip a little ahead of its target, so its braked target
    falls behind the tip and the distance may grow by that lag; axis 1, withdrawing, kept the
    narrow ceiling only by less than that. Both end on their braking ramps, inside the window."""
    new = [0.025, -0.01]  # axis 0 at 10 mm/s, axis 1 withdraws at 4
    target, vel, pos = [0.0, 0.0], [10.0, -4.0], [0.0245, 0.0]
    value, hi = 2.4, 2.4901
    kind, axis = limits.geometry(new, target, vel, pos, (100.0, 100.0), PERIOD, 0, 1, value, 2.0, hi)
    assert (kind, axis) == (2, 1)
    assert new == pytest.approx([(10.0 - 100.0 * PERIOD) * PERIOD, (-4.0 + 100.0 * PERIOD) * PERIOD])
    v = [(new[i] - target[i]) / PERIOD for i in range(2)]
    stop = [limits.stopping_distance(v[i], 100.0) * (1.0 if v[i] > 0 else -1.0) for i in range(2)]
    _, high = limits.worst_case(value, new[0], new[1], pos[0], pos[1], stop[0], stop[1])
    assert high <= hi


def test_braking_a_retreat_can_take_the_other_tip_below_the_floor_and_the_next_pass_brakes_it() -> None:
    """The mirror of the case above (every insertion negated, the distance reflected in the
    window): braking axis 0's retreat for the ceiling takes axis 1's advance below the floor;
    the next pass brakes axis 1 (an advance, at the floor)."""
    new = [-0.025, 0.01]
    target, vel, pos = [0.0, 0.0], [-10.0, 4.0], [-0.0245, 0.0]
    lo, hi = 2.0, 2.4901
    value = lo + hi - 2.4
    kind, axis = limits.geometry(new, target, vel, pos, (100.0, 100.0), PERIOD, 0, 1, value, lo, hi)
    assert (kind, axis) == (1, 1)
    assert new == pytest.approx([-(10.0 - 100.0 * PERIOD) * PERIOD, -(-4.0 + 100.0 * PERIOD) * PERIOD])
    v = [(new[i] - target[i]) / PERIOD for i in range(2)]
    stop = [limits.stopping_distance(v[i], 100.0) * (1.0 if v[i] > 0 else -1.0) for i in range(2)]
    low, _ = limits.worst_case(value, new[0], new[1], pos[0], pos[1], stop[0], stop[1])
    assert low >= lo


# ---------------------------------------------------------------------------- least intervention


def _allowed(
    p: float, v0: float, v: float, dt: float, vmax: float, amax: float, lims: tuple[float, float, bool]
) -> bool:
    """``v`` keeps every limit of the module docstring (no tolerance): speed, acceleration, the
    force alarm's braking ramp, travel and the travel look-ahead (one cycle at ``v`` plus braking
    at ``a_max`` ends inside)."""
    tmin, tmax, alarm = lims
    dv = amax * dt
    if abs(v) > vmax or abs(v - v0) > dv:
        return False
    if alarm and v > (v0 - dv if v0 > dv else 0.0):
        return False
    reach = v * dt + v * v / (2.0 * amax)
    if v > 0.0 and (p + v * dt > tmax or reach > tmax - p):
        return False
    return not (v < 0.0 and (p + v * dt < tmin or -v * dt + v * v / (2.0 * amax) > p - tmin))


@st.composite
def axis_cases(draw: st.DrawFn) -> tuple[float, float, float, float, float, float, float, float, bool]:
    """One cycle of one axis over the functions' whole domain: travel anywhere (not only around 0),
    slow and fast axes, cycle times up to seconds, positions near, at and beyond the limits."""
    centre = draw(st.one_of(st.just(0.0), st.floats(-100.0, 100.0)))
    half = draw(st.floats(1e-3, 50.0))
    tmin, tmax = centre - half, centre + half
    vmax = draw(st.floats(0.5, 400.0))
    amax = draw(st.floats(0.05, 4000.0))
    dt = draw(st.one_of(DT, st.floats(1e-4, 3.0)))
    p = draw(
        st.one_of(
            st.floats(tmin, tmax),
            st.floats(tmax - 0.05 * half, tmax),
            st.floats(tmin, tmin + 0.05 * half),
            st.floats(tmin - half, tmax + half),
        )
    )
    v0 = draw(st.one_of(st.floats(-vmax, vmax), st.sampled_from([0.0, vmax, -vmax])))
    v_req = draw(st.one_of(st.floats(-10.0 * vmax, 10.0 * vmax), st.floats(-1.0, 1.0)))
    return p, v0, p + v_req * dt, dt, vmax, amax, tmin, tmax, draw(st.booleans())


@given(axis_cases())
def test_enforce_axis_changes_a_request_only_as_far_as_a_limit_needs(
    case: tuple[float, float, float, float, float, float, float, float, bool],
) -> None:
    """The output keeps every limit, a request within them passes bit for bit, and a changed
    request is moved onto the bound that stopped it, no further: any speed between the output and
    the request breaks a limit (or the output is the hard travel clamp)."""
    p, v0, n, dt, vmax, amax, tmin, tmax, alarm = case
    out, r = limits.enforce_axis(p, v0, n, dt, vmax, amax, tmin, tmax, alarm)
    v_req, v = (n - p) / dt, (out - p) / dt
    lims = (tmin, tmax, alarm)
    scale = 1e-6 * max(1.0, abs(v), abs(v_req))
    assert close_below(abs(v), vmax + scale)
    if tmin <= p <= tmax:
        assert tmin <= out <= tmax
    else:  # outside: only back toward the range, never beyond its other end
        assert min(p, tmin) <= out <= max(p, tmax) and (out - p) * (p - tmin) <= 0.0
    if out not in (tmin, tmax, p):
        assert close_below(abs(v - v0), amax * dt + scale), "accelerated harder than a_max"
    if r == Reason.OK:
        assert out == n
        # within every limit, up to the slack for rounding
        assert abs(v_req) <= vmax + scale and abs(v_req - v0) <= amax * dt + scale
        if tmin <= p <= tmax and v_req > 0.0:
            assert v_req * dt + v_req * v_req / (2.0 * amax) <= tmax - p + scale * (dt + vmax / amax)
        if tmin <= p <= tmax and v_req < 0.0:
            assert -v_req * dt + v_req * v_req / (2.0 * amax) <= p - tmin + scale * (dt + vmax / amax)
        if alarm:
            assert v_req <= (v0 - amax * dt if v0 > amax * dt else 0.0) + scale
    elif abs(v_req - v) > scale:
        w = v + math.copysign(scale, v_req - v)
        assert not _allowed(p, v0, w, dt, vmax, amax, lims), (
            f"asked {v_req:+.9g}, sent {v:+.9g} ({r.name}), but {w:+.9g} keeps every limit"
        )


@given(VMAX, AMAX, DT, st.floats(-5.0, 5.0), st.sampled_from([1.0, -1.0]))
def test_a_request_exactly_at_the_speed_limit_passes(
    vmax: float, amax: float, dt: float, p: float, sign: float
) -> None:
    """At v_max (already there) is within the limit: bit for bit, nothing to report."""
    n = p + sign * vmax * dt
    assert limits.enforce_axis(p, sign * vmax, n, dt, vmax, amax, -1e6, 1e6, False) == (n, Reason.OK)


@given(VMAX, AMAX, DT, st.floats(-5.0, 5.0), st.data())
def test_a_request_exactly_at_the_acceleration_limit_passes(
    vmax: float, amax: float, dt: float, p: float, data: st.DataObject
) -> None:
    dv = amax * dt
    v0 = data.draw(st.floats(-vmax + dv, vmax - dv)) if vmax > dv else 0.0
    for v in (v0 + dv, v0 - dv):
        if abs(v) <= vmax * (1.0 - 1e-9):
            n = p + v * dt
            assert limits.enforce_axis(p, v0, n, dt, vmax, amax, -1e6, 1e6, False) == (n, Reason.OK)


@given(st.floats(1e-4, 1.0), DT, AMAX, st.floats(-5.0, 5.0), st.sampled_from([1.0, -1.0]))
def test_a_request_exactly_at_the_travel_approach_speed_passes(
    room: float, dt: float, amax: float, p: float, sign: float
) -> None:
    """Running toward a travel limit at the largest speed that still stops there (the speed the
    controller plans with, ``approach_speed``) is within the limit: passes bit for bit."""
    v = limits.approach_speed(room, dt, amax)
    tmin, tmax = (p - 10.0, p + room) if sign > 0 else (p - room, p + 10.0)
    n = p + sign * v * dt
    assert limits.enforce_axis(p, sign * v, n, dt, 2.0 * v + 1.0, amax, tmin, tmax, False) == (n, Reason.OK)


def test_under_a_force_alarm_braking_exactly_at_a_max_or_resting_is_not_reported() -> None:
    # binary-exact numbers: a_max * dt = 0.5, so braking from 1.5 at a_max gives exactly 1.0
    assert limits.enforce_axis(0.0, 1.5, 0.25, 0.25, 4.0, 2.0, -5.0, 5.0, True) == (0.25, Reason.OK)
    assert limits.enforce_axis(1.0, 0.0, 1.0, 0.25, 4.0, 2.0, -5.0, 5.0, True) == (1.0, Reason.OK)


@given(*(st.floats(-5.0, 5.0) for _ in range(5)), st.floats(-2.0, 2.0), st.floats(-2.0, 2.0), st.data())
def test_worst_case_bounds_every_tip_motion_and_is_reached(
    value: float, na: float, nr: float, xa: float, xr: float, sa: float, sr: float, data: st.DataObject
) -> None:
    """Each tip ends anywhere between its actual position and where its target comes to rest (the
    target plus its signed stopping distance, slack only shortening the way); an insertion increase
    of either axis closes the distance. The bounds hold every such ending and are reached."""
    low, high = limits.worst_case(value, na, nr, xa, xr, sa, sr)
    ends_a = (min(xa, na, na + sa), max(xa, na, na + sa))
    ends_r = (min(xr, nr, nr + sr), max(xr, nr, nr + sr))
    ya = data.draw(st.floats(*ends_a))
    yr = data.draw(st.floats(*ends_r))
    d = value - (ya - xa) - (yr - xr)
    assert low - 1e-9 <= d <= high + 1e-9
    assert low == pytest.approx(value - (ends_a[1] - xa) - (ends_r[1] - xr), abs=1e-12)
    assert high == pytest.approx(value - (ends_a[0] - xa) - (ends_r[0] - xr), abs=1e-12)


def test_geometry_with_nothing_to_do_changes_nothing_and_says_so() -> None:
    new = [0.001, -0.001]
    kind, axis = limits.geometry(
        new, [0.0, 0.0], [0.4, -0.4], [0.0, 0.0], (100.0, 100.0), PERIOD, 0, 1, 4.5, 2.0, 20.0
    )
    assert (kind, axis) == (0, -1) and new == [0.001, -0.001]


def test_geometry_above_the_window_lets_the_closing_axis_go_and_holds_the_opening_one() -> None:
    """Already above the ceiling (before the approach closes it): the axis that closes passes, the
    one that would open it further is held (at rest: nothing to brake)."""
    new = [0.0005, -0.0005]
    kind, axis = limits.geometry(
        new, [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], (100.0, 100.0), PERIOD, 0, 1, 31.6, 2.0, 20.0
    )
    assert new == [0.0005, 0.0] and (kind, axis) == (2, 1)
    new = [-0.0005, 0.0005]  # and the other way round
    kind, axis = limits.geometry(
        new, [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], (100.0, 100.0), PERIOD, 0, 1, 31.6, 2.0, 20.0
    )
    assert new == [0.0, 0.0005] and (kind, axis) == (2, 0)


@st.composite
def geometry_cases(
    draw: st.DrawFn,
) -> tuple[list[float], list[float], list[float], list[float], tuple[float, float], float, float, float]:
    """One cycle of two tips: last targets, their velocities, actual positions off by a little or a lot, and
    requests that continue, brake, stop, jump or hold; the distance anywhere around the window."""
    dt = draw(DT)
    amax = (draw(AMAX), draw(AMAX))
    target = [draw(st.floats(-1.0, 1.0)) for _ in range(2)]
    vel = [draw(st.one_of(st.floats(-20.0, 20.0), st.just(0.0))) for _ in range(2)]
    # a tip a little off its target, or far (slack, a following error, a stale measurement)
    pos = [target[i] + draw(st.one_of(st.floats(-0.05, 0.05), st.floats(-3.0, 3.0))) for i in range(2)]
    new = []
    for i in range(2):
        braked = target[i] + limits.brake_velocity(vel[i], amax[i] * dt) * dt
        new.append(
            draw(
                st.one_of(
                    st.just(target[i] + vel[i] * dt),
                    st.just(braked),
                    st.just(target[i]),
                    st.floats(target[i] - 0.05, target[i] + 0.05),
                )
            )
        )
    value = draw(
        st.one_of(st.floats(1.0, 21.0), st.floats(2.0, 2.5), st.floats(19.5, 20.0), st.floats(-5.0, 40.0))
    )
    # the MC window, no ceiling (hand-in-hand), or a window narrow enough to meet both bounds
    hi = draw(st.one_of(st.sampled_from([20.0, math.inf]), st.floats(2.01, 4.0)))
    value = draw(st.one_of(st.just(value), st.floats(2.0, min(hi, 40.0))))
    return new, target, vel, pos, amax, dt, value, hi


@given(geometry_cases())
def test_geometry_brakes_only_what_takes_the_distance_out_and_says_which(
    case: tuple[list[float], list[float], list[float], list[float], tuple[float, float], float, float, float],
) -> None:
    """A request whose worst case (each tip running on for its stopping distance) stays in the
    window passes untouched with (0, -1). Otherwise only an axis that moves the distance out is
    changed, and only to its braking target or its last target (a hold); the answer names the
    last axis changed. Afterwards the hard worst case is in the window, or nothing moves out."""
    new, target, vel, pos, amax, dt, value, hi = case
    lo = 2.0
    asked = list(new)
    kind, axis = limits.geometry(new, target, vel, pos, amax, dt, 0, 1, value, lo, hi)
    v = [(asked[i] - target[i]) / dt for i in range(2)]
    stop = [v[i] * abs(v[i]) / (2.0 * amax[i]) for i in range(2)]
    low, high = limits.worst_case(value, asked[0], asked[1], pos[0], pos[1], stop[0], stop[1])
    changed = [i for i in range(2) if new[i] != asked[i]]
    if lo <= value <= hi and low >= lo and high <= hi:
        assert (kind, axis) == (0, -1) and not changed
    if not changed:
        assert (kind, axis) in ((0, -1), (1, axis), (2, axis)) and (kind == 0) == (axis == -1)
    else:
        assert kind in (1, 2) and axis in changed
    for i in changed:
        braked = target[i] + limits.brake_velocity(vel[i], amax[i] * dt) * dt
        assert new[i] in (braked, target[i]), f"axis {i}: {asked[i]} became {new[i]}"
        # the distance closes when an insertion grows: the floor stops advances, the ceiling
        # retreats; as asked, or with the other axis already braked (which can take this one's
        # bound out: why the braking repeats)
        assert asked[i] != target[i]
        out_low = value < lo or low < lo
        out_high = value > hi or high > hi
        both = list(asked)
        both[1 - i] = new[1 - i]
        vb = [(both[j] - target[j]) / dt for j in range(2)]
        sb = [vb[j] * abs(vb[j]) / (2.0 * amax[j]) for j in range(2)]
        low_b, high_b = limits.worst_case(value, both[0], both[1], pos[0], pos[1], sb[0], sb[1])
        out_low = out_low or low_b < lo
        out_high = out_high or high_b > hi
        assert (out_low and asked[i] > target[i]) or (out_high and asked[i] < target[i])
    # an axis still free (neither braked nor held) does not take the distance out, stopping
    # distance included (the ramp is braked for in time)
    v = [(new[i] - target[i]) / dt for i in range(2)]
    stop = [v[i] * abs(v[i]) / (2.0 * amax[i]) for i in range(2)]
    low, high = limits.worst_case(value, new[0], new[1], pos[0], pos[1], stop[0], stop[1])
    for i in range(2):
        braked = target[i] + limits.brake_velocity(vel[i], amax[i] * dt) * dt
        if new[i] in (braked, target[i]):
            continue
        rest = new[i] + stop[i]
        # (a request already gentler than braking at a_max is as braked as it can be)
        if low < lo - TOL and braked < new[i]:
            assert not (new[i] > target[i] and max(new[i], rest) > pos[i]), f"axis {i} closes freely"
        if high > hi + TOL and braked > new[i]:
            assert not (new[i] < target[i] and min(new[i], rest) < pos[i]), f"axis {i} opens freely"
    low, high = limits.worst_case(value, new[0], new[1], pos[0], pos[1], 0.0, 0.0)
    if low < lo - TOL:
        assert all(new[i] <= target[i] for i in range(2)), "an advance takes the distance below the floor"
    if high > hi + TOL:
        assert all(new[i] >= target[i] for i in range(2)), "a retreat takes the distance above the ceiling"


def test_geometry_the_window_is_closed_and_an_axis_without_a_share_is_left_alone() -> None:
    """Binary-exact numbers (dt 0.25, a_max 2: braking takes 0.5/s per cycle, a speed of 1 stops
    in 0.25). A worst case that reaches the floor exactly is inside the window: nothing braked.
    Below it, only the axis whose tip can go past where it is now is braked; one whose stopping
    point is exactly its position has no share of the worst case."""
    new = [0.25, 0.0]  # axis 0 at 1/s: its tip may reach 0.5, the distance 2.5 - 0.5 = the floor
    kind, axis = limits.geometry(
        new, [0.0, 0.0], [1.0, 0.0], [0.0, 0.0], (2.0, 2.0), 0.25, 0, 1, 2.5, 2.0, math.inf
    )
    assert (kind, axis) == (0, -1) and new == [0.25, 0.0]
    new = [0.0, 0.25]  # axis 0 comes to rest at 0.25, where its tip is; axis 1 takes 0.5
    kind, axis = limits.geometry(
        new, [-0.25, 0.0], [1.0, 1.0], [0.25, 0.0], (2.0, 2.0), 0.25, 0, 1, 2.25, 2.0, math.inf
    )
    assert (kind, axis) == (1, 1) and new == [0.0, 0.125]


def test_a_cycle_longer_than_a_second_still_keeps_travel() -> None:
    """The functions hold for any dt > 0: at 1/s with a 2 s step the travel limit 1.0 ahead is
    braked for (one step alone would end at 2.0), and the one 1.0 behind the same way."""
    out, r = limits.enforce_axis(0.0, 1.0, 2.0, 2.0, 10.0, 100.0, -5.0, 1.0, False)
    assert r == Reason.TRAVEL_LIMIT and 0.0 < out <= 1.0
    v = out / 2.0
    assert v * 2.0 + limits.stopping_distance(v, 100.0) <= 1.0 + 1e-12
    out, r = limits.enforce_axis(0.0, -1.0, -2.0, 2.0, 10.0, 100.0, -1.0, 5.0, False)
    assert r == Reason.TRAVEL_LIMIT and -1.0 <= out < 0.0
    v = out / 2.0
    assert -v * 2.0 + limits.stopping_distance(v, 100.0) <= 1.0 + 1e-12


@pytest.mark.parametrize(
    ("p", "v0", "tmin", "tmax"),
    [(0.0, 0.5, -5.0, 0.6), (0.0, -0.5, -0.6, 5.0), (10.6, -0.5, 10.0, 20.0), (19.4, 0.5, 10.0, 20.0)],
)
def test_a_slow_braking_axis_is_braked_for_its_travel_anywhere(
    p: float, v0: float, tmin: float, tmax: float
) -> None:
    """a_max below 1/s^2 (a slow axis) and a range away from zero: at 0.5/s, 0.6 short of a limit
    it takes 0.25 per step plus 0.5 to stop, so the look-ahead must brake it (and can)."""
    out, r = limits.enforce_axis(p, v0, p + v0 * 0.5, 0.5, 1.0, 0.25, tmin, tmax, False)
    assert r == Reason.TRAVEL_LIMIT
    v = (out - p) / 0.5
    room = tmax - p if v0 > 0 else p - tmin
    assert abs(v) * 0.5 + limits.stopping_distance(v, 0.25) <= room + 1e-12


# ---------------------------------------------------------------------------- two tips, exact cases

FLOOR, CEILING = 1, 2
SIDES = pytest.mark.parametrize("side", [FLOOR, CEILING], ids=["floor", "ceiling"])


def _two_tips(
    side: int, new: list[float], target: list[float], vel: list[float], pos: list[float], room: float
) -> tuple[int, int, list[float]]:
    """geometry on binary-exact numbers (dt 0.25, a_max 2: braking takes 0.5/s a cycle), the case
    given at the floor: the distance ``room`` above a floor of 2, no ceiling. At the ceiling the
    same case mirrored: every insertion negated (an advance becomes a retreat), the distance
    ``room`` below a ceiling of 20 over a floor of 0. Returns kind, axis and the new targets
    (mirrored back)."""
    s = 1.0 if side == FLOOR else -1.0
    out = [s * x for x in new]
    value, lo, hi = (2.0 + room, 2.0, math.inf) if side == FLOOR else (20.0 - room, 0.0, 20.0)
    mirrored = ([s * x for x in target], [s * x for x in vel], [s * x for x in pos])
    kind, axis = limits.geometry(out, *mirrored, (2.0, 2.0), 0.25, 0, 1, value, lo, hi)
    return kind, axis, [s * x for x in out]


@SIDES
def test_geometry_a_worst_case_exactly_on_the_bound_is_inside_and_a_share_is_the_axis_own(side: int) -> None:
    """The window is closed: a worst case that reaches the bound exactly is inside, nothing braked
    (the other axis, at rest, adds nothing). Beyond it, only the axis whose tip can go past where
    it is now is braked; one whose stopping point is exactly its position has no share."""
    # axis 0 at 1/s: its tip may reach 0.5 (0.25 and a stopping distance of 0.25)
    assert _two_tips(side, [0.25, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0], 0.5) == (0, -1, [0.25, 0.0])
    # axis 0 comes to rest at 0.25, where its tip is; axis 1 takes 0.5
    got = _two_tips(side, [0.0, 0.25], [-0.25, 0.0], [1.0, 1.0], [0.25, 0.0], 0.25)
    assert got == (side, 1, [0.0, 0.125])


@SIDES
def test_geometry_a_ramp_ending_exactly_on_the_bound_is_not_held(side: int) -> None:
    """Axis 0 on its braking ramp (1/s down to 0.5/s: nothing left to brake), its tip at its
    target, the distance at the bound: its stopping distance takes the worst case out, but its
    target does not (the hold only acts when the ramp itself leaves the window)."""
    assert _two_tips(side, [0.125, 0.0], [0.0, 0.0], [1.0, 0.0], [0.125, 0.0], 0.0) == (0, -1, [0.125, 0.0])


@SIDES
@pytest.mark.parametrize("larger", [0, 1])
def test_geometry_holds_the_larger_share_first_and_the_other_only_if_it_must(side: int, larger: int) -> None:
    """Both axes on their braking ramps (1/s down to 0.5/s), their targets 0.5 and 0.25 ahead of
    their tips (lagging), 0.6875 of room: the ramps alone take 0.75. Holding the axis with the
    larger share (0.125 less) is enough; the other goes on. Far apart (10 and -10), so that the
    shares are the tips' distances to their targets and nothing else."""
    shares = (0.5, 0.25) if larger == 0 else (0.25, 0.5)
    new = [10.125, -9.875]
    pos = [new[0] - shares[0], new[1] - shares[1]]
    held = [10.0, -10.0]
    expect = list(new)
    expect[larger] = held[larger]
    assert _two_tips(side, new, held, [1.0, 1.0], pos, 0.6875) == (side, larger, expect)


@SIDES
def test_geometry_on_a_tie_holds_axis_ia(side: int) -> None:
    """Both shares 0.5, 0.9375 of room: holding one is enough, and on a tie that is ``ia``."""
    new = [10.125, -9.875]
    got = _two_tips(side, new, [10.0, -10.0], [1.0, 1.0], [new[0] - 0.5, new[1] - 0.5], 0.9375)
    assert got == (side, 0, [10.0, -9.875])


@SIDES
def test_geometry_holds_only_a_moving_axis_and_never_turns_a_retreat_into_an_advance(side: int) -> None:
    """The ramp (without stopping distances) leaves the window, and the only axis that moves that
    way is axis 1, on its braking ramp: it is held. Axis 0's share is not from this cycle: at
    rest, its tip still 0.5 behind its target; or retreating on its ramp, its tip 0.75 behind.
    Holding axis 0 would do nothing, or move its target back up to where it was: toward the
    bound (it did, when an axis without motion counted a share of -1 mm and axis 1's tip was
    more than 1 mm ahead of its target)."""
    # axis 0 at rest, axis 1's share 0.125
    got = _two_tips(side, [10.0, -9.875], [10.0, -10.0], [0.0, 1.0], [9.5, -10.0], 0.5)
    assert got == (side, 1, [10.0, -10.0])
    # the same with the axes' roles swapped
    got = _two_tips(side, [10.125, -10.0], [10.0, -10.0], [1.0, 0.0], [10.0, -10.5], 0.5)
    assert got == (side, 0, [10.0, -10.0])
    # axis 0 retreating, axis 1's tip 2 ahead of its target
    got = _two_tips(side, [9.875, -9.875], [10.0, -10.0], [-1.0, 1.0], [9.125, -7.875], 0.5)
    assert got == (side, 1, [9.875, -10.0])


@SIDES
def test_geometry_beyond_the_bound_lets_motion_back_go(side: int) -> None:
    """Already 0.5 beyond the bound: axis 0 at rest, axis 1 moving back toward the window. Neither
    takes the distance further out: nothing changes."""
    got = _two_tips(side, [0.0, -0.125], [0.0, 0.0], [0.0, -1.0], [0.0, 0.0], -0.5)
    assert got == (0, -1, [0.0, -0.125])


@SIDES
def test_geometry_leaves_an_axis_asked_to_stay_where_it_is(side: int) -> None:
    """Axis 0 was moving back at 1/s and is asked to stay at its last target (harder than a_max:
    not geometry's business), its tip 0.5 behind it: the worst case is out by that lag, but this
    cycle's request does not move the distance out, so it is not braked (to a ramp back)."""
    assert _two_tips(side, [0.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [-0.5, 0.0], 0.25) == (0, -1, [0.0, 0.0])


@pytest.mark.parametrize("side", [1.0, -1.0], ids=["tmax", "tmin"])
def test_a_request_a_hair_beyond_travel_within_every_speed_tolerance_is_clamped(side: float) -> None:
    """At rest on a travel limit, a request 2.9e-14 beyond it: its speed is within every
    tolerance (1e-9), so nothing but travel stops it, and travel is exact: the limit, reported."""
    out, r = limits.enforce_axis(
        side, 0.0, side * 1.0000000000000286, 0.001953125, 1.0, 1.0, -1.0, 1.0, False
    )
    assert (out, r) == (side, Reason.TRAVEL_LIMIT)
    # from outside travel, back toward it, the request passes bit for bit
    n = side * 1.5
    assert limits.enforce_axis(side * 1.5 + side * 1e-12, 0.0, n, 0.25, 1.0, 1.0, -1.0, 1.0, False) == (
        n,
        Reason.OK,
    )
