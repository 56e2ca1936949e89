"""The dispatcher: events in, commit statuses, deployments and chat messages out.

It reads the event bus (a queue of its own that drops its oldest event rather than ever
slowing a pass), translates each event (translate.py), folds the result into the app's
record (record.py) and queues the work on the target's lane (lane.py): one for GitHub, one
for GitLab, one for chat, each with its own sender task, so a forge that hangs delays
nothing but itself. The config is read through a callable at each use, so a reload applies
to the next event and the next delivery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter

from reconciler.adapters.ports import GitPort
from reconciler.app.events import Event, EventBus
from reconciler.app.stages.context import source_of
from reconciler.config import AppConfig, Config, UnknownApp
from reconciler.feedback import chat, forges
from reconciler.feedback.lane import Lane, Rejected, Retry
from reconciler.feedback.record import Records, apply, first_notice
from reconciler.feedback.routing import Forge, dashboard_url, route
from reconciler.feedback.translate import Notice, Translator
from reconciler.logs import register_secret

log = structlog.get_logger("reconciler.feedback")

ForgeKey = tuple[str, str]  # app, commit
ChatKey = tuple[str, str, str, int]  # app, commit, outcome, attempt
SUBJECT_TIMEOUT = 5.0
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
        self._chat_timeout = chat_timeout
        self.sent = Counter(
            "reconciler_feedback_total",
            "Feedback deliveries (commit statuses, deployments, chat messages) by target "
            "and outcome: sent, retried, rejected (refused for good), dropped.",
            ["target", "outcome"],
            registry=registry,
        )
        self._forge_lanes: dict[str, Lane[ForgeKey]] = {
            kind: Lane(
                kind,
                self._deliver_forge,
                report=self._forge_report(kind),
                limit=queue_limit,
                retry_base=retry_base,
                retry_cap=retry_cap,
            )
            for kind in ("github", "gitlab")
        }
        self._chat: Lane[ChatKey] = Lane(
            "chat",
            self._deliver_chat,
            report=self._chat_report,
            limit=queue_limit,
            retry_base=retry_base,
            retry_cap=retry_cap,
            max_tries=chat_tries,
        )
        self._outgoing: dict[ChatKey, chat.Outgoing] = {}
        self._problems: dict[str, str] = {}
        self._retrying_since: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []

    # What operators see ------------------------------------------------------------------

    def problems(self) -> dict[str, str]:
        """What keeps feedback from arriving, by target (and repository or URL), now."""
        found = dict(self._problems)
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

    def _lanes(self) -> list[Lane[ForgeKey] | Lane[ChatKey]]:
        return [*self._forge_lanes.values(), self._chat]

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
                self._queue_owed(app.name)

    def _queue_owed(self, name: str) -> None:
        config = self._config()
        app = _app(config, name)
        forge = route(app, config) if app is not None else None
        if forge is None:
            return
        record = self._records.get(name)
        record.use_forge(forge.key)
        for entry in record.commits.values():
            if forges.owes(forge.kind, entry):
                self._forge_lanes[forge.kind].put((name, entry.sha))

    # Sharing the records with the other daemons of a cluster -----------------------------

    def mirror_records(self, mirror: Callable[[str, str], None]) -> None:
        """Hand every change of a record (app, JSON) to `mirror` as well as to its file."""
        self._records.mirror = mirror

    def adopt_record(self, name: str, text: str | None) -> None:
        """Take the record the previous owner of `name` kept (with its lease): what it
        said is not said again, and what it still owed a forge is sent from here."""
        self._records.adopt(name, text)
        if text is not None and self._workers:
            self._queue_owed(name)

    # Events ------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Translate and queue one event; never raises, never waits."""
        try:
            self._handle(event)
        except Exception:
            log.exception("feedback_event_failed", app=event.app)

    def _handle(self, event: Event) -> None:
        config = self._config()
        app = _app(config, event.app)
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
                    self._queue_notice(record.commits[intent.revision].attempt, intent)
                    changed.add(intent.revision)
            elif apply(record, intent):
                changed.add(intent.revision)
        if changed:
            self._changed(app.name, forge, changed)

    def _changed(self, name: str, forge: Forge | None, revisions: set[str]) -> None:
        """The record of `name` changed at `revisions`: write it, queue what the forge owes."""
        record = self._records.get(name)
        for gone in record.prune():
            if forge is not None and forges.owes(forge.kind, gone):
                self._forge_lanes[forge.kind].discard((name, gone.sha))
                self._count(forge.kind, "dropped")
                log.warning("feedback_dropped", target=forge.kind, app=name, commit=gone.sha)
        self._records.save(name)
        if forge is None:
            return
        for sha in revisions:
            entry = record.commits.get(sha)
            if entry is not None and forges.owes(forge.kind, entry):
                self._forge_lanes[forge.kind].put((name, sha))

    def _queue_notice(self, attempt: int, notice: Notice) -> None:
        key = (notice.app, notice.revision, notice.outcome, attempt)
        self._outgoing[key] = chat.Outgoing(notice=notice)
        self._chat.put(key)

    # Forges ------------------------------------------------------------------------------

    async def _deliver_forge(self, key: ForgeKey) -> None:
        name, sha = key
        config = self._config()
        app = _app(config, name)
        forge = route(app, config) if app is not None else None
        if app is None or forge is None:
            return  # the app, or its forge, left the config meanwhile
        record = self._records.get(name)
        record.use_forge(forge.key)
        entry = record.commits.get(sha)
        if entry is None or not forges.owes(forge.kind, entry):
            return
        job = forges.Job(
            app=name,
            forge=forge,
            entry=entry,
            token=_read_token(forge),
            target_url=dashboard_url(config, name),
            environment=app.environment_name,
            environment_url=app.url,
            ref="" if app.revision else app.branch,
            save=lambda: self._records.save(name),
        )
        await forges.deliver(self._http(), job)

    def _forge_report(self, kind: str) -> Callable[[ForgeKey, str, str], None]:
        def report(key: ForgeKey, outcome: str, reason: str) -> None:
            self._count(kind, outcome)
            where = self._project(key) or key[0]
            if outcome == "sent":
                self._recovered(kind)
                self._problems.pop(f"{kind} {where}", None)
            elif outcome == "rejected":
                self._problems[f"{kind} {where}"] = reason
                log.warning("feedback_rejected", target=kind, app=key[0], reason=reason)
            elif outcome == "retried":
                self._failing(kind, reason)
            else:
                log.warning("feedback_dropped", target=kind, app=key[0], reason=reason)

        return report

    def _project(self, key: ForgeKey) -> str | None:
        config = self._config()
        app = _app(config, key[0])
        forge = route(app, config) if app is not None else None
        return forge.project if forge is not None else None

    # Chat --------------------------------------------------------------------------------

    async def _deliver_chat(self, key: ChatKey) -> None:
        outgoing = self._outgoing.get(key)
        config = self._config()
        if outgoing is None or config.notify.urls_file is None:
            return
        notice = outgoing.notice
        app = _app(config, notice.app)
        environment = app.environment_name if app is not None else notice.app
        urls = chat.read_urls(config.notify.urls_file)
        if outgoing.message is None:
            outgoing.message = chat.render(
                notice,
                environment=environment,
                subject=await self._subject(app, notice.revision),
                dashboard=dashboard_url(config, notice.app),
            )
        failed: list[str] = []
        for index, url in enumerate(urls):
            if url in outgoing.done:
                continue
            name = chat.name_of(index, url)
            try:
                await chat.send(url, outgoing.message, within=self._chat_timeout, name=name)
            except Rejected as exc:
                outgoing.done.add(url)  # asking again will not help this URL
                self._problems[f"chat {name}"] = str(exc)
                log.warning("feedback_rejected", target="chat", url=name, reason=str(exc))
                continue
            except Retry as exc:
                self._problems[f"chat {name}"] = str(exc)
                failed.append(str(exc))
                continue
            outgoing.done.add(url)
            self._problems.pop(f"chat {name}", None)
        if failed:
            raise Retry("; ".join(failed))

    def _chat_report(self, key: ChatKey, outcome: str, reason: str) -> None:
        self._count("chat", outcome)
        if outcome == "retried":
            self._failing("chat", reason)
            return
        self._outgoing.pop(key, None)
        if outcome == "sent":
            self._recovered("chat")
            self._problems.pop("chat urls_file", None)
            self._problems.pop("chat dropped", None)
        elif outcome == "rejected":
            self._problems["chat urls_file"] = reason
            log.warning("feedback_rejected", target="chat", app=key[0], reason=reason)
        else:
            self._problems["chat dropped"] = f"a message about {key[0]} was dropped: {reason}"
            log.warning("feedback_dropped", target="chat", app=key[0], reason=reason)

    async def _subject(self, app: AppConfig | None, sha: str) -> str:
        if self.git is None or app is None:
            return ""
        try:
            return await asyncio.wait_for(
                self.git.commit_subject(source_of(app), sha), SUBJECT_TIMEOUT
            )
        except Exception as exc:
            # A message without the subject beats no message.
            log.info("feedback_subject_unavailable", app=app.name, error=str(exc)[:200])
            return ""

    # Shared ------------------------------------------------------------------------------

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

    def _count(self, target: str, outcome: str) -> None:
        self.sent.labels(target=target, outcome=outcome).inc()

    def _failing(self, target: str, reason: str) -> None:
        since = self._retrying_since.setdefault(target, time.time())
        first = target not in self._problems
        stamp = time.strftime("%H:%M:%S", time.gmtime(since))
        self._problems[target] = f"retrying since {stamp} UTC: {reason}"
        if first:
            log.warning("feedback_retrying", target=target, reason=reason)

    def _recovered(self, target: str) -> None:
        if self._retrying_since.pop(target, None) is not None:
            log.info("feedback_recovered", target=target)
        self._problems.pop(target, None)


def _app(config: Config, name: str) -> AppConfig | None:
    """The app's config; None when the config no longer has it (a reload took it out)."""
    try:
        return config.app(name)
    except UnknownApp:
        return None


def _read_token(forge: Forge) -> str:
    """The forge's token, read now (a rotated token applies at once)."""
    section = f"[{forge.kind}].token_file"
    try:
        token = forge.token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise Rejected(f"cannot read {section} {forge.token_file}: {exc}") from None
    if not token:
        raise Rejected(f"{section} {forge.token_file} is empty")
    register_secret(token)
    return token
