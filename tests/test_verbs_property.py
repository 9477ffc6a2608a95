"""Property: any sequence of operator verbs, in any phase, gives a valid phase or a defined error,
no verb moves an axis outside its limits, and a jog that returns has arrived, stuck encoders
included (simulated time, the whole stack)."""

from __future__ import annotations

import contextlib
import math

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import whih_control as wc
from whih_control.procedure import Phase

from .conftest import CONFIGS, THOROUGH

CFG = wc.load_config(CONFIGS / "sim.toml")
PHASES = {p.value for p in Phase}
DEFINED = (wc.ProcedureError, wc.SafetyError, wc.CommandTimeoutError)
AXES = tuple(CFG.drives)


class Verbs(RuleBasedStateMachine):
    """One robot per example, enabled, then verbs and cycles in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.robot = wc.Robot(CFG, clock="simulated")
        self.robot.open()
        self.robot.enable()
        self.prev = {a: d.target for a, d in self.robot.status().drives.items()}
        self.prev_cycle = self.robot.status().cycle

    def teardown(self) -> None:
        self.robot.close()

    def _verb(self, fn: object, *args: object) -> None:
        with contextlib.suppress(*DEFINED):  # a refusal is a defined answer; anything else fails
            fn(*args)  # type: ignore[operator]

    @rule()
    def start(self) -> None:
        self._verb(self.robot.start_procedure)

    @rule()
    def pause(self) -> None:
        self._verb(self.robot.pause)

    @rule()
    def resume(self) -> None:
        self._verb(self.robot.resume)

    @rule()
    def abort(self) -> None:
        self._verb(self.robot.abort)

    @rule()
    def acknowledge(self) -> None:
        self._verb(self.robot.acknowledge)

    @rule()
    def confirm(self) -> None:
        self._verb(self.robot.confirm_crossing)

    @rule(estop=st.booleans())
    def estop(self, estop: bool) -> None:
        self.robot.set_inputs(estop=estop)

    @rule(held=st.booleans())
    def pedal(self, held: bool) -> None:
        self.robot.set_inputs(enable_held=held)

    @rule(axis=st.sampled_from(AXES), v=st.floats(-1.0, 1.0))
    def teleop(self, axis: str, v: float) -> None:
        vmax = CFG.drives[axis].max_speed * CFG.control.jog_speed_fraction
        self._verb(self.robot.teleop, axis, v * vmax)

    @rule(axis=st.sampled_from(AXES), delta=st.floats(-3.0, 3.0))
    def jog(self, axis: str, delta: float) -> None:
        try:
            self.robot.jog(axis, delta)
        except DEFINED:
            return
        # a jog that returns has arrived: the axis, as the master read it, within its window
        d = self.robot.status().drives[axis]
        assert abs(d.position - d.target) <= CFG.drives[axis].position_window, (axis, d)

    # where a jog may go, and within the linear axes' following-error window (the drive itself
    # stays quiet): only the jog's own arrival check can tell
    @precondition(lambda self: self.robot.status().phase in ("ready", "paused"))
    @rule(axis=st.sampled_from(AXES), delta=st.floats(-1.0, 1.0))
    def jog_on_a_stuck_encoder(self, axis: str, delta: float) -> None:
        drives = self.robot.runtime.drives
        assert drives is not None
        drives.inject(f"encoder-stuck:{axis}@0")
        self.robot.step()
        self.jog(axis, delta)

    @rule(n=st.integers(1, 400))
    def cycles(self, n: int) -> None:
        for _ in range(n):
            self.robot.step()
            self._limits()

    def _limits(self) -> None:
        """Targets within travel; between consecutive cycles, within the speed limit."""
        status = self.robot.status()
        consecutive = status.cycle == self.prev_cycle + 1
        for a, d in status.drives.items():
            drive = CFG.drives[a]
            if math.isfinite(d.target) and d.state == "OPERATION_ENABLED":
                assert drive.travel_min - 1e-6 <= d.target <= drive.travel_max + 1e-6, (a, d.target)
                if consecutive and math.isfinite(self.prev[a]):
                    v = (d.target - self.prev[a]) / CFG.period
                    assert abs(v) <= drive.max_speed * (1 + 1e-6) + 1e-9, (a, v)
            self.prev[a] = d.target
        self.prev_cycle = status.cycle

    @invariant()
    def phase_is_valid(self) -> None:
        status = self.robot.status()
        assert status.phase in PHASES
        self._limits()


Verbs.TestCase.settings = settings(
    max_examples=300 if THOROUGH else 12, stateful_step_count=25 if THOROUGH else 12, deadline=None
)
TestVerbs = Verbs.TestCase
