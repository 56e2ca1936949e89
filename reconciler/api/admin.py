"""The admin listener (`daemon.admin_listen`): status, pages, events, metrics, actions, the
audit log and the login page. Every request passes the guard (guard.py) first; each handler
then asks whether the caller may do what it asks, for the app it names.
"""

from __future__ import annotations

import json
import re
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from reconciler.adapters.audit import AuditEntry
from reconciler.api.face import DAEMON, STEERING, DaemonView, Steering, error, healthz, json_errors
from reconciler.api.guard import (
    ACCESS,
    Access,
    allowed,
    audited_as,
    error_of,
    guard,
    identity_of,
    login_cookie,
    may,
    visible_to,
)
from reconciler.api.report import report
from reconciler.api.web import dashboard
from reconciler.decisions.access import Action, Role
from reconciler.decisions.approval import MAX_COMMENT, ApprovalRefused
from reconciler.decisions.pins import RollbackRefused
from reconciler.errors import NotForwarded

log = structlog.get_logger("reconciler.http")

AUDIT_LIMIT = 500  # entries /audit answers at most, the newest


def _who(request: web.Request) -> str | None:
    who = identity_of(request)
    return who.name if who is not None else None


async def sync_app(request: web.Request) -> web.Response:
    """202 with JSON for API clients; a form posted by a browser (Accept: text/html) is sent
    back to its page with a 303, and a refusal is an HTML page with the same status."""
    daemon = request.app[DAEMON]
    page = dashboard.wants_html(request)

    def refuse(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        if page:
            return dashboard.error_page(request, status, message, headers=headers)
        return web.json_response({"error": message}, status=status, headers=headers)

    name = request.match_info["name"]
    if request.content_type == "application/json":
        # `{"override_freeze": true, "reason": ...}`: an admin lets one release through a
        # freeze (SPEC 21), audited with the reason.
        body = await _json_body(request)
        if body.get("override_freeze"):
            return await _override_freeze(request, body.get("reason"))
    refusal = allowed(request, Action.SYNC, name)
    if refusal is not None:
        log.warning("sync_refused", app=name, status=refusal.status, remote=request.remote)
        return refuse(refusal.status, error_of(refusal))
    if name not in daemon.app_names():
        return refuse(404, f"unknown app {name!r}")
    try:
        started = await request.app[STEERING].sync(name, by=_who(request))
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


MAX_REASON = 200


async def _override_freeze(request: web.Request, reason: object) -> web.Response:
    """A sync that lets one release of the app through a freeze: admins only, with a reason
    (printable, at most MAX_REASON characters), at the app's owner only (the lease table
    does not carry the reason)."""
    name = request.match_info["name"]
    if not isinstance(reason, str) or not reason.strip():
        audited_as(request, Action.OVERRIDE_FREEZE.label, name)
        return error(400, "an override of a freeze needs a reason")
    if len(reason) > MAX_REASON or not reason.isprintable():
        audited_as(request, Action.OVERRIDE_FREEZE.label, name, reason=reason[:MAX_REASON])
        return error(400, f"the reason must be printable text of at most {MAX_REASON} characters")
    steered = _steered_app(request, Action.OVERRIDE_FREEZE, reason=reason)
    if isinstance(steered, web.Response):
        return steered
    started = await request.app[STEERING].sync(name, by=_who(request), override_freeze=reason)
    if not started:
        return _restarting(name)
    return web.json_response({"syncing": name, "override_freeze": reason}, status=202)


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


def _steered_app(request: web.Request, action: Action, **args: Any) -> str | web.Response:
    """The app a rollback or unpin names, or the refusal: identity and role, then 404."""
    daemon = request.app[DAEMON]
    name = request.match_info["name"]
    refusal = allowed(request, action, name, **args)
    if refusal is not None:
        log.warning(f"{action.label}_refused", app=name, status=refusal.status)
        return refusal
    if name not in daemon.app_names():
        return error(404, f"unknown app {name!r}")
    owner = daemon.owner_elsewhere(name)
    if owner is not None:
        # The pin lives in the app's state, which only its lease holder may write.
        return error(
            409, f"app {name!r} is reconciled by daemon {owner}; send the {action.label} there"
        )
    return name


async def rollback_app(request: web.Request) -> web.Response:
    """Pin the app to an earlier successful revision (`{"revision": ...}`, optional)."""
    requested = (await _json_body(request)).get("revision")
    if requested is not None and not isinstance(requested, str):
        audited_as(request, Action.ROLLBACK.label, request.match_info["name"])
        return error(400, "revision must be a string")
    name = _steered_app(request, Action.ROLLBACK, revision=requested or "")
    if isinstance(name, web.Response):
        return name
    try:
        pinned = await request.app[STEERING].rollback(name, requested or None, by=_who(request))
    except RollbackRefused as exc:
        return error(409, str(exc))
    if pinned is None:
        return _restarting(name)
    return web.json_response({"pinned": pinned, "app": name, "pinned_by": "rollback"}, status=202)


async def unpin_app(request: web.Request) -> web.Response:
    name = _steered_app(request, Action.UNPIN)
    if isinstance(name, web.Response):
        return name
    was = await request.app[STEERING].unpin(name, by=_who(request))
    if was is None:
        return _restarting(name)
    return web.json_response({"unpinned": was, "app": name}, status=202)


MAX_REVISION = 64  # a SHA-256 object name; anything longer is not a revision


async def approve_app(request: web.Request) -> web.Response:
    """`{"revision", "digest"?, "comment"?}`: approve the release waiting for approval."""
    return await _vote(request, approve=True)


async def reject_app(request: web.Request) -> web.Response:
    """`{"revision", "digest"?, "comment"?}`: reject it; the revision is held."""
    return await _vote(request, approve=False)


async def _vote(request: web.Request, *, approve: bool) -> web.Response:
    """An operator of the app whom its `approvers` name votes on the release waiting for
    approval, naming its revision (and digest): audited with both and the comment; a vote
    for anything else is 409 naming what waits. At the app's owner only (the vote lives in
    the app's state, which only its lease holder writes)."""
    action = Action.APPROVE if approve else Action.REJECT
    page = request.content_type == "application/x-www-form-urlencoded"
    # The app page's forms post as a form (the session cookie is SameSite=Strict and the
    # guard checks Origin, as for the sync form); API clients post JSON.
    body = dict(await request.post()) if page else await _json_body(request)
    if page and not body.get("digest"):
        body.pop("digest", None)
    revision, digest, comment = body.get("revision"), body.get("digest"), body.get("comment", "")
    if not (
        isinstance(revision, str)
        and 0 < len(revision) <= MAX_REVISION
        and (digest is None or (isinstance(digest, str) and len(digest) <= 2 * MAX_REVISION + 8))
        and isinstance(comment, str)
    ):
        audited_as(request, action.label, request.match_info["name"])
        return error(
            400,
            'the body is {"revision": SHA, "digest": "sha256:..." (optional), '
            '"comment": TEXT (optional)}',
        )
    args = {"revision": revision, "digest": digest or "", "comment": comment[:MAX_COMMENT]}
    name = _steered_app(request, action, **args)
    if isinstance(name, web.Response):
        return name
    who = identity_of(request)
    assert who is not None, "the guard lets no anonymous state change through"
    try:
        voted = await request.app[STEERING].vote(
            name, approve=approve, revision=revision, digest=digest, comment=comment, by=who.name
        )
    except ApprovalRefused as exc:
        log.warning(f"{action.label}_refused", app=name, status=exc.status, error=str(exc))
        return error(exc.status, str(exc))
    if voted is None:
        return _restarting(name)
    if page:
        return web.Response(status=303, headers={"Location": dashboard.app_url(request, name)})
    answer = {
        "app": name,
        "revision": voted.revision,
        "digest": voted.digest,
        "required": voted.required,
        "approvals": [v.by for v in voted.approvals],
        "approved": voted.approved,
        "rejected_by": voted.rejected.by if voted.rejected is not None else None,
    }
    return web.json_response(answer, status=202)


def _restarting(name: str) -> web.Response:
    return web.json_response(
        {"error": f"app {name!r} is restarting after a config change; try again"},
        status=503,
        headers={"Retry-After": "1"},
    )


async def status_all(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    await daemon.refresh_remote()
    document = dict(daemon.status_document())
    document["apps"] = [a for a in document.get("apps", []) if visible_to(request, a["name"])]
    return web.json_response(document)


async def status_one(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    name = request.match_info["name"]
    if not visible_to(request, name):
        return error(404, f"unknown app {name!r}")
    if name in daemon.app_names():
        await daemon.refresh_remote()
    document = daemon.app_document(name)
    if document is None:
        return error(404, f"unknown app {name!r}")
    return web.json_response(document)


async def readyz(request: web.Request) -> web.Response:
    """Open to all, so an anonymous probe learns only whether the daemon is ready; which of
    its apps it still waits for is said to those who may see them."""
    waiting = request.app[DAEMON].waiting_for()
    if not waiting:
        return web.json_response({"ready": True})
    body: dict[str, Any] = {"ready": False}
    if identity_of(request) is not None:
        body["waiting_for"] = [name for name in waiting if visible_to(request, name)]
    return web.json_response(body, status=503)


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text; an identity whose globs do not cover every app sees only the
    samples of its own apps and those of no app."""
    text = request.app[DAEMON].metrics.render().decode()
    who = identity_of(request)
    if who is not None and who.role is not Role.ADMIN and "*" not in who.apps:
        text = (
            "\n".join(line for line in text.splitlines() if _sample_visible(request, line)) + "\n"
        )
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE_LATEST})


_APP_LABEL = re.compile(r'[{,]app="((?:[^"\\]|\\.)*)"')


def _sample_visible(request: web.Request, line: str) -> bool:
    found = _APP_LABEL.search(line)
    return found is None or visible_to(request, found.group(1))


async def audit(request: web.Request) -> web.Response:
    """The audit log's newest entries (`?app=NAME` for one app's), those of the caller's apps."""
    refusal = allowed(request, Action.READ)
    if refusal is not None:
        return refusal
    app = request.query.get("app") or None
    if app is not None and not visible_to(request, app):
        return error(404, f"unknown app {app!r}")
    who = identity_of(request)
    entries = await request.app[ACCESS].audit.read(app=app, limit=AUDIT_LIMIT)
    shown = [
        e
        for e in entries
        if (e.app is None and who is not None and who.role is Role.ADMIN)
        or (e.app is not None and visible_to(request, e.app))
    ]
    return web.json_response({"entries": [json.loads(e.to_line()) for e in shown]})


async def login_page(request: web.Request) -> web.Response:
    """The form; `?token=` (the link the daemon logs once) logs in at once, audited."""
    token = request.query.get("token")
    if token:
        answer = login_cookie(request, token)
        await _record_login(request, accepted=answer is not None)
        if answer is not None:
            return answer
        return _login_form(request, "That token is not known here.", status=401)
    return _login_form(request, "")


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    token = str(form.get("token", "")).strip()
    audited_as(request, "login", None)
    answer = login_cookie(request, token) if token else None
    if answer is None:
        return _login_form(request, "That token is not known here.", status=401)
    return answer


async def logout(request: web.Request) -> web.Response:
    audited_as(request, "logout", None)
    answer = web.Response(
        status=303, headers={"Location": request.app[ACCESS].public_url() + "/login"}
    )
    answer.del_cookie("reconciler_session", path="/")
    return answer


def _login_form(request: web.Request, message: str, *, status: int = 200) -> web.Response:
    return dashboard.render(
        request, "login.html", {"message": message, "events_url": ""}, status=status
    )


async def _record_login(request: web.Request, *, accepted: bool) -> None:
    who = identity_of(request)
    await request.app[ACCESS].audit.record(
        AuditEntry.now(
            identity=who.name if who is not None else "-",
            role=str(who.role) if who is not None else "-",
            via="token",
            address=request.remote or "-",
            action="login",
            app=None,
            result="accepted" if accepted else "refused: 401 unknown token",
        )
    )


def build_admin_app(daemon: DaemonView, steering: Steering, access: Access) -> web.Application:
    app = web.Application(
        # Outermost first: the guard answers before anything else looks at the request; the
        # pages' errors are HTML pages before json_errors sees them.
        middlewares=[json_errors, guard, dashboard.html_errors],
        client_max_size=64 * 1024,
    )
    app[DAEMON] = daemon
    app[STEERING] = steering
    app[ACCESS] = access
    app.router.add_post("/apps/{name}/sync", sync_app)
    app.router.add_post("/apps/{name}/rollback", rollback_app)
    app.router.add_post("/apps/{name}/unpin", unpin_app)
    app.router.add_post("/apps/{name}/approve", approve_app)
    app.router.add_post("/apps/{name}/reject", reject_app)
    app.router.add_get("/status", status_all)
    app.router.add_get("/status/{name}", status_one)
    app.router.add_get("/audit", audit)
    app.router.add_get("/report", report)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    dashboard.setup(
        app,
        daemon,
        may_sync=lambda request: may(request, Action.SYNC),
        sees=visible_to,
        changes=lambda name: access.audit.read(app=name, limit=dashboard.CHANGES_SHOWN),
    )
    return app
