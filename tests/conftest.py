"""Shared fixtures and the hypothesis profiles.

``HYPOTHESIS_PROFILE=ci`` (default): >= 200 examples per property, derandomized so CI is
repeatable. ``HYPOTHESIS_PROFILE=thorough``: >= 10,000 examples/sequences per property.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
EDS_DIR = ROOT / "tests" / "data" / "eds"
"""Vendor object dictionaries kept as test data (sources and licences in SOURCES.md there)."""
EPOS4_DCF = ROOT / "firmware_iface" / "eds" / "maxon_epos4_50_15_node1.dcf"
"""The maxon EPOS4 DCF ships with the package (the rig configs use it); SOURCES.md covers it."""

FAULT_EXAMPLES = [
    "heartbeat-loss:retro_mc",
    "tpdo-drop:ante_mc:5",
    "emcy:ante_wire:0x8611",
    "encoder-jump:ante_wire:3.0",
    "encoder-stuck:retro_wire",
    "force-spike:ante_mc:5.0",
    "drive-fault:retro_mc",
    "boot-up:ante_wire",
    "sync-loss",
    "master-freeze:200",
    "estop",
    "deadman-release",
    "imaging-loss",
]
"""One injectable fault of every kind (without its time), for the end-to-end and HIL suites."""

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "mutation",
    parent=settings.get_profile("ci"),
    phases=[Phase.explicit, Phase.generate],
    database=None,
)
"""The ci examples without shrinking: tools/mutate.py only needs to know that a test fails."""
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under the thorough profile a single property may run for many minutes: no time-out."""
    if THOROUGH:
        for item in items:
            item.add_marker(pytest.mark.timeout(0), append=False)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (a bus notifier, a drive simulator...)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    for t in leaked:
        t.join(timeout=2.0)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked running threads: {still}"


@pytest.fixture(autouse=True)
def _sigint_as_python_sets_it() -> Iterator[None]:
    """Python installs its Ctrl-C handler only when SIGINT was not ignored at start, and a shell
    starts background jobs with it ignored: the tests of Ctrl-C handling need it wherever
    pytest was started from, and every other test runs as it would in a terminal."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def sim_config_path() -> Path:
    """The default simulation config file."""
    return CONFIGS / "sim.toml"
