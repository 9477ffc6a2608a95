"""Operator keys for ``whih run --realtime`` on a terminal.

``p`` pause, ``r`` resume, ``a`` acknowledge, ``q`` abort, ``c`` confirm crossing. Each key is
the robot's verb of that name, called from a thread of its own while the main thread waits for
the run; the answer (or why it was refused) is shown in the live line via :attr:`OperatorKeys.line`.
Only in real time: the robot's cycle thread takes the verbs.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, TextIO

from whih_control.errors import WhihError

__all__ = ["KEYS", "OperatorKeys"]


class _Verbs(Protocol):
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def acknowledge(self) -> None: ...
    def abort(self) -> None: ...
    def confirm_crossing(self) -> None: ...


KEYS: Mapping[str, str] = {
    "p": "pause",
    "r": "resume",
    "a": "acknowledge",
    "q": "abort",
    "c": "confirm_crossing",
}
"""Key -> verb."""

HELP = "keys: p pause, r resume, a acknowledge, q abort, c confirm crossing"


class OperatorKeys:
    """Reads single keys from ``stream`` (a terminal, put in cbreak mode) and calls the verbs.

    ``poll_s`` bounds how long the reader waits for a key before looking whether it is to stop.
    """

    def __init__(self, robot: _Verbs, stream: TextIO | None = None, *, poll_s: float = 0.05) -> None:
        self._robot = robot
        self._stream = sys.stdin if stream is None else stream
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved: list[Any] | None = None
        self.line = HELP
        """What the live line shows: the key help, or the last key's answer."""
        self.answers: list[tuple[str, str]] = []
        """(verb, answer) of every key pressed, in order."""

    @staticmethod
    def available(stream: TextIO | None = None) -> bool:
        """True when ``stream`` (stdin by default) is a terminal keys can be read from."""
        s = sys.stdin if stream is None else stream
        try:
            return s.isatty()
        except (ValueError, OSError):
            return False

    def __enter__(self) -> OperatorKeys:
        fd = self._stream.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._thread = threading.Thread(target=self._run, name="whih-keys", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._saved is not None:
            with contextlib.suppress(termios.error, ValueError, OSError):
                termios.tcsetattr(self._stream.fileno(), termios.TCSADRAIN, self._saved)

    def _run(self) -> None:
        fd = self._stream.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], self._poll_s)
            if not ready:
                continue
            data = os.read(fd, 1)
            if not data:
                return
            self.press(data.decode(errors="replace"))

    def press(self, key: str) -> None:
        """Act on one key (as if typed)."""
        verb = KEYS.get(key.lower())
        if verb is None:
            self.line = f"key {key!r}: not a key ({HELP})"
            return
        action: Callable[[], None] = getattr(self._robot, verb)
        try:
            action()
        except (WhihError, ValueError) as exc:
            text = str(exc)
            for prefix in (f"{verb} refused: ", f"{verb}: "):  # the line names the verb already
                if text.startswith(prefix):
                    text = text[len(prefix) :]
                    break
            answer = text if text.startswith("refused") else f"refused: {text}"
        else:
            answer = "accepted"
        self.answers.append((verb, answer))
        self.line = f"[{key}] {verb} {answer}"
