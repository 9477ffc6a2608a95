"""Fault specs, and every drive fault seen in the drive's behaviour on the simulated-time bus."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_iface import pdo
from firmware_iface.cia402 import DriveState, decode_statusword
from firmware_iface.faults import (
    DRIVE_FAULT_KINDS,
    RUNTIME_FAULT_KINDS,
    FaultKind,
    FaultSpec,
    parse_fault,
)
from firmware_iface.sim import DRIVE_FAULT_EMCY, FORCE_SPIKE_S

from .test_sim_drives import ConstantLoad, Rig, System, emcys, tpdos

# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("heartbeat-loss:retro_mc@2.0", FaultSpec(FaultKind.HEARTBEAT_LOSS, "retro_mc", None, 2.0)),
        ("tpdo-drop:ante_wire:3@1.5", FaultSpec(FaultKind.TPDO_DROP, "ante_wire", 3, 1.5)),
        ("emcy:ante_mc:0x8611@4", FaultSpec(FaultKind.EMCY, "ante_mc", 0x8611, 4.0)),
        ("encoder-jump:retro_wire:-0.5@0", FaultSpec(FaultKind.ENCODER_JUMP, "retro_wire", -0.5, 0.0)),
        ("encoder-stuck:ante_wire@1", FaultSpec(FaultKind.ENCODER_STUCK, "ante_wire", None, 1.0)),
        ("force-spike:retro_wire:2.5@10", FaultSpec(FaultKind.FORCE_SPIKE, "retro_wire", 2.5, 10.0)),
        ("drive-fault:ante_mc@3", FaultSpec(FaultKind.DRIVE_FAULT, "ante_mc", None, 3.0)),
        ("boot-up:retro_mc@7.25", FaultSpec(FaultKind.BOOT_UP, "retro_mc", None, 7.25)),
        ("sync-loss@3", FaultSpec(FaultKind.SYNC_LOSS, "", None, 3.0)),
        ("master-freeze:250@3", FaultSpec(FaultKind.MASTER_FREEZE, "", 250.0, 3.0)),
        ("estop@1", FaultSpec(FaultKind.ESTOP, "", None, 1.0)),
        ("deadman-release@0.5", FaultSpec(FaultKind.DEADMAN_RELEASE, "", None, 0.5)),
        ("imaging-loss@12", FaultSpec(FaultKind.IMAGING_LOSS, "", None, 12.0)),
        (" EMCY:ante_mc:0xff01@1 ", FaultSpec(FaultKind.EMCY, "ante_mc", 0xFF01, 1.0)),
    ],
)
def test_parse_valid_specs(text: str, expected: FaultSpec) -> None:
    spec = parse_fault(text)
    assert spec == expected
    assert parse_fault(str(spec)) == spec


def test_every_kind_is_either_a_drive_or_a_runtime_kind() -> None:
    assert set(FaultKind) == DRIVE_FAULT_KINDS | RUNTIME_FAULT_KINDS
    assert not DRIVE_FAULT_KINDS & RUNTIME_FAULT_KINDS
    assert {k.value for k in RUNTIME_FAULT_KINDS} == {
        "sync-loss",
        "master-freeze",
        "estop",
        "deadman-release",
        "imaging-loss",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("heartbeat-loss:retro_mc", "missing '@T_SECONDS'"),
        ("@1", "missing '@T_SECONDS'"),
        ("wobble:ante_mc@1", "unknown kind 'wobble'"),
        ("heartbeat-loss:retro_mc@-1", "must be a finite number of seconds >= 0"),
        ("heartbeat-loss:retro_mc@nan", "must be a finite number of seconds >= 0"),
        ("heartbeat-loss:retro_mc@inf", "must be a finite number of seconds >= 0"),
        ("heartbeat-loss:retro_mc@soon", "is not a number of seconds"),
        ("heartbeat-loss@1", "needs an AXIS"),
        ("tpdo-drop:ante_wire@1", "needs an ARG"),
        (
            "tpdo-drop:ante_wire:0@1",
            "ARG (='0') of tpdo-drop must be an integer number of frames in [1...1000000]",
        ),
        ("tpdo-drop:ante_wire:1.5@1", "of tpdo-drop must be"),
        ("emcy:ante_mc:8611@1", "hex EMCY code"),
        ("emcy:ante_mc:0x10000@1", "hex EMCY code"),
        ("emcy:ante_mc:0x0@1", "hex EMCY code"),
        ("encoder-jump:ante_mc:0@1", "non-zero distance"),
        ("encoder-jump:ante_mc:inf@1", "non-zero distance"),
        ("force-spike:ante_mc:-2@1", "force > 0"),
        ("force-spike:ante_mc:nan@1", "force > 0"),
        ("drive-fault:ante_mc:3@1", "takes no further field, got '3'"),
        ("sync-loss:ante_mc@1", "bus-wide and takes no AXIS or ARG"),
        ("estop:1@1", "bus-wide and takes no AXIS or ARG"),
        ("master-freeze:ante_mc:250@1", "bus-wide and takes no AXIS"),
        ("master-freeze@1", "needs an ARG"),
        ("master-freeze:-5@1", "in ms in (0...60000]"),
        ("drive-fault:ante mc@1", "is not an axis id"),
        ("drive-fault::x@1", "empty field"),
    ],
)
def test_malformed_specs_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_fault(text)
    assert repr(text) in str(err.value)
    assert message in str(err.value)
    assert "KIND[:AXIS][:ARG]@T_SECONDS" in str(err.value)


_axes = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True)


@st.composite
def _specs(draw: st.DrawFn) -> FaultSpec:
    kind = draw(st.sampled_from(sorted(FaultKind, key=lambda k: k.value)))
    axis = draw(_axes) if kind in DRIVE_FAULT_KINDS else ""
    arg: int | float | None = None
    if kind is FaultKind.TPDO_DROP:
        arg = draw(st.integers(1, 10_000))
    elif kind is FaultKind.EMCY:
        arg = draw(st.integers(1, 0xFFFF))
    elif kind is FaultKind.ENCODER_JUMP:
        arg = draw(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != 0.0))
    elif kind is FaultKind.FORCE_SPIKE:
        arg = draw(st.floats(min_value=0.0, exclude_min=True, allow_infinity=False))
    elif kind is FaultKind.MASTER_FREEZE:
        arg = draw(st.floats(min_value=0.0, exclude_min=True, max_value=60_000.0))
    t = draw(st.floats(min_value=0.0, allow_infinity=False))
    return FaultSpec(kind, axis, arg, t)


@given(_specs())
def test_str_of_a_spec_parses_back_to_it(spec: FaultSpec) -> None:
    assert parse_fault(str(spec)) == spec


@given(st.text(max_size=40))
def test_parse_fault_never_fails_other_than_with_value_error(text: str) -> None:
    try:
        spec = parse_fault(text)
    except ValueError:
        return
    assert spec.t >= 0.0 and (spec.axis != "") == (spec.kind in DRIVE_FAULT_KINDS)


# --- injection into simulated drives --------------------------------------------------------------


def test_runtime_kinds_and_unknown_axes_are_refused_by_the_drives() -> None:
    with Rig(System()) as rig:
        with pytest.raises(ValueError, match="belongs to the runtime"):
            rig.sim.inject("estop@1")
        with pytest.raises(
            ValueError, match=r"axis \(='retro_mc'\) is not a configured drive; configured: ante_wire"
        ):
            rig.sim.inject("drive-fault:retro_mc@1")


def _running(load: ConstantLoad | None = None) -> Rig:
    rig = Rig(System(), load=load)
    rig.__enter__()
    rig.start_all()
    rig.enable([1])
    rig.run(10)
    return rig


def test_fault_happens_at_its_drive_time_not_before() -> None:
    rig = _running()
    try:
        t_fault = round(rig.sim.time + 0.05, 6)
        rig.sim.inject(f"drive-fault:ante_wire@{t_fault}")
        before = rig.run(19)
        assert emcys(before, 1) == [] and rig.sim.time < t_fault
        after = rig.run(2)
        stamps = [m.timestamp for m in after if m.arbitration_id == 0x81]
        assert stamps == [pytest.approx(t_fault)]
    finally:
        rig.__exit__(None, None, None)


def test_heartbeat_loss_stops_the_drive_heartbeat() -> None:
    rig = _running()
    try:
        assert [m for m in rig.run(8) if m.arbitration_id == 0x701]
        rig.sim.inject("heartbeat-loss:ante_wire@0")
        frames = rig.run(40)
        assert [m for m in frames if m.arbitration_id == 0x701] == []
        assert len(tpdos(frames, 1)) == 40  # only the heartbeat stops
    finally:
        rig.__exit__(None, None, None)


def test_tpdo_drop_skips_exactly_n_frames() -> None:
    rig = _running()
    try:
        rig.sim.inject("tpdo-drop:ante_wire:3@0")
        counts = [len(tpdos(rig.cycle(), 1)) for _ in range(6)]
        assert counts == [0, 0, 0, 1, 1, 1]
    finally:
        rig.__exit__(None, None, None)


def test_emcy_error_code_sends_emcy_and_faults_but_a_device_warning_does_not() -> None:
    rig = _running()
    try:
        rig.sim.inject("emcy:ante_wire:0xFF01@0")
        frames = rig.run(2)
        assert emcys(frames, 1) == [0xFF01]
        assert rig.drive(1).state is DriveState.OPERATION_ENABLED
        rig.sim.inject("emcy:ante_wire:0x2310@0")
        frames = rig.run(3)
        assert emcys(frames, 1) == [0x2310]
        raw = next(bytes(m.data) for m in frames if m.arbitration_id == 0x81)
        assert raw[2] & 0x03 == 0x03  # error register: generic + current
        assert decode_statusword(tpdos(frames, 1)[-1][0]) is DriveState.FAULT
        assert rig.sdo_read(1, 0x603F) == 0x2310
    finally:
        rig.__exit__(None, None, None)


def test_encoder_jump_shows_in_position_actual_and_trips_following_error_when_large() -> None:
    rig = _running()
    try:
        rig.sim.inject("encoder-jump:ante_wire:0.4@0")
        pos = tpdos(rig.cycle(), 1)[-1][1]
        assert pos == pytest.approx(400, abs=2)  # the drive sees the jump...
        rig.run(40)
        assert rig.drive(1).insertion == pytest.approx(-0.4, abs=2e-3)  # ...and pulls the axis back
        assert rig.drive(1).state is DriveState.OPERATION_ENABLED  # 0.4 mm < 1 mm window
        rig.sim.inject("encoder-jump:ante_wire:5@0")
        frames = rig.run(20)
        assert emcys(frames, 1) == [0x8611]
        assert rig.drive(1).state is DriveState.FAULT
    finally:
        rig.__exit__(None, None, None)


def test_encoder_stuck_freezes_position_actual_then_following_error() -> None:
    rig = _running()
    try:
        rig.sim.inject("encoder-stuck:ante_wire@0")
        positions = []
        for k in range(1, 200):
            rig.target[1] = k * 20  # 8 mm/s
            frames = rig.cycle()
            positions += [p for _, p, _ in tpdos(frames, 1)]
            if emcys(frames, 1):
                break
        assert set(positions) == {0}
        assert rig.drive(1).error_code == 0x8611
        rig.run(5)  # fault reaction: ramp down, then FAULT
        assert rig.drive(1).state is DriveState.FAULT
    finally:
        rig.__exit__(None, None, None)


def test_force_spike_raises_torque_actual_for_a_short_time() -> None:
    rig = _running(ConstantLoad(0.5))
    try:
        rig.sim.inject("force-spike:ante_wire:2@0")
        torques = [tpdos(rig.cycle(), 1)[-1][2] for _ in range(60)]
        n_spike = round(FORCE_SPIKE_S / rig.period)
        assert torques[: n_spike - 1] == [250] * (n_spike - 1)
        assert torques[n_spike + 1 :] == [50] * (60 - n_spike - 1)
    finally:
        rig.__exit__(None, None, None)


def test_drive_fault_enters_fault_with_hardware_emcy() -> None:
    rig = _running()
    try:
        rig.target[1] = 2000
        rig.run(10)  # moving: the fault reaction ramps down first
        assert rig.drive(1).velocity != 0.0
        rig.sim.inject("drive-fault:ante_wire@0")
        frames = rig.run(20)
        assert emcys(frames, 1) == [DRIVE_FAULT_EMCY]
        states = [decode_statusword(sw) for sw, _, _ in tpdos(frames, 1)]
        assert DriveState.FAULT_REACTION_ACTIVE in states and states[-1] is DriveState.FAULT
        assert rig.drive(1).velocity == 0.0
    finally:
        rig.__exit__(None, None, None)


def test_boot_up_resets_the_drive() -> None:
    rig = _running()
    try:
        rig.target[1] = 300
        rig.run(60)
        rig.sim.inject("boot-up:ante_wire@0")
        frames = rig.drain()
        assert [(m.arbitration_id, bytes(m.data)) for m in frames] == [(0x701, b"\x00")]
        frames = rig.run(10)
        assert tpdos(frames, 1) == []  # pre-operational again
        assert [m for m in frames if m.arbitration_id == 0x701] == []  # 0x1017 back to 0
        d = rig.drive(1)
        assert d.nmt_state == pdo.NMT_PRE_OPERATIONAL
        assert d.state is DriveState.SWITCH_ON_DISABLED
        assert rig.sdo_read(1, 0x6060) == 0  # mode back to the default
        assert d.insertion == pytest.approx(0.3, abs=1e-3)  # the axis did not move
    finally:
        rig.__exit__(None, None, None)
