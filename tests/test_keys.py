"""Operator keys on a pseudo-terminal: each key reaches its verb, refusals are shown with why."""

from __future__ import annotations

import os
import pty
import termios
import threading

from whih_control.errors import ProcedureError, SafetyError
from whih_control.keys import KEYS, OperatorKeys


class _Verbs:
    """Records the verbs called; ``resume`` is refused as a paused robot without enable would."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.done = threading.Event()

    def _call(self, verb: str) -> None:
        self.calls.append(verb)
        if len(self.calls) == len(KEYS):
            self.done.set()

    def pause(self) -> None:
        self._call("pause")

    def resume(self) -> None:
        self._call("resume")
        raise ProcedureError("resume: refused in phase 'paused' (enable released)")

    def acknowledge(self) -> None:
        self._call("acknowledge")

    def abort(self) -> None:
        self._call("abort")

    def confirm_crossing(self) -> None:
        self._call("confirm_crossing")


def test_every_key_reaches_its_verb_through_a_terminal() -> None:
    master, slave = pty.openpty()
    verbs = _Verbs()
    try:
        with os.fdopen(os.dup(slave), "r") as stream:
            before = termios.tcgetattr(slave)
            keys = OperatorKeys(verbs, stream, poll_s=0.01)
            with keys:
                os.write(master, b"prx")
                os.write(master, b"aqc")
                assert verbs.done.wait(10.0), verbs.calls
            assert termios.tcgetattr(slave) == before  # the terminal is put back as it was
        assert verbs.calls == ["pause", "resume", "acknowledge", "abort", "confirm_crossing"]
        assert ("resume", "refused in phase 'paused' (enable released)") in keys.answers
        assert keys.line == "[c] confirm_crossing accepted"
    finally:
        os.close(master)
        os.close(slave)


def test_an_unknown_key_says_which_keys_there_are() -> None:
    keys = OperatorKeys(_Verbs())
    keys.press("x")
    assert keys.line.startswith("key 'x': not a key (keys: p pause")
    assert keys.answers == []


def test_a_refusal_is_said_once() -> None:
    class _Refusing(_Verbs):
        def acknowledge(self) -> None:
            raise SafetyError("acknowledge refused: e-stop still pressed")

    keys = OperatorKeys(_Refusing())
    keys.press("a")
    assert keys.line == "[a] acknowledge refused: e-stop still pressed"
