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
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from reconciler.adapters.ports import Adapters
from reconciler.api.admin import build_admin_app
from reconciler.api.web import dashboard, stream
from reconciler.api.web.dashboard import content_security_policy
from reconciler.api.web.links import Links, commit_url
from reconciler.api.web.present import app_view
from reconciler.app.events import QUEUE_LIMIT, Event, EventBus, Finished, PhaseChanged
from reconciler.app.status import (
    AnalysisView,
    AppStatus,
    DriftView,
    FrozenView,
    PartView,
    RolloutView,
)
from reconciler.cluster.fenced import Fence, fenced
from reconciler.cluster.manager import PUBLISHED_HISTORY
from reconciler.config import Config, parse_config
from reconciler.daemon.access import admin_token_path, open_access
from reconciler.daemon.in_force import InForce
from reconciler.daemon.supervisor import Supervisor
from reconciler.decisions.analysis import CheckResult, State
from reconciler.decisions.model import HistoryEntry, Phase, Result
from reconciler.errors import NotForwarded
from tests.support.config import app_table, config_text
from tests.support.http_face import (
    APPS,
    HttpFace,
    face_config,
    serve,
    supervisor_for,
)
from tests.support.probes import eventually
from tests.support.webhooks import fixture

ROOT = Path(__file__).parents[3]
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
    status = face.statuses[name]
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
    face.statuses["by-ssh-url"].phase = Phase.DEPLOYING
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
    """Every value of the rollout, labelled; a value not known yet is a dash."""
    status = face.statuses["by-clone-url"]
    status.rollout = RolloutView(
        deployment="ecs-svc/1", task_definition="web:3", running=2, desired=3, started_at=AT
    )
    _, doc, _, _ = await page(face, "/apps/by-clone-url")
    section = doc.one("section", **{"class": "rollout"})
    labels, values = [e.text for e in section.all("dt")], [e.text for e in section.all("dd")]
    shown = dict(zip(labels, values, strict=True))
    assert shown["deployment"] == "ecs-svc/1"
    assert (shown["running"], shown["desired"]) == ("2", "3")
    assert (shown["started at"], shown["finished at"]) == ("2024-05-01T12:00:00Z", "—")


async def test_a_release_of_several_parts_lists_each_with_its_phase(face: HttpFace) -> None:
    """Services and schedules in release order, each with its phase and task definition."""
    status = face.statuses["by-clone-url"]
    status.parts = [
        PartView("service", "web", "web:4", Phase.IN_SYNC),
        PartView("service", "worker", "worker:4", Phase.FAILED),
        PartView("schedule", "rule/default/nightly", None, Phase.PENDING),
    ]
    _, doc, _, _ = await page(face, "/apps/by-clone-url")
    rows = doc.one("section", **{"class": "parts"}).one("tbody").all("tr")
    cells = [[cell.text for cell in row.all("td")] for row in rows]
    assert cells == [
        ["web", "service", "InSync", "web:4"],
        ["worker", "service", "Failed", "worker:4"],
        ["rule/default/nightly", "schedule", "Pending", "-"],
    ]


async def test_an_app_of_one_service_has_no_parts_section(face: HttpFace) -> None:
    _, doc, _, _ = await page(face, "/apps/by-clone-url")
    assert doc.all("section", **{"class": "parts"}) == []


async def test_a_frozen_app_says_why_and_until_when(face: HttpFace) -> None:
    status = face.statuses["by-clone-url"]
    until = datetime.now(UTC) + timedelta(hours=3, minutes=5)
    status.phase = Phase.FROZEN
    status.frozen = FrozenView(reason="weekend <b>freeze</b>", until=until)
    _, doc, body, _ = await page(face, "/apps/by-clone-url")
    text = " ".join(doc.one("section", **{"class": "frozen"}).text.split())
    assert "weekend <b>freeze</b>" in text  # shown as text
    assert "<b>freeze" not in body
    assert until.strftime("%Y-%m-%d %H:%M:%S UTC") in text
    assert "(in 3 h)" in text


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


# --- a cluster: apps other daemons own --------------------------------------------------------


