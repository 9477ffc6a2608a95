"""The engineers' tools on real run folders: the DBC decodes our trace (through cantools), the MCAP
reads back with the mcap reader, ``whih inspect`` verifies good runs and names what broke in bad
ones, and ``record.trace_format = "log"`` writes what python-can's candump reader reads."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import can
import cantools
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Message as McapMessage
from mcap.stream_reader import StreamReader

import whih_control as wc
from whih_control import _trace_writer
from whih_control.cli import main
from whih_control.config import load_config
from whih_control.events import EventLog, read_events
from whih_control.inspect_run import CUT_BY_A_CRASH, inspect_run, read_trace
from whih_control.record import Telemetry, TraceRecorder, read_telemetry
from whih_control.telemetry_mcap import EVENTS_TOPIC

from .conftest import CONFIGS, ROOT
from .test_record import _frames, _record

SIM_TOML = CONFIGS / "sim.toml"
RUN_SECONDS = 4.0  # into the MC approach: targets and positions move
ROW_TOPICS = {"/phase", "/gap", "/coupling", "/tips", "/forces", "/targets", "/actual", "/drive_states"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    wc.simulate(load_config(SIM_TOML), seed=3, out=out, max_time=RUN_SECONDS)
    return out


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst)
    return dst


# --- whih dbc -----------------------------------------------------------------------------------


def test_dbc_loads_in_cantools_strict_with_every_configured_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "whih.dbc"
    assert main(["dbc", "--config", str(SIM_TOML), "-o", str(path)]) == 0
    db = cantools.database.load_file(str(path), strict=True)
    cfg = load_config(SIM_TOML)
    assert db.get_message_by_frame_id(0x080).length == 0
    for axis, d in cfg.drives.items():
        unit = "mm" if d.kind == "linear" else "deg"
        rpdo = db.get_message_by_frame_id(0x200 + d.node_id)
        tpdo = db.get_message_by_frame_id(0x180 + d.node_id)
        assert (rpdo.length, tpdo.length) == (6, 8)
        assert rpdo.get_signal_by_name("target_position").scale == pytest.approx(1 / d.counts_per_unit)
        assert tpdo.get_signal_by_name("position_actual").unit == unit
        assert tpdo.senders == [axis] and rpdo.get_signal_by_name("controlword").receivers == [axis]
        assert db.get_message_by_frame_id(0x080 + d.node_id).length == 8  # EMCY
        hb = db.get_message_by_frame_id(0x700 + d.node_id)
        assert hb.decode(b"\x05")["nmt_state"] == "operational"
    # the same text on standard output
    capsys.readouterr()
    assert main(["dbc", "--config", str(SIM_TOML)]) == 0
    assert capsys.readouterr().out.encode() == path.read_bytes()


def test_dbc_of_a_bad_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SIM_TOML.read_text().replace("counts_per_unit = 1000.0", "counts_per_unit = -1.0", 1))
    assert main(["dbc", "--config", str(bad)]) == 2
    assert "counts_per_unit" in capsys.readouterr().err
    assert main(["dbc", "--config", str(SIM_TOML), "-o", str(tmp_path / "no" / "such" / "x.dbc")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_dbc_decodes_every_pdo_of_the_trace_to_the_telemetry_within_one_count(
    run_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "whih.dbc"
    assert main(["dbc", "--config", str(SIM_TOML), "-o", str(path)]) == 0
    db = cantools.database.load_file(str(path))
    cfg = load_config(SIM_TOML)
    node_axis = {d.node_id: a for a, d in cfg.drives.items()}
    cycles: dict[float, dict[str, dict[str, Any]]] = {}
    current: dict[str, dict[str, Any]] = {}
    decoded = 0
    # ASC times count from the first frame (python-can's writer): the first SYNC, sent at one
    # period of simulated time
    start = cfg.period
    for msg in can.ASCReader(str(run_dir / "trace.asc")):
        cob = msg.arbitration_id
        if cob == 0x080:
            current = cycles[round(start + msg.timestamp, 6)] = {}
        elif 0x181 <= cob <= 0x1FF or 0x201 <= cob <= 0x27F:
            values = db.decode_message(cob, msg.data)  # every RPDO1/TPDO1 decodes
            decoded += 1
            kind = "target" if cob >= 0x200 else "actual"
            current[f"{kind}_{node_axis[cob & 0x7F]}"] = values
    assert decoded == 2 * len(cfg.drives) * len(cycles)
    tele = read_telemetry(run_dir / "telemetry.csv")
    moved = 0
    for i, t in enumerate(tele["t"]):
        frames = cycles[round(t, 6)]  # every telemetry row is one cycle of the trace
        for axis, d in cfg.drives.items():
            target = frames[f"target_{axis}"]["target_position"]
            actual = frames[f"actual_{axis}"]["position_actual"]
            assert abs(target - tele[f"target_{axis}"][i]) * d.counts_per_unit <= 1.0, (t, axis)
            assert abs(actual - tele[f"actual_{axis}"][i]) * d.counts_per_unit <= 1.0, (t, axis)
            moved += abs(actual) > 1.0
    assert moved > 100  # the comparison saw real motion, not a run of zeros


# --- telemetry.mcap ------------------------------------------------------------------------------


def test_mcap_reads_back_one_channel_per_group_with_a_message_per_csv_row(run_dir: Path) -> None:
    tele = read_telemetry(run_dir / "telemetry.csv")
    rows = len(tele["t"])
    assert RUN_SECONDS * 100 - 5 <= rows <= (RUN_SECONDS + 1) * 100  # 100 Hz, the closing stop included
    with (run_dir / "telemetry.mcap").open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None and summary.statistics is not None
        topics = {
            ch.topic: summary.statistics.channel_message_counts[cid] for cid, ch in summary.channels.items()
        }
        assert set(topics) == {*ROW_TOPICS, EVENTS_TOPIC}
        assert {t: n for t, n in topics.items() if t != EVENTS_TOPIC} == dict.fromkeys(ROW_TOPICS, rows)
        assert all(
            s.encoding == "jsonschema" and json.loads(s.data)["type"] == "object"
            for s in summary.schemas.values()
        )
        by_topic: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        events: list[bytes] = []
        validators: dict[int, Draft202012Validator] = {}
        for schema, channel, message in reader.iter_messages(log_time_order=False):
            assert schema is not None
            if schema.id not in validators:
                Draft202012Validator.check_schema(json.loads(schema.data))
                validators[schema.id] = Draft202012Validator(json.loads(schema.data))
            validators[schema.id].validate(json.loads(message.data))  # every message fits its schema
            if channel.topic == EVENTS_TOPIC:
                events.append(message.data)
            else:
                by_topic.setdefault(channel.topic, []).append((message.log_time, json.loads(message.data)))
    t_ns = [round(t * 1e9) for t in tele["t"]]
    for topic in ROW_TOPICS:
        assert [ns for ns, _ in by_topic[topic]] == pytest.approx(t_ns, abs=2000), topic
    assert [m["phase"] for _, m in by_topic["/phase"]] == tele["phase"]
    for axis in ("ante_mc", "retro_wire_rot"):
        assert np.allclose([m[axis] for _, m in by_topic["/targets"]], tele[f"target_{axis}"], atol=1e-6)
        assert [m["state"][axis] for _, m in by_topic["/drive_states"]] == tele[f"state_{axis}"]
        assert [m["statusword"][axis] for _, m in by_topic["/drive_states"]] == tele[f"statusword_{axis}"]
    # events as the log wrote them: every line but the close line (the log closes after the telemetry)
    lines = (run_dir / "events.jsonl").read_bytes().splitlines()
    assert events == lines[:-1] and json.loads(lines[-1])["kind"] == "close"
    assert any(json.loads(e)["kind"] == "end" for e in events)


def test_telemetry_reaches_the_disk_every_half_second_of_run_time(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with EventLog(events) as log:
        log.write(0.0, "phase", to="idle")
        tel = Telemetry(
            tmp_path / "telemetry.csv",
            ["gap", "tip_ante_mc"],
            rate_hz=100.0,
            mcap=tmp_path / "telemetry.mcap",
            events=events,
        )
        try:
            for k in range(50):  # 0 .. 0.49 s: the first row goes at once, the rest wait
                tel.sample(k / 100, [1.0, float(k)])
            tel.wait_written()
            assert len(read_telemetry(tmp_path / "telemetry.csv")["t"]) == 1
            tel.sample(0.5, [1.0, 50.0])  # half a second after the last hand-over
            tel.wait_written()
            assert len(read_telemetry(tmp_path / "telemetry.csv")["t"]) == 51
            counts: dict[int, int] = {}
            with (tmp_path / "telemetry.mcap").open("rb") as f:
                try:
                    for record in StreamReader(f).records:
                        if isinstance(record, McapMessage):
                            counts[record.channel_id] = counts.get(record.channel_id, 0) + 1
                except McapError:  # the file is not finished yet: what was read counts
                    pass
            assert sorted(counts.values()) == [1, 51, 51]  # /events, /gap, /tips
        finally:
            tel.close()


def test_the_foxglove_layout_plots_only_fields_the_mcap_has(run_dir: Path) -> None:
    layout = json.loads((ROOT / "docs" / "foxglove-layout.json").read_text())
    paths = [p["value"] for cfg in layout["configById"].values() for p in cfg.get("paths", [])]
    paths += [cfg["topicPath"] for cfg in layout["configById"].values() if "topicPath" in cfg]
    assert len(paths) > 20
    first: dict[str, Any] = {}
    with (run_dir / "telemetry.mcap").open("rb") as f:
        for _schema, channel, message in make_reader(f).iter_messages():
            first.setdefault(channel.topic, json.loads(message.data))
    for path in paths:
        topic, *keys = path.split(".")
        node = first[topic]
        for key in keys:
            node = node[key]  # KeyError names a field the layout wants and the file lacks
    # every panel is placed in the layout tree
    placed: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            placed.append(node)
        else:
            walk(node["first"])
            walk(node["second"])

    walk(layout["layout"])
    assert sorted(placed) == sorted(layout["configById"])


def test_a_failing_telemetry_writer_is_raised_at_close_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(self: Any, rows: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("whih_control.telemetry_mcap.McapTelemetry.write_rows", full_disk)
    tel = Telemetry(tmp_path / "telemetry.csv", ["gap"], rate_hz=100.0, mcap=tmp_path / "telemetry.mcap")
    for k in range(100):
        tel.sample(k / 100, [1.0])  # the cycle never sees the failure: sampling goes on
    tel.wait_written()
    assert isinstance(tel.error, OSError)
    with pytest.raises(OSError, match=r"telemetry writer failed on .*telemetry.csv.*No space left"):
        tel.close()


@pytest.mark.parametrize("writer", ["telemetry", "trace"])
def test_a_recording_writer_that_dies_stops_the_run_with_a_recording_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    cfg = load_config(SIM_TOML)
    if writer == "telemetry":

        def full_disk(self: Any, rows: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("whih_control.telemetry_mcap.McapTelemetry.write_rows", full_disk)
    robot = wc.Robot(cfg, clock="simulated", out=tmp_path / "run", auto_confirm=True)
    # the writer's failure is raised at close too, naming it
    with pytest.raises(OSError, match=f"{writer} writer failed"), robot:
        if writer == "trace":
            trace = robot._runtime.recorder.trace
            assert trace is not None
            trace._proc.kill()  # the writer process dies; the next hand-over finds its pipe closed
            trace._proc.wait()
        try:  # the first hand-over that fails latches the fault: in enable's cycles, or later
            robot.enable()
        except wc.WhihError as exc:
            reason = str(exc)
        else:
            reason = robot.run_procedure(max_time=5.0).reason
        assert f"{writer} writer" in reason
    events = read_events(tmp_path / "run" / "events.jsonl")
    assert any(e["kind"] == "fault" and f"{writer} writer" in e["text"] for e in events)


# --- whih inspect ------------------------------------------------------------------------------


def test_inspect_a_good_run_verifies_and_reports(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(run_dir, tmp_path)
    (run / "plot.png").unlink()
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "closed" in out and "verified: ok" in out and "faults: none" in out
    assert (run / "plot.png").stat().st_size > 10_000  # redrawn
    assert main(["inspect", str(run), "--json", "--no-plot"]) == 0
    report = json.loads(capsys.readouterr().out)
    summary = json.loads((run / "summary.json").read_text())
    assert report["ok"] is True and report["ends"] == "closed" and report["problems"] == []
    sync = report["trace"]["sync"]
    assert sync["count"] >= summary["cycles"] and sync["gaps"] == 0
    assert sync["period_mean_ms"] == pytest.approx(2.5) and sync["period_max_ms"] == pytest.approx(2.5)
    assert report["trace"]["frames"] == len(read_trace(run / "trace.asc"))
    assert sum(report["trace"]["tpdo1_missing"].values()) == 0
    assert report["telemetry"]["rows"] == report["telemetry"]["mcap"]["/gap"]


def test_inspect_reports_faults_with_their_times_and_missing_tpdos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    wc.simulate(load_config(SIM_TOML), seed=1, out=out, max_time=3.0, inject=["tpdo-drop:ante_mc:5@2.0"])
    report = inspect_run(out, plot=False)
    assert report.ok, report.problems
    assert report.faults and 2.0 <= report.faults[0]["t"] < 2.1
    assert report.trace["tpdo1_missing"]["3"] >= 3  # ante_mc is node 3
    assert main(["inspect", str(out), "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert f"{report.faults[0]['t']:9.3f} s  ante_mc" in text


@pytest.mark.parametrize("line", [1, 4, -2])
def test_inspect_names_the_line_of_one_changed_byte(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: int
) -> None:
    run = _copy(run_dir, tmp_path)
    path = run / "events.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    number = line if line > 0 else len(lines) + 1 + line
    data = bytearray(lines[number - 1])
    at = data.index(b'"wall":') + 9  # a digit of the wall-clock time: still valid JSON
    data[at] = ord("7") if data[at] != ord("7") else ord("3")
    lines[number - 1] = bytes(data)
    path.write_bytes(b"".join(lines))
    assert main(["inspect", str(run), "--no-plot"]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT VERIFY" in out and f"line {number}" in out and "events.jsonl" in out


def test_inspect_of_a_closed_run_finds_a_cut_trace_and_telemetry(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(run_dir, tmp_path)
    for name in ("trace.asc", "telemetry.csv", "telemetry.mcap"):
        with (run / name).open("r+b") as f:
            f.truncate((run / name).stat().st_size // 2)
    assert main(["inspect", str(run), "--no-plot"]) == 1
    out = capsys.readouterr().out
    assert "trace.asc: not ended by its writer" in out
    assert "fewer than the summary's" in out
    assert "telemetry.csv: rows end at" in out
    assert "telemetry.mcap: unfinished" in out


@pytest.mark.parametrize("seed", range(8))
def test_inspect_of_damaged_files_reports_never_raises(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int
) -> None:
    rng = random.Random(seed)
    run = _copy(run_dir, tmp_path)
    for name in rng.sample(
        ["events.jsonl", "trace.asc", "telemetry.csv", "telemetry.mcap", "summary.json"], 2
    ):
        data = bytearray((run / name).read_bytes())
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        (run / name).write_bytes(bytes(data[: rng.randint(len(data) // 2, len(data))]))
    code = main(["inspect", str(run), "--no-plot"])
    last = capsys.readouterr().out.strip().splitlines()
    verdict = "verified: ok" if code == 0 else "DOES NOT VERIFY"
    assert code in (0, 1) and any(line.startswith(verdict) for line in last)
    assert main(["inspect", str(run), "--json", "--no-plot"]) == code
    assert json.loads(capsys.readouterr().out)["ok"] is (code == 0)


def test_inspect_refuses_a_folder_without_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "nowhere")]) == 2


def _long_config(tmp_path: Path) -> Path:
    """The default configuration with the paper's longest lesion: a run of a few minutes."""
    text = SIM_TOML.read_text()
    assert "lesion_length = 27.6" in text
    path = tmp_path / "long.toml"
    path.write_text(text.replace("lesion_length = 27.6", "lesion_length = 87.3", 1))
    return path


