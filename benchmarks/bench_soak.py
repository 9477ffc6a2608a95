"""Real-time soak: the default configuration on the wall clock, with and without a CPU hog.

Each run opens the robot on the ``virtual`` bus with its simulated drives in a thread of this
process, enables, runs the procedure and, once it ends, lets the cycle thread go on (holding)
until ``--seconds`` of wall time have passed. A second run does the same while another process spins
on a CPU (on the other core where the machine lets us pin: this process on core 0, the hog on
core 1). Reported per run: spurious faults (any fault: nothing is injected), stale drive-cycles
(a TPDO1 missing at the deadline), overruns, SYNC period error p50/p99/max and the 1-minute load
average before and after.

Run: ``python benchmarks/bench_soak.py --seconds 60``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from whih_control import Robot, load_config  # noqa: E402


@contextlib.contextmanager
def _hog(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with contextlib.suppress(AttributeError, OSError):
            if (os.cpu_count() or 1) >= 2:
                os.sched_setaffinity(proc.pid, {1})
        yield
    finally:
        proc.kill()
        proc.wait()


def soak(seconds: float, hog: bool) -> str:
    cfg = load_config(ROOT / "configs" / "sim.toml")
    load_before = os.getloadavg()[0]
    # the operator's go and crossing confirmation come from here (auto_confirm would race
    # enable()'s wait for ready on the cycle thread)
    with _hog(hog), Robot(cfg, clock="real") as robot:
        rt = robot.runtime
        end = time.monotonic() + seconds
        robot.enable()
        result = robot.run_procedure(max_time=max(1.0, end - time.monotonic()), confirm=lambda gate: True)
        # the cycle thread goes on by itself (holding) until the robot is closed
        time.sleep(max(0.0, end - time.monotonic()))
        stats = rt.pacer.stats()
        faults = list(rt.faults)
        stale = sum(rt.master.stats.stale_cycles.values())
    load_after = os.getloadavg()[0]
    return (
        f"{'with hog' if hog else 'no hog':<9} {stats.cycles:>7} cycles {stats.rate_hz:7.1f} Hz  "
        f"outcome {result.outcome:<8} spurious faults {len(faults)}  stale drive-cycles {stale}  "
        f"overruns {stats.overruns}  SYNC period error p50 {stats.period_error_p50_ms:.3f} / "
        f"p99 {stats.period_error_p99_ms:.3f} / max {stats.period_error_max_ms:.3f} ms  "
        f"CPU {stats.cpu_percent:.0f} %  load {load_before:.2f} -> {load_after:.2f}"
        + (f"\n          first fault: {faults[0]}" if faults else "")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        if (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(0, {0})
    print(f"real-time soak, {args.seconds:g} s per run, {os.cpu_count()} CPUs")
    for hog in (False, True):
        print(soak(args.seconds, hog), flush=True)


if __name__ == "__main__":
    main()
