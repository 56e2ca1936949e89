"""The round every daemon of a cluster runs: heartbeat, look, hand over, take, forward.

Each round (every LOOK_EVERY seconds) reads the whole cluster view with one Query (members
and leases share a partition) and heartbeats every third of the TTL, so a daemon in steady
state makes under one call a second whatever the number of apps. From the view it:
- confirms the leases it holds, and stops at once the loop of any app another daemon took;
- computes the even spread over the live daemons (assignment.py) and hands over apps that
  now belong to another live daemon, once they are idle (a build or rollout under way ends
  here first);
- takes apps assigned to it that are free or whose owner's heartbeat ran out (a takeover),
  reads their state and starts their loops;
- passes on the nudges and syncs other daemons wrote for its apps, and publishes what its
  apps are doing for the others' /status.
Heartbeats run on their own clock beside the rounds, so a round that takes many apps
never delays one. A daemon whose heartbeats fail keeps its loops while its leases are
valid; they run out on its own clock before anyone else may take over (lease.py), and then
it stops every loop at once. Once a heartbeat gets through again it takes its apps afresh
(conditionally: whoever took one in the gap keeps it).
SIGTERM hands every app back at once (`leave`), so a drained daemon's apps move within one
round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from reconciler.cluster.assignment import assign
from reconciler.cluster.identity import in_use, join
from reconciler.cluster.lease import Held, Leases
from reconciler.cluster.ownership import LOOK_EVERY, ClusterOwnership, TableHealth
from reconciler.cluster.store import TableStateStore
from reconciler.cluster.table import (
    ClusterView,
    LeaseItem,
    LeaseTable,
    Member,
    Taken,
)
from reconciler.errors import HostIdInUse, ReconcilerError
from reconciler.metrics import Metrics

log = structlog.get_logger("reconciler.cluster")

HANDOVER_GRACE = 8.0  # a handed-over app's deploy under way gets this long to finish
PUBLISHED_HISTORY = 5  # history entries in the status the owner publishes for the others
EXPIRY_SLACK = 0.05  # seconds after a member's expiry that the look for it is made
PUBLISH_PER_ROUND = 25  # statuses written per round: a daemon that just took many apps
# publishes them over a few rounds instead of queueing the other daemons' takes behind them
TAKE_BATCH = 8  # leases acquired at once


class Tenant(Protocol):
    """What the manager tells the daemon whose apps it shares out."""

    def app_names(self) -> list[str]:
        """The apps of the config in force."""

    async def take(self, name: str) -> None:
        """Run the app here: its lease was just won (its state adopted)."""

    async def give_up(self, name: str, *, grace: float) -> None:
        """Stop running the app: its lease was handed over (`grace` for a deploy under way)
        or lost (0: the fence already bars its writes)."""

    def busy(self, name: str) -> bool:
        """Whether the app is between a build and the end of its rollout (a handover waits)."""

    def nudge(self, name: str) -> None:
        """Another daemon passed on a nudge for the app."""

    def sync(self, name: str) -> None:
        """Another daemon passed on a sync for the app."""

    def local_document(self, name: str) -> dict[str, Any] | None:
        """The app's status as this daemon runs it, for the other daemons' /status."""


class Relay:
    """What crosses between the apps held here and the table each round: the nudges and
    syncs the other daemons wrote for them, and the statuses published for the others."""

    def __init__(
        self,
        *,
        table: LeaseTable,
        leases: Leases,
        host_id: str,
        tenant: Tenant,
        health: TableHealth,
    ) -> None:
        self._table = table
        self.leases = leases
        self.host_id = host_id
        self._tenant = tenant
        self._health = health
        self._seen: dict[str, tuple[int, int]] = {}  # app -> (nudges, syncs) acted on
        self._published: dict[str, dict[str, Any]] = {}

    def taken(self, app: str, item: LeaseItem | None) -> None:
        """The app was just taken: what its counters said then is already acted on."""
        self._seen[app] = (item.nudges, item.syncs) if item is not None else (0, 0)

    def forget(self, app: str) -> None:
        self._published.pop(app, None)
        self._seen.pop(app, None)

    def pass_on(self, view: ClusterView) -> None:
        """Tell the tenant of the nudges and syncs written for its apps since the last look."""
        for app in self.leases.held:
            item = view.leases.get(app)
            if item is None:
                continue
            nudges, syncs = self._seen.get(app, (item.nudges, item.syncs))
            if item.syncs > syncs:
                log.info("sync_received", app=app)
                self._tenant.sync(app)
            elif item.nudges > nudges:
                self._tenant.nudge(app)
            self._seen[app] = (item.nudges, item.syncs)

    async def publish(self) -> None:
        """Write what the apps held here are doing, for the other daemons' /status."""
        # Apps never published yet go first, so a busy app cannot hold the others back.
        held = sorted(self.leases.held.items(), key=lambda pair: pair[0] in self._published)
        written = 0
        for app, lease in held:
            if written >= PUBLISH_PER_ROUND:
                return
            document = self._tenant.local_document(app)
            if document is None:
                continue
            document["history"] = document.get("history", [])[:PUBLISHED_HISTORY]
            if self._published.get(app) == document or not self.leases.valid(app):
                continue
            written += 1
            try:
                await self._table.publish_status(
                    app, me=self.host_id, version=lease.version, status=document
                )
            except ReconcilerError as exc:
                self._health.failed("publish", exc)
                return
            self._published[app] = document


