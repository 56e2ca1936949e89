"""The dashboard without a browser: what the pages show, that untrusted text stays text, who
gets the sync button, where a form post leads, and the live event stream.

The supervisor is real and its loops are stand-ins (tests/support/http_face.py), as for the
JSON API. The event stream is served by a real AppRunner on a loopback port, as the daemon
serves it: aiohttp's test server cancels a handler when its client goes, the daemon's does
not, and the stream must notice either way.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from reconciler.config import Config, parse_config
from reconciler.events import Finished, PhaseChanged
from reconciler.http import build_app
from reconciler.model import HistoryEntry, Phase, Result
from reconciler.status import AppStatus
from reconciler.supervisor import Supervisor
from reconciler.web import dashboard, stream
from reconciler.web.dashboard import STATIC, TEMPLATES, content_security_policy
from reconciler.web.links import Links, commit_url
from tests.support.http_face import API_TOKEN, APPS, HttpFace, face_config, serve
from tests.support.probes import eventually

ROOT = Path(__file__).parents[1]
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "fedcba9876543210fedcba9876543210fedcba98"
AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EVIL = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>"


# --- a small reader for the pages we serve --------------------------------------------------


VOID = {"meta", "link", "input", "br", "img", "hr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Every element below (and including) this one with `tag` and these attributes
        (`data_app` stands for `data-app`)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        found = []
        if (tag is None or self.tag == tag) and all(
            self.attrs.get(k) == v for k, v in wanted.items()
        ):
            found.append(self)
        for child in self.children:
            if isinstance(child, Element):
                found += child.all(tag, **attrs)
        return found

    def one(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]

    def has_class(self, name: str) -> bool:
        return name in self.attrs.get("class", "").split()


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        while len(self.stack) > 1:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Element:
    builder = _Builder()
    builder.feed(html)
    return builder.root


async def page(
    face: HttpFace, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Element, str, aiohttp.ClientResponse]:
    async with face.client.get(path, headers={**BROWSER, **(headers or {})}) as answer:
        body = await answer.text()
        return answer.status, parse(body), body, answer


@pytest.fixture
async def face(tmp_path: Path) -> AsyncIterator[HttpFace]:
    async with serve(tmp_path) as running:
        yield running


def failing(face: HttpFace, name: str = "by-clone-url", *, error: str | None = None) -> AppStatus:
    status = face.supervisor.statuses[name]
    status.phase = Phase.FAILED
    status.desired_revision = SHA
    status.desired_image = f"127.0.0.1:5000/{name}:{SHA}"
    status.live_image = f"127.0.0.1:5000/{name}:{OTHER_SHA}"
    status.live_task_definition = f"arn:aws:ecs:us-east-1:123456789012:task-definition/{name}:7"
    status.last_error = error or "build failed: returned a non-zero code: 3\nstep 2/2\nout-42"
    status.last_transition = AT
    status.history.appendleft(
        HistoryEntry(
            revision=OTHER_SHA,
            result=Result.DEPLOYED,
            started_at=AT - timedelta(minutes=10),
            finished_at=AT - timedelta(minutes=8),
        )
    )
    status.history.appendleft(
        HistoryEntry(
            revision=SHA,
            result=Result.BUILD_FAILED,
            started_at=AT - timedelta(seconds=30),
            finished_at=AT,
            error=status.last_error,
        )
    )
    return status


# --- what the pages show --------------------------------------------------------------------


async def test_the_list_shows_every_app_with_phase_revision_image_since_and_error(
    face: HttpFace,
) -> None:
    """One row per configured app, in config order; the phase in words and as a class."""
    failing(face)
    face.supervisor.statuses["by-ssh-url"].phase = Phase.DEPLOYING
    code, doc, _, answer = await page(face, "/")
    assert code == 200
    assert answer.content_type == "text/html"
    rows = [r for r in doc.all("tr") if "data-app" in r.attrs]
    assert [r.attrs["data-app"] for r in rows] == list(APPS)
    # Every app on GitHub links its revisions; example.com is no forge we know.
    linked = [r.attrs["data-app"] for r in rows if r.attrs["data-commit-prefix"]]
    assert linked == [name for name in APPS if name != "gitlab-app"]

    row = doc.one("tr", data_app="by-clone-url")
    phase = row.one("span", data_field="phase")
    assert phase.text == "Failed"
    assert phase.has_class("phase-failed")
    link = row.one("a", href=f"https://github.com/Codertocat/Hello-World/commit/{SHA}")
    assert link.text == SHA[:7]
    assert f"127.0.0.1:5000/by-clone-url:{OTHER_SHA}" in row.text  # the live image
    assert "2024-05-01 12:00:00 UTC" in row.one("time").text
    assert row.one("time").attrs["datetime"] == "2024-05-01T12:00:00Z"
    error = row.one("td", **{"class": "error-line"})
    assert error.text == "build failed: returned a non-zero code: 3"  # the first line only
    assert "master" in row.text  # the branch

    busy = doc.one("tr", data_app="by-ssh-url").one("span", data_field="phase")
    assert (busy.text, busy.has_class("phase-deploying")) == ("Deploying", True)
    pending = doc.one("tr", data_app="gitlab-app").one("span", data_field="phase")
    assert (pending.text, pending.has_class("phase-pending")) == ("Pending", True)
    assert doc.one("tr", data_app="by-clone-url").one("a", href="/apps/by-clone-url")


async def test_the_app_page_shows_the_full_error_and_the_history(face: HttpFace) -> None:
    status = failing(face)
    code, doc, _, _ = await page(face, "/apps/by-clone-url")
    assert code == 200
    block = doc.one("div", data_app="by-clone-url")
    assert block.one("span", data_field="phase").text == "Failed"
    assert block.one("h1").text == "by-clone-url"
    assert "https://github.com/Codertocat/Hello-World.git" in block.text
    assert f"by-clone-url:{SHA}" in block.text  # the desired image
    assert "task-definition/by-clone-url:7" in block.text
    last_error = doc.one("section", **{"class": "last-error"}).one("pre")
    assert last_error.text == status.last_error  # every line of the output
    history = doc.one("section", **{"class": "history"}).all("tr")[1:]
    assert len(history) == 2
    assert history[0].one("a").attrs["href"].endswith(SHA)
    assert "build failed" in history[0].text
    assert "2 min 0 s" in history[1].text and "deployed" in history[1].text
    assert not doc.all("section", **{"class": "rollout"})  # AppStatus has no rollout (yet)


async def test_a_rollout_on_the_status_gets_its_own_section(face: HttpFace) -> None:
    """Whatever shape it takes (to_json, dataclass or mapping), shown as labelled values."""
    status = face.supervisor.statuses["by-clone-url"]
    setattr(status, "rollout", {"deployment": "ecs-svc/1", "running": 2, "desired": 3})  # noqa: B010
    _, doc, _, _ = await page(face, "/apps/by-clone-url")
    section = doc.one("section", **{"class": "rollout"})
    labels = [e.text for e in section.all("dt")]
    values = [e.text for e in section.all("dd")]
    assert labels == ["deployment", "running", "desired"]
    assert values == ["ecs-svc/1", "2", "3"]


async def test_an_unknown_app_is_an_html_404_page(face: HttpFace) -> None:
    code, doc, _, answer = await page(face, "/apps/no-such-app")
    assert code == 404
    assert answer.content_type == "text/html"
    assert "no-such-app" in doc.one("p", **{"class": "message"}).text
    assert "Content-Security-Policy" in answer.headers
    code, doc, _, answer = await page(face, "/no/such/page")
    assert (code, answer.content_type) == (404, "text/html")
    # An API client on the same paths keeps getting JSON.
    assert (await face.get("/no/such/page"))[0] == 404
    async with face.client.get("/apps/no-such-app") as answer:
        assert answer.status == 404


async def test_a_wrong_method_on_a_page_is_an_html_405(face: HttpFace) -> None:
    async with face.client.post("/", headers=BROWSER) as answer:
        assert answer.status == 405
        assert answer.content_type == "text/html"
        assert "GET" in answer.headers["Allow"]


async def test_static_files_are_served_from_the_package(face: HttpFace) -> None:
    """Stylesheet and script come from the daemon itself, named with a content hash."""
    _, doc, _, _ = await page(face, "/")
    (css,) = [e.attrs["href"] for e in doc.all("link", rel="stylesheet")]
    (script,) = [e.attrs["src"] for e in doc.all("script")]
    assert css.startswith("/static/dashboard.css?v=")
    assert script.startswith("/static/dashboard.js?v=")
    for url, kind in ((css, "text/css"), (script, "text/javascript")):
        async with face.client.get(url) as answer:
            assert answer.status == 200
            assert answer.content_type in (kind, "application/javascript")
            assert len(await answer.read()) > 100


# --- untrusted text -------------------------------------------------------------------------


async def test_script_in_an_error_a_branch_or_a_name_is_shown_as_text(tmp_path: Path) -> None:
    """Errors hold build output, branches come from config and git: all escaped everywhere
    (the config's own checks would refuse such a name or branch; the pages do not rely on
    them)."""
    async with serve(tmp_path) as face:
        config = face.supervisor.config
        first = config.apps[0].model_copy(update={"name": "evil" + EVIL, "branch": EVIL})
        face.supervisor.config = config.model_copy(update={"apps": (first, *config.apps[1:])})
        name = first.name
        face.supervisor.statuses[name] = AppStatus(
            name=name,
            phase=Phase.FAILED,
            desired_revision=SHA,
            desired_image=EVIL,
            live_image=EVIL,
            last_error=f"{EVIL}\nsecond line {EVIL}",
            history=face.supervisor.statuses["by-clone-url"].history,
        )
        face.supervisor.statuses[name].history.appendleft(
            HistoryEntry(SHA, Result.BUILD_FAILED, AT, AT, error=EVIL)
        )
        for path in ("/", f"/apps/{quote(name, safe='')}"):
            code, doc, body, _ = await page(face, path)
            assert code == 200, path
            assert "<script>" not in body and "<img" not in body, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, path
            # Only the dashboard's own script element, and no element from the payload.
            assert [e.attrs.get("src", "")[:20] for e in doc.all("script")] == [
                "/static/dashboard.js"
            ]
            assert not doc.all("img")
            block = doc.one(None, data_app=name)  # the attribute round-trips exactly
            assert EVIL in block.text
        assert EVIL in doc.one("section", **{"class": "last-error"}).one("pre").text


async def test_commit_subjects_are_shown_escaped_and_read_once(
    face: HttpFace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subject of each revision shown, from the app's mirror; remembered once read."""
    failing(face)
    asked: list[tuple[str, str]] = []

    async def subject(name: str, revision: str) -> str | None:
        asked.append((name, revision))
        return f"{revision[:4]} {EVIL}"

    monkeypatch.setattr(face.supervisor, "commit_subject", subject)
    for path in ("/", "/apps/by-clone-url", "/apps/by-clone-url"):
        _, doc, body, _ = await page(face, path)
        assert "<script>" not in body
        block = doc.one(None, data_app="by-clone-url")
        assert block.one("div", data_field="subject").text == f"{SHA[:4]} {EVIL}"
    history = doc.one("section", **{"class": "history"})
    assert [e.text for e in history.all("div", **{"class": "subject"})] == [
        f"{SHA[:4]} {EVIL}",
        f"{OTHER_SHA[:4]} {EVIL}",
    ]
    assert sorted(asked) == sorted([("by-clone-url", SHA), ("by-clone-url", OTHER_SHA)])


