"""Never unattended: the cycle thread's SYNC period while the application idles or keeps busy.

A robot on python-can's ``virtual`` bus (six simulated drives in a thread of this process) is
enabled; then, for ``--seconds``, the application's main thread either sleeps (``idle``), runs
pure Python (``python``: the interpreter lock is handed over every switch interval) or runs
NumPy calls that hold the lock for a few ms each (``numpy``). Reported per case: SYNC period
error p50/p99/max, cycles later than two periods, stale drive-cycles and whether every drive is
still OPERATION ENABLED. Each case runs with the runtime's switch interval (period / 10) and with
Python's default (5 ms), side by side.

Run: ``python benchmarks/bench_attended.py --seconds 2``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import whih_control as wc  # noqa: E402


def _load(kind: str, seconds: float) -> None:
    end = time.perf_counter() + seconds
    if kind == "idle":
        time.sleep(seconds)
    elif kind == "python":
        x = 0
        while time.perf_counter() < end:
            for i in range(10_000):
                x += i * i
    elif kind == "numpy":
        a = np.random.default_rng(0).random((600, 600))
        while time.perf_counter() < end:
            a = (a @ a.T) / 600.0


def one(kind: str, seconds: float, default_switch: bool) -> dict[str, float]:
    cfg = wc.load_config(ROOT / "configs" / "sim.toml")
    cfg = cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="virtual", channel=f"bench-att-{os.getpid()}"),
        cycle=dataclasses.replace(cfg.cycle, tpdo_deadline=0.9),
    )
    with wc.Robot(cfg, clock="real") as robot:
        robot.enable()
        if default_switch:
            sys.setswitchinterval(0.005)
        pacer = robot.runtime.pacer
        n0 = pacer._n  # the pacer's interval samples of this window only
        stale0 = robot.runtime.recorder.stale_cycles
        _load(kind, seconds)
        n1 = pacer._n
        status = robot.status()
        intervals = np.array(pacer._intervals[n0:n1])
        stale = robot.runtime.recorder.stale_cycles - stale0
    err = np.abs(intervals - cfg.period) * 1e3
    return {
        "p50": float(np.percentile(err, 50)),
        "p99": float(np.percentile(err, 99)),
        "max": float(err.max()),
        "late": int(np.sum(intervals > 2 * cfg.period)),
        "stale": stale,
        "enabled": all(d.state == "OPERATION_ENABLED" for d in status.drives.values()) and not status.fault,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(
        f"{'load':8} {'switch':8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'>2T':>5} {'stale':>6} enabled"
    )
    for kind in ("idle", "python", "numpy"):
        for default_switch in (False, True):
            runs = [one(kind, args.seconds, default_switch) for _ in range(args.repeat)]
            med = {
                k: statistics.median(float(r[k]) for r in runs)
                for k in ("p50", "p99", "max", "late", "stale")
            }
            ok = all(bool(r["enabled"]) for r in runs)
            label = "5 ms" if default_switch else "T/10"
            print(
                f"{kind:8} {label:8} {med['p50']:8.3f} {med['p99']:8.3f} {med['max']:8.2f} "
                f"{med['late']:5.0f} {med['stale']:6.0f} {'yes' if ok else 'NO'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
