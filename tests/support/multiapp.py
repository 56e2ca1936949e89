"""One daemon for several Worlds: one config with an `[[apps]]` table per World.

    async with daemon_for([healthy, failing]) as (h, f):
        await h.wait_phase("InSync")
        await f.wait_phase("Failed")

Each World keeps its own git remote, cluster, service and repository; the daemon, its
state_dir and its HTTP port are shared, as they would be in production. The first World's
daemon settings and registry apply to all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from reconciler.aio.backoff import Timings
from reconciler.config import parse_config
from tests.support.config import config_text
from tests.support.world import FAST, RunningDaemon, World, serving


def combined_config(worlds: Sequence[World]) -> str:
    """The first World's config, with every World's `[[apps]]` table."""
    first, *others = worlds
    for world in others:
        assert world.registry == first.registry, "one daemon pushes to one registry"
    return config_text(
        **first.settings(), **first.sections, apps=[world.app_table() for world in worlds]
    )


@asynccontextmanager
async def daemon_for(
    worlds: Sequence[World], *, timings: Timings = FAST, token: str | None = None
) -> AsyncIterator[list[RunningDaemon]]:
    """A running daemon for all `worlds`; one RunningDaemon view per World, in order. Its
    client sends `token` (needed when the config names a tokens file), else the admin token
    the daemon made."""
    text = combined_config(worlds)
    path = worlds[0].root / "reconciler.toml"
    path.write_text(text)
    config = parse_config(text)
    async with serving(config, path, timings=timings, token=token) as (daemon, url, http):
        yield [RunningDaemon(world, daemon, url, http, path) for world in worlds]
