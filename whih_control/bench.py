"""Bench imaging: tip measurements for a rig with nothing to image.

Used by the contract suite on a rig, and by ``whih run --realtime --external-drives``, where the
simulated plant lives with the drives in another process and the master can measure only what
the drives report: each tip starts where the simulated procedure starts it and moves with its
drive (no slack, no buckling, no lesion the master could see).
"""

from __future__ import annotations

from typing import Any

from firmware_iface.cia402 import DriveState
from whih_control.api import Robot
from whih_control.config import Config
from whih_control.runtime import Progress
from whih_control.sim import Plant
from whih_control.types import AXIS_DIRECTION, TipMeasurement

__all__ = ["BenchImaging", "bench_robot"]


class BenchImaging:
    """Tip measurements for a bench rig with no imaging (``imaging.source = "external"``).

    ``enable()`` calibrates on the first complete tip measurement, and a bench has nothing to
    image: each tip starts where the simulated procedure starts it and moves with its drive.
    Called with the robot's progress (every 0.1 s of cycle time, 10 frames/s) from its cycle.
    """

    def __init__(self, cfg: Config) -> None:
        self.robot: Robot | None = None
        self._start = dict(Plant(cfg, seed=0).tips())
        self._origin: dict[str, float] | None = None

    def __call__(self, progress: Progress) -> None:
        if self.robot is None:
            return
        fb = self.robot.runtime.master.feedback.axes
        if not all(fb[a].age_cycles == 0 and fb[a].state is not DriveState.UNKNOWN for a in self._start):
            return  # some drive has not reported its position this cycle
        pos = {a: fb[a].position for a in self._start}
        if self._origin is None:
            self._origin = pos
        origin = self._origin
        tips = {a: s0 + AXIS_DIRECTION[a] * (pos[a] - origin[a]) for a, s0 in self._start.items()}
        self.robot.add_measurement(TipMeasurement(progress.t, progress.t, tips))


def bench_robot(cfg: Config, **kwargs: Any) -> Robot:
    """A robot for ``cfg``; with external imaging, fed by :class:`BenchImaging`."""
    if cfg.imaging.source != "external":
        return Robot(cfg, **kwargs)
    if "progress" in kwargs:
        raise TypeError("bench_robot: progress is taken by the bench imaging")
    imaging = BenchImaging(cfg)
    robot = Robot(cfg, progress=imaging, **kwargs)
    imaging.robot = robot
    return robot
