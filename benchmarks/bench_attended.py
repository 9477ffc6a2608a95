"""Never unattended: the cycle's SYNC period while the application idles or keeps busy.

A robot on python-can's ``virtual`` bus (six simulated drives in a thread next to the cycle) is
enabled; then, for ``--seconds``, the application's main thread either sleeps (``idle``), runs
pure Python (``python``: the interpreter lock is handed over every switch interval) or runs
NumPy calls that hold the lock for a few ms each (``numpy``). Three candidates run side by side,
in turn, in one run:

- ``thread 5ms``: the cycle on a thread of the application's process, Python's default switch
  interval (5 ms);
- ``thread T/10``: the same with the runtime's switch interval (period / 10; what ``Robot`` does);
- ``process``: the same ``Robot`` (the same cycle code and the same simulated drives on the
  virtual bus) in a child process started with ``multiprocessing`` (spawn); the application's
  process holds only a thin proxy that sends verbs over a ``Pipe`` and gets their answers, so its
  load competes with the cycle for a CPU, never for an interpreter lock.

Reported per case (medians of ``--repeat`` rounds): SYNC period error p50/p99/max, cycles later
than two periods, stale drive-cycles, whether every drive is still OPERATION ENABLED, and what a
``status()`` costs the application (µs, p50/p99 of 200 calls after the window: a lock and a
snapshot in the thread candidates, a round trip through the pipe for the process).

Run: ``python benchmarks/bench_attended.py --seconds 2 --repeat 3``
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import whih_control as wc  # noqa: E402

CANDIDATES = ("thread 5ms", "thread T/10", "process")
LOADS = ("idle", "python", "numpy")
STATUS_CALLS = 200


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


def _config(tag: str) -> wc.Config:
    cfg = wc.load_config(ROOT / "configs" / "sim.toml")
    return cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="virtual", channel=f"bench-att-{tag}-{os.getpid()}"),
        cycle=dataclasses.replace(cfg.cycle, tpdo_deadline=0.9),
    )


class _Window:
    """The cycle's SYNC intervals and stale drive-cycles from :meth:`mark` to :meth:`take`."""

    def __init__(self, robot: wc.Robot) -> None:
        self._rt = robot.runtime
        self._n0 = 0
        self._stale0 = 0

    def mark(self) -> None:
        self._n0 = self._rt.pacer._n  # type: ignore[union-attr]
        self._stale0 = self._rt.recorder.stale_cycles

    def take(self) -> tuple[list[float], int]:
        pacer = self._rt.pacer
        intervals = list(pacer._intervals[self._n0 : pacer._n])  # type: ignore[union-attr]
        return intervals, self._rt.recorder.stale_cycles - self._stale0


# ------------------------------------------------------------------------------ the process candidate


def _serve(conn: Connection, tag: str) -> None:
    """The child: a real-time Robot, verbs taken from the pipe, answers sent back."""
    with wc.Robot(_config(tag), clock="real") as robot:
        window = _Window(robot)
        calls: dict[str, Callable[..., Any]] = {
            "enable": robot.enable,
            "status": robot.status,
            "mark": window.mark,
            "take": window.take,
        }
        while True:
            msg = conn.recv()
            if msg is None:
                break
            verb, args = msg
            try:
                conn.send((True, calls[verb](*args)))
            except Exception as exc:  # the proxy raises it in the application
                conn.send((False, exc))
    conn.close()


class RobotProxy:
    """The application's side of a Robot in a child process: each verb one message, one answer."""

    def __init__(self, tag: str) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, tag), name="whih-cycle-process", daemon=True)
        self._proc.start()
        child.close()

    def call(self, verb: str, *args: Any) -> Any:
        self._conn.send((verb, args))
        ok, value = self._conn.recv()
        if not ok:
            raise value
        return value

    def enable(self) -> None:
        self.call("enable")

    def status(self) -> wc.Status:
        status: wc.Status = self.call("status")
        return status

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(30.0)
        if self._proc.exitcode is None:
            self._proc.kill()
            self._proc.join()


# ------------------------------------------------------------------------------ one case


def _status_cost(status: Callable[[], wc.Status]) -> tuple[float, float]:
    costs = []
    for _ in range(STATUS_CALLS):
        t0 = time.perf_counter()
        status()
        costs.append(time.perf_counter() - t0)
    return float(np.percentile(costs, 50) * 1e6), float(np.percentile(costs, 99) * 1e6)


def one(kind: str, seconds: float, candidate: str) -> dict[str, float]:
    period = _config("p").period
    if candidate == "process":
        proxy = RobotProxy("proc")
        try:
            proxy.enable()
            proxy.call("mark")
            _load(kind, seconds)
            intervals, stale = proxy.call("take")
            status = proxy.status()
            cost = _status_cost(proxy.status)
        finally:
            proxy.close()
    else:
        with wc.Robot(_config("thread"), clock="real") as robot:
            robot.enable()
            before = sys.getswitchinterval()
            if candidate == "thread 5ms":
                sys.setswitchinterval(0.005)
            try:
                window = _Window(robot)
                window.mark()
                _load(kind, seconds)
                intervals, stale = window.take()
                status = robot.status()
                cost = _status_cost(robot.status)
            finally:
                sys.setswitchinterval(before)
    iv = np.array(intervals)
    err = np.abs(iv - period) * 1e3
    return {
        "p50": float(np.percentile(err, 50)),
        "p99": float(np.percentile(err, 99)),
        "max": float(err.max()),
        "late": int(np.sum(iv > 2 * period)),
        "cycles": len(iv),
        "stale": stale,
        "status_p50": cost[0],
        "status_p99": cost[1],
        "enabled": all(d.state == "OPERATION_ENABLED" for d in status.drives.values()) and not status.fault,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--candidate", choices=(*CANDIDATES, "all"), default="all")
    ap.add_argument("--load", choices=(*LOADS, "all"), default="all")
    args = ap.parse_args(argv)
    candidates = CANDIDATES if args.candidate == "all" else (args.candidate,)
    loads = LOADS if args.load == "all" else (args.load,)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{'load':7} {'candidate':12} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'>2T':>9} "
        f"{'stale':>5} {'status() us p50/p99':>20} enabled"
    )
    for kind in loads:
        # the candidates take turns within each round, so a change in the machine's load
        # falls on all of them alike
        runs: dict[str, list[dict[str, float]]] = {c: [] for c in candidates}
        refused: dict[str, int] = dict.fromkeys(candidates, 0)
        for _ in range(args.repeat):
            for c in candidates:
                for _attempt in range(3):
                    try:
                        runs[c].append(one(kind, args.seconds, c))
                        break
                    except wc.WhihError as exc:  # e.g. a loaded machine stalls enable() itself
                        refused[c] += 1
                        print(f"  ({kind}, {c}: enable failed, again: {exc})")
        for c in candidates:
            if not runs[c]:
                print(f"{kind:7} {c:12} no run enabled ({refused[c]} attempts)")
                continue
            med = {
                k: statistics.median(float(r[k]) for r in runs[c])
                for k in ("p50", "p99", "max", "late", "cycles", "stale", "status_p50", "status_p99")
            }
            ok = all(bool(r["enabled"]) for r in runs[c])
            print(
                f"{kind:7} {c:12} {med['p50']:7.3f} {med['p99']:7.3f} {med['max']:7.2f} "
                f"{med['late']:4.0f}/{med['cycles']:<4.0f} {med['stale']:5.0f} "
                f"{med['status_p50']:9.1f}/{med['status_p99']:<10.1f} {'yes' if ok else 'NO'}"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
