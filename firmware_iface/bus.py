"""Open the CAN bus a configuration names: any python-can interface, or the simulated-time bus."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import can

from firmware_iface.errors import BusError
from firmware_iface.spec import BusConfig

if TYPE_CHECKING:
    from firmware_iface.simbus import SimKernel, SimTimeBus

__all__ = ["SIM_INTERFACE", "kernel_of", "open_bus", "simulated_time_bus"]

SIM_INTERFACE = "whih-sim"
"""Interface name of :class:`firmware_iface.simbus.SimTimeBus` (also a python-can entry point)."""


def open_bus(
    bus_config: BusConfig, *, period: float | None = None, receive_own_messages: bool = False
) -> can.BusABC:
    """Open the bus of ``bus_config``; python-can's own config files are ignored (``ignore_config``).

    ``period`` (s) is required for the simulated-time bus ('whih-sim'): each SYNC advances its
    clock by that much. Any failure raises :class:`BusError` naming interface and channel.
    ``udp_multicast`` (channel ``GROUP`` or ``GROUP@PORT``) is wrapped in an
    :class:`~firmware_iface.echo.EchoFilter`, since it echoes every frame to its sender.
    """
    where = f"interface {bus_config.interface!r}, channel {bus_config.channel!r}"
    if bus_config.interface == SIM_INTERFACE:
        if period is None:
            raise BusError(f"cannot open the simulated-time bus ({where}): period (=None) must be given")
        try:
            from firmware_iface.simbus import SimTimeBus  # noqa: PLC0415  (only when chosen)

            return SimTimeBus(bus_config.channel, period=period)
        except (ValueError, TypeError, can.CanError) as exc:
            raise BusError(f"cannot open CAN bus ({where}): {exc}") from exc
    extra: dict[str, Any] = {}
    channel = bus_config.channel
    multicast = bus_config.interface == "udp_multicast"
    if multicast:
        # "GROUP@PORT": python-can takes the port apart from the group (the channel)
        group, sep, port = channel.rpartition("@")
        if sep:
            if not port.isdigit() or not 1 <= int(port) <= 65535:
                raise BusError(f"cannot open CAN bus ({where}): port (={port!r}) must be in [1...65535]")
            channel, extra["port"] = group, int(port)
    try:
        bus = can.Bus(
            interface=bus_config.interface,
            channel=channel,
            bitrate=bus_config.bitrate,
            receive_own_messages=receive_own_messages,
            ignore_config=True,
            **extra,
        )
    except (can.CanError, ImportError, OSError, ValueError, TypeError, NotImplementedError) as exc:
        raise BusError(f"cannot open CAN bus ({where}): {exc}") from exc
    if multicast and not receive_own_messages:
        from firmware_iface.echo import EchoFilter  # noqa: PLC0415  (only when chosen)

        # python-can's udp_multicast names its channel "unknown": the faults that quote it would too
        return EchoFilter(bus, name=f"udp_multicast {bus_config.channel}")
    return bus


def simulated_time_bus(bus: can.BusABC | None, *, period: float) -> SimTimeBus:
    """The simulated-time bus to run on: ``bus`` if it is one, a new one if None.

    The one place that tells a simulated-time bus from any other (its stepping kernel is what
    simulated time advances); anything else is a ``ValueError`` naming it.
    """
    from firmware_iface.simbus import SimTimeBus  # noqa: PLC0415  (only when chosen)

    if bus is None:
        return SimTimeBus(SIM_INTERFACE, period=period)
    if not isinstance(bus, SimTimeBus):
        raise ValueError(
            f"bus (={bus!r}) must be the simulated-time bus ({SIM_INTERFACE!r}) for simulated time"
        )
    return bus


def kernel_of(bus: can.BusABC) -> SimKernel | None:
    """The stepping kernel behind ``bus`` when it is the simulated-time bus, else None.

    What runs in simulated time (the master's set-up listener, a silent SYNC producer, simulated
    drives) is handed the kernel from here; nothing else tells bus kinds apart.
    """
    from firmware_iface.simbus import SimTimeBus  # noqa: PLC0415  (only when chosen)

    return bus.kernel if isinstance(bus, SimTimeBus) else None
