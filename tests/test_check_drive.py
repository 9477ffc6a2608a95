"""Capability check against real vendor object dictionaries and the shipped simulated drive."""

from __future__ import annotations

from pathlib import Path

import pytest
from canopen.objectdictionary import import_od

from firmware_iface.check import check_drive
from firmware_iface.spec import BUILTIN_EDS_DIR
from tests.conftest import EDS_DIR, EPOS4_DCF

EPOS4 = EPOS4_DCF
SAMPLE = EDS_DIR / "cia402_sample.eds"
FAULHABER = EDS_DIR / "faulhaber_mcbl300x_co.eds"


@pytest.mark.parametrize(
    "path", [EPOS4, BUILTIN_EDS_DIR / "maxon_epos4_50_15_node1.dcf", BUILTIN_EDS_DIR / "whih_sim_drive.eds"]
)
def test_capable_drives_pass(path: Path) -> None:
    report = check_drive(path)
    assert report.ok, report.problems
    assert report.problems == ()


def test_epos4_name() -> None:
    assert check_drive(EPOS4).node_name == "EPOS4 Module 50/15"


def test_sample_fails_only_on_heartbeat_consumer() -> None:
    report = check_drive(SAMPLE)
    assert not report.ok
    assert len(report.problems) == 1
    assert report.problems[0].startswith("0x1016")
    assert "the drive cannot stop itself when the master dies" in report.problems[0]
    # its 0x6502 has no value: left to the read-back of 0x6061 at set-up
    assert any(n.startswith("0x6502") for n in report.notes)


def test_sample_passes_when_heartbeat_consumer_waived() -> None:
    report = check_drive(SAMPLE, accept_no_heartbeat_consumer=True)
    assert report.ok
    assert any("0x1016" in n and "accepted" in n for n in report.notes)


def test_faulhaber_fails_on_csp_and_each_missing_object() -> None:
    report = check_drive(FAULHABER)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "0x6502 supported drive modes (=0x25, modes [1, 3, 6])" in text
    assert "CSP" in text
    for index in ("0x6077", "0x605A", "0x6007", "0x6065", "0x6066"):
        assert sum(p.startswith(index) for p in report.problems) == 1, index
    assert not any(p.startswith("0x1016") for p in report.problems)
    assert len(report.problems) == 6


def test_accepts_loaded_object_dictionary() -> None:
    od = import_od(str(FAULHABER))
    assert check_drive(od).problems == check_drive(FAULHABER).problems


def test_missing_objects_are_named() -> None:
    od = import_od(str(BUILTIN_EDS_DIR / "whih_sim_drive.eds"))
    del od[0x6085]
    report = check_drive(od)
    assert report.problems == (
        "0x6085 quick stop deceleration is missing: the quick-stop ramp could not be set",
    )


def test_unloadable_file_is_a_problem(tmp_path: Path) -> None:
    report = check_drive(tmp_path / "nope.eds")
    assert not report.ok
    assert "nope.eds" in report.problems[0]
