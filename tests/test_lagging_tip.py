"""An antegrade tip that does not follow its drive: the operator's answer, and the coupling fault
that stays for a coupling really lost.

A wire that has left the channel can buckle into a loop at a force far below the deviation
force: its drive feeds wire, the estimate runs ahead of the stuck tip and every frame moves it
back. The procedure rewinds on that lag (``procedure.lag_rewind``), and a rewind that finds the
coupling open closes it with the retrograde wire first (``procedure.recouple_speed``) while the
antegrade wire waits.
"""

from __future__ import annotations

import dataclasses
import random

from tests.procedure_double import Kinematic, config, inputs
from whih_control.api import Robot
from whih_control.config import Config, default_config_path, load_config
from whih_control.procedure import Phase, Procedure
from whih_control.trials import resolve_cohort, trial_seed
from whih_control.types import AxisMotion, Estimate

DT = 0.0025
FRAME = 1.0 / 7.5


class _Imaged(Kinematic):
    """The kinematic double seen through frames: ``imaging_age`` grows between frames and drops
    at each one, where ``lag_per_frame`` moves the ante wire tip back and ``noise`` (1 sigma)
    draws a new error of its estimate, held until the next frame."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.t = 0.0
        self.next_frame = FRAME
        self.lag_per_frame = 0.0
        self.noise = 0.0
        self.error = 0.0
        self.rng = random.Random(1)

    def advance(self, t: float) -> None:
        self.t = t
        if t >= self.next_frame:
            self.next_frame += FRAME
            self.tips["ante_wire"] -= self.lag_per_frame
            if self.noise:
                self.error = self.rng.gauss(0.0, self.noise)

    def estimate(self) -> Estimate:
        est = super().estimate()
        est.imaging_age = 0.1 + (self.t - (self.next_frame - FRAME))
        est.tips["ante_wire"] += self.error
        est.coupling -= self.error
        return est


class _Log:
    """Keeps why the procedure entered each phase."""

    def __init__(self) -> None:
        self.why: list[tuple[str, str]] = []

    def write(self, t: float, kind: str, **fields: object) -> None:
        if kind == "phase":
            self.why.append((str(fields["to"]), str(fields.get("why", ""))))

    def rewinds(self) -> list[str]:
        return [why for to, why in self.why if to == Phase.HAND_IN_HAND_REWIND.value]


def _hand_in_hand(**kw: float) -> tuple[Procedure, _Imaged, float]:
    cfg = config(**kw)
    proc = Procedure(cfg, log=_Log(), auto_confirm=True)  # type: ignore[arg-type]
    plant = _Imaged(cfg)
    proc.enable(True)
    proc.tick(0.0, inputs(plant))
    proc.start()
    t = DT
    while t < 120.0 and proc.phase is not Phase.HAND_IN_HAND_ANTE_FOLLOW:
        plant.advance(t)
        plant.step(proc.tick(t, inputs(plant)), DT)
        t += DT
    assert proc.phase is Phase.HAND_IN_HAND_ANTE_FOLLOW, (proc.phase, proc.reason)
    return proc, plant, t


def _run_until_rewind(proc: Procedure, plant: _Imaged, t: float, seconds: float) -> float:
    end = t + seconds
    while t < end and proc.phase is not Phase.HAND_IN_HAND_REWIND and not proc.done:
        plant.advance(t)
        plant.step(proc.tick(t, inputs(plant)), DT)
        t += DT
    return t


def test_a_tip_the_frames_keep_finding_behind_its_drive_is_rewound() -> None:
    proc, plant, t = _hand_in_hand()
    plant.lag_per_frame = 0.35  # as P14 seed 8 and S0084 showed: 0.3-0.5 mm a frame
    t0 = t
    t = _run_until_rewind(proc, plant, t, 3.0)
    assert proc.phase is Phase.HAND_IN_HAND_REWIND
    assert proc._log.rewinds()[0].startswith("lag:")  # type: ignore[union-attr]
    assert t - t0 < 3 * FRAME  # within a few frames, before the coupling runs away


def test_a_lag_rewind_can_be_switched_off() -> None:
    proc, plant, t = _hand_in_hand(lag_rewind=0.0)
    plant.lag_per_frame = 0.35
    _run_until_rewind(proc, plant, t, 1.0)
    # only the coupling running past what the step planned ends it, later
    assert not any(why.startswith("lag:") for why in proc._log.rewinds())  # type: ignore[union-attr]


def test_imaging_noise_alone_does_not_rewind() -> None:
    """Frames that scatter the tip estimate (0.1 mm, about what the 0.2 mm imaging noise leaves
    after the filter) over 30 s of hand-in-hand never add up to a lag."""
    proc, plant, t = _hand_in_hand()
    plant.noise = 0.1
    _run_until_rewind(proc, plant, t, 30.0)
    assert proc.rewinds == 0, proc._log.rewinds()  # type: ignore[union-attr]
    assert proc.steps > 5


def test_a_rewind_that_finds_the_coupling_open_closes_it_with_the_retro_wire_first() -> None:
    proc, plant, t = _hand_in_hand()
    p = proc._p
    # a frame finds the ante tip 1.3 mm further back than thought, then the force of a deviation
    plant.tips["ante_wire"] = plant.tips["retro_wire"] - 1.8
    plant.force["ante_wire"] = p.deviation_force_ratio * plant.cfg.drives["ante_wire"].force_alarm
    obj = proc.tick(t, inputs(plant))
    assert proc.phase is Phase.HAND_IN_HAND_REWIND
    ante, retro = obj.axes["ante_wire"], obj.axes["retro_wire"]
    assert ante.motion is AxisMotion.MOVE_TO and ante.speed == 0.0  # waits
    assert retro.motion is AxisMotion.MOVE_TO and retro.speed == p.recouple_speed
    assert retro.target <= plant.tips["ante_wire"] + p.coupling_target
    plant.force["ante_wire"] = 0.0
    worst = plant.tips["retro_wire"] - plant.tips["ante_wire"]
    start_ante = plant.tips["ante_wire"]
    while proc.phase is Phase.HAND_IN_HAND_REWIND and t < 60.0:
        plant.step(obj, DT)
        t += DT
        c = plant.tips["retro_wire"] - plant.tips["ante_wire"]
        assert c <= worst + 1e-9  # it never opens further
        if c > p.coupling_target + p.position_tolerance:
            assert plant.tips["ante_wire"] == start_ante  # the ante wire waits until it is closed
        worst = min(worst, max(c, p.coupling_target + p.position_tolerance))
        obj = proc.tick(t, inputs(plant))
    assert proc.phase is Phase.HAND_IN_HAND_RETRO_STEP
    c = plant.tips["retro_wire"] - plant.tips["ante_wire"]
    assert 0.0 <= c <= p.coupling_target + p.position_tolerance  # it ends closed
    assert plant.tips["ante_wire"] <= start_ante - p.rewind_distance + p.position_tolerance


def test_a_rewind_ends_closed_where_a_frame_put_the_ante_tip_behind_its_target() -> None:
    proc, plant, t = _hand_in_hand()
    p = proc._p
    plant.force["ante_wire"] = p.deviation_force_ratio * plant.cfg.drives["ante_wire"].force_alarm
    obj = proc.tick(t, inputs(plant))
    assert proc.phase is Phase.HAND_IN_HAND_REWIND
    plant.force["ante_wire"] = 0.0
    target = proc._target["ante_wire"]
    plant.tips["ante_wire"] = target - 1.0  # seen 1 mm behind where the rewind takes it
    plant.blocked = {"ante_wire"}
    while proc.phase is Phase.HAND_IN_HAND_REWIND and t < 60.0:
        obj = proc.tick(t, inputs(plant))
        plant.step(obj, DT)
        t += DT
    c = plant.tips["retro_wire"] - plant.tips["ante_wire"]
    assert 0.0 <= c <= p.coupling_target + p.position_tolerance + 1e-9


# --------------------------------------------------------------------------------------------
# a whole simulated procedure: the smallest case found that ran into it


def _s0084(**procedure: float) -> Config:
    """Case S0084 of synthetic:300 (J-CTO and length drawn like the paper's), seed 0: its
    antegrade wire leaves the channel 15.7 s in and buckles into a loop at 0.35 N."""
    case = next(c for c in resolve_cohort("synthetic:300") if c.case_id == "S0084")
    cfg = case.apply(load_config(default_config_path()))
    cfg = cfg.replace(procedure=dataclasses.replace(cfg.procedure, max_time_s=60.0, **procedure))
    return cfg.replace(sim=dataclasses.replace(cfg.sim, enabled=True, seed=trial_seed(case.seed, 0)))


def test_a_buckled_lagging_ante_wire_is_rewound_and_the_case_crosses() -> None:
    """On the strategy before lag_rewind and recouple_speed this run ended in a coupling fault
    at 17.9 s (estimated coupling 2.01 mm, true 2.77 mm)."""
    cfg = _s0084()
    with Robot(cfg, clock="simulated", seed=cfg.sim.seed, auto_confirm=True) as robot:
        robot.enable()
        result = robot.run_procedure()
    assert result.outcome == "complete", (result.outcome, result.reason)
    assert result.crossed
    assert not result.faults
    assert result.rewinds >= 1


def test_without_the_operator_answer_the_coupling_fault_still_trips_on_a_coupling_really_lost() -> None:
    """The same run with the lag rewind off and the retro wire at wire speed: the coupling is
    really lost (the plant's true tips say so at the fault) and the supervisor faults on it."""
    wire_speed = load_config(default_config_path()).procedure.wire_speed
    cfg = _s0084(lag_rewind=0.0, recouple_speed=wire_speed)
    with Robot(cfg, clock="simulated", seed=cfg.sim.seed, auto_confirm=True) as robot:
        robot.enable()
        result = robot.run_procedure()
        plant = robot.runtime.plant
        assert plant is not None
        c_true = plant.tips()["retro_wire"] - plant.tips()["ante_wire"]
    assert result.outcome == "fault"
    assert "wire coupling" in result.reason
    assert c_true > cfg.procedure.coupling_max
