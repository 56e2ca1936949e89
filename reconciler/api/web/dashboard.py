"""The dashboard: server-rendered pages of every app, served whole by the daemon.

    GET /                 every app: phase, desired revision, live image, since, last error
    GET /apps/{name}      one app, with its history and its full last error
    GET /events           phase changes as Server-Sent Events (stream.py)
    GET /static/...       the stylesheet and the small script that applies those events

With a lease table, every daemon of the cluster shows every app: those it runs from memory,
the others as their owner last published them, with the owner named.

The pages work without JavaScript; the script only updates phases in place. Everything shown
is escaped (autoescape), and the Content-Security-Policy allows scripts, styles and requests
from the daemon itself only, so no inline script can run even if something slipped through.
Whether a page offers the sync button is decided by the same rule as POST /apps/{name}/sync,
handed in by the HTTP layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from reconciler.adapters.audit import AuditEntry
from reconciler.api.web import charts, stream
from reconciler.api.web.links import Links
from reconciler.api.web.present import Owner, app_view, owner_of, revisions_of
from reconciler.app.events import EventBus
from reconciler.app.status import AppStatus
from reconciler.config import Config
from reconciler.decisions.four_keys import four_keys
from reconciler.decisions.model import HistoryEntry, utcnow

log = structlog.get_logger("reconciler.web")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
PAGE = "dashboard."  # route names of the HTML pages start with this
SUBJECT_WAIT = 1.0  # seconds a page waits for the commit subjects it has not read before
SUBJECT_MEMORY = 4096  # commit subjects remembered
CHART_DAYS = 7  # the window of the pages' four-key charts (the report and metrics add 30)


class DashboardSource(Protocol):
    """What the pages read of the daemon (the HTTP layer's DaemonView provides it)."""

    @property
    def config(self) -> Config: ...

    @property
    def bus(self) -> EventBus: ...

    def app_names(self) -> list[str]: ...

    def status_of(self, name: str) -> AppStatus | None: ...

    def app_document(self, name: str) -> dict[str, Any] | None: ...

    async def refresh_remote(self) -> None: ...

    def releases(self, name: str) -> Sequence[HistoryEntry]:
        """The app's kept releases, newest first."""

    async def commit_subject(self, name: str, revision: str) -> str | None: ...


class Subjects:
    """Commit subjects already read, bounded (a commit's subject never changes). A page waits
    at most SUBJECT_WAIT for those it lacks and shows the rest without: a mirror busy with a
    fetch must not hold the page up. A lookup still under way then is not started again by
    the next page, so reloads cannot pile reads up on the threads git shares."""

    def __init__(self, memory: int = SUBJECT_MEMORY) -> None:
        self._known: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._reading: dict[tuple[str, str], asyncio.Task[str | None]] = {}
        self._memory = memory

    async def of(self, source: DashboardSource, app: str, shas: list[str]) -> dict[str, str]:
        reads = [self._read(source, app, sha) for sha in shas if (app, sha) not in self._known]
        if reads:
            await asyncio.wait(reads, timeout=SUBJECT_WAIT)
        found = {}
        for sha in shas:
            if (subject := self._known.get((app, sha))) is not None:
                self._known.move_to_end((app, sha))
                found[sha] = subject
        return found

    def stop(self) -> None:
        for task in self._reading.values():
            task.cancel()

    def _read(self, source: DashboardSource, app: str, sha: str) -> asyncio.Task[str | None]:
        key = (app, sha)
        task = self._reading.get(key)
        if task is None:
            task = asyncio.ensure_future(source.commit_subject(app, sha))
            self._reading[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        return task

    def _settle(self, key: tuple[str, str], task: asyncio.Task[str | None]) -> None:
        self._reading.pop(key, None)
        if task.cancelled() or task.exception() is not None or not (subject := task.result()):
            return
        self._known[key] = subject
        while len(self._known) > self._memory:
            self._known.popitem(last=False)


MaySync = Callable[[web.Request], bool]
Sees = Callable[[web.Request, str], bool]  # whether the caller may know the app exists
Changes = Callable[[str], Awaitable[Sequence[AuditEntry]]]  # an app's audit entries, oldest first
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SOURCE: web.AppKey[DashboardSource] = web.AppKey("dashboard_source", DashboardSource)
MAY_SYNC: web.AppKey[MaySync] = web.AppKey("dashboard_may_sync")
SEES: web.AppKey[Sees] = web.AppKey("dashboard_sees")
CHANGES: web.AppKey[Changes] = web.AppKey("dashboard_changes")
CHANGES_SHOWN = 20  # the newest audit entries an app's page shows
VERSIONS: web.AppKey[dict[str, str]] = web.AppKey("dashboard_static_versions", dict)
SUBJECTS: web.AppKey[Subjects] = web.AppKey("dashboard_subjects", Subjects)


def links_of(request: web.Request) -> Links:
    # Read per request: public_url applies as soon as a reloaded config is in force.
    return Links.of(request.app[SOURCE].config)


def content_security_policy(links: Links) -> str:
    own = "'self'" if links.origin is None else f"'self' {links.origin}"
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {own}",
            f"style-src {own}",
            f"img-src {own}",
            f"connect-src {own}",
            f"form-action {own}",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _secure(response: web.Response, links: Links) -> web.Response:
    response.headers["Content-Security-Policy"] = content_security_policy(links)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    # Phases change all the time: a page from a cache would be wrong.
    response.headers["Cache-Control"] = "no-store"
    return response


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    links = links_of(request)
    versions = request.app[VERSIONS]

    def static(name: str) -> str:
        return links.to(f"/static/{name}?v={versions.get(name, '0')}")

    page = {
        "links": links,
        "static": static,
        "events_url": links.to("/events"),
        "status_url": links.to("/status"),
        **context,
    }
    response = aiohttp_jinja2.render_template(template, request, page, status=status)
    if headers:
        response.headers.update(headers)
    return _secure(response, links)


def error_page(
    request: web.Request, status: int, message: str, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An HTML error page with `status` (for browsers; API clients get JSON elsewhere)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return render(
        request,
        "error.html",
        # No live updates on an error page: there is nothing on it to update.
        {"status": status, "title": title, "message": message, "events_url": ""},
        status=status,
        headers=headers,
    )


def wants_html(request: web.Request) -> bool:
    """Whether the client prefers an HTML page to JSON: a browser, or a form it posted.

    curl, scripts and aiohttp send `*/*` or ask for JSON and keep getting JSON."""
    html = json = 0.0
    for item in request.headers.get("Accept", "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in ("text/html", "application/xhtml+xml"):
            html = max(html, quality)
        elif media == "application/json":
            json = max(json, quality)
    return html > 0 and html >= json


def _is_page(request: web.Request) -> bool:
    name = request.match_info.route.name or ""
    if name.startswith(PAGE):
        return True
    # No route matched (or not with this method): a browser gets a page, a client JSON.
    return request.match_info.http_exception is not None and wants_html(request)


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors on the pages (and on unknown paths a browser asks for) answer an HTML page."""
    if not _is_page(request):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_page(request, exc.status, exc.reason, headers=headers)
    except Exception:
        log.exception("dashboard_page_crashed", path=request.path)
        return error_page(request, 500, "Something went wrong; the daemon's log says what.")


def shown(source: DashboardSource, name: str) -> tuple[AppStatus | None, Owner | None]:
    """An app's status as the pages show it, and its owner (None without a cluster).

    This daemon's own apps come from memory, and the event stream keeps them current on
    the page. An app another daemon owns is what that owner last published, as of this
    page load: the stream carries only this daemon's phase changes (the script reads
    /status again after a reconnect, which has the others' too)."""
    status = source.status_of(name)
    document = source.app_document(name)
    owner = owner_of(name, document)
    if status is not None or owner is None or document is None:
        return status, owner
    try:
        return AppStatus.from_json(document), owner
    except ValueError as exc:  # an owner of another version, say, with a phase unknown here
        return None, dataclasses.replace(owner, unreadable=str(exc))


async def list_page(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    links = links_of(request)
    configs = {a.name: a for a in source.config.apps}
    names = [n for n in source.app_names() if request.app[SEES](request, n)]
    await source.refresh_remote()
    shows = {n: shown(source, n) for n in names}
    subjects = request.app[SUBJECTS]
    known = await asyncio.gather(
        *(subjects.of(source, n, revisions_of(shows[n][0], history=False)) for n in names)
    )
    now = utcnow()
    apps = []
    sparklines = {}
    for n, found in zip(names, known, strict=True):
        status, owner = shows[n]
        view = app_view(n, status, configs.get(n), links, subjects=found, now=now, owner=owner)
        apps.append(view)
        sparklines[n] = charts.lead_sparkline(source.releases(n))
    histories = {n: source.releases(n) for n in names}
    keys = four_keys(histories, now=now, days=CHART_DAYS)
    synced = request.query.get("synced")
    return render(
        request,
        "list.html",
        {
            "apps": apps,
            "sparklines": sparklines,
            "charts": charts.key_charts(keys),
            "chart_days": CHART_DAYS,
            "owners": any(app.owner is not None for app in apps),
            "may_sync": request.app[MAY_SYNC](request),
            "synced": synced if synced in names else None,
        },
    )


async def app_page(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    name = request.match_info["name"]
    if name not in source.app_names() or not request.app[SEES](request, name):
        return error_page(request, 404, f"There is no app named {name!r}.")
    configs = {a.name: a for a in source.config.apps}
    await source.refresh_remote()
    status, owner = shown(source, name)
    found = await request.app[SUBJECTS].of(source, name, revisions_of(status, history=True))
    app = app_view(name, status, configs.get(name), links_of(request), subjects=found, owner=owner)
    changes = list(reversed((await request.app[CHANGES](name))[-CHANGES_SHOWN:]))
    now = utcnow()
    keys = four_keys({name: source.releases(name)}, now=now, days=CHART_DAYS)
    return render(
        request,
        "app.html",
        {
            "app": app,
            "timeline": newest_timeline(status, now),
            "releases": charts.release_rows(status.history if status else (), now),
            "charts": charts.key_charts(keys),
            "chart_days": CHART_DAYS,
            "changes": changes,
            "may_sync": request.app[MAY_SYNC](request),
            "synced": "synced" in request.query,
        },
    )


def newest_timeline(status: AppStatus | None, now: datetime) -> charts.Timeline | None:
    """The release under way, or else the newest one written."""
    if status is None:
        return None
    if status.timeline:
        return charts.timeline(
            status.timeline,
            revision=status.desired_revision or "",
            start=min(s.started_at for s in status.timeline),
            end=now,
            now=now,
            running=True,
            result="running",
        )
    newest = status.history[0] if status.history else None
    if newest is None:
        return None
    return charts.timeline(
        newest.stages,
        revision=newest.revision,
        start=newest.started_at,
        end=newest.finished_at,
        now=now,
        running=False,
        result=newest.result.value.replace("_", " "),
    )


def app_url(request: web.Request, name: str) -> str:
    """The app's page, as this request's links name it."""
    return links_of(request).app(name)


async def back_after_sync(request: web.Request, name: str) -> web.Response:
    """303 to the page the sync form was on (its `back` field), so a reload does not post
    again; the page then says the sync was asked for."""
    back = ""
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        back = str(form.get("back", ""))
    links = links_of(request)
    if back == "app":
        target = links.app(name) + "?synced=1"
    else:
        target = links.to("/") + "?" + urlencode({"synced": name})
    return web.Response(status=303, headers={"Location": target})


def _versions() -> dict[str, str]:
    # A content hash in each asset's URL: browsers may cache them, and an upgrade is seen.
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in STATIC.iterdir()
        if path.is_file()
    }


async def _stop_reading(app: web.Application) -> None:
    app[SUBJECTS].stop()


def setup(
    app: web.Application,
    source: DashboardSource,
    *,
    may_sync: MaySync,
    sees: Sees,
    changes: Changes,
) -> None:
    """Mount the pages, the event stream and the static files on `app`; `sees` says which
    apps the caller may know exist, `may_sync` whether it may sync them, `changes` what was
    asked of an app (its audit entries)."""
    app[SOURCE] = source
    app[MAY_SYNC] = may_sync
    app[SEES] = sees
    app[CHANGES] = changes
    app[VERSIONS] = _versions()
    app[SUBJECTS] = Subjects()
    app.on_shutdown.append(_stop_reading)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app.router.add_get("/", list_page, name=PAGE + "list")
    app.router.add_get("/apps/{name}", app_page, name=PAGE + "app")
    app.router.add_static("/static/", STATIC, name=PAGE + "static")
    stream.setup(app, source, sees=sees)
