"""What a drive's EDS/DCF allows (firmware_iface.od) and the set-up plan checked against it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_iface.od import DriveDictionary, UnitError, accel_to_drive, speed_to_drive
from firmware_iface.plan import PDO_INVALID, plan_setup, plan_system
from firmware_iface.spec import BUILTIN_EDS_DIR, BusConfig, DriveConfig
from whih_control import load_config
from whih_control.cli import main

from .conftest import CONFIGS, EPOS4_DCF

EPOS4 = DriveDictionary.load(EPOS4_DCF, 1)
SIM = DriveDictionary.load(BUILTIN_EDS_DIR / "whih_sim_drive.eds", 1)
LINEAR = DriveConfig(node_id=1, counts_per_unit=8192.0, encoder_counts_per_rev=16384.0)


def _edited_dcf(tmp_path: Path, section: str, value: str) -> DriveDictionary:
    """The EPOS4 DCF with one object's value (and limits) changed."""
    text = EPOS4_DCF.read_text(encoding="utf-8")
    head = f"[{section}]\n"
    start = text.index(head)
    end = text.index("\n[", start + 1)
    body = text[start:end]
    for key in ("DefaultValue", "LowLimit", "HighLimit", "ParameterValue"):
        body = "\n".join(
            f"{key}={value}" if line.startswith(f"{key}=") else line for line in body.split("\n")
        )
    path = tmp_path / "edited.dcf"
    path.write_text(text[:start] + body + text[end:], encoding="utf-8")
    return DriveDictionary.load(path, 1)


def test_entries_give_access_and_ranges() -> None:
    fe_timeout = EPOS4.entry(0x6066)
    assert fe_timeout is not None and fe_timeout.fixed and (fe_timeout.lo, fe_timeout.hi) == (0, 0)
    assert fe_timeout.refuses(20) == "outside what the drive accepts: fixed at 0"
    assert fe_timeout.refuses(0) is None
    actual = EPOS4.entry(0x6064)
    assert actual is not None and not actual.writable and "read-only" in (actual.refuses(0) or "")
    decel = EPOS4.entry(0x6085)
    assert decel is not None and (decel.lo, decel.hi) == (1, 2**32 - 1) and decel.declared
    heartbeat = EPOS4.entry(0x1017)  # no limits in the file: the data type's range
    assert heartbeat is not None and (heartbeat.lo, heartbeat.hi) == (0, 65535)
    assert heartbeat.allowed() == "[0...65535] (UNSIGNED16)"
    assert EPOS4.entry(0x2FFF) is None and EPOS4.entry(0x6066, 1) is None
    assert EPOS4.identity().vendor == 0xFB


def test_factory_pdos_and_units_of_the_epos4() -> None:
    on = [k for k in range(4) if EPOS4.pdo_on_at_boot(receive=False, k=k)]
    assert on == [0, 1, 2]  # TPDO4 maps nothing
    assert EPOS4.unit(0x60A9) is not None and EPOS4.unit(0x60A9).describe() == "rev/min (0x00B44700)"  # type: ignore[union-attr]
    assert EPOS4.unit(0x60AA).describe() == "rpm/s (0x00C00300)"  # type: ignore[union-attr]
    assert EPOS4.position_problem() is None and EPOS4.factor_problems() == []


def test_speeds_and_accelerations_in_the_drives_units() -> None:
    # 2000 mm/s^2 x 0.5 motor rev/mm = 1000 rev/s^2 = 60000 rpm/s
    assert accel_to_drive(EPOS4, LINEAR, 2000.0) == 60000
    assert speed_to_drive(EPOS4, LINEAR, 20.0) == 600  # 10 rev/s = 600 rpm
    geared = dataclasses.replace(LINEAR, gear_ratio=4.0)  # encoder on the output of a 4:1 gear
    assert accel_to_drive(EPOS4, geared, 2000.0) == 240000
    rotary = DriveConfig(node_id=2, kind="rotary", counts_per_unit=16384 / 360, encoder_counts_per_rev=16384)
    assert accel_to_drive(EPOS4, rotary, 36000.0) == 6000  # 100 rev/s^2
    # no unit objects: CiA 402's default, encoder counts
    assert accel_to_drive(SIM, LINEAR, 2000.0) == 2000 * 8192
    with pytest.raises(UnitError, match=r"0x60AA .*rpm/s.*encoder_counts_per_rev"):
        accel_to_drive(EPOS4, dataclasses.replace(LINEAR, encoder_counts_per_rev=0.0), 2000.0)


def test_unknown_units_and_factors_are_problems_naming_the_object(tmp_path: Path) -> None:
    odd = _edited_dcf(tmp_path, "60AA", "0x00B50300")  # inc/s: not an acceleration
    plan = plan_setup("ante_wire", LINEAR, BusConfig(), odd)
    assert any("0x60AA SI unit acceleration = inc/s (0x00B50300)" in p for p in plan.problems)
    assert not any(w.index == 0x6085 for w in plan.writes)
    metres = _edited_dcf(tmp_path, "60A8", "0xFD010000")  # mm: the cyclic path sends counts
    plan = plan_setup("ante_wire", LINEAR, BusConfig(), metres)
    assert any(p.startswith("node 1 (ante_wire), edited.dcf: 0x60A8 SI unit position") for p in plan.problems)


