"""A strict CiA 301/402 drive for the tests, built from a vendor EDS/DCF (not whih's own simulator).

Where whih's simulated drive accepts whatever the master sends, this one behaves as a real drive
that follows its object dictionary to the letter:

* SDO through ``canopen``'s ``LocalNode`` server: read-only objects (0x06010002), missing objects
  (0x06020000 / 0x06090011) and values outside the file's LowLimit/HighLimit (0x06090030) are
  aborted; an object the file fixes (LowLimit = HighLimit) takes only that value.
* PDOs as CiA 301 says: the file's PDOs are on at boot (a DCF's factory PDOs keep sending on
  every SYNC); a COB-ID may not change while the PDO is valid; a mapping may change only while
  the PDO is invalid and its count is 0; a count is refused when an entry is missing, not
  mappable or the PDO would exceed 64 bits.
* NMT slave: boot-up, pre-operational, operational, stopped, reset node, reset communication (the
  communication objects 0x1000-0x1FFF go back to the file's values); SDO not in STOPPED, PDOs only
  in OPERATIONAL; heartbeat producer (0x1017) and consumer (0x1016, quick stop when the master's
  heartbeat stops, as 0x6007 = 3 asks).
* CiA 402 state machine from the controlword (RPDO or SDO), CSP following 0x607A in OPERATION
  ENABLED (an ideal servo), QUICK STOP ACTIVE kept until disable voltage, fault reset on the
  rising edge of bit 7.
* Its own units: 0x6085 is read in the drive's declared acceleration unit (rpm/s for the EPOS4)
  and turned into counts/s^2 with the drive's own encoder resolution
  (:meth:`StrictDrive.quick_stop_decel`), so a value written in the wrong unit is seen as the
  wrong ramp.
"""

from __future__ import annotations

import functools
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import canopen
from canopen.objectdictionary import ODVariable, import_od
from canopen.sdo.exceptions import SdoAbortedError

# CiA 402 states by statusword (bits 0-3, 5, 6 plus voltage enabled)
NOT_READY = "NOT_READY_TO_SWITCH_ON"
SOD = "SWITCH_ON_DISABLED"
RTSO = "READY_TO_SWITCH_ON"
SO = "SWITCHED_ON"
OE = "OPERATION_ENABLED"
QSA = "QUICK_STOP_ACTIVE"
FAULT = "FAULT"
_STATUSWORD = {
    NOT_READY: 0x0000,
    SOD: 0x0040,
    RTSO: 0x0031,
    SO: 0x0033,
    OE: 0x0037,
    QSA: 0x0017,
    FAULT: 0x0008,
}
_REMOTE = 0x0200

NMT_BOOT, NMT_STOPPED, NMT_OP, NMT_PREOP = 0x00, 0x04, 0x05, 0x7F

ABORT_VALUE_RANGE = 0x06090030
ABORT_STATE = 0x08000022
ABORT_NOT_MAPPABLE = 0x06040041
ABORT_PDO_LENGTH = 0x06040042
ABORT_NO_OBJECT = 0x06020000


@functools.cache
def _dictionary(path: str, node_id: int) -> canopen.ObjectDictionary:
    """Parsed once per file and node: a drive only reads it (its values live in ``data_store``)."""
    return import_od(path, node_id)


class _Net:
    """What canopen's SDO server needs of a network."""

    def __init__(self, send: Any) -> None:
        self.send_message = send


