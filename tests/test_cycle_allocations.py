"""The cyclic path allocates nothing that grows (docs/DESIGN.md section 2).

In steady hand-in-hand the procedure hands out the same objective objects, updated in place
(never a dict or AxisObjective per cycle), and a few hundred cycles of the whole stack leave no
memory behind in the cyclic modules, even when every objective handed out is kept (as a
consumer that records them might).
"""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from pathlib import Path
from typing import Any

import whih_control as wc
from whih_control.api import Robot
from whih_control.procedure import Phase
from whih_control.types import Objective

from .conftest import CONFIGS

_CYCLIC = (
    "whih_control/procedure.py",
    "whih_control/safety.py",
    "whih_control/limits.py",
    "whih_control/support.py",
    "whih_control/estimate.py",
    "whih_control/control.py",
    "whih_control/core.py",
    "firmware_iface/master.py",
    "firmware_iface/pdo.py",
)
_HIH = frozenset(p for p in Phase if p.value.startswith("hand_in_hand"))


def _grown(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> dict[str, int]:
    """Bytes still held at ``after`` that were allocated since ``before``, per cyclic file."""
    out: dict[str, int] = {}
    for stat in after.compare_to(before, "filename"):
        name = Path(stat.traceback[0].filename).as_posix()
        for f in _CYCLIC:
            if name.endswith(f) and stat.size_diff > 0:
                out[f] = out.get(f, 0) + stat.size_diff
    return out


def _robot_in_hand_in_hand() -> Robot:
    cfg = wc.load_config(CONFIGS / "sim.toml")
    cfg = cfg.replace(sim=dataclasses.replace(cfg.sim, enabled=True, seed=0))
    robot = Robot(cfg, clock="simulated", seed=0, auto_confirm=True)
    robot.__enter__()
    robot.enable()
    robot.start_procedure()
    robot.wait(until="hand_in_hand", timeout=60.0)
    return robot


def test_steady_hand_in_hand_reuses_its_objectives_and_grows_nothing() -> None:
    robot = _robot_in_hand_in_hand()
    try:
        proc = robot._runtime.procedure
        kept: list[tuple[Phase, Objective]] = []
        tick = proc.tick

        def keeping(t: float, inputs: Any) -> Objective:
            obj = tick(t, inputs)
            kept.append((proc.phase, obj))
            return obj

        proc.tick = keeping  # type: ignore[method-assign]
        # one whole step (retro step, ante follow, verify) first: every objective made once
        robot.step(200)
        warm = len(kept)
        gc.collect()
        tracemalloc.start(1)
        try:
            # values held in preallocated slots (ring buffers, last feedback) are replaced every
            # cycle: once traced through one window, the next window replaces them one for one
            robot.step(400)
            gc.collect()
            before = tracemalloc.take_snapshot()
            robot.step(400)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert robot.status().phase in _HIH, robot.status().phase
    finally:
        robot.__exit__(None, None, None)

    steady = kept[warm:]
    moving = [(ph, o) for ph, o in steady if ph in _HIH and o.motion_allowed]
    assert len(moving) > 300, [ph for ph, _ in steady]
    # one objective object per phase and set of axes: no Objective, dict or AxisObjective per cycle
    by_key: dict[tuple[Phase, tuple[str, ...]], set[int]] = {}
    for ph, o in moving:
        by_key.setdefault((ph, tuple(o.axes)), set()).add(id(o))
        assert all(type(a).__name__ == "AxisObjective" for a in o.axes.values())
    assert by_key and all(len(ids) == 1 for ids in by_key.values()), {k: len(v) for k, v in by_key.items()}
    assert {ph for ph, _ in moving} >= {Phase.HAND_IN_HAND_RETRO_STEP, Phase.HAND_IN_HAND_ANTE_FOLLOW}
    # 400 cycles with every objective kept: a per-cycle dict would hold > 400 x 200 bytes here
    grown = _grown(before, after)
    assert sum(grown.values()) < 2048, grown
