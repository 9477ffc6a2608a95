"""The operator's verbs on a robot in simulated time: each a command the cycle answers.

The worked example of the README (pause, fault, acknowledge, resume to complete) runs here.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

import whih_control as wc
from whih_control.events import read_events, verify_log

from .conftest import CONFIGS


@pytest.fixture
def cfg() -> wc.Config:
    return wc.load_config(CONFIGS / "sim.toml")


def _targets(robot: wc.Robot) -> dict[str, float]:
    return {a: d.target for a, d in robot.status().drives.items()}


def _ramp_cycles(cfg: wc.Config) -> int:
    """Cycles the slowest axis needs to come to rest from its max speed at its max_accel."""
    return math.ceil(max(d.max_speed / d.max_accel for d in cfg.drives.values()) / cfg.period) + 2


def test_worked_example_pause_fault_acknowledge_resume_to_complete(cfg: wc.Config, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with wc.Robot(cfg, clock="simulated", out=out) as robot:
        robot.enable()
        robot.start_procedure()
        robot.wait(until="hand_in_hand")

        robot.pause()
        assert robot.status().phase == "paused"
        robot.step(_ramp_cycles(cfg))
        held = _targets(robot)
        for _ in range(round(1.0 / cfg.period)):  # one second of cycles: nothing moves
            robot.step()
            assert _targets(robot) == held
        robot.resume()
        assert robot.status().in_phase("hand_in_hand")

        robot.set_inputs(estop=True)
        status = robot.wait(until="fault", timeout=1.0)
        assert "emergency stop" in status.fault
        with pytest.raises(wc.SafetyError, match="e-stop still pressed"):
            robot.acknowledge()
        robot.set_inputs(estop=False)
        robot.step(_ramp_cycles(cfg))  # the quick stops finish
        robot.acknowledge()
        status = robot.status()
        assert status.phase == "paused" and not status.fault
        assert all(d.state == "OPERATION_ENABLED" for d in status.drives.values())

        robot.resume()
        status = robot.wait()
        assert status.outcome == "complete" and status.crossed

    log = out / "events.jsonl"
    assert verify_log(log).ok
    answers = [(e["verb"], e["answer"]) for e in read_events(log) if e["kind"] == "command"]
    assert answers == [
        ("enable", "accepted"),
        ("start_procedure", "accepted"),
        ("pause", "accepted"),
        ("resume", "accepted"),
        ("set_inputs", "accepted"),
        ("acknowledge", "refused"),
        ("set_inputs", "accepted"),
        ("acknowledge", "accepted"),
        ("resume", "accepted"),
    ]
    refused = next(e for e in read_events(log) if e["kind"] == "command" and e["answer"] == "refused")
    assert "e-stop" in refused["reason"]


def test_verbs_before_enable_are_clear_errors(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        with pytest.raises(wc.ProcedureError, match=r"not enabled.*enable\(\) first"):
            robot.run_procedure()
        with pytest.raises(wc.ProcedureError, match="not enabled"):
            robot.start_procedure()
        with pytest.raises(wc.ProcedureError, match="no fault latched"):
            robot.acknowledge()
        with pytest.raises(wc.ProcedureError, match="pause: not allowed in phase 'idle'"):
            robot.pause()
        assert robot.status().phase == "idle"


def test_refused_verbs_name_the_phase_and_change_nothing(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        with pytest.raises(wc.ProcedureError, match=r"confirm_crossing: not at crossed \(phase ready"):
            robot.confirm_crossing()
        with pytest.raises(wc.ProcedureError, match="resume: not allowed in phase 'ready'"):
            robot.resume()
        with pytest.raises(wc.ProcedureError, match="already enabled"):
            robot.enable()
        robot.start_procedure()
        with pytest.raises(wc.ProcedureError, match="jog: not allowed in phase approach"):
            robot.jog("ante_wire", 0.5)
        with pytest.raises(wc.ProcedureError, match="teleop: not allowed in phase approach"):
            robot.teleop("ante_wire", 0.5)
        assert robot.status().phase == "approach"
        robot.abort()
        assert robot.wait().outcome == "aborted"


def test_bad_arguments_name_the_argument_the_value_and_the_range(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        with pytest.raises(ValueError, match=r"teleop: velocity for ante_wire \(=inf\) must be a number in"):
            robot.teleop("ante_wire", math.inf)
        with pytest.raises(ValueError, match=r"axis \(='nope'\) is not configured"):
            robot.teleop("nope", 0.1)
        with pytest.raises(ValueError, match=r"wait: until \(='nowhere'\) must be a phase name"):
            robot.wait(until="nowhere")
        with pytest.raises(ValueError, match=r"wait: timeout \(=-1\)"):
            robot.wait(timeout=-1)
        with pytest.raises(TypeError, match="set_inputs: estop"):
            robot.set_inputs(estop="yes")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"step: n \(=-1\)"):
            robot.step(-1)


def test_wait_times_out_in_the_robots_clock(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        t0 = robot.time
        with pytest.raises(wc.CommandTimeoutError, match=r"not reached within 0\.5 s"):
            robot.wait(until="withdraw", timeout=0.5)  # nobody started the procedure
        assert 0.5 <= robot.time - t0 < 0.5 + 2 * cfg.period


def test_a_teleop_not_renewed_comes_to_rest_within_its_timeout(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        axis = "retro_wire"
        d = cfg.drives[axis]
        v = -d.max_speed * cfg.control.jog_speed_fraction
        start = robot.status().drives[axis].target
        renew_every = round(0.5 * cfg.operator.teleop_timeout_s / cfg.period)
        for _ in range(4):
            robot.teleop(axis, v)
            robot.step(renew_every)
        assert robot.status().teleop == (axis,)
        moved = robot.status().drives[axis].target - start
        assert moved < -0.5 * abs(v) * 4 * renew_every * cfg.period  # it really went
        # not renewed: within the timeout plus the ramp down, the target stands still
        robot.step(round(cfg.operator.teleop_timeout_s / cfg.period) + _ramp_cycles(cfg))
        assert robot.status().teleop == ()
        rest = robot.status().drives[axis].target
        robot.step(50)
        assert robot.status().drives[axis].target == rest
        # every other axis held where it was
        assert all(
            abs(robot.status().drives[a].target - t) < 1e-9
            for a, t in robot.status().drives.items()
            for t in [t.target]
            if a != axis
        )


def test_a_jog_raises_when_a_fault_latches_during_it(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        rt = robot.runtime
        assert rt.drives is not None
        rt.drives.inject("emcy:ante_wire:0x8611@0")  # arrives with the next cycle's frames
        with pytest.raises(wc.SafetyError, match="0x8611"):
            robot.jog("ante_mc", 1.0)
        status = robot.status()
        assert status.phase == "fault" and status.jogging == ()
        with pytest.raises(wc.ProcedureError, match="jog: not allowed in phase fault"):
            robot.jog("ante_mc", 1.0)


def test_jog_and_teleop_are_refused_at_once_with_the_dead_man_released(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        robot.set_inputs(enable_held=False)
        before = robot.status()
        t0 = robot.time
        with pytest.raises(wc.SafetyError, match=r"jog: ante_mc refused: enable \(dead-man\) released"):
            robot.jog("ante_mc", 0.5)
        with pytest.raises(wc.SafetyError, match=r"teleop: ante_mc refused: enable \(dead-man\) released"):
            robot.teleop("ante_mc", 1.0)
        assert robot.time - t0 < 0.1  # refused, not held until a time-out
        after = robot.status()
        assert after.jogging == () and after.teleop == ()
        assert {a: d.target for a, d in after.drives.items()} == {
            a: d.target for a, d in before.drives.items()
        }
        robot.set_inputs(enable_held=True)
        robot.jog("ante_mc", 0.5)  # held again: the same jog goes


def test_status_is_a_snapshot(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        s1 = robot.status()
        robot.step(10)
        s2 = robot.status()
        assert s2.cycle == s1.cycle + 10 and s2.t > s1.t
        assert s1.phase == "ready" and s1.outcome is None and s1.fault == ""
        assert set(s1.drives) == set(cfg.drives) and math.isfinite(s1.gap)


def test_an_idle_robot_is_bounded_in_time(cfg: wc.Config) -> None:
    cfg = cfg.replace(operator={**cfg.to_dict()["operator"], "wait_timeout_s": 2.0})
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        status = robot.wait(timeout=10.0)  # nobody starts: ready waits 2 s, then aborts
        assert status.outcome == "aborted"
        assert robot.runtime.procedure.reason.startswith("operator.wait_timeout_s: ready waited")


def test_the_readme_worked_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (CONFIGS.parent / "README.md").read_text()
    blocks = readme.split("```python\n")
    example = next(b.split("```")[0] for b in blocks if "robot.acknowledge()" in b.split("```")[0])
    monkeypatch.chdir(CONFIGS.parent)
    example = example.replace('"runs/worked-example"', repr(str(tmp_path / "run")))
    printed: list[str] = []
    exec(compile(example, "README.md", "exec"), {"print": lambda *a: printed.append(" ".join(map(str, a)))})
    assert printed == ["acknowledge refused: e-stop still pressed", "complete True"]
    assert verify_log(tmp_path / "run" / "events.jsonl").ok


def test_in_simulated_time_another_thread_is_refused_not_raced(cfg: wc.Config) -> None:
    with wc.Robot(cfg, clock="simulated") as robot:
        robot.enable()
        caught: list[BaseException] = []

        def other() -> None:
            try:
                robot.pause()
            except BaseException as exc:
                caught.append(exc)

        th = threading.Thread(target=other)
        th.start()
        th.join()
        assert len(caught) == 1 and isinstance(caught[0], wc.WhihError)
        assert "thread that opened it" in str(caught[0])
        assert robot.status().phase == "ready"


def test_acknowledging_a_position_jump_calibrates_again_from_a_new_image(
    cfg: wc.Config, tmp_path: Path
) -> None:
    """After a linear axis' position actual jumped, the encoder-to-tip calibration is not to be
    trusted (the jumped encoder may be the right one now): acknowledge clears it and returns once
    an image taken after it calibrated the axes again, so the resumed procedure moves on what the
    image shows (before: on the jumped encoder, the gap estimate about 8 mm off)."""
    out = tmp_path / "run"
    with wc.Robot(cfg, clock="simulated", out=out, inject=["encoder-jump:ante_mc:-8@5"]) as robot:
        robot.enable()
        robot.start_procedure()
        status = robot.wait(until="fault", timeout=10.0)
        assert "node 3: position actual jumped" in status.fault
        for _ in range(100):  # until every quick stop has finished
            try:
                robot.acknowledge()
                break
            except wc.SafetyError as exc:
                assert "still stopping" in str(exc) or "bus not OK" in str(exc)
                robot.step(10)
        t_ack = robot.status().t
        rt = robot.runtime
        assert rt.core.estimator.calibrated
        assert abs(rt.core.estimator.estimate.gap - rt._true_gap()) < 0.5
        robot.resume()  # at once: the new calibration is there
        assert robot.status().phase != "paused"
    events = read_events(out / "events.jsonl")
    cleared = next(e for e in events if e["kind"] == "calibration_cleared")
    assert cleared["axis"] == "ante_mc"
    again = [e for e in events if e["kind"] == "calibrated" and e["t"] >= cleared["t"]]
    assert again and again[0]["t"] <= t_ack


def test_a_closed_robot_is_not_opened_again(cfg: wc.Config) -> None:
    """Its drives were set up once, by its first enable(): opened again, the new drives ran
    without set-up and enable ended in 'no TPDO1 for 1000001 cycles'."""
    robot = wc.Robot(cfg, clock="simulated")
    with robot:
        robot.enable()
    with pytest.raises(wc.WhihError, match=r"opened and closed before; make a new one"):
        robot.open()
    with wc.Robot(cfg, clock="simulated") as again:  # a new one works
        again.enable()
        assert again.status().phase == "ready"
