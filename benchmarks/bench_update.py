"""Time ``ControlCore.update`` (estimate + control + safety, 6 axes) per cycle.

Runs the closed-loop hand-in-hand scenario of the tests against the plant double and times only
the core's ``update`` with ``time.perf_counter_ns``. Budget (docs/DESIGN.md section 5): median <= 20 us.

    python benchmarks/bench_update.py [--cycles N] [--seed S]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from types import MappingProxyType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_iface.types import DriveGoal  # noqa: E402
from tests.plant_double import HAND_IN_HAND_TIPS, PlantDouble  # noqa: E402
from whih_control.config import load_config  # noqa: E402
from whih_control.core import ControlCore  # noqa: E402
from whih_control.types import AxisMotion, AxisObjective, Objective, OperatorInput  # noqa: E402


def main() -> int:
    """Run the benchmark and print median/p99/max in microseconds."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = load_config(ROOT / "configs" / "sim.toml")
    proc = cfg.procedure
    plant = PlantDouble(cfg, seed=args.seed)
    core = ControlCore(cfg)
    dt = cfg.period
    plant.step(0.0, dt, None)
    core.estimator.calibrate(dict.fromkeys(HAND_IN_HAND_TIPS, 0.0), HAND_IN_HAND_TIPS)
    core.request_goal(DriveGoal.ENABLED)
    operator = OperatorInput(enable_held=True)
    follow = {
        "ante_wire": AxisObjective(AxisMotion.COUPLE_FOLLOW, speed=2 * proc.wire_speed),
        "ante_mc": AxisObjective(AxisMotion.GAP_FOLLOW, speed=2 * proc.mc_speed),
    }
    # alternate retro steps forward and back so the train keeps moving for any cycle count
    objectives = []
    for k in range(2):
        rw = HAND_IN_HAND_TIPS["retro_wire"] + (proc.step if k == 0 else 0.0)
        axes = {
            "retro_wire": AxisObjective(AxisMotion.MOVE_TO, rw, proc.wire_speed),
            "retro_mc": AxisObjective(AxisMotion.MOVE_TO, rw + 3.0, proc.mc_speed),
            "ante_wire_rot": AxisObjective(AxisMotion.MOVE_TO, 90.0 * (1 - k), 90.0),
            **follow,
        }
        objectives.append(Objective("hand_in_hand.retro_step", True, MappingProxyType(axes)))
    samples = [0] * args.cycles
    t = 0.0
    gc.disable()
    perf = time.perf_counter_ns
    update = core.update
    fb = plant.feedback
    for n in range(args.cycles):
        t += dt
        meas = plant.step(t, dt, core.commands)
        obj = objectives[(n // 400) % 2]
        t0 = perf()
        update(t, fb, obj, operator, meas)
        samples[n] = perf() - t0
    gc.enable()
    samples.sort()
    us = [s / 1000 for s in samples]
    median = statistics.median(us)
    p99 = us[int(0.99 * (len(us) - 1))]
    print(
        f"ControlCore.update, 6 axes, {len(us)} cycles: median {median:.2f} us, p99 {p99:.2f} us, "
        f"max {us[-1]:.1f} us (budget: median <= 20 us); fused {core.estimator.fused} tips, "
        f"verdict faults {core.supervisor.faults}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
