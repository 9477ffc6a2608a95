"""``whih probe``: who is on the bus, and can each configured drive run the whih cycle?

Read-only by design: the probe sends SDO uploads (0x1000 device type, 0x1018 identity, 0x6502
supported drive modes) and listens for heartbeats. It sends no NMT command, no SYNC, no PDO and
writes no object, so it can run next to anything, including a rig that is moving.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import can
import canopen
from canopen.sdo.exceptions import SdoAbortedError, SdoCommunicationError

from firmware_iface.bus import SIM_INTERFACE, open_bus
from firmware_iface.od import DriveDictionary, Identity
from firmware_iface.plan import SetupPlan, plan_system
from whih_control.config import Config

__all__ = ["NodeReport", "ProbeResult", "probe"]

_NMT_NAMES = {0x00: "boot-up", 0x04: "stopped", 0x05: "operational", 0x7F: "pre-operational"}
_CSP_BIT = 1 << 7


@dataclass(slots=True)
class NodeReport:
    """What the probe learnt about one node id."""

    node_id: int
    axis: str | None
    """The configured axis on this node id, None for a node the config does not name."""
    answered: bool = False
    identity: Identity | None = None
    nmt: str = "no heartbeat heard"
    eds_match: str = ""
    capability: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """A configured node that answered, matches its EDS/DCF and can run the cycle."""
        return self.answered and not self.problems

    def lines(self) -> list[str]:
        """Human-readable lines for the terminal."""
        name = f"node {self.node_id} ({self.axis or 'not configured'})"
        if not self.answered:
            return [f"{name}: no answer"]
        assert self.identity is not None
        out = [f"{name}: {self.identity.describe()}", f"  NMT: {self.nmt}"]
        if self.eds_match:
            out.append(f"  EDS: {self.eds_match}")
        if self.capability:
            out.append(f"  capability: {self.capability}")
        out += [f"  problem: {p}" for p in self.problems]
        return out


@dataclass(slots=True)
class ProbeResult:
    """Every node the probe looked at, in node id order."""

    nodes: list[NodeReport]

    @property
    def answered(self) -> list[NodeReport]:
        """Nodes that answered an SDO upload."""
        return [n for n in self.nodes if n.answered]

    @property
    def ok(self) -> bool:
        """Every configured node answered, matches its file and can run the cycle."""
        return all(n.ok for n in self.nodes if n.axis is not None) and bool(self.answered)


class _Feed(can.Listener):
    def __init__(self, network: canopen.Network, beats: dict[int, int]) -> None:
        self._network = network
        self._beats = beats

    def on_message_received(self, msg: can.Message) -> None:
        if msg.is_error_frame or msg.is_remote_frame or msg.is_extended_id:
            return
        cob = msg.arbitration_id
        if 0x701 <= cob <= 0x77F and msg.dlc == 1:
            self._beats[cob - 0x700] = msg.data[0] & 0x7F
        self._network.notify(cob, msg.data, msg.timestamp)


@contextmanager
def _probe_bus(cfg: Config) -> Iterator[can.BusABC]:
    """The configured bus; with ``sim.enabled``, the simulated drives on a private virtual channel
    (served from a thread in real time, as ``whih run --realtime`` does)."""
    with ExitStack() as stack:
        if cfg.sim.enabled:
            from firmware_iface.sim import SimulatedDrives  # noqa: PLC0415  (only for simulation)

            bus_cfg = cfg.bus
            if bus_cfg.interface == SIM_INTERFACE:
                bus_cfg = dataclasses.replace(
                    bus_cfg, interface="virtual", channel=f"whih-probe-{os.getpid()}"
                )
            drives_bus = open_bus(bus_cfg)
            stack.callback(drives_bus.shutdown)
            drives = SimulatedDrives(cfg.replace(bus=bus_cfg), drives_bus)
            drives.start()
            stack.callback(drives.stop)
            bus = open_bus(bus_cfg)
        else:
            bus = open_bus(cfg.bus)
        stack.callback(bus.shutdown)
        yield bus


def _scan(bus: can.BusABC, node_ids: list[int], window: float) -> set[int]:
    """Send an SDO upload of 0x1000 to every node id at once; the ids that answered."""
    for nid in node_ids:
        bus.send(
            can.Message(
                arbitration_id=0x600 + nid,
                data=bytes([0x40, 0x00, 0x10, 0, 0, 0, 0, 0]),
                is_extended_id=False,
            )
        )
    wanted = {0x580 + nid for nid in node_ids}
    found: set[int] = set()
    end = time.monotonic() + window
    while (left := end - time.monotonic()) > 0 and len(found) < len(node_ids):
        msg = bus.recv(left)
        if msg is not None and msg.arbitration_id in wanted and not msg.is_remote_frame:
            found.add(msg.arbitration_id - 0x580)
    return found


def _upload(node: canopen.RemoteNode, index: int, sub: int) -> int | None:
    try:
        return int.from_bytes(node.sdo.upload(index, sub)[:4], "little")
    except (SdoAbortedError, SdoCommunicationError):
        return None


def probe(cfg: Config, *, all_nodes: bool = False, listen_s: float | None = None) -> ProbeResult:
    """Scan the configured node ids (``all_nodes``: 1..127) and report on each (module docstring).

    ``listen_s``: how long to listen for heartbeats (default: twice the slowest configured
    drive heartbeat, at least 0.2 s).
    """
    by_node = {d.node_id: axis for axis, d in cfg.drives.items()}
    ids = list(range(1, 128)) if all_nodes else sorted(by_node)
    ids = [n for n in ids if n != cfg.bus.master_node_id]
    listen = (
        listen_s
        if listen_s is not None
        else max(0.2, max(d.heartbeat_ms for d in cfg.drives.values()) * 2e-3)
    )
    plans, plan_problems = plan_system(cfg)
    reports = {n: NodeReport(n, by_node.get(n)) for n in ids}
    with _probe_bus(cfg) as bus:
        found = _scan(bus, ids, max(listen, cfg.bus.sdo_timeout_s))
        beats: dict[int, int] = {}
        network = canopen.Network(bus)
        notifier = can.Notifier(bus, [_Feed(network, beats)], timeout=0.05)
        try:
            start = time.monotonic()
            for nid in sorted(found):
                report = reports[nid]
                report.answered = True
                node = canopen.RemoteNode(nid, canopen.ObjectDictionary())  # type: ignore[no-untyped-call]
                network.add_node(node)
                node.sdo.RESPONSE_TIMEOUT = cfg.bus.sdo_timeout_s
                report.identity = Identity(*(_upload(node, 0x1018, sub) for sub in (1, 2, 3, 4)))
                if report.axis is not None:
                    _check_configured(cfg, report, node, plans, plan_problems)
            time.sleep(max(0.0, listen - (time.monotonic() - start)))  # heartbeats are periodic
        finally:
            notifier.stop()
    for nid, state in beats.items():
        if nid in reports and reports[nid].answered:
            reports[nid].nmt = _NMT_NAMES.get(state, f"0x{state:02X}")
    for report in reports.values():
        if report.answered and report.nmt == "no heartbeat heard":
            report.nmt = "answers SDO (pre-operational or operational); no heartbeat heard"
    shown = [r for r in reports.values() if r.answered or r.axis is not None]
    return ProbeResult(shown)


def _check_configured(
    cfg: Config,
    report: NodeReport,
    node: canopen.RemoteNode,
    plans: Mapping[str, SetupPlan],
    plan_problems: list[str],
) -> None:
    axis = report.axis
    assert axis is not None and report.identity is not None
    drive = cfg.drives[axis]
    try:
        expected = DriveDictionary.load(drive.eds, drive.node_id).identity()
    except (OSError, ValueError, KeyError) as exc:
        report.problems.append(f"cannot load {drive.eds}: {exc}")
        return
    name = Path(drive.eds).name
    wrong = [
        f"{what} 0x{got:08X} (file: 0x{want:08X})"
        for what, got, want in (
            ("vendor", report.identity.vendor, expected.vendor),
            ("product", report.identity.product, expected.product),
        )
        if want is not None and got is not None and got != want
    ]
    if wrong:
        report.eds_match = f"{name}: differs: {', '.join(wrong)}"
        if not drive.accept_identity_mismatch:
            report.problems.append(f"identity differs from {name} (set-up would refuse to enable)")
    else:
        report.eds_match = f"{name}: vendor and product match"
    mine = [p for p in plan_problems if p.startswith((f"drives.{axis}:", f"drives.{axis}."))]
    report.problems += mine
    modes = _upload(node, 0x6502, 0)
    if modes is None:
        report.problems.append("0x6502 supported drive modes cannot be read")
    elif not modes & _CSP_BIT:
        report.problems.append(f"0x6502 supported drive modes = 0x{modes:X}: no CSP (mode 8)")
    if not report.problems:
        plan = plans.get(axis)
        notes = len(plan.notes) if plan is not None else 0
        report.capability = (
            f"ok: CSP supported (0x6502 = 0x{modes or 0:X}), every set-up value within {name}"
            + (f" ({notes} note(s): see whih check-config)" if notes else "")
        )
    else:
        report.capability = "cannot run the whih cycle as configured"
