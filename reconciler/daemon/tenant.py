"""The daemon as the lease manager sees it: the apps it may be given, and what the manager
tells it when it wins, hands over or loses a lease and when another daemon passed on a nudge
or sync."""

from __future__ import annotations

from typing import Any

from reconciler.daemon.apps import AppLoops
from reconciler.daemon.in_force import InForce
from reconciler.daemon.view import StatusView


class Tenancy:
    def __init__(self, *, in_force: InForce, apps: AppLoops, view: StatusView) -> None:
        self._in_force = in_force
        self._apps = apps
        self._view = view

    def app_names(self) -> list[str]:
        return self._in_force.app_names()

    async def take(self, name: str) -> None:
        """Start the loop of an app whose lease this daemon just won (its state adopted)."""
        app = self._in_force.app(name)
        if app is not None:
            await self._apps.start(app)

    async def give_up(self, name: str, *, grace: float) -> None:
        """Stop the app's loop: a lease handed over (`grace` for a deploy under way) or lost
        (0: the fence already bars its writes). Its status here goes with it."""
        await self._apps.stop([name], grace=grace)
        self._apps.forget(name)

    def busy(self, name: str) -> bool:
        """Whether the app is between a build and the end of its rollout here (a handover
        waits for that)."""
        return self._apps.busy(name)

    def nudge(self, name: str) -> None:
        loop = self._apps.loops.get(name)
        if loop is not None:
            loop.nudge()

    def sync(self, name: str) -> None:
        loop = self._apps.loops.get(name)
        if loop is not None:
            loop.sync()

    def local_document(self, name: str) -> dict[str, Any] | None:
        """The app's status as this daemon runs it, for the other daemons' /status."""
        status = self._view.status_of(name)
        return None if status is None else status.to_json()
