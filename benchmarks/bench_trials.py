"""Trials per minute at 1 and 2 workers, the speed-up, and the parent's memory over a long sweep.

    python benchmarks/bench_trials.py [--trials N] [--long M] [--workers 1,2]

1. ``N`` default procedures (the shipped configuration, seeds 0..N-1, whole procedures) through
   ``wc.trials`` on a process pool of each worker count: wall seconds, trials per minute, the
   speed-up over one worker, and the time 1,000 default procedures would take: the pool's
   start-up and each worker's first trial once, then the steady rate of the rest (and, beside it,
   at the rate of these ``N`` trials with their start-up, which overstates a long sweep).
2. A long sweep of ``M`` short trials (``procedure.max_time_s = 1``: the per-trial work of the
   parent is the same as for a whole procedure, a row, a journal line, a CSV line) into a trials
   folder, with the parent's resident memory sampled every 0.2 s: its start, peak and end, and
   the growth per 1,000 trials, extrapolated to 10,000.

Budgets (docs/DESIGN.md section 5): 1,000 default procedures <= 10 min on a 2-core machine;
>= 1.8x from 1 to 2 workers; parent memory flat (<= 1 GiB for 10,000 trials).
Wall-clock figures depend on what else the machine runs: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import whih_control as wc
from whih_control.sim.cohort import Scenario

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * _PAGE / 2**20


def _default_case(cfg: wc.Config) -> Scenario:
    """The shipped configuration as one case (Scenario.apply leaves it as it is)."""
    p = cfg.procedure
    jcto = cfg.sim.jcto  # 2.5 by default: Scenario.apply takes it back as a float
    return Scenario("default", p.lesion_length, jcto, p.gap_target, "septal", False, False, 0)  # type: ignore[arg-type]


def _rate(n: int, workers: int, cfg: wc.Config) -> tuple[float, float, float | None]:
    """(wall seconds, CPU seconds of the children, minutes 1,000 would take) for ``n`` default
    procedures on ``workers``. The 1,000 are extrapolated from the steady rate after each worker's
    first trial (start-up and imports paid once per sweep, not per ``n`` trials), plus the time to
    those first rows; None when ``n`` leaves no steady part to measure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    arrived: list[float] = []
    t0 = time.perf_counter()
    df = wc.trials(
        [_default_case(cfg)],
        seeds=range(n),
        jobs=workers,
        progress=False,
        config=cfg,
        on_row=lambda _row: arrived.append(time.perf_counter() - t0),
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert len(df) == n and (df["outcome"] != "error").all(), df["reason"].tolist()
    thousand = None
    if n > 2 * workers:
        first = arrived[workers - 1]
        per_trial = (arrived[-1] - first) / (n - workers)
        thousand = (first + (1000 - workers) * per_trial) / 60.0
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), thousand


def _long_sweep(m: int, workers: int) -> tuple[list[tuple[int, float]], float]:
    """(rows done, parent RSS MiB) sampled as rows arrive over a sweep of ``m`` short trials,
    and the RSS after the tables and plots were written."""
    samples: list[tuple[int, float]] = [(0, _rss_mib())]

    def on_row(_row: object) -> None:
        samples.append((len(samples), _rss_mib()))

    with tempfile.TemporaryDirectory() as tmp:
        wc.trials(
            "synthetic:50",
            variants=[{"procedure.max_time_s": 1.0}],
            seeds=range(max(1, m // 50)),
            jobs=workers,
            out=Path(tmp) / "long",
            progress=False,
            on_row=on_row,
        )
    return samples, _rss_mib()


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--trials", type=int, default=20, help="default procedures per worker count")
    parser.add_argument("--long", type=int, default=1000, help="short trials in the memory sweep")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    args = parser.parse_args()
    cfg = wc.load_config(wc.default_config_path())
    counts = [int(w) for w in args.workers.split(",")]
    print(f"{args.trials} default procedures per worker count, {os.cpu_count()} cores")
    rates: dict[int, float] = {}
    steady: dict[int, float | None] = {}
    for w in counts:
        wall, cpu, steady[w] = _rate(args.trials, w, cfg)
        rates[w] = args.trials / wall * 60.0
        after_start = f", {steady[w]:.1f} min from the steady rate" if steady[w] is not None else ""
        print(
            f"  {w} worker(s): {wall:7.1f} s wall, {rates[w]:6.1f} trials/min, "
            f"{cpu / args.trials:5.2f} CPU s per trial, 1,000 procedures in {1000 / rates[w]:6.1f} min "
            f"at this rate{after_start}"
        )
    if 1 in rates:
        for w in counts[1:]:
            print(f"  speed-up 1 -> {w} workers: {rates[w] / rates[1]:.2f}x (target >= 1.8x at 2)")
    best = max(counts)
    at_best = steady[best] if steady[best] is not None else 1000 / rates[best]
    print(
        f"  1,000 default procedures at {best} workers: {at_best:.1f} min (target <= 10 min; start-up "
        f"once, then the steady rate; {1000 / rates[best]:.1f} min at the rate of these {args.trials})"
    )
    samples, after = _long_sweep(args.long, best)
    rows = samples[-1][0]
    start, peak, end = samples[0][1], max(s[1] for s in samples), samples[-1][1]
    # growth per row over the second half of the sweep (after the pool and imports settled)
    half = [s for s in samples if s[0] >= rows // 2]
    slope = (half[-1][1] - half[0][1]) / max(1, half[-1][0] - half[0][0]) if len(half) > 1 else 0.0
    print(
        f"long sweep: {rows} trials, parent RSS {start:.0f} MiB before, {peak:.0f} peak and {end:.0f} at the "
        f"last row, {after:.0f} after tables and plots; {slope * 1000:+.1f} MiB per 1,000 trials in the "
        f"second half -> {end + slope * (10_000 - rows):.0f} MiB at 10,000 (target <= 1024)"
    )


if __name__ == "__main__":
    main()
