"""Resolve: the revision the app should run now.

An operator's rollback pin wins while the app's config is the one it was made under;
otherwise git says (the config's own `revision` pin, `paths`, or the branch head).
"""

from __future__ import annotations

from reconciler.stages.context import AppSession


def pinned(session: AppSession) -> str | None:
    """The revision an operator pinned the app to, if the pin still holds."""
    pin = session.memory.pin
    if pin is not None and pin.config_fingerprint == session.app.fingerprint():
        return pin.revision
    return None


async def desired_revision(session: AppSession) -> str:
    session.nudges.resolved()
    return pinned(session) or await session.io.git.resolve(session.source)
