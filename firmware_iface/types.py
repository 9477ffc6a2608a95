"""Data crossing the boundary between the CAN layer and the controller, in SI units.

The master fills one :class:`Feedback` in place every cycle and reads one :class:`Commands`;
both are allocated once at set-up (the cyclic path must not allocate). Positions are in the
axis unit (mm, or degrees for rotary axes) at the drive, i.e. *insertion*, not tip position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from firmware_iface.cia402 import DriveState

__all__ = [
    "AxisCommand",
    "AxisFeedback",
    "Commands",
    "DriveEvent",
    "DriveEventKind",
    "DriveGoal",
    "Feedback",
    "PlantLoad",
]


class DriveGoal(IntEnum):
    """What the controller wants of a drive this cycle; the master turns it into a controlword."""

    DISABLED = 0
    """Walk to SWITCH ON DISABLED / stay there (no torque)."""
    SWITCHED_ON = 1
    """Powered, holding no position: "can read" but not "can move"."""
    ENABLED = 2
    """OPERATION ENABLED in CSP, following ``AxisCommand.target``."""
    QUICK_STOP = 3
    """Quick stop (drive decelerates with 0x6085, then holds)."""
    FAULT_RESET = 4
    """Rising edge of controlword bit 7; never moves anything."""


@dataclass(slots=True)
class AxisFeedback:
    """Latest decoded TPDO1 of one drive plus its freshness."""

    position: float = 0.0
    """Position actual (0x6064) in axis units."""
    force: float = 0.0
    """Torque actual (0x6077) times the axis force factor, N."""
    statusword: int = 0
    state: DriveState = DriveState.UNKNOWN
    age_cycles: int = 1_000_000
    """Cycles since the last valid TPDO1 (0 = received this cycle)."""
    heartbeat_ok: bool = False
    """A heartbeat arrived within the configured timeout and says OPERATIONAL."""


@dataclass(slots=True)
class Feedback:
    """Everything the master learned in one cycle. Mutated in place by the master."""

    t: float = 0.0
    """Time of this cycle's SYNC in seconds (simulated or monotonic since start)."""
    cycle: int = 0
    axes: dict[str, AxisFeedback] = field(default_factory=dict)
    bus_ok: bool = True
    """False after a collision, bus error or SYNC loss detected this cycle."""
    sync_missed: int = 0
    """Cycles in a row, this one included, in which the master sent no SYNC (switched off, or
    the send failed): the drives had nothing to answer. 0 when this cycle's SYNC went out."""

    @classmethod
    def for_axes(cls, axes: Iterable[str]) -> Feedback:
        """A feedback record with one :class:`AxisFeedback` per axis id."""
        return cls(axes={a: AxisFeedback() for a in axes})


@dataclass(slots=True)
class AxisCommand:
    """What one drive is told this cycle."""

    target: float = 0.0
    """Target position (0x607A) in axis units (insertion)."""
    goal: DriveGoal = DriveGoal.DISABLED
    escalate: bool = False
    """Set by the supervisor for a drive seen leaving its stop while a fault is latched: the
    master sends "disable voltage" whatever the goal, then an NMT stop to the node."""


@dataclass(slots=True)
class Commands:
    """One command per axis. Mutated in place by the controller."""

    axes: dict[str, AxisCommand] = field(default_factory=dict)

    @classmethod
    def for_axes(cls, axes: Iterable[str]) -> Commands:
        """A command record with one :class:`AxisCommand` per axis id."""
        return cls(axes={a: AxisCommand() for a in axes})


class DriveEventKind(IntEnum):
    """Asynchronous things the master noticed outside the TPDO path."""

    EMCY = 1
    HEARTBEAT_LOST = 2
    BOOTUP = 3
    """Unexpected boot-up of a running node (it reset), or a running node back in
    pre-operational after it was operational: its set-up is lost."""
    COLLISION = 4
    """A frame on a COB-ID that only the master sends, or SDO traffic with a drive once set up
    (another SDO client)."""
    STALE = 5
    """TPDO1 missing or malformed for longer than allowed."""
    DRIVE_FAULT = 6
    """Statusword reports FAULT."""
    SYNC_LOSS = 7
    BUS_ERROR = 8
    IMPLAUSIBLE = 9
    """Position actual jumped further than the axis can move in the time since the last TPDO1."""


@dataclass(frozen=True, slots=True)
class DriveEvent:
    """One asynchronous event; ``axis`` is empty for bus-wide events."""

    kind: DriveEventKind
    axis: str
    t: float
    code: int = 0
    """EMCY error code (or 0)."""
    text: str = ""
    """Human-readable cause, e.g. the EMCY code's name. Built outside the cyclic path."""


class PlantLoad(Protocol):
    """What a simulated drive sees of the world: insertion in, axial load force out.

    Implemented by ``whih_control.sim`` and handed to ``SimulatedDrives`` as a plain object.
    """

    def step(self, t: float, dt: float, insertion: Mapping[str, float]) -> Mapping[str, float]:
        """Advance the plant to time ``t`` (by ``dt``) given each axis' insertion (axis units).

        Returns the axial load force per axis in N (finite, >= 0). Deterministic for a seed.
        """
        ...
