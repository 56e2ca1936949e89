"""The README's first command works: the demo deploys a release of several parts,
redeploys through a webhook, holds a commit whose test fails and deploys the fix, deploys a
change of a definition file once it is approved and shows an edit in the console as drift;
and `scripts/demo --join` beside it shares the apps between two daemons."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import command_lines

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "scripts" / "demo.py")


@pytest.mark.slow
def test_the_demo_tells_its_story_and_a_second_daemon_joins_it(
    tmp_path: Path, docker_engine: str, registry: str
) -> None:
    """`scripts/demo` runs its story to "Still running"; `scripts/demo --join --once`
    beside it splits the two apps between two daemons, and the second one stopping gives
    its app back to the first. (One run of the demo for both: it is the slowest test.)"""
    workdir = str(tmp_path / "demo")
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(
            [sys.executable, DEMO, "--workdir", workdir],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 300
        while "Still running" not in log.read_text():
            assert first.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        story(log.read_text())
        joined = subprocess.run(
            [sys.executable, DEMO, "--join", "--once", "--workdir", workdir],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        text = joined.stdout + joined.stderr
        assert joined.returncode == 0, text[-4000:]
        assert "Two daemons share the apps" in text
        assert "its apps went back" in text
        assert "Traceback" not in text
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    output = log.read_text()
    assert first.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    # The daemon is stopped before the sandbox that serves its lease table.
    assert "lease_table_failed" not in output
    # The demo stopped what it started (sandbox, daemons) on its way out; whatever it left
    # is stopped here, so a failure does not outlive the test.
    left = started_in(workdir)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert list(left.values()) == []


def story(output: str) -> None:
    """What the demo says it did, in order."""
    assert "First deploy done: web is InSync" in output, output[-4000:]
    assert (
        "One release moved every part of the app, in order: web InSync, worker InSync, "
        "rule/nightly-report InSync, schedule/default/cleanup InSync"
    ) in output
    assert re.search(r'"nudged": \[[^\]]*"web"', output)
    assert "Webhook redeploy done: web is InSync" in output
    assert "Dashboard: http://127.0.0.1:" in output
    assert "Held: test_failed: test failed" in output
    assert "Fixed commit deployed: web is InSync" in output
    assert "api is production: its release waits for an approval" in output
    assert "Approved by admin" in output
    assert re.search(r"Definition change deployed: api runs api:\d+ with memory 1024", output)
    assert "LOG_LEVEL=debug" in output
    assert "Console edit detected as drift, nothing written" in output
    assert "LOG_LEVEL" in output.split("Console edit detected as drift")[1]
    assert "pre_deploy_succeeded" in output
    assert "extra_tag_moved" in output


def started_in(workdir: str) -> dict[int, str]:
    """The processes still running with `workdir` in their arguments, by PID."""
    return {
        pid: b" ".join(args).decode(errors="replace")
        for pid, args in command_lines().items()
        if any(workdir.encode() in arg for arg in args)
    }
