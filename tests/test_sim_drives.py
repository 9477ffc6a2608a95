"""Simulated CiA 402 drives on the simulated-time bus, driven by scripted frames."""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import can
import canopen
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_iface import pdo
from firmware_iface.check import check_drive
from firmware_iface.cia402 import DriveState, decode_statusword
from firmware_iface.sim import MOTOR_HEADROOM, SimulatedDrives
from firmware_iface.simbus import SimTimeBus
from firmware_iface.spec import BUILTIN_EDS_DIR, BusConfig, CycleConfig, DriveConfig
from whih_control import load_config

from .conftest import CONFIGS

MASTER = 127


@dataclass(frozen=True)
class System:
    """A minimal DriveSystem for tests that need only a few axes."""

    bus: BusConfig = field(default_factory=BusConfig)
    cycle: CycleConfig = field(default_factory=CycleConfig)
    drives: Mapping[str, DriveConfig] = field(
        default_factory=lambda: MappingProxyType({"ante_wire": DriveConfig(node_id=1)})
    )


class ConstantLoad:
    """A plant that pushes back with a settable force on every axis and records its calls."""

    def __init__(self, force: float = 0.0) -> None:
        self.force = force
        self.calls: list[tuple[float, float, dict[str, float]]] = []

    def step(self, t: float, dt: float, insertion: Mapping[str, float]) -> Mapping[str, float]:
        self.calls.append((t, dt, dict(insertion)))
        return {axis: self.force for axis in insertion}


