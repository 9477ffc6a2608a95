"""Simulated seconds per wall second for a whole WHIH procedure at 400 Hz, without and with recording.

    python benchmarks/bench_sim.py [--repeat N] [--seed S]

Prints the median over N runs of each variant, measured alternately in one process so that a
noisy machine affects both alike, and their ratio. Target (DESIGN section 5): >= 100x real time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import whih_control as wc


def _once(cfg: wc.Config, seed: int, out: Path | None) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    result = wc.simulate(cfg, seed=seed, out=out)
    wall = time.perf_counter() - t0
    return result.sim_seconds, wall, result.outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = wc.load_config(wc.default_config_path())
    plain: list[float] = []
    recorded: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            sim_s, wall, outcome = _once(cfg, args.seed, None)
            plain.append(sim_s / wall)
            sim_r, wall_r, _ = _once(cfg, args.seed, Path(tmp) / f"run{i}")
            recorded.append(sim_r / wall_r)
            print(
                f"run {i}: {sim_s:.1f} simulated s ({outcome}); "
                f"no recording {sim_s / wall:6.1f}x, recording {sim_r / wall_r:6.1f}x real time"
            )
    p, r = statistics.median(plain), statistics.median(recorded)
    print(f"median over {args.repeat} runs at {cfg.cycle.rate_hz:g} Hz, {len(cfg.drives)} drives:")
    print(f"  without recording: {p:7.1f}x real time (target >= 100x)")
    print(f"  with recording:    {r:7.1f}x real time")
    print(f"  recording costs:   {p / r:7.2f}x")


if __name__ == "__main__":
    main()
