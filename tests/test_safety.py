"""Safety supervisor: invariants 1-8 of docs/DESIGN.md section 4 as properties, plus fault/ack rules."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_iface.cia402 import SW_TARGET_REACHED, DriveState
from firmware_iface.types import AxisCommand, Commands, DriveGoal, Feedback
from whih_control.config import Config, load_config
from whih_control.safety import SafetySupervisor
from whih_control.types import (
    LINEAR_AXES,
    AxisMotion,
    AxisObjective,
    CycleInputs,
    Estimate,
    Objective,
    OperatorInput,
    Reason,
    Verdict,
)

from .conftest import CONFIGS

CFG: Config = load_config(CONFIGS / "sim.toml")


def _tight_travel() -> Config:
    """The sim config with travel ranges a few cycles of motion wide, so limits are reached."""
    data = tomllib.loads((CONFIGS / "sim.toml").read_text(encoding="utf-8"))
    for drive in data["drives"].values():
        span = 1.0 if drive.get("kind", "linear") == "linear" else 20.0
        drive["travel_min"], drive["travel_max"] = -span, span
    return load_config(data, base_dir=CONFIGS)


CFG_TIGHT = _tight_travel()
AXES = tuple(CFG.drives)
PHASES = ("ready", "approach", "untip", "align", "hand_in_hand.retro_step", "hand_in_hand.ante_follow")
TOL = 1e-9


# ---------------------------------------------------------------------------- the invariant checker


@dataclass
class History:
    """What the checker remembers of earlier outputs (independent of the supervisor's own state)."""

    out: dict[str, float] = field(default_factory=dict)
    vel: dict[str, float] = field(default_factory=dict)
    regular: dict[str, bool] = field(default_factory=dict)
    """The axis' last output was a normal enabled cycle (its velocity is meaningful)."""


def track(hist: History, a: str, pos: float, out: float) -> None:
    """An axis that is not moving under control: its target tracks its position when known."""
    p = hist.out.get(a, math.nan)
    if math.isfinite(pos):
        assert out == pos, f"{a}: target {out} does not track position {pos}"
        hist.out[a] = pos
    elif not math.isnan(p):
        assert out == p, f"{a}: target {out} moved while the position is unknown"
    hist.vel[a] = 0.0
    hist.regular[a] = False


def inputs_ok(cfg: Config, dt: float, fb: Feedback, est: Estimate) -> bool:
    """Invariant 7's notion of acceptable input."""
    s = cfg.safety
    if not (math.isfinite(dt) and 0.0 < dt <= s.max_dt_cycles * cfg.period):
        return False
    for af in fb.axes.values():
        if not (math.isfinite(af.position) and abs(af.position) <= s.position_abs_max):
            return False
        if not (math.isfinite(af.force) and abs(af.force) <= s.force_abs_max):
            return False
    return not (est.valid and not (math.isfinite(est.gap) and math.isfinite(est.coupling)))


def checked_enforce(
    sup: SafetySupervisor,
    hist: History,
    cfg: Config,
    t: float,
    dt: float,
    commands: Commands,
    fb: Feedback,
    est: Estimate,
    obj: Objective,
    op: OperatorInput,
) -> Verdict:
    """Call ``enforce`` and assert every invariant on its result."""
    rejected0 = sup.rejected
    requested = {a: c.target for a, c in commands.axes.items()}
    verdict = sup.enforce(t, dt, commands, fb, est, obj, op)
    check_cycle(sup, hist, cfg, dt, commands, fb, est, obj, op, verdict, rejected0, requested)
    return verdict


def check_cycle(
    sup: SafetySupervisor,
    hist: History,
    cfg: Config,
    dt: float,
    commands: Commands,
    fb: Feedback,
    est: Estimate,
    obj: Objective,
    op: OperatorInput,
    verdict: Verdict,
    rejected0: int,
    requested: Mapping[str, float],
) -> None:
    """Assert invariants 1-7 on one cycle's output; update ``hist``."""
    cmd = commands.axes
    for a in AXES:
        assert math.isfinite(cmd[a].target), f"{a}: target not finite"
    if sup.latched:
        # invariant 6: quick stop on every axis in the same cycle; targets track actual positions
        assert verdict.fault and verdict == sup.latched_verdict
        for a in AXES:
            assert cmd[a].goal == DriveGoal.QUICK_STOP
            track(hist, a, fb.axes[a].position, cmd[a].target)
        return
    assert not verdict.fault
    # invariants 4 and 6: these must have latched
    assert not op.estop and fb.bus_ok
    for a in AXES:
        f = fb.axes[a].force
        assert not (math.isfinite(f) and abs(f) >= cfg.drives[a].force_stop), f"{a}: force stop not latched"
    if any(cmd[a].goal == DriveGoal.FAULT_RESET for a in AXES):
        # the reset cycle after an acknowledge: never moves anything
        for a in AXES:
            assert cmd[a].goal == DriveGoal.FAULT_RESET
            track(hist, a, fb.axes[a].position, cmd[a].target)
        return
    ok = inputs_ok(cfg, dt, fb, est)
    if not ok:
        assert sup.rejected > rejected0, "bad input not counted"
    s = cfg.safety
    # a step the supervisor rejects still happens at the SYNC rate: braking runs on the period
    h = dt if math.isfinite(dt) and 0.0 < dt <= s.max_dt_cycles * cfg.period else cfg.period
    permitted = (
        ok
        and obj.motion_allowed
        and op.enable_held
        and all(af.state == DriveState.OPERATION_ENABLED for af in fb.axes.values())
        and all(af.age_cycles <= s.feedback_max_age_cycles for af in fb.axes.values())
        and all(af.heartbeat_ok for af in fb.axes.values())
    )
    positions_ok = all(
        math.isfinite(af.position)
        and abs(af.position) <= s.position_abs_max
        and math.isfinite(af.force)
        and abs(af.force) <= s.force_abs_max
        for af in fb.axes.values()
    )
    geometry_known = est.valid and math.isfinite(est.gap) and math.isfinite(est.coupling) and positions_ok
    moved: dict[str, float] = {}
    for a in AXES:
        af = fb.axes[a]
        d = cfg.drives[a]
        n = cmd[a].target
        p = hist.out.get(a, math.nan)
        if af.state != DriveState.OPERATION_ENABLED or math.isnan(p):
            track(hist, a, af.position, n)
            continue
        v0 = hist.vel.get(a, 0.0) if hist.regular.get(a, False) else 0.0
        v = (n - p) / h
        dv = d.max_accel * h
        brake = max(0.0, abs(v0) - dv)  # the speed one braking cycle leaves
        if n != p:
            moved[a] = n - p
            assert abs(v) <= d.max_speed * (1 + TOL) + TOL, f"{a}: speed {v} > {d.max_speed}"
            assert n <= max(d.travel_max, p) and n >= min(d.travel_min, p), f"{a}: travel"
            may_move = permitted and not (a in LINEAR_AXES and not est.valid)
            if not may_move:
                # invariant 1 with invariant 3: without permission an axis only ramps down
                assert v * v0 > 0 and abs(v) <= brake * (1 + 1e-6) + 1e-9, (
                    f"{a}: moved without permission other than braking (v {v}, v0 {v0})"
                )
            if abs(af.force) >= d.force_alarm and v > 0:
                # invariant 4 with 3: no acceleration forward under a force alarm, only braking
                assert v0 > 0 and v <= brake * (1 + 1e-6) + 1e-9, f"{a}: advance under force alarm"
            if v * v0 >= 0 and abs(v) > brake * (1 + 1e-6) + 1e-9:
                # not braking: moving toward a travel limit only with room to stop before it
                reach = n + v * abs(v) / (2 * d.max_accel)
                assert d.travel_min - 1e-6 <= reach <= d.travel_max + 1e-6 or not (
                    d.travel_min <= p <= d.travel_max
                ), f"{a}: runs at {v} toward a travel limit it cannot stop before (rests at {reach})"
        req = requested.get(a, math.nan)
        if math.isfinite(req) and (req - p) * v0 >= 0 and req != p:
            # asked to go on the way it already goes (or start from rest): never the other way
            assert v * (req - p) >= 0, f"{a}: asked to move {req - p:+g}, moved {n - p:+g} (v0 {v0})"
        accel_ok = abs(v - v0) <= dv * (1 + 1e-6) + 1e-9
        if not accel_ok:
            # invariant 3: only a stop harder than a_max where the ramp itself would cross a
            # travel limit or the gap/coupling window (the output is then a hold or the limit)
            b = p + math.copysign(brake, v0) * h
            at_travel = n in (d.travel_min, d.travel_max) or not d.travel_min <= b <= d.travel_max
            at_window = n == p and geometry_known and ramp_leaves_window(cfg, cmd, fb, est, obj, a, b)
            assert at_travel or at_window, f"{a}: accel {(v - v0) / h} > {d.max_accel} (v {v}, v0 {v0})"
        hist.vel[a] = v if n != p else 0.0
        hist.out[a] = n
        hist.regular[a] = True
    if geometry_known and moved:
        for ia, ir, value, lo, hi in window_pairs(cfg, est, obj):
            na, nr = cmd[ia].target, cmd[ir].target
            xa, xr = fb.axes[ia].position, fb.axes[ir].position
            adv = moved.get(ia, 0.0) > 0 or moved.get(ir, 0.0) > 0
            ret = moved.get(ia, 0.0) < 0 or moved.get(ir, 0.0) < 0
            low = value - max(0.0, na - xa) - max(0.0, nr - xr)
            high = value + max(0.0, xa - na) + max(0.0, xr - nr)
            if adv:
                assert value >= lo and low >= lo - TOL, f"{ia}/{ir}: worst case {low} below {lo}"
            if ret:
                assert value <= hi and high <= hi + TOL, f"{ia}/{ir}: worst case {high} above {hi}"


def window_pairs(cfg: Config, est: Estimate, obj: Objective) -> list[tuple[str, str, float, float, float]]:
    """(ante axis, retro axis, distance now, floor, ceiling) of each window in force."""
    p = cfg.procedure
    # in hand-in-hand and withdraw the support rule (tests/test_support.py) bounds the MCs instead
    free = obj.phase.startswith("hand_in_hand") or obj.part_mcs
    ceiling = math.inf if free else p.gap_max
    pairs = [("ante_mc", "retro_mc", est.gap, p.gap_min, ceiling)]
    if obj.phase.startswith("hand_in_hand") and obj.coupled:
        pairs.append(("ante_wire", "retro_wire", est.coupling, 0.0, p.coupling_max))
    return pairs


def ramp_leaves_window(
    cfg: Config, cmd: Mapping[str, AxisCommand], fb: Feedback, est: Estimate, obj: Objective, a: str, b: float
) -> bool:
    """Axis ``a`` at its braking target ``b`` (the other axis as sent) would leave a window."""
    for ia, ir, value, lo, hi in window_pairs(cfg, est, obj):
        if a not in (ia, ir):
            continue
        na = b if a == ia else cmd[ia].target
        nr = b if a == ir else cmd[ir].target
        xa, xr = fb.axes[ia].position, fb.axes[ir].position
        low = value - max(0.0, na - xa) - max(0.0, nr - xr)
        high = value + max(0.0, xa - na) + max(0.0, xr - nr)
        if value < lo or low < lo or value > hi or high > hi:
            return True
    return False


# ---------------------------------------------------------------------------- strategies


CHAOS = st.sampled_from([0, 1, 1, 2])
"""How often bad things happen in one example: 0 never, 1 rarely, 2 often."""


def rare(draw: st.DrawFn, one_in: int, chaos: int = 1) -> bool:
    """True about once in ``one_in`` draws at chaos 2, 4x rarer at 1, never at 0."""
    if chaos == 0:
        return False
    n = one_in if chaos >= 2 else 4 * one_in
    return draw(st.integers(0, n - 1)) == n - 1


BAD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1e9, -1e9])


