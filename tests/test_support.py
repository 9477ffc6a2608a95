"""Wire support: the pure functions and the supervisor's support rule (invariant 5)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_iface.cia402 import DriveState
from firmware_iface.types import Commands, DriveGoal, Feedback
from whih_control import support
from whih_control.config import load_config
from whih_control.safety import SafetySupervisor
from whih_control.types import AXIS_DIRECTION, LINEAR_AXES, Estimate, Objective, OperatorInput, Reason

from .conftest import CONFIGS

CFG = load_config(CONFIGS / "sim.toml")
AXES = tuple(CFG.drives)
U_MAX = CFG.procedure.unsupported_max
REACH = CFG.procedure.coupling_max


def test_unsupported_length_is_own_mc_distance_or_through_the_coupled_wire() -> None:
    # ante wire 10 mm past its MC; retro wire 0.5 mm ahead, 1.5 mm out of its MC: coupled
    assert support.unsupported_ante(10.0, 0.0, 10.5, 12.0, REACH) == 2.0
    assert support.unsupported_retro(10.0, 0.0, 10.5, 12.0, REACH) == 1.5
    # uncoupled (3 mm apart): each wire has only its own MC
    assert support.unsupported_ante(10.0, 0.0, 13.0, 14.5, REACH) == 10.0
    # a wire inside its MC is fully supported
    assert support.unsupported_ante(-1.0, 0.0, 13.0, 14.5, REACH) == 0.0


def test_force_capacity_follows_euler_with_the_tip_floor_and_the_shaft_cap() -> None:
    w = CFG.sim.wire
    f = [support.force_capacity(u, w.tip_load, w.tip_load_length, w.tip_segment, 2.5) for u in (5, 10, 20)]
    assert f[1] == w.tip_load  # rated at 10 mm
    assert math.isclose(f[0], 4 * f[1]) and math.isclose(f[2], f[1] / 4)
    at_floor = support.force_capacity(0.0, w.tip_load, w.tip_load_length, w.tip_segment, 2.5)
    assert at_floor == support.force_capacity(
        w.tip_segment, w.tip_load, w.tip_load_length, w.tip_segment, 2.5
    )
    assert support.force_capacity(0.1, 1.0, 10.0, 0.1, 2.5) == 2.5


@given(a=st.floats(0.0, 100.0), b=st.floats(0.0, 100.0), scale=st.floats(0.1, 50.0))
def test_capacity_never_rises_and_deviation_never_falls_with_unsupported_length(
    a: float, b: float, scale: float
) -> None:
    lo, hi = sorted((a, b))
    w = CFG.sim.wire
    cap = support.force_capacity
    assert cap(hi, w.tip_load, w.tip_load_length, w.tip_segment, 2.5) <= cap(
        lo, w.tip_load, w.tip_load_length, w.tip_segment, 2.5
    )
    assert support.deviation_support_factor(hi, scale) >= support.deviation_support_factor(lo, scale)


_tip = st.floats(-20.0, 60.0, allow_nan=False)
_move = st.floats(-0.05, 0.05, allow_nan=False)


def _running(
    tips: dict[str, float], insertion: float = 0.0
) -> tuple[SafetySupervisor, Feedback, Commands, Estimate]:
    """A supervisor at rest, every drive enabled at ``insertion`` (its own coordinate: the tips
    are where the estimate puts them)."""
    sup = SafetySupervisor(CFG)
    fb = Feedback.for_axes(AXES)
    for af in fb.axes.values():
        af.position = insertion
        af.state = DriveState.OPERATION_ENABLED
        af.age_cycles = 0
        af.heartbeat_ok = True
    cmds = Commands.for_axes(AXES)
    for c in cmds.axes.values():
        c.goal = DriveGoal.ENABLED
    est = Estimate(
        tips=dict(tips),
        force=dict.fromkeys(AXES, 0.0),
        gap=tips["retro_mc"] - tips["ante_mc"],
        coupling=tips["retro_wire"] - tips["ante_wire"],
        valid=True,
    )
    sup.enforce(0.0, CFG.period, cmds, fb, est, Objective("ready", True), OperatorInput(True))
    return sup, fb, cmds, est


@given(
    aw=_tip,
    am=_tip,
    c=st.floats(-1.0, 4.0),
    own_r=st.floats(-2.0, 30.0),
    moves=st.tuples(_move, _move, _move, _move),
    phase=st.sampled_from(["hand_in_hand.retro_step", "hand_in_hand.ante_follow", "approach", "align"]),
)
def test_no_command_breaks_the_support_limit(
    aw: float, am: float, c: float, own_r: float, moves: tuple[float, ...], phase: str
) -> None:
    """Invariant 5: after the supervisor, no wire's worst-case unsupported length exceeds
    unsupported_max (or, if it already did, grows) -- unless a wire is pulled back, never held."""
    rw = aw + c
    tips = {"ante_wire": aw, "ante_mc": am, "retro_wire": rw, "retro_mc": rw + own_r}
    if tips["retro_mc"] - tips["ante_mc"] < CFG.procedure.gap_min + 0.2:
        return
    sup, fb, cmds, est = _running(tips)
    four = tuple(tips[a] for a in LINEAR_AXES)
    now = support.worst_unsupported(four, (0.0, 0.0, 0.0, 0.0), REACH)  # type: ignore[arg-type]
    for axis, m in zip(LINEAR_AXES, moves, strict=True):
        cmds.axes[axis].target = m  # insertion; the tip moves by AXIS_DIRECTION * m
    v = sup.enforce(CFG.period, CFG.period, cmds, fb, est, Objective(phase, True), OperatorInput(True))
    out = [cmds.axes[a].target for a in LINEAR_AXES]
    tip_moves = tuple(AXIS_DIRECTION[a] * n for a, n in zip(LINEAR_AXES, out, strict=True))
    pulled_back = out[0] < 0.0 or out[2] < 0.0
    if not pulled_back:
        after = support.worst_unsupported(four, tip_moves, REACH)  # type: ignore[arg-type]
        assert after[0] <= max(U_MAX, now[0]) + 1e-9
        assert after[1] <= max(U_MAX, now[1]) + 1e-9
    # pulling a wire back is never held by the support rule
    for k in (0, 2):
        if moves[k] < 0.0 and out[k] != moves[k]:
            assert v.reason != Reason.SUPPORT or v.axis != LINEAR_AXES[k]


@pytest.mark.parametrize("start", [0.0, -1.0, 1.0])
def test_a_long_free_segment_holds_the_advance_but_not_the_pull_back(start: float) -> None:
    """Wherever the drive's own coordinate stands (the rule judges motions, not positions)."""
    tips = {"ante_wire": U_MAX - 0.0005, "ante_mc": 0.0, "retro_wire": U_MAX + 0.5, "retro_mc": U_MAX + 15.0}
    sup, fb, cmds, est = _running(tips, start)
    cmds.axes["ante_wire"].target = start + 0.001
    v = sup.enforce(
        CFG.period,
        CFG.period,
        cmds,
        fb,
        est,
        Objective("hand_in_hand.ante_follow", True),
        OperatorInput(True),
    )
    assert cmds.axes["ante_wire"].target == start and v.reason == Reason.SUPPORT
    assert v.axis == "ante_wire" and "ante_wire" in v.text and f"{U_MAX:g}" in v.text
    cmds.axes["ante_wire"].target = start - 0.001
    sup.enforce(
        2 * CFG.period, CFG.period, cmds, fb, est, Objective("hand_in_hand.rewind", True), OperatorInput(True)
    )
    assert cmds.axes["ante_wire"].target == start - 0.001


