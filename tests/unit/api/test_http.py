"""The daemon's HTTP face: who may nudge or sync which app, and what each route answers.

The supervisor is real (config, app matching, status, metrics); its app loops are stand-ins
that count nudges and syncs, because what a nudge then does to a pass is the loop's business
(tests/e2e covers it). Webhook payloads are real deliveries from tests/fixtures/webhooks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.api import hooks
from reconciler.decisions.model import HistoryEntry, Phase, Result
from tests.support.http_face import API_TOKEN, APPS, MAX_BODY, HttpFace, serve, sign
from tests.support.webhooks import fixture

GITHUB_MATCHES = sorted(["by-clone-url", "by-ssh-url", "by-html-url", "by-ssh-scheme"])


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[HttpFace]:
    async with serve(tmp_path) as running:
        yield running


# --- GitHub -------------------------------------------------------------------------------


async def test_github_ping_is_answered_200_and_nudges_nothing(daemon: HttpFace) -> None:
    """GitHub's ping on hook creation succeeds, so the hook shows as working."""
    status, _ = await daemon.github(fixture("github/ping.payload.json"), event="ping")
    assert status == 200
    assert daemon.nudged() == []


async def test_github_push_nudges_apps_on_that_repo_and_branch_however_the_url_is_spelled(
    daemon: HttpFace,
) -> None:
    """clone_url, ssh_url and html_url forms all match; another branch or repo does not."""
    status, body = await daemon.github(fixture("github/push-with-new-branch.payload.json"))
    assert status == 202
    assert sorted(body["nudged"]) == GITHUB_MATCHES
    assert daemon.nudged() == GITHUB_MATCHES
    assert all(daemon.loops[name].nudges == 1 for name in GITHUB_MATCHES)


async def test_github_tag_deletion_is_accepted_and_nudges_nothing(daemon: HttpFace) -> None:
    """A push that is not to a tracked branch is a 202 with an empty list."""
    status, body = await daemon.github(fixture("github/push-tag-deleted.payload.json"))
    assert (status, body["nudged"]) == (202, [])
    assert daemon.nudged() == []


@pytest.mark.parametrize(
    "signature",
    [
        sign(fixture("github/push-with-new-branch.payload.json"), "not-the-secret"),
        "",
        "sha1=" + "0" * 40,
    ],
    ids=["wrong-secret", "empty", "sha1-form"],
)
async def test_github_push_with_a_bad_signature_is_401_and_nudges_nothing(
    daemon: HttpFace, signature: str
) -> None:
    """A forged delivery cannot even cost a pass."""
    status, body = await daemon.github(
        fixture("github/push-with-new-branch.payload.json"), signature=signature
    )
    assert status == 401
    assert "error" in body
    assert daemon.nudged() == []
    assert (
        'reconciler_webhook_requests_total{outcome="bad_signature",provider="github"} 1.0'
        in await daemon.metrics()
    )


async def test_github_push_without_a_signature_header_is_401(daemon: HttpFace) -> None:
    """No X-Hub-Signature-256 at all is refused like a wrong one."""
    body = fixture("github/push-with-new-branch.payload.json")
    headers = {"X-GitHub-Event": "push"}
    async with daemon.hooks.post("/hooks/github", data=body, headers=headers) as answer:
        assert answer.status == 401
    assert daemon.nudged() == []


async def test_webhooks_without_a_configured_secret_are_401(tmp_path: Path) -> None:
    """An unsigned hook is never accepted: no secret configured means every delivery is refused."""
    async with serve(tmp_path, secrets=False) as daemon:
        body = fixture("github/push-with-new-branch.payload.json")
        status, _ = await daemon.github(body, signature=sign(body))
        assert status == 401
        status, _ = await daemon.gitlab(fixture("gitlab/push.payload.json"))
        assert status == 401
        assert daemon.nudged() == []
        metrics = await daemon.metrics()
    assert 'reconciler_webhook_requests_total{outcome="no_secret",provider="github"} 1.0' in metrics


