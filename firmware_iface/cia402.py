"""CiA 402 drive profile: states, statusword decoding, controlword commands (pure, no I/O)."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["DriveState"]


class DriveState(IntEnum):
    """CiA 402 power state machine states (DS402 figure "State machine")."""

    UNKNOWN = 0
    NOT_READY_TO_SWITCH_ON = 1
    SWITCH_ON_DISABLED = 2
    READY_TO_SWITCH_ON = 3
    SWITCHED_ON = 4
    OPERATION_ENABLED = 5
    QUICK_STOP_ACTIVE = 6
    FAULT_REACTION_ACTIVE = 7
    FAULT = 8
