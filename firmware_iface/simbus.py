"""A python-can backend in simulated time: SYNC advances the clock and steps attached devices.

Two objects, like a real bus and the world behind it:

- :class:`SimTimeBus` is a real :class:`can.BusABC` backend (interface name ``whih-sim``), shaped
  like ``can/interfaces/virtual.py``: it overrides what a backend overrides (``send``, ``recv`` /
  ``_recv_internal``, ``shutdown``) and nothing else;
- :class:`SimKernel` (``bus.kernel``) is the stepping kernel behind it: the simulated clock, the
  attached devices (simulated drives), synchronous listeners and the receive FIFO.

There is no wall clock. The master's frames are delivered synchronously to every attached device;
a SYNC (COB-ID 0x080) first advances :attr:`SimKernel.time` by one period and steps every device.
Frames the devices produce are timestamped in simulated seconds and queued for
:meth:`~can.BusABC.recv`, which never blocks. No threads, no sleeps: the same frames in give the
same frames out, with the same timestamps.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import can

__all__ = ["SYNC_COB_ID", "SimDevice", "SimKernel", "SimTimeBus"]

SYNC_COB_ID = 0x080


class SimDevice(Protocol):
    """Something attached to a :class:`SimKernel`; it sends through ``kernel.device_send``."""

    def on_frame(self, msg: can.Message) -> None:
        """A frame sent by the master (not SYNC), delivered synchronously."""
        ...

    def on_sync(self, t: float, dt: float) -> None:
        """A SYNC at simulated time ``t`` (already advanced by ``dt``)."""
        ...

    # Optional: ``on_tick(t, dt)``, called by :meth:`SimKernel.advance` for a period without SYNC.


Listener = Callable[[can.Message], None]


class SimKernel:
    """The stepping kernel behind a :class:`SimTimeBus` (see the module docstring).

    :param channel: a name only (stamped on device frames).
    :param period: seconds each SYNC advances :attr:`time` (> 0, finite).
    :param rx_queue_size: capacity of the receive FIFO; frames beyond it are dropped and counted
        in :attr:`dropped`.
    """

    def __init__(self, channel: Any = "whih-sim", *, period: float, rx_queue_size: int = 65_536) -> None:
        if not (isinstance(period, int | float) and math.isfinite(period) and period > 0.0):
            raise ValueError(f"period (={period!r}) must be a finite number of seconds > 0")
        if not (isinstance(rx_queue_size, int) and rx_queue_size >= 1):
            raise ValueError(f"rx_queue_size (={rx_queue_size!r}) must be an integer >= 1")
        self.channel = channel
        self.period = float(period)
        self._syncs = 0
        self._ticks = 0
        self._time = 0.0
        self.rx: deque[can.Message] = deque()
        """Device frames waiting for the bus's ``recv``."""
        self._rx_size = rx_queue_size
        self.dropped = 0
        """Device frames dropped because the receive FIFO was full."""
        self._devices: list[SimDevice] = []
        # Snapshot iterated on delivery (rebuilt on attach/detach), so a device attached or detached
        # from inside a callback takes effect with the next frame, and no copy is made per frame.
        self._device_tuple: tuple[SimDevice, ...] = ()
        self._listeners: list[Listener] = []
        self._pending: deque[can.Message] = deque()
        self._delivering = False
        self.open = True

    @property
    def time(self) -> float:
        """Simulated seconds since the bus was opened (periods elapsed: SYNCs plus :meth:`advance`)."""
        return self._time

    def advance(self, periods: int = 1) -> None:
        """Let ``periods`` periods pass without a SYNC (a silent or frozen master).

        Devices that have ``on_tick(t, dt)`` are called once per period, so their own timers
        (heartbeat producer and consumer, ramps) keep running; nothing else happens.
        """
        self._check_open()
        if not (isinstance(periods, int) and periods >= 0):
            raise ValueError(f"periods (={periods!r}) must be an integer >= 0")
        for _ in range(periods):
            self._ticks += 1
            self._time = self._ticks * self.period
            for dev in self._device_tuple:
                tick = getattr(dev, "on_tick", None)
                if tick is not None:
                    tick(self._time, self.period)

    @property
    def sync_count(self) -> int:
        """Number of SYNC frames sent so far."""
        return self._syncs

    def attach(self, device: SimDevice) -> None:
        """Attach a device: it receives the master's frames and every SYNC from now on."""
        self._check_open()
        if any(d is device for d in self._devices):
            raise ValueError(f"device {device!r} is already attached")
        self._devices.append(device)
        self._device_tuple = tuple(self._devices)

    def detach(self, device: SimDevice) -> None:
        """Detach a device (no error if it is not attached)."""
        self._devices = [d for d in self._devices if d is not device]
        self._device_tuple = tuple(self._devices)

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(msg)`` synchronously for every device frame as it is produced."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling ``fn`` (no error if it was not added)."""
        self._listeners = [f for f in self._listeners if f is not fn]

    def device_send(self, msg: can.Message) -> None:
        """A device puts ``msg`` on the bus: timestamped now, queued for recv, shown to listeners."""
        if not self.open:
            self._check_open()
        msg.timestamp = self._time
        msg.channel = self.channel
        msg.is_rx = True
        rx = self.rx
        if len(rx) >= self._rx_size:
            self.dropped += 1
        else:
            rx.append(msg)
        if self._listeners:
            for fn in self._listeners:
                fn(msg)

    def deliver(self, msg: can.Message) -> None:
        """A master frame reaches every device now; a SYNC first advances time and steps them.

        A frame sent from inside a device or listener callback is delivered after the current one.
        """
        if not self.open:
            self._check_open()
        pending = self._pending
        if self._delivering:
            pending.append(msg)
            return
        self._delivering = True
        try:
            if msg.arbitration_id == SYNC_COB_ID:
                self._deliver(msg)
            else:
                # a master frame other than SYNC (an RPDO every cycle per drive): _deliver's
                # second half, written out
                for dev in self._device_tuple:
                    dev.on_frame(msg)
            while pending:
                self._deliver(pending.popleft())
        finally:
            self._delivering = False
            self._pending.clear()

    def _deliver(self, msg: can.Message) -> None:
        if (
            msg.arbitration_id == SYNC_COB_ID
            and not msg.is_extended_id
            and not msg.is_remote_frame
            and not msg.is_error_frame
        ):
            self._syncs += 1
            self._ticks += 1
            self._time = self._ticks * self.period
            t, dt = self._time, self.period
            for dev in self._device_tuple:
                dev.on_sync(t, dt)
            return
        for dev in self._device_tuple:
            dev.on_frame(msg)

    def pending(self) -> int:
        """Number of device frames waiting to be received."""
        return len(self.rx)

    def _check_open(self) -> None:
        if not self.open:
            raise can.CanOperationError("the simulated-time bus is shut down")

    def close(self) -> None:
        """Detach everything and refuse further use."""
        self.open = False
        self._devices.clear()
        self._device_tuple = ()
        self._listeners.clear()
        self.rx.clear()


