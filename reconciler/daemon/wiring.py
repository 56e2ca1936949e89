"""An app's loop on the adapters of its own account: the daemon's own clients for an app in
the daemon's `[aws]` region and account, clients opened (once) for another region or role,
its AWS writes guarded by whoever decides that this daemon runs it (the lease, with a
cluster), and the app it is promoted from on that app's adapters."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Protocol

from reconciler.adapters.accounts import Account, account_of
from reconciler.adapters.ports import (
    Adapters,
    EcrPort,
    EcsPort,
    HousekeepingPort,
    LookupsPort,
    MetricsPort,
    SchedulesPort,
    SecretsPort,
    VerifierPort,
)
from reconciler.aio import backoff
from reconciler.app.events import EventBus
from reconciler.app.loop import AppLoop
from reconciler.app.reporter import Reporter
from reconciler.app.stages.context import PromotionSource
from reconciler.app.state import StateStore
from reconciler.app.status import AppStatus
from reconciler.config import AppConfig
from reconciler.daemon.in_force import InForce
from reconciler.daemon.ownership import Ownership
from reconciler.metrics import Metrics


class AccountClients(Protocol):
    """Opens (once) the ECS and ECR clients of an account and region."""

    async def clients(self, account: Account) -> tuple[EcsPort, EcrPort]: ...

    async def housekeeping(self, account: Account) -> HousekeepingPort: ...

    def secrets(self, account: Account) -> SecretsPort: ...

    def lookups(self, account: Account, *, env_allow: tuple[str, ...]) -> LookupsPort: ...

    def verifier(self, account: Account) -> VerifierPort: ...

    def schedules(self, account: Account) -> SchedulesPort: ...

    def metrics(self, account: Account) -> MetricsPort: ...


class LoopMaker:
    """Makes each app's AppLoop, on the clients of its account and behind its guard."""

    def __init__(
        self,
        *,
        in_force: InForce,
        adapters: Adapters,
        accounts: AccountClients,
        ownership: Ownership,
        store: StateStore,
        metrics: Metrics,
        bus: EventBus,
        timings: backoff.Timings,
    ) -> None:
        self._in_force = in_force
        self._adapters = adapters
        self._accounts = accounts
        self._ownership = ownership
        self._store = store
        self._metrics = metrics
        self._bus = bus
        self._timings = timings
        self._slots_for = in_force.config.daemon.max_concurrent_builds
        self._build_slots = asyncio.Semaphore(self._slots_for)

    async def make(self, app: AppConfig, status: AppStatus) -> AppLoop:
        config = self._in_force.config
        return AppLoop(
            app=app,
            poll_interval=config.daemon.poll_interval,
            adapters=await self._adapters_for(app),
            build_slots=self._slots(),
            store=self._store,
            reporter=Reporter(
                app=app.name, status=status, metrics=self._metrics, store=self._store, bus=self._bus
            ),
            timings=self._timings,
            promotion=await self._promotion_of(app),
            # The windows of the config in force at each pass: a reload changes them at once.
            freezes=self._in_force.config.freeze_windows,
        )

    def _slots(self) -> asyncio.Semaphore:
        """The build slots every loop shares; a reload that changes their number restarts
        every app, and the loops started from then on share new ones."""
        wanted = self._in_force.config.daemon.max_concurrent_builds
        if wanted != self._slots_for:
            self._slots_for = wanted
            self._build_slots = asyncio.Semaphore(wanted)
        return self._build_slots

    async def _adapters_for(self, app: AppConfig) -> Adapters:
        return self._ownership.guard(app.name, await self._account_adapters(app))

    async def _account_adapters(self, app: AppConfig) -> Adapters:
        config = self._in_force.config
        region = config.aws.region
        account = account_of(app, default_region=region)
        # Made afresh for each loop, so a reload that changes env_allow takes effect.
        lookups = self._accounts.lookups(account, env_allow=config.definitions.env_allow)
        verifier = self._accounts.verifier(account)
        schedules = self._accounts.schedules(account)
        metrics = self._accounts.metrics(account)
        if account == Account(region=region):
            return dataclasses.replace(
                self._adapters,
                lookups=lookups,
                verifier=verifier,
                schedules=schedules,
                metrics=metrics,
            )
        ecs, ecr = await self._accounts.clients(account)
        housekeeping = await self._accounts.housekeeping(account)
        return dataclasses.replace(
            self._adapters,
            ecs=ecs,
            ecr=ecr,
            secrets=self._accounts.secrets(account),
            housekeeping=housekeeping,
            lookups=lookups,
            verifier=verifier,
            schedules=schedules,
        )

    async def _promotion_of(self, app: AppConfig) -> PromotionSource | None:
        source = self._in_force.app(app.promote_from) if app.promote_from else None
        if source is None:
            return None
        return PromotionSource(app=source, io=await self._adapters_for(source))
