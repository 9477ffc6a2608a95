"""The run folder: CAN trace, telemetry, summary and plot, written off the cyclic path.

The cycle only hands references to background writer threads through bounded queues: it never
formats strings or touches the disk. A full queue drops the item and counts it (reported in the
summary); nothing blocks the cycle.

Files (DESIGN section 3): ``trace.asc`` (python-can ASC writer, flushed at least every 0.5 s),
``telemetry.csv`` (at most 100 Hz), ``summary.json`` (written atomically), ``plot.png``.
``events.jsonl`` is written by :class:`whih_control.events.EventLog`.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import can
import numpy as np

__all__ = ["Telemetry", "TraceRecorder", "plot_run", "read_telemetry", "write_json_atomic"]

FLUSH_INTERVAL_S = 0.5


class TraceRecorder:
    """Writes every CAN frame it is handed to ``trace.asc`` from a background thread.

    ``put`` never blocks and takes no lock: frames go on a deque (appends and pops are atomic in
    CPython, one producer and one consumer), bounded at ``maxsize``; a frame that finds it full is
    dropped and counted in ``dropped``. The file is flushed at least every 0.5 s of wall time and
    on ``close``. Plain data frames are formatted here exactly as python-can's ``ASCWriter`` does
    (a test holds the two byte for byte) at a fifth of its cost; the writer itself does the
    header, error, remote and FD frames.
    """

    POLL_S = 0.02
    """How long the writer sleeps when nothing is queued."""

    def __init__(self, path: Path, *, maxsize: int = 65_536, channel: str = "whih") -> None:
        self.path = path
        self.dropped = 0
        self.written = 0
        self._channel = channel
        self._maxsize = maxsize
        self._pending: deque[can.Message] = deque()
        self._stop = threading.Event()
        self._writer = can.ASCWriter(str(path))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="whih-trace", daemon=True)
        self._thread.start()

    def put(self, msg: can.Message) -> None:
        """Queue one frame (the caller must not mutate it afterwards)."""
        if len(self._pending) >= self._maxsize:
            self.dropped += 1
        else:
            self._pending.append(msg)

    def _run(self) -> None:
        pending = self._pending
        writer = self._writer
        write = writer.file.write
        channel = writer.channel
        last_flush = time.monotonic()
        try:
            while True:
                if not pending:
                    if self._stop.is_set() and not pending:
                        break
                    self._stop.wait(self.POLL_S)
                n = 0
                while pending and n < 4096:  # a bounded batch, then check the flush clock
                    msg = pending.popleft()
                    n += 1
                    if (
                        writer.header_written
                        and not (msg.is_error_frame or msg.is_remote_frame or msg.is_fd)
                        and not msg.is_extended_id
                    ):
                        ts = msg.timestamp
                        if ts >= writer.started:
                            ts -= writer.started
                        write(
                            f"{ts: 9.6f} {channel}  {msg.arbitration_id:<15X} "
                            f"{'Rx' if msg.is_rx else 'Tx':<4} d {msg.dlc:x} "
                            f"{msg.data.hex(' ').upper()}\n"
                        )
                    else:
                        msg.channel = self._channel
                        writer.on_message_received(msg)
                self.written += n
                now = time.monotonic()
                if now - last_flush >= FLUSH_INTERVAL_S:
                    writer.file.flush()
                    last_flush = now
        except BaseException as exc:  # reported by close(); the cycle must not die of a full disk
            self._error = exc
        finally:
            self._writer.stop()

    def close(self) -> None:
        """Write what is queued, close the file; raises what the writer thread met, if anything."""
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise OSError(f"trace writer failed on {self.path}: {self._error}") from self._error


class Telemetry:
    """Fixed-column telemetry at a bounded rate into ``telemetry.csv``.

    ``sample(t, values)`` copies one row into a preallocated block; full blocks go to a writer
    thread. Rows closer than ``1/rate_hz`` to the previous row are skipped.
    """

    BLOCK_ROWS = 1024

    def __init__(
        self,
        path: Path,
        columns: Sequence[str],
        *,
        rate_hz: float,
        labels: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``labels`` maps a column to names for its integer codes (e.g. phase names)."""
        self.path = path
        self.columns = ("t", *columns)
        self._period = 1.0 / rate_hz
        self._next_t = -np.inf
        self._labels = {self.columns.index(k): list(v) for k, v in (labels or {}).items()}
        self._block = np.empty((self.BLOCK_ROWS, len(self.columns)))
        self._row = 0
        self.rows = 0
        self._queue: queue.Queue[np.ndarray[Any, Any] | None] = queue.Queue()
        self._file = path.open("w", newline="", encoding="utf-8")
        csv.writer(self._file).writerow(self.columns)
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
        row = self._block[self._row]
        row[0] = t
        row[1:] = values
        self._row += 1
        self.rows += 1
        if self._row == self.BLOCK_ROWS:
            self._queue.put(self._block)
            self._block = np.empty_like(self._block)
            self._row = 0

    def _run(self) -> None:
        writer = csv.writer(self._file)
        while (block := self._queue.get()) is not None:
            for row in block:
                writer.writerow(
                    [self._labels[i][int(v)] if i in self._labels else f"{v:.6g}" for i, v in enumerate(row)]
                )
            self._file.flush()

    def close(self) -> None:
        """Write the remaining rows and close the file."""
        if self._thread.is_alive():
            if self._row:
                self._queue.put(self._block[: self._row].copy())
                self._row = 0
            self._queue.put(None)
            self._thread.join()
        self._file.close()


def read_telemetry(path: Path) -> dict[str, list[Any]]:
    """Columns of a ``telemetry.csv`` (numbers as float, labelled columns as str)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        cols: dict[str, list[Any]] = {h: [] for h in header}
        for row in reader:
            for h, v in zip(header, row, strict=True):
                try:
                    cols[h].append(float(v))
                except ValueError:
                    cols[h].append(v)
    return cols


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON through a temporary file, fsync and rename: never a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def plot_run(
    telemetry_csv: Path,
    out_png: Path,
    *,
    lesion_length: float,
    gap_window: tuple[float, float, float],
    force_limits: Mapping[str, tuple[float, float]],
    crossing_at: float | None = None,
    title: str = "",
) -> None:
    """Plot a run: MC gap against its window, tips against the lesion, forces, phases shaded."""
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

    g_min, g_target, g_max = gap_window
    ax = axes[0]
    ax.axhspan(g_min, g_max, color="tab:green", alpha=0.06, label="hard window")
    ax.axhspan(g_target - 1.0, g_target + 1.0, color="tab:green", alpha=0.15, label="target ± 1 mm")
    ax.axhline(g_target, color="tab:green", lw=0.8, ls="--")
    ax.plot(t, cols["gap"], color="k", lw=1.2, label="MC gap (estimate)")
    if "gap_true" in cols:
        ax.plot(t, cols["gap_true"], color="tab:gray", lw=0.8, ls=":", label="MC gap (true)")
    ax.set_ylabel("gap (mm)")
    ax.set_ylim(0, max(g_max * 1.1, float(np.nanmax(np.asarray(cols["gap"], dtype=float))) + 1))
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[1]
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
    for axis, (alarm, _stop) in force_limits.items():
        key = f"force_{axis}"
        if key in cols:
            (line,) = ax.plot(t, cols[key], lw=1.0, label=axis)
            ax.axhline(alarm, color=line.get_color(), lw=0.6, ls=":")
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
