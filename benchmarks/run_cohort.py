"""Run a cohort of simulated cases in simulated time and print one line per case plus totals.

python benchmarks/run_cohort.py [--cohort paper-2025] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import whih_control as wc
from whih_control.sim.cohort import cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", default="paper-2025")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write a run folder per case below this folder")
    args = parser.parse_args()
    base = wc.load_config(wc.default_config_path())
    cases = cohort(args.cohort, seed=args.seed)
    crossed = 0
    t0 = time.perf_counter()
    print(
        f"{'case':6} {'L mm':>6} {'J-CTO':>5} {'outcome':9} {'sim s':>7} {'gap min':>7} {'gap max':>7} "
        f"{'max F ante_mc':>13} {'max F retro_mc':>14} {'max F ante_wire':>15}  reason"
    )
    for sc in cases:
        cfg = sc.apply(base)
        out = args.out / sc.case_id if args.out else None
        r = wc.simulate(cfg, seed=sc.seed, out=out)
        crossed += r.crossed
        f = r.max_force
        print(
            f"{sc.case_id:6} {sc.lesion_length:6.1f} {sc.jcto:5.1f} {r.outcome:9} {r.sim_seconds:7.1f} "
            f"{r.min_gap:7.2f} {r.max_gap:7.2f} {f['ante_mc']:13.2f} {f['retro_mc']:14.2f} "
            f"{f['ante_wire']:15.2f}  {r.reason}",
            flush=True,
        )
    print(f"crossed {crossed}/{len(cases)} in {time.perf_counter() - t0:.0f} s wall")


if __name__ == "__main__":
    main()
