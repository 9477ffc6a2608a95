"""``[control]``, ``[estimate]`` and ``[safety]``: regulators, estimator and supervisor settings."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_iface.spec import setting

__all__ = ["ControlConfig", "EstimateConfig", "SafetyConfig"]


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """Gap and coupling regulators."""

    gap_kp: float = setting(2.0, unit="1/s", lo=0.0, hi=1000.0, doc="gap regulator proportional gain")
    gap_ki: float = setting(0.5, unit="1/s^2", lo=0.0, hi=1000.0, doc="gap regulator integral gain")
    gap_feedforward: float = setting(
        1.0, lo=0.0, hi=2.0, doc="share of the train's motion fed forward to the ante MC"
    )
    coupling_kp: float = setting(
        3.0, unit="1/s", lo=0.0, hi=1000.0, doc="coupling regulator proportional gain"
    )


@dataclass(frozen=True, slots=True)
class EstimateConfig:
    """Tip estimator: slack/backlash model and measurement fusion."""

    slack: float = setting(0.5, unit="mm", lo=0.0, hi=20.0, doc="backlash between insertion and tip motion")
    process_noise: float = setting(0.05, unit="mm/sqrt(s)", lo=0.0, hi=100.0, doc="tip random-walk intensity")
    measurement_noise: float = setting(
        0.3, unit="mm", lo=0.0, lo_open=True, hi=100.0, doc="imaging tip noise (1 sigma)"
    )


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    """Supervisor thresholds beyond the per-drive limits."""

    feedback_max_age_cycles: int = setting(
        2, lo=0, hi=100, doc="feedback older than this many cycles is stale (no motion)"
    )
    stop_distance_max: float = setting(
        0.3, unit="mm", lo=0.0, lo_open=True, hi=10.0, doc="quick-stop distance bound at max speed"
    )
    imaging_max_age_s: float = setting(
        1.0, unit="s", lo=0.0, lo_open=True, hi=60.0, doc="older imaging pauses the procedure"
    )
