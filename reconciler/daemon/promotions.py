"""When an app deploys, the apps promoted from it look again once that revision has been
live their `promote_after` (they poll too; this makes them prompt)."""

from __future__ import annotations

import asyncio

from reconciler.app.events import EventBus, Finished
from reconciler.daemon.apps import AppLoops
from reconciler.daemon.in_force import InForce
from reconciler.decisions.model import Result


class PromotionFollower:
    def __init__(self, *, in_force: InForce, apps: AppLoops, bus: EventBus) -> None:
        self._in_force = in_force
        self._apps = apps
        self._bus = bus

    async def run(self) -> None:
        """Until cancelled."""
        events = self._bus.subscribe()
        loop = asyncio.get_running_loop()
        try:
            while True:
                event = await events.get()
                if not isinstance(event, Finished) or event.result is not Result.DEPLOYED:
                    continue
                for app in self._in_force.config.apps:
                    if app.promote_from == event.app:
                        loop.call_later(app.promote_after + 0.5, self._nudge, app.name)
        finally:
            self._bus.unsubscribe(events)

    def _nudge(self, name: str) -> None:
        steerable = self._apps.loops.get(name)
        if steerable is not None:
            steerable.nudge()
