"""``telemetry.mcap``: the telemetry rows as JSON messages with JSON schemas, for Foxglove.

Written by the telemetry writer thread (:class:`whih_control.record.Telemetry`), never by the
cycle. Every row of ``telemetry.csv`` becomes one message on each signal-group channel, stamped
with the row's run time; the lines of ``events.jsonl`` go to ``/events`` as they reach the disk
(the writer reads the event log's file, so the cycle does nothing for it). The file is written
with the ``mcap`` library: chunked, zstd-compressed, indexed, so Foxglove and ``mcap`` readers
seek in it; each flush closes a chunk, so a run cut short keeps what was flushed.

Channels (topic: message):

- ``/phase``: ``{"phase": name}``; ``/gap``: ``{"gap", "gap_true"}`` mm; ``/coupling``:
  ``{"coupling"}`` mm;
- ``/tips``, ``/forces``, ``/targets``, ``/actual``: ``{axis: value}`` (mm or deg, N);
- ``/drive_states``: ``{"state": {axis: CiA 402 state name}, "statusword": {axis: int}}``;
- ``/events``: one event-log line, as written (``seq``, ``t``, ``kind``, ... fields).

Non-finite numbers (an estimate not made yet) are ``null``: JSON has no NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mcap.writer import CompressionType, Writer

__all__ = ["EVENTS_TOPIC", "GROUPS", "McapTelemetry", "channel_groups"]

EVENTS_TOPIC = "/events"

GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (topic, column prefix or name, json path of the value under the message: "" = the suffix)
    ("/phase", "phase", ("phase",)),
    ("/gap", "gap", ("gap",)),
    ("/gap", "gap_true", ("gap_true",)),
    ("/coupling", "coupling", ("coupling",)),
    ("/tips", "tip_", ("",)),
    ("/forces", "force_", ("",)),
    ("/targets", "target_", ("",)),
    ("/actual", "actual_", ("",)),
    ("/drive_states", "state_", ("state", "")),
    ("/drive_states", "statusword_", ("statusword", "")),
)
"""How telemetry columns map to channels: exact names, or prefixes (``tip_``) whose suffix
(the axis) names the field."""

_UNITS = {"/gap": "mm", "/coupling": "mm", "/tips": "mm", "/forces": "N", "/targets": "mm or deg"}


@dataclass(frozen=True, slots=True)
class _Field:
    column: int
    path: tuple[str, ...]
    labels: tuple[str, ...] | None


def channel_groups(
    columns: Sequence[str], labels: Mapping[int, Sequence[str]] | None = None
) -> dict[str, list[_Field]]:
    """The channels of ``columns`` (``columns[0]`` is the time): topic -> its fields."""
    labels = labels or {}
    groups: dict[str, list[_Field]] = {}
    for i, name in enumerate(columns):
        if i == 0:
            continue
        topic: str = "/other"
        path: tuple[str, ...] = (name,)
        for t, key, p in GROUPS:
            if key.endswith("_") and name.startswith(key):
                topic, path = t, tuple(s or name.removeprefix(key) for s in p)
                break
            if name == key:
                topic, path = t, p
                break
        lab = labels.get(i)
        groups.setdefault(topic, []).append(_Field(i, path, tuple(lab) if lab is not None else None))
    return groups


def _schema(topic: str, fields: Sequence[_Field]) -> dict[str, Any]:
    """A JSON schema (draft 2020-12) of the messages of one channel."""
    root: dict[str, Any] = {"type": "object", "properties": {}}
    for f in fields:
        node = root
        for key in f.path[:-1]:
            node = node["properties"].setdefault(key, {"type": "object", "properties": {}})
        if f.labels is not None:
            leaf: dict[str, Any] = {"type": "string", "enum": list(f.labels)}
        else:
            leaf = {"type": ["number", "null"]}
            if topic in _UNITS:
                leaf["description"] = _UNITS[topic]
        node["properties"][f.path[-1]] = leaf
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    root["title"] = "whih" + topic.replace("/", ".")
    return root


_EVENT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "whih.events",
    "description": "one line of events.jsonl (hash-chained event log)",
    "type": "object",
    "properties": {
        "seq": {"type": "integer"},
        "t": {"type": ["number", "string"], "description": "run time, s"},
        "wall": {"type": "number", "description": "wall clock when written, s since the epoch"},
        "kind": {"type": "string"},
        "prev": {"type": "string", "description": "SHA-256 of the previous line"},
    },
    "required": ["seq", "t", "kind", "prev"],
    "additionalProperties": True,
}


def _template(fields: Sequence[_Field]) -> str:
    """The JSON text of a channel's message with ``{}`` where each field's value goes, in order
    (formatting a row is then one ``str.format``, no dictionaries built)."""
    msg: dict[str, Any] = {}
    for k, f in enumerate(fields):
        node = msg
        for key in f.path[:-1]:
            node = node.setdefault(key, {})
        node[f.path[-1]] = f"\x00{k}\x00"
    text = json.dumps(msg, separators=(",", ":")).replace("{", "{{").replace("}", "}}")
    for k in range(len(fields)):
        text = text.replace(f'"\\u0000{k}\\u0000"', f"{{{k}}}")
    return text


def _json_value(v: float, labels: tuple[str, ...] | None) -> str:
    """``v`` as JSON text: its label (already JSON) when the column has labels."""
    if labels is not None:
        return labels[int(v)]
    return repr(v) if math.isfinite(v) else "null"  # what json.dumps writes for a float


class McapTelemetry:
    """Writes telemetry rows and event-log lines to an MCAP file (one thread only)."""

    def __init__(
        self,
        path: Path,
        columns: Sequence[str],
        *,
        labels: Mapping[int, Sequence[str]] | None = None,
        events: Path | None = None,
    ) -> None:
        """``columns[0]`` is the time in s; ``labels`` names the integer codes of a column by
        its index; ``events`` is the ``events.jsonl`` to follow (None: no ``/events``)."""
        self.path = path
        self._file: BinaryIO = path.open("wb")
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile="", library="whih")
        self._channels: list[tuple[str, int, list[tuple[int, tuple[str, ...] | None]], str]] = []
        self.messages: dict[str, int] = {}
        """Messages written per topic."""
        for topic, fields in channel_groups(columns, labels).items():
            schema = self._writer.register_schema(
                name="whih" + topic.replace("/", "."),
                encoding="jsonschema",
                data=json.dumps(_schema(topic, fields)).encode(),
            )
            channel = self._writer.register_channel(topic=topic, message_encoding="json", schema_id=schema)
            encoded = [
                (f.column, None if f.labels is None else tuple(json.dumps(x) for x in f.labels))
                for f in fields
            ]
            self._channels.append((topic, channel, encoded, _template(fields)))
            self.messages[topic] = 0
        self._seq = 0
        self._events = events
        self._events_at = 0
        self._events_channel = -1
        self._last_ns = 0
        if events is not None:
            schema = self._writer.register_schema(
                name="whih.events", encoding="jsonschema", data=json.dumps(_EVENT_SCHEMA).encode()
            )
            self._events_channel = self._writer.register_channel(
                topic=EVENTS_TOPIC, message_encoding="json", schema_id=schema
            )
            self.messages[EVENTS_TOPIC] = 0

    def write_rows(self, rows: Sequence[Sequence[float]]) -> None:
        """One message per channel for each row (``row[0]`` the time in s)."""
        add = self._writer.add_message
        counts = self.messages
        for row in rows:
            ns = round(row[0] * 1e9)
            self._last_ns = max(self._last_ns, ns)
            for topic, channel, fields, template in self._channels:
                values = [_json_value(row[column], labels) for column, labels in fields]
                self._seq += 1
                add(channel, ns, template.format(*values).encode(), ns, self._seq)
                counts[topic] += 1

    def poll_events(self) -> None:
        """Copy the event-log lines that reached the disk since the last call to ``/events``."""
        if self._events is None:
            return
        try:
            with self._events.open("rb") as f:
                f.seek(self._events_at)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        for line in data[:end].splitlines():
            try:
                t = json.loads(line).get("t")
            except (ValueError, AttributeError):
                t = None  # not ours to judge (the chain's verifier does): stamped like the last row
            ns = round(t * 1e9) if isinstance(t, int | float) and math.isfinite(t) else self._last_ns
            self._seq += 1
            self._writer.add_message(self._events_channel, ns, line, ns, self._seq)
            self.messages[EVENTS_TOPIC] += 1
        self._events_at += end

    def flush(self) -> None:
        """Close the chunk in progress and hand everything to the OS."""
        self._writer.flush()  # type: ignore[no-untyped-call]

    def close(self, *, finish: bool = True) -> None:
        """Take the last events, write the summary section and close the file (``finish=False``:
        only close it, after a failure). Safe to call twice."""
        if self._file.closed:
            return
        try:
            if finish:
                self.poll_events()
                self._writer.finish()  # type: ignore[no-untyped-call]
        finally:
            self._file.close()
