"""Who may reach what on the admin listener: each role against each endpoint, app globs,
revoked tokens, sessions, proxies, and the audit line every state change leaves."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from reconciler.adapters.tokens import revoke_token
from reconciler.api.web import stream
from reconciler.app.events import PhaseChanged
from reconciler.app.status import ApprovalView
from reconciler.daemon.access import AUDIT_LOG
from reconciler.decisions.approval import ApprovalRequest
from reconciler.decisions.model import Phase
from tests.support.http_face import HttpFace, serve

ROLES = {
    "vera": ("viewer", ()),
    "otto": ("operator", ()),
    "sam": ("operator", ("by-ssh-*",)),
}
APP = "by-clone-url"  # outside sam's globs
ROUTES: list[tuple[str, str]] = [
    ("GET", "/status"),
    ("GET", f"/status/{APP}"),
    ("GET", "/metrics"),
    ("GET", "/audit"),
    ("GET", f"/apps/{APP}"),
    ("POST", f"/apps/{APP}/sync"),
    ("POST", f"/apps/{APP}/unpin"),
    ("POST", f"/apps/{APP}/rollback"),
]
# who: the status each route answers, in ROUTES' order (rollback: 409, nothing to roll to)
EXPECTED = {
    None: [401, 401, 401, 401, 303, 401, 401, 401],
    "vera": [200, 200, 200, 200, 200, 403, 403, 403],
    "otto": [200, 200, 200, 200, 200, 202, 202, 409],
    "sam": [200, 404, 200, 200, 404, 404, 404, 404],
    "face-admin": [200, 200, 200, 200, 200, 202, 202, 409],
}


async def call(face: HttpFace, method: str, path: str, who: str | None) -> tuple[int, Any]:
    headers = face.bearer(who) if who is not None else {}
    if path.startswith("/apps/") and method == "GET":
        headers["Accept"] = "text/html"
    async with face.anonymous.request(
        method, path, headers=headers, allow_redirects=False
    ) as answer:
        text = await answer.text()
        return answer.status, text


@pytest.mark.parametrize("who", list(EXPECTED), ids=[str(w) for w in EXPECTED])
async def test_each_role_against_each_endpoint(tmp_path: Path, who: str | None) -> None:
    async with serve(tmp_path, roles=ROLES) as face:
        got = [(await call(face, method, path, who))[0] for method, path in ROUTES]
        assert got == EXPECTED[who], list(zip(ROUTES, got, strict=True))
        syncs = face.loops[APP].syncs
        assert syncs == (1 if EXPECTED[who][5] == 202 else 0)


async def test_lists_and_metrics_show_an_identity_only_its_apps(tmp_path: Path) -> None:
    async with serve(tmp_path, roles=ROLES) as face:
        _, text = await call(face, "GET", "/status", "sam")
        assert [a["name"] for a in json.loads(text)["apps"]] == ["by-ssh-url", "by-ssh-scheme"]
        _, metrics = await call(face, "GET", "/metrics", "sam")
        assert f'app="{APP}"' not in metrics
        assert 'app="by-ssh-url"' in metrics
        _, everything = await call(face, "GET", "/metrics", "vera")
        assert f'app="{APP}"' in everything


async def test_a_revoked_token_and_its_sessions_end_at_once(tmp_path: Path) -> None:
    async with serve(tmp_path, roles=ROLES) as face:
        token = face.tokens["otto"]
        async with face.anonymous.post(
            "/login", data={"token": token}, allow_redirects=False
        ) as answer:
            assert answer.status == 303
            cookie = answer.cookies["reconciler_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        session = {"Cookie": f"reconciler_session={cookie.value}"}
        async with face.anonymous.get("/status", headers=session) as answer:
            assert answer.status == 200
        tokens_file = tmp_path / "tokens.toml"
        revoke_token(tokens_file, "otto")
        st = tokens_file.stat()
        os.utime(tokens_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        for headers in (session, face.bearer("otto")):
            async with face.anonymous.get("/status", headers=headers) as answer:
                assert answer.status == 401


async def test_a_forged_cookie_and_a_bad_login_are_nobody(tmp_path: Path) -> None:
    async with serve(tmp_path, roles=ROLES) as face:
        forged = {"Cookie": "reconciler_session=eyJoIjoiYSIsImUiOjk5OTk5OTk5OTl9.AAAA"}
        async with face.anonymous.get("/status", headers=forged) as answer:
            assert answer.status == 401
        async with face.anonymous.post(
            "/login", data={"token": "not-a-token"}, allow_redirects=False
        ) as answer:
            assert answer.status == 401
            assert "set-cookie" not in answer.headers


async def test_every_state_change_is_audited_accepted_or_refused(tmp_path: Path) -> None:
    async with serve(tmp_path, roles=ROLES) as face:
        await call(face, "POST", f"/apps/{APP}/sync", "otto")
        assert face.loops[APP].asked_by == "otto"  # its outcome will say who asked
        await call(face, "POST", f"/apps/{APP}/sync", "vera")
        await call(face, "POST", f"/apps/{APP}/sync", None)
        await call(face, "POST", f"/apps/{APP}/sync", "sam")
        lines = (tmp_path / "state" / AUDIT_LOG).read_text().splitlines()
        entries = [json.loads(line) for line in lines]
        assert [
            (e["identity"], e["role"], e["action"], e["app"], e["result"][:12]) for e in entries
        ] == [
            ("otto", "operator", "sync", APP, "accepted"),
            ("vera", "viewer", "sync", APP, "refused: 403"),
            ("-", "-", "sync", APP, "refused: 401"),
            ("sam", "operator", "sync", APP, "refused: 404"),
        ]
        assert all(e["address"] == "127.0.0.1" and e["via"] in ("token", "-") for e in entries)
        _, text = await call(face, "GET", "/audit", "sam")
        assert json.loads(text)["entries"] == []  # sam does not see by-clone-url
        _, text = await call(face, "GET", f"/audit?app={APP}", "vera")
        assert len(json.loads(text)["entries"]) == 4


async def test_a_state_change_sent_to_another_name_is_refused_and_audited(
    tmp_path: Path,
) -> None:
    """A page on a name rebound to this address gets 421, even with a valid token, and the
    attempt is in the audit like any refused change."""
    async with serve(tmp_path, roles=ROLES) as face:
        headers = {**face.bearer("otto"), "Host": "evil.example"}
        async with face.anonymous.post(f"/apps/{APP}/sync", headers=headers) as answer:
            assert answer.status == 421
        assert face.loops[APP].syncs == 0
        (line,) = (tmp_path / "state" / AUDIT_LOG).read_text().splitlines()
        entry = json.loads(line)
        assert (entry["action"], entry["app"], entry["identity"]) == ("sync", APP, "-")
        assert entry["result"].startswith("refused: 421")


async def test_a_trusted_proxy_names_the_user_and_nobody_else_can(tmp_path: Path) -> None:
    async with serve(tmp_path, roles=ROLES, trusted_proxies=["198.51.100.0/24"]) as face:
        face.tokens_file.write_text(
            face.tokens_file.read_text() + '\n[[user]]\nname = "bob@example.com"\nrole = "viewer"\n'
        )
        st = face.tokens_file.stat()
        os.utime(face.tokens_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        proxied = {"X-Forwarded-User": "bob@example.com", "X-Test-Peer": "198.51.100.7"}
        async with face.anonymous.get("/status", headers=proxied) as answer:
            assert answer.status == 200
        for headers in (
            {"X-Forwarded-User": "bob@example.com"},  # loopback is no proxy of ours
            {"X-Forwarded-User": "bob@example.com", "X-Test-Peer": "203.0.113.9"},
            {"X-Forwarded-User": "eve@example.com", "X-Test-Peer": "198.51.100.7"},
        ):
            async with face.anonymous.get("/status", headers=headers) as answer:
                assert answer.status == 401, headers


async def test_event_streams_are_bounded_and_carry_only_the_callers_apps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound a new stream is 503 (each holds a queue and a connection); a stream
    says nothing of apps outside the caller's globs."""
    monkeypatch.setattr(stream, "MAX_STREAMS", 2)
    async with serve(tmp_path, roles=ROLES) as face:
        opened = [await face.anonymous.get("/events", headers=face.bearer("sam")) for _ in range(2)]
        try:
            assert [answer.status for answer in opened] == [200, 200]
            async with face.anonymous.get("/events", headers=face.bearer("otto")) as third:
                assert third.status == 503
            bus = face.supervisor.view.bus
            for app in (APP, "by-ssh-url"):
                bus.publish(
                    PhaseChanged(
                        app=app, phase=Phase.BUILDING, previous=Phase.IN_SYNC, revision=None
                    )
                )
            seen = await next_data(opened[0])
            assert seen["app"] == "by-ssh-url"  # the by-clone-url event was not sent to sam
        finally:
            for answer in opened:
                answer.close()


