"""The WHIH procedure machine: scripted paths, bounds, faults, and properties over its inputs."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.procedure_double import Kinematic, config, inputs, run
from whih_control.errors import ProcedureError
from whih_control.events import EventLog, read_events
from whih_control.procedure import MOTION_PHASES, TERMINAL_PHASES, Phase, Procedure, _name
from whih_control.types import AxisMotion, Reason, Verdict

DT = 0.01
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
OPERATOR_ACTIONS = ("start", "confirm", "pause", "resume", "abort", "acknowledge")


def started(cfg_kw: dict[str, float | int | bool] | None = None, **kw: bool) -> tuple[Procedure, Kinematic]:
    cfg = config(**(cfg_kw or {}))
    proc = Procedure(cfg, **kw)
    plant = Kinematic(cfg)
    proc.enable(True)
    proc.tick(0.0, inputs(plant))
    proc.start()
    return proc, plant


def run_until(proc: Procedure, plant: Kinematic, phase: Phase, t: float, t_end: float, **kw: bool) -> float:
    while t < t_end and proc.phase is not phase and not proc.done:
        plant.step(proc.tick(t, inputs(plant, **kw)), DT)
        t += DT
    assert proc.phase is phase, f"stuck in {proc.phase} at t={t:.2f} ({proc.reason})"
    return t


# ---------------------------------------------------------------------------- happy path


def test_happy_path_crosses_and_completes_within_bounds(tmp_path: Path) -> None:
    cfg = config()
    log = EventLog(tmp_path / "events.jsonl")
    proc = Procedure(cfg, log=log, auto_confirm=True)
    plant = Kinematic(cfg)
    proc.enable(True)
    t = 0.0
    proc.tick(t, inputs(plant))
    proc.start()
    seen: list[Phase] = [proc.phase]
    modes: dict[Phase, set[tuple[str, AxisMotion]]] = {}
    while t < cfg.procedure.max_time_s and not proc.done:
        obj = proc.tick(t, inputs(plant))
        if not seen or seen[-1] is not proc.phase:
            seen.append(proc.phase)
        assert obj.motion_allowed == (proc.phase in MOTION_PHASES)
        assert obj.phase == proc.phase.value
        modes.setdefault(proc.phase, set()).update((a, o.motion) for a, o in obj.axes.items())
        # device order while hand in hand: ante MC <= ante wire <= retro wire <= retro MC
        if proc.phase.value.startswith("hand_in_hand"):
            tips = plant.tips
            assert tips["ante_mc"] <= tips["ante_wire"] + 1e-9
            assert tips["ante_wire"] <= tips["retro_wire"] + 1e-9
            assert tips["retro_wire"] <= tips["retro_mc"] + 1e-9
            assert 0.0 <= tips["retro_wire"] - tips["ante_wire"] <= cfg.procedure.coupling_max + 1e-9
        plant.step(obj, DT)
        t += DT
    log.close(t)
    assert proc.phase is Phase.COMPLETE and proc.outcome == "complete" and proc.done and proc.crossed
    head = [p for p in seen if not p.value.startswith("hand_in_hand")][:7]
    assert head == [
        Phase.PREFLIGHT,
        Phase.CALIBRATE,
        Phase.READY,
        Phase.APPROACH,
        Phase.UNTIP,
        Phase.ALIGN,
        Phase.CROSSED,
    ]
    assert seen[-2:] == [Phase.WITHDRAW, Phase.COMPLETE]
    p = cfg.procedure
    # the ante wire walked from ~12 mm to L + margin one step at a time
    assert 15 <= proc.steps <= 30
    assert plant.tips["ante_wire"] >= p.lesion_length + p.distal_margin
    assert t < 60.0
    assert ("ante_mc", AxisMotion.GAP_FOLLOW) in modes[Phase.HAND_IN_HAND_RETRO_STEP]
    assert ("ante_wire", AxisMotion.COUPLE_FOLLOW) in modes[Phase.HAND_IN_HAND_ANTE_FOLLOW]
    assert ("retro_wire", AxisMotion.MOVE_TO) in modes[Phase.HAND_IN_HAND_RETRO_STEP]
    # withdraw pulled the retrograde devices back, the ante wire stayed
    assert plant.tips["retro_mc"] > p.lesion_length + p.withdraw_distance
    events = read_events(tmp_path / "events.jsonl")
    phases = [e["to"] for e in events if e["kind"] == "phase"]
    assert phases[0] == "preflight" and phases[-1] == "complete"
    assert "hand_in_hand_verify" in phases
    actions = [e["action"] for e in events if e["kind"] == "operator"]
    assert "enable" in actions and "start" in actions


def test_hardware_gates_wait_for_confirm() -> None:
    proc, plant = started({"confirm_crossing": True}, auto_confirm=False)
    t = run_until(proc, plant, Phase.READY, 0.01, 5.0)
    t = run(proc, plant, t, t + 5.0)
    assert proc.phase is Phase.READY  # no confirm: waits
    assert not proc.tick(t, inputs(plant)).motion_allowed
    assert proc.jog_allowed()
    proc.confirm()
    assert proc.phase is Phase.APPROACH and not proc.jog_allowed()
    t = run_until(proc, plant, Phase.CROSSED, t, 200.0)
    t = run(proc, plant, t, t + 5.0)
    assert proc.phase is Phase.CROSSED and proc.crossed
    proc.confirm()
    run_until(proc, plant, Phase.COMPLETE, t, t + 60.0)


def test_confirm_refused_without_enable() -> None:
    proc, plant = started()
    t = run_until(proc, plant, Phase.READY, 0.01, 5.0)
    proc.tick(t, inputs(plant, held=False))
    with pytest.raises(ProcedureError, match="enable released"):
        proc.confirm()
    assert proc.phase is Phase.READY


# ---------------------------------------------------------------------------- holds


@pytest.mark.parametrize("cause", ["imaging", "held", "ready", "api"])
def test_hold_causes_pause_and_resume_needs_enable(cause: str) -> None:
    proc, plant = started(auto_confirm=False)
    t = run_until(proc, plant, Phase.READY, 0.01, 5.0)
    proc.confirm()
    t = run(proc, plant, t, t + 1.0)
    assert proc.phase is Phase.APPROACH
    bad = {cause: False} if cause != "api" else {}
    if cause == "api":
        proc.enable(False)
    obj = proc.tick(t, inputs(plant, **bad))
    assert proc.phase is Phase.PAUSED and not obj.motion_allowed
    assert proc.resume_target is Phase.APPROACH and proc.jog_allowed()
    with pytest.raises(ProcedureError):
        proc.resume()
    assert proc.phase is Phase.PAUSED
    t = run(proc, plant, t + DT, t + 2.0, **bad)
    assert proc.phase is Phase.PAUSED  # no automatic resume on hardware
    proc.enable(True)
    proc.tick(t, inputs(plant))
    proc.resume()
    assert proc.phase is Phase.APPROACH
    assert proc.tick(t + DT, inputs(plant)).motion_allowed


def test_auto_pause_resumes_itself_in_simulation_but_operator_pause_does_not() -> None:
    proc, plant = started(auto_confirm=True)
    t = run_until(proc, plant, Phase.UNTIP, 0.01, 30.0)
    proc.tick(t, inputs(plant, imaging=False))
    assert proc.phase is Phase.PAUSED
    proc.tick(t + DT, inputs(plant))
    assert proc.phase is Phase.UNTIP
    proc.pause()
    t = run(proc, plant, t + 2 * DT, t + 2.0)
    assert proc.phase is Phase.PAUSED
    proc.resume()
    run_until(proc, plant, Phase.COMPLETE, t, t + 100.0)


def test_phase_time_survives_pause() -> None:
    proc, plant = started({"phase_timeout_s": 3.0, "max_time_s": 1000.0}, auto_confirm=True)
    plant.blocked = {"ante_mc", "retro_mc"}  # approach never progresses (no force: no stall either)
    t = run_until(proc, plant, Phase.APPROACH, 0.01, 5.0)
    t0 = t
    t = run(proc, plant, t, t + 2.0)
    proc.pause()
    t = run(proc, plant, t, t + 10.0)  # paused time does not count
    assert proc.phase is Phase.PAUSED
    proc.resume()
    t = run(proc, plant, t, t + 5.0)
    assert proc.phase is Phase.ABORTED and "phase_timeout_s" in proc.reason
    assert t - t0 < 2.0 + 10.0 + 1.5


# ---------------------------------------------------------------------------- faults


def test_fault_latches_until_cause_gone_and_acknowledged_then_never_moves() -> None:
    proc, plant = started(auto_confirm=True)
    t = run_until(proc, plant, Phase.ALIGN, 0.01, 30.0)
    obj = proc.tick(t, inputs(plant, fault=True))
    assert proc.phase is Phase.FAULT and not obj.motion_allowed and proc.outcome == "fault"
    assert not proc.done and "drive fault" in proc.reason and not proc.jog_allowed()
    t = run(proc, plant, t + DT, t + 1.0)  # cause gone but no acknowledge: still latched
    assert proc.phase is Phase.FAULT
    proc.tick(t, inputs(plant, fault=True))
    with pytest.raises(ProcedureError, match="cause still present"):
        proc.acknowledge()
    assert proc.phase is Phase.FAULT
    for action in ("start", "confirm", "pause", "resume"):
        with pytest.raises(ProcedureError):
            getattr(proc, action)()
        assert proc.phase is Phase.FAULT
    proc.tick(t + DT, inputs(plant))
    proc.acknowledge()
    assert proc.phase is Phase.PAUSED and proc.resume_target is Phase.ALIGN
    t = run(proc, plant, t + 2 * DT, t + 1.0)
    assert proc.phase is Phase.PAUSED  # after a fault, only the operator resumes
    proc.resume()
    run_until(proc, plant, Phase.COMPLETE, t, t + 100.0)


def test_fault_before_motion_acknowledges_to_ready_or_idle() -> None:
    proc, plant = started()
    proc.tick(0.01, inputs(plant, fault=True))
    assert proc.phase is Phase.FAULT
    proc.tick(0.02, inputs(plant))
    proc.acknowledge()
    assert proc.phase is Phase.IDLE
    proc.start()
    t = run_until(proc, plant, Phase.READY, 0.03, 5.0)
    proc.tick(t, inputs(plant, verdict=Verdict(Reason.DRIVE_FAULT, "node 3", fault=True)))
    assert proc.phase is Phase.FAULT and "DRIVE_FAULT" in proc.reason
    # the supervisor's own latch is not a cause
    proc.tick(t + DT, inputs(plant, verdict=Verdict(Reason.LATCHED, "", fault=True)))
    proc.acknowledge()
    assert proc.phase is Phase.READY


def test_estop_faults() -> None:
    proc, plant = started(auto_confirm=True)
    t = run_until(proc, plant, Phase.APPROACH, 0.01, 5.0)
    i = inputs(plant)
    i.operator.estop = True
    assert not proc.tick(t, i).motion_allowed
    assert proc.phase is Phase.FAULT and proc.reason == "emergency stop"


def test_exception_in_a_guard_latches_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    # the guards are bound when the procedure is built: break the method before that
    broken = [False]
    untipped = Procedure._g_untipped

    def guard(self: Procedure) -> bool:
        if broken[0]:
            raise ZeroDivisionError("broken guard")
        return untipped(self)

    monkeypatch.setattr(Procedure, "_g_untipped", guard)
    proc, plant = started(auto_confirm=True)
    t = run_until(proc, plant, Phase.UNTIP, 0.01, 30.0)
    broken[0] = True
    obj = proc.tick(t, inputs(plant))
    assert proc.phase is Phase.FAULT and not obj.motion_allowed
    assert "ZeroDivisionError" in proc.reason


# ---------------------------------------------------------------------------- bounds


def test_both_mcs_stalled_with_gap_above_window_is_uncrossable() -> None:
    proc, plant = started({"stall_time_s": 1.0}, auto_confirm=True)
    t = run_until(proc, plant, Phase.APPROACH, 0.01, 5.0)
    plant.blocked = {"ante_mc", "retro_mc"}
    plant.force["ante_mc"] = 2.5  # above force_alarm = 2 N
    plant.force["retro_mc"] = 2.5
    t = run(proc, plant, t, t + 1.5)
    assert proc.phase is Phase.ABORTED and proc.reason.startswith("uncrossable")
    assert "ante_mc" in proc.reason and "retro_mc" in proc.reason and proc.outcome == "aborted"


def test_one_stalled_mc_leaves_the_gap_to_the_other() -> None:
    proc, plant = started({"stall_time_s": 1.0}, auto_confirm=True)
    t = run_until(proc, plant, Phase.APPROACH, 0.01, 5.0)
    plant.blocked = {"ante_mc"}
    plant.force["ante_mc"] = 2.5
    t = run(proc, plant, t, t + 1.5)
    assert proc.phase is Phase.APPROACH
    obj = proc.tick(t, inputs(plant))
    assert "ante_mc" not in obj.axes and obj.axes["retro_mc"].target < plant.tips["retro_mc"]


def test_stall_with_gap_in_window_proceeds() -> None:
    proc, plant = started({"stall_time_s": 0.5}, auto_confirm=True)
    t = run_until(proc, plant, Phase.APPROACH, 0.01, 5.0)
    t = run(proc, plant, t, t + 5.0)  # gap now ~11.6
    assert proc.phase is Phase.APPROACH and plant.estimate().gap < 20.0
    plant.blocked = {"ante_mc", "retro_mc"}
    plant.force["ante_mc"] = plant.force["retro_mc"] = 3.0
    run_until(proc, plant, Phase.UNTIP, t, t + 1.0)


def test_deviation_rewinds_and_bounds_rewinds() -> None:
    proc, plant = started({"max_rewinds": 2, "rewinds_per_10mm": 0.0}, auto_confirm=True)
    t = run_until(proc, plant, Phase.HAND_IN_HAND_ANTE_FOLLOW, 0.01, 40.0)
    plant.force["ante_wire"] = 1.4  # >= 0.8 x 1.5 N
    proc.tick(t, inputs(plant))
    assert proc.phase is Phase.HAND_IN_HAND_REWIND and proc.rewinds == 1
    before = dict(plant.tips)
    # the retro wire also closes what the coupling ran over its target
    lost = max(0.0, before["retro_wire"] - before["ante_wire"] - proc._p.coupling_target)
    plant.force["ante_wire"] = 0.0
    t = run_until(proc, plant, Phase.HAND_IN_HAND_RETRO_STEP, t + DT, t + 5.0)
    d = proc._p.rewind_distance
    assert plant.tips["ante_wire"] == pytest.approx(before["ante_wire"] - d, abs=0.15)
    # it follows the ante wire back and ends with the coupling closed
    p = proc._p
    assert plant.tips["retro_wire"] == pytest.approx(before["retro_wire"] - d - lost, abs=0.25)
    assert (
        0.0 <= plant.tips["retro_wire"] - plant.tips["ante_wire"] <= p.coupling_target + p.position_tolerance
    )
    assert proc._step == proc._p.step / 2  # the next step is shorter
    plant.force["ante_wire"] = 1.4  # the deviation persists
    t = run(proc, plant, t, t + 30.0)
    assert proc.phase is Phase.ABORTED and proc.reason.startswith("max_rewinds")
    assert proc.rewinds == 2


def test_max_steps_aborts() -> None:
    proc, plant = started({"max_steps": 3}, auto_confirm=True)
    run(proc, plant, 0.01, 200.0)
    assert proc.phase is Phase.ABORTED and proc.reason.startswith("max_steps") and proc.steps == 3


@pytest.mark.parametrize("blocked", [{"ante_mc", "retro_mc"}, {"retro_wire"}, {"ante_wire"}])
def test_no_progress_aborts_within_bounds(blocked: set[str]) -> None:
    """No livelock: an estimate that never progresses ends in aborted within the time bounds."""
    proc, plant = started({"phase_timeout_s": 20.0, "max_time_s": 60.0}, auto_confirm=True)
    plant.blocked = blocked
    t = run(proc, plant, 0.01, 200.0)
    assert proc.phase is Phase.ABORTED
    assert "phase_timeout_s" in proc.reason or "max_time_s" in proc.reason
    assert t <= 60.0 + 2 * DT


def test_max_time_bounds_paused() -> None:
    proc, plant = started({"max_time_s": 10.0}, auto_confirm=True)
    t = run_until(proc, plant, Phase.APPROACH, 0.01, 5.0)
    proc.pause()
    t = run(proc, plant, t, 100.0)
    assert proc.phase is Phase.ABORTED and "max_time_s" in proc.reason and t <= 10.0 + 3 * DT


def test_abort_from_anywhere_and_terminal_is_final() -> None:
    proc, plant = started(auto_confirm=True)
    t = run_until(proc, plant, Phase.HAND_IN_HAND_RETRO_STEP, 0.01, 40.0)
    proc.abort("operator decision")
    assert proc.phase is Phase.ABORTED and proc.reason == "operator abort: operator decision"
    with pytest.raises(ProcedureError):
        proc.abort()
    assert proc.reason == "operator abort: operator decision"
    assert not proc.tick(t, inputs(plant)).motion_allowed
    assert proc.phase is Phase.ABORTED


def test_invalid_time_rejected() -> None:
    proc, plant = started()
    with pytest.raises(ValueError, match="t \\(=nan\\)"):
        proc.tick(math.nan, inputs(plant))


# ---------------------------------------------------------------------------- properties

_SMALL = {"phase_timeout_s": 8.0, "max_time_s": 60.0, "stall_time_s": 0.5}


def _force_phase(proc: Procedure, phase: Phase, resume: Phase) -> None:
    proc._machine.set_state(_name(phase), model=proc._model)
    proc._resume = resume


@pytest.mark.timeout(7200 if THOROUGH else 300)
@given(
    phase=st.sampled_from(list(Phase)),
    action=st.sampled_from(OPERATOR_ACTIONS),
    resume=st.sampled_from(sorted(MOTION_PHASES)),
    held=st.booleans(),
    api_held=st.booleans(),
    fault=st.booleans(),
    imaging=st.booleans(),
    ready=st.booleans(),
)
def test_every_state_trigger_pair_is_a_valid_state_or_procedure_error(
    phase: Phase,
    action: str,
    resume: Phase,
    held: bool,
    api_held: bool,
    fault: bool,
    imaging: bool,
    ready: bool,
) -> None:
    cfg = config()
    proc = Procedure(cfg)
    plant = Kinematic(cfg)
    proc.enable(api_held)
    proc.tick(0.0, inputs(plant, held=held, fault=fault, imaging=imaging, ready=ready))
    _force_phase(proc, phase, resume)
    try:
        getattr(proc, action)()
    except ProcedureError:
        assert proc.phase is phase
        return
    after = proc.phase
    assert isinstance(after, Phase)
    assert phase not in TERMINAL_PHASES  # nothing leaves an end
    if after in MOTION_PHASES:
        assert held and api_held and not fault and imaging and ready
    if phase is Phase.FAULT:
        assert after in (Phase.PAUSED, Phase.READY, Phase.IDLE, Phase.ABORTED)
        assert action in ("acknowledge", "abort")
        if action == "acknowledge":
            assert not fault


class ProcedureMachine(RuleBasedStateMachine):
    """Random operator actions, faults, holds, forces and blocked axes against the invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = config(**_SMALL)
        self.t = 0.0
        self.held = True
        self.fault = False
        self.imaging = True
        self.ready = True
        self.t_start = math.nan

    @initialize(auto=st.booleans(), begin=st.booleans(), warmup=st.sampled_from(range(0, 221, 10)))
    def setup(self, auto: bool, begin: bool, warmup: int) -> None:
        self.proc = Procedure(self.cfg, auto_confirm=auto)
        self.plant = Kinematic(self.cfg)
        if begin:
            # most sequences start from somewhere along the good path, so every phase is covered
            self.proc.enable(True)
            self.proc.tick(self.t, inputs(self.plant))
            self.proc.start()
            self.t_start = self.t
            for _ in range(warmup):
                self.t += 0.2
                self.plant.step(self.proc.tick(self.t, inputs(self.plant)), 0.2)
                if self.proc.phase in (Phase.READY, Phase.CROSSED) and not auto:
                    self.proc.confirm()

    @rule(
        flags=st.one_of(
            st.just((True, False, True, True)),  # all good: lets the procedure progress
            st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
        )
    )
    def set_inputs(self, flags: tuple[bool, bool, bool, bool]) -> None:
        self.held, self.fault, self.imaging, self.ready = flags

    @rule(fault=st.booleans())
    def fault_cause(self, fault: bool) -> None:
        self.fault = fault

    @rule(held=st.booleans())
    def enable(self, held: bool) -> None:
        self.proc.enable(held)

    @rule(
        axis=st.sampled_from(["ante_wire", "ante_mc", "retro_wire", "retro_mc"]),
        force=st.sampled_from([0.0, 1.0, 1.3, 2.5, 5.0]),
        block=st.booleans(),
    )
    def disturb(self, axis: str, force: float, block: bool) -> None:
        self.plant.force[axis] = force
        if block:
            self.plant.blocked.add(axis)
        else:
            self.plant.blocked.discard(axis)

    @rule(action=st.sampled_from(OPERATOR_ACTIONS))
    def operate(self, action: str) -> None:
        before = self.proc.phase
        try:
            getattr(self.proc, action)()
        except ProcedureError:
            assert self.proc.phase is before
            return
        after = self.proc.phase
        if action == "start" and math.isnan(self.t_start):
            self.t_start = self.t
        if before is Phase.FAULT:
            assert action in ("acknowledge", "abort")
            assert after not in MOTION_PHASES

    @precondition(lambda self: hasattr(self, "proc"))
    @rule(n=st.integers(1, 100), dt=st.sampled_from([0.05, 0.2]))
    def ticks(self, n: int, dt: float) -> None:
        proc = self.proc
        for _ in range(n):
            before = proc.phase
            self.t += dt
            i = inputs(self.plant, held=self.held, fault=self.fault, imaging=self.imaging, ready=self.ready)
            obj = proc.tick(self.t, i)
            after = proc.phase
            event(f"visited {after.value}")
            if obj.motion_allowed:
                event("motion allowed")
                assert after in MOTION_PHASES
                assert self.held and proc._api_held and not self.fault
                assert self.ready and self.imaging
            if before is Phase.FAULT:
                assert after is Phase.FAULT, "fault must stay latched without an acknowledge"
            if before in TERMINAL_PHASES:
                assert after is before
            if after in MOTION_PHASES and before not in MOTION_PHASES:
                assert before in (Phase.READY, Phase.PAUSED, Phase.CROSSED, Phase.ALIGN), (before, after)
            if self.fault and before is not Phase.IDLE and before not in TERMINAL_PHASES:
                assert after is Phase.FAULT
            if not math.isnan(self.t_start) and after not in (Phase.FAULT, Phase.IDLE):
                # every run ends within its bounds
                assert self.t - self.t_start <= _SMALL["max_time_s"] + 0.41 or proc.done
            self.plant.step(obj, dt)

    @invariant()
    def phase_is_valid(self) -> None:
        if hasattr(self, "proc"):
            assert isinstance(self.proc.phase, Phase)
            assert self.proc.jog_allowed() == (self.proc.phase in (Phase.READY, Phase.PAUSED))
            assert self.proc.done == (self.proc.phase in TERMINAL_PHASES)