class Rig:
    """A master written as plain frames (the way canopen's own tests script the protocol)."""

    def __init__(self, system: object | None = None, *, load: object | None = None, seed: int = 0) -> None:
        self.system = system if system is not None else load_config(CONFIGS / "sim.toml")
        self.period = 1.0 / self.system.cycle.rate_hz  # type: ignore[attr-defined]
        self.bus = SimTimeBus(period=self.period)
        self.sim = SimulatedDrives(self.system, self.bus, load=load, seed=seed)  # type: ignore[arg-type]
        self.log: list[can.Message] = []
        self.cw: dict[int, int] = {}
        self.target: dict[int, int] = {}
        self.master_hb = True
        self.master_rpdo = True
        self._hb_every = max(1, round(self.system.bus.master_heartbeat_ms / 1e3 / self.period))  # type: ignore[attr-defined]

    def __enter__(self) -> Rig:
        self.sim.start()
        self.drain()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sim.stop()
        self.bus.shutdown()

    def nodes(self) -> list[int]:
        return [d.node_id for d in self.sim]

    def send(self, cob: int, data: Iterable[int] | bytes = b"") -> None:
        self.bus.send(can.Message(arbitration_id=cob, data=bytes(data), is_extended_id=False))

    def drain(self) -> list[can.Message]:
        out = []
        while (msg := self.bus.recv()) is not None:
            out.append(msg)
        self.log.extend(out)
        return out

    def sdo_write(self, node: int, index: int, sub: int, value: int, size: int) -> bytes:
        cmd = 0x23 | ((4 - size) << 2)
        payload = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little").ljust(4, b"\0")
        self.send(0x600 + node, struct.pack("<BHB", cmd, index, sub) + payload)
        resp = [m for m in self.drain() if m.arbitration_id == 0x580 + node]
        assert len(resp) == 1
        return bytes(resp[0].data)

    def sdo_ok(self, node: int, index: int, sub: int, value: int, size: int) -> None:
        resp = self.sdo_write(node, index, sub, value, size)
        assert resp[0] == 0x60, f"SDO write 0x{index:04X}:{sub} aborted: 0x{resp[4:8][::-1].hex()}"

    def sdo_read(self, node: int, index: int, sub: int = 0, *, signed: bool = False) -> int:
        self.send(0x600 + node, struct.pack("<BHB", 0x40, index, sub) + b"\0" * 4)
        resp = [m for m in self.drain() if m.arbitration_id == 0x580 + node]
        assert len(resp) == 1 and resp[0].data[0] & 0xE0 == 0x40, resp
        n = 4 - ((resp[0].data[0] >> 2) & 3)
        return int.from_bytes(resp[0].data[4 : 4 + n], "little", signed=signed)

    def configure(self, node: int, *, qs_option: int = 2, abort_option: int = 3) -> None:
        """What the master does at set-up, as docs/DESIGN.md describes it."""
        cfg = next(d.config for d in self.sim if d.node_id == node)
        cpu = cfg.counts_per_unit
        self.sdo_ok(node, 0x1017, 0, cfg.heartbeat_ms, 2)
        self.sdo_ok(node, 0x1016, 1, (MASTER << 16) | self.system.bus.master_heartbeat_timeout_ms, 4)  # type: ignore[attr-defined]
        self.sdo_ok(node, 0x6007, 0, abort_option, 2)
        self.sdo_ok(node, 0x605A, 0, qs_option, 2)
        self.sdo_ok(node, 0x6085, 0, round(cfg.quick_stop_decel * cpu), 4)
        self.sdo_ok(node, 0x607D, 1, round(cfg.travel_min * cpu), 4)
        self.sdo_ok(node, 0x607D, 2, round(cfg.travel_max * cpu), 4)
        self.sdo_ok(node, 0x6065, 0, round(cfg.following_error_window * cpu), 4)
        self.sdo_ok(node, 0x6066, 0, cfg.following_error_timeout_ms, 2)
        self.sdo_ok(node, 0x6060, 0, 8, 1)

    def map_design_layout(self, node: int) -> None:
        """RPDO1 = controlword + target, TPDO1 = statusword + position + torque (docs/DESIGN.md section 3)."""
        for comm, mapping, cob, entries in (
            (0x1400, 0x1600, 0x200 + node, (0x60400010, 0x607A0020)),
            (0x1800, 0x1A00, 0x180 + node, (0x60410010, 0x60640020, 0x60770010)),
        ):
            self.sdo_ok(node, comm, 1, cob | 0x80000000, 4)
            self.sdo_ok(node, mapping, 0, 0, 1)
            for sub, entry in enumerate(entries, start=1):
                self.sdo_ok(node, mapping, sub, entry, 4)
            self.sdo_ok(node, mapping, 0, len(entries), 1)
            self.sdo_ok(node, comm, 2, 1, 1)
            self.sdo_ok(node, comm, 1, cob, 4)

    def start_all(self, **kw: int) -> None:
        for n in self.nodes():
            self.map_design_layout(n)
            self.configure(n, **kw)
            self.cw[n] = 0
            self.target[n] = 0
        self.send(0, [0x01, 0])
        self.drain()

    def cycle(self) -> list[can.Message]:
        """SYNC, collect, then one RPDO1 per drive and the master heartbeat on its period."""
        self.send(pdo.SYNC_COB)
        out = self.drain()
        for n, cw in self.cw.items():
            if self.master_rpdo:
                self.send(0x200 + n, pdo.RPDO1.pack(cw, self.target[n]))
        if self.master_hb and self.bus.kernel.sync_count % self._hb_every == 0:
            self.send(0x700 + MASTER, [0x05])
        return out

    def run(self, n: int) -> list[can.Message]:
        out: list[can.Message] = []
        for _ in range(n):
            out += self.cycle()
        return out

    def enable(self, nodes: Iterable[int] | None = None) -> None:
        nodes = list(nodes) if nodes is not None else self.nodes()
        for cw in (0x06, 0x07, 0x0F):
            for n in nodes:
                self.cw[n] = cw
            self.cycle()
        self.cycle()
        for n in nodes:
            assert self.drive(n).state is DriveState.OPERATION_ENABLED

    def drive(self, node: int):  # type: ignore[no-untyped-def]
        return next(d for d in self.sim if d.node_id == node)


def tpdos(frames: Iterable[can.Message], node: int) -> list[tuple[int, int, int]]:
    return [pdo.TPDO1.unpack(bytes(m.data)) for m in frames if m.arbitration_id == 0x180 + node]


def emcys(frames: Iterable[can.Message], node: int) -> list[int]:
    return [pdo.EMCY.unpack(bytes(m.data))[0] for m in frames if m.arbitration_id == 0x80 + node]


# --- object dictionary ---------------------------------------------------------------------------


