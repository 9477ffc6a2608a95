"""Input bounds of the command line and the config loader: refused with a message, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from whih_control import recorder as recorder_module
from whih_control.cli import main
from whih_control.config import CONFIG_MAX_BYTES, load_config
from whih_control.errors import ConfigError, RunFolderError

from .conftest import CONFIGS, ROOT

SIM_TOML = str(CONFIGS / "sim.toml")


def _cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``whih`` in its own process: a case that used to hang fails here instead of hanging."""
    return subprocess.run(
        [sys.executable, "-m", "whih_control.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def test_check_config_refuses_a_device_that_never_ends() -> None:
    """``check-config /dev/zero`` hung and ``/dev/full`` ate memory."""
    done = _cli("check-config", "/dev/zero")
    assert done.returncode == 2, done.stderr
    assert "/dev/zero: not a regular file" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", ["device", "fifo", "folder", "huge"])
def test_config_files_that_are_not_regular_or_too_large_are_refused(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind == "device":
        path = Path("/dev/full")
        why = "not a regular file"
    elif kind == "fifo":
        path = tmp_path / "config.toml"
        os.mkfifo(path)
        why = "not a regular file"
    elif kind == "folder":
        path = tmp_path
        why = "not a regular file"
    else:
        path = tmp_path / "big.toml"
        path.write_bytes(b"#" * (CONFIG_MAX_BYTES + 1))
        why = f"allowed at most {CONFIG_MAX_BYTES}"
    with pytest.raises(ConfigError, match=why):
        load_config(path)
    assert main(["check-config", str(path)]) == 2
    assert why in capsys.readouterr().err


def test_a_freeze_longer_than_a_minute_is_refused() -> None:
    """``master-freeze:1e9`` held simulated time for good."""
    done = _cli("run", "--config", SIM_TOML, "--inject", "master-freeze:1e9@1")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "(0...60000]" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-time", "1e9"], "--max-time (=1e+09) must be in (0...86400] seconds"),
        (["--max-time", "nan"], "--max-time (=nan)"),
        (["--out", ""], "--out (='') must name a folder"),
        (["--out", "  "], "--out (='  ') must name a folder"),
        (["--inject", "tpdo-drop:ante_mc:1000000000@1"], "[1...1000000]"),
    ],
)
def test_run_arguments_out_of_bounds_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", SIM_TOML, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_existing_folder_that_cannot_be_written_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only --out gave a traceback and exit 1."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root writes through permissions: a read-only file system instead
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip("root, and no read-only file system can be mounted here")
        mounted = True
    else:
        folder.chmod(0o555)
    try:
        assert main(["run", "--config", SIM_TOML, "--out", str(folder)]) == 2
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        else:
            folder.chmod(0o755)
    err = capsys.readouterr().err
    assert "cannot write in the run folder" in err and "Traceback" not in err


def test_two_runs_into_one_folder_exactly_one_proceeds(tmp_path: Path) -> None:
    out = tmp_path / "run"
    n = 8
    barrier = threading.Barrier(n)
    won: list[int] = []
    refused: list[str] = []

    def claim(k: int) -> None:
        barrier.wait()
        try:
            recorder_module.make_run_folder(out)
            won.append(k)
        except RunFolderError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == n - 1
    assert all("taken by another run" in r or "already holds a run" in r for r in refused)
    with pytest.raises(RunFolderError, match="already holds a run"):
        recorder_module.make_run_folder(out)  # and any later run too
