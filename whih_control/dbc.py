"""A DBC of the configured cyclic frames, for cantools, SavvyCAN and Vector tools.

Built with ``cantools`` (its database objects, then its DBC dumper), so the file is what those
tools expect and loads back in cantools' strict mode. It describes the predefined connection set
the master uses (docs/DESIGN.md section 3): SYNC; per drive RPDO1 (controlword, target
position), TPDO1 (statusword, position actual, torque actual), EMCY and heartbeat; the master's
own heartbeat. Positions are scaled from counts to the axis unit (mm or deg) by
``1 / counts_per_unit``; torque actual is raw (per mille of rated torque) with the axial force
factor in the signal's comment.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from cantools.database.can import Database, Message, Node, Signal
from cantools.database.conversion import BaseConversion
from cantools.database.namedsignalvalue import NamedSignalValue

from firmware_iface.pdo import (
    EMCY_DLC,
    HEARTBEAT_DLC,
    NMT_BOOTUP,
    NMT_OPERATIONAL,
    NMT_PRE_OPERATIONAL,
    NMT_STOPPED,
    RPDO1_DLC,
    SYNC_COB,
    TPDO1_DLC,
    emcy_cob,
    heartbeat_cob,
    rpdo1_cob,
    tpdo1_cob,
)
from whih_control.config import Config

__all__ = ["MASTER_NODE", "build_database", "dbc_text", "message_name", "write_dbc"]

MASTER_NODE = "whih_master"
"""Name of the master in the DBC's node list (drives are named by their axis id)."""

_NMT_STATES: dict[int, str | NamedSignalValue] = {
    NMT_BOOTUP: "boot_up",
    NMT_STOPPED: "stopped",
    NMT_OPERATIONAL: "operational",
    NMT_PRE_OPERATIONAL: "pre_operational",
}


def message_name(kind: str, axis: str) -> str:
    """The DBC message name of ``kind`` (``RPDO1``, ``TPDO1``, ``EMCY``, ``HB``) for ``axis``."""
    return f"{kind}_{axis}"


def _raw(name: str, start: int, length: int, *, signed: bool = False, comment: str = "") -> Signal:
    lo, hi = (-(2 ** (length - 1)), 2 ** (length - 1) - 1) if signed else (0, 2**length - 1)
    return Signal(name, start, length, is_signed=signed, minimum=lo, maximum=hi, comment=comment or None)


def _scaled(name: str, start: int, length: int, scale: float, unit: str, comment: str) -> Signal:
    conversion = BaseConversion.factory(scale=scale, offset=0.0, choices=None, is_float=False)
    return Signal(
        name,
        start,
        length,
        is_signed=True,
        conversion=conversion,
        minimum=-(2 ** (length - 1)) * scale,
        maximum=(2 ** (length - 1) - 1) * scale,
        unit=unit,
        comment=comment,
    )


def _heartbeat(frame_id: int, name: str, sender: str, cycle_ms: int) -> Message:
    state = Signal(
        "nmt_state",
        0,
        7,
        conversion=BaseConversion.factory(
            scale=1, offset=0, choices=OrderedDict(_NMT_STATES), is_float=False
        ),
        comment="NMT state of the producer (CiA 301)",
    )
    toggle = _raw("toggle", 7, 1, comment="node guarding toggle bit (0 in heartbeats)")
    return Message(frame_id, name, HEARTBEAT_DLC, [state, toggle], senders=[sender], cycle_time=cycle_ms)


