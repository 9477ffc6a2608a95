"""Bus errors in the cycle: a refused send, error passive, bus-off -> fault, safe stop, run folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import can
import pytest

from firmware_iface import pdo
from firmware_iface.bus import open_bus
from firmware_iface.errors import DriveError
from firmware_iface.simbus import SimTimeBus
from firmware_iface.spec import BusConfig
from whih_control import runtime as runtime_module
from whih_control.api import Robot
from whih_control.cli import main
from whih_control.config import Config, load_config

from .conftest import CONFIGS


def _cfg() -> Config:
    cfg = load_config(CONFIGS / "sim.toml")
    return cfg.replace(bus=dataclasses.replace(cfg.bus, interface="whih-sim"))


class RefusingBus(SimTimeBus):
    """The simulated-time bus, whose interface refuses the master's frames (not SYNC) from
    ``fail_at`` seconds, for ``fail_for`` seconds (as a driver does at bus-off or with its
    transmit queue full); the drives' frames still arrive."""

    def __init__(self, *, fail_at: float, fail_for: float = 1e9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_at = fail_at
        self.fail_for = fail_for
        self.refused = 0

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        t = self.kernel.time
        if msg.arbitration_id != pdo.SYNC_COB and self.fail_at <= t < self.fail_at + self.fail_for:
            self.refused += 1
            raise can.CanOperationError("Transmit buffer full")
        super().send(msg, timeout)


class PassiveBus(SimTimeBus):
    """An interface that reports error passive, then bus-off, from ``after`` seconds."""

    def __init__(self, *, after: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.after = after

    @property
    def state(self) -> can.BusState:
        if self.kernel.time < self.after:
            return can.BusState.ACTIVE
        return can.BusState.PASSIVE if self.kernel.time < self.after + 0.2 else can.BusState.ERROR


def test_a_refused_send_in_the_cycle_is_a_fault_and_the_run_folder_is_completed(tmp_path: Path) -> None:
    """can.CanError from send escaped raw from the cycle, with no summary."""
    cfg = _cfg()
    bus = RefusingBus(fail_at=1.0, fail_for=0.05, period=cfg.period)
    try:
        with Robot(cfg, bus=bus, out=tmp_path / "run", auto_confirm=True) as robot:
            robot.enable()
            result = robot.run_procedure(max_time=5.0)
    finally:
        bus.shutdown()
    assert bus.refused > 0
    assert result.outcome == "fault"
    assert "Transmit buffer full" in result.reason and "CanOperationError" in result.reason
    t_fault = float(result.faults[0].split("s ", 1)[0])
    assert 1.0 <= t_fault <= 1.0 + 2 * cfg.period
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["outcome"] == "fault" and "Transmit buffer full" in summary["reason"]
    # once the interface takes frames again, the quick stop goes out: every drive stopped
    assert robot.runtime.drives is not None
    assert all(d.state.name == "SWITCH_ON_DISABLED" for d in robot.runtime.drives)


def test_error_passive_and_bus_off_are_faults() -> None:
    cfg = _cfg()
    bus = PassiveBus(after=1.0, period=cfg.period)
    try:
        with Robot(cfg, bus=bus, auto_confirm=True) as robot:
            robot.enable()
            result = robot.run_procedure(max_time=3.0)
    finally:
        bus.shutdown()
    assert result.outcome == "fault"
    assert "error passive (PASSIVE)" in result.reason
    assert any("bus-off (ERROR)" in f for f in result.faults)
    t_fault = float(result.faults[0].split("s ", 1)[0])
    assert 1.0 <= t_fault <= 1.0 + cfg.bus.master_heartbeat_ms / 1000 + cfg.period


def test_cli_a_bus_that_stays_refusing_ends_with_a_message_exit_1_and_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The drives stop on their own (their heartbeat consumer); the master says what it could
    not do; no traceback."""
    opened: list[RefusingBus] = []

    def simulated_time_bus(bus: can.BusABC | None, *, period: float) -> SimTimeBus:
        assert bus is None
        refusing = RefusingBus(fail_at=1.0, period=period)
        opened.append(refusing)
        return refusing

    monkeypatch.setattr(runtime_module, "simulated_time_bus", simulated_time_bus)
    out = tmp_path / "run"
    code = main(["run", "--config", str(CONFIGS / "sim.toml"), "--out", str(out), "--max-time", "4"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 1
    assert "Traceback" not in err
    assert "shutdown incomplete" in err and "RPDO1 not sent" in err
    # the run ended and was summarised before its closing failed: the console says how it ended
    assert "outcome: fault" in captured.out and f"run folder: {out}" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"] == "fault" and "Transmit buffer full" in summary["reason"]
    assert opened and opened[0].refused > 0


def test_shutdown_names_each_frame_it_could_not_send() -> None:
    cfg = _cfg()
    bus = RefusingBus(fail_at=0.5, period=cfg.period)
    try:
        robot = Robot(cfg, bus=bus, auto_confirm=True)
        with pytest.raises(DriveError, match=r"node 1 \(ante_wire\): RPDO1 not sent"), robot:
            robot.enable()
            while robot.time < 0.6:
                robot.runtime._cycle()
    finally:
        bus.shutdown()


def test_a_udp_multicast_bus_is_named_by_its_group_where_faults_and_banners_quote_it() -> None:
    """python-can's udp_multicast calls its channel "unknown": a bus fault read "CAN interface
    unknown (own echoes dropped)", and ``whih sim-drives`` said it served "on unknown"."""
    bus = open_bus(BusConfig(interface="udp_multicast", channel="239.74.163.9@43117"))
    try:
        assert bus.channel_info == "udp_multicast 239.74.163.9@43117 (own echoes dropped)"
    finally:
        bus.shutdown()
