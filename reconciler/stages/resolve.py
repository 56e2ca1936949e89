"""Resolve: the revision the app should run now.

An operator's rollback pin wins while the app's config is the one it was made under; then
the config's own `revision` pin; then, for an app promoted from another, the newest revision
the other app kept live for `promote_after`; otherwise git says (`paths`, or the branch head).
"""

from __future__ import annotations

from reconciler.errors import PromotionWaiting
from reconciler.model import utcnow
from reconciler.promotion import promotable
from reconciler.stages.context import AppSession


def pinned(session: AppSession) -> str | None:
    """The revision an operator pinned the app to, if the pin still holds."""
    pin = session.memory.pin
    if pin is not None and pin.config_fingerprint == session.app.fingerprint():
        return pin.revision
    return None


async def desired_revision(session: AppSession) -> str:
    session.nudges.resolved()
    pin = pinned(session)
    if pin is not None:
        return pin
    app = session.app
    if app.promote_from and not app.revision:
        return promoted(session)
    return await session.io.git.resolve(session.source)


def promoted(session: AppSession) -> str:
    app = session.app
    history = session.store.load(app.promote_from).history
    revision = promotable(history, now=utcnow(), after=app.promote_after)
    if revision is None:
        raise PromotionWaiting(
            f"waiting for {app.promote_from} to keep a revision live for "
            f"{app.promote_after:g}s"
        )
    return revision
