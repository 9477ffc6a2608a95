"""Project hygiene that users rely on: README commands, CI, layering."""

from __future__ import annotations

import re

from .conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    demo, tests = _readme_commands()
    assert demo.endswith("whih demo")
    assert "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_firmware_iface_never_imports_whih_control() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+whih_control", re.MULTILINE)
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "firmware_iface").rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert offenders == []
