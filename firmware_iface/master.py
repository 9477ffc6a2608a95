"""The CANopen master: SDO set-up through ``canopen``, then the cyclic SYNC/TPDO1/RPDO1 exchange.

The same code runs on any python-can bus in real time and on the simulated-time bus. One cycle::

    fb = master.read(t, deadline)   # SYNC, then every drive's TPDO1 decoded into master.feedback
    ...controller writes master.commands (goal + target per axis)...
    master.write()                  # one RPDO1 per drive: controlword from (state, goal), target
    events = master.service(t)      # EMCY, heartbeats, boot-ups, collisions; master heartbeat

``read``/``write`` are the hot path: precompiled structs, preallocated messages and records, no
SDO, no logging, nothing that grows. ``setup``/``shutdown`` never run inside the cycle.

Drive-side reaction chosen for 0x605A (quick stop option code): **2**, "slow down on the
quick-stop ramp, then SWITCH ON DISABLED". After the ramp the drive holds no torque and sits where
no single controlword brings it back to motion: it needs shutdown, switch on and enable operation
in turn (transitions 2, 3, 4), where option 6 leaves it in QUICK STOP ACTIVE, from which one
"enable operation" from any node on the bus re-enables it (transition 16). The price is that an
elastically loaded wire is no longer servo-held after the ramp (the drive train's friction holds
it).

No return to motion after a fault (DESIGN.md invariant 9): a drive the supervisor sees leaving its
stop while a fault is latched is *escalated* (``AxisCommand.escalate``): :meth:`Master.write` sends
it "disable voltage" and then an NMT stop in the same cycle, so it takes no RPDO at all until the
master starts it again at the next set-up.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final

import can
import canopen
from canopen.sdo.base import SdoVariable
from canopen.sdo.exceptions import SdoAbortedError, SdoCommunicationError

from firmware_iface import pdo
from firmware_iface.bus import kernel_of
from firmware_iface.cia402 import (
    CW_DISABLE_VOLTAGE,
    CW_ENABLE_OPERATION,
    CW_FAULT_RESET_BIT,
    DriveState,
    decode_statusword,
    emcy_name,
    next_controlword,
)
from firmware_iface.errors import BusError, DriveError, DriveSetupError, DriveTimeoutError, SdoError
from firmware_iface.od import Identity
from firmware_iface.plan import PDO_INVALID, QUICK_STOP_OPTION, SetupPlan, plan_system
from firmware_iface.simbus import SimKernel
from firmware_iface.spec import DriveConfig, DriveSystem
from firmware_iface.types import Commands, DriveEvent, DriveEventKind, DriveGoal, Feedback

__all__ = ["QUICK_STOP_OPTION", "Master", "MasterStats"]

SERVICE_QUEUE_LEN: Final = 256
"""Frames (EMCY, heartbeat, ...) kept between two ``service`` calls; more are dropped and counted."""
PLAUSIBLE_SPEED_FACTOR: Final = 2.0
"""A drive catching up a lag runs faster than the controller's max_speed (its own motor limit:
1.5x for the simulated drives); no axis moves at twice its max_speed."""
OWED_MAX: Final = 4
"""SYNCs a drive may be behind and still answer all of them (more are stale anyway)."""
SYNC_COUNTER_MAX: Final = 240
"""CiA 301 SYNC counter overflow value used when the counter is enabled."""

_NMT_START: Final = 0x01
_NMT_STOP: Final = 0x02
_NMT_RESET_COMMUNICATION: Final = 0x82
_NMT_NAMES: Final = {
    -1: "never heard",
    pdo.NMT_BOOTUP: "boot-up",
    pdo.NMT_STOPPED: "stopped",
    pdo.NMT_OPERATIONAL: "operational",
    pdo.NMT_PRE_OPERATIONAL: "pre-operational",
}
SHUTDOWN_DISABLE_CYCLES: Final = 8
"""Disable-voltage cycles shutdown gives the drives to report SWITCH ON DISABLED."""

# Module-level names for write(): one global lookup each instead of a global plus an attribute.
_OE: Final = DriveState.OPERATION_ENABLED
_GOAL_ENABLED: Final = DriveGoal.ENABLED
_INF: Final = math.inf
_I32_MIN: Final = -(2**31)
_I32_MAX: Final = 2**31 - 1
_RPDO1_PACK_INTO: Final = pdo.RPDO1.pack_into
# Statusword bits 0..6 decide the state: a 128-entry table makes decoding one index.
_STATE_LUT: Final = tuple(decode_statusword(sw) for sw in range(128))
_FAULTY: Final = frozenset({DriveState.FAULT, DriveState.FAULT_REACTION_ACTIVE})
_TORQUE_OFF: Final = frozenset({DriveState.SWITCH_ON_DISABLED, DriveState.FAULT})
"""States in which shutdown counts a drive as safely off (FAULT is latched and torque-free)."""


_SDO_WRITES: Final = frozenset({0, 1, 6})
"""CiA 301 client command specifiers of a write: download segment, initiate download, block
download (2, 3 and 5 read; 4 aborts)."""


@dataclass(slots=True)
class MasterStats:
    """Counters of the cyclic exchange (never reset by the master)."""

    cycles: int = 0
    stale_cycles: dict[str, int] = field(default_factory=dict)
    """Per axis: cycles in which no valid TPDO1 arrived."""
    unknown_cob_ids: int = 0
    """Frames on a COB-ID that is none of the configured drives' nor the master's (and 29-bit
    or CAN FD frames): counted, not a fault."""
    first_unknown_cob_id: int = -1
    """The COB-ID (or 29-bit identifier) of the first of them, -1 while there was none."""
    first_unknown_extended: bool = False
    """That first one was a 29-bit (or CAN FD) frame."""
    bad_dlc: int = 0
    """TPDO1s (also counted as collisions), EMCYs and heartbeats with the wrong length."""
    collisions: int = 0
    """Frames seen on a COB-ID only the master sends (NMT, SYNC, RPDO1s, master heartbeat), SDO
    requests to or answers from a configured drive once set up, a second TPDO1 of a drive for
    one SYNC and TPDO1s with the wrong length."""
    queue_drops: int = 0
    """Service frames dropped because ``service`` was not called often enough."""
    error_frames: int = 0
    send_errors: int = 0
    """Frames the interface refused to send or receive (``can.CanError``/``OSError``) in the cycle."""
    rejected_targets: int = 0
    """Non-finite targets refused (the previous target was sent instead)."""
    emcy_resets: int = 0
    """EMCY frames with error code 0x0000 ("error reset or no error"): counted, not a fault."""


class _SetupListener(can.Listener):
    """During set-up only: feeds canopen's SDO client and notes boot-ups/heartbeats."""

    def __init__(self, network: canopen.Network, on_heartbeat: Callable[[int, int], None]) -> None:
        self._network = network
        self._on_heartbeat = on_heartbeat

    def on_message_received(self, msg: can.Message) -> None:
        if msg.is_error_frame or msg.is_remote_frame:
            return
        cob = msg.arbitration_id
        if 0x701 <= cob <= 0x77F and msg.dlc >= 1:
            self._on_heartbeat(cob - 0x700, msg.data[0])
        self._network.notify(cob, msg.data, msg.timestamp)


