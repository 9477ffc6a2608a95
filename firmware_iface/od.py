"""What a drive's EDS/DCF lets the master write: types, access, ranges, PDO channels and units.

A :class:`DriveDictionary` wraps ``canopen``'s object dictionary of one drive and answers the
questions set-up asks before it sends anything: is ``index:sub`` there, may the master write it,
which values does the drive accept (its ``LowLimit``/``HighLimit``, else its data type's range),
does the drive fix it (``LowLimit == HighLimit``), which PDO channels does it have and which does
it switch on at boot, and in which units it takes speeds and accelerations (0x60A8-0x60AA and the
factor group 0x608F-0x6097).

Unit objects follow CiA 402 (and CiA 303-2 for the codes): byte 3 is a signed power of ten, byte 2
the numerator's unit, byte 1 the denominator's. A drive without 0x60A9/0x60AA works in encoder
counts per second (squared), the CiA 402 default.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import canopen
from canopen.objectdictionary import ODArray, ODRecord, ODVariable, import_od

from firmware_iface.spec import DriveConfig

__all__ = [
    "DriveDictionary",
    "Entry",
    "Identity",
    "UnitCode",
    "UnitError",
    "accel_to_drive",
    "speed_to_drive",
]

# CiA 301 data types: (name, lowest, highest)
_TYPES: Final[dict[int, tuple[str, int, int]]] = {
    0x01: ("BOOLEAN", 0, 1),
    0x02: ("INTEGER8", -(2**7), 2**7 - 1),
    0x03: ("INTEGER16", -(2**15), 2**15 - 1),
    0x04: ("INTEGER32", -(2**31), 2**31 - 1),
    0x05: ("UNSIGNED8", 0, 2**8 - 1),
    0x06: ("UNSIGNED16", 0, 2**16 - 1),
    0x07: ("UNSIGNED32", 0, 2**32 - 1),
    0x10: ("INTEGER24", -(2**23), 2**23 - 1),
    0x15: ("INTEGER64", -(2**63), 2**63 - 1),
    0x16: ("UNSIGNED24", 0, 2**24 - 1),
    0x1B: ("UNSIGNED64", 0, 2**64 - 1),
}

_WRITABLE: Final = frozenset({"rw", "wo", "rww", "rwr"})

# CiA 303-2 unit codes the master can convert to (the numerator of a unit object)
_INC: Final = 0xB5
_REV: Final = 0xB4
_RPM: Final = 0xC0  # revolutions per minute, as maxon declares its acceleration (rpm/s)
_METRE: Final = 0x01
_DEGREE: Final = 0x41
_SECOND: Final = 0x03
_MINUTE: Final = 0x47
_UNIT_NAMES: Final = {
    0x00: "",
    _METRE: "m",
    _SECOND: "s",
    _DEGREE: "deg",
    _MINUTE: "min",
    _REV: "rev",
    _INC: "inc",
    _RPM: "rpm",
}
_SECONDS_IN: Final = {_SECOND: 1.0, _MINUTE: 60.0}

FACTOR_GROUP: Final = {
    0x608F: "position encoder resolution",
    0x6090: "velocity encoder resolution",
    0x6091: "gear ratio",
    0x6092: "feed constant",
    0x6093: "position factor",
    0x6094: "velocity encoder factor",
    0x6095: "velocity factor 1",
    0x6096: "velocity factor 2",
    0x6097: "acceleration factor",
}
"""The CiA 402 factor group; the master works only with identity factors (1/1) or none."""
_FACTORS: Final = (0x6093, 0x6094, 0x6095, 0x6096, 0x6097)


_CACHE: dict[tuple[str, int, int, int | None], canopen.ObjectDictionary] = {}
_CACHE_SIZE: Final = 64


class UnitError(ValueError):
    """A drive's unit object the master cannot convert to (the message names the object)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One object (``index:sub``) of a drive's dictionary, as the master may write it."""

    index: int
    sub: int
    name: str
    data_type: int
    access: str
    lo: int
    """Lowest value the drive accepts: its LowLimit, else its data type's minimum."""
    hi: int
    declared: bool
    """True when the file gives LowLimit or HighLimit (else lo/hi are the type's range)."""
    value: int | None
    """The file's ParameterValue (a DCF's configured value), else its DefaultValue, else None."""
    pdo_mappable: bool
    bits: int

    @property
    def type_name(self) -> str:
        """CiA 301 name of the data type, e.g. UNSIGNED16."""
        return _TYPES.get(self.data_type, (f"type 0x{self.data_type:04X}", 0, 0))[0]

    @property
    def writable(self) -> bool:
        """The master may write it by SDO."""
        return self.access in _WRITABLE

    @property
    def fixed(self) -> bool:
        """The file allows exactly one value (LowLimit == HighLimit)."""
        return self.declared and self.lo == self.hi

    def allowed(self) -> str:
        """The accepted range as shown in messages."""
        if self.fixed:
            return f"fixed at {self.lo}"
        source = "LowLimit/HighLimit" if self.declared else self.type_name
        return f"[{self.lo}...{self.hi}] ({source})"

    def refuses(self, value: int) -> str | None:
        """Why the drive would refuse ``value`` by SDO, or None when it accepts it."""
        if not self.writable:
            return f"it is {self.access!r} (read-only for the master)"
        if not self.lo <= value <= self.hi:
            return f"outside what the drive accepts: {self.allowed()}"
        return None


