"""Cohorts: the published case series' summary holds exactly; synthetic cohorts are seeded."""

from __future__ import annotations

import statistics

import pytest

from whih_control.config import ConfigError, load_config
from whih_control.sim import Scenario, cohort
from whih_control.sim.cohort import GAP_MARGIN, SYNTHETIC_DEFAULT_N

from .conftest import CONFIGS


def test_paper_2025_reproduces_the_published_summary() -> None:
    cases = cohort("paper-2025")
    assert len(cases) == 14
    lengths = [c.lesion_length for c in cases]
    assert statistics.median(lengths) == pytest.approx(27.6, abs=1e-9)
    assert (min(lengths), max(lengths)) == (7.1, 87.3)
    jcto = [c.jcto for c in cases]
    assert all(isinstance(j, int) and 0 <= j <= 5 for j in jcto)
    assert round(statistics.mean(jcto), 1) == 2.5
    assert round(statistics.stdev(jcto), 1) == 0.9
    assert round(statistics.pstdev(jcto), 1) == 0.9
    gaps = [c.mc_gap for c in cases]
    assert statistics.median(gaps) == pytest.approx(4.5, abs=1e-9)
    assert (min(gaps), max(gaps)) == (2.0, 20.0)
    assert sum(c.collateral == "septal" for c in cases) == 8
    assert sum(c.collateral == "epicardial" for c in cases) == 6
    assert sum(c.collateral == "epicardial" and c.ipsilateral for c in cases) == 4
    assert sum(c.retrograde_first for c in cases) == 6
    assert sum(not c.retrograde_first for c in cases) == 8
    assert len({c.case_id for c in cases}) == 14
    assert len({c.seed for c in cases}) == 14


def test_cohorts_are_deterministic_for_a_seed() -> None:
    assert cohort("paper-2025", seed=3) == cohort("paper-2025", seed=3)
    assert [c.seed for c in cohort("paper-2025", 3)] != [c.seed for c in cohort("paper-2025", 4)]
    assert cohort("synthetic", seed=7, n=50) == cohort("synthetic", seed=7, n=50)
    assert cohort("synthetic", seed=7, n=50) != cohort("synthetic", seed=8, n=50)


def test_synthetic_cohort_follows_the_fitted_distributions() -> None:
    cases = cohort("synthetic", seed=1, n=2000)
    assert len(cases) == 2000
    assert statistics.median(c.lesion_length for c in cases) == pytest.approx(27.6, rel=0.1)
    assert statistics.median(c.mc_gap for c in cases) == pytest.approx(4.5, rel=0.1)
    assert all(2.0 <= c.mc_gap <= 20.0 and 0 <= c.jcto <= 5 for c in cases)
    assert statistics.mean(c.jcto for c in cases) == pytest.approx(2.5, abs=0.1)
    assert sum(c.collateral == "septal" for c in cases) / 2000 == pytest.approx(8 / 14, abs=0.04)
    assert sum(c.retrograde_first for c in cases) / 2000 == pytest.approx(6 / 14, abs=0.04)
    assert not any(c.ipsilateral and c.collateral == "septal" for c in cases)


def test_apply_sets_lesion_jcto_gap_and_seed() -> None:
    base = load_config(CONFIGS / "sim.toml")
    for case in cohort("paper-2025", seed=2):
        cfg = case.apply(base)
        assert cfg.procedure.lesion_length == case.lesion_length
        assert cfg.sim.jcto == case.jcto
        assert cfg.sim.seed == case.seed
        lo, hi = cfg.procedure.gap_min, cfg.procedure.gap_max
        assert (lo, hi) == (base.procedure.gap_min, base.procedure.gap_max)
        assert lo < cfg.procedure.gap_target < hi
        if lo + GAP_MARGIN <= case.mc_gap <= hi - GAP_MARGIN:
            assert cfg.procedure.gap_target == case.mc_gap
        # everything else untouched
        assert cfg.drives == base.drives and cfg.imaging == base.imaging


