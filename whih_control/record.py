"""The run folder: CAN trace, telemetry, summary and plot, written off the cyclic path.

The cycle never formats strings or touches the disk: it packs CAN frames into a buffer that a
writer process turns into ``trace.asc``, and copies telemetry rows into a block that a writer
thread turns into CSV. In real time a full pipe or queue drops and counts (reported in the
summary); nothing blocks the cycle.

Files (docs/DESIGN.md section 3): ``trace.asc`` (python-can's ASC format) or ``trace.log``
(``candump -L``), flushed at least every 0.5 s; ``telemetry.csv`` (at most 100 Hz) and
``telemetry.mcap`` (the same rows as JSON channels, for Foxglove), flushed at least every 0.5 s of
run time; ``summary.json`` (written atomically), ``plot.png``.
``events.jsonl`` is written by :class:`whih_control.events.EventLog`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import can
import numpy as np

from whih_control import _trace_writer
from whih_control.telemetry_mcap import McapTelemetry

try:
    import fcntl
except ImportError:  # not POSIX: the pipe keeps the system's size
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Telemetry",
    "TraceRecorder",
    "plot_run",
    "read_telemetry",
    "recording_failure",
    "recording_losses",
    "write_json_atomic",
]


class TraceRecorder:
    """Writes every CAN frame it is handed to ``trace.asc`` (or ``trace.log``) through a writer process.

    The file's suffix picks the format, as python-can's ``Logger`` does: ``.asc`` is Vector ASC
    (``can.ASCWriter``), ``.log`` is ``candump -L`` (``can.CanutilsLogWriter``, what ``canplayer``
    replays), its frames on interface ``channel``.

    The cycle packs each frame into a fixed buffer (:meth:`record`, no objects kept) and hands a
    cycle's frames to the writer in one pipe write (:meth:`end_cycle`). The writer formats and
    writes in its own interpreter, so it never holds the cycle's interpreter lock, and it ends the
    file properly even when this process dies. ``blocking=False`` (real time): a pipe that is full
    drops the cycle's frames and counts them in ``dropped``, never waits. ``blocking=True``
    (simulated time): the cycle waits for the writer instead and nothing is dropped.
    """

    PIPE_BUF = select.PIPE_BUF
    """A pipe write up to this size is atomic: it goes in whole or (non-blocking) not at all."""
    BATCH_BYTES = 32_768
    """Simulated time: frames are written in batches of this size (a simulated run can be
    replayed from its seed, so a killed process loses at most this much of a trace it can
    rebuild; in real time every cycle is written as it ends)."""
    RECORD_BYTES = 22
    """A classical frame: header plus 8 data bytes (sizes the pipe for ``maxsize`` frames)."""
    START_TIMEOUT_S = 30.0
    """How long the writer may take to start and open the file (or to finish it at close)."""

    def __init__(
        self,
        path: Path,
        *,
        maxsize: int = 65_536,
        blocking: bool = False,
        channel: str = _trace_writer.CHANNEL,
    ) -> None:
        """Start the writer and wait until it has opened ``path`` (``OSError`` naming it if not).

        ``maxsize``: frames the pipe should hold; the OS caps it (Linux: ``pipe-max-size``,
        1 MiB by default), :attr:`pipe_bytes` says what it got. ``ValueError`` for a suffix that
        is not ``.asc`` or ``.log``.
        """
        if path.suffix not in _trace_writer.FORMATS:
            raise ValueError(
                f"trace path (={str(path)!r}): the suffix must be one of {_trace_writer.FORMATS}"
            )
        self.path = path
        self.dropped = 0
        self.written = 0
        can_block = hasattr(os, "set_blocking")  # no non-blocking pipes: every write waits
        self._blocking = blocking or not can_block
        self._size = self.BATCH_BYTES if self._blocking else min(self.PIPE_BUF, 4096)
        self._buf = bytearray(self._size)
        self._view = memoryview(self._buf)
        self._len = 0
        self._sent = 0
        self._frames = 0
        self._broken: OSError | None = None
        self._closed = False
        self.pipe_bytes = 0
        self._proc = subprocess.Popen(
            # -P: the writer's folder is not put on its import path; own session: the terminal's
            # Ctrl-C is for this process, which ends the trace when it is done
            [sys.executable, "-P", "-u", str(Path(_trace_writer.__file__)), str(path), channel],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._fd = self._proc.stdin.fileno()
            self.pipe_bytes = _grow_pipe(self._fd, maxsize * self.RECORD_BYTES)
            ready, _, _ = select.select([self._proc.stdout], [], [], self.START_TIMEOUT_S)
            if not ready or self._proc.stdout.read(1) != _trace_writer.READY:
                raise OSError(f"trace writer could not start on {path}: {self._stop_writer()}")
            if can_block:
                os.set_blocking(self._fd, self._blocking)
        except BaseException:
            if self._proc.returncode is None:
                self._stop_writer()
            raise

    @property
    def failure(self) -> str | None:
        """Why frames are no longer reaching ``trace.asc`` (the writer died, e.g. on a full
        disk), or None while they are. One ``waitpid`` without waiting: cheap enough to poll
        every cycle."""
        if self._closed:
            return None
        if self._broken is not None:
            return f"trace writer on {self.path} gone ({self._broken})"
        code = self._proc.poll()
        if code is not None:
            return f"trace writer on {self.path} exited (code {code})"
        return None

    def record(self, msg: can.Message, t: float, rx: bool) -> None:
        """Pack one frame stamped ``t`` (``msg`` may be reused by the caller right after)."""
        data = msg.data
        n = len(data)
        pos = self._len
        end = pos + _HEADER_SIZE + n
        if end > self._size:
            self.flush()
            pos = self._len  # 0 unless an interrupted write is still to be finished
            end = pos + _HEADER_SIZE + n
            if end > self._size:
                self.dropped += 1
                return
        flags = _RX if rx else 0
        if msg.is_extended_id or msg.is_remote_frame or msg.is_error_frame or msg.is_fd:
            flags |= (
                (_EXTENDED if msg.is_extended_id else 0)
                | (_REMOTE if msg.is_remote_frame else 0)
                | (_ERROR if msg.is_error_frame else 0)
                | (_FD if msg.is_fd else 0)
            )
        _pack_header(self._buf, pos, t, msg.arbitration_id, flags, msg.dlc, n)
        self._buf[pos + _HEADER_SIZE : end] = data
        self._len = end
        self._frames += 1

    def end_cycle(self) -> None:
        """A cycle ended: real time hands its frames over now, simulated time once a batch is full."""
        if not self._blocking or self._len > self._size - 4096:
            self.flush()

    def flush(self) -> None:
        """Hand the frames packed so far to the writer.

        Non-blocking, the buffer is at most ``PIPE_BUF``: it goes in whole or not at all. Blocking,
        a write cut short (e.g. by Ctrl-C) resumes where it stopped on the next call, so the
        writer never sees a record twice or half.
        """
        if self._len == 0:
            return
        try:
            if self._broken is not None:
                self.dropped += self._frames
            elif self._blocking:
                while self._sent < self._len:
                    self._sent += os.write(self._fd, self._view[self._sent : self._len])
                self.written += self._frames
            else:
                if os.write(self._fd, self._view[: self._len]) != self._len:
                    # not atomic after all: the stream is cut inside a record, stop feeding it
                    raise OSError("short write to the trace writer")
                self.written += self._frames
        except BlockingIOError:
            self.dropped += self._frames
        except OSError as exc:  # the writer died: reported by close(), the cycle goes on
            self._broken = exc
            self.dropped += self._frames
        self._len = self._sent = self._frames = 0

    def close(self) -> None:
        """Flush, let the writer finish the file, and raise if it failed. Safe to call twice;
        frames recorded afterwards are counted as dropped."""
        if self._closed:
            return
        self._closed = True
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            if self._broken is None and self._proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.set_blocking(self._fd, True)
                self._blocking = True
                self.flush()
            with contextlib.suppress(OSError):
                stdin.close()
        self._proc.stdin = None  # closed here; communicate() must not touch it
        broken = self._broken
        self._broken = OSError("the trace is closed")
        try:
            _, err = self._proc.communicate(timeout=self.START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise OSError(f"trace writer on {self.path} did not finish: {self._stop_writer()}") from None
        if self._proc.returncode != 0 or broken is not None:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or [str(broken or "killed")]
            raise OSError(f"trace writer failed on {self.path} (exit {self._proc.returncode}): {last[0]}")

    def _stop_writer(self) -> str:
        """Kill the writer and return the last line it printed to stderr."""
        self._proc.kill()
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            self._proc.stdin = None
        _, err = self._proc.communicate()
        lines = err.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit {self._proc.returncode}"


def _grow_pipe(fd: int, want: int) -> int:
    """Ask for a pipe of ``want`` bytes, at most the system's limit; returns what it has."""
    if fcntl is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return 0  # not Linux: the system's size
    try:
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        limit = want
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(want, limit))
    return int(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))