@dataclass(frozen=True, slots=True)
class Identity:
    """The identity object 0x1018 (vendor, product, revision, serial); None where unknown."""

    vendor: int | None
    product: int | None
    revision: int | None
    serial: int | None

    def describe(self) -> str:
        """``vendor 0x000000FB product 0x6552... revision ... serial ...``."""

        def hx(v: int | None) -> str:
            return "?" if v is None else f"0x{v:08X}"

        return (
            f"vendor {hx(self.vendor)} product {hx(self.product)} revision {hx(self.revision)} "
            f"serial {hx(self.serial)}"
        )

    def as_dict(self) -> dict[str, int | None]:
        """Plain dict for JSON."""
        return {
            "vendor": self.vendor,
            "product": self.product,
            "revision": self.revision,
            "serial": self.serial,
        }


@dataclass(frozen=True, slots=True)
class UnitCode:
    """A CiA 402 unit object value: ``value = number x 10^prefix numerator/denominator``."""

    raw: int

    @property
    def prefix(self) -> int:
        """Signed power of ten (byte 3)."""
        b = (self.raw >> 24) & 0xFF
        return b - 256 if b >= 128 else b

    @property
    def numerator(self) -> int:
        """Unit code of the numerator (byte 2)."""
        return (self.raw >> 16) & 0xFF

    @property
    def denominator(self) -> int:
        """Unit code of the denominator (byte 1)."""
        return (self.raw >> 8) & 0xFF

    def describe(self) -> str:
        """E.g. ``rev/min (0x00B44700)``."""
        num = _UNIT_NAMES.get(self.numerator, f"unit 0x{self.numerator:02X}")
        den = _UNIT_NAMES.get(self.denominator, f"unit 0x{self.denominator:02X}")
        text = f"{num}/{den}" if den else num
        if self.prefix:
            text = f"1e{self.prefix} {text}"
        return f"{text} (0x{self.raw:08X})"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class DriveDictionary:
    """A drive's object dictionary seen from the master (see the module docstring)."""

    def __init__(self, od: canopen.ObjectDictionary, source: str) -> None:
        self.od = od
        self.source = source
        """File name the dictionary came from (for messages)."""
        info = od.device_information
        self.name = str(getattr(info, "product_name", None) or getattr(info, "vendor_name", None) or source)

    @classmethod
    def load(cls, path: str | Path, node_id: int | None = None) -> DriveDictionary:
        """Read an EDS/DCF (raises OSError/ValueError/KeyError as ``canopen`` does).

        Parsing a vendor DCF takes a good part of a second, so a file unchanged since it was last
        read (same size and modification time) for the same node id is not parsed again; nothing
        here or in ``canopen``'s SDO client modifies the dictionary, so sharing it is safe.
        """
        p = Path(path)
        stat = p.stat()
        key = (str(p.resolve()), stat.st_mtime_ns, stat.st_size, node_id)
        od = _CACHE.get(key)
        if od is None:
            od = import_od(str(p), node_id)
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = od
        return cls(od, p.name)

    def entry(self, index: int, sub: int = 0) -> Entry | None:
        """``index:sub`` as the master may write it, or None when the drive lacks it."""
        obj = self.od.get(index)
        if obj is None:
            return None
        if isinstance(obj, ODVariable):
            if sub != 0:
                return None
            var = obj
        elif isinstance(obj, ODArray | ODRecord):
            if sub not in obj.subindices:
                return None
            var = obj[sub]
        else:  # pragma: no cover - canopen has no other object kinds
            return None
        data_type = int(var.data_type or 0)
        name, t_lo, t_hi = _TYPES.get(data_type, ("", -(2**63), 2**64 - 1))
        lo, hi = _int(var.min), _int(var.max)
        value = _int(var.value)
        if value is None:
            value = _int(var.default)
        return Entry(
            index=index,
            sub=sub,
            name=str(var.name),
            data_type=data_type,
            access=str(var.access_type),
            lo=t_lo if lo is None else lo,
            hi=t_hi if hi is None else hi,
            declared=lo is not None or hi is not None,
            value=value,
            pdo_mappable=bool(var.pdo_mappable),
            bits=len(var) if name else 0,
        )

    def value(self, index: int, sub: int = 0) -> int | None:
        """The file's value of ``index:sub`` (ParameterValue, else DefaultValue), or None."""
        e = self.entry(index, sub)
        return None if e is None else e.value

    def has(self, index: int) -> bool:
        """The drive has object ``index``."""
        # ``indices`` is canopen's own index -> object table; ``od.get`` of an absent index goes
        # through a KeyError with a formatted message (pdo_channels asks 2 x 512 indices)
        return index in self.od.indices

    # ---- PDOs

    def pdo_channels(self, *, receive: bool) -> Iterator[int]:
        """Numbers (0-based) of the drive's RPDO (``receive``) or TPDO channels."""
        base = 0x1400 if receive else 0x1800
        for k in range(512):
            if self.has(base + k) and self.has(base + 0x200 + k):
                yield k

    def pdo_on_at_boot(self, *, receive: bool, k: int) -> bool:
        """The file switches PDO channel ``k`` on (COB-ID bit 31 clear, something mapped)."""
        base = 0x1400 if receive else 0x1800
        cob = self.value(base + k, 1)
        count = self.value(base + 0x200 + k, 0)
        return cob is not None and not cob & 0x8000_0000 and bool(count)

    # ---- identity

    def identity(self) -> Identity:
        """0x1018 as the file declares it (a DCF gives the configured device's)."""
        info = self.od.device_information
        vendor = self.value(0x1018, 1)
        product = self.value(0x1018, 2)
        return Identity(
            vendor=vendor if vendor is not None else _int(getattr(info, "vendor_number", None)),
            product=product if product is not None else _int(getattr(info, "product_number", None)),
            revision=self.value(0x1018, 3),
            serial=self.value(0x1018, 4),
        )

    # ---- units

    def unit(self, index: int) -> UnitCode | None:
        """The unit object 0x60A8/0x60A9/0x60AA, or None when the drive does not declare it."""
        v = self.value(index)
        return None if v is None else UnitCode(v)

    def factor_problems(self) -> list[str]:
        """Factor group objects with a non-identity factor (the master cannot convert them)."""
        problems: list[str] = []
        for index in _FACTORS:
            num, div = self.value(index, 1), self.value(index, 2)
            if num is None and div is None:
                continue
            if num != div or not num:
                problems.append(
                    f"0x{index:04X} {FACTOR_GROUP[index]} = {num}/{div}: the drive rescales "
                    "position/speed/acceleration in a way the master does not model (only 1/1 is "
                    "supported)"
                )
        return problems

    def position_problem(self) -> str | None:
        """Why the drive's position unit (0x60A8) does not fit the cyclic path, or None."""
        code = self.unit(0x60A8)
        if code is None or (code.numerator == _INC and code.prefix == 0 and code.denominator == 0):
            return None
        return (
            f"0x60A8 SI unit position = {code.describe()}: the cyclic path sends target positions in "
            "encoder increments (counts_per_unit); the drive must work in increments (0x00B50000)"
        )


