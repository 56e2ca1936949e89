"""The systemd unit as systemd itself reads it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import services

UNIT = Path(__file__).parents[2] / "systemd" / "reconciler.service"


def test_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about the unit.

    verify insists that ExecStart's binary exists, so the copy it checks runs this
    checkout's own `reconciler` console script instead of the installed path.
    """
    analyze = shutil.which("systemd-analyze")
    services.require(analyze is not None, "systemd-analyze is missing (apt-get install systemd)")
    assert analyze is not None
    beside_python = str(Path(sys.executable).parent)
    script = Path(
        shutil.which("reconciler", path=beside_python) or shutil.which("reconciler") or ""
    )
    services.require(script.is_file(), "the reconciler console script is not on PATH")
    text = UNIT.read_text()
    installed = "/opt/reconciler/.venv/bin/reconciler "
    assert f"ExecStart={installed}" in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={installed}", f"ExecStart={script} "))

    verify = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 even for ignored keys and bad values; what it prints is the verdict.
    about_us = [
        line
        for line in (verify.stdout + verify.stderr).splitlines()
        if UNIT.name in line or str(copy) in line
    ]
    assert verify.returncode == 0, verify.stderr
    assert about_us == []