def test_plan_switches_every_pdo_off_before_mapping() -> None:
    cfg = load_config(CONFIGS / "rig-epos4.toml")
    plan = plan_setup("ante_wire", cfg.drives["ante_wire"], cfg.bus, EPOS4)
    assert plan.ok, plan.problems
    order = [(w.index, w.sub) for w in plan.writes]
    offs = [i for i, w in enumerate(plan.writes) if w.keep_cob]
    switched_off = {plan.writes[i].index for i in offs}
    assert switched_off == {0x1400, 0x1401, 0x1402, 0x1403, 0x1800, 0x1801, 0x1802, 0x1803}
    mapping = [i for i, (index, _) in enumerate(order) if index >> 9 in (0x1600 >> 9, 0x1A00 >> 9)]
    assert max(offs) < min(mapping)
    # count 0 before entries, the count after them, the COB-ID valid last (CiA 301)
    last_cob = len(order) - 1 - order[::-1].index((0x1800, 1))
    assert order.index((0x1A00, 0)) < order.index((0x1A00, 1)) < last_cob
    assert plan.writes[last_cob].value == 0x181
    assert [w.value for w in plan.writes if (w.index, w.sub) == (0x1A00, 0)] == [0, 3]
    assert plan.readback[(0x1801, 1)] == (PDO_INVALID, PDO_INVALID)
    assert plan.readback[(0x6066, 0)][0] == 0  # accepted: the drive's own value is read back
    assert plan.readback[(0x6085, 0)][0] == 60000
    assert any(
        "0x6066:0 Following error time out left at the drive's 0 instead of 20" in n for n in plan.notes
    )
    assert any("RPDO2, RPDO3, RPDO4, TPDO2, TPDO3 on at boot: switched off" in n for n in plan.notes)


_drive = st.builds(
    DriveConfig,
    node_id=st.just(1),
    counts_per_unit=st.floats(1.0, 1e6),
    travel_min=st.floats(-10_000.0, 0.0),
    travel_max=st.floats(0.0, 10_000.0),
    following_error_window=st.floats(0.001, 1000.0),
    following_error_timeout_ms=st.integers(0, 65_535),
    heartbeat_ms=st.integers(1, 10_000),
    quick_stop_decel=st.floats(0.001, 1e6),
    encoder_counts_per_rev=st.floats(0.0, 1e6),
    accept_fixed=st.sampled_from([(), ("0x6066",), ("0x6066", "0x6085", "0x607D")]),
)


@given(drive=_drive)
def test_no_planned_write_is_one_the_drive_refuses(drive: DriveConfig) -> None:
    """Invariant 7 for set-up: every value set-up would send is within what the DCF allows, or
    the plan has a problem naming that object (and set-up sends nothing)."""
    plan = plan_setup("ante_wire", drive, BusConfig(), EPOS4)
    for w in plan.writes:
        entry = EPOS4.entry(w.index, w.sub)
        assert entry is not None and entry.writable
        if not w.keep_cob:
            assert entry.refuses(w.value) is None, (hex(w.index), w.value)
    for p in plan.problems:
        assert p.startswith("node 1 (ante_wire), maxon_epos4_50_15_node1.dcf: 0x")


def test_check_config_passes_the_shipped_rigs_and_names_refused_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("rig-epos4.toml", "rig-4axis.toml", "sim.toml"):
        assert main(["check-config", str(CONFIGS / name)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "0x6066:0 Following error time out left at the drive's 0" in out
    text = (CONFIGS / "rig-epos4.toml").read_text(encoding="utf-8").replace('accept_fixed = ["0x6066"]', "")
    bad = tmp_path / "rig.toml"
    bad.write_text(text, encoding="utf-8")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("0x6066:0 Following error time out = 20 (following_error_timeout_ms = 20 ms)") == 6
    assert "allowed" not in err or "fixed at 0" in err
    assert 'add "0x6066" to drives.retro_mc.accept_fixed' in err


def test_a_missing_safety_object_is_refused_unless_accepted(tmp_path: Path) -> None:
    text = EPOS4_DCF.read_text(encoding="utf-8")
    start = text.index("[6066]\n")
    end = text.index("\n[", start + 1) + 1
    path = tmp_path / "no6066.dcf"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    base = load_config(CONFIGS / "rig-epos4.toml")
    for accept, ok in (((), False), (("0x6066",), True)):
        drives = {
            a: dataclasses.replace(d, eds=str(path), accept_fixed=accept) for a, d in base.drives.items()
        }
        plans, problems = plan_system(base.replace(drives=drives))
        if ok:
            assert problems == []
            notes = plans["ante_mc"].notes
            assert [n for n in notes if "0x6066" in n] == [
                "node 3 (ante_mc), no6066.dcf: 0x6066:0 is missing; accepted by accept_fixed: the drive "
                "detects a blocked or slipping axis with its own following-error time-out"
            ]
            assert all(w.index != 0x6066 for w in plans["ante_mc"].writes)
        else:
            assert len(problems) == 6
            assert problems[2].startswith("drives.ante_mc.eds: node 3 (ante_mc, EPOS4 Module 50/15) cannot")
            assert "0x6066 following error time out is missing" in problems[2]
