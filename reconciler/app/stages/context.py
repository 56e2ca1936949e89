"""What a pass works with: the app's long-lived session and the one pass's context.

`AppSession` outlives passes (the app, its ports, its store and reporter, the nudge count,
the critical section around a deploy); `PassContext` is one pass: the revision it works on,
when it started, what it observed. Stages take a PassContext and tell its reporter what
happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.adapters.git import GitSource, source_of
from reconciler.adapters.ports import Adapters
from reconciler.aio.backoff import Timings
from reconciler.app.reporter import Reporter
from reconciler.app.state import AppMemory, StateStore
from reconciler.config import AppConfig
from reconciler.decisions.definitions import DesiredDefinition
from reconciler.decisions.freeze import FreezeWindow
from reconciler.decisions.model import Observation, utcnow


@dataclass
class Nudges:
    """Nudges counted, not flagged: a nudge that arrives while git is asked, or during a
    registration, must still be seen by the next look ("has the remote moved since?")."""

    count: int = 0
    seen_at_resolve: int = 0
    # Set by a nudge; a rollout watch sleeps on it so a newer revision is noticed at once.
    during_rollout: asyncio.Event = field(default_factory=asyncio.Event)

    def bump(self) -> None:
        self.count += 1
        self.during_rollout.set()

    def resolved(self) -> None:
        self.seen_at_resolve = self.count

    @property
    def since_resolve(self) -> bool:
        return self.count != self.seen_at_resolve


@dataclass(frozen=True)
class Registration:
    """A task definition registered for (live task definition, image) whose UpdateService has
    not succeeded yet: a retry reuses it instead of registering one more revision."""

    live: str
    image: str
    arn: str
    definition: str = ""  # with `definitions`: the fingerprint of what was registered


@dataclass(frozen=True)
class PromotionSource:
    """The app a promoted app follows, and the seams that reach its account's registry."""

    app: AppConfig
    io: Adapters


@dataclass
class AppSession:
    app: AppConfig
    io: Adapters
    store: StateStore
    report: Reporter
    timings: Timings
    build_slots: asyncio.Semaphore
    poll_interval: float
    nudges: Nudges = field(default_factory=Nudges)
    # Held around the attempt record, RegisterTaskDefinition and UpdateService: a stop waits
    # for it, so a reload or shutdown never leaves a registration without its service update.
    critical: asyncio.Lock = field(default_factory=asyncio.Lock)
    registration: Registration | None = None
    promotion: PromotionSource | None = None
    # False once ECS refused the service deployments API for this app (access denied):
    # its rollouts are judged by the deployments list from then on, and that is said once.
    service_deployments_usable: bool = True
    # The freeze windows of the config in force (read at each pass, so a reload applies).
    freezes: Callable[[], Sequence[FreezeWindow]] = tuple
    # An admin's override of a freeze for the next release (its reason), until a pass uses
    # it or ends without needing it.
    override_freeze: str | None = None
    # When the loop must look again whatever the poll interval says (a freeze's end).
    wake_at: datetime | None = None

    @property
    def source(self) -> GitSource:
        return source_of(self.app)

    @property
    def memory(self) -> AppMemory:
        return self.store.load(self.app.name)

    async def save(self) -> bool:
        """Write the app's memory through, with the stages of the release under way;
        False when the store refused (reported)."""
        self.memory.timeline = self.report.release_stages()
        ok = await self.store.save(self.app.name)
        self.report.state_unwritable(self.store.write_error(self.app.name))
        return ok


@dataclass
class PassContext:
    session: AppSession
    revision: str
    started_at: datetime = field(default_factory=utcnow)
    observation: Observation | None = None
    # With `definitions`: the files of this revision, rendered for its image.
    definition: DesiredDefinition | None = None
    # The fingerprint of the definition this pass registered (its rollout, once it
    # succeeds, marks it as live).
    registered_definition: str | None = None

    @property
    def app(self) -> AppConfig:
        return self.session.app

    @property
    def io(self) -> Adapters:
        return self.session.io

    @property
    def report(self) -> Reporter:
        return self.session.report

    @property
    def memory(self) -> AppMemory:
        return self.session.memory

    @property
    def observed(self) -> Observation:
        assert self.observation is not None, "observe runs first"
        return self.observation
