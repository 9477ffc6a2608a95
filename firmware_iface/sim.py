"""Simulated CiA 402 drive firmware for every configured axis, with fault injection.

:class:`SimulatedDrives` puts one simulated drive per configured axis on a python-can bus. Each
drive owns a ``canopen.LocalNode`` built from its EDS (SDO server and object dictionary) and does
the rest itself, in *drive time* (SYNC count x nominal period since start):

* NMT slave (start/stop/pre-operational/reset node/reset communication, boot-up frame) and the
  heartbeat producer (0x1017); heartbeat consumer (0x1016) with the abort-connection reaction
  (0x6007) and EMCY 0x8130 on a missing master heartbeat.
* RPDO1/TPDO1 as mapped in 0x1400/0x1600/0x1800/0x1A00 (synchronous transmission types 1..240,
  0 and 254/255 with an event timer); the master configures them through SDO.
* The CiA 402 power state machine (:func:`firmware_iface.cia402.drive_transition`), fault reaction,
  quick stop (0x605A, 0x6085), software position limits (0x607D, statusword bit 11), following
  error (0x6065/0x6066, EMCY 0x8611), CSP only (0x6060 = 8).
* A motor model stepped once per SYNC: the position follows the target within the drive's own
  speed/acceleration limits (0x607F/0x60C5, set to 1.5x the configured limits so the controller's
  limits bind first) and stalls against a load force above the torque limit (0x6072).
* An optional plant (:class:`~firmware_iface.types.PlantLoad`) stepped once per SYNC turns
  insertion into axial force; torque actual (0x6077) = force / ``force_per_torque``.

On a :class:`~firmware_iface.simbus.SimTimeBus` the drives are attached to its kernel as one device
and stepped synchronously on SYNC (no thread); periods without SYNC (``SimKernel.advance``) run
their timers.
On any other bus (e.g. a ``virtual`` handle on the master's channel) all drives run in one thread
that receives with a timeout and steps on SYNC; when SYNC stops, drive time follows the wall clock
so heartbeats and the heartbeat consumer keep working.

Injected faults (:meth:`SimulatedDrives.inject`, kinds in
:data:`~firmware_iface.faults.DRIVE_FAULT_KINDS`) act at their time in drive time.
"""

from __future__ import annotations

import configparser
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, cast

import can
import canopen
from canopen.objectdictionary import ODArray, ODRecord
from canopen.sdo.exceptions import SdoAbortedError

from firmware_iface import pdo
from firmware_iface.bus import kernel_of
from firmware_iface.cia402 import (
    MODE_CSP,
    SW_FOLLOWING_ERROR,
    SW_INTERNAL_LIMIT,
    SW_TARGET_REACHED,
    DriveState,
    drive_transition,
    encode_statusword,
)
from firmware_iface.faults import DRIVE_FAULT_KINDS, FaultKind, FaultSpec, parse_fault
from firmware_iface.spec import DriveConfig, DriveSystem, resolve_eds
from firmware_iface.types import PlantLoad

__all__ = [
    "DRIVE_FAULT_EMCY",
    "FORCE_SPIKE_S",
    "MOTOR_HEADROOM",
    "SimDrive",
    "SimulatedDrives",
]

MOTOR_HEADROOM: Final = 1.5
"""The simulated motor's speed/acceleration limits are this multiple of the configured ones."""
FORCE_SPIKE_S: Final = 0.1
"""How long an injected force spike lasts, s."""
DRIVE_FAULT_EMCY: Final = 0x5000
"""EMCY code of an injected ``drive-fault`` (device hardware)."""

EMCY_HEARTBEAT: Final = 0x8130
EMCY_FOLLOWING_ERROR: Final = 0x8611
EMCY_PDO_LENGTH: Final = 0x8210

_CW_HALT: Final = 1 << 8
_TORQUE_ON: Final = frozenset(
    {DriveState.OPERATION_ENABLED, DriveState.QUICK_STOP_ACTIVE, DriveState.FAULT_REACTION_ACTIVE}
)
_EPS_T: Final = 1e-9
_SW_BASE: Final[dict[DriveState, int]] = {
    s: encode_statusword(s) for s in DriveState if s is not DriveState.UNKNOWN
}
# Module-level aliases: the per-SYNC step reads these once per drive, a global lookup each
# instead of a global plus an enum attribute lookup.
_OE: Final = DriveState.OPERATION_ENABLED
_QSA: Final = DriveState.QUICK_STOP_ACTIVE
_FRA: Final = DriveState.FAULT_REACTION_ACTIVE
_NRTSO: Final = DriveState.NOT_READY_TO_SWITCH_ON
_SOD: Final = DriveState.SWITCH_ON_DISABLED
_NMT_OP: Final = pdo.NMT_OPERATIONAL
_NMT_BOOT: Final = pdo.NMT_BOOTUP
_TPDO1_PACK: Final = pdo.TPDO1.pack
_RPDO1_UNPACK: Final = pdo.RPDO1.unpack_from
_I16_MIN: Final = -(2**15)
_I16_MAX: Final = 2**15 - 1
_I32_MIN: Final = -(2**31)
_I32_MAX: Final = 2**31 - 1
_new_message = can.Message.__new__
_sqrt: Final = math.sqrt


def _frame(cob: int, data: bytes) -> can.Message:
    """``can.Message(arbitration_id=cob, data=data, is_extended_id=False)``, built field by field.

    A drive sends a fresh frame per TPDO/heartbeat (consumers such as a trace recorder keep
    them); setting the slots directly skips the keyword parsing of ``Message.__init__``.
    """
    msg = _new_message(can.Message)
    msg.timestamp = 0.0
    msg.arbitration_id = cob
    msg.is_extended_id = False
    msg.is_remote_frame = False
    msg.is_error_frame = False
    msg.channel = None
    msg.is_fd = False
    msg.is_rx = True
    msg.bitrate_switch = False
    msg.error_state_indicator = False
    msg.data = bytearray(data)
    msg.dlc = len(data)
    return msg


