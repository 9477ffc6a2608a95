"""Simulated fluoroscopy tip tracking: late, noisy, sometimes lost or partial frames.

Frames are captured every ``1 / imaging.frame_rate`` seconds from the plant's true tips, delayed by
``imaging.latency_ms``, with Gaussian noise ``imaging.noise_mm`` per tip; a frame is lost with
probability ``imaging.dropout`` and each tip of a delivered frame is missing with probability
``imaging.tip_miss``. ``set_lost(True)`` cuts the source completely (imaging-loss fault): nothing
is captured until it is set back. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol

from whih_control.config import Config
from whih_control.types import TipMeasurement

__all__ = ["ImagingSource", "TipSource"]


class TipSource(Protocol):
    """Anything with true tip positions (a :class:`whih_control.sim.Plant`)."""

    def tips(self) -> Mapping[str, float]:
        """True tip position per linear axis, mm in s."""
        ...


_NOTHING: tuple[TipMeasurement, ...] = ()


class ImagingSource:
    """Tip measurements from ``plant`` as a fluoroscopy tip tracker would deliver them.

    ``poll(t)`` is called with a non-decreasing time (normally once per control cycle); a frame
    is captured at the first poll at or after its scheduled time, from the tips the plant has
    then, and delivered by the first poll at or after capture + latency.
    """

    def __init__(self, cfg: Config, plant: TipSource, seed: int | None = None) -> None:
        im = cfg.imaging
        seed = cfg.sim.seed if seed is None else seed
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed (={seed!r}) must be an integer in [0...2**63-1]")
        self._plant = plant
        self._period = 1.0 / im.frame_rate
        self._latency = im.latency_ms / 1000.0
        self._noise = im.noise_mm
        self._dropout = im.dropout
        self._miss = im.tip_miss
        # a stream of its own, so imaging draws never shift the plant's
        self._rng = random.Random(seed ^ 0x1A6E_5EED)
        self._next = 0.0
        self._last_t = -float("inf")
        self._pending: deque[TipMeasurement] = deque()
        self._lost = False
        self.frames_captured = 0
        """Frames taken (including those lost on the way)."""
        self.frames_dropped = 0
        """Frames lost (dropout)."""

    @property
    def lost(self) -> bool:
        """The source is cut (imaging-loss)."""
        return self._lost

    def set_lost(self, lost: bool) -> None:
        """Cut (True) or restore (False) the imaging source. Frames in flight are discarded."""
        self._lost = bool(lost)
        if self._lost:
            self._pending.clear()

    def poll(self, t: float) -> Sequence[TipMeasurement]:
        """Frames that arrived by time ``t`` (oldest first); empty most cycles."""
        if t < self._last_t:
            raise ValueError(f"t (={t!r}) must not go back in time (last poll at {self._last_t!r})")
        self._last_t = t
        if t >= self._next:
            # a late poll takes one frame now and skips the frames it missed
            missed = int((t - self._next) / self._period)
            self._next += (missed + 1) * self._period
            if not self._lost:
                self._capture(t)
        pending = self._pending
        if not pending or pending[0].t_arrival > t:
            return _NOTHING
        out = []
        while pending and pending[0].t_arrival <= t:
            out.append(pending.popleft())
        return out

    def _capture(self, t: float) -> None:
        rng = self._rng
        self.frames_captured += 1
        if rng.random() < self._dropout:
            self.frames_dropped += 1
            return
        tips: dict[str, float] = {}
        for axis, p in self._plant.tips().items():
            noise = rng.gauss(0.0, self._noise) if self._noise > 0.0 else 0.0
            if self._miss > 0.0 and rng.random() < self._miss:
                continue
            tips[axis] = p + noise
        self._pending.append(TipMeasurement(t_capture=t, t_arrival=t + self._latency, tips=tips))
