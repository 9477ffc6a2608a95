"""Frames from someone else on the bus: after a latched fault no drive returns to motion.

An attacker node sits on the simulated-time bus next to the simulated drives. It hears every
frame the master sends and answers; the drives and the master both hear the answers (as on a
real wire). The drives are the project's simulated CiA 402 firmware, which implements the
standard state machine (transition 16 only for quick-stop options 5..8, NMT stopped takes no PDO).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import can
import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from firmware_iface import pdo
from firmware_iface.cia402 import CW_DISABLE_VOLTAGE, DriveState
from firmware_iface.master import Master
from firmware_iface.sim import MOTOR_HEADROOM, SimulatedDrives
from firmware_iface.simbus import SimTimeBus
from firmware_iface.types import DriveGoal
from whih_control.api import Robot
from whih_control.config import Config, load_config
from whih_control.safety import SafetySupervisor
from whih_control.types import Estimate, Objective, OperatorInput, Reason

from .conftest import CONFIGS, THOROUGH

Frame = tuple[int, bytes]

CW_SHUTDOWN, CW_SWITCH_ON, CW_ENABLE = 0x06, 0x07, 0x0F
FAR = 2_000_000  # counts: far beyond any travel


def _rpdo(node: int, cw: int, target: int = FAR) -> Frame:
    return (pdo.rpdo1_cob(node), pdo.RPDO1.pack(cw, target))


class Attacker:
    """Answers each RPDO1 the master sends to ``node`` with ``answer(rpdo)`` (once armed)."""

    def __init__(self, bus: SimTimeBus, drives: SimulatedDrives, node: int) -> None:
        self.bus = bus
        self.drives = drives
        self.node = node
        self.answer: Callable[[can.Message], Sequence[Frame]] | None = None
        self.sent = 0

    def on_frame(self, msg: can.Message) -> None:
        if self.answer is None or msg.arbitration_id != pdo.rpdo1_cob(self.node):
            return
        self.inject(self.answer(msg))

    def inject(self, frames: Sequence[Frame]) -> None:
        for cob, data in frames:
            frame = can.Message(arbitration_id=cob, data=data, is_extended_id=False)
            self.drives.on_frame(frame)  # the drives hear it ...
            self.bus.kernel.device_send(frame)  # ... and so does the master
            self.sent += 1

    def on_sync(self, t: float, dt: float) -> None:
        del t, dt


def _sim_time_config() -> Config:
    cfg = load_config(CONFIGS / "sim.toml")
    return cfg.replace(bus=dataclasses.replace(cfg.bus, interface="whih-sim"))


def _ramp_cycles(cfg: Config) -> int:
    """Cycles for the slowest quick-stop ramp from max speed, plus the two cycles of the frames."""
    return max(math.ceil(d.max_speed / d.quick_stop_decel / cfg.period) + 2 for d in cfg.drives.values())


def _one_cycle_from_rest(cfg: Config, axis: str) -> float:
    """How far a drive at rest moves in one SYNC step at its own motor acceleration limit."""
    return MOTOR_HEADROOM * cfg.drives[axis].max_accel * cfg.period**2 + 1e-9


@pytest.fixture
def running_robot() -> Iterator[Robot]:
    """A simulated-time robot in the middle of its procedure (the wires moving)."""
    with Robot(_sim_time_config(), auto_confirm=True) as robot:
        robot.enable()
        robot.runtime.procedure.confirm()
        for _ in range(400):
            robot.runtime._cycle()
        yield robot


def _attack_after_estop(
    robot: Robot, axis: str, answer: Callable[[can.Message], Sequence[Frame]], cycles: int
) -> tuple[float, list[float], list[DriveState], Attacker]:
    rt = robot.runtime
    assert rt.drives is not None and isinstance(rt.bus, SimTimeBus)
    node = rt.cfg.drives[axis].node_id
    attacker = Attacker(rt.bus, rt.drives, node)
    rt.bus.kernel.attach(attacker)
    drive = rt.drives.drive(axis)
    rt.operator.estop = True
    rt._cycle()
    assert rt.core.supervisor.latched
    # let the quick-stop ramp finish before the attack starts
    for _ in range(_ramp_cycles(rt.cfg)):
        rt._cycle()
    at_stop = drive.position
    assert drive.state in (DriveState.SWITCH_ON_DISABLED, DriveState.QUICK_STOP_ACTIVE)
    attacker.answer = answer
    positions: list[float] = []
    states: list[DriveState] = []
    for _ in range(cycles):
        rt._cycle()
        positions.append(drive.position)
        states.append(drive.state)
    return at_stop, positions, states, attacker


def test_one_enable_operation_per_rpdo_does_not_restart_a_stopped_drive(running_robot: Robot) -> None:
    """The reported case: another node answers each RPDO1 with "enable operation" and a far
    target. With quick-stop option 6 the drive went back to OPERATION ENABLED (transition 16)
    and moved 13-19 mm; with option 2 it sits in SWITCH ON DISABLED, which one controlword
    cannot leave."""
    node = running_robot.runtime.cfg.drives["retro_wire"].node_id
    at_stop, positions, states, attacker = _attack_after_estop(
        running_robot, "retro_wire", lambda msg: [_rpdo(node, CW_ENABLE)], 400
    )
    assert attacker.sent == 400
    assert DriveState.OPERATION_ENABLED not in states
    assert max(abs(p - at_stop) for p in positions) == 0.0


def test_a_drive_walked_back_to_motion_is_escalated_within_one_cycle(running_robot: Robot) -> None:
    """A smarter node walks the drive back (shutdown, switch on, enable) after every RPDO1:
    the master sees it out of its stop, sends disable voltage then an NMT stop in that same
    cycle, and the stopped node ignores every RPDO after that."""
    rt = running_robot.runtime
    node = rt.cfg.drives["retro_wire"].node_id
    walk = [_rpdo(node, CW_SHUTDOWN), _rpdo(node, CW_SWITCH_ON), _rpdo(node, CW_ENABLE)]
    sent: list[tuple[int, bytes]] = []
    tap = rt.master.tap

    def record(msg: can.Message, t: float, rx: bool) -> None:
        if not rx:
            sent.append((msg.arbitration_id, bytes(msg.data)))
        if tap is not None:
            tap(msg, t, rx)

    rt.master.tap = record
    at_stop, positions, states, _ = _attack_after_estop(running_robot, "retro_wire", lambda msg: walk, 200)
    # one step from rest before the master saw it, then never again
    assert states.count(DriveState.OPERATION_ENABLED) <= 1
    assert max(abs(p - at_stop) for p in positions) <= _one_cycle_from_rest(rt.cfg, "retro_wire")
    assert rt.drives is not None and rt.drives.drive("retro_wire").nmt_state == pdo.NMT_STOPPED
    # the NMT stop follows a disable voltage to the same node, in the same write
    i = sent.index((pdo.NMT_COB, bytes([0x02, node])))
    cob, data = sent[i - 1]
    assert cob == pdo.rpdo1_cob(node) and pdo.RPDO1.unpack(data)[0] == CW_DISABLE_VOLTAGE
    # every other axis is left alone: nobody walked them back
    sup = rt.core.supervisor
    assert [a for a, e in zip(sup.axes, sup.escalated, strict=True) if e] == ["retro_wire"]


# --------------------------------------------------------------------------- stateful property

_ATTACK_CWS = st.one_of(
    st.sampled_from([0x00, 0x02, 0x06, 0x07, 0x0F, 0x1F, 0x80, 0x8F, 0x10F]),
    st.integers(0, 0xFFFF),
)
_NMT = st.sampled_from([0x01, 0x02, 0x80, 0x81, 0x82])


class _AfterALatchedFault(RuleBasedStateMachine):
    """The real master, supervisor and simulated drives; a fault latched while the drives move;
    then any frames from another node, cycle after cycle.

    Invariants: (1) escalation within one cycle: any cycle in which the master gets fresh
    feedback of a drive out of its stop (after it had stopped), that cycle's RPDO1 to it says
    disable voltage and an NMT stop follows; (2) with controlwords alone (no NMT), a drive moves
    at most one step from rest after its stop and never again once escalated; (3) with NMT frames
    too (another node can start a stopped node again), every cycle's motion stays that of a drive
    walked back from rest and caught within ``feedback_max_age_cycles`` + 1 cycles.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bus: SimTimeBus | None = None
        self.drives: SimulatedDrives | None = None

    @initialize(axis=st.sampled_from(["ante_wire", "retro_wire", "ante_mc", "retro_mc"]))
    def start(self, axis: str) -> None:
        cfg = _CFG
        self.cfg = cfg
        self.axis = axis
        self.bus = SimTimeBus(period=cfg.period)
        self.drives = SimulatedDrives(cfg, self.bus)
        self.drives.start()
        self.master = Master(cfg, self.bus)
        self.master.setup()
        self.sup = SafetySupervisor(cfg)
        self.node = cfg.drives[axis].node_id
        self.attacker = Attacker(self.bus, self.drives, self.node)
        self.bus.kernel.attach(self.attacker)
        self.sent: list[tuple[int, bytes]] = []
        self.armed = False
        self.master.tap = lambda msg, t, rx: (
            None if rx else self.sent.append((msg.arbitration_id, bytes(msg.data)))
        )
        cmds = self.master.commands.axes
        for c in cmds.values():
            c.goal = DriveGoal.ENABLED
        for _ in range(6):
            self._raw_cycle()
        assert self.master.all_enabled()
        # moving at a steady speed when the fault comes
        for _ in range(40):
            for a, c in cmds.items():
                c.target = self.master.feedback.axes[a].position + 0.25 * cfg.drives[a].max_speed * cfg.period
            self._raw_cycle()
        self.sup.raise_fault(Reason.ESTOP, "emergency stop pressed")
        for _ in range(_ramp_cycles(cfg) + 1):
            self._cycle()
        self.drive = self.drives.drive(axis)
        assert self.drive.state is DriveState.SWITCH_ON_DISABLED
        self.at_stop = self.drive.position
        self.armed = True  # stopped: from here on, out of the stop means escalated
        self.walked_back = 0
        self.nmt_used = False
        self.step = _one_cycle_from_rest(cfg, axis)

    def _raw_cycle(self) -> None:
        assert self.bus is not None
        self.master.read(self.bus.kernel.time, None)
        self.master.write()
        self.master.service(self.bus.kernel.time)

    def _cycle(self) -> None:
        assert self.bus is not None
        fb = self.master.read(self.bus.kernel.time, None)
        self.sent.clear()
        self.sup.enforce(
            fb.t, self.cfg.period, self.master.commands, fb, Estimate(), Objective(), OperatorInput()
        )
        self.master.write()
        self.master.service(self.bus.kernel.time)
        i = self.master.axes.index(self.axis)
        af = fb.axes[self.axis]
        if (
            self.armed
            and af.age_cycles == 0
            and af.state
            in (
                DriveState.READY_TO_SWITCH_ON,
                DriveState.SWITCHED_ON,
                DriveState.OPERATION_ENABLED,
            )
        ):
            rpdo = [d for c, d in self.sent if c == pdo.rpdo1_cob(self.node)]
            assert rpdo and int.from_bytes(rpdo[-1][:2], "little") == CW_DISABLE_VOLTAGE
            k = self.sent.index((pdo.rpdo1_cob(self.node), rpdo[-1]))
            assert (pdo.NMT_COB, bytes([0x02, self.node])) in self.sent[k + 1 :]
            assert self.master.last_controlword[i] == CW_DISABLE_VOLTAGE

    @rule(cws=st.lists(_ATTACK_CWS, max_size=4), far=st.integers(-(2**31), 2**31 - 1))
    def controlwords(self, cws: list[int], far: int) -> None:
        self.attacker.answer = lambda msg: [_rpdo(self.node, cw, far) for cw in cws]
        self._attacked_cycle()

    @rule(
        frames=st.lists(
            st.one_of(_ATTACK_CWS.map(lambda cw: (0, cw)), _NMT.map(lambda cs: (1, cs))), max_size=6
        )
    )
    def nmt_and_controlwords(self, frames: list[tuple[int, int]]) -> None:
        out: list[Frame] = []
        for is_nmt, value in frames:
            if is_nmt:
                self.nmt_used = True
                out.append((pdo.NMT_COB, bytes([value, self.node])))
            else:
                out.append(_rpdo(self.node, value))
        self.attacker.answer = lambda msg: out
        self._attacked_cycle()

    @rule()
    def quiet(self) -> None:
        self.attacker.answer = None
        self._attacked_cycle()

    def _attacked_cycle(self) -> None:
        before = self.drive.position
        self._cycle()
        # never a run-away: a drive walked back moves from rest, and is seen (and escalated)
        # within one cycle, or within feedback_max_age_cycles + 1 when it was made silent
        assert abs(self.drive.position - before) <= self.step * (self.cfg.safety.feedback_max_age_cycles + 2)

    @invariant()
    def stays_near_its_stop(self) -> None:
        if self.drives is None or self.nmt_used:
            return
        # controlwords alone: one step from rest before the escalation, then the node is
        # NMT-stopped and takes no RPDO from anyone
        assert abs(self.drive.position - self.at_stop) <= self.step

    def teardown(self) -> None:
        if self.drives is not None:
            self.drives.stop()
        if self.bus is not None:
            self.bus.shutdown()


_CFG = _sim_time_config()

TestAfterALatchedFault = _AfterALatchedFault.TestCase
TestAfterALatchedFault.settings = settings(
    max_examples=2_000 if THOROUGH else 25,
    stateful_step_count=30,
    deadline=None,
    # the explain phase traces every line, EDS parsing included: minutes per example
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