def test_shipped_eds_loads_and_passes_the_capability_check() -> None:
    eds = BUILTIN_EDS_DIR / "whih_sim_drive.eds"
    od = canopen.import_od(str(eds), 5)
    assert check_drive(eds).ok
    for index in (0x1000, 0x1001, 0x1016, 0x1017, 0x1018, 0x1400, 0x1600, 0x1800, 0x1A00, 0x6007,
                  0x603F, 0x605A, 0x6060, 0x6061, 0x6065, 0x6066, 0x6085, 0x6502):  # fmt: skip
        assert index in od, hex(index)
    assert od[0x6040].pdo_mappable and od[0x607A].pdo_mappable  # RPDO
    assert od[0x6041].pdo_mappable and od[0x6064].pdo_mappable and od[0x6077].pdo_mappable  # TPDO
    assert od[0x6502].default & 0x80  # CSP
    assert od[0x1A00][1].writable and od[0x1600][1].writable
    assert od[0x1800][1].default == 0x185 and od[0x1400][1].default == 0x205  # $NODEID resolved
    assert (od[0x607D][1].name, od[0x607D][2].name) == ("Min position limit", "Max position limit")


# --- NMT, SDO, heartbeat, PDO ---------------------------------------------------------------------


def test_boot_up_frames_then_pre_operational_and_switch_on_disabled() -> None:
    rig = Rig()
    with rig:
        boots = [(m.arbitration_id, bytes(m.data), m.timestamp) for m in rig.log]
        assert boots == [(0x700 + n, b"\x00", 0.0) for n in (1, 2, 3, 4, 5, 6)]
        for d in rig.sim:
            assert d.nmt_state == pdo.NMT_PRE_OPERATIONAL
            assert decode_statusword(rig.sdo_read(d.node_id, 0x6041)) is DriveState.SWITCH_ON_DISABLED
        # Pre-operational: SYNC produces no TPDO1.
        assert [m for m in rig.cycle() if 0x181 <= m.arbitration_id <= 0x1FF] == []


def test_sdo_reads_identity_and_csp_support_and_refuses_unknown_objects() -> None:
    with Rig() as rig:
        assert rig.sdo_read(3, 0x6502) & 0x80
        assert rig.sdo_read(3, 0x1000) & 0xFFFF == 402
        assert rig.sdo_read(3, 0x1400, 1) == 0x203
        resp = rig.sdo_write(3, 0x2000, 0, 1, 4)
        assert resp[0] == 0x80 and int.from_bytes(resp[4:8], "little") == 0x06020000
        resp = rig.sdo_write(3, 0x6041, 0, 1, 2)  # read-only
        assert resp[0] == 0x80 and int.from_bytes(resp[4:8], "little") == 0x06010002


def test_heartbeat_producer_runs_in_drive_time() -> None:
    with Rig() as rig:
        rig.sdo_ok(1, 0x1017, 0, 10, 2)
        frames = rig.run(40)  # 100 ms at 400 Hz
        beats = [m for m in frames if m.arbitration_id == 0x701]
        assert [round(m.timestamp, 6) for m in beats] == [round(0.01 * k, 6) for k in range(1, 11)]
        assert all(bytes(m.data) == bytes([pdo.NMT_PRE_OPERATIONAL]) for m in beats)
        assert not [m for m in frames if m.arbitration_id == 0x702]  # 0x1017 default 0: silent


def test_tpdo1_on_every_sync_once_operational_and_nmt_stop_silences_it() -> None:
    with Rig() as rig:
        rig.start_all()
        frames = rig.run(5)
        for n in rig.nodes():
            assert len(tpdos(frames, n)) == 5
        rig.send(0, [0x02, 2])
        frames = rig.run(3)
        assert tpdos(frames, 2) == [] and len(tpdos(frames, 1)) == 3


def test_csp_walk_to_operation_enabled_and_position_follows_target() -> None:
    with Rig() as rig:
        rig.start_all()
        rig.enable([1])
        sw = tpdos(rig.cycle(), 1)[-1][0]
        assert decode_statusword(sw) is DriveState.OPERATION_ENABLED
        # A ramp at 8 mm/s: the drive reports the previous cycle's target (one-cycle latency).
        step = round(8.0 * rig.period * 1000)
        seen = []
        for k in range(1, 201):
            rig.target[1] = k * step
            seen.append(tpdos(rig.cycle(), 1)[-1][1])
        assert seen[-1] == 199 * step
        assert all(abs(p - (k * step)) <= 1 for k, p in enumerate(seen[50:], start=50))