HERE = "host-a"


@dataclass
class Lease:
    owner: str | None
    url: str = ""
    version: int = 1
    published: dict[str, Any] | None = None  # what the owner wrote into the table


@dataclass
class StandInCluster:
    """The daemon's Ownership as a lease table would answer it (as ClusterOwnership does):
    this daemon holds `held`, `leases` says who holds the others and what they published;
    an app in neither has never had an owner."""

    held: set[str]
    leases: dict[str, Lease] = field(default_factory=dict)
    forwarded: list[tuple[str, str]] = field(default_factory=list)
    status_reads: int = 0
    table_down: bool = False  # forwards fail as LeaseManager's do when the table does

    def holds(self, name: str) -> bool:
        return name in self.held

    def guard(self, name: str, adapters: Adapters) -> Adapters:
        fence = Fence(
            name,
            left=lambda app: 3600.0 if self.holds(app) else 0.0,
            why_not=lambda app: f"{app} is not held here",
        )
        return fenced(adapters, fence)

    def ownership(self, name: str) -> dict[str, Any]:
        lease = Lease(owner=HERE, url="http://127.0.0.1:8088") if name in self.held else None
        lease = lease or self.leases.get(name)
        return {
            "owner": lease.owner if lease else None,
            "owner_url": lease.url if lease and lease.owner else None,
            "lease_age_seconds": 1.5 if lease and lease.owner else None,
            "lease_version": lease.version if lease else None,
            "here": name in self.held,
        }

    def elsewhere(self, name: str) -> str | None:
        lease = self.leases.get(name)
        return None if name in self.held or lease is None else lease.owner

    def remote_status(self, name: str) -> dict[str, Any] | None:
        lease = self.leases.get(name)
        return None if lease is None or lease.published is None else dict(lease.published)

    async def read_statuses(self) -> None:
        self.status_reads += 1

    def passes_on(self, name: str) -> bool:
        return True

    async def forward_nudge(self, name: str) -> None:
        await self._forward(name, "nudges")

    async def forward_sync(self, name: str) -> None:
        await self._forward(name, "syncs")

    async def _forward(self, name: str, what: str) -> None:
        if self.table_down:
            raise NotForwarded(f"could not pass the sync of {name!r} on: table unreachable")
        self.forwarded.append((name, what))


def published(name: str, phase: Phase, **fields: Any) -> dict[str, Any]:
    """What an owner publishes of its app: to_json(), its history cut as the manager cuts it."""
    document = AppStatus(name=name, phase=phase, last_transition=AT, **fields).to_json()
    document["history"] = document["history"][:PUBLISHED_HISTORY]
    return document


@dataclass
class Remote:
    """A face whose daemon holds by-clone-url only (and runs no loop of the others)."""

    face: HttpFace
    cluster: StandInCluster


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[Remote]:
    cluster = StandInCluster(held={"by-clone-url"})
    async with serve(tmp_path, ownership=cluster) as face:
        yield Remote(face, cluster)


def clustered(remote: Remote, leases: dict[str, Lease]) -> StandInCluster:
    """`leases` for the apps this daemon does not hold."""
    remote.cluster.leases.update(leases)
    return remote.cluster


