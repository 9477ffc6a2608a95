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
import numbers
import random
from collections.abc import Callable
from dataclasses import dataclass

from whih_control.config import Config

__all__ = [
    "COHORTS",
    "GAP_MARGIN",
    "JCTO",
    "LESION_LENGTH",
    "MC_GAP",
    "SEED",
    "SYNTHETIC_DEFAULT_N",
    "SYNTHETIC_MAX_N",
    "Bounds",
    "Scenario",
    "cohort",
]

GAP_MARGIN = 0.5
"""mm kept between a scenario's gap target and the configured gap window (see Scenario.apply)."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """The allowed values of one numeric field of :class:`Scenario`, and how a message says them.

    ``str(bounds)`` reads ``a number in [1...200] mm`` or ``an integer in [0...5]``; an open lower
    end is written ``(``. :meth:`error` is the one message shape for a bad value, whether it failed
    the range here or could not be read as a number at all (the CSV cohort).
    """

    name: str
    lo: float
    hi: float
    integer: bool = False
    lo_open: bool = False
    unit: str = ""

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        # int() keeps a huge integer exact (float() would overflow); NaN and the infinities fail
        # the comparisons below
        x = int(value) if isinstance(value, numbers.Integral) else float(value)
        above = x > self.lo if self.lo_open else x >= self.lo
        return above and x <= self.hi

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        unit = f" {self.unit}" if self.unit else ""
        return f"{kind} in {'(' if self.lo_open else '['}{_fmt(self.lo)}...{_fmt(self.hi)}]{unit}"

    def error(self, value: object) -> ValueError:
        """``name (=value) must be <self>``."""
        return ValueError(f"{self.name} (={value!r}) must be {self}")


def _fmt(x: float) -> str:
    return "2**63-1" if x == 2**63 - 1 else f"{x:g}"


LESION_LENGTH = Bounds("lesion_length", 1.0, 200.0, unit="mm")
JCTO = Bounds("jcto", 0, 5, integer=True)
MC_GAP = Bounds("mc_gap", 0.0, 100.0, lo_open=True, unit="mm")
SEED = Bounds("seed", 0, 2**63 - 1, integer=True)
SYNTHETIC_DEFAULT_N = 100
"""Cases in ``cohort("synthetic")`` when no size is given."""
SYNTHETIC_MAX_N = 1_000_000
"""The largest synthetic cohort."""
_SYNTHETIC_N = range(1, SYNTHETIC_MAX_N + 1)
_SYNTHETIC_SIZE = f"an integer in [1...{SYNTHETIC_MAX_N}]"


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
        # the ranges live in the Bounds constants above, which the CSV cohort's messages also use;
        # jcto is not held to an integer here: a configuration's J-CTO (a float) may be run as a case
        for bounds, value in (
            (LESION_LENGTH, self.lesion_length),
            (JCTO, self.jcto),
            (MC_GAP, self.mc_gap),
            (SEED, self.seed),
        ):
            if value not in bounds:
                raise bounds.error(value)
        if self.collateral not in ("septal", "epicardial"):
            raise ValueError(f"collateral (={self.collateral!r}) must be one of 'septal', 'epicardial'")

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
_PAPER_SIZE = f"paper-2025 has exactly {len(_PAPER_2025)} cases"


def _seeds(seed: int, n: int) -> list[int]:
    if not isinstance(seed, int) or seed not in SEED:
        raise SEED.error(seed)
    rng = random.Random(seed)
    return [rng.getrandbits(63) for _ in range(n)]


def _paper_2025(seed: int, n: int | None) -> list[Scenario]:
    if n is not None and n != len(_PAPER_2025):
        raise ValueError(f"n (={n!r}) must be None or {len(_PAPER_2025)}: {_PAPER_SIZE}")
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
    n = SYNTHETIC_DEFAULT_N if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= SYNTHETIC_MAX_N:
        raise ValueError(f"n (={n!r}) must be {_SYNTHETIC_SIZE}")
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

    ``n`` sets the size of a synthetic cohort (default ``SYNTHETIC_DEFAULT_N``, 100), as does
    ``"synthetic:N"``; the published preset has 14 cases and takes no size.
    """
    base, sep, size = name.partition(":") if isinstance(name, str) else (name, "", "")
    builder = COHORTS.get(base) if isinstance(base, str) else None
    if builder is None:
        raise ValueError(
            f"cohort (={name!r}) must be one of {', '.join(repr(k) for k in COHORTS)} (with :N for a size)"
        )
    if sep:
        if n is not None:
            raise ValueError(f"cohort (={name!r}): give the size in the name or as n (={n!r}), not both")
        if base == "paper-2025" and size != str(len(_PAPER_2025)):
            raise ValueError(f"cohort (={name!r}): {_PAPER_SIZE}; give no size")
        # ASCII only: int() would also read other scripts' digits
        if base == "synthetic" and not (size.isascii() and size.isdecimal() and int(size) in _SYNTHETIC_N):
            raise ValueError(f"cohort (={name!r}): N must be {_SYNTHETIC_SIZE}")
        n = int(size)
    return builder(seed, n)
