"""Find the real Docker engine and registry the tests run against.

Tests that need them skip with a reason on a developer machine without them, and fail
instead when `CI` is set: in CI a missing engine is a broken set-up, not a reason to pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reconciler.sandbox import baseimage

DOCKER_SOCKET = Path(os.environ.get("RECONCILER_TEST_DOCKER_SOCKET", "/var/run/docker.sock"))
REGISTRY = os.environ.get("RECONCILER_TEST_REGISTRY", "127.0.0.1:5000")


def require(condition: bool, reason: str) -> None:
    """Skip the test when `condition` is false, or fail it when running in CI."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def docker_is_up() -> bool:
    if not DOCKER_SOCKET.exists() or shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "-H", f"unix://{DOCKER_SOCKET}", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        timeout=20,
        check=False,
    )
    return probe.returncode == 0


def registry_is_up() -> bool:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def ensure_base_image() -> str:
    """A tiny local base image (busybox-static via `docker import`): no hub is reachable."""
    try:
        return baseimage.ensure_base_image()
    except FileNotFoundError as exc:
        require(False, str(exc))
        raise