async def test_a_remote_app_on_the_list_shows_what_its_owner_published(remote: Remote) -> None:
    """Phase, revision and live image as the owner published them (not this daemon's memory
    of the app), its owner named and linked to the owner's page of the app; this daemon's
    own app says "here", and an app nobody holds is waiting for an owner."""
    face = remote.face
    failing(face)  # held here
    # Stale memory of an app this daemon ran before, not shown.
    face.statuses["by-ssh-url"] = AppStatus(name="by-ssh-url", phase=Phase.IN_SYNC)
    image = f"127.0.0.1:5000/by-ssh-url:{SHA}"
    cluster = clustered(
        remote,
        {
            "by-ssh-url": Lease(
                owner="host-b",
                url="http://10.0.0.2:8088/",
                published=published(
                    "by-ssh-url", Phase.DEPLOYING, desired_revision=SHA, live_image=image
                ),
            ),
            "by-html-url": Lease(owner="host-c", url="javascript:alert(1)"),
        },
    )
    code, doc, _, _ = await page(face, "/")
    assert code == 200
    assert cluster.status_reads == 1  # what the others published is read for the page
    assert "Reconciled by" in [e.text for e in doc.all("th")]
    assert all(e.attrs.get("src") for e in doc.all("script"))  # still no inline script

    row = doc.one("tr", data_app="by-ssh-url")
    phase = row.one("span", data_field="phase")
    assert (phase.text, phase.has_class("phase-deploying")) == ("Deploying", True)
    assert row.one("span", data_field="revision").attrs["data-sha"] == SHA
    assert image in row.text
    assert "2024-05-01 12:00:00 UTC" in row.one("time").text
    owner = row.one("span", data_field="owner")
    assert owner.one("a").attrs["href"] == "http://10.0.0.2:8088/apps/by-ssh-url"
    assert owner.text == "host-b"

    here = doc.one("tr", data_app="by-clone-url")
    assert here.one("span", data_field="phase").text == "Failed"
    assert here.one("span", data_field="owner").text == "here"

    # Owned, nothing published yet: Pending, its owner named; a URL that is no web page is
    # not linked.
    quiet = doc.one("tr", data_app="by-html-url")
    assert quiet.one("span", data_field="phase").text == "Pending"
    assert quiet.one("span", data_field="owner").text == "host-c"
    assert not quiet.one("span", data_field="owner").all("a")

    never = doc.one("tr", data_app="gitlab-app")
    assert never.one("span", data_field="phase").text == "Pending"
    assert never.one("span", data_field="owner").text == "waiting for an owner"

    # The sync button of a remote app posts here, and the sync goes to its owner.
    assert "/apps/by-ssh-url/sync" in buttons(doc)
    async with face.client.post(
        "/apps/by-ssh-url/sync", data={"back": "list"}, headers=BROWSER, allow_redirects=False
    ) as answer:
        assert answer.status == 303
    assert cluster.forwarded == [("by-ssh-url", "syncs")]
    assert "by-ssh-url" not in face.loops  # no loop of it here to sync
    assert all(loop.syncs == 0 for loop in face.loops.values())


async def test_a_sync_the_lease_table_does_not_take_is_refused_not_reported_as_started(
    remote: Remote,
) -> None:
    """Only a sync clears a Failed hold: when it cannot reach the owner through the table,
    the caller (CLI or button) hears so with a 503, instead of a 202 for a sync that never
    happens."""
    face = remote.face
    cluster = clustered(remote, {"by-ssh-url": Lease(owner="host-b", url="http://10.0.0.2:8088/")})
    cluster.table_down = True
    async with face.client.post("/apps/by-ssh-url/sync") as answer:
        assert answer.status == 503
        assert answer.headers["Retry-After"] == "5"
        error = (await answer.json())["error"]
    assert "'by-ssh-url'" in error and "\n" not in error
    async with face.client.post(
        "/apps/by-ssh-url/sync", data={"back": "list"}, headers=BROWSER, allow_redirects=False
    ) as answer:
        assert answer.status == 503
        assert "by-ssh-url" in await answer.text()
    assert cluster.forwarded == []
    cluster.table_down = False
    async with face.client.post("/apps/by-ssh-url/sync") as answer:
        assert answer.status == 202
    assert cluster.forwarded == [("by-ssh-url", "syncs")]


async def test_a_push_nudges_apps_owned_elsewhere_through_the_table_and_says_which_it_could_not(
    remote: Remote,
) -> None:
    """The push's apps held here are nudged here, the others through the table; with the
    table down the answer is still 202 (the forge would disable a failing hook, and the
    owners' poll finds the push) but names the apps whose owner was not told."""
    face = remote.face
    cluster = clustered(remote, {})
    status, body = await face.github(fixture("github/push-with-new-branch.payload.json"))
    assert status == 202
    elsewhere = ["by-html-url", "by-ssh-scheme", "by-ssh-url"]
    assert sorted(body["nudged"]) == sorted(["by-clone-url", *elsewhere])
    assert "not_forwarded" not in body
    assert sorted(cluster.forwarded) == [(name, "nudges") for name in elsewhere]
    cluster.table_down = True
    status, body = await face.github(
        fixture("github/push-with-new-branch.payload.json"), delivery="another-delivery"
    )
    assert status == 202
    assert body["nudged"] == ["by-clone-url"]
    assert sorted(body["not_forwarded"]) == elsewhere
    assert face.loops["by-clone-url"].nudges == 2


