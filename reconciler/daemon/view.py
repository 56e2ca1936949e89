"""What the HTTP layer reads of the daemon: readiness, each app's status (its own, or what
the app's owner published when another daemon of the cluster runs it), the config in force,
feedback's backlog, and commit subjects from the mirrors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reconciler.adapters.git import source_of
from reconciler.adapters.ports import GitPort
from reconciler.app.events import EventBus
from reconciler.app.status import AppStatus
from reconciler.config import Config
from reconciler.daemon.apps import AppLoops
from reconciler.daemon.in_force import InForce
from reconciler.daemon.ownership import Ownership
from reconciler.daemon.records import Releases
from reconciler.decisions.model import HistoryEntry
from reconciler.errors import ReconcilerError
from reconciler.metrics import Metrics


class StatusView:
    def __init__(
        self,
        *,
        in_force: InForce,
        apps: AppLoops,
        ownership: Ownership,
        git: GitPort,
        metrics: Metrics,
        bus: EventBus,
        feedback_status: Callable[[], dict[str, Any]],
        releases: Releases,
    ) -> None:
        self._in_force = in_force
        self._apps = apps
        self._ownership = ownership
        self._git = git
        self._metrics = metrics
        self._bus = bus
        # Where commit statuses and chat messages stand (problems, backlog).
        self._feedback_status = feedback_status
        self._releases = releases

    @property
    def config(self) -> Config:
        return self._in_force.config

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def bus(self) -> EventBus:
        return self._bus

    @property
    def alive(self) -> bool:
        return self._apps.alive

    @property
    def ready(self) -> bool:
        """Every app of the config in force has been observed at least once."""
        return not self.waiting_for()

    def waiting_for(self) -> list[str]:
        """The apps this daemon runs that it has not observed once yet (an app just added by
        a reload too); with a cluster, only the apps whose lease it holds."""
        statuses = self._apps.statuses
        return [
            name
            for name in self.app_names()
            if self._ownership.holds(name) and (name not in statuses or not statuses[name].observed)
        ]

    def app_names(self) -> list[str]:
        return self._in_force.app_names()

    def status_of(self, name: str) -> AppStatus | None:
        """The app's status as this daemon runs it (None when unknown or owned elsewhere)."""
        if name not in self.app_names() or not self._ownership.holds(name):
            return None
        return self._apps.statuses.get(name)

    def app_document(self, name: str) -> dict[str, Any] | None:
        """The app's status for /status: this daemon's own, or what its owner published;
        with a cluster, who owns it and for how long. None for an app not in the config."""
        if name not in self.app_names():
            return None
        status = self.status_of(name)
        if status is not None:
            document = status.to_json()
        else:
            # Pending until its owner has said something (or while nobody holds it).
            document = self._ownership.remote_status(name) or AppStatus(name=name).to_json()
        document.update(self._ownership.ownership(name))
        return document

    async def refresh_remote(self) -> None:
        """Before a /status or a page: the statuses other daemons published, read fresh
        (not at all while this daemon runs every app itself)."""
        if not all(map(self._ownership.holds, self.app_names())):
            await self._ownership.read_statuses()

    def status_document(self) -> dict[str, Any]:
        documents = (self.app_document(n) for n in self.app_names())
        return {
            "apps": [d for d in documents if d is not None],
            "config": self._in_force.record.to_json(),
            "feedback": self._feedback_status(),
        }

    def releases(self, name: str) -> Sequence[HistoryEntry]:
        """The app's kept releases, newest first (daemon/records.py)."""
        return self._releases.of(name)

    def owner_elsewhere(self, name: str) -> str | None:
        """Who reconciles the app when another daemon does (rollback and unpin go there)."""
        return self._ownership.elsewhere(name)

    async def commit_subject(self, name: str, revision: str) -> str | None:
        """The subject of `revision` in app `name`'s repository, from its mirror (no network
        call); None when it cannot be read there (not fetched yet, or no such app)."""
        app = self._in_force.app(name)
        if app is None:
            return None
        try:
            return await self._git.commit_subject(source_of(app), revision)
        except ReconcilerError:
            return None

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        return self._apps.summary()
