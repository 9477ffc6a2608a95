"""A jog returns only once its axis has arrived: the position actual the master read within
``drives.<axis>.position_window`` of the target (simulated time, the whole stack)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

import whih_control as wc
from whih_control.events import read_events

from .conftest import CONFIGS


@pytest.fixture
def cfg() -> wc.Config:
    return wc.load_config(CONFIGS / "sim.toml")


def _budget(cfg: wc.Config, axis: str, delta: float) -> float:
    """The jog's time budget: its profile at the jog speed plus one second."""
    d = cfg.drives[axis]
    v = d.max_speed * cfg.control.jog_speed_fraction
    return abs(delta) / v + 2 * v / d.max_accel + 1.0


def _stick_encoder(robot: wc.Robot, axis: str) -> float:
    """Freeze ``axis``' position actual where it is (the drive's own fault injection)."""
    drives = robot.runtime.drives
    assert drives is not None
    drives.inject(f"encoder-stuck:{axis}@0")
    robot.step(2)
    return robot.status().drives[axis].position


@pytest.mark.parametrize(
    ("axis", "delta"),
    [
        ("ante_wire", 1.0),  # exactly the drive's following-error window: the drive stays quiet
        ("ante_wire", -0.5),
        ("retro_mc", 0.5),
        ("retro_wire_rot", 10.0),
    ],
)
def test_a_jog_on_a_stuck_encoder_raises_naming_axis_target_actual_and_window(
    cfg: wc.Config, tmp_path: Path, axis: str, delta: float
) -> None:
    window = cfg.drives[axis].position_window
    unit = "mm" if cfg.drives[axis].kind == "linear" else "deg"
    with wc.Robot(cfg, clock="simulated", out=tmp_path / "run") as robot:
        robot.enable()
        stuck_at = _stick_encoder(robot, axis)
        target = robot.status().drives[axis].target + delta
        t0 = robot.time
        with pytest.raises(wc.SafetyError) as info:
            robot.jog(axis, delta)
        elapsed = robot.time - t0
        status = robot.status()
    text = str(info.value)
    assert f"jog {axis} {delta:+g}: {axis} did not arrive" in text, text
    assert f"target {target:.3f} {unit}" in text, text
    assert f"position actual {stuck_at:.3f} {unit}" in text, text
    assert f"window +/-{window:g} {unit} (drives.{axis}.position_window)" in text, text
    assert elapsed <= _budget(cfg, axis, delta) + 3 * cfg.period  # within the jog's own budget
    # a refusal of the verb, not a new fault: nothing latched, the jog cancelled
    assert status.phase == "ready" and status.fault == "" and status.jogging == ()
    ends = [e for e in read_events(tmp_path / "run" / "events.jsonl") if e.get("verb") == "jog_end"]
    assert len(ends) == 1 and "did not arrive" in ends[0]["reason"]


def test_the_drives_own_following_error_still_faults_a_stuck_axis(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        _stick_encoder(robot, "ante_wire")
        # 2 mm: the target leaves the drive's 1 mm following-error window
        with pytest.raises(wc.SafetyError, match="0x8611 following error"):
            robot.jog("ante_wire", 2.0)
        status = robot.status()
        assert status.phase == "fault" and "0x8611" in status.fault


@pytest.mark.parametrize(
    ("axis", "delta"),
    [
        ("ante_wire", 1.0),
        ("retro_mc", 2.0),
        ("ante_mc", 0.001),
        ("retro_wire", -0.02),
        ("ante_wire_rot", -45.0),
    ],
)
def test_a_jog_returns_with_its_axis_within_the_window(cfg: wc.Config, axis: str, delta: float) -> None:
    window = cfg.drives[axis].position_window
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        before = robot.status().drives[axis]
        robot.jog(axis, delta)
        after = robot.status().drives[axis]
        assert after.target == pytest.approx(before.target + delta, abs=1e-9)
        assert abs(after.position - after.target) <= window
        assert after.position - before.position == pytest.approx(delta, abs=2 * window)
        robot.step(40)  # arrived means at rest there, not passing through
        assert abs(robot.status().drives[axis].position - after.target) <= window


def test_a_jog_smaller_than_the_window_returns_even_on_a_stuck_encoder(cfg: wc.Config) -> None:
    """What the window states: within it, the axis counts as at its target."""
    window = cfg.drives["ante_wire"].position_window
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        stuck_at = _stick_encoder(robot, "ante_wire")
        robot.jog("ante_wire", window / 2)
        assert abs(robot.status().drives["ante_wire"].target - stuck_at) <= window


def test_a_jog_where_jogging_is_not_allowed_is_refused_at_once(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        robot.start_procedure()
        robot.step()
        before = robot.status()
        assert before.phase == "approach"
        with pytest.raises(wc.ProcedureError, match="jog: not allowed in phase approach"):
            robot.jog("ante_wire", 0.5)
        after = robot.status()
        assert after.cycle - before.cycle <= 2 and after.jogging == ()  # no wait for an arrival


def _drives_data() -> dict[str, Any]:
    return tomllib.loads((CONFIGS / "sim.toml").read_text())


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (0.0, "allowed a number in (0...1000]"),
        (0.0005, "allowed 0.001...1 = 1/counts_per_unit...following_error_window"),
        (1.5, "allowed 0.001...1 = 1/counts_per_unit...following_error_window"),
        (math.nan, "allowed a number in (0...1000]"),
    ],
)
def test_a_bad_position_window_names_the_key_the_value_and_the_range(value: float, allowed: str) -> None:
    data = _drives_data()
    data["drives"]["ante_wire"]["position_window"] = value
    with pytest.raises(wc.ConfigError) as info:
        wc.load_config(data, base_dir=CONFIGS)
    (line,) = [p for p in info.value.problems if p.startswith("drives.ante_wire.position_window")]
    assert f"(got {value}" in line and allowed in line, line


@pytest.mark.parametrize("value", [0.001, 1.0])
def test_a_position_window_from_one_count_to_the_following_error_window_is_accepted(value: float) -> None:
    data = _drives_data()
    data["drives"]["ante_wire"]["position_window"] = value
    assert wc.load_config(data, base_dir=CONFIGS).drives["ante_wire"].position_window == value