async def test_the_app_page_of_a_remote_app_shows_its_published_history(remote: Remote) -> None:
    """The last error in full, the rollout and the history the owner published (escaped, as
    everything is), and who the owner is and when its last heartbeat was."""
    face = remote.face
    error = f"test failed: {EVIL}\nsecond line"
    history = [
        HistoryEntry(SHA, Result.TEST_FAILED, AT - timedelta(seconds=45), AT, error=error),
        HistoryEntry(
            OTHER_SHA, Result.DEPLOYED, AT - timedelta(minutes=10), AT - timedelta(minutes=7)
        ),
    ]
    document = published(
        "by-ssh-url",
        Phase.FAILED,
        desired_revision=SHA,
        last_error=error,
        history=deque(history),
        rollout=RolloutView(deployment="ecs-svc/9", task_definition="by-ssh-url:4", running=1),
    )
    lease = Lease(owner="host-b", url="http://10.0.0.2:8088", version=7, published=document)
    clustered(remote, {"by-ssh-url": lease})
    code, doc, body, _ = await page(face, "/apps/by-ssh-url")
    assert code == 200
    assert "<script>" not in body
    block = doc.one("div", data_app="by-ssh-url")
    assert block.one("span", data_field="phase").text == "Failed"
    owner = block.one("dd", **{"class": "owner-cell"})
    assert owner.one("a").attrs["href"] == "http://10.0.0.2:8088/apps/by-ssh-url"
    assert "last heartbeat 1.5 s ago, lease version 7" in owner.text
    assert "Another daemon reconciles this app" in block.one("p", **{"class": "hint remote"}).text
    assert doc.one("section", **{"class": "last-error"}).one("pre").text == error
    rollout = doc.one("section", **{"class": "rollout"})
    assert "ecs-svc/9" in [e.text for e in rollout.all("dd")]
    rows = doc.one("section", **{"class": "history"}).all("tr")[1:]
    assert len(rows) == 2
    assert rows[0].one("a").attrs["href"].endswith(SHA)
    assert "test failed" in rows[0].text and EVIL in rows[0].one("pre").text
    assert "deployed" in rows[1].text and "3 min 0 s" in rows[1].text


async def test_an_app_page_says_here_or_waiting_for_an_owner(remote: Remote) -> None:
    face = remote.face
    failing(face)
    clustered(remote, {})
    _, doc, _, _ = await page(face, "/apps/by-clone-url")
    assert doc.one("span", data_field="owner").text == "here"
    assert len(doc.one("section", **{"class": "history"}).all("tr")) == 3  # from memory
    assert not doc.all("p", **{"class": "hint remote"})
    _, doc, _, _ = await page(face, "/apps/gitlab-app")
    assert doc.one("span", data_field="phase").text == "Pending"
    assert doc.one("span", data_field="owner").text == "waiting for an owner"
    assert "No attempts recorded yet." in doc.one("section", **{"class": "history"}).text


async def test_a_status_this_version_cannot_read_is_shown_as_unknown(remote: Remote) -> None:
    """An owner of a newer version may publish a phase this one does not know: the app shows
    as Unknown with the reason, and the rest of the list is unaffected."""
    face = remote.face
    newer = {**published("by-ssh-url", Phase.IN_SYNC), "phase": "Verifying"}
    cluster = clustered(remote, {"by-ssh-url": Lease(owner="host-b", published=newer)})
    code, doc, _, _ = await page(face, "/")
    assert code == 200
    row = doc.one("tr", data_app="by-ssh-url")
    phase = row.one("span", data_field="phase")
    assert (phase.text, phase.has_class("phase-unknown")) == ("Unknown", True)
    assert "Verifying" in row.one("span", **{"class": "unreadable"}).text
    assert doc.one("tr", data_app="by-clone-url").one("span", data_field="owner").text == "here"
    code, doc, _, _ = await page(face, "/apps/by-ssh-url")
    assert code == 200
    assert doc.one("span", data_field="phase").text == "Unknown"
    assert cluster.status_reads == 2