def test_apply_revalidates() -> None:
    base = load_config(CONFIGS / "sim.toml")
    case = Scenario("X", 150.0, 3, 4.5, "septal", False, True, 1)
    cfg = case.apply(base)
    assert cfg.procedure.lesion_length == 150.0
    tight = base.replace(
        procedure={**base.to_dict()["procedure"], "gap_min": 2.0, "gap_max": 2.4, "gap_target": 2.2}
    )
    with pytest.raises(ConfigError, match="gap_target"):
        Scenario("Y", 20.0, 2, 4.5, "septal", False, True, 1).apply(tight)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lesion_length": 0.5}, "lesion_length (=0.5) must be a number in [1...200] mm"),
        ({"lesion_length": 200.5}, "lesion_length (=200.5) must be a number in [1...200] mm"),
        ({"lesion_length": float("nan")}, "lesion_length (=nan) must be a number in [1...200] mm"),
        ({"lesion_length": float("inf")}, "lesion_length (=inf) must be a number in [1...200] mm"),
        ({"lesion_length": "20"}, "lesion_length (='20') must be a number in [1...200] mm"),
        ({"jcto": 6}, "jcto (=6) must be an integer in [0...5]"),
        ({"jcto": -1}, "jcto (=-1) must be an integer in [0...5]"),
        ({"mc_gap": 0.0}, "mc_gap (=0.0) must be a number in (0...100] mm"),
        ({"mc_gap": 100.5}, "mc_gap (=100.5) must be a number in (0...100] mm"),
        ({"collateral": "radial"}, "collateral (='radial') must be one of 'septal', 'epicardial'"),
        ({"seed": -1}, "seed (=-1) must be an integer in [0...2**63-1]"),
        ({"seed": 2**63}, f"seed (={2**63}) must be an integer in [0...2**63-1]"),
        ({"seed": 10**400}, "seed (=1000"),  # too large for a float: still the message, no OverflowError
        ({"seed": True}, "seed (=True) must be an integer"),
    ],
)
def test_scenario_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        Scenario(**{**_GOOD, **kwargs})  # type: ignore[arg-type]
    assert str(info.value).startswith(message), info.value


_GOOD: dict[str, object] = {
    "case_id": "Z",
    "lesion_length": 20.0,
    "jcto": 2,
    "mc_gap": 4.5,
    "collateral": "septal",
    "ipsilateral": False,
    "retrograde_first": True,
    "seed": 0,
}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lesion_length": 1.0},
        {"lesion_length": 200},
        {"jcto": 0},
        {"jcto": 5},
        {"mc_gap": 1e-9},
        {"mc_gap": 100.0},
        {"seed": 2**63 - 1},
    ],
)
def test_scenario_accepts_the_ends_of_each_range(kwargs: dict[str, object]) -> None:
    case = Scenario(**{**_GOOD, **kwargs})  # type: ignore[arg-type]
    ((key, value),) = kwargs.items()
    assert getattr(case, key) == value


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("nope",), {}, "cohort (='nope') must be one of 'paper-2025', 'synthetic' (with :N for a size)"),
        ((42,), {}, "cohort (=42) must be one of 'paper-2025', 'synthetic' (with :N for a size)"),
        (("paper-2025:3",), {}, "cohort (='paper-2025:3'): paper-2025 has exactly 14 cases; give no size"),
        (("synthetic:0",), {}, "cohort (='synthetic:0'): N must be an integer in [1...1000000]"),
        (("synthetic:-2",), {}, "cohort (='synthetic:-2'): N must be an integer in [1...1000000]"),
        (("synthetic:+2",), {}, "cohort (='synthetic:+2'): N must be an integer in [1...1000000]"),
        (("synthetic:2x",), {}, "cohort (='synthetic:2x'): N must be an integer in [1...1000000]"),
        (("synthetic:1000001",), {}, "cohort (='synthetic:1000001'): N must be an integer in [1...1000000]"),
        (
            ("synthetic:5",),
            {"n": 5},
            "cohort (='synthetic:5'): give the size in the name or as n (=5), not both",
        ),
        (("synthetic",), {"n": 0}, "n (=0) must be an integer in [1...1000000]"),
        (("synthetic",), {"n": True}, "n (=True) must be an integer in [1...1000000]"),
        (("paper-2025",), {"n": 20}, "n (=20) must be None or 14: paper-2025 has exactly 14 cases"),
        (("paper-2025",), {"seed": -1}, "seed (=-1) must be an integer in [0...2**63-1]"),
    ],
)
def test_unknown_cohort_and_bad_sizes_are_errors(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        cohort(*args, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_a_size_in_the_name_is_the_same_as_n() -> None:
    assert cohort("synthetic:7", 3) == cohort("synthetic", 3, n=7)
    assert cohort("paper-2025:14") == cohort("paper-2025")
    assert len(cohort("synthetic")) == SYNTHETIC_DEFAULT_N == 100  # documented in README and --help