# (tip that lengthens a free segment, its insertion direction): the ante wire advancing, the ante
# MC retreating, the retro MC withdrawing
_LENGTHENING = (("ante_wire", 1.0), ("ante_mc", -1.0), ("retro_mc", -1.0))


@given(
    which=st.sampled_from(_LENGTHENING),
    room=st.floats(0.0, 3.0),
    speed=st.floats(0.2, 1.0),
)
def test_a_segment_lengthened_at_speed_stops_at_the_limit(
    which: tuple[str, float], room: float, speed: float
) -> None:
    """Invariant 5 over many cycles: a tip driven at up to its max speed toward the support limit
    (invariant 3's a_max ramp included) comes to rest with its wire's unsupported length within
    ``unsupported_max``, never braking past it. The drives follow their targets exactly."""
    axis, sign = which
    # ante wire free (coupling beyond reach), ``room`` mm short of the limit on the side moved
    if axis in {"ante_wire", "ante_mc"}:
        tips = {"ante_wire": U_MAX - room, "ante_mc": 0.0, "retro_wire": 40.0, "retro_mc": 50.0}
    else:
        tips = {"ante_wire": 0.0, "ante_mc": -5.0, "retro_wire": 20.0, "retro_mc": 20.0 + U_MAX - room}
    sup, fb, cmds, est = _running(tips)
    tip0 = dict(tips)
    h = CFG.period
    step = sign * speed * CFG.drives[axis].max_speed * h
    objective = Objective("hand_in_hand.ante_follow", True, coupled=False)
    request = 0.0
    worst = -math.inf
    for n in range(1, int(1.5 / h)):
        request += step
        cmds.axes[axis].target = request
        sup.enforce(n * h, h, cmds, fb, est, objective, OperatorInput(True))
        for a in LINEAR_AXES:
            q = cmds.axes[a].target
            fb.axes[a].position = q
            est.tips[a] = tip0[a] + AXIS_DIRECTION[a] * q  # type: ignore[index]
        t = est.tips
        worst = max(
            worst,
            support.unsupported_ante(t["ante_wire"], t["ante_mc"], t["retro_wire"], t["retro_mc"], REACH),
            support.unsupported_retro(t["ante_wire"], t["ante_mc"], t["retro_wire"], t["retro_mc"], REACH),
        )
    assert worst <= U_MAX + 1e-6, f"{axis} braked past the limit to {worst:.4f} mm"
    # and it did get there: the rule holds at the limit, not far short of it
    assert worst >= U_MAX - 0.05


