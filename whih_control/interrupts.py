"""Ctrl-C while a robot is open: never between two drives' frames, never before the safe stop.

The runtime installs :class:`InterruptGuard` in place of Python's default SIGINT handler (main
thread only: signals go nowhere else). What a Ctrl-C does depends on the guard's :class:`Mode`:

``RUNNING``     between robot calls or while the application waits: ``KeyboardInterrupt`` at once
``IN_CYCLE``    a cycle running on the handler's thread: held, raised when the cycle ends
``UNWINDING``   one interrupt is already on its way out: held until close has stopped the drives
``CLOSING``     the safe stop is running: held, raised (or handed to the application's handler)
                once the drives are stopped and the bus is shut down
``SAFE``        the drives are stopped: at once again, so a hung close step can be left

In real time the cycle runs on its own thread and is never interrupted; the application's thread
(waiting for a verb's answer) gets the interrupt. In simulated time the caller's thread runs the
cycles, so the guard holds a Ctrl-C until the cycle that runs ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from enum import Enum, auto
from types import CodeType, FrameType

__all__ = ["HOLD_CODES", "InterruptGuard", "Mode", "sigint_held"]

HOLD_CODES: set[CodeType] = set()
"""Functions whose first steps a Ctrl-C must not cut (the ones that lead into the safe stop)."""


class Mode(Enum):
    """What the guard does with a Ctrl-C now (see the module docstring)."""

    RUNNING = auto()
    IN_CYCLE = auto()
    UNWINDING = auto()
    CLOSING = auto()
    SAFE = auto()


@contextlib.contextmanager
def sigint_held() -> Iterator[Callable[[], None]]:
    """Hold SIGINT inside the block; the yielded function delivers a held one afterwards.

    Main thread only. An ignored SIGINT stays ignored; a held one is handed to the handler that
    was in place (Python's default raises ``KeyboardInterrupt``).
    """
    got: list[int] = []
    previous = None
    installed = False
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
            installed = True

    def deliver() -> None:
        if not got:
            return
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signal.SIGINT, None)
        else:
            raise KeyboardInterrupt

    try:
        yield deliver
    finally:
        if installed:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


class InterruptGuard:
    """The runtime's SIGINT handler and the mode it answers by (see the module docstring)."""

    def __init__(self) -> None:
        self.mode = Mode.RUNNING
        self.pending = False
        """A Ctrl-C arrived while held and has not been raised yet."""
        self.installed = False
        self._thread = 0

    def install(self) -> None:
        """Take over SIGINT if Python's default handler is in place (main thread only)."""
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            signal.signal(signal.SIGINT, self.on_sigint)
            self.installed = True
            self._thread = threading.get_ident()

    def release(self) -> None:
        """Give SIGINT back to Python's default handler, unless the application took it since."""
        if not self.installed:
            return
        self.installed = False
        with contextlib.suppress(ValueError):  # not the main thread: it cannot be put back here
            if signal.getsignal(signal.SIGINT) == self.on_sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """The handler itself."""
        if self.mode is Mode.SAFE:
            raise KeyboardInterrupt
        if self.mode is not Mode.RUNNING or (frame is not None and frame.f_code in HOLD_CODES):
            self.pending = True
            return
        self.mode = Mode.UNWINDING
        raise KeyboardInterrupt

    def enter_cycle(self) -> None:
        """A cycle starts; only the handler's own thread holds Ctrl-C (another's cannot)."""
        if self.installed and self.mode is Mode.RUNNING and threading.get_ident() == self._thread:
            self.mode = Mode.IN_CYCLE

    def leave_cycle(self) -> bool:
        """A cycle ended; True when a Ctrl-C held during it is to be raised now."""
        if self.mode is Mode.IN_CYCLE:
            self.mode = Mode.RUNNING
        if not self.pending or self.mode is not Mode.RUNNING:
            return False
        self.pending = False
        self.mode = Mode.UNWINDING
        return True

    def unwinding(self) -> None:
        """An interrupt is on its way out (also one the application raised itself)."""
        if self.mode in (Mode.RUNNING, Mode.IN_CYCLE):
            self.mode = Mode.UNWINDING

    def resumed(self) -> None:
        """The application caught an interrupt and calls the robot again."""
        if self.mode is Mode.UNWINDING:
            self.mode = Mode.RUNNING

    @contextlib.contextmanager
    def closing(self) -> Iterator[None]:
        """Hold Ctrl-C through a close; raise a held one at the end (after any close error)."""
        self.mode = Mode.CLOSING
        try:
            yield
        finally:
            pending, self.pending = self.pending, False
            self.release()
            self.mode = Mode.RUNNING
            if pending:
                raise KeyboardInterrupt  # with a close error, if any, as its context

    def drives_safe(self) -> None:
        """The drives are stopped: a further Ctrl-C may leave a close step that hangs."""
        if self.mode is Mode.CLOSING:
            self.mode = Mode.SAFE
