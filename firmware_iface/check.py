"""Offline capability check: can the drive an EDS/DCF describes run the whih cycle safely?

The master runs the same check at set-up before it talks to a drive, and ``whih check-config``
can run it on every configured drive. It reads only the object dictionary; whatever the file
leaves open (e.g. 0x6502 without a value) is checked again on the wire at set-up.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import canopen
from canopen.objectdictionary import ODArray, ODRecord, ODVariable, import_od

from firmware_iface.cia402 import MODE_CSP

__all__ = ["DriveReport", "check_drive"]

_CSP_BIT: Final = 1 << (MODE_CSP - 1)  # 0x6502 bit 7

# (index, name, why the cycle needs it, must be mappable into a PDO)
_PDO_OBJECTS: Final = (
    (0x6040, "controlword", "RPDO1 carries it every cycle", True),
    (0x607A, "target position", "RPDO1 carries the CSP setpoint", True),
    (0x6041, "statusword", "TPDO1 reports the drive state every cycle", True),
    (0x6064, "position actual value", "TPDO1 reports the position every cycle", True),
    (0x6077, "torque actual value", "TPDO1 reports the force (torque) every cycle", True),
    (0x1400, "RPDO1 communication parameter", "RPDO1 must be set to transmission type 1", False),
    (0x1600, "RPDO1 mapping parameter", "RPDO1 must map controlword + target position", False),
    (0x1800, "TPDO1 communication parameter", "TPDO1 must be sent on every SYNC", False),
    (0x1A00, "TPDO1 mapping parameter", "TPDO1 must map statusword + position + torque", False),
    (0x6060, "modes of operation", "the drive must be switched to CSP (8)", False),
    (0x6061, "modes of operation display", "set-up reads back that CSP is active", False),
)

_SAFETY_OBJECTS: Final = (
    (0x1017, "producer heartbeat time", "the master could not tell a dead drive from a quiet one"),
    (0x6007, "abort connection option code", "the drive would not quick-stop on a lost connection"),
    (0x605A, "quick stop option code", "the quick-stop reaction could not be set and checked"),
    (0x607D, "software position limit", "the drive could not stop itself at the travel limits"),
    (0x6065, "following error window", "the drive could not detect a blocked or slipping axis"),
    (0x6066, "following error time out", "the drive could not detect a blocked or slipping axis"),
    (0x6085, "quick stop deceleration", "the quick-stop ramp could not be set"),
)


@dataclass(frozen=True, slots=True)
class DriveReport:
    """Result of :func:`check_drive`: ``ok`` when ``problems`` is empty."""

    node_name: str
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    """Things the file leaves open that set-up checks on the wire; not problems."""

    @property
    def ok(self) -> bool:
        """True if the drive can run the whih cycle."""
        return not self.problems


def _value_of(var: ODVariable) -> int | None:
    for candidate in (var.value, var.default):
        if isinstance(candidate, int):
            return candidate
    return None


def check_drive(
    eds_path_or_od: str | Path | canopen.ObjectDictionary,
    *,
    accept_no_heartbeat_consumer: bool = False,
    accept_missing: Collection[str] = (),
) -> DriveReport:
    """Check that a drive supports CSP, the cyclic PDO objects and the drive-side safety objects.

    Each problem names the object and why it matters. A drive without a heartbeat consumer
    (0x1016) is accepted only with ``accept_no_heartbeat_consumer``, a missing safety object only
    when ``accept_missing`` names it (e.g. ``"0x6066"``, a drive's ``accept_fixed``); either is
    then listed in ``notes`` with its consequence.
    """
    if isinstance(eds_path_or_od, canopen.ObjectDictionary):
        od = eds_path_or_od
        source = "object dictionary"
    else:
        source = str(eds_path_or_od)
        try:
            od = import_od(source)
        except (OSError, ValueError, KeyError) as exc:
            return DriveReport(source, (f"cannot load object dictionary {source!r}: {exc}",))
    info = od.device_information
    name = str(getattr(info, "product_name", None) or getattr(info, "vendor_name", None) or source)
    problems: list[str] = []
    notes: list[str] = []

    modes = od.get(0x6502)
    if modes is None:
        problems.append(
            "0x6502 supported drive modes is missing: cannot tell whether the drive supports CSP (8)"
        )
    elif isinstance(modes, ODVariable):
        bits = _value_of(modes)
        if bits is None:
            notes.append("0x6502 supported drive modes has no value in the file: CSP is verified at set-up")
        elif not bits & _CSP_BIT:
            supported = [m for m in range(1, 33) if bits & (1 << (m - 1))]
            problems.append(
                f"0x6502 supported drive modes (=0x{bits:X}, modes {supported}) lacks bit 7: "
                "no cyclic synchronous position (CSP, mode 8), the only mode whih drives"
            )

    for index, what, why, mappable in _PDO_OBJECTS:
        obj = od.get(index)
        if obj is None:
            problems.append(f"0x{index:04X} {what} is missing: {why}")
        elif mappable and isinstance(obj, ODVariable) and not obj.pdo_mappable:
            problems.append(f"0x{index:04X} {what} is not PDO-mappable: {why}")

    consumer = od.get(0x1016)
    if consumer is None or not isinstance(consumer, ODArray | ODRecord) or 1 not in consumer.subindices:
        msg = "0x1016 consumer heartbeat time is missing: the drive cannot stop itself when the master dies"
        if accept_no_heartbeat_consumer:
            notes.append(msg + " (accepted by configuration)")
        else:
            problems.append(msg)

    for index, what, why in _SAFETY_OBJECTS:
        if od.get(index) is None:
            msg = f"0x{index:04X} {what} is missing: {why}"
            if f"0x{index:04X}" in accept_missing:
                notes.append(msg + " (accepted by configuration)")
            else:
                problems.append(msg)

    return DriveReport(name, tuple(problems), tuple(notes))