async def test_without_a_lease_table_no_owner_is_shown(face: HttpFace) -> None:
    failing(face)
    for path in ("/", "/apps/by-clone-url"):
        _, doc, body, _ = await page(face, path)
        assert not doc.all(None, data_field="owner"), path
        assert "Reconciled by" not in body, path


def full_status() -> AppStatus:
    return AppStatus(
        name="web",
        phase=Phase.DEPLOYING,
        desired_revision=SHA,
        desired_image=f"registry/web:{SHA}",
        live_image=f"registry/web:{OTHER_SHA}",
        live_task_definition="arn:aws:ecs:us-east-1:123456789012:task-definition/web:7",
        last_error="an error\nof two lines",
        last_transition=AT,
        history=deque(
            [
                HistoryEntry(SHA, Result.ROLLED_BACK, AT - timedelta(minutes=3), AT, error="x"),
                HistoryEntry(OTHER_SHA, Result.DEPLOYED, AT - timedelta(hours=1), AT),
            ]
        ),
        rollout=RolloutView(
            deployment="ecs-svc/1",
            task_definition="web:7",
            kind="rollback",
            service_deployment="arn:sd/1",
            strategy="BLUE_GREEN",
            stage="BAKE_TIME",
            status="IN_PROGRESS",
            running=2,
            desired=3,
            failed_tasks=1,
            alarms_triggered=("web-5xx",),
            started_at=AT - timedelta(minutes=2),
            finished_at=AT,
        ),
        promoted_from="staging",
        pinned_by="rollback",
        pinned_revision=OTHER_SHA,
    )


@pytest.mark.parametrize("status", [full_status(), AppStatus(name="new", last_transition=AT)])
def test_from_json_is_the_inverse_of_to_json(status: AppStatus) -> None:
    """Through JSON text, as the lease table carries it."""
    again = AppStatus.from_json(json.loads(json.dumps(status.to_json())))
    assert again == status
    assert again.to_json() == status.to_json()


def test_from_json_reads_an_older_or_newer_document() -> None:
    """A key an older owner did not write takes the default; one a newer owner adds is left."""
    older = AppStatus.from_json(
        {"name": "web", "phase": "InSync", "last_transition": "2024-05-01T12:00:00Z"}
    )
    assert (older.phase, older.last_transition, older.rollout) == (Phase.IN_SYNC, AT, None)
    assert (older.desired_revision, older.pinned_by, list(older.history)) == (None, None, [])
    document = full_status().to_json()
    newer = {**document, "canary": {"weight": 10}}
    newer["history"] = [{**h, "attempt": 2} for h in document["history"]]
    assert newer["rollout"] is not None
    newer["rollout"] = {**newer["rollout"], "bake_minutes": 5}
    assert AppStatus.from_json(newer) == full_status()


