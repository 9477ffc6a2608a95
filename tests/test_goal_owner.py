"""Nothing but the safety supervisor changes a goal or a target (docs/DESIGN.md section 2).

The supervisor's output is recorded the moment ``enforce`` returns; what the core hands back,
and what the master then puts on the bus, must be exactly that, whatever the cycle went through
(faults, acknowledges, jogs, goal requests, closing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_iface.cia402 import DriveState
from firmware_iface.types import DriveGoal, Feedback
from whih_control import Robot
from whih_control.config import Config, load_config
from whih_control.core import ControlCore
from whih_control.errors import WhihError
from whih_control.safety import SafetySupervisor
from whih_control.types import CycleInputs, Objective, OperatorInput, Reason

from .conftest import CONFIGS

CFG: Config = load_config(CONFIGS / "sim.toml")
AXES = tuple(CFG.drives)

Snapshot = dict[str, tuple[float, DriveGoal]]


def record_enforce(sup: SafetySupervisor, out: list[Snapshot]) -> None:
    """Wrap ``sup.enforce`` so that each call appends the commands as the supervisor left them."""
    enforce = sup.enforce

    def recorded(*args: Any, **kwargs: Any) -> Any:
        verdict = enforce(*args, **kwargs)
        commands = args[2]
        out.append({a: (c.target, c.goal) for a, c in commands.axes.items()})
        return verdict

    sup.enforce = recorded  # type: ignore[method-assign]


ACTIONS = st.sampled_from(
    ["cycle", "cycle", "cycle", "goal", "jog", "ack", "fault", "drive_state", "estop", "stop_goal"]
)


@given(st.lists(st.tuples(ACTIONS, st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=60))
def test_core_output_is_the_supervisors_output(steps: list[tuple[str, int, int]]) -> None:
    """Property: after every ``ControlCore.update``, the commands are the supervisor's, bit for bit."""
    core = ControlCore(CFG)
    seen: list[Snapshot] = []
    record_enforce(core.supervisor, seen)
    fb = Feedback.for_axes(AXES)
    for af in fb.axes.values():
        af.state, af.age_cycles, af.heartbeat_ok = DriveState.OPERATION_ENABLED, 0, True
    op = OperatorInput(enable_held=True)
    cyc = CycleInputs(drives_wanted_enabled=True)
    obj = Objective("ready", True)
    t = 0.0
    for action, k, arg in steps:
        axis = AXES[k % len(AXES)]
        if action == "goal":
            core.request_goal((DriveGoal.DISABLED, DriveGoal.SWITCHED_ON, DriveGoal.ENABLED)[arg % 3])
        elif action == "jog" and not core.supervisor.latched:
            with contextlib.suppress(WhihError):  # refused: the point is what reaches the bus
                core.jog(axis, 0.5 * (arg - 1.5))
        elif action == "ack":
            core.acknowledge(fb)
        elif action == "fault":
            core.supervisor.raise_fault(Reason.HEARTBEAT, "heartbeat lost", axis)
        elif action == "drive_state":
            fb.axes[axis].state = (DriveState.OPERATION_ENABLED, DriveState.FAULT, DriveState.SWITCHED_ON)[
                arg % 3
            ]
        elif action == "estop":
            op.estop = not op.estop
        elif action == "stop_goal":
            cyc.stop_goal = (None, DriveGoal.QUICK_STOP, DriveGoal.DISABLED, None)[arg]
        t += CFG.period
        for a, c in core.commands.axes.items():
            fb.axes[a].position = c.target if math.isfinite(c.target) else 0.0
        core.update(t, fb, obj, op, (), cyc)
        assert seen, "update did not pass through the supervisor"
        assert {a: (c.target, c.goal) for a, c in core.commands.axes.items()} == seen[-1]
        seen.clear()


def _sim_time_config() -> Config:
    cfg = load_config(CONFIGS / "sim.toml")
    return cfg.replace(bus=dataclasses.replace(cfg.bus, interface="whih-sim"))


FAULTS = st.sampled_from(
    ["", "estop", "drive-fault:retro_mc", "master-freeze:50", "deadman-release", "tpdo-drop:ante_mc:5"]
)


@settings(max_examples=4, deadline=None)
@given(FAULTS, st.floats(0.05, 1.5))
def test_what_the_master_sends_is_what_the_supervisor_decided(fault: str, at: float) -> None:
    """Property over whole runs in simulated time (enable, procedure, an injected fault, close):
    every RPDO the master writes carries the supervisor's goal and target of that cycle."""
    cfg = _sim_time_config()
    inject = [f"{fault}@{at:.3f}"] if fault else []
    seen: list[Snapshot] = []
    mismatches: list[str] = []
    with Robot(cfg, inject=inject) as robot:
        rt = robot.runtime
        record_enforce(rt.core.supervisor, seen)
        write: Callable[[], None] = rt.master.write

        def checked_write() -> None:
            if seen:
                sent = {a: (c.target, c.goal) for a, c in rt.master.commands.axes.items()}
                if sent != seen[-1]:
                    mismatches.append(f"t={rt._t:.4f}: sent {sent} != supervisor {seen[-1]}")
                seen.clear()
            write()

        rt.master.write = checked_write  # type: ignore[method-assign]
        with contextlib.suppress(WhihError):  # a fault may end enable: the RPDOs are what matter
            robot.enable()
            robot.run_procedure(max_time=2.0)
        cycles = rt.pacer.cycles
    assert cycles > 0 and not mismatches, mismatches[:3]


@pytest.mark.parametrize("goal", [DriveGoal.QUICK_STOP, DriveGoal.DISABLED])
def test_closing_goals_come_from_the_supervisor_even_while_latched(goal: DriveGoal) -> None:
    core = ControlCore(CFG)
    fb = Feedback.for_axes(AXES)
    for af in fb.axes.values():
        af.state, af.age_cycles, af.heartbeat_ok = DriveState.OPERATION_ENABLED, 0, True
    core.supervisor.raise_fault(Reason.HEARTBEAT, "heartbeat lost", "ante_mc")
    cyc = CycleInputs(stop_goal=goal)
    core.update(0.0, fb, Objective("ready", True), OperatorInput(True), (), cyc)
    assert core.supervisor.latched
    assert {c.goal for c in core.commands.axes.values()} == {goal}
