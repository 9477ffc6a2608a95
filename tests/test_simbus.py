"""The simulated-time python-can backend: SYNC steps devices, everything else is synchronous."""

from __future__ import annotations

import importlib
import time
import tomllib

import can
import pytest

from firmware_iface.simbus import SYNC_COB_ID, SimTimeBus

from .conftest import ROOT


def _msg(cob: int, data: bytes = b"") -> can.Message:
    return can.Message(arbitration_id=cob, data=data, is_extended_id=False)


class Echo:
    """A device that answers every frame with id+1 and reports each SYNC as 0x180."""

    def __init__(self, bus: SimTimeBus, tag: int = 0) -> None:
        self.bus = bus
        self.tag = tag
        self.frames: list[tuple[int, bytes]] = []
        self.syncs: list[tuple[float, float]] = []

    def on_frame(self, msg: can.Message) -> None:
        self.frames.append((msg.arbitration_id, bytes(msg.data)))
        self.bus.kernel.device_send(_msg(msg.arbitration_id + 1, bytes([self.tag])))

    def on_sync(self, t: float, dt: float) -> None:
        self.syncs.append((t, dt))
        self.bus.kernel.device_send(_msg(0x180 + self.tag, bytes([len(self.syncs) & 0xFF])))


def test_sync_advances_time_and_steps_every_device_in_attach_order() -> None:
    with SimTimeBus(period=0.0025) as bus:
        a, b = Echo(bus, 1), Echo(bus, 2)
        bus.kernel.attach(a)
        bus.kernel.attach(b)
        assert bus.kernel.time == 0.0
        for _ in range(3):
            bus.send(_msg(SYNC_COB_ID))
        assert bus.kernel.time == pytest.approx(0.0075) and bus.kernel.sync_count == 3
        assert a.syncs == b.syncs == [(0.0025, 0.0025), (0.005, 0.0025), (0.0075, 0.0025)]
        got = [(m.arbitration_id, m.timestamp) for m in iter(bus.recv, None)]
        assert got == [
            (0x181, 0.0025),
            (0x182, 0.0025),
            (0x181, 0.005),
            (0x182, 0.005),
            (0x181, 0.0075),
            (0x182, 0.0075),
        ]
        # Time after many SYNCs is exact (count x period), not an accumulated float sum.
        for _ in range(10_000):
            bus.send(_msg(SYNC_COB_ID))
        assert bus.kernel.time == 10_003 * 0.0025


def test_other_frames_reach_every_device_synchronously_and_answers_queue_in_order() -> None:
    with SimTimeBus(period=0.01) as bus:
        a, b = Echo(bus, 1), Echo(bus, 2)
        bus.kernel.attach(a)
        bus.kernel.attach(b)
        bus.send(_msg(0x601, b"\x40\x00\x10\x00\x00\x00\x00\x00"))
        assert a.frames == b.frames == [(0x601, b"\x40\x00\x10\x00\x00\x00\x00\x00")]
        first, second = bus.recv(), bus.recv()
        assert first is not None and second is not None
        assert (first.arbitration_id, bytes(first.data), first.timestamp) == (0x602, b"\x01", 0.0)
        assert (second.arbitration_id, bytes(second.data)) == (0x602, b"\x02")
        assert first.is_rx
        assert a.syncs == []  # not a SYNC


def test_advance_lets_time_pass_without_sync_and_ticks_devices_that_want_it() -> None:
    class Ticker(Echo):
        def __init__(self, bus: SimTimeBus) -> None:
            super().__init__(bus)
            self.ticks: list[tuple[float, float]] = []

        def on_tick(self, t: float, dt: float) -> None:
            self.ticks.append((t, dt))

    with SimTimeBus(period=0.5) as bus:
        ticker, plain = Ticker(bus), Echo(bus)
        bus.kernel.attach(ticker)
        bus.kernel.attach(plain)
        bus.kernel.advance(2)
        bus.send(_msg(SYNC_COB_ID))
        assert bus.kernel.time == 1.5 and bus.kernel.sync_count == 1
        assert ticker.ticks == [(0.5, 0.5), (1.0, 0.5)]
        assert ticker.syncs == plain.syncs == [(1.5, 0.5)]
        with pytest.raises(ValueError, match=r"periods \(=-1\)"):
            bus.kernel.advance(-1)


def test_recv_never_blocks_when_empty() -> None:
    with SimTimeBus(period=0.01) as bus:
        t0 = time.monotonic()
        assert bus.recv() is None
        assert bus.recv(timeout=5.0) is None
        assert time.monotonic() - t0 < 0.5