def test_no_motion_outside_csp_or_before_operation_enabled() -> None:
    with Rig() as rig:
        rig.start_all()
        rig.target[1] = 5000
        rig.run(20)
        assert rig.drive(1).insertion == 0.0  # not enabled
        rig.sdo_ok(1, 0x6060, 0, 1, 1)  # profile position: not simulated
        rig.enable([1])
        rig.run(20)
        assert rig.drive(1).insertion == 0.0


def test_fault_reset_only_on_the_rising_edge_of_bit_7() -> None:
    with Rig() as rig:
        rig.start_all()
        rig.enable([1])
        rig.cw[1] = 0x80  # held high before the fault: no edge later
        rig.cycle()
        rig.sim.inject("drive-fault:ante_wire@0")
        rig.run(3)
        assert rig.drive(1).state is DriveState.FAULT
        rig.cw[1] = 0x00
        rig.run(2)
        assert rig.drive(1).state is DriveState.FAULT
        rig.cw[1] = 0x80
        frames = rig.run(2)
        assert rig.drive(1).state is DriveState.SWITCH_ON_DISABLED
        assert emcys(frames, 1) == [0x0000]  # error reset
        assert rig.sdo_read(1, 0x603F) == 0


def test_master_heartbeat_loss_quick_stops_with_emcy_8130() -> None:
    with Rig() as rig:
        rig.start_all(qs_option=6)
        rig.enable()
        rig.run(10)
        # The master dies; SYNC keeps coming (from a separate SYNC producer) so time runs.
        rig.master_hb = False
        rig.master_rpdo = False
        lost_at = rig.sim.time
        frames = rig.run(60)
        for n in rig.nodes():
            codes = emcys(frames, n)
            assert codes == [0x8130]
            t_emcy = next(m.timestamp for m in frames if m.arbitration_id == 0x80 + n)
            assert 0.1 - 0.02 <= t_emcy - lost_at <= 0.1 + 0.0125
            assert rig.drive(n).state is DriveState.QUICK_STOP_ACTIVE
            assert decode_statusword(tpdos(frames, n)[-1][0]) is DriveState.QUICK_STOP_ACTIVE


def test_without_sync_drive_timers_run_on_bus_advance() -> None:
    with Rig() as rig:
        rig.start_all(qs_option=6)
        rig.enable()
        rig.run(10)
        t0 = rig.sim.time
        rig.bus.kernel.advance(60)  # SYNC and the master's heartbeat stop: 150 ms pass
        frames = rig.drain()
        assert rig.sim.time == pytest.approx(t0 + 0.15)
        for n in rig.nodes():
            assert emcys(frames, n) == [0x8130]
            assert len([m for m in frames if m.arbitration_id == 0x700 + n]) == 15  # every 10 ms
            assert tpdos(frames, n) == []
            assert rig.drive(n).state is DriveState.QUICK_STOP_ACTIVE


def test_quick_stop_option_2_ends_in_switch_on_disabled_and_enable_alone_does_not_restart() -> None:
    with Rig() as rig:
        rig.start_all(qs_option=2)
        rig.enable([1])
        rig.cw[1] = 0x02
        rig.run(3)
        assert rig.drive(1).state is DriveState.SWITCH_ON_DISABLED
        rig.cw[1] = 0x0F
        rig.run(3)
        assert rig.drive(1).state is DriveState.SWITCH_ON_DISABLED


def test_heartbeat_loss_with_option_2_disables_even_if_rpdos_keep_coming() -> None:
    with Rig(System()) as rig:
        rig.start_all(qs_option=2)
        rig.enable([1])
        rig.run(10)  # the consumer arms on the first master heartbeat
        rig.master_hb = False
        frames = rig.run(60)
        assert emcys(frames, 1) == [0x8130]
        assert rig.drive(1).state is DriveState.SWITCH_ON_DISABLED