async def test_github_body_over_the_limit_is_413_without_waiting_for_the_rest(
    daemon: HttpFace,
) -> None:
    """The sender stalls after max_body_bytes + 1: the answer comes anyway, and nothing is nudged.

    A server that read the whole body first would never answer this request.
    """
    never = asyncio.Event()

    async def endless_body() -> AsyncIterator[bytes]:
        yield b"{" + b" " * MAX_BODY
        await never.wait()
        yield b"}"

    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    async with (
        asyncio.timeout(30),
        daemon.hooks.post("/hooks/github", data=endless_body(), headers=headers) as answer,
    ):
        assert answer.status == 413
        assert "error" in await answer.json()
    assert daemon.nudged() == []


async def test_github_body_declared_over_the_limit_is_413(daemon: HttpFace) -> None:
    """A Content-Length over max_body_bytes is refused even when the signature is right."""
    body = fixture("github/push-with-new-branch.payload.json")
    padded = body[:-1] + b" " * MAX_BODY + body[-1:]
    status, _ = await daemon.github(padded)
    assert status == 413
    assert daemon.nudged() == []


async def test_github_signed_but_malformed_json_is_400(daemon: HttpFace) -> None:
    """A delivery that is not a JSON object is a 400, not a crash and not a nudge."""
    for body in (b'{"ref": "refs/heads/master", ', b"[1, 2, 3]"):
        status, answer = await daemon.github(body)
        assert status == 400
        assert answer["error"]
    assert daemon.nudged() == []


