"""Starts, reloads and stops the app loops; the only holder of state shared across apps.

It answers what the HTTP layer asks (statuses, readiness, nudges, sync) and applies a new
config: added apps start, removed apps stop, changed apps restart their loop. Stopping a
loop lets a task-definition registration or service update that is under way finish
(bounded) and cancels the rest; a rollout in flight is left to ECS and awaited again by the
next loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from reconciler.adapters.accounts import Account, account_of
from reconciler.adapters.git import source_of
from reconciler.adapters.ports import Adapters, EcrPort, EcsPort, HousekeepingPort
from reconciler.aio import backoff
from reconciler.api.webhooks import Nudged, PushEvent, matches
from reconciler.app.events import EventBus, Finished
from reconciler.app.loop import AppLoop
from reconciler.app.reporter import BUSY, Reporter
from reconciler.app.stages.context import PromotionSource
from reconciler.app.state import FileStateStore, StateStore
from reconciler.app.status import AppStatus
from reconciler.cluster.fenced import Fence, FencedEcs, FencedHousekeeping
from reconciler.config import AppConfig, Config
from reconciler.decisions.model import Phase, Pin, Result, utcnow
from reconciler.decisions.pins import rollback_target
from reconciler.errors import NotForwarded, ReconcilerError
from reconciler.metrics import Metrics

log = structlog.get_logger("reconciler.supervisor")

STOP_GRACE = 8.0  # a stop takes at most 10 s: this long for a deploy under way, then cancel


class AccountClients(Protocol):
    """Opens (once) the ECS and ECR clients of an account and region."""

    async def clients(self, account: Account) -> tuple[EcsPort, EcrPort]: ...

    async def housekeeping(self, account: Account) -> HousekeepingPort: ...


class Cluster(Protocol):
    """The daemons sharing the apps (cluster/manager.py); absent when this daemon is alone."""

    def holds(self, name: str) -> bool:
        """Whether this daemon holds the app's lease now."""

    def fence(self, name: str) -> Fence:
        """What the app's AWS writes ask before they go out."""

    def ownership(self, name: str) -> dict[str, Any]:
        """`owner` (host id or None), `lease_age_seconds`, `here` for the app's status."""

    def elsewhere(self, name: str) -> str | None:
        """The daemon that owns the app when it is not this one, as "host-id (url)"."""

    def remote_status(self, name: str) -> dict[str, Any] | None:
        """The owner's last published status of an app this daemon does not hold."""

    async def read_statuses(self) -> None:
        """Bring what the owners published up to date (briefly; it may keep the last)."""

    async def forward(self, name: str, what: str) -> None:
        """Ask the app's owner, through the table, for a pass ("nudges") or a sync ("syncs");
        NotForwarded when the table did not take it."""


class Steerable(Protocol):
    """What the supervisor needs of an app's loop."""

    def nudge(self) -> None: ...

    def sync(self) -> None: ...

    async def quiesce(self, grace: float) -> None: ...


@dataclass
class ConfigInForce:
    path: str | None
    sha256: str
    loaded_at: datetime = field(default_factory=utcnow)
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "loaded_at": self.loaded_at.isoformat().replace("+00:00", "Z"),
            "last_error": self.last_error,
        }