def _quick_stop_distance(rig: Rig, node: int) -> tuple[float, float]:
    d = rig.drive(node)
    cfg = d.config
    rig.enable([node])
    # Accelerate within the configured limits to max speed, then quick stop.
    v = 0.0
    pos = 0.0
    while v < cfg.max_speed:
        v = min(cfg.max_speed, v + cfg.max_accel * rig.period)
        pos += v * rig.period
        rig.target[node] = round(pos * cfg.counts_per_unit)
        rig.cycle()
    for _ in range(40):
        pos += v * rig.period
        rig.target[node] = round(pos * cfg.counts_per_unit)
        rig.cycle()
    assert d.velocity == pytest.approx(cfg.max_speed, rel=1e-6)
    start = d.insertion
    rig.cw[node] = 0x02
    rig.run(40)
    assert d.velocity == 0.0
    return d.insertion - start, cfg.max_speed**2 / (2.0 * cfg.quick_stop_decel)


def test_quick_stop_distance_at_max_speed_is_within_0_3_mm_on_every_linear_axis() -> None:
    with Rig() as rig:
        rig.start_all(qs_option=6)
        for d in list(rig.sim):
            if d.config.kind != "linear":
                continue
            dist, bound = _quick_stop_distance(rig, d.node_id)
            # 0.5 v^2 / decel plus one cycle at full speed: the command acts on the next SYNC.
            assert 0.0 < dist <= bound + d.config.max_speed * rig.period + 1e-9
            assert dist <= 0.3
            assert d.state is DriveState.QUICK_STOP_ACTIVE


def test_software_position_limit_clamps_and_sets_internal_limit_bit() -> None:
    with Rig() as rig:
        rig.start_all()
        rig.sdo_ok(1, 0x607D, 2, 200, 4)  # 0.2 mm
        rig.enable([1])
        rig.target[1] = 1000
        frames = rig.run(60)
        sw, pos, _ = tpdos(frames, 1)[-1]
        assert pos == 200
        assert sw & (1 << 11)


def test_following_error_faults_with_emcy_8611() -> None:
    with Rig() as rig:
        rig.start_all()
        rig.enable([1])
        rig.target[1] = 50_000  # 50 mm jump: far outside the 1 mm window
        frames = rig.run(20)
        assert emcys(frames, 1) == [0x8611]
        assert rig.drive(1).state is DriveState.FAULT
        sw = tpdos(frames, 1)[-1][0]
        assert decode_statusword(sw) is DriveState.FAULT and sw & (1 << 13)
        t_emcy = next(m.timestamp for m in frames if m.arbitration_id == 0x81)
        # window exceeded from the first moving cycle; time-out 20 ms
        assert t_emcy <= rig.sim.time and t_emcy >= 0.02


def test_pdo_mapping_written_by_sdo_is_honoured_and_bad_mappings_refused() -> None:
    with Rig() as rig:
        node = 2
        rig.sdo_ok(node, 0x1800, 1, 0x80000182, 4)  # disable
        rig.sdo_ok(node, 0x1A00, 0, 0, 1)
        resp = rig.sdo_write(node, 0x1A00, 1, 0x20000020, 4)  # not in the dictionary
        assert resp[0] == 0x80 and int.from_bytes(resp[4:8], "little") == 0x06040041
        resp = rig.sdo_write(node, 0x1A00, 1, 0x60650020, 4)  # not PDO-mappable
        assert resp[0] == 0x80 and int.from_bytes(resp[4:8], "little") == 0x06040041
        rig.sdo_ok(node, 0x1A00, 1, 0x60410010, 4)
        rig.sdo_ok(node, 0x1A00, 2, 0x60610008, 4)
        rig.sdo_ok(node, 0x1A00, 0, 2, 1)
        rig.sdo_ok(node, 0x1800, 1, 0x182, 4)
        rig.sdo_ok(node, 0x1800, 2, 2, 1)  # every 2nd SYNC
        rig.sdo_ok(node, 0x6060, 0, 8, 1)
        rig.send(0, [0x01, node])
        frames = rig.run(6)
        payloads = [bytes(m.data) for m in frames if m.arbitration_id == 0x182]
        assert payloads == [struct.pack("<Hb", 0x0240, 8)] * 3
        # Too long: 3 x 32 bits.
        rig.sdo_ok(node, 0x1A00, 0, 0, 1)
        for sub in (1, 2, 3):
            rig.sdo_ok(node, 0x1A00, sub, 0x60640020, 4)
        resp = rig.sdo_write(node, 0x1A00, 0, 3, 1)
        assert resp[0] == 0x80 and int.from_bytes(resp[4:8], "little") == 0x06040042


