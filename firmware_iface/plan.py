"""The SDO writes of the master's set-up, planned and checked against the drive's EDS/DCF.

:func:`plan_setup` turns one drive's configuration into the exact list of SDO writes set-up
will make (PDO hygiene, cyclic PDO mapping, CSP, the drive-side safety objects) and checks every
value against :class:`~firmware_iface.od.DriveDictionary` before anything is sent. ``whih
check-config`` prints the same problems and notes that ``Master.setup`` raises and logs, so a
config that passes the check is one a strict drive accepts.

PDO hygiene follows CiA 301: every PDO channel is first switched off (COB-ID bit 31, its other
bits as the drive has them: they may not change while the PDO is valid), the two the cycle uses
get mapping count 0, their entries, the count, and then their COB-ID with bit 31 clear; every
other channel stays off, so the drives send only what the bus-load check counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from firmware_iface import pdo
from firmware_iface.check import check_drive
from firmware_iface.cia402 import MODE_CSP
from firmware_iface.od import DriveDictionary, Identity, UnitError, accel_to_drive
from firmware_iface.spec import BusConfig, DriveConfig, DriveSystem, resolve_eds

__all__ = [
    "ABORT_CONNECTION_QUICK_STOP",
    "QUICK_STOP_OPTION",
    "SetupPlan",
    "Write",
    "plan_setup",
    "plan_system",
]

QUICK_STOP_OPTION: Final = 2
"""0x605A written to every drive (see :mod:`firmware_iface.master` for why)."""
ABORT_CONNECTION_QUICK_STOP: Final = 3
"""0x6007 = 3: quick stop when the connection to the master is lost."""
PDO_INVALID: Final = 0x8000_0000
"""COB-ID bit 31: the PDO does not exist (is switched off)."""

# What accepting the drive's own value of a safety object means on the robot.
_CONSEQUENCE: Final = {
    0x1017: "the drive beats at its own period; the master's watchdog (heartbeat_timeout_ms) may "
    "call it lost",
    0x6007: "on a lost connection the drive reacts as its own abort option says, maybe not with a quick stop",
    0x605A: "the drive's quick-stop reaction is its own (maybe dropping torque after the ramp)",
    0x607D: "the drive does not stop itself at the configured travel limits (only the master does)",
    0x6065: "the drive detects a blocked or slipping axis with its own following-error window",
    0x6066: "the drive detects a blocked or slipping axis with its own following-error time-out",
    0x6085: "the quick-stop ramp is the drive's own: the stop-distance check (invariant 6) no longer "
    "holds for this axis",
}


def _pdo_map(index: int, sub: int, bits: int) -> int:
    return (index << 16) | (sub << 8) | bits


def _counts(value: float, counts_per_unit: float) -> int:
    return round(value * counts_per_unit)


@dataclass(frozen=True, slots=True)
class Write:
    """One SDO write of set-up."""

    index: int
    sub: int
    value: int
    what: str
    """What the value means, e.g. ``following_error_timeout_ms = 20 ms``."""
    effect: str
    """What the object does on the robot."""
    accept: str | None = None
    """Its ``accept_fixed`` name when it is a safety object the config may leave to the drive."""
    keep_cob: bool = False
    """Switching a PDO off: COB-ID bits 0..30 stay as the drive has them (read first)."""


@dataclass(slots=True)
class SetupPlan:
    """What set-up writes to one drive, what it reads back, and what is wrong with it."""

    axis: str
    node_id: int
    dictionary: DriveDictionary
    writes: list[Write] = field(default_factory=list)
    readback: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    """(index, sub) -> (expected value, mask of the bits compared)."""
    problems: list[str] = field(default_factory=list)
    """Each names the drive, object, value, allowed range and what it would do on the robot."""
    notes: list[str] = field(default_factory=list)
    """Accepted deviations with their consequence, and what hygiene switches off."""
    identity: Identity | None = None
    """0x1018 as the file declares it."""

    @property
    def ok(self) -> bool:
        """No problem: a drive that matches its file accepts every write."""
        return not self.problems

    @property
    def label(self) -> str:
        """``node 1 (ante_wire)``."""
        return f"node {self.node_id} ({self.axis})"


def _pdo_writes(d: DriveDictionary, node_id: int, where: str) -> tuple[list[Write], list[str]]:
    writes: list[Write] = []
    notes: list[str] = []
    off_at_boot: list[str] = []
    for receive, base, name in ((True, 0x1400, "RPDO"), (False, 0x1800, "TPDO")):
        for k in d.pdo_channels(receive=receive):
            if k != 0 and d.pdo_on_at_boot(receive=receive, k=k):
                off_at_boot.append(f"{name}{k + 1}")
            writes.append(
                Write(
                    base + k,
                    1,
                    PDO_INVALID,
                    f"{name}{k + 1} switched off (COB-ID bit 31)",
                    "an unused PDO would load the bus (or take frames) outside the cycle",
                    keep_cob=True,
                )
            )
    if off_at_boot:
        notes.append(f"{where}: {', '.join(off_at_boot)} on at boot: switched off at set-up")
    rpdo, tpdo = pdo.rpdo1_cob(node_id), pdo.tpdo1_cob(node_id)
    cyclic = "the cyclic exchange"
    writes += [
        Write(0x1400, 2, 1, "RPDO1 synchronous (type 1)", "RPDO1 takes effect on every SYNC"),
        Write(0x1600, 0, 0, "RPDO1 mapping count 0", "mapping may only change at count 0"),
        Write(0x1600, 1, _pdo_map(0x6040, 0, 16), "RPDO1 maps controlword", cyclic),
        Write(0x1600, 2, _pdo_map(0x607A, 0, 32), "RPDO1 maps target position", cyclic),
        Write(0x1600, 0, 2, "RPDO1 mapping count 2", cyclic),
        Write(0x1400, 1, rpdo, f"RPDO1 on at 0x{rpdo:03X}", cyclic),
        Write(0x1800, 2, 1, "TPDO1 synchronous (type 1)", "TPDO1 answers every SYNC"),
        Write(0x1A00, 0, 0, "TPDO1 mapping count 0", "mapping may only change at count 0"),
        Write(0x1A00, 1, _pdo_map(0x6041, 0, 16), "TPDO1 maps statusword", cyclic),
        Write(0x1A00, 2, _pdo_map(0x6064, 0, 32), "TPDO1 maps position actual", cyclic),
        Write(0x1A00, 3, _pdo_map(0x6077, 0, 16), "TPDO1 maps torque actual", cyclic),
        Write(0x1A00, 0, 3, "TPDO1 mapping count 3", cyclic),
        Write(0x1800, 1, tpdo, f"TPDO1 on at 0x{tpdo:03X}", cyclic),
    ]
    return writes, notes


def plan_setup(axis: str, drive: DriveConfig, bus: BusConfig, dictionary: DriveDictionary) -> SetupPlan:
    """Every SDO write of set-up for ``drive``, checked against ``dictionary`` (see the module)."""
    d = dictionary
    plan = SetupPlan(axis, drive.node_id, d, identity=d.identity())
    where = f"{plan.label}, {d.source}"
    cpu = drive.counts_per_unit
    unit = "mm" if drive.kind == "linear" else "deg"

    for problem in filter(None, [d.position_problem(), *d.factor_problems()]):
        plan.problems.append(f"{where}: {problem}")
    try:
        decel = accel_to_drive(d, drive, drive.quick_stop_decel)
        code = d.unit(0x60AA)
        decel_what = (
            f"quick_stop_decel = {drive.quick_stop_decel:g} {unit}/s^2 in "
            f"{code.describe() if code else 'counts/s^2 (no 0x60AA)'}"
        )
    except UnitError as exc:
        plan.problems.append(f"{where}: {exc} (quick_stop_decel is written to 0x6085)")
        decel, decel_what = 0, ""

    writes, notes = _pdo_writes(d, drive.node_id, where)
    plan.notes += notes
    writes += [
        Write(
            0x6060, 0, MODE_CSP, "modes of operation = CSP (8)", "whether the drive follows RPDO1's target"
        ),
        Write(
            0x1017,
            0,
            drive.heartbeat_ms,
            f"heartbeat_ms = {drive.heartbeat_ms} ms",
            "how the master tells a dead drive from a quiet one",
            "0x1017",
        ),
        Write(
            0x6007,
            0,
            ABORT_CONNECTION_QUICK_STOP,
            "abort connection option = quick stop (3)",
            "whether the drive quick-stops itself when it loses the master",
            "0x6007",
        ),
        Write(
            0x605A,
            0,
            QUICK_STOP_OPTION,
            "quick stop option = ramp and hold (6)",
            "whether a quick stop holds position after the ramp",
            "0x605A",
        ),
        Write(
            0x607D,
            1,
            _counts(drive.travel_min, cpu),
            f"travel_min = {drive.travel_min:g} {unit}",
            "where the drive stops itself at its travel limit",
            "0x607D",
        ),
        Write(
            0x607D,
            2,
            _counts(drive.travel_max, cpu),
            f"travel_max = {drive.travel_max:g} {unit}",
            "where the drive stops itself at its travel limit",
            "0x607D",
        ),
        Write(
            0x6065,
            0,
            _counts(drive.following_error_window, cpu),
            f"following_error_window = {drive.following_error_window:g} {unit}",
            "how far a blocked or slipping axis may lag before the drive faults",
            "0x6065",
        ),
        Write(
            0x6066,
            0,
            drive.following_error_timeout_ms,
            f"following_error_timeout_ms = {drive.following_error_timeout_ms} ms",
            "how long the following error may exceed its window before the drive faults",
            "0x6066",
        ),
    ]
    if decel_what:
        writes.append(
            Write(
                0x6085, 0, decel, decel_what, "the drive's quick-stop ramp, hence the stop distance", "0x6085"
            )
        )
    if not drive.accept_no_heartbeat_consumer or d.has(0x1016):
        consumer = (bus.master_node_id << 16) | bus.master_heartbeat_timeout_ms
        writes.append(
            Write(
                0x1016,
                1,
                consumer,
                f"heartbeat consumer: master node {bus.master_node_id}, {bus.master_heartbeat_timeout_ms} ms",
                "whether the drive quick-stops itself when the master dies",
            )
        )

    for w in writes:
        _check_write(plan, drive, w, where)
    # read every final value back: 0x6060 may be write-only, 0x6061 shows the active mode
    plan.readback.pop((0x6060, 0), None)
    plan.readback[(0x6061, 0)] = (MODE_CSP, 0xFF)
    for index in (0x60A9, 0x60AA):
        # the speed/acceleration conversion above relies on the file's unit objects
        code = d.unit(index)
        if code is not None:
            plan.readback[(index, 0)] = (code.raw, 0xFFFF_FFFF)
    return plan


def plan_system(system: DriveSystem) -> tuple[dict[str, SetupPlan], list[str]]:
    """Plans for every drive of ``system`` and every problem (a file that does not load, a
    capability missing, a value refused), each line starting with ``drives.AXIS:``."""
    plans: dict[str, SetupPlan] = {}
    problems: list[str] = []
    for axis, drive in system.drives.items():
        key = f"drives.{axis}"
        try:
            dictionary = DriveDictionary.load(resolve_eds(drive.eds, Path.cwd()), drive.node_id)
        except (OSError, ValueError, KeyError) as exc:
            problems.append(
                f"{key}.eds: node {drive.node_id} ({axis}): cannot load object dictionary "
                f"{drive.eds!r}: {exc}"
            )
            continue
        report = check_drive(
            dictionary.od,
            accept_no_heartbeat_consumer=drive.accept_no_heartbeat_consumer,
            accept_missing=drive.accept_fixed,
        )
        if not report.ok:
            who = f"node {drive.node_id} ({axis}, {report.node_name}) cannot run the whih cycle"
            problems += [f"{key}.eds: {who}: {p}" for p in report.problems]
            continue
        plan = plan_setup(axis, drive, system.bus, dictionary)
        # a missing object accepted by accept_fixed has its note (with the consequence) from the plan
        own = [n for n in report.notes if not n.startswith(tuple(drive.accept_fixed) or ("\0",))]
        plan.notes[:0] = [f"{plan.label}, {dictionary.source}: {n}" for n in own]
        problems += [f"{key}: {p}" for p in plan.problems]
        plans[axis] = plan
    return plans, problems


_CHANGE_CONFIG = (
    "; the configured value that gives it must change (e.g. counts_per_unit, or the limit in axis "
    "units it is scaled from)"
)
"""The remedy for a value of ours that a writable object cannot hold."""


def _check_write(plan: SetupPlan, drive: DriveConfig, w: Write, where: str) -> None:
    entry = plan.dictionary.entry(w.index, w.sub)
    obj = f"0x{w.index:04X}:{w.sub}"
    accepted = w.accept is not None and w.accept in drive.accept_fixed
    remedy = (
        f"; to run with the drive's own value ({_CONSEQUENCE.get(w.index, '')}), add "
        f'"{w.accept}" to drives.{plan.axis}.accept_fixed'
        if w.accept is not None
        else ""
    )
    if entry is None:
        if accepted:
            plan.notes.append(f"{where}: {obj} is missing; accepted by accept_fixed: {_CONSEQUENCE[w.index]}")
            return
        plan.problems.append(
            f"{where}: {obj} ({w.what}) is not in the drive's dictionary (on the robot: {w.effect}){remedy}"
        )
        return
    if w.keep_cob:
        if not entry.writable:
            plan.problems.append(f"{where}: {obj} {entry.name} is {entry.access!r}: {w.what} impossible")
            return
        plan.writes.append(w)
        plan.readback[(w.index, w.sub)] = (PDO_INVALID, PDO_INVALID)
        return
    reason = entry.refuses(w.value)
    if reason is None:
        plan.writes.append(w)
        plan.readback[(w.index, w.sub)] = (w.value, 0xFFFF_FFFF if w.value >= 0 else -1)
        return
    if accepted and (entry.fixed or not entry.writable) and entry.value is not None:
        own = entry.lo if entry.fixed else entry.value
        consequence = _CONSEQUENCE[w.index]
        if w.index == 0x6066 and own == 0:
            consequence += " (0: it faults as soon as the error leaves the window)"
        plan.notes.append(
            f"{where}: {obj} {entry.name} left at the drive's {own} instead of {w.value} ({w.what}), "
            f"accepted by accept_fixed: {consequence}"
        )
        plan.readback[(w.index, w.sub)] = (own, 0xFFFF_FFFF if own >= 0 else -1)
        return
    if entry.writable and not entry.fixed:  # accept_fixed keeps a value the drive fixes: not this one
        remedy = _CHANGE_CONFIG
    plan.problems.append(
        f"{where}: {obj} {entry.name} = {w.value} ({w.what}) would be refused: {reason}; the drive "
        f"would abort the SDO write and set-up stop before enabling (on the robot: {w.effect}){remedy}"
    )
