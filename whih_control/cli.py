"""The ``whih`` command line. Exit codes: 0 success, 1 procedure ended without crossing,
2 usage or configuration error. Bad input never produces a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from whih_control.config import Config, load_config
from whih_control.errors import ConfigError

EXIT_OK = 0
EXIT_NOT_CROSSED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="whih", description="WHIH robotic CTO crossing: simulate, run and check.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("demo", help="run the simulated WHIH procedure on the default configuration")
    run = sub.add_parser("run", help="run the procedure from a configuration file")
    run.add_argument("--config", required=True, type=Path, help="TOML configuration")
    run.add_argument("--out", type=Path, help="run folder to write")
    run.add_argument("--seed", type=int, help="override sim.seed")
    run.add_argument("--realtime", action="store_true", help="wall-clock cycle instead of simulated time")
    run.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="SPEC",
        help="fault KIND[:AXIS][:ARG]@T_SECONDS (repeatable)",
    )
    run.add_argument("--max-time", type=float, help="stop after this many seconds")
    chk = sub.add_parser("check-config", help="validate a configuration and print its summary")
    chk.add_argument("file", type=Path)
    dia = sub.add_parser("diagram", help="print the procedure state machine")
    dia.add_argument("--format", choices=("mermaid",), default="mermaid")
    return p


def summary_lines(cfg: Config) -> list[str]:
    """Short human summary of a configuration: axes, node ids, rate, bus load."""
    lines = [
        f"bus: {cfg.bus.interface} {cfg.bus.channel!r} at {cfg.bus.bitrate / 1e3:g} kbit/s, "
        f"master node {cfg.bus.master_node_id}",
        f"cycle: {cfg.cycle.rate_hz:g} Hz ({cfg.period * 1e3:.3g} ms)",
        f"bus load: {cfg.bus_load().describe()}",
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


def _check_config(path: Path) -> int:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{path}: ok")
    for line in summary_lines(cfg):
        print(line)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``whih`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    print(f"whih {args.command}: not implemented yet (the runtime issue adds it)", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
