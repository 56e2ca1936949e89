"""The README's first command works: the demo deploys, redeploys through a webhook, holds a
commit whose test fails and deploys the fix, deploys a change of a definition file and shows
an edit in the console as drift."""

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


@pytest.mark.slow
def test_demo_once_deploys_and_redeploys_through_a_webhook(
    tmp_path: Path, docker_engine: str, registry: str
) -> None:
    """`scripts/demo --once` exits 0 after a first deploy and a webhook redeploy."""
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--once",
            "--workdir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "First deploy done: web is InSync" in output
    assert (
        "One release moved every part of the app, in order: web InSync, worker InSync, "
        "rule/nightly-report InSync, schedule/default/cleanup InSync"
    ) in output
    assert re.search(r'"nudged": \[[^\]]*"web"', output)
    assert "Webhook redeploy done: web is InSync" in output
    assert "Dashboard: http://127.0.0.1:" in output
    assert "Held: test_failed: test failed" in output
    assert "Fixed commit deployed: web is InSync" in output
    assert re.search(r"Definition change deployed: api runs api:\d+ with memory 1024", output)
    assert "LOG_LEVEL=debug" in output
    assert "Console edit detected as drift, nothing written" in output
    assert "LOG_LEVEL" in output.split("Console edit detected as drift")[1]
    assert "pre_deploy_succeeded" in output
    assert "extra_tag_moved" in output
    assert "Traceback" not in output
    # The daemon is stopped before the sandbox that serves its lease table.
    assert "lease_table_failed" not in output


@pytest.mark.slow
def test_demo_run_twice_shows_two_daemons_sharing_the_apps(
    tmp_path: Path, docker_engine: str, registry: str
) -> None:
    """A running `scripts/demo` and `scripts/demo --join` split the two apps between two
    daemons; the second one stopping gives its app back to the first."""
    workdir = str(tmp_path / "demo")
    output = tmp_path / "first.log"
    with output.open("w") as log:
        first = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "demo.py"), "--workdir", workdir],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 300
        while "Still running" not in output.read_text():
            assert first.poll() is None, output.read_text()[-4000:]
            assert time.monotonic() < deadline, output.read_text()[-4000:]
            time.sleep(0.5)
        demo = str(ROOT / "scripts" / "demo.py")
        joined = subprocess.run(
            [sys.executable, demo, "--join", "--once", "--workdir", workdir],
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
    assert "lease_table_failed" not in output.read_text()
    # The demo stopped what it started (sandbox, daemons) on its way out; whatever it left
    # is stopped here, so a failure does not outlive the test.
    left = started_in(workdir)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert list(left.values()) == []


def started_in(workdir: str) -> dict[int, str]:
    """The processes still running with `workdir` in their arguments, by PID."""
    return {
        pid: b" ".join(args).decode(errors="replace")
        for pid, args in command_lines().items()
        if any(workdir.encode() in arg for arg in args)
    }
