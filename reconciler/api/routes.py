"""The daemon's HTTP face: webhooks, sync, status, health, metrics and the dashboard.

A webhook is an untrusted nudge. It is authenticated, parsed, and at most makes the matching
apps start a pass now; no SHA from a payload is ever deployed. The dashboard's pages
(reconciler.api.web) are mounted here too; who may sync is decided here, for the API and the
pages' sync button alike.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from reconciler import logs
from reconciler.aio.loopback import is_loopback
from reconciler.api.web import dashboard
from reconciler.api.web.links import Links
from reconciler.api.webhooks import (
    Nudged,
    PushEvent,
    WebhookRejected,
    check_body_size,
    parse_github,
    parse_gitlab,
    verify_github_signature,
    verify_gitlab_token,
)
from reconciler.app.events import EventBus
from reconciler.app.status import AppStatus
from reconciler.config import Config
from reconciler.decisions.pins import RollbackRefused
from reconciler.errors import NotForwarded
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

    def owner_elsewhere(self, name: str) -> str | None:
        """Who reconciles the app when another daemon of the cluster does."""


class Steering(Protocol):
    """What the HTTP layer asks the daemon to do (daemon/steering.py provides it)."""

    async def nudge_matching(self, event: PushEvent) -> Nudged: ...

    async def sync(self, name: str) -> bool:
        """Clear the app's Failed hold and start a pass; False when it has no loop now.
        Raises NotForwarded."""

    async def rollback(self, name: str, revision: str | None) -> str | None:
        """Pin the app to an earlier successful revision; the full SHA, None when the app
        has no loop right now. Raises RollbackRefused."""

    async def unpin(self, name: str) -> bool | None:
        """Back to following git; whether a pin was there, None when the app has no loop."""


DAEMON: web.AppKey[DaemonView] = web.AppKey("daemon")
STEERING: web.AppKey[Steering] = web.AppKey("steering")
DELIVERIES: web.AppKey[OrderedDict[str, None]] = web.AppKey("deliveries")
DELIVERY_MEMORY = 1024  # replayed X-GitHub-Delivery ids remembered (bounded)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """404, 405 and friends answer with a JSON body, and nothing leaks a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        response = _error(exc.status, exc.reason)
        response.headers.update(headers)
        return response
    except Exception:
        log.exception("http_handler_crashed", path=request.path)
        return _error(500, "internal error")


def _read_secret(path: Path | None) -> bytes | None:
    """Read per request, so a rotated secret takes effect without a restart."""
    if path is None:
        return None
    try:
        value = path.read_bytes().strip()
    except OSError:
        log.error("secret_file_unreadable", path=str(path))
        return None
    if value:
        # A rotated secret is scrubbed from logs as soon as it is in use.
        logs.register_secret(value.decode("utf-8", "replace"))
    return value or None


async def _read_body(request: web.Request, limit: int) -> bytes:
    check_body_size(size=request.content_length, limit=limit)
    body = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        body.extend(chunk)
        check_body_size(size=len(body), limit=limit)
    return bytes(body)


def _rejected(provider: str, request: web.Request, exc: WebhookRejected) -> web.Response:
    daemon = request.app[DAEMON]
    daemon.metrics.webhook_requests_total.labels(provider=provider, outcome=exc.reason).inc()
    log.warning("webhook_rejected", provider=provider, reason=exc.reason, status=exc.status)
    return _error(exc.status, str(exc))