_HEADER_SIZE = _trace_writer.HEADER.size
_pack_header = _trace_writer.HEADER.pack_into
_RX, _EXTENDED, _REMOTE, _ERROR, _FD = (
    _trace_writer.RX,
    _trace_writer.EXTENDED,
    _trace_writer.REMOTE,
    _trace_writer.ERROR,
    _trace_writer.FD,
)


class Telemetry:
    """Fixed-column telemetry at a bounded rate into ``telemetry.csv`` (and ``telemetry.mcap``).

    ``sample(t, values)`` copies one row into a preallocated block; rows go to a writer thread
    when a block is full and at least every :attr:`FLUSH_INTERVAL_S` of run time, and the
    writer flushes the files after each hand-over. Rows closer than ``1/rate_hz`` to the
    previous row are skipped. With ``mcap``, the writer also writes each row as one message per
    signal group (:mod:`whih_control.telemetry_mcap`) and follows ``events`` (the run's
    ``events.jsonl``) into its ``/events`` channel.
    """

    BLOCK_ROWS = 1024
    FLUSH_INTERVAL_S = 0.5
    """Rows reach the files at least this often in run time (simulated time runs faster)..."""
    HANDOFF_S = 0.25
    """...and at least this often in wall time, so a killed run keeps every row older than about
    twice this."""
    PRECISE = ("t", "target_", "actual_")
    """Columns written with 10 significant digits (time, and positions to well below a count)."""

    def __init__(
        self,
        path: Path,
        columns: Sequence[str],
        *,
        rate_hz: float,
        labels: Mapping[str, Sequence[str]] | None = None,
        mcap: Path | None = None,
        events: Path | None = None,
        blocking: bool = False,
    ) -> None:
        """``labels`` maps a column to names for its integer codes (e.g. phase names).
        ``blocking`` (simulated time): a hand-over first waits for the previous one to be written,
        so the writer never falls behind a cycle that runs faster than the wall clock."""
        self.path = path
        self.columns = ("t", *columns)
        self._period = 1.0 / rate_hz
        self._next_t = -np.inf
        self._handover_t = -np.inf
        self._labels = {self.columns.index(k): list(v) for k, v in (labels or {}).items()}
        self._formats = [".10g" if c.startswith(self.PRECISE) else ".6g" for c in self.columns]
        self._block = np.empty((self.BLOCK_ROWS, len(self.columns)))
        self._free: queue.SimpleQueue[np.ndarray[Any, Any]] = queue.SimpleQueue()
        for _ in range(3):  # blocks the writer hands back; the cycle allocates only if it lags
            self._free.put(np.empty_like(self._block))
        self._row = 0
        self._start = 0
        self.rows = 0
        self._queue: queue.Queue[tuple[np.ndarray[Any, Any], int, int] | None] = queue.Queue()
        self._file = path.open("w", newline="", encoding="utf-8")
        csv.writer(self._file).writerow(self.columns)
        self._file.flush()
        self.mcap: McapTelemetry | None = None
        if mcap is not None:
            try:
                self.mcap = McapTelemetry(mcap, self.columns, labels=self._labels, events=events)
            except BaseException:
                self._file.close()
                raise
        self.error: BaseException | None = None
        """What stopped the writer thread, if anything did (raised again by :meth:`close`)."""
        self.dropped = 0
        """Rows not written because the writer had failed."""
        self._closed = False
        self._handoff = time.monotonic()
        self._blocking = blocking
        self._thread = threading.Thread(target=self._run, name="whih-telemetry", daemon=True)
        self._thread.start()

    def due(self, t: float) -> bool:
        """True when a row at ``t`` would be kept (lets the caller skip gathering values)."""
        return t >= self._next_t

    def sample(self, t: float, values: Sequence[float]) -> None:
        """Record one row at time ``t`` if it is due."""
        if t < self._next_t:
            return
        self._next_t = t + self._period * 0.999
        if self.error is not None:
            self.dropped += 1  # nobody writes them: a RECORDING fault says so (see failure)
            return
        row = self._block[self._row]
        row[0] = t
        row[1:] = values
        self._row += 1
        self.rows += 1
        if (
            self._row == self.BLOCK_ROWS
            or t >= self._handover_t
            or time.monotonic() - self._handoff >= self.HANDOFF_S
        ):
            self._hand_over(t)

    def _hand_over(self, t: float) -> None:
        """Give the rows not handed over yet to the writer (it reads rows the cycle is done with)."""
        if self._blocking:
            self._queue.join()  # at most one hand-over in flight: nothing older waits in memory
        self._queue.put((self._block, self._start, self._row))
        self._handover_t = t + self.FLUSH_INTERVAL_S
        self._handoff = time.monotonic()
        if self._row == self.BLOCK_ROWS:
            try:
                self._block = self._free.get_nowait()
            except queue.Empty:
                self._block = np.empty_like(self._block)
            self._row = 0
        self._start = self._row

    @property
    def failure(self) -> str | None:
        """Why rows are no longer reaching ``telemetry.csv`` (the writer thread failed, e.g. on
        a full disk, or died), or None while they are."""
        if self._closed:
            return None
        if self.error is not None:
            return f"telemetry writer on {self.path} failed ({self.error})"
        if not self._thread.is_alive():
            return f"telemetry writer on {self.path} is not running"
        return None

    def _run(self) -> None:
        try:
            self._write_all()
        except BaseException as exc:  # kept for close(), which raises it
            self.error = exc
            while self._queue.get() is not None:  # let the cycle's hand-overs go nowhere
                self._queue.task_done()
            self._queue.task_done()

    def _write_all(self) -> None:
        writer = csv.writer(self._file)
        labels = self._labels
        formats = self._formats
        mcap = self.mcap
        while (item := self._queue.get()) is not None:
            try:
                self._write_rows(item, writer, labels, formats, mcap)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _write_rows(
        self,
        item: tuple[np.ndarray[Any, Any], int, int],
        writer: Any,
        labels: Mapping[int, Sequence[str]],
        formats: Sequence[str],
        mcap: McapTelemetry | None,
    ) -> None:
        """Write one hand-over: CSV rows, MCAP messages, new events; then flush both files."""
        block, start, stop = item
        rows = block[start:stop].tolist()
        for k, row in enumerate(rows):
            writer.writerow(
                [labels[i][int(v)] if i in labels else format(v, formats[i]) for i, v in enumerate(row)]
            )
            if mcap is not None:
                mcap.write_rows((row,))
            if k % 8 == 7:
                # hand the interpreter lock over between short stretches: a block is tens of
                # ms of formatting, which must not stand between a SYNC and the drives' answer
                time.sleep(0)
        if stop == self.BLOCK_ROWS:
            self._free.put(block)  # the cycle has moved on to another block
        self._file.flush()
        if mcap is not None:
            mcap.poll_events()
            mcap.flush()

    def wait_written(self) -> None:
        """Block until the writer has written and flushed every row handed over so far."""
        if self._thread.is_alive():
            self._queue.join()

    def close(self) -> None:
        """Write the remaining rows and close the files; raises what stopped the writer. Safe to
        call twice."""
        if self._closed:
            return
        self._closed = True
        self._next_t = np.inf  # rows sampled after close (the closing cycles) are not kept
        if self._thread.is_alive():
            if self._row > self._start:
                self._queue.put((self._block, self._start, self._row))
                self._start = self._row
            self._queue.put(None)
            self._thread.join()
        try:
            if self.mcap is not None:
                self.mcap.close(finish=self.error is None)
        finally:
            self._file.close()
        if self.error is not None:
            raise OSError(f"telemetry writer failed on {self.path}: {self.error}") from self.error


