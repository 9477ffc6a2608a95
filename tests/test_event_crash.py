"""Crash durability of events.jsonl: SIGKILL a writer at random moments, then verify.

Every log must verify up to its last complete line, and no event the writer reported as fsynced
may be missing. CI profile: 12 kills; ``HYPOTHESIS_PROFILE=thorough``: 120.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from whih_control.events import verify_log

ROOT = Path(__file__).resolve().parents[1]
WRITER = ROOT / "tests" / "_event_writer.py"
RUNS = 120 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 12


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.timeout(240)
def test_sigkill_never_loses_fsynced_events(tmp_path: Path) -> None:
    rng = random.Random(20251123)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    totals: list[int] = []
    for run in range(RUNS):
        path = tmp_path / f"events-{run}.jsonl"
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), str(run)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert proc.stdout is not None
        reported: list[int] = []
        # kill after a random number of durable events: the writer is mid-stream, at an arbitrary
        # point of a write, a flush or an fsync
        wanted = rng.randint(1, 60)
        try:
            while len(reported) < wanted:
                line = proc.stdout.readline()
                assert line, f"writer {run} died early (rc={proc.poll()})"
                reported.append(int(line))
            # plus a random fraction of a few event periods; the outcome never depends on it
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=rng.uniform(0.0, 0.004))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        rest = proc.stdout.read()
        proc.stdout.close()
        reported += [int(x) for x in rest.split(b"\n")[:-1]]  # complete lines only
        assert proc.returncode == -signal.SIGKILL
        report = verify_log(path)
        assert report.ok, f"run {run}: {report.problem}"
        assert max(reported) < report.next_seq, (
            f"run {run}: fsynced seq {max(reported)} missing (log has {report.lines} lines)"
        )
        assert [e["seq"] for e in report.events] == list(range(report.lines))
        totals.append(report.lines)
    assert len(totals) == RUNS and min(totals) >= 1
