"""Configuration: TOML into frozen, typed, validated objects, once, at the edge.

``load_config(path_or_mapping)`` returns a :class:`Config` or raises :class:`ConfigError` listing
every problem at once, one line each: ``key.path: <what is wrong> (got <value>, allowed <range>)``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from firmware_iface.spec import (
    BusConfig,
    BusLoad,
    CycleConfig,
    DriveConfig,
    bus_load,
    resolve_eds,
)
from whih_control.config._schema import build, join, show
from whih_control.config.control import ControlConfig, EstimateConfig, OperatorConfig, SafetyConfig
from whih_control.config.procedure import ProcedureConfig
from whih_control.config.record import RecordConfig
from whih_control.config.sim import ImagingConfig, SimConfig
from whih_control.errors import ConfigError
from whih_control.types import ALL_AXES, LINEAR_AXES

__all__ = [
    "BusConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "CycleConfig",
    "DriveConfig",
    "EstimateConfig",
    "ImagingConfig",
    "OperatorConfig",
    "ProcedureConfig",
    "RecordConfig",
    "SafetyConfig",
    "SimConfig",
    "default_config_path",
    "load_config",
]

VIRTUAL_INTERFACES = frozenset({"virtual", "whih-sim"})
"""Interfaces with no physical bitrate limit."""
CLASSICAL_CAN_MAX_BITRATE = 1_000_000

_SECTIONS: dict[str, type] = {
    "bus": BusConfig,
    "cycle": CycleConfig,
    "procedure": ProcedureConfig,
    "control": ControlConfig,
    "estimate": EstimateConfig,
    "safety": SafetyConfig,
    "operator": OperatorConfig,
    "sim": SimConfig,
    "imaging": ImagingConfig,
    "record": RecordConfig,
}


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, validated configuration. Build it with :func:`load_config`."""

    bus: BusConfig
    cycle: CycleConfig
    drives: Mapping[str, DriveConfig]
    """Axis id -> drive, in the order of the file; ``eds`` is resolved to an absolute path."""
    procedure: ProcedureConfig
    control: ControlConfig
    estimate: EstimateConfig
    safety: SafetyConfig
    operator: OperatorConfig
    sim: SimConfig
    imaging: ImagingConfig
    record: RecordConfig
    source: str = ""
    """The file it came from ('' for a mapping)."""

    @property
    def period(self) -> float:
        """Cycle period in seconds."""
        return 1.0 / self.cycle.rate_hz

    def bus_load(self) -> BusLoad:
        """Worst-case load of the cyclic frames and heartbeats on the configured bus."""
        beats = {axis: d.heartbeat_ms for axis, d in self.drives.items()}
        beats["master"] = self.bus.master_heartbeat_ms
        return bus_load(
            len(self.drives),
            self.cycle.rate_hz,
            self.bus.bitrate,
            sync_counter=self.cycle.sync_counter,
            heartbeat_ms=beats,
        )

    def replace(self, **changes: Any) -> Config:
        """A copy with whole sections replaced, validated again (raises ConfigError)."""
        data = self.to_dict()
        for key, value in changes.items():
            data[key] = _as_dict(value)
        return load_config(data, base_dir=Path(self.source).parent if self.source else None)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (TOML/JSON-able) that :func:`load_config` accepts again."""
        out: dict[str, Any] = {name: _as_dict(getattr(self, name)) for name in _SECTIONS}
        out["drives"] = {axis: _as_dict(d) for axis, d in self.drives.items()}
        return out


def _as_dict(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _as_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _as_dict(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_as_dict(v) for v in value]
    return value


def default_config_path() -> Path:
    """The default simulation config shipped inside the package (``configs/sim.toml``)."""
    return Path(str(resources.files("whih_control") / "configs" / "sim.toml"))


CONFIG_MAX_BYTES = 1 << 20
"""A configuration file larger than this is refused (the shipped ones are a few kB)."""


def _read_config_text(path: Path) -> str:
    """The file's text, refusing what is not a regular file (``/dev/zero`` would never end, a
    FIFO would block) or is larger than :data:`CONFIG_MAX_BYTES`, before reading it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError([f"{path}: not a regular file (a configuration is a TOML file)"])
        if st.st_size > CONFIG_MAX_BYTES:
            raise ConfigError(
                [f"{path}: {st.st_size} bytes (allowed at most {CONFIG_MAX_BYTES}; is this a configuration?)"]
            )
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(CONFIG_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > CONFIG_MAX_BYTES:  # it grew while being read
        raise ConfigError([f"{path}: larger than {CONFIG_MAX_BYTES} bytes"])
    return data.decode("utf-8")


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any], *, base_dir: Path | None = None
) -> Config:
    """Load and validate a configuration from a TOML file or an already-parsed mapping.

    Relative ``eds`` paths resolve against the file's folder (or ``base_dir``, or the working
    directory for a mapping). Raises :class:`ConfigError` with every problem found.
    """
    origin = ""
    if isinstance(source, Mapping):
        data: Any = source
    elif not isinstance(source, str | os.PathLike):
        raise TypeError(f"load_config: source (={source!r}) must be a TOML file path or a mapping")
    else:
        path = Path(source)
        origin = str(path.resolve())
        try:
            data = tomllib.loads(_read_config_text(path))
        except FileNotFoundError:
            raise ConfigError([f"{path}: no such file"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: cannot read ({exc})"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML ({exc})"]) from None
        base_dir = base_dir or path.resolve().parent
    problems: list[str] = []
    bad: set[str] = set()
    if not isinstance(data, Mapping):
        raise ConfigError([f"config: must be a table (got {show(data)}, allowed a TOML table)"])
    allowed_keys = [*_SECTIONS, "drives"]
    for key in data:
        if key not in allowed_keys:
            problems.append(f"{key}: unknown section (got {show(key)}, allowed {', '.join(allowed_keys)})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        section = build(cls, data.get(name, {}), name, problems, bad)
        # a section that is not even a table still gets its defaults, so other checks can run
        sections[name] = cls() if section is None else section
    drives = _build_drives(data.get("drives"), base_dir or Path.cwd(), problems, bad)
    cfg = Config(drives=MappingProxyType(drives), source=origin, **sections)
    _cross_checks(cfg, problems, bad)
    if problems:
        raise ConfigError(problems)
    return cfg


def _build_drives(data: object, base_dir: Path, problems: list[str], bad: set[str]) -> dict[str, DriveConfig]:
    if data is None:
        problems.append(
            f"drives: missing section (got nothing, allowed one table per axis of {', '.join(ALL_AXES)})"
        )
        return {}
    if not isinstance(data, Mapping):
        problems.append(f"drives: must be a table (got {show(data)}, allowed a TOML table)")
        return {}
    drives: dict[str, DriveConfig] = {}
    for axis, table in data.items():
        if axis not in ALL_AXES:
            problems.append(f"drives.{axis}: unknown axis (got {show(axis)}, allowed {', '.join(ALL_AXES)})")
            continue
        drive = build(DriveConfig, table, f"drives.{axis}", problems, bad)
        if drive is not None:
            eds = resolve_eds(drive.eds, base_dir)
            if not eds.is_file():
                problems.append(
                    f"drives.{axis}.eds: file not found (got {show(drive.eds)} -> {eds}, "
                    "allowed an existing EDS/DCF file or 'builtin:NAME')"
                )
            drives[axis] = dataclasses.replace(drive, eds=str(eds))
    for axis in LINEAR_AXES:
        if axis not in data:
            problems.append(f"drives.{axis}: missing required axis (got nothing, allowed a drive table)")
    return drives


def _stop_distance_problems(key: str, v_max: float, decel: float, cfg: Config) -> list[str]:
    """Invariant 6 at max speed: a fault shows in the TPDO1 of the SYNC after it happened and the
    quick stop, sent in that cycle's RPDO1, takes effect at the next SYNC (RPDOs are synchronous):
    up to two periods of travel, then the quick-stop ramp, within ``safety.stop_distance_max``."""
    bound = cfg.safety.stop_distance_max
    delay = 2.0 * cfg.period
    reaction = v_max * delay
    stop = v_max**2 / (2.0 * decel) + reaction
    if stop <= bound:
        return []
    if reaction >= bound:
        return [
            f"{key}.max_speed: two cycles at max_speed cover {reaction:.3f} mm, more than "
            f"safety.stop_distance_max={bound:g} mm (got {v_max:g} mm/s, allowed < "
            f"{bound / delay:.4g} mm/s, or a higher cycle.rate_hz)"
        ]
    need = v_max**2 / (2.0 * (bound - reaction))
    return [
        f"{key}.quick_stop_decel: stop distance at max_speed {stop:.3f} mm (two cycles plus the "
        f"ramp) exceeds safety.stop_distance_max={bound:g} mm (got {decel:g} mm/s^2, allowed "
        f">= {need:.4g} mm/s^2 at max_speed {v_max:g} mm/s, or a lower max_speed)"
    ]


def _cross_checks(cfg: Config, problems: list[str], bad: set[str]) -> None:
    """Checks across fields; each is skipped when one of its inputs is already reported bad."""

    def ok(*keys: str) -> bool:
        return not any(k in bad or k.rsplit(".", 1)[0] in bad for k in keys)

    bus = cfg.bus
    seen: dict[int, str] = {}
    for axis, d in cfg.drives.items():
        key = f"drives.{axis}"
        if d.node_id == bus.master_node_id and ok("bus.master_node_id"):
            problems.append(
                f"{key}.node_id: equals the master's node id (got {d.node_id}, allowed 1...127 "
                f"except bus.master_node_id={bus.master_node_id})"
            )
        if d.node_id in seen:
            problems.append(
                f"{key}.node_id: duplicated, also used by drives.{seen[d.node_id]} (got "
                f"{d.node_id}, allowed a node id unique in 1...127)"
            )
        seen.setdefault(d.node_id, axis)
        if not d.travel_min < d.travel_max and ok(f"{key}.travel_min", f"{key}.travel_max"):
            problems.append(
                f"{key}.travel_min: must be below travel_max (got {d.travel_min:g}, allowed "
                f"< {d.travel_max:g})"
            )
        if not d.force_alarm < d.force_stop and ok(f"{key}.force_alarm", f"{key}.force_stop"):
            problems.append(
                f"{key}.force_alarm: must be below force_stop (got {d.force_alarm:g}, allowed "
                f"< {d.force_stop:g})"
            )
        count = 1.0 / d.counts_per_unit
        if not count <= d.position_window <= d.following_error_window and ok(
            f"{key}.position_window", f"{key}.counts_per_unit", f"{key}.following_error_window"
        ):
            problems.append(
                f"{key}.position_window: must lie between one encoder count and the following-error "
                f"window (got {d.position_window:g}, allowed {count:.4g}...{d.following_error_window:g}"
                " = 1/counts_per_unit...following_error_window)"
            )
        if not d.heartbeat_ms < d.heartbeat_timeout_ms and ok(
            f"{key}.heartbeat_ms", f"{key}.heartbeat_timeout_ms"
        ):
            problems.append(
                f"{key}.heartbeat_ms: must be below the master's timeout for it (got "
                f"{d.heartbeat_ms}, allowed < heartbeat_timeout_ms={d.heartbeat_timeout_ms})"
            )
        if d.kind == "linear" and ok(
            f"{key}.max_speed", f"{key}.quick_stop_decel", "safety.stop_distance_max"
        ):
            problems += _stop_distance_problems(key, d.max_speed, d.quick_stop_decel, cfg)
        for name, speed in (("wire_speed", cfg.procedure.wire_speed), ("mc_speed", cfg.procedure.mc_speed)):
            applies = d.kind == "linear" and (name == "wire_speed") == ("wire" in axis)
            if applies and speed > d.max_speed and ok(f"procedure.{name}", f"{key}.max_speed"):
                problems.append(
                    f"procedure.{name}: faster than drives.{axis}.max_speed (got {speed:g}, "
                    f"allowed <= {d.max_speed:g} mm/s)"
                )
    if not bus.master_heartbeat_ms < bus.master_heartbeat_timeout_ms and ok(
        "bus.master_heartbeat_ms", "bus.master_heartbeat_timeout_ms"
    ):
        problems.append(
            f"bus.master_heartbeat_ms: must be below the drives' timeout for it (got "
            f"{bus.master_heartbeat_ms}, allowed < master_heartbeat_timeout_ms="
            f"{bus.master_heartbeat_timeout_ms})"
        )
    if (
        bus.interface not in VIRTUAL_INTERFACES
        and bus.bitrate > CLASSICAL_CAN_MAX_BITRATE
        and ok("bus.interface", "bus.bitrate")
    ):
        problems.append(
            f"bus.bitrate: too fast for classical CAN on {bus.interface!r} (got {bus.bitrate}, "
            f"allowed <= {CLASSICAL_CAN_MAX_BITRATE}; only virtual buses go faster)"
        )
    load_inputs = [
        "bus.bitrate",
        "bus.master_heartbeat_ms",
        "cycle.rate_hz",
        "cycle.max_bus_load",
        "cycle.sync_counter",
        "drives",
    ]
    load = cfg.bus_load()
    if load.ratio > cfg.cycle.max_bus_load and ok(*load_inputs):
        problems.append(
            f"{join('cycle', 'rate_hz')}: bus overloaded: frames need {load.describe()} "
            f"(got {load.ratio * 100:.1f} %, allowed <= {cfg.cycle.max_bus_load * 100:.0f} % "
            "= cycle.max_bus_load; lower the rate, raise bus.bitrate or use fewer drives)"
        )
