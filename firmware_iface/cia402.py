"""CiA 402 drive profile: states, statusword decoding, controlword commands (pure, no I/O).

Both sides of the wire use this module: the master (:func:`next_controlword`, which walks a drive
toward a :class:`~firmware_iface.types.DriveGoal`) and the simulated drive firmware
(:func:`drive_transition`, the device's power state machine, and :func:`encode_statusword`).
References are to CiA 402-2 (IEC 61800-7-201), "Finite state automaton", transitions 0..16.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # types.py imports DriveState from here; avoid the cycle at run time
    from firmware_iface.types import DriveGoal

__all__ = [
    "CW_DISABLE_OPERATION",
    "CW_DISABLE_VOLTAGE",
    "CW_ENABLE_OPERATION",
    "CW_FAULT_RESET_BIT",
    "CW_QUICK_STOP",
    "CW_SHUTDOWN",
    "CW_SWITCH_ON",
    "EMCY_CODES",
    "GOAL_STATES",
    "MODE_CSP",
    "MODE_CST",
    "MODE_CSV",
    "MODE_HM",
    "MODE_PP",
    "MODE_PV",
    "SW_FAULT",
    "SW_FOLLOWING_ERROR",
    "SW_INTERNAL_LIMIT",
    "SW_REMOTE",
    "SW_TARGET_REACHED",
    "SW_WARNING",
    "DriveState",
    "blocked_reason",
    "decode_statusword",
    "drive_transition",
    "emcy_name",
    "encode_statusword",
    "has_following_error",
    "has_internal_limit",
    "is_fault",
    "is_target_reached",
    "is_warning",
    "next_controlword",
]


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


# --- modes of operation (0x6060 / 0x6061) -------------------------------------------------------
MODE_PP: Final = 1
"""Profile position."""
MODE_PV: Final = 3
"""Profile velocity."""
MODE_HM: Final = 6
"""Homing."""
MODE_CSP: Final = 8
"""Cyclic synchronous position: the only mode whih drives its axes in."""
MODE_CSV: Final = 9
"""Cyclic synchronous velocity."""
MODE_CST: Final = 10
"""Cyclic synchronous torque."""

# --- statusword (0x6041) ------------------------------------------------------------------------
SW_READY_TO_SWITCH_ON: Final = 1 << 0
SW_SWITCHED_ON: Final = 1 << 1
SW_OPERATION_ENABLED: Final = 1 << 2
SW_FAULT: Final = 1 << 3
SW_VOLTAGE_ENABLED: Final = 1 << 4
SW_QUICK_STOP: Final = 1 << 5
"""Active low: 0 means a quick stop is being executed."""
SW_SWITCH_ON_DISABLED: Final = 1 << 6
SW_WARNING: Final = 1 << 7
SW_REMOTE: Final = 1 << 9
"""The drive processes the controlword (remote control via the network)."""
SW_TARGET_REACHED: Final = 1 << 10
SW_INTERNAL_LIMIT: Final = 1 << 11
"""Internal limit active (e.g. a software position limit 0x607D was hit)."""
SW_FOLLOWS_COMMAND: Final = 1 << 12
"""CSP: the drive follows the target position."""
SW_FOLLOWING_ERROR: Final = 1 << 13
"""CSP: following error (0x6065 window exceeded for longer than 0x6066)."""

# (mask, value, state), most specific first; from CiA 402-2 table "Statusword bits".
_SW_PATTERNS: Final = (
    (0x004F, 0x0000, DriveState.NOT_READY_TO_SWITCH_ON),
    (0x004F, 0x0040, DriveState.SWITCH_ON_DISABLED),
    (0x006F, 0x0021, DriveState.READY_TO_SWITCH_ON),
    (0x006F, 0x0023, DriveState.SWITCHED_ON),
    (0x006F, 0x0027, DriveState.OPERATION_ENABLED),
    (0x006F, 0x0007, DriveState.QUICK_STOP_ACTIVE),
    (0x004F, 0x000F, DriveState.FAULT_REACTION_ACTIVE),
    (0x004F, 0x0008, DriveState.FAULT),
)

# Bits 0-6 of the statusword each state shows (voltage-enabled bit 4 where power is on).
_SW_STATE_BITS: Final[Mapping[DriveState, int]] = MappingProxyType(
    {
        DriveState.NOT_READY_TO_SWITCH_ON: 0x0000,
        DriveState.SWITCH_ON_DISABLED: 0x0040,
        DriveState.READY_TO_SWITCH_ON: 0x0031,
        DriveState.SWITCHED_ON: 0x0033,
        DriveState.OPERATION_ENABLED: 0x0037,
        DriveState.QUICK_STOP_ACTIVE: 0x0017,
        DriveState.FAULT_REACTION_ACTIVE: 0x001F,
        DriveState.FAULT: 0x0008,
    }
)


def decode_statusword(sw: int) -> DriveState:
    """The power state a statusword reports (UNKNOWN for a pattern CiA 402 does not define)."""
    for mask, value, state in _SW_PATTERNS:
        if sw & mask == value:
            return state
    return DriveState.UNKNOWN


def encode_statusword(
    state: DriveState,
    *,
    target_reached: bool = False,
    internal_limit: bool = False,
    following_error: bool = False,
    warning: bool = False,
) -> int:
    """The statusword a drive in ``state`` reports (remote bit 9 always set; CSP bit 12 when enabled)."""
    if state not in _SW_STATE_BITS:
        raise ValueError(f"state (={state!r}) has no statusword; it must be a device state")
    sw = _SW_STATE_BITS[state] | SW_REMOTE
    if state is DriveState.OPERATION_ENABLED:
        sw |= SW_FOLLOWS_COMMAND
    if target_reached:
        sw |= SW_TARGET_REACHED
    if internal_limit:
        sw |= SW_INTERNAL_LIMIT
    if following_error:
        sw |= SW_FOLLOWING_ERROR
    if warning:
        sw |= SW_WARNING
    return sw


def is_fault(sw: int) -> bool:
    """Statusword bit 3: fault (FAULT or FAULT REACTION ACTIVE)."""
    return bool(sw & SW_FAULT)


def is_warning(sw: int) -> bool:
    """Statusword bit 7: warning (the drive keeps running)."""
    return bool(sw & SW_WARNING)


def is_target_reached(sw: int) -> bool:
    """Statusword bit 10: target reached."""
    return bool(sw & SW_TARGET_REACHED)


def has_internal_limit(sw: int) -> bool:
    """Statusword bit 11: internal limit active."""
    return bool(sw & SW_INTERNAL_LIMIT)


def has_following_error(sw: int) -> bool:
    """Statusword bit 13 in CSP: following error."""
    return bool(sw & SW_FOLLOWING_ERROR)


# --- controlword (0x6040) -----------------------------------------------------------------------
CW_SHUTDOWN: Final = 0x06
"""Transitions 2, 6, 8: to READY TO SWITCH ON."""
CW_SWITCH_ON: Final = 0x07
"""Transition 3: to SWITCHED ON."""
CW_DISABLE_OPERATION: Final = 0x07
"""Transition 5: OPERATION ENABLED to SWITCHED ON (same bits as SWITCH ON)."""
CW_ENABLE_OPERATION: Final = 0x0F
"""Transitions 4, 16 (and 3+4 from READY TO SWITCH ON)."""
CW_DISABLE_VOLTAGE: Final = 0x00
"""Transitions 7, 9, 10, 12: to SWITCH ON DISABLED, torque off."""
CW_QUICK_STOP: Final = 0x02
"""Transition 11 (7, 10 from the lower states)."""
CW_FAULT_RESET_BIT: Final = 0x80
"""Transition 15 happens on the rising edge of this bit, not on its level."""


def _is_shutdown(cw: int) -> bool:
    return cw & 0x87 == 0x06


def _is_switch_on(cw: int) -> bool:
    return cw & 0x8F == 0x07


def _is_enable_operation(cw: int) -> bool:
    return cw & 0x8F == 0x0F


def _is_disable_voltage(cw: int) -> bool:
    return cw & 0x82 == 0x00


def _is_quick_stop(cw: int) -> bool:
    return cw & 0x86 == 0x02


def drive_transition(
    state: DriveState, controlword: int, *, previous: int = 0, quick_stop_option: int = 6
) -> DriveState:
    """Device side: the state after a drive in ``state`` receives ``controlword``.

    Implements the commanded transitions 2..12, 15 and 16. ``previous`` is the controlword received
    before this one: fault reset (15) needs a rising edge of bit 7. Transition 16 (QUICK STOP ACTIVE
    back to OPERATION ENABLED) is only allowed for quick-stop options (0x605A) 5..8, in which the drive
    stays in QUICK STOP ACTIVE. The automatic transitions are the drive's own business and not
    modelled here: 0/1 (NOT READY stays NOT READY), 12 after the ramp for options 0..4, 13 (fault
    detected) and 14 (FAULT REACTION ACTIVE to FAULT). A fault reset returns SWITCH ON DISABLED; a
    drive whose fault cause persists must go back to FAULT itself.
    """
    if state is DriveState.UNKNOWN:
        raise ValueError("state (=UNKNOWN) must be a device state")
    if state is DriveState.FAULT:
        rising = bool(controlword & CW_FAULT_RESET_BIT) and not previous & CW_FAULT_RESET_BIT
        return DriveState.SWITCH_ON_DISABLED if rising else state
    if state in (DriveState.NOT_READY_TO_SWITCH_ON, DriveState.FAULT_REACTION_ACTIVE):
        return state
    if state is DriveState.SWITCH_ON_DISABLED:
        return DriveState.READY_TO_SWITCH_ON if _is_shutdown(controlword) else state  # 2
    if state is DriveState.READY_TO_SWITCH_ON:
        if _is_disable_voltage(controlword) or _is_quick_stop(controlword):
            return DriveState.SWITCH_ON_DISABLED  # 7
        if _is_switch_on(controlword):
            return DriveState.SWITCHED_ON  # 3
        if _is_enable_operation(controlword):
            return DriveState.OPERATION_ENABLED  # 3 + 4
        return state
    if state is DriveState.SWITCHED_ON:
        if _is_disable_voltage(controlword) or _is_quick_stop(controlword):
            return DriveState.SWITCH_ON_DISABLED  # 10
        if _is_shutdown(controlword):
            return DriveState.READY_TO_SWITCH_ON  # 6
        if _is_enable_operation(controlword):
            return DriveState.OPERATION_ENABLED  # 4
        return state
    if state is DriveState.OPERATION_ENABLED:
        if _is_disable_voltage(controlword):
            return DriveState.SWITCH_ON_DISABLED  # 9
        if _is_quick_stop(controlword):
            return DriveState.QUICK_STOP_ACTIVE  # 11
        if _is_shutdown(controlword):
            return DriveState.READY_TO_SWITCH_ON  # 8
        if _is_switch_on(controlword):
            return DriveState.SWITCHED_ON  # 5
        return state
    # QUICK_STOP_ACTIVE
    if _is_disable_voltage(controlword):
        return DriveState.SWITCH_ON_DISABLED  # 12
    if _is_enable_operation(controlword) and 5 <= quick_stop_option <= 8:
        return DriveState.OPERATION_ENABLED  # 16
    return state


_GOAL_DISABLED: Final = 0
_GOAL_SWITCHED_ON: Final = 1
_GOAL_ENABLED: Final = 2
_GOAL_QUICK_STOP: Final = 3
_GOAL_FAULT_RESET: Final = 4

GOAL_STATES: Final[Mapping[int, frozenset[DriveState]]] = MappingProxyType(
    {
        _GOAL_DISABLED: frozenset({DriveState.SWITCH_ON_DISABLED}),
        _GOAL_SWITCHED_ON: frozenset({DriveState.SWITCHED_ON}),
        _GOAL_ENABLED: frozenset({DriveState.OPERATION_ENABLED}),
        _GOAL_QUICK_STOP: frozenset({DriveState.QUICK_STOP_ACTIVE, DriveState.SWITCH_ON_DISABLED}),
        _GOAL_FAULT_RESET: frozenset({DriveState.SWITCH_ON_DISABLED}),
    }
)
"""Per :class:`~firmware_iface.types.DriveGoal` (an IntEnum, usable as key): where it is reached."""


def blocked_reason(state: DriveState, goal: DriveGoal) -> str | None:
    """Why the master cannot move a drive in ``state`` toward ``goal`` (None: it can, or is there)."""
    if state is DriveState.UNKNOWN:
        return "no statusword received yet"
    if state is DriveState.NOT_READY_TO_SWITCH_ON:
        return "drive is initialising (NOT READY TO SWITCH ON)"
    if state is DriveState.FAULT_REACTION_ACTIVE:
        return "drive is reacting to a fault (FAULT REACTION ACTIVE)"
    if state is DriveState.FAULT and int(goal) != _GOAL_FAULT_RESET:
        return "fault is latched: it needs goal FAULT_RESET"
    return None


def next_controlword(state: DriveState, goal: DriveGoal, *, reset_phase: bool) -> int:
    """Master side: the controlword that moves a drive in ``state`` one step toward ``goal``.

    The walk to OPERATION ENABLED is one transition per cycle (2, 3, 4), so the master sees SWITCHED
    ON before the drive starts following the target. QUICK STOP ACTIVE is left through SWITCH ON
    DISABLED (12) rather than straight back (16), so re-enabling always passes the whole walk.
    A fault reset needs a rising edge of bit 7: while the drive is in FAULT the caller alternates
    ``reset_phase`` (False: bit 7 low, True: bit 7 high) every cycle. A latched fault is left alone
    unless the goal is FAULT_RESET (see :func:`blocked_reason`). Quick stop is always sent as asked.
    """
    g = int(goal)
    if g == _GOAL_QUICK_STOP:
        return CW_QUICK_STOP
    if state is DriveState.FAULT:
        if g == _GOAL_FAULT_RESET and reset_phase:
            return CW_FAULT_RESET_BIT
        return CW_DISABLE_VOLTAGE
    if g in (_GOAL_DISABLED, _GOAL_FAULT_RESET):
        return CW_DISABLE_VOLTAGE
    if state is DriveState.SWITCH_ON_DISABLED:
        return CW_SHUTDOWN
    if state is DriveState.READY_TO_SWITCH_ON:
        return CW_SWITCH_ON
    if state is DriveState.SWITCHED_ON:
        return CW_ENABLE_OPERATION if g == _GOAL_ENABLED else CW_SWITCH_ON
    if state is DriveState.OPERATION_ENABLED:
        return CW_ENABLE_OPERATION if g == _GOAL_ENABLED else CW_DISABLE_OPERATION
    # QUICK STOP ACTIVE, NOT READY, FAULT REACTION ACTIVE, UNKNOWN: no torque request.
    return CW_DISABLE_VOLTAGE


# --- EMCY error codes (CiA 301 table 21, CiA 402-2 annex) ---------------------------------------
EMCY_CODES: Mapping[int, str] = MappingProxyType(
    {
        0x0000: "error reset or no error",
        0x1000: "generic error",
        0x2310: "continuous over-current (output side)",
        0x3210: "DC link over-voltage",
        0x3220: "DC link under-voltage",
        0x4310: "excess temperature (drive)",
        0x5530: "non-volatile memory error",
        0x6010: "software reset (watchdog)",
        0x7121: "motor blocked",
        0x7305: "incremental sensor 1 fault",
        0x8110: "CAN overrun (objects lost)",
        0x8120: "CAN in error passive mode",
        0x8130: "life guard or heartbeat error",
        0x8140: "recovered from bus off",
        0x8150: "CAN-ID collision",
        0x8210: "PDO not processed due to length error",
        0x8220: "PDO length exceeded",
        0x8250: "RPDO timeout",
        0x8611: "following error",
        0x8612: "reference limit (software position limit)",
        0xFF00: "device specific",
    }
)
"""Names of the EMCY error codes whih knows; :func:`emcy_name` falls back to the code's class."""

_EMCY_CLASSES: Final = (
    (0xFF00, 0xFF00, "device specific error"),
    (0xF000, 0xF000, "additional functions error"),
    (0xF000, 0x9000, "external error"),
    (0xF000, 0x8000, "monitoring error"),
    (0xF000, 0x7000, "additional modules error"),
    (0xF000, 0x6000, "software error"),
    (0xF000, 0x5000, "hardware error"),
    (0xF000, 0x4000, "temperature error"),
    (0xF000, 0x3000, "voltage error"),
    (0xF000, 0x2000, "current error"),
    (0xF000, 0x1000, "generic error"),
)


def emcy_name(code: int) -> str:
    """The name of an EMCY error code, or of its CiA 301 class for an unlisted code."""
    name = EMCY_CODES.get(code)
    if name is not None:
        return name
    for mask, value, cls in _EMCY_CLASSES:
        if code & mask == value:
            return f"{cls} 0x{code:04X}"
    return f"unknown error 0x{code:04X}"
