"""Real-time soak: the default configuration on the wall clock, with and without a CPU hog.

Each run opens the robot, enables, runs the procedure and, once it ends, lets the cycle thread go
on (holding) until ``--seconds`` of wall time have passed. Two arrangements of the simulated
drives:

- ``in-process``: a thread of this process on the ``virtual`` bus (what ``whih run --realtime``
  does by default): the cycle, the drives and every other thread share one interpreter;
- ``external``: ``whih sim-drives`` in a process of its own on ``udp_multicast`` (loopback), the
  master with bench imaging, as ``whih run --realtime --external-drives`` runs it: what a rig is.

With ``--hog`` another process spins on a CPU (on the other core where the machine lets us pin:
the master on core 0, the hog on core 1; the external drives process is left to the scheduler).
Reported per run: spurious faults (any fault: nothing is injected), stale drive-cycles (a TPDO1
missing at the deadline), overruns, SYNC period error p50/p99/max, and the 1-minute load average
before and after.

``--diagnose`` also records, every cycle, each thread's CPU time and run-queue wait
(``/proc/self/task/*/schedstat``), page faults and context switches (``getrusage``) and every
garbage collection (``gc.callbacks``), and prints what happened around each stall of more than
``--stall-ms``: the evidence for *why* the process stalled.

Run: ``python benchmarks/bench_soak.py --seconds 60`` (all four runs) or e.g.
``--drives external --hog yes``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import random
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from whih_control import Robot, load_config  # noqa: E402
from whih_control.bench import bench_robot  # noqa: E402
from whih_control.config import Config  # noqa: E402
from whih_control.runtime_clock import RealTimePacer  # noqa: E402

ARRANGEMENTS = ("in-process", "external")


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


# The drives stand for hardware with CPUs of their own: not pinned to the master's core (as they
# would be by inheritance) and, with a priority, SCHED_FIFO in every thread (set before any starts).
_DRIVES_MAIN = """
import os, sys
os.sched_setaffinity(0, range(os.cpu_count() or 1))
if int(sys.argv[1]) > 0:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(sys.argv[1])))
from whih_control.cli import main
sys.exit(main(sys.argv[2:]))
"""


@contextlib.contextmanager
def _external_drives(cfg_path: Path, channel: str, priority: int) -> Iterator[None]:
    """``whih sim-drives`` in its own process until the block ends (SIGTERM)."""
    args = ["sim-drives", "--config", str(cfg_path), "--interface", "udp_multicast", "--channel", channel]
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVES_MAIN, str(priority), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "serving" not in line:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"whih sim-drives did not start: {line!r} {err[-2000:]}")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class _Probe:
    """Per-cycle evidence, sampled at the end of each cycle on the cycle thread (~10 us)."""

    n_max: int
    t: np.ndarray = field(init=False)
    sync: np.ndarray = field(init=False)
    rusage: np.ndarray = field(init=False)
    cpus: np.ndarray = field(init=False)
    sched: np.ndarray = field(init=False)
    names: list[str] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    n: int = 0
    gcs: list[tuple[float, float, int, str]] = field(default_factory=list)
    _gc_t0: float = 0.0

    def __post_init__(self) -> None:
        self.t = np.zeros(self.n_max)
        self.sync = np.zeros(self.n_max)
        self.rusage = np.zeros((self.n_max, 4))
        self.ncpu = os.cpu_count() or 1
        self.cpus = np.zeros((self.n_max, self.ncpu, 4))  # user, nice, system, steal (ticks)
        self._stat = os.open("/proc/stat", os.O_RDONLY)
        self.sched = np.zeros((self.n_max, 0, 2))

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            self.gcs.append(
                (self._gc_t0, time.perf_counter(), info["generation"], threading.current_thread().name)
            )

    def _open_threads(self) -> None:
        for th in threading.enumerate():
            with contextlib.suppress(OSError):
                self.fds.append(os.open(f"/proc/self/task/{th.native_id}/schedstat", os.O_RDONLY))
                self.names.append(th.name)
        self.sched = np.zeros((self.n_max, len(self.fds), 2))

    def sample(self, sync_time: float) -> None:
        if not self.fds:
            self._open_threads()
        i = self.n
        if i >= self.n_max:
            return
        self.t[i] = time.perf_counter()
        self.sync[i] = sync_time
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.rusage[i] = (ru.ru_minflt, ru.ru_majflt, ru.ru_nvcsw, ru.ru_nivcsw)
        for j, fd in enumerate(self.fds):
            with contextlib.suppress(OSError):
                run, wait, _ = os.pread(fd, 100, 0).split()
                self.sched[i, j] = (int(run), int(wait))
        lines = os.pread(self._stat, 4096, 0).split(b"\n")
        for c in range(self.ncpu):
            f = lines[1 + c].split()
            self.cpus[i, c] = (int(f[1]), int(f[2]), int(f[3]), int(f[8]))
        self.n = i + 1

    def close(self) -> None:
        for fd in (*self.fds, self._stat):
            os.close(fd)

    def report(self, stall_ms: float, t0: float) -> str:
        """What happened between the cycle before each stall and the cycle after it."""
        n = self.n
        if n < 2:
            return "  (no cycles sampled)"
        gaps = np.diff(self.sync[:n]) * 1e3
        lines: list[str] = []
        gc_total = [0.0, 0.0, 0.0]
        gc_max = [0.0, 0.0, 0.0]
        for a, b, gen, _ in self.gcs:
            gc_total[gen] += b - a
            gc_max[gen] = max(gc_max[gen], b - a)
        lines.append(
            "  garbage collections: "
            + ", ".join(
                f"gen {g}: {sum(1 for x in self.gcs if x[2] == g)} ({gc_total[g] * 1e3:.1f} ms, "
                f"longest {gc_max[g] * 1e3:.2f} ms)"
                for g in range(3)
            )
        )
        lines.append(f"  threads sampled: {', '.join(self.names)}")
        long_gcs = [
            f"{x - t0:.2f} s gen{g} {(y - x) * 1e3:.1f} ms on {name}"
            for x, y, g, name in self.gcs
            if y - x > 1e-3
        ]
        lines.append(f"  collections over 1 ms: {', '.join(long_gcs) or 'none'}")
        for k in (int(x) for x in np.flatnonzero(gaps > stall_ms)):
            # samples at the end of the cycle before the late SYNC's predecessor and of the cycle
            # the late SYNC started: the stall is between them, in a cycle or in the wait
            a, b = max(k - 1, 0), k + 1
            span = (self.t[b] - self.t[a]) * 1e3
            d_sched = (self.sched[b] - self.sched[a]) / 1e6
            d_ru = self.rusage[b] - self.rusage[a]
            gcs = [
                f"gen{g} {(y - x) * 1e3:.2f} ms" for x, y, g, _ in self.gcs if x < self.t[b] and y > self.t[a]
            ]
            per_thread = "; ".join(
                f"{name}: ran {d_sched[j, 0]:.1f} waited-for-CPU {d_sched[j, 1]:.1f}"
                for j, name in enumerate(self.names)
            )
            d_cpu = (self.cpus[b] - self.cpus[a]) * 1e3 / os.sysconf("SC_CLK_TCK")
            cpus = "; ".join(
                f"cpu{c} user {d_cpu[c, 0]:.0f} nice {d_cpu[c, 1]:.0f} sys {d_cpu[c, 2]:.0f} "
                f"steal {d_cpu[c, 3]:.0f}"
                for c in range(self.ncpu)
            )
            took = "/".join(f"{(self.t[i] - self.sync[i]) * 1e3:.1f}" for i in range(a, b + 1))
            lines.append(
                f"  stall at {self.sync[b] - t0:8.3f} s: SYNC gap {gaps[k]:.1f} ms (sampled span "
                f"{span:.1f} ms; cycles took {took} ms from their SYNC) | {per_thread} ms | "
                f"minflt {d_ru[0]:.0f} majflt {d_ru[1]:.0f} "
                f"vol-cs {d_ru[2]:.0f} invol-cs {d_ru[3]:.0f} | gc: {', '.join(gcs) or 'none'} | "
                f"machine (ms): {cpus}"
            )
        return "\n".join(lines)


def _robot(cfg: Config, arrangement: str, channel: str) -> Robot:
    if arrangement == "in-process":
        return Robot(cfg, clock="real")
    ext = cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="udp_multicast", channel=channel),
        sim=dataclasses.replace(cfg.sim, enabled=False),
        imaging=dataclasses.replace(cfg.imaging, source="external"),
    )
    return bench_robot(ext, clock="real")


def soak(
    seconds: float,
    arrangement: str,
    hog: bool,
    *,
    priority: int = 0,
    diagnose: bool = False,
    stall_ms: float = 10.0,
) -> str:
    """One run; the line (and with ``diagnose`` the evidence) to print."""
    cfg_path = ROOT / "configs" / "sim.toml"
    cfg = load_config(cfg_path)
    cfg = cfg.replace(cycle=dataclasses.replace(cfg.cycle, realtime_priority=priority))
    rng = random.Random()
    channel = f"239.74.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}@{rng.randrange(40_000, 50_000)}"
    load_before = os.getloadavg()[0]
    probe = _Probe(int(seconds * cfg.cycle.rate_hz * 1.2) + 1000) if diagnose else None
    drives: contextlib.AbstractContextManager[None] = (
        _external_drives(cfg_path, channel, priority)
        if arrangement == "external"
        else contextlib.nullcontext()
    )
    if probe is not None:
        gc.callbacks.append(probe.gc_callback)
    try:
        with _hog(hog), drives, _robot(cfg, arrangement, channel) as robot:
            rt = robot.runtime
            if probe is not None:
                _hook(rt, probe)
            end = time.monotonic() + seconds
            robot.enable()
            # the operator's go and crossing confirmation come from here (auto_confirm would race
            # enable()'s wait for ready on the cycle thread)
            result = robot.run_procedure(max_time=max(1.0, end - time.monotonic()), confirm=lambda gate: True)
            # the cycle thread goes on by itself (holding) until the robot is closed
            time.sleep(max(0.0, end - time.monotonic()))
            # only counters here: percentiles on this thread would hold the interpreter lock
            # for milliseconds while the cycle runs (a stall the benchmark itself would cause)
            pacer = rt.pacer
            assert isinstance(pacer, RealTimePacer)
            n, cycles, overruns = pacer._n, pacer.cycles, pacer.overruns
            wall = time.perf_counter() - pacer._start
            cpu = time.process_time() - pacer._cpu0
            faults = list(rt.faults)
            stale = sum(rt.master.stats.stale_cycles.values())
            t0 = pacer._start
    finally:
        if probe is not None:
            gc.callbacks.remove(probe.gc_callback)
            probe.close()
    load_after = os.getloadavg()[0]
    err = np.abs(pacer._intervals[:n] - pacer.period) * 1e3 if n else np.zeros(1)
    p50, p99 = np.percentile(err, [50, 99])
    text = (
        f"{arrangement:<10} {'hog' if hog else 'no hog':<6} "
        f"{f'FIFO {priority}' if priority else 'normal':<7} "
        f"{cycles:>7} cycles {cycles / wall:6.1f} Hz  outcome {result.outcome:<8} "
        f"spurious faults {len(faults)}  stale drive-cycles {stale}  overruns {overruns}  "
        f"SYNC period error p50 {p50:.3f} / p99 {p99:.3f} / max {err.max():.3f} ms  "
        f"CPU {100 * cpu / wall:.0f} %  load {load_before:.2f} -> {load_after:.2f}"
    )
    if faults:
        text += f"\n  first fault: {faults[0]}"
    if probe is not None:
        text += "\n" + probe.report(stall_ms, t0)
    return text


def _hook(rt: Any, probe: _Probe) -> None:
    """Sample the probe at the end of every cycle (instance attribute over the method)."""
    cycle: Callable[[], None] = rt._cycle
    pacer = rt.pacer

    def sampled() -> None:
        cycle()
        probe.sample(pacer._now)

    rt._cycle = sampled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--drives", choices=(*ARRANGEMENTS, "both"), default="both")
    ap.add_argument("--hog", choices=("no", "yes", "both"), default="both")
    ap.add_argument("--diagnose", action="store_true", help="per-cycle evidence around each stall")
    ap.add_argument("--stall-ms", type=float, default=10.0, help="a SYNC gap above this is a stall")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--priority",
        type=int,
        nargs="+",
        default=[0],
        help="cycle.realtime_priority values to run (SCHED_FIFO 1-99, the external drives too; 0: normal)",
    )
    args = ap.parse_args()
    if not 1.0 <= args.seconds <= 3600.0:
        ap.error(f"--seconds (={args.seconds}) must be within [1, 3600]")
    with contextlib.suppress(AttributeError, OSError):
        if (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(0, {0})
    for p in args.priority:
        if not 0 <= p <= 99:
            ap.error(f"--priority (={p}) must be within [0, 99]")
    arrangements = ARRANGEMENTS if args.drives == "both" else (args.drives,)
    hogs = {"no": (False,), "yes": (True,), "both": (False, True)}[args.hog]
    print(f"real-time soak, {args.seconds:g} s per run, {os.cpu_count()} CPUs", flush=True)
    for _ in range(args.repeat):
        for priority in args.priority:
            for arrangement in arrangements:
                for hog in hogs:
                    line = soak(
                        args.seconds,
                        arrangement,
                        hog,
                        priority=priority,
                        diagnose=args.diagnose,
                        stall_ms=args.stall_ms,
                    )
                    print(line, flush=True)


if __name__ == "__main__":
    main()