async def test_a_replayed_github_delivery_is_not_nudged_twice(daemon: HttpFace) -> None:
    """The same X-GitHub-Delivery id sent again is answered but does not nudge again."""
    body = fixture("github/push-with-new-branch.payload.json")
    first = await daemon.github(body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    again = await daemon.github(body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    other = await daemon.github(body, delivery="a-different-delivery")
    assert sorted(first[1]["nudged"]) == GITHUB_MATCHES
    assert again == (202, {"nudged": [], "replayed": True})
    assert sorted(other[1]["nudged"]) == GITHUB_MATCHES
    assert all(daemon.loops[name].nudges == 2 for name in GITHUB_MATCHES)


# --- GitLab -------------------------------------------------------------------------------


async def test_gitlab_push_hook_with_the_token_nudges_the_matching_app(daemon: HttpFace) -> None:
    """GitLab's push (http and git@ URLs of mike/diaspora) nudges the app on that repository."""
    status, body = await daemon.gitlab(fixture("gitlab/push.payload.json"))
    assert (status, body["nudged"]) == (202, ["gitlab-app"])
    assert daemon.nudged() == ["gitlab-app"]


@pytest.mark.parametrize("token", ["not-the-token", None], ids=["wrong", "missing"])
async def test_gitlab_push_with_a_wrong_or_missing_token_is_401(
    daemon: HttpFace, token: str | None
) -> None:
    """The token is the only proof GitLab gives; without it nothing happens."""
    status, _ = await daemon.gitlab(fixture("gitlab/push.payload.json"), token=token)
    assert status == 401
    assert daemon.nudged() == []


async def test_gitlab_events_it_ignores_are_200(daemon: HttpFace) -> None:
    """GitLab disables hooks that keep failing, so an unwanted event still succeeds."""
    status, body = await daemon.gitlab(b'{"object_kind": "issue"}', event="Issue Hook")
    assert (status, body["nudged"]) == (200, [])
    assert daemon.nudged() == []


# --- Routing -----------------------------------------------------------------------------


async def test_wrong_method_is_405_with_a_json_body(daemon: HttpFace) -> None:
    """GET on a webhook route says which method is allowed, in JSON like every other error."""
    async with daemon.hooks.get("/hooks/github") as answer:
        assert answer.status == 405
        assert answer.headers["Allow"] == "POST"
        assert "error" in await answer.json()


async def test_unknown_route_is_404_with_a_json_body(daemon: HttpFace) -> None:
    """Clients and probes get JSON, never aiohttp's HTML page."""
    status, body = await daemon.get("/no/such/route")
    assert status == 404
    assert "error" in body


# --- Sync ---------------------------------------------------------------------------------


async def test_sync_by_an_operator_starts_a_pass_and_clears_the_hold(daemon: HttpFace) -> None:
    """An identity that may sync the app has its loop told to; nothing else is told."""
    async with daemon.client.post("/apps/by-clone-url/sync") as answer:
        assert answer.status == 202
    assert daemon.loops["by-clone-url"].syncs == 1
    assert sum(loop.syncs for loop in daemon.loops.values()) == 1


async def test_sync_of_an_unknown_app_is_404(daemon: HttpFace) -> None:
    """A typo in the app name is reported, not silently accepted."""
    async with daemon.client.post("/apps/no-such-app/sync") as answer:
        assert answer.status == 404
        assert "no-such-app" in (await answer.json())["error"]


async def test_sync_without_an_identity_is_401_from_any_address(daemon: HttpFace) -> None:
    """An address is never an identity: loopback (a TLS proxy on the same host makes every
    internet client loopback), another host, or one X-Forwarded-For names."""
    for headers in (
        {},
        {"X-Test-Peer": "203.0.113.7"},
        {"X-Test-Peer": "2001:db8::1"},
        {"X-Forwarded-For": "127.0.0.1"},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": daemon.admin_token},
        {"Authorization": f"Basic {daemon.admin_token}"},
    ):
        async with daemon.anonymous.post("/apps/by-clone-url/sync", headers=headers) as answer:
            assert answer.status == 401, headers
            assert "identity" in (await answer.json())["error"]
    assert daemon.loops["by-clone-url"].syncs == 0


async def test_sync_with_api_token_file_still_works_as_one_admin_token(tmp_path: Path) -> None:
    """The deprecated api_token_file is one more admin token, from wherever it is sent."""
    async with serve(tmp_path, api_token=True) as daemon:
        right = {"Authorization": f"Bearer {API_TOKEN}", "X-Test-Peer": "203.0.113.7"}
        async with daemon.anonymous.post("/apps/by-clone-url/sync", headers=right) as answer:
            assert answer.status == 202
        assert daemon.loops["by-clone-url"].syncs == 1


# --- Status, health, metrics ------------------------------------------------------------


async def test_status_lists_every_app_with_the_documented_fields(daemon: HttpFace) -> None:
    """GET /status gives one AppStatus per app in config order, and the config in force."""
    status = daemon.statuses["by-clone-url"]
    status.phase = Phase.FAILED
    status.desired_revision = "a" * 40
    status.desired_image = f"127.0.0.1:5000/by-clone-url:{'a' * 40}"
    status.last_error = "rollout failed"
    moment = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    status.history.appendleft(
        HistoryEntry(
            revision="a" * 40,
            result=Result.ROLLED_BACK,
            started_at=moment,
            finished_at=moment,
            error="rollout failed",
        )
    )
    code, body = await daemon.get("/status")
    assert code == 200
    assert [a["name"] for a in body["apps"]] == list(APPS)
    app = body["apps"][0]
    assert set(app) == {
        "name",
        "phase",
        "desired",
        "live",
        "last_error",
        "last_transition",
        "history",
        "rollout",
        "promoted_from",
        "pinned_by",
        "pinned_revision",
    }  # and `drift`, while live differs from the app's definitions
    assert app["phase"] == "Failed"
    assert app["desired"] == {"revision": "a" * 40, "image": status.desired_image}
    assert app["live"] == {"image": None, "task_definition": None}
    assert app["last_transition"].endswith("Z")
    assert app["history"] == [
        {
            "revision": "a" * 40,
            "result": "rolled_back",
            "started_at": "2024-05-01T12:00:00Z",
            "finished_at": "2024-05-01T12:00:00Z",
            "error": "rollout failed",
        }
    ]
    assert body["config"]["sha256"] == daemon.in_force.record.sha256
    assert body["config"]["last_error"] is None


async def test_status_of_one_app_and_404_for_an_unknown_one(daemon: HttpFace) -> None:
    """GET /status/{name} is that app's AppStatus; an unknown name is a 404."""
    code, body = await daemon.get("/status/by-ssh-url")
    assert (code, body["name"], body["phase"]) == (200, "by-ssh-url", "Pending")
    code, body = await daemon.get("/status/nope")
    assert code == 404
    assert "error" in body


async def test_readyz_is_503_until_every_app_was_observed(daemon: HttpFace) -> None:
    """A load balancer holds traffic until each app has been looked at once."""
    statuses = daemon.statuses
    for name in list(APPS)[:-1]:
        statuses[name].observed = True
    code, body = await daemon.get("/readyz")
    assert code == 503
    assert body["waiting_for"] == ["gitlab-app"]
    statuses["gitlab-app"].observed = True
    code, _ = await daemon.get("/readyz")
    assert code == 200
    # An app in the config whose loop has not started yet (just added by a reload) counts.
    del statuses["other-repo"]
    code, body = await daemon.get("/readyz")
    assert (code, body["waiting_for"]) == (503, ["other-repo"])


async def test_healthz_is_503_once_an_app_loop_has_died(daemon: HttpFace) -> None:
    """systemd or an orchestrator can restart a daemon whose app loop is gone."""
    code, _ = await daemon.get("/healthz")
    assert code == 200

    daemon.loops["by-ssh-url"].end()
    await asyncio.sleep(0)
    code, _ = await daemon.get("/healthz")
    assert code == 503


async def test_metrics_count_webhook_deliveries_by_provider_and_outcome(daemon: HttpFace) -> None:
    """Each delivery is counted once under what became of it."""
    await daemon.github(fixture("github/push-with-new-branch.payload.json"))
    await daemon.github(fixture("github/ping.payload.json"), event="ping")
    await daemon.gitlab(fixture("gitlab/push.payload.json"), token="wrong")
    await daemon.gitlab(b"{}", event="Issue Hook")
    metrics = await daemon.metrics()
    for provider, outcome in [
        ("github", "nudged"),
        ("github", "ping"),
        ("gitlab", "bad_signature"),
        ("gitlab", "ignored"),
    ]:
        line = f'reconciler_webhook_requests_total{{outcome="{outcome}",provider="{provider}"}} 1.0'
        assert line in metrics
    assert "# TYPE reconciler_build_seconds histogram" in metrics
    assert "# TYPE reconciler_rollout_seconds histogram" in metrics


# --- the webhook listener's bounds --------------------------------------------------------


async def _slow_sender(
    host: str, port: int, *, length: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that sends a webhook's headers and then only a byte of its body."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        (
            f"POST /hooks/github HTTP/1.1\r\nHost: {host}\r\nX-GitHub-Event: push\r\n"
            f"X-Hub-Signature-256: sha256=00\r\nContent-Length: {length}\r\n\r\n{{"
        ).encode()
    )
    await writer.drain()
    return reader, writer


async def test_a_body_that_does_not_arrive_in_time_is_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender that stops half way is answered within the deadline, and nothing nudged."""
    monkeypatch.setattr(hooks, "BODY_DEADLINE", 0.3)
    async with serve(tmp_path) as daemon:
        host, port = daemon.hooks.host, daemon.hooks.port
        assert port is not None
        reader, writer = await _slow_sender(host, port, length=100)
        async with asyncio.timeout(10):
            status_line = await reader.readline()
        writer.close()
        assert status_line.split()[1] == b"408"
        assert daemon.nudged() == []


async def test_more_unsigned_bodies_at_once_than_the_bound_get_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks, "UNVERIFIED_AT_ONCE", 1)
    async with serve(tmp_path) as daemon:
        host, port = daemon.hooks.host, daemon.hooks.port
        assert port is not None
        _, holding = await _slow_sender(host, port, length=100)
        await asyncio.sleep(0.2)  # the first body is being read, its slot taken
        body = fixture("github/push-with-new-branch.payload.json")
        status, answer = await daemon.github(body)
        holding.close()
        assert status == 503
        assert "try again" in answer["error"]
        assert daemon.nudged() == []