# SDO abort codes (CiA 301 table 22).
_ABORT_UNSUPPORTED: Final = 0x06010000
_ABORT_NOT_MAPPABLE: Final = 0x06040041
_ABORT_PDO_TOO_LONG: Final = 0x06040042
_ABORT_VALUE_RANGE: Final = 0x06090030
_ABORT_NOT_STATE: Final = 0x08000022

# Objects whose value the drive computes (read callbacks answer these from the live state).
_LIVE: Final = frozenset({0x1001, 0x603F, 0x6040, 0x6041, 0x6060, 0x6061, 0x6064, 0x6077, 0x607A})


def _error_register(code: int) -> int:
    """0x1001 bits for an EMCY code (CiA 301 7.5.2.2)."""
    if code == 0:
        return 0
    reg = 0x01
    cls = code & 0xF000
    if cls == 0x2000:
        reg |= 0x02
    elif cls == 0x3000:
        reg |= 0x04
    elif cls == 0x4000:
        reg |= 0x08
    elif code & 0xFF00 == 0x8100:
        reg |= 0x10
    elif code & 0xFF00 == 0xFF00:
        reg |= 0x80
    elif cls == 0x8000:
        reg |= 0x20
    return reg


def _is_error_code(code: int) -> bool:
    """EMCY codes a real drive faults on: every class except 'no error' and device-specific warnings."""
    return code != 0 and code & 0xFF00 != 0xFF00


@functools.lru_cache(maxsize=64)
def _parsed_od(path: str, mtime_ns: int, node_id: int) -> canopen.ObjectDictionary:
    del mtime_ns  # part of the cache key only: an edited file is parsed again
    od = canopen.import_od(path, node_id)
    commissioned = _commissioned_node(path)
    if commissioned is not None and commissioned != node_id:
        _renumber(od, commissioned, node_id)
    return od


def _commissioned_node(path: str) -> int | None:
    """The node id a DCF was written for (``[DeviceComissioning] NodeID``); None for an EDS."""
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(path, encoding="latin-1")
        return int(parser.get("DeviceComissioning", "NodeID"), 0)
    except (configparser.Error, ValueError):
        return None


def _renumber(od: canopen.ObjectDictionary, commissioned: int, node_id: int) -> None:
    """A DCF's node-relative values (COB-IDs whose default is ``$NODEID+...``) were written for
    the node it was commissioned as: a drive at another node id has its own. A value equal to the
    commissioned node's default becomes this node's default (a real drive computes 0x1014 EMCY,
    for one, from its own node id); any other value is a deliberate setting and stays."""
    for obj in od.values():
        variables = (
            obj.values()
            if isinstance(obj, canopen.objectdictionary.ODRecord | canopen.objectdictionary.ODArray)
            else (obj,)
        )
        for var in variables:
            if not getattr(var, "relative", False) or var.value is None or var.default is None:
                continue
            if var.value == var.default - node_id + commissioned:
                var.value = var.default


def _object_dictionary(eds: Path, node_id: int) -> canopen.ObjectDictionary:
    """The parsed dictionary of ``eds`` for ``node_id``, shared between simulations (read-only)."""
    return _parsed_od(str(eds), eds.stat().st_mtime_ns, node_id)


class _DriveNet:
    """What ``canopen``'s SDO server needs of a network: a way to send."""

    def __init__(self, drive: SimDrive) -> None:
        self._drive = drive

    def send_message(self, can_id: int, data: bytes | bytearray, remote: bool = False) -> None:
        self._drive.send(can_id, bytes(data))


class _PdoMap:
    """A compiled PDO: COB-ID, transmission type and mapped objects."""

    __slots__ = ("cob_id", "entries", "event_ms", "fast", "length", "trans_type", "valid")

    def __init__(self) -> None:
        self.cob_id = 0
        self.valid = False
        self.trans_type = 1
        self.event_ms = 0
        self.entries: list[tuple[int, int, int, Any]] = []  # index, subindex, bytes, od variable
        self.length = 0
        self.fast = False


