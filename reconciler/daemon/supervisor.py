"""One running daemon's app side, put together from its parts: the app loops (apps.py), the
view the HTTP layer reads (view.py), the steering it asks for (steering.py), the tenant the
lease manager tells what to run (tenant.py), the reload applier (applier.py) and the
promotion follower (promotions.py).

Made once the adapters, the state store and the cluster's ownership exist, so each part gets
its collaborators when it is built. Alone, a daemon starts every app's loop here; with a
cluster, none: the lease manager hands over the apps this daemon wins.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from reconciler.adapters.ports import GitPort
from reconciler.app.events import EventBus
from reconciler.app.state import StateStore
from reconciler.daemon.applier import ReloadApplier
from reconciler.daemon.apps import AppLoops, MakesLoops
from reconciler.daemon.in_force import InForce
from reconciler.daemon.keys_metrics import FourKeysCollector
from reconciler.daemon.ownership import Ownership
from reconciler.daemon.promotions import PromotionFollower
from reconciler.daemon.records import Releases
from reconciler.daemon.steering import Steering
from reconciler.daemon.tenant import Tenancy
from reconciler.daemon.view import StatusView
from reconciler.metrics import Metrics


class Supervisor:
    def __init__(
        self,
        *,
        in_force: InForce,
        maker: MakesLoops,
        ownership: Ownership,
        store: StateStore,
        git: GitPort,
        metrics: Metrics,
        bus: EventBus,
        feedback_status: Callable[[], dict[str, Any]],
    ) -> None:
        self._in_force = in_force
        self._ownership = ownership
        self.apps = AppLoops(maker=maker, store=store, metrics=metrics)
        releases = Releases(in_force=in_force, ownership=ownership, store=store)
        metrics.registry.register(FourKeysCollector(releases))
        self.view = StatusView(
            in_force=in_force,
            apps=self.apps,
            ownership=ownership,
            git=git,
            metrics=metrics,
            bus=bus,
            feedback_status=feedback_status,
            releases=releases,
        )
        self.steering = Steering(
            in_force=in_force, apps=self.apps, ownership=ownership, store=store
        )
        self.tenant = Tenancy(in_force=in_force, apps=self.apps, view=self.view)
        self.reload = ReloadApplier(
            in_force=in_force, apps=self.apps, ownership=ownership, metrics=metrics, git=git
        )
        self._follower = PromotionFollower(in_force=in_force, apps=self.apps, bus=bus)
        self._following: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the loop of every app this daemon runs now, and follow promotions."""
        for app in self._in_force.config.apps:
            if self._ownership.holds(app.name):
                await self.apps.start(app)
        self._following = asyncio.create_task(self._follower.run(), name="promotions")

    async def stop(self) -> None:
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
        await self.apps.close()
