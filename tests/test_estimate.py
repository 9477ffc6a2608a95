"""Tip estimator: slack model, calibration, delayed imaging fusion, rejection of bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_iface.types import Feedback
from whih_control.config import Config, load_config
from whih_control.estimate import Estimator, play
from whih_control.types import LINEAR_AXES, TipMeasurement

from .conftest import CONFIGS

CFG: Config = load_config(CONFIGS / "sim.toml")
TIPS = {"ante_wire": -15.0, "ante_mc": -2.0, "retro_wire": -8.0, "retro_mc": 29.6}
ZERO = dict.fromkeys(LINEAR_AXES, 0.0)


def _estimator() -> tuple[Estimator, Feedback]:
    est = Estimator(CFG)
    fb = Feedback.for_axes(CFG.drives)
    for af in fb.axes.values():
        af.position = 0.0
    est.update(0.0, fb)
    est.calibrate(ZERO, TIPS)
    return est, fb


@given(st.lists(st.floats(-50, 50), min_size=1, max_size=60), st.floats(0.0, 5.0))
def test_play_keeps_the_tip_within_half_the_slack_and_moves_only_when_pushed(
    xs: list[float], slack: float
) -> None:
    h = slack / 2
    x_eff = xs[0]
    for x in xs[1:]:
        new = play(x_eff, x, h)
        # the tip stays within half the slack of the insertion and moves as little as that needs
        assert abs(new - x) <= h + 1e-9
        assert new == pytest.approx(min(max(x_eff, x - h), x + h), abs=1e-12)
        if abs(x - x_eff) < h:
            assert new == x_eff
        x_eff = new


def test_calibration_sets_tips_gap_and_coupling() -> None:
    est, _ = _estimator()
    e = est.estimate
    assert e.valid and e.tips == TIPS
    assert e.gap == pytest.approx(TIPS["retro_mc"] - TIPS["ante_mc"])
    assert e.coupling == pytest.approx(TIPS["retro_wire"] - TIPS["ante_wire"])
    assert set(e.tips) == set(LINEAR_AXES)  # rotary axes have no tip
    assert e.imaging_age == math.inf


@pytest.mark.parametrize(
    ("insertion", "tips", "match"),
    [
        ({**ZERO, "ante_mc": math.nan}, TIPS, r"insertion\['ante_mc'\] \(=nan\)"),
        (ZERO, {**TIPS, "retro_mc": math.inf}, r"tips\['retro_mc'\] \(=inf\)"),
        ({"ante_wire": 0.0}, TIPS, "axis 'ante_mc' missing"),
    ],
)
def test_calibrate_rejects_bad_values_naming_axis_and_value(
    insertion: dict[str, float], tips: dict[str, float], match: str
) -> None:
    est = Estimator(CFG)
    with pytest.raises(ValueError, match=match):
        est.calibrate(insertion, tips)
    assert not est.calibrated and not est.estimate.valid


def test_slack_reversal_smaller_than_slack_does_not_move_the_tip() -> None:
    est, fb = _estimator()
    slack = CFG.estimate.slack
    fb.axes["ante_wire"].position = 2.0
    est.update(0.1, fb)
    tip = est.estimate.tips["ante_wire"]
    assert tip == pytest.approx(TIPS["ante_wire"] + 2.0 - slack / 2)
    fb.axes["ante_wire"].position = 2.0 - 0.9 * slack
    est.update(0.2, fb)
    assert est.estimate.tips["ante_wire"] == tip
    fb.axes["ante_wire"].position = 2.0 - slack - 1.0
    est.update(0.3, fb)
    assert est.estimate.tips["ante_wire"] == pytest.approx(tip - 1.0)
    # retrograde axes move the tip toward -s for a positive insertion
    fb.axes["retro_wire"].position = 1.0
    est.update(0.4, fb)
    assert est.estimate.tips["retro_wire"] == pytest.approx(TIPS["retro_wire"] - 1.0 + slack / 2)


def test_insertion_for_inverts_the_slack_model() -> None:
    est, fb = _estimator()
    i = LINEAR_AXES.index("retro_mc")
    for target in (25.0, 31.0, 29.7, 29.0):
        x = est.insertion_for(i, target, fb.axes["retro_mc"].position, 0.0)
        fb.axes["retro_mc"].position = x
        est.update(est._t_last + 0.01, fb)
        assert est.estimate.tips["retro_mc"] == pytest.approx(target)


def _run_fusion(
    latency: float, speed: float, seed: int, offset_error: float
) -> tuple[list[float], Estimator]:
    """Ante MC moves at ``speed``; imaging at 7.5 fps with ``latency``; returns tip errors."""
    est, fb = _estimator()
    rng = np.random.Generator(np.random.PCG64(seed))
    dt = CFG.period
    true_offset = TIPS["ante_mc"] + offset_error
    frames: list[TipMeasurement] = []
    errors: list[float] = []
    t, next_frame = 0.0, 0.0
    for _ in range(int(8.0 / dt)):
        t += dt
        x = speed * t
        fb.axes["ante_mc"].position = x
        true_tip = true_offset + max(0.0, x - CFG.estimate.slack / 2)
        if t >= next_frame:
            next_frame += 1 / 7.5
            frames.append(TipMeasurement(t, t + latency, {"ante_mc": true_tip + rng.normal(0, 0.2)}))
        arrived = [m for m in frames if m.t_arrival <= t + 1e-12]
        frames = [m for m in frames if m.t_arrival > t + 1e-12]
        est.update(t, fb, arrived)
        errors.append(est.estimate.tips["ante_mc"] - true_tip)
    return errors, est


def test_fusion_converges_from_a_calibration_error() -> None:
    errors, est = _run_fusion(latency=0.1, speed=0.0, seed=1, offset_error=1.0)
    assert abs(errors[0]) > 0.9
    assert max(abs(e) for e in errors[-400:]) < 0.2
    assert est.fused > 40 and est.estimate.imaging_age < 0.3


def test_fusion_handles_latency_without_lag_while_moving() -> None:
    """Applying a 150 ms old frame at its capture time: no speed * latency bias (0.6 mm here)."""
    errors, _ = _run_fusion(latency=0.15, speed=4.0, seed=2, offset_error=0.0)
    tail = errors[-1200:]
    assert abs(sum(tail) / len(tail)) < 0.1
    assert max(abs(e) for e in tail) < 0.3


def test_bad_measurements_are_rejected_and_counted() -> None:
    est, fb = _estimator()
    for t in (0.1, 0.2, 0.3):
        est.update(t, fb)
    before = est.rejected
    bad = [
        TipMeasurement(0.25, 0.3, {"ante_mc": math.nan}),
        TipMeasurement(0.25, 0.3, {"ante_mc": 1e9}),
        TipMeasurement(0.35, 0.4, {"ante_mc": 0.0}),  # arrives in the future
        TipMeasurement(-1.0, 0.3, {"ante_mc": 0.0}),  # older than max_latency_s
        TipMeasurement(math.nan, 0.3, {"ante_mc": 0.0}),
    ]
    tip = est.estimate.tips["ante_mc"]
    est.update(0.3, fb, bad)
    assert est.rejected == before + len(bad)
    assert est.estimate.tips["ante_mc"] == tip and est.fused == 0
    # a partial frame fuses only what it saw
    est.update(0.31, fb, [TipMeasurement(0.25, 0.3, {"retro_mc": TIPS["retro_mc"] + 0.5})])
    assert est.fused == 1 and est.estimate.tips["ante_mc"] == tip
    assert est.estimate.tips["retro_mc"] > TIPS["retro_mc"]


def _settled_estimator() -> tuple[Estimator, Feedback, float]:
    """A calibrated estimator after 0.1 s of cycles without imaging, and the time reached."""
    est, fb = _estimator()
    t = 0.0
    for _ in range(40):
        t += 0.0025
        est.update(t, fb)
    return est, fb, t


def test_one_implausible_frame_is_gated_and_a_lasting_change_is_taken() -> None:
    """A tracking glitch (one frame 60 mm off) must not move the gap; the same offset seen in
    ``innovation_gate_frames`` frames in a row is believed and the filter re-anchors on it."""
    est, fb, t = _settled_estimator()
    tip = est.estimate.tips["ante_mc"]
    t += 0.0025
    est.update(t, fb, [TipMeasurement(t, t, {"ante_mc": tip + 60.0})])
    assert est.estimate.tips["ante_mc"] == pytest.approx(tip, abs=1e-9) and est.rejected == 1
    t += 0.0025
    est.update(t, fb, [TipMeasurement(t, t, {"ante_mc": tip + 0.2})])  # a plausible frame
    assert est.estimate.tips["ante_mc"] == pytest.approx(tip + 0.2, abs=0.2) and est.fused == 1
    moved = est.estimate.tips["ante_mc"]
    n = CFG.estimate.innovation_gate_frames
    for k in range(n):
        t += 0.1
        est.update(t, fb, [TipMeasurement(t, t, {"ante_mc": tip + 5.0})])
        if k < n - 1:
            assert est.estimate.tips["ante_mc"] == pytest.approx(moved, abs=1e-9)
    assert est.estimate.tips["ante_mc"] == pytest.approx(tip + 5.0, abs=0.1)
    assert est.rejected == n  # the glitch and n - 1 frames of the lasting change


def test_glitches_that_disagree_never_re_anchor_the_filter() -> None:
    est, fb, t = _settled_estimator()
    tip = est.estimate.tips["ante_mc"]
    for off in (60.0, -40.0, 25.0, -30.0, 45.0, 0.0):
        t += 0.1
        est.update(t, fb, [TipMeasurement(t, t, {"ante_mc": tip + off})])
        assert est.estimate.tips["ante_mc"] == pytest.approx(tip, abs=0.05), off
    assert est.rejected == 5 and est.fused == 1


def test_non_finite_feedback_is_rejected_and_the_estimate_holds() -> None:
    est, fb = _estimator()
    fb.axes["ante_wire"].position = math.nan
    before = est.rejected
    est.update(0.1, fb)
    assert est.rejected == before + 1
    assert est.estimate.tips["ante_wire"] == TIPS["ante_wire"] and est.estimate.valid
    est.update(math.nan, fb)
    est.update(0.05, fb)  # time going backwards
    assert est.rejected == before + 3


@given(
    st.lists(st.tuples(st.floats(-100, 100), st.booleans()), min_size=1, max_size=30), st.integers(0, 2**32)
)
def test_estimate_stays_finite_and_deterministic(steps: list[tuple[float, bool]], seed: int) -> None:
    def run() -> list[tuple[float, ...]]:
        est, fb = _estimator()
        rng = np.random.Generator(np.random.PCG64(seed))
        out = []
        for k, (x, bad) in enumerate(steps):
            for a in LINEAR_AXES:
                fb.axes[a].position = math.nan if bad and a == "ante_mc" else x
            t = 0.0025 * (k + 1)
            m = TipMeasurement(t - 0.1, t, {a: float(rng.normal(0.0, 5.0)) for a in LINEAR_AXES})
            e = est.update(t, fb, [m])
            out.append((*e.tips.values(), e.gap, e.coupling))
        return out

    a, b = run(), run()
    assert a == b
    assert all(math.isfinite(v) for row in a for v in row)
