"""The master and the drives in separate processes (``whih sim-drives`` on udp_multicast).

The master dies (SIGKILL) or stops (SIGSTOP for 1 s) while it moves a wire: every drive stops by
itself on its master-heartbeat consumer (0x1016 -> abort connection 0x6007 -> quick stop
0x605A = 2). An observer in this process hears the bus: the master's last heartbeat, each
drive's EMCY 0x8130 (the consumer's time-out, which starts its quick stop) and, by SDO, each
drive's statusword and position actual afterwards. Wall-clock tests: marker ``realtime``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import can
import pytest

from firmware_iface import pdo
from firmware_iface.bus import open_bus
from firmware_iface.cia402 import DriveState, decode_statusword
from firmware_iface.spec import BusConfig
from whih_control.config import load_config

from .conftest import CONFIGS, ROOT

pytestmark = pytest.mark.realtime

CFG = load_config(CONFIGS / "sim.toml")
NODES = {d.node_id: a for a, d in CFG.drives.items()}
MASTER_HB = pdo.heartbeat_cob(CFG.bus.master_node_id)
TIMEOUT_S = CFG.bus.master_heartbeat_timeout_ms / 1000.0
RAMP_S = max(d.max_speed / d.quick_stop_decel for d in CFG.drives.values())


@dataclass
class Heard:
    master_hb: list[float] = field(default_factory=list)
    emcy_8130: dict[int, float] = field(default_factory=dict)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _wait_line(proc: subprocess.Popen[str], start: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(start):
            return line
        if not line and proc.poll() is not None:
            break
    err = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
    raise AssertionError(f"no {start!r} line within {timeout} s (exit {proc.poll()}): {err[-2000:]}")


@pytest.fixture
def channel() -> str:
    rng = random.Random()
    return f"239.74.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}@{rng.randrange(40_000, 50_000)}"


@pytest.fixture
def drives(channel: str) -> Iterator[subprocess.Popen[str]]:
    proc = _spawn(
        "-m", "whih_control.cli", "sim-drives", "--config", str(CONFIGS / "sim.toml"),
        "--interface", "udp_multicast", "--channel", channel,
    )  # fmt: skip
    try:
        _wait_line(proc, "whih sim-drives: serving", 60.0)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        else:
            assert "whih sim-drives: stopped" in out


def _listen(bus: can.BusABC, heard: Heard, until: float) -> None:
    while (left := until - time.monotonic()) > 0:
        msg = bus.recv(left)
        if msg is None:
            continue
        now = time.monotonic()
        cob = msg.arbitration_id
        if cob == MASTER_HB:
            heard.master_hb.append(now)
        elif (
            cob & 0x780 == 0x080
            and (cob & 0x7F) in NODES
            and msg.dlc >= 2
            and int.from_bytes(msg.data[:2], "little") == 0x8130
        ):
            heard.emcy_8130.setdefault(cob & 0x7F, now)


def _sdo_read(bus: can.BusABC, node: int, index: int, sub: int = 0) -> int:
    """An expedited SDO upload (CiA 301), as any tool on the bus could do."""
    req = bytes([0x40, index & 0xFF, index >> 8, sub, 0, 0, 0, 0])
    bus.send(can.Message(arbitration_id=0x600 + node, data=req, is_extended_id=False))
    deadline = time.monotonic() + 1.0
    while (left := deadline - time.monotonic()) > 0:
        msg = bus.recv(left)
        if msg is not None and msg.arbitration_id == 0x580 + node and msg.data[1:4] == req[1:4]:
            assert msg.data[0] & 0xE0 == 0x40, f"SDO abort from node {node}: {bytes(msg.data).hex()}"
            return int.from_bytes(msg.data[4:8], "little", signed=index == 0x6064)
    raise AssertionError(f"node {node}: no SDO answer for 0x{index:04X}")


def _observer(channel: str) -> can.BusABC:
    return open_bus(BusConfig(interface="udp_multicast", channel=channel))


def _check_every_drive_stopped(obs: can.BusABC, heard: Heard, what: str) -> dict[int, float]:
    last_hb = max(t for t in heard.master_hb if t < min(heard.emcy_8130.values(), default=float("inf")))
    delays = {n: heard.emcy_8130[n] - last_hb for n in NODES if n in heard.emcy_8130}
    print(f"\n{what}: master's last heartbeat -> each drive's EMCY 0x8130 (quick stop starts):")
    for n, d in sorted(delays.items()):
        print(f"  node {n} ({NODES[n]}): {d * 1e3:.1f} ms")
    assert sorted(delays) == sorted(NODES), (
        f"drives that did not stop by themselves: {set(NODES) - set(delays)}"
    )
    # the consumer's time-out counts from the last heartbeat it heard; scheduling on a shared
    # machine adds to it; the quick stop itself then ends within the ramp
    assert all(d <= TIMEOUT_S + 0.15 for d in delays.values()), delays
    positions = {n: _sdo_read(obs, n, 0x6064) for n in NODES}
    time.sleep(0.2)
    for n, axis in NODES.items():
        state = decode_statusword(_sdo_read(obs, n, 0x6041))
        assert state is DriveState.SWITCH_ON_DISABLED, (axis, state)  # ramp done, torque off
        assert _sdo_read(obs, n, 0x6064) == positions[n]  # and nothing moves any more
    return delays


def test_sigkill_of_the_master_during_motion_every_drive_stops_by_itself(
    channel: str, drives: subprocess.Popen[str]
) -> None:
    obs = _observer(channel)
    master = _spawn("-m", "tests._udp_master", channel)
    try:
        _wait_line(master, "enabled", 90.0)
        heard = Heard()
        _listen(obs, heard, time.monotonic() + 0.5)  # moving
        assert heard.master_hb, "the master's heartbeat is not on the bus"
        master.send_signal(signal.SIGKILL)
        master.wait()
        _listen(obs, heard, time.monotonic() + TIMEOUT_S + RAMP_S + 0.5)
        _check_every_drive_stopped(obs, heard, "SIGKILL")
    finally:
        if master.poll() is None:
            master.kill()
        master.communicate()
        obs.shutdown()


def test_sigstop_of_the_master_every_drive_stops_and_the_master_reports_its_own_stall(
    channel: str, drives: subprocess.Popen[str]
) -> None:
    obs = _observer(channel)
    master = _spawn("-m", "tests._udp_master", channel)
    try:
        _wait_line(master, "enabled", 90.0)
        heard = Heard()
        _listen(obs, heard, time.monotonic() + 0.5)
        master.send_signal(signal.SIGSTOP)
        _listen(obs, heard, time.monotonic() + 1.0)
        stopped = dict(heard.emcy_8130)
        state = {n: decode_statusword(_sdo_read(obs, n, 0x6041)) for n in NODES}
        master.send_signal(signal.SIGCONT)
        assert sorted(stopped) == sorted(NODES), "every drive stopped while the master was stopped"
        assert set(state.values()) == {DriveState.SWITCH_ON_DISABLED}, state
        last_hb = max(t for t in heard.master_hb if t < min(stopped.values()))
        print("\nSIGSTOP: master's last heartbeat -> each drive's EMCY 0x8130 (quick stop starts):")
        for n, t in sorted(stopped.items()):
            print(f"  node {n} ({NODES[n]}): {(t - last_hb) * 1e3:.1f} ms")
        assert all(t - last_hb <= TIMEOUT_S + 0.15 for t in stopped.values())
        line = _wait_line(master, "fault: ", 30.0)
        assert line.startswith("fault: master stalled"), line  # its own stall, not the drives' EMCYs
        master.communicate(timeout=30.0)
        assert master.returncode == 0
    finally:
        if master.poll() is None:
            master.kill()
            master.communicate()
        obs.shutdown()


def test_whih_run_realtime_with_the_drives_in_their_own_process(
    channel: str, drives: subprocess.Popen[str], tmp_path: Path
) -> None:
    """``whih run --realtime --external-drives``: no drive thread in the master's process."""
    text = (CONFIGS / "sim.toml").read_text()
    text = re.sub(r"(?m)^interface = .*$", 'interface = "udp_multicast"', text, count=1)
    text = re.sub(r"(?m)^channel = .*$", f'channel = "{channel}"', text, count=1)
    config = tmp_path / "external.toml"
    config.write_text(text)
    run = _spawn(
        "-m", "whih_control.cli", "run", "--config", str(config), "--realtime", "--external-drives",
        "--max-time", "3", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1, err[-2000:]  # not crossed in 3 s
    assert "outcome: timeout" in out and "Traceback" not in err
    assert "fault:" not in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["outcome"] == "timeout" and summary["config"]["sim"]["enabled"] is False