TestProcedureMachine = ProcedureMachine.TestCase
# 10,000 sequences under HYPOTHESIS_PROFILE=thorough take minutes, beyond the default 300 s timeout
TestProcedureMachine.pytestmark = [pytest.mark.timeout(7200 if THOROUGH else 300)]


def test_a_fault_is_reachable_from_every_motion_phase() -> None:
    reached: set[Phase] = set()
    for target in sorted(MOTION_PHASES):
        proc, plant = started(auto_confirm=True)
        t = 0.01
        if target is Phase.HAND_IN_HAND_REWIND:
            t = run_until(proc, plant, Phase.HAND_IN_HAND_ANTE_FOLLOW, t, 40.0)
            plant.force["ante_wire"] = 1.4
            proc.tick(t, inputs(plant))
            plant.force["ante_wire"] = 0.0
        t = run_until(proc, plant, target, t, 60.0)
        obj = proc.tick(t, inputs(plant, fault=True))
        assert proc.phase is Phase.FAULT and not obj.motion_allowed
        assert proc.resume_target is target
        reached.add(target)
        # latched through further ticks, cause gone or not
        run(proc, plant, t + DT, t + 0.5)
        assert proc.phase is Phase.FAULT
    assert reached == MOTION_PHASES


class _FailingLog(EventLog):
    """An event log whose disk fills up: every write after ``ok`` writes raises OSError."""

    def __init__(self, path: Path, ok: int) -> None:
        super().__init__(path)
        self.ok = ok

    def write(self, t: float, kind: str, *, sync: bool | None = None, **fields: object) -> int:
        if self.ok <= 0:
            raise OSError(28, "No space left on device")
        self.ok -= 1
        return super().write(t, kind, sync=sync, **fields)


