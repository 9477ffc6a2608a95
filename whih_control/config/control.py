"""``[control]``, ``[estimate]`` and ``[safety]``: regulators, estimator and supervisor settings."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_iface.spec import setting

__all__ = ["ControlConfig", "EstimateConfig", "OperatorConfig", "SafetyConfig"]


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """Gap and coupling regulators, trajectory generation and jogging."""

    gap_kp: float = setting(
        8.0,
        unit="1/s",
        lo=0.0,
        hi=1000.0,
        doc="gap regulator proportional gain (tracking of the gap reference)",
    )
    gap_ki: float = setting(0.5, unit="1/s^2", lo=0.0, hi=1000.0, doc="gap regulator integral gain")
    gap_feedforward: float = setting(
        1.0, lo=0.0, hi=2.0, doc="share of the train's motion fed forward to the ante MC"
    )
    gap_integral_max: float = setting(
        1.0, unit="mm", lo=0.0, hi=20.0, doc="anti-windup bound on the gap regulator's integral correction"
    )
    coupling_kp: float = setting(
        8.0, unit="1/s", lo=0.0, hi=1000.0, doc="coupling regulator proportional gain"
    )
    coupling_feedforward: float = setting(
        1.0, lo=0.0, hi=2.0, doc="share of the retro wire's motion fed forward to the ante wire"
    )
    slack_deadzone: float = setting(
        0.05,
        unit="mm",
        lo=0.0,
        hi=5.0,
        doc="tip corrections smaller than this do not reverse an axis through its slack",
    )
    jog_speed_fraction: float = setting(
        0.25, lo=0.0, lo_open=True, hi=1.0, doc="jog speed as a share of the axis' max_speed"
    )


@dataclass(frozen=True, slots=True)
class EstimateConfig:
    """Tip estimator: slack/backlash model and measurement fusion."""

    slack: float = setting(0.5, unit="mm", lo=0.0, hi=20.0, doc="backlash between insertion and tip motion")
    process_noise: float = setting(0.05, unit="mm/sqrt(s)", lo=0.0, hi=100.0, doc="tip random-walk intensity")
    motion_noise: float = setting(
        0.1,
        unit="1/sqrt(s)",
        lo=0.0,
        hi=100.0,
        doc="extra offset random walk per mm/s of own (and, for MCs, same-side wire) tip speed: drag",
    )
    measurement_noise: float = setting(
        0.3, unit="mm", lo=0.0, lo_open=True, hi=100.0, doc="imaging tip noise (1 sigma)"
    )
    calibration_sigma: float = setting(
        0.3, unit="mm", lo=0.0, lo_open=True, hi=100.0, doc="uncertainty of the calibrated tip positions"
    )
    max_latency_s: float = setting(
        0.5, unit="s", lo=0.01, hi=5.0, doc="older measurements (capture to now) are rejected"
    )
    innovation_gate: float = setting(
        5.0,
        lo=0.0,
        hi=1000.0,
        doc="reject a tip whose innovation exceeds this many sigmas (0 = no gate)",
    )
    innovation_gate_frames: int = setting(
        3,
        lo=2,
        hi=100,
        doc="after this many gated frames in a row a tip is taken anyway and the filter re-anchored",
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
    coupling_fault_cycles: int = setting(
        40,
        lo=1,
        hi=100_000,
        doc="cycles a wire coupling outside [0, coupling_max] may persist before a fault",
    )
    max_dt_cycles: float = setting(
        4.0, lo=1.0, hi=100.0, doc="a cycle time step above this many periods is rejected (hold)"
    )
    position_abs_max: float = setting(
        10_000.0, unit="unit", lo=1.0, hi=1e6, doc="feedback positions beyond +/- this are rejected"
    )
    force_abs_max: float = setting(
        1000.0, unit="N", lo=1.0, hi=1e6, doc="feedback forces beyond +/- this are rejected"
    )


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """What the operator's verbs may do and how long an unattended wait may last."""

    teleop_timeout_s: float = setting(
        0.2,
        unit="s",
        lo=0.0,
        lo_open=True,
        hi=5.0,
        doc="a teleop velocity not renewed within this time ramps the axis down to rest",
    )
    command_timeout_s: float = setting(
        1.0,
        unit="s",
        lo=0.0,
        lo_open=True,
        hi=60.0,
        doc="a verb the cycle has not answered within this time raises CommandTimeoutError",
    )
    wait_timeout_s: float = setting(
        3600.0,
        unit="s",
        lo=1.0,
        hi=86_400.0,
        doc="bound on idle, ready, paused, crossed and fault (they wait for the operator): then aborted",
    )
