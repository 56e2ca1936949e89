"""Commit statuses and deployments: one lane per forge kind, fed from the apps' records.

A key is (app, commit); what to send is read from the record when the lane gets to it, so
the newest state wins and a key queued twice costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import structlog

from reconciler.config import Config
from reconciler.feedback import forges
from reconciler.feedback.health import Health
from reconciler.feedback.lane import Lane, Rejected
from reconciler.feedback.record import Records
from reconciler.feedback.routing import Forge, dashboard_url, route
from reconciler.logs import register_secret

log = structlog.get_logger("reconciler.feedback")

ForgeKey = tuple[str, str]  # app, commit
KINDS = ("github", "gitlab")


class ForgeLanes:
    def __init__(
        self,
        *,
        config: Callable[[], Config],
        records: Records,
        health: Health,
        http: Callable[[], aiohttp.ClientSession],
        queue_limit: int,
        retry_base: float,
        retry_cap: float,
    ) -> None:
        self._config = config
        self._records = records
        self._health = health
        self._http = http
        self.lanes: dict[str, Lane[ForgeKey]] = {
            kind: Lane(
                kind,
                self._deliver,
                report=self._report(kind),
                limit=queue_limit,
                retry_base=retry_base,
                retry_cap=retry_cap,
            )
            for kind in KINDS
        }

    def forge_of(self, name: str) -> Forge | None:
        config = self._config()
        app = config.app(name)
        return route(app, config) if app is not None else None

    def queue_owed(self, name: str) -> None:
        """Queue every commit of `name` whose forge state is behind its record."""
        forge = self.forge_of(name)
        if forge is None:
            return
        record = self._records.get(name)
        record.use_forge(forge.key)
        for entry in record.commits.values():
            if forges.owes(forge.kind, entry):
                self.lanes[forge.kind].put((name, entry.sha))

    def changed(self, name: str, forge: Forge | None, revisions: set[str]) -> None:
        """The record of `name` changed at `revisions`: write it, queue what the forge owes."""
        record = self._records.get(name)
        for gone in record.prune():
            if forge is not None and forges.owes(forge.kind, gone):
                self.lanes[forge.kind].discard((name, gone.sha))
                self._health.count(forge.kind, "dropped")
                log.warning("feedback_dropped", target=forge.kind, app=name, commit=gone.sha)
        self._records.save(name)
        if forge is None:
            return
        for sha in revisions:
            entry = record.commits.get(sha)
            if entry is not None and forges.owes(forge.kind, entry):
                self.lanes[forge.kind].put((name, sha))

    async def _deliver(self, key: ForgeKey) -> None:
        name, sha = key
        config = self._config()
        app = config.app(name)
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

    def _report(self, kind: str) -> Callable[[ForgeKey, str, str], None]:
        def report(key: ForgeKey, outcome: str, reason: str) -> None:
            self._health.count(kind, outcome)
            forge = self.forge_of(key[0])
            where = f"{kind} {forge.project if forge is not None else key[0]}"
            if outcome == "sent":
                self._health.recovered(kind)
                self._health.solved(where)
            elif outcome == "rejected":
                self._health.problem(where, reason)
                log.warning("feedback_rejected", target=kind, app=key[0], reason=reason)
            elif outcome == "retried":
                self._health.failing(kind, reason)
            else:
                log.warning("feedback_dropped", target=kind, app=key[0], reason=reason)

        return report


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
