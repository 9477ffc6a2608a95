"""Cyclic-exchange benchmark: our master vs a bare python-can loop vs canopen's PDO objects.

Six simulated drives run in one thread on a ``virtual`` bus of this process; each loop sends
SYNC, collects one TPDO1 per drive, and sends one RPDO1 per drive, at 400 Hz and 1 kHz, paced
by absolute ``perf_counter`` slots (missed slots are skipped, never caught up in a burst).
Reported per loop and rate: achieved rate, overruns (slots missed), stale cycles (cycles in which a TPDO1
was missing at the deadline), SYNC period error p50/p99/max and CPU (process time / wall time; the drive
thread's share is included and is the same for every loop).

Then each budget of our loop, met or not: overruns, SYNC period error p99 and CPU against the bare
loop (docs/DESIGN.md section 5), stale cycles (the HIL suite's 0.5 %), the achieved rate and no
drive event, collision or wrong-length TPDO1 (what ``tests/test_master.py`` timed at 400 Hz before
real-time budgets moved here). ``--check`` exits 1 when one is not met.

Run: ``python benchmarks/bench_cycle.py --seconds 5`` (``--rates 400 --seconds 5 --check`` for
the 400 Hz budget alone)
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import os
import statistics
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import canopen

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_iface import pdo  # noqa: E402
from firmware_iface.master import Master  # noqa: E402
from firmware_iface.sim import SimulatedDrives  # noqa: E402
from firmware_iface.spec import resolve_eds  # noqa: E402
from firmware_iface.types import DriveGoal  # noqa: E402
from whih_control import load_config  # noqa: E402
from whih_control.config import Config  # noqa: E402


@dataclass
class Result:
    name: str
    rate_hz: float
    cycles: int
    wall: float
    cpu: float
    overruns: int
    stale: int
    sync_err: list[float]
    faults: int = 0
    """Ours only: drive events (EMCY, heartbeat loss...), collisions and wrong-length TPDO1s."""

    def p99_ms(self) -> float:
        err = sorted(self.sync_err) or [math.nan]
        return err[min(len(err) - 1, int(0.99 * len(err)))] * 1e3

    def row(self) -> str:
        err = sorted(self.sync_err) or [math.nan]

        def p(q: float) -> float:
            return err[min(len(err) - 1, int(q * len(err)))] * 1e3

        return (
            f"{self.name:<10} {self.rate_hz:>6.0f} Hz {self.cycles / self.wall:>8.1f} Hz "
            f"{self.overruns:>6d} ({100 * self.overruns / max(1, self.cycles):5.2f} %) {self.stale:>6d} "
            f"{p(0.5):>7.3f} {p(0.99):>7.3f} {max(err) * 1e3:>7.3f} ms {100 * self.cpu / self.wall:>6.1f} %"
        )


def make_config(rate_hz: float, channel: str) -> Config:
    data: dict[str, Any] = tomllib.loads((ROOT / "configs" / "sim.toml").read_text())
    data["cycle"]["rate_hz"] = rate_hz
    data["bus"]["channel"] = channel
    # 6 drives at 1 kHz need ~1.6 Mbit/s worst case: more than classical CAN, fine on a virtual bus.
    data["bus"]["bitrate"] = 5_000_000
    return load_config(data, base_dir=ROOT / "configs")


class Pacer:
    """Absolute perf_counter slots; a missed slot is skipped; waits block, then poll briefly."""

    def __init__(self, period: float, busy_wait_s: float, wait: Callable[[float], None]) -> None:
        self.period = period
        self.busy = busy_wait_s
        self._wait = wait
        self.slot = time.perf_counter() + period
        self.overruns = 0

    def next(self) -> float:
        self.slot += self.period
        now = time.perf_counter()
        if now > self.slot:
            missed = math.ceil((now - self.slot) / self.period)
            self.overruns += missed
            self.slot += missed * self.period
        self._wait(self.slot - self.busy)
        while time.perf_counter() < self.slot:
            pass
        return self.slot


def _sync_errors(times: list[float], period: float) -> list[float]:
    return [abs(b - a - period) for a, b in itertools.pairwise(times) if b - a < 1.5 * period]


def run_ours(cfg: Config, bus: can.BusABC, seconds: float) -> Result:
    m = Master(cfg, bus)
    m.setup()
    for c in m.commands.axes.values():
        c.goal = DriveGoal.ENABLED
    period = 1.0 / cfg.cycle.rate_hz
    dl = cfg.cycle.tpdo_deadline * period

    gc.collect()
    gc.freeze()
    pacer = Pacer(period, 0.0, m.wait_until)  # wait_until polls the last busy_wait_us itself
    slot = pacer.next()
    for _ in range(10):
        m.read(slot, slot + dl)
        m.write()
        slot = pacer.next()
    stale = 0
    fbs = tuple(m.feedback.axes.values())
    syncs: list[float] = []
    events = 0
    pacer.overruns = 0
    w0, c0 = time.perf_counter(), time.process_time()
    end = w0 + seconds
    n = 0
    while slot < end:
        syncs.append(time.perf_counter())
        m.read(slot, slot + dl)
        stale += any(a.age_cycles for a in fbs)
        m.write()
        events += len(m.service(slot))
        n += 1
        slot = pacer.next()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    faults = events + m.stats.collisions + m.stats.bad_dlc
    m.shutdown()
    return Result(
        "ours", cfg.cycle.rate_hz, n, wall, cpu, pacer.overruns, stale, _sync_errors(syncs, period), faults
    )


def run_bare(cfg: Config, bus: can.BusABC, seconds: float) -> Result:
    m = Master(cfg, bus)  # set-up only: PDO mapping, CSP, NMT start
    m.setup()
    nodes = m.nodes
    sync = can.Message(arbitration_id=pdo.SYNC_COB, data=b"", is_extended_id=False)
    rpdos = []
    for nid in nodes:
        buf = bytearray(6)
        pdo.encode_rpdo1(buf, 0x06, 0)
        rpdos.append(can.Message(arbitration_id=pdo.rpdo1_cob(nid), data=buf, is_extended_id=False))
    tpdo_ids = {pdo.tpdo1_cob(nid) for nid in nodes}
    period = 1.0 / cfg.cycle.rate_hz
    dl = cfg.cycle.tpdo_deadline * period

    def wait(until: float) -> None:
        while (r := until - time.perf_counter()) > 0:
            bus.recv(r)

    gc.collect()
    gc.freeze()
    pacer = Pacer(period, cfg.cycle.busy_wait_us * 1e-6, wait)
    slot = pacer.next()
    syncs: list[float] = []
    stale = 0
    w0, c0 = time.perf_counter(), time.process_time()
    end = w0 + seconds
    n = 0
    while slot < end:
        syncs.append(time.perf_counter())
        bus.send(sync)
        got = 0
        deadline = slot + dl
        while got < len(nodes):
            r = deadline - time.perf_counter()
            msg = bus.recv(r if r > 0 else 0.0)
            if msg is None:
                break
            if msg.arbitration_id in tpdo_ids:
                got += 1
        stale += got < len(nodes)
        for msg in rpdos:
            bus.send(msg)
        n += 1
        slot = pacer.next()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    m.shutdown()
    return Result("bare", cfg.cycle.rate_hz, n, wall, cpu, pacer.overruns, stale, _sync_errors(syncs, period))


def run_canopen(cfg: Config, bus: can.BusABC, seconds: float) -> Result:
    m = Master(cfg, bus)  # same set-up, so the drives send the same TPDO1s
    m.setup()
    network = canopen.Network(bus)
    nodes = []
    for drive in cfg.drives.values():
        node = canopen.RemoteNode(drive.node_id, str(resolve_eds(drive.eds, ROOT / "configs")))
        network.add_node(node)
        nodes.append(node)
    notifier = can.Notifier(bus, [canopen.network.MessageListener(network)], timeout=0.05)
    try:
        count = [0]
        lock = threading.Lock()
        all_in = threading.Event()

        def on_tpdo(_: Any) -> None:
            with lock:
                count[0] += 1
                if count[0] == len(nodes):
                    all_in.set()

        for node in nodes:
            node.tpdo.read(from_od=False)  # type: ignore[no-untyped-call]
            node.rpdo.read(from_od=False)  # type: ignore[no-untyped-call]
            node.tpdo[1].add_callback(on_tpdo)
            node.rpdo[1][0x6040].raw = 0x06
            node.rpdo[1][0x607A].raw = 0
        period = 1.0 / cfg.cycle.rate_hz
        dl = cfg.cycle.tpdo_deadline * period
        sleeper = threading.Event()

        def wait(until: float) -> None:
            r = until - time.perf_counter()
            if r > 0:
                sleeper.wait(r)

        gc.collect()
        gc.freeze()
        pacer = Pacer(period, cfg.cycle.busy_wait_us * 1e-6, wait)
        slot = pacer.next()
        syncs: list[float] = []
        stale = 0
        w0, c0 = time.perf_counter(), time.process_time()
        end = w0 + seconds
        n = 0
        while slot < end:
            with lock:
                count[0] = 0
                all_in.clear()
            syncs.append(time.perf_counter())
            network.sync.transmit()
            stale += not all_in.wait(max(0.0, slot + dl - time.perf_counter()))
            for node in nodes:
                node.rpdo[1].transmit()
            n += 1
            slot = pacer.next()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        notifier.stop()
    m.shutdown()
    return Result(
        "canopen", cfg.cycle.rate_hz, n, wall, cpu, pacer.overruns, stale, _sync_errors(syncs, period)
    )


def _median(rs: list[Result]) -> Result:
    """Per-column medians of one loop's rounds (SYNC errors: the round with the median p99)."""

    def med(key: Callable[[Result], float]) -> float:
        return statistics.median(key(r) for r in rs)

    by_p99 = sorted(
        rs, key=lambda r: sorted(r.sync_err)[int(0.99 * (len(r.sync_err) - 1))] if r.sync_err else 0.0
    )
    wall = med(lambda r: r.wall)
    return Result(
        rs[0].name,
        rs[0].rate_hz,
        round(med(lambda r: r.cycles / r.wall) * wall),
        wall,
        med(lambda r: r.cpu / r.wall) * wall,
        round(med(lambda r: r.overruns / r.cycles) * med(lambda r: r.cycles)),
        round(med(lambda r: r.stale)),
        by_p99[len(by_p99) // 2].sync_err,
        max(r.faults for r in rs),
    )


def one(kind: str, rate: float, seconds: float, k: int, switch_interval: float | None) -> Result:
    cfg = make_config(rate, f"bench-{kind}-{k}")
    bus = can.Bus(interface="virtual", channel=cfg.bus.channel, ignore_config=True)
    dbus = can.Bus(interface="virtual", channel=cfg.bus.channel, ignore_config=True)
    before = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval / rate)
    try:
        with SimulatedDrives(cfg, dbus, eds_dir=ROOT / "configs"):
            fn = {"ours": run_ours, "bare": run_bare, "canopen": run_canopen}[kind]
            return fn(cfg, bus, seconds)
    finally:
        sys.setswitchinterval(before)
        gc.unfreeze()
        bus.shutdown()
        dbus.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per loop and rate")
    ap.add_argument("--rates", type=float, nargs="+", default=[1000.0, 400.0])
    ap.add_argument(
        "--switch-interval",
        type=float,
        default=0.1,
        help="interpreter switch interval in periods while a loop runs, as the runtime sets it "
        "(0.1); 0 keeps the interpreter's default",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds; the loops take turns in each round, medians at the end"
    )
    ap.add_argument("--check", action="store_true", help="exit 1 when a budget of our loop is not met")
    args = ap.parse_args(argv)
    header = (
        f"{'loop':<10} {'target':>9} {'achieved':>11} {'overruns':>15} {'stale':>6} "
        f"{'SYNC err p50':>7} {'p99':>7} {'max':>10} {'CPU':>8}"
    )
    print(header)
    results: dict[tuple[str, float], list[Result]] = {}
    k = 0
    for _ in range(args.repeat):
        for rate in args.rates:
            for kind in ("ours", "bare", "canopen"):
                k += 1
                r = one(kind, rate, args.seconds, k, args.switch_interval or None)
                results.setdefault((kind, rate), []).append(r)
                print(r.row(), flush=True)
    if args.repeat > 1:
        print(f"median of {args.repeat} rounds:")
        print(header)
        for rate in args.rates:
            for kind in ("ours", "bare", "canopen"):
                print(_median(results[(kind, rate)]).row())
    for rate in args.rates:
        ratios = [
            (o.cpu / o.wall) / max(1e-9, b.cpu / b.wall)
            for o, b in zip(results[("ours", rate)], results[("bare", rate)], strict=True)
        ]
        print(f"{rate:.0f} Hz: CPU ours / bare = {statistics.median(ratios):.2f}x (median of {len(ratios)})")
    print(
        f"python {sys.version.split()[0]}, python-can {can.__version__}, "
        f"canopen {getattr(canopen, '__version__', '?')}"
    )
    met = True
    print("budgets (ours; medians of the rounds; docs/DESIGN.md section 5 and the HIL suite's 0.5 %):")
    for rate in args.rates:
        o = _median(results[("ours", rate)])
        ratio = statistics.median(
            (a.cpu / a.wall) / max(1e-9, b.cpu / b.wall)
            for a, b in zip(results[("ours", rate)], results[("bare", rate)], strict=True)
        )
        for what, value, ok in _budgets(o, ratio):
            met &= ok
            print(f"  {rate:.0f} Hz {what:<46} {value:<22} {'met' if ok else 'NOT met'}")
    print(f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min)")
    return 0 if met or not args.check else 1


def _budgets(o: Result, cpu_ratio: float) -> list[tuple[str, str, bool]]:
    """(what, measured, met) for one rate's median result of our loop."""
    cycles = max(1, o.cycles)
    rows = [
        ("overruns <= 0.1 % of cycles", f"{100 * o.overruns / cycles:.3f} %", o.overruns <= 0.001 * cycles),
        ("p99 SYNC period error <= 0.15 ms", f"{o.p99_ms():.3f} ms", o.p99_ms() <= 0.15),
        ("CPU <= 1.3x the bare python-can loop", f"{cpu_ratio:.2f}x", cpu_ratio <= 1.3),
        ("stale cycles <= 0.5 %", f"{100 * o.stale / cycles:.3f} %", o.stale <= 0.005 * cycles),
        (
            "achieved rate >= 95 % of the target",
            f"{o.cycles / o.wall:.1f} Hz",
            o.cycles / o.wall >= 0.95 * o.rate_hz,
        ),
        ("no drive event, collision or bad-length TPDO1", f"{o.faults}", o.faults == 0),
    ]
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