@pytest.mark.parametrize("ok", [2, 3, 4, 5])
def test_a_log_that_cannot_be_written_latches_fault(tmp_path: Path, ok: int) -> None:
    cfg = config()
    log = _FailingLog(tmp_path / "events.jsonl", ok)
    proc = Procedure(cfg, log=log, auto_confirm=True)
    plant = Kinematic(cfg)
    proc.enable(True)
    proc.tick(0.0, inputs(plant, held=True))
    with contextlib.suppress(ProcedureError, OSError):
        proc.start()  # may itself be the first write that fails
    t = run(proc, plant, 0.01, 5.0)
    assert proc.phase is Phase.FAULT, proc.phase
    assert "OSError" in proc.reason
    assert not proc.tick(t, inputs(plant)).motion_allowed
    with pytest.raises(OSError):
        log.close()


def test_faults_and_every_operator_action_are_logged(tmp_path: Path) -> None:
    cfg = config()
    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        proc = Procedure(cfg, log=log, auto_confirm=True)
        plant = Kinematic(cfg)
        proc.enable(True)
        proc.tick(0.0, inputs(plant))
        proc.start()
        t = run_until(proc, plant, Phase.APPROACH, 0.01, 5.0)
        proc.tick(t, inputs(plant, fault=True))
        with pytest.raises(ProcedureError):
            proc.acknowledge()
        proc.tick(t + DT, inputs(plant))
        proc.acknowledge()
        with pytest.raises(ProcedureError):
            proc.confirm()
        proc.abort("enough")
    events = read_events(path)
    faults = [e for e in events if e["kind"] == "fault"]
    assert len(faults) == 1 and faults[0]["text"] == "drive fault" and faults[0]["phase"] == "approach"
    ops = [(e["action"], e["accepted"]) for e in events if e["kind"] == "operator" and "accepted" in e]
    assert ops == [
        ("enable", True),
        ("start", True),
        ("acknowledge", False),
        ("acknowledge", True),
        ("confirm", False),
        ("abort", True),
    ]
    phases = [e["to"] for e in events if e["kind"] == "phase"]
    assert phases == ["preflight", "calibrate", "ready", "approach", "fault", "paused", "aborted"]
    assert all(e["t"] >= 0.0 for e in events)


