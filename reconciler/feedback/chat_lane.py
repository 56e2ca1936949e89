"""Chat messages: one lane, a message per notice, each URL of the urls_file sent it once.

A message is rendered at its first try (the commit's subject comes from git, within a few
seconds or not at all); a URL that refused it for good is not asked again, one that failed
for a reason that may pass is, with the others that already took it left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from reconciler.adapters.git import source_of
from reconciler.adapters.ports import GitPort
from reconciler.config import AppConfig, Config
from reconciler.feedback import chat
from reconciler.feedback.health import Health
from reconciler.feedback.lane import Lane, Rejected, Retry
from reconciler.feedback.routing import dashboard_url
from reconciler.feedback.translate import Notice

log = structlog.get_logger("reconciler.feedback")

ChatKey = tuple[str, str, str, int]  # app, commit, outcome, attempt
SUBJECT_TIMEOUT = 5.0


class ChatLane:
    def __init__(
        self,
        *,
        config: Callable[[], Config],
        health: Health,
        git: Callable[[], GitPort | None],
        timeout: float,
        tries: int,
        queue_limit: int,
        retry_base: float,
        retry_cap: float,
    ) -> None:
        self._config = config
        self._health = health
        self._git = git
        self._timeout = timeout
        self._outgoing: dict[ChatKey, chat.Outgoing] = {}
        self.lane: Lane[ChatKey] = Lane(
            "chat",
            self._deliver,
            report=self._report,
            limit=queue_limit,
            retry_base=retry_base,
            retry_cap=retry_cap,
            max_tries=tries,
        )

    def queue(self, attempt: int, notice: Notice) -> None:
        key = (notice.app, notice.revision, notice.outcome, attempt)
        self._outgoing[key] = chat.Outgoing(notice=notice)
        self.lane.put(key)

    async def _deliver(self, key: ChatKey) -> None:
        outgoing = self._outgoing.get(key)
        config = self._config()
        if outgoing is None or config.notify.urls_file is None:
            return
        notice = outgoing.notice
        app = config.app(notice.app)
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
                await chat.send(url, outgoing.message, within=self._timeout, name=name)
            except Rejected as exc:
                outgoing.done.add(url)  # asking again will not help this URL
                self._health.problem(f"chat {name}", str(exc))
                log.warning("feedback_rejected", target="chat", url=name, reason=str(exc))
                continue
            except Retry as exc:
                self._health.problem(f"chat {name}", str(exc))
                failed.append(str(exc))
                continue
            outgoing.done.add(url)
            self._health.solved(f"chat {name}")
        if failed:
            raise Retry("; ".join(failed))

    def _report(self, key: ChatKey, outcome: str, reason: str) -> None:
        self._health.count("chat", outcome)
        if outcome == "retried":
            self._health.failing("chat", reason)
            return
        self._outgoing.pop(key, None)
        if outcome == "sent":
            self._health.recovered("chat")
            self._health.solved("chat urls_file")
            self._health.solved("chat dropped")
        elif outcome == "rejected":
            self._health.problem("chat urls_file", reason)
            log.warning("feedback_rejected", target="chat", app=key[0], reason=reason)
        else:
            self._health.problem("chat dropped", f"a message about {key[0]} was dropped: {reason}")
            log.warning("feedback_dropped", target="chat", app=key[0], reason=reason)

    async def _subject(self, app: AppConfig | None, sha: str) -> str:
        git = self._git()
        if git is None or app is None:
            return ""
        try:
            return await asyncio.wait_for(git.commit_subject(source_of(app), sha), SUBJECT_TIMEOUT)
        except Exception as exc:
            # A message without the subject beats no message.
            log.info("feedback_subject_unavailable", app=app.name, error=str(exc)[:200])
            return ""
