"""A tiny local base image for the sandbox's demo and the tests: busybox-static imported with
`docker import`, since no image registry can be pulled from on a machine without internet."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BASE_IMAGE = "reconciler-test/busybox:1"
APPLETS = ("sh", "echo", "cat", "ls", "sleep", "true", "mkdir", "cp", "grep", "test", "head", "yes")


def ensure_base_image(*, busybox: str | None = None) -> str:
    """BASE_IMAGE, imported into the local engine if it is not there yet.

    Raises FileNotFoundError when busybox is not installed (`apt-get install busybox-static`).
    """
    present = subprocess.run(
        ["docker", "image", "inspect", BASE_IMAGE], capture_output=True, check=False
    )
    if present.returncode == 0:
        return BASE_IMAGE
    found = busybox or shutil.which("busybox") or "/bin/busybox"
    if not Path(found).exists():
        raise FileNotFoundError("busybox is not installed (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory() as root:
        bin_dir = Path(root, "bin")
        bin_dir.mkdir()
        shutil.copy(found, bin_dir / "busybox")
        for applet in APPLETS:
            (bin_dir / applet).symlink_to("busybox")
        tar = subprocess.run(["tar", "-C", root, "-c", "."], capture_output=True, check=True)
        subprocess.run(
            ["docker", "import", "-", BASE_IMAGE], input=tar.stdout, capture_output=True, check=True
        )
    return BASE_IMAGE
