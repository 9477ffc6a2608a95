"""A bus handle that drops the echoes of its own frames.

python-can's ``udp_multicast`` interface loops every frame back to the socket that sent it (its
``receive_own_messages=False`` is not implemented). A CANopen master that heard its own SYNC,
RPDOs and heartbeat would take them for another node's (a collision); a drive would hear its
own TPDOs. :class:`EchoFilter` remembers what its handle sent and drops each echo once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import can

__all__ = ["EchoFilter"]


class EchoFilter(can.BusABC):
    """Wraps ``bus``: ``send`` notes the frame, ``recv`` drops the first matching frame received.

    A frame of another node identical to one just sent (same COB-ID and data) is taken for the
    echo and the echo, arriving later, for the other node's: the count of frames is right, so
    a master still sees one frame too many on a COB-ID it owns (a collision).
    """

    MAX_PENDING = 4096
    """Echoes awaited at most; an interface that stops echoing cannot make this grow."""

    def __init__(self, bus: can.BusABC, *, name: str | None = None, **kwargs: Any) -> None:
        """``name``: what ``channel_info`` calls the wrapped interface (default its own
        ``channel_info``)."""
        super().__init__(channel=str(getattr(bus, "channel", "")), **kwargs)
        self.bus = bus
        self.channel_info = f"{name or bus.channel_info} (own echoes dropped)"
        self._pending: dict[tuple[int, bytes], int] = {}
        self._lock = threading.Lock()

    @property
    def state(self) -> can.BusState:
        """The wrapped interface's state."""
        return self.bus.state

    @state.setter
    def state(self, new_state: can.BusState) -> None:
        self.bus.state = new_state

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Send through the wrapped bus, expecting its echo."""
        key = (msg.arbitration_id, bytes(msg.data))
        with self._lock:
            if len(self._pending) >= self.MAX_PENDING:
                self._pending.clear()
            self._pending[key] = self._pending.get(key, 0) + 1
        self.bus.send(msg, timeout)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            msg = self.bus.recv(remaining)
            if msg is None:
                return None, False
            key = (msg.arbitration_id, bytes(msg.data))
            with self._lock:
                n = self._pending.get(key, 0)
                if n:
                    if n == 1:
                        del self._pending[key]
                    else:
                        self._pending[key] = n - 1
                    continue
            return msg, False

    def shutdown(self) -> None:
        """Shut the wrapped bus down."""
        self.bus.shutdown()
        super().shutdown()
