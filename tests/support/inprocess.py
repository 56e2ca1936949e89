"""The daemon in the test's own event loop: the one in-process driver of tests and benchmark.

    async with started(daemon) as running:      # once it listens
        host, port = daemon.listening
        ...
    # asked to stop and awaited on the way out

`serving` builds the Daemon from a config and adds an HTTP client; `World.daemon()` and
`daemon_for()` use it. Only the daemon is imported here, so a benchmark process that runs
the daemon pays for nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from reconciler.aio.backoff import Timings
from reconciler.config import Config
from reconciler.daemon.access import admin_token_path
from reconciler.daemon.root import Daemon

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@asynccontextmanager
async def started(
    daemon: Daemon,
    *,
    install_signals: bool = False,
    start_timeout: float = START_TIMEOUT,
    stop_timeout: float = STOP_TIMEOUT,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run `daemon` until the block ends; enter once it listens, with the task running it.

    A daemon that fails before it listens raises its error here. On the way out the daemon is
    asked to stop and awaited (a block may also stop it and await the task itself).
    """
    task = asyncio.create_task(daemon.run(install_signals=install_signals))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + start_timeout
        while daemon.listening is None or daemon.admin_listening is None:
            if task.done():
                task.result()
                raise RuntimeError("the daemon stopped before it listened")
            if loop.time() > deadline:
                raise TimeoutError("daemon did not start listening")
            await asyncio.sleep(0.01)
        yield task
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, timeout=stop_timeout)


@asynccontextmanager
async def serving(
    config: Config, path: Path, *, timings: Timings, token: str | None = None
) -> AsyncIterator[tuple[Daemon, str, aiohttp.ClientSession]]:
    """Run a Daemon in this event loop until the block ends; yield it, the URL of its admin
    listener and a client that calls it as the admin (webhooks: `hooks_url(daemon)`)."""
    daemon = Daemon(config=config, config_path=path, timings=timings)
    async with started(daemon):
        assert daemon.admin_listening is not None
        host, port = daemon.admin_listening
        token = token or admin_token_path(config).read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            yield daemon, f"http://{host}:{port}", http


def hooks_url(daemon: Daemon) -> str:
    """Where the daemon's webhook listener is."""
    assert daemon.listening is not None
    host, port = daemon.listening
    return f"http://{host}:{port}"
