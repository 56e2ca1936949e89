"""The daemon as operators run it, `reconciler run --config PATH`, in a subprocess.

For what an in-process daemon cannot show: SIGKILL at a chosen moment, and everything the
process prints. The sandbox AWS keeps running in the test process; the subprocess reaches it
through `endpoint_url` in the config and the AWS_* variables the `aws` fixture sets.

    process = DaemonProcess(world.write_config(), tmp_path / "run1.log")
    await process.start()
    await process.wait_for(world.name, lambda s: s["phase"] == "Building")
    process.kill()
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

RECONCILER = Path(sys.executable).with_name("reconciler")


class DaemonProcess:
    def __init__(
        self,
        config: Path,
        output: Path,
        *,
        env: dict[str, str] | None = None,
        nofile: int | None = None,
    ) -> None:
        """`nofile`: the daemon's RLIMIT_NOFILE (soft and hard), e.g. 1024 as on a default host."""
        self.config = config
        self.output = output
        self._nofile = nofile
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""  # the webhook listener
        self.admin_url = ""  # the admin listener: status, pages, actions

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self, *, timeout: float = 60) -> None:
        """Start the daemon and wait until it logs the address it listens on."""
        offset = self.output.stat().st_size if self.output.exists() else 0
        self._process = self._spawn()
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events(since=offset):
                if event.get("event") == "listening":
                    self.url = f"http://{event['address']}"
                    self.admin_url = f"http://{event['admin_address']}"
                    return
            if self._process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self._process.returncode}: {self.text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"daemon did not listen: {self.text()}")
            await asyncio.sleep(0.05)

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Spawning takes milliseconds; the wait for the daemon to listen is the async part.
        command = [str(RECONCILER), "run", "--config", str(self.config)]
        if self._nofile is not None:
            # prlimit execs the daemon: the limit applies to it and the PID stays the daemon's.
            command = ["prlimit", f"--nofile={self._nofile}:{self._nofile}", "--", *command]
        with self.output.open("ab") as out:
            return subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def events(self, *, since: int = 0) -> list[dict[str, Any]]:
        """The JSON lines printed so far (from byte `since`); other lines are skipped."""
        if not self.output.exists():
            return []
        found = []
        with self.output.open("rb") as out:
            out.seek(since)
            for line in out.read().splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    found.append(item)
        return found

    async def exited(self, *, timeout: float = 60) -> int:
        """Wait until the daemon exits by itself; its exit code."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while (code := self._process.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"daemon still running: {self.text()[-2000:]}")
            await asyncio.sleep(0.1)
        self._process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut or the OOM killer."""
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: frozen, as a host that stalls (or a VM paused) while its clock runs on."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self, *, timeout: float = 15) -> int:
        """SIGTERM and wait; the exit code."""
        process, self._process = self._process, None
        if process is None:
            return 0
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise

    def admin_token(self) -> str:
        """The admin token the daemon made in its state_dir."""
        state_dir = tomllib.loads(self.config.read_text())["daemon"]["state_dir"]
        return (Path(state_dir) / "admin.token").read_text().strip()

    def _where(self, path: str, kwargs: dict[str, Any], *, anonymous: bool) -> str:
        """Webhooks go to the webhook listener; anything else to the admin listener, as the
        admin unless the caller says who it is (or `anonymous`)."""
        if path.startswith("/hooks/"):
            return self.url + path
        if anonymous:
            return self.admin_url + path
        kwargs["headers"] = {
            "Authorization": f"Bearer {self.admin_token()}",
            **(kwargs.get("headers") or {}),
        }
        return self.admin_url + path

    async def get(self, path: str, *, anonymous: bool = False, **kwargs: Any) -> tuple[int, str]:
        where = self._where(path, kwargs, anonymous=anonymous)
        async with aiohttp.ClientSession() as http, http.get(where, **kwargs) as answer:
            return answer.status, await answer.text()

    async def post(self, path: str, *, anonymous: bool = False, **kwargs: Any) -> tuple[int, str]:
        where = self._where(path, kwargs, anonymous=anonymous)
        async with aiohttp.ClientSession() as http, http.post(where, **kwargs) as answer:
            return answer.status, await answer.text()

    async def status(self, name: str) -> dict[str, Any]:
        code, body = await self.get(f"/status/{name}")
        assert code == 200, body
        return dict(json.loads(body))

    async def wait_for(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 90,
        what: str = "",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = await self.status(name)
            if predicate(status):
                return status
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {what or predicate}; last status: {json.dumps(status)}"
        )
