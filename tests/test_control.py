"""Trajectories, regulators, jogs, and a state machine driving the whole control core."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from firmware_iface.cia402 import SW_TARGET_REACHED, DriveState
from firmware_iface.types import DriveGoal
from whih_control.config import Config, load_config
from whih_control.control import profile_velocity
from whih_control.core import ControlCore
from whih_control.errors import SafetyError
from whih_control.types import (
    AxisMotion,
    AxisObjective,
    Objective,
    OperatorInput,
    Reason,
    Verdict,
)

from .conftest import CONFIGS
from .plant_double import HAND_IN_HAND_TIPS, PlantDouble
from .test_safety import History, check_cycle

CFG: Config = load_config(CONFIGS / "sim.toml")
AXES = tuple(CFG.drives)
DT = CFG.period


def _running(**plant_kw: float) -> tuple[ControlCore, PlantDouble, list[float]]:
    """A core + plant at the hand-in-hand start, calibrated, drives enabled, dead-man held."""
    plant = PlantDouble(CFG, **plant_kw)  # type: ignore[arg-type]
    core = ControlCore(CFG)
    clock = [0.0]
    plant.step(0.0, DT, None)
    core.estimator.calibrate(dict.fromkeys(HAND_IN_HAND_TIPS, 0.0), HAND_IN_HAND_TIPS)
    core.request_goal(DriveGoal.ENABLED)
    for _ in range(3):
        _cycle(core, plant, clock, Objective("ready", True))
    return core, plant, clock


HELD = OperatorInput(enable_held=True)


def _cycle(
    core: ControlCore, plant: PlantDouble, clock: list[float], obj: Objective, op: OperatorInput = HELD
) -> Reason:
    clock[0] += DT
    meas = plant.step(clock[0], DT, core.commands)
    return core.update(clock[0], plant.feedback, obj, op, meas).reason


@given(st.floats(-100, 100), st.floats(0.0, 50.0), st.floats(1.0, 1000.0), st.floats(1e-4, 0.01))
def test_profile_velocity_can_stop_at_the_target(error: float, vmax: float, accel: float, dt: float) -> None:
    v = profile_velocity(error, vmax, accel, dt)
    assert abs(v) <= vmax + 1e-12
    assert v == 0.0 or (v > 0) == (error > 0)
    assert abs(v) * dt <= abs(error) + 1e-12  # never past the target in one cycle
    assert v * v <= 2 * accel * abs(error) * (1 + 1e-9) + 1e-12  # braking distance fits


@given(
    st.sampled_from(["ante_wire", "retro_mc", "ante_wire_rot"]),
    st.floats(-2.0, 2.0),
    st.floats(4.0, 30.0),
    st.lists(st.floats(0.6, 1.4), min_size=1, max_size=4),
)
def test_move_to_respects_speed_and_accel_and_arrives(
    axis: str, distance: float, speed: float, jitter: list[float]
) -> None:
    """MOVE_TO through controller + supervisor: limits hold every cycle, target reached exactly."""
    core, plant, clock = _running(noise=0.0)
    drive = CFG.drives[axis]
    tips = plant.tips()
    target = tips.get(axis, 0.0) + distance
    obj = Objective("ready", True, MappingProxyType({axis: AxisObjective(AxisMotion.MOVE_TO, target, speed)}))
    vlim = min(speed, drive.max_speed)
    prev_x, prev_v = core.commands.axes[axis].target, 0.0
    t_end = clock[0] + abs(distance) / vlim + vlim / drive.max_accel + 0.3
    k = 0
    while clock[0] < t_end:
        dt = DT * jitter[k % len(jitter)]
        k += 1
        clock[0] += dt
        meas = plant.step(clock[0], dt, core.commands)
        verdict = core.update(clock[0], plant.feedback, obj, HELD, meas)
        assert verdict.reason == Reason.OK, verdict
        x = core.commands.axes[axis].target
        v = (x - prev_x) / dt
        assert abs(v) <= vlim * (1 + 1e-9) + 1e-9
        assert abs(v - prev_v) <= drive.max_accel * dt * (1 + 1e-6) + 1e-9
        prev_x, prev_v = x, v
    # discrete braking can overshoot by ~ a * dt^2 (a few um; more when dt jumps by +/-40 %
    # between cycles); a correction that small does not reverse through the slack
    tol = 0.005 if max(jitter) - min(jitter) <= 0.2 else 0.05
    if axis in tips:
        assert plant.tips()[axis] == pytest.approx(target, abs=tol)
    else:
        assert core.commands.axes[axis].target == pytest.approx(target, abs=tol)


def test_hold_brakes_at_max_accel_instead_of_stopping_dead() -> None:
    core, plant, clock = _running()
    move = Objective(
        "ready", True, MappingProxyType({"ante_wire_rot": AxisObjective(AxisMotion.MOVE_TO, 500.0, 360.0)})
    )
    for _ in range(200):
        _cycle(core, plant, clock, move)
    i = core.controller.index["ante_wire_rot"]
    assert core.controller.velocity[i] == pytest.approx(360.0)
    _cycle(core, plant, clock, Objective("ready", True))
    assert core.controller.velocity[i] == pytest.approx(360.0 - CFG.drives["ante_wire_rot"].max_accel * DT)


def test_gap_follow_tracks_the_retro_mc_and_couple_follow_tracks_the_retro_wire() -> None:
    core, plant, clock = _running(noise=0.0, dropout=0.0, partial=0.0)
    rw, rmc = HAND_IN_HAND_TIPS["retro_wire"] + 3.0, HAND_IN_HAND_TIPS["retro_mc"] + 3.0
    axes = {
        "retro_wire": AxisObjective(AxisMotion.MOVE_TO, rw, 4.0),
        "retro_mc": AxisObjective(AxisMotion.MOVE_TO, rmc, 2.0),
        "ante_wire": AxisObjective(AxisMotion.COUPLE_FOLLOW, speed=8.0),
        "ante_mc": AxisObjective(AxisMotion.GAP_FOLLOW, speed=4.0),
    }
    obj = Objective("hand_in_hand.retro_step", True, MappingProxyType(axes))
    worst_gap = worst_cpl = 0.0
    for _ in range(int(3.0 / DT)):
        assert _cycle(core, plant, clock, obj) == Reason.OK
        tips = plant.tips()
        worst_gap = max(worst_gap, abs(tips["retro_mc"] - tips["ante_mc"] - CFG.procedure.gap_target))
        worst_cpl = max(
            worst_cpl, abs(tips["retro_wire"] - tips["ante_wire"] - CFG.procedure.coupling_target)
        )
    tips = plant.tips()
    assert tips["retro_mc"] == pytest.approx(rmc, abs=0.05)
    assert tips["retro_mc"] - tips["ante_mc"] == pytest.approx(CFG.procedure.gap_target, abs=0.1)
    assert tips["retro_wire"] - tips["ante_wire"] == pytest.approx(CFG.procedure.coupling_target, abs=0.1)
    assert worst_gap < 0.5 and worst_cpl < 0.5


@pytest.mark.parametrize(
    ("objective", "axis"),
    [
        (AxisObjective(AxisMotion.MOVE_TO, math.nan, 1.0), "ante_wire"),
        (AxisObjective(AxisMotion.MOVE_TO, 5.0, math.inf), "ante_wire"),
        (AxisObjective(AxisMotion.MOVE_TO, 5.0, -1.0), "retro_mc"),
        (AxisObjective(AxisMotion.GAP_FOLLOW, 0.0, 1.0), "retro_mc"),  # only the ante MC follows the gap
        (AxisObjective(AxisMotion.COUPLE_FOLLOW, 0.0, 1.0), "ante_mc"),
    ],
)
def test_invalid_objectives_are_rejected_counted_and_hold(objective: AxisObjective, axis: str) -> None:
    core, plant, clock = _running()
    before = core.controller.rejected
    x = core.commands.axes[axis].target
    for _ in range(20):
        _cycle(core, plant, clock, Objective("ready", True, MappingProxyType({axis: objective})))
    assert core.controller.rejected >= before + 20
    assert core.commands.axes[axis].target == x


def test_jog_moves_by_delta_through_the_limits() -> None:
    core, plant, clock = _running()
    x0 = core.commands.axes["ante_mc"].target
    core.jog("ante_mc", 0.5)
    core.jog("ante_mc", 0.25)  # adds to the pending jog
    for _ in range(int(2.0 / DT)):
        _cycle(core, plant, clock, Objective("ready", True))
    assert core.commands.axes["ante_mc"].target == pytest.approx(x0 + 0.75)
    assert math.isnan(core.controller.jog_target[core.controller.index["ante_mc"]])


def test_jog_without_enable_does_not_move() -> None:
    core, plant, clock = _running()
    x0 = core.commands.axes["ante_wire"].target
    core.jog("ante_wire", 1.0)
    for _ in range(100):
        assert (
            _cycle(core, plant, clock, Objective("ready", True), OperatorInput(False))
            == Reason.ENABLE_RELEASED
        )
    assert core.commands.axes["ante_wire"].target == x0


@pytest.mark.parametrize(
    ("axis", "delta", "exc", "match"),
    [
        ("nope", 1.0, ValueError, r"axis \(='nope'\)"),
        ("ante_wire", math.nan, ValueError, r"delta for ante_wire \(=nan\)"),
        ("ante_wire", 1e6, ValueError, r"delta for ante_wire \(=1e\+06\) must be in \[-400...400\]"),
        ("ante_wire", 399.0, SafetyError, r"ante_wire target \(=399\) must be within travel \[-200...200\]"),
    ],
)
def test_jog_rejects_bad_input_naming_axis_and_value(axis: str, delta: float, exc: type, match: str) -> None:
    core, _, _ = _running()
    with pytest.raises(exc, match=match):
        core.jog(axis, delta)


def test_jog_refused_while_latched_and_ack_resets_without_motion() -> None:
    core, plant, clock = _running()
    core.supervisor.raise_fault(Reason.DRIVE_FAULT, "EMCY 0x8611 following error", "retro_mc")
    assert _cycle(core, plant, clock, Objective("ready", True)) == Reason.DRIVE_FAULT
    with pytest.raises(SafetyError, match="fault latched"):
        core.jog("ante_wire", 1.0)
    assert core.supervisor.acknowledge(plant.feedback)
    _cycle(core, plant, clock, Objective("ready", True))
    assert all(c.goal == DriveGoal.FAULT_RESET for c in core.commands.axes.values())
    _cycle(core, plant, clock, Objective("ready", True))
    assert core.goal == DriveGoal.SWITCHED_ON
    for a in AXES:
        assert core.commands.axes[a].target == plant.feedback.axes[a].position


def test_request_goal_refuses_supervisor_goals() -> None:
    core = ControlCore(CFG)
    with pytest.raises(ValueError, match="QUICK_STOP"):
        core.request_goal(DriveGoal.QUICK_STOP)


# ---------------------------------------------------------------------------- the state machine

PHASES = ("ready", "approach", "untip", "align", "hand_in_hand.retro_step", "hand_in_hand.verify", "paused")


class CoreMachine(RuleBasedStateMachine):
    """Random operator actions, objectives, staleness, faults and acknowledges; invariants every cycle."""

    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed: int) -> None:
        self.plant = PlantDouble(CFG, seed=seed, noise=0.05, dropout=0.1)
        self.core = ControlCore(CFG)
        self.t = 0.0
        self.plant.step(0.0, DT, None)
        self.core.estimator.calibrate(dict.fromkeys(HAND_IN_HAND_TIPS, 0.0), HAND_IN_HAND_TIPS)
        self.core.request_goal(DriveGoal.ENABLED)
        self.hist = History()
        self.op = OperatorInput(enable_held=True)
        self.objective = Objective("ready", True)
        self.stale: set[str] = set()
        self.no_heartbeat: set[str] = set()
        self.force: dict[str, float] = {}
        self.drive_fault: set[str] = set()
        self.nan_axis = ""
        self.cycles = 0
        self.requested: dict[str, float] = {}
        enforce = self.core.supervisor.enforce

        def recording(*args: Any) -> Verdict:
            # what the controller asked for, as the supervisor receives it
            self.requested = {a: c.target for a, c in args[2].axes.items()}
            return enforce(*args)

        self.core.supervisor.enforce = recording  # type: ignore[method-assign]

    def _run(self, n: int, jitter: float = 1.0) -> None:
        for _ in range(n):
            dt = DT * jitter
            self.t += dt
            meas = self.plant.step(self.t, dt, self.core.commands)
            fb = self.plant.feedback
            for a in self.stale:
                fb.axes[a].age_cycles = 5
            for a in self.no_heartbeat:
                fb.axes[a].heartbeat_ok = False
            for a, f in self.force.items():
                fb.axes[a].force = f
            for a in self.drive_fault:
                fb.axes[a].state = DriveState.FAULT
            if self.nan_axis:
                fb.axes[self.nan_axis].position = math.nan
                self.nan_axis = ""
            sup = self.core.supervisor
            rejected0 = sup.rejected
            verdict = self.core.update(self.t, fb, self.objective, self.op, meas)
            check_cycle(sup, self.hist, CFG, dt, self.core.commands, fb, self.core.estimator.estimate,
                        self.objective, self.op, verdict, rejected0, self.requested)  # fmt: skip
            self.cycles += 1
            # the plant double only knows insertion; a NaN we injected is gone next cycle
            for a in AXES:
                fb.axes[a].position = self.plant.insertion[a]
                fb.axes[a].age_cycles = 0
                fb.axes[a].heartbeat_ok = True
                fb.axes[a].force = 0.0

    @rule(n=st.integers(1, 6), jitter=st.floats(0.7, 1.3))
    def run_cycles(self, n: int, jitter: float) -> None:
        self._run(n, jitter)

    @rule(held=st.booleans())
    def dead_man(self, held: bool) -> None:
        self.op = OperatorInput(enable_held=held, estop=self.op.estop)
        self._run(1)

    @rule(pressed=st.booleans())
    def estop(self, pressed: bool) -> None:
        self.op = OperatorInput(enable_held=self.op.enable_held, estop=pressed)
        self._run(1)

    @rule(
        phase=st.sampled_from(PHASES),
        allowed=st.booleans(),
        moves=st.dictionaries(
            st.sampled_from(AXES),
            st.tuples(st.sampled_from(list(AxisMotion)), st.floats(-10.0, 40.0), st.floats(0.0, 25.0)),
            max_size=4,
        ),
    )
    def objective_changes(
        self, phase: str, allowed: bool, moves: dict[str, tuple[AxisMotion, float, float]]
    ) -> None:
        axes = {a: AxisObjective(m, target, speed) for a, (m, target, speed) in moves.items()}
        self.objective = Objective(phase, allowed, MappingProxyType(axes))
        self._run(2)

    @rule(axis=st.sampled_from(AXES), cycles=st.integers(1, 4))
    def stale_feedback(self, axis: str, cycles: int) -> None:
        self.stale.add(axis)
        self._run(cycles)
        self.stale.discard(axis)

    @rule(axis=st.sampled_from(AXES))
    def heartbeat_loss(self, axis: str) -> None:
        self.no_heartbeat.add(axis)
        self.core.supervisor.raise_fault(Reason.HEARTBEAT, f"{axis}: heartbeat lost", axis)
        self._run(1)
        self.no_heartbeat.discard(axis)

    @rule(axis=st.sampled_from(AXES), force=st.floats(0.0, 6.0))
    def force_spike(self, axis: str, force: float) -> None:
        self.force[axis] = force
        self._run(1)
        self.force.pop(axis)

    @rule(axis=st.sampled_from(AXES))
    def drive_faults(self, axis: str) -> None:
        self.drive_fault.add(axis)
        self._run(1)
        self.drive_fault.discard(axis)

    @rule(axis=st.sampled_from(AXES))
    def non_finite_position(self, axis: str) -> None:
        self.nan_axis = axis
        self._run(1)

    @rule(axis=st.sampled_from(AXES), delta=st.floats(-3.0, 3.0))
    def jog(self, axis: str, delta: float) -> None:
        if self.core.supervisor.latched:
            with pytest.raises(SafetyError):
                self.core.jog(axis, delta)
        else:
            try:
                self.core.jog(axis, delta)
            except SafetyError as exc:
                assert "travel" in str(exc) or "no position feedback" in str(exc)
        self._run(2)

    @precondition(lambda self: self.core.supervisor.latched)
    @rule()
    def acknowledge(self) -> None:
        targets = {a: c.target for a, c in self.core.commands.axes.items()}
        sup = self.core.supervisor
        fb = self.plant.feedback
        stopping = any(
            af.state is DriveState.QUICK_STOP_ACTIVE and not af.statusword & SW_TARGET_REACHED
            for af in fb.axes.values()
        )
        escalated = any(sup.escalated)  # NMT-stopped for the rest of the run
        accepted = self.core.acknowledge(fb)
        assert accepted == (not escalated and not self.op.estop and not stopping), sup.ack_blocker
        # acknowledging never moves anything
        assert targets == {a: c.target for a, c in self.core.commands.axes.items()}
        if accepted:
            self.hist.out.clear()
            self._run(2)
            assert self.core.goal == DriveGoal.SWITCHED_ON
            self.core.request_goal(DriveGoal.ENABLED)

    @invariant()
    def commands_finite(self) -> None:
        for c in self.core.commands.axes.values():
            assert math.isfinite(c.target)

    @invariant()
    def latched_means_quick_stop(self) -> None:
        if self.core.supervisor.latched and self.cycles:
            assert all(c.goal == DriveGoal.QUICK_STOP for c in self.core.commands.axes.values())


TestCoreMachine = CoreMachine.TestCase


def test_move_to_beyond_travel_brakes_to_the_limit() -> None:
    core, plant, clock = _running()
    d = CFG.drives["ante_wire_rot"]
    obj = Objective(
        "ready", True, MappingProxyType({"ante_wire_rot": AxisObjective(AxisMotion.MOVE_TO, 1e4, 360.0)})
    )
    prev_x, prev_v = 0.0, 0.0
    for _ in range(int((d.travel_max / d.max_speed + 1.0) / DT)):
        assert _cycle(core, plant, clock, obj) == Reason.OK
        x = core.commands.axes["ante_wire_rot"].target
        v = (x - prev_x) / DT
        assert abs(v - prev_v) <= d.max_accel * DT * (1 + 1e-9)
        prev_x, prev_v = x, v
    assert core.commands.axes["ante_wire_rot"].target == pytest.approx(d.travel_max)


@given(
    st.sampled_from(["ante_wire", "ante_mc", "retro_wire", "retro_mc", "ante_wire_rot"]),
    st.floats(-3.0, 3.0),
    st.integers(0, 60),
    st.integers(1, 200),
)
def test_the_rest_shortcut_gives_the_full_arithmetics_commands_to_the_bit(
    axis: str, distance: float, moving: int, holding: int
) -> None:
    """An axis held at rest skips the braking and limit arithmetic; a controller that always does
    it in full commands the same targets and keeps the same setpoints and velocities (sign of
    zero included), through a move of any length, its braking under a hold and the rest after."""

    def run(shortcut: bool) -> list[tuple[str, ...]]:
        core, plant, clock = _running(noise=0.0)
        core.controller._rest_shortcut = shortcut
        start = core.commands.axes[axis].target
        move = Objective(
            "ready", True, MappingProxyType({axis: AxisObjective(AxisMotion.MOVE_TO, start + distance, 20.0)})
        )
        seen: list[tuple[str, ...]] = []
        for k in range(moving + holding):
            _cycle(core, plant, clock, move if k < moving else Objective("ready", True))
            ctl = core.controller
            seen.append(
                tuple(core.commands.axes[a].target.hex() for a in AXES)
                + tuple(v.hex() for v in ctl.setpoint)
                + tuple(v.hex() for v in ctl.velocity)
            )
        return seen

    assert run(True) == run(False)
