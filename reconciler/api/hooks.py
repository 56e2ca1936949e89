"""The webhook listener (`daemon.listen`): the one socket a forge must reach.

It answers `POST /hooks/github`, `POST /hooks/gitlab` and `GET /healthz`, and nothing else
(404). A webhook is an untrusted nudge: it is authenticated, parsed, and at most makes the
matching apps start a pass now; no SHA from a payload is ever deployed. Its body is read
within a deadline, and at most a few are read at once before their signature is checked, so
a flood of slow or large unsigned bodies costs bounded memory and no other request's time.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from reconciler import logs
from reconciler.api.face import DAEMON, STEERING, DaemonView, Steering, error, healthz, json_errors
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

log = structlog.get_logger("reconciler.http")

DELIVERIES: web.AppKey[OrderedDict[str, None]] = web.AppKey("deliveries")
UNVERIFIED: web.AppKey[asyncio.Semaphore] = web.AppKey("unverified_bodies")
DELIVERY_MEMORY = 1024  # replayed X-GitHub-Delivery ids remembered (bounded)
BODY_DEADLINE = 10.0  # seconds a sender has to deliver a whole body
UNVERIFIED_AT_ONCE = 16  # bodies read at once before their signature is checked


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
    """The body, at most `limit` bytes, within BODY_DEADLINE, while at most
    UNVERIFIED_AT_ONCE are being read (a busy listener answers 503 rather than queue)."""
    check_body_size(size=request.content_length, limit=limit)
    slots = request.app[UNVERIFIED]
    if slots.locked():
        raise WebhookRejected(503, "busy", "too many webhook bodies being read; try again")
    async with slots:
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_DEADLINE):
                async for chunk in request.content.iter_chunked(65536):
                    body.extend(chunk)
                    check_body_size(size=len(body), limit=limit)
        except TimeoutError:
            raise WebhookRejected(
                408, "slow_body", f"the body did not arrive within {BODY_DEADLINE:g}s"
            ) from None
    return bytes(body)


def _rejected(provider: str, request: web.Request, exc: WebhookRejected) -> web.Response:
    daemon = request.app[DAEMON]
    daemon.metrics.webhook_requests_total.labels(provider=provider, outcome=exc.reason).inc()
    log.warning("webhook_rejected", provider=provider, reason=exc.reason, status=exc.status)
    return error(exc.status, str(exc))


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


def build_webhook_app(daemon: DaemonView, steering: Steering) -> web.Application:
    # Our own body limit applies; aiohttp's must not cut in first.
    app = web.Application(
        middlewares=[json_errors],
        client_max_size=daemon.config.webhook.max_body_bytes + 1,
    )
    app[DAEMON] = daemon
    app[STEERING] = steering
    app[DELIVERIES] = OrderedDict()
    app[UNVERIFIED] = asyncio.Semaphore(UNVERIFIED_AT_ONCE)
    app.router.add_post("/hooks/github", github_hook)
    app.router.add_post("/hooks/gitlab", gitlab_hook)
    app.router.add_get("/healthz", healthz)
    return app