@st.composite
def feedback_step(draw: st.DrawFn, fb: Feedback, targets: dict[str, float], chaos: int = 1) -> None:
    """Mutate ``fb``: drives mostly follow their last targets, sometimes badly."""
    fb.bus_ok = not rare(draw, 60, chaos)
    for a, af in fb.axes.items():
        base = targets.get(a, 0.0)
        base = base if math.isfinite(base) else 0.0
        af.position = base - draw(st.floats(-0.05, 0.05))
        if rare(draw, 40, chaos):
            af.position = draw(BAD_FLOATS)
        af.force = draw(st.floats(0.0, 1.2))
        if rare(draw, 15, chaos):
            af.force = draw(st.floats(-5.0, 5.0))
        if rare(draw, 60, chaos):
            af.force = draw(BAD_FLOATS)
        af.state = DriveState.OPERATION_ENABLED
        if rare(draw, 30, chaos):
            af.state = draw(st.sampled_from(list(DriveState)))
        af.age_cycles = 0 if not rare(draw, 20, chaos) else draw(st.integers(0, 10))
        af.heartbeat_ok = not rare(draw, 40, chaos)


@st.composite
def estimate_step(draw: st.DrawFn, est: Estimate, chaos: int = 1) -> None:
    """Mutate ``est``: mostly valid, gap/coupling around their windows, sometimes garbage."""
    est.valid = not rare(draw, 20, chaos)
    est.gap = draw(st.floats(0.0, 25.0))
    est.coupling = draw(st.floats(-1.0, 3.0))
    if rare(draw, 40, chaos):
        est.gap = draw(BAD_FLOATS)
    if rare(draw, 40, chaos):
        est.coupling = draw(BAD_FLOATS)
    est.tips.update(ante_mc=0.0, retro_mc=est.gap, ante_wire=1.0, retro_wire=1.0 + est.coupling)


PUSH = st.dictionaries(st.sampled_from(AXES), st.floats(-10.0, 10.0), max_size=3)
"""Axes asked, every cycle of an example, to move at up to 10x their speed limit one way."""


@st.composite
def request_step(
    draw: st.DrawFn,
    commands: Commands,
    targets: dict[str, float],
    chaos: int = 1,
    push: Mapping[str, float] | None = None,
) -> None:
    """Requested targets: mostly small moves from the last target, sometimes wild or NaN;
    axes in ``push`` are asked for ``push[axis]`` times their speed limit, cycle after cycle."""
    for a, c in commands.axes.items():
        base = targets.get(a, 0.0)
        base = base if math.isfinite(base) else 0.0
        if push and a in push:
            c.target = base + push[a] * CFG.drives[a].max_speed * CFG.period
        else:
            c.target = base + draw(st.one_of(st.floats(-0.0015, 0.0015), st.floats(-0.08, 0.08)))
        if rare(draw, 20, chaos):
            c.target = draw(st.floats(-300.0, 300.0))
        if rare(draw, 50, chaos):
            c.target = draw(BAD_FLOATS)
        c.goal = DriveGoal.ENABLED


def random_dt(draw: st.DrawFn, chaos: int = 1) -> float:
    """Cycle time with jitter, sometimes invalid."""
    dt = CFG.period * draw(st.floats(0.5, 1.5))
    if rare(draw, 40, chaos):
        dt = draw(st.sampled_from([0.0, -CFG.period, math.nan, math.inf, 1.0]))
    return dt


# ---------------------------------------------------------------------------- examples


def _running(cfg: Config = CFG) -> tuple[SafetySupervisor, Feedback, Commands, Estimate]:
    sup = SafetySupervisor(cfg)
    fb = Feedback.for_axes(AXES)
    for af in fb.axes.values():
        af.state = DriveState.OPERATION_ENABLED
        af.age_cycles = 0
        af.heartbeat_ok = True
    cmds = Commands.for_axes(AXES)
    for c in cmds.axes.values():
        c.goal = DriveGoal.ENABLED
    est = Estimate(tips=dict.fromkeys(LINEAR_AXES, 0.0), gap=4.5, coupling=0.5, valid=True)
    sup.enforce(0.0, CFG.period, cmds, fb, est, Objective("ready", True), OperatorInput(True))
    return sup, fb, cmds, est


MOVE = Objective("hand_in_hand.retro_step", True)
HELD = OperatorInput(enable_held=True)


def test_a_new_supervisor_reports_nothing_and_has_sent_nothing() -> None:
    """Its counters and public state before any cycle: no fault, no rejection, no acknowledge,
    nobody escalated, no target sent yet (NaN) and so no velocity; clean cycles keep it so."""
    sup = SafetySupervisor(CFG)
    n = len(sup.axes)
    assert (sup.faults, sup.rejected, sup.generation) == (0, 0, 0)
    assert not sup.latched and not sup.fault_pending and sup.fault_verdict == Verdict()
    assert sup.escalated == [False] * n and sup.velocity == [0.0] * n
    assert all(math.isnan(x) for x in sup.target)
    sup, fb, cmds, est = _running()
    for k in range(3):
        assert sup.enforce(0.0025 * (k + 1), CFG.period, cmds, fb, est, MOVE, HELD) == Verdict()
    assert (sup.faults, sup.rejected, sup.generation) == (0, 0, 0)
    assert sup.velocity == [0.0] * n and sup.target == [0.0] * n


def test_small_move_passes_unchanged_with_ok_verdict() -> None:
    sup, fb, cmds, est = _running()
    cmds.axes["retro_wire"].target = -0.001
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.OK and v.text == ""
    assert cmds.axes["retro_wire"].target == -0.001


def test_speed_step_is_accel_limited_and_reported() -> None:
    sup, fb, cmds, est = _running()
    cmds.axes["retro_wire"].target = -0.05  # 20 mm/s from rest in one cycle
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.ACCEL_LIMIT and v.axis == "retro_wire"
    amax = CFG.drives["retro_wire"].max_accel
    assert cmds.axes["retro_wire"].target == pytest.approx(-amax * CFG.period**2)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_force_stop_quick_stops_every_axis_same_cycle_and_latches(sign: float) -> None:
    """``|force| >= force_stop`` faults: at the threshold itself, pushed or pulled."""
    sup, fb, cmds, est = _running()
    fb.axes["ante_wire"].force = sign * CFG.drives["ante_wire"].force_stop
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.fault and v.reason == Reason.FORCE_STOP and v.axis == "ante_wire"
    assert all(c.goal == DriveGoal.QUICK_STOP for c in cmds.axes.values())
    # the cause persists: acknowledge refused, still latched
    assert not sup.acknowledge(fb) and "force" in sup.ack_blocker
    fb.axes["ante_wire"].force = 0.0
    fb.axes["retro_mc"].position = 3.0  # the drive moved during its quick stop
    assert sup.acknowledge(fb)
    v = sup.enforce(0.005, CFG.period, cmds, fb, est, MOVE, HELD)
    assert all(c.goal == DriveGoal.FAULT_RESET for c in cmds.axes.values())
    assert cmds.axes["retro_mc"].target == 3.0  # reset never moves: target = actual


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_force_alarm_blocks_advance_but_allows_retreat(sign: float) -> None:
    """``|force| >= force_alarm``: no advance, at the threshold itself, pushed or pulled."""
    sup, fb, cmds, est = _running()
    fb.axes["ante_wire"].force = sign * CFG.drives["ante_wire"].force_alarm
    cmds.axes["ante_wire"].target = 0.0005
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.FORCE_ALARM and cmds.axes["ante_wire"].target == 0.0
    cmds.axes["ante_wire"].target = -0.0005
    sup.enforce(0.005, CFG.period, cmds, fb, est, MOVE, HELD)
    assert cmds.axes["ante_wire"].target == -0.0005


@pytest.mark.parametrize("force", [math.inf, -math.inf])
def test_a_force_that_is_not_finite_is_rejected_input_not_a_force_stop(force: float) -> None:
    """Invariant 7: an infinite force is a broken reading, held and counted like any rejected
    input (a force stop needs a measured ``|force| >= force_stop``)."""
    sup, fb, cmds, est = _running()
    fb.axes["ante_wire"].force = force
    cmds.axes["retro_wire"].target = -0.0005
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.NON_FINITE and not v.fault and not sup.latched
    assert sup.rejected == 1 and cmds.axes["retro_wire"].target == 0.0


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda fb, op: setattr(op, "enable_held", False), Reason.ENABLE_RELEASED),
        (lambda fb, op: setattr(fb.axes["retro_mc"], "age_cycles", 3), Reason.STALE_FEEDBACK),
        (lambda fb, op: setattr(fb.axes["retro_mc"], "heartbeat_ok", False), Reason.HEARTBEAT),
        (lambda fb, op: setattr(fb.axes["retro_mc"], "force", math.nan), Reason.NON_FINITE),
    ],
)
def test_no_setpoint_change_without_permission(mutate: object, reason: Reason) -> None:
    sup, fb, cmds, est = _running()
    op = OperatorInput(enable_held=True)
    mutate(fb, op)  # type: ignore[operator]
    cmds.axes["ante_wire"].target = 0.0005
    rejected = sup.rejected
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, op)
    assert v.reason == reason and not v.fault
    assert cmds.axes["ante_wire"].target == 0.0
    assert (sup.rejected > rejected) == (reason == Reason.NON_FINITE)


