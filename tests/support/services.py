"""Find the real Docker engine and registry the tests run against.

Tests that need them skip with a reason on a developer machine without them, and fail
instead when `CI` is set: in CI a missing engine is a broken set-up, not a reason to pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

DOCKER_SOCKET = Path(os.environ.get("RECONCILER_TEST_DOCKER_SOCKET", "/var/run/docker.sock"))
REGISTRY = os.environ.get("RECONCILER_TEST_REGISTRY", "127.0.0.1:5000")
BASE_IMAGE = "reconciler-test/busybox:1"


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
    present = subprocess.run(
        ["docker", "image", "inspect", BASE_IMAGE], capture_output=True, check=False
    )
    if present.returncode == 0:
        return BASE_IMAGE
    busybox = shutil.which("busybox") or "/bin/busybox"
    require(
        Path(busybox).exists(), "busybox-static is not installed (apt-get install busybox-static)"
    )
    with tempfile.TemporaryDirectory() as root:
        bin_dir = Path(root, "bin")
        bin_dir.mkdir()
        shutil.copy(busybox, bin_dir / "busybox")
        for applet in ("sh", "echo", "cat", "ls", "sleep", "true", "mkdir", "cp"):
            (bin_dir / applet).symlink_to("busybox")
        tar = subprocess.run(["tar", "-C", root, "-c", "."], capture_output=True, check=True)
        subprocess.run(
            ["docker", "import", "-", BASE_IMAGE], input=tar.stdout, capture_output=True, check=True
        )
    return BASE_IMAGE
