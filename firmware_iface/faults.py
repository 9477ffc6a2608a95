"""Fault-injection specs: ``KIND[:AXIS][:ARG]@T_SECONDS``.

Examples: ``heartbeat-loss:retro_mc@2.0``, ``tpdo-drop:ante_wire:3@1.5``, ``emcy:ante_mc:0x8611@4``,
``force-spike:retro_wire:2.5@10``, ``sync-loss@3``, ``master-freeze:250@3``.

Kinds in :data:`DRIVE_FAULT_KINDS` act inside one simulated drive and need an axis; kinds in
:data:`RUNTIME_FAULT_KINDS` act on the master or the operator side and never take an axis.
Whether an axis exists in a configuration is checked by whoever applies the spec.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DRIVE_FAULT_KINDS",
    "RUNTIME_FAULT_KINDS",
    "FaultKind",
    "FaultSpec",
    "parse_fault",
]


class FaultKind(StrEnum):
    """Every fault that can be injected; the value is the spelling in a spec."""

    HEARTBEAT_LOSS = "heartbeat-loss"
    """The drive stops producing its heartbeat."""
    TPDO_DROP = "tpdo-drop"
    """The next ARG TPDO1 frames are not sent (ARG: integer >= 1)."""
    EMCY = "emcy"
    """The drive sends an EMCY with code ARG (hex, e.g. 0x8611) and faults if the code is an error."""
    ENCODER_JUMP = "encoder-jump"
    """Position actual jumps by ARG (axis units, non-zero)."""
    ENCODER_STUCK = "encoder-stuck"
    """Position actual freezes."""
    FORCE_SPIKE = "force-spike"
    """ARG newtons (> 0) are added to the load force for a short time."""
    DRIVE_FAULT = "drive-fault"
    """The drive enters FAULT with a hardware EMCY."""
    BOOT_UP = "boot-up"
    """The drive resets: boot-up frame, pre-operational, CiA 402 SWITCH ON DISABLED."""
    SYNC_LOSS = "sync-loss"
    """The master stops sending SYNC."""
    MASTER_FREEZE = "master-freeze"
    """The master stalls for ARG milliseconds (> 0)."""
    ESTOP = "estop"
    """The emergency stop is pressed."""
    DEADMAN_RELEASE = "deadman-release"
    """The operator releases the dead-man switch."""
    IMAGING_LOSS = "imaging-loss"
    """Tip measurements stop arriving."""


DRIVE_FAULT_KINDS: frozenset[FaultKind] = frozenset(
    {
        FaultKind.HEARTBEAT_LOSS,
        FaultKind.TPDO_DROP,
        FaultKind.EMCY,
        FaultKind.ENCODER_JUMP,
        FaultKind.ENCODER_STUCK,
        FaultKind.FORCE_SPIKE,
        FaultKind.DRIVE_FAULT,
        FaultKind.BOOT_UP,
    }
)
"""Kinds that a simulated drive applies to itself (``SimulatedDrives.inject``); axis required."""

RUNTIME_FAULT_KINDS: frozenset[FaultKind] = frozenset(
    {
        FaultKind.SYNC_LOSS,
        FaultKind.MASTER_FREEZE,
        FaultKind.ESTOP,
        FaultKind.DEADMAN_RELEASE,
        FaultKind.IMAGING_LOSS,
    }
)
"""Kinds that the runtime (master, operator, imaging) applies; bus-wide, no axis."""

# Which kinds take an ARG and how it is read. Kinds not listed take none.
_ARG_KIND: dict[FaultKind, str] = {
    FaultKind.TPDO_DROP: "frames",
    FaultKind.EMCY: "code",
    FaultKind.ENCODER_JUMP: "mm",
    FaultKind.FORCE_SPIKE: "newtons",
    FaultKind.MASTER_FREEZE: "ms",
}
_ARG_HELP = {
    "frames": "an integer number of frames in [1...1000000]",
    "code": "a hex EMCY code in [0x0001...0xFFFF], e.g. 0x8611",
    "mm": "a finite non-zero distance in axis units",
    "newtons": "a finite force > 0 in N",
    "ms": "a duration in ms in (0...60000] (beyond a minute every drive has long stopped itself)",
}
_AXIS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KINDS_TEXT = ", ".join(k.value for k in FaultKind)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault to inject at time ``t`` (seconds of drive/simulated time since start).

    ``axis`` is empty for runtime kinds. ``arg`` is the parsed argument: an int for ``tpdo-drop``
    (frames) and ``emcy`` (code), a float for ``encoder-jump`` (mm), ``force-spike`` (N) and
    ``master-freeze`` (ms), ``None`` for kinds without one.
    """

    kind: FaultKind
    axis: str
    arg: int | float | None
    t: float

    @property
    def is_drive_fault(self) -> bool:
        """True if a simulated drive applies this fault itself."""
        return self.kind in DRIVE_FAULT_KINDS

    def __str__(self) -> str:
        parts = [self.kind.value]
        if self.axis:
            parts.append(self.axis)
        if self.arg is not None:
            # repr: the shortest text that parses back to the same number
            parts.append(f"0x{self.arg:04X}" if self.kind is FaultKind.EMCY else repr(self.arg))
        return f"{':'.join(parts)}@{self.t!r}"