def test_a_drive_not_yet_enabled_holds_and_one_that_left_enabled_faults() -> None:
    """One definition of "left OPERATION ENABLED" (limits.left_enabled): a drive seen enabled under
    an ENABLED goal that is no longer there faults, whatever state it went to; one still on its
    way to enabled only holds every axis."""
    sup = SafetySupervisor(CFG)
    fb = Feedback.for_axes(AXES)
    cmds = Commands.for_axes(AXES)
    est = Estimate(tips=dict.fromkeys(LINEAR_AXES, 0.0), gap=4.5, coupling=0.5, valid=True)
    for a, af in fb.axes.items():
        af.state = DriveState.SWITCHED_ON if a == "ante_wire_rot" else DriveState.OPERATION_ENABLED
    for c in cmds.axes.values():
        c.goal = DriveGoal.ENABLED
    sup.enforce(0.0, CFG.period, cmds, fb, est, MOVE, HELD)
    cmds.axes["ante_wire"].target = 0.0005
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.DRIVE_NOT_ENABLED and not v.fault
    assert cmds.axes["ante_wire"].target == 0.0
    fb.axes["ante_wire_rot"].state = DriveState.OPERATION_ENABLED
    sup.enforce(0.005, CFG.period, cmds, fb, est, MOVE, HELD)
    fb.axes["ante_wire_rot"].state = DriveState.SWITCH_ON_DISABLED  # e.g. safe torque off
    v = sup.enforce(0.0075, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.fault and v.reason == Reason.DRIVE_FAULT and v.axis == "ante_wire_rot"
    assert "left OPERATION ENABLED (now SWITCH_ON_DISABLED)" in v.text


def test_gap_floor_holds_the_advancing_mc_and_allows_retreat() -> None:
    sup, fb, cmds, est = _running()
    est.gap = CFG.procedure.gap_min + 0.0004
    cmds.axes["ante_mc"].target = 0.0005
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.GAP_FLOOR and cmds.axes["ante_mc"].target == 0.0
    est.gap = CFG.procedure.gap_min - 0.5  # already below: only retreat
    cmds.axes["retro_mc"].target = -0.0005
    cmds.axes["ante_mc"].target = 0.0005
    v = sup.enforce(0.005, CFG.period, cmds, fb, est, MOVE, HELD)
    assert cmds.axes["retro_mc"].target == -0.0005 and cmds.axes["ante_mc"].target == 0.0


def test_at_the_gap_floor_itself_an_advance_is_held_by_the_floor() -> None:
    """The window ``[gap_min, gap_max]`` is closed: a gap exactly at gap_min is inside it, so an
    advancing MC is held by the floor (GAP_FLOOR), not reported as a gap already outside."""
    sup, fb, cmds, est = _running()
    est.gap = CFG.procedure.gap_min
    cmds.axes["ante_mc"].target = 0.0005
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.GAP_FLOOR and v.axis == "ante_mc" and cmds.axes["ante_mc"].target == 0.0
    est.gap = CFG.procedure.gap_min - 0.001  # outside: the same hold is the window's
    cmds.axes["ante_mc"].target = 0.0005
    v = sup.enforce(0.005, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.GAP_WINDOW and cmds.axes["ante_mc"].target == 0.0


def test_approach_from_a_gap_above_the_window_is_allowed() -> None:
    sup, fb, cmds, est = _running()
    est.gap = 31.6  # the starting situation: MC tips far apart
    cmds.axes["ante_mc"].target = 0.0005
    cmds.axes["retro_mc"].target = -0.0005  # would open the gap further: held
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, Objective("approach", True), HELD)
    assert cmds.axes["ante_mc"].target == 0.0005 and cmds.axes["retro_mc"].target == 0.0
    assert v.reason == Reason.GAP_WINDOW


def test_persistent_coupling_violation_faults_after_configured_cycles() -> None:
    sup, fb, cmds, est = _running()
    est.coupling = CFG.procedure.coupling_max + 0.1
    n = CFG.safety.coupling_fault_cycles
    for k in range(n):
        v = sup.enforce(0.0025 * (k + 1), CFG.period, cmds, fb, est, MOVE, HELD)
        assert not v.fault
    v = sup.enforce(0.0025 * (n + 1), CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.fault and v.reason == Reason.COUPLING


@pytest.mark.parametrize("coupling", [0.0, CFG.procedure.coupling_max])
def test_a_coupling_at_either_end_of_its_window_is_in_range(coupling: float) -> None:
    """The coupling window ``[0, coupling_max]`` is closed: at either end, for longer than the
    grace, nothing faults."""
    sup, fb, cmds, est = _running()
    est.coupling = coupling
    for k in range(CFG.safety.coupling_fault_cycles + 3):
        assert not sup.enforce(0.0025 * (k + 1), CFG.period, cmds, fb, est, MOVE, HELD).fault, k


def test_coupling_grace_counts_from_the_very_first_cycle() -> None:
    """A supervisor that starts with the coupling out of range faults after exactly the same
    number of cycles as one that saw it in range first."""
    sup = SafetySupervisor(CFG)
    fb = Feedback.for_axes(AXES)
    for af in fb.axes.values():
        af.state, af.age_cycles, af.heartbeat_ok = DriveState.OPERATION_ENABLED, 0, True
    cmds = Commands.for_axes(AXES)
    est = Estimate(
        tips=dict.fromkeys(LINEAR_AXES, 0.0), gap=4.5, coupling=CFG.procedure.coupling_max + 0.1, valid=True
    )
    n = CFG.safety.coupling_fault_cycles
    for k in range(n):
        assert not sup.enforce(0.0025 * k, CFG.period, cmds, fb, est, MOVE, HELD).fault, k
    assert sup.enforce(0.0025 * n, CFG.period, cmds, fb, est, MOVE, HELD).reason == Reason.COUPLING


def test_drive_fault_while_running_latches_and_external_faults_latch() -> None:
    sup, fb, cmds, est = _running()
    fb.axes["retro_mc"].state = DriveState.FAULT
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.fault and v.reason == Reason.DRIVE_FAULT and v.axis == "retro_mc"
    sup2, fb2, cmds2, est2 = _running()
    sup2.raise_fault(Reason.HEARTBEAT, "retro_mc heartbeat lost", "retro_mc")
    fb2.axes["retro_mc"].heartbeat_ok = False
    v = sup2.enforce(0.0025, CFG.period, cmds2, fb2, est2, MOVE, HELD)
    assert v.fault and all(c.goal == DriveGoal.QUICK_STOP for c in cmds2.axes.values())
    assert not sup2.acknowledge(fb2)
    fb2.axes["retro_mc"].heartbeat_ok = True
    assert sup2.acknowledge(fb2) and sup2.generation == 1
    with pytest.raises(ValueError, match="reason"):
        sup2.raise_fault(Reason.OK, "nothing")


def test_disabling_on_purpose_and_enabling_again_is_no_fault() -> None:
    """Only a drive seen OPERATION ENABLED under an ENABLED goal can leave it: after a DISABLED
    goal (the drives switched off on purpose), the climb back through the CiA 402 states under
    an ENABLED goal holds every axis and faults nothing; once enabled, leaving is a fault again."""
    sup, fb, cmds, est = _running()
    t = 0.0
    for goal, state in (
        (DriveGoal.DISABLED, DriveState.OPERATION_ENABLED),  # asked, not there yet
        (DriveGoal.DISABLED, DriveState.SWITCH_ON_DISABLED),
        (DriveGoal.ENABLED, DriveState.SWITCH_ON_DISABLED),
        (DriveGoal.ENABLED, DriveState.READY_TO_SWITCH_ON),
        (DriveGoal.ENABLED, DriveState.SWITCHED_ON),
        (DriveGoal.ENABLED, DriveState.OPERATION_ENABLED),
    ):
        for a in AXES:
            cmds.axes[a].goal, fb.axes[a].state = goal, state
        t += CFG.period
        v = sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD)
        assert not v.fault and not sup.latched, (goal, state)
    fb.axes["ante_mc"].state = DriveState.SWITCH_ON_DISABLED
    v = sup.enforce(t + CFG.period, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.fault and v.reason == Reason.DRIVE_FAULT and v.axis == "ante_mc"


@pytest.mark.parametrize("state", [DriveState.QUICK_STOP_ACTIVE, DriveState.FAULT_REACTION_ACTIVE])
def test_acknowledge_waits_until_every_drive_has_stopped(state: DriveState) -> None:
    """Re-enabling walks through states without holding torque: not while an axis still ramps."""
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.HEARTBEAT, "heartbeat lost", "ante_mc")
    sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    ramping = fb.axes["ante_wire"]
    ramping.state, ramping.statusword = state, 0
    assert not sup.acknowledge(fb) and "ante_wire: still stopping" in sup.ack_blocker
    if state is DriveState.QUICK_STOP_ACTIVE:
        ramping.statusword = SW_TARGET_REACHED  # the ramp has ended: holding, at rest
    else:
        ramping.state = DriveState.FAULT
    assert sup.acknowledge(fb) and not sup.latched


def test_after_a_coupling_fault_the_coupling_is_held_to_account_at_once() -> None:
    """Acknowledging a coupling fault is possible (only motion can fix the coupling), but the
    first hand-in-hand cycle with it still out of range faults again: no second grace period."""
    sup, fb, cmds, est = _running()
    est.coupling = CFG.procedure.coupling_max + 0.5
    n = CFG.safety.coupling_fault_cycles
    for k in range(n + 1):
        v = sup.enforce(0.0025 * (k + 1), CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.fault and v.reason == Reason.COUPLING
    assert sup.acknowledge(fb) and not sup.latched
    t = 0.0025 * (n + 2)
    sup.enforce(t, CFG.period, cmds, fb, est, Objective("paused", False), HELD)  # the reset cycle
    v = sup.enforce(t + 0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.fault and v.reason == Reason.COUPLING  # at once, not after n cycles
    # once the coupling has been seen back in range, the usual grace applies again
    assert sup.acknowledge(fb)
    est.coupling = 1.0
    t += 0.01
    sup.enforce(t, CFG.period, cmds, fb, est, Objective("paused", False), HELD)
    sup.enforce(t + 0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    est.coupling = CFG.procedure.coupling_max + 0.5
    for k in range(n):
        v = sup.enforce(t + 0.0025 * (k + 2), CFG.period, cmds, fb, est, MOVE, HELD)
        assert not v.fault, k


def test_estop_latches_and_blocks_acknowledge_until_released() -> None:
    sup, fb, cmds, est = _running()
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, OperatorInput(True, estop=True))
    assert v.fault and v.reason == Reason.ESTOP
    assert not sup.acknowledge(fb)
    sup.enforce(0.005, CFG.period, cmds, fb, est, MOVE, OperatorInput(False, estop=False))
    assert sup.acknowledge(fb)


@pytest.mark.parametrize("axis", [a for a in CFG.drives if CFG.drives[a].kind == "linear"])
def test_quick_stop_distance_at_max_speed_within_bound(axis: str) -> None:
    d = CFG.drives[axis]
    assert d.max_speed**2 / (2 * d.quick_stop_decel) <= CFG.safety.stop_distance_max


def test_invalid_estimate_holds_linear_axes_but_not_rotary() -> None:
    sup, fb, cmds, est = _running()
    est.valid = False
    cmds.axes["ante_wire"].target = 0.0005
    cmds.axes["ante_wire_rot"].target = 0.01
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.ESTIMATE_INVALID
    assert cmds.axes["ante_wire"].target == 0.0 and cmds.axes["ante_wire_rot"].target == 0.01


def test_objective_axes_do_not_matter_to_the_supervisor() -> None:
    """The supervisor judges commands, not intentions: a MOVE_TO objective grants nothing extra."""
    sup, fb, cmds, est = _running()
    obj = Objective(
        "ready", False, MappingProxyType({"ante_wire": AxisObjective(AxisMotion.MOVE_TO, 5.0, 1.0)})
    )
    cmds.axes["ante_wire"].target = 0.0005
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, obj, HELD)
    assert v.reason == Reason.NO_MOTION_PHASE and cmds.axes["ante_wire"].target == 0.0


@pytest.mark.parametrize(
    ("phase", "parting", "lifted"),
    [
        ("withdraw", False, False),
        ("withdraw", True, True),
        ("approach", False, False),
        ("hand_in_hand.retro_step", False, True),
    ],
)
def test_gap_ceiling_gives_way_only_in_hand_in_hand_and_while_the_mcs_part(
    phase: str, parting: bool, lifted: bool
) -> None:
    p = CFG.procedure
    objective = Objective(phase, True, part_mcs=parting)
    for gap in (p.gap_max - 0.0002, p.gap_max + 30.0):
        sup, fb, cmds, est = _running()
        est.gap = gap
        cmds.axes["retro_mc"].target = -0.0005  # withdrawing the retro MC opens the gap past gap_max
        v = sup.enforce(0.0025, CFG.period, cmds, fb, est, objective, HELD)
        assert (cmds.axes["retro_mc"].target == 0.0) is not lifted
        assert (v.reason == Reason.GAP_WINDOW) is not lifted
    # the floor holds in every case
    sup, fb, cmds, est = _running()
    est.gap = p.gap_min + 0.0002
    cmds.axes["ante_mc"].target = 0.0005
    sup.enforce(0.0025, CFG.period, cmds, fb, est, objective, HELD)
    assert cmds.axes["ante_mc"].target == 0.0


def _at_speed(axis: str, v: float) -> tuple[SafetySupervisor, Feedback, Commands, Estimate, float]:
    """A running supervisor whose ``axis`` has been ramped up to ``v`` (axis units/s)."""
    sup, fb, cmds, est = _running()
    amax = CFG.drives[axis].max_accel
    t, x, vel = 0.0, 0.0, 0.0
    while vel < v:
        vel = min(v, vel + amax * CFG.period)
        x += vel * CFG.period
        t += CFG.period
        cmds.axes[axis].target = x
        sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD)
        assert cmds.axes[axis].target == x
        fb.axes[axis].position = x  # the drive follows
    return sup, fb, cmds, est, t


@pytest.mark.parametrize(
    ("why", "reason"),
    [
        ("phase", Reason.NO_MOTION_PHASE),
        ("enable", Reason.ENABLE_RELEASED),
        ("stale", Reason.STALE_FEEDBACK),
        ("heartbeat", Reason.HEARTBEAT),
        ("request", Reason.NON_FINITE),
        ("dt", Reason.NON_FINITE),
        ("estimate", Reason.ESTIMATE_INVALID),
        ("estimate-garbage", Reason.ESTIMATE_INVALID),
        ("position", Reason.NON_FINITE),
        ("coupling-inf", Reason.NON_FINITE),
    ],
)
def test_a_hold_at_speed_ramps_down_at_a_max(why: str, reason: Reason) -> None:
    """Invariant 3: every hold brakes at a_max (never a frozen target), until the axis rests."""
    axis = "retro_wire"
    sup, fb, cmds, est, t = _at_speed(axis, 10.0)
    amax = CFG.drives[axis].max_accel
    obj, op, dt = MOVE, OperatorInput(enable_held=True), CFG.period
    if why == "phase":
        obj = Objective("paused", False)
    elif why == "enable":
        op.enable_held = False
    elif why == "stale":
        fb.axes["ante_mc"].age_cycles = CFG.safety.feedback_max_age_cycles + 1
    elif why == "heartbeat":
        fb.axes["ante_mc"].heartbeat_ok = False
    elif why == "dt":
        dt = math.nan
    elif why == "estimate":
        est.valid = False
    elif why == "estimate-garbage":
        # an invalid estimate's numbers mean nothing: no window is judged on them (here they
        # would put the coupling below its floor and hold the advancing wire dead)
        est.valid, est.gap, est.coupling = False, 0.0, -5.0
    elif why == "position":
        # another axis' position unknown: no window can be judged (the coupling here would
        # otherwise hold the advancing wire dead)
        fb.axes["ante_wire"].position = math.nan
        est.coupling = -5.0
    elif why == "coupling-inf":
        est.coupling = -math.inf
    x, v = cmds.axes[axis].target, 10.0
    cycles = 0
    while v > 0.0:
        t += CFG.period
        cmds.axes[axis].target = math.nan if why == "request" else x + 10.0 * CFG.period
        verdict = sup.enforce(t, dt, cmds, fb, est, obj, op)
        assert verdict.reason == reason and not verdict.fault
        n = cmds.axes[axis].target
        v_new = (n - x) / CFG.period
        assert v_new == pytest.approx(max(0.0, v - amax * CFG.period), abs=1e-9)
        x, v = n, v_new
        fb.axes[axis].position = x
        cycles += 1
    ramp = round(10.0 / (amax * CFG.period))
    assert ramp <= cycles <= ramp + 1  # the last may leave a rounding residue of speed


def test_force_alarm_on_an_advancing_axis_brakes_it_and_never_reverses_it() -> None:
    axis = "ante_wire"
    sup, fb, cmds, est, t = _at_speed(axis, 8.0)
    amax = CFG.drives[axis].max_accel
    fb.axes[axis].force = CFG.drives[axis].force_alarm
    x, v = cmds.axes[axis].target, 8.0
    while v > 0.0:
        t += CFG.period
        cmds.axes[axis].target = x + 20.0 * CFG.period  # still asked to advance, at max speed
        verdict = sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD)
        assert verdict.reason == Reason.FORCE_ALARM
        v_new = (cmds.axes[axis].target - x) / CFG.period
        assert v_new == pytest.approx(max(0.0, v - amax * CFG.period), abs=1e-9)
        x, v = cmds.axes[axis].target, v_new
        fb.axes[axis].position = x
    t += CFG.period
    cmds.axes[axis].target = x + 20.0 * CFG.period
    sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD)
    assert cmds.axes[axis].target == x  # at rest: no advance at all


