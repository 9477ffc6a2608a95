"""The ``whih`` command line. Exit codes: 0 success, 1 procedure ended without crossing (for
``inspect``: a run folder that does not verify; ``probe``: a configured drive missing or not ready,
or no node answered), 2 usage or configuration error. Bad input never produces a traceback."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

from firmware_iface.bus import SIM_INTERFACE, open_bus
from firmware_iface.faults import RUNTIME_FAULT_KINDS, parse_fault
from firmware_iface.plan import plan_system
from firmware_iface.sim import SimulatedDrives
from whih_control.api import Robot
from whih_control.bench import BenchImaging
from whih_control.config import Config, default_config_path, load_config
from whih_control.errors import ConfigError, RunFolderError, WhihError
from whih_control.inspect_run import inspect_run
from whih_control.keys import HELP as KEYS_HELP
from whih_control.keys import OperatorKeys
from whih_control.procedure import diagram
from whih_control.recorder import bus_line
from whih_control.runtime import RUN_FILES, Progress, RunResult, check_fault_spec, realtime_scheduling
from whih_control.sim import Plant
from whih_control.trials import ABLATIONS

EXIT_OK = 0
EXIT_NOT_CROSSED = 1
EXIT_USAGE = 2
MAX_TIME_S = 86_400.0
"""--max-time above a day is a typo, not a procedure (each phase has its own bound anyway)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _sub(sub: Any, name: str, *, help: str) -> argparse.ArgumentParser:
    """A subcommand whose own ``--help`` starts with what it does (the listing's line)."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    return parser


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="whih", description="WHIH robotic CTO crossing: simulate, run and check.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _sub(sub, "demo", help="run the simulated WHIH procedure on the default configuration")
    run = _sub(sub, "run", help="run the procedure from a configuration file")
    run.add_argument("--config", required=True, type=Path, help="TOML configuration")
    run.add_argument("--out", help="run folder to write (new, or empty)")
    run.add_argument("--seed", type=int, help="override sim.seed")
    run.add_argument("--realtime", action="store_true", help="wall-clock cycle instead of simulated time")
    run.add_argument(
        "--external-drives",
        action="store_true",
        help="with --realtime: the drives are served by another process (whih sim-drives) on the "
        "configured bus; tips from bench imaging (the plant lives with the drives)",
    )
    run.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="SPEC",
        help="fault KIND[:AXIS][:ARG]@T_SECONDS (repeatable)",
    )
    run.add_argument(
        "--max-time",
        type=float,
        help="end the run (outcome timeout, exit 1) after this many seconds of its clock, enabling included",
    )
    chk = _sub(sub, "check-config", help="validate a configuration and print its summary")
    chk.add_argument("file", type=Path)
    prb = _sub(
        sub, "probe", help="scan the configured bus: identity, NMT state, EDS match, capability (read-only)"
    )
    prb.add_argument("--config", required=True, type=Path, help="TOML configuration")
    prb.add_argument("--all", action="store_true", help="scan every node id 1..127, not only the configured")
    drv = _sub(
        sub, "sim-drives", help="serve the configured simulated drives on a CAN bus until Ctrl-C or SIGTERM"
    )
    drv.add_argument("--config", required=True, type=Path, help="TOML configuration")
    drv.add_argument("--interface", help="python-can interface (default: the config's bus.interface)")
    drv.add_argument(
        "--channel", help="python-can channel (udp_multicast: GROUP or GROUP@PORT; default: bus.channel)"
    )
    dia = _sub(sub, "diagram", help="print the procedure state machine")
    dia.add_argument("--format", choices=("mermaid",), default="mermaid")
    dbc = _sub(sub, "dbc", help="write a DBC of the configured cyclic frames (cantools, SavvyCAN, Vector)")
    dbc.add_argument("--config", required=True, type=Path, help="TOML configuration")
    dbc.add_argument("-o", "--output", type=Path, help="DBC file to write (default: standard output)")
    ins = _sub(sub, "inspect", help="verify a run folder: event chain, trace, summary; redraw the plot")
    ins.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.add_argument("--no-plot", action="store_true", help="do not redraw plot.png")
    _add_trials_parser(sub)
    return p


def _add_trials_parser(sub: Any) -> None:
    tri = _sub(
        sub,
        "trials",
        help="simulated trials: cohort x variants x seeds on every core or a Dask cluster (resumable)",
    )
    tri.add_argument(
        "--cohort",
        required=True,
        metavar="NAME[:N]",
        help="paper-2025 (14 cases), synthetic:N (N cases; synthetic alone: 100 cases) or a CSV file of "
        "cases (columns: README, Trials)",
    )
    tri.add_argument("--seeds", default="0", metavar="A..B", help="seeds A to B inclusive (default 0)")
    tri.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="sweep a config key (repeatable; the variants are the cross product)",
    )
    tri.add_argument(
        "--ablate",
        action="append",
        default=[],
        metavar="NAME",
        help=f"compare with an ablation of the strategy: {', '.join(ABLATIONS)} (repeatable)",
    )
    where = tri.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, help="worker processes (default: the machine's cores)")
    where.add_argument("--dask", metavar="ADDRESS", help="run on this dask.distributed scheduler")
    tri.add_argument("--config", type=Path, help="base configuration (default: the shipped sim.toml)")
    tri.add_argument("--record", action="store_true", help="a run folder per trial under DIR/runs")
    tri.add_argument(
        "--out", required=True, help="trials folder, new or empty (rerun the same command to resume)"
    )
    tri.epilog = (
        "exit status: 0 every trial ran (crossed or not), 1 a trial raised (outcome 'error'), was lost "
        "with its worker or the sweep was stopped (rerun to resume), 2 bad input"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _trials(args: argparse.Namespace) -> int:
    # imported here: the other commands never pay for pandas
    from whih_control.trials import (  # noqa: PLC0415
        MAX_TRIALS,
        TrialsError,
        TrialsLostError,
        format_summary,
        parse_seeds,
        parse_set,
        require_extra,
        require_simulated,
        resolve_cohort,
        summarize,
        sweep,
        trials,
    )

    try:
        require_extra()
    except ImportError as exc:  # the 'trials' extra is not installed
        print(f"whih trials: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.out.strip():
        print("whih trials: --out (='') must be a folder path", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)

    try:
        cfg = load_config(args.config if args.config is not None else default_config_path())
    except ConfigError as exc:
        print("whih trials: invalid configuration", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    try:
        seeds = parse_seeds(args.seeds)
        sets = dict(parse_set(text) for text in args.sets)
        if len(sets) != len(args.sets):
            raise ValueError("--set: each key may be given once")
        variants = sweep(sets, ablate=args.ablate)
        if args.jobs is not None and args.jobs < 1:
            raise ValueError(f"--jobs (={args.jobs}) must be an integer >= 1")
        cases = resolve_cohort(args.cohort)
        for v in variants:
            v.apply(cfg)
        require_simulated(cfg, "--config")
    except ConfigError as exc:
        print("whih trials: invalid --set", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"whih trials: {exc}", file=sys.stderr)
        return EXIT_USAGE
    total = len(cases) * len(variants) * len(seeds)
    sizes = f"{len(cases)} cases x {len(variants)} variants x {len(seeds)} seeds = {total:,} trials"
    if total > MAX_TRIALS:
        print(f"whih trials: {sizes}: one sweep runs at most {MAX_TRIALS:,}", file=sys.stderr)
        return EXIT_USAGE
    journal = out / "results.jsonl"
    held = journal.read_bytes().count(b"\n") if journal.is_file() else 0
    resumed = f" (the folder's journal holds {held:,} rows: only missing trials run)" if held else ""
    _emit(sys.stdout, f"whih trials: {sizes} -> {out}{resumed}\n", flush=True)
    client = None
    # SIGTERM (a job scheduler, `kill`) stops the sweep like Ctrl-C: the pool's workers are ended
    # with it and the folder stays resumable, instead of the parent dying and its workers running on
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.dask:
            from distributed import Client  # noqa: PLC0415

            try:
                client = Client(args.dask, timeout=10)  # type: ignore[no-untyped-call]
            except (OSError, ValueError, TypeError) as exc:  # unreachable, or not an address
                print(
                    f"whih trials: --dask (={args.dask!r}): cannot reach the scheduler ({exc})",
                    file=sys.stderr,
                )
                return EXIT_USAGE
        frame = trials(
            cases,
            variants=variants,
            seeds=seeds,
            jobs=args.jobs,
            executor=client,
            out=out,
            config=cfg,
            record=args.record,
        )
    except ImportError as exc:  # dask.distributed for --dask
        print(f"whih trials: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nwhih trials: stopped (Ctrl-C or SIGTERM); rerun the same command to resume", file=sys.stderr)
        return EXIT_NOT_CROSSED
    except TrialsLostError as exc:  # the rows that ended are kept; a rerun runs the rest
        print(f"whih trials: {exc}", file=sys.stderr)
        return EXIT_NOT_CROSSED
    except TrialsError as exc:
        print(f"whih trials: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        signal.signal(signal.SIGTERM, previous)
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]
    summary = summarize(frame, [v.name for v in variants])
    _emit(sys.stdout, format_summary(summary) + "\n")
    _emit(sys.stdout, f"{len(frame)} rows: {out / 'results.parquet'}, results.csv, summary.csv, plots/\n")
    errors = int((frame["outcome"] == "error").sum())
    if errors:
        print(
            f"whih trials: {errors} of {len(frame)} trials raised (outcome 'error'; the reason column "
            "says why)",
            file=sys.stderr,
        )
        return EXIT_NOT_CROSSED
    return EXIT_OK


def _emit(stream: TextIO, text: str, *, flush: bool = False) -> None:
    """Write ``text``; if the reader of stdout went away (``whih diagram | head``), stdout is
    sent to /dev/null instead of raising: the output never ends a run or changes an exit code."""
    try:
        stream.write(text)
        if flush:
            stream.flush()
    except BrokenPipeError:
        if stream is not sys.stdout:
            raise
        _silence_stdout()


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def summary_lines(cfg: Config) -> list[str]:
    """Short human summary of a configuration: axes, node ids, rate, bus load."""
    lines = [
        f"bus: {cfg.bus.interface} {cfg.bus.channel!r} at {cfg.bus.bitrate / 1e3:g} kbit/s, "
        f"master node {cfg.bus.master_node_id}",
        f"cycle: {cfg.cycle.rate_hz:g} Hz ({cfg.period * 1e3:.3g} ms)",
        f"bus load: {cfg.bus_load().describe()}; set-up switches every other PDO off",
        f"drives ({len(cfg.drives)}):",
    ]
    for axis, d in cfg.drives.items():
        unit = "mm" if d.kind == "linear" else "deg"
        lines.append(
            f"  {axis:<15} node {d.node_id:>3}  {d.counts_per_unit:g} counts/{unit}  "
            f"v<={d.max_speed:g} {unit}/s  travel [{d.travel_min:g}, {d.travel_max:g}] {unit}  "
            f"{Path(d.eds).name}"
        )
    lines.append(f"simulated drives: {'yes' if cfg.sim.enabled else 'no'}")
    return lines


def drive_check(cfg: Config) -> tuple[list[str], list[str]]:
    """Every SDO value set-up would write, checked against each drive's EDS/DCF: (problems by
    key path, notes: what set-up accepts or switches off, with the consequence)."""
    plans, problems = plan_system(cfg)
    notes = [n for plan in plans.values() for n in plan.notes]
    return problems, notes


def _check_config(path: Path) -> int:
    try:
        cfg = load_config(path)
        problems, notes = drive_check(cfg)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        print(f"{path}: invalid", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    lines = [f"{path}: ok", *summary_lines(cfg)]
    if notes:
        lines.append("drive set-up notes:")
        lines += [f"  {n}" for n in notes]
    _emit(sys.stdout, "\n".join(lines) + "\n")
    return EXIT_OK


def _dbc(path: Path, output: Path | None) -> int:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    from whih_control.dbc import dbc_text  # noqa: PLC0415 (cantools: only this command pays its import)

    text = dbc_text(cfg)
    if output is None:
        _emit(sys.stdout, text)
        return EXIT_OK
    try:
        output.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        print(f"whih dbc: -o (={str(output)!r}): cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    _emit(sys.stdout, f"{output}: {len(cfg.drives)} drives, {text.count(chr(10) + 'BO_ ')} messages\n")
    return EXIT_OK


def _inspect(run_dir: Path, *, as_json: bool, plot: bool) -> int:
    try:
        report = inspect_run(run_dir, plot=plot)
    except RunFolderError as exc:
        print(f"whih inspect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = json.dumps(report.as_dict(), indent=2, allow_nan=False) if as_json else report.text()
    _emit(sys.stdout, text + "\n")
    return EXIT_OK if report.ok else EXIT_NOT_CROSSED


def _probe(path: Path, *, all_nodes: bool) -> int:
    from whih_control.probe import probe  # noqa: PLC0415  (only this command needs it)

    try:
        cfg = load_config(path)
        result = probe(cfg, all_nodes=all_nodes)
    except ConfigError as exc:
        print(f"{path}: invalid", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except WhihError as exc:  # the bus cannot be opened
        print(f"whih probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    where = f"{cfg.bus.interface} {cfg.bus.channel!r}" + (" (simulated drives)" if cfg.sim.enabled else "")
    if not result.answered:
        scanned = (
            "node ids 1..127" if all_nodes else f"node ids {sorted(d.node_id for d in cfg.drives.values())}"
        )
        _emit(sys.stdout, f"whih probe: no node answered on {where} ({scanned})\n")
        return EXIT_NOT_CROSSED
    lines = [f"whih probe on {where}: {len(result.answered)} node(s) answered"]
    for node in result.nodes:
        lines += node.lines()
    lines.append(
        "all configured drives ok" if result.ok else "some configured drives are missing or not ready"
    )
    _emit(sys.stdout, "\n".join(lines) + "\n")
    return EXIT_OK if result.ok else EXIT_NOT_CROSSED


def _progress_printer(stream: TextIO, extra: Callable[[], str] | None = None) -> Callable[[Progress], None]:
    """Live progress: one rewritten line on a terminal, a line per phase change otherwise;
    ``extra()`` is appended on a terminal (the operator keys' last answer)."""
    tty = stream.isatty()
    last_phase = [""]

    def show(p: Progress) -> None:
        frac = 0.0
        if math.isfinite(p.ante_wire_tip):
            frac = min(max((p.ante_wire_tip + 15.0) / (p.crossing_at + 15.0), 0.0), 1.0)
        bar = "#" * int(frac * 20) + "." * (20 - int(frac * 20))
        gap = f"{p.gap:5.2f} mm" if math.isfinite(p.gap) else "   -    "
        tip = f"{p.ante_wire_tip:6.1f}" if math.isfinite(p.ante_wire_tip) else "     -"
        line = (
            f"[{p.t:7.1f} s] {p.phase:<26} gap {gap}  ante wire {tip} / {p.crossing_at:.1f} mm "
            f"(L = {p.lesion_length:g}) [{bar}]"
        )
        if tty:
            if extra is not None:
                line = f"{line}  {extra()}"
            _emit(stream, "\r\x1b[2K" + line, flush=True)
        elif p.phase != last_phase[0]:
            _emit(stream, line + "\n")
        last_phase[0] = p.phase

    return show


def _print_result(result: RunResult, stream: TextIO) -> None:
    if stream.isatty():
        _emit(stream, "\n")
    forces = ", ".join(f"{a} {f:.2f}" for a, f in result.max_force.items())
    lines = [
        f"outcome: {result.outcome}   crossed: {'yes' if result.crossed else 'no'}",
        f"time: {result.sim_seconds:.1f} s procedure, {result.wall_seconds:.1f} s wall, "
        f"{result.cycles} cycles, {result.overruns} overruns, {result.stale_cycles} stale",
        f"MC gap: min {result.min_gap:.2f} mm, max {result.max_gap:.2f} mm",
        f"max force (N): {forces}",
    ]
    if result.reason:
        lines.append(f"reason: {result.reason}")
    if bus := bus_line(result.master):
        lines.append(bus)
    for f in result.faults:
        lines.append(f"fault: {f}")
    if result.loop and "period_error_p99_ms" in result.loop:
        lp = result.loop
        lines.append(
            f"loop: {lp['rate_hz']:.1f} Hz, SYNC period error p50 {lp['period_error_p50_ms']:.3f} / "
            f"p99 {lp['period_error_p99_ms']:.3f} / max {lp['period_error_max_ms']:.3f} ms, "
            f"CPU {lp['cpu_percent']:.0f} %"
        )
    if result.out:
        files = ", ".join(name for name in RUN_FILES if (Path(result.out) / name).exists())
        lines.append(f"run folder: {result.out}  ({files})")
    _emit(stream, "\n".join(lines) + "\n")


def _run(
    cfg: Config,
    *,
    out: Path | None,
    seed: int | None,
    realtime: bool,
    external_drives: bool,
    inject: list[str],
    max_time: float | None,
) -> int:
    seed = cfg.sim.seed if seed is None else seed
    keys: list[OperatorKeys] = []
    use_keys = False
    clock: Literal["real", "simulated"]
    if realtime or not cfg.sim.enabled:
        if cfg.bus.interface == "whih-sim":
            cfg = cfg.replace(bus=dataclasses.replace(cfg.bus, interface="virtual"))
        use_keys = OperatorKeys.available() and sys.stdout.isatty()
        printer = _progress_printer(
            sys.stdout, (lambda: keys[0].line if keys else KEYS_HELP) if use_keys else None
        )
        clock = "real"
        auto_confirm = cfg.sim.enabled
    else:  # what simulate() does, with the robot kept so a failed run folder can be reported
        printer = _progress_printer(sys.stdout)
        cfg = cfg.replace(sim=dataclasses.replace(cfg.sim, enabled=True, seed=seed))
        clock = "simulated"
        auto_confirm = True
    progress = printer
    imaging: BenchImaging | None = None
    if external_drives:
        cfg = cfg.replace(
            sim=dataclasses.replace(cfg.sim, enabled=False),
            imaging=dataclasses.replace(cfg.imaging, source="external"),
        )
        # the go and crossing are confirmed from here (the procedure confirming its own gates
        # would pass ready before enable() on the cycle thread sees it)
        auto_confirm = False
        bench = imaging = BenchImaging(cfg)

        def progress(p: Progress) -> None:
            bench(p)
            printer(p)

    robot = Robot(
        cfg,
        clock=clock,
        seed=seed,
        out=out,
        inject=inject,
        progress=progress,
        auto_confirm=auto_confirm,
    )
    if imaging is not None:
        imaging.robot = robot
    result: RunResult | None = None
    failure: OSError | None = None
    closing: WhihError | None = None
    try:
        with robot:
            confirm = (lambda gate: True) if external_drives else None
            # --max-time bounds the whole run, enabling included
            if not use_keys:
                result = robot.enable_and_run(max_time=max_time, confirm=confirm)
            else:
                with OperatorKeys(robot) as k:
                    keys.append(k)
                    result = robot.enable_and_run(max_time=max_time, hold_on_fault=True, confirm=confirm)
    except WhihError as exc:  # a set-up or command time-out is no recording failure
        if result is None:
            raise
        closing = exc  # the run ended and was summarised; closing it did not (the drives gone)
    except OSError as exc:  # the run folder's disk; the drives were stopped before this
        failure = exc
    if result is not None:
        _print_result(result, sys.stdout)
    rec = robot.runtime.recorder
    if rec.summary_error is not None:
        print(
            f"whih run: the run folder is incomplete ({rec.summary_error}); the summary it should hold:",
            file=sys.stderr,
        )
        print(json.dumps(rec.summary, indent=1, default=str), file=sys.stderr)
    if closing is not None:
        print(f"whih run: {closing}", file=sys.stderr)
        return EXIT_NOT_CROSSED
    if failure is not None:
        print(f"whih run: recording failed: {failure}", file=sys.stderr)
        return EXIT_NOT_CROSSED
    assert result is not None
    return EXIT_OK if result.crossed and result.outcome == "complete" else EXIT_NOT_CROSSED


def _sim_drives(path: Path, interface: str | None, channel: str | None) -> int:
    """Serve the configured drives (and the plant they move) in this process until Ctrl-C or
    SIGTERM: a master in another process can then die while the drives live on."""
    try:
        cfg = load_config(path)
        bus_cfg = dataclasses.replace(
            cfg.bus, interface=interface or cfg.bus.interface, channel=channel or cfg.bus.channel
        )
        if bus_cfg.interface == SIM_INTERFACE:
            raise ValueError(
                "the simulated-time bus cannot reach another process: give --interface (e.g. "
                "udp_multicast, socketcan)"
            )
        bus = open_bus(bus_cfg, period=cfg.period)
    except ConfigError as exc:
        print("whih sim-drives: invalid configuration", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, WhihError) as exc:
        print(f"whih sim-drives: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        # drives stand for hardware with its own CPU: the master's scheduling, if it has any
        restore = realtime_scheduling(cfg.cycle.realtime_priority)
    except ConfigError as exc:
        bus.shutdown()
        print(f"whih sim-drives: {exc.problems[0]}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with SimulatedDrives(cfg, bus, load=Plant(cfg, seed=cfg.sim.seed), seed=cfg.sim.seed) as drives:
            nodes = ", ".join(f"{a} {d.node_id}" for a, d in cfg.drives.items())
            _emit(
                sys.stdout,
                f"whih sim-drives: serving {len(drives.axes)} drives ({nodes}) on {bus.channel_info}; "
                "Ctrl-C or SIGTERM stops them\n",
                flush=True,
            )
            while not stop.wait(0.2):
                pass
    except (RuntimeError, ValueError, WhihError) as exc:
        print(f"whih sim-drives: {exc}", file=sys.stderr)
        return EXIT_NOT_CROSSED
    finally:
        bus.shutdown()
        restore()
    _emit(sys.stdout, "whih sim-drives: stopped\n")
    return EXIT_OK


def _default_out(name: str) -> Path:
    """A new folder under ``runs/`` named by the time (two runs in one second get -2, -3, ...)."""
    base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``whih`` console script."""
    code = _main(argv)
    _emit(sys.stdout, "", flush=True)  # here, not at exit, so a closed pipe is handled
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "probe":
        return _probe(args.config, all_nodes=args.all)
    if args.command == "sim-drives":
        return _sim_drives(args.config, args.interface, args.channel)
    if args.command == "diagram":
        _emit(sys.stdout, diagram(args.format) + "\n")
        return EXIT_OK
    if args.command == "trials":
        return _trials(args)
    if args.command == "dbc":
        return _dbc(args.config, args.output)
    if args.command == "inspect":
        return _inspect(args.run_dir, as_json=args.json, plot=not args.no_plot)
    try:
        if args.command == "demo":
            _emit(sys.stdout, f"whih demo: simulated WHIH procedure, {default_config_path()}\n")
            cfg = load_config(default_config_path())
            options: dict[str, Any] = {
                "out": _default_out("demo"),
                "seed": None,
                "realtime": False,
                "external_drives": False,
                "inject": [],
                "max_time": None,
            }
        else:
            cfg = load_config(args.config)
            for spec in args.inject:
                check_fault_spec(cfg, spec)
            if args.seed is not None and args.seed < 0:
                raise ValueError(f"--seed (={args.seed}) must be an integer >= 0")
            if args.max_time is not None and not 0.0 < args.max_time <= MAX_TIME_S:
                raise ValueError(f"--max-time (={args.max_time:g}) must be in (0...{MAX_TIME_S:g}] seconds")
            if args.external_drives and not args.realtime:
                raise ValueError(
                    "--external-drives needs --realtime (another process cannot share simulated time)"
                )
            if args.external_drives:
                # the drives run in another process (whih sim-drives): nothing here can fault them
                for spec in args.inject:
                    if parse_fault(spec).kind not in RUNTIME_FAULT_KINDS:
                        kinds = ", ".join(sorted(k.value for k in RUNTIME_FAULT_KINDS))
                        raise ValueError(
                            f"--inject (={spec!r}): drive faults cannot be injected into external drives "
                            "(--external-drives); inject them where the drives run, or leave "
                            f"--external-drives off (master-side kinds: {kinds})"
                        )
            if args.out is not None and not args.out.strip():
                raise ValueError(f"--out (={args.out!r}) must name a folder")
            options = {
                "out": None if args.out is None else Path(args.out),
                "seed": args.seed,
                "realtime": args.realtime,
                "external_drives": args.external_drives,
                "inject": list(args.inject),
                "max_time": args.max_time,
            }
    except ConfigError as exc:
        print(f"whih {args.command}: invalid configuration", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # a bad --inject, --seed or --max-time
        print(f"whih {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(cfg, **options)
    except KeyboardInterrupt:
        print(
            "\nwhih: stopped by the operator (Ctrl-C); every drive was quick-stopped and disabled",
            file=sys.stderr,
        )
        return EXIT_NOT_CROSSED
    except (RunFolderError, ConfigError) as exc:  # refused before anything moved: a usage error
        print(f"whih {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WhihError as exc:
        print(f"whih {args.command}: {exc}", file=sys.stderr)
        return EXIT_NOT_CROSSED


if __name__ == "__main__":
    sys.exit(main())
