"""``[record]``: what a run folder keeps."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_iface.spec import setting

__all__ = ["RecordConfig"]


@dataclass(frozen=True, slots=True)
class RecordConfig:
    """Run-folder contents (written only when an output folder is given)."""

    telemetry_hz: float = setting(
        100.0, unit="Hz", lo=1.0, hi=100.0, doc="telemetry.csv row rate (at most 100)"
    )
    trace: bool = setting(True, doc="write every CAN frame to the trace (trace.asc or trace.log)")
    trace_format: str = setting(
        "asc",
        choices=("asc", "log"),
        doc="'asc': Vector ASC (trace.asc); 'log': candump -L (trace.log, replays with canplayer)",
    )
    mcap: bool = setting(True, doc="write telemetry.mcap beside telemetry.csv (JSON channels, for Foxglove)")
    plot: bool = setting(True, doc="write plot.png at the end of the run")
    trace_queue: int = setting(
        65_536,
        lo=16,
        hi=10_000_000,
        doc="frames the pipe to the trace writer holds before real time drops (counted; the OS may cap it)",
    )
