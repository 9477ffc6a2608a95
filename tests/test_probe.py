"""``whih probe``: read-only scan of the configured bus."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from whih_control import Robot, load_config
from whih_control.cli import main

from .conftest import CONFIGS


def _rig_on_virtual(tmp_path: Path, channel: str) -> Path:
    """The EPOS4 rig config on a private virtual channel (nothing else on it)."""
    text = (CONFIGS / "rig-epos4.toml").read_text(encoding="utf-8")
    text = text.replace('interface = "socketcan"', 'interface = "virtual"').replace(
        'channel = "can0"', f'channel = "{channel}"'
    )
    assert tomllib.loads(text)["bus"]["channel"] == channel
    path = tmp_path / "rig.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_probe_lists_six_simulated_drives(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--config", str(CONFIGS / "sim.toml")]) == 0
    out = capsys.readouterr().out
    assert "6 node(s) answered" in out
    for nid, axis in enumerate(("ante_wire", "ante_wire_rot", "ante_mc", "retro_wire"), start=1):
        assert f"node {nid} ({axis}): vendor 0x00000000 product 0x00000402 revision 0x00010000" in out
    assert out.count("EDS: whih_sim_drive.eds: vendor and product match") == 6
    assert out.count("capability: ok: CSP supported (0x6502 = 0x80)") == 6
    assert "all configured drives ok" in out


def test_probe_on_an_empty_bus_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _rig_on_virtual(tmp_path, f"whih-probe-empty-{os.getpid()}")
    assert main(["probe", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "no node answered on virtual" in out
    assert "node ids [1, 2, 3, 4, 5, 6]" in out


def test_probe_with_a_bad_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[bus]\nbitrate = -1\n", encoding="utf-8")
    assert main(["probe", "--config", str(bad)]) == 2
    assert "bus.bitrate" in capsys.readouterr().err


def test_identities_go_into_events_and_summary(tmp_path: Path) -> None:
    """Set-up reads 0x1018 of every drive; the run folder keeps it (events.jsonl, summary.json)."""
    cfg = load_config(CONFIGS / "sim.toml")
    out = tmp_path / "run"
    with Robot(cfg, clock="simulated", out=out) as robot:
        robot.enable()
    events = [json.loads(line) for line in (out / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    drives = {e["axis"]: e for e in events if e["kind"] == "identity"}
    assert sorted(drives) == sorted(cfg.drives)
    expected = {"vendor": 0, "product": 0x402, "revision": 0x10000, "serial": 0}  # whih_sim_drive.eds
    assert all(e["identity"] == expected and e["notes"] == [] for e in drives.values())
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["axes"]["retro_mc"]["identity"] == expected
