"""A registry of a test's own, on another loopback port, that the test may stop and start.

Stopping the shared registry at 127.0.0.1:5000 would break every other test running against
it; a test about "the registry is down" starts one of these instead:

    with RegistryProcess(tmp_path / "registry") as registry:
        world = World.create(tmp_path, aws, registry.address)
        registry.stop()   # pushes now fail
        registry.start()  # same storage, same port: the tags pushed before are still there
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.support import services
from tests.support.net import free_port


class RegistryProcess:
    """`docker-registry serve` with a temporary config; `address` is `127.0.0.1:<port>`."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("docker-registry")
        services.require(binary is not None, "docker-registry is not installed")
        assert binary is not None
        self._binary = binary
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "registry.yml"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n"
        )

    def up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        assert self._process is None, "already running"
        log = (self.root / "registry.log").open("ab")
        self._process = subprocess.Popen(
            [self._binary, "serve", str(self.config)], stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + 15
        while not self.up():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"registry did not start; see {self.root / 'registry.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> RegistryProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