@pytest.mark.parametrize(
    "change",
    [
        {"phase": "Verifying"},
        {"last_transition": "yesterday"},
        {"history": [{"revision": SHA, "result": "exploded"}]},
        {"history": ["not an entry"]},
        {"desired": "not a mapping"},
    ],
)
def test_from_json_refuses_what_it_cannot_read(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AppStatus.from_json({**full_status().to_json(), **change})


# --- untrusted text -------------------------------------------------------------------------


async def test_script_in_an_error_a_branch_or_a_name_is_shown_as_text(tmp_path: Path) -> None:
    """Errors hold build output, branches come from config and git: all escaped everywhere
    (the config's own checks would refuse such a name or branch; the pages do not rely on
    them)."""
    async with serve(tmp_path) as face:
        config = face.in_force.config
        first = config.apps[0].model_copy(update={"name": "evil" + EVIL, "branch": EVIL})
        face.in_force.switch_to(config.model_copy(update={"apps": (first, *config.apps[1:])}))
        name = first.name
        face.statuses[name] = AppStatus(
            name=name,
            phase=Phase.FAILED,
            desired_revision=SHA,
            desired_image=EVIL,
            live_image=EVIL,
            last_error=f"{EVIL}\nsecond line {EVIL}",
            history=face.statuses["by-clone-url"].history,
        )
        face.statuses[name].history.appendleft(
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

    monkeypatch.setattr(face.supervisor.view, "commit_subject", subject)
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

    monkeypatch.setattr(face.supervisor.view, "commit_subject", slow)
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


async def test_there_is_no_subject_before_the_mirror_has_the_commit(face: HttpFace) -> None:
    assert await face.supervisor.view.commit_subject("by-clone-url", SHA) is None
    assert await face.supervisor.view.commit_subject("no-such-app", SHA) is None


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


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        ("git@git.corp.example:acme/web.git", f"https://git.corp.example/acme/web/commit/{SHA}"),
        (
            "https://code.corp.example:8443/group/app.git",
            f"https://code.corp.example:8443/group/app/commit/{SHA}",
        ),
        ("https://elsewhere.example/acme/web.git", None),
    ],
)
def test_a_forge_the_config_names_gets_commit_links_as_it_gets_statuses(
    tmp_path: Path, repo: str, expected: str | None
) -> None:
    """A GitHub Enterprise or GitLab on a host the config names by its API URL is a forge we
    know, whatever the host is called; the page links its commits (statuses already go there)."""
    config = parse_config(
        config_text(
            daemon={"state_dir": tmp_path},
            github={"api_url": "https://git.corp.example/api/v3"},
            gitlab={"api_url": "https://code.corp.example:8443/api/v4"},
            apps=[app_table("web", repo)],
        )
    )
    links = Links.of(config)
    assert links.commit(repo, SHA) == expected
    status = AppStatus(name="web", last_transition=datetime.now(UTC), desired_revision=SHA)
    view = app_view("web", status, config.apps[0], links)
    assert view.revision is not None
    assert view.revision.url == expected
    assert commit_url(repo, SHA) is None  # without the config, the host names no forge


def test_only_a_sha_is_linked() -> None:
    assert commit_url("https://github.com/acme/web", "main") is None
    assert commit_url("https://github.com/acme/web", "../../evil") is None


# --- the sync button and the form -----------------------------------------------------------


def buttons(doc: Element) -> list[str]:
    return [f.attrs["action"] for f in doc.all("form", method="post")]


ROLES = {
    "vera": ("viewer", ()),
    "otto": ("operator", ()),
    "sam": ("operator", ("by-ssh-*",)),
}


@pytest.mark.parametrize(
    ("who", "listed", "buttons_shown", "sync"),
    [
        ("vera", list(APPS), False, 403),
        ("otto", list(APPS), True, 202),
        ("sam", ["by-ssh-url", "by-ssh-scheme"], True, 404),
        ("face-admin", list(APPS), True, 202),
    ],
)
async def test_each_identity_sees_its_apps_and_the_buttons_its_role_allows(
    tmp_path: Path, who: str, listed: list[str], buttons_shown: bool, sync: int
) -> None:
    """The list shows only the apps of the identity's globs, an app outside them is 404 by
    name, and the sync button appears where POST /apps/{name}/sync would be accepted."""
    async with serve(tmp_path, roles=ROLES) as face:
        headers = face.bearer(who)
        _, listing, _, _ = await page(face, "/", headers)
        rows = [r.attrs["data-app"] for r in listing.all("tr") if "data-app" in r.attrs]
        assert rows == listed
        assert buttons(listing) == ([f"/apps/{n}/sync" for n in listed] if buttons_shown else [])
        code, one, _, _ = await page(face, "/apps/by-clone-url", headers)
        if "by-clone-url" in listed:
            assert buttons(one) == (["/apps/by-clone-url/sync"] if buttons_shown else [])
        else:
            assert code == 404
        async with face.anonymous.post("/apps/by-clone-url/sync", headers=headers) as answer:
            assert answer.status == sync
        assert face.loops["by-clone-url"].syncs == (1 if sync == 202 else 0)


