"""One daemon for several Worlds: one config with an `[[apps]]` table per World.

    async with daemon_for([healthy, failing]) as (h, f):
        await h.wait_phase("InSync")
        await f.wait_phase("Failed")

Each World keeps its own git remote, cluster, service and repository; the daemon, its
state_dir and its HTTP port are shared, as they would be in production. The first World's
daemon settings and registry apply to all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiohttp

from reconciler.backoff import Timings
from reconciler.config import parse_config
from reconciler.supervisor import Supervisor
from tests.support.world import FAST, RunningDaemon, World


def combined_config(worlds: Sequence[World]) -> str:
    first, *others = worlds
    text = first.config_text()
    for world in others:
        assert world.registry == first.registry, "one daemon pushes to one registry"
        _, apps = world.config_text().split("[[apps]]\n", 1)
        text += "[[apps]]\n" + apps
    return text


@asynccontextmanager
async def daemon_for(
    worlds: Sequence[World], *, timings: Timings = FAST
) -> AsyncIterator[list[RunningDaemon]]:
    """A running daemon for all `worlds`; one RunningDaemon view per World, in order."""
    text = combined_config(worlds)
    path = worlds[0].root / "reconciler.toml"
    path.write_text(text)
    supervisor = Supervisor(config=parse_config(text), config_path=path, timings=timings)
    task = asyncio.create_task(supervisor.run(install_signals=False))
    try:
        deadline = time.monotonic() + 30
        while supervisor.listening is None:
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise TimeoutError("daemon did not start listening")
            await asyncio.sleep(0.02)
        host, port = supervisor.listening
        async with aiohttp.ClientSession() as http:
            yield [
                RunningDaemon(world, supervisor, f"http://{host}:{port}", http, path)
                for world in worlds
            ]
    finally:
        supervisor.request_stop()
        await asyncio.wait_for(task, timeout=15)