def test_listeners_see_device_frames_as_they_are_produced_and_can_be_removed() -> None:
    with SimTimeBus(period=0.01) as bus:
        dev = Echo(bus, 3)
        bus.kernel.attach(dev)
        seen: list[int] = []

        def listener(m: can.Message) -> None:
            # Called while the master's send is still running: nothing queued was read yet.
            seen.append(m.arbitration_id)

        bus.kernel.add_listener(listener)
        bus.send(_msg(0x603))
        assert seen == [0x604] and bus.kernel.pending() == 1
        bus.kernel.remove_listener(listener)
        bus.send(_msg(0x603))
        assert seen == [0x604] and bus.kernel.pending() == 2


def test_send_from_a_listener_is_delivered_after_the_current_frame() -> None:
    with SimTimeBus(period=0.01) as bus:
        a, b = Echo(bus, 1), Echo(bus, 2)
        bus.kernel.attach(a)
        bus.kernel.attach(b)

        replied: list[int] = []

        def reply_once(m: can.Message) -> None:
            if m.arbitration_id == 0x11 and not replied:
                replied.append(1)
                bus.send(_msg(0x20))

        bus.kernel.add_listener(reply_once)
        bus.send(_msg(0x10))
        # Both devices got 0x10 before either got the listener's 0x20.
        assert a.frames == [(0x10, b""), (0x20, b"")] and b.frames == [(0x10, b""), (0x20, b"")]
        assert [m.arbitration_id for m in iter(bus.recv, None)] == [0x11, 0x11, 0x21, 0x21]


def test_bounded_queue_counts_drops() -> None:
    with SimTimeBus(period=0.01, rx_queue_size=3) as bus:
        bus.kernel.attach(Echo(bus))
        for _ in range(5):
            bus.send(_msg(0x100))
        assert bus.kernel.pending() == 3 and bus.kernel.dropped == 2
        assert [m.arbitration_id for m in iter(bus.recv, None)] == [0x101] * 3


def test_filters_apply_to_recv() -> None:
    with SimTimeBus(period=0.01, can_filters=[{"can_id": 0x181, "can_mask": 0x7FF}]) as bus:
        bus.kernel.attach(Echo(bus, 1))
        bus.kernel.attach(Echo(bus, 2))
        bus.send(_msg(SYNC_COB_ID))
        assert [m.arbitration_id for m in iter(bus.recv, None)] == [0x181]


def test_attach_detach_and_shutdown() -> None:
    bus = SimTimeBus(period=0.01)
    dev = Echo(bus)
    bus.kernel.attach(dev)
    with pytest.raises(ValueError, match="already attached"):
        bus.kernel.attach(dev)
    bus.kernel.detach(dev)
    bus.send(_msg(SYNC_COB_ID))
    assert dev.syncs == [] and bus.kernel.time == 0.01
    bus.shutdown()
    bus.shutdown()  # idempotent
    with pytest.raises(can.CanOperationError):
        bus.send(_msg(SYNC_COB_ID))
    with pytest.raises(can.CanOperationError):
        bus.recv()


@pytest.mark.parametrize("period", [0.0, -1.0, float("nan"), float("inf")])
def test_period_must_be_positive_and_finite(period: float) -> None:
    with pytest.raises(ValueError, match=r"period \(="):
        SimTimeBus(period=period)


def test_extended_or_remote_0x080_is_not_a_sync() -> None:
    with SimTimeBus(period=0.01) as bus:
        dev = Echo(bus)
        bus.kernel.attach(dev)
        bus.send(can.Message(arbitration_id=0x080, is_extended_id=True))
        bus.send(can.Message(arbitration_id=0x080, is_extended_id=False, is_remote_frame=True))
        assert dev.syncs == [] and bus.kernel.time == 0.0 and len(dev.frames) == 2


def test_same_inputs_give_same_frames() -> None:
    def run() -> list[tuple[int, bytes, float]]:
        with SimTimeBus(period=0.002) as bus:
            bus.kernel.attach(Echo(bus, 1))
            bus.kernel.attach(Echo(bus, 2))
            for k in range(200):
                bus.send(_msg(SYNC_COB_ID if k % 3 else 0x300 + k))
            return [(m.arbitration_id, bytes(m.data), m.timestamp) for m in iter(bus.recv, None)]

    assert run() == run()


def test_entry_point_names_this_class() -> None:
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["can.interface"]
    module, _, name = eps["whih-sim"].partition(":")
    assert getattr(importlib.import_module(module), name) is SimTimeBus
    assert issubclass(SimTimeBus, can.BusABC)


def test_the_bus_overrides_only_what_a_python_can_backend_overrides() -> None:
    """Stepping (clock, devices, listeners) is the kernel's; the bus is a plain backend."""
    own = {name for name in vars(SimTimeBus) if not name.startswith("__")}
    assert own <= {"send", "recv", "_recv_internal", "shutdown", "_abc_impl"}, own
    with SimTimeBus(period=0.01) as bus:
        assert bus.kernel.period == 0.01 and bus.kernel.time == 0.0
