"""Trials at scale: every case of a cohort x every variant x every seed, on any executor.

::

    df = wc.trials("paper-2025", variants=sweep({"procedure.gap_target": [3, 4.5, 8]}),
                   seeds=range(5), jobs=2, out="trials/gap")

One trial is one simulated WHIH procedure (simulated time, deterministic for its seed) and gives
one row. Rows are the same whatever the executor or the number of workers, and come back sorted
by case, variant and seed.

**Trials folder** (``out``): ``results.jsonl`` is the journal, the source of truth: one JSON row
appended, flushed and fsynced as each trial ends, so a sweep killed at any moment loses at most
the row being written (a torn last line is dropped on the next start) and a rerun of the same
sweep runs only the missing trials. ``results.csv`` and ``results.parquet`` are rebuilt from the
journal (the CSV also gets each row as it ends, the Parquet file about every ``PARQUET_EVERY_S``);
``summary.csv`` and ``plots/`` are written at the end. ``--record`` adds a run folder per trial
under ``runs/``.

A case's settings (lesion length, J-CTO, gap target, seed) are applied first, then the variant's,
so a variant that sets ``procedure.gap_target`` runs every case at that gap. The simulation seed
of a trial is derived from the case's seed and the trial seed (``trial_seed``).

One folder holds one sweep: a folder of another base configuration, cohort, set of variants or
seeds is refused, so its tables, summary and plots always describe the same rows.

pandas, pyarrow, tqdm and dask.distributed come with the ``trials`` extra (``pip install
'.[trials]'`` in a clone); they are imported when a sweep starts, so ``import whih_control``
stays light.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from whih_control.config import Config, ProcedureConfig, default_config_path, load_config
from whih_control.errors import ConfigError, WhihError
from whih_control.sim.cohort import (
    COHORTS,
    JCTO,
    LESION_LENGTH,
    MC_GAP,
    SEED,
    Bounds,
    Scenario,
    cohort,
)
from whih_control.types import ALL_AXES

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ABLATIONS",
    "CASE_COLUMNS",
    "RESULT_COLUMNS",
    "TrialsArgumentError",
    "TrialsError",
    "TrialsLostError",
    "Variant",
    "load_cases",
    "parse_seeds",
    "parse_set",
    "run_trial",
    "summarize",
    "sweep",
    "trial_seed",
    "trials",
    "wilson",
]

ABLATIONS: tuple[str, ...] = ("no-mc-approach", "no-coupling", "no-rotation")
"""What ``--ablate`` may switch off (docs/DESIGN.md section 3)."""
ABLATION_KEY = "procedure.ablations"
"""The config key the ablations are set through."""

CASE_COLUMNS: tuple[str, ...] = (
    "case_id",
    "lesion_length",
    "jcto",
    "mc_gap",
    "collateral",
    "ipsilateral",
    "retrograde_first",
    "case_seed",
)
"""A case's fields in a result row (``case_seed`` is :attr:`Scenario.seed`)."""
FORCE_COLUMNS: tuple[str, ...] = tuple(f"max_force_{axis}" for axis in ALL_AXES)
RESULT_COLUMNS: tuple[str, ...] = (
    *CASE_COLUMNS,
    "variant",
    "seed",
    "sim_seed",
    "outcome",
    "crossed",
    "sim_seconds",
    "steps",
    "rewinds",
    "min_gap",
    "max_gap",
    "max_unsupported",
    *FORCE_COLUMNS,
    "faults",
    "reason",
    "config_hash",
)
"""The columns of ``results.csv``/``results.parquet``, in order. ``outcome`` is the run's
('complete', 'aborted', 'fault', 'timeout') or 'error' when the trial raised, with the message in
``reason``. ``rewinds`` is what the procedure's strategy started; ``max_unsupported`` (mm) the
larger of the two wires' :attr:`RunResult.max_unsupported` (estimated, while advancing; NaN when no
wire advanced)."""

PARQUET_EVERY_S = 30.0
"""Seconds between rewrites of ``results.parquet`` while a sweep runs."""

_JOURNAL = "results.jsonl"
_SWEEP = "sweep.json"
_LOCK = ".lock"

MAX_TRIALS = 1_000_000
"""Largest sweep (cases x variants x seeds) one call runs: a typo in ``--seeds`` is refused at once
rather than planned for hours."""

EXTRA_HINT = "pip install '.[trials]' in a clone of whih (or 'whih[trials]')"


def require_extra() -> None:
    """Raise ImportError naming the ``trials`` extra if pandas, pyarrow or tqdm is missing."""
    try:
        import pandas  # noqa: F401, PLC0415
        import pyarrow  # noqa: F401, PLC0415
        import tqdm  # noqa: F401, PLC0415
    except ImportError as exc:
        raise ImportError(f"trials need pandas, pyarrow and tqdm: {EXTRA_HINT} ({exc})") from exc


class TrialsError(WhihError):
    """A sweep cannot start or finish: the trials folder holds another sweep's results, is in use,
    or trials were lost with their worker (:class:`TrialsLostError`)."""


class TrialsArgumentError(TrialsError, ValueError):
    """An argument of :func:`trials` is refused before anything runs (a ValueError too)."""


class TrialsLostError(TrialsError):
    """Trials were lost with a worker that died (not a trial that raised): rerun the same sweep
    with the same ``out`` and only they run."""


# ---------------------------------------------------------------------------------------------
# variants and seeds


