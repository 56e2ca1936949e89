"""The README's first command works: the demo deploys, redeploys through a webhook, holds a
commit whose test fails and deploys the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.e2e
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
    assert '"nudged": ["web"]' in output
    assert "Webhook redeploy done: web is InSync" in output
    assert "Dashboard: http://127.0.0.1:" in output
    assert "Held: test_failed: test failed" in output
    assert "Fixed commit deployed: web is InSync" in output
    assert "pre_deploy_succeeded" in output
    assert "extra_tag_moved" in output
    assert "Traceback" not in output
