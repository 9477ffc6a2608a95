"""The real-time cycle in a process of its own, the application's :class:`Robot` its proxy.

``Robot(cfg, clock="real", cycle="process")``: the same :class:`~whih_control.runtime.Runtime`
(its cycle thread, the bus, simulated drives if configured, the run folder) runs in a child
process started with ``multiprocessing`` (spawn). The application keeps a :class:`ProcessRuntime`
that sends each verb over a ``Pipe`` and returns its answer or raises its error, so that a busy
application thread competes with the cycle for a CPU, never for the interpreter lock
(``benchmarks/bench_attended.py`` measures both).

What differs from the thread: callables stay in the application (``wait(until=predicate)``,
``run_procedure(confirm=...)`` and ``progress`` are served there from :meth:`status` snapshots,
about every 10 ms); :attr:`Robot.runtime` is not reachable; Ctrl-C reaches the application only
(the child ignores SIGINT) and the ``with`` block's close stops the drives. If the application's
process goes away without closing, the child sees its pipe end and closes the robot (quick stop,
disable) by itself.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing as mp
import signal
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from whih_control.config import Config, load_config
from whih_control.errors import CommandTimeoutError, ProcedureError, SafetyError, WhihError
from whih_control.recorder import RunResult
from whih_control.runtime import WAIT_POLL_S, Progress, Runtime, check_max_time, check_time_bound
from whih_control.status import Status
from whih_control.types import TipMeasurement

__all__ = ["ProcessRuntime"]

_ERRORS: dict[str, type[Exception]] = {
    e.__name__: e
    for e in (CommandTimeoutError, ProcedureError, SafetyError, WhihError, ValueError, TypeError)
}
"""Errors a verb may raise, rebuilt by name in the application (the rest become WhihError)."""
_VERBS = frozenset(
    {
        "enable",
        "start_procedure",
        "run_procedure",
        "enable_and_run",
        "pause",
        "resume",
        "abort",
        "acknowledge",
        "confirm_crossing",
        "jog",
        "teleop",
        "set_inputs",
        "status",
        "wait",
        "time",
        "add_measurement",
    }
)
"""What the application may ask of the child's Runtime (nothing else of it is reachable)."""
_INLINE = frozenset({"status", "time", "add_measurement"})
"""Verbs answered on the child's reading thread: they never wait for a cycle."""
_START_TIMEOUT_S = 60.0
"""Spawning the child and importing the package (seconds; a busy machine is slow at it)."""


