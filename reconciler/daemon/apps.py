"""The app loops this daemon runs, with their statuses: started, stopped and forgotten.

Stopping a loop lets a task-definition registration or service update that is under way
finish (bounded) and cancels the rest; a rollout in flight is left to ECS and awaited again
by the next loop. An app's status outlives a restart of its loop (a changed config), so its
history and live state stay on show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Protocol

import structlog

from reconciler.app.reporter import BUSY
from reconciler.app.state import StateStore
from reconciler.app.status import AppStatus
from reconciler.config import AppConfig
from reconciler.decisions.model import Phase
from reconciler.metrics import Metrics

log = structlog.get_logger("reconciler.supervisor")

STOP_GRACE = 8.0  # a stop takes at most 10 s: this long for a deploy under way, then cancel


class Steerable(Protocol):
    """What the daemon asks of an app's loop once it runs."""

    def nudge(self) -> None: ...

    def sync(self, *, by: str | None = None, override_freeze: str | None = None) -> None: ...

    def asked(self, *, by: str | None) -> None: ...

    async def quiesce(self, grace: float) -> None: ...


class Runnable(Steerable, Protocol):
    async def run(self) -> None: ...


class MakesLoops(Protocol):
    async def make(self, app: AppConfig, status: AppStatus) -> Runnable:
        """The app's loop, reporting into `status` (not running yet)."""


class AppLoops:
    def __init__(self, *, maker: MakesLoops, store: StateStore, metrics: Metrics) -> None:
        self._maker = maker
        self._store = store
        self._metrics = metrics
        self.statuses: dict[str, AppStatus] = {}
        self._loops: dict[str, Steerable] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    @property
    def loops(self) -> Mapping[str, Steerable]:
        return self._loops

    @property
    def alive(self) -> bool:
        """No loop has ended by itself (they never do unless something is badly wrong)."""
        return all(not t.done() for t in self._tasks.values())

    def busy(self, name: str) -> bool:
        """Whether the app is between a build and the end of its rollout here."""
        status = self.statuses.get(name)
        return status is not None and status.phase in BUSY

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        phases = [s.phase for s in self.statuses.values()]
        in_sync = sum(p is Phase.IN_SYNC for p in phases)
        failed = sum(p is Phase.FAILED for p in phases)
        busy = sum(p in BUSY for p in phases)
        return f"{len(phases)} apps: {in_sync} in sync, {busy} deploying, {failed} failed"

    async def start(self, app: AppConfig) -> None:
        """Start the app's loop (unless one runs, or the daemon is stopping)."""
        if self._closed or app.name in self._loops:
            return
        status = self.statuses.get(app.name) or AppStatus(name=app.name)
        status.promoted_from = app.promote_from or None
        self.statuses[app.name] = status
        loop = await self._maker.make(app, status)
        self._loops[app.name] = loop
        # The series exists (0) from the start, so "not in sync yet" is visible as such.
        self._metrics.app_in_sync.labels(app=app.name)
        self._tasks[app.name] = asyncio.create_task(loop.run(), name=f"app:{app.name}")
        log.info("app_started", app=app.name)

    async def stop(self, names: Iterable[str], *, grace: float = STOP_GRACE) -> None:
        names = list(names)
        loops = [self._loops.pop(n) for n in names if n in self._loops]
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

    def forget(self, name: str) -> None:
        """The app no longer runs here: its status, metrics and state in memory go."""
        self.statuses.pop(name, None)
        self._metrics.forget_app(name)
        self._store.forget(name)

    async def close(self) -> None:
        """Stop every loop; none starts from now on."""
        self._closed = True
        await self.stop(list(self._tasks))
