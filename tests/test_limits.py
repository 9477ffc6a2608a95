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
    value = draw(st.floats(lo + 0.5, hi - 0.5))
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


def test_geometry_brakes_the_axis_that_closes_and_lets_the_other_go() -> None:
    new = [0.025, -0.01]  # axis 0 advances at 10 mm/s, axis 1 withdraws
    target, vel, pos = [0.0, 0.0], [10.0, -4.0], [0.0, 0.0]
    kind, axis = limits.geometry(new, target, vel, pos, (100.0, 100.0), PERIOD, 0, 1, 2.5, 2.0, 20.0)
    assert (kind, axis) == (1, 0)
    assert new[0] == pytest.approx((10.0 - 100.0 * PERIOD) * PERIOD) and new[1] == -0.01