def test_the_gap_floor_is_braked_for_in_time() -> None:
    """An MC closing at speed starts braking where its stopping distance meets the floor."""
    axis = "ante_mc"
    sup, fb, cmds, est, t = _at_speed(axis, 5.0)
    amax = CFG.drives[axis].max_accel
    est.gap = CFG.procedure.gap_min + 0.2  # room 0.2 mm; stopping from 5 mm/s needs 0.125 mm
    x, v = cmds.axes[axis].target, 5.0
    for a, af in fb.axes.items():
        af.position = cmds.axes[a].target
    braked = False
    for _ in range(200):
        t += CFG.period
        cmds.axes[axis].target = x + 5.0 * CFG.period
        sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD)
        n = cmds.axes[axis].target
        v_new = (n - x) / CFG.period
        assert abs(v_new - v) <= amax * CFG.period + 1e-9
        braked = braked or v_new < v
        est.gap -= n - x  # the tip follows its target: the gap closes by what it advanced
        fb.axes[axis].position = n
        assert est.gap >= CFG.procedure.gap_min - 1e-9
        x, v = n, v_new
    assert braked and v == 0.0 and est.gap < CFG.procedure.gap_min + 0.2


def _inputs_case(what: str) -> tuple[CycleInputs, OperatorInput, Estimate, Feedback, Reason, str]:
    _, fb, _, est = _running()
    cyc = CycleInputs(drives_wanted_enabled=True, calibrated=True)
    op = OperatorInput(enable_held=True)
    if what == "stall":
        cyc.stall_s = CFG.bus.master_heartbeat_timeout_ms / 2000.0 + CFG.period
        return cyc, op, est, fb, Reason.STALE_FEEDBACK, "master stalled"
    if what == "stale":
        fb.axes["retro_mc"].age_cycles = CFG.safety.feedback_max_age_cycles + 1
        return cyc, op, est, fb, Reason.STALE_FEEDBACK, "retro_mc: no TPDO1 for 3 cycles (allowed 2)"
    if what == "deadman":
        cyc.motion_phase = True
        op.enable_held = False
        return cyc, op, est, fb, Reason.ENABLE_RELEASED, "dead-man released during motion"
    cyc.imaging_watched = True
    est.imaging_age = 2 * CFG.safety.imaging_max_age_s + 0.1
    return cyc, op, est, fb, Reason.STALE_FEEDBACK, "imaging lost"


@pytest.mark.parametrize("what", ["stall", "stale", "deadman", "imaging"])
def test_every_fault_condition_is_an_input_the_supervisor_latches(what: str) -> None:
    cyc, op, est, fb, reason, text = _inputs_case(what)
    sup = SafetySupervisor(CFG)
    cmds = Commands.for_axes(AXES)
    for c in cmds.axes.values():
        c.goal = DriveGoal.ENABLED
    v = sup.enforce(0.0, CFG.period, cmds, fb, est, MOVE, op, cyc)
    assert v.fault and v.reason == reason and text in v.text and sup.latched
    assert all(c.goal == DriveGoal.QUICK_STOP for c in cmds.axes.values())


@pytest.mark.parametrize("what", ["stall", "stale", "deadman", "imaging"])
def test_below_each_fault_threshold_nothing_latches(what: str) -> None:
    cyc, op, est, fb, _, _ = _inputs_case(what)
    if what == "stall":
        cyc.stall_s = CFG.bus.master_heartbeat_timeout_ms / 2000.0
    elif what == "stale":
        cyc.drives_wanted_enabled = False  # while enabling, stale feedback only holds
    elif what == "deadman":
        cyc.motion_phase = False  # released outside a motion phase: a hold
    else:
        cyc.calibrated = False  # imaging age means nothing before calibration
    sup = SafetySupervisor(CFG)
    cmds = Commands.for_axes(AXES)
    for c in cmds.axes.values():
        c.goal = DriveGoal.ENABLED
    v = sup.enforce(0.0, CFG.period, cmds, fb, est, MOVE, op, cyc)
    assert not v.fault and not sup.latched


@pytest.mark.parametrize("periods", [0.0, -1.0, CFG.safety.max_dt_cycles + 0.5, 400.0])
def test_a_time_step_out_of_range_is_rejected_and_holds(periods: float) -> None:
    sup, fb, cmds, est = _running()
    cmds.axes["ante_wire"].target = 0.0005
    rejected = sup.rejected
    v = sup.enforce(0.0025, periods * CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.NON_FINITE and sup.rejected == rejected + 1
    assert cmds.axes["ante_wire"].target == 0.0
    cmds.axes["ante_wire"].target = 0.0005
    v = sup.enforce(0.005, CFG.safety.max_dt_cycles * CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.OK and cmds.axes["ante_wire"].target == 0.0005  # the largest allowed


def test_a_reported_fault_latches_in_the_next_cycle_and_counts_once() -> None:
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.HEARTBEAT, "retro_mc heartbeat lost", "retro_mc")
    sup.raise_fault(Reason.BUS_FAULT, "a later cause")  # the first cause is kept
    assert sup.fault_pending and not sup.latched and sup.faults == 1
    assert sup.fault_verdict.text == "retro_mc heartbeat lost" and sup.latched_verdict == Verdict()
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.fault and v.text == "retro_mc heartbeat lost" and sup.latched and sup.faults == 2
    sup.raise_fault(Reason.HEARTBEAT, "again")  # while latched: counted only
    assert sup.faults == 3 and sup.latched_verdict.text == "retro_mc heartbeat lost"


def test_a_stall_is_named_before_what_the_drives_report_after_it() -> None:
    """The drives' heartbeat EMCYs read in the cycle after a stall are its consequence: the
    stall latches, the report is counted, and nothing of it latches again after an acknowledge."""
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.HEARTBEAT, "ante_mc: EMCY 0x8130 heartbeat lost", "ante_mc")
    stall = CycleInputs(drives_wanted_enabled=True, stall_s=0.2)
    v = sup.enforce(0.2025, CFG.period, cmds, fb, est, MOVE, HELD, stall)
    assert v.fault and v.text.startswith("master stalled: 200.0 ms") and "allowed 50 ms" in v.text
    assert sup.faults == 2 and sup.latched
    assert sup.acknowledge(fb) and not sup.fault_pending
    sup.enforce(0.205, CFG.period, cmds, fb, est, MOVE, HELD, CycleInputs(drives_wanted_enabled=True))
    v = sup.enforce(0.2075, CFG.period, cmds, fb, est, MOVE, HELD, CycleInputs(drives_wanted_enabled=True))
    assert not v.fault and not sup.latched


def test_next_fault_is_what_the_next_enforce_latches_a_stall_first() -> None:
    """The procedure reads it before the supervisor runs: the same cause, the same text."""
    sup, fb, cmds, est = _running()
    limit = CFG.bus.master_heartbeat_timeout_ms / 2000.0
    assert sup.next_fault(0.0) == Verdict() and sup.next_fault(limit) == Verdict()
    sup.raise_fault(Reason.HEARTBEAT, "ante_mc: EMCY 0x8130 heartbeat lost", "ante_mc")
    assert sup.next_fault(limit) == sup.fault_verdict and sup.next_fault(limit).text.startswith("ante_mc:")
    ahead = sup.next_fault(0.2)
    assert ahead.fault and ahead.reason == Reason.STALE_FEEDBACK and ahead.axis == ""
    assert ahead.text.startswith("master stalled: 200.0 ms") and "allowed 50 ms" in ahead.text
    assert not sup.latched and sup.faults == 0 and sup.fault_pending  # a look ahead changes nothing
    v = sup.enforce(0.2025, CFG.period, cmds, fb, est, MOVE, HELD, CycleInputs(stall_s=0.2))
    assert v == ahead and sup.latched_verdict == ahead and sup.faults == 2  # the report counted
    assert sup.next_fault(0.0) == ahead and sup.next_fault(0.5) == ahead  # the latch, whatever comes