@pytest.mark.parametrize("beyond", [0.0, 1.0])
@pytest.mark.parametrize("side", ["ante", "retro"])
def test_a_wire_at_or_past_the_limit_holds_only_what_lengthens_it(side: str, beyond: float) -> None:
    """A wire exactly at the support limit, or already past it, that no command lengthens holds
    nothing else: the other wire, well within the limit, advances as asked."""
    u = U_MAX + beyond
    if side == "ante":  # the ante wire u out of its MC; the retro wire 1 mm out of its own
        tips = {"ante_wire": u, "ante_mc": 0.0, "retro_wire": 30.0, "retro_mc": 31.0}
        axis = "retro_wire"
    else:
        tips = {"ante_wire": 0.0, "ante_mc": -1.0, "retro_wire": 30.0, "retro_mc": 30.0 + u}
        axis = "ante_wire"
    sup, fb, cmds, est = _running(tips)
    cmds.axes[axis].target = 0.0005  # an advance: lengthens that wire's own free segment a little
    v = sup.enforce(CFG.period, CFG.period, cmds, fb, est, Objective("approach", True), OperatorInput(True))
    assert cmds.axes[axis].target == 0.0005 and v.reason == Reason.OK


def test_only_motions_whose_hold_shortens_a_free_segment_are_held() -> None:
    """The ante MC retreating around a wire 5 mm inside it lengthens nothing that is free: it is
    left alone while the retro wire's advance past the limit, in the same cycle, is held."""
    tips = {"ante_wire": -5.0, "ante_mc": 0.0, "retro_wire": 30.0, "retro_mc": 30.0 + U_MAX - 0.0001}
    sup, fb, cmds, est = _running(tips)
    cmds.axes["ante_mc"].target = -0.0005
    cmds.axes["retro_wire"].target = 0.0005
    objective = Objective("hand_in_hand.ante_follow", True, coupled=False)  # no gap ceiling here
    v = sup.enforce(CFG.period, CFG.period, cmds, fb, est, objective, OperatorInput(True))
    assert cmds.axes["retro_wire"].target == 0.0 and v.reason == Reason.SUPPORT and v.axis == "retro_wire"
    assert cmds.axes["ante_mc"].target == -0.0005