class Supervisor:
    def __init__(
        self,
        *,
        config: Config,
        sha256: str = "",
        config_path: str | None = None,
        timings: backoff.Timings | None = None,
        metrics: Metrics | None = None,
        store: StateStore | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.config = config
        self.bus = bus or EventBus()
        # Where commit statuses and chat messages stand (problems, backlog); the daemon that
        # sends them sets this.
        self.feedback_status: Callable[[], dict[str, Any]] = dict
        self.config_in_force = ConfigInForce(path=config_path, sha256=sha256)
        self.timings = timings or backoff.Timings()
        self.metrics = metrics or Metrics()
        self.statuses: dict[str, AppStatus] = {}
        self.loops: dict[str, Steerable] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._adapters: Adapters | None = None
        self._accounts: AccountClients | None = None
        self._follower: asyncio.Task[None] | None = None
        self._store = store or FileStateStore(config.daemon.state_dir)
        self._build_slots = asyncio.Semaphore(config.daemon.max_concurrent_builds)
        self.cluster: Cluster | None = None

    # Queries used by the HTTP layer ------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every app of the config in force has been observed at least once."""
        return not self.waiting_for()

    def waiting_for(self) -> list[str]:
        """The apps this daemon runs that it has not observed once yet (an app just added by
        a reload too); with a cluster, only the apps whose lease it holds."""
        return [
            name
            for name in self.app_names()
            if self._runs_here(name)
            and (name not in self.statuses or not self.statuses[name].observed)
        ]

    def _runs_here(self, name: str) -> bool:
        return self.cluster is None or self.cluster.holds(name)

    @property
    def alive(self) -> bool:
        return all(not t.done() for t in self._tasks.values())

    def app_names(self) -> list[str]:
        return [a.name for a in self.config.apps]

    def status_of(self, name: str) -> AppStatus | None:
        """The app's status as this daemon runs it (None when unknown or owned elsewhere)."""
        if name not in self.app_names() or not self._runs_here(name):
            return None
        return self.statuses.get(name)

    def app_document(self, name: str) -> dict[str, Any] | None:
        """The app's status for /status: this daemon's own, or what its owner published;
        with a cluster, who owns it and for how long. None for an app not in the config."""
        if name not in self.app_names():
            return None
        status = self.status_of(name)
        if status is not None:
            document = status.to_json()
        elif self.cluster is not None:
            # Pending until its owner has said something (or while nobody holds it).
            document = self.cluster.remote_status(name) or AppStatus(name=name).to_json()
        else:
            document = AppStatus(name=name).to_json()
        if self.cluster is not None:
            document.update(self.cluster.ownership(name))
        return document

    async def refresh_remote(self) -> None:
        """Before a /status or a page: the statuses other daemons published, read fresh
        (not at all while this daemon runs every app itself)."""
        if self.cluster is not None and not all(map(self._runs_here, self.app_names())):
            await self.cluster.read_statuses()

    def status_document(self) -> dict[str, Any]:
        documents = (self.app_document(n) for n in self.app_names())
        return {
            "apps": [d for d in documents if d is not None],
            "config": self.config_in_force.to_json(),
            "feedback": self.feedback_status(),
        }

    def owner_elsewhere(self, name: str) -> str | None:
        """Who reconciles the app when another daemon does (rollback and unpin go there)."""
        return None if self.cluster is None else self.cluster.elsewhere(name)

    async def nudge_matching(self, event: PushEvent) -> Nudged:
        """Nudge every app that tracks the pushed branch: its loop here, or its owner
        through the lease table."""
        nudged: list[str] = []
        elsewhere: list[str] = []
        for app in self.config.apps:
            if not matches(event, repo_url=app.repo, branch=app.branch):
                continue
            if app.name in self.loops:
                self.loops[app.name].nudge()
                nudged.append(app.name)
            elif self.cluster is not None:
                elsewhere.append(app.name)
        reached = await asyncio.gather(*(self._forwarded(name) for name in elsewhere))
        nudged += [name for name, told in zip(elsewhere, reached, strict=True) if told]
        unreached = [name for name, told in zip(elsewhere, reached, strict=True) if not told]
        if nudged:
            log.info("webhook_nudged", apps=nudged)
        if unreached:
            # The owners' next poll of git finds the push all the same.
            log.warning("webhook_nudge_not_forwarded", apps=unreached)
        return Nudged(apps=nudged, not_forwarded=unreached)

    async def _forwarded(self, name: str) -> bool:
        """Whether the lease table took a nudge for the owner of `name` (not held here)."""
        assert self.cluster is not None
        try:
            await self.cluster.forward(name, "nudges")
        except NotForwarded:
            return False
        return True

    async def sync(self, name: str) -> bool:
        """Clear the app's Failed hold and start a pass (at its owner, with a cluster); False
        if it has no loop right now (unknown, or restarting after a config change).
        NotForwarded when its owner is another daemon and the lease table did not take the
        sync: unlike a nudge, nothing else would clear the hold."""
        loop = self.loops.get(name)
        if loop is None:
            if self.cluster is None or self.cluster.holds(name):
                return False
            await self.cluster.forward(name, "syncs")
            log.info("sync_forwarded", app=name)
            return True
        log.info("sync_requested", app=name)
        loop.sync()
        return True

    async def commit_subject(self, name: str, revision: str) -> str | None:
        """The subject of `revision` in app `name`'s repository, from its mirror (no network
        call); None when it cannot be read there (not fetched yet, or not running)."""
        app = next((a for a in self.config.apps if a.name == name), None)
        if app is None or self._adapters is None:
            return None
        try:
            return await self._adapters.git.commit_subject(source_of(app), revision)
        except ReconcilerError:
            return None

    async def rollback(self, name: str, revision: str | None) -> str | None:
        """Pin the app to an earlier successful revision (the one before the live one by
        default) and start a pass; None when it has no loop right now."""
        loop, app = (
            self.loops.get(name),
            next((a for a in self.config.apps if a.name == name), None),
        )
        if loop is None or app is None:
            return None
        memory = self._store.load(name)
        live = self.statuses[name].live_image if name in self.statuses else None
        live_revision = live.rsplit(":", 1)[-1] if live else None
        target = rollback_target(memory.history, live_revision=live_revision, requested=revision)
        memory.pin = Pin(revision=target, config_fingerprint=app.fingerprint())
        await self._store.save(name)
        log.warning("rollback_pinned", app=name, revision=target)
        loop.nudge()
        return target

    async def unpin(self, name: str) -> bool | None:
        """Back to following git; whether there was a pin. None when it has no loop now."""
        loop = self.loops.get(name)
        if loop is None:
            return None
        memory = self._store.load(name)
        was = memory.pin is not None
        memory.pin = None
        await self._store.save(name)
        log.info("unpinned", app=name, was_pinned=was)
        loop.nudge()
        return was

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        phases = [s.phase for s in self.statuses.values()]
        in_sync = sum(p is Phase.IN_SYNC for p in phases)
        failed = sum(p is Phase.FAILED for p in phases)
        busy = sum(p in BUSY for p in phases)
        return f"{len(phases)} apps: {in_sync} in sync, {busy} deploying, {failed} failed"

    # Running -------------------------------------------------------------------------------

    async def start(
        self,
        adapters: Adapters,
        *,
        accounts: AccountClients | None = None,
        cluster: Cluster | None = None,
        store: StateStore | None = None,
    ) -> None:
        """Start every app's loop; `accounts` opens clients for apps in another region or
        account (with a role) than the daemon's own `[aws]`. With a `cluster`, no app starts
        here: the cluster hands over the apps this daemon wins (take) and loses (give_up),
        and `store` (the cluster's table) keeps their state."""
        self._adapters = adapters
        if store is not None:
            self._store = store
        self._accounts = accounts
        self.cluster = cluster
        if cluster is None:
            for app in self.config.apps:
                await self._start_app(app)
        self._follower = asyncio.create_task(self._nudge_followers(), name="promotions")

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self._stop_apps(list(self._tasks))
        self._adapters = None

    async def _nudge_followers(self) -> None:
        """When an app deploys, the apps promoted from it look again once that revision has
        been live their `promote_after` (they poll too; this makes them prompt)."""
        events = self.bus.subscribe()
        loop = asyncio.get_running_loop()
        try:
            while True:
                event = await events.get()
                if not isinstance(event, Finished) or event.result is not Result.DEPLOYED:
                    continue
                for app in self.config.apps:
                    if app.promote_from == event.app:
                        loop.call_later(app.promote_after + 0.5, self._nudge, app.name)
        finally:
            self.bus.unsubscribe(events)

    def _nudge(self, name: str) -> None:
        steerable = self.loops.get(name)
        if steerable is not None:
            steerable.nudge()

    async def take(self, name: str) -> None:
        """Start the loop of an app whose lease this daemon just won (its state adopted)."""
        app = next((a for a in self.config.apps if a.name == name), None)
        if app is not None and name not in self.loops and self._adapters is not None:
            await self._start_app(app)

    async def give_up(self, name: str, *, grace: float) -> None:
        """Stop the app's loop: a lease handed over (`grace` for a deploy under way) or lost
        (0: the fence already bars its writes). Its status here goes with it."""
        await self._stop_apps([name], grace=grace)
        self.statuses.pop(name, None)
        self.metrics.forget_app(name)
        self._store.forget(name)

    def poke(self, name: str, what: str) -> None:
        """A nudge ("nudges") or sync ("syncs") another daemon passed on for this app."""
        loop = self.loops.get(name)
        if loop is None:
            return
        if what == "syncs":
            loop.sync()
        else:
            loop.nudge()

    def local_document(self, name: str) -> dict[str, Any] | None:
        """The app's status as this daemon runs it, for the other daemons' /status."""
        status = self.status_of(name)
        return None if status is None else status.to_json()

    def busy(self, name: str) -> bool:
        """Whether the app is between a build and the end of its rollout here (a handover
        waits for that)."""
        status = self.statuses.get(name)
        return status is not None and status.phase in BUSY

    def crashed_loop(self) -> asyncio.Task[None] | None:
        """An app loop that ended by itself (they never do unless something is badly wrong)."""
        return next((t for t in self._tasks.values() if t.done()), None)

    async def _adapters_for(self, app: AppConfig) -> Adapters:
        adapters = await self._account_adapters(app)
        if self.cluster is None:
            return adapters
        # With a cluster, the app's AWS writes go out only while this daemon holds its lease.
        fence = self.cluster.fence(app.name)
        housekeeping = adapters.housekeeping
        return dataclasses.replace(
            adapters,
            ecs=FencedEcs(adapters.ecs, fence),
            housekeeping=None if housekeeping is None else FencedHousekeeping(housekeeping, fence),
        )

    async def _account_adapters(self, app: AppConfig) -> Adapters:
        assert self._adapters is not None, "start() first"
        account = account_of(app, default_region=self.config.aws.region)
        if self._accounts is None or account == Account(region=self.config.aws.region):
            return self._adapters
        ecs, ecr = await self._accounts.clients(account)
        housekeeping = await self._accounts.housekeeping(account)
        return dataclasses.replace(self._adapters, ecs=ecs, ecr=ecr, housekeeping=housekeeping)

    async def _promotion_of(self, app: AppConfig) -> PromotionSource | None:
        source = next((a for a in self.config.apps if a.name == app.promote_from), None)
        if source is None:
            return None
        return PromotionSource(app=source, io=await self._adapters_for(source))

    async def _start_app(self, app: AppConfig) -> None:
        adapters = await self._adapters_for(app)
        status = self.statuses.get(app.name) or AppStatus(name=app.name)
        status.promoted_from = app.promote_from or None
        self.statuses[app.name] = status
        loop = AppLoop(
            app=app,
            poll_interval=self.config.daemon.poll_interval,
            adapters=adapters,
            build_slots=self._build_slots,
            store=self._store,
            reporter=Reporter(
                app=app.name, status=status, metrics=self.metrics, store=self._store, bus=self.bus
            ),
            timings=self.timings,
            promotion=await self._promotion_of(app),
        )
        self.loops[app.name] = loop
        # The series exists (0) from the start, so "not in sync yet" is visible as such.
        self.metrics.app_in_sync.labels(app=app.name)
        self._tasks[app.name] = asyncio.create_task(loop.run(), name=f"app:{app.name}")
        log.info("app_started", app=app.name)

    async def _stop_apps(self, names: Iterable[str], *, grace: float = STOP_GRACE) -> None:
        names = list(names)
        loops = [self.loops.pop(n) for n in names if n in self.loops]
        tasks = [self._tasks.pop(n) for n in names if n in self._tasks]
        if grace > 0:
            await asyncio.gather(*(loop.quiesce(grace) for loop in loops))
        for task in tasks:
            task.cancel()
        done, pending = await asyncio.wait(tasks, timeout=1.0) if tasks else (set(), set())
        for task in pending:
            log.error("app_loop_did_not_stop", task=task.get_name())
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("app_loop_crashed", task=task.get_name(), error=str(task.exception()))

    # Reload ----------------------------------------------------------------------------

    def reject(self, problems: list[str]) -> None:
        """An edit that cannot be applied: said once, the last good config keeps running."""
        self.config_in_force.last_error = "; ".join(problems)
        self.metrics.config_reloads_total.labels(outcome="invalid").inc()
        log.error(
            "config_invalid_keeping_last_good",
            problems=problems,
            config_sha256=self.config_in_force.sha256,
        )

    async def apply(self, new: Config, *, sha256: str) -> None:
        """Apply a validated config: start added apps, stop removed ones, restart changed ones."""
        old = self.config
        # The AWS clients, the HTTP socket, the state store and the Docker client are opened
        # once; [webhook] and daemon.api_token_file are read per request and apply at once.
        if old.aws != new.aws:
            log.warning("config_change_needs_restart", section="aws")
        if old.cluster != new.cluster:
            log.warning("config_change_needs_restart", section="cluster")
        fixed = ("listen", "state_dir", "docker_host", "log_format")
        moved = [k for k in fixed if getattr(old.daemon, k) != getattr(new.daemon, k)]
        if moved:
            log.warning("config_change_needs_restart", section="daemon", keys=moved)
        # A loop takes poll_interval and the build semaphore when it starts: changing either
        # restarts every app (each resumes from what git, ECS and its state say).
        everything_changed = old.daemon.poll_interval != new.daemon.poll_interval
        old_apps = {a.name: a for a in old.apps}
        new_apps = {a.name: a for a in new.apps}
        removed = [n for n in old_apps if n not in new_apps]
        changed = [
            n
            for n in new_apps
            if n in old_apps and (everything_changed or old_apps[n] != new_apps[n])
        ]
        added = [n for n in new_apps if n not in old_apps]
        if new.daemon.max_concurrent_builds != old.daemon.max_concurrent_builds:
            self._build_slots = asyncio.Semaphore(new.daemon.max_concurrent_builds)
            changed = sorted(set(new_apps) - set(added))
        self.config = new
        await self._stop_apps(removed + changed)
        for name in removed:
            self.statuses.pop(name, None)
            self.metrics.forget_app(name)
            self._store.forget(name)
        for name in changed + added:
            if self._runs_here(name):
                await self._start_app(new_apps[name])
        self.config_in_force = ConfigInForce(path=self.config_in_force.path, sha256=sha256)
        self.metrics.config_reloads_total.labels(outcome="applied").inc()
        log.info(
            "config_reloaded", added=added, removed=removed, changed=changed, config_sha256=sha256
        )
