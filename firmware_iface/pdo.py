"""Codecs and COB-IDs of the frames whih exchanges (CiA 301 predefined connection set).

The cyclic frames use precompiled :class:`struct.Struct` objects and ``pack_into`` on buffers the
caller allocated once, so encoding allocates nothing per cycle. Everything is little-endian, as
CANopen requires.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "EMCY",
    "EMCY_DLC",
    "HEARTBEAT_DLC",
    "NMT_BOOTUP",
    "NMT_COB",
    "NMT_OPERATIONAL",
    "NMT_PRE_OPERATIONAL",
    "NMT_STOPPED",
    "RPDO1",
    "RPDO1_DLC",
    "SYNC_COB",
    "TPDO1",
    "TPDO1_DLC",
    "clamp_i16",
    "clamp_i32",
    "emcy_cob",
    "encode_rpdo1",
    "encode_tpdo1",
    "heartbeat_cob",
    "node_of",
    "rpdo1_cob",
    "sdo_rx_cob",
    "sdo_tx_cob",
    "tpdo1_cob",
]

RPDO1: Final = struct.Struct("<Hi")
"""RPDO1 payload: controlword (0x6040, u16), target position (0x607A, i32 counts)."""
RPDO1_DLC: Final = RPDO1.size
TPDO1: Final = struct.Struct("<Hih")
"""TPDO1 payload: statusword (0x6041, u16), position actual (0x6064, i32), torque actual (0x6077, i16)."""
TPDO1_DLC: Final = TPDO1.size
EMCY: Final = struct.Struct("<HB5s")
"""EMCY payload: error code (u16), error register (0x1001, u8), manufacturer-specific bytes."""
EMCY_DLC: Final = EMCY.size
HEARTBEAT_DLC: Final = 1

NMT_COB: Final = 0x000
SYNC_COB: Final = 0x080

# Heartbeat payload: the producer's NMT state (CiA 301 7.2.8.3.2.2).
NMT_BOOTUP: Final = 0x00
NMT_STOPPED: Final = 0x04
NMT_OPERATIONAL: Final = 0x05
NMT_PRE_OPERATIONAL: Final = 0x7F

_I32_MIN: Final = -(2**31)
_I32_MAX: Final = 2**31 - 1
_I16_MIN: Final = -(2**15)
_I16_MAX: Final = 2**15 - 1


def _check_node(node_id: int) -> int:
    if not 1 <= node_id <= 127:
        raise ValueError(f"node_id (={node_id}) must be in [1...127]")
    return node_id


def rpdo1_cob(node_id: int) -> int:
    """COB-ID of RPDO1 (master to drive): 0x200 + node id."""
    return 0x200 + _check_node(node_id)


def tpdo1_cob(node_id: int) -> int:
    """COB-ID of TPDO1 (drive to master): 0x180 + node id."""
    return 0x180 + _check_node(node_id)


def heartbeat_cob(node_id: int) -> int:
    """COB-ID of a node's heartbeat / boot-up: 0x700 + node id."""
    return 0x700 + _check_node(node_id)


def emcy_cob(node_id: int) -> int:
    """COB-ID of a node's EMCY: 0x080 + node id."""
    return 0x080 + _check_node(node_id)


def sdo_rx_cob(node_id: int) -> int:
    """COB-ID of SDO requests to a node (client to server): 0x600 + node id."""
    return 0x600 + _check_node(node_id)


def sdo_tx_cob(node_id: int) -> int:
    """COB-ID of a node's SDO responses (server to client): 0x580 + node id."""
    return 0x580 + _check_node(node_id)


def node_of(cob_id: int) -> int:
    """The node id a predefined-connection-set COB-ID carries (its low 7 bits)."""
    return cob_id & 0x7F


def clamp_i32(value: int) -> int:
    """``value`` saturated to the signed 32-bit range (a position never wraps around)."""
    return _I32_MIN if value < _I32_MIN else _I32_MAX if value > _I32_MAX else value


def clamp_i16(value: int) -> int:
    """``value`` saturated to the signed 16-bit range."""
    return _I16_MIN if value < _I16_MIN else _I16_MAX if value > _I16_MAX else value


def encode_rpdo1(buf: bytearray, controlword: int, target_counts: int) -> None:
    """Write an RPDO1 payload into ``buf`` (at least 6 bytes); the target is clamped to i32."""
    RPDO1.pack_into(buf, 0, controlword & 0xFFFF, clamp_i32(target_counts))


def encode_tpdo1(buf: bytearray, statusword: int, position_counts: int, torque: int) -> None:
    """Write a TPDO1 payload into ``buf`` (at least 8 bytes); position/torque clamped to i32/i16."""
    TPDO1.pack_into(buf, 0, statusword & 0xFFFF, clamp_i32(position_counts), clamp_i16(torque))
