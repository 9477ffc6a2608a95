"""The master's own stall: one definition (limits.stalled) fed by the cycle's own clock.

An injected ``master-freeze`` stops the master (no SYNC, heartbeat or RPDO) in simulated time as
in real time; the next cycle's time shows the gap and the supervisor judges it against half the
drives' master-heartbeat timeout. The SIGSTOP of a master in its own process is the real-time
case (tests/test_drives_process.py).
"""

from __future__ import annotations

import itertools
import time

import pytest

import whih_control as wc
from whih_control import limits
from whih_control.runtime_clock import RealTimePacer

from .conftest import CONFIGS


@pytest.fixture(scope="module")
def cfg() -> wc.Config:
    return wc.load_config(CONFIGS / "sim.toml")


def _freeze(cfg: wc.Config, ms: float) -> tuple[wc.Status, list[float]]:
    """Enable, hold still a moment, freeze the master for ``ms``, run a few more cycles."""
    stalls: list[float] = []
    with wc.Robot(cfg, clock="simulated", inject=[f"master-freeze:{ms:g}@0.5"]) as robot:
        robot.enable()
        rt = robot.runtime
        update = rt.core.update

        def watched(*args: object, **kwargs: object) -> object:
            stalls.append(rt._cycle_in.stall_s)
            return update(*args, **kwargs)  # type: ignore[arg-type]

        rt.core.update = watched  # type: ignore[method-assign]
        robot.wait(lambda s: s.t >= 0.6, timeout=2.0)
        return robot.status(), stalls


def test_a_freeze_up_to_half_the_heartbeat_timeout_is_no_fault(cfg: wc.Config) -> None:
    limit_ms = limits.stall_limit(cfg.bus.master_heartbeat_timeout_ms / 1000.0) * 1e3
    status, stalls = _freeze(cfg, limit_ms)
    assert not status.fault, status.fault
    assert all(d.state == "OPERATION_ENABLED" for d in status.drives.values())
    # the cycle saw the freeze as its stall input, exactly, once; every other cycle on time
    late = [s for s in stalls if s > 1e-9]
    assert late == [pytest.approx(limit_ms / 1e3)]


def test_a_longer_freeze_is_the_masters_own_stall_named_before_the_drives(cfg: wc.Config) -> None:
    """200 ms: the drives' heartbeat consumers (100 ms) have quick-stopped them by the time the
    master cycles again; the fault is still the master's stall, not their EMCYs."""
    status, stalls = _freeze(cfg, 200.0)
    assert status.fault.startswith("master stalled: 200.0 ms"), status.fault
    assert "allowed 50 ms" in status.fault
    assert status.faults[0].endswith(status.fault)
    assert max(stalls) == pytest.approx(0.2)


def test_a_process_stopped_while_waiting_for_its_slot_shows_the_stall_in_that_cycle() -> None:
    """SIGSTOP lands while the real-time cycle waits for its slot: the cycle that wakes must
    carry the stall in its time, before it reads the drives' reactions to it (their heartbeat
    EMCYs), or those would be taken as the cause."""
    period, stop_s = 0.0025, 0.3
    calls = 0

    def wait(deadline: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            time.sleep(stop_s)  # stands for the process being stopped inside the wait

    pacer = RealTimePacer(period, wait=wait)
    times = [pacer.next() for _ in range(5)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[2] >= stop_s - period, gaps  # the woken cycle's time jumped with the stop
    assert pacer.overruns >= int(stop_s / period) - 1
