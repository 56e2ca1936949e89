"""What the daemon asks of the cluster: who owns an app, what its owner published, the fence
on its AWS writes, and a nudge or sync passed on to its owner through the lease table.

Made before the daemon's app loops (which ask it) and before the lease manager (which keeps
its leases and its view of the table current), so neither is wired in after the fact.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal

import structlog

from reconciler.adapters.ports import Adapters
from reconciler.cluster.fenced import Fence, fenced
from reconciler.cluster.lease import Leases
from reconciler.cluster.liveness import Liveness
from reconciler.cluster.table import ClusterView, LeaseTable, Published
from reconciler.errors import AwsUnavailable, NotForwarded, ReconcilerError
from reconciler.metrics import Metrics

log = structlog.get_logger("reconciler.cluster")

LOOK_EVERY = 1.5  # seconds between views: a nudge written anywhere is acted on within this
STATUS_WAIT = 2.0  # seconds a /status waits for the others' statuses before using the last
FORWARD_WAIT = 5.0  # seconds a request that forwards a nudge or sync waits for the table


class TableHealth:
    """Failures of the lease table, counted each time and logged once until it recovers."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._failing: set[str] = set()  # operations whose failure was logged

    def failed(self, operation: str, exc: ReconcilerError) -> None:
        self._metrics.lease_table_errors_total.labels(operation=operation).inc()
        if operation not in self._failing:
            self._failing.add(operation)
            log.error("lease_table_failed", operation=operation, error=str(exc))

    def recovered(self, operation: str) -> None:
        if operation in self._failing:
            self._failing.discard(operation)
            log.info("lease_table_recovered", operation=operation)