async def next_data(answer: aiohttp.ClientResponse) -> dict[str, Any]:
    async with asyncio.timeout(10):
        async for raw in answer.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data:"):
                event: dict[str, Any] = json.loads(line.removeprefix("data:").strip())
                return event
    raise AssertionError("the stream ended before an event")


async def test_an_override_of_a_freeze_needs_an_admin_and_a_reason(tmp_path: Path) -> None:
    """`{"override_freeze": true, "reason": ...}` on sync: an operator gets 403, a missing or
    unprintable reason 400, an admin 202 with the reason handed to the app's loop; each is
    audited as override_freeze."""
    async with serve(tmp_path, roles=ROLES) as face:

        async def override(who: str, reason: object) -> int:
            body = {"override_freeze": True, "reason": reason}
            async with face.anonymous.post(
                f"/apps/{APP}/sync", json=body, headers=face.bearer(who)
            ) as answer:
                return answer.status

        assert await override("otto", "hotfix") == 403
        assert await override("face-admin", "") == 400
        assert await override("face-admin", "a\x1b[2Jb") == 400
        assert face.loops[APP].syncs == 0
        assert await override("face-admin", "hotfix INC-7") == 202
        assert face.loops[APP].override_freeze == "hotfix INC-7"
        lines = (tmp_path / "state" / AUDIT_LOG).read_text().splitlines()
        entries = [json.loads(line) for line in lines]
        assert [(e["identity"], e["action"], e["result"][:12]) for e in entries] == [
            ("otto", "override_freeze", "refused: 403"),
            ("face-admin", "override_freeze", "refused: 400"),
            ("face-admin", "override_freeze", "refused: 400"),
            ("face-admin", "override_freeze", "accepted"),
        ]
        assert entries[-1]["args"] == {"reason": "hotfix INC-7"}


