"""Simulated imaging: frame rate, latency, noise, dropout, partial visibility, loss, determinism."""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections.abc import Mapping

import pytest

from whih_control.config import Config, load_config
from whih_control.sim import ImagingSource, Plant
from whih_control.types import TipMeasurement

from .conftest import CONFIGS

DT = 1.0 / 400.0


class _Still:
    """Tips that never move, so every deviation of a measurement is noise."""

    def __init__(self) -> None:
        self.values = {"ante_wire": 1.0, "ante_mc": -2.0, "retro_wire": 3.0, "retro_mc": 30.0}

    def tips(self) -> Mapping[str, float]:
        return self.values


def _cfg(**imaging: object) -> Config:
    base = load_config(CONFIGS / "sim.toml")
    return base.replace(imaging=dataclasses.replace(base.imaging, **imaging))


def _run(src: ImagingSource, seconds: float) -> list[TipMeasurement]:
    out: list[TipMeasurement] = []
    for i in range(round(seconds / DT) + 1):
        out.extend(src.poll(i * DT))
    return out


def test_frames_arrive_at_the_frame_rate_after_the_latency() -> None:
    src = ImagingSource(_cfg(frame_rate=10.0, latency_ms=120.0, dropout=0.0), _Still(), seed=1)
    frames = _run(src, 10.0)
    # captures at 0, 0.1, ..., 9.9 (and 10.0, still in flight at 10.0 s)
    assert len(frames) == 99
    for f in frames:
        assert f.t_arrival - f.t_capture == pytest.approx(0.120)
    gaps = [b.t_capture - a.t_capture for a, b in itertools.pairwise(frames)]
    assert max(gaps) == pytest.approx(0.1, abs=DT + 1e-9)
    assert min(gaps) == pytest.approx(0.1, abs=DT + 1e-9)


def test_noise_is_gaussian_with_the_configured_sigma() -> None:
    still = _Still()
    src = ImagingSource(_cfg(frame_rate=50.0, noise_mm=0.3, dropout=0.0), still, seed=2)
    frames = _run(src, 60.0)
    errors = [f.tips["ante_mc"] - still.values["ante_mc"] for f in frames]
    assert len(errors) > 2500
    assert statistics.mean(errors) == pytest.approx(0.0, abs=0.03)
    assert statistics.stdev(errors) == pytest.approx(0.3, rel=0.08)


def test_dropout_loses_that_share_of_frames() -> None:
    src = ImagingSource(_cfg(frame_rate=50.0, dropout=0.2), _Still(), seed=3)
    frames = _run(src, 60.0)
    assert src.frames_dropped / src.frames_captured == pytest.approx(0.2, abs=0.03)
    in_flight = src.frames_captured - src.frames_dropped - len(frames)
    assert 0 <= in_flight <= 6  # 100 ms latency at 50 frames/s


def test_partial_visibility_hides_single_tips() -> None:
    src = ImagingSource(_cfg(frame_rate=50.0, dropout=0.0, tip_miss=0.25), _Still(), seed=4)
    frames = _run(src, 30.0)
    seen = [len(f.tips) for f in frames]
    assert statistics.mean(seen) == pytest.approx(3.0, abs=0.15)
    assert min(seen) < 4 and max(seen) == 4


def test_imaging_loss_stops_frames_until_restored() -> None:
    src = ImagingSource(_cfg(frame_rate=10.0, dropout=0.0, latency_ms=100.0), _Still(), seed=5)
    before = _run(src, 1.0)
    assert before
    src.set_lost(True)
    assert src.lost
    got = []
    for i in range(401, 1200):
        got.extend(src.poll(i * DT))
    assert got == []
    src.set_lost(False)
    after = []
    for i in range(1200, 1600):
        after.extend(src.poll(i * DT))
    assert after and all(f.t_capture >= 1200 * DT for f in after)


def test_same_seed_same_frames_and_tips_track_the_plant() -> None:
    cfg = load_config(CONFIGS / "sim.toml")

    def record(seed: int) -> list[TipMeasurement]:
        plant = Plant(cfg, seed=seed)
        src = ImagingSource(cfg, plant, seed=seed)
        ins = dict.fromkeys(cfg.drives, 0.0)
        out: list[TipMeasurement] = []
        for i in range(2000):
            ins["ante_mc"] = 0.005 * i
            plant.step(i * DT, DT, ins)
            out.extend(src.poll(i * DT))
        return out

    a, b = record(9), record(9)
    assert a == b and len(a) > 20
    assert a != record(10)
    last = a[-1]
    assert last.tips["ante_mc"] > -2.0 + 5.0  # the MC advanced ~10 mm; frames show it moving


def test_time_must_not_go_back_and_seed_must_be_valid() -> None:
    src = ImagingSource(_cfg(), _Still(), seed=0)
    src.poll(1.0)
    with pytest.raises(ValueError, match="t "):
        src.poll(0.5)
    with pytest.raises(ValueError, match="seed"):
        ImagingSource(_cfg(), _Still(), seed=-3)
