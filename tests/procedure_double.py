"""A trivial kinematic double for procedure tests: tips move toward their objectives at the
commanded speed, nothing else (no slack, no lesion unless a test scripts forces or blocks)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from whih_control.config import Config, default_config_path, load_config
from whih_control.procedure import Procedure, ProcedureInputs
from whih_control.types import AxisMotion, Estimate, Objective, OperatorInput, Verdict

L = 27.6


def start_tips(length: float = L) -> dict[str, float]:
    """The starting situation of the simulated procedure (docs/DESIGN.md, common geometry)."""
    return {"ante_mc": -2.0, "ante_wire": -15.0, "retro_wire": -8.0, "retro_mc": length + 2.0}


def config(**procedure: float | int | bool) -> Config:
    """The default sim config with some [procedure] keys changed."""
    cfg = load_config(default_config_path())
    if not procedure:
        return cfg
    return cfg.replace(procedure=dataclasses.replace(cfg.procedure, **procedure))


class Kinematic:
    """Tips follow the objective at the commanded speed; ``blocked`` axes never move."""

    def __init__(self, cfg: Config, tips: Mapping[str, float] | None = None) -> None:
        self.cfg = cfg
        self.tips = dict(tips or start_tips(cfg.procedure.lesion_length))
        self.force: dict[str, float] = {a: 0.0 for a in self.tips}
        self.blocked: set[str] = set()
        self.angles: dict[str, float] = {}
        """Rotary axes (deg), moved like the tips; not part of the estimate."""

    def estimate(self) -> Estimate:
        t = self.tips
        return Estimate(
            tips=dict(t),
            force=dict(self.force),
            gap=t["retro_mc"] - t["ante_mc"],
            coupling=t["retro_wire"] - t["ante_wire"],
            imaging_age=0.1,
            valid=all(math.isfinite(v) for v in t.values()),
        )

    def step(self, obj: Objective, dt: float) -> None:
        if not obj.motion_allowed:
            return
        p = self.cfg.procedure
        for axis, ax in obj.axes.items():
            if axis in self.blocked or ax.motion is AxisMotion.HOLD:
                continue
            if ax.motion is AxisMotion.GAP_FOLLOW:
                target = self.tips["retro_mc"] - p.gap_target
            elif ax.motion is AxisMotion.COUPLE_FOLLOW:
                target = self.tips["retro_wire"] - p.coupling_target
            else:
                target = ax.target
            pos = self.tips if axis in self.tips else self.angles
            d = target - pos.setdefault(axis, 0.0)
            lim = ax.speed * dt
            pos[axis] += max(-lim, min(lim, d))


def inputs(
    plant: Kinematic,
    *,
    held: bool = True,
    fault: bool = False,
    imaging: bool = True,
    ready: bool = True,
    verdict: Verdict | None = None,
) -> ProcedureInputs:
    """Inputs the runtime would hand in, from the double."""
    return ProcedureInputs(
        estimate=plant.estimate(),
        verdict=verdict or Verdict(),
        drives_ready=ready,
        fault_active=fault,
        fault_text="drive fault" if fault else "",
        imaging_fresh=imaging,
        operator=OperatorInput(enable_held=held),
    )


def run(proc: Procedure, plant: Kinematic, t: float, t_end: float, dt: float = 0.01, **kw: bool) -> float:
    """Tick until ``t_end`` or the procedure is done; returns the time reached."""
    while t < t_end and not proc.done:
        obj = proc.tick(t, inputs(plant, **kw))
        plant.step(obj, dt)
        t += dt
    return t