APPROVERS = {**ROLES, "olga": ("operator", ())}  # olga operates every app but approves none
REV = "c" * 40
DAY = timedelta(days=1)
DIGEST = "sha256:" + "d" * 64


async def test_approvals_need_an_operator_the_app_names_and_the_waiting_release(
    tmp_path: Path,
) -> None:
    """approve/reject: a viewer 403, an identity outside the app's globs 404, an operator the
    app's `approvers` does not name 403, a revision or digest that is not the waiting one 409
    naming it; an approver's vote lands in the app's memory, wakes its loop as theirs, and
    every call is one audit line with revision, digest and comment."""
    async with serve(tmp_path, roles=APPROVERS, approval={"approvers": ["otto"]}) as face:
        assert face.store is not None

        async def vote(who: str, verb: str, **body: object) -> tuple[int, Any]:
            async with face.anonymous.post(
                f"/apps/{APP}/{verb}", json=body, headers=face.bearer(who)
            ) as answer:
                return answer.status, await answer.json()

        nothing = await vote("otto", "approve", revision=REV)
        assert nothing == (409, {"error": f"no release of app {APP!r} waits for approval"})
        now = datetime.now(UTC)
        face.store.load(APP).approval = ApprovalRequest(
            revision=REV, digest=DIGEST, required=1, requested_at=now, expires_at=now + DAY
        )
        assert (await vote("vera", "approve", revision=REV))[0] == 403
        assert (await vote("sam", "approve", revision=REV))[0] == 404
        status, said = await vote("olga", "approve", revision=REV, comment="ok")
        assert (status, said["error"]) == (403, f"olga is not an approver of app {APP!r}")
        assert (await vote("otto", "approve", revision=REV[:6]))[0] == 409
        status, said = await vote("otto", "approve", revision=REV, digest="sha256:" + "e" * 64)
        assert status == 409
        assert f"waiting for approval is {REV} (digest {DIGEST})" in said["error"]
        assert (await vote("otto", "approve", revision=["x"]))[0] == 400
        assert face.loops[APP].nudges == 0
        status, said = await vote("otto", "approve", revision=REV[:12], comment="ship it")
        assert status == 202
        assert (said["approved"], said["approvals"]) == (True, ["otto"])
        request = face.store.load(APP).approval
        assert request is not None and request.approvals[0].comment == "ship it"
        assert (face.loops[APP].nudges, face.loops[APP].asked_by) == (1, "otto")
        entries = [
            json.loads(line)
            for line in (tmp_path / "state" / AUDIT_LOG).read_text().splitlines()
            if '"approve"' in line
        ]
        assert [(e["identity"], e["result"][:12]) for e in entries] == [
            ("otto", "refused: 409"),
            ("vera", "refused: 403"),
            ("sam", "refused: 404"),
            ("olga", "refused: 403"),
            ("otto", "refused: 409"),
            ("otto", "refused: 409"),
            ("otto", "refused: 400"),
            ("otto", "accepted"),
        ]
        assert entries[-1]["args"] == {"revision": REV[:12], "digest": "", "comment": "ship it"}


