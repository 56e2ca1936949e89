"""The benchmark runs end to end in quick mode and reports a number for every figure.

Timings are never asserted: this only proves that `python -m bench.run --quick` still works
(sandbox, daemon process, peer, registry, dockerd) and that no row of its table is empty.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]

# Every figure the benchmark must report, by the start of its row; True where the peer
# (ecs-deploy) has a figure of its own to compare with.
FIGURES = {
    "webhook -> UpdateService, tag in registry: p50": False,
    "webhook -> UpdateService, tag in registry: p99": False,
    "webhook -> /status InSync": False,
    "rollout completion -> daemon observes it": False,
    "same: DescribeServices calls per poll round": False,
    "services get a new pushed tag: wall time vs sequential": True,
    "same: AWS API calls per deploy": True,
    "parallel `ecs deploy`: wall time": True,
    "parallel `ecs deploy`: total AWS API calls": True,
    "steady state (": False,
    "same: DescribeTaskDefinition calls after the first pass": False,
    "same: git ls-remote per pass": False,
    "same: git fetches after the first pass": False,
    "same: RSS at poll_interval": False,
    "same: CPU at poll_interval": False,
    "leases (": False,
    "lease takeover after a daemon dies": False,
    "build context of a": True,
    "second commit touching one file": False,
    "race, cold push -> live": True,
    "race, warm push -> live": True,
    "race, new host push -> live": True,
    "same: the daemon's new-host push vs its own cold push": False,
    "same: the daemon's warm push vs the sum of its build": False,
}
NUMBER = re.compile(r"\d")


def test_quick_benchmark_reports_every_figure(
    tmp_path: Path, docker_engine: str, registry: str
) -> None:
    """Every row has a measured value, and the peer's columns are filled where it has one."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| figure" in done.stdout
    rows = json.loads((tmp_path / "results-quick.json").read_text())["rows"]
    for prefix, has_peer in FIGURES.items():
        matching = [r for r in rows if prefix in r["figure"]]
        assert matching, f"no row for {prefix!r}"
        for row in matching:
            assert NUMBER.search(row["ours"]), row
            assert "n/a" not in row["ours"], row
            if has_peer:
                assert NUMBER.search(row["peer"]), row
    assert (tmp_path / "table-quick.md").read_text().count("\n|") >= len(FIGURES)