# the tip direction (along s) in which each linear axis lengthens a free segment
_LENGTHENS = {"ante_wire": 1.0, "ante_mc": -1.0, "retro_wire": -1.0, "retro_mc": 1.0}


def _rest_moves(out: list[float]) -> list[float]:
    """Tip moves (along s) from rest at 0 to where each target ``out`` comes to rest braking at
    a_max: the range invariant 5 judges."""
    h = CFG.period
    moves = []
    for a, n in zip(LINEAR_AXES, out, strict=True):
        v = n / h
        moves.append(AXIS_DIRECTION[a] * (n + v * abs(v) / (2.0 * CFG.drives[a].max_accel)))
    return moves


@given(
    aw=_tip,
    am=_tip,
    c=st.floats(-1.0, 4.0),
    own_r=st.floats(-2.0, 30.0),
    moves=st.tuples(_move, _move, _move, _move),
    objective=st.sampled_from(
        [
            Objective("approach", True),
            Objective("align", True),
            Objective("hand_in_hand.ante_follow", True, coupled=False),  # no gap ceiling
        ]
    ),
)
def test_no_command_takes_a_wire_further_than_holding_would(
    aw: float, am: float, c: float, own_r: float, moves: tuple[float, ...], objective: Objective
) -> None:
    """Invariant 5 with wires pulled back too: after the supervisor, each wire's worst-case
    unsupported length over the range its tips cover until they rest is within unsupported_max,
    or, already past it, within what the same commands with every lengthening motion held would
    leave (from rest: not moved). A wire pulled back licenses no other motion."""
    rw = aw + c
    tips = {"ante_wire": aw, "ante_mc": am, "retro_wire": rw, "retro_mc": rw + own_r}
    sup, fb, cmds, est = _running(tips)
    four = tuple(tips[a] for a in LINEAR_AXES)
    for axis, m in zip(LINEAR_AXES, moves, strict=True):
        cmds.axes[axis].target = m
    sup.enforce(CFG.period, CFG.period, cmds, fb, est, objective, OperatorInput(True))
    after_moves = _rest_moves([cmds.axes[a].target for a in LINEAR_AXES])
    held = [0.0 if m * _LENGTHENS[a] > 0.0 else m for a, m in zip(LINEAR_AXES, after_moves, strict=True)]
    after = support.worst_unsupported(four, tuple(after_moves), REACH)  # type: ignore[arg-type]
    bound = support.worst_unsupported(four, tuple(held), REACH)  # type: ignore[arg-type]
    assert after[0] <= max(U_MAX, bound[0]) + 1e-9
    assert after[1] <= max(U_MAX, bound[1]) + 1e-9


def test_an_advance_that_ends_the_coupling_a_wire_relies_on_is_held_too() -> None:
    """Invariant 5 where no single hold is enough: the retro wire, 13 mm out of its MC, is
    supported only through the coupling (its tip level with the ante wire's). Both wires advance:
    holding the retro wire alone leaves the ante wire's advance ending the coupling, and the
    retro wire 13 mm free; so both are held. The ante MC's advance lengthens nothing and passes."""
    tips = {"ante_wire": 0.0, "ante_mc": 1.0, "retro_wire": 0.0, "retro_mc": 13.0}
    sup, fb, cmds, est = _running(tips)
    for axis, target in (("ante_wire", 0.001), ("retro_wire", 0.001), ("ante_mc", 0.0005)):
        cmds.axes[axis].target = target
    objective = Objective("hand_in_hand.ante_follow", True, coupled=False)
    v = sup.enforce(CFG.period, CFG.period, cmds, fb, est, objective, OperatorInput(True))
    out = [cmds.axes[a].target for a in LINEAR_AXES]
    four = tuple(tips[a] for a in LINEAR_AXES)
    after = support.worst_unsupported(four, tuple(_rest_moves(out)), REACH)  # type: ignore[arg-type]
    assert after[0] <= U_MAX and after[1] <= U_MAX, after
    assert cmds.axes["ante_wire"].target == 0.0 and cmds.axes["retro_wire"].target == 0.0
    assert cmds.axes["ante_mc"].target == 0.0005 and v.reason == Reason.SUPPORT


