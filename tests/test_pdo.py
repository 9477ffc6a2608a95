"""PDO codecs and COB-IDs (CiA 301 predefined connection set)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_iface import pdo


def test_cob_ids() -> None:
    assert pdo.SYNC_COB == 0x080
    assert pdo.NMT_COB == 0x000
    assert pdo.rpdo1_cob(1) == 0x201
    assert pdo.tpdo1_cob(6) == 0x186
    assert pdo.heartbeat_cob(127) == 0x77F
    assert pdo.emcy_cob(4) == 0x084
    assert pdo.sdo_rx_cob(3) == 0x603
    assert pdo.sdo_tx_cob(3) == 0x583
    assert pdo.node_of(0x186) == 6


@pytest.mark.parametrize("node", [0, 128, -1])
def test_cob_rejects_bad_node(node: int) -> None:
    with pytest.raises(ValueError, match=r"node_id \(=.*\) must be in \[1\.\.\.127\]"):
        pdo.rpdo1_cob(node)


def test_rpdo1_bytes() -> None:
    # controlword 0x000F, target 1000 counts = 0x3E8, little-endian, DLC 6
    buf = bytearray(pdo.RPDO1_DLC)
    pdo.encode_rpdo1(buf, 0x000F, 1000)
    assert bytes(buf) == bytes([0x0F, 0x00, 0xE8, 0x03, 0x00, 0x00])
    pdo.encode_rpdo1(buf, 0x0006, -1)
    assert bytes(buf) == bytes([0x06, 0x00, 0xFF, 0xFF, 0xFF, 0xFF])
    assert pdo.RPDO1_DLC == 6


def test_tpdo1_bytes() -> None:
    buf = bytearray(pdo.TPDO1_DLC)
    pdo.encode_tpdo1(buf, 0x1237, -2000, -150)
    assert bytes(buf) == bytes([0x37, 0x12, 0x30, 0xF8, 0xFF, 0xFF, 0x6A, 0xFF])
    assert pdo.TPDO1.unpack(buf) == (0x1237, -2000, -150)
    assert pdo.TPDO1_DLC == 8


def test_encode_reuses_buffer_and_clamps() -> None:
    buf = bytearray(6)
    ident = id(buf)
    pdo.encode_rpdo1(buf, 0x0F, 2**40)
    assert id(buf) == ident
    assert pdo.RPDO1.unpack(buf) == (0x0F, 2**31 - 1)
    pdo.encode_rpdo1(buf, 0x0F, -(2**40))
    assert pdo.RPDO1.unpack(buf) == (0x0F, -(2**31))
    tbuf = bytearray(8)
    pdo.encode_tpdo1(tbuf, 0x0237, 0, 10**6)
    assert pdo.TPDO1.unpack(tbuf)[2] == 2**15 - 1


@given(cw=st.integers(0, 0xFFFF), target=st.integers(-(2**31), 2**31 - 1))
def test_rpdo1_round_trip(cw: int, target: int) -> None:
    buf = bytearray(pdo.RPDO1_DLC)
    pdo.encode_rpdo1(buf, cw, target)
    assert pdo.RPDO1.unpack(buf) == (cw, target)


@given(sw=st.integers(0, 0xFFFF), pos=st.integers(-(2**31), 2**31 - 1), tq=st.integers(-(2**15), 2**15 - 1))
def test_tpdo1_round_trip(sw: int, pos: int, tq: int) -> None:
    buf = bytearray(pdo.TPDO1_DLC)
    pdo.encode_tpdo1(buf, sw, pos, tq)
    assert pdo.TPDO1.unpack(buf) == (sw, pos, tq)


def test_emcy_layout() -> None:
    code, reg, manuf = pdo.EMCY.unpack(bytes([0x11, 0x86, 0x80, 1, 2, 3, 4, 5]))
    assert (code, reg, manuf) == (0x8611, 0x80, bytes([1, 2, 3, 4, 5]))
    assert pdo.EMCY_DLC == 8