def _poll(condition: Any, what: str, timeout: float = 120.0) -> None:
    """Wait for ``condition()`` (a deadline against a hang, not a timing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_inspect_a_run_killed_by_sigkill_says_cut_by_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "whih_control.cli",
            "run",
            "--config",
            str(_long_config(tmp_path)),
            "--out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    events = out / "events.jsonl"
    telemetry = out / "telemetry.csv"

    def on_disk() -> bool:  # the approach began and 1.5 s of telemetry were flushed
        return (
            events.exists()
            and events.read_bytes().count(b"\n") >= 9
            and telemetry.read_bytes().count(b"\n") > 150
        )

    try:
        _poll(lambda: on_disk() or proc.poll() is not None, "the first events and telemetry")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    # the trace writer lives on in its own process and ends the file when its input closes
    _poll(lambda: (out / "trace.asc").read_bytes().rstrip().endswith(b"End TriggerBlock"), "the trace's end")
    assert not (out / "summary.json").exists()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert CUT_BY_A_CRASH in text and "recovered" in text and "verified: ok" in text
    report = inspect_run(out, plot=False)
    assert report.ends == CUT_BY_A_CRASH and report.ok
    assert report.events["lines"] >= 9 and report.trace["frames"] > 1000
    assert report.telemetry["rows"] >= 150
    assert any(r.startswith("telemetry.csv") for r in report.recovered)
    assert any(r.startswith("events.jsonl") for r in report.recovered)
    assert any(r.startswith("trace.asc") for r in report.recovered)
    assert (out / "plot.png").exists()  # drawn from what telemetry.csv kept
    assert main(["inspect", str(out), "--json", "--no-plot"]) == 0

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    as_json = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert as_json["ends"] == CUT_BY_A_CRASH and as_json["summary"] is None


# --- record.trace_format = "log" -----------------------------------------------------------------


def test_log_trace_lines_equal_python_can_candump_writer(tmp_path: Path) -> None:
    reference = can.CanutilsLogWriter(str(tmp_path / "ref.log"), channel="can0")
    for msg in _frames():
        msg.channel = "can0"
        reference.on_message_received(msg)
    reference.stop()
    rec = TraceRecorder(tmp_path / "trace.log", blocking=True, channel="can0")
    _record(rec, _frames())
    rec.close()
    assert (tmp_path / "trace.log").read_text() == (tmp_path / "ref.log").read_text()
    back = list(can.CanutilsLogReader(str(tmp_path / "trace.log")))
    assert len(back) == len(_frames())


def test_trace_format_log_writes_the_same_frames_as_asc(run_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(SIM_TOML)
    cfg = cfg.replace(record=dataclasses.replace(cfg.record, trace_format="log", plot=False))
    out = tmp_path / "run"
    wc.simulate(cfg, seed=3, out=out, max_time=RUN_SECONDS)
    assert (out / "trace.log").exists() and not (out / "trace.asc").exists()
    log_frames = read_trace(out / "trace.log")
    asc_frames = read_trace(run_dir / "trace.asc")

    def key(frames: list[can.Message]) -> list[tuple[float, int, bytes]]:
        # ASC counts from the first frame, candump gives the run time: compare from the first
        return [
            (round(m.timestamp - frames[0].timestamp, 6), m.arbitration_id, bytes(m.data)) for m in frames
        ]

    assert key(log_frames) == key(asc_frames)
    report = inspect_run(out, plot=False)
    assert report.ok and report.trace["file"] == "trace.log"
    assert report.trace["sync"]["count"] == sum(m.arbitration_id == 0x080 for m in asc_frames)


def test_trace_format_is_validated_naming_key_value_and_choices(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SIM_TOML.read_text().replace('trace_format = "asc"', 'trace_format = "blf"', 1))
    with pytest.raises(wc.ConfigError) as info:
        load_config(bad)
    text = str(info.value)
    assert "record.trace_format" in text and "blf" in text and "'log'" in text
    with pytest.raises(ValueError, match="suffix"):
        TraceRecorder(tmp_path / "trace.blf")


def test_trace_writer_refuses_an_unknown_suffix(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(Path(_trace_writer.__file__)), str(tmp_path / "x.txt")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        check=False,
    )
    assert proc.returncode == 2 and ".asc" in proc.stderr


def test_inspect_verifies_a_run_with_an_injected_sync_loss(tmp_path: Path) -> None:
    # the master sends no SYNC after an injected sync-loss, by design: only the cycles before it
    # must each have their SYNC in the trace
    out = tmp_path / "run"
    main(
        [
            "run",
            "--config",
            str(CONFIGS / "sim.toml"),
            "--out",
            str(out),
            "--inject",
            "sync-loss@2",
            "--max-time",
            "4",
        ]
    )
    report = inspect_run(out, plot=False)
    assert report.ok, report.problems
    syncs = [m for m in read_trace(out / "trace.asc") if m.arbitration_id == 0x80]
    assert 2.0 * 400 - 2 <= len(syncs) < json.loads((out / "summary.json").read_text())["cycles"]
    lines = (out / "trace.asc").read_text().splitlines(keepends=True)
    early = [i for i, line in enumerate(lines) if line.split()[2:4] == ["80", "Tx"]][10:13]
    (out / "trace.asc").write_text("".join(line for i, line in enumerate(lines) if i not in early))
    assert any("before the injected sync-loss at 2 s" in p for p in inspect_run(out, plot=False).problems)