async def test_a_slow_mirror_does_not_hold_the_page_up(
    face: HttpFace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subject that takes too long is left out; the page comes regardless, and the next
    page does not start the same read again while it is under way."""
    failing(face)
    release = asyncio.Event()
    asked: list[str] = []

    async def slow(name: str, revision: str) -> str | None:
        asked.append(revision)
        await release.wait()
        return "read at last"

    monkeypatch.setattr(face.supervisor, "commit_subject", slow)
    monkeypatch.setattr(dashboard, "SUBJECT_WAIT", 0.05)
    async with asyncio.timeout(30):
        for _ in range(3):
            code, doc, _, _ = await page(face, "/apps/by-clone-url")
            assert code == 200
            subject = doc.one(None, data_app="by-clone-url").one("div", data_field="subject")
            assert subject.text == ""
        assert sorted(asked) == sorted([SHA, OTHER_SHA])
        release.set()  # the reads under way finish, and the next page has their answers
        _, doc, _, _ = await page(face, "/apps/by-clone-url")
    subject = doc.one(None, data_app="by-clone-url").one("div", data_field="subject")
    assert subject.text == "read at last"
    assert len(asked) == 2


async def test_the_supervisor_has_no_subject_before_it_runs(face: HttpFace) -> None:
    assert await face.supervisor.commit_subject("by-clone-url", SHA) is None
    assert await face.supervisor.commit_subject("no-such-app", SHA) is None


async def test_the_content_security_policy_forbids_inline_scripts(face: HttpFace) -> None:
    for path in ("/", "/apps/by-clone-url", "/apps/nope"):
        _, doc, _, answer = await page(face, path)
        policy = answer.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["script-src"] == "'self'"
        assert directives["default-src"] == "'none'"
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        # Nothing on the page would need an exception: no inline script or handler.
        assert all(e.attrs.get("src") for e in doc.all("script")), path
        assert not [e for e in doc.all() if any(a.startswith("on") for a in e.attrs)], path


def test_public_url_makes_links_absolute_and_is_allowed_by_the_policy() -> None:
    links = Links("https://deploy.example.com/reconciler")
    assert links.app("web") == "https://deploy.example.com/reconciler/apps/web"
    assert links.sync("a b") == "https://deploy.example.com/reconciler/apps/a%20b/sync"
    assert links.origin == "https://deploy.example.com"
    policy = content_security_policy(links)
    assert "script-src 'self' https://deploy.example.com;" in policy
    assert Links("").app("web") == "/apps/web"
    assert content_security_policy(Links("")).count("'self'") == 5


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        ("https://github.com/Acme/Web.git", f"https://github.com/Acme/Web/commit/{SHA}"),
        ("git@github.com:Acme/Web.git", f"https://github.com/Acme/Web/commit/{SHA}"),
        (
            "ssh://git@gitlab.com/group/sub/app.git",
            f"https://gitlab.com/group/sub/app/commit/{SHA}",
        ),
        (
            "ssh://git@gitlab.example.com:2222/group/app.git",
            f"https://gitlab.example.com/group/app/commit/{SHA}",
        ),
        (
            "https://github.example.com:8443/acme/web",
            f"https://github.example.com:8443/acme/web/commit/{SHA}",
        ),
        ("https://bitbucket.org/acme/web.git", f"https://bitbucket.org/acme/web/commits/{SHA}"),
        ("file:///srv/git/web.git", None),
        ("https://git.example.com/acme/web.git", None),
        ("git@[2001:db8::1]:acme/web.git", None),
        ("https://github.com/acme", None),
    ],
)
def test_a_revision_links_to_its_commit_page_on_a_known_forge(
    repo: str, expected: str | None
) -> None:
    assert commit_url(repo, SHA) == expected


def test_only_a_sha_is_linked() -> None:
    assert commit_url("https://github.com/acme/web", "main") is None
    assert commit_url("https://github.com/acme/web", "../../evil") is None


# --- the sync button and the form -----------------------------------------------------------


def buttons(doc: Element) -> list[str]:
    return [f.attrs["action"] for f in doc.all("form", method="post")]


@pytest.mark.parametrize(
    ("api_token", "headers", "shown"),
    [
        (False, {}, True),
        (False, {"X-Test-Peer": "203.0.113.7"}, False),
        (True, {}, False),
        (True, {"Authorization": "Bearer wrong-token"}, False),
        (True, {"Authorization": f"Bearer {API_TOKEN}"}, True),
        (True, {"Authorization": f"Bearer {API_TOKEN}", "X-Test-Peer": "203.0.113.7"}, True),
    ],
    ids=[
        "loopback-no-token",
        "remote-no-token",
        "token-not-sent",
        "token-wrong",
        "token-right",
        "token-right-remote",
    ],
)
async def test_the_sync_button_is_offered_only_to_who_may_sync(
    tmp_path: Path, api_token: bool, headers: dict[str, str], shown: bool
) -> None:
    """The same rule as POST /apps/{name}/sync: loopback without a token configured, else
    the bearer token."""
    async with serve(tmp_path, api_token=api_token) as face:
        _, listing, _, _ = await page(face, "/", headers)
        _, one, _, _ = await page(face, "/apps/by-clone-url", headers)
        if shown:
            assert buttons(listing) == [f"/apps/{name}/sync" for name in APPS]
            assert buttons(one) == ["/apps/by-clone-url/sync"]
        else:
            assert buttons(listing) == buttons(one) == []
        async with face.client.post("/apps/by-clone-url/sync", headers=headers) as answer:
            assert (answer.status == 202) == shown


async def test_a_form_post_is_sent_back_to_its_page(face: HttpFace) -> None:
    """303 to the page (a reload does not post again), which then says so; no JavaScript."""
    for back, location in (
        ("app", "/apps/by-ssh-url?synced=1"),
        ("list", "/?synced=by-ssh-url"),
        ("elsewhere", "/?synced=by-ssh-url"),
    ):
        async with face.client.post(
            "/apps/by-ssh-url/sync", data={"back": back}, headers=BROWSER, allow_redirects=False
        ) as answer:
            assert answer.status == 303
            assert answer.headers["Location"] == location
    assert face.loops["by-ssh-url"].syncs == 3
    _, doc, _, _ = await page(face, "/?synced=by-ssh-url")
    assert "Sync requested for by-ssh-url" in doc.one("p", **{"class": "flash"}).text
    _, doc, _, _ = await page(face, "/?synced=not-an-app")
    assert not doc.all("p", **{"class": "flash"})
    _, doc, _, _ = await page(face, "/apps/by-ssh-url?synced=1")
    assert doc.one("p", **{"class": "flash"}).text == "Sync requested."
    # API clients keep their JSON answer.
    async with face.client.post("/apps/by-ssh-url/sync") as answer:
        assert (answer.status, await answer.json()) == (202, {"syncing": "by-ssh-url"})


async def test_a_refused_form_post_is_an_html_page(face: HttpFace) -> None:
    headers = {**BROWSER, "X-Test-Peer": "203.0.113.7"}
    async with face.client.post(
        "/apps/by-clone-url/sync", data={"back": "app"}, headers=headers, allow_redirects=False
    ) as answer:
        assert (answer.status, answer.content_type) == (403, "text/html")
    async with face.client.post("/apps/nope/sync", headers=BROWSER) as answer:
        assert (answer.status, answer.content_type) == (404, "text/html")
    assert face.loops["by-clone-url"].syncs == 0


async def test_a_form_on_another_site_cannot_sync(face: HttpFace) -> None:
    """A browser names the page a post comes from; only the dashboard's own pages count. A
    name that resolves to 127.0.0.1 is not the dashboard either, without a token."""
    host = f"{face.client.host}:{face.client.port}"
    refused = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://evil.example:8088", "Host": "evil.example:8088"},
    ]
    for headers in refused:
        async with face.client.post(
            "/apps/by-clone-url/sync", headers={**BROWSER, **headers}, allow_redirects=False
        ) as answer:
            assert answer.status == 403, headers
    assert face.loops["by-clone-url"].syncs == 0
    async with face.client.post(
        "/apps/by-clone-url/sync",
        headers={**BROWSER, "Origin": f"http://{host}"},
        allow_redirects=False,
    ) as answer:
        assert answer.status == 303
    assert face.loops["by-clone-url"].syncs == 1


# --- the event stream -----------------------------------------------------------------------


def supervisor_for(tmp_path: Path) -> Supervisor:
    config: Config = parse_config(face_config(tmp_path))
    supervisor = Supervisor(config=config)
    for app in config.apps:
        supervisor.statuses[app.name] = AppStatus(name=app.name)
    return supervisor


@asynccontextmanager
async def served(
    supervisor: Supervisor, *, shutdown_timeout: float = 60.0
) -> AsyncIterator[tuple[web.AppRunner, str]]:
    """build_app on a real runner, as the daemon runs it (handlers are not cancelled when a
    client goes). The long shutdown_timeout would show as a hang if streams did not end."""
    runner = web.AppRunner(build_app(supervisor), shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield runner, f"http://{host}:{port}"
    finally:
        if runner.server is not None:  # not cleaned up by the test already
            await runner.cleanup()


async def next_event(answer: aiohttp.ClientResponse) -> dict[str, Any]:
    async for raw in answer.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data:"):
            event: dict[str, Any] = json.loads(line.removeprefix("data:").strip())
            return event
    raise AssertionError("the stream ended before an event")


def changed(app: str, phase: Phase, revision: str | None = SHA) -> PhaseChanged:
    return PhaseChanged(app=app, phase=phase, previous=Phase.IN_SYNC, revision=revision, at=AT)


async def test_the_stream_sends_each_phase_change_as_json(tmp_path: Path) -> None:
    supervisor = supervisor_for(tmp_path)
    bus = supervisor.bus
    async with (
        asyncio.timeout(30),
        served(supervisor) as (_, url),
        aiohttp.ClientSession() as http,
        http.get(f"{url}/events") as answer,
    ):
        assert answer.status == 200
        assert answer.content_type == "text/event-stream"
        await eventually(lambda: bus.subscribers == 1, what="the stream's subscription")
        # What a pass reports after a phase change (Finished) is not a phase change.
        bus.publish(Finished("by-clone-url", SHA, Result.DEPLOYED, AT, AT, None))
        bus.publish(changed("by-clone-url", Phase.BUILDING))
        bus.publish(changed("by-ssh-url", Phase.DEPLOYING, revision=None))
        assert await next_event(answer) == {
            "app": "by-clone-url",
            "phase": "Building",
            "revision": SHA,
            "at": "2024-05-01T12:00:00Z",
        }
        assert await next_event(answer) == {
            "app": "by-ssh-url",
            "phase": "Deploying",
            "revision": None,
            "at": "2024-05-01T12:00:00Z",
        }


async def test_a_client_that_goes_away_is_unsubscribed(tmp_path: Path) -> None:
    supervisor = supervisor_for(tmp_path)
    bus = supervisor.bus
    async with asyncio.timeout(30), served(supervisor) as (_, url):
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.get(f"{url}/events") as answer:
                    assert answer.status == 200
            await eventually(lambda: bus.subscribers == 3, what="three subscriptions")
        # A write to a closed connection ends the stream (so would the next heartbeat).

        def gone() -> bool:
            bus.publish(changed("by-clone-url", Phase.BUILDING))
            return bus.subscribers == 0

        await eventually(gone, what="the subscriptions dropped")


async def test_a_client_that_falls_behind_loses_the_oldest_events(tmp_path: Path) -> None:
    """Publishing never waits for a client: its queue drops the oldest, the newest arrive."""
    supervisor = supervisor_for(tmp_path)
    bus = supervisor.bus
    async with (
        asyncio.timeout(30),
        served(supervisor) as (_, url),
        aiohttp.ClientSession() as http,
        http.get(f"{url}/events") as answer,
    ):
        await eventually(lambda: bus.subscribers == 1, what="the subscription")
        total = stream.QUEUE_LIMIT * 3
        for n in range(total):  # no await in between: the stream cannot drain meanwhile
            bus.publish(changed(f"app-{n}", Phase.BUILDING))
        names = [(await next_event(answer))["app"] for _ in range(stream.QUEUE_LIMIT)]
        assert names[-1] == f"app-{total - 1}"
        assert names[0] == f"app-{total - stream.QUEUE_LIMIT}"


async def test_an_idle_stream_gets_heartbeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comment lines, which browsers ignore, so proxies see traffic on an idle stream."""
    monkeypatch.setattr(stream, "HEARTBEAT", 0.05)
    supervisor = supervisor_for(tmp_path)
    async with (
        asyncio.timeout(30),
        served(supervisor) as (_, url),
        aiohttp.ClientSession() as http,
        http.get(f"{url}/events") as answer,
    ):
        lines = []
        async for raw in answer.content:
            lines.append(raw.decode().strip())
            if lines[-1].startswith(":"):
                break
        assert lines[0].startswith("retry:")  # how soon the browser comes back
        assert lines[-1] == ": ping"


async def test_streams_end_when_the_daemon_shuts_down(tmp_path: Path) -> None:
    """Shutdown ends every open stream itself (cleanly, the client sees the end), rather than
    waiting out the server's grace for them."""
    supervisor = supervisor_for(tmp_path)
    bus = supervisor.bus
    async with (
        asyncio.timeout(30),
        served(supervisor) as (runner, url),
        aiohttp.ClientSession() as http,
    ):
        answers = [await http.get(f"{url}/events") for _ in range(2)]
        await eventually(lambda: bus.subscribers == 2, what="two subscriptions")
        cleanup = asyncio.create_task(runner.cleanup())
        for answer in answers:
            assert (await answer.content.read()).startswith(b"retry:")  # then the end
            answer.release()
        await cleanup
        assert bus.subscribers == 0


# --- packaging ------------------------------------------------------------------------------


def package_data() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns: list[str] = pyproject["tool"]["setuptools"]["package-data"]["reconciler.web"]
    return patterns


def test_every_template_and_asset_is_package_data() -> None:
    """The daemon also runs from an installed package: a file the globs miss is a 404 (or a
    crash) there while every test from the source tree passes."""
    web_dir = TEMPLATES.parent
    files = [p.relative_to(web_dir).as_posix() for d in (TEMPLATES, STATIC) for p in d.iterdir()]
    assert files
    missed = [f for f in files if not any(fnmatch(f, pattern) for pattern in package_data())]
    assert missed == []


@pytest.mark.slow
def test_the_wheel_carries_the_templates_and_assets(tmp_path: Path) -> None:
    # Built from a copy, so the build leaves nothing in the work tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "reconciler", source / "reconciler", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("reconciler-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    web_dir = TEMPLATES.parent
    for directory in (TEMPLATES, STATIC):
        for path in directory.iterdir():
            assert f"reconciler/web/{path.relative_to(web_dir).as_posix()}" in names
