"""The admin listener's guard: every request needs an identity, and every state change is
audited, accepted or refused.

In order, for each request: a `Host` that does not name the listener is 421; `/healthz`,
`/readyz`, `/login` and the static files are open; any other request without an identity is
401 (a browser asking for a page is sent to `/login`); a state change whose `Origin` is
another site's is 403. Handlers then ask `allowed(request, action, app)`, which answers 404
for an app outside the identity's globs and 403 for an action its role lacks. A state change
writes one audit line with who, from where, what and how it ended (`accepted`, or
`refused: <status> <why>`), whatever ended it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from reconciler.adapters.audit import AuditEntry, AuditTrail
from reconciler.api.auth import COOKIE, UNSAFE_METHODS, Gate
from reconciler.api.face import Handler
from reconciler.decisions.access import Action, Identity, Verdict, decide, sees

log = structlog.get_logger("reconciler.http")

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/login"})
# The caller's Identity, or None; what a handler says the request was, for its audit line.
IDENTITY: web.RequestKey[Identity | None] = web.RequestKey("identity")
AUDITED: web.RequestKey[tuple[str, str | None, dict[str, Any]]] = web.RequestKey("audited", tuple)


@dataclass(frozen=True)
class Access:
    gate: Gate
    audit: AuditTrail
    listening: Callable[[], str]  # host:port the admin listener is bound to
    public_url: Callable[[], str]  # the config's daemon.public_url, as in force now


ACCESS: web.AppKey[Access] = web.AppKey("access")


def identity_of(request: web.Request) -> Identity | None:
    return request.get(IDENTITY)


def audited_as(request: web.Request, action: str, app: str | None, **args: Any) -> None:
    """Name the request in its audit line (a handler says what it was asked to do)."""
    request[AUDITED] = (action, app, args)


def allowed(
    request: web.Request, action: Action, app: str | None = None, **args: Any
) -> web.Response | None:
    """None when the caller may do `action` (to `app`, with `args`, as the audit line will
    say); else the answer to give."""
    if action.changes_state:
        audited_as(request, action.label, app, **args)
    verdict = decide(identity_of(request), action, app)
    if verdict is Verdict.ALLOWED:
        return None
    if verdict is Verdict.HIDDEN:
        return _json(404, f"unknown app {app!r}")
    if verdict is Verdict.FORBIDDEN:
        who = identity_of(request)
        role = who.role if who is not None else "nobody"
        return _json(403, f"a {role} may not {action.label.replace('_', ' ')}")
    return _json(401, "an identity is required: a bearer token, a session or a trusted proxy")


def may(request: web.Request, action: Action, app: str | None = None) -> bool:
    return decide(identity_of(request), action, app) is Verdict.ALLOWED


def visible_to(request: web.Request, app: str) -> bool:
    who = identity_of(request)
    return who is not None and sees(who, app)


def _json(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _wants_page(request: web.Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = request.app[ACCESS]
    host_named = access.gate.host_allowed(
        request, listening=access.listening(), public_url=access.public_url()
    )
    # Nobody is identified on a request to another name: a page rebound to this address
    # must not ride on a browser's session.
    request[IDENTITY] = access.gate.identify(request) if host_named else None
    if request.method not in UNSAFE_METHODS:
        if not host_named:
            return _misdirected(request)
        return await _read(request, handler)
    response: web.StreamResponse | None = None
    try:
        if not host_named:
            response = _misdirected(request)
        elif not access.gate.origin_allowed(request, public_url=access.public_url()):
            response = _json(403, "a state change from another site's page is not allowed")
        elif identity_of(request) is None and request.path not in OPEN_PATHS:
            response = _json(401, "an identity is required: a bearer token or a session")
        else:
            response = await handler(request)
        return response
    except web.HTTPException as exc:
        response = exc
        raise
    finally:
        await _audit(request, response)


def _misdirected(request: web.Request) -> web.Response:
    return _json(
        421,
        f"this listener does not answer for host {request.host!r}"
        " (a name of it goes in [auth].allowed_hosts)",
    )


async def _read(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS or request.path.startswith("/static/"):
        return await handler(request)
    if identity_of(request) is None:
        if _wants_page(request):
            raise web.HTTPSeeOther(location=request.app[ACCESS].public_url() + "/login")
        return _json(401, "an identity is required: a bearer token, a session or a trusted proxy")
    return await handler(request)


async def _audit(request: web.Request, response: web.StreamResponse | None) -> None:
    who = identity_of(request)
    named = request.match_info.get("name")
    action, app, args = request.get(AUDITED, (_action_of(request), named, {}))
    status = response.status if response is not None else 500
    result = "accepted" if status < 400 else f"refused: {status} {error_of(response)}"
    await request.app[ACCESS].audit.record(
        AuditEntry.now(
            identity=who.name if who is not None else "-",
            role=str(who.role) if who is not None else "-",
            via=who.via if who is not None else "-",
            address=request.remote or "-",
            action=action,
            app=app,
            args=args,
            result=result,
        )
    )


def _action_of(request: web.Request) -> str:
    """What a request the handlers did not name was asking for, from its path."""
    parts = [p for p in request.path.split("/") if p]
    return parts[-1][:40] if parts else "/"


def error_of(response: web.StreamResponse | None) -> str:
    """What a refusal says: its JSON `error`, else its reason phrase."""
    if isinstance(response, web.Response) and response.content_type == "application/json":
        body = response.body
        if isinstance(body, bytes | bytearray):
            try:
                message = json.loads(body).get("error")
            except (ValueError, AttributeError):
                message = None
            if isinstance(message, str):
                return message
    return response.reason if response is not None else "no answer"


def login_cookie(request: web.Request, token: str) -> web.Response | None:
    """A redirect to the dashboard that sets a session for `token`; None when it is none."""
    access = request.app[ACCESS]
    who = access.gate.identities.by_token(token)
    if who is None:
        return None
    request[IDENTITY] = who
    response = web.Response(status=303, headers={"Location": access.public_url() + "/"})
    response.set_cookie(
        COOKIE,
        access.gate.sessions.issue(token),
        max_age=int(access.gate.sessions.lifetime),
        httponly=True,
        samesite="Strict",
        secure=access.public_url().startswith("https://"),
        path="/",
    )
    return response
