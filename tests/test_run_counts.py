"""A run's rewind count and maximum unsupported wire lengths: in its result, its summary.json and
its trials row.

The rewinds are the procedure's own count, checked against what its event log says it did; the
unsupported lengths are the recorder's, checked alone on hand-made cycles (only a wire that
advances counts) and on a whole run against the support limit the supervisor holds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from firmware_iface.types import Commands, DriveGoal, Feedback
from whih_control import default_config_path, load_config
from whih_control.procedure import Phase
from whih_control.recorder import RunRecorder, RunResult
from whih_control.sim.cohort import Scenario
from whih_control.trials import TrialTask, Variant, run_trial
from whih_control.types import Estimate

CASE = Scenario("R1", 12.0, 3, 6.0, "septal", False, True, 7)
"""A short case; with a high deviation rate (below) its antegrade wire deviates and rewinds."""
DEVIATING = Variant.of({"sim.lesion.deviation_rate": 0.5, "procedure.max_time_s": 120})


def _events(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def deviating_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], Path]:
    out = tmp_path_factory.mktemp("trial") / "run"
    base = load_config(default_config_path()).to_dict()
    task = TrialTask(
        base=base,
        base_dir=str(default_config_path().parent),
        case=CASE,
        variant=DEVIATING,
        seed=0,
        record=str(out),
    )
    return run_trial(task), out


def test_rewinds_are_what_the_procedure_logged(deviating_run: tuple[dict[str, object], Path]) -> None:
    row, out = deviating_run
    assert row["outcome"] != "error", row["reason"]
    logged = [e for e in _events(out) if e["kind"] == "phase" and e["to"] == Phase.HAND_IN_HAND_REWIND.value]
    summary = json.loads((out / "summary.json").read_text())
    assert len(logged) > 0
    assert row["rewinds"] == summary["rewinds"] == len(logged)


def test_unsupported_lengths_stay_within_the_support_limit(
    deviating_run: tuple[dict[str, object], Path],
) -> None:
    row, out = deviating_run
    summary = json.loads((out / "summary.json").read_text())
    limit = summary["config"]["procedure"]["unsupported_max"]
    per_wire = summary["max_unsupported"]
    assert set(per_wire) == {"ante_wire", "retro_wire"}
    # both wires advanced (align, hand-in-hand, rewinds), each with some wire out of support
    assert all(0.0 < u <= limit for u in per_wire.values()), per_wire
    assert row["max_unsupported"] == max(per_wire.values())


# --- the recorder alone -------------------------------------------------------------------------


def _cycle(
    rec: RunRecorder,
    t: float,
    tips: dict[str, float],
    targets: dict[str, float],
    phase: Phase = Phase.HAND_IN_HAND_ANTE_FOLLOW,
    goal: DriveGoal = DriveGoal.ENABLED,
) -> None:
    est = Estimate(
        tips=tips, gap=tips["retro_mc"] - tips["ante_mc"], coupling=tips["retro_wire"] - tips["ante_wire"]
    )
    cmds = Commands.for_axes(rec.axes)
    for axis, target in targets.items():
        cmds.axes[axis].target = target
        cmds.axes[axis].goal = goal
    rec.end_cycle(t, phase, est, True, Feedback.for_axes(rec.axes), cmds, math.nan, False)


def _result(rec: RunRecorder, t: float) -> RunResult:
    return rec.result(
        outcome="complete",
        crossed=True,
        t=t,
        wall_seconds=0.0,
        cycles=1,
        overruns=0,
        reason="",
        loop={},
        rewinds=3,
    )


def test_only_a_wire_that_advances_counts() -> None:
    cfg = load_config(default_config_path())
    rec = RunRecorder(cfg, None, blocking_trace=True, on_failure=lambda _text: None)
    # MCs 30 mm apart, wires uncoupled: the ante wire 4 mm out of its MC, the retro wire 20 mm
    tips = {"ante_wire": 4.0, "ante_mc": 0.0, "retro_wire": 10.0, "retro_mc": 30.0}
    _cycle(rec, 0.0, tips, {"ante_wire": 1.0, "retro_wire": 1.0})
    # the retro wire withdraws (insertion down) while the ante wire advances
    _cycle(rec, 0.01, tips, {"ante_wire": 1.1, "retro_wire": 0.9})
    res = _result(rec, 0.01)
    assert res.max_unsupported["ante_wire"] == pytest.approx(4.0)
    assert math.isnan(res.max_unsupported["retro_wire"])  # it never advanced
    assert res.rewinds == 3
    # now the retro wire advances too, coupled to the ante wire (1 mm apart): 1 + 4 mm
    tips = {"ante_wire": 4.0, "ante_mc": 0.0, "retro_wire": 5.0, "retro_mc": 30.0}
    _cycle(rec, 0.02, tips, {"ante_wire": 1.1, "retro_wire": 1.0})
    res = _result(rec, 0.02)
    assert res.max_unsupported == {"ante_wire": pytest.approx(4.0), "retro_wire": pytest.approx(5.0)}
    # a fault latches in a rewind: the quick stop's targets are the drives' positions (here ahead
    # of the setpoints, 20 mm out of support): nothing is advanced, then or in the fault phase
    tips = {"ante_wire": 20.0, "ante_mc": 0.0, "retro_wire": 25.0, "retro_mc": 30.0}
    _cycle(
        rec,
        0.03,
        tips,
        {"ante_wire": 1.5, "retro_wire": 1.5},
        Phase.HAND_IN_HAND_REWIND,
        DriveGoal.QUICK_STOP,
    )
    _cycle(rec, 0.04, tips, {"ante_wire": 1.6, "retro_wire": 1.6}, Phase.FAULT)
    res = _result(rec, 0.04)
    assert res.max_unsupported == {"ante_wire": pytest.approx(4.0), "retro_wire": pytest.approx(5.0)}
