"""Resolve: the revision the app should run now.

An operator's rollback pin wins while the app's config is the one it was made under; then
the config's own `revision` pin; then, for an app promoted from another, the newest revision
the other app kept live for `promote_after`; otherwise git says (`paths`, or the branch head).
"""

from __future__ import annotations

from collections.abc import Callable

from reconciler.adapters.git import source_of
from reconciler.adapters.ports import GitPort
from reconciler.app.stages.context import AppSession
from reconciler.app.state import AppMemory
from reconciler.config import AppConfig
from reconciler.decisions.model import utcnow
from reconciler.decisions.promotion import promotable
from reconciler.errors import PromotionWaiting


def pinned_in(app: AppConfig, memory: AppMemory) -> str | None:
    """The revision an operator pinned the app to, if the pin still holds."""
    pin = memory.pin
    if pin is not None and pin.config_fingerprint == app.fingerprint():
        return pin.revision
    return None


def pinned(session: AppSession) -> str | None:
    return pinned_in(session.app, session.memory)


async def resolve(app: AppConfig, *, memory_of: Callable[[str], AppMemory], git: GitPort) -> str:
    """The desired revision of `app`; `memory_of` gives any app's remembered state (the
    daemon's own, or as on disk for `reconciler plan`)."""
    pin = pinned_in(app, memory_of(app.name))
    if pin is not None:
        return pin
    if app.promote_from and not app.revision:
        return promoted(app, memory_of(app.promote_from))
    return await git.resolve(source_of(app))


async def desired_revision(session: AppSession) -> str:
    session.nudges.resolved()
    return await resolve(session.app, memory_of=session.store.load, git=session.io.git)


def promoted(app: AppConfig, source: AppMemory) -> str:
    revision = promotable(source.history, now=utcnow(), after=app.promote_after)
    if revision is None:
        raise PromotionWaiting(
            f"waiting for {app.promote_from} to keep a revision live for {app.promote_after:g}s"
        )
    return revision
