"""Cycle pacing: wall-clock deadlines for real time, a counter for simulated time.

Real time uses absolute ``perf_counter`` deadlines (``start + k * period``) so errors never
accumulate; a slot that is already past when the cycle comes back is skipped, never caught up,
and counted as an overrun. Sleeping stops ``busy_wait_us`` before the deadline and the rest is a
short spin, because ``time.sleep`` wakes up late by tens to hundreds of microseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LoopStats", "RealTimePacer", "SimPacer"]


@dataclass(frozen=True, slots=True)
class LoopStats:
    """Timing of a run's cycles (real time) or just its count (simulated time)."""

    cycles: int
    overruns: int
    """Slots skipped because a cycle came back after the next deadline."""
    rate_hz: float
    """Achieved cycle rate."""
    period_error_p50_ms: float
    period_error_p99_ms: float
    period_error_max_ms: float
    """|SYNC-to-SYNC interval - period|, from up to the last 1,000,000 cycles."""
    cpu_percent: float
    """Process CPU time over wall time while cycling."""

    def as_dict(self) -> dict[str, float | int]:
        """For summary.json."""
        return {
            "cycles": self.cycles,
            "overruns": self.overruns,
            "rate_hz": self.rate_hz,
            "period_error_p50_ms": self.period_error_p50_ms,
            "period_error_p99_ms": self.period_error_p99_ms,
            "period_error_max_ms": self.period_error_max_ms,
            "cpu_percent": self.cpu_percent,
        }


class SimPacer:
    """Simulated time: cycle k happens at ``k * period``; nothing waits."""

    realtime = False

    def __init__(self, period: float, clock: Callable[[], float] | None = None) -> None:
        """``clock`` gives the time of the next SYNC (e.g. from the simulated-time bus)."""
        self.period = period
        self.cycles = 0
        self._clock = clock

    def next(self) -> float:
        """Time of the next cycle (s since start)."""
        t = self.cycles * self.period if self._clock is None else self._clock()
        self.cycles += 1
        return t

    def deadline(self) -> float | None:
        """No TPDO deadline in simulated time: the bus answers synchronously."""
        return None

    def elapsed(self) -> float:
        """Time since this cycle's slot: none passes inside a simulated cycle."""
        return 0.0

    def stats(self) -> LoopStats:
        """Cycle count only: simulated time has no jitter."""
        return LoopStats(self.cycles, 0, 1.0 / self.period, 0.0, 0.0, 0.0, 0.0)


class RealTimePacer:
    """Wall-clock pacing with absolute deadlines, skipped (never caught-up) slots and statistics."""

    realtime = True
    MAX_SAMPLES = 1_000_000

    def __init__(
        self,
        period: float,
        *,
        busy_wait_s: float = 200e-6,
        tpdo_fraction: float = 0.5,
        wait: Callable[[float], None] | None = None,
    ) -> None:
        """``wait(deadline)`` blocks until the perf_counter ``deadline`` (e.g. reading the bus)."""
        self.period = period
        self._wait = wait
        self.busy_wait_s = busy_wait_s
        self.tpdo_fraction = tpdo_fraction
        self.cycles = 0
        self.overruns = 0
        self._start = 0.0
        self._slot = 0
        self._last = 0.0
        self._cpu0 = 0.0
        self._intervals = np.zeros(self.MAX_SAMPLES)
        self._n = 0
        self._now = 0.0

    def next(self) -> float:
        """Wait for the next slot; return its time in seconds since the first cycle."""
        if self.cycles == 0:
            self._start = time.perf_counter()
            self._cpu0 = time.process_time()
            self._last = self._start
            self.cycles = 1
            self._now = self._start
            return 0.0
        self._slot += 1
        target = self._start + self._slot * self.period
        now = time.perf_counter()
        if now > target:
            missed = int((now - target) / self.period)
            if missed:
                self.overruns += missed
                self._slot += missed
                target = self._start + self._slot * self.period
        if self._wait is not None:
            self._wait(target)
        else:
            remaining = target - now
            if remaining > self.busy_wait_s:
                time.sleep(remaining - self.busy_wait_s)
        while (now := time.perf_counter()) < target:
            pass
        if now - target >= self.period:
            # stopped or starved during the wait (SIGSTOP): the slots slept through are skipped
            # too, so the cycle's time shows the stall before it reads what the stall caused
            missed = int((now - target) / self.period)
            self.overruns += missed
            self._slot += missed
        if self._n < self.MAX_SAMPLES:
            self._intervals[self._n] = now - self._last
            self._n += 1
        self._last = now
        self._now = now
        self.cycles += 1
        return self._slot * self.period

    def deadline(self) -> float | None:
        """perf_counter value by which this cycle's TPDOs must have arrived."""
        return self._now + self.period * self.tpdo_fraction

    def elapsed(self) -> float:
        """Wall seconds since this cycle's slot began (long if the process stopped inside it)."""
        return time.perf_counter() - self._now

    def stats(self) -> LoopStats:
        """Timing statistics of the cycles so far."""
        wall = max(time.perf_counter() - self._start, 1e-9)
        cpu = time.process_time() - self._cpu0
        err = np.abs(self._intervals[: self._n] - self.period) * 1e3
        if err.size == 0:
            err = np.zeros(1)
        return LoopStats(
            cycles=self.cycles,
            overruns=self.overruns,
            rate_hz=self.cycles / wall,
            period_error_p50_ms=float(np.percentile(err, 50)),
            period_error_p99_ms=float(np.percentile(err, 99)),
            period_error_max_ms=float(err.max()),
            cpu_percent=100.0 * cpu / wall,
        )
