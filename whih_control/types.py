"""Shared value types of the controller side: axes, estimates, objectives, operator input.

``procedure`` produces an :class:`Objective` each cycle, ``estimate`` produces an
:class:`Estimate`, ``control`` + ``safety`` turn both into drive commands
(:class:`firmware_iface.types.Commands`) and a :class:`Verdict`.
All positions here are *tip* positions in the path coordinate ``s`` (mm): ``s = 0`` at the
proximal cap, ``s = L`` at the distal cap; antegrade devices advance toward +s, retrograde
devices toward -s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType

from firmware_iface.types import DriveGoal

__all__ = [
    "ALL_AXES",
    "AXIS_DIRECTION",
    "AXIS_SIDE",
    "LINEAR_AXES",
    "ROTARY_AXES",
    "AxisMotion",
    "AxisObjective",
    "CycleInputs",
    "Estimate",
    "Objective",
    "OperatorInput",
    "Reason",
    "TipMeasurement",
    "Verdict",
]

LINEAR_AXES: tuple[str, ...] = ("ante_wire", "ante_mc", "retro_wire", "retro_mc")
"""The four insertion axes every configuration must have."""
ROTARY_AXES: tuple[str, ...] = ("ante_wire_rot", "retro_wire_rot")
"""Optional wire rotation axes (degrees)."""
ALL_AXES: tuple[str, ...] = (
    "ante_wire",
    "ante_wire_rot",
    "ante_mc",
    "retro_wire",
    "retro_wire_rot",
    "retro_mc",
)
AXIS_SIDE: Mapping[str, str] = MappingProxyType(
    {a: ("ante" if a.startswith("ante") else "retro") for a in ALL_AXES}
)
AXIS_DIRECTION: Mapping[str, float] = MappingProxyType(
    {a: (1.0 if a.startswith("ante") else -1.0) for a in ALL_AXES}
)
"""d(tip s)/d(insertion) for each axis: antegrade +1, retrograde -1."""


@dataclass(frozen=True, slots=True)
class TipMeasurement:
    """One external tip measurement (e.g. a fluoroscopy frame), possibly late and partial."""

    t_capture: float
    """When the image was taken (s, same clock as the cycle)."""
    t_arrival: float
    """When it reached the controller (s); ``t_arrival - t_capture`` is the latency."""
    tips: Mapping[str, float]
    """Measured tip position per linear axis seen in the frame (mm in s); missing = not seen."""


@dataclass(slots=True)
class Estimate:
    """Best knowledge of the tips this cycle."""

    tips: dict[str, float] = field(default_factory=dict)
    """Tip position per linear axis, mm in s."""
    force: dict[str, float] = field(default_factory=dict)
    """Axial force per axis, N."""
    gap: float = math.nan
    """MC gap ``p_retro_mc - p_ante_mc``, mm."""
    coupling: float = math.nan
    """Wire coupling ``p_retro_wire - p_ante_wire``, mm."""
    imaging_age: float = math.inf
    """Seconds since the capture of the last fused external measurement."""
    valid: bool = False
    """False until every linear axis has a finite estimate."""


class AxisMotion(IntEnum):
    """How an axis should move toward its objective."""

    HOLD = 0
    """Keep the present setpoint."""
    MOVE_TO = 1
    """Move the tip to ``target`` (s, mm) at most at ``speed``."""
    GAP_FOLLOW = 2
    """Antegrade MC: regulated to hold the MC gap at its target."""
    COUPLE_FOLLOW = 3
    """Antegrade wire: regulated to follow the retrograde wire at the coupling target."""


@dataclass(slots=True)
class AxisObjective:
    """One axis' part of an objective.

    Mutable: the procedure keeps one per phase and axis and updates it in place every cycle, so
    the cycle allocates none; copy one (``dataclasses.replace``) to keep its values.
    """

    motion: AxisMotion = AxisMotion.HOLD
    target: float = 0.0
    """Tip target in s (mm) for MOVE_TO; ignored otherwise."""
    speed: float = 0.0
    """Speed cap (mm/s) for this axis in this phase (never above the axis' max_speed)."""


@dataclass(frozen=True, slots=True)
class Objective:
    """What the present phase asks of the control core. Axes not listed hold."""

    phase: str = "idle"
    motion_allowed: bool = False
    """The phase allows motion at all (invariant 1); False = every axis holds."""
    axes: Mapping[str, AxisObjective] = field(default_factory=lambda: MappingProxyType({}))
    part_mcs: bool = False
    """After crossing, the MCs part on purpose: the gap ceiling gives way to the support limit
    (the floor stays). Only the procedure's withdraw sets it."""
    coupled: bool = True
    """Hand-in-hand holds the wire coupling (False only for the ``no-coupling`` ablation, where
    the antegrade wire advances alone): the supervisor checks the coupling only when True."""

    def axis(self, name: str) -> AxisObjective:
        """The objective of ``name`` (HOLD when the phase does not mention it)."""
        return self.axes.get(name, _HOLD)


_HOLD = AxisObjective()


@dataclass(slots=True)
class OperatorInput:
    """Operator state sampled every cycle (the dead-man switch must be *held*)."""

    enable_held: bool = False
    estop: bool = False


@dataclass(slots=True)
class CycleInputs:
    """What the runtime knows of a cycle beyond feedback, estimate, objective and operator.

    Each field is a fault condition's input: :class:`~whih_control.safety.SafetySupervisor`
    judges them all (it alone latches). One record, refreshed in place every cycle.
    """

    drives_wanted_enabled: bool = False
    """The application enabled the robot: stale feedback is then a fault, not only a hold."""
    motion_phase: bool = False
    """The procedure's phase (as this cycle found it) moves axes: a released dead-man faults."""
    imaging_watched: bool = False
    """Moving, or paused for imaging: imaging older than twice its allowed age faults."""
    calibrated: bool = False
    """The estimator has tied encoders to tips (imaging age means something only then)."""
    stall_s: float = 0.0
    """Seconds between the previous cycle and this one beyond one period, on the master's own
    clock (0 when on time; judged by :func:`~whih_control.limits.stalled`)."""
    stop_goal: DriveGoal | None = None
    """The robot is closing: QUICK_STOP, then DISABLED on every axis (targets track the actual
    positions). Applied by the supervisor after its own rules; never a goal that moves."""


class Reason(IntEnum):
    """Why the safety supervisor changed or stopped a command (OK = passed unchanged)."""

    OK = 0
    NO_MOTION_PHASE = 1
    ENABLE_RELEASED = 2
    DRIVE_NOT_ENABLED = 3
    STALE_FEEDBACK = 4
    HEARTBEAT = 5
    GAP_FLOOR = 6
    GAP_WINDOW = 7
    TRAVEL_LIMIT = 8
    SPEED_LIMIT = 9
    ACCEL_LIMIT = 10
    FORCE_ALARM = 11
    FORCE_STOP = 12
    COUPLING = 13
    NON_FINITE = 14
    DRIVE_FAULT = 15
    ESTOP = 16
    BUS_FAULT = 17
    LATCHED = 18
    """A fault is latched and not yet acknowledged."""
    ESTIMATE_INVALID = 19
    """No valid tip estimate (not calibrated): geometry cannot be checked, linear axes hold."""
    RECORDING = 20
    """The run's event log cannot be written (e.g. disk full): the run stops rather than go on
    without its record."""
    SUPPORT = 21
    """A command would take a wire's unsupported length past ``procedure.unsupported_max``."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The supervisor's word on one cycle."""

    reason: Reason = Reason.OK
    text: str = ""
    fault: bool = False
    """True when this verdict latched (or keeps) a fault: every axis quick-stopped."""
    axis: str = ""