def _silent(sync_missed: int, *axes: str, ages: Mapping[str, int] | None = None) -> Verdict:
    sup, fb, cmds, est = _running()
    for a in axes:
        fb.axes[a].age_cycles = (ages or {}).get(a, CFG.safety.feedback_max_age_cycles + 1)
    fb.sync_missed = sync_missed
    return sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD, CycleInputs(drives_wanted_enabled=True))


def test_a_missing_tpdo1_names_one_drive_several_or_every_one() -> None:
    one = _silent(0, "retro_mc")
    assert one.fault and one.reason == Reason.STALE_FEEDBACK and one.axis == "retro_mc"
    assert one.text == "retro_mc: no TPDO1 for 3 cycles (allowed 2)"
    two = _silent(0, "ante_mc", "retro_mc", ages={"retro_mc": 5})
    assert (
        two.fault
        and two.axis == "ante_mc"
        and two.text == "ante_mc: no TPDO1 for 3 cycles (allowed 2) (also silent: retro_mc)"
    )
    every = _silent(0, *AXES, ages={"ante_wire": 4})
    assert every.fault and every.reason == Reason.STALE_FEEDBACK and every.axis == ""
    assert (
        every.text
        == f"no TPDO1 from any of the {len(AXES)} drives for 3 cycles (allowed 2): SYNC lost or bus down"
    )


def test_a_missing_tpdo1_after_a_sync_the_master_did_not_send_names_the_sync() -> None:
    every = _silent(3, *AXES)
    assert (
        every.fault
        and every.axis == ""
        and every.text
        == (
            f"SYNC lost: the master sent no SYNC for 3 cycles; no TPDO1 from any of the {len(AXES)} drives "
            "for 3 cycles (allowed 2)"
        )
    )
    one = _silent(1, "ante_wire")
    assert one.fault and one.axis == "ante_wire"
    assert (
        one.text
        == "ante_wire: SYNC lost: the master sent no SYNC for 1 cycles; no TPDO1 for 3 cycles (allowed 2)"
    )


def test_closing_stops_every_axis_without_latching() -> None:
    sup, fb, cmds, est = _running()
    fb.axes["ante_mc"].position = 1.25
    v = sup.enforce(
        0.0025, CFG.period, cmds, fb, est, MOVE, HELD, CycleInputs(stop_goal=DriveGoal.QUICK_STOP)
    )
    assert not v.fault and not sup.latched
    assert all(c.goal == DriveGoal.QUICK_STOP for c in cmds.axes.values())
    assert cmds.axes["ante_mc"].target == 1.25
    sup.enforce(0.005, CFG.period, cmds, fb, est, MOVE, HELD, CycleInputs(stop_goal=DriveGoal.DISABLED))
    assert all(c.goal == DriveGoal.DISABLED for c in cmds.axes.values())


def test_after_closing_every_axis_starts_again_from_rest() -> None:
    """A closing cycle puts every target at its actual position and forgets the speed: if cycles
    go on (the application acts again), an axis asked to stay where it was stopped stays."""
    axis = "retro_wire"
    sup, fb, cmds, est, t = _at_speed(axis, 10.0)
    t += CFG.period
    sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD, CycleInputs(stop_goal=DriveGoal.QUICK_STOP))
    assert sup.velocity == [0.0] * len(sup.axes)
    x = cmds.axes[axis].target
    assert x == fb.axes[axis].position
    for c in cmds.axes.values():
        c.goal = DriveGoal.ENABLED
    v = sup.enforce(t + CFG.period, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v == Verdict() and cmds.axes[axis].target == x


# ---------------------------------------------------------------------------- escalation (invariant 9)


def _ramp_cycles(cfg: Config) -> int:
    """Cycles for the slowest quick-stop ramp from max speed, plus the two cycles of the frames
    (quick stop out, state back): how long a drive may still report a powered state."""
    return max(math.ceil(d.max_speed / d.quick_stop_decel / cfg.period) + 2 for d in cfg.drives.values())


def _latched_cycle(sup: SafetySupervisor, fb: Feedback, cmds: Commands, est: Estimate, k: int) -> list[str]:
    """One cycle under the latch; the axes escalated in it."""
    v = sup.enforce(0.0025 * (k + 2), CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.fault and all(c.goal == DriveGoal.QUICK_STOP for c in cmds.axes.values())
    return [a for a, c in cmds.axes.items() if c.escalate]


def test_a_drive_that_never_stops_is_escalated_right_after_the_slowest_ramp() -> None:
    """A drive still fresh in OPERATION ENABLED once every drive could have ramped down from max
    speed has ignored its quick stop: escalated in the next cycle, not earlier (a drive still
    ramping is left to its own ramp); the drives that stopped are left alone."""
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.HEARTBEAT, "heartbeat lost", "ante_mc")
    for a, af in fb.axes.items():
        af.state = DriveState.OPERATION_ENABLED if a == "retro_wire" else DriveState.QUICK_STOP_ACTIVE
    ramp = _ramp_cycles(CFG)
    for k in range(ramp):
        assert _latched_cycle(sup, fb, cmds, est, k) == [], k
    assert _latched_cycle(sup, fb, cmds, est, ramp) == ["retro_wire"]
    assert sup.escalated == [a == "retro_wire" for a in sup.axes]


def test_a_silent_drive_is_escalated_only_after_the_ramp() -> None:
    """A drive whose feedback went stale under the latch (e.g. put in pre-operational by another
    node) cannot be seen to stop: escalated once the ramp is over, not while it may still ramp."""
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
    for af in fb.axes.values():
        af.state = DriveState.SWITCH_ON_DISABLED
    silent = fb.axes["ante_mc"]
    silent.state = DriveState.OPERATION_ENABLED
    silent.age_cycles = CFG.safety.feedback_max_age_cycles + 1
    ramp = _ramp_cycles(CFG)
    for k in range(ramp):
        assert _latched_cycle(sup, fb, cmds, est, k) == [], k
    assert _latched_cycle(sup, fb, cmds, est, ramp) == ["ante_mc"]
    silent.age_cycles = CFG.safety.feedback_max_age_cycles  # fresh enough again, still powered
    assert _latched_cycle(sup, fb, cmds, est, ramp + 1) == ["ante_mc"]


@pytest.mark.parametrize(
    "back", [DriveState.READY_TO_SWITCH_ON, DriveState.SWITCHED_ON, DriveState.OPERATION_ENABLED]
)
@pytest.mark.parametrize(
    "stop",
    [
        DriveState.QUICK_STOP_ACTIVE,
        DriveState.SWITCH_ON_DISABLED,
        DriveState.FAULT,
        DriveState.FAULT_REACTION_ACTIVE,
    ],
)
def test_a_drive_seen_leaving_its_stop_is_escalated_in_that_cycle_for_the_rest_of_the_run(
    stop: DriveState, back: DriveState
) -> None:
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
    for af in fb.axes.values():
        af.state = stop
    assert _latched_cycle(sup, fb, cmds, est, 0) == []
    fb.axes["ante_wire"].state = back  # walked back by someone else's controlwords
    assert _latched_cycle(sup, fb, cmds, est, 1) == ["ante_wire"]  # at once, before the ramp ends
    fb.axes["ante_wire"].state = stop  # stopped again: still escalated, for as long as the latch
    for k in range(2, _ramp_cycles(CFG) + 4):
        assert _latched_cycle(sup, fb, cmds, est, k) == ["ante_wire"], k
    # even if someone started it again and it looks healthy: no acknowledge re-enables it
    for af in fb.axes.values():
        af.state, af.statusword = DriveState.SWITCH_ON_DISABLED, SW_TARGET_REACHED
    assert not sup.acknowledge(fb)
    assert sup.ack_blocker.startswith("ante_wire: escalated under this fault") and sup.latched
    assert _latched_cycle(sup, fb, cmds, est, _ramp_cycles(CFG) + 4) == ["ante_wire"]


def test_a_new_latch_starts_with_nobody_escalated() -> None:
    """Escalation belongs to the latch it happened under: a fault acknowledged without one, then
    a new fault, escalates nobody for what happened before."""
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
    for af in fb.axes.values():
        af.state, af.statusword = DriveState.SWITCH_ON_DISABLED, SW_TARGET_REACHED
    for k in range(_ramp_cycles(CFG) + 4):
        assert _latched_cycle(sup, fb, cmds, est, k) == [], k
    assert sup.acknowledge(fb)
    sup.enforce(1.0, CFG.period, cmds, fb, est, MOVE, HELD)  # the reset cycle
    assert not any(c.escalate for c in cmds.axes.values())
    sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
    assert _latched_cycle(sup, fb, cmds, est, 0) == []


def test_a_drive_still_powered_before_it_was_seen_stopping_is_not_escalated_early() -> None:
    """In the first cycles of a latch every drive still reports its old state (the quick stop is
    on its way): not a drive leaving its stop, so not escalated."""
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
    assert _latched_cycle(sup, fb, cmds, est, 0) == []
    assert _latched_cycle(sup, fb, cmds, est, 1) == []


def test_closing_never_escalates() -> None:
    sup, fb, cmds, est = _running()
    for k in range(_ramp_cycles(CFG) + 3):
        v = sup.enforce(
            0.0025 * (k + 1),
            CFG.period,
            cmds,
            fb,
            est,
            MOVE,
            HELD,
            CycleInputs(stop_goal=DriveGoal.QUICK_STOP),
        )
        assert not v.fault and not any(c.escalate for c in cmds.axes.values())


# ---------------------------------------------------------------------------- a drive follows its target


def _follow_bounds(axis: str) -> tuple[float, int]:
    """The drive's own following-error window plus two cycles at max speed; its time-out in
    cycles plus two (from the config, not from the supervisor)."""
    d = CFG.drives[axis]
    return (
        d.following_error_window + 2.0 * d.max_speed * CFG.period,
        math.ceil(d.following_error_timeout_ms / 1000.0 / CFG.period) + 2,
    )


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_drive_that_does_not_follow_its_target_is_a_fault_after_window_and_time(sign: float) -> None:
    """The master's own check: the target sent a cycle ago farther than the window from the
    position, for more than the time-out's cycles: a DRIVE_FAULT naming axis, position, target,
    error and window; one cycle less is not; an error back within the window restarts the count."""
    axis = "retro_mc"
    win, cycles = _follow_bounds(axis)
    sup, fb, cmds, est, t = _at_speed(axis, 0.0)
    x = fb.axes[axis].position
    target = x + sign * math.nextafter(win, math.inf) + sign * 1e-9
    # the supervisor sent ``target``: feed it as the last target (as after a ramp it allowed)
    sup.target[sup.axes.index(axis)] = target
    cmds.axes[axis].target = target
    for k in range(cycles):
        t += CFG.period
        v = sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD)
        assert not v.fault, (k, v)
        cmds.axes[axis].target = target
        sup.target[sup.axes.index(axis)] = target
    fb.axes[axis].position = target - sign * 0.5 * win  # within the window: count restarts
    t += CFG.period
    assert not sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD).fault
    fb.axes[axis].position = x
    for k in range(cycles + 1):
        cmds.axes[axis].target = target
        sup.target[sup.axes.index(axis)] = target
        t += CFG.period
        v = sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD)
        assert v.fault == (k == cycles), (k, v)
    assert v.reason == Reason.DRIVE_FAULT and v.axis == axis
    assert v.text.startswith(
        f"{axis}: does not follow its target: position {x:.3f}, target sent {target:.3f}"
    )
    assert f"beyond {win:.3g} for {cycles + 1} cycles" in v.text