def test_rpdo_remapped_to_controlword_only_via_sdo() -> None:
    with Rig(System()) as rig:
        rig.sdo_ok(1, 0x1400, 1, 0x80000201, 4)
        rig.sdo_ok(1, 0x1600, 0, 0, 1)
        rig.sdo_ok(1, 0x1600, 1, 0x60400010, 4)
        rig.sdo_ok(1, 0x1600, 0, 1, 1)
        rig.sdo_ok(1, 0x1400, 1, 0x305, 4)  # low bits name no configured node
        rig.send(0, [0x01, 1])
        rig.send(0x305, struct.pack("<H", 0x06))
        rig.cycle()
        assert rig.drive(1).state is DriveState.READY_TO_SWITCH_ON
        rig.send(0x201, pdo.RPDO1.pack(0x07, 0))  # old COB-ID: ignored now
        rig.cycle()
        assert rig.drive(1).state is DriveState.READY_TO_SWITCH_ON


def test_nmt_reset_node_restores_defaults_and_boots() -> None:
    with Rig() as rig:
        rig.sdo_ok(4, 0x1017, 0, 10, 2)
        rig.send(0, [0x81, 4])
        frames = rig.drain()
        assert [(m.arbitration_id, bytes(m.data)) for m in frames] == [(0x704, b"\x00")]
        assert rig.sdo_read(4, 0x1017) == 0


def test_a_vendor_dcf_drive_is_simulated_too() -> None:
    with Rig(load_config(CONFIGS / "rig-epos4.toml")) as rig:
        assert rig.sdo_read(1, 0x6502) & 0x80  # the EPOS4's own supported modes
        rig.start_all(qs_option=6)
        rig.enable()
        for d in rig.sim:  # half a unit: inside the following-error window of every axis
            rig.target[d.node_id] = round(0.5 * d.config.counts_per_unit)
        frames = rig.run(60)
        for d in rig.sim:
            assert tpdos(frames, d.node_id)[-1][1] == rig.target[d.node_id]
            assert d.position == pytest.approx(0.5, abs=0.5 / d.config.counts_per_unit)


def test_a_dcf_written_for_node_1_gives_each_node_its_own_emcy_cob_id() -> None:
    # the EPOS4 DCF holds 0x1014 = 0x81 (its commissioned node 1): a real drive at node n sends EMCY
    # on 0x80 + n, so the master can name the axis; the heartbeat-loss EMCY of every node shows it
    with Rig(load_config(CONFIGS / "rig-epos4.toml")) as rig:
        assert [rig.sdo_read(n, 0x1014) for n in rig.nodes()] == [0x80 + n for n in rig.nodes()]
        rig.start_all(qs_option=6)
        rig.enable()
        rig.run(10)
        rig.master_hb = False
        rig.master_rpdo = False
        frames = rig.run(60)
        for n in rig.nodes():
            assert emcys(frames, n) == [0x8130], n


# --- load, torque, stall --------------------------------------------------------------------------


def test_load_force_becomes_torque_actual_and_plant_sees_insertion() -> None:
    load = ConstantLoad(1.2)
    with Rig(System(), load=load) as rig:
        rig.start_all()
        rig.enable([1])
        rig.target[1] = 500
        frames = rig.run(60)
        assert tpdos(frames, 1)[-1][2] == 120  # 1.2 N / 0.01 N per mille
        t, dt, ins = load.calls[-1]
        assert dt == rig.period and t == pytest.approx(rig.sim.time)
        assert ins["ante_wire"] == pytest.approx(0.5)


