"""Wire support: the pure functions and the supervisor's support rule (invariant 5)."""

from __future__ import annotations

import math

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


def _running(tips: dict[str, float]) -> tuple[SafetySupervisor, Feedback, Commands, Estimate]:
    sup = SafetySupervisor(CFG)
    fb = Feedback.for_axes(AXES)
    for af in fb.axes.values():
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


def test_a_long_free_segment_holds_the_advance_but_not_the_pull_back() -> None:
    tips = {"ante_wire": U_MAX - 0.0005, "ante_mc": 0.0, "retro_wire": U_MAX + 0.5, "retro_mc": U_MAX + 15.0}
    sup, fb, cmds, est = _running(tips)
    cmds.axes["ante_wire"].target = 0.001
    v = sup.enforce(
        CFG.period,
        CFG.period,
        cmds,
        fb,
        est,
        Objective("hand_in_hand.ante_follow", True),
        OperatorInput(True),
    )
    assert cmds.axes["ante_wire"].target == 0.0 and v.reason == Reason.SUPPORT
    cmds.axes["ante_wire"].target = -0.001
    sup.enforce(
        2 * CFG.period, CFG.period, cmds, fb, est, Objective("hand_in_hand.rewind", True), OperatorInput(True)
    )
    assert cmds.axes["ante_wire"].target == -0.001


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