def test_no_stale_resume_target_after_moving_on() -> None:
    proc, plant = started({"confirm_crossing": True}, auto_confirm=True)
    t = run_until(proc, plant, Phase.HAND_IN_HAND_RETRO_STEP, 0.01, 40.0)
    proc.pause()
    assert proc.resume_target is Phase.HAND_IN_HAND_RETRO_STEP
    proc.resume()
    t = run_until(proc, plant, Phase.CROSSED, t, 100.0)
    assert proc.resume_target is None
    proc.tick(t, inputs(plant, fault=True))
    assert proc.resume_target is Phase.CROSSED
    proc.tick(t + DT, inputs(plant))
    proc.acknowledge()
    assert proc.phase is Phase.PAUSED  # not back into hand in hand, nor into approach
    proc.resume()
    assert proc.phase is Phase.CROSSED and not proc.tick(t + 2 * DT, inputs(plant)).motion_allowed
    proc.confirm()
    run_until(proc, plant, Phase.COMPLETE, t + 3 * DT, t + 30.0)


def test_a_retro_step_never_plans_the_coupling_past_its_limit() -> None:
    proc, plant = started(auto_confirm=True)
    t = run_until(proc, plant, Phase.HAND_IN_HAND_RETRO_STEP, 0.01, 120.0)
    assert proc.phase is Phase.HAND_IN_HAND_RETRO_STEP
    p = proc._p
    for apart in (0.5, 1.2, 1.9):  # 1.2 mm: as after a rewind; 1.9 mm: no room left at all
        plant.tips["ante_wire"] = plant.tips["retro_wire"] - apart
        proc.tick(t, inputs(plant))
        proc._plan(Phase.HAND_IN_HAND_RETRO_STEP)  # what entering the step plans
        step = proc._target["retro_wire"] - plant.tips["retro_wire"]
        assert 0.0 <= step <= p.step
        assert apart + step <= p.coupling_max * 0.85 + 1e-9 or step == 0.0
    assert step == 0.0


