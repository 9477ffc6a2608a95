"""Exceptions of the controller side, on the same root as the CAN layer's.

::

    WhihError                       (firmware_iface.errors)
     +-- ConfigError (also ValueError)   a configuration is invalid; one line per problem
     +-- ProcedureError                  a trigger is not allowed in the present phase
     +-- SafetyError                     a request was refused by the safety supervisor
     +-- LogIntegrityError               events.jsonl does not verify
     +-- RunFolderError                  the run folder cannot be created or holds a run already
 +-- CommandTimeoutError (also TimeoutError)  the cycle did not answer a verb, or a wait timed out
     +-- DriveError, BusError, ...       (see firmware_iface.errors)
"""

from __future__ import annotations

from collections.abc import Sequence

from firmware_iface.errors import (
    BusError,
    DriveError,
    DriveSetupError,
    DriveTimeoutError,
    SdoError,
    WhihError,
)

__all__ = [
    "BusError",
    "CommandTimeoutError",
    "ConfigError",
    "DriveError",
    "DriveSetupError",
    "DriveTimeoutError",
    "LogIntegrityError",
    "ProcedureError",
    "RunFolderError",
    "SafetyError",
    "SdoError",
    "WhihError",
]


class ConfigError(WhihError, ValueError):
    """A configuration is invalid. ``problems`` holds one ``key.path: what (got, allowed)`` each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        n = len(self.problems)
        head = f"{n} configuration problem{'s' if n != 1 else ''}:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class ProcedureError(WhihError):
    """A trigger or operator action is not allowed in the present phase (state unchanged)."""


class SafetyError(WhihError):
    """A request (e.g. a jog) was refused by the safety supervisor; the message says why."""


class LogIntegrityError(WhihError):
    """An event log failed verification; the message names the line and what is wrong."""


class RunFolderError(WhihError):
    """The run folder (``out``) cannot be created, or already holds a run (nothing is overwritten)."""


class CommandTimeoutError(WhihError, TimeoutError):
    """The cycle did not answer an operator verb in time, or :meth:`Robot.wait` timed out."""
