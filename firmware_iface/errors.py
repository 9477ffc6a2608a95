"""Exceptions of the CAN layer; ``whih_control.errors`` builds on the same root.

::

    WhihError
     +-- DriveError
     |    +-- DriveTimeoutError (also TimeoutError)   a node did not answer in time
     |    +-- SdoError                                SDO abort, with the abort code's meaning
     |    +-- DriveSetupError                         a read-back differs, or a capability is missing
     +-- BusError                                     the CAN bus could not be opened or used
"""

from __future__ import annotations

__all__ = [
    "BusError",
    "DriveError",
    "DriveSetupError",
    "DriveTimeoutError",
    "SdoError",
    "WhihError",
]


class WhihError(Exception):
    """Root of every exception raised on purpose by whih."""


class DriveError(WhihError):
    """Something is wrong with one drive (the message names its node)."""


class DriveTimeoutError(DriveError, TimeoutError):
    """A node did not answer (boot-up, heartbeat, SDO) within its timeout."""


class SdoError(DriveError):
    """An SDO transfer was aborted; the message gives the abort code and its meaning."""


class DriveSetupError(DriveError):
    """Set-up refused to enable a drive: a value read back differs, or a capability is missing."""


class BusError(WhihError):
    """The CAN bus could not be opened or failed while in use."""
