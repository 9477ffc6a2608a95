"""What :meth:`whih_control.Robot.status` returns: a snapshot taken between two cycles."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DriveStatus", "Status"]


@dataclass(frozen=True, slots=True)
class DriveStatus:
    """One drive as the master last saw it."""

    state: str
    """CiA 402 state name (e.g. ``OPERATION_ENABLED``)."""
    position: float
    """Position actual (mm or deg)."""
    target: float
    """Target last sent (mm or deg)."""
    force: float
    """Axial force (N) from torque actual."""
    age_cycles: int
    """Cycles since its last TPDO1 (0 = this cycle)."""
    heartbeat_ok: bool


@dataclass(frozen=True, slots=True)
class Status:
    """The robot between two cycles (see :meth:`whih_control.Robot.status`)."""

    t: float
    """Time of the latest cycle, seconds since the first (simulated or monotonic)."""
    cycle: int
    phase: str
    """Procedure phase, e.g. ``"ready"`` or ``"hand_in_hand_retro_step"``."""
    outcome: str | None
    """``"complete"`` or ``"aborted"`` once the procedure has ended, else None."""
    fault: str
    """The latched fault's text ('' when none is latched)."""
    faults: tuple[str, ...]
    """Every fault seen so far, ``'<t>s <axis>: <text>'``."""
    crossed: bool
    steps: int
    rewinds: int
    gap: float
    """Estimated MC gap (mm); NaN before calibration."""
    coupling: float
    """Estimated wire coupling (mm); NaN before calibration."""
    tips: Mapping[str, float]
    drives: Mapping[str, DriveStatus]
    enable_held: bool
    estop: bool
    jogging: tuple[str, ...]
    """Axes with a jog still on its way."""
    teleop: tuple[str, ...]
    """Axes under a teleop velocity that has not timed out."""

    @property
    def ended(self) -> bool:
        """The procedure has ended (complete or aborted)."""
        return self.outcome is not None

    def in_phase(self, name: str) -> bool:
        """True in phase ``name`` or one of its sub-phases (``"hand_in_hand"`` matches
        ``"hand_in_hand_verify"``)."""
        return self.phase == name or self.phase.startswith(name + "_")
