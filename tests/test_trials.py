"""Trials: sweeps, executors, the resumable trials folder, summaries and the ``whih trials`` CLI.

The sweeps here are small and each trial is cut short (``procedure.max_time_s``) so that the
file runs in seconds; what is checked is that rows are identical whatever runs them, that a
killed sweep resumes without duplicates or reruns, and that bad input is a clear error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest

import whih_control as wc
from whih_control.cli import main
from whih_control.sim.cohort import Scenario, cohort
from whih_control.trials import (
    RESULT_COLUMNS,
    TrialsError,
    TrialsLostError,
    Variant,
    load_cases,
    parse_seeds,
    parse_set,
    summarize,
    sweep,
    trial_seed,
    wilson,
)

from .conftest import CONFIGS

SHORT = "procedure.max_time_s"
"""Every test sweep sets this low: a trial is a few simulated seconds."""


def _cases(n: int = 2) -> list[Scenario]:
    return [Scenario(f"C{i}", 10.0 + i, 2, 4.5, "septal", False, True, 100 + i) for i in range(n)]


def _variants() -> list[Variant]:
    return sweep({SHORT: [2], "procedure.gap_target": [3.0, 6.0]})


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.reset_index(drop=True)


# --- parsing and variants ---------------------------------------------------------------------


def test_seeds_parse_inclusive_ranges_and_refuse_bad_text() -> None:
    assert parse_seeds("0..4") == range(5)
    assert parse_seeds("7") == range(7, 8)
    for bad in ("4..1", "-1..2", "a..b", "1...3", ""):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


def test_set_parses_toml_scalars() -> None:
    assert parse_set("procedure.gap_target=3,4.5,8") == ("procedure.gap_target", [3, 4.5, 8])
    assert parse_set("procedure.confirm_crossing=true,false") == ("procedure.confirm_crossing", [True, False])
    for bad in ("procedure.gap_target", "=3", "procedure.gap_target=", "procedure.step=1,,2"):
        with pytest.raises(ValueError, match="--set"):
            parse_set(bad)


def test_sweep_is_the_cross_product_named_from_its_settings() -> None:
    vs = sweep({"procedure.gap_target": [3, 4.5], "procedure.step": [0.5, 1.0, 2.0]})
    assert len(vs) == 6
    assert vs[0].name == "procedure.gap_target=3 procedure.step=0.5"
    assert vs[-1].settings == (("procedure.gap_target", 4.5), ("procedure.step", 2.0))
    assert len({v.name for v in vs}) == 6
    assert [v.name for v in sweep()] == ["default"]
    cfg = vs[-1].apply(wc.load_config(wc.default_config_path()))
    assert (cfg.procedure.gap_target, cfg.procedure.step) == (4.5, 2.0)


def test_a_bad_key_or_value_names_it() -> None:
    base = wc.load_config(wc.default_config_path())
    with pytest.raises(wc.ConfigError, match=r"procedure\.gap_targt: unknown key"):
        Variant.of({"procedure.gap_targt": 3}).apply(base)
    with pytest.raises(wc.ConfigError, match=r"unknown section 'procdure'"):
        Variant.of({"procdure.gap_target": 3}).apply(base)
    with pytest.raises(wc.ConfigError, match=r"procedure\.step.*got 99"):
        Variant.of({"procedure.step": 99}).apply(base)


def test_ablations_are_validated_and_each_compared_with_the_full_strategy() -> None:
    with pytest.raises(ValueError, match="no-such"):
        sweep(ablate=["no-such"])
    names = [v.name for v in sweep({"procedure.gap_target": [3, 8]}, ablate=["no-coupling", "no-rotation"])]
    assert names == [
        "procedure.gap_target=3",
        "procedure.gap_target=3 ablate=no-coupling",
        "procedure.gap_target=3 ablate=no-rotation",
        "procedure.gap_target=8",
        "procedure.gap_target=8 ablate=no-coupling",
        "procedure.gap_target=8 ablate=no-rotation",
    ]
    base = wc.load_config(CONFIGS / "sim.toml")
    ablated = sweep(ablate=["no-rotation"])[1].apply(base)
    assert tuple(ablated.procedure.ablations) == ("no-rotation",)


def test_trial_seed_depends_on_case_and_seed() -> None:
    seeds = {trial_seed(c, s) for c in range(20) for s in range(20)}
    assert len(seeds) == 400
    assert all(0 <= s < 2**63 for s in seeds)
    assert trial_seed(3, 4) == trial_seed(3, 4)


# --- cohorts ----------------------------------------------------------------------------------


def test_csv_cohort_loads_documented_columns(tmp_path: Path) -> None:
    path = tmp_path / "cases.csv"
    path.write_text(
        "case_id,lesion_length,jcto,mc_gap,collateral,ipsilateral,retrograde_first,seed\n"
        "A,12.5,2,4.0,epicardial,true,false,7\n"
        "B,30,3,6,septal,0,1,\n",
        encoding="utf-8",
    )
    a, b = load_cases(path)
    assert a == Scenario("A", 12.5, 2, 4.0, "epicardial", True, False, 7)
    assert (b.case_id, b.lesion_length, b.collateral, b.retrograde_first) == ("B", 30.0, "septal", True)
    assert load_cases(path)[1].seed == b.seed  # a derived seed is deterministic


_HEADER = "case_id,lesion_length,jcto,mc_gap"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "case_id,lesion_length,jcto\nA,1,2\n",
            ": missing column(s) mc_gap (got case_id, lesion_length, jcto)",
        ),
        (f"{_HEADER},colour\nA,10,2,4,red\n", ": unknown column(s) colour (allowed "),
        (f"{_HEADER},jcto\nA,10,2,4,3\n", ": column(s) jcto appear more than once in the header"),
        ("", ": the file is empty (a header row with case_id, lesion_length, jcto, mc_gap is needed)"),
        ("\n \n,,,\n", ": the file is empty (a header row with case_id, lesion_length, jcto, mc_gap"),
        (f"{_HEADER}\n", ": no cases (only a header row)"),
        # conversion failures and range failures read alike: column, value, what is allowed
        (
            f"{_HEADER}\nA,10,2,4\nB,abc,2,4\n",
            " line 3: lesion_length (='abc') must be a number in [1...200] mm",
        ),
        (f"{_HEADER}\nA,,2,4\n", " line 2: lesion_length (='') must be a number in [1...200] mm"),
        (f"{_HEADER}\nA,0.5,2,4\n", " line 2: lesion_length (=0.5) must be a number in [1...200] mm"),
        (f"{_HEADER}\nA,nan,2,4\n", " line 2: lesion_length (=nan) must be a number in [1...200] mm"),
        (f"{_HEADER}\nA,10,1.5,4\n", " line 2: jcto (='1.5') must be an integer in [0...5]"),
        (f"{_HEADER}\nA,10,9,4\n", " line 2: jcto (=9) must be an integer in [0...5]"),
        (f"{_HEADER}\nA,10,2,x\n", " line 2: mc_gap (='x') must be a number in (0...100] mm"),
        (f"{_HEADER}\nA,10,2,0\n", " line 2: mc_gap (=0.0) must be a number in (0...100] mm"),
        (f"{_HEADER},seed\nA,10,2,4,1e3\n", " line 2: seed (='1e3') must be an integer in [0...2**63-1]"),
        (f"{_HEADER},seed\nA,10,2,4,-1\n", " line 2: seed (=-1) must be an integer in [0...2**63-1]"),
        (
            f"{_HEADER},seed\nA,10,2,4,{2**63}\n",
            f" line 2: seed (={2**63}) must be an integer in [0...2**63-1]",
        ),
        (f"{_HEADER},collateral\nA,10,2,4,radial\n", " line 2: collateral (='radial') must be one of"),
        (f"{_HEADER},ipsilateral\nA,10,2,4,maybe\n", " line 2: ipsilateral (='maybe') must be true/false"),
        (f"{_HEADER}\nA1,15,1\n", " line 2: mc_gap is missing (the row has 3 of 4 columns)"),
        (f"{_HEADER}\nA1,15\n", " line 2: jcto, mc_gap are missing (the row has 2 of 4 columns)"),
        (f"{_HEADER},seed\nA1,15,1,4\n", " line 2: seed is missing (the row has 4 of 5 columns)"),
        (f"{_HEADER}\nA1,15,1,4,9\n", " line 2: the row has 5 fields, the header 4 columns (extra: '9')"),
        (
            f"{_HEADER}\nA,10,2,4\nB,11,2,4\nA,12,2,4\n",
            " line 4: case_id (='A') must be unique (line 2 has it too)",
        ),
        (f"{_HEADER}\n,10,2,4\n", " line 2: case_id (='') must be non-empty"),
        # blank lines are skipped but counted: the line is the file's
        (
            f"{_HEADER}\nA,10,2,4\n\n,,,\nB,x,2,4\n",
            " line 5: lesion_length (='x') must be a number in [1...200] mm",
        ),
        (b"case_id\xff", ": not UTF-8 text (byte 0xff at offset 7)"),
        (f"{_HEADER}\nA,{'1' * 200_000},2,4\n", " line 2: field larger than field limit"),  # a csv.Error
    ],
)
def test_csv_cohort_errors_name_the_line_column_value_and_range(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    path = tmp_path / "cases.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError) as info:
        load_cases(path)
    got = str(info.value)
    assert got.startswith(f"cohort CSV {path}{message}"), got
    assert got.count("cohort CSV") == 1, got  # the prefix once, never nested


def test_csv_cohort_skips_blank_lines_and_fills_empty_optional_cells(tmp_path: Path) -> None:
    path = tmp_path / "cases.csv"
    path.write_text(
        "\n case_id , lesion_length,jcto,mc_gap,collateral,ipsilateral,seed\n\nA,10,2,4,,,\n,,,,,,\n",
        encoding="utf-8",
    )
    (a,) = load_cases(path)
    assert (a.case_id, a.collateral, a.ipsilateral) == ("A", "septal", False)
    assert a.seed == load_cases(path)[0].seed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (42, "cohort (=42) must be a cohort name, a CSV path or a sequence of Scenario"),
        (None, "cohort (=None) must be a cohort name, a CSV path or a sequence of Scenario"),
        ([], "cohort (=[]) must hold at least one Scenario"),
        (["A"], "cohort[0] (='A') must be a Scenario"),
        ("paper-2025:3", "cohort (='paper-2025:3'): paper-2025 has exactly 14 cases; give no size"),
        ("synthetic:0", "cohort (='synthetic:0'): N must be an integer in [1...1000000]"),
        ("synthetic:-2", "cohort (='synthetic:-2'): N must be an integer in [1...1000000]"),
        ("synthetic:x", "cohort (='synthetic:x'): N must be an integer in [1...1000000]"),
        ("synthetic:1000001", "cohort (='synthetic:1000001'): N must be an integer in [1...1000000]"),
        ("nope", "cohort (='nope') must be one of paper-2025, synthetic (with :N for a size) or a CSV file"),
    ],
)
def test_a_bad_cohort_names_it(spec: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        wc.trials(spec, progress=False)
    assert str(info.value).startswith(message), info.value


def test_cli_bad_csv_cohort_is_a_usage_error_naming_line_column_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cases.csv"
    path.write_text(f"{_HEADER}\nA,10,1.5,4\n", encoding="utf-8")
    assert main(["trials", "--cohort", str(path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err == f"whih trials: cohort CSV {path} line 2: jcto (='1.5') must be an integer in [0...5]\n"
    assert not (tmp_path / "x").exists()


def test_cli_help_says_what_a_bare_synthetic_cohort_is(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["trials", "--help"])
    assert f"synthetic alone: {len(cohort('synthetic'))} cases" in " ".join(capsys.readouterr().out.split())


# --- summary ----------------------------------------------------------------------------------


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_matches_scipy(kn: tuple[int, int]) -> None:
    k, n = kn
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9)
    assert hi == pytest.approx(ci.high, abs=1e-9)
    assert lo <= k / n <= hi


def test_summary_counts_rates_and_errors() -> None:
    rows = pd.DataFrame(
        {
            "variant": ["a", "a", "a", "b", "b"],
            "outcome": ["complete", "aborted", "error", "complete", "complete"],
            "crossed": [True, False, False, True, True],
            "sim_seconds": [10.0, 30.0, float("nan"), 20.0, 40.0],
        }
    )
    s = summarize(rows, ["b", "a"])
    assert list(s["variant"]) == ["b", "a"]
    a = s.set_index("variant").loc["a"]
    assert (a["n"], a["crossed"], a["errors"], a["rate"]) == (2, 1, 1, 0.5)
    assert a["median_sim_seconds"] == 20.0
    assert a["median_crossing_sim_seconds"] == 10.0
    assert (a["ci_low"], a["ci_high"]) == pytest.approx(wilson(1, 2))


# --- sweeps on executors ----------------------------------------------------------------------


def test_rows_are_identical_whatever_the_executor(tmp_path: Path) -> None:
    kwargs = {"variants": _variants(), "seeds": [0, 1], "progress": False}
    one = wc.trials(_cases(), jobs=1, out=tmp_path / "one", **kwargs)
    with ThreadPoolExecutor(max_workers=3) as pool:
        threads = wc.trials(_cases(), executor=pool, **kwargs)
    assert list(one.columns) == list(RESULT_COLUMNS)
    assert len(one) == 2 * 2 * 2
    assert list(zip(one["case_id"], one["variant"], one["seed"], strict=True)) == sorted(
        zip(one["case_id"], one["variant"], one["seed"], strict=True)
    )
    pd.testing.assert_frame_equal(_comparable(one), _comparable(threads))
    # the trials ran: each has its own simulation seed and a sane outcome
    assert one["sim_seed"].nunique() == 4  # per (case, seed), the same across variants
    assert set(one["outcome"]) <= {"complete", "aborted", "fault", "timeout"}
    assert (one["sim_seconds"] > 0).all()
    # and what was written equals what was returned
    pd.testing.assert_frame_equal(_comparable(pd.read_parquet(tmp_path / "one" / "results.parquet")), one)
    csv = pd.read_csv(tmp_path / "one" / "results.csv")
    assert list(csv["sim_seed"]) == list(one["sim_seed"])
    assert (tmp_path / "one" / "summary.csv").exists()
    assert {p.name for p in (tmp_path / "one" / "plots").iterdir()} == {"rate.png", "time.png", "force.png"}


def test_dask_local_cluster_gives_the_same_rows() -> None:
    distributed = pytest.importorskip("distributed")
    kwargs = {"variants": _variants()[:1], "seeds": [0, 1], "progress": False}
    with ThreadPoolExecutor(max_workers=2) as pool:
        expected = wc.trials(_cases(), executor=pool, **kwargs)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        got = wc.trials(_cases(), executor=client, **kwargs)
    pd.testing.assert_frame_equal(_comparable(got), _comparable(expected))


def test_cli_dask_address_runs_on_the_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    distributed = pytest.importorskip("distributed")
    argv = ["trials", "--cohort", "synthetic:1", "--seeds", "0..1", "--set", f"{SHORT}=1"]
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        code = main([*argv, "--dask", cluster.scheduler_address, "--out", str(tmp_path / "d")])
    assert code == 0, capsys.readouterr().err
    with ThreadPoolExecutor(max_workers=2) as pool:
        expected = wc.trials(
            "synthetic:1", variants=[{SHORT: 1}], seeds=[0, 1], executor=pool, progress=False
        )
    pd.testing.assert_frame_equal(_comparable(pd.read_parquet(tmp_path / "d" / "results.parquet")), expected)


def test_a_trial_that_raises_is_an_error_row(tmp_path: Path) -> None:
    # valid for the base config (gap_target 4.5) but not for a case whose gap target is 4.5 + ...
    cases = [Scenario("OK", 10.0, 2, 4.5, "septal", False, True, 1)]
    cases.append(Scenario("BAD", 10.0, 2, 15.0, "septal", False, True, 2))
    with ThreadPoolExecutor(max_workers=2) as pool:
        df = wc.trials(cases, variants=[{SHORT: 2, "procedure.gap_max": 8.0}], executor=pool, progress=False)
    bad = df.set_index("case_id").loc["BAD"]
    assert bad["outcome"] == "error"
    assert "ConfigError" in bad["reason"] and "gap_target" in bad["reason"]
    assert df.set_index("case_id").loc["OK", "outcome"] != "error"


class _DyingWorker(Executor):
    """Runs trials inline, but the worker of seed 1 dies (its future fails, not the trial)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        if args[0].seed == 1:
            fut.set_exception(BrokenProcessPool("a worker died"))
        else:
            fut.set_result(fn(*args, **kwargs))
        return fut


