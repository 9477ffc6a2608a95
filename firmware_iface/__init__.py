"""whih's CAN layer: CiA 402 drives over python-can and canopen, real or simulated.

Never imports ``whih_control``: the controller depends on this package, not the reverse.
"""

import importlib
from typing import TYPE_CHECKING, Any

from firmware_iface.errors import (
    BusError,
    DriveError,
    DriveSetupError,
    DriveTimeoutError,
    SdoError,
    WhihError,
)
from firmware_iface.spec import BusConfig, CycleConfig, DriveConfig, DriveSystem, bus_load

if TYPE_CHECKING:
    from firmware_iface.bus import open_bus
    from firmware_iface.check import DriveReport, check_drive
    from firmware_iface.master import Master, MasterStats

# Imported on first use, so reading a configuration does not pull in canopen.
_LAZY = {
    "Master": "firmware_iface.master",
    "MasterStats": "firmware_iface.master",
    "open_bus": "firmware_iface.bus",
    "check_drive": "firmware_iface.check",
    "DriveReport": "firmware_iface.check",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_iface' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "BusConfig",
    "BusError",
    "CycleConfig",
    "DriveConfig",
    "DriveError",
    "DriveReport",
    "DriveSetupError",
    "DriveSystem",
    "DriveTimeoutError",
    "Master",
    "MasterStats",
    "SdoError",
    "WhihError",
    "bus_load",
    "check_drive",
    "open_bus",
]