class SimDrive:
    """One simulated CiA 402 drive. Read its state through the properties; drive it over CAN."""

    _rest_shortcut: bool = True
    """Skip the position step's arithmetic at rest on an unchanged target (its result is then
    known). Off, every SYNC computes it in full: the tests compare the two frame for frame."""

    def __init__(
        self,
        axis: str,
        config: DriveConfig,
        eds: Path,
        owner: SimulatedDrives,
    ) -> None:
        self.axis = axis
        self.config = config
        self.node_id = config.node_id
        self._owner = owner
        self._cpu = config.counts_per_unit
        self._fpt = config.force_per_torque
        self._hb_cob = 0x700 + config.node_id
        self._sdo_cob = 0x600 + config.node_id
        # Typed Any: canopen's LocalNode callbacks and SDO server are untyped.
        self.node: Any = cast(Any, canopen.LocalNode(config.node_id, _object_dictionary(eds, config.node_id)))
        # Heartbeats run in drive time here, not on canopen's wall-clock timer.
        self.node._write_callbacks.remove(self.node.nmt.on_write)
        self.node.sdo.network = _DriveNet(self)
        # canopen's server packs these into every abort; a segment request that arrives before any
        # transfer started would otherwise abort with index None and raise instead of answering.
        self.node.sdo._index = 0
        self.node.sdo._subindex = 0
        self.node.add_read_callback(self._on_sdo_read)
        self.node.add_write_callback(self._on_sdo_write)
        self._factory = {
            (0x607F, 0): round(config.max_speed * MOTOR_HEADROOM * self._cpu),
            (0x60C5, 0): round(config.max_accel * MOTOR_HEADROOM * self._cpu),
        }
        self._reset_all(t=0.0)

    # ---- public view ------------------------------------------------------------------------
    @property
    def state(self) -> DriveState:
        """CiA 402 power state."""
        return self._state

    @property
    def nmt_state(self) -> int:
        """NMT state as a heartbeat shows it (0x7F pre-operational, 0x05 operational, 0x04 stopped)."""
        return self._nmt

    @property
    def position(self) -> float:
        """Position actual as reported (0x6064), axis units."""
        return self._reported_mm()

    @property
    def insertion(self) -> float:
        """True position of the axis (what the plant sees), axis units."""
        return self._pos - self._enc_offset

    @property
    def velocity(self) -> float:
        """Motor velocity, axis units/s."""
        return self._vel

    @property
    def target(self) -> float:
        """Target position (0x607A), axis units."""
        return self._target / self._cpu

    @property
    def force(self) -> float:
        """Load force on the axis this step (plant plus any injected spike), N."""
        return self._force

    @property
    def statusword(self) -> int:
        """Statusword (0x6041) as the drive would send it now."""
        return self._statusword()

    @property
    def error_code(self) -> int:
        """Error code (0x603F) of the latest fault (0 after a reset)."""
        return self._error_code

    @property
    def mode(self) -> int:
        """Modes of operation (0x6060)."""
        return self._mode

    @property
    def time(self) -> float:
        """Drive time, s."""
        return self._owner.time

    @property
    def heartbeat_period(self) -> float:
        """Producer heartbeat period (0x1017) in s, 0 when off."""
        return self._hb_period

    @property
    def stalled(self) -> bool:
        """The load force exceeded the torque limit this step and held the axis."""
        return self._stalled

    # ---- reset / parameters -----------------------------------------------------------------
    def _reset_all(self, t: float) -> None:
        """Power-on / reset-node: object dictionary to defaults, motor off, pre-operational."""
        self.node.data_store.clear()
        for (index, sub), value in self._factory.items():
            if index in self.node.object_dictionary:
                var = self._var(index, sub)
                # A vendor dictionary may use other units here; then the motor keeps its own limit.
                if var.max is None or value <= var.max:
                    self.node.data_store.setdefault(index, {})[sub] = var.encode_raw(value)
        self._state = DriveState.NOT_READY_TO_SWITCH_ON
        self._cw = 0
        self._cw_state: DriveState | None = None
        self._mode = int(self._od(0x6060))
        self._pos = 0.0
        self._enc_offset = 0.0
        self._stuck: float | None = None
        self._vel = 0.0
        self._push_dir = 0.0
        self._target_prev = 0.0
        self._stalled = False
        self._target = 0
        self._force = 0.0
        self._spike = 0.0
        self._spike_until = -1.0
        self._error_code = 0
        self._error_reg = 0
        self._fe_time = 0.0
        self._fe_flag = False
        self._limit_flag = False
        self._hb_lost = False
        self._tpdo_drop = 0
        self._reset_comm(t)

    def _reset_comm(self, t: float) -> None:
        """Reset communication: 0x1000-0x1FFF to defaults, boot-up, pre-operational."""
        store = self.node.data_store
        for index in [i for i in store if 0x1000 <= i <= 0x1FFF]:
            del store[index]
        self._nmt = pdo.NMT_PRE_OPERATIONAL
        self._hb_period = int(self._od(0x1017)) / 1000.0
        self._hb_next = t + self._hb_period
        self._consumers: list[list[float]] = []  # [node, timeout_s, last_seen or -1]
        self._load_consumers()
        self._emcy_cob = int(self._od(0x1014)) if 0x1014 in self.node.object_dictionary else 0
        self._rpdo = _PdoMap()
        self._tpdo = _PdoMap()
        self._pdo_dirty = True
        self._sync_n = 0
        self._tpdo_last: bytes | None = None
        self._tpdo_next_evt = t
        self._load_params()

    def _var(self, index: int, sub: int = 0) -> Any:
        obj = self.node.object_dictionary[index]
        return obj[sub] if isinstance(obj, ODRecord | ODArray) else obj

    def _od(self, index: int, sub: int = 0) -> int:
        """Current value of an object from the store (or the EDS default), bypassing live values."""
        var = self._var(index, sub)
        raw = self.node.data_store.get(index, {}).get(sub)
        if raw is None:
            value = var.value if var.value is not None else var.default
            return int(value) if value is not None else 0
        return int(var.decode_raw(raw))

    def _od_or(self, index: int, sub: int, default: int) -> int:
        """Like :meth:`_od`, for an object a vendor dictionary may lack (then ``default``)."""
        try:
            return self._od(index, sub)
        except KeyError:
            return default

    def _load_params(self) -> None:
        cfg, cpu = self.config, self._cpu
        self._cw_state = None
        self._qs_option = self._od_or(0x605A, 0, 2)
        self._abort_option = self._od_or(0x6007, 0, 1)
        self._fe_window = self._od_or(0x6065, 0, 0xFFFFFFFF)
        self._fe_timeout = self._od_or(0x6066, 0, 0) / 1000.0
        self._qs_decel = self._od_or(0x6085, 0, round(cfg.quick_stop_decel * cpu)) / cpu
        self._lim_min = self._od_or(0x607D, 1, 0)
        self._lim_max = self._od_or(0x607D, 2, 0)
        self._max_torque = self._od_or(0x6072, 0, 1000)
        self._f_max = self._max_torque * self._fpt
        self._v_max = self._limit(0x607F) / cpu
        self._a_max = self._limit(0x60C5) / cpu

    def _limit(self, index: int) -> int:
        """Motor limit: what the store holds (factory-set or written), else the factory value."""
        raw = self.node.data_store.get(index, {}).get(0)
        if raw is None:
            return self._factory[index, 0]
        return self._od(index)

    def _load_consumers(self) -> None:
        od = self.node.object_dictionary
        if 0x1016 not in od:
            self._consumers = []
            return
        n = self._od(0x1016, 0)
        out = []
        for sub in range(1, n + 1):
            value = self._od(0x1016, sub)
            node, ms = (value >> 16) & 0x7F, value & 0xFFFF
            if node and ms:
                out.append([float(node), ms / 1000.0, -1.0])
        self._consumers = out

    # ---- SDO callbacks ----------------------------------------------------------------------
    def _on_sdo_read(self, index: int, subindex: int, od: Any) -> int | None:
        if index not in _LIVE:
            return None
        return self._live(index)

    def _live(self, index: int) -> int:
        if index == 0x6041:
            return self._statusword()
        if index == 0x6064:
            return pdo.clamp_i32(self._reported())
        if index == 0x6077:
            return self._torque()
        if index in (0x6060, 0x6061):
            return self._mode
        if index == 0x603F:
            return self._error_code
        if index == 0x1001:
            return self._error_reg
        if index == 0x6040:
            return self._cw
        return self._target  # 0x607A

    def _on_sdo_write(self, index: int, subindex: int, od: Any, data: bytes) -> None:
        value = od.decode_raw(data)
        self._write(index, subindex, value, od)

    def _write(self, index: int, subindex: int, value: Any, od: Any) -> None:
        """Apply a value written by SDO or RPDO; raises SdoAbortedError to refuse it."""
        if index == 0x6040:
            self._on_controlword(int(value))
        elif index == 0x607A:
            self._target = int(value)
        elif index == 0x6060:
            self._mode = int(value)
        elif index == 0x1017:
            self._hb_period = int(value) / 1000.0
            self._hb_next = self.time + self._hb_period
        elif index == 0x1016:
            if subindex == 0:
                raise SdoAbortedError(_ABORT_UNSUPPORTED)
            self._owner.after_write(self._load_consumers)
        elif index == 0x1014:
            self._emcy_cob = int(value)
        elif index in (0x1400, 0x1800):
            if subindex == 2 and not (int(value) <= 240 or int(value) >= 252):
                raise SdoAbortedError(_ABORT_VALUE_RANGE)
            self._pdo_dirty = True
        elif index in (0x1600, 0x1A00):
            self._check_mapping(index, subindex, int(value))
            self._pdo_dirty = True
        elif index in (0x605A, 0x6007, 0x6065, 0x6066, 0x6085, 0x607D, 0x6072, 0x607F, 0x60C5):
            if index == 0x6085 and int(value) <= 0:
                raise SdoAbortedError(_ABORT_VALUE_RANGE)
            self._owner.after_write(self._load_params)

    def _check_mapping(self, index: int, subindex: int, value: int) -> None:
        if subindex == 0:
            total = 0
            for sub in range(1, value + 1):
                entry = self._od(index, sub)
                self._check_entry(entry, index == 0x1A00)
                total += entry & 0xFF
            if total > 64:
                raise SdoAbortedError(_ABORT_PDO_TOO_LONG)
            return
        if self._od(index, 0) != 0:
            raise SdoAbortedError(_ABORT_UNSUPPORTED)
        if value:
            self._check_entry(value, index == 0x1A00)

    def _check_entry(self, entry: int, tx: bool) -> None:
        idx, sub, bits = entry >> 16, (entry >> 8) & 0xFF, entry & 0xFF
        try:
            var = self._var(idx, sub)
        except KeyError:
            raise SdoAbortedError(_ABORT_NOT_MAPPABLE) from None
        if not var.pdo_mappable or len(var) != bits:
            raise SdoAbortedError(_ABORT_NOT_MAPPABLE)
        if (tx and not var.readable) or (not tx and not var.writable):
            raise SdoAbortedError(_ABORT_NOT_MAPPABLE)

    def _compile(self) -> None:
        self._rpdo = self._compile_one(0x1400, 0x1600, rx=True)
        self._tpdo = self._compile_one(0x1800, 0x1A00, rx=False)
        self._pdo_dirty = False

    def _compile_one(self, comm: int, mapping: int, *, rx: bool) -> _PdoMap:
        m = _PdoMap()
        od = self.node.object_dictionary
        if comm not in od or mapping not in od:
            return m
        cob = self._od(comm, 1)
        m.cob_id = cob & 0x7FF
        m.valid = not cob & 0x80000000
        m.trans_type = self._od(comm, 2)
        try:
            m.event_ms = self._od(comm, 5)
        except KeyError:
            m.event_ms = 0
        try:
            for sub in range(1, self._od(mapping, 0) + 1):
                entry = self._od(mapping, sub)
                idx, s, bits = entry >> 16, (entry >> 8) & 0xFF, entry & 0xFF
                var = self._var(idx, s)
                if bits == 0 or bits % 8 or len(var) != bits:
                    raise KeyError(entry)
                m.entries.append((idx, s, bits // 8, var))
                m.length += bits // 8
        except KeyError:
            # A mapping this drive cannot serve (e.g. a vendor default naming an absent object):
            # the PDO stays off, as a drive refuses to enable a PDO it cannot map.
            m.valid = False
            m.entries.clear()
            m.length = 0
        layout = [(e[0], e[1], e[2]) for e in m.entries]
        if rx:
            m.fast = layout == [(0x6040, 0, 2), (0x607A, 0, 4)]
        else:
            m.fast = layout == [(0x6041, 0, 2), (0x6064, 0, 4), (0x6077, 0, 2)]
        return m

    # ---- frames in --------------------------------------------------------------------------
    def on_frame(self, msg: can.Message) -> None:
        """A frame from the bus (not SYNC)."""
        cob = msg.arbitration_id
        data = msg.data
        if cob == pdo.NMT_COB:
            if len(data) >= 2 and data[1] in (0, self.node_id):
                self._on_nmt(data[0])
            return
        if self._nmt == pdo.NMT_BOOTUP:
            return
        if cob == 0x600 + self.node_id:
            if self._nmt != pdo.NMT_STOPPED and len(data) == 8:
                self.node.sdo.on_request(cob, data, msg.timestamp)
            return
        if self._pdo_dirty:
            self._compile()
        if cob == self._rpdo.cob_id and self._rpdo.valid and self._nmt == pdo.NMT_OPERATIONAL:
            self._on_rpdo(data)
            return
        if 0x701 <= cob <= 0x77F and self._consumers:
            node = cob - 0x700
            for c in self._consumers:
                if int(c[0]) == node:
                    c[2] = self.time

    def _on_rpdo(self, data: bytearray) -> None:
        m = self._rpdo
        if len(data) < m.length:
            self.emcy(EMCY_PDO_LENGTH, fault=False)
            return
        if m.fast:
            cw, target = _RPDO1_UNPACK(data)
            self._target = target
            if cw != self._cw or self._state is not self._cw_state:
                self._on_controlword(cw)
            return
        offset = 0
        for idx, sub, size, var in m.entries:
            raw = bytes(data[offset : offset + size])
            offset += size
            try:
                self._write(idx, sub, var.decode_raw(raw), var)
            except SdoAbortedError:
                continue  # a value the drive refuses is not taken over, as over SDO
            self.node.data_store.setdefault(idx, {})[sub] = raw

    def _on_nmt(self, cs: int) -> None:
        t = self.time
        if cs == 0x01:
            self._nmt = pdo.NMT_OPERATIONAL
        elif cs == 0x02:
            if self._nmt != pdo.NMT_STOPPED:
                self._nmt = pdo.NMT_STOPPED
                self._connection_lost()
        elif cs == 0x80:
            self._nmt = pdo.NMT_PRE_OPERATIONAL
        elif cs == 0x81:
            insertion = self.insertion
            self._reset_all(t)
            self._pos = insertion  # the axis does not move through a reset (as for boot-up faults)
            self._boot()
        elif cs == 0x82:
            self._connection_lost()
            self._reset_comm(t)
            self._boot()

    def _boot(self) -> None:
        """Send the boot-up frame and enter pre-operational (the drive powers up disabled)."""
        self._nmt = pdo.NMT_PRE_OPERATIONAL
        if self._state is DriveState.NOT_READY_TO_SWITCH_ON:
            self._state = DriveState.SWITCH_ON_DISABLED
        self.send(0x700 + self.node_id, b"\x00")

    # ---- CiA 402 ----------------------------------------------------------------------------
    def _on_controlword(self, cw: int) -> None:
        old = self._state
        if cw == self._cw and old is self._cw_state:
            # Same command in the state it produced: every transition is idempotent.
            return
        prev, self._cw = self._cw, cw
        new = drive_transition(old, cw, previous=prev, quick_stop_option=self._qs_option)
        self._cw_state = new
        if new is old:
            return
        if old is DriveState.FAULT:
            self._error_code = 0
            self._error_reg = 0
            self._fe_flag = False
            self.emcy(0x0000, fault=False)
        if new is DriveState.QUICK_STOP_ACTIVE and self._qs_option == 0:
            new = DriveState.SWITCH_ON_DISABLED
        if new is DriveState.OPERATION_ENABLED:
            self._fe_time = 0.0
            self._target_prev = self._pos
        if new not in _TORQUE_ON:
            self._vel = 0.0
        self._state = new
        self._cw_state = new

    def _connection_lost(self) -> None:
        """Abort connection option code (0x6007) reaction."""
        opt = self._abort_option
        s = self._state
        if opt == 1:
            self.fault(EMCY_HEARTBEAT, send=False)
        elif opt == 2:
            if s not in (DriveState.FAULT, DriveState.FAULT_REACTION_ACTIVE):
                self._state = DriveState.SWITCH_ON_DISABLED
                self._vel = 0.0
        elif opt == 3 and s is DriveState.OPERATION_ENABLED:
            self._state = (
                DriveState.SWITCH_ON_DISABLED if self._qs_option == 0 else DriveState.QUICK_STOP_ACTIVE
            )
            if self._qs_option == 0:
                self._vel = 0.0

    def fault(self, code: int, *, send: bool = True) -> None:
        """Detect a fault: EMCY (if ``send``), fault reaction (ramp down), then FAULT."""
        self._error_code = code
        self._error_reg = _error_register(code)
        if send:
            self.emcy(code, fault=False)
        if self._state not in (DriveState.FAULT, DriveState.FAULT_REACTION_ACTIVE):
            if self._state in _TORQUE_ON and self._vel != 0.0:
                self._state = DriveState.FAULT_REACTION_ACTIVE
            else:
                self._state = DriveState.FAULT
                self._vel = 0.0

    def emcy(self, code: int, *, fault: bool) -> None:
        """Send an EMCY with ``code`` (and enter FAULT if ``fault``)."""
        if fault:
            self.fault(code, send=True)
            return
        if self._emcy_cob & 0x80000000 or not self._emcy_cob:
            return
        reg = (self._error_reg | _error_register(code)) if code else 0
        self.send(self._emcy_cob & 0x7FF, pdo.EMCY.pack(code, reg, b"\x00" * 5))

    def _statusword(self) -> int:
        s = self._state
        sw = _SW_BASE[s]
        if self._vel == 0.0 and (
            s is DriveState.QUICK_STOP_ACTIVE
            or (s is DriveState.OPERATION_ENABLED and abs(self._reported() - self._target) <= 1)
        ):
            sw |= SW_TARGET_REACHED
        if self._limit_flag:
            sw |= SW_INTERNAL_LIMIT
        if self._fe_flag:
            sw |= SW_FOLLOWING_ERROR
        return sw

    def _reported(self) -> int:
        pos = self._pos if self._stuck is None else self._stuck
        return round(pos * self._cpu)

    def _reported_mm(self) -> float:
        return self._pos if self._stuck is None else self._stuck

    def _torque(self) -> int:
        if self._state not in _TORQUE_ON:
            return 0
        f = min(self._force, self._f_max)
        return pdo.clamp_i16(round(f / self._fpt))

    # ---- time -------------------------------------------------------------------------------
    def step(self, t: float, dt: float, load_force: float, sync: bool) -> None:
        """Advance the drive by ``dt`` to drive time ``t``; send TPDO1 if ``sync``."""
        if self._nmt == _NMT_BOOT:
            return
        if self._state is _NRTSO:
            self._state = _SOD
        self._force = load_force + (self._spike if t < self._spike_until - _EPS_T else 0.0)
        for c in self._consumers:
            if c[2] >= 0.0 and t - c[2] > c[1] + _EPS_T:
                self._consumer_timeout(c)
        self._move(dt)
        # Following error, then (below) the predefined TPDO1: both need the reported position,
        # which nothing in between changes, so it is rounded once per SYNC.
        stuck = self._stuck
        reported = round((self._pos if stuck is None else stuck) * self._cpu)
        if self._state is not _OE or self._mode != MODE_CSP:
            self._fe_time = 0.0
        elif self._fe_window != 0xFFFFFFFF:
            target = self._target
            lo = self._lim_min
            hi = self._lim_max
            if lo < hi:
                target = lo if lo > target else target
                target = hi if hi < target else target
            if abs(target - reported) > self._fe_window:
                self._fe_time += dt
                if self._fe_time > self._fe_timeout + _EPS_T:
                    self._fe_flag = True
                    self.fault(EMCY_FOLLOWING_ERROR)
            else:
                self._fe_time = 0.0
        if self._hb_period > 0.0 and not self._hb_lost and t + _EPS_T >= self._hb_next:
            self.send(self._hb_cob, bytes((self._nmt,)))
            self._hb_next += self._hb_period
            if self._hb_next <= t:
                self._hb_next = t + self._hb_period
        if self._nmt != _NMT_OP:
            return
        if self._pdo_dirty:
            self._compile()
        m = self._tpdo
        if m.fast and m.trans_type == 1 and m.valid:
            # The predefined TPDO1 on every SYNC: what _send_tpdo does for it, inlined.
            if not sync:
                return
            self._sync_n = 0
            s = self._state
            sw = _SW_BASE[s]
            if self._vel == 0.0 and (s is _QSA or (s is _OE and abs(reported - self._target) <= 1)):
                sw |= SW_TARGET_REACHED
            if self._limit_flag:
                sw |= SW_INTERNAL_LIMIT
            if self._fe_flag:
                sw |= SW_FOLLOWING_ERROR
            if s in _TORQUE_ON:
                f = self._force
                f_max = self._f_max
                torque = round((f_max if f_max < f else f) / self._fpt)
                torque = _I16_MIN if torque < _I16_MIN else _I16_MAX if torque > _I16_MAX else torque
            else:
                torque = 0
            pos = _I32_MIN if reported < _I32_MIN else _I32_MAX if reported > _I32_MAX else reported
            data = _TPDO1_PACK(sw, pos, torque)
            if m.event_ms > 0:
                self._tpdo_next_evt = t + m.event_ms / 1000.0
            self._tpdo_last = data
            if self._tpdo_drop > 0:
                self._tpdo_drop -= 1
                return
            owner = self._owner
            owner.frames_sent += 1  # owner.transmit, inlined
            owner._tx(_frame(m.cob_id, data))
            return
        self._send_tpdo(t, sync)

    def _consumer_timeout(self, c: list[float]) -> None:
        """The heartbeat of consumer entry ``c`` timed out: EMCY and the abort-connection reaction."""
        c[2] = -1.0  # re-armed by the next heartbeat
        self.emcy(EMCY_HEARTBEAT, fault=False)
        self._connection_lost()

    def _move(self, dt: float) -> None:
        # Two-argument min/max are written out as conditionals (same result, NaN included:
        # ``min(x, y)`` is ``y if y < x else x``), which saves a builtin call each per SYNC.
        if dt <= 0.0:
            return
        s = self._state
        v = self._vel
        if s is _OE and self._mode == MODE_CSP and not self._cw & _CW_HALT:
            target = self._target
            limited = False
            lo = self._lim_min
            hi = self._lim_max
            if lo < hi:
                if target < lo:
                    target, limited = lo, True
                elif target > hi:
                    target, limited = hi, True
            self._limit_flag = limited
            target_mm = target / self._cpu
            pos = self._pos
            if v == 0.0 and target_mm == pos and target_mm == self._target_prev and self._rest_shortcut:
                # At rest on an unchanged target (most SYNCs of most axes in a procedure): what the
                # step below computes then, to the bit (v = +0.0, the position plus +0.0).
                self._target_prev = target_mm
                self._stalled = False
                self._pos = pos + 0.0
                self._vel = 0.0
                return
            err = target_mm - pos
            a = self._a_max
            # Feedforward of the target's own speed; relative to it, approach no faster than
            # can still be braked within the remaining error (no overshoot on a step).
            v_ff = (target_mm - self._target_prev) / dt
            self._target_prev = target_mm
            # Discrete time-optimal braking speed: n steps of a*dt decrease cover a*dt^2*n(n+1)/2.
            v_brake = a * dt * (_sqrt(0.25 + 2.0 * abs(err) / (a * dt * dt)) - 0.5)
            x = err / dt - v_ff
            x = x if x < v_brake else v_brake
            v_rel = x if x > -v_brake else -v_brake
            v_max = self._v_max
            x = v_ff + v_rel
            x = x if x < v_max else v_max
            v_des = x if x > -v_max else -v_max
            adt = a * dt
            x = v + adt
            x = v_des if v_des < x else x
            lo_v = v - adt
            v = x if x > lo_v else lo_v
        elif s in _TORQUE_ON:
            decel = self._qs_decel
            if s is _OE or self._qs_option in (1, 5):
                # Halt, or a quick stop on the slow-down ramp.
                decel = self._a_max
            v = 0.0 if abs(v) <= decel * dt else v - math.copysign(decel * dt, v)
        else:
            v = 0.0
        self._stalled = False
        if v != 0.0:
            if self._force < self._f_max:
                # The load builds up against the direction the axis moves in.
                self._push_dir = math.copysign(1.0, v)
            elif self._push_dir == 0.0 or math.copysign(1.0, v) == self._push_dir:
                # The load holds the axis in the direction it was pushing; backing off is free.
                v = 0.0
                self._stalled = True
        self._pos += v * dt
        self._vel = v
        if v == 0.0:
            if s is _QSA and self._qs_option in (1, 2, 3, 4):
                self._state = _SOD
            elif s is _FRA:
                self._state = DriveState.FAULT

    def _send_tpdo(self, t: float, sync: bool) -> None:
        if self._pdo_dirty:
            self._compile()
        m = self._tpdo
        if not m.valid or not m.entries:
            return
        tt = m.trans_type
        if 1 <= tt <= 240:
            if not sync:
                return
            self._sync_n += 1
            if self._sync_n < tt:
                return
            self._sync_n = 0
            due = True
        else:
            due = False
        data = self._tpdo_payload(m)
        if not due:
            if tt == 0:
                due = sync and data != self._tpdo_last
            elif m.event_ms > 0 and t + _EPS_T >= self._tpdo_next_evt:
                due = True
            elif m.event_ms == 0:
                due = data != self._tpdo_last
        if not due:
            return
        if m.event_ms > 0:
            self._tpdo_next_evt = t + m.event_ms / 1000.0
        self._tpdo_last = data
        if self._tpdo_drop > 0:
            self._tpdo_drop -= 1
            return
        self.send(m.cob_id, data)

    def _tpdo_payload(self, m: _PdoMap) -> bytes:
        if m.fast:
            return pdo.TPDO1.pack(self._statusword(), pdo.clamp_i32(self._reported()), self._torque())
        out = bytearray()
        for idx, sub, _size, _var in m.entries:
            out += self.node.get_data(idx, sub)
        return bytes(out)

    def send(self, cob: int, data: bytes) -> None:
        """Put a frame on the bus (through the owner, which knows the transport)."""
        self._owner.transmit(_frame(cob, data))

    # ---- faults -----------------------------------------------------------------------------
    def apply(self, spec: FaultSpec, t: float) -> None:
        """Apply a drive fault now."""
        kind = spec.kind
        if kind is FaultKind.HEARTBEAT_LOSS:
            self._hb_lost = True
        elif kind is FaultKind.TPDO_DROP:
            self._tpdo_drop += int(spec.arg or 0)
        elif kind is FaultKind.EMCY:
            code = int(spec.arg or 0)
            self.emcy(code, fault=_is_error_code(code))
        elif kind is FaultKind.ENCODER_JUMP:
            jump = float(spec.arg or 0.0)
            self._pos += jump
            self._enc_offset += jump
        elif kind is FaultKind.ENCODER_STUCK:
            self._stuck = self._reported_mm()
        elif kind is FaultKind.FORCE_SPIKE:
            self._spike = float(spec.arg or 0.0)
            self._spike_until = t + FORCE_SPIKE_S
        elif kind is FaultKind.DRIVE_FAULT:
            self.fault(DRIVE_FAULT_EMCY)
        elif kind is FaultKind.BOOT_UP:
            insertion = self.insertion
            self._reset_all(t)
            # The axis does not move through a reset; the encoder restarts from where it is.
            self._pos = insertion
            self._boot()


class SimulatedDrives:
    """Every configured drive, simulated on ``bus``. A context manager: ``start()``/``stop()``.

    :param system: the configuration (``whih_control.Config`` or anything with bus/cycle/drives).
    :param bus: a :class:`~firmware_iface.simbus.SimTimeBus` (stepped synchronously on SYNC), or
        any other python-can bus handle of the drives' own (one thread serves all drives).
    :param load: the plant, stepped once per SYNC; None means no load force.
    :param seed: kept with the run for replay; the drive model itself draws nothing at random, so
        the same frames in give the same frames out for any seed.
    :param eds_dir: folder that relative ``eds`` paths resolve against (default: working folder).
    """

    def __init__(
        self,
        system: DriveSystem,
        bus: can.BusABC,
        *,
        load: PlantLoad | None = None,
        seed: int = 0,
        eds_dir: Path | None = None,
    ) -> None:
        self.system = system
        self.bus = bus
        self.load = load
        self.seed = seed
        self.period = 1.0 / system.cycle.rate_hz
        base = eds_dir if eds_dir is not None else Path.cwd()
        self._drives: dict[str, SimDrive] = {}
        for axis, cfg in system.drives.items():
            eds = resolve_eds(cfg.eds, base)
            if not eds.is_file():
                raise ValueError(f"drives.{axis}.eds (={cfg.eds!r}) is not a file: {eds}")
            self._drives[axis] = SimDrive(axis, cfg, eds, self)
        self._by_node = {d.node_id: d for d in self._drives.values()}
        self._order = tuple(self._drives.values())
        self._insertion: dict[str, float] = {a: 0.0 for a in self._drives}
        self._syncs = 0
        self._idle = 0.0
        self._pending: list[tuple[float, int, FaultSpec]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._deferred: list[Any] = []
        self._kernel = kernel_of(bus)
        self._sim = self._kernel is not None
        self._tx: Callable[[can.Message], None] = (
            self._kernel.device_send if self._kernel is not None else bus.send
        )
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._running = False
        self.frames_sent = 0

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Boot every drive (boot-up frames) and start serving the bus."""
        if self._running:
            raise RuntimeError("simulated drives are already running")
        self._running = True
        if self._kernel is not None:
            self._kernel.attach(self)
            for d in self._order:
                d._boot()
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="whih-sim-drives", daemon=False)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (joins the thread); re-raises an error the drive thread died of."""
        if not self._running:
            return
        self._running = False
        if self._kernel is not None:
            self._kernel.detach(self)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"simulated drive thread failed: {err!r}") from err

    def __enter__(self) -> SimulatedDrives:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- introspection ----------------------------------------------------------------------
    @property
    def time(self) -> float:
        """Drive time since start: SYNC count x period, plus time without SYNC (``SimKernel.advance``
        periods, or wall time in thread mode)."""
        return self._syncs * self.period + self._idle

    @property
    def axes(self) -> tuple[str, ...]:
        """The simulated axes, in configuration order."""
        return tuple(self._drives)

    def drive(self, axis: str) -> SimDrive:
        """The simulated drive of ``axis``."""
        try:
            return self._drives[axis]
        except KeyError:
            raise ValueError(
                f"axis (={axis!r}) is not a configured drive; configured: {', '.join(self._drives)}"
            ) from None

    def __iter__(self) -> Iterator[SimDrive]:
        return iter(self._order)

    # ---- faults -----------------------------------------------------------------------------
    def inject(self, spec: str | FaultSpec) -> FaultSpec:
        """Schedule a drive fault at its time in drive time (now if that time has passed)."""
        fs = parse_fault(spec) if isinstance(spec, str) else spec
        if fs.kind not in DRIVE_FAULT_KINDS:
            raise ValueError(
                f"fault {str(fs)!r}: kind {fs.kind.value} belongs to the runtime (master, operator, "
                f"imaging), not to the simulated drives; drive kinds: "
                f"{', '.join(sorted(k.value for k in DRIVE_FAULT_KINDS))}"
            )
        self.drive(fs.axis)  # ValueError naming the configured axes
        with self._lock:
            self._pending.append((fs.t, self._seq, fs))
            self._seq += 1
            self._pending.sort(key=lambda p: (p[0], p[1]))
        if self._sim and fs.t <= self.time + _EPS_T:
            self._apply_due(self.time)
        return fs

    def _apply_due(self, t: float) -> None:
        if not self._pending:
            return
        with self._lock:
            due = [p for p in self._pending if p[0] <= t + _EPS_T]
            self._pending = [p for p in self._pending if p[0] > t + _EPS_T]
        for _, _, fs in due:
            self._drives[fs.axis].apply(fs, t)

    # ---- transport --------------------------------------------------------------------------
    def transmit(self, msg: can.Message) -> None:
        """Send a drive's frame on the bus."""
        self.frames_sent += 1
        self._tx(msg)

    def after_write(self, fn: Any) -> None:
        """Run ``fn`` after the current SDO write has been stored (parameters are re-read)."""
        self._deferred.append(fn)

    def _run_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)()

    def on_frame(self, msg: can.Message) -> None:
        """Every frame the master sends (SimTimeBus device protocol)."""
        if msg.is_error_frame or msg.is_remote_frame or msg.is_extended_id:
            return
        cob = msg.arbitration_id
        owner = self._by_node.get(cob & 0x7F)
        if owner is not None and owner._rpdo.cob_id == cob and not owner._pdo_dirty:
            # The common case: an RPDO in the predefined connection set. Straight to the RPDO
            # handler when SimDrive.on_frame would get there (operational, not an SDO COB-ID).
            rpdo = owner._rpdo
            if rpdo.valid and owner._nmt == _NMT_OP and cob != owner._sdo_cob:
                owner._on_rpdo(msg.data)
            else:
                owner.on_frame(msg)
            if self._deferred:
                self._run_deferred()
            return
        if cob == pdo.NMT_COB or 0x701 <= cob <= 0x77F:
            for d in self._order:
                d.on_frame(msg)
        else:
            if owner is not None:
                owner.on_frame(msg)
            # An RPDO whose COB-ID was remapped away from the predefined set.
            for other in self._order:
                if other._pdo_dirty:
                    other._compile()
                if other is not owner and other._rpdo.cob_id == cob:
                    other.on_frame(msg)
        self._run_deferred()

    def on_sync(self, t: float, dt: float) -> None:
        """One SYNC: plant step, then every drive steps by ``dt`` and sends its TPDO1."""
        del t
        self._syncs += 1
        self._advance(self.period, sync=True)

    def on_tick(self, t: float, dt: float) -> None:
        """A period without SYNC on the simulated-time bus: timers and ramps run, no TPDO."""
        del t
        self._idle += dt
        self._advance(dt, sync=False)

    def _advance(self, dt: float, *, sync: bool) -> None:
        t = self._syncs * self.period + self._idle  # self.time
        if self._pending:
            self._apply_due(t)
        order = self._order
        load = self.load
        if load is not None and sync:
            ins = self._insertion
            for d in order:
                ins[d.axis] = d._pos - d._enc_offset  # d.insertion
            forces: Mapping[str, float] = load.step(t, dt, ins)
            get = forces.get
            for d in order:
                f = get(d.axis, 0.0)
                if not 0.0 <= f < math.inf:  # finite and >= 0 (NaN fails both)
                    raise ValueError(f"load force of {d.axis} (={f!r}) must be a finite number of N >= 0")
                d.step(t, dt, f, True)
            return
        for d in order:
            f = 0.0 if sync else d._force - (d._spike if t < d._spike_until else 0.0)
            d.step(t, dt, f, sync)

    # ---- thread mode ------------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            for d in self._order:
                d._boot()
            last_sync = -math.inf
            last = time.time()
            send = self._tx
            batch: list[can.Message] = []
            while not self._stop.is_set():
                msg = self.bus.recv(timeout=self.period)
                now = _frame_time(msg)
                if msg is not None and msg.arbitration_id == pdo.SYNC_COB and not msg.is_extended_id:
                    # Every drive steps first and the frames go out together afterwards: a
                    # frame sent mid-step wakes the master, which then competes with the
                    # remaining steps for the interpreter lock and gets its TPDOs later.
                    self._syncs += 1
                    self._tx = batch.append
                    try:
                        self._advance(self.period, sync=True)
                    finally:
                        self._tx = send
                    for frame in batch:
                        send(frame)
                    batch.clear()
                    last = last_sync = now
                    continue
                if now - last_sync > 2.0 * self.period and now > last:
                    # No SYNC: drive time follows the wall clock (heartbeats, consumer, ramps),
                    # brought up to date before a frame is handled so it is stamped right.
                    self._idle += now - last
                    self._advance(now - last, sync=False)
                    last = now
                if msg is not None:
                    self.on_frame(msg)
        except BaseException as exc:
            # Reported by stop(); the master sees the drives fall silent meanwhile.
            self._error = exc


def _frame_time(msg: can.Message | None) -> float:
    """Thread mode: the time a frame reached the bus (python-can's ``timestamp``, wall-clock
    seconds), not when the drives' thread got to it. A thread kept off the CPU then finds the
    SYNCs sent meanwhile queued: each steps the drives one period, so the gap must not count
    again as time without SYNC (the drives moved twice as far as the SYNCs allow, and the master
    saw a position jump). The read time where a frame has none, or one from another clock."""
    now = time.time()
    if msg is None or not 0.0 < now - msg.timestamp < 1.0:
        return now
    return msg.timestamp