def build_database(cfg: Config) -> Database:
    """The cantools database of ``cfg``'s cyclic frames (one node per configured drive)."""
    period_ms = round(cfg.period * 1e3) or 1  # DBC cycle times are whole milliseconds
    drives = cfg.drives
    axes = list(drives)
    sync_signals = [_raw("counter", 0, 8, comment="SYNC counter (0x1019)")] if cfg.cycle.sync_counter else []
    messages = [
        Message(
            SYNC_COB,
            "SYNC",
            1 if cfg.cycle.sync_counter else 0,
            sync_signals,
            senders=[MASTER_NODE],
            cycle_time=period_ms,
            # the cycle time attribute is whole ms: the exact period is in the comment
            comment=f"SYNC from the master every cycle ({cfg.cycle.rate_hz:g} Hz, {cfg.period * 1e3:g} ms)",
        ),
        _heartbeat(
            heartbeat_cob(cfg.bus.master_node_id),
            "HB_master",
            MASTER_NODE,
            cfg.bus.master_heartbeat_ms,
        ),
    ]
    for axis, d in drives.items():
        unit = "mm" if d.kind == "linear" else "deg"
        scale = 1.0 / d.counts_per_unit
        messages.append(
            Message(
                rpdo1_cob(d.node_id),
                message_name("RPDO1", axis),
                RPDO1_DLC,
                [
                    _raw("controlword", 0, 16, comment="0x6040 controlword"),
                    _scaled(
                        "target_position",
                        16,
                        32,
                        scale,
                        unit,
                        f"0x607A target position, {d.counts_per_unit:g} counts/{unit}",
                    ),
                ],
                senders=[MASTER_NODE],
                cycle_time=period_ms,
                comment=f"{axis}: cyclic synchronous position target, sent after each SYNC",
            )
        )
        messages.append(
            Message(
                tpdo1_cob(d.node_id),
                message_name("TPDO1", axis),
                TPDO1_DLC,
                [
                    _raw("statusword", 0, 16, comment="0x6041 statusword"),
                    _scaled(
                        "position_actual",
                        16,
                        32,
                        scale,
                        unit,
                        f"0x6064 position actual, {d.counts_per_unit:g} counts/{unit}",
                    ),
                    _raw(
                        "torque_actual",
                        48,
                        16,
                        signed=True,
                        comment=(
                            "0x6077 torque actual, per mille of rated torque; "
                            f"axial force = {d.force_per_torque:g} N per unit"
                        ),
                    ),
                ],
                senders=[axis],
                cycle_time=period_ms,
                comment=f"{axis}: feedback, transmission type 1 (every SYNC)",
            )
        )
        messages.append(
            Message(
                emcy_cob(d.node_id),
                message_name("EMCY", axis),
                EMCY_DLC,
                [
                    _raw("error_code", 0, 16, comment="CiA 301 emergency error code (0 = error reset)"),
                    _raw("error_register", 16, 8, comment="0x1001 error register"),
                    _raw("manufacturer", 24, 40, comment="manufacturer-specific error field"),
                ],
                senders=[axis],
                comment=f"{axis}: emergency",
            )
        )
        messages.append(_heartbeat(heartbeat_cob(d.node_id), message_name("HB", axis), axis, d.heartbeat_ms))
    nodes = [Node(MASTER_NODE, comment="whih master (SYNC, RPDOs, heartbeat)")]
    nodes += [Node(axis, comment=f"CiA 402 drive, node {drives[axis].node_id}") for axis in axes]
    rpdo_receiver = {rpdo1_cob(d.node_id): axis for axis, d in drives.items()}
    for msg in messages:
        if msg.frame_id in rpdo_receiver:
            receivers = [rpdo_receiver[msg.frame_id]]
        elif msg.senders == [MASTER_NODE]:
            receivers = axes  # SYNC and the master's heartbeat: every drive consumes them
        else:
            receivers = [MASTER_NODE]
        for sig in msg.signals:
            sig.receivers = list(receivers)
    return Database(messages=messages, nodes=nodes, version="")


def dbc_text(cfg: Config) -> str:
    """The DBC file's text for ``cfg``."""
    return str(build_database(cfg).as_dbc_string())


def write_dbc(cfg: Config, path: Path) -> None:
    """Write the DBC of ``cfg`` to ``path``."""
    path.write_text(dbc_text(cfg), encoding="utf-8", newline="")  # the dumper's CRLF, as Vector writes