def _motor_revs_per_unit(drive: DriveConfig, index: int, code: UnitCode) -> float:
    if drive.encoder_counts_per_rev <= 0:
        raise UnitError(
            f"0x{index:04X} declares {code.describe()}: converting needs the motor's encoder counts "
            "per revolution (set encoder_counts_per_rev, and gear_ratio if the encoder is not on the "
            "motor shaft)"
        )
    return drive.counts_per_unit / drive.encoder_counts_per_rev * drive.gear_ratio


def _per_unit(drive: DriveConfig, index: int, code: UnitCode, numerator: int) -> float:
    """Drive units of the numerator per mm (or degree) of the axis."""
    if numerator == _INC:
        return drive.counts_per_unit
    if numerator in (_REV, _RPM):
        return _motor_revs_per_unit(drive, index, code)
    if numerator == _METRE and drive.kind == "linear":
        return 1e-3
    if numerator == _DEGREE and drive.kind == "rotary":
        return 1.0
    raise UnitError(
        f"0x{index:04X} declares {code.describe()}, which a {drive.kind} axis cannot be converted to"
    )


def speed_to_drive(dictionary: DriveDictionary, drive: DriveConfig, value: float) -> int:
    """A speed in mm/s (deg/s) in the drive's velocity unit (0x60A9), rounded; raises UnitError."""
    code = dictionary.unit(0x60A9)
    if code is None:
        return round(value * drive.counts_per_unit)
    seconds = _SECONDS_IN.get(code.denominator)
    if seconds is None or code.numerator == _RPM:
        raise UnitError(f"0x60A9 SI unit velocity = {code.describe()} is not a speed the master knows")
    return _rounded(value * _per_unit(drive, 0x60A9, code, code.numerator) * seconds / 10.0**code.prefix)


def accel_to_drive(dictionary: DriveDictionary, drive: DriveConfig, value: float) -> int:
    """An acceleration in mm/s^2 (deg/s^2) in the drive's unit (0x60AA); raises UnitError."""
    code = dictionary.unit(0x60AA)
    if code is None:
        return round(value * drive.counts_per_unit)
    seconds = _SECONDS_IN.get(code.denominator)
    if seconds is None or code.numerator != _RPM:
        # velocity units per second; rpm/s is what CiA 402 drives declare in practice
        raise UnitError(
            f"0x60AA SI unit acceleration = {code.describe()} is not an acceleration the master knows "
            "(supported: rpm/s, rpm/min)"
        )
    per_unit = _per_unit(drive, 0x60AA, code, code.numerator)
    return _rounded(value * per_unit * 60.0 * seconds / 10.0**code.prefix)


def _rounded(x: float) -> int:
    if not math.isfinite(x):
        raise UnitError(f"conversion gave {x}")
    return round(x)