def test_axis_stalls_against_a_load_above_its_torque_limit_and_can_back_off() -> None:
    load = ConstantLoad(0.0)
    with Rig(System(), load=load) as rig:
        rig.start_all()
        rig.sdo_ok(1, 0x6065, 0, 0xFFFFFFFF, 4)  # following error off for this test
        rig.enable([1])
        for k in range(1, 41):
            rig.target[1] = k * 20
            rig.cycle()
        load.force = 12.0  # 1000 per mille x 0.01 N = 10 N max
        held = rig.drive(1).insertion
        for k in range(41, 81):
            rig.target[1] = k * 20
            rig.cycle()
        assert rig.drive(1).stalled
        assert rig.drive(1).insertion <= held + 0.05
        assert tpdos(rig.cycle(), 1)[-1][2] == 1000  # saturated at the torque limit
        rig.target[1] = 0
        rig.run(80)
        assert rig.drive(1).insertion == pytest.approx(0.0, abs=1e-3)


# --- motor limits (property) ----------------------------------------------------------------------


@given(
    targets=st.lists(st.integers(min_value=-20_000, max_value=20_000), min_size=1, max_size=8),
    hold=st.integers(min_value=1, max_value=30),
)
def test_motor_respects_its_speed_and_acceleration_limits(targets: list[int], hold: int) -> None:
    with Rig(System()) as rig:
        rig.start_all()
        rig.sdo_ok(1, 0x6065, 0, 0xFFFFFFFF, 4)
        rig.enable([1])
        d = rig.drive(1)
        v_max = d.config.max_speed * MOTOR_HEADROOM
        a_max = d.config.max_accel * MOTOR_HEADROOM
        prev_pos, prev_v = d.insertion, d.velocity
        for target in targets:
            rig.target[1] = target
            for _ in range(hold):
                rig.cycle()
                pos, v = d.insertion, d.velocity
                assert abs(v) <= v_max * (1 + 1e-9)
                assert abs(v - prev_v) <= a_max * rig.period * (1 + 1e-9)
                assert abs(pos - prev_pos) <= v_max * rig.period * (1 + 1e-9)
                assert math.isfinite(pos)
                prev_pos, prev_v = pos, v
        # Settles on the last target (40 mm at most at 30 mm/s: well within 2 s = 800 cycles).
        goal = targets[-1] / d.config.counts_per_unit
        for _ in range(800):
            if d.velocity == 0.0 and abs(d.insertion - goal) < 1e-3:
                break
            rig.cycle()
        assert d.insertion == pytest.approx(targets[-1] / d.config.counts_per_unit, abs=2e-3)


# --- determinism ----------------------------------------------------------------------------------


def _scripted_run(seed: int) -> list[tuple[int, bytes, float]]:
    load = ConstantLoad(0.3)
    with Rig(load=load, seed=seed) as rig:
        rig.start_all()
        rig.enable()
        rig.sim.inject("tpdo-drop:retro_mc:2@0.05")
        rig.sim.inject("force-spike:ante_mc:0.8@0.06")
        rig.sim.inject("encoder-jump:retro_wire:0.4@0.07")
        for k in range(80):
            for n in rig.nodes():
                rig.target[n] = (k * 17 * n) % 3000
            rig.cycle()
        return [(m.arbitration_id, bytes(m.data), m.timestamp) for m in rig.log]


def test_same_seed_and_inputs_give_identical_frames_and_timestamps() -> None:
    a = _scripted_run(7)
    b = _scripted_run(7)
    assert len(a) > 500
    assert a == b


# --- arbitrary traffic (property) -----------------------------------------------------------------

_controlwords = st.sampled_from([0x00, 0x02, 0x06, 0x07, 0x0F, 0x80, 0x10F, 0x8F])
_nodes = st.sampled_from([1, 2])
_targets = st.integers(-5000, 5000)
_structured = st.one_of(
    st.just([(0x000, b"\x01\x00")]),  # NMT start all
    st.just([(0x080, b"")] * 3),  # SYNCs
    st.builds(lambda n, cw, tgt: [(0x200 + n, pdo.RPDO1.pack(cw, tgt))], _nodes, _controlwords, _targets),
    st.builds(  # the enable walk at once
        lambda n, tgt: [(0x200 + n, pdo.RPDO1.pack(0x06, tgt)), (0x200 + n, pdo.RPDO1.pack(0x0F, tgt))],
        _nodes,
        _targets,
    ),
)
_raw = st.tuples(
    st.sampled_from([0x000, 0x080, 0x201, 0x202, 0x601, 0x602, 0x77F, 0x181, 0x701, 0x7FF, 0x301]),
    st.binary(max_size=8),
).map(lambda f: [f])
_frames = st.lists(st.one_of(_structured, _structured, _raw), max_size=40).map(
    lambda chunks: [f for chunk in chunks for f in chunk]
)


