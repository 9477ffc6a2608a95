"""``[sim]`` and ``[imaging]``: the simulated plant and the tip-imaging source."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_iface.spec import setting

__all__ = ["ImagingConfig", "SimConfig"]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Simulated drives and plant."""

    enabled: bool = setting(True, doc="start simulated CiA 402 drives on the bus")
    seed: int = setting(0, lo=0, hi=2**63 - 1, doc="seed of every random draw of the simulation")
    jcto: float = setting(2.5, lo=0.0, hi=5.0, doc="J-CTO score of the simulated lesion (0-5)")


@dataclass(frozen=True, slots=True)
class ImagingConfig:
    """External tip measurements (fluoroscopy tip tracking)."""

    source: str = setting("sim", choices=("sim", "none", "external"), doc="where tip measurements come from")
    frame_rate: float = setting(
        7.5, unit="frames/s", lo=0.1, hi=60.0, doc="imaging frame rate (clinical 4-15)"
    )
    latency_ms: float = setting(100.0, unit="ms", lo=0.0, hi=1000.0, doc="capture-to-arrival delay")
    noise_mm: float = setting(0.2, unit="mm", lo=0.0, hi=10.0, doc="tip position noise (1 sigma)")
    dropout: float = setting(0.05, lo=0.0, hi=1.0, doc="probability that a frame is lost")
