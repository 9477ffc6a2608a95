"""The operator's strategy and the ablations: rotation on the rotary axes, ablations per run."""

from __future__ import annotations

import dataclasses
import math
import tomllib

import pytest

from whih_control.config import ConfigError, load_config
from whih_control.procedure import Phase, Procedure
from whih_control.sim import Plant
from whih_control.sim.cohort import cohort
from whih_control.types import AxisMotion

from .conftest import CONFIGS
from .procedure_double import Kinematic, config, inputs

DT = 0.01


def _started(ablations: tuple[str, ...] = (), **kw: float) -> tuple[Procedure, Kinematic]:
    cfg = config(**kw)
    cfg = cfg.replace(procedure=dataclasses.replace(cfg.procedure, ablations=ablations))
    proc = Procedure(cfg, auto_confirm=True)
    plant = Kinematic(cfg)
    proc.enable(True)
    proc.tick(0.0, inputs(plant))
    proc.start()
    return proc, plant


def _run(proc: Procedure, plant: Kinematic, until: Phase, t_end: float = 120.0) -> tuple[float, list]:
    t, objectives = 0.01, []
    while t < t_end and proc.phase is not until and not proc.done:
        obj = proc.tick(t, inputs(plant))
        objectives.append((proc.phase, obj))
        plant.step(obj, DT)
        t += DT
    assert proc.phase is until, (proc.phase, proc.reason)
    return t, objectives


def test_rewind_turns_the_wire_within_its_travel_and_halves_the_next_step() -> None:
    proc, plant = _started()
    t, _ = _run(proc, plant, Phase.HAND_IN_HAND_ANTE_FOLLOW)
    plant.force["ante_wire"] = 1.4  # a deviation: >= 0.8 x alarm
    obj = proc.tick(t, inputs(plant))
    assert proc.phase is Phase.HAND_IN_HAND_REWIND
    rot = obj.axes["ante_wire_rot"]
    travel = proc._cfg.drives["ante_wire_rot"]
    assert rot.motion is AxisMotion.MOVE_TO and abs(rot.target) == proc._p.rewind_turn
    assert travel.travel_min <= rot.target <= travel.travel_max
    assert proc._step == proc._p.step / 2


def test_spin_starts_on_a_hard_segment_and_swings_both_ways() -> None:
    proc, plant = _started()
    t, _ = _run(proc, plant, Phase.HAND_IN_HAND_ANTE_FOLLOW)
    p = proc._p
    plant.force["ante_wire"] = p.spin_force_ratio * proc._alarm["ante_wire"] + 0.01
    plant.blocked = {"ante_wire"}  # stays in ante_follow
    targets = set()
    for i in range(int(3 * 2 * p.spin_turn / p.spin_speed / DT)):
        obj = proc.tick(t + i * DT, inputs(plant))
        if proc.phase is not Phase.HAND_IN_HAND_ANTE_FOLLOW:
            break
        targets.add(obj.axes["ante_wire_rot"].target)
    assert targets == {p.spin_turn, -p.spin_turn}


def test_soft_segments_are_not_spun() -> None:
    proc, plant = _started()
    _, objectives = _run(proc, plant, Phase.HAND_IN_HAND_VERIFY)
    assert not any("ante_wire_rot" in o.axes for ph, o in objectives if ph is Phase.HAND_IN_HAND_ANTE_FOLLOW)


def test_align_closes_on_the_retro_wire_as_seen_now() -> None:
    """The retro wire seen 0.3 mm further on once align has begun (a noisy reading at its start,
    or a drift) must not stop the ante wire where the coupling reads beyond what aligned asks."""
    proc, plant = _started()
    t, _ = _run(proc, plant, Phase.ALIGN)
    plant.tips["retro_wire"] += 0.3
    start = t
    while t < start + 30.0:
        obj = proc.tick(t, inputs(plant))
        if proc.phase is not Phase.ALIGN:
            break  # aligned on the tips as they are now
        plant.step(obj, DT)
        t += DT
    assert proc.phase is Phase.HAND_IN_HAND_RETRO_STEP, (proc.phase, proc.reason)
    p = proc._p
    c = plant.tips["retro_wire"] - plant.tips["ante_wire"]
    assert 0.0 <= c <= p.coupling_target + p.position_tolerance


