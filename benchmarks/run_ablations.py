"""Default strategy against each ablation on the same cases and seeds, in simulated time.

    python benchmarks/run_ablations.py --trials DIR [--plot P] [--csv F] [--markdown]
    python benchmarks/run_ablations.py --cohort synthetic:300 [--variants default,no-coupling,...]
        [--seeds 0..0] [--jobs 2] [--csv results.csv]
    python benchmarks/run_ablations.py --cohort paper-2025 --seeds 0..9 --variants default

``--trials DIR`` summarises a trials folder (``whih trials --ablate ...``, the way to run the
sweeps: resumable, any executor): per variant n, crossed, rate with its Wilson 95 % interval,
median rewinds, median simulated time (crossed / all), smallest MC gap, largest force over its
axis' force stop and largest unsupported length of an advancing wire; ``--plot`` draws the rate
and the rewinds per variant. Without it the script runs its own sweep, one process per worker
(concurrent.futures.ProcessPoolExecutor) over the whole stack with no run folder, and also
keeps the true (plant) MC gap, which a trials row does not have.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import multiprocessing
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import whih_control as wc
from whih_control.sim.cohort import cohort
from whih_control.sim.plant import Plant

_TRUE_MIN_GAP = [math.inf]
_plant_step = Plant.step


def _step_and_watch(self: Plant, t: float, dt: float, insertion: dict[str, float]) -> object:
    """Plant.step, keeping the smallest true MC gap of the run (the summary has the estimate's)."""
    out = _plant_step(self, t, dt, insertion)
    tips = self.tips()
    gap = tips["retro_mc"] - tips["ante_mc"]
    _TRUE_MIN_GAP[0] = min(_TRUE_MIN_GAP[0], gap)
    return out


Plant.step = _step_and_watch  # type: ignore[method-assign,assignment]

VARIANTS = ("default", "no-mc-approach", "no-coupling", "no-rotation")
FIELDS = (
    "case",
    "L",
    "jcto",
    "gap",
    "variant",
    "seed",
    "outcome",
    "crossed",
    "sim_s",
    "rewinds",
    "steps",
    "deviations",
    "min_gap",
    "true_min_gap",
    "max_gap",
    "max_f_ante_wire",
    "max_f_over_stop",
    "reason",
)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1.0 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def run_one(job: tuple[str, str, int, str]) -> dict[str, object]:
    cohort_name, case_id, seed, variant = job
    sc = {c.case_id: c for c in cohort(cohort_name, seed=seed)}[case_id]
    cfg = sc.apply(wc.load_config(wc.default_config_path()))
    ablate = () if variant == "default" else (variant,)
    cfg = cfg.replace(procedure=dataclasses.replace(cfg.procedure, ablations=ablate))
    # wc.simulate, keeping the robot to read the procedure's counts and the plant's state
    sim_cfg = cfg.replace(
        bus=dataclasses.replace(cfg.bus, interface="whih-sim"),
        sim=dataclasses.replace(cfg.sim, enabled=True, seed=sc.seed),
    )
    _TRUE_MIN_GAP[0] = math.inf
    with wc.Robot(sim_cfg, seed=sc.seed, auto_confirm=True) as robot:
        robot.enable()
        r = robot.run_procedure()
        proc = robot.runtime.procedure
        plant = robot.runtime.plant
        rewinds, steps = proc.rewinds, proc.steps
        deviations = plant.deviations if plant is not None else -1
    return {
        "case": case_id,
        "L": sc.lesion_length,
        "jcto": sc.jcto,
        "gap": sc.mc_gap,
        "variant": variant,
        "seed": seed,
        "outcome": r.outcome,
        "crossed": r.crossed,
        "sim_s": round(r.sim_seconds, 3),
        "rewinds": rewinds,
        "steps": steps,
        "deviations": deviations,
        "min_gap": round(r.min_gap, 3),
        "true_min_gap": round(_TRUE_MIN_GAP[0], 3),
        "max_gap": round(r.max_gap, 3),
        "max_f_ante_wire": r.max_force.get("ante_wire", math.nan),
        "max_f_over_stop": round(max(f / cfg.drives[a].force_stop for a, f in r.max_force.items()), 3),
        "reason": r.reason,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", default="synthetic:300")
    ap.add_argument("--seeds", default="0..0", help="A..B: cohort seeds (each gives its own lesions)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases (0 = all)")
    ap.add_argument("--csv", type=Path)
    ap.add_argument("--plot", type=Path, help="PNG: rate per variant (Wilson 95 %%) and rewinds")
    ap.add_argument("--from-csv", type=Path, help="summarise and plot a --csv of an earlier sweep")
    ap.add_argument("--trials", type=Path, help="summarise and plot a trials folder (whih trials --out)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    args = ap.parse_args()
    if args.trials:
        _summarise_trials(args.trials, args.plot, args.csv, markdown=args.markdown)
        return
    a, _, b = args.seeds.partition("..")
    seeds = range(int(a), int(b or a) + 1)
    variants = [v for v in args.variants.split(",") if v]
    jobs = []
    for seed in seeds:
        cases = cohort(args.cohort, seed=seed)
        if args.limit:
            cases = cases[: args.limit]
        jobs += [(args.cohort, c.case_id, seed, v) for c in cases for v in variants]
    t0 = time.perf_counter()
    rows: list[dict[str, object]] = []
    if args.from_csv:
        with args.from_csv.open() as f:
            rows = [dict(r, crossed=r["crossed"] == "True") for r in csv.DictReader(f)]
        variants = [v for v in variants if any(r["variant"] == v for r in rows)]
        # a sweep cut short: compare only the cases every variant ran (same cases, same seeds)
        done: dict[tuple[object, object], set[object]] = {}
        for r in rows:
            done.setdefault((r["case"], r["seed"]), set()).add(r["variant"])
        rows = [r for r in rows if done[(r["case"], r["seed"])] >= set(variants)]
    else:
        ctx = multiprocessing.get_context("spawn")
        out = args.csv.open("w", newline="") if args.csv else None
        writer = csv.DictWriter(out, fieldnames=FIELDS) if out else None
        if writer:
            writer.writeheader()
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            for i, row in enumerate(pool.map(run_one, jobs, chunksize=1)):
                rows.append(row)
                if writer and out:
                    writer.writerow(row)  # row by row: a sweep cut short keeps what it ran
                    out.flush()
                if (i + 1) % 20 == 0:
                    print(f"{i + 1}/{len(jobs)} runs, {time.perf_counter() - t0:.0f} s", flush=True)
        if out:
            out.close()
    if args.plot:
        _plot(rows, variants, args.plot)
    print(f"{len(rows)} runs in {time.perf_counter() - t0:.0f} s wall ({args.jobs} workers)")
    print(
        f"{'variant':15} {'n':>4} {'crossed':>7} {'rate':>6} {'Wilson 95 %':>15} {'med rewinds':>11} "
        f"{'med sim s (crossed)':>19} {'min true gap':>12} {'F/F_stop':>10}"
    )
    for v in variants:
        rs = [r for r in rows if r["variant"] == v]
        k = sum(bool(r["crossed"]) for r in rs)
        lo, hi = wilson(k, len(rs))
        times = [float(r["sim_s"]) for r in rs if r["crossed"]]  # type: ignore[arg-type]
        rew = statistics.median(int(r["rewinds"]) for r in rs) if rs else math.nan  # type: ignore[call-overload]
        med_t = statistics.median(times) if times else math.nan
        min_gap = min(float(r.get("true_min_gap", "nan")) for r in rs) if rs else math.nan  # type: ignore[arg-type]
        f_stop = max((float(r.get("max_f_over_stop", "nan")) for r in rs), default=math.nan)  # type: ignore[arg-type]
        print(
            f"{v:15} {len(rs):4d} {k:7d} {k / max(1, len(rs)):6.1%} [{lo:5.1%}, {hi:5.1%}] {rew:11.1f} "
            f"{med_t:19.1f} {min_gap:12.2f} {f_stop:10.2f}"
        )
    fails = [r for r in rows if not r["crossed"]]
    for r in fails[:40]:
        print(
            f"  not crossed: {r['case']} seed {r['seed']} {r['variant']} L={r['L']} J={r['jcto']}: "
            f"{r['reason']}"
        )


def _from_trials(folder: Path) -> list[dict[str, object]]:
    """A trials folder's rows in this script's fields; only the cases every variant ran (a sweep
    cut short compares the same cases and seeds)."""
    base = wc.load_config(wc.default_config_path())
    stop = {a: d.force_stop for a, d in base.drives.items()}
    rows: list[dict[str, object]] = []
    with (folder / "results.csv").open() as f:
        for r in csv.DictReader(f):
            forces = {a: float(r[f"max_force_{a}"]) for a in stop if r.get(f"max_force_{a}", "") != ""}
            rows.append(
                {
                    "case": r["case_id"],
                    "L": float(r["lesion_length"]),
                    "jcto": int(r["jcto"]),
                    "gap": float(r["mc_gap"]),
                    "variant": r["variant"].removeprefix("ablate="),
                    "seed": int(r["seed"]),
                    "outcome": r["outcome"],
                    "crossed": r["crossed"] == "True",
                    "sim_s": float(r["sim_seconds"]),
                    "rewinds": int(float(r["rewinds"])),
                    "steps": int(float(r["steps"])),
                    "min_gap": float(r["min_gap"] or "nan"),
                    "max_gap": float(r["max_gap"] or "nan"),
                    "max_unsupported": float(r["max_unsupported"] or "nan"),
                    "max_f_over_stop": max((f / stop[a] for a, f in forces.items()), default=math.nan),
                    "reason": r["reason"],
                }
            )
    done: dict[tuple[object, object], set[object]] = {}
    for r in rows:
        done.setdefault((r["case"], r["seed"]), set()).add(r["variant"])
    every = set.union(*done.values()) if done else set()
    return [r for r in rows if done[(r["case"], r["seed"])] >= every]


def _summarise_trials(folder: Path, plot: Path | None, out: Path | None, *, markdown: bool) -> None:
    rows = _from_trials(folder)
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    if out:  # the figures the table is made of, rounded: small enough to keep in the repository
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            for r in rows:
                row = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                # the reason without what other columns hold (rewinds) or details in parentheses
                row["reason"] = re.sub(r" \([^)]*\)| after \d+ rewinds", "", str(r["reason"]))
                writer.writerow(row)
    if plot:
        _plot(rows, variants, plot)
    if markdown:
        _markdown(rows, variants)
    else:
        _table(rows, variants)


def _stats(rs: list[dict[str, object]]) -> dict[str, float]:
    k = sum(bool(r["crossed"]) for r in rs)
    lo, hi = wilson(k, len(rs))
    times = [float(r["sim_s"]) for r in rs]  # type: ignore[arg-type]
    crossed_t = [float(r["sim_s"]) for r in rs if r["crossed"]]  # type: ignore[arg-type]
    finite = [float(r["max_unsupported"]) for r in rs if math.isfinite(float(r["max_unsupported"]))]  # type: ignore[arg-type]
    return {
        "n": len(rs),
        "k": k,
        "lo": lo,
        "hi": hi,
        "rewinds": statistics.median(int(r["rewinds"]) for r in rs) if rs else math.nan,  # type: ignore[call-overload]
        "rewinds_mean": statistics.fmean(int(r["rewinds"]) for r in rs) if rs else math.nan,  # type: ignore[call-overload]
        "t_crossed": statistics.median(crossed_t) if crossed_t else math.nan,
        "t_all": statistics.median(times) if times else math.nan,
        "min_gap": min((float(r["min_gap"]) for r in rs), default=math.nan),  # type: ignore[arg-type]
        "f_stop": max((float(r["max_f_over_stop"]) for r in rs), default=math.nan),  # type: ignore[arg-type]
        "u_max": max(finite, default=math.nan),
    }


def _table(rows: list[dict[str, object]], variants: list[str]) -> None:
    print(
        f"{'variant':15} {'n':>4} {'crossed':>7} {'rate':>6} {'Wilson 95 %':>15} {'med rewinds':>11} "
        f"{'med s crossed/all':>17} {'min gap':>7} {'F/F_stop':>8} {'max u':>6}"
    )
    for v in variants:
        st = _stats([r for r in rows if r["variant"] == v])
        print(
            f"{v:15} {st['n']:4.0f} {st['k']:7.0f} {st['k'] / max(1, st['n']):6.1%} "
            f"[{st['lo']:5.1%}, {st['hi']:5.1%}] {st['rewinds']:11.1f} "
            f"{st['t_crossed']:8.1f}/{st['t_all']:<8.1f} {st['min_gap']:7.2f} {st['f_stop']:8.2f} "
            f"{st['u_max']:6.2f}"
        )
    for r in [r for r in rows if not r["crossed"]][:40]:
        where = f"{r['case']} seed {r['seed']} {r['variant']} L={r['L']} J={r['jcto']}"
        print(f"  not crossed: {where}: {r['reason']}")


def _markdown(rows: list[dict[str, object]], variants: list[str]) -> None:
    print(
        "| variant | n | crossed | rate | Wilson 95 % | median rewinds (mean) "
        "| median simulated s, crossed / all |"
    )
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        st = _stats([r for r in rows if r["variant"] == v])
        print(
            f"| {v} | {st['n']:.0f} | {st['k']:.0f} | {100 * st['k'] / max(1, st['n']):.1f} % "
            f"| {100 * st['lo']:.1f}-{100 * st['hi']:.1f} % | {st['rewinds']:g} ({st['rewinds_mean']:.2f}) "
            f"| {st['t_crossed']:.1f} / {st['t_all']:.1f} |"
        )


def _plot(rows: list[dict[str, object]], variants: list[str], out: Path) -> None:
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.8))
    for x, v in enumerate(variants):
        rs = [r for r in rows if r["variant"] == v]
        k = sum(bool(r["crossed"]) for r in rs)
        lo, hi = wilson(k, len(rs))
        p = k / max(1, len(rs))
        ax1.errorbar(
            [x], [100 * p], yerr=[[100 * max(0.0, p - lo)], [100 * max(0.0, hi - p)]], fmt="o", capsize=4
        )
        ax2.boxplot([[int(r["rewinds"]) for r in rs]], positions=[x], widths=0.5)  # type: ignore[call-overload]
        ax3.boxplot([[float(r["sim_s"]) for r in rs]], positions=[x], widths=0.5)  # type: ignore[arg-type]
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(range(len(variants)), variants, fontsize=8)
    ax1.set_ylabel("crossed (%), Wilson 95 %")
    ax1.set_ylim(0, 105)
    ax2.set_ylabel("rewinds per run")
    ax3.set_ylabel("simulated s per run (crossed or not)")
    n = len({(r["case"], r["seed"]) for r in rows})
    fig.suptitle(f"default strategy vs ablations, same {n} cases and seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
