"""A master in its own process for the drives-in-their-own-process tests.

``python -m tests._udp_master CHANNEL``: the default configuration on ``udp_multicast`` CHANNEL,
no simulated drives of its own (``whih sim-drives`` serves them), bench imaging; enables, prints
``enabled``, then jogs the antegrade wire a long way. If a fault ends the jog (e.g. after a
SIGSTOP), prints ``fault: <why>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys

from hil_tests.bench import bench_robot
from tests.conftest import CONFIGS
from whih_control import load_config
from whih_control.errors import SafetyError


def main(channel: str) -> int:
    cfg = load_config(CONFIGS / "sim.toml")
    cfg = cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="udp_multicast", channel=channel),
        sim=dataclasses.replace(cfg.sim, enabled=False),
        imaging=dataclasses.replace(cfg.imaging, source="external"),
    )
    with bench_robot(cfg) as robot:
        robot.enable()
        print("enabled", flush=True)
        with contextlib.suppress(SafetyError):
            robot.jog("ante_wire", 100.0)
        sup = robot.runtime.core.supervisor
        if sup.latched:
            print(f"fault: {sup.latched_verdict.text}", flush=True)
            print(f"faults: {robot.runtime.faults}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