@pytest.mark.parametrize("side", ["ante", "retro"])
def test_a_wire_past_the_limit_gets_no_longer_while_the_other_runs(side: str) -> None:
    """Invariant 5 with the other side at speed: a wire already past the support limit gets no
    lengthening motion (here its wire's advance, or its MC's withdrawal), whatever the other wire
    does (here it advances at 10 mm/s, deep inside its own MC)."""
    if side == "ante":  # the ante wire 1 mm past the limit; the retro wire 5 mm inside its MC
        tips = {"ante_wire": U_MAX + 1.0, "ante_mc": 0.0, "retro_wire": 45.0, "retro_mc": 40.0}
        runner, longer, step = "retro_wire", "ante_wire", 0.001
    else:
        tips = {"ante_wire": -5.0, "ante_mc": 0.0, "retro_wire": 30.0, "retro_mc": 30.0 + U_MAX + 1.0}
        runner, longer, step = "ante_wire", "retro_mc", -0.0005
    sup, fb, cmds, est = _running(tips)
    objective = Objective("hand_in_hand.ante_follow", True, coupled=False)
    h = CFG.period
    dv = CFG.drives[runner].max_accel * h
    x = v = 0.0
    for n in range(1, 40):  # up to 10 mm/s at a_max, the drive following
        v = min(10.0, v + dv)
        x += v * h
        cmds.axes[runner].target = x
        sup.enforce(n * h, h, cmds, fb, est, objective, OperatorInput(True))
        assert cmds.axes[runner].target == x
        fb.axes[runner].position = x
    cmds.axes[runner].target = x + 10.0 * h
    cmds.axes[longer].target = step
    verdict = sup.enforce(40 * h, h, cmds, fb, est, objective, OperatorInput(True))
    assert cmds.axes[runner].target == x + 10.0 * h
    assert cmds.axes[longer].target == 0.0
    assert verdict.reason == Reason.SUPPORT and verdict.axis == longer


def test_a_wire_stopping_within_the_tolerance_passes_bit_for_bit() -> None:
    """A request within the limits passes bit for bit (limits.enforce_axis), and the support rule
    holds only motions that lengthen a free segment: a wire asked to stay where its last target
    was, just stopped from a retreat a hair (< 1e-9 mm/s) above a_max * period, keeps exactly
    that target while the rule holds its MC's retreat in the same cycle."""
    tips = {"ante_wire": 0.0, "ante_mc": 0.0, "retro_wire": 40.0, "retro_mc": 41.0}
    sup, fb, cmds, est = _running(tips)
    h = CFG.period
    i = sup.axes.index("ante_wire")
    dv = CFG.drives["ante_wire"].max_accel * h
    objective = Objective("hand_in_hand.ante_follow", True, coupled=False)
    # forward at dv, stop, then back at a little more than dv (its drive stays at 0: lagging)
    x = 0.0
    for n, x in enumerate((dv * h, 2.0 * dv * h, 2.0 * dv * h, dv * h - 2e-12), start=1):
        cmds.axes["ante_wire"].target = x
        sup.enforce(n * h, h, cmds, fb, est, objective, OperatorInput(True))
        assert cmds.axes["ante_wire"].target == x
    assert -dv - 1e-9 <= sup.velocity[i] < -dv  # within enforce_axis' stopping tolerance
    # the ante wire's tip now 0.0004 mm short of the limit over its range; its MC retreats
    est.tips["ante_wire"] = U_MAX - x - 0.0004
    cmds.axes["ante_wire"].target = x
    cmds.axes["ante_mc"].target = -0.0005
    v = sup.enforce(5 * h, h, cmds, fb, est, objective, OperatorInput(True))
    assert cmds.axes["ante_mc"].target == 0.0 and v.reason == Reason.SUPPORT and v.axis == "ante_mc"
    assert cmds.axes["ante_wire"].target == x
