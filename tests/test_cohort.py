"""Cohorts: the published case series' summary holds exactly; synthetic cohorts are seeded."""

from __future__ import annotations

import statistics

import pytest

from whih_control.config import ConfigError, load_config
from whih_control.sim import Scenario, cohort
from whih_control.sim.cohort import GAP_MARGIN

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
    ("kwargs", "match"),
    [
        ({"lesion_length": 0.5}, "lesion_length"),
        ({"lesion_length": float("nan")}, "lesion_length"),
        ({"jcto": 6}, "jcto"),
        ({"mc_gap": 0.0}, "mc_gap"),
        ({"collateral": "radial"}, "collateral"),
        ({"seed": -1}, "seed"),
    ],
)
def test_scenario_rejects_bad_values(kwargs: dict[str, object], match: str) -> None:
    good: dict[str, object] = {
        "case_id": "Z",
        "lesion_length": 20.0,
        "jcto": 2,
        "mc_gap": 4.5,
        "collateral": "septal",
        "ipsilateral": False,
        "retrograde_first": True,
        "seed": 0,
    }
    with pytest.raises(ValueError, match=match):
        Scenario(**{**good, **kwargs})  # type: ignore[arg-type]


def test_unknown_cohort_and_bad_sizes_are_errors() -> None:
    with pytest.raises(ValueError, match=r"name .*'nope'"):
        cohort("nope")
    with pytest.raises(ValueError, match="n "):
        cohort("synthetic", n=0)
    with pytest.raises(ValueError, match="n "):
        cohort("paper-2025", n=20)
    with pytest.raises(ValueError, match="seed"):
        cohort("paper-2025", seed=-1)
