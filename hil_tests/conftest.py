"""The hardware-in-the-loop contract suite's rig.

By default the suite runs on simulated CiA 402 drives over python-can's ``virtual`` bus in real
time (wall-clock cycle, drives in their own thread). ``WHIH_HIL_CONFIG=<config>`` points it at a
real rig instead (e.g. a copy of ``configs/rig-epos4.toml``); tests that need the simulator's
fault injection or plant are skipped there unless the config itself enables simulation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, _no_leaked_threads  # noqa: F401  (autouse fixture)
from whih_control import Config, Robot, load_config

from .bench import bench_robot


def _rig_config() -> Config:
    path = os.environ.get("WHIH_HIL_CONFIG")
    if path:
        return load_config(Path(path))
    cfg = load_config(CONFIGS / "sim.toml")
    # a short lesion and brisk speeds keep the real-time procedure around ten seconds
    # the simulated drives answer from a thread of this process: give their TPDOs 90 % of the cycle
    return cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="virtual", channel=f"whih-hil-{os.getpid()}"),
        cycle=dataclasses.replace(cfg.cycle, tpdo_deadline=0.9),
        procedure=dataclasses.replace(cfg.procedure, lesion_length=7.1, wire_speed=10.0, mc_speed=6.0),
    )


@pytest.fixture
def rig_config() -> Config:
    """The rig under test (simulated by default)."""
    return _rig_config()


@pytest.fixture
def simulated(rig_config: Config) -> bool:
    """True when the rig is the simulator (fault injection and plant available)."""
    return rig_config.sim.enabled


@pytest.fixture
def robot(rig_config: Config) -> Iterator[Robot]:
    """An opened robot; closing it quick-stops, disables and shuts the bus down."""
    with bench_robot(rig_config) as r:
        yield r
