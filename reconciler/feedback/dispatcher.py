"""The dispatcher: events in, commit statuses, deployments and chat messages out.

It reads the event bus (a queue of its own that drops its oldest event rather than ever
slowing a pass), translates each event (translate.py), folds the result into the app's
record (record.py) and queues the work on the target's lane (lane.py): one for GitHub and
one for GitLab (forge_lanes.py), one for chat (chat_lane.py), each with its own sender task,
so a forge that hangs delays nothing but itself. The config is read through a callable at
each use, so a reload applies to the next event and the next delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

from reconciler.adapters.ports import GitPort
from reconciler.app.events import Event, EventBus
from reconciler.config import Config
from reconciler.feedback.chat_lane import ChatLane
from reconciler.feedback.forge_lanes import ForgeLanes
from reconciler.feedback.health import Health
from reconciler.feedback.lane import Lane
from reconciler.feedback.record import Records, apply, first_notice
from reconciler.feedback.routing import route
from reconciler.feedback.translate import Notice, Translator

log = structlog.get_logger("reconciler.feedback")

CLOSE_GRACE = 1.0


class Dispatcher:
    def __init__(
        self,
        *,
        config: Callable[[], Config],
        bus: EventBus,
        registry: CollectorRegistry,
        state_dir: Path | None = None,
        git: GitPort | None = None,
        retry_base: float = 1.0,
        retry_cap: float = 300.0,
        request_timeout: float = 10.0,
        chat_timeout: float = 15.0,
        chat_tries: int = 6,
        queue_limit: int = 500,
    ) -> None:
        self._config = config
        self._bus = bus
        # Subscribed now, not when run() starts: the first pass may begin before that.
        self._events = bus.subscribe()
        self._records = Records(state_dir or config().daemon.state_dir)
        self._translator = Translator()
        self.git = git  # for commit subjects in messages; set once the adapters are open
        self._request_timeout = request_timeout
        self._health = Health(registry)
        self.sent = self._health.sent
        self._forges = ForgeLanes(
            config=config,
            records=self._records,
            health=self._health,
            http=self._http,
            queue_limit=queue_limit,
            retry_base=retry_base,
            retry_cap=retry_cap,
        )
        self._chat = ChatLane(
            config=config,
            health=self._health,
            git=lambda: self.git,
            timeout=chat_timeout,
            tries=chat_tries,
            queue_limit=queue_limit,
            retry_base=retry_base,
            retry_cap=retry_cap,
        )
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []

    # What operators see ------------------------------------------------------------------

    def problems(self) -> dict[str, str]:
        """What keeps feedback from arriving, by target (and repository or URL), now."""
        found = self._health.problems()
        for app, error in self._records.write_errors.items():
            found[f"record {app}"] = error
        return dict(sorted(found.items()))

    def pending(self) -> dict[str, int]:
        """Deliveries waiting or under way, by target."""
        return {lane.target: len(lane) for lane in self._lanes()}

    # Running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Read events for ever; the senders run beside it until close()."""
        self._start()
        while True:
            self.handle(await self._events.get())

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Take the events still queued, give the senders up to `grace` seconds to deliver
        what is waiting, then stop them (what is left stays in the records)."""
        while not self._events.empty():
            self.handle(self._events.get_nowait())
        self._bus.unsubscribe(self._events)
        lanes = self._lanes()
        if self._workers and any(lane.busy for lane in lanes):
            drains = [asyncio.ensure_future(lane.drain(within=grace)) for lane in lanes]
            await asyncio.wait(drains, timeout=grace)
            for drain in drains:
                drain.cancel()
            await asyncio.gather(*drains, return_exceptions=True)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        left = {name: count for name, count in self.pending().items() if count}
        if left:
            log.warning("feedback_left_undelivered", pending=left)

    def _lanes(self) -> list[Lane[tuple[str, str]] | Lane[tuple[str, str, str, int]]]:
        return [*self._forges.lanes.values(), self._chat.lane]

    def _start(self) -> None:
        if self._workers:
            return
        for lane in self._lanes():
            self._workers.append(asyncio.create_task(lane.run(), name=f"feedback-{lane.target}"))
        self._resume()

    def _resume(self) -> None:
        """Queue what the records say a forge has yet to hear (the daemon stopped before it
        answered)."""
        for app in self._config().apps:
            if self._records.path(app.name).exists():
                self._forges.queue_owed(app.name)

    # Sharing the records with the other daemons of a cluster -----------------------------

    def mirror_records(self, mirror: Callable[[str, str], None]) -> None:
        """Hand every change of a record (app, JSON) to `mirror` as well as to its file."""
        self._records.mirror = mirror

    def adopt_record(self, name: str, text: str | None) -> None:
        """Take the record the previous owner of `name` kept (with its lease): what it
        said is not said again, and what it still owed a forge is sent from here."""
        self._records.adopt(name, text)
        if text is not None and self._workers:
            self._forges.queue_owed(name)

    # Events ------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Translate and queue one event; never raises, never waits."""
        try:
            self._handle(event)
        except Exception:
            log.exception("feedback_event_failed", app=event.app)

    def _handle(self, event: Event) -> None:
        config = self._config()
        app = config.app(event.app)
        if app is None:
            return
        forge = route(app, config)
        notify = config.notify.events if config.notify.urls_file is not None else ()
        intents = self._translator.feed(event, environment=app.environment_name, notify=notify)
        if forge is None and not notify:
            return  # nothing to tell anyone: no record either
        record = self._records.get(app.name)
        if forge is not None:
            record.use_forge(forge.key)
        changed: set[str] = set()
        for intent in intents:
            if isinstance(intent, Notice):
                if first_notice(record, intent):
                    self._chat.queue(record.commits[intent.revision].attempt, intent)
                    changed.add(intent.revision)
            elif apply(record, intent):
                changed.add(intent.revision)
        if changed:
            self._forges.changed(app.name, forge, changed)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # A forge that accepts the connection and then says nothing costs one timeout
            # per try, never a sender stuck for good.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self._request_timeout,
                    sock_connect=min(5.0, self._request_timeout),
                ),
            )
        return self._session