async def test_a_page_without_an_identity_sends_the_browser_to_log_in(face: HttpFace) -> None:
    async with face.anonymous.get("/", headers=BROWSER, allow_redirects=False) as answer:
        assert answer.status == 303
        assert answer.headers["Location"] == "/login"
    async with face.anonymous.get("/login", headers=BROWSER) as answer:
        assert answer.status == 200
        assert 'name="token"' in await answer.text()


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


async def test_a_refused_form_post_is_an_html_page(tmp_path: Path) -> None:
    async with serve(tmp_path, roles=ROLES) as face:
        headers = {**BROWSER, **face.bearer("vera")}
        async with face.anonymous.post(
            "/apps/by-clone-url/sync", data={"back": "app"}, headers=headers, allow_redirects=False
        ) as answer:
            assert (answer.status, answer.content_type) == (403, "text/html")
        async with face.client.post("/apps/nope/sync", headers=BROWSER) as answer:
            assert (answer.status, answer.content_type) == (404, "text/html")
        assert face.loops["by-clone-url"].syncs == 0


async def test_a_form_on_another_site_cannot_sync(face: HttpFace) -> None:
    """A browser names the page a post comes from; only the dashboard's own pages count. A
    name that resolves to 127.0.0.1 is not the dashboard either: it is not answered at all
    (421), so a rebound page cannot post, nor read."""
    host = f"{face.client.host}:{face.client.port}"
    refused = [
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "http://evil.example:8088", "Host": "evil.example:8088"}, 421),
    ]
    for headers, status in refused:
        async with face.client.post(
            "/apps/by-clone-url/sync", headers={**BROWSER, **headers}, allow_redirects=False
        ) as answer:
            assert answer.status == status, headers
    async with face.client.get("/status", headers={"Host": "evil.example"}) as answer:
        assert answer.status == 421
    assert face.loops["by-clone-url"].syncs == 0
    async with face.client.post(
        "/apps/by-clone-url/sync",
        headers={**BROWSER, "Origin": f"http://{host}"},
        allow_redirects=False,
    ) as answer:
        assert answer.status == 303
    assert face.loops["by-clone-url"].syncs == 1


# --- the event stream -----------------------------------------------------------------------


class WatchedBus(EventBus):
    """The daemon's bus, telling the test which queues are subscribed to it now."""

    def __init__(self) -> None:
        super().__init__()
        self.queues: set[asyncio.Queue[Event]] = set()

    @property
    def subscribers(self) -> int:
        return len(self.queues)

    def subscribe(self, limit: int = QUEUE_LIMIT) -> asyncio.Queue[Event]:
        queue = super().subscribe(limit)
        self.queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        super().unsubscribe(queue)
        self.queues.discard(queue)


def watched(tmp_path: Path) -> tuple[Supervisor, WatchedBus]:
    """A supervisor that runs no app loops, on a bus the test watches."""
    config: Config = parse_config(face_config(tmp_path))
    bus = WatchedBus()
    return supervisor_for(InForce(config), bus=bus), bus