def _serve(conn: Connection, data: dict[str, Any], base_dir: str | None, kwargs: dict[str, Any]) -> None:
    """The child process: one Runtime, verbs from the pipe, each answered in its own thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the application's to handle
    send_lock = threading.Lock()

    def send(rid: int, ok: bool, value: Any) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):  # the application is gone
            conn.send((rid, ok, value))

    def answer(rid: int, verb: str, args: Sequence[Any], kw: dict[str, Any]) -> None:
        try:
            if verb not in _VERBS:
                raise WhihError(f"{verb}: not a verb of Robot")
            fn = getattr(rt, verb)
            value = fn(*args, **kw) if callable(fn) else fn
        except BaseException as exc:  # every call is answered, or the application waits for good
            send(rid, False, (type(exc).__name__, str(exc)))
        else:
            send(rid, True, value)

    try:
        # a Config holds read-only mappings that do not pickle: its plain form, validated again
        cfg = load_config(data, base_dir=None if base_dir is None else Path(base_dir))
        rt = Runtime(cfg, clock="real", **kwargs)
        rt.open()
    except Exception as exc:
        send(0, False, (type(exc).__name__, str(exc)))
        return
    send(0, True, None)
    try:
        while True:
            try:
                rid, verb, args, kw = conn.recv()
            except (EOFError, OSError):
                break  # the application's process ended without closing: stop the drives
            if verb == "close":
                break
            if verb in _INLINE:
                answer(rid, verb, args, kw)
            else:
                threading.Thread(target=answer, args=(rid, verb, args, kw), daemon=True).start()
    finally:
        try:
            rt.close()
        except Exception as exc:
            send(-1, False, (type(exc).__name__, str(exc)))
        else:
            send(-1, True, None)
        conn.close()


class _Call:
    __slots__ = ("done", "ok", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None


class ProcessRuntime:
    """The application's side of a real-time Runtime in a child process (see the module)."""

    def __init__(
        self,
        cfg: Config,
        *,
        bus: object = None,
        seed: int = 0,
        out: Path | None = None,
        inject: Sequence[str] = (),
        progress: Callable[[Progress], None] | None = None,
        auto_confirm: bool = False,
    ) -> None:
        if bus is not None:
            raise ValueError("cycle='process': bus (=a bus object) must be None (the child opens cfg.bus)")
        if isinstance(inject, str):
            raise TypeError(f"inject (={inject!r}) must be a list of fault specs, e.g. [{inject!r}]")
        # the same checks as in the child, here, so a bad argument is refused before anything starts
        Runtime(cfg, clock="real", seed=seed, out=out, inject=inject, auto_confirm=auto_confirm)
        self.cfg = cfg
        self._kwargs: dict[str, Any] = {
            "seed": seed,
            "out": out,
            "inject": list(inject),
            "auto_confirm": auto_confirm,
        }
        self._progress = progress
        self._auto_confirm = auto_confirm
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {0: _Call(), -1: _Call()}
        self._send_lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: Any = None
        self._reader: threading.Thread | None = None
        self._ended: str = ""

    # --- the pipe -------------------------------------------------------------------------------

    def _read(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            try:
                rid, ok, value = conn.recv()
            except (EOFError, OSError):
                break
            call = self._calls.pop(rid, None)
            if call is not None:
                call.ok, call.value = ok, value
                call.done.set()
        self._ended = self._ended or "the cycle process ended"
        for rid in list(self._calls):
            call = self._calls.pop(rid)
            call.value = ("WhihError", self._ended)
            call.done.set()

    def _send(self, verb: str, *args: Any, **kw: Any) -> _Call:
        if self._conn is None or self._ended:
            why = self._ended or "use it inside its with block"
            raise WhihError(f"{verb}: the robot is not open ({why})")
        rid = next(self._ids)
        call = self._calls[rid] = _Call()
        with self._send_lock:
            self._conn.send((rid, verb, args, kw))
        return call

    @staticmethod
    def _result(call: _Call) -> Any:
        if call.ok:
            return call.value
        name, text = call.value
        raise _ERRORS.get(name, WhihError)(text if name in _ERRORS else f"{name}: {text}")

    def _call(self, verb: str, *args: Any, **kw: Any) -> Any:
        call = self._send(verb, *args, **kw)
        call.done.wait()
        return self._result(call)

    # --- set-up and tear-down ---------------------------------------------------------------------

    def open(self) -> None:
        """Start the child process and open the robot there."""
        if self._proc is not None:
            raise WhihError("open: the robot is already open")
        ctx = mp.get_context("spawn")
        base = str(Path(self.cfg.source).parent) if self.cfg.source else None
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve,
            args=(child, self.cfg.to_dict(), base, self._kwargs),
            name="whih-cycle",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self._reader = threading.Thread(target=self._read, name="whih-cycle-pipe", daemon=True)
        self._reader.start()
        started = self._calls[0]
        if not started.done.wait(_START_TIMEOUT_S):
            self._kill()
            raise WhihError(f"open: the cycle process did not start within {_START_TIMEOUT_S:g} s")
        try:
            self._result(started)
        except BaseException:
            self._kill()
            raise

    def close(self) -> None:
        """Close the robot in the child (quick stop, disable, run folder), then end the child."""
        if self._proc is None:
            return
        closed = self._calls[-1]
        try:
            with contextlib.suppress(WhihError, OSError):
                self._send("close")
            # the safe stop and the run folder's last writes; then the child's pipe end closes
            closed.done.wait(60.0)
            self._proc.join(10.0)
        finally:
            self._kill()
        self._result(closed)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join()
        self._ended = self._ended or "the robot was closed"
        if self._conn is not None:
            self._conn.close()
        if self._reader is not None:
            self._reader.join(5.0)

    # --- verbs ------------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """Time of the latest cycle (the child's clock)."""
        t: float = self._call("time")
        return t

    def add_measurement(self, m: TipMeasurement) -> None:
        """Feed an external tip measurement (taken by the child's next cycle)."""
        if not isinstance(m, TipMeasurement):
            raise TypeError(f"add_measurement: m (={m!r}) must be a TipMeasurement")
        self._call("add_measurement", m)

    def enable(self, *, timeout: float | None = None) -> None:
        """As :meth:`Runtime.enable`."""
        check_time_bound("enable: timeout", timeout)
        self._call("enable", timeout=timeout)

    def start_procedure(self) -> None:
        """As :meth:`Runtime.start_procedure`."""
        self._call("start_procedure")

    def pause(self) -> None:
        """As :meth:`Runtime.pause`."""
        self._call("pause")

    def resume(self) -> None:
        """As :meth:`Runtime.resume`."""
        self._call("resume")

    def abort(self) -> None:
        """As :meth:`Runtime.abort`."""
        self._call("abort")

    def acknowledge(self) -> None:
        """As :meth:`Runtime.acknowledge`."""
        self._call("acknowledge")

    def confirm_crossing(self) -> None:
        """As :meth:`Runtime.confirm_crossing`."""
        self._call("confirm_crossing")

    def jog(self, axis: str, delta: float) -> None:
        """As :meth:`Runtime.jog`."""
        self._call("jog", axis, delta)

    def teleop(self, axis: str, velocity: float) -> None:
        """As :meth:`Runtime.teleop`."""
        self._call("teleop", axis, velocity)

    def set_inputs(self, *, enable_held: bool | None = None, estop: bool | None = None) -> None:
        """As :meth:`Runtime.set_inputs`."""
        self._call("set_inputs", enable_held=enable_held, estop=estop)

    def status(self) -> Status:
        """A snapshot the child took between two cycles."""
        status: Status = self._call("status")
        return status

    def step(self, n: int = 1) -> None:
        """Refused: real time cycles by itself."""
        raise WhihError("step: only in simulated time (clock='simulated'); real time cycles by itself")

    def wait(
        self,
        until: str | Callable[[Status], bool] | None = None,
        timeout: float | None = None,
    ) -> Status:
        """As :meth:`Runtime.wait`; a predicate is evaluated here, on snapshots."""
        if not callable(until):
            status: Status = self._call("wait", until, timeout)
            return status
        predicate = until

        def reached(s: Status) -> bool:
            return bool(predicate(s))

        return self._poll(reached, timeout, f"wait until {until!r}")

    def _poll(
        self,
        reached: Callable[[Status], bool],
        timeout: float | None,
        what: str,
        pending: _Call | None = None,
        confirm: Callable[[str], bool] | None = None,
    ) -> Status:
        check_time_bound("wait: timeout", timeout)
        status = self.status()
        end = math.inf if timeout is None else status.t + timeout
        last_progress = -math.inf
        p = self.cfg.procedure
        while True:
            if pending is not None and pending.done.is_set():
                return status
            if pending is None and reached(status):
                return status
            if status.t >= end:
                raise CommandTimeoutError(f"{what}: not reached within {timeout:g} s")
            if self._progress is not None and status.t - last_progress >= 0.1:
                last_progress = status.t
                self._progress(
                    Progress(
                        t=status.t,
                        phase=status.phase,
                        gap=status.gap,
                        ante_wire_tip=status.tips.get("ante_wire", math.nan),
                        lesion_length=p.lesion_length,
                        crossing_at=p.lesion_length + p.distal_margin,
                        cycle=status.cycle,
                    )
                )
            if confirm is not None and status.phase == "crossed" and confirm("crossed"):
                with contextlib.suppress(ProcedureError):  # e.g. enable released: asked again
                    self.confirm_crossing()
            if pending is not None:
                pending.done.wait(WAIT_POLL_S)
            else:
                threading.Event().wait(WAIT_POLL_S)
            status = self.status()

    def run_procedure(
        self,
        *,
        max_time: float | None = None,
        confirm: Callable[[str], bool] | None = None,
        hold_on_fault: bool = False,
    ) -> RunResult:
        """As :meth:`Runtime.run_procedure`; ``confirm`` and ``progress`` are served here."""
        return self._run("run_procedure", max_time, confirm, hold_on_fault)

    def enable_and_run(
        self,
        *,
        max_time: float | None = None,
        confirm: Callable[[str], bool] | None = None,
        hold_on_fault: bool = False,
    ) -> RunResult:
        """As :meth:`Runtime.enable_and_run`; ``confirm`` and ``progress`` are served here."""
        return self._run("enable_and_run", max_time, confirm, hold_on_fault)

    def _run(
        self,
        verb: str,
        max_time: float | None,
        confirm: Callable[[str], bool] | None,
        hold_on_fault: bool,
    ) -> RunResult:
        check_max_time(max_time)
        call = self._send(verb, max_time=max_time, hold_on_fault=hold_on_fault)
        if confirm is not None or self._progress is not None:
            self._poll(lambda s: False, None, verb, pending=call, confirm=confirm)
        call.done.wait()
        result: RunResult = self._result(call)
        return result
