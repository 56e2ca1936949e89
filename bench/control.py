"""Drive a daemon process from the benchmark: config, start, stop, HTTP, signals, /proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.sandbox import AppSpec
from tests.support.config import app_table
from tests.support.config import config_text as tests_config_text
from tests.support.webhooks import signed_push

PROJECT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "bench-webhook-secret-value"  # noqa: S105 (a test secret)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def config_text(
    *,
    state_dir: Path,
    secret_file: Path,
    endpoint_url: str,
    region: str,
    registry: str,
    apps: Sequence[AppSpec],
    poll_interval: float,
    rollout_timeout: str = "120s",
    max_concurrent_builds: int = 2,
) -> str:
    return tests_config_text(
        daemon={
            "listen": "127.0.0.1:0",
            "poll_interval": poll_interval,
            "state_dir": state_dir,
            "log_format": "json",
            "max_concurrent_builds": max_concurrent_builds,
        },
        aws={"region": region, "endpoint_url": endpoint_url, "registry": registry},
        webhook={"github_secret_file": secret_file},
        apps=[
            app_table(
                app.name,
                app.repo_url,
                cluster=app.cluster,
                branch=app.branch,
                ecr_repository=app.ecr_repository,
                rollout_timeout=rollout_timeout,
            )
            for app in apps
        ],
    )


@dataclass
class Daemon:
    """A running `python -m bench.daemon`, its HTTP address and its run directory."""

    run_dir: Path
    process: asyncio.subprocess.Process
    url: str  # the webhook listener
    admin_url: str  # status and the rest, called with the admin token (`http` sends it)
    http: aiohttp.ClientSession
    _profiling: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    # HTTP --------------------------------------------------------------------------------

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.admin_url + path) as answer:
            return answer.status, await answer.json(content_type=None)

    async def statuses(self) -> dict[str, dict[str, Any]]:
        _, body = await self.get_json("/status")
        return {app["name"]: app for app in body["apps"]}

    async def status(self, name: str) -> dict[str, Any]:
        _, body = await self.get_json(f"/status/{name}")
        return dict(body)

    async def wait_ready(self, *, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            code, _ = await self.get_json("/readyz")
            if code == 200:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"daemon not ready after {within:g} s; see {self.run_dir}/daemon.log")

    async def wait_until(
        self,
        names: Sequence[str],
        predicate: Callable[[dict[str, Any]], bool],
        *,
        within: float,
        interval: float = 0.02,
        seen: dict[str, float] | None = None,
    ) -> float:
        """Poll /status until `predicate` holds for every app in `names`; the time it did.

        `seen` receives, per app, the first poll at which its predicate held.
        """
        seen = {} if seen is None else seen
        pending = set(names)
        deadline = time.monotonic() + within
        while True:
            now = time.monotonic()
            if len(pending) == 1:
                (only,) = pending
                apps = {only: await self.status(only)}
            else:
                apps = await self.statuses()
            for name in list(pending):
                if predicate(apps[name]):
                    seen[name] = now
                    pending.discard(name)
            if not pending:
                return now
            if now > deadline:
                phases = {n: (apps[n]["phase"], apps[n]["last_error"]) for n in sorted(pending)}
                raise TimeoutError(f"apps not there after {within:g} s: {phases}")
            await asyncio.sleep(interval)

    async def github_push(self, *, repo_url: str, after: str, branch: str = "main") -> list[str]:
        """A signed GitHub push delivery; returns the apps the daemon nudged."""
        body, headers = signed_push(
            repo_url=repo_url, after=after, branch=branch, secret=WEBHOOK_SECRET
        )
        async with self.http.post(self.url + "/hooks/github", data=body, headers=headers) as answer:
            document = await answer.json(content_type=None)
            if answer.status != 202:
                raise RuntimeError(f"webhook answered {answer.status}: {document}")
            return list(document.get("nudged", []))

    # Signals and /proc -----------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """The daemon's own counters (git network operations, passes, ECS reads)."""
        path = self.run_dir / "stats.json"
        _remove(path)
        self.process.send_signal(signal.SIGUSR1)
        return await _read_when_there(path, within=10)

    async def toggle_profile(self) -> None:
        """Start pyinstrument; the next call stops it and waits for profile.txt."""
        done = self.run_dir / "profile.done"
        stopping = self._profiling
        self._profiling = not stopping
        if stopping:
            _remove(done)
        self.process.send_signal(signal.SIGUSR2)
        if stopping:
            await _read_when_there(done, within=60)

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the daemon process, all threads."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_bytes(self) -> int:
        return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * _PAGE

    def log_events(self, event: str, **match: str) -> list[dict[str, Any]]:
        """The daemon's JSON log lines with this `event` (and these field values)."""
        found = []
        for line in (self.run_dir / "daemon.log").read_text().splitlines():
            if f'"{event}"' not in line:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == event and all(entry.get(k) == v for k, v in match.items()):
                    found.append(entry)
        return found


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


async def _read_when_there(path: Path, *, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while (document := _read_json(path)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {within:g} s")
        await asyncio.sleep(0.005)
    return document


def _prepare(run_dir: Path, config: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "secret").write_text(WEBHOOK_SECRET + "\n")
    config_path = run_dir / "reconciler.toml"
    config_path.write_text(config)
    return config_path


@asynccontextmanager
async def running_daemon(*, run_dir: Path, config: str) -> AsyncIterator[Daemon]:
    """Start the daemon on `config`; stop it with SIGTERM (as systemd would) on the way out."""
    config_path = _prepare(run_dir, config)
    log = (run_dir / "daemon.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.daemon",
        str(config_path),
        str(run_dir),
        cwd=PROJECT,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (address := _read_json(run_dir / "listening.json")) is None:
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start; see {run_dir}/daemon.log")
            await asyncio.sleep(0.02)
        timeout = aiohttp.ClientTimeout(total=60)
        headers = {"Authorization": f"Bearer {address['token']}"}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
            yield Daemon(
                run_dir,
                process,
                f"http://{address['host']}:{address['port']}",
                f"http://{address['admin']}",
                http,
            )
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=15)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()
