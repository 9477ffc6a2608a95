"""Tip estimator: drive insertion -> tip position in ``s`` through a slack model, fused with imaging.

Model per linear axis ``i`` (direction ``d_i`` = ``AXIS_DIRECTION``)::

    x_eff  = play(x_eff, insertion, half_slack)   # backlash: a deadband of width ``slack``
    tip    = offset + d_i * x_eff

``play`` keeps ``x_eff`` within ``[insertion - slack/2, insertion + slack/2]``: the tip moves only
once the insertion has taken up the slack in the new direction. ``offset`` is the one filter state
per axis: a scalar Kalman filter on the encoder-to-tip offset. It absorbs calibration error and
disturbances the encoders cannot see (e.g. the drag a moving wire puts on its microcatheter), so
its random walk grows with the axis' own speed and, for a microcatheter, with its wire's speed.

Delayed measurements are cheap to fuse because the offset changes slowly: the innovation is formed
against the *model tip at capture time* (``x_eff`` kept in a short ring buffer, one entry per
cycle), and the correction is applied to the present offset. Non-finite or out-of-range values,
measurements from the future or older than ``estimate.max_latency_s`` are rejected and counted in
:attr:`Estimator.rejected`. Rotary axes have no tip (they do not enter the geometry).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from firmware_iface.types import Feedback
from whih_control.config import Config
from whih_control.types import AXIS_DIRECTION, LINEAR_AXES, Estimate, TipMeasurement

__all__ = ["Estimator", "play"]

_ANTE_WIRE, _ANTE_MC, _RETRO_WIRE, _RETRO_MC = range(4)
_TIP_ABS_MAX = 10_000.0
_isfinite = math.isfinite
_isnan = math.isnan


def play(x_eff: float, insertion: float, half_slack: float) -> float:
    """The backlash (play) operator: ``x_eff`` dragged along once ``insertion`` leaves its band."""
    if insertion - x_eff > half_slack:
        return insertion - half_slack
    if x_eff - insertion > half_slack:
        return insertion + half_slack
    return x_eff


class Estimator:
    """Tip positions, MC gap, wire coupling, forces and imaging age, updated in place every cycle.

    Linear axes are indexed in :data:`~whih_control.types.LINEAR_AXES` order; ``offset``,
    ``x_eff`` and ``half_slack`` are exposed for the controller's inverse mapping.
    """

    def __init__(self, cfg: Config) -> None:
        est = cfg.estimate
        self.axes: tuple[str, ...] = LINEAR_AXES
        self.all_axes: tuple[str, ...] = tuple(cfg.drives)
        self.direction: tuple[float, ...] = tuple(AXIS_DIRECTION[a] for a in LINEAR_AXES)
        self.half_slack: float = est.slack / 2.0
        self.offset: list[float] = [0.0] * 4
        """Encoder-to-tip offset per linear axis (the filter state), mm."""
        self.variance: list[float] = [est.calibration_sigma**2] * 4
        self.x_eff: list[float] = [math.nan] * 4
        """Insertion as seen at the tip (after the slack), per linear axis, mm."""
        self.side: list[float] = [0.0] * 4
        """Side the slack was last taken up on: +1 pushed by increasing insertion, -1 by
        decreasing, 0 not yet (after calibration)."""
        self._q0 = est.process_noise**2
        self._qv = est.motion_noise**2
        self._r = est.measurement_noise**2
        self._p0 = est.calibration_sigma**2
        self._gate2 = est.innovation_gate**2
        self._gate_frames = est.innovation_gate_frames
        self._gated = [0] * 4
        self._gated_innov = [0.0] * 4
        self._horizon = est.max_latency_s
        n = max(8, math.ceil(est.max_latency_s * cfg.cycle.rate_hz) + 4)
        self._hist_t: list[float] = [-math.inf] * n
        self._hist_x: list[list[float]] = [[math.nan] * 4 for _ in range(n)]
        self._speeds: list[float] = [0.0] * 4
        self._head = 0
        self._last_fused: list[float] = [-math.inf] * 4
        self._t_last = math.nan
        self._t_calibrated = -math.inf
        self._t_meas = -math.inf
        self.calibrated: bool = False
        self.rejected: int = 0
        """Count of rejected inputs (non-finite/out-of-range positions, measurements, times)."""
        self.fused: int = 0
        """Count of fused tip measurements (one per axis seen in a frame)."""
        self.estimate: Estimate = Estimate(
            tips={a: math.nan for a in LINEAR_AXES},
            force={a: 0.0 for a in self.all_axes},
        )

    def calibrate(self, insertion: Mapping[str, float], tips: Mapping[str, float]) -> None:
        """Set offsets so that ``tip = offset + AXIS_DIRECTION[a] * insertion`` (slack centred).

        Raises ValueError naming the axis and value if a linear axis is missing or not finite.
        """
        new: list[tuple[float, float]] = []
        for a in LINEAR_AXES:
            if a not in insertion or a not in tips:
                raise ValueError(
                    f"calibrate: axis {a!r} missing (insertion and tip needed for {LINEAR_AXES})"
                )
            x, p = float(insertion[a]), float(tips[a])
            if not (_isfinite(x) and abs(x) <= _TIP_ABS_MAX):
                raise ValueError(f"calibrate: insertion[{a!r}] (={x}) must be finite in [-1e4...1e4] mm")
            if not (_isfinite(p) and abs(p) <= _TIP_ABS_MAX):
                raise ValueError(f"calibrate: tips[{a!r}] (={p}) must be finite in [-1e4...1e4] mm")
            new.append((x, p))
        for i, (x, p) in enumerate(new):
            self.x_eff[i] = x
            self.side[i] = 0.0
            self.offset[i] = p - self.direction[i] * x
            self.variance[i] = self._p0
            self._last_fused[i] = -math.inf
            self._gated[i] = 0
        self._t_calibrated = self._t_last if _isfinite(self._t_last) else -math.inf
        self.calibrated = True
        self._publish()

    def forget_calibration(self) -> None:
        """Distrust the calibration (a linear axis' position actual jumped): the estimate is
        invalid, and linear axes hold, until :meth:`calibrate` runs again."""
        self.calibrated = False
        self._publish()

    def tip_of(self, i: int, insertion: float) -> float:
        """Model tip of linear axis ``i`` if the drive went to ``insertion`` from where it is now."""
        return self.offset[i] + self.direction[i] * play(self.x_eff[i], insertion, self.half_slack)

    def insertion_for(self, i: int, tip: float, current: float, deadzone: float) -> float:
        """Insertion that puts linear axis ``i``'s tip at ``tip`` (the slack model's inverse).

        Moving the tip up pushes the slack's upper side (``x_eff + slack/2``), down its lower
        side. A correction smaller than ``deadzone`` against the side the slack was last taken up
        on (:attr:`side`) does not reverse through the slack (no chatter on estimate noise);
        ``current`` is then kept inside the band, where the tip does not move.
        """
        h = self.half_slack
        xe = self.x_eff[i]
        want = (tip - self.offset[i]) * self.direction[i]
        lo = xe - h
        hi = xe + h
        side = self.side[i]
        if want > xe and (want > xe + deadzone or side >= 0.0):
            return want + h
        if want < xe and (want < xe - deadzone or side <= 0.0):
            return want - h
        return lo if current < lo else hi if current > hi else current

    def update(self, t: float, feedback: Feedback, measurements: Sequence[TipMeasurement] = ()) -> Estimate:
        """Advance to time ``t`` with this cycle's feedback and any measurements that arrived."""
        est = self.estimate
        axes = feedback.axes
        if not _isfinite(t) or (t < self._t_last):
            self.rejected += 1
            return est
        dt = t - self._t_last if _isfinite(self._t_last) else 0.0
        self._t_last = t
        x_eff = self.x_eff
        h = self.half_slack
        var = self.variance
        q0 = self._q0 * dt
        qv = self._qv * dt
        speeds = self._speeds  # preallocated: nothing built per cycle
        speeds[0] = speeds[1] = speeds[2] = speeds[3] = 0.0
        for i, a in enumerate(LINEAR_AXES):
            pos = axes[a].position
            if not -_TIP_ABS_MAX <= pos <= _TIP_ABS_MAX:  # False for NaN/inf too
                self.rejected += 1
                continue
            old = x_eff[i]
            if old != old:  # noqa: PLR0124 (first valid sample; NaN test without a call)
                x_eff[i] = pos
                continue
            if pos - old > h:
                new = pos - h
                self.side[i] = 1.0
            elif old - pos > h:
                new = pos + h
                self.side[i] = -1.0
            else:
                new = old
            x_eff[i] = new
            if dt > 0.0:
                speeds[i] = abs(new - old) / dt
        # a moving wire drags its microcatheter: the MC offset is less certain while it moves
        s0, s1, s2, s3 = speeds
        var[_ANTE_WIRE] += q0 + qv * s0 * s0
        var[_ANTE_MC] += q0 + qv * (s1 + s0) * (s1 + s0)
        var[_RETRO_WIRE] += q0 + qv * s2 * s2
        var[_RETRO_MC] += q0 + qv * (s3 + s2) * (s3 + s2)
        head = (self._head + 1) % len(self._hist_t)
        self._head = head
        self._hist_t[head] = t
        row = self._hist_x[head]
        row[0], row[1], row[2], row[3] = x_eff
        for m in measurements:
            self._fuse(t, m)
        for a in self.all_axes:
            est.force[a] = axes[a].force
        self._publish()
        return est

    def _fuse(self, t: float, m: TipMeasurement) -> None:
        tc, ta = m.t_capture, m.t_arrival
        if not (
            _isfinite(tc)
            and _isfinite(ta)
            and tc <= ta <= t + 1e-9
            and t - tc <= self._horizon
            and tc >= self._t_calibrated
        ):
            self.rejected += 1
            return
        row = self._row_at(tc)
        if row is None:
            self.rejected += 1
            return
        tips = m.tips
        for i, a in enumerate(LINEAR_AXES):
            z = tips.get(a)
            if z is None:
                continue  # partial frame: this tip was not seen
            if not (isinstance(z, float | int) and _isfinite(z) and -_TIP_ABS_MAX <= z <= _TIP_ABS_MAX):
                self.rejected += 1
                continue
            xc = row[i]
            if _isnan(xc) or tc <= self._last_fused[i]:
                continue  # no model at that time yet, or an older frame than one already fused
            innov = z - (self.offset[i] + self.direction[i] * xc)
            p = self.variance[i]
            s = p + self._r
            if self._gate2 > 0.0 and innov * innov > self._gate2 * s:
                # gated frames count toward re-anchoring only while they agree with each other
                d = innov - self._gated_innov[i]
                agree = self._gated[i] > 0 and d * d <= self._gate2 * 2.0 * self._r
                self._gated[i] = self._gated[i] + 1 if agree else 1
                self._gated_innov[i] = innov
                if self._gated[i] < self._gate_frames:
                    self.rejected += 1  # an implausible frame (a tracking glitch) is not taken
                    continue
                # several agreeing in a row: the model is off, not the images; trust them at once
                p += innov * innov
                s = p + self._r
            self._gated[i] = 0
            k = p / s
            self.offset[i] += k * innov
            self.variance[i] = p - k * p
            self._last_fused[i] = tc
            self.fused += 1
            self._t_meas = max(self._t_meas, tc)

    def _row_at(self, tc: float) -> list[float] | None:
        """The ring-buffer entry of the last cycle at or before ``tc`` (None if not held)."""
        times = self._hist_t
        n = len(times)
        j = self._head
        for _ in range(n):
            if times[j] <= tc:
                return self._hist_x[j] if times[j] > -math.inf else None
            j = (j - 1) % n
        return None

    def _publish(self) -> None:
        est = self.estimate
        tips = est.tips
        off = self.offset
        xe = self.x_eff
        p0 = off[0] + xe[0]
        p1 = off[1] + xe[1]
        p2 = off[2] - xe[2]
        p3 = off[3] - xe[3]
        tips["ante_wire"] = p0
        tips["ante_mc"] = p1
        tips["retro_wire"] = p2
        tips["retro_mc"] = p3
        est.gap = p3 - p1
        est.coupling = p2 - p0
        est.imaging_age = (self._t_last - self._t_meas) if _isfinite(self._t_last) else math.inf
        est.valid = self.calibrated and _isfinite(est.gap) and _isfinite(est.coupling)