def _bad(spec: str, what: str) -> ValueError:
    return ValueError(
        f"fault spec {spec!r}: {what}; expected KIND[:AXIS][:ARG]@T_SECONDS with KIND one of {_KINDS_TEXT}"
    )


def _parse_arg(spec: str, kind: FaultKind, text: str) -> int | float:
    what = _ARG_KIND[kind]
    allowed = _ARG_HELP[what]
    try:
        if what == "code":
            if not text.lower().startswith("0x"):
                raise ValueError(text)
            code = int(text, 16)
            if not 0x0001 <= code <= 0xFFFF:
                raise ValueError(text)
            return code
        if what == "frames":
            frames = int(text, 10)
            if not 1 <= frames <= 1_000_000:
                raise ValueError(text)
            return frames
        value = float(text)
    except ValueError:
        raise _bad(spec, f"ARG (={text!r}) of {kind.value} must be {allowed}") from None
    ok = math.isfinite(value) and (value != 0.0 if what == "mm" else value > 0.0)
    if what == "ms":
        ok = ok and value <= 60_000.0  # a longer freeze would hold simulated time for good
    if not ok:
        raise _bad(spec, f"ARG (={text!r}) of {kind.value} must be {allowed}")
    return value


def parse_fault(spec: str) -> FaultSpec:
    """Parse ``KIND[:AXIS][:ARG]@T_SECONDS``; ValueError naming the spec and the problem."""
    if not isinstance(spec, str):
        raise TypeError(f"fault spec must be a str, not {type(spec).__name__}")
    text = spec.strip()
    head, sep, t_text = text.rpartition("@")
    if not sep or not head:
        raise _bad(spec, "missing '@T_SECONDS'")
    try:
        t = float(t_text)
    except ValueError:
        raise _bad(spec, f"time (={t_text!r}) is not a number of seconds") from None
    if not math.isfinite(t) or t < 0.0:
        raise _bad(spec, f"time (={t_text!r}) must be a finite number of seconds >= 0")

    fields = head.split(":")
    kind_text = fields[0].strip().lower()
    try:
        kind = FaultKind(kind_text)
    except ValueError:
        raise _bad(spec, f"unknown kind {fields[0]!r}") from None
    rest = [f.strip() for f in fields[1:]]
    if any(not f for f in rest):
        raise _bad(spec, "empty field between ':'")

    takes_arg = kind in _ARG_KIND
    takes_axis = kind in DRIVE_FAULT_KINDS
    axis = ""
    if takes_axis:
        if not rest:
            raise _bad(spec, f"{kind.value} needs an AXIS (it acts inside one drive)")
        axis = rest.pop(0)
        if not _AXIS_RE.match(axis):
            raise _bad(spec, f"AXIS (={axis!r}) is not an axis id (letters, digits, '_')")
    elif rest and not takes_arg:
        raise _bad(spec, f"{kind.value} is bus-wide and takes no AXIS or ARG, got {rest[0]!r}")
    elif len(rest) > 1:
        raise _bad(spec, f"{kind.value} is bus-wide and takes no AXIS, got {rest[0]!r}")

    arg: int | float | None = None
    if takes_arg:
        if not rest:
            raise _bad(spec, f"{kind.value} needs an ARG: {_ARG_HELP[_ARG_KIND[kind]]}")
        arg = _parse_arg(spec, kind, rest.pop(0))
    if rest:
        raise _bad(spec, f"{kind.value} takes no further field, got {rest[0]!r}")
    return FaultSpec(kind, axis, arg, t)
