"""``max_time`` / ``whih run --max-time`` bound the whole run, enabling included, and
``Robot.enable(timeout=)`` bounds enable alone (simulated time unless marked realtime)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

import whih_control as wc
from whih_control.cli import main
from whih_control.events import read_events
from whih_control.inspect_run import inspect_run

from .conftest import CONFIGS
from .test_realtime import _rt_config

SIM_TOML = CONFIGS / "sim.toml"
DURING_ENABLE = (
    "ended during enable, in phase preflight, before the drives reached OPERATION ENABLED and calibration"
)


@pytest.fixture
def cfg() -> wc.Config:
    return wc.load_config(SIM_TOML)


def _never_calibrated(cfg: wc.Config) -> wc.Config:
    """External imaging with nothing feeding it: enable() waits for a first tip measurement
    until its own bound, ``bus.boot_timeout_s`` + 5 s."""
    return cfg.replace(imaging=dataclasses.replace(cfg.imaging, source="external"))


def test_max_time_ends_a_run_still_enabling_as_a_timeout(cfg: wc.Config, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = wc.simulate(_never_calibrated(cfg), max_time=2.0, out=out)
    assert result.outcome == "timeout" and not result.crossed
    assert result.sim_seconds == pytest.approx(2.0, abs=cfg.period)  # not enable's 10 s
    assert result.reason == f"max_time (=2 s) {DURING_ENABLE}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"] == "timeout" and summary["reason"] == result.reason
    # the run's own bound, not a failure of the drives: no enable failure, no fault
    events = read_events(out / "events.jsonl")
    assert not [e for e in events if e["kind"] in ("enable_failed", "fault", "drive")]
    assert [e["outcome"] for e in events if e["kind"] == "end"] == ["timeout"]
    report = inspect_run(out, plot=False)
    assert report.ok and report.faults == []


def test_a_bound_shorter_than_enabling_ends_the_run_in_enable(cfg: wc.Config) -> None:
    result = wc.simulate(cfg, max_time=0.1)
    # plus the cycle that withdraws the enable
    assert result.outcome == "timeout" and 0.1 <= result.sim_seconds <= 0.1 + 1.5 * cfg.period
    assert result.reason == f"max_time (=0.1 s) {DURING_ENABLE}"


def test_the_time_spent_enabling_counts_against_max_time(cfg: wc.Config) -> None:
    result = wc.simulate(cfg, max_time=1.0)
    assert result.outcome == "timeout"
    assert result.sim_seconds == pytest.approx(1.0, abs=cfg.period)  # enable's 0.24 s included
    assert result.reason == "max_time (=1 s) ended in phase approach"


def test_enable_and_run_with_room_to_spare_runs_the_procedure(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated", auto_confirm=True) as robot:
        result = robot.enable_and_run(max_time=3.0)
        assert result.outcome == "timeout" and robot.status().phase == "approach"
        assert result.sim_seconds == pytest.approx(3.0, abs=cfg.period)


def test_enable_timeout_raises_naming_the_bound_and_the_phase(cfg: wc.Config, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with wc.Robot(_never_calibrated(cfg), clock="simulated", out=out) as robot:
        with pytest.raises(wc.CommandTimeoutError) as info:
            robot.enable(timeout=1.5)
        assert robot.time == pytest.approx(1.5, abs=cfg.period)
    text = (
        "enable: timeout (=1.5 s) ended in phase preflight, before the drives reached OPERATION "
        "ENABLED and calibration"
    )
    assert str(info.value) == text
    failed = [e for e in read_events(out / "events.jsonl") if e["kind"] == "enable_failed"]
    assert [(e["error"], e["text"]) for e in failed] == [("CommandTimeoutError", text)]


@pytest.mark.parametrize("call", ["enable", "enable_and_run"])
def test_an_enable_its_bound_ended_is_withdrawn_nothing_enables_or_moves_after_it(
    cfg: wc.Config, call: str
) -> None:
    """With auto_confirm the procedure would start moving once calibrated: after the bound the
    drives go back to SWITCHED ON and the procedure is aborted, with the bound as its reason."""
    with wc.Robot(cfg, clock="simulated", auto_confirm=True) as robot:
        start = {a: d.position for a, d in robot.status().drives.items()}
        if call == "enable":
            with pytest.raises(wc.CommandTimeoutError):
                robot.enable(timeout=0.1)
        else:
            assert robot.enable_and_run(max_time=0.1).outcome == "timeout"
        robot.step(round(2.0 / cfg.period))  # long after enabling and calibration would be done
        status = robot.status()
        assert status.phase == "aborted"
        assert "0.1 s) ended" in robot.runtime.procedure.reason
        assert all(d.state != "OPERATION_ENABLED" for d in status.drives.values())
        assert {a: d.position for a, d in status.drives.items()} == start


def test_enable_keeps_its_own_bound_when_the_timeout_is_longer(cfg: wc.Config) -> None:
    cfg = _never_calibrated(cfg)
    limit = cfg.bus.boot_timeout_s + 5.0
    with wc.Robot(cfg, clock="simulated") as robot:
        with pytest.raises(wc.CommandTimeoutError, match=rf"calibration: not reached within {limit:g} s"):
            robot.enable(timeout=60.0)
        assert robot.time == pytest.approx(limit, abs=2 * cfg.period)


def test_enable_within_its_timeout_returns_in_ready(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable(timeout=1.0)
        assert robot.status().phase == "ready" and robot.time < 1.0


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "2"])
def test_a_bad_time_bound_names_the_argument_and_sets_nothing_up(cfg: wc.Config, bad: object) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        with pytest.raises(
            ValueError, match=r"^enable: timeout \(=.*\) must be None or a finite number of seconds > 0$"
        ):
            robot.enable(timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(
            ValueError, match=r"^max_time \(=.*\) must be None or a finite number of seconds > 0$"
        ):
            robot.enable_and_run(max_time=bad)  # type: ignore[arg-type]
        assert not robot.runtime.set_up and robot.status().phase == "idle"


def test_enable_and_run_outside_the_with_block_is_a_clear_error(cfg: wc.Config) -> None:
    robot = wc.Robot(cfg, clock="simulated")
    with pytest.raises(wc.WhihError, match=r"enable: the robot is not open"):
        robot.enable_and_run(max_time=1.0)
    with robot:
        robot.enable_and_run(max_time=0.5)
        with pytest.raises(wc.ProcedureError, match=r"enable: already enabled \(phase approach\)"):
            robot.enable_and_run(max_time=0.5)


def test_whih_run_max_time_ends_a_run_still_enabling_as_a_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = SIM_TOML.read_text().replace('source = "sim"', 'source = "external"', 1)
    assert 'source = "external"' in text
    config = tmp_path / "ext.toml"
    config.write_text(text)
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--max-time", "2", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "outcome: timeout" in captured.out
    assert f"reason: max_time (=2 s) {DURING_ENABLE}" in captured.out
    assert "not reached within" not in captured.err and "Traceback" not in captured.err
    summary = json.loads((out / "summary.json").read_text())
    # plus the cycle that withdraws the enable
    assert summary["outcome"] == "timeout" and summary["sim_seconds"] <= 2.0 + 1.5 * 0.0025


@pytest.mark.realtime
@pytest.mark.parametrize("cycle", ["thread", "process"])
def test_real_time_bounds_end_enable(cycle: str) -> None:
    cfg = _never_calibrated(_rt_config(f"whih-bound-{cycle}"))
    with wc.Robot(cfg, clock="real", cycle=cycle) as robot:  # type: ignore[arg-type]
        result = robot.enable_and_run(max_time=0.5)
    assert result.outcome == "timeout"
    assert result.reason == f"max_time (=0.5 s) {DURING_ENABLE}"
    assert result.sim_seconds <= 0.5
    with (
        wc.Robot(cfg, clock="real", cycle=cycle) as robot,
        pytest.raises(  # type: ignore[arg-type]
            wc.CommandTimeoutError, match=r"^enable: timeout \(=0\.3 s\) ended in phase preflight"
        ),
    ):
        robot.enable(timeout=0.3)