async def github_hook(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    settings = daemon.config.webhook
    metric = daemon.metrics.webhook_requests_total
    try:
        secret = _read_secret(settings.github_secret_file)
        if secret is None:
            # Refuse before reading the body: nothing unauthenticated is parsed.
            raise WebhookRejected(401, "no_secret", "no GitHub webhook secret is configured")
        body = await _read_body(request, settings.max_body_bytes)
        verify_github_signature(
            secret=secret, body=body, header=request.headers.get("X-Hub-Signature-256")
        )
        parsed = parse_github(request.headers.get("X-GitHub-Event"), body)
    except WebhookRejected as exc:
        return _rejected("github", request, exc)
    if parsed == "ping":
        metric.labels(provider="github", outcome="ping").inc()
        return web.json_response({"ok": True})
    delivery = request.headers.get("X-GitHub-Delivery", "")
    if delivery and _seen(request.app[DELIVERIES], delivery):
        metric.labels(provider="github", outcome="replayed").inc()
        return web.json_response({"nudged": [], "replayed": True}, status=202)
    return await _nudge(request, "github", parsed)


async def gitlab_hook(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    settings = daemon.config.webhook
    try:
        token = _read_secret(settings.gitlab_token_file)
        if token is None:
            raise WebhookRejected(401, "no_secret", "no GitLab webhook token is configured")
        verify_gitlab_token(token=token, header=request.headers.get("X-Gitlab-Token"))
        body = await _read_body(request, settings.max_body_bytes)
        parsed = parse_gitlab(request.headers.get("X-Gitlab-Event"), body)
    except WebhookRejected as exc:
        return _rejected("gitlab", request, exc)
    if parsed is None:
        # GitLab disables hooks that keep failing: ignored events are still a success.
        daemon.metrics.webhook_requests_total.labels(provider="gitlab", outcome="ignored").inc()
        return web.json_response({"nudged": []}, status=200)
    return await _nudge(request, "gitlab", parsed)


def _seen(memory: OrderedDict[str, None], delivery: str) -> bool:
    if delivery in memory:
        return True
    memory[delivery] = None
    while len(memory) > DELIVERY_MEMORY:
        memory.popitem(last=False)
    return False


async def _nudge(request: web.Request, provider: str, event: PushEvent | None) -> web.Response:
    daemon = request.app[DAEMON]
    nudged = Nudged(apps=[])
    if event is not None:
        log.info(
            "push_received",
            provider=provider,
            branch=event.branch,
            deleted=event.deleted,
            after=event.after,
        )
        nudged = await request.app[STEERING].nudge_matching(event)
    outcome = "nudged" if nudged.apps or nudged.not_forwarded else "ignored"
    daemon.metrics.webhook_requests_total.labels(provider=provider, outcome=outcome).inc()
    body: dict[str, Any] = {"nudged": nudged.apps}
    if nudged.not_forwarded:
        # Still a success for the forge: a failing hook gets disabled, and the owners' next
        # poll of git finds the push without the nudge.
        body["not_forwarded"] = nudged.not_forwarded
    return web.json_response(body, status=202)


def _bearer_matches(header: str | None, token: bytes | None) -> bool:
    """`Authorization: Bearer <token>` (the scheme in any case), compared in constant time."""
    if not token or not header:
        return False
    scheme, _, offered = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # aiohttp hands over undecodable header bytes as surrogate escapes; this restores them.
    sent = offered.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(hashlib.sha256(sent).digest(), hashlib.sha256(token).digest())


def _foreign_origin(request: web.Request, daemon: DaemonView, *, loopback_only: bool) -> bool:
    """A browser's post from a page that is not the dashboard's own (a cross-site form).

    Browsers name the page a post comes from in `Origin`; API clients send none. Without a
    token a loopback peer is trusted, so the page must be on a loopback name too, or a site
    that resolves its own name to 127.0.0.1 could post from there."""
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    own = Links(daemon.config.daemon.public_url).origin
    if own is not None and origin.lower() == own:
        return False
    try:
        authority = urlsplit(origin).netloc.lower()
    except ValueError:
        return True
    if authority != request.host.lower():
        return True
    return loopback_only and not is_loopback(authority)


def sync_refusal(request: web.Request, daemon: DaemonView) -> tuple[int, str, str] | None:
    """Why `request` may not sync an app (status, reason logged, message), None if it may:
    with api_token_file, the bearer token decides; without, only loopback clients may."""
    token_file = daemon.config.daemon.api_token_file
    if token_file is not None:
        if not _bearer_matches(request.headers.get("Authorization"), _read_secret(token_file)):
            return 401, "bad_token", "a valid bearer token is required"
    elif not is_loopback(request.remote):
        message = "sync is only allowed from loopback when api_token_file is not set"
        return 403, "not_loopback", message
    if _foreign_origin(request, daemon, loopback_only=token_file is None):
        return 403, "cross_origin", "sync from another site's page is not allowed"
    return None


def may_sync(request: web.Request) -> bool:
    """Whether the dashboard offers this viewer the sync button (sync_app would accept)."""
    return sync_refusal(request, request.app[DAEMON]) is None


async def sync_app(request: web.Request) -> web.Response:
    """202 with JSON for API clients; a form posted by a browser (Accept: text/html) is sent
    back to its page with a 303, and a refusal is an HTML page with the same status."""
    daemon = request.app[DAEMON]
    page = dashboard.wants_html(request)

    def refuse(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        if page:
            return dashboard.error_page(request, status, message, headers=headers)
        return web.json_response({"error": message}, status=status, headers=headers)

    refusal = sync_refusal(request, daemon)
    if refusal is not None:
        status, reason, message = refusal
        log.warning("sync_refused", reason=reason, remote=request.remote)
        return refuse(status, message)
    name = request.match_info["name"]
    if name not in daemon.app_names():
        return refuse(404, f"unknown app {name!r}")
    try:
        started = await request.app[STEERING].sync(name)
    except NotForwarded as exc:
        log.warning("sync_not_forwarded", app=name, error=str(exc))
        return refuse(503, f"{exc}; try again", headers={"Retry-After": "5"})
    if not started:
        # Between stopping its old loop and starting the new one after a config change.
        return refuse(
            503,
            f"app {name!r} is restarting after a config change; try again",
            headers={"Retry-After": "1"},
        )
    if page:
        return await dashboard.back_after_sync(request, name)
    return web.json_response({"syncing": name}, status=202)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(reason="the body is not JSON") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="the body must be a JSON object")
    return body


def _steered_app(request: web.Request, action: str) -> str | web.Response:
    """The app a rollback or unpin names, or the refusal: the sync rules, then 404."""
    daemon = request.app[DAEMON]
    refusal = sync_refusal(request, daemon)
    if refusal is not None:
        status, reason, message = refusal
        log.warning(f"{action}_refused", reason=reason, remote=request.remote)
        return _error(status, message)
    name = request.match_info["name"]
    if name not in daemon.app_names():
        return _error(404, f"unknown app {name!r}")
    owner = daemon.owner_elsewhere(name)
    if owner is not None:
        # The pin lives in the app's state, which only its lease holder may write.
        return _error(409, f"app {name!r} is reconciled by daemon {owner}; send the {action} there")
    return name


async def rollback_app(request: web.Request) -> web.Response:
    """Pin the app to an earlier successful revision (`{"revision": ...}`, optional)."""
    name = _steered_app(request, "rollback")
    if isinstance(name, web.Response):
        return name
    requested = (await _json_body(request)).get("revision")
    if requested is not None and not isinstance(requested, str):
        return _error(400, "revision must be a string")
    try:
        pinned = await request.app[STEERING].rollback(name, requested or None)
    except RollbackRefused as exc:
        return _error(409, str(exc))
    if pinned is None:
        return _restarting(name)
    return web.json_response({"pinned": pinned, "app": name, "pinned_by": "rollback"}, status=202)


async def unpin_app(request: web.Request) -> web.Response:
    name = _steered_app(request, "unpin")
    if isinstance(name, web.Response):
        return name
    was = await request.app[STEERING].unpin(name)
    if was is None:
        return _restarting(name)
    return web.json_response({"unpinned": was, "app": name}, status=202)


def _restarting(name: str) -> web.Response:
    return web.json_response(
        {"error": f"app {name!r} is restarting after a config change; try again"},
        status=503,
        headers={"Retry-After": "1"},
    )


async def status_all(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    await daemon.refresh_remote()
    return web.json_response(daemon.status_document())


async def status_one(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    name = request.match_info["name"]
    if name in daemon.app_names():
        await daemon.refresh_remote()
    document = daemon.app_document(name)
    if document is None:
        return _error(404, f"unknown app {name!r}")
    return web.json_response(document)


async def healthz(request: web.Request) -> web.Response:
    if request.app[DAEMON].alive:
        return web.json_response({"ok": True})
    return _error(503, "an app loop has stopped")


async def readyz(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    waiting = daemon.waiting_for()
    if not waiting:
        return web.json_response({"ready": True})
    return web.json_response({"ready": False, "waiting_for": waiting}, status=503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[DAEMON].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(daemon: DaemonView, steering: Steering) -> web.Application:
    # Our own body limit applies to webhooks; aiohttp's must not cut in first.
    app = web.Application(
        # Outermost first: the pages' errors are HTML pages before json_errors sees them.
        middlewares=[json_errors, dashboard.html_errors],
        client_max_size=daemon.config.webhook.max_body_bytes + 1,
    )
    app[DAEMON] = daemon
    app[STEERING] = steering
    app[DELIVERIES] = OrderedDict()
    app.router.add_post("/hooks/github", github_hook)
    app.router.add_post("/hooks/gitlab", gitlab_hook)
    app.router.add_post("/apps/{name}/sync", sync_app)
    app.router.add_post("/apps/{name}/rollback", rollback_app)
    app.router.add_post("/apps/{name}/unpin", unpin_app)
    app.router.add_get("/status", status_all)
    app.router.add_get("/status/{name}", status_one)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    dashboard.setup(app, daemon, may_sync=may_sync)
    return app
