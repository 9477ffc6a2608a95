"""Patient cohorts: sets of simulated WHIH cases drawn from the published case series.

``cohort("paper-2025")`` reproduces the summary of Wang et al., *Front. Cardiovasc. Med.* 12
(2025), doi 10.3389/fcvm.2025.1640101 (14 cases): CTO length median 27.6 mm (7.1-87.3), J-CTO
2.5 +/- 0.9, MC gap median 4.5 mm (2-20), 8 septal / 6 epicardial collaterals (4 ipsilateral),
retrograde as first choice in 6 and after a failed antegrade attempt in 8. The paper reports only
these summaries; the per-case values below are ours, chosen so that every exact statistic (medians,
ranges, counts) holds exactly and the J-CTO mean and SD round to 2.5 and 0.9 (sample and population
SD). ``cohort("synthetic", seed, n=...)`` draws larger cohorts from distributions fitted to the
same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from whih_control.config import Config

__all__ = ["COHORTS", "GAP_MARGIN", "Scenario", "cohort"]

GAP_MARGIN = 0.5
"""mm kept between a scenario's gap target and the configured gap window (see Scenario.apply)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One simulated case."""

    case_id: str
    lesion_length: float
    """CTO length L, mm."""
    jcto: int
    """J-CTO score, 0-5."""
    mc_gap: float
    """Gap between the MC tips the case is run at (paper: the gap achieved), mm."""
    collateral: str
    """'septal' or 'epicardial'."""
    ipsilateral: bool
    """Ipsilateral collateral (donor and recipient on the same coronary)."""
    retrograde_first: bool
    """Retrograde as first choice (True) or after a failed antegrade attempt (False)."""
    seed: int
    """Seed of the simulated lesion and imaging of this case."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lesion_length) and 1.0 <= self.lesion_length <= 200.0):
            raise ValueError(f"lesion_length (={self.lesion_length!r}) must be in [1...200] mm")
        if not 0 <= self.jcto <= 5:
            raise ValueError(f"jcto (={self.jcto!r}) must be in [0...5]")
        if not (math.isfinite(self.mc_gap) and 0.0 < self.mc_gap <= 100.0):
            raise ValueError(f"mc_gap (={self.mc_gap!r}) must be in (0...100] mm")
        if self.collateral not in ("septal", "epicardial"):
            raise ValueError(f"collateral (={self.collateral!r}) must be one of 'septal', 'epicardial'")
        if self.seed < 0:
            raise ValueError(f"seed (={self.seed!r}) must be in [0...2**63-1]")

    def apply(self, cfg: Config) -> Config:
        """``cfg`` with this case's lesion, J-CTO, gap target and seed (validated again).

        The gap target must lie strictly inside ``[procedure.gap_min, procedure.gap_max]``; a case
        at or beyond the window edge (the paper's 2 and 20 mm) runs ``GAP_MARGIN`` inside it.
        The safety window itself is never widened.
        """
        proc = cfg.procedure
        target = min(max(self.mc_gap, proc.gap_min + GAP_MARGIN), proc.gap_max - GAP_MARGIN)
        # neither MC can close the gap further than the case's recorded gap (the premise of WHIH)
        stop = max(proc.gap_min, min(self.mc_gap, target) - GAP_MARGIN)
        lesion = dataclasses.replace(cfg.sim.lesion, mc_stop_gap=stop)
        return cfg.replace(
            procedure=dataclasses.replace(proc, lesion_length=self.lesion_length, gap_target=target),
            sim=dataclasses.replace(cfg.sim, jcto=float(self.jcto), seed=self.seed, lesion=lesion),
        )


# (L mm, J-CTO, gap mm, collateral, ipsilateral, retrograde first choice)
_PAPER_2025: tuple[tuple[float, int, float, str, bool, bool], ...] = (
    (7.1, 1, 3.0, "septal", False, False),
    (12.4, 2, 2.5, "septal", False, True),
    (15.8, 1, 4.0, "epicardial", True, False),
    (18.0, 2, 2.0, "septal", False, False),
    (21.5, 2, 3.5, "septal", False, True),
    (24.3, 3, 5.0, "epicardial", False, True),
    (26.9, 2, 4.0, "septal", False, False),
    (28.3, 3, 3.0, "epicardial", True, False),
    (31.0, 2, 6.0, "septal", False, True),
    (35.2, 3, 5.5, "epicardial", True, False),
    (42.6, 3, 8.5, "septal", False, False),
    (51.8, 4, 7.0, "epicardial", False, True),
    (64.0, 3, 12.0, "septal", False, True),
    (87.3, 4, 20.0, "epicardial", True, False),
)


def _seeds(seed: int, n: int) -> list[int]:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed (={seed!r}) must be an integer in [0...2**63-1]")
    rng = random.Random(seed)
    return [rng.getrandbits(63) for _ in range(n)]


def _paper_2025(seed: int, n: int | None) -> list[Scenario]:
    if n is not None and n != len(_PAPER_2025):
        raise ValueError(f"n (={n}) must be None or {len(_PAPER_2025)} for 'paper-2025'")
    seeds = _seeds(seed, len(_PAPER_2025))
    return [
        Scenario(f"P{i + 1:02d}", length, jcto, gap, coll, ipsi, first, seeds[i])
        for i, (length, jcto, gap, coll, ipsi, first) in enumerate(_PAPER_2025)
    ]


# distributions fitted to the paper's summary
_LENGTH_MEDIAN, _LENGTH_SIGMA, _LENGTH_RANGE = 27.6, 0.74, (5.0, 150.0)
"""log-normal: median 27.6; sigma from ln(87.3/7.1) spanning ~3.4 SD for n = 14."""
_GAP_MEDIAN, _GAP_SIGMA, _GAP_RANGE = 4.5, 0.68, (2.0, 20.0)
"""log-normal: median 4.5; sigma from ln(20/2) spanning ~3.4 SD; clipped to the reported range."""
_JCTO_MEAN, _JCTO_SD = 2.5, 0.9
_P_SEPTAL, _P_IPSI_GIVEN_EPI, _P_RETRO_FIRST = 8 / 14, 4 / 6, 6 / 14


def _synthetic(seed: int, n: int | None) -> list[Scenario]:
    n = 100 if n is None else n
    if not isinstance(n, int) or not 1 <= n <= 1_000_000:
        raise ValueError(f"n (={n!r}) must be an integer in [1...1000000]")
    seeds = _seeds(seed, n)
    rng = random.Random(seed ^ 0x5EED_C0407)
    out = []
    for i in range(n):
        length = _LENGTH_MEDIAN * math.exp(_LENGTH_SIGMA * rng.gauss(0.0, 1.0))
        length = round(min(max(length, _LENGTH_RANGE[0]), _LENGTH_RANGE[1]), 1)
        jcto = min(max(round(rng.gauss(_JCTO_MEAN, _JCTO_SD)), 0), 5)
        gap = _GAP_MEDIAN * math.exp(_GAP_SIGMA * rng.gauss(0.0, 1.0))
        gap = round(min(max(gap, _GAP_RANGE[0]), _GAP_RANGE[1]), 1)
        septal = rng.random() < _P_SEPTAL
        ipsi = (not septal) and rng.random() < _P_IPSI_GIVEN_EPI
        first = rng.random() < _P_RETRO_FIRST
        out.append(
            Scenario(
                f"S{i + 1:04d}",
                length,
                jcto,
                gap,
                "septal" if septal else "epicardial",
                ipsi,
                first,
                seeds[i],
            )
        )
    return out


COHORTS: dict[str, Callable[[int, int | None], list[Scenario]]] = {
    "paper-2025": _paper_2025,
    "synthetic": _synthetic,
}
"""Cohort name -> builder(seed, n)."""


def cohort(name: str, seed: int = 0, *, n: int | None = None) -> list[Scenario]:
    """The scenarios of cohort ``name`` (one of :data:`COHORTS`), deterministic for ``seed``.

    ``n`` sets the size of a synthetic cohort (default 100), as does ``"synthetic:N"``; the
    published preset has 14 cases.
    """
    if isinstance(name, str) and name.startswith("synthetic:"):
        size = name.partition(":")[2]
        if not size.isdigit() or n is not None:
            raise ValueError(f"name (={name!r}) must be 'synthetic:N' with N an integer and no n argument")
        name, n = "synthetic", int(size)
    builder = COHORTS.get(name)
    if builder is None:
        raise ValueError(
            f"name (={name!r}) must be one of {', '.join(repr(k) for k in COHORTS)} or 'synthetic:N'"
        )
    return builder(seed, n)
