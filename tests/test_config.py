"""Configuration: shipped configs load; malformed ones name the offending key; fuzzing never crashes."""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import whih_control as wc
from whih_control.cli import main
from whih_control.config import Config, ConfigError, load_config

from .conftest import CONFIGS, EDS_DIR, EPOS4_DCF


def _base() -> dict[str, Any]:
    return tomllib.loads((CONFIGS / "sim.toml").read_text())


@pytest.mark.parametrize("name", ["sim.toml", "rig-epos4.toml", "rig-4axis.toml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, Config)
    assert {"ante_wire", "ante_mc", "retro_wire", "retro_mc"} <= set(cfg.drives)
    assert all(Path(d.eds).is_file() for d in cfg.drives.values())
    assert cfg.bus_load().ratio <= cfg.cycle.max_bus_load


def test_rig_4axis_has_no_rotary_axes() -> None:
    cfg = load_config(CONFIGS / "rig-4axis.toml")
    assert set(cfg.drives) == {"ante_wire", "ante_mc", "retro_wire", "retro_mc"}


def test_default_config_is_the_packaged_sim_toml() -> None:
    assert wc.default_config_path().read_bytes() == (CONFIGS / "sim.toml").read_bytes()


def test_mapping_round_trip_is_identity() -> None:
    cfg = load_config(CONFIGS / "sim.toml")
    again = load_config(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    assert cfg.replace(sim={"enabled": False, "seed": 3}).sim.seed == 3


@pytest.mark.parametrize("source", [3, None, b"configs/sim.toml", ["sim.toml"]])
def test_a_source_that_is_neither_path_nor_mapping_is_a_type_error(source: object) -> None:
    with pytest.raises(TypeError, match=r"load_config: source \(="):
        load_config(source)  # type: ignore[arg-type]


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no such file"):
        load_config("/nonexistent/whih.toml")


def _set(path: str, value: Any) -> Any:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d.setdefault(p, {})
        d[last] = value

    return mutate


def _delete(path: str) -> Any:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]

    return mutate


MALFORMED = [
    ("bus.bitrate", _set("bus.bitrate", "fast")),
    ("bus.bitrate", _set("bus.bitrate", 5)),
    ("bus.master_node_id", _set("bus.master_node_id", 0)),
    ("bus.master_node_id", _set("bus.master_node_id", 128)),
    ("bus.bogus", _set("bus.bogus", 1)),
    ("bus.interface", _set("bus.interface", "nosuchif")),  # python-can could not open it
    ("cycle.rate_hz", _set("cycle.rate_hz", math.nan)),
    ("cycle.rate_hz", _set("cycle.rate_hz", math.inf)),
    ("cycle.rate_hz", _set("cycle.rate_hz", 1000.0)),  # 6 drives at 1 Mbit/s do not fit 1 kHz
    ("cycle.sync_counter", _set("cycle.sync_counter", 1)),
    ("cycle.busy_wait_us", _set("cycle.busy_wait_us", 2.5)),
    ("cycle.realtime_priority", _set("cycle.realtime_priority", 100)),
    ("cycle.realtime_priority", _set("cycle.realtime_priority", -1)),
    ("drives.ante_mc.node_id", _set("drives.ante_mc.node_id", 1)),
    ("drives.retro_mc.node_id", _set("drives.retro_mc.node_id", 127)),
    ("drives.ante_wire.node_id", _delete("drives.ante_wire.node_id")),
    ("drives.retro_wire", _delete("drives.retro_wire")),
    ("drives.spare", _set("drives.spare", {"node_id": 9})),
    ("drives.ante_wire.kind", _set("drives.ante_wire.kind", "helical")),
    ("drives.ante_wire.travel_min", _set("drives.ante_wire.travel_min", 500.0)),
    ("drives.ante_mc.force_alarm", _set("drives.ante_mc.force_alarm", 9.0)),
    ("drives.ante_mc.heartbeat_ms", _set("drives.ante_mc.heartbeat_ms", 60)),
    ("drives.ante_mc.eds", _set("drives.ante_mc.eds", "missing/drive.eds")),
    ("drives.ante_mc.counts_per_unit", _set("drives.ante_mc.counts_per_unit", 0.0)),
    ("drives.ante_mc.max_speed", _set("drives.ante_mc.max_speed", -1.0)),
    ("drives.ante_mc", _set("drives.ante_mc", [1, 2])),
    # invariant 6: a 4 mm ramp at max speed, and a max speed that covers the bound in one cycle
    ("drives.ante_wire.quick_stop_decel", _set("drives.ante_wire.quick_stop_decel", 50.0)),
    ("drives.ante_wire.max_speed", _set("safety.stop_distance_max", 0.01)),
    ("procedure.gap_target", _set("procedure.gap_target", 1.0)),
    ("procedure.gap_target", _set("procedure.gap_min", 5.0)),
    ("procedure.coupling_target", _set("procedure.coupling_target", 3.0)),
    ("procedure.max_rewinds", _set("procedure.max_rewinds", -1)),
    ("procedure.wire_speed", _set("procedure.wire_speed", 30.0)),
    ("sim.enabled", _set("sim.enabled", "yes")),
    ("imaging.source", _set("imaging.source", "xray")),
    ("imaging.dropout", _set("imaging.dropout", 1.5)),
    ("estimate.innovation_gate_frames", _set("estimate.innovation_gate_frames", 1)),  # would be no gate
    ("record.telemetry_hz", _set("record.telemetry_hz", 1000.0)),
    ("bus.master_heartbeat_ms", _set("bus.master_heartbeat_ms", 500)),
    ("telemetry", _set("telemetry", {"hz": 1})),
    ("bus", _set("bus", "can0")),
    ("bus.bitrate", lambda d: (_set("bus.interface", "socketcan")(d), _set("bus.bitrate", 2_000_000)(d))),
]


@pytest.mark.parametrize(("key", "mutate"), MALFORMED, ids=[f"{i}-{k}" for i, (k, _) in enumerate(MALFORMED)])
def test_malformed_config_names_the_key(key: str, mutate: Any) -> None:
    data = _base()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        load_config(data, base_dir=CONFIGS)
    assert any(p.startswith(f"{key}:") or p.startswith(f"{key}.") for p in info.value.problems), (
        info.value.problems
    )
    for p in info.value.problems:
        assert "(got " in p and "allowed " in p, p


def test_every_problem_is_reported_at_once() -> None:
    data = _base()
    data["bus"]["bitrate"] = "x"
    data["drives"]["ante_mc"]["node_id"] = 1
    data["procedure"]["nonsense"] = True
    data["sim"]["seed"] = -1
    with pytest.raises(ConfigError) as info:
        load_config(data, base_dir=CONFIGS)
    keys = {p.split(":")[0] for p in info.value.problems}
    assert {"bus.bitrate", "procedure.nonsense", "sim.seed"} <= keys


def test_bus_load_error_gives_load_frames_bitrate_and_period() -> None:
    data = _base()
    data["cycle"]["rate_hz"] = 1000.0
    with pytest.raises(ConfigError) as info:
        load_config(data, base_dir=CONFIGS)
    (line,) = [p for p in info.value.problems if p.startswith("cycle.rate_hz")]
    assert "%" in line and "RPDO1 6x" in line and "1000 kbit/s" in line and "1 ms" in line


def test_virtual_bus_may_be_faster_than_classical_can() -> None:
    data = _base()
    data["bus"]["bitrate"] = 5_000_000
    data["cycle"]["rate_hz"] = 1000.0
    cfg = load_config(data, base_dir=CONFIGS)
    assert cfg.bus_load().ratio < 0.8


def test_vendor_file_is_accepted_by_path() -> None:
    data = _base()
    data["drives"]["ante_mc"]["eds"] = str(EPOS4_DCF)
    assert Path(load_config(data).drives["ante_mc"].eds).name == "maxon_epos4_50_15_node1.dcf"


# --- fuzzing: any mutation gives a Config or a ConfigError, nothing else ---------------------

_LEAVES: list[tuple[str, ...]] = []


def _paths(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for k, v in d.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out.extend(_paths(v, (*prefix, k)))
    return out


_ALL_PATHS = _paths(_base())
_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@given(
    st.lists(
        st.tuples(st.sampled_from(_ALL_PATHS), st.sampled_from(["set", "delete", "add"]), _junk),
        min_size=1,
        max_size=6,
    )
)
def test_random_mutations_give_config_or_config_error(ops: list[tuple[tuple[str, ...], str, Any]]) -> None:
    data = copy.deepcopy(_base())
    for path, op, value in ops:
        parent: Any = data
        for k in path[:-1]:
            if not isinstance(parent, dict) or k not in parent:
                break
            parent = parent[k]
        else:
            if not isinstance(parent, dict):
                continue
            if op == "set":
                parent[path[-1]] = value
            elif op == "delete":
                parent.pop(path[-1], None)
            else:
                parent[f"{path[-1]}_x"] = value
    try:
        cfg = load_config(data, base_dir=CONFIGS)
    except ConfigError as exc:
        assert exc.problems and all(":" in p for p in exc.problems)
    else:
        assert isinstance(cfg, Config)


# --- the CLI ------------------------------------------------------------------------------------


def test_check_config_prints_bus_load(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(CONFIGS / "sim.toml")]) == 0
    out = capsys.readouterr().out
    assert "bus load:" in out and "%" in out and "retro_mc" in out


def test_check_config_lists_every_problem_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (CONFIGS / "sim.toml").read_text()
    text = text.replace("bitrate = 1000000 ", 'bitrate = "1M" ', 1)
    text = text.replace(
        "[drives.ante_mc]                # antegrade microcatheter insertion\nnode_id = 3",
        "[drives.ante_mc]\nnode_id = 1\ncolour = 'red'",
    )
    text = text.replace("rate_hz = 400.0", "rate_hz = 1000.0")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    for key in ("bus.bitrate", "drives.ante_mc.colour", "drives.ante_mc.node_id"):
        assert key in err
    assert "Traceback" not in err
    # with the bitrate fixed, the bus-load problem at 1 kHz shows as well
    bad.write_text(text.replace('bitrate = "1M" ', "bitrate = 1000000 "))
    assert main(["check-config", str(bad)]) == 2
    assert "cycle.rate_hz" in capsys.readouterr().err


def test_check_config_on_invalid_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text("[bus\n")
    assert main(["check-config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_check_config_refuses_a_drive_that_cannot_run_the_cycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (CONFIGS / "sim.toml").read_text()
    faulhaber = EDS_DIR / "faulhaber_mcbl300x_co.eds"
    text = text.replace('eds = "builtin:whih_sim_drive.eds"', f'eds = "{faulhaber}"', 1)
    bad = tmp_path / "faulhaber.toml"
    bad.write_text(text)
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "drives.ante_wire.eds:" in err and "0x6502" in err and "Traceback" not in err