async def test_a_rejection_is_kept_with_who_said_it(tmp_path: Path) -> None:
    """A reject by an approver marks the waiting request rejected (the pass then holds the
    revision); a later approval of it is 409."""
    async with serve(tmp_path, roles=APPROVERS, approval={"required": 2}) as face:
        assert face.store is not None
        now = datetime.now(UTC)
        face.store.load(APP).approval = ApprovalRequest(
            revision=REV, digest=DIGEST, required=2, requested_at=now, expires_at=now + DAY
        )
        body = {"revision": REV, "digest": DIGEST, "comment": "not on a Friday"}
        async with face.anonymous.post(
            f"/apps/{APP}/reject", json=body, headers=face.bearer("olga")
        ) as answer:
            assert answer.status == 202
            assert (await answer.json())["rejected_by"] == "olga"
        request = face.store.load(APP).approval
        assert request is not None and request.rejected is not None
        assert (request.rejected.by, request.rejected.comment) == ("olga", "not on a Friday")
        async with face.anonymous.post(
            f"/apps/{APP}/approve", json={"revision": REV}, headers=face.bearer("otto")
        ) as answer:
            assert answer.status == 409
            assert "was rejected by olga" in (await answer.json())["error"]


async def test_the_app_page_shows_the_waiting_release_and_its_forms_vote(tmp_path: Path) -> None:
    """While a release waits, the app's page shows its revision, digest and deadline with
    Approve and Reject forms (operators only); a posted form votes as the caller and sends the
    browser back to the page."""
    async with serve(tmp_path, roles=APPROVERS, approval={"approvers": ["otto"]}) as face:
        assert face.store is not None
        now = datetime.now(UTC)
        face.store.load(APP).approval = ApprovalRequest(
            revision=REV, digest=DIGEST, required=1, requested_at=now, expires_at=now + DAY
        )
        status = face.statuses[APP]
        status.phase = Phase.AWAITING_APPROVAL
        status.approval = ApprovalView(
            revision=REV, digest=DIGEST, required=1, expires_at=now + DAY
        )
        _, page = await call(face, "GET", f"/apps/{APP}", "otto")
        assert "Waiting for approval" in page and DIGEST in page
        assert f'action="/apps/{APP}/approve"' in page
        _, seen = await call(face, "GET", f"/apps/{APP}", "vera")
        assert DIGEST in seen and "/approve" not in seen
        form = {"revision": REV, "digest": DIGEST, "comment": "from the page"}
        async with face.anonymous.post(
            f"/apps/{APP}/approve",
            data=form,
            headers={**face.bearer("otto"), "Accept": "text/html"},
            allow_redirects=False,
        ) as answer:
            assert answer.status == 303
            assert answer.headers["Location"].endswith(f"/apps/{APP}")
        request = face.store.load(APP).approval
        assert request is not None and request.approved
        assert request.approvals[0].comment == "from the page"