def test_a_trial_lost_with_its_worker_is_not_journaled_and_runs_on_the_rerun(tmp_path: Path) -> None:
    kwargs = {"variants": [{SHORT: 1}], "seeds": [0, 1], "progress": False, "out": tmp_path}
    with pytest.raises(TrialsLostError, match="1 trial"):
        wc.trials(_cases(1), executor=_DyingWorker(), **kwargs)
    assert [k[2] for k in _journal_keys(tmp_path / "results.jsonl")] == [0]
    ran: list[int] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        df = wc.trials(_cases(1), executor=pool, on_row=lambda r: ran.append(r["seed"]), **kwargs)
    assert ran == [1]
    assert list(df["seed"]) == [0, 1]


def test_record_writes_a_run_folder_per_trial(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        wc.trials(_cases(1), variants=[{SHORT: 1}], executor=pool, out=tmp_path, record=True, progress=False)
    runs = list((tmp_path / "runs").rglob("summary.json"))
    assert len(runs) == 1
    assert json.loads(runs[0].read_text())["sim_seconds"] > 0
    # a run folder left by an attempt that never reached the journal is started anew
    (tmp_path / "results.jsonl").write_bytes(b"")
    runs[0].write_text("{}")
    with ThreadPoolExecutor(max_workers=1) as pool:
        df = wc.trials(
            _cases(1), variants=[{SHORT: 1}], executor=pool, out=tmp_path, record=True, progress=False
        )
    assert df.loc[0, "outcome"] != "error", df.loc[0, "reason"]
    assert json.loads(runs[0].read_text())["sim_seconds"] > 0


# --- the trials folder --------------------------------------------------------------------------


def test_a_torn_last_line_is_dropped_and_the_trial_rerun(tmp_path: Path) -> None:
    kwargs = {"variants": [{SHORT: 1}], "seeds": [0, 1, 2], "progress": False}
    with ThreadPoolExecutor(max_workers=2) as pool:
        full = wc.trials(_cases(1), executor=pool, out=tmp_path, **kwargs)
    journal = tmp_path / "results.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:1]) + lines[1][: len(lines[1]) // 2])  # a crash mid-append
    ran: list[int] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        again = wc.trials(
            _cases(1), executor=pool, out=tmp_path, on_row=lambda r: ran.append(r["seed"]), **kwargs
        )
    first_seed = json.loads(lines[0])["seed"]
    assert sorted(ran) == sorted({0, 1, 2} - {first_seed})
    pd.testing.assert_frame_equal(again, full)
    rows = [json.loads(x) for x in journal.read_bytes().splitlines()]
    assert sorted(r["seed"] for r in rows) == [0, 1, 2]


def test_a_folder_of_another_base_config_or_in_use_is_refused(tmp_path: Path) -> None:
    base = wc.load_config(wc.default_config_path())
    with ThreadPoolExecutor(max_workers=1) as pool:
        wc.trials(_cases(1), variants=[{SHORT: 1}], executor=pool, out=tmp_path, progress=False)
        other = base.replace(procedure={**base.to_dict()["procedure"], "step": 0.5})
        with pytest.raises(TrialsError, match="another base configuration"):
            wc.trials(_cases(1), variants=[{SHORT: 1}], executor=pool, out=tmp_path, config=other)
        import fcntl  # noqa: PLC0415

        with (tmp_path / ".lock").open("ab") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)
            with pytest.raises(TrialsError, match="another sweep"):
                wc.trials(_cases(1), variants=[{SHORT: 1}], executor=pool, out=tmp_path)