def _follow_cycle(
    sup: SafetySupervisor,
    fb: Feedback,
    cmds: Commands,
    est: Estimate,
    t: float,
    axis: str,
    target: float,
    position: float,
    *,
    age: int = 0,
    goal: DriveGoal = DriveGoal.ENABLED,
) -> Verdict:
    """One cycle in which the supervisor had sent ``target`` to ``axis`` and it reports ``position``."""
    sup.target[sup.axes.index(axis)] = target
    cmds.axes[axis].target = target
    cmds.axes[axis].goal = goal
    fb.axes[axis].position = position
    fb.axes[axis].age_cycles = age
    return sup.enforce(t, CFG.period, cmds, fb, est, Objective("ready", True), HELD)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_following_counts_only_fresh_cycles_beyond_the_window_of_a_drive_enabled_since_the_last(
    sign: float,
) -> None:
    """Exactly at the window is within it; stale cycles are not counted (nor do they restart the
    count); a goal other than ENABLED restarts it, and the first cycle after it is not counted."""
    axis = "ante_wire"
    win, cycles = _follow_bounds(axis)
    sup, fb, cmds, est = _running()
    t = 0.0
    for k in range(3 * cycles):
        t += CFG.period
        assert not _follow_cycle(sup, fb, cmds, est, t, axis, sign * win, 0.0).fault, k
    far = sign * math.nextafter(win, math.inf)
    for k in range(cycles):
        t += CFG.period
        assert not _follow_cycle(sup, fb, cmds, est, t, axis, far, 0.0).fault, k
        t += CFG.period
        assert not _follow_cycle(sup, fb, cmds, est, t, axis, far, 0.0, age=1).fault, k
    t += CFG.period
    assert not _follow_cycle(sup, fb, cmds, est, t, axis, far, 0.0, goal=DriveGoal.SWITCHED_ON).fault
    for k in range(cycles + 1):  # the first is not counted: not enabled since the last cycle
        t += CFG.period
        assert not _follow_cycle(sup, fb, cmds, est, t, axis, far, 0.0).fault, k
    t += CFG.period
    assert _follow_cycle(sup, fb, cmds, est, t, axis, far, 0.0).fault


def test_following_time_is_the_drive_s_time_out_in_cycles_rounded_up_plus_two() -> None:
    """1001 ms at 2.5 ms is 400.4 cycles: 401, plus two; then the fault."""
    axis = "retro_mc"
    cfg = CFG.replace(
        drives={**CFG.drives, axis: dataclasses.replace(CFG.drives[axis], following_error_timeout_ms=1001)}
    )
    sup = SafetySupervisor(cfg)
    _, fb, cmds, est = _running()
    sup.enforce(0.0, CFG.period, cmds, fb, est, Objective("ready", True), HELD)
    win, _ = _follow_bounds(axis)
    t = 0.0
    for k in range(404):
        t += CFG.period
        v = _follow_cycle(sup, fb, cmds, est, t, axis, 2.0 * win, 0.0)
        assert v.fault == (k == 403), k


@given(
    axis=st.sampled_from(AXES),
    errors=st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=60),
    stale=st.lists(st.booleans(), min_size=60, max_size=60),
)
def test_property_a_drive_within_its_following_window_is_never_a_following_fault(
    axis: str, errors: list[float], stale: list[bool]
) -> None:
    """Whatever its error within the window (as a fraction of it), fresh or one cycle late, a
    drive that follows is never faulted for it, however long it runs."""
    win, _ = _follow_bounds(axis)
    sup, fb, cmds, est = _running()
    i = sup.axes.index(axis)
    t = 0.0
    for k, frac in enumerate(errors * 3):
        t += CFG.period
        target = 1.0
        sup.target[i] = target
        cmds.axes[axis].target = target
        fb.axes[axis].position = target - frac * win
        fb.axes[axis].age_cycles = 1 if stale[k % 60] else 0
        v = sup.enforce(t, CFG.period, cmds, fb, est, Objective("ready", True), HELD)
        assert not v.fault, (k, v)


# ---------------------------------------------------------------------------- the stop deadline


def _deadline() -> int:
    """Twice the slowest quick-stop ramp from max speed, plus the frames' two cycles, plus the
    feedback age allowed (computed here from the config, not taken from the supervisor)."""
    ramp = max(d.max_speed / d.quick_stop_decel for d in CFG.drives.values())
    return math.ceil(2.0 * ramp / CFG.period) + 2 + CFG.safety.feedback_max_age_cycles


def test_the_stop_deadline_is_twice_the_slowest_ramp_plus_frames_and_feedback_age() -> None:
    assert SafetySupervisor(CFG).stop_deadline_cycles == _deadline()
    slow = CFG.replace(
        drives={
            **CFG.drives,
            "retro_mc": dataclasses.replace(CFG.drives["retro_mc"], quick_stop_decel=250.0),
        }
    )
    # retro_mc: 10 mm/s at 250 mm/s^2 is 0.04 s, twice that 32 cycles
    assert SafetySupervisor(slow).stop_deadline_cycles == 32 + 2 + CFG.safety.feedback_max_age_cycles


@pytest.mark.parametrize("state", [DriveState.QUICK_STOP_ACTIVE, DriveState.FAULT_REACTION_ACTIVE])
def test_a_drive_still_stopping_at_the_stop_deadline_is_escalated_then_not_before(state: DriveState) -> None:
    """Still ramping (QUICK STOP ACTIVE without target reached, or FAULT REACTION ACTIVE) once every
    drive's stop must be over: escalated in the next cycle, named once; the others stopped."""
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
    for a, af in fb.axes.items():
        af.state, af.statusword = (state, 0) if a == "ante_mc" else (DriveState.SWITCH_ON_DISABLED, 0)
    deadline = _deadline()
    for k in range(deadline):
        fb.axes["ante_mc"].position = 0.001 * k  # still sliding on its own ramp
        assert _latched_cycle(sup, fb, cmds, est, k) == [], k
    assert sup.escalation_log == []
    assert _latched_cycle(sup, fb, cmds, est, deadline) == ["ante_mc"]
    assert len(sup.escalation_log) == 1
    axis, text = sup.escalation_log[0]
    assert axis == "ante_mc" and text.startswith(
        f"ante_mc: escalated (disable voltage, NMT stop): still {state.name}"
    )
    assert sup.take_escalations() == [(axis, text)] and sup.escalation_log == []
    fb.axes["ante_mc"].state = DriveState.SWITCH_ON_DISABLED  # stopped at last: still escalated
    assert _latched_cycle(sup, fb, cmds, est, deadline + 1) == ["ante_mc"]
    assert sup.escalation_log == []  # named once per latch


def test_a_drive_at_rest_in_quick_stop_active_is_left_alone_unless_it_moves() -> None:
    """Quick-stop options 5..8 stay in QUICK STOP ACTIVE at rest (target reached): not escalated
    while it stands within its position_jump_tolerance of where it was at the deadline; beyond,
    it moves on its own with torque on: escalated. Torque off (SWITCH ON DISABLED), a drive
    pushed by its load is not (disabling its voltage again would change nothing)."""
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
    for a, af in fb.axes.items():
        af.state = DriveState.QUICK_STOP_ACTIVE if a == "retro_wire" else DriveState.SWITCH_ON_DISABLED
        af.statusword = SW_TARGET_REACHED
        af.position = 1.0
    tol = CFG.drives["retro_wire"].position_jump_tolerance
    deadline = _deadline()
    for k in range(deadline + 20):
        assert _latched_cycle(sup, fb, cmds, est, k) == [], k
    fb.axes["ante_wire"].position = 1.0 + 10 * tol  # torque off, pushed: not escalated
    fb.axes["retro_wire"].position = 1.0 - 0.9 * tol
    assert _latched_cycle(sup, fb, cmds, est, deadline + 20) == []
    fb.axes["retro_wire"].position = 1.0 - 1.5 * tol
    assert _latched_cycle(sup, fb, cmds, est, deadline + 21) == ["retro_wire"]
    assert "moved -0.075 in QUICK_STOP_ACTIVE" in sup.escalation_log[0][1]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_drive_at_rest_in_quick_stop_active_may_move_exactly_its_tolerance(sign: float) -> None:
    """The bound is inclusive: exactly position_jump_tolerance from where it stood is still at
    rest (0.0 and the tolerance are exact in binary arithmetic here)."""
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
    for af in fb.axes.values():
        af.state, af.statusword, af.position = DriveState.QUICK_STOP_ACTIVE, SW_TARGET_REACHED, 0.0
    deadline = _deadline()
    for k in range(deadline + 2):
        assert _latched_cycle(sup, fb, cmds, est, k) == [], k
    tol = CFG.drives["ante_mc"].position_jump_tolerance
    fb.axes["ante_mc"].position = sign * tol
    assert _latched_cycle(sup, fb, cmds, est, deadline + 2) == []
    fb.axes["ante_mc"].position = sign * math.nextafter(tol, 1.0)
    assert _latched_cycle(sup, fb, cmds, est, deadline + 3) == ["ante_mc"]


_V_AXES = ("ante_wire", "ante_mc", "retro_wire", "retro_mc")


@given(
    axis=st.sampled_from(_V_AXES),
    speed=st.floats(0.0, 2.0),
    faster=st.floats(1.0, 50.0),
    delay=st.integers(0, 2),
    option6=st.booleans(),
    age=st.integers(0, CFG.safety.feedback_max_age_cycles),
)
def test_property_a_drive_that_ramps_at_least_as_hard_as_set_up_is_never_escalated(
    axis: str, speed: float, faster: float, delay: int, option6: bool, age: int
) -> None:
    """Invariant 9 spares a healthy stop: from up to twice max speed, starting up to two cycles
    late, at least at its quick_stop_decel, seen with feedback up to the allowed age, ending in
    SWITCH ON DISABLED (option 2) or at rest in QUICK STOP ACTIVE (option 6): never escalated."""
    sup, fb, cmds, est = _running()
    d = CFG.drives[axis]
    v = speed * d.max_speed
    decel = faster * d.quick_stop_decel
    sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
    for af in fb.axes.values():
        af.state = DriveState.SWITCH_ON_DISABLED
    af = fb.axes[axis]
    x = 0.0
    history: list[tuple[DriveState, int, float]] = []
    for k in range(_deadline() + 40):
        if k >= delay:
            v = max(0.0, v - decel * CFG.period)
        x += v * CFG.period
        if v > 0.0 or k < delay:
            history.append((DriveState.QUICK_STOP_ACTIVE, 0, x))
        elif option6:
            history.append((DriveState.QUICK_STOP_ACTIVE, SW_TARGET_REACHED, x))
        else:
            history.append((DriveState.SWITCH_ON_DISABLED, 0, x))
        # the feedback of ``age`` cycles ago (stale by that much, within the allowance)
        af.state, af.statusword, af.position = history[max(0, len(history) - 1 - age)]
        af.age_cycles = min(age, k)
        assert _latched_cycle(sup, fb, cmds, est, k) == [], (k, af.state)