@pytest.mark.parametrize("retro_wire_blocked", [True, False])
def test_a_stalled_ante_mc_does_not_end_the_run_while_the_retrograde_step_progresses(
    retro_wire_blocked: bool,
) -> None:
    """The ante MC stalled with the gap at its ceiling: the retro MC may withdraw past it (the
    supervisor's support rule bounds it), so the step goes on. A retrograde wire that makes no
    progress for stall_time_s is backed off (a rewind, bounded) and, stuck, ends the run."""
    proc, plant = started(auto_confirm=True)
    t = run_until(proc, plant, Phase.HAND_IN_HAND_RETRO_STEP, 0.01, 120.0)
    p = proc._p
    plant.blocked = {"ante_mc", "retro_wire"} if retro_wire_blocked else {"ante_mc"}
    plant.force["ante_mc"] = p.stall_force_ratio * plant.cfg.drives["ante_mc"].force_alarm
    plant.tips["retro_mc"] = plant.tips["ante_mc"] + p.gap_max
    blocked_at = t
    end = t + p.stall_time_s + 1.0
    seen = set()
    while t < end and not proc.done:
        plant.step(proc.tick(t, inputs(plant)), DT)
        seen.add(proc.phase)
        t += DT
    if retro_wire_blocked:
        assert Phase.HAND_IN_HAND_REWIND in seen
        assert proc.rewinds == 1
        assert t - blocked_at >= p.stall_time_s  # a stall is judged over stall_time_s, not at once
        # (this double's blocked wire cannot even back off: the rewind's time bound ends it)
        t = run(proc, plant, t, t + 400.0)
        assert proc.phase is Phase.ABORTED
        assert "phase_timeout_s" in proc.reason or "max_rewinds" in proc.reason, proc.reason
    else:
        assert not proc.done, proc.reason
        assert Phase.HAND_IN_HAND_ANTE_FOLLOW in seen  # the step finished and the train moved on
