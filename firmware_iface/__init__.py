"""whih's CAN layer: CiA 402 drives over python-can and canopen, real or simulated.

Never imports ``whih_control``: the controller depends on this package, not the reverse.
"""

from firmware_iface.errors import (
    BusError,
    DriveError,
    DriveSetupError,
    DriveTimeoutError,
    SdoError,
    WhihError,
)
from firmware_iface.spec import BusConfig, CycleConfig, DriveConfig, DriveSystem, bus_load

__all__ = [
    "BusConfig",
    "BusError",
    "CycleConfig",
    "DriveConfig",
    "DriveError",
    "DriveSetupError",
    "DriveSystem",
    "DriveTimeoutError",
    "SdoError",
    "WhihError",
    "bus_load",
]