@given(frames=_frames)
def test_any_traffic_is_handled_and_only_an_enabled_drive_moves(frames: list[tuple[int, bytes]]) -> None:
    """Random NMT/SYNC/RPDO/SDO/heartbeat frames: no exception escapes, motion needs torque on."""
    system = System(
        drives=MappingProxyType({"ante_wire": DriveConfig(node_id=1), "ante_mc": DriveConfig(node_id=2)})
    )
    with Rig(system) as rig:
        moving_states = {
            DriveState.OPERATION_ENABLED,
            DriveState.QUICK_STOP_ACTIVE,
            DriveState.FAULT_REACTION_ACTIVE,
        }
        for n in (1, 2):
            rig.sdo_ok(n, 0x6060, 0, 8, 1)
        rig.send(0, b"\x01\x00")  # operational, so that RPDOs count
        for cob, data in frames:
            before = {d.node_id: (d.state, d.insertion) for d in rig.sim}
            rig.send(cob, data)
            rig.drain()
            for d in rig.sim:
                state, pos = before[d.node_id]
                if d.insertion != pos:
                    assert cob == 0x080 and state in moving_states
                assert abs(d.velocity) <= d.config.max_speed * MOTOR_HEADROOM * (1 + 1e-9)
                assert decode_statusword(d.statusword) is d.state


class _BadLoad:
    def step(self, t: float, dt: float, insertion: Mapping[str, float]) -> Mapping[str, float]:
        return {axis: -1.0 for axis in insertion}


def test_an_invalid_plant_force_raises_out_of_the_sync_on_simulated_time() -> None:
    with (
        Rig(System(), load=_BadLoad()) as rig,
        pytest.raises(ValueError, match=r"load force of ante_wire \(=-1.0\) must be a finite"),
    ):
        rig.cycle()


def _rest_run(
    moves: list[tuple[int, int]], shortcut: bool
) -> tuple[list[tuple[int, int, int]], list[tuple[str, str]]]:
    """TPDO1s of node 1 and its (position, velocity) as float hex after every SYNC."""
    with Rig(System()) as rig:
        rig.drive(1)._rest_shortcut = shortcut
        rig.start_all()
        rig.enable([1])
        frames: list[tuple[int, int, int]] = []
        state: list[tuple[str, str]] = []
        for target, cycles in moves:
            rig.target[1] = target
            for _ in range(cycles):
                frames += tpdos(rig.cycle(), 1)
                d = rig.drive(1)
                state.append((d._pos.hex(), d._vel.hex()))
        return frames, state


@given(
    moves=st.lists(
        st.tuples(st.integers(-30_000, 30_000), st.integers(1, 120)),
        min_size=1,
        max_size=6,
    )
)
def test_the_rest_shortcut_gives_the_full_steps_frames_and_state_to_the_bit(
    moves: list[tuple[int, int]],
) -> None:
    # A drive at rest on an unchanged target skips the position arithmetic; a drive that always
    # computes it in full must send the same TPDO1s and hold the same position and velocity
    # (sign of zero included) through steps, ramps and holds of every length.
    assert _rest_run(moves, True) == _rest_run(moves, False)


def test_a_drive_holding_its_target_takes_the_rest_shortcut_with_the_same_frames() -> None:
    moves = [(0, 20), (4000, 300), (4000, 100), (-1500, 300), (-1500, 50)]
    short = _rest_run(moves, True)
    assert short == _rest_run(moves, False)
    _frames, state = short
    # cycles at rest on the target (position unchanged, velocity +0.0): where the shortcut runs
    at_rest = sum(1 for a, b in itertools.pairwise(state) if a == b and b[1] == (0.0).hex())
    assert at_rest > 300