@dataclass(frozen=True, slots=True)
class Variant:
    """A named set of config settings (dotted key -> value) applied on top of each case."""

    name: str
    settings: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(settings: Mapping[str, Any], name: str | None = None) -> Variant:
        """A variant named from its settings (``key=value`` joined by spaces; 'default' if none)."""
        items = tuple(settings.items())
        return Variant(name or _variant_name(items), items)

    def apply(self, cfg: Config) -> Config:
        """``cfg`` with these settings (validated; :class:`ConfigError` names a bad key/value)."""
        if not self.settings:
            return cfg
        data = cfg.to_dict()
        for key, value in self.settings:
            _set_key(data, key, value)
        return load_config(data, base_dir=Path(cfg.source).parent if cfg.source else None)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "+".join(_show(v) for v in value) or "none"
    return str(value)


def _variant_name(items: Sequence[tuple[str, Any]]) -> str:
    parts = []
    for key, value in items:
        if key == ABLATION_KEY:
            parts.append(f"ablate={_show(value)}")
        else:
            parts.append(f"{key}={_show(value)}")
    return " ".join(parts) or "default"


def _set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` in a config dict; an unknown section/key raises ConfigError naming it."""
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(
            [f"{key}: not a config key (got {key!r}, allowed SECTION.KEY, e.g. procedure.step)"]
        )
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            where = ".".join(parts[:depth]) or "config"
            keys = sorted(k for k, v in node.items() if isinstance(v, dict)) if isinstance(node, dict) else []
            raise ConfigError(
                [f"{key}: unknown section {part!r} in {where} (allowed {', '.join(keys) or 'none'})"]
            )
        node = node[part]
    leaf = parts[-1]
    if leaf not in node:
        raise ConfigError([f"{key}: unknown key {leaf!r} (allowed {', '.join(sorted(node))})"])
    node[leaf] = list(value) if isinstance(value, tuple) else value


def _ablations_supported() -> bool:
    return "ablations" in {f.name for f in dataclasses.fields(ProcedureConfig)}


def check_ablations(names: Iterable[str]) -> tuple[str, ...]:
    """Validate ablation names; ``ValueError`` names a bad one, or says none is implemented yet."""
    out = tuple(names)
    for name in out:
        if name not in ABLATIONS:
            raise ValueError(f"ablation (={name!r}) must be one of {', '.join(ABLATIONS)}")
    if out and not _ablations_supported():
        raise ValueError(
            f"ablation {', '.join(repr(n) for n in out)}: not implemented yet "
            f"(this version's configuration has no {ABLATION_KEY})"
        )
    return out


def sweep(sets: Mapping[str, Sequence[Any]] | None = None, ablate: Sequence[str] = ()) -> list[Variant]:
    """The cross product of ``sets`` (key -> values), each variant named from its settings.

    ``ablate`` (names from :data:`ABLATIONS`): beside each of those variants, one more per name
    with that ablation (``procedure.ablations``), so every ablation is compared with the full
    strategy on the same cases and seeds.
    """
    sets = dict(sets or {})
    for key, values in sets.items():
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"sweep values of {key} (={values!r}) must be a non-empty list")
    ablations = check_ablations(ablate)
    keys = list(sets)
    out = []
    for combo in itertools.product(*(sets[k] for k in keys)):
        settings: dict[str, Any] = dict(zip(keys, combo, strict=True))
        out.append(Variant.of(settings))
        for name in ablations:
            out.append(Variant.of({**settings, ABLATION_KEY: [name]}))
    dup = _repeated(v.name for v in out)
    if dup:
        raise ValueError(
            f"sweep: variant {dup[0]} would run twice (a value or an ablation given twice): give each once"
        )
    return out


def _repeated(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted."""
    seen: set[str] = set()
    twice: set[str] = set()
    for name in names:
        (twice if name in seen else seen).add(name)
    return sorted(twice)


def require_simulated(cfg: Config, name: str = "config") -> None:
    """ValueError (naming ``name``) unless ``cfg`` runs simulated drives: a trial is a simulated
    procedure, and a configuration for real drives would only time out in every trial."""
    if not cfg.sim.enabled:
        where = f" (={str(cfg.source)!r})" if cfg.source else ""
        raise TrialsArgumentError(
            f"{name}{where}: sim.enabled is false (a configuration for real drives): trials run "
            "simulated procedures only"
        )


def _parse_value(text: str) -> Any:
    """A TOML scalar (3, 4.5, true, "x"); a bare word that is not one is taken as a string."""
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,...`` -> (key, values); ``ValueError`` names the bad text."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ValueError(f"--set (={text!r}) must be KEY=V1[,V2...], e.g. procedure.gap_target=3,4.5,8")
    parts = [v for v in values.split(",")]
    if any(not p.strip() for p in parts):
        raise ValueError(f"--set (={text!r}): an empty value in the list")
    return key, [_parse_value(p) for p in parts]


_SEED_MAX = 2**63 - 1
"""Seeds are stored as 64-bit integers (the Parquet and DataFrame columns)."""


def parse_seeds(text: str) -> range:
    """``A..B`` (inclusive) or ``N`` -> a range of seeds; ``ValueError`` names the bad text."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?", text)
    if m is None:
        raise ValueError(f"--seeds (={text!r}) must be A..B (inclusive) or N, with 0 <= A <= B")
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    if b < a:
        raise ValueError(f"--seeds (={text!r}): B (={b}) must be >= A (={a})")
    if b > _SEED_MAX:
        raise ValueError(f"--seeds (={text!r}): B (={b}) must be <= 2**63-1")
    if b - a + 1 > MAX_TRIALS:
        raise ValueError(f"--seeds (={text!r}): {b - a + 1:,} seeds, more than {MAX_TRIALS:,} trials")
    return range(a, b + 1)


def trial_seed(case_seed: int, seed: int) -> int:
    """The simulation seed of (case, seed): a hash of both, in [0, 2**63)."""
    digest = hashlib.sha256(f"{case_seed}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ---------------------------------------------------------------------------------------------
# cohorts

_CSV_REQUIRED = ("case_id", "lesion_length", "jcto", "mc_gap")
_CSV_OPTIONAL = {
    "collateral": "septal",
    "ipsilateral": "false",
    "retrograde_first": "false",
    "seed": "",
}


def _csv_bool(text: str, name: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "y"):
        return True
    if low in ("0", "false", "no", "n", ""):
        return False
    raise ValueError(f"{name} (={text!r}) must be true/false (or 1/0, yes/no)")


def _csv_number(text: str, bounds: Bounds) -> float:
    # only the conversion is checked here; the range is Scenario's (the same Bounds)
    try:
        return float(text)
    except ValueError:
        raise bounds.error(text) from None


def _csv_int(text: str, bounds: Bounds) -> int:
    try:
        return int(text)
    except ValueError:
        raise bounds.error(text) from None


def load_cases(path: str | os.PathLike[str]) -> list[Scenario]:
    """Cases from a CSV file with a header row.

    Columns: ``case_id`` (unique), ``lesion_length`` (mm, [1...200]), ``jcto`` (integer,
    [0...5]), ``mc_gap`` (mm, (0...100]) are required; ``collateral`` ('septal'/'epicardial',
    default septal), ``ipsilateral`` and ``retrograde_first`` (true/false, default false) and
    ``seed`` (integer, [0...2**63-1]; default derived from the case id) are optional. Other
    columns are refused; blank lines are skipped. ``ValueError`` names the file, line, column,
    value and what the column allows.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"cohort CSV {str(p)!r}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"cohort CSV {p}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from None
    reader = csv.reader(io.StringIO(text))
    where = f"cohort CSV {p}"
    try:
        # csv.reader gives [] for an empty line and a line of commas or blanks is no case either
        rows = (r for r in reader if any(cell.strip() for cell in r))
        header = [name.strip() for name in next(rows, [])]
        if not header:
            raise ValueError(f"the file is empty (a header row with {', '.join(_CSV_REQUIRED)} is needed)")
        twice = _repeated(header)
        if twice:
            raise ValueError(f"column(s) {', '.join(twice)} appear more than once in the header")
        missing = [c for c in _CSV_REQUIRED if c not in header]
        if missing:
            raise ValueError(f"missing column(s) {', '.join(missing)} (got {', '.join(header)})")
        unknown = [c for c in header if c not in _CSV_REQUIRED and c not in _CSV_OPTIONAL]
        if unknown:
            allowed = ", ".join([*_CSV_REQUIRED, *_CSV_OPTIONAL])
            raise ValueError(f"unknown column(s) {', '.join(unknown)} (allowed {allowed})")
        cases: list[Scenario] = []
        lines: dict[str, int] = {}
        for row in rows:
            where = f"cohort CSV {p} line {reader.line_num}"
            cases.append(_csv_case(header, row, lines, reader.line_num))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except csv.Error as exc:
        raise ValueError(f"cohort CSV {p} line {reader.line_num}: {exc}") from None
    if not cases:
        raise ValueError(f"cohort CSV {p}: no cases (only a header row)")
    return cases


def _csv_case(header: list[str], row: list[str], lines: dict[str, int], line: int) -> Scenario:
    """One row of the CSV cohort; ``lines`` maps each case id seen so far to its line."""
    if len(row) < len(header):
        # an absent optional cell is refused too: a seed left out by mistake would change the results
        absent = header[len(row) :]
        verb = "is" if len(absent) == 1 else "are"
        raise ValueError(
            f"{', '.join(absent)} {verb} missing (the row has {len(row)} of {len(header)} columns)"
        )
    if len(row) > len(header):
        raise ValueError(
            f"the row has {len(row)} fields, the header {len(header)} columns "
            f"(extra: {', '.join(repr(v) for v in row[len(header) :])})"
        )
    values = {**_CSV_OPTIONAL, **dict(zip(header, (v.strip() for v in row), strict=True))}
    case_id = values["case_id"]
    if not case_id:
        raise ValueError("case_id (='') must be non-empty")
    if case_id in lines:
        raise ValueError(f"case_id (={case_id!r}) must be unique (line {lines[case_id]} has it too)")
    lines[case_id] = line
    seed_text = values["seed"]
    if seed_text:
        seed = _csv_int(seed_text, SEED)
    else:
        seed = trial_seed(0, int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:4], "big"))
    # Scenario checks the ranges (and the collateral) with the same messages
    return Scenario(
        case_id,
        _csv_number(values["lesion_length"], LESION_LENGTH),
        _csv_int(values["jcto"], JCTO),
        _csv_number(values["mc_gap"], MC_GAP),
        values["collateral"] or _CSV_OPTIONAL["collateral"],
        _csv_bool(values["ipsilateral"], "ipsilateral"),
        _csv_bool(values["retrograde_first"], "retrograde_first"),
        seed,
    )


def resolve_cohort(spec: str | os.PathLike[str] | Sequence[Scenario]) -> list[Scenario]:
    """``'paper-2025'``, ``'synthetic:N'`` (or ``'synthetic'``, 100 cases), a CSV path, or a
    sequence of :class:`Scenario`. ``ValueError`` names the bad value and what is allowed."""
    if isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        cases = list(spec)
        if not cases:
            raise ValueError(f"cohort (={spec!r}) must hold at least one Scenario")
        for i, c in enumerate(cases):
            if not isinstance(c, Scenario):
                raise ValueError(f"cohort[{i}] (={c!r}) must be a Scenario")
        return cases
    if not isinstance(spec, str | os.PathLike):
        raise ValueError(f"cohort (={spec!r}) must be a cohort name, a CSV path or a sequence of Scenario")
    text = os.fspath(spec)
    if not isinstance(text, str):  # a PathLike of bytes
        raise ValueError(f"cohort (={spec!r}) must be a cohort name, a CSV path or a sequence of Scenario")
    if text.partition(":")[0] in COHORTS:
        return cohort(text, 0)
    if text.lower().endswith(".csv") or Path(text).is_file():
        return load_cases(text)
    raise ValueError(
        f"cohort (={text!r}) must be one of {', '.join(COHORTS)} (with :N for a size) or a CSV file of cases"
    )


# ---------------------------------------------------------------------------------------------
# one trial (runs in a worker)


@dataclass(frozen=True, slots=True)
class TrialTask:
    """Everything a worker needs for one trial (plain, picklable data)."""

    base: Mapping[str, Any]
    """The base configuration as :meth:`Config.to_dict`."""
    base_dir: str | None
    case: Scenario
    variant: Variant
    seed: int
    record: str | None = None
    """Run folder to write, or None (the row only)."""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.case.case_id, self.variant.name, self.seed)


def _case_fields(case: Scenario) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "lesion_length": case.lesion_length,
        "jcto": case.jcto,
        "mc_gap": case.mc_gap,
        "collateral": case.collateral,
        "ipsilateral": case.ipsilateral,
        "retrograde_first": case.retrograde_first,
        "case_seed": case.seed,
    }


def config_hash(cfg: Config) -> str:
    """12 hex digits of the SHA-256 of a configuration (EDS paths by file name only)."""
    data = cfg.to_dict()
    for drive in data["drives"].values():
        drive["eds"] = Path(drive["eds"]).name
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_trial(task: TrialTask) -> dict[str, Any]:
    """Run one trial; any exception is a row with outcome 'error' and its message in ``reason``."""
    # imported here: a worker process pays for the runtime only when it runs a trial
    from whih_control.api import Robot  # noqa: PLC0415

    row: dict[str, Any] = {c: math.nan for c in RESULT_COLUMNS}
    row.update(_case_fields(task.case))
    sim_seed = trial_seed(task.case.seed, task.seed)
    row.update(
        variant=task.variant.name,
        seed=task.seed,
        sim_seed=sim_seed,
        outcome="error",
        crossed=False,
        steps=0,
        rewinds=0,
        faults="",
        reason="",
        config_hash="",
    )
    try:
        if task.record is not None and Path(task.record).exists():
            # left by an attempt that never reached the journal (a killed sweep): start it anew
            shutil.rmtree(task.record)
        base = load_config(task.base, base_dir=Path(task.base_dir) if task.base_dir else None)
        cfg = task.variant.apply(task.case.apply(base))
        cfg = cfg.replace(sim=dataclasses.replace(cfg.sim, enabled=True, seed=sim_seed))
        row["config_hash"] = config_hash(cfg)
        with Robot(cfg, clock="simulated", seed=sim_seed, out=task.record, auto_confirm=True) as robot:
            robot.enable()
            result = robot.run_procedure()
            row.update(steps=robot.runtime.procedure.steps)
    except Exception as exc:  # a trial that raises is a row, never the end of the sweep
        text = str(exc).strip().replace("\n", " | ")
        row["reason"] = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return row
    row.update(
        outcome=result.outcome,
        crossed=bool(result.crossed),
        sim_seconds=result.sim_seconds,
        min_gap=result.min_gap,
        max_gap=result.max_gap,
        faults="; ".join(result.faults),
        reason=result.reason,
        rewinds=result.rewinds,
        max_unsupported=_worst(result.max_unsupported.values()),
    )
    for axis, force in result.max_force.items():
        if f"max_force_{axis}" in row:
            row[f"max_force_{axis}"] = force
    return row


def _worst(values: Iterable[float]) -> float:
    """The largest finite value; NaN when there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) if finite else math.nan


# ---------------------------------------------------------------------------------------------
# the trials folder


class _Folder:
    """The trials folder: a locked, append-only, fsynced journal and the tables built from it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrialsError(
                f"out (={str(out)!r}): cannot create the trials folder: {exc.strerror or exc}"
            ) from exc
        self._made_lock = not (out / _LOCK).exists()
        self._lock: IO[bytes] = (out / _LOCK).open("ab")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise TrialsError(
                f"out (={str(out)!r}): another sweep is writing to this trials folder"
            ) from None
        self.rows: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._identity: dict[str, tuple[str, str]] = {}
        self._adopt_pending = False
        self._journal: IO[bytes] | None = None
        self._csv: IO[str] | None = None

    def close(self) -> None:
        for fh in (self._journal, self._csv):
            if fh is not None:
                fh.close()
        self._lock.close()

    def check_sweep(self, base_hash: str, identity: dict[str, tuple[str, str]]) -> None:
        """Refuse a folder that holds another sweep (base configuration, cases, variants or
        seeds; ``identity`` maps each part to its hash and description), or files that are not a
        trials folder's. A folder from before sweep identities is adopted by :meth:`adopt`."""
        path = self.out / _SWEEP
        self._identity = identity
        self._adopt_pending = False
        if path.exists():
            try:
                held = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(held, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                raise TrialsError(f"{path}: unreadable ({exc}): use a new folder") from None
            if held.get("base_config_hash") != base_hash:
                raise TrialsError(
                    f"out (={str(self.out)!r}) holds trials of another base configuration "
                    f"(config hash {held.get('base_config_hash')}, this sweep {base_hash}): use a new folder"
                )
            parts = held.get("sweep")
            if not isinstance(parts, dict):
                self._adopt_pending = True  # written before sweep identities: see adopt()
                return
            differ = [
                f"its {name} ({parts.get(name, ['', '?'])[1]}; this sweep: {desc})"
                for name, (digest, desc) in identity.items()
                if parts.get(name, [None])[0] != digest
            ]
            if differ:
                raise TrialsError(
                    f"out (={str(self.out)!r}) holds another sweep: {'; '.join(differ)}. Rerun that "
                    "sweep's command to resume it, or use a new folder"
                )
            return
        # a crash of the first run may have left a temporary file, nothing else of its own
        others = sorted(p.name for p in self.out.iterdir() if p.name != _LOCK and not p.name.endswith(".tmp"))
        if others:
            if self._made_lock:  # leave someone else's folder as it was
                (self.out / _LOCK).unlink(missing_ok=True)
            raise TrialsError(
                f"out (={str(self.out)!r}) is not a trials folder (no {_SWEEP}; it holds "
                f"{', '.join(others[:3])}{', ...' if len(others) > 3 else ''}): use a new or empty folder"
            )
        self._write_sweep(base_hash)

    def adopt(self, base_hash: str, plan: Mapping[tuple[str, str, int], int]) -> None:
        """After :meth:`load`: a folder written before sweep identities becomes this sweep's
        only if every row it holds is one of this sweep's trials."""
        if not self._adopt_pending:
            return
        if any(key not in plan for key in self.rows):
            raise TrialsError(
                f"out (={str(self.out)!r}) was written before trials folders recorded their sweep and "
                "holds trials this sweep does not have: use a new folder"
            )
        self._write_sweep(base_hash)

    def _write_sweep(self, base_hash: str) -> None:
        """sweep.json, fsynced and renamed into place with the folder fsynced (a power cut
        leaves the old file or the new one, never an empty one)."""
        held = {"base_config_hash": base_hash, "sweep": {k: list(v) for k, v in self._identity.items()}}
        path = self.out / _SWEEP
        tmp = path.with_suffix(".json.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(held) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        fd = os.open(self.out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self) -> None:
        """Read the journal; a torn last line (a crash mid-append) is cut off."""
        path = self.out / _JOURNAL
        if not path.exists():
            return
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with path.open("r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())
        for n, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = (str(row["case_id"]), str(row["variant"]), int(row["seed"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise TrialsError(f"{path} line {n}: not a result row ({exc})") from None
            self.rows[key] = row

    def open_append(self) -> None:
        self._journal = (self.out / _JOURNAL).open("ab")
        self.write_csv(sorted(self.rows.values(), key=_row_key))
        self._csv = (self.out / "results.csv").open("a", encoding="utf-8", newline="")

    def append(self, row: dict[str, Any]) -> None:
        """Journal the row (flushed and fsynced before anything else sees it), then the CSV."""
        assert self._journal is not None and self._csv is not None
        self._journal.write(json.dumps(row, separators=(",", ":")).encode() + b"\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self.rows[_row_key(row)] = row
        csv.DictWriter(self._csv, fieldnames=RESULT_COLUMNS, extrasaction="ignore").writerow(row)
        self._csv.flush()

    def write_csv(self, rows: Sequence[Mapping[str, Any]]) -> None:
        tmp = self.out / "results.csv.tmp"
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.out / "results.csv")

    def write_parquet(self, frame: pd.DataFrame) -> None:
        tmp = self.out / "results.parquet.tmp"
        frame.to_parquet(tmp, index=False)
        tmp.replace(self.out / "results.parquet")


def _row_key(row: Mapping[str, Any]) -> tuple[str, str, int]:
    return (str(row["case_id"]), str(row["variant"]), int(row["seed"]))


def _frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    import pandas as pd  # noqa: PLC0415

    frame = pd.DataFrame.from_records(list(rows), columns=list(RESULT_COLUMNS))
    for col in ("jcto", "case_seed", "seed", "sim_seed", "steps", "rewinds"):
        frame[col] = frame[col].astype("int64")
    for col in ("ipsilateral", "retrograde_first", "crossed"):
        frame[col] = frame[col].astype(bool)
    for col in ("case_id", "collateral", "variant", "outcome", "faults", "reason", "config_hash"):
        frame[col] = frame[col].astype(str)
    return frame


# ---------------------------------------------------------------------------------------------
# summary and plots


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials (95 % by default); (nan, nan) for n = 0."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the interval always holds p; rounding at k = 0 or n would otherwise leave it just outside
    return (min(max(0.0, centre - half), p), max(min(1.0, centre + half), p))


SUMMARY_COLUMNS = (
    "variant",
    "n",
    "crossed",
    "errors",
    "rate",
    "ci_low",
    "ci_high",
    "median_sim_seconds",
    "median_crossing_sim_seconds",
)


def summarize(results: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per variant: n (trials that ran, errors excluded), crossed, errors, crossing rate with its
    Wilson 95 % interval, median simulated seconds of all trials and of those that crossed."""
    import pandas as pd  # noqa: PLC0415

    names = list(order) if order is not None else list(dict.fromkeys(results["variant"]))
    rows = []
    for name in names:
        sub = results[results["variant"] == name]
        ok = sub[sub["outcome"] != "error"]
        n, k = len(ok), int(ok["crossed"].sum())
        lo, hi = wilson(k, n)
        crossed_t = ok.loc[ok["crossed"], "sim_seconds"]
        rows.append(
            {
                "variant": name,
                "n": n,
                "crossed": k,
                "errors": len(sub) - n,
                "rate": k / n if n else math.nan,
                "ci_low": lo,
                "ci_high": hi,
                "median_sim_seconds": float(ok["sim_seconds"].median()) if n else math.nan,
                "median_crossing_sim_seconds": float(crossed_t.median()) if len(crossed_t) else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a plain text table (what ``whih trials`` prints)."""
    width = max([len("variant"), *(len(str(v)) for v in summary["variant"])])
    head = f"{'n':>5} {'crossed':>7} {'err':>4} {'rate':>6}  {'95 % CI':<15} {'median s':>8}"
    lines = [f"{'variant':<{width}}  {head}"]
    for r in summary.itertuples(index=False):
        ci = f"[{r.ci_low:.2f}, {r.ci_high:.2f}]" if r.n else "-"
        rate = f"{r.rate:6.2f}" if r.n else "     -"
        med = f"{r.median_sim_seconds:8.1f}" if r.n else "       -"
        lines.append(f"{r.variant:<{width}}  {r.n:5d} {r.crossed:7d} {r.errors:4d} {rate}  {ci:<15} {med}")
    return "\n".join(lines)


def plot(results: pd.DataFrame, summary: pd.DataFrame, folder: Path) -> list[Path]:
    """``rate.png`` (crossing rate per variant with Wilson intervals), ``time.png`` and
    ``force.png`` (distributions per variant) in ``folder``; returns the paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    names = list(summary["variant"])
    ok = results[results["outcome"] != "error"]
    xs = list(range(len(names)))
    height = max(3.0, 0.2 * len(names) + 2.5)
    paths = []

    fig = Figure(figsize=(max(5.0, 1.2 * len(names) + 2), height))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rate = summary["rate"].to_numpy(dtype=float)
    lo = rate - summary["ci_low"].to_numpy(dtype=float)
    hi = summary["ci_high"].to_numpy(dtype=float) - rate
    ax.errorbar(xs, rate, yerr=[lo, hi], fmt="o", capsize=5)
    ax.set_xticks(xs, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("crossing rate (Wilson 95 % CI)")
    ax.set_title("crossing rate per variant")
    fig.tight_layout()
    paths.append(folder / "rate.png")
    fig.savefig(paths[-1], dpi=100)

    fig = Figure(figsize=(max(5.0, 1.2 * len(names) + 2), height))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    data = [ok.loc[ok["variant"] == n, "sim_seconds"].dropna().to_numpy() for n in names]
    ax.boxplot([d if len(d) else [math.nan] for d in data], positions=xs)
    ax.set_xticks(xs, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("procedure time, simulated s")
    ax.set_title("time per trial")
    fig.tight_layout()
    paths.append(folder / "time.png")
    fig.savefig(paths[-1], dpi=100)

    axes = ("ante_wire", "ante_mc", "retro_wire", "retro_mc")
    fig = Figure(figsize=(max(8.0, 2.0 * len(names) + 3), 6.0))
    FigureCanvasAgg(fig)
    for i, axis in enumerate(axes):
        ax = fig.add_subplot(2, 2, i + 1)
        data = [ok.loc[ok["variant"] == n, f"max_force_{axis}"].dropna().to_numpy() for n in names]
        ax.boxplot([d if len(d) else [math.nan] for d in data], positions=xs)
        ax.set_xticks(xs, names if i >= 2 else [""] * len(names), rotation=20, ha="right", fontsize=7)
        ax.set_title(f"max force {axis} (N)", fontsize=9)
    fig.tight_layout()
    paths.append(folder / "force.png")
    fig.savefig(paths[-1], dpi=100)
    return paths


# ---------------------------------------------------------------------------------------------
# the sweep


Variants = Sequence[Variant | Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]
"""What ``variants=`` takes: variants, settings mappings, or a mapping name -> settings."""


def _as_variants(
    variants: Variants | None,
) -> list[Variant]:
    if variants is None:
        return [Variant("default")]
    if isinstance(variants, Mapping):
        out = [Variant.of(s, name) for name, s in variants.items()]
    else:
        out = [v if isinstance(v, Variant) else Variant.of(v) for v in variants]
    if not out:
        raise TrialsArgumentError("variants: must hold at least one variant")
    dup = _repeated(v.name for v in out)
    if dup:
        raise TrialsArgumentError(f"variants: names must be unique (repeated: {', '.join(dup)})")
    return out


def _as_seeds(seeds: Iterable[int]) -> list[int]:
    if not isinstance(seeds, Iterable) or isinstance(seeds, str | bytes):
        raise TrialsArgumentError(f"seeds (={seeds!r}) must be an iterable of integers, e.g. range(5)")
    if isinstance(seeds, Sized):  # before listing a range(10**9)
        try:
            n = len(seeds)
        except OverflowError:  # range(2**63): more than a C ssize_t
            n = MAX_TRIALS + 1
        if n > MAX_TRIALS:
            raise TrialsArgumentError(f"seeds: more than {MAX_TRIALS:,} seeds in one sweep")
    out = list(seeds)
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= _SEED_MAX:
            raise TrialsArgumentError(f"seeds: each seed (={s!r}) must be an integer in [0...2**63-1]")
    if not out or len(set(out)) != len(out):
        raise TrialsArgumentError(f"seeds (={out!r}) must be a non-empty list of distinct integers")
    return out


def _sweep_identity(
    cases: Sequence[Scenario],
    variants: Sequence[Variant],
    variant_hashes: Sequence[str],
    seeds: Sequence[int],
) -> dict[str, tuple[str, str]]:
    """What one trials folder holds, part by part: (hash, description) of its cases, variants and
    seeds. The order they are given in does not count, nor how a value is spelled (3 or 3.0): a
    variant is its name and the configuration it makes."""

    def digest(data: Any) -> str:
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    ordered = sorted(seeds)
    contiguous = ordered == list(range(ordered[0], ordered[-1] + 1))
    names = sorted(v.name for v in variants)
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    ids = sorted(c.case_id for c in cases)
    return {
        "cases": (
            digest(sorted((_case_fields(c) for c in cases), key=lambda f: str(f["case_id"]))),
            f"{len(ids)} cases, {ids[0]}...{ids[-1]}" if len(ids) > 1 else f"case {ids[0]}",
        ),
        "variants": (
            digest(sorted(zip((v.name for v in variants), variant_hashes, strict=True))),
            shown,
        ),
        "seeds": (
            digest(ordered),
            f"{ordered[0]}..{ordered[-1]}" if contiguous else f"{len(ordered)} seeds",
        ),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text)


def _die_with_parent(parent: int) -> None:
    """Pool worker start: end with the sweep's process, even when it is SIGKILLed (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes  # noqa: PLC0415

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


@contextlib.contextmanager
def _executor(jobs: int | None, executor: Any) -> Iterator[tuple[cf.Executor, int]]:
    """(executor, how many trials to keep in flight); a pool made here is shut down on exit."""
    if executor is None:
        import multiprocessing  # noqa: PLC0415

        workers = jobs or os.cpu_count() or 1
        # spawn: a forked child would inherit the parent's threads (progress bar, dask) and locks
        pool = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )
        try:
            yield pool, 2 * workers
        except BaseException:
            # interrupted (Ctrl-C, SIGTERM, an error): the running trials' rows are lost either way,
            # so end their workers now rather than wait minutes for trials nobody will journal
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True, cancel_futures=True)
        return
    get_executor = getattr(executor, "get_executor", None)  # a dask.distributed Client
    if callable(get_executor):
        threads = sum(executor.nthreads().values()) or 1
        yield get_executor(pure=False), 2 * (jobs or threads)
        return
    if not isinstance(executor, cf.Executor):
        raise TypeError(
            f"executor (={executor!r}) must be a concurrent.futures.Executor or a dask.distributed Client"
        )
    workers = jobs or getattr(executor, "_max_workers", None) or os.cpu_count() or 1
    yield executor, 2 * workers


def trials(
    cohort: str | os.PathLike[str] | Sequence[Scenario],
    *,
    variants: Variants | None = None,
    seeds: Iterable[int] = (0,),
    jobs: int | None = None,
    executor: Any = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    config: Config | str | os.PathLike[str] | None = None,
    record: bool = False,
    on_row: Callable[[Mapping[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Run every (case, variant, seed) of a sweep and return one row each (:data:`RESULT_COLUMNS`),
    sorted by case, variant and seed.

    ``cohort``: 'paper-2025', 'synthetic:N' ('synthetic' alone: 100 cases), a CSV file
    (:func:`load_cases`) or scenarios.
    ``variants``: :class:`Variant`\\ s, settings mappings (named from their settings) or a mapping
    name -> settings; see :func:`sweep`. ``jobs``: worker processes (default: the machine's cores)
    or, with ``executor``, how many trials to keep in flight per worker. ``executor``: any
    ``concurrent.futures.Executor`` or a ``dask.distributed.Client``. ``out``: a trials folder
    (module docstring) that a rerun resumes. ``config``: the base configuration (default: the
    shipped one). ``record``: a run folder per trial (needs ``out``). ``progress``: a progress
    bar on stderr when it is a terminal. ``on_row``: called in this process as each row arrives.
    """
    import multiprocessing  # noqa: PLC0415

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # a spawned worker is importing the script that called trials() (what multiprocessing's
        # own bootstrapping check looks at): running it again here would start a sweep per worker
        raise TrialsError(
            "trials: called while a worker process was starting: each worker imports the script "
            "that calls trials(), so put the call under `if __name__ == '__main__':`"
        )
    require_extra()
    from tqdm import tqdm  # noqa: PLC0415

    if out is not None and not str(out).strip():
        raise TrialsArgumentError("out (='') must be a folder path (or None to keep no folder)")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise TrialsArgumentError(f"jobs (={jobs!r}) must be None or an integer >= 1")
    if record and out is None:
        raise TrialsArgumentError("record: run folders need out (a trials folder)")
    cases = resolve_cohort(cohort)
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise TrialsArgumentError("cohort: case ids must be unique")
    variant_list = _as_variants(variants)
    seed_list = _as_seeds(seeds)
    if config is None:
        base = load_config(default_config_path())
    elif isinstance(config, Config):
        base = config
    else:
        base = load_config(config)
    require_simulated(base)
    # a bad key or value is refused before anything runs
    variant_hashes = [config_hash(v.apply(base)) for v in variant_list]
    base_dict = base.to_dict()
    base_dir = str(Path(base.source).parent) if base.source else None
    total = len(cases) * len(variant_list) * len(seed_list)
    if total > MAX_TRIALS:
        raise TrialsArgumentError(
            f"{len(cases)} cases x {len(variant_list)} variants x {len(seed_list)} seeds = {total:,} "
            f"trials: one sweep runs at most {MAX_TRIALS:,}"
        )

    plan = [(c, v, s) for c in cases for v in variant_list for s in seed_list]
    order = {(c.case_id, v.name, s): i for i, (c, v, s) in enumerate(plan)}
    folder = _Folder(Path(out)) if out is not None else None
    try:
        done: dict[tuple[str, str, int], dict[str, Any]] = {}
        if folder is not None:
            base_hash = config_hash(base)
            folder.check_sweep(base_hash, _sweep_identity(cases, variant_list, variant_hashes, seed_list))
            folder.load()
            folder.adopt(base_hash, order)
            by_id = {c.case_id: _case_fields(c) for c in cases}
            for key, row in folder.rows.items():
                fields = by_id.get(key[0])
                if fields is not None and any(row.get(k) != v for k, v in fields.items()):
                    raise TrialsError(
                        f"out (={str(folder.out)!r}) holds case {key[0]} with other fields than this "
                        "cohort's: use a new folder"
                    )
                if key in order:
                    done[key] = row
            folder.open_append()
        todo = [
            TrialTask(
                base_dict,
                base_dir,
                c,
                v,
                s,
                str(Path(out) / "runs" / _slug(c.case_id) / _slug(v.name) / f"seed-{s}")
                if record and out is not None
                else None,
            )
            for c, v, s in plan
            if (c.case_id, v.name, s) not in done
        ]
        lost = _run_all(todo, done, folder, jobs, executor, progress, len(plan), tqdm, on_row)
        rows = sorted(done.values(), key=lambda r: order[_row_key(r)])
        frame = _frame(rows)
        if folder is not None:
            # the folder holds this sweep only (check_sweep): tables, summary and plots agree
            folder.write_csv(rows)
            folder.write_parquet(frame)
            summary = summarize(frame, [v.name for v in variant_list])
            summary.to_csv(folder.out / "summary.csv", index=False)
            plot(frame, summary, folder.out / "plots")
        if lost:
            hint = ""
            if lost == len(todo):
                hint = (
                    " (no trial ran: if the workers failed at start, the error they printed says why; "
                    "a script calling trials() needs `if __name__ == '__main__':`)"
                )
            raise TrialsLostError(
                f"{lost} trial(s) were lost with their worker: rerun the same sweep to run them{hint}"
            )
        return frame
    finally:
        if folder is not None:
            folder.close()


def _run_all(
    todo: Sequence[TrialTask],
    done: dict[tuple[str, str, int], dict[str, Any]],
    folder: _Folder | None,
    jobs: int | None,
    executor: Any,
    progress: bool,
    total: int,
    tqdm: Any,
    on_row: Callable[[Mapping[str, Any]], None] | None,
) -> int:
    """Run ``todo`` with a bounded number in flight (the parent's memory stays flat); returns how
    many futures failed outside the trial (a worker that died)."""
    if not todo:
        return 0
    lost = 0
    crossed = sum(1 for r in done.values() if r.get("crossed"))
    bar = tqdm(
        total=total,
        initial=len(done),
        unit="trial",
        disable=not (progress and sys.stderr.isatty()),
        dynamic_ncols=True,
    )
    last_parquet = time.monotonic()
    try:
        with _executor(jobs, executor) as (pool, window):
            pending: dict[cf.Future[dict[str, Any]], TrialTask] = {}
            tasks = iter(todo)
            while True:
                for task in itertools.islice(tasks, max(0, window - len(pending))):
                    try:
                        pending[pool.submit(run_trial, task)] = task
                    except cf.BrokenExecutor:  # a worker died and took the pool with it
                        lost += 1 + sum(1 for _ in tasks)
                        break
                if not pending:
                    break
                finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    task = pending.pop(fut)
                    try:
                        row = fut.result()
                    except Exception:  # the worker, not the trial, failed: not journaled, rerun later
                        lost += 1
                        continue
                    done[task.key] = row
                    if folder is not None:
                        folder.append(row)
                    if on_row is not None:
                        on_row(row)
                    crossed += bool(row["crossed"])
                    bar.update(1)
                    bar.set_postfix(crossed=crossed, refresh=False)
                if folder is not None and time.monotonic() - last_parquet > PARQUET_EVERY_S:
                    folder.write_parquet(_frame(sorted(folder.rows.values(), key=_row_key)))
                    last_parquet = time.monotonic()
    finally:
        bar.close()
    return lost
