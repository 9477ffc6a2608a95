"""whih: drive a two-sided robotic catheter system through the WHIH technique for CTOs.

``load_config`` validates a TOML configuration once; everything below works on the result.
"""

from whih_control.api import Robot, RunResult, simulate
from whih_control.config import Config, default_config_path, load_config
from whih_control.errors import (
    CommandTimeoutError,
    ConfigError,
    DriveError,
    DriveTimeoutError,
    LogIntegrityError,
    ProcedureError,
    SafetyError,
    WhihError,
)
from whih_control.status import DriveStatus, Status
from whih_control.trials import trials
from whih_control.types import TipMeasurement

__all__ = [
    "CommandTimeoutError",
    "Config",
    "ConfigError",
    "DriveError",
    "DriveStatus",
    "DriveTimeoutError",
    "LogIntegrityError",
    "ProcedureError",
    "Robot",
    "RunResult",
    "SafetyError",
    "Status",
    "TipMeasurement",
    "WhihError",
    "default_config_path",
    "load_config",
    "simulate",
    "trials",
]

__version__ = "0.1.0"