def as_admin(supervisor: Supervisor) -> dict[str, str]:
    """The admin token the daemon made in its state_dir, as a request header."""
    token = admin_token_path(supervisor.view.config).read_text().strip()
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def served(
    supervisor: Supervisor, *, shutdown_timeout: float = 60.0
) -> AsyncIterator[tuple[web.AppRunner, str]]:
    """The admin listener on a real runner, as the daemon runs it (handlers are not cancelled when a
    client goes). The long shutdown_timeout would show as a hang if streams did not end."""
    config = supervisor.view.config
    access, _ = open_access(config, listening=lambda: "127.0.0.1:0", public_url=str)
    app = build_admin_app(supervisor.view, supervisor.steering, access)
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
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
    supervisor, bus = watched(tmp_path)
    async with (
        asyncio.timeout(30),
        served(supervisor) as (_, url),
        aiohttp.ClientSession(headers=as_admin(supervisor)) as http,
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
    supervisor, bus = watched(tmp_path)
    async with asyncio.timeout(30), served(supervisor) as (_, url):
        async with aiohttp.ClientSession(headers=as_admin(supervisor)) as http:
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
    supervisor, bus = watched(tmp_path)
    async with (
        asyncio.timeout(30),
        served(supervisor) as (_, url),
        aiohttp.ClientSession(headers=as_admin(supervisor)) as http,
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
    supervisor, _ = watched(tmp_path)
    async with (
        asyncio.timeout(30),
        served(supervisor) as (_, url),
        aiohttp.ClientSession(headers=as_admin(supervisor)) as http,
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
    supervisor, bus = watched(tmp_path)
    async with (
        asyncio.timeout(30),
        served(supervisor) as (runner, url),
        aiohttp.ClientSession(headers=as_admin(supervisor)) as http,
    ):
        answers = [await http.get(f"{url}/events") for _ in range(2)]
        await eventually(lambda: bus.subscribers == 2, what="two subscriptions")
        cleanup = asyncio.create_task(runner.cleanup())
        for answer in answers:
            assert (await answer.content.read()).startswith(b"retry:")  # then the end
            answer.release()
        await cleanup
        assert bus.subscribers == 0


async def test_a_daemon_that_runs_every_app_reads_no_statuses_for_its_pages(
    tmp_path: Path,
) -> None:
    cluster = StandInCluster(held=set(APPS))
    async with serve(tmp_path, ownership=cluster) as face:
        code, _, _, _ = await page(face, "/")
    assert code == 200
    assert cluster.status_reads == 0


async def test_drift_from_the_definition_is_shown_on_the_app_page_escaped(face: HttpFace) -> None:
    """Each differing path with live and desired values; a value is the console's (anyone
    with ECS access wrote it), so it is escaped like any other text."""
    status = face.statuses["by-clone-url"]
    status.drift = DriftView(
        fields=("memory", "containerDefinitions[web].environment[X].value"),
        since=AT,
        changes=(
            'memory: "1024" -> "512"',
            'containerDefinitions[web].environment[X].value: "<b>x</b>" -> "1"',
        ),
    )
    _, doc, _, _ = await page(face, "/apps/by-clone-url")
    section = doc.one("section", **{"class": "drift"})
    lines = section.one("pre").text.splitlines()
    assert lines == list(status.drift.changes)
    face.statuses["by-clone-url"].drift = None
    _, doc, _, _ = await page(face, "/apps/by-clone-url")
    assert not doc.all("section", **{"class": "drift"})


async def test_the_latest_releases_analysis_is_shown_on_the_app_page_escaped(
    face: HttpFace,
) -> None:
    """One row per check: its name, query (escaped: operators wrote it), values so far (no
    data said so) and verdict; the failure's reason below; no section without analysis."""
    status = face.statuses["by-clone-url"]
    _, doc, _, _ = await page(face, "/apps/by-clone-url")
    assert not doc.all("section", **{"class": "analysis"})
    status.analysis = AnalysisView(
        revision="c" * 40,
        state=State.FAILED,
        checks=[
            CheckResult("5xx", 'prometheus sum(x{a="<b>"})', (0.1, None, 2.5), State.FAILED),
            CheckResult("rps", "cloudwatch AWS/ELB/RequestCount Sum/60s", (), State.RUNNING),
        ],
        started_at=AT,
        reason="analysis 5xx failed: 2 of 3 measurements failed",
    )
    _, doc, _, _ = await page(face, "/apps/by-clone-url")
    section = doc.one("section", **{"class": "analysis"})
    rows = [[cell.text for cell in row.all("td")] for row in section.all("tr")[1:]]
    assert rows == [
        ["5xx", 'prometheus sum(x{a="<b>"})', "0.1, no data, 2.5", "failed"],
        ["rps", "cloudwatch AWS/ELB/RequestCount Sum/60s", "-", "running"],
    ]
    assert section.one("pre").text == "analysis 5xx failed: 2 of 3 measurements failed"