class SimTimeBus(can.BusABC):
    """Simulated-time CAN bus; its stepping kernel is :attr:`kernel` (see the module docstring).

    :param channel: a name only (shown in ``channel_info``).
    :param period: seconds each SYNC advances ``kernel.time`` (> 0, finite).
    :param rx_queue_size: capacity of the receive FIFO (see :class:`SimKernel`).
    """

    def __init__(
        self,
        channel: Any = "whih-sim",
        *,
        period: float,
        rx_queue_size: int = 65_536,
        **kwargs: Any,
    ) -> None:
        kernel = SimKernel(channel, period=period, rx_queue_size=rx_queue_size)
        super().__init__(channel=channel, **kwargs)
        self.channel_info = f"whih simulated-time bus {channel!r}"
        self.kernel = kernel
        """The simulated clock, devices and listeners behind this bus."""
        self._rx = kernel.rx

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Deliver a master frame to every device now; a SYNC first advances time and steps them."""
        self.kernel.deliver(msg)

    def recv(self, timeout: float | None = None) -> can.Message | None:
        """Next queued device frame that passes the filters, or None at once (never waits).

        Simulated time only moves on SYNC, so waiting could never produce a frame.
        """
        if not self.kernel.open:
            self.kernel._check_open()
        rx = self._rx
        if self._filters is None:
            return rx.popleft() if rx else None
        while rx:
            msg = rx.popleft()
            if self._matches_filters(msg):
                return msg
        return None

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        self.kernel._check_open()
        if self._rx:
            return self._rx.popleft(), False
        return None, False

    def shutdown(self) -> None:
        """Detach everything and close; further use raises ``can.CanOperationError``."""
        if self._is_shutdown:
            return
        self.kernel.close()
        super().shutdown()
