"""Cost of one plant step for six axes: median and p99 over many steps.

Run from the repository root: ``python benchmarks/bench_plant.py [--steps N] [--seed S]``.
The insertions follow a hand-in-hand-like pattern (all four linear axes and both rotary axes
moving) so that every branch of the model is exercised. Budget: median <= 10 us.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from whih_control.config import default_config_path, load_config
from whih_control.sim import Plant


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 20_000:
        parser.error(f"--steps (={args.steps}) must be at least 20000")
    cfg = load_config(default_config_path())
    plant = Plant(cfg, seed=args.seed)
    dt = cfg.period
    ins = {axis: 0.0 for axis in cfg.drives}
    samples = [0.0] * args.steps
    clock = time.perf_counter_ns
    for i in range(args.steps):
        t = i * dt
        wave = math.sin(0.5 * t)
        ins["ante_wire"] = 20.0 * (1.0 + wave)
        ins["ante_mc"] = 8.0 * (1.0 + wave)
        ins["retro_wire"] = -10.0 * (1.0 + wave)
        ins["retro_mc"] = 8.0 * (1.0 - wave)
        ins["ante_wire_rot"] = 90.0 * wave
        ins["retro_wire_rot"] = -90.0 * wave
        t0 = clock()
        plant.step(t, dt, ins)
        samples[i] = (clock() - t0) / 1000.0
    samples.sort()
    median = samples[len(samples) // 2]
    p99 = samples[int(len(samples) * 0.99)]
    print(
        f"plant step, {len(cfg.drives)} axes, {args.steps} steps: median {median:.2f} us, "
        f"p99 {p99:.2f} us, max {samples[-1]:.1f} us (budget: median <= 10 us)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
