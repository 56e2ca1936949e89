"""What an operator asks of the lease table: create it, who holds what, each app's memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from reconciler.app.state import AppMemory, FileStateStore
from reconciler.cluster.store import peek_all
from reconciler.cluster.table import LeaseTable
from reconciler.config import Config
from reconciler.errors import ConfigError


def _require_table(config: Config) -> str:
    if not config.cluster.lease_table:
        raise ConfigError(["cluster.lease_table: not set; this config runs one daemon alone"])
    return config.cluster.lease_table


async def init(config: Config) -> bool:
    """Create the lease table; False when it existed already."""
    async with LeaseTable.connect(
        name=_require_table(config),
        region=config.aws.region,
        endpoint_url=config.aws.endpoint_url,
    ) as table:
        return await table.create()


async def status(config: Config, *, now: float | None = None) -> dict[str, Any]:
    """The daemons (alive or not), the apps each holds and how old each heartbeat is."""
    now = time.time() if now is None else now
    ttl = config.cluster.lease_ttl
    async with LeaseTable.connect(
        name=_require_table(config),
        region=config.aws.region,
        endpoint_url=config.aws.endpoint_url,
    ) as table:
        view = await table.view()
    configured = [a.name for a in config.apps]
    daemons = []
    for member in sorted(view.members.values(), key=lambda m: m.host_id):
        apps = sorted(a for a, item in view.leases.items() if item.owner == member.host_id)
        daemons.append(
            {
                "host_id": member.host_id,
                "url": member.url,
                "alive": member.expires_at > now,
                "heartbeat_age_seconds": round(max(0.0, now - (member.expires_at - ttl)), 1),
                "apps": apps,
            }
        )
    leases = []
    for name in configured:
        item = view.leases.get(name)
        owner = item.owner if item is not None else None
        leases.append(
            {
                "app": name,
                "owner": owner,
                "version": item.version if item is not None else 0,
                "held_for_seconds": round(now - item.since, 1)
                if item is not None and owner is not None
                else None,
                "owner_alive": owner in view.members and view.members[owner].expires_at > now,
            }
        )
    return {"table": table.name, "lease_ttl": ttl, "daemons": daemons, "apps": leases}


async def memories(config: Config) -> Callable[[str], AppMemory]:
    """Where read-only commands find each app's memory: the table or state_dir."""
    if not config.cluster.enabled:
        return FileStateStore(config.daemon.state_dir).peek
    async with LeaseTable.connect(
        name=config.cluster.lease_table,
        region=config.aws.region,
        endpoint_url=config.aws.endpoint_url,
    ) as table:
        found = await peek_all(table)
    return lambda name: found.get(name) or AppMemory()