@dataclass
class StrictDrive:
    """One drive node (see the module docstring)."""

    node_id: int
    eds: Path
    send: Any
    counts_per_rev: float = 16384.0
    """The drive's own encoder resolution (turns its rpm units into counts)."""
    identity: tuple[int, int] | None = None
    """(vendor, product) answered in 0x1018 instead of the file's, for mismatch tests."""
    nmt: int = NMT_BOOT
    state: str = SOD
    position: int = 0
    target: int = 0
    mode: int = 0
    aborts: list[tuple[int, int, int]] = field(default_factory=list)
    """(index, sub, abort code) of every refused SDO write."""
    controlwords: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.od = _dictionary(str(self.eds), self.node_id)
        self.node: Any = canopen.LocalNode(self.node_id, self.od)
        self.node._write_callbacks.remove(self.node.nmt.on_write)  # its heartbeat would be a thread
        self.node.sdo.network = _Net(self.send)
        self.node.add_write_callback(self._on_write)
        self.node.add_read_callback(self._on_read)
        self._cache: dict[tuple[int, int], int] = {}
        self._last_cw = 0
        self._pending_rpdo: dict[int, bytes] = {}
        self._sync_count: dict[int, int] = {}
        self._next_beat: float | None = None
        self._consumer_seen: float | None = None
        self.heartbeat_lost = False
        self.mode = self._int(0x6060) or 0
        self._rpdos = [0x1400 + k for k in range(512) if 0x1400 + k in self.od and 0x1600 + k in self.od]
        self._tpdos = [0x1800 + k for k in range(512) if 0x1800 + k in self.od and 0x1A00 + k in self.od]

    # ---- object dictionary access

    def var(self, index: int, sub: int = 0) -> ODVariable:
        obj = self.od[index]
        return obj if isinstance(obj, ODVariable) else obj[sub]

    def raw(self, index: int, sub: int = 0) -> int:
        """The stored value (as set by SDO or RPDO), else the file's."""
        key = (index, sub)
        value = self._cache.get(key)
        if value is None:
            v = self.var(index, sub)
            data = self.node.data_store.get(index, {}).get(sub)
            value = int(v.decode_raw(data)) if data is not None else self._int(index, sub) or 0
            self._cache[key] = value
        return value

    def _int(self, index: int, sub: int = 0) -> int | None:
        try:
            v = self.var(index, sub)
        except KeyError:
            return None
        for c in (v.value, v.default):
            if isinstance(c, int):
                return c
        return None

    def _store(self, index: int, sub: int, value: int) -> None:
        self.node.data_store.setdefault(index, {})[sub] = self.var(index, sub).encode_raw(value)
        self._cache[(index, sub)] = value

    def _on_read(self, index: int, subindex: int, od: Any) -> int | None:
        if index == 0x6041:
            return self.statusword
        if index == 0x6064:
            return self.position
        if index == 0x607A:
            return self.target
        if index == 0x6061:
            return self.mode
        if index == 0x6077:
            return 0
        if index == 0x1018 and self.identity is not None and subindex in (1, 2):
            return self.identity[subindex - 1]
        return None

    @property
    def statusword(self) -> int:
        """The statusword of the present state."""
        return _STATUSWORD[self.state] | _REMOTE

    def _on_write(self, index: int, subindex: int, od: Any, data: bytes) -> None:
        try:
            value = od.decode_raw(data)
            if isinstance(value, int):
                self._check(index, subindex, od, value)
        except SdoAbortedError as exc:
            self.aborts.append((index, subindex, exc.code))
            raise
        # LocalNode stores the data once the callbacks return
        self._cache.pop((index, subindex), None)
        if isinstance(value, int):
            self._cache[(index, subindex)] = value
        if index == 0x6040:
            self._controlword(int(value))
        elif index == 0x6060:
            self.mode = int(value)
        elif index == 0x607A:
            self.target = int(value)
        elif index == 0x1017:
            self._next_beat = time.monotonic() if value else None

    def _check(self, index: int, sub: int, od: Any, value: int) -> None:
        if (od.min is not None and value < od.min) or (od.max is not None and value > od.max):
            raise SdoAbortedError(ABORT_VALUE_RANGE)
        if 0x1400 <= index <= 0x15FF or 0x1800 <= index <= 0x19FF:
            if sub == 1:
                current = self.raw(index, 1)
                if (
                    not current & 0x8000_0000
                    and not value & 0x8000_0000
                    and ((current ^ value) & 0x3FFF_FFFF)
                ):
                    raise SdoAbortedError(ABORT_VALUE_RANGE)  # COB-ID change while valid
        elif 0x1600 <= index <= 0x17FF or 0x1A00 <= index <= 0x1BFF:
            comm = index - 0x200
            if not self.raw(comm, 1) & 0x8000_0000:
                raise SdoAbortedError(ABORT_STATE)  # mapping of a valid PDO
            if sub == 0:
                bits = 0
                for k in range(1, value + 1):
                    entry = self.raw(index, k)
                    try:
                        mapped = self.var(entry >> 16, (entry >> 8) & 0xFF)
                    except KeyError:
                        raise SdoAbortedError(ABORT_NO_OBJECT) from None
                    if not mapped.pdo_mappable:
                        raise SdoAbortedError(ABORT_NOT_MAPPABLE)
                    bits += entry & 0xFF
                if bits > 64:
                    raise SdoAbortedError(ABORT_PDO_LENGTH)
            elif self.raw(index, 0) != 0:
                raise SdoAbortedError(ABORT_STATE)  # entries only while the count is 0

    # ---- CiA 402

    def _controlword(self, cw: int) -> None:
        self.controlwords.append(cw)
        rising_reset = cw & 0x80 and not self._last_cw & 0x80
        self._last_cw = cw
        s = self.state
        if s == FAULT:
            if rising_reset:
                self.state = SOD
            return
        if not cw & 0x02:  # disable voltage
            self.state = SOD
        elif not cw & 0x04:  # quick stop
            if s == OE:
                self.state = QSA
            elif s in (RTSO, SO):
                self.state = SOD
        elif cw & 0x0F == 0x06:  # shutdown
            if s in (SOD, SO, OE):
                self.state = RTSO
        elif cw & 0x0F == 0x07:  # switch on / disable operation
            if s in (RTSO, OE):
                self.state = SO
        elif cw & 0x0F == 0x0F and s in (SO, RTSO):  # enable operation (3 then 4)
            self.state = OE if s == SO else SO
        if self.state == OE and s != OE:
            self.target = self.position

    def quick_stop_decel(self) -> float:
        """0x6085 in counts/s^2 as this drive reads it: rpm/s with its own encoder resolution."""
        return self.raw(0x6085) / 60.0 * self.counts_per_rev

    def fault(self, code: int = 0x1000) -> None:
        """Enter FAULT and send EMCY ``code``."""
        self.state = FAULT
        self.send(0x80 + self.node_id, struct.pack("<HB5x", code, 0x01))

    # ---- NMT

    def nmt_command(self, cs: int) -> None:
        if cs == 0x01:
            self.nmt = NMT_OP
        elif cs == 0x02:
            self.nmt = NMT_STOPPED
        elif cs == 0x80:
            self.nmt = NMT_PREOP
        elif cs in (0x81, 0x82):
            self._cache.clear()
            if cs == 0x81:
                self.node.data_store.clear()
                self.state = SOD
                self.mode = self._int(0x6060) or 0
            else:
                for index in [i for i in self.node.data_store if 0x1000 <= i <= 0x1FFF]:
                    del self.node.data_store[index]
            self.boot()

    def boot(self) -> None:
        """Boot-up frame, then pre-operational with the file's heartbeat period.

        A DCF is written for one node: its predefined PDO COB-IDs (0x180 + its node id ...) are
        moved to this drive's node id, as the drive itself would have them.
        """
        file_node = (self._int(0x1800, 1) or self.node_id) & 0x7F  # the node the file was made for
        for base in (0x1400, 0x1800):
            for k in range(512):
                if base + k in self.od and 1 not in self.node.data_store.get(base + k, {}):
                    cob = self._int(base + k, 1)
                    if cob is not None and (cob & 0x7F) == file_node and 0x180 <= cob & 0x7FF < 0x580:
                        self._store(base + k, 1, (cob & ~0x7F) | self.node_id)
        self.nmt = NMT_BOOT
        self.send(0x700 + self.node_id, b"\x00")
        self.nmt = NMT_PREOP
        self._consumer_seen = None
        self.heartbeat_lost = False
        self._next_beat = time.monotonic() if self.raw(0x1017) else None
        self._pending_rpdo.clear()

    # ---- frames

    def _pdos(self, base: int) -> Iterator[tuple[int, int, int]]:
        """(comm index, COB-ID, transmission type) of each valid PDO with something mapped."""
        for comm in self._rpdos if base == 0x1400 else self._tpdos:
            cob = self.raw(comm, 1)
            if cob & 0x8000_0000 or not self.raw(comm + 0x200, 0):
                continue
            yield comm, cob & 0x7FF, self.raw(comm, 2)

    def on_frame(self, cob: int, data: bytes, now: float) -> None:
        if cob == 0x000 and len(data) == 2 and data[1] in (0, self.node_id):
            self.nmt_command(data[0])
            return
        if self.nmt == NMT_BOOT:
            return
        if cob == 0x600 + self.node_id:
            if self.nmt != NMT_STOPPED and len(data) == 8:
                self.node.sdo.on_request(cob, data, now)
            return
        if cob == 0x080:
            self._on_sync(now)
            return
        consumer = self.raw(0x1016, 1) if 0x1016 in self.od else 0
        if consumer and cob == 0x700 + ((consumer >> 16) & 0x7F):
            self._consumer_seen = now
            return
        if self.nmt != NMT_OP:
            return
        for comm, rcob, ttype in self._pdos(0x1400):
            if cob == rcob:
                if 1 <= ttype <= 240:
                    self._pending_rpdo[comm] = bytes(data)  # takes effect on the next SYNC
                else:
                    self._apply_rpdo(comm, bytes(data))

    def _apply_rpdo(self, comm: int, data: bytes) -> None:
        mapping = comm + 0x200
        offset = 0
        for k in range(1, self.raw(mapping, 0) + 1):
            entry = self.raw(mapping, k)
            index, sub, bits = entry >> 16, (entry >> 8) & 0xFF, entry & 0xFF
            n = bits // 8
            chunk = data[offset : offset + n]
            offset += n
            if len(chunk) < n:
                return  # a short RPDO is ignored (a real drive sends EMCY 0x8210)
            value = int(self.var(index, sub).decode_raw(chunk))
            if index == 0x6040:
                self._controlword(value)
            elif index == 0x607A:
                self.target = value
            elif index == 0x6060:
                self.mode = value
            else:
                self._store(index, sub, value)

    def _on_sync(self, now: float) -> None:
        if self.nmt != NMT_OP:
            return
        for comm, data in list(self._pending_rpdo.items()):
            self._apply_rpdo(comm, data)
        self._pending_rpdo.clear()
        self._motion()
        for comm, tcob, ttype in self._pdos(0x1800):
            if not 1 <= ttype <= 240:
                continue
            n = self._sync_count.get(comm, 0) + 1
            self._sync_count[comm] = n
            if n % ttype == 0:
                self.send(tcob, self._tpdo_data(comm + 0x200))

    def _tpdo_data(self, mapping: int) -> bytes:
        out = bytearray()
        for k in range(1, self.raw(mapping, 0) + 1):
            entry = self.raw(mapping, k)
            index, sub, bits = entry >> 16, (entry >> 8) & 0xFF, entry & 0xFF
            var = self.var(index, sub)
            value = self._on_read(index, sub, var)
            if value is None:
                value = self.raw(index, sub)
            out += var.encode_raw(value)[: bits // 8]
        return bytes(out)

    def _motion(self) -> None:
        if self.state == OE and self.mode == 8:
            self.position = self.target  # an ideal servo: CSP follows the setpoint at once

    def tick(self, now: float) -> None:
        """Heartbeat producer and consumer."""
        if self.nmt == NMT_BOOT:
            return
        period = self.raw(0x1017) / 1000.0
        if self._next_beat is not None and period > 0 and now >= self._next_beat:
            self.send(0x700 + self.node_id, bytes([self.nmt]))
            self._next_beat = max(self._next_beat + period, now)
        consumer = self.raw(0x1016, 1) if 0x1016 in self.od else 0
        timeout = (consumer & 0xFFFF) / 1000.0
        seen = self._consumer_seen
        if timeout and seen is not None and now - seen > timeout and not self.heartbeat_lost:
            self.heartbeat_lost = True
            self.send(0x80 + self.node_id, struct.pack("<HB5x", 0x8130, 0x11))
            if self.state == OE and self.raw(0x6007) == 3:
                self.state = QSA


class StrictDrives:
    """Strict drives on their own handle of a python-can bus, served by one thread.

    ``StrictDrives(channel, eds, nodes)`` as a context manager: the drives boot (boot-up frame),
    then answer until the block ends. ``frames`` holds every frame the drives sent.
    """

    def __init__(
        self,
        channel: str,
        eds: Path,
        nodes: dict[int, dict[str, Any]] | list[int],
        *,
        interface: str = "virtual",
    ) -> None:
        self.bus = can.Bus(interface=interface, channel=channel, receive_own_messages=False)
        self._lock = threading.Lock()
        options = nodes if isinstance(nodes, dict) else {n: {} for n in nodes}
        self.drives = {n: StrictDrive(n, eds, self._send, **kw) for n, kw in options.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="strict-drives")
        self.silent: set[int] = set()
        """Node ids that neither answer nor send (a drive switched off)."""
        self.log: list[tuple[float, int, int]] = []
        """(monotonic time, COB-ID, DLC) of every frame on the bus, sent or received by the drives."""

    def _send(self, cob: int, data: bytes | bytearray) -> None:
        self.log.append((time.monotonic(), cob, len(data)))
        self.bus.send(can.Message(arbitration_id=cob, data=bytes(data), is_extended_id=False))

    def __enter__(self) -> StrictDrives:
        for d in self.drives.values():
            d.boot()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.bus.shutdown()

    def __getitem__(self, node_id: int) -> StrictDrive:
        return self.drives[node_id]

    def __iter__(self) -> Iterator[StrictDrive]:
        return iter(self.drives.values())

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` between two frames of the serving thread (to change a drive's state)."""
        with self._lock:
            return fn()

    def _serve(self) -> None:
        recv = self.bus.recv
        next_tick = 0.0
        while not self._stop.is_set():
            msg = recv(0.001)
            now = time.monotonic()
            with self._lock:
                if msg is not None and not msg.is_error_frame and not msg.is_remote_frame:
                    self.log.append((now, msg.arbitration_id, msg.dlc))
                    for d in self.drives.values():
                        if d.node_id not in self.silent:
                            d.on_frame(msg.arbitration_id, bytes(msg.data), now)
                if now >= next_tick:  # heartbeats are ms things: once a millisecond is enough
                    next_tick = now + 0.001
                    for d in self.drives.values():
                        if d.node_id not in self.silent:
                            d.tick(now)
