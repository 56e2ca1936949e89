"""One daemon per host id: the member item belongs to the process that wrote it.

Two daemons given the same `host_id` would share their leases and each take the other's
apps for its own. A daemon therefore joins only when the member item of its host id is
absent, or has stayed the same for the whole TTL on this daemon's monotonic clock (a
predecessor that crashed); a member item that changes meanwhile is a running daemon, and
this one exits naming it. Every later heartbeat is conditional on the item still being this
process's, so a daemon whose identity was taken after all stops instead of sharing it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from reconciler.cluster.liveness import record_of
from reconciler.cluster.table import LeaseTable, Member
from reconciler.errors import HostIdInUse

log = structlog.get_logger("reconciler.cluster")


def in_use(member: Member) -> HostIdInUse:
    started = datetime.fromtimestamp(member.started_at, UTC).isoformat(timespec="seconds")
    where = member.url or "an unknown address"
    return HostIdInUse(
        f"host_id {member.host_id!r} is in use by a running daemon at {where} "
        f"(started {started}); give each daemon its own [cluster].host_id"
    )


async def join(
    table: LeaseTable,
    me: Member,
    *,
    ttl: float,
    clock: Callable[[], float] = time.monotonic,
    poll: float | None = None,
) -> None:
    """Write this daemon's first heartbeat, waiting out a crashed predecessor's item.

    Raises HostIdInUse when another process heartbeats under the same host id."""
    poll = poll if poll is not None else min(1.0, ttl / 10)
    while True:
        if await table.heartbeat(me):
            return
        seen = await table.member(me.host_id)
        if seen is None:
            continue  # it left meanwhile
        first_seen = clock()
        log.warning("host_id_item_found", host_id=me.host_id, url=seen.url, wait_seconds=ttl)
        while clock() < first_seen + ttl:
            await asyncio.sleep(poll)
            now = await table.member(me.host_id)
            if now is None:
                break
            if record_of(now) != record_of(seen):
                raise in_use(now)
        else:
            if await table.heartbeat(me, replacing=seen):
                log.info("host_id_taken_over", host_id=me.host_id, previous_url=seen.url)
                return
