"""Where a simulated cycle's time goes: microseconds per cycle per component of the whole stack.

    python benchmarks/profile_sim.py                      # cProfile, deterministic
    py-spy record -r 500 -f raw -o spy.txt -- python benchmarks/profile_sim.py --plain
    python benchmarks/profile_sim.py --collapsed spy.txt  # the same table from py-spy's samples

One default procedure (seed 0, no recording) after a warm-up run. cProfile counts every call and
inflates call-heavy code, so its shares are scaled to the run's CPU time without the profiler;
a sampling profiler (py-spy) does not perturb the run, and its table is the one to trust.
Components are inclusive and nested as shown (the drives run inside the master's SYNC send).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import time
from collections import Counter

import whih_control as wc

# (label, function as "file:name", indent): inclusive time of that function per cycle
COMPONENTS = (
    ("cycle (Runtime._cycle_body)", "runtime.py:_cycle_body", 0),
    ("master read (SYNC, TPDO1 intake)", "master.py:read", 1),
    ("simulated drives, per SYNC", "sim.py:_advance", 2),
    ("plant", "plant.py:step", 3),
    ("master TPDO1 intake (_take)", "master.py:_take", 2),
    ("master write (RPDO1 out)", "master.py:write", 1),
    ("drives' RPDO1 intake", "sim.py:on_frame", 2),
    ("master service", "master.py:service", 1),
    ("control core", "core.py:update", 1),
    ("estimator", "estimate.py:update", 2),
    ("controller", "control.py:compute", 2),
    ("supervisor", "safety.py:enforce", 2),
    ("procedure tick", "procedure.py:tick", 1),
    ("recorder end_cycle", "recorder.py:end_cycle", 1),
)


def _run(cfg: wc.Config) -> tuple[float, int]:
    """(CPU seconds, cycles) of one default procedure: CPU time, as a busy machine stretches the
    wall time of a run more than its CPU time."""
    t0 = time.process_time()
    result = wc.simulate(cfg, seed=0)
    return time.process_time() - t0, result.cycles


def _table(inclusive: dict[str, float], cycles: int, scale: float) -> None:
    for label, key, indent in COMPONENTS:
        us = inclusive.get(key, 0.0) * scale / cycles * 1e6
        print(f"  {'  ' * indent}{label:<{40 - 2 * indent}} {us:7.1f} us")


def _from_cprofile(cfg: wc.Config) -> None:
    wall, cycles = _run(cfg)
    prof = cProfile.Profile()
    prof.enable()
    _run(cfg)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    inclusive: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.items():
        key = f"{filename.rsplit('/', 1)[-1]}:{name}"
        inclusive[key] = inclusive.get(key, 0.0) + ct
    whole = inclusive.get("api.py:simulate", 0.0)
    scale = wall / whole if whole else 1.0
    print(f"cProfile, scaled to the unprofiled run: {cycles} cycles, {wall / cycles * 1e6:.1f} CPU us/cycle")
    _table(inclusive, cycles, scale)


def _from_collapsed(path: str, cycles: int, wall: float) -> None:
    """py-spy ``-f raw`` output: one stack per line, frames ';'-separated, then a sample count."""
    frame = re.compile(r"^(\S+) \((?:.*/)?([^/:]+):\d+\)$")
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        total += int(n)
        seen = set()
        for f in stack.split(";"):
            m = frame.match(f)
            if m:
                key = f"{m.group(2)}:{m.group(1).rsplit('.', 1)[-1]}"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += int(n)
    run = inclusive.get("api.py:simulate", 0)
    print(f"py-spy samples: {total}, in simulate(): {run}")
    print(f"scaled to a warm run: {cycles} cycles, {wall:.2f} CPU s ({wall / cycles * 1e6:.1f} us a cycle):")
    _table({k: float(v) for k, v in inclusive.items()}, cycles, wall / run if run else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plain", action="store_true", help="only run (for an outside profiler)")
    parser.add_argument("--collapsed", help="py-spy raw output of a --plain run to tabulate")
    args = parser.parse_args()
    cfg = wc.load_config(wc.default_config_path())
    if args.plain:  # one run, nothing else: what the outside profiler samples is that run
        wall, cycles = _run(cfg)
        print(f"{cycles} cycles, {wall:.2f} CPU s, {wall / cycles * 1e6:.1f} us a cycle")
        return
    _run(cfg)  # warm-up: EDS parse, first allocations
    if args.collapsed:
        wall, cycles = _run(cfg)
        _from_collapsed(args.collapsed, cycles, wall)
    else:
        _from_cprofile(cfg)


if __name__ == "__main__":
    main()
