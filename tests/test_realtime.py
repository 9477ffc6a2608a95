"""Real time on python-can's virtual bus: the cycle goes on between API calls.

Wall-clock tests: marked ``realtime``, out of the default run (a busy machine can make them
fail); ``.ci/run`` runs them in a step of their own, ``pytest -m realtime`` here.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import can
import numpy as np
import pytest

import whih_control as wc

from .conftest import CONFIGS

pytestmark = pytest.mark.realtime


def _rt_config(channel: str = "whih-rt") -> wc.Config:
    """The shipped configuration on a virtual bus of this process, a generous TPDO deadline."""
    cfg = wc.load_config(CONFIGS / "sim.toml")
    return cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="virtual", channel=f"{channel}-{os.getpid()}"),
        cycle=dataclasses.replace(cfg.cycle, tpdo_deadline=0.9),
    )


def _gaps(trace: Path, cob: int, t0: float, t1: float) -> np.ndarray:
    """Intervals between the frames of ``cob`` in ``trace`` between t0 and t1."""
    stamps = [
        m.timestamp for m in can.LogReader(str(trace)) if m.arbitration_id == cob and t0 <= m.timestamp <= t1
    ]
    return np.diff(np.array(stamps))


def _assert_attended(
    cfg: wc.Config, out: Path, before: wc.Status, after: wc.Status, t0: float, t1: float
) -> None:
    """Between ``t0`` and ``t1`` no target moved, and SYNC and the master heartbeat kept their
    periods in ``out``'s trace."""
    assert {a: d.target for a, d in after.drives.items()} == {a: d.target for a, d in before.drives.items()}
    sync = _gaps(out / "trace.asc", 0x080, t0, t1)
    heartbeat = _gaps(out / "trace.asc", 0x700 + cfg.bus.master_node_id, t0, t1)
    assert len(sync) >= 0.95 * (t1 - t0) / cfg.period
    # one skipped slot (a gap of exactly 2 periods) is allowed; 1 us absorbs float rounding
    assert sync.max() <= 2 * cfg.period + 1e-6, f"SYNC gap {sync.max() * 1e3:.2f} ms"
    hb_period = cfg.bus.master_heartbeat_ms / 1000
    assert heartbeat.max() <= 2 * hb_period, f"heartbeat gap {heartbeat.max() * 1e3:.2f} ms"


def test_two_idle_seconds_after_enable_keep_sync_heartbeat_and_targets(tmp_path: Path) -> None:
    cfg = _rt_config()
    out = tmp_path / "run"
    with wc.Robot(cfg, clock="real", out=out) as robot:
        robot.enable()
        t0 = robot.time
        before = robot.status()
        time.sleep(2.0)  # the application does nothing at all: that is the condition under test
        after = robot.status()
        t1 = robot.time
    assert t1 - t0 >= 1.9
    assert all(d.state == "OPERATION_ENABLED" for d in after.drives.values()), after.drives
    assert after.phase == "ready" and not after.fault and not after.faults
    _assert_attended(cfg, out, before, after, t0, t1)


def test_status_and_verbs_from_another_thread_while_the_main_thread_waits() -> None:
    cfg = _rt_config()
    with wc.Robot(cfg, clock="real") as robot:
        robot.enable()
        seen: list[wc.Status] = []
        errors: list[BaseException] = []

        def operator() -> None:
            try:
                for _ in range(20):
                    seen.append(robot.status())
                robot.teleop("retro_wire", -0.2)
            except BaseException as exc:
                errors.append(exc)

        th = threading.Thread(target=operator)
        th.start()
        th.join()
        assert not errors
        assert [s.cycle for s in seen] == sorted(s.cycle for s in seen)
        status = robot.wait(lambda s: not s.teleop, timeout=2.0)  # not renewed: it ends by itself
        assert status.teleop == ()


def test_a_cycle_that_raises_is_reported_by_every_later_call(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _rt_config()
    with wc.Robot(cfg, clock="real") as robot:
        robot.enable()
        rt = robot.runtime

        def broken(t: float) -> None:
            raise RuntimeError("a bug in the cycle")

        monkeypatch.setattr(rt, "_expire_teleop", broken)
        with pytest.raises(wc.WhihError, match=r"the cycle stopped \(RuntimeError: a bug in the cycle"):
            robot.wait(until="withdraw", timeout=2.0)
        with pytest.raises(wc.WhihError, match="the cycle stopped"):
            robot.status()
        with pytest.raises(wc.WhihError, match="the cycle stopped"):
            robot.pause()
        monkeypatch.undo()
    # close still quick-stopped and disabled every drive
    assert {a.state.name for a in rt.master.feedback.axes.values()} <= {"SWITCH_ON_DISABLED"}