class Master:
    """CANopen master for the drives of ``system`` on ``bus`` (see the module docstring).

    ``feedback`` and ``commands`` are allocated once and mutated in place (the controller writes
    goal and target per axis into ``commands``); ``stats`` counts what went wrong on the bus.
    """

    def __init__(self, system: DriveSystem, bus: can.BusABC) -> None:
        self._system = system
        self._bus = bus
        self._kernel = kernel_of(bus)
        """The simulated-time bus's kernel (synchronous listener hook, simulated clock), else None."""
        self._bus_cfg = system.bus
        self._cycle_cfg = system.cycle
        self.axes: tuple[str, ...] = tuple(system.drives)
        self._drives: tuple[DriveConfig, ...] = tuple(system.drives[a] for a in self.axes)
        self.nodes: tuple[int, ...] = tuple(d.node_id for d in self._drives)
        if len(set(self.nodes)) != len(self.nodes):
            raise ValueError(f"drives' node ids (={list(self.nodes)}) must be unique")
        if self._bus_cfg.master_node_id in self.nodes:
            raise ValueError(
                f"bus.master_node_id (={self._bus_cfg.master_node_id}) must differ from every "
                f"drive's node id {list(self.nodes)}"
            )
        n = len(self.axes)
        self.feedback = Feedback.for_axes(self.axes)
        self.commands = Commands.for_axes(self.axes)
        self.stats = MasterStats(stale_cycles=dict.fromkeys(self.axes, 0))
        self.nmt_state: list[int] = [-1] * n
        """Per axis: NMT state of the last heartbeat (0x05 operational, 0x7F pre-operational)."""
        self.last_controlword: list[int] = [CW_DISABLE_VOLTAGE] * n
        """Per axis: the controlword of the last RPDO1 (diagnostics and tests)."""

        self._fb = tuple(self.feedback.axes[a] for a in self.axes)
        self._cmd = tuple(self.commands.axes[a] for a in self.axes)
        self._cpu = tuple(d.counts_per_unit for d in self._drives)
        self._inv_cpu = tuple(1.0 / d.counts_per_unit for d in self._drives)
        self._fpt = tuple(d.force_per_torque for d in self._drives)
        self._tpdo_index = {pdo.tpdo1_cob(nid): i for i, nid in enumerate(self.nodes)}
        self._service_cobs = frozenset(
            [pdo.emcy_cob(nid) for nid in self.nodes] + [pdo.heartbeat_cob(nid) for nid in self.nodes]
        )
        self._sdo_cobs = frozenset(
            [pdo.sdo_rx_cob(nid) for nid in self.nodes] + [pdo.sdo_tx_cob(nid) for nid in self.nodes]
        )
        """Once set up this master sends no SDO: a request to a drive or an answer from it is
        another SDO client rewriting or reading what set-up configured."""
        master_hb = pdo.heartbeat_cob(self._bus_cfg.master_node_id)
        self._own_cobs = frozenset(
            [pdo.NMT_COB, pdo.SYNC_COB, master_hb, *(pdo.rpdo1_cob(nid) for nid in self.nodes)]
        )
        self._node_index = {nid: i for i, nid in enumerate(self.nodes)}

        self._answered = bytearray(n)
        self._owed = bytearray(n)
        """Per drive: SYNCs sent that it has not answered yet (at most ``OWED_MAX``). A drive
        running late answers several in one cycle; a TPDO1 beyond what is owed has a second
        sender."""
        self._period = 1.0 / self._cycle_cfg.rate_hz
        self._jump_rate = tuple(
            PLAUSIBLE_SPEED_FACTOR * d.max_speed * d.counts_per_unit for d in self._drives
        )
        """Per drive: counts per second no drive exceeds."""
        self._tpdo_t = [0.0] * n
        """Per drive: cycle time of the cycle that took its last TPDO1."""
        self._tpdo_perf = [0.0] * n
        """Per drive, real time only: ``perf_counter`` just after the SYNC of that cycle."""
        self._jump_tol = tuple(d.position_jump_tolerance * d.counts_per_unit for d in self._drives)
        self._have_pos = bytearray(n)
        self._jump = [0] * n
        """Per drive: counts of an implausible position jump not yet reported (0 = none)."""
        self._jump_allowed = [0.0] * n
        self._implausible = False
        self._actual_counts = [0] * n
        self._sent_counts = [0] * n
        self._rpdo = tuple(
            can.Message(
                arbitration_id=pdo.rpdo1_cob(nid),
                data=bytearray(pdo.RPDO1_DLC),
                is_extended_id=False,
            )
            for nid in self.nodes
        )
        self._sync_counter = 0
        self._sync = can.Message(
            arbitration_id=pdo.SYNC_COB,
            data=bytearray(1 if self._cycle_cfg.sync_counter else 0),
            is_extended_id=False,
        )
        self._nmt_stop = tuple(
            can.Message(arbitration_id=pdo.NMT_COB, data=bytearray([_NMT_STOP, nid]), is_extended_id=False)
            for nid in self.nodes
        )
        self.escalations = 0
        """NMT stops sent to escalate a drive seen leaving its stop under a latched fault."""
        self._heartbeat = can.Message(
            arbitration_id=master_hb, data=bytearray([pdo.NMT_OPERATIONAL]), is_extended_id=False
        )
        self._hb_period = self._bus_cfg.master_heartbeat_ms / 1000.0
        self._next_heartbeat: float | None = None
        self._hb_timeout = tuple(d.heartbeat_timeout_ms / 1000.0 for d in self._drives)
        self._last_seen: list[float | None] = [None] * n
        self._hb_lost = [False] * n
        self.setup_lost: list[str] = [""] * n
        """Per axis: why the drive's set-up is gone since the last :meth:`setup` ("" = intact):
        it booted (boot-up) or fell back to pre-operational after it was operational. A reset
        drive is back at its power-on values (heartbeat consumer 0x1016, mode 0x6060, limits,
        PDO mapping); only a new set-up restores them."""
        self._was_operational = bytearray(n)
        """Per drive: a heartbeat said OPERATIONAL since set-up (a later pre-operational one
        means it was reset or commanded back)."""
        self._fault_reported = [False] * n
        self._queue: deque[can.Message] = deque(maxlen=SERVICE_QUEUE_LEN)
        self._bus_ok_cycle = True
        self._error_frames_reported = 0
        self._io_error: BaseException | None = None
        self._io_what = ""
        """The first send/receive failure not yet reported by ``service``."""
        self._bus_state = can.BusState.ACTIVE
        self._running = False
        self._network: canopen.Network | None = None
        self._sdo_nodes: dict[int, canopen.RemoteNode] = {}
        self.plans: dict[str, SetupPlan] = {}
        """Per axis: the checked set-up plan of the last :meth:`setup` (its ``notes`` say what
        was accepted and switched off)."""
        self.identities: dict[str, Identity] = {}
        """Per axis: identity 0x1018 as read from the drive at set-up."""
        self._seen = [False] * n
        self._seen_event = threading.Event()
        self.tap: Callable[[can.Message, float, bool], None] | None = None
        """``tap(msg, t, rx)`` sees every frame the master sends or receives once set up (e.g. a
        trace recorder), stamped ``t`` in cycle time; ``msg`` may be reused after the call."""
        self._read_perf = 0.0
        self.sync_enabled = True
        """False stops SYNC production (fault injection: a lost SYNC producer). On the
        simulated-time bus the period still passes."""

    # ------------------------------------------------------------------ set-up (never cyclic)

    def setup(self) -> None:
        """Check, configure and start every drive; raise rather than enable a doubtful one.

        First, offline for every drive: the capability check of its EDS/DCF and every SDO value
        set-up will write (:func:`~firmware_iface.plan.plan_setup`); every problem of every drive
        is raised at once, before anything is sent. Then, whatever state the drives are in:
        NMT reset communication and a boot-up from each, identity 0x1018 (compared with the
        file), the CiA 402 state brought to SWITCH ON DISABLED (a fault reset edge if in FAULT),
        PDO hygiene and mapping and the safety objects by SDO, every value read back, NMT start.
        Drives are then OPERATIONAL and SWITCH ON DISABLED; enabling happens through the cycle.
        Problems on the wire are collected per drive and raised together as well.
        """
        by_axis, problems = plan_system(self._system)
        if problems:
            raise DriveSetupError("\n".join(problems))
        self.plans = by_axis
        plans = {plan.node_id: plan for plan in by_axis.values()}

        network = canopen.Network(self._bus)
        self._network = network
        for nid, plan in plans.items():
            node = canopen.RemoteNode(nid, plan.dictionary.od)
            network.add_node(node)
            node.sdo.RESPONSE_TIMEOUT = self._bus_cfg.sdo_timeout_s
            self._sdo_nodes[nid] = node
        failures: list[DriveError] = []
        with self._setup_listener():
            self._wait_for_nodes()
            for i, nid in enumerate(self.nodes):
                axis, node = self.axes[i], self._sdo_nodes[nid]
                try:
                    self.identities[axis] = self._identify(axis, self._drives[i], plans[nid], node)
                    self._to_switch_on_disabled(axis, node)
                    self._configure(axis, plans[nid], node)
                except DriveError as exc:
                    failures.append(exc)
            if failures:
                raise _joined(failures)
            for nid in self.nodes:
                network.send_message(pdo.NMT_COB, bytes([_NMT_START, nid]))
        self._drain()
        for i in range(len(self.axes)):
            self._sent_counts[i] = 0
            self._fault_reported[i] = False
            self._have_pos[i] = 0
            self._owed[i] = 0
            self.setup_lost[i] = ""
            self._was_operational[i] = 0
            # the cyclic exchange starts now: count missing TPDO1s from here, not from never
            self._fb[i].age_cycles = 0
        self._running = True

    def _setup_listener(self) -> _SetupScope:
        assert self._network is not None
        listener = _SetupListener(self._network, self._note_heartbeat)
        return _SetupScope(self._bus, listener, self._kernel)

    def _note_heartbeat(self, node_id: int, state: int) -> None:
        i = self._node_index.get(node_id)
        if i is None:
            return
        self.nmt_state[i] = state & 0x7F
        if state & 0x7F != pdo.NMT_BOOTUP:
            return
        self._seen[i] = True
        if all(self._seen):
            self._seen_event.set()

    def _wait_for_nodes(self) -> None:
        """NMT reset communication to every drive, then block until each sent its boot-up, or
        ``bus.boot_timeout_s`` passes.

        Whatever NMT state a drive was found in (operational, stopped, pre-operational, just
        powered), it is then pre-operational with its communication parameters (PDOs, heartbeat
        consumer) at their power-on values, and the configuration below starts from there.
        """
        timeout = self._bus_cfg.boot_timeout_s
        assert self._network is not None
        if self._kernel is not None:
            # what the drives sent before set-up is old news: show it to the listener first
            self._feed_queued()
        for i in range(len(self._seen)):
            self._seen[i] = False
        self._seen_event.clear()
        for nid in self.nodes:
            self._network.send_message(pdo.NMT_COB, bytes([_NMT_RESET_COMMUNICATION, nid]))
        if self._kernel is not None:
            # Simulated time only passes on SYNC: let boot_timeout_s of it pass at most.
            for _ in range(math.ceil(timeout / self._kernel.period)):
                if all(self._seen):
                    break
                self._bus.send(self._sync)
        else:
            self._seen_event.wait(timeout)
        missing = [
            f"node {nid} ({a})" for a, nid, s in zip(self.axes, self.nodes, self._seen, strict=True) if not s
        ]
        if missing:
            raise DriveTimeoutError(
                f"{', '.join(missing)} sent no boot-up after NMT reset communication within "
                f"bus.boot_timeout_s (={timeout} s): not on the bus, wrong node id or bitrate, or "
                "powered off"
            )

    def _feed_queued(self) -> None:
        assert self._network is not None
        listener = _SetupListener(self._network, self._note_heartbeat)
        while (msg := self._bus.recv(0.0)) is not None:
            listener.on_message_received(msg)

    def _identify(self, axis: str, drive: DriveConfig, plan: SetupPlan, node: canopen.RemoteNode) -> Identity:
        """Read 0x1018 and compare vendor and product with the drive's EDS/DCF."""
        values: list[int | None] = []
        for sub in (1, 2, 3, 4):
            try:
                values.append(self._sdo_read(axis, node, 0x1018, sub))
            except SdoError:
                if sub <= 2:
                    raise
                values.append(None)  # revision and serial are optional (CiA 301)
        ident = Identity(*values)
        expected = plan.identity
        if expected is not None:
            wrong = [
                f"{what} 0x{got:08X} (file: 0x{want:08X})"
                for what, got, want in (
                    ("vendor", ident.vendor, expected.vendor),
                    ("product", ident.product, expected.product),
                )
                if want is not None and got is not None and got != want
            ]
            if wrong:
                text = (
                    f"node {drive.node_id} ({axis}): identity 0x1018 does not match "
                    f"{plan.dictionary.source}: {', '.join(wrong)}"
                )
                if not drive.accept_identity_mismatch:
                    raise DriveSetupError(
                        text + "; the file's ranges and units may not be this drive's: refusing to "
                        f"enable (set drives.{axis}.accept_identity_mismatch = true to run anyway)"
                    )
                plan.notes.append(text + " (accepted by accept_identity_mismatch)")
        return ident

    def _to_switch_on_disabled(self, axis: str, node: canopen.RemoteNode) -> None:
        """Bring the drive's CiA 402 state to SWITCH ON DISABLED by SDO, whatever it was.

        From FAULT: controlword 0 then 0x80 (the rising edge of bit 7 resets the fault); from
        any other state: disable voltage. Nothing moves: no state on the way holds torque.
        """
        deadline = time.monotonic() + self._bus_cfg.boot_timeout_s
        for attempt in range(1000):
            sw = self._sdo_read(axis, node, 0x6041, 0)
            state = decode_statusword(sw)
            if state is DriveState.SWITCH_ON_DISABLED:
                return
            if attempt and (time.monotonic() > deadline or attempt >= 100):
                reason = ""
                if state in _FAULTY:
                    with suppress(DriveError):
                        reason = f", error code 0x{self._sdo_read(axis, node, 0x603F, 0):04X}"
                raise DriveSetupError(
                    f"node {node.id} ({axis}): stays in {state.name} (statusword 0x{sw:04X}{reason}) "
                    "after a fault reset / disable voltage; refusing to enable"
                )
            if state is DriveState.FAULT:
                self._sdo_write(axis, node, 0x6040, 0, CW_DISABLE_VOLTAGE)
                self._sdo_write(axis, node, 0x6040, 0, CW_FAULT_RESET_BIT)
            else:
                self._sdo_write(axis, node, 0x6040, 0, CW_DISABLE_VOLTAGE)
            if self._kernel is not None:
                self._bus.send(self._sync)  # let a cycle of simulated time pass
            else:
                time.sleep(0.002)  # the drive acts within its own cycle

    def _configure(self, axis: str, plan: SetupPlan, node: canopen.RemoteNode) -> None:
        """Write the checked plan (PDO hygiene first), then read every value back."""
        for w in plan.writes:
            value = w.value
            if w.keep_cob:
                current = self._sdo_read(axis, node, w.index, w.sub)
                if current & PDO_INVALID:
                    continue  # already off
                value = current | PDO_INVALID
            self._sdo_write(axis, node, w.index, w.sub, value)
        for (index, sub), (expected, mask) in plan.readback.items():
            actual = self._sdo_read(axis, node, index, sub)
            if actual & mask != expected & mask:
                raise DriveSetupError(
                    f"node {node.id} ({axis}): read-back of 0x{index:04X}:{sub} gave {actual} "
                    f"(0x{actual & 0xFFFFFFFF:X}), expected {expected} (0x{expected & 0xFFFFFFFF:X}); "
                    "refusing to enable"
                )

    def _entry(self, node: canopen.RemoteNode, index: int, sub: int) -> Any:
        obj = node.sdo[index]
        if isinstance(obj, SdoVariable):
            return obj
        return obj[sub]

    def _sdo_write(self, axis: str, node: canopen.RemoteNode, index: int, sub: int, value: int) -> None:
        try:
            self._entry(node, index, sub).raw = value
        except SdoAbortedError as exc:
            raise SdoError(
                f"node {node.id} ({axis}): writing {value} to 0x{index:04X}:{sub} was aborted: {exc}"
            ) from exc
        except SdoCommunicationError as exc:
            raise DriveTimeoutError(
                f"node {node.id} ({axis}): no SDO answer writing 0x{index:04X}:{sub} within "
                f"bus.sdo_timeout_s (={self._bus_cfg.sdo_timeout_s} s): {exc}"
            ) from exc
        except KeyError as exc:
            raise DriveSetupError(
                f"node {node.id} ({axis}): object 0x{index:04X}:{sub} is not in its object dictionary"
            ) from exc

    def _sdo_read(self, axis: str, node: canopen.RemoteNode, index: int, sub: int) -> int:
        try:
            value = self._entry(node, index, sub).raw
        except SdoAbortedError as exc:
            raise SdoError(
                f"node {node.id} ({axis}): reading 0x{index:04X}:{sub} was aborted: {exc}"
            ) from exc
        except SdoCommunicationError as exc:
            raise DriveTimeoutError(
                f"node {node.id} ({axis}): no SDO answer reading 0x{index:04X}:{sub} within "
                f"bus.sdo_timeout_s (={self._bus_cfg.sdo_timeout_s} s): {exc}"
            ) from exc
        if not isinstance(value, int):
            raise DriveSetupError(
                f"node {node.id} ({axis}): 0x{index:04X}:{sub} read back {value!r}, expected an integer"
            )
        return value

    def _drain(self) -> None:
        """Discard what set-up left queued (already seen by the set-up listener)."""
        while self._bus.recv(0.0) is not None:
            pass

    # ------------------------------------------------------------------ the cycle (hot path)

    def read(self, t: float, deadline: float | None) -> Feedback:
        """Send SYNC, collect one TPDO1 per drive into :attr:`feedback` (in place) and return it.

        ``deadline`` is a ``time.perf_counter()`` value; ``None`` (simulated-time bus) takes what
        is queued without waiting. Drives that did not answer get ``age_cycles + 1``.
        """
        stats = self.stats
        stats.cycles += 1
        fb = self.feedback
        fb.t = t
        fb.cycle = stats.cycles
        self._bus_ok_cycle = True
        sync = self._sync
        if self._cycle_cfg.sync_counter:
            self._sync_counter = self._sync_counter % SYNC_COUNTER_MAX + 1
            sync.data[0] = self._sync_counter
        answered = self._answered
        fbs = self._fb
        n = len(answered)
        for i in range(n):
            answered[i] = 0
        bus = self._bus
        tap = self.tap
        fb.sync_missed += 1  # until the SYNC below is out
        if self.sync_enabled:
            try:
                bus.send(sync)
                fb.sync_missed = 0
                owed = self._owed
                for i in range(n):
                    if owed[i] < OWED_MAX:
                        owed[i] += 1
                if tap is not None:
                    tap(sync, t, False)
            except (can.CanError, OSError) as exc:
                self._io_failed(exc, "sending SYNC")
        elif self._kernel is not None:
            self._kernel.advance(1)
        missing = n
        recv = bus.recv
        try:
            if deadline is None:
                while (msg := recv(0.0)) is not None:
                    missing -= self._take(msg)
                    if tap is not None:
                        tap(msg, t, True)
            else:
                perf = time.perf_counter
                self._read_perf = perf()
                while missing > 0:
                    remaining = deadline - perf()
                    msg = recv(remaining if remaining > 0.0 else 0.0)
                    if msg is None:
                        break
                    missing -= self._take(msg)
                    if tap is not None:
                        tap(msg, t + (perf() - self._read_perf), True)
        except (can.CanError, OSError) as exc:
            self._io_failed(exc, "receiving")
        stale = stats.stale_cycles
        axes = self.axes
        for i in range(n):
            if answered[i]:
                fbs[i].age_cycles = 0
            else:
                fbs[i].age_cycles += 1
                stale[axes[i]] += 1
        fb.bus_ok = self._bus_ok_cycle
        return fb

    def _stamp(self) -> float:
        """Now in cycle time, for the tap: the cycle's time plus what has passed since its SYNC
        (real time); the cycle's time itself on the simulated-time bus."""
        if self._kernel is not None:
            return self.feedback.t
        return self.feedback.t + (time.perf_counter() - self._read_perf)

    def _take(self, msg: can.Message) -> int:
        """Handle one received frame; 1 if it was a drive's first valid TPDO1 this cycle."""
        if msg.is_error_frame:
            self.stats.error_frames += 1
            self._bus_ok_cycle = False
            return 0
        if msg.is_extended_id or msg.is_fd:
            # CiA 301 frames are classic 11-bit: a 29-bit 0x181 is somebody else's, not a TPDO
            self._unknown(msg.arbitration_id, True)
            return 0
        cob = msg.arbitration_id
        i = self._tpdo_index.get(cob)
        if i is not None and not msg.is_remote_frame:
            if msg.dlc != pdo.TPDO1_DLC:
                # invariant 7: another node on this COB-ID, or a drive mapped differently
                self.stats.bad_dlc += 1
                self._collide(msg)
                return 0
            if not self._owed[i]:
                # invariant 7: more TPDO1s than SYNCs: a second sender; keep what we had
                self._collide(msg)
                return 0
            self._owed[i] -= 1
            again = self._answered[i]
            sw, counts, torque = pdo.TPDO1.unpack_from(msg.data)
            axis = self._fb[i]
            t = self.feedback.t
            if self._have_pos[i]:
                # invariant 7: no further than the axis can move since its last TPDO1, in the
                # time that passed (on the wall clock a stalled master sees a drive move further).
                # In real time that is also the time between the two SYNCs: a master held up
                # between its cycle's slot and its SYNC finds the drive moved on meanwhile
                # (0 on the simulated-time bus, where the cycle's time is the SYNC's)
                jump = counts - self._actual_counts[i]
                elapsed = t - self._tpdo_t[i]
                since_sync = self._read_perf - self._tpdo_perf[i]
                elapsed = since_sync if since_sync > elapsed else elapsed
                elapsed = elapsed if elapsed > self._period else self._period
                allowed = self._jump_rate[i] * elapsed
                allowed += self._jump_tol[i]
                if jump > allowed or -jump > allowed:
                    self._jump[i] = jump
                    self._jump_allowed[i] = allowed
                    self._implausible = True
                    self._bus_ok_cycle = False
            self._have_pos[i] = 1
            self._tpdo_t[i] = t
            self._tpdo_perf[i] = self._read_perf
            axis.statusword = sw
            axis.state = _STATE_LUT[sw & 0x7F]
            axis.position = counts * self._inv_cpu[i]
            axis.force = torque * self._fpt[i]
            self._actual_counts[i] = counts
            if again:
                return 0
            self._answered[i] = 1
            return 1
        if cob in self._own_cobs:
            self._collide(msg)
        elif cob in self._service_cobs:
            self._enqueue(msg)
        elif cob in self._sdo_cobs and self._running:
            self._collide(msg)  # another SDO client on a drive (this master's SDO ended with set-up)
        else:
            self._unknown(cob, False)
        return 0

    def _unknown(self, cob: int, extended: bool) -> None:
        """Count a frame nobody here sends or expects; the first one's identifier is kept for the
        run's record (no string is built here: the recorder reports it once)."""
        stats = self.stats
        if not stats.unknown_cob_ids:
            stats.first_unknown_cob_id = cob
            stats.first_unknown_extended = extended
        stats.unknown_cob_ids += 1

    def _io_failed(self, exc: BaseException, what: str) -> None:
        """The interface refused a frame (bus-off, full queue, adapter gone) while ``what`` (e.g.
        'sending SYNC'): the cycle's bus is not OK and ``service`` reports a BUS_ERROR naming
        both; the cycle itself goes on (best effort)."""
        self.stats.send_errors += 1
        self._bus_ok_cycle = False
        self.feedback.bus_ok = False
        if self._io_error is None:
            self._io_error = exc
            self._io_what = what

    def _collide(self, msg: can.Message) -> None:
        """A frame that only a second sender explains: the cycle's bus is not OK, ``service``
        reports it (a COLLISION naming the COB-ID)."""
        self.stats.collisions += 1
        self._bus_ok_cycle = False
        self._enqueue(msg)

    def _enqueue(self, msg: can.Message) -> None:
        if len(self._queue) == SERVICE_QUEUE_LEN:
            self.stats.queue_drops += 1
        self._queue.append(msg)

    def write(self) -> None:
        """Send one RPDO1 per drive: the controlword toward its goal and the target position.

        Until a drive is OPERATION ENABLED with goal ENABLED, the target sent is its position
        actual, and ``commands.axes[a].target`` is set to the same value, so enabling never jumps.
        A non-finite target is refused (counted) and the previous target is sent again. An axis
        whose command says ``escalate`` gets "disable voltage" whatever its goal, then an NMT stop.
        """
        fbs = self._fb
        cmds = self._cmd
        send = self._bus.send
        tap = self.tap
        cpu = self._cpu
        sent = self._sent_counts
        last_cw = self.last_controlword
        pack_into = _RPDO1_PACK_INTO
        for i, msg in enumerate(self._rpdo):
            fb = fbs[i]
            cmd = cmds[i]
            state = fb.state
            goal = cmd.goal
            escalate = cmd.escalate
            if state is _OE and goal is _GOAL_ENABLED and not escalate:
                # what next_controlword gives here (the common case, every cycle of a procedure)
                cw = CW_ENABLE_OPERATION
                target = cmd.target
                if -_INF < target < _INF:
                    counts = round(target * cpu[i])
                else:
                    self.stats.rejected_targets += 1
                    counts = sent[i]
            else:
                # bit 7 high whenever the last controlword had it low: the very first FAULT_RESET
                # cycle is already a rising edge (a one-cycle reset request resets), then it
                # alternates
                phase = (
                    state is DriveState.FAULT
                    and goal is DriveGoal.FAULT_RESET
                    and not last_cw[i] & CW_FAULT_RESET_BIT
                )
                cw = CW_DISABLE_VOLTAGE if escalate else next_controlword(state, goal, reset_phase=phase)
                counts = self._actual_counts[i]
                cmd.target = fb.position
            # pdo.encode_rpdo1, written out: the target saturates at the i32 range
            wire = _I32_MIN if counts < _I32_MIN else _I32_MAX if counts > _I32_MAX else counts
            pack_into(msg.data, 0, cw & 0xFFFF, wire)
            sent[i] = counts
            last_cw[i] = cw
            try:
                send(msg)
                if tap is not None:
                    tap(msg, self._stamp(), False)
                if escalate:
                    # after the disable voltage: a stopped node takes no RPDO, whoever sends it
                    stop = self._nmt_stop[i]
                    send(stop)
                    self.escalations += 1
                    if tap is not None:
                        tap(stop, self._stamp(), False)
            except (can.CanError, OSError) as exc:
                # the other drives still get their frame (a quick stop, once this is reported)
                self._io_failed(exc, "sending RPDO1")

    # ------------------------------------------------------------------ outside the hot path

    def service(self, t: float) -> Sequence[DriveEvent]:
        """Handle queued EMCY/heartbeat/boot-up/collision frames, run the heartbeat watchdog,
        report new drive faults and error frames, and produce the master heartbeat.

        ``t`` is the cycle time (s, simulated or monotonic); heartbeat ages are measured in it.
        Call it once per cycle after :meth:`write`; it allocates only when something happened.
        """
        events: list[DriveEvent] = []
        queue = self._queue
        while queue:
            self._service_frame(queue.popleft(), t, events)
        if self._io_error is not None:
            exc, self._io_error = self._io_error, None
            events.append(
                DriveEvent(
                    DriveEventKind.BUS_ERROR,
                    "",
                    t,
                    code=self.stats.send_errors,
                    text=f"CAN interface {self._bus.channel_info}: {self._io_what} failed: "
                    f"{type(exc).__name__}: {exc}",
                )
            )
        if self._running and (self._next_heartbeat is None or t >= self._next_heartbeat):
            self._check_bus_state(t, events)
        if self._implausible:
            self._implausible = False
            for i, jump in enumerate(self._jump):
                if jump:
                    self._jump[i] = 0
                    d = self._drives[i]
                    events.append(
                        DriveEvent(
                            DriveEventKind.IMPLAUSIBLE,
                            self.axes[i],
                            t,
                            code=jump,
                            text=f"node {self.nodes[i]}: position actual jumped "
                            f"{jump / d.counts_per_unit:+.3f} since its last TPDO1 (allowed "
                            f"{self._jump_allowed[i] / d.counts_per_unit:.3f}: "
                            f"{PLAUSIBLE_SPEED_FACTOR:g} x max_speed {d.max_speed:g}/s x time since + "
                            f"position_jump_tolerance "
                            f"{d.position_jump_tolerance:g})",
                        )
                    )
        if self.stats.error_frames != self._error_frames_reported:
            new = self.stats.error_frames - self._error_frames_reported
            self._error_frames_reported = self.stats.error_frames
            events.append(
                DriveEvent(
                    DriveEventKind.BUS_ERROR, "", t, code=new, text=f"{new} CAN error frame(s) received"
                )
            )
        for i, axis in enumerate(self.axes):
            seen = self._last_seen[i]
            fb = self._fb[i]
            if seen is None:
                seen = self._last_seen[i] = t  # watchdog starts at the first service call
            if t - seen > self._hb_timeout[i]:
                fb.heartbeat_ok = False
                if not self._hb_lost[i]:
                    self._hb_lost[i] = True
                    events.append(
                        DriveEvent(
                            DriveEventKind.HEARTBEAT_LOST,
                            axis,
                            t,
                            text=f"node {self.nodes[i]}: no heartbeat for {t - seen:.3f} s "
                            f"(heartbeat_timeout_ms = {self._drives[i].heartbeat_timeout_ms})",
                        )
                    )
            if fb.state in _FAULTY:
                if not self._fault_reported[i]:
                    self._fault_reported[i] = True
                    events.append(
                        DriveEvent(
                            DriveEventKind.DRIVE_FAULT,
                            axis,
                            t,
                            text=f"node {self.nodes[i]}: statusword 0x{fb.statusword:04X} ({fb.state.name})",
                        )
                    )
            elif fb.age_cycles == 0:
                self._fault_reported[i] = False
        if self._running and (self._next_heartbeat is None or t >= self._next_heartbeat):
            try:
                self._bus.send(self._heartbeat)
                if self.tap is not None:
                    self.tap(self._heartbeat, self._stamp(), False)
            except (can.CanError, OSError) as exc:
                self._io_failed(exc, "sending the heartbeat")  # reported next cycle; tried again
            nxt = (self._next_heartbeat or t) + self._hb_period
            self._next_heartbeat = nxt if nxt > t else t + self._hb_period
        return events

    def _check_bus_state(self, t: float, events: list[DriveEvent]) -> None:
        """Error passive or bus-off, where the interface reports its state (python-can
        ``BusABC.state``; ACTIVE on interfaces that cannot tell): a BUS_ERROR on each change
        for the worse. Polled at the master heartbeat's period, not every cycle."""
        try:
            state = self._bus.state
        except (can.CanError, OSError, NotImplementedError):
            return
        if state == self._bus_state:
            return
        self._bus_state = state
        if state is can.BusState.ACTIVE:
            return
        self.feedback.bus_ok = False
        what = "bus-off" if state is can.BusState.ERROR else "error passive"
        events.append(
            DriveEvent(
                DriveEventKind.BUS_ERROR,
                "",
                t,
                text=f"CAN interface {self._bus.channel_info} is {what} ({state.name})",
            )
        )

    def _service_frame(self, msg: can.Message, t: float, events: list[DriveEvent]) -> None:
        cob = msg.arbitration_id
        tpdo = self._tpdo_index.get(cob)
        if tpdo is not None:
            nid = self.nodes[tpdo]
            why = (
                f"with DLC {msg.dlc} (expected {pdo.TPDO1_DLC})"
                if msg.dlc != pdo.TPDO1_DLC
                else "a second time for one SYNC"
            )
            events.append(
                DriveEvent(
                    DriveEventKind.COLLISION,
                    self.axes[tpdo],
                    t,
                    code=cob,
                    text=f"TPDO1 COB-ID 0x{cob:03X} of node {nid} arrived {why}: another node sends on it",
                )
            )
            return
        if cob in self._own_cobs:
            axis = ""
            if 0x201 <= cob <= 0x27F:
                i = self._node_index.get(cob - 0x200)
                axis = self.axes[i] if i is not None else ""
            events.append(
                DriveEvent(
                    DriveEventKind.COLLISION,
                    axis,
                    t,
                    code=cob,
                    text=f"another node sent COB-ID 0x{cob:03X}, which only this master may send",
                )
            )
            return
        i = self._node_index.get(cob & 0x7F)
        if i is None:
            return
        axis = self.axes[i]
        if cob in self._sdo_cobs:
            text = self._sdo_text(i, msg)
            if cob == pdo.sdo_rx_cob(self.nodes[i]) and (msg.dlc < 1 or msg.data[0] >> 5 in _SDO_WRITES):
                # what set-up wrote and read back may be rewritten: as after a reset, no
                # acknowledge may re-enable the drive on it (a read changes nothing)
                self._lose_setup(i, text)
            events.append(DriveEvent(DriveEventKind.COLLISION, axis, t, code=cob, text=text))
            return
        if cob & 0x780 == 0x080:  # EMCY
            if msg.dlc < 2:
                self.stats.bad_dlc += 1
                return
            code = int.from_bytes(msg.data[0:2], "little")
            register = msg.data[2] if msg.dlc >= 3 else 0
            if code == 0x0000:
                # CiA 301: the drive reports its error cleared (after a fault reset); not a fault
                self.stats.emcy_resets += 1
                return
            events.append(
                DriveEvent(
                    DriveEventKind.EMCY,
                    axis,
                    t,
                    code=code,
                    text=f"node {self.nodes[i]}: EMCY 0x{code:04X} {emcy_name(code)} "
                    f"(error register 0x{register:02X})",
                )
            )
        elif cob & 0x780 == 0x700:  # heartbeat / boot-up
            if msg.dlc != pdo.HEARTBEAT_DLC:
                self.stats.bad_dlc += 1
                return
            state = msg.data[0] & 0x7F
            self.nmt_state[i] = state
            self._last_seen[i] = t
            fb = self._fb[i]
            fb.heartbeat_ok = state == pdo.NMT_OPERATIONAL
            if self._hb_lost[i] and fb.heartbeat_ok:
                self._hb_lost[i] = False
            if not self._running:
                return
            nid = self.nodes[i]
            if state == pdo.NMT_OPERATIONAL:
                self._was_operational[i] = 1
            elif state == pdo.NMT_BOOTUP:
                self._was_operational[i] = 0
                self._lose_setup(i, f"node {nid} ({axis}) booted at {t:.3f} s (boot-up)")
                events.append(
                    DriveEvent(
                        DriveEventKind.BOOTUP,
                        axis,
                        t,
                        text=f"node {nid} booted while running: it was reset",
                    )
                )
            elif state == pdo.NMT_PRE_OPERATIONAL and self._was_operational[i]:
                # this master never sends a running drive back to pre-operational: it was reset
                # (its boot-up not seen) or another node commanded it; either way, set-up is doubtful
                self._was_operational[i] = 0
                why = (
                    f"node {nid} ({axis}) went pre-operational at {t:.3f} s after it was operational "
                    "(reset, or another node's NMT command)"
                )
                self._lose_setup(i, why)
                events.append(
                    DriveEvent(
                        DriveEventKind.BOOTUP,
                        axis,
                        t,
                        text=f"node {nid} went pre-operational while running: reset or commanded by "
                        "another node",
                    )
                )

    def _lose_setup(self, i: int, why: str) -> None:
        if not self.setup_lost[i]:  # the first cause is the one that lost it
            self.setup_lost[i] = why

    def needs_setup(self) -> list[str]:
        """Why each drive whose set-up is lost since the last :meth:`setup` needs it again (see
        :attr:`setup_lost`); empty when every drive is as set up."""
        return [why for why in self.setup_lost if why]

    def _sdo_text(self, i: int, msg: can.Message) -> str:
        """What an SDO frame seen once running is, for its COLLISION event (CiA 301 command
        specifiers: request 1 = write, 2 = read; answer 3 = write done, 2 = read done; 4 abort)."""
        cob, data = msg.arbitration_id, msg.data
        request = cob == pdo.sdo_rx_cob(self.nodes[i])
        what = "request to" if request else "answer from"
        obj = ""
        if msg.dlc >= 4:
            cs = data[0] >> 5
            where = f"0x{int.from_bytes(data[1:3], 'little'):04X}:{data[3]}"
            names = (
                {1: "write of", 2: "read of", 4: "abort of"}
                if request
                else {
                    3: "write of",
                    2: "read of",
                    4: "abort of",
                }
            )
            name = names.get(cs)
            if name is not None:
                obj = f" ({name} {where})"
        return (
            f"SDO {what} node {self.nodes[i]} on COB-ID 0x{cob:03X}{obj} after set-up: another SDO "
            "client is on the drive (this master sends no SDO once running)"
        )

    def all_enabled(self) -> bool:
        """True when every drive reports OPERATION ENABLED with feedback from this cycle."""
        return all(fb.state is DriveState.OPERATION_ENABLED and fb.age_cycles == 0 for fb in self._fb)

    def shutdown(self, *, cycles: int | None = None) -> None:
        """Quick-stop every drive, then bring each to SWITCH ON DISABLED, or raise naming each
        drive that did not get there and why (after all were tried).

        Runs the cyclic exchange itself (never call it between ``read`` and ``write`` of a running
        cycle). A drive found pre-operational, stopped or rebooted is started first (NMT start:
        its CiA 402 state does not change, but it takes RPDOs again). Then ``cycles`` quick-stop cycles
        (default: long enough for the slowest axis' ramp from max speed, at least 3), then up to
        ``SHUTDOWN_DISABLE_CYCLES`` disable-voltage cycles until every drive reports SWITCH ON
        DISABLED in a TPDO1. A drive in FAULT counts as off too (torque-free; its fault stays
        latched for the record: shutdown never resets a fault).
        Before set-up completed, a drive that sends no TPDO1 and is pre-operational counts as off
        (it was never started).
        """
        period = 1.0 / self._cycle_cfg.rate_hz
        if cycles is None:
            ramp = max(d.max_speed / d.quick_stop_decel for d in self._drives)
            cycles = max(3, math.ceil(ramp / period) + 2)
        errors: list[str] = []
        started = self._running
        if started:
            for i, nid in enumerate(self.nodes):
                # a drive that rebooted (boot-up) is pre-operational too
                if self.nmt_state[i] in (pdo.NMT_PRE_OPERATIONAL, pdo.NMT_STOPPED, pdo.NMT_BOOTUP):
                    try:
                        self._bus.send(
                            can.Message(
                                arbitration_id=pdo.NMT_COB,
                                data=bytes([_NMT_START, nid]),
                                is_extended_id=False,
                            )
                        )
                    except (can.CanError, OSError) as exc:
                        errors.append(f"node {nid} ({self.axes[i]}): NMT start not sent: {exc}")
        n = len(self._fb)
        confirmed = [False] * n
        for goal, count in ((DriveGoal.QUICK_STOP, cycles), (DriveGoal.DISABLED, SHUTDOWN_DISABLE_CYCLES)):
            for cmd in self._cmd:
                cmd.goal = goal
            for _ in range(count):
                self._shutdown_cycle(period, errors)
                if goal is not DriveGoal.DISABLED:
                    continue
                for i, fb in enumerate(self._fb):
                    if fb.age_cycles == 0:
                        confirmed[i] = fb.state in _TORQUE_OFF
                    elif not started and self._torque_off(i):
                        confirmed[i] = True
                if all(confirmed):
                    break
        for i, (axis, nid, fb) in enumerate(zip(self.axes, self.nodes, self._fb, strict=True)):
            if confirmed[i]:
                continue
            nmt = _NMT_NAMES.get(self.nmt_state[i], f"0x{self.nmt_state[i]:02X}")
            if fb.age_cycles > 0:
                why = f"no TPDO1 for {fb.age_cycles} cycles (last state {fb.state.name}, NMT {nmt})"
            else:
                why = f"reports {fb.state.name} (statusword 0x{fb.statusword:04X}, NMT {nmt})"
            errors.append(f"node {nid} ({axis}) did not confirm SWITCH ON DISABLED: {why}")
        self._running = False
        if errors:
            raise DriveError("shutdown incomplete: " + "; ".join(dict.fromkeys(errors)))

    def _torque_off(self, i: int) -> bool:
        """Before set-up completed: drive ``i`` holds no torque (disabled, faulted, or reset:
        a CiA 402 drive leaves reset in SWITCH ON DISABLED and sends no PDO)."""
        return self._fb[i].state in _TORQUE_OFF or self.nmt_state[i] in (
            pdo.NMT_BOOTUP,
            pdo.NMT_PRE_OPERATIONAL,
            pdo.NMT_STOPPED,  # only ever by an escalation, which disabled its voltage first
        )

    def _shutdown_cycle(self, period: float, errors: list[str]) -> None:
        try:
            if self._kernel is not None:
                self.read(self._kernel.time + period, None)
            else:
                start = time.perf_counter()
                # cycle time runs on from the last cycle (frames of the stop are stamped in it)
                self.read(self.feedback.t + period, start + period * self._cycle_cfg.tpdo_deadline)
        except (can.CanError, OSError) as exc:
            errors.append(f"SYNC/TPDO exchange failed: {exc}")
        for i, msg in enumerate(self._rpdo):
            try:
                fb, cmd = self._fb[i], self._cmd[i]
                cw = next_controlword(fb.state, cmd.goal, reset_phase=False)
                pdo.encode_rpdo1(msg.data, cw, self._actual_counts[i])
                self.last_controlword[i] = cw
                self._bus.send(msg)
                if self.tap is not None:
                    self.tap(msg, self._stamp(), False)
            except (can.CanError, OSError) as exc:
                errors.append(f"node {self.nodes[i]} ({self.axes[i]}): RPDO1 not sent: {exc}")
        if self._kernel is None:
            try:
                self.wait_until(time.perf_counter() + period * (1.0 - self._cycle_cfg.tpdo_deadline))
            except (can.CanError, OSError) as exc:
                errors.append(f"bus receive failed: {exc}")

    def wait_until(self, deadline: float) -> None:
        """Real time: block on the bus until the ``time.perf_counter()`` value ``deadline``.

        Frames that arrive are handled as in :meth:`read` (late TPDO1s update feedback, service
        frames are queued). The last ``cycle.busy_wait_us`` before the deadline poll the bus instead
        of blocking, because an OS wake-up from a blocking receive is late by up to a scheduler tick.
        On the simulated-time bus nothing is queued between cycles and this returns at once.
        """
        if self._kernel is not None:
            return
        perf = time.perf_counter
        recv = self._bus.recv
        spin_from = deadline - self._cycle_cfg.busy_wait_us * 1e-6
        while (now := perf()) < spin_from:
            msg = recv(spin_from - now)
            if msg is not None:
                self._take(msg)
                if self.tap is not None:
                    self.tap(msg, self._stamp(), True)
        while perf() < deadline:
            msg = recv(0.0)
            if msg is not None:
                self._take(msg)
                if self.tap is not None:
                    self.tap(msg, self._stamp(), True)


def _joined(failures: Sequence[DriveError]) -> DriveError:
    """One exception for every drive's failure: their common class, else DriveSetupError."""
    if len(failures) == 1:
        return failures[0]
    kinds = {type(f) for f in failures}
    cls = kinds.pop() if len(kinds) == 1 else DriveSetupError
    return cls("\n".join(str(f) for f in failures))


class _SetupScope:
    """Feeds set-up frames to the listener: a Notifier thread on a real bus, the hook on the sim bus."""

    def __init__(self, bus: can.BusABC, listener: _SetupListener, kernel: SimKernel | None) -> None:
        self._bus = bus
        self._listener = listener
        self._kernel = kernel
        self._notifier: can.Notifier | None = None
        self._fn = listener.on_message_received  # one bound method, so remove_listener finds it

    def __enter__(self) -> _SetupScope:
        if self._kernel is not None:
            self._kernel.add_listener(self._fn)
        else:
            try:
                self._notifier = can.Notifier(self._bus, [self._listener], timeout=0.05)
            except (can.CanError, ValueError) as exc:
                raise BusError(f"cannot listen on {self._bus.channel_info}: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self._kernel is not None:
            self._kernel.remove_listener(self._fn)
        elif self._notifier is not None:
            self._notifier.stop()