@given(
    axis=st.sampled_from(_V_AXES),
    speed=st.floats(0.5, 2.0),
    lie=st.booleans(),
)
def test_property_a_drive_still_moving_after_the_stop_deadline_is_escalated_in_the_next_cycle(
    axis: str, speed: float, lie: bool
) -> None:
    """Invariant 9 catches a slow stop: a drive whose ramp (0x6085 rewritten) leaves it moving past
    the deadline is escalated at the first cycle past it, whether it reports the ramp (no target
    reached) or claims to be at rest in QUICK STOP ACTIVE while it moves (``lie``), then as soon
    as it has moved more than its position_jump_tolerance."""
    sup, fb, cmds, est = _running()
    d = CFG.drives[axis]
    v = speed * d.max_speed
    sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
    for af in fb.axes.values():
        af.state = DriveState.SWITCH_ON_DISABLED
    af = fb.axes[axis]
    af.state = DriveState.QUICK_STOP_ACTIVE
    af.statusword = SW_TARGET_REACHED if lie else 0
    deadline = _deadline()
    x_deadline = math.nan
    for k in range(deadline + 200):
        af.position = v * CFG.period * k  # hardly slowing down
        if k == deadline - 1:
            x_deadline = af.position  # the last cycle within the deadline
        out = _latched_cycle(sup, fb, cmds, est, k)
        if k < deadline:
            assert out == [], k
        elif not lie or abs(af.position - x_deadline) > d.position_jump_tolerance:
            assert out == [axis], k
            if not lie:
                assert k == deadline
            return
        else:
            assert out == [], k
    pytest.fail("never escalated")


# ---------------------------------------------------------------------------- acknowledge and after


def test_acknowledge_with_nothing_latched_is_accepted_and_not_counted() -> None:
    sup, fb, _, _ = _running()
    assert sup.acknowledge(fb) and sup.ack_blocker == "" and sup.generation == 0


@pytest.mark.parametrize("what", ["position", "force"])
def test_acknowledge_is_refused_while_any_feedback_is_not_finite(what: str) -> None:
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.HEARTBEAT, "heartbeat lost", "ante_mc")
    sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    setattr(fb.axes["retro_mc"], what, math.nan)
    assert not sup.acknowledge(fb) and "retro_mc: feedback not finite" in sup.ack_blocker
    setattr(fb.axes["retro_mc"], what, 0.0)
    assert sup.acknowledge(fb)


def test_acknowledge_is_refused_at_the_force_alarm_and_accepted_below_it() -> None:
    sup, fb, cmds, est = _running()
    alarm = CFG.drives["ante_wire"].force_alarm
    fb.axes["ante_wire"].force = CFG.drives["ante_wire"].force_stop
    sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    for force in (alarm, -alarm):
        fb.axes["ante_wire"].force = force
        assert not sup.acknowledge(fb) and "force_alarm" in sup.ack_blocker
    fb.axes["ante_wire"].force = math.nextafter(alarm, 0.0)
    assert sup.acknowledge(fb)


def test_acknowledge_into_paused_is_refused_while_imaging_is_lost() -> None:
    """Paused watches imaging: landing there with imaging older than twice its allowed age (and
    the estimator calibrated) would fault again at once. Not so landing in ready (no watch) or
    before calibration (an imaging age means nothing then)."""
    lim = 2.0 * CFG.safety.imaging_max_age_s
    for calibrated, age, watched, ok in [
        (True, lim + 0.1, True, False),
        (True, lim + 0.1, False, True),
        (False, lim + 0.1, True, True),
        (True, lim, True, True),
    ]:
        sup, fb, cmds, est = _running()
        est = dataclasses.replace(est, imaging_age=age)
        sup.raise_fault(Reason.STALE_FEEDBACK, "imaging lost")
        for af in fb.axes.values():
            af.state = DriveState.SWITCH_ON_DISABLED
        sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD, CycleInputs(calibrated=calibrated))
        if watched:
            assert sup.acknowledge(fb), "imaging_watched is off unless asked for"
            sup.raise_fault(Reason.STALE_FEEDBACK, "imaging lost")
            sup.enforce(0.005, CFG.period, cmds, fb, est, MOVE, HELD, CycleInputs(calibrated=calibrated))
        assert sup.acknowledge(fb, imaging_watched=watched) is ok, (calibrated, age, watched)
        if not ok:
            assert sup.ack_blocker == (
                f"imaging lost for {age:.2f} s (allowed {lim:g} s, twice imaging_max_age_s, in the "
                "paused phase this acknowledge lands in): wait for imaging"
            )


def test_after_an_acknowledge_one_reset_cycle_then_re_enabling_is_no_new_fault() -> None:
    """The drive that faulted comes back through SWITCH ON DISABLED under an ENABLED goal: that is
    re-enabling, not a drive leaving OPERATION ENABLED; the reset lasts one cycle, targets restart
    from the actual positions and motion is allowed again."""
    sup, fb, cmds, est = _running()
    fb.axes["retro_mc"].state = DriveState.FAULT
    assert sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD).reason == Reason.DRIVE_FAULT
    fb.axes["retro_mc"].position = 0.75
    assert sup.acknowledge(fb) and sup.generation == 1
    assert all(math.isnan(x) for x in sup.target) and sup.velocity == [0.0] * len(sup.axes)
    t = 0.005
    for state in (DriveState.FAULT, DriveState.SWITCH_ON_DISABLED, DriveState.READY_TO_SWITCH_ON):
        fb.axes["retro_mc"].state = state
        for c in cmds.axes.values():
            c.goal = DriveGoal.ENABLED
        v = sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD)
        assert not v.fault and not sup.latched, state
        first = t == 0.005
        assert all((c.goal == DriveGoal.FAULT_RESET) is first for c in cmds.axes.values()), state
        assert not any(c.escalate for c in cmds.axes.values()) and sup.velocity == [0.0] * len(sup.axes)
        assert cmds.axes["retro_mc"].target == 0.75
        t += CFG.period
    fb.axes["retro_mc"].state = DriveState.OPERATION_ENABLED
    sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD)
    # enabled again and asked to stay: it stays (no speed left over from before the fault)
    assert cmds.axes["retro_mc"].target == 0.75 and sup.velocity == [0.0] * len(sup.axes)
    cmds.axes["ante_wire"].target = 0.0005
    v = sup.enforce(t + CFG.period, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v == Verdict() and cmds.axes["ante_wire"].target == 0.0005


def test_an_acknowledge_restarts_the_coupling_grace() -> None:
    """Cycles of coupling out of range before another fault do not count after its acknowledge:
    the full ``coupling_fault_cycles`` of grace again, then the fault."""
    sup, fb, cmds, est = _running()
    n = CFG.safety.coupling_fault_cycles
    est.coupling = CFG.procedure.coupling_max + 0.1
    t = 0.0
    for _ in range(n // 2):
        t += CFG.period
        assert not sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD).fault
    sup.raise_fault(Reason.HEARTBEAT, "heartbeat lost", "ante_mc")
    t += CFG.period
    assert sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD).reason == Reason.HEARTBEAT
    assert sup.acknowledge(fb)
    for k in range(n):
        t += CFG.period
        assert not sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD).fault, k
    t += CFG.period
    assert sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD).reason == Reason.COUPLING


# ---------------------------------------------------------------------------- inputs at their bounds


@pytest.mark.parametrize("what", ["position", "force"])
def test_feedback_at_its_abs_max_is_taken_and_beyond_it_rejected(what: str) -> None:
    """``position_abs_max``/``force_abs_max``: values beyond +/- the bound are rejected (held,
    counted); the bound itself is a value like any other. (The force bound is set below
    ``force_stop`` here, so that a force at it is no fault.)"""
    cfg = CFG.replace(safety=dataclasses.replace(CFG.safety, force_abs_max=2.0))
    bound = cfg.safety.position_abs_max if what == "position" else cfg.safety.force_abs_max
    for value, rejected in ((bound, False), (-bound, False), (math.nextafter(bound, math.inf), True)):
        sup = SafetySupervisor(cfg)
        _, fb, cmds, est = _running()
        sup.enforce(0.0, cfg.period, cmds, fb, est, Objective("ready", True), HELD)
        setattr(fb.axes["ante_wire_rot"], what, value)
        cmds.axes["ante_wire"].target = 0.0005
        v = sup.enforce(0.0025, cfg.period, cmds, fb, est, MOVE, HELD)
        assert not v.fault
        assert (sup.rejected == 1) is rejected and (v.reason == Reason.NON_FINITE) is rejected
        assert (cmds.axes["ante_wire"].target == 0.0005) is not rejected


@pytest.mark.parametrize("request_", [math.inf, -math.inf, math.nan])
def test_a_request_that_is_not_finite_holds_that_axis_and_counts_once(request_: float) -> None:
    sup, fb, cmds, est = _running()
    cmds.axes["ante_wire"].target = request_
    cmds.axes["retro_wire"].target = -0.0005
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.NON_FINITE and v.axis == "ante_wire" and sup.rejected == 1
    assert cmds.axes["ante_wire"].target == 0.0 and cmds.axes["retro_wire"].target == -0.0005


@pytest.mark.parametrize(
    ("gap", "coupling"),
    [(math.nan, 0.5), (4.5, math.nan), (-math.inf, 0.5), (math.inf, 0.5), (4.5, -math.inf), (4.5, math.inf)],
)
def test_an_estimate_with_any_non_finite_distance_is_rejected(gap: float, coupling: float) -> None:
    sup, fb, cmds, est = _running()
    est.gap, est.coupling = gap, coupling
    cmds.axes["ante_wire"].target = 0.0005
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert v.reason == Reason.NON_FINITE and sup.rejected == 1
    assert cmds.axes["ante_wire"].target == 0.0


def test_an_axis_at_speed_asked_to_stop_dead_ramps_down() -> None:
    axis = "retro_wire"
    sup, fb, cmds, est, t = _at_speed(axis, 10.0)
    amax = CFG.drives[axis].max_accel
    x, v = cmds.axes[axis].target, 10.0
    while v > 0.0:
        t += CFG.period
        cmds.axes[axis].target = x  # stay where the last target was
        sup.enforce(t, CFG.period, cmds, fb, est, MOVE, HELD)
        v_new = (cmds.axes[axis].target - x) / CFG.period
        assert v_new == pytest.approx(max(0.0, v - amax * CFG.period), abs=1e-9)
        x, v = cmds.axes[axis].target, v_new


def test_a_slow_axis_asked_to_stay_ramps_down_too() -> None:
    """Invariant 3 at any speed: a wire at 1 mm/s asked to stay where its last target was brakes
    at a_max (a_max * period = 0.5 mm/s per cycle here), it is not stopped dead."""
    axis = "ante_wire"
    sup, fb, cmds, est = _running()
    h = CFG.period
    i = sup.axes.index(axis)
    dv = CFG.drives[axis].max_accel * h
    # 0.5, 0.5, then 1 mm/s: targets on whole and half multiples of the period (exact speeds)
    t = 0.0
    for x in (0.5 * h, h, 2.0 * h):
        t += h
        cmds.axes[axis].target = x
        assert sup.enforce(t, h, cmds, fb, est, MOVE, HELD) == Verdict()
        fb.axes[axis].position = x
    assert sup.velocity[i] == 1.0
    x, v = 2.0 * h, 1.0
    while v > 0.0:
        t += h
        cmds.axes[axis].target = x
        verdict = sup.enforce(t, h, cmds, fb, est, MOVE, HELD)
        v_new = (cmds.axes[axis].target - x) / h
        assert v_new == pytest.approx(max(0.0, v - dv), abs=1e-9)
        assert verdict.reason == (Reason.ACCEL_LIMIT if v > 0.0 and v_new > 0.0 else Reason.OK)
        x, v = cmds.axes[axis].target, v_new


