"""CiA 402 logic: scripted frame exchanges from the standard and the state machine as a property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_iface.cia402 import (
    CW_DISABLE_VOLTAGE,
    CW_ENABLE_OPERATION,
    CW_FAULT_RESET_BIT,
    CW_QUICK_STOP,
    CW_SHUTDOWN,
    CW_SWITCH_ON,
    EMCY_CODES,
    GOAL_STATES,
    MODE_CSP,
    DriveState,
    blocked_reason,
    decode_statusword,
    drive_transition,
    emcy_name,
    encode_statusword,
    has_following_error,
    has_internal_limit,
    is_fault,
    is_target_reached,
    is_warning,
    next_controlword,
)
from firmware_iface.types import DriveGoal

S = DriveState
DEVICE_STATES = [s for s in DriveState if s is not DriveState.UNKNOWN]

# Statuswords as real drives send them (CiA 402-2 table 30; values seen on EPOS4/Faulhaber traces).
STATUSWORDS = [
    (0x0000, S.NOT_READY_TO_SWITCH_ON),
    (0x0250, S.SWITCH_ON_DISABLED),
    (0x0640, S.SWITCH_ON_DISABLED),
    (0x0231, S.READY_TO_SWITCH_ON),
    (0x0221, S.READY_TO_SWITCH_ON),
    (0x0233, S.SWITCHED_ON),
    (0x0237, S.OPERATION_ENABLED),
    (0x1637, S.OPERATION_ENABLED),
    (0x0217, S.QUICK_STOP_ACTIVE),
    (0x021F, S.FAULT_REACTION_ACTIVE),
    (0x0218, S.FAULT),
    (0x0208, S.FAULT),
    (0x0011, S.UNKNOWN),  # bit 0 set without bit 5 and 6 clear: no defined state
]


@pytest.mark.parametrize(("sw", "state"), STATUSWORDS)
def test_decode_statusword(sw: int, state: DriveState) -> None:
    assert decode_statusword(sw) is state


@pytest.mark.parametrize("state", DEVICE_STATES)
@given(tr=st.booleans(), il=st.booleans(), fe=st.booleans(), warn=st.booleans())
def test_encode_decode_round_trip(state: DriveState, tr: bool, il: bool, fe: bool, warn: bool) -> None:
    sw = encode_statusword(state, target_reached=tr, internal_limit=il, following_error=fe, warning=warn)
    assert decode_statusword(sw) is state
    assert is_target_reached(sw) is tr
    assert has_internal_limit(sw) is il
    assert has_following_error(sw) is fe
    assert is_warning(sw) is warn
    assert is_fault(sw) is (state in (S.FAULT, S.FAULT_REACTION_ACTIVE))


def test_encode_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="state"):
        encode_statusword(S.UNKNOWN)


# Every commanded row of the device state machine: (state, controlword, previous, next, transition)
TRANSITIONS = [
    (S.SWITCH_ON_DISABLED, 0x06, 0, S.READY_TO_SWITCH_ON, 2),
    (S.READY_TO_SWITCH_ON, 0x07, 0, S.SWITCHED_ON, 3),
    (S.READY_TO_SWITCH_ON, 0x0F, 0, S.OPERATION_ENABLED, "3+4"),
    (S.SWITCHED_ON, 0x0F, 0, S.OPERATION_ENABLED, 4),
    (S.OPERATION_ENABLED, 0x07, 0, S.SWITCHED_ON, 5),
    (S.SWITCHED_ON, 0x06, 0, S.READY_TO_SWITCH_ON, 6),
    (S.READY_TO_SWITCH_ON, 0x00, 0, S.SWITCH_ON_DISABLED, "7 disable voltage"),
    (S.READY_TO_SWITCH_ON, 0x02, 0, S.SWITCH_ON_DISABLED, "7 quick stop"),
    (S.OPERATION_ENABLED, 0x06, 0, S.READY_TO_SWITCH_ON, 8),
    (S.OPERATION_ENABLED, 0x00, 0, S.SWITCH_ON_DISABLED, 9),
    (S.OPERATION_ENABLED, 0x0D, 0, S.SWITCH_ON_DISABLED, "9 bit 1 low"),
    (S.SWITCHED_ON, 0x00, 0, S.SWITCH_ON_DISABLED, "10 disable voltage"),
    (S.SWITCHED_ON, 0x02, 0, S.SWITCH_ON_DISABLED, "10 quick stop"),
    (S.OPERATION_ENABLED, 0x02, 0, S.QUICK_STOP_ACTIVE, 11),
    (S.OPERATION_ENABLED, 0x0B, 0, S.QUICK_STOP_ACTIVE, "11 bit 2 low"),
    (S.QUICK_STOP_ACTIVE, 0x00, 0, S.SWITCH_ON_DISABLED, 12),
    (S.FAULT, 0x80, 0x00, S.SWITCH_ON_DISABLED, "15 rising edge"),
    (S.FAULT, 0x80, 0x80, S.FAULT, "15 needs an edge, not a level"),
    (S.FAULT, 0x0F, 0x00, S.FAULT, "fault is latched"),
    (S.QUICK_STOP_ACTIVE, 0x0F, 0, S.OPERATION_ENABLED, 16),
    (S.OPERATION_ENABLED, 0x0F, 0, S.OPERATION_ENABLED, "stay enabled"),
    (S.OPERATION_ENABLED, 0x8F, 0, S.OPERATION_ENABLED, "bit 7 high is no command"),
    (S.SWITCH_ON_DISABLED, 0x0F, 0, S.SWITCH_ON_DISABLED, "enable needs the walk"),
    (S.NOT_READY_TO_SWITCH_ON, 0x06, 0, S.NOT_READY_TO_SWITCH_ON, "1 is automatic"),
    (S.FAULT_REACTION_ACTIVE, 0x80, 0, S.FAULT_REACTION_ACTIVE, "14 is automatic"),
]


@pytest.mark.parametrize(("state", "cw", "prev", "expected", "row"), TRANSITIONS)
def test_drive_transition_table(
    state: DriveState, cw: int, prev: int, expected: DriveState, row: object
) -> None:
    assert drive_transition(state, cw, previous=prev) is expected, row


def test_transition_16_depends_on_quick_stop_option() -> None:
    assert drive_transition(S.QUICK_STOP_ACTIVE, 0x0F, quick_stop_option=2) is S.QUICK_STOP_ACTIVE
    assert drive_transition(S.QUICK_STOP_ACTIVE, 0x0F, quick_stop_option=6) is S.OPERATION_ENABLED


def test_drive_transition_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="UNKNOWN"):
        drive_transition(S.UNKNOWN, 0x06)


def _exchange(state: DriveState, goal: DriveGoal, steps: int) -> list[tuple[int, int]]:
    """Master and drive talking: (statusword in, controlword out) per cycle."""
    frames = []
    prev = 0
    phase = False
    for _ in range(steps):
        sw = encode_statusword(state)
        cw = next_controlword(decode_statusword(sw), goal, reset_phase=phase)
        phase = not phase
        frames.append((sw, cw))
        state = drive_transition(state, cw, previous=prev)
        prev = cw
    return frames


def test_enable_walk_frames() -> None:
    # CiA 402-2 example: SWITCH ON DISABLED -> READY -> SWITCHED ON -> OPERATION ENABLED.
    assert _exchange(S.SWITCH_ON_DISABLED, DriveGoal.ENABLED, 4) == [
        (0x0240, CW_SHUTDOWN),
        (0x0231, CW_SWITCH_ON),
        (0x0233, CW_ENABLE_OPERATION),
        (0x1237, CW_ENABLE_OPERATION),
    ]


def test_fault_reset_edge_frames() -> None:
    assert _exchange(S.FAULT, DriveGoal.FAULT_RESET, 3) == [
        (0x0208, 0x00),  # bit 7 low first: the edge needs a low phase
        (0x0208, CW_FAULT_RESET_BIT),
        (0x0240, CW_DISABLE_VOLTAGE),  # reset never moves anything
    ]


def test_quick_stop_frames() -> None:
    assert _exchange(S.OPERATION_ENABLED, DriveGoal.QUICK_STOP, 2) == [
        (0x1237, CW_QUICK_STOP),
        (0x0217, CW_QUICK_STOP),
    ]


def test_reenable_after_quick_stop_passes_switch_on_disabled() -> None:
    frames = _exchange(S.QUICK_STOP_ACTIVE, DriveGoal.ENABLED, 5)
    assert [decode_statusword(sw) for sw, _ in frames] == [
        S.QUICK_STOP_ACTIVE,
        S.SWITCH_ON_DISABLED,
        S.READY_TO_SWITCH_ON,
        S.SWITCHED_ON,
        S.OPERATION_ENABLED,
    ]


def test_latched_fault_is_not_reset_by_enable() -> None:
    frames = _exchange(S.FAULT, DriveGoal.ENABLED, 6)
    assert all(decode_statusword(sw) is S.FAULT for sw, _ in frames)
    assert all(not cw & CW_FAULT_RESET_BIT for _, cw in frames)
    assert blocked_reason(S.FAULT, DriveGoal.ENABLED) == "fault is latched: it needs goal FAULT_RESET"


@given(
    start=st.sampled_from(DEVICE_STATES),
    goal=st.sampled_from(list(DriveGoal)),
    phase=st.booleans(),
    qs_option=st.integers(0, 8),
)
def test_every_goal_reached_or_blocked_with_reason(
    start: DriveState, goal: DriveGoal, phase: bool, qs_option: int
) -> None:
    state, prev = start, 0
    reason = blocked_reason(start, goal)
    for _ in range(6):
        if state in GOAL_STATES[goal]:
            break
        cw = next_controlword(state, goal, reset_phase=phase)
        phase = not phase
        state = drive_transition(state, cw, previous=prev, quick_stop_option=qs_option)
        prev = cw
    if reason is None:
        assert state in GOAL_STATES[goal]
    else:
        assert state is start, reason


@given(start=st.sampled_from(DEVICE_STATES), goal=st.sampled_from(list(DriveGoal)), phase=st.booleans())
def test_only_enabled_goal_keeps_operation(start: DriveState, goal: DriveGoal, phase: bool) -> None:
    # Any goal but ENABLED takes the drive out of (or keeps it out of) OPERATION ENABLED at once.
    cw = next_controlword(start, goal, reset_phase=phase)
    if goal is not DriveGoal.ENABLED:
        assert drive_transition(start, cw) is not S.OPERATION_ENABLED


@given(sw=st.integers(0, 0xFFFF))
def test_decode_is_total(sw: int) -> None:
    assert isinstance(decode_statusword(sw), DriveState)


def test_modes_and_emcy() -> None:
    assert MODE_CSP == 8
    for code in (
        0x2310,
        0x3210,
        0x3220,
        0x4310,
        0x7121,
        0x7305,
        0x8110,
        0x8120,
        0x8130,
        0x8140,
        0x8150,
        0x8250,
        0x8611,
        0x8612,
    ):
        assert emcy_name(code) == EMCY_CODES[code]
    assert emcy_name(0x8611) == "following error"
    assert emcy_name(0x2399).startswith("current error")
    assert emcy_name(0x5123).startswith("hardware error")
    assert emcy_name(0xFF42).startswith("device specific")
    assert emcy_name(0xF001).startswith("additional functions")
    assert emcy_name(0x9001).startswith("external")
    assert emcy_name(0xA001).startswith("unknown")
    assert CW_DISABLE_VOLTAGE == 0
