"""Several daemon processes sharing the apps of one config through a lease table.

    fleet = await Fleet.create(tmp_path, aws, registry, apps=6)
    async with fleet.running(3) as daemons:
        await fleet.wait_all(lambda s: s["phase"] == "InSync")

Each daemon is `reconciler run` in its own process with its own state_dir (git mirrors are
a host's local cache) and `[cluster].host_id` d0, d1, ...; its AWS client says that id in
its user agent, so the sandbox's call log tells which daemon sent which write. Every process
is stopped by its PID when the block ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from reconciler.cluster.table import ClusterView, LeaseTable
from reconciler.sandbox.aws import SandboxAws
from tests.support.config import config_text
from tests.support.daemon_process import DaemonProcess
from tests.support.probes import eventually
from tests.support.webhooks import signed_push
from tests.support.world import WEBHOOK_SECRET, World

WRITES = ("UpdateService", "RegisterTaskDefinition", "RunTask")


@dataclass
class Fleet:
    root: Path
    aws: SandboxAws
    worlds: list[World]
    table: str
    ttl: float
    daemons: list[DaemonProcess] = field(default_factory=list)

    @classmethod
    async def create(
        cls, root: Path, aws: SandboxAws, registry: str, *, apps: int, ttl: float = 5.0
    ) -> Fleet:
        worlds = [World.create(root / f"app{i}", aws, registry) for i in range(apps)]
        fleet = cls(root, aws, worlds, f"leases-{uuid.uuid4().hex[:8]}", ttl)
        async with fleet._table() as table:
            await table.create()
        return fleet

    @asynccontextmanager
    async def _table(self) -> AsyncIterator[LeaseTable]:
        async with LeaseTable.connect(
            name=self.table, region=self.aws.region, endpoint_url=self.aws.endpoint_url
        ) as table:
            yield table

    async def view(self) -> ClusterView:
        async with self._table() as table:
            return await table.view()

    def config_for(
        self, index: int, *, host_id: str | None = None, endpoint_url: str | None = None
    ) -> Path:
        """Daemon `index`'s config: its own state_dir, host id d<index> unless given, and
        the sandbox AWS (or `endpoint_url`, e.g. a proxy in front of it)."""
        settings = self.worlds[0].settings()
        settings["daemon"] = {**settings["daemon"], "state_dir": self.root / f"d{index}" / "state"}
        if endpoint_url is not None:
            settings["aws"] = {**settings["aws"], "endpoint_url": endpoint_url}
        host = host_id or f"d{index}"
        cluster = {"lease_table": self.table, "lease_ttl": f"{self.ttl}s", "host_id": host}
        text = config_text(**settings, cluster=cluster, apps=[w.app_table() for w in self.worlds])
        path = self.root / f"d{index}.toml"
        path.write_text(text)
        return path

    async def start(
        self,
        index: int,
        *,
        env: dict[str, str] | None = None,
        host_id: str | None = None,
        endpoint_url: str | None = None,
    ) -> DaemonProcess:
        """Daemon `index`, its calls signed as d<index> in the sandbox's log; `env` adds to
        its environment (e.g. a faked clock)."""
        process = DaemonProcess(
            self.config_for(index, host_id=host_id, endpoint_url=endpoint_url),
            self.root / f"d{index}.log",
            env={"AWS_SDK_UA_APP_ID": f"d{index}", **(env or {})},
        )
        self.daemons.append(process)
        await process.start()
        return process

    @asynccontextmanager
    async def running(self, count: int) -> AsyncIterator[list[DaemonProcess]]:
        try:
            started = await asyncio.gather(*(self.start(i) for i in range(count)))
            yield list(started)
        finally:
            for process in self.daemons:
                with contextlib.suppress(Exception):  # stopping what may be gone already
                    process.resume()
                    process.kill()

    # Looking at the fleet ----------------------------------------------------------------

    async def statuses(self, via: DaemonProcess) -> dict[str, dict[str, Any]]:
        """Every app as `via`'s /status shows it (its own apps and the others')."""
        code, body = await via.get("/status")
        assert code == 200, body
        return {a["name"]: a for a in json.loads(body)["apps"]}

    async def wait_all(
        self,
        via: DaemonProcess,
        predicate: Callable[[World, dict[str, Any]], bool],
        *,
        worlds: list[World] | None = None,
        what: str = "",
        timeout: float = 60,
    ) -> dict[str, dict[str, Any]]:
        chosen = self.worlds if worlds is None else worlds
        found: dict[str, dict[str, Any]] = {}

        async def check() -> bool:
            nonlocal found
            try:
                found = await self.statuses(via)
            except aiohttp.ClientError:
                return False
            return all(w.name in found and predicate(w, found[w.name]) for w in chosen)

        await eventually(check, timeout=timeout, what=what or "every app")
        return found

    def in_sync_at(
        self, revision_of: Callable[[World], str]
    ) -> Callable[[World, dict[str, Any]], bool]:
        return lambda w, s: s["phase"] == "InSync" and s["live"]["image"] == w.image(revision_of(w))

    def mark(self) -> dict[str, int]:
        """Where the sandbox's log of writes stands now (for `writes_since`)."""
        return {action: len(self.aws.calls.logged(action)) for action in WRITES}

    def writes_since(self, mark: dict[str, int]) -> list[dict[str, Any]]:
        """The AWS writes logged after `mark`, each with "_action" and "_caller"."""
        return [
            {**params, "_action": action}
            for action in WRITES
            for params in self.aws.calls.logged(action)[mark[action] :]
        ]

    def updates(self, world: World) -> list[dict[str, Any]]:
        """The UpdateService calls for `world`'s service: who sent them, with what."""
        return [
            params
            for params in self.aws.calls.logged("UpdateService")
            if params.get("service") == world.name
        ]

    def updates_per_revision(self, world: World) -> Counter[str]:
        return Counter(str(u.get("taskDefinition")) for u in self.updates(world))

    async def push(self, via: DaemonProcess, world: World) -> None:
        """Tell `via` (any daemon) that `world`'s branch moved, as GitHub would."""
        body, headers = signed_push(
            repo_url=world.repo.url, after=world.repo.head(), secret=WEBHOOK_SECRET
        )
        code, text = await via.post("/hooks/github", data=body, headers=headers)
        assert code in (200, 202), text
