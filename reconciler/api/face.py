"""What both listeners share: the daemon as the HTTP layer sees it (DaemonView, Steering),
the keys they are kept under, and JSON errors that never leak a traceback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog
from aiohttp import web

from reconciler.api.webhooks import Nudged, PushEvent
from reconciler.app.events import EventBus
from reconciler.app.status import AppStatus
from reconciler.config import Config
from reconciler.decisions.approval import ApprovalRequest
from reconciler.decisions.model import HistoryEntry
from reconciler.metrics import Metrics

log = structlog.get_logger("reconciler.http")


class DaemonView(Protocol):
    """What the HTTP layer reads of the daemon (daemon/view.py provides it)."""

    @property
    def config(self) -> Config: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def alive(self) -> bool: ...

    @property
    def bus(self) -> EventBus: ...

    def app_names(self) -> list[str]: ...

    def waiting_for(self) -> list[str]: ...

    def status_of(self, name: str) -> AppStatus | None: ...

    def status_document(self) -> dict[str, Any]: ...

    async def commit_subject(self, name: str, revision: str) -> str | None: ...

    def app_document(self, name: str) -> dict[str, Any] | None: ...

    async def refresh_remote(self) -> None: ...

    def releases(self, name: str) -> Sequence[HistoryEntry]:
        """The app's kept releases, newest first."""

    def owner_elsewhere(self, name: str) -> str | None:
        """Who reconciles the app when another daemon of the cluster does."""


class Steering(Protocol):
    """What the HTTP layer asks the daemon to do (daemon/steering.py provides it)."""

    async def nudge_matching(self, event: PushEvent) -> Nudged: ...

    async def sync(
        self, name: str, *, by: str | None = None, override_freeze: str | None = None
    ) -> bool:
        """Clear the app's Failed hold and start a pass (with `override_freeze`, an admin's
        reason, one release goes through a freeze); False when it has no loop now.
        Raises NotForwarded."""

    async def rollback(
        self, name: str, revision: str | None, *, by: str | None = None
    ) -> str | None:
        """Pin the app to an earlier successful revision; the full SHA, None when the app
        has no loop right now. Raises RollbackRefused."""

    async def unpin(self, name: str, *, by: str | None = None) -> bool | None:
        """Back to following git; whether a pin was there, None when the app has no loop."""

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
        """Approve (or reject) the release waiting for approval; the request as it is now,
        None when the app has no loop right now. Raises ApprovalRefused."""


DAEMON: web.AppKey[DaemonView] = web.AppKey("daemon")
STEERING: web.AppKey[Steering] = web.AppKey("steering")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """404, 405 and friends answer with a JSON body, and nothing leaks a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        response = error(exc.status, exc.reason)
        response.headers.update(headers)
        return response
    except Exception:
        log.exception("http_handler_crashed", path=request.path)
        return error(500, "internal error")


async def healthz(request: web.Request) -> web.Response:
    if request.app[DAEMON].alive:
        return web.json_response({"ok": True})
    return error(503, "an app loop has stopped")
