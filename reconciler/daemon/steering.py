"""What the HTTP layer asks the daemon to do: nudge the apps a push concerns, sync, roll
back to an earlier revision, unpin, approve and reject. An app another daemon of the cluster
runs is nudged or synced through the lease table; rollback, unpin and votes go to its owner
(the HTTP layer says where)."""

from __future__ import annotations

import asyncio

import structlog

from reconciler.api.webhooks import Nudged, PushEvent, matches
from reconciler.app.state import StateStore
from reconciler.daemon.apps import AppLoops
from reconciler.daemon.in_force import InForce
from reconciler.daemon.ownership import Ownership
from reconciler.decisions.approval import ApprovalRefused, ApprovalRequest, decide
from reconciler.decisions.model import Pin, utcnow
from reconciler.decisions.pins import rollback_target
from reconciler.errors import NotForwarded

log = structlog.get_logger("reconciler.supervisor")


class Steering:
    def __init__(
        self, *, in_force: InForce, apps: AppLoops, ownership: Ownership, store: StateStore
    ) -> None:
        self._in_force = in_force
        self._apps = apps
        self._ownership = ownership
        self._store = store

    async def nudge_matching(self, event: PushEvent) -> Nudged:
        """Nudge every app that tracks the pushed branch: its loop here, or its owner
        through the lease table."""
        nudged: list[str] = []
        elsewhere: list[str] = []
        loops = self._apps.loops
        for app in self._in_force.config.apps:
            if not matches(event, repo_url=app.repo, branch=app.branch):
                continue
            if app.name in loops:
                loops[app.name].nudge()
                nudged.append(app.name)
            elif self._ownership.passes_on(app.name):
                elsewhere.append(app.name)
        reached = await asyncio.gather(*(self._forwarded(name) for name in elsewhere))
        nudged += [name for name, told in zip(elsewhere, reached, strict=True) if told]
        unreached = [name for name, told in zip(elsewhere, reached, strict=True) if not told]
        if nudged:
            log.info("webhook_nudged", apps=nudged)
        if unreached:
            # The owners' next poll of git finds the push all the same.
            log.warning("webhook_nudge_not_forwarded", apps=unreached)
        return Nudged(apps=nudged, not_forwarded=unreached)

    async def _forwarded(self, name: str) -> bool:
        """Whether the lease table took a nudge for the owner of `name` (not run here)."""
        try:
            await self._ownership.forward_nudge(name)
        except NotForwarded:
            return False
        return True

    async def sync(
        self, name: str, *, by: str | None = None, override_freeze: str | None = None
    ) -> bool:
        """Clear the app's Failed hold and start a pass (at its owner, with a cluster); False
        if it has no loop right now (unknown, or restarting after a config change).
        NotForwarded when its owner is another daemon and the lease table did not take the
        sync: unlike a nudge, nothing else would clear the hold."""
        loop = self._apps.loops.get(name)
        if loop is None:
            if self._ownership.holds(name) or override_freeze is not None:
                return False
            await self._ownership.forward_sync(name)
            log.info("sync_forwarded", app=name)
            return True
        log.info("sync_requested", app=name, by=by, override_freeze=override_freeze)
        loop.sync(by=by, override_freeze=override_freeze)
        return True

    async def rollback(
        self, name: str, revision: str | None, *, by: str | None = None
    ) -> str | None:
        """Pin the app to an earlier successful revision (the one before the live one by
        default) and start a pass; None when it has no loop right now."""
        loop, app = self._apps.loops.get(name), self._in_force.app(name)
        if loop is None or app is None:
            return None
        memory = self._store.load(name)
        status = self._apps.statuses.get(name)
        live = status.live_image if status is not None else None
        live_revision = live.rsplit(":", 1)[-1] if live else None
        target = rollback_target(memory.history, live_revision=live_revision, requested=revision)
        memory.pin = Pin(revision=target, config_fingerprint=app.fingerprint(), asked_by=by)
        await self._store.save(name)
        log.warning("rollback_pinned", app=name, revision=target, by=by)
        loop.asked(by=by)
        return target

    async def unpin(self, name: str, *, by: str | None = None) -> bool | None:
        """Back to following git; whether there was a pin. None when it has no loop now."""
        loop = self._apps.loops.get(name)
        if loop is None:
            return None
        memory = self._store.load(name)
        was = memory.pin is not None
        memory.pin = None
        await self._store.save(name)
        log.info("unpinned", app=name, was_pinned=was, by=by)
        loop.asked(by=by)
        return was

    async def vote(
        self,
        name: str,
        *,
        approve: bool,
        revision: str,
        digest: str | None,
        comment: str,
        by: str,
    ) -> ApprovalRequest | None:
        """Add `by`'s approval or rejection to the release of the app waiting for one and
        start a pass, which goes on or holds it; None when the app has no loop right now.
        Raises ApprovalRefused (403: not an approver; 409: nothing waits for what it names)."""
        loop, app = self._apps.loops.get(name), self._in_force.app(name)
        if loop is None or app is None:
            return None
        if app.approval is None:
            raise ApprovalRefused(409, f"app {name!r} needs no approval ([apps.approval])")
        memory = self._store.load(name)
        request = decide(
            memory.approval,
            app=name,
            by=by,
            approvers=app.approval.approvers,
            revision=revision,
            digest=digest,
            comment=comment,
            approve=approve,
            now=utcnow(),
        )
        if request != memory.approval:
            memory.approval = request
            if not await self._store.save(name):
                # The pass acts on it from memory; a restart before the disk takes it would
                # ask again, so the caller hears it.
                log.error("vote_unwritten", app=name, error=self._store.write_error(name))
        log.warning(
            "approved" if approve else "rejected",
            app=name,
            revision=request.revision,
            digest=request.digest,
            by=by,
            comment=comment,
        )
        loop.asked(by=by)
        return request