class ClusterOwnership:
    """The leases this daemon holds and the last view of the table, as the daemon asks them."""

    def __init__(
        self,
        *,
        table: LeaseTable,
        host_id: str,
        ttl: float,
        health: TableHealth,
        look_every: float = LOOK_EVERY,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.host_id = host_id
        self.instance = secrets.token_hex(8)  # this process, as its member item says
        self.ttl = ttl
        self.leases = Leases(ttl=ttl, clock=clock)
        self.liveness = Liveness(ttl)
        self._view = ClusterView()
        self._table = table
        self._health = health
        self._look_every = look_every
        self._clock = clock
        self._wall = wall
        self._statuses: dict[str, Published] = {}  # what the others published, when asked
        self._statuses_read_at = float("-inf")
        self._status_read: asyncio.Task[None] | None = None
        self._feedback_due: dict[str, str] = {}
        self._feedback_writer: asyncio.Task[None] | None = None

    @property
    def view(self) -> ClusterView:
        return self._view

    def saw(self, view: ClusterView, *, ended: float) -> None:
        """The lease manager's latest view of the table, read by `ended` (monotonic)."""
        self._view = view
        self.liveness.saw(view.members, at=ended)

    # Who runs an app ----------------------------------------------------------------------

    def holds(self, name: str) -> bool:
        """Whether this daemon holds the app's lease now."""
        return name in self.leases.held

    def fence(self, name: str) -> Fence:
        """What the app's AWS writes ask before they go out."""
        return Fence(name, left=self.leases.left, why_not=self.leases.why_not)

    def guard(self, name: str, adapters: Adapters) -> Adapters:
        """The app's adapters with its AWS writes going out only while this daemon holds its
        lease."""
        return fenced(adapters, self.fence(name))

    def ownership(self, name: str) -> dict[str, Any]:
        """`owner` (host id or None), `lease_age_seconds`, `here` for the app's status."""
        item = self._view.leases.get(name)
        owner = item.owner if item is not None else None
        if name in self.leases.held:
            owner = self.host_id
        member = self._view.members.get(owner) if owner else None
        silent = self.liveness.silent_for(owner, now=self._clock()) if owner else None
        return {
            "owner": owner,
            "owner_url": member.url if member is not None else None,
            # Since the owner's heartbeat record last changed, on this daemon's clock.
            "lease_age_seconds": None if silent is None else round(silent, 1),
            "lease_version": item.version if item is not None else None,
            "here": name in self.leases.held,
        }

    def elsewhere(self, name: str) -> str | None:
        """The daemon that owns the app when it is not this one, as "host-id (url)"."""
        if name in self.leases.held:
            return None
        item = self._view.leases.get(name)
        if item is None or item.owner is None:
            return None
        member = self._view.members.get(item.owner)
        return f"{item.owner} ({member.url})" if member and member.url else item.owner

    # What the owners published --------------------------------------------------------------

    def remote_status(self, name: str) -> dict[str, Any] | None:
        """What the app's owner last published, as of the last `read_statuses`; None when
        the owner of the current lease has published nothing yet."""
        item = self._view.leases.get(name)
        published = self._statuses.get(name)
        if item is None or published is None or published.version != item.version:
            return None
        return dict(published.status)

    async def read_statuses(self) -> None:
        """Read what every owner published, for a /status or a page about to be answered:
        at most once a look however many ask at once, and never more than STATUS_WAIT
        seconds of the answer (a slow or failing table leaves the last read in place)."""
        if self._clock() - self._statuses_read_at < self._look_every:
            return
        if self._status_read is None or self._status_read.done():
            self._status_read = asyncio.create_task(self._read_statuses(), name="statuses")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._status_read), timeout=STATUS_WAIT)

    async def _read_statuses(self) -> None:
        started = self._clock()
        try:
            self._statuses = await self._table.statuses()
        except ReconcilerError as exc:
            self._health.failed("statuses", exc)
            return
        self._health.recovered("statuses")
        self._statuses_read_at = started

    # Passing a nudge or sync on -------------------------------------------------------------

    def passes_on(self, name: str) -> bool:
        """A nudge for an app without a loop here goes through the table, to its owner: this
        daemon too, when its loop is about to start (a take, a reload)."""
        return True

    async def forward_nudge(self, name: str) -> None:
        """Ask the app's owner for a pass; NotForwarded when the table did not take it."""
        await self._forward(name, "nudges")

    async def forward_sync(self, name: str) -> None:
        """Ask the app's owner for a sync; NotForwarded when the table did not take it."""
        await self._forward(name, "syncs")

    async def _forward(self, name: str, counter: Literal["nudges", "syncs"]) -> None:
        """Raise the app's counter in the table, which its owner reads at its next look."""
        action = "sync" if counter == "syncs" else "nudge"
        try:
            async with asyncio.timeout(FORWARD_WAIT):
                await self._table.bump(name, counter)
        except (TimeoutError, ReconcilerError) as exc:
            why = (
                exc
                if isinstance(exc, ReconcilerError)
                else AwsUnavailable(f"no answer within {FORWARD_WAIT:g} s")
            )
            self._health.failed("forward", why)
            raise NotForwarded(
                f"could not pass the {action} of {name!r} on to its owner through the lease"
                f" table: {why}"
            ) from exc
        self._health.recovered("forward")

    # What feedback said, for the app's next owner -------------------------------------------

    def mirror_feedback(self, app: str, record: str) -> None:
        """Keep `record` (JSON) in the table for the app's next owner: written soon, the
        latest only, and only while this daemon holds the app."""
        if app not in self.leases.held:
            return
        self._feedback_due[app] = record
        if self._feedback_writer is None or self._feedback_writer.done():
            self._feedback_writer = asyncio.create_task(self._write_feedback(), name="feedback")

    async def _write_feedback(self) -> None:
        while self._feedback_due:
            app, record = self._feedback_due.popitem()
            version = self.leases.version(app)
            if version is None or not self.leases.valid(app):
                continue
            try:
                await self._table.write_feedback(
                    app, me=self.host_id, version=version, record=record
                )
            except ReconcilerError as exc:
                self._health.failed("feedback", exc)
                continue
            self._health.recovered("feedback")

    async def close(self) -> None:
        """Leaving: no status read goes on, and what feedback said gets a second to go out."""
        if self._status_read is not None:
            self._status_read.cancel()
        if self._feedback_writer is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, ReconcilerError):
                await asyncio.wait_for(self._feedback_writer, timeout=1.0)