def test_of_equal_ranks_the_rule_applied_first_names_the_verdict() -> None:
    """The support rule runs before the gap window and both rank alike: when each holds an axis
    in the same cycle, the verdict is the support rule's (of equal reasons, the first)."""
    sup, fb, cmds, est = _running()
    u = CFG.procedure.unsupported_max
    # the ante wire a hair short of its support limit; the MCs 31 mm apart (above gap_max), the
    # retro wire 1 mm out of its MC
    est.tips.update(ante_wire=u - 0.0005, ante_mc=0.0, retro_wire=30.0, retro_mc=31.0)
    est.gap, est.coupling = 31.0, 30.0 - (u - 0.0005)
    cmds.axes["ante_wire"].target = 0.001  # past the support limit
    cmds.axes["retro_mc"].target = -0.0005  # withdrawing opens the gap further
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, Objective("approach", True), HELD)
    assert cmds.axes["ante_wire"].target == 0.0 and cmds.axes["retro_mc"].target == 0.0
    assert v.reason == Reason.SUPPORT and v.axis == "ante_wire"


def _limited(reason: Reason) -> tuple[Verdict, str, str, tuple[float, ...]]:
    """One cycle in which ``reason``'s rule limits one axis: the verdict, that axis, a word the
    text must have and the configured limits it must quote."""
    p, h = CFG.procedure, CFG.period
    obj = MOVE
    sup, fb, cmds, est = _running(CFG_TIGHT if reason is Reason.TRAVEL_LIMIT else CFG)
    axis = "ante_wire"
    d = CFG.drives[axis]
    limits: tuple[float, ...]
    if reason is Reason.ACCEL_LIMIT:
        cmds.axes[axis].target = d.max_speed * h  # max speed from rest in one cycle
        word, limits = "acceleration", (d.max_accel,)
    elif reason is Reason.SPEED_LIMIT:
        cmds.axes[axis].target = 2.0 * d.max_speed * h
        word, limits = "speed", (d.max_speed,)
    elif reason is Reason.TRAVEL_LIMIT:
        cmds.axes[axis].target = 2.0 * CFG_TIGHT.drives[axis].travel_max
        word, limits = "travel", (CFG_TIGHT.drives[axis].travel_min, CFG_TIGHT.drives[axis].travel_max)
    elif reason is Reason.FORCE_ALARM:
        fb.axes[axis].force = d.force_alarm
        cmds.axes[axis].target = 0.0005
        word, limits = "force_alarm", (d.force_alarm,)
    elif reason is Reason.NON_FINITE:
        cmds.axes[axis].target = math.nan
        word, limits = "not finite", ()
    elif reason is Reason.SUPPORT:
        est.tips["ante_wire"] = p.unsupported_max - 0.0005  # its MC tip at 0, retro far away
        est.tips.update(retro_wire=30.0, retro_mc=31.0)
        cmds.axes[axis].target = 0.001
        word, limits = "unsupported", (p.unsupported_max,)
    elif reason is Reason.COUPLING:
        axis = "retro_wire"
        est.coupling = -0.5
        cmds.axes[axis].target = 0.0005
        word, limits = "coupling", (p.coupling_max,)
    elif reason is Reason.GAP_FLOOR:
        axis = "ante_mc"
        est.gap = p.gap_min + 0.0004
        cmds.axes[axis].target = 0.0005
        word, limits = "gap", (p.gap_min, p.gap_max)
    else:
        axis = "retro_mc"
        est.gap = 31.6
        cmds.axes[axis].target = -0.0005
        obj = Objective("approach", True)
        word, limits = "gap", (p.gap_min, p.gap_max)
    return sup.enforce(h, h, cmds, fb, est, obj, HELD), axis, word, limits


@pytest.mark.parametrize(
    "reason",
    [
        Reason.ACCEL_LIMIT,
        Reason.SPEED_LIMIT,
        Reason.TRAVEL_LIMIT,
        Reason.FORCE_ALARM,
        Reason.NON_FINITE,
        Reason.SUPPORT,
        Reason.COUPLING,
        Reason.GAP_FLOOR,
        Reason.GAP_WINDOW,
    ],
)
def test_every_limit_verdict_says_which_axis_and_which_limit(reason: Reason) -> None:
    """What the operator reads when a rule limits a command: the axis held and the rule, with
    the configured limit it applied."""
    v, axis, word, limits = _limited(reason)
    assert v.reason == reason and not v.fault and v.axis == axis
    assert axis in v.text and word in v.text, v.text
    for limit in limits:
        assert f"{limit:g}" in v.text, (limit, v.text)


@pytest.mark.parametrize(("phase", "coupled"), [("approach", True), ("hand_in_hand.retro_step", False)])
def test_the_wire_coupling_is_judged_only_in_hand_in_hand_and_when_coupled(phase: str, coupled: bool) -> None:
    sup, fb, cmds, est = _running()
    est.coupling = -0.5  # the retro wire tip ahead of the ante wire's: out of [0, coupling_max]
    cmds.axes["retro_wire"].target = 0.0005  # would shorten it further
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, Objective(phase, True, coupled=coupled), HELD)
    assert cmds.axes["retro_wire"].target == 0.0005 and v.reason != Reason.COUPLING
    # where it is judged, the same request is held
    sup, fb, cmds, est = _running()
    est.coupling = -0.5
    cmds.axes["retro_wire"].target = 0.0005
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    assert cmds.axes["retro_wire"].target == 0.0 and v.reason == Reason.COUPLING


def test_of_equal_reasons_the_verdict_names_the_first_axis() -> None:
    """Several axes limited alike in one cycle: one verdict, naming the first of them in the
    supervisor's axis order (deterministic, invariant 8)."""
    sup, fb, cmds, est = _running()
    for a in ("retro_wire", "ante_wire"):
        cmds.axes[a].target = -0.05  # 20 mm/s from rest in one cycle
    v = sup.enforce(0.0025, CFG.period, cmds, fb, est, MOVE, HELD)
    first = next(a for a in sup.axes if a in ("retro_wire", "ante_wire"))
    assert v.reason == Reason.ACCEL_LIMIT and v.axis == first


def test_an_axis_whose_position_was_never_known_has_no_target_and_no_speed() -> None:
    sup, fb, cmds, est = _running()
    sup = SafetySupervisor(CFG)
    fb.axes["ante_mc"].position = math.nan
    cmds.axes["ante_mc"].target = 0.0005
    for k in range(3):
        sup.enforce(0.0025 * k, CFG.period, cmds, fb, est, MOVE, HELD)
        i = sup.axes.index("ante_mc")
        assert math.isnan(sup.target[i]) and sup.velocity[i] == 0.0
        assert math.isfinite(cmds.axes["ante_mc"].target)


# ---------------------------------------------------------------------------- properties (last: slowest)


@given(st.data())
def test_every_invariant_holds_over_random_cycles(data: st.DataObject) -> None:
    """Invariants 1-7 after every cycle of a random sequence (faults, acks, stale data, jitter)."""
    draw = data.draw
    chaos = draw(CHAOS)
    cfg = draw(st.sampled_from([CFG, CFG_TIGHT]))
    push = draw(PUSH)
    sup = SafetySupervisor(cfg)
    hist = History()
    fb = Feedback.for_axes(AXES)
    cmds = Commands.for_axes(AXES)
    est = Estimate(tips=dict.fromkeys(LINEAR_AXES, 0.0), force=dict.fromkeys(AXES, 0.0))
    t = 0.0
    for _ in range(draw(st.integers(1, 60))):
        targets = {a: cmds.axes[a].target for a in AXES}
        draw(feedback_step(fb, targets, chaos))
        draw(estimate_step(est, chaos))
        draw(request_step(cmds, targets, chaos, push))
        dt = random_dt(draw, chaos)
        t += dt if math.isfinite(dt) else 0.0
        obj = Objective(draw(st.sampled_from(PHASES)), not rare(draw, 10, chaos))
        op = OperatorInput(enable_held=not rare(draw, 10, chaos), estop=rare(draw, 80, chaos))
        if rare(draw, 60, chaos):
            sup.raise_fault(Reason.HEARTBEAT, "heartbeat lost", "ante_mc")
        checked_enforce(sup, hist, cfg, t, dt, cmds, fb, est, obj, op)
        if sup.latched and (chaos < 2 or draw(st.booleans())):
            accepted = sup.acknowledge(fb)
            assert accepted == (not sup.latched)
            if accepted:
                hist.out.clear()  # targets restart from the actual positions
            # acknowledge never moves anything by itself
            assert all(math.isfinite(cmds.axes[a].target) for a in AXES)


@given(st.data())
def test_same_inputs_same_commands(data: st.DataObject) -> None:
    """Invariant 8: two supervisors fed the same sequence give identical commands and verdicts."""
    draw = data.draw
    chaos = draw(CHAOS)
    steps = []
    fb = Feedback.for_axes(AXES)
    cmds = Commands.for_axes(AXES)
    est = Estimate(tips=dict.fromkeys(LINEAR_AXES, 0.0))
    for _ in range(draw(st.integers(1, 8))):
        targets = {a: cmds.axes[a].target for a in AXES}
        draw(feedback_step(fb, targets, chaos))
        draw(estimate_step(est, chaos))
        draw(request_step(cmds, targets, chaos))
        steps.append(
            (
                {
                    a: (af.position, af.force, af.state, af.age_cycles, af.heartbeat_ok)
                    for a, af in fb.axes.items()
                },
                (est.valid, est.gap, est.coupling),
                {a: c.target for a, c in cmds.axes.items()},
                random_dt(draw, chaos),
                draw(st.sampled_from(PHASES)),
                draw(st.booleans()),
            )
        )

    def replay() -> list[tuple[object, ...]]:
        sup = SafetySupervisor(CFG)
        f = Feedback.for_axes(AXES)
        c = Commands.for_axes(AXES)
        e = Estimate(tips=dict.fromkeys(LINEAR_AXES, 0.0))
        out: list[tuple[object, ...]] = []
        t = 0.0
        for fbs, (valid, gap, cpl), req, dt, phase, held in steps:
            for a, (pos, force, state, age, hb) in fbs.items():
                af = f.axes[a]
                af.position, af.force, af.state, af.age_cycles, af.heartbeat_ok = pos, force, state, age, hb
            e.valid, e.gap, e.coupling = valid, gap, cpl
            for a, target in req.items():
                c.axes[a].target = target
                c.axes[a].goal = DriveGoal.ENABLED
            t += 0.0025
            v = sup.enforce(t, dt, c, f, e, Objective(phase, True), OperatorInput(enable_held=held))
            out.append((v, tuple((c.axes[a].target, c.axes[a].goal) for a in AXES)))
        return out

    first, second = replay(), replay()
    assert repr(first) == repr(second)


@pytest.mark.parametrize("sync_missed", [0, 1, 40])
def test_a_silent_drive_escalated_after_the_ramp_says_whether_the_master_sent_sync(sync_missed: int) -> None:
    """A drive that sends no TPDO1 after the quick-stop ramp is escalated either way; its text
    adds the SYNCs the master did not send, which is why every drive then stays silent."""
    sup, fb, cmds, est = _running()
    sup.raise_fault(Reason.BUS_FAULT, "SYNC lost")
    for af in fb.axes.values():
        af.state = DriveState.SWITCH_ON_DISABLED  # the others stopped
    fb.axes["retro_mc"].age_cycles = 1_000
    fb.sync_missed = sync_missed
    k = 0
    while not sup.escalation_log:
        _latched_cycle(sup, fb, cmds, est, k)
        k += 1
        assert k < 1_000
    (axis, text), *_ = sup.escalation_log
    base = (
        "retro_mc: escalated (disable voltage, NMT stop): no TPDO1 for 1000 cycles after the quick-stop ramp"
    )
    assert axis == "retro_mc"
    if sync_missed:
        assert text == f"{base} (the master sent no SYNC for {sync_missed} cycles)"
    else:
        assert text == base