def recording_failure(*recorders: TraceRecorder | Telemetry | None) -> str | None:
    """The first failure of the given recorders (None ones skipped), or None: polled by the
    cycle, which makes it a RECORDING fault."""
    for r in recorders:
        if r is not None and (why := r.failure) is not None:
            return why
    return None


def recording_losses(
    trace: TraceRecorder | None, telemetry: Telemetry | None, failures: Sequence[str]
) -> dict[str, Any]:
    """What the run folder is missing, for ``summary.json``: each recorder's failure and the
    frames/rows it dropped."""
    lost: dict[str, Any] = {"failures": list(failures)}
    if trace is not None:
        lost["trace_frames_dropped"] = trace.dropped
    if telemetry is not None:
        lost["telemetry_rows_dropped"] = telemetry.dropped
    return lost


def read_telemetry(path: Path) -> dict[str, list[Any]]:
    """Columns of a ``telemetry.csv`` (numbers as float, labelled columns as str).

    An unfinished last row (a run cut short) is left out; a short row anywhere else is a
    ``ValueError`` naming its line."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path.name}: empty (no header)")
    header = rows[0]
    cols: dict[str, list[Any]] = {h: [] for h in header}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            if number == len(rows):
                break
            raise ValueError(f"{path.name} line {number}: {len(row)} fields, the header has {len(header)}")
        for h, v in zip(header, row, strict=True):
            try:
                cols[h].append(float(v))
            except ValueError:
                cols[h].append(v)
    return cols


def _strict_json(value: Any) -> Any:
    """``value`` with NaN and the infinities as None: strict JSON (``null``) that every parser
    reads, where Python's NaN token is not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write strict JSON (a value not measured, NaN, is ``null``) through a temporary file, fsync
    and rename: never a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(_strict_json(data), f, indent=2, sort_keys=False, default=str, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def plot_run(
    telemetry_csv: Path,
    out_png: Path,
    *,
    lesion_length: float | None,
    gap_window: tuple[float, float, float] | None,
    force_limits: Mapping[str, tuple[float, float]] | None,
    crossing_at: float | None = None,
    title: str = "",
) -> None:
    """Plot a run: MC gap against its window, tips against the lesion, forces, phases shaded.

    ``None`` for the lesion, the gap window or the force limits leaves that overlay out (a run
    folder without its summary); forces are then drawn for every ``force_`` column."""
    # imported here: only runs that write a plot pay for matplotlib's import time
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    cols = read_telemetry(telemetry_csv)
    t = np.asarray(cols["t"], dtype=float)
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True, constrained_layout=True)
    phases = cols.get("phase", [])
    _shade_phases(axes, t, phases)
    # before calibration the estimate means nothing
    unknown = np.array([p in ("idle", "preflight") for p in phases], dtype=bool)
    for key in [k for k in cols if k in {"gap", "coupling"} or k.startswith("tip_")]:
        col = np.asarray(cols[key], dtype=float)
        if unknown.size == col.size:
            col[unknown] = np.nan
        cols[key] = list(col)

    ax = axes[0]
    g_max = 0.0
    if gap_window is not None:
        g_min, g_target, g_max = gap_window
        ax.axhspan(g_min, g_max, color="tab:green", alpha=0.06, label="hard window")
        ax.axhspan(g_target - 1.0, g_target + 1.0, color="tab:green", alpha=0.15, label="target ± 1 mm")
        ax.axhline(g_target, color="tab:green", lw=0.8, ls="--")
    ax.plot(t, cols["gap"], color="k", lw=1.2, label="MC gap (estimate)")
    if "gap_true" in cols:
        ax.plot(t, cols["gap_true"], color="tab:gray", lw=0.8, ls=":", label="MC gap (true)")
    ax.set_ylabel("gap (mm)")
    gaps = np.asarray(cols["gap"], dtype=float)
    ax.set_ylim(0, max(g_max * 1.1, (float(np.nanmax(gaps)) if np.isfinite(gaps).any() else 0.0) + 1))
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[1]
    if lesion_length is not None:
        ax.axhspan(0.0, lesion_length, color="tab:red", alpha=0.08, label=f"CTO (L = {lesion_length:g} mm)")
    styles = {
        "ante_wire": ("tab:blue", "-"),
        "ante_mc": ("tab:blue", "--"),
        "retro_wire": ("tab:orange", "-"),
        "retro_mc": ("tab:orange", "--"),
    }
    for axis, (color, ls) in styles.items():
        key = f"tip_{axis}"
        if key in cols:
            ax.plot(t, cols[key], color=color, ls=ls, lw=1.1, label=axis.replace("_", " "))
    if crossing_at is not None:
        ax.axhline(crossing_at, color="tab:green", lw=0.8, ls="--", label="crossed (L + margin)")
    ax.set_ylabel("tip position s (mm)")
    ax.legend(loc="upper left", fontsize=8, ncols=3)

    ax = axes[2]
    if force_limits is None:
        limits: Mapping[str, tuple[float, float] | None] = {
            k.removeprefix("force_"): None for k in cols if k.startswith("force_")
        }
    else:
        limits = force_limits
    for axis, limit in limits.items():
        key = f"force_{axis}"
        if key in cols:
            (line,) = ax.plot(t, cols[key], lw=1.0, label=axis)
            if limit is not None:
                ax.axhline(limit[0], color=line.get_color(), lw=0.6, ls=":")
    ax.set_ylabel("axial force (N)")
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    if title:
        fig.suptitle(title)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def _shade_phases(axes: Any, t: np.ndarray[Any, Any], phases: Sequence[Any]) -> None:
    """Shade phases; hand-in-hand sub-steps form one labelled span, rewinds stand out in red."""
    if len(phases) == 0:
        return
    names = [str(p) for p in phases]
    groups = ["hand in hand" if n.startswith("hand_in_hand") else n for n in names]
    colors = ["#f0f0f0", "#dde8f7"]
    start = 0
    k = 0
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[start]:
            end = t[i - 1] if i == len(groups) else t[i]
            for ax in axes:
                ax.axvspan(t[start], end, color=colors[k % 2], zorder=-10, lw=0)
            axes[0].text(
                (t[start] + end) / 2,
                1.01,
                groups[start],
                transform=axes[0].get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=30,
            )
            k += 1
            start = i
    rewinding = np.array([n == "hand_in_hand_rewind" for n in names])
    if rewinding.any():
        for ax in axes:
            ax.fill_between(
                t,
                0,
                1,
                where=rewinding,
                color="tab:red",
                alpha=0.15,
                transform=ax.get_xaxis_transform(),
                lw=0,
            )
