"""Typed settings of the CAN side: bus, cycle and drives, plus the bus-load arithmetic.

These are plain frozen dataclasses whose fields carry their unit, allowed range and meaning in
``field(metadata=...)`` (see :func:`setting`). ``whih_control.config`` validates TOML against them
generically; ``firmware_iface`` only ever receives already-validated instances, so nothing here
imports ``whih_control``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import can

__all__ = [
    "ACCEPTABLE_OBJECTS",
    "BUILTIN_EDS_DIR",
    "BusConfig",
    "BusLoad",
    "CycleConfig",
    "DriveConfig",
    "DriveSystem",
    "bus_load",
    "frame_bits_worst_case",
    "resolve_eds",
    "setting",
]

BUILTIN_EDS_DIR = Path(__file__).with_name("eds")
"""Folder of the object dictionaries shipped with the package (``builtin:NAME`` in configs)."""


def setting(
    default: Any,
    *,
    doc: str,
    unit: str = "",
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with its documentation and allowed range attached as metadata.

    ``lo``/``hi`` bound numbers (inclusive; ``lo_open`` makes the lower bound exclusive),
    ``choices`` bounds strings. ``default=dataclasses.MISSING`` makes the key required.
    """
    meta = {"doc": doc, "unit": unit, "lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


ACCEPTABLE_OBJECTS = ("0x1017", "0x6007", "0x605A", "0x607D", "0x6065", "0x6066", "0x6085")
"""Safety objects whose fixed or missing value a drive's ``accept_fixed`` may accept."""


@dataclass(frozen=True, slots=True)
class BusConfig:
    """Which CAN bus to open and how the master presents itself on it."""

    interface: str = setting(
        "virtual",
        doc="python-can interface name ('virtual', 'socketcan', 'pcan', ...; 'whih-sim' = "
        "simulated-time bus)",
        # what python-can can open here (its own interfaces and installed plugins, ours included)
        choices=tuple(sorted(can.interfaces.VALID_INTERFACES)),
    )
    channel: str = setting("whih0", doc="python-can channel (e.g. 'can0' for socketcan)")
    bitrate: int = setting(
        1_000_000,
        unit="bit/s",
        lo=10_000,
        hi=100_000_000,
        doc="nominal bitrate; classical CAN allows at most 1 Mbit/s on a real adapter",
    )
    master_node_id: int = setting(
        127, lo=1, hi=127, doc="node id of this master (its heartbeat is 0x700 + id)"
    )
    master_heartbeat_ms: int = setting(
        20, unit="ms", lo=1, hi=10_000, doc="period of the master's own heartbeat"
    )
    master_heartbeat_timeout_ms: int = setting(
        100,
        unit="ms",
        lo=1,
        hi=60_000,
        doc="what each drive's heartbeat consumer (0x1016) allows before it quick-stops itself",
    )
    boot_timeout_s: float = setting(
        5.0, unit="s", lo=0.01, hi=120.0, doc="how long set-up waits for a drive to appear"
    )
    sdo_timeout_s: float = setting(
        0.5, unit="s", lo=0.001, hi=10.0, doc="timeout of one SDO request at set-up"
    )


@dataclass(frozen=True, slots=True)
class CycleConfig:
    """The cyclic exchange: SYNC, one TPDO1 per drive, update, one RPDO1 per drive."""

    rate_hz: float = setting(400.0, unit="Hz", lo=1.0, hi=2000.0, doc="control cycle rate")
    max_bus_load: float = setting(
        0.8,
        lo=0.05,
        hi=1.0,
        doc="fraction of the cycle the cyclic frames may need (worst-case bit stuffing)",
    )
    tpdo_deadline: float = setting(
        0.5,
        lo=0.05,
        hi=0.95,
        doc="fraction of the period after SYNC by which every TPDO1 must have arrived",
    )
    sync_counter: bool = setting(False, doc="SYNC carries a 1-byte counter (DLC 1 instead of 0)")
    busy_wait_us: int = setting(
        200, unit="us", lo=0, hi=5_000, doc="real time only: spin this long before each deadline"
    )
    realtime_priority: int = setting(
        0,
        lo=0,
        hi=99,
        doc=(
            "real time only: SCHED_FIFO priority of the cycle thread and of in-process simulated "
            "drives (1-99; needs CAP_SYS_NICE or an rtprio limit); 0 = the normal scheduler"
        ),
    )


@dataclass(frozen=True, slots=True)
class DriveConfig:
    """One CiA 402 drive moving one axis (linear in mm or rotary in degrees)."""

    node_id: int = setting(dataclasses.MISSING, lo=1, hi=127, doc="CANopen node id")
    kind: str = setting("linear", choices=("linear", "rotary"), doc="axis kind: mm or degrees")
    eds: str = setting(
        "builtin:whih_sim_drive.eds",
        doc="object dictionary (EDS/DCF): 'builtin:NAME' or a path relative to the config file",
    )
    counts_per_unit: float = setting(
        1000.0, unit="counts/unit", lo=0.0, lo_open=True, hi=1e7, doc="encoder counts per mm/deg"
    )
    max_speed: float = setting(
        20.0, unit="unit/s", lo=0.0, lo_open=True, hi=1000.0, doc="speed limit of this axis"
    )
    max_accel: float = setting(
        200.0,
        unit="unit/s^2",
        lo=0.0,
        lo_open=True,
        hi=100_000.0,
        doc="acceleration limit of this axis",
    )
    quick_stop_decel: float = setting(
        2000.0,
        unit="unit/s^2",
        lo=0.0,
        lo_open=True,
        hi=1_000_000.0,
        doc="quick-stop deceleration written to 0x6085",
    )
    travel_min: float = setting(
        -200.0, unit="unit", lo=-10_000.0, hi=10_000.0, doc="software position limit, 0x607D:1"
    )
    travel_max: float = setting(
        200.0, unit="unit", lo=-10_000.0, hi=10_000.0, doc="software position limit, 0x607D:2"
    )
    force_per_torque: float = setting(
        0.01,
        unit="N per torque unit",
        lo=0.0,
        lo_open=True,
        hi=1000.0,
        doc="axial force for one unit of torque actual (0x6077, per mille of rated torque)",
    )
    force_alarm: float = setting(
        1.5, unit="N", lo=0.0, lo_open=True, hi=100.0, doc="no further advance at or above this"
    )
    force_stop: float = setting(
        3.0, unit="N", lo=0.0, lo_open=True, hi=100.0, doc="fault at or above this force"
    )
    heartbeat_ms: int = setting(10, unit="ms", lo=1, hi=10_000, doc="drive heartbeat producer period, 0x1017")
    heartbeat_timeout_ms: int = setting(
        50, unit="ms", lo=1, hi=60_000, doc="master declares the drive lost after this silence"
    )
    following_error_window: float = setting(
        1.0, unit="unit", lo=0.0, lo_open=True, hi=1000.0, doc="following-error window, 0x6065"
    )
    following_error_timeout_ms: int = setting(
        20, unit="ms", lo=0, hi=65_535, doc="following-error time-out, 0x6066"
    )
    position_window: float = setting(
        0.05,
        unit="unit",
        lo=0.0,
        lo_open=True,
        hi=1000.0,
        doc="a jog has arrived once the position actual the master read is within this of its "
        "target (what CiA 402 0x6067 means; judged by the master, not written to the drive); at "
        "least one encoder count and at most following_error_window",
    )
    position_jump_tolerance: float = setting(
        0.05,
        unit="unit",
        lo=0.0,
        hi=1000.0,
        doc="plausibility: position actual may change by 2 x max_speed x the time since the last "
        "TPDO1 (at least a period) plus this (the drive's own overshoot and quantisation); more is "
        "a fault",
    )
    accept_no_heartbeat_consumer: bool = setting(
        False,
        doc="accept a drive without 0x1016 (it cannot stop itself when the master dies)",
    )
    encoder_counts_per_rev: float = setting(
        0.0,
        unit="counts/rev",
        lo=0.0,
        hi=1e9,
        doc="encoder counts per revolution of the shaft it sits on; needed when the drive takes "
        "speeds or accelerations in rpm (0x60A9/0x60AA); 0 = not given",
    )
    gear_ratio: float = setting(
        1.0,
        lo=0.0,
        lo_open=True,
        hi=1e6,
        doc="motor revolutions per revolution of the encoder's shaft (1 when the encoder is on the motor)",
    )
    accept_fixed: tuple[str, ...] = setting(
        (),
        choices=ACCEPTABLE_OBJECTS,
        doc="safety objects this drive fixes (LowLimit = HighLimit) or lacks that set-up may leave at "
        "the drive's own value instead of refusing; check-config states the consequence of each",
    )
    accept_identity_mismatch: bool = setting(
        False,
        doc="enable even when the drive's 0x1018 vendor/product differs from its EDS/DCF",
    )


class DriveSystem(Protocol):
    """What the CAN layer needs of a configuration (``whih_control.Config`` satisfies it)."""

    @property
    def bus(self) -> BusConfig: ...

    @property
    def cycle(self) -> CycleConfig: ...

    @property
    def drives(self) -> Mapping[str, DriveConfig]: ...


def resolve_eds(eds: str, base_dir: Path) -> Path:
    """Turn a config's ``eds`` value into a path: ``builtin:NAME`` or relative to ``base_dir``."""
    if eds.startswith("builtin:"):
        return BUILTIN_EDS_DIR / eds.removeprefix("builtin:")
    path = Path(eds).expanduser()
    return path if path.is_absolute() else base_dir / path


def frame_bits_worst_case(dlc: int) -> int:
    """Bits on the wire of a classical 11-bit-id data frame with worst-case bit stuffing.

    Includes the 3-bit interframe space: ``8n + 47 + floor((34 + 8n - 1) / 4)`` (Davis et al.,
    "Controller Area Network (CAN) schedulability analysis", 2007).
    """
    if not 0 <= dlc <= 8:
        raise ValueError(f"dlc (={dlc}) must be in [0...8]")
    return 8 * dlc + 47 + (34 + 8 * dlc - 1) // 4


SYNC_DLC_PLAIN = 0
RPDO1_DLC = 6  # controlword u16 + target position i32
TPDO1_DLC = 8  # statusword u16 + position actual i32 + torque actual i16
HEARTBEAT_DLC = 1


@dataclass(frozen=True, slots=True)
class BusLoad:
    """Worst-case share of one cycle that the periodic frames need."""

    ratio: float
    bits_per_cycle: float
    period_s: float
    bitrate: int
    frames: str

    def describe(self) -> str:
        """One line: load in %, frames, bitrate and period."""
        return (
            f"{self.ratio * 100:.1f} % of the {self.period_s * 1e3:.3g} ms cycle at "
            f"{self.bitrate / 1e3:g} kbit/s ({self.frames}; {self.bits_per_cycle:.0f} bits worst case)"
        )


def bus_load(
    n_drives: int,
    rate_hz: float,
    bitrate: int,
    *,
    sync_counter: bool = False,
    heartbeat_ms: Mapping[str, int] | None = None,
) -> BusLoad:
    """Worst-case bus load of the cyclic frames (SYNC, RPDO1 and TPDO1 per drive).

    ``heartbeat_ms`` (producer periods, master's included) adds the heartbeats' average share.
    """
    period = 1.0 / rate_hz
    sync_dlc = 1 if sync_counter else SYNC_DLC_PLAIN
    bits = float(
        frame_bits_worst_case(sync_dlc)
        + n_drives * (frame_bits_worst_case(RPDO1_DLC) + frame_bits_worst_case(TPDO1_DLC))
    )
    frames = f"SYNC 1x DLC {sync_dlc} + RPDO1 {n_drives}x DLC {RPDO1_DLC} + TPDO1 {n_drives}x DLC {TPDO1_DLC}"
    if heartbeat_ms:
        per_cycle = sum(period * 1e3 / ms for ms in heartbeat_ms.values())
        bits += per_cycle * frame_bits_worst_case(HEARTBEAT_DLC)
        frames += f" + heartbeats {per_cycle:.2f}/cycle"
    return BusLoad(bits * rate_hz / bitrate, bits, period, bitrate, frames)