def _journal_keys(path: Path) -> list[tuple[str, str, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a torn last line
        out.append((r["case_id"], r["variant"], r["seed"]))
    return out


def test_cli_sweep_killed_with_sigkill_resumes_without_duplicates_or_reruns(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["--cohort", "synthetic:2", "--seeds", "0..2", "--set", f"{SHORT}=2", "--out", str(out)]
    cmd = [sys.executable, "-m", "whih_control.cli", "trials", *args, "--jobs", "2"]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path
    )
    journal = out / "results.jsonl"
    deadline = time.monotonic() + 120.0
    try:
        while len(_journal_keys(journal)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep: parent and workers
    finally:
        proc.wait()
    before = _journal_keys(journal)
    assert 2 <= len(before) < 6, f"the sweep was not killed half-way ({len(before)} rows)"
    # rerun the same command: only the missing trials run
    code = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert code.returncode == 0, code.stderr
    after = _journal_keys(journal)
    assert after[: len(before)] == before  # finished rows kept, not rerun
    assert len(after) == len(set(after)) == 6  # every trial once
    resumed = pd.read_parquet(out / "results.parquet")
    assert len(resumed) == 6 and not resumed.duplicated(["case_id", "variant", "seed"]).any()
    # and the same rows as an uninterrupted sweep
    with ThreadPoolExecutor(max_workers=2) as pool:
        fresh = wc.trials("synthetic:2", variants=[{SHORT: 2}], seeds=range(3), executor=pool, progress=False)
    pd.testing.assert_frame_equal(_comparable(resumed), _comparable(fresh))
    assert "variant" in code.stdout and "6 rows" in code.stdout


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--set", "procedure.gap_targt=3"], "procedure.gap_targt: unknown key"),
        (["--set", "procedure.gap_target=3,x"], "procedure.gap_target"),
        (["--seeds", "5..1"], "--seeds"),
        (["--ablate", "no-such"], "ablation.*no-such"),
        (["--cohort", "nope"], "cohort"),
        (["--cohort", "synthetic:x"], "synthetic:x"),
        (["--jobs", "0"], "--jobs"),
        (["--set", "procedure.gap_target=3,3"], "procedure.gap_target=3 would run twice"),
        (["--ablate", "no-coupling", "--ablate", "no-coupling"], "ablate=no-coupling would run twice"),
        (["--seeds", f"0..{2**64}"], r"must be <= 2\*\*63-1"),
        (["--seeds", "0..100000000"], "100,000,001 seeds, more than 1,000,000 trials"),
        (["--seeds", f"0..{2**63 - 1}"], "more than 1,000,000 trials"),
        (["--cohort", "synthetic:1001", "--seeds", "0..999"], "1,001,000 trials: one sweep runs at most"),
        (["--dask", "foo"], r"--dask \(='foo'\)"),
        (["--out", ""], r"--out \(=''\) must be a folder path"),
        (["--config", str(CONFIGS / "rig-epos4.toml")], "sim.enabled is false"),
    ],
)
def test_cli_bad_input_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], match: str
) -> None:
    base = {"--cohort": "paper-2025", "--out": str(tmp_path / "x")}
    extra: list[str] = []
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        if flag in base:
            base[flag] = value
        else:
            extra += [flag, value]
    assert main(["trials", *[x for kv in base.items() for x in kv], *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert pytest.importorskip("re").search(match, err), err
    assert not (tmp_path / "x").exists()


def _workers_of(parent: int) -> list[int]:
    """The pool workers (spawned children) of process ``parent``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_sweep_leaves_no_worker_running(tmp_path: Path, sig: signal.Signals) -> None:
    # long trials, so that both workers are busy when the signal comes
    args = ["--cohort", "synthetic:4", "--seeds", "0..0", "--out", str(tmp_path / "sweep"), "--jobs", "2"]
    cmd = [sys.executable, "-m", "whih_control.cli", "trials", *args]
    err = tmp_path / "stderr.txt"
    with err.open("w") as stderr_file:  # a file, not a pipe: workers left running would hold a pipe open
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr_file, cwd=tmp_path)
    deadline = time.monotonic() + 120.0
    try:
        workers = _workers_of(proc.pid)
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = _workers_of(proc.pid)
        assert len(workers) == 2, "the pool's workers never started"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err.read_text()
    if sig == signal.SIGTERM:
        assert proc.returncode == 1, stderr
        assert "stopped (Ctrl-C or SIGTERM); rerun the same command to resume" in stderr
        assert "Traceback" not in stderr
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)], f"workers left running after {sig.name}"


def test_a_folder_holds_one_sweep_and_nothing_else(tmp_path: Path) -> None:
    kwargs = {"variants": [{SHORT: 1}], "progress": False}
    t = tmp_path / "t"
    with ThreadPoolExecutor(max_workers=2) as pool:
        wc.trials(_cases(1), seeds=[0], executor=pool, out=t, **kwargs)
        for other, part in (
            ({"seeds": [0, 1]}, r"its seeds \(0..0; this sweep: 0..1\)"),
            (
                {"variants": [{SHORT: 2}]},
                r"its variants \(procedure.max_time_s=1; this sweep: procedure.max_time_s=2\)",
            ),
            ({"variants": {"procedure.max_time_s=1": {SHORT: 2}}}, "its variants"),  # same name
        ):
            args = {**kwargs, "seeds": [0], **other}
            with pytest.raises(TrialsError, match=f"holds another sweep: {part}"):
                wc.trials(_cases(1), executor=pool, out=t, **args)  # type: ignore[arg-type]
        with pytest.raises(TrialsError, match=r"its cases \(case C0; this sweep: 2 cases, C0...C1\)"):
            wc.trials(_cases(2), seeds=[0], executor=pool, out=t, **kwargs)
        # the same sweep again, however spelled: nothing to run, the same rows
        again = wc.trials(
            _cases(1), seeds=[0], executor=pool, out=t, **{**kwargs, "variants": [{SHORT: 1.0}]}
        )
        assert len(again) == 1
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("x")
        with pytest.raises(TrialsError, match=r"not a trials folder \(no sweep.json; it holds notes.txt\)"):
            wc.trials(_cases(1), seeds=[0], executor=pool, out=tmp_path / "mine", **kwargs)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    (t / "sweep.json").write_text('{"base_config_hash": "')  # a torn write
    with pytest.raises(TrialsError, match=r"sweep\.json: unreadable"):
        wc.trials(_cases(1), seeds=[0], out=t, **kwargs)


def test_the_same_sweep_in_another_order_resumes(tmp_path: Path) -> None:
    two = sweep({SHORT: [1], "procedure.gap_target": [3, 6]})
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = wc.trials(_cases(2), variants=two, seeds=[0, 1], executor=pool, out=tmp_path, progress=False)
        ran: list[Any] = []
        again = wc.trials(
            list(reversed(_cases(2))),
            variants=list(reversed(two)),
            seeds=[1, 0],
            executor=pool,
            out=tmp_path,
            progress=False,
            on_row=ran.append,
        )
    assert ran == []
    key = ["case_id", "variant", "seed"]
    pd.testing.assert_frame_equal(
        again.sort_values(key).reset_index(drop=True), first.sort_values(key).reset_index(drop=True)
    )


def test_a_first_run_killed_while_writing_sweep_json_resumes(tmp_path: Path) -> None:
    (tmp_path / ".lock").touch()
    (tmp_path / "sweep.json.tmp").write_text('{"base_')  # the rename never happened
    df = wc.trials(_cases(1), variants=[{SHORT: 1}], jobs=1, out=tmp_path, progress=False)
    assert len(df) == 1
    assert json.loads((tmp_path / "sweep.json").read_text())["sweep"]["seeds"][1] == "0..0"


def test_a_folder_from_before_sweep_identities_is_adopted_only_by_its_own_sweep(tmp_path: Path) -> None:
    kwargs = {"variants": [{SHORT: 1}], "progress": False}
    with ThreadPoolExecutor(max_workers=2) as pool:
        wc.trials(_cases(1), seeds=[0, 1], executor=pool, out=tmp_path / "a", **kwargs)
        shutil.copytree(tmp_path / "a", tmp_path / "b")
        for folder in ("a", "b"):  # as written before: the base configuration only
            path = tmp_path / folder / "sweep.json"
            path.write_text(
                json.dumps({"base_config_hash": json.loads(path.read_text())["base_config_hash"]})
            )
        with pytest.raises(TrialsError, match="written before trials folders recorded their sweep"):
            wc.trials(_cases(1), seeds=[5], executor=pool, out=tmp_path / "a", **kwargs)
        ran: list[Any] = []
        wc.trials(_cases(1), seeds=[0, 1, 2], executor=pool, out=tmp_path / "b", on_row=ran.append, **kwargs)
    assert [r["seed"] for r in ran] == [2]  # its rows are this sweep's: adopted, only seed 2 ran
    with pytest.raises(TrialsError, match="its seeds"):
        wc.trials(_cases(1), seeds=[5], out=tmp_path / "b", **kwargs)


def test_api_arguments_are_named_when_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"seeds \(=5\) must be an iterable of integers"):
        wc.trials(_cases(1), seeds=5, progress=False)  # type: ignore[arg-type]
    for many in (range(1_000_001), range(2**63)):
        with pytest.raises(ValueError, match="seeds: more than 1,000,000 seeds"):
            wc.trials(_cases(1), seeds=many, progress=False)
    with pytest.raises(ValueError, match=r"out \(=''\)"):
        wc.trials(_cases(1), out="", progress=False)
    with pytest.raises(ValueError, match=r"sim\.enabled is false"):
        wc.trials(_cases(1), config=CONFIGS / "rig-epos4.toml", progress=False)


def test_cli_exits_1_when_a_trial_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases.csv"
    # a gap target above the variant's gap_max: that case's configuration is refused in its trial
    cases.write_text("case_id,lesion_length,jcto,mc_gap\nOK,10,2,4.5\nBAD,10,2,15\n")
    argv = ["trials", "--cohort", str(cases), "--set", f"{SHORT}=1", "--set", "procedure.gap_max=8"]
    assert main([*argv, "--jobs", "1", "--out", str(tmp_path / "t")]) == 1
    captured = capsys.readouterr()
    assert "1 of 2 trials raised (outcome 'error'" in captured.err
    assert "2 rows" in captured.out
    # rerun: nothing left to run, the same answer, and the header says what the folder held
    assert main([*argv, "--jobs", "1", "--out", str(tmp_path / "t")]) == 1
    assert "(the folder's journal holds 2 rows: only missing trials run)" in capsys.readouterr().out


def test_a_script_without_a_main_guard_is_told_so(tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(
        "import whih_control as wc\n"
        f"wc.trials('synthetic:1', variants=[{{'{SHORT}': 1}}], jobs=1, out='t', progress=False)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode != 0
    assert "if __name__ == '__main__':" in proc.stderr
    assert "another sweep is writing" not in proc.stderr