class LeaseManager:
    def __init__(
        self,
        *,
        ownership: ClusterOwnership,
        table: LeaseTable,
        store: TableStateStore,
        tenant: Tenant,
        url: str,
        metrics: Metrics,
        health: TableHealth,
        adopt_feedback: Callable[[str, str | None], None] | None = None,
        look_every: float = LOOK_EVERY,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.ownership = ownership
        self.host_id = ownership.host_id
        self.url = url
        self.ttl = ownership.ttl
        self.leases = ownership.leases
        self._table = table
        self.store = store
        self._tenant = tenant
        self._metrics = metrics
        self._health = health
        self._look_every = look_every
        self._clock = clock
        self._wall = wall
        self._started_at = wall()
        self._heartbeat_tried: float | None = None
        self._heartbeat_every = self.ttl / 3
        self._beating = False  # heartbeats run on their own task (run())
        self._lapsed: set[str] = set()  # leases dropped by a lapse whose loops still run
        self._lapse_found_at = float("-inf")
        # With feedback on: the record the app's previous owner kept, handed over before
        # the app's loop starts here.
        self._adopt_feedback = adopt_feedback
        self._rounds = 0
        self._beats = 0  # heartbeats sent: the member record changes with each
        self._joined = False  # the member item is this process's (identity.py)
        self._relay = Relay(
            table=table, leases=self.leases, host_id=self.host_id, tenant=tenant, health=health
        )

    # The round ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: heartbeats on their own clock (a round that takes many apps
        never delays one past the TTL), and a round every `look_every`."""
        await self._join()
        await self._heartbeat()
        self._beating = True
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._beat(), name="heartbeat")
                group.create_task(self._look(), name="look")
        except* HostIdInUse as lost:
            # Said as itself, not inside a group: the daemon exits 2 on it.
            raise lost.exceptions[0] from None

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._until_heartbeat())
            await self._heartbeat()
            self._expire_if_stale()

    async def _look(self) -> None:
        while True:
            started = self._clock()
            await self.round()
            await asyncio.sleep(self._until_next_look(started))

    def _until_next_look(self, started: float) -> float:
        """The next look is due `look_every` after this one began, or just after another
        daemon's heartbeat runs out if that comes first: a dead daemon's apps are taken
        the moment they may be, not up to a look later. (A live daemon renews long before,
        so this costs nothing in steady state.)"""
        now = self._clock()
        wait = started + self._look_every - now
        expiry = self.ownership.liveness.next_expiry(now=now)
        if expiry is not None:
            wait = min(wait, expiry + EXPIRY_SLACK)
        return max(0.02, wait)

    def _until_heartbeat(self) -> float:
        beat = self._heartbeat_tried
        if beat is None:  # the last one failed: again soon, each failure brings expiry closer
            return min(self._look_every, self._heartbeat_every)
        return max(0.02, beat + self._heartbeat_every - self._clock())

    async def round(self) -> None:
        self._rounds += 1
        if not self._beating and self._heartbeat_tried is None:
            await self._join()
            await self._heartbeat()  # a round run on its own (run() heartbeats beside it)
        self._expire_if_stale()
        await self._after_lapse()
        started = self._clock()
        try:
            view = await self._table.view()
        except ReconcilerError as exc:
            self._health.failed("view", exc)
            return
        self._health.recovered("view")
        self.ownership.saw(view, ended=self._clock())
        await self._confirm(view, started)
        # Judged as of the request's start: the view shows each record as it was at some
        # moment after it, so a member counted dead had been silent at least that long.
        live = self.ownership.liveness.live(now=started)
        if self.leases.heartbeat_at is not None and self.host_id not in live:
            live.append(self.host_id)
        wanted = assign(self._tenant.app_names(), live)
        handed = await self._hand_over(wanted)
        await self._release_strays(view, wanted, skip=handed)
        # The first round only announces this daemon: daemons started together see each
        # other before any takes apps, so they do not take everything and hand it back. A
        # daemon whose own heartbeat is not current takes nothing: it may count as dead.
        if self._rounds > 1 and self._member_valid():
            await self._take(view, wanted, live)
        self._relay.pass_on(view)
        await self._relay.publish()
        self._metrics.leases_held.set(len(self.leases.held))

    async def _heartbeat(self) -> None:
        now = self._clock()
        if (
            self._heartbeat_tried is not None
            and now - self._heartbeat_tried < self._heartbeat_every
        ):
            return
        self._heartbeat_tried = now
        self._beats += 1
        try:
            mine = await self._table.heartbeat(self._member())
        except ReconcilerError as exc:
            self._health.failed("heartbeat", exc)
            self._heartbeat_tried = None  # tried again soon, not a third of the TTL later
            return
        if not mine:
            # Another process writes under this host id: it counted this one dead and
            # took its identity. Sharing it would run apps twice; this daemon stops.
            self._lapse()
            other = await self._table.member(self.host_id)
            raise (
                in_use(other)
                if other is not None
                else HostIdInUse(f"host_id {self.host_id!r} was taken by another daemon")
            )
        self._health.recovered("heartbeat")
        previous = self.leases.heartbeat_at
        # Judged by when the answer came back: a heartbeat that landed late may have
        # landed after the others counted this daemon dead.
        if previous is not None and self._clock() - previous >= self.ttl - self.leases.margin:
            # The others may have counted this daemon dead in the gap and taken its apps
            # (a view of ours need not show it yet). Every lease stops counting before the
            # new heartbeat could make one look valid again; the next round stops their
            # loops, and takes them again afresh.
            self._lapse()
        self.leases.heartbeat_at = now

    async def _join(self) -> None:
        if not self._joined:
            await join(self._table, self._member(), ttl=self.ttl, clock=self._clock)
            self._joined = True

    def _member(self) -> Member:
        return Member(
            host_id=self.host_id,
            expires_at=self._wall() + self.ttl,
            url=self.url,
            started_at=self._started_at,
            instance=self.ownership.instance,
            beat=self._beats,
        )

    def _expire_if_stale(self) -> None:
        """Once the last heartbeat is older than the TTL minus the margin, the others may
        count this daemon dead at any moment: its loops stop now, not when a heartbeat
        gets through again, so no app is ever run here and by its next owner at once."""
        if self.leases.held and self.leases.heartbeat_at is not None and not self._member_valid():
            self._lapse()

    def _lapse(self) -> None:
        self._lapsed.update(self.leases.held)
        self.leases.held.clear()
        self._lapse_found_at = self._clock()

    async def _after_lapse(self) -> None:
        if not self._lapsed:
            return
        lapsed, self._lapsed = sorted(self._lapsed), set()
        log.warning("leases_lapsed", apps=lapsed)
        for app in lapsed:
            await self._drop(app, grace=0)

    async def _confirm(self, view: ClusterView, started: float) -> None:
        for app, held in list(self.leases.held.items()):
            item = view.leases.get(app)
            if item is not None and item.owner == self.host_id and item.version == held.version:
                held.confirmed_at = started
                continue
            log.warning(
                "lease_lost",
                app=app,
                owner=item.owner if item else None,
                version=item.version if item else None,
            )
            await self._drop(app, grace=0)

    async def _hand_over(self, wanted: dict[str, str]) -> set[str]:
        """Give up the apps that now belong to another daemon (once idle); those given."""
        configured = set(self._tenant.app_names())
        handed = set()
        for app, held in list(self.leases.held.items()):
            if app in configured and wanted.get(app) == self.host_id:
                continue
            if app in configured and self._tenant.busy(app):
                continue  # handed over once its build or rollout has ended here
            log.info("lease_handed_over", app=app, to=wanted.get(app))
            await self._drop(app, grace=HANDOVER_GRACE)
            await self._release(app, held.version)
            handed.add(app)
        return handed

    def _member_valid(self) -> bool:
        beat = self.leases.heartbeat_at
        return beat is not None and self._clock() < beat + self.ttl - self.leases.margin

    async def _release_strays(
        self, view: ClusterView, wanted: dict[str, str], *, skip: set[str]
    ) -> None:
        """Leases the table says are this daemon's though it runs no loop for them (after a
        lapse, or a restart under the same host_id) go to whoever they now belong to."""
        for app, item in view.leases.items():
            if item.owner != self.host_id or app in self.leases.held or app in skip | self._lapsed:
                continue
            if wanted.get(app) == self.host_id and self._member_valid():
                continue  # taken again below
            log.info("lease_released", app=app, to=wanted.get(app))
            await self._release(app, item.version)

    async def _take(self, view: ClusterView, wanted: dict[str, str], live: list[str]) -> None:
        due: list[tuple[str, LeaseItem | None, bool]] = []
        for app, owner in wanted.items():
            if owner != self.host_id or app in self.leases.held or app in self._lapsed:
                continue
            item = view.leases.get(app)
            previous = item.owner if item is not None else None
            if previous is not None and previous != self.host_id and previous in live:
                continue  # its owner hands it over when idle
            due.append((app, item, previous not in (None, self.host_id)))
        # A few at a time: a daemon taking over hundreds of apps has them all within a
        # few seconds, without a burst the table would throttle.
        for start in range(0, len(due), TAKE_BATCH):
            if self._lapsed or not self._member_valid():
                return  # taken up again next round, once this daemon is current
            await self._take_batch(due[start : start + TAKE_BATCH])

    async def _take_batch(self, batch: list[tuple[str, LeaseItem | None, bool]]) -> None:
        """Win the batch's leases at once, read what their apps remember in one request,
        then start their loops."""
        started = self._clock()
        versions = await asyncio.gather(*(self._win(app, item) for app, item, _ in batch))
        won = [
            (app, item, takeover, version)
            for (app, item, takeover), version in zip(batch, versions, strict=True)
            if version is not None  # None: another daemon moved first; the next view says who
        ]
        if not won:
            return
        try:
            taken: dict[str, Taken] | None = await self._table.read_taken([a for a, *_ in won])
        except ReconcilerError as exc:
            self._health.failed("adopt", exc)
            taken = None
        if taken is None or self._lapse_found_at >= started:
            # An app whose state could not be read cannot run here; and a daemon that may
            # have counted as dead while it won these leases does not use them.
            await asyncio.gather(*(self._release(app, version) for app, _, _, version in won))
            return
        for app, item, takeover, version in won:
            state = taken.get(app, Taken(memory=None, feedback=None))
            self.store.adopt(app, version=version, text=state.memory, history=state.history)
            if self._adopt_feedback is not None:
                self._adopt_feedback(app, state.feedback)
            self.leases.held[app] = Held(version=version, confirmed_at=started)
            self._relay.taken(app, item)
            if takeover:
                self._metrics.lease_takeovers_total.inc()
            log.info(
                "lease_taken",
                app=app,
                version=version,
                previous_owner=item.owner if item is not None else None,
                takeover=takeover,
            )
        await asyncio.gather(*(self._tenant.take(app) for app, *_ in won))

    async def _win(self, app: str, item: LeaseItem | None) -> int | None:
        try:
            return await self._table.acquire(app, me=self.host_id, seen=item, now=self._wall())
        except ReconcilerError as exc:
            self._health.failed("acquire", exc)
            return None

    async def _drop(self, app: str, *, grace: float) -> None:
        self.leases.held.pop(app, None)
        self._relay.forget(app)
        await self._tenant.give_up(app, grace=grace)

    async def _release(self, app: str, version: int) -> None:
        try:
            await self._table.release(app, me=self.host_id, version=version)
        except ReconcilerError as exc:
            # It runs out with this daemon's heartbeat instead, or is taken when it leaves.
            self._health.failed("release", exc)

    async def leave(self) -> None:
        """Hand every app back and leave the member list (SIGTERM): the others take the
        apps at their next look instead of after the TTL."""
        await self.ownership.close()
        held = dict(self.leases.held)
        await asyncio.gather(*(self._drop(app, grace=HANDOVER_GRACE) for app in held))
        await asyncio.gather(*(self._release(app, h.version) for app, h in held.items()))
        try:
            await self._table.leave(self._member())
        except ReconcilerError as exc:
            self._health.failed("leave", exc)
        self._metrics.leases_held.set(0)
        log.info("cluster_left", released=len(held))