def test_no_rotation_never_commands_a_rotary_axis() -> None:
    proc, plant = _started(("no-rotation",))
    t, objectives = _run(proc, plant, Phase.HAND_IN_HAND_ANTE_FOLLOW)
    plant.force["ante_wire"] = 1.4
    objectives.append((proc.phase, proc.tick(t, inputs(plant))))
    assert proc.phase is Phase.HAND_IN_HAND_REWIND
    assert not any(a.endswith("_rot") for _, o in objectives for a in o.axes)


def test_no_mc_approach_leaves_the_mcs_where_they_start() -> None:
    proc, plant = _started(("no-mc-approach",))
    start = dict(plant.tips)
    _, objectives = _run(proc, plant, Phase.HAND_IN_HAND_VERIFY)
    assert plant.tips["ante_mc"] == start["ante_mc"]
    assert not any("ante_mc" in o.axes for _, o in objectives)
    assert Phase.APPROACH not in {ph for ph, o in objectives if o.axes}


def test_no_coupling_advances_the_ante_wire_alone() -> None:
    proc, plant = _started(("no-coupling",))
    _, objectives = _run(proc, plant, Phase.HAND_IN_HAND_VERIFY)
    hih = [o for ph, o in objectives if ph.value.startswith("hand_in_hand")]
    assert hih and all(not o.coupled for o in hih)
    assert all(o.axes["ante_wire"].motion is AxisMotion.MOVE_TO for o in hih if "ante_wire" in o.axes)
    # the retrograde wire is parked inside its MC, ahead of the ante wire by more than any coupling
    assert plant.tips["retro_wire"] >= plant.tips["retro_mc"]
    assert plant.tips["retro_wire"] - plant.tips["ante_wire"] > proc._p.coupling_max


def test_rewind_bound_scales_with_lesion_length() -> None:
    short = config(lesion_length=10.0).procedure
    long_ = config(lesion_length=80.0).procedure
    assert short.rewind_bound() == short.max_rewinds + 1
    assert long_.rewind_bound() == long_.max_rewinds + 8


def test_ablations_are_validated() -> None:
    raw = {"procedure": {"ablations": ["no-coupling", "no-wings"]}}
    with pytest.raises(ConfigError, match=r"procedure\.ablations\[1\].*no-wings"):
        load_config({**_mapping(), **raw})
    with pytest.raises(ConfigError, match="ablations"):
        load_config({**_mapping(), "procedure": {"ablations": ["no-coupling", "no-coupling"]}})
    cfg = load_config({**_mapping(), "procedure": {"ablations": ["no-rotation", "no-mc-approach"]}})
    assert cfg.procedure.ablations == ("no-rotation", "no-mc-approach")


def _mapping() -> dict[str, object]:
    with (CONFIGS / "sim.toml").open("rb") as f:
        return dict(tomllib.load(f))


def test_synthetic_n_names_a_cohort_of_n_cases() -> None:
    cases = cohort("synthetic:300")
    assert len(cases) == 300 and cases == cohort("synthetic", n=300)
    with pytest.raises(ValueError, match=r"cohort \(='synthetic:abc'\): N must be an integer"):
        cohort("synthetic:abc")


def test_every_case_reaches_its_recorded_gap_below_the_mc_alarm() -> None:
    base = load_config(CONFIGS / "sim.toml")
    for sc in cohort("paper-2025") + cohort("synthetic:40"):
        cfg = sc.apply(base)
        plant = Plant(cfg, seed=sc.seed)
        lo, hi = plant.mc_stops
        assert math.isclose(hi - lo, min(cfg.procedure.lesion_length, cfg.sim.lesion.mc_stop_gap))
        for axis, s in (("ante_mc", lo), ("retro_mc", hi)):
            worst = max(
                plant.resistance(
                    axis,
                    x * s / 50
                    if axis == "ante_mc"
                    else cfg.procedure.lesion_length - x * (cfg.procedure.lesion_length - s) / 50,
                )
                for x in range(51)
            )
            assert worst <= cfg.sim.lesion.mc_reach_force + 1e-9 < cfg.drives[axis].force_alarm
        # and beyond its stop an MC cannot go on
        assert plant.resistance("ante_mc", lo + 1.0) > cfg.drives["ante_mc"].force_alarm
