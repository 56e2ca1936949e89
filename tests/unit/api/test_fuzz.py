"""Fuzzing the daemon's two untrusted inputs: HTTP requests and the config file.

Whatever arrives over HTTP gets an answer other than 500 (a handler crashed); whatever
text the config file holds, `parse_config` returns a Config or raises ConfigError, nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.api.admin import build_admin_app
from reconciler.api.hooks import DELIVERIES, DELIVERY_MEMORY, build_webhook_app
from reconciler.config import Config, parse_config
from reconciler.daemon.access import open_access
from reconciler.daemon.in_force import InForce
from reconciler.errors import ConfigError
from tests.support.config import app_table, config_text, toml_value
from tests.support.http_face import supervisor_for
from tests.support.webhooks import github_headers, signature

REPO = "https://github.com/acme/web.git"
SECRET = "fuzz-webhook-secret"
TOKEN = "fuzz-api-token"
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Served:
    loop: asyncio.AbstractEventLoop
    client: TestClient[Any, Any]  # the admin listener
    hooks: TestClient[Any, Any]  # the webhook listener
    app: Any  # the webhook listener's


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The daemon's aiohttp app, with a Supervisor that runs no app loops."""
    (tmp_path / "secret").write_text(SECRET)
    (tmp_path / "token").write_text(TOKEN)
    config = parse_config(
        config_text(
            daemon={"state_dir": tmp_path / "state", "api_token_file": tmp_path / "token"},
            webhook={
                "github_secret_file": tmp_path / "secret",
                "gitlab_token_file": tmp_path / "secret",
                "max_body_bytes": 4096,
            },
            apps=[app_table("web", REPO)],
        )
    )
    supervisor = supervisor_for(InForce(config))
    access, _ = open_access(config, listening=lambda: "127.0.0.1:0", public_url=str)
    admin = build_admin_app(supervisor.view, supervisor.steering, access)
    app = build_webhook_app(supervisor.view, supervisor.steering)
    loop = asyncio.new_event_loop()
    client: TestClient[Any, Any] = TestClient(TestServer(admin, host="127.0.0.1"), loop=loop)
    hooks: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"), loop=loop)
    loop.run_until_complete(client.start_server())
    loop.run_until_complete(hooks.start_server())
    try:
        yield Served(loop, client, hooks, app)
    finally:
        loop.run_until_complete(client.close())
        loop.run_until_complete(hooks.close())
        loop.close()


# --- HTTP ----------------------------------------------------------------------------------

# What a client can put in a header value: printable Latin-1 (no control characters, no DEL).
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=80,
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@st.composite
def push_like(draw: st.DrawFn) -> bytes:
    """A push payload with some fields replaced by anything JSON can hold."""
    payload: dict[str, Any] = {
        "ref": draw(st.sampled_from(["refs/heads/main", "refs/tags/v1", "main", ""])),
        "after": draw(st.sampled_from(["0" * 40, "a" * 40, ""])),
        "deleted": draw(st.booleans()),
        "repository": {"clone_url": REPO, "html_url": "https://github.com/acme/web"},
        "project": {"git_http_url": REPO},
    }
    for key in draw(st.lists(st.sampled_from([*payload, "commits", "x"]), max_size=3)):
        payload[key] = draw(JSON)
    return json.dumps(payload).encode()


BODIES = st.one_of(
    st.binary(max_size=600),
    JSON.map(lambda value: json.dumps(value).encode()),
    push_like(),
    st.just(b"{" * 3000),  # deep nesting
    st.just(b"x" * 5000),  # over max_body_bytes
)
PATHS = st.one_of(
    st.sampled_from(
        [
            "/hooks/github",
            "/hooks/gitlab",
            "/apps/web/sync",
            "/status",
            "/status/web",
            "/healthz",
            "/readyz",
            "/metrics",
        ]
    ),
    st.text(max_size=30).map(lambda name: "/apps/" + quote(name, safe="") + "/sync"),
    st.text(max_size=30).map(lambda name: "/status/" + quote(name, safe="")),
    # Never "//...": the test client cannot send a protocol-relative URL as a path.
    st.text(max_size=30).map(lambda path: "/" + quote(path).lstrip("/")),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    body = draw(BODIES)
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["X-GitHub-Event"] = draw(st.sampled_from(["push", "ping", "issues"]) | HEADER_TEXT)
    if draw(st.booleans()):
        right = signature(body, SECRET)
        headers["X-Hub-Signature-256"] = draw(st.sampled_from([right, right.upper()]) | HEADER_TEXT)
    if draw(st.booleans()):
        events = st.sampled_from(["Push Hook", "Tag Push Hook"])
        headers["X-Gitlab-Event"] = draw(events | HEADER_TEXT)
    if draw(st.booleans()):
        headers["X-Gitlab-Token"] = draw(st.just(SECRET) | HEADER_TEXT)
    if draw(st.booleans()):
        headers["X-GitHub-Delivery"] = draw(st.sampled_from(["same-id"]) | HEADER_TEXT)
    if draw(st.booleans()):
        headers["Authorization"] = draw(st.just(f"Bearer {TOKEN}") | HEADER_TEXT)
    if draw(st.booleans()):
        headers["Content-Type"] = draw(st.sampled_from(["application/json"]) | HEADER_TEXT)
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]))
    return method, draw(PATHS), headers, body


@FUZZ
@given(request=requests())
@example(request=("GET", "/readyz", {}, b""))
@example(request=("GET", "/healthz", {}, b""))
@example(request=("GET", "/metrics", {}, b""))
@example(request=("POST", "/apps/web/sync", {"Authorization": f"Bearer {TOKEN}"}, b""))
def test_no_request_makes_a_handler_fail(
    served: Served, request: tuple[str, str, dict[str, str], bytes]
) -> None:
    """Any method, path, headers and body, to either listener: never a 500 (a crashed
    handler); errors are JSON. A 503 is a designed answer (an app with no loop right now,
    not ready, not healthy, too many bodies at once)."""
    method, path, headers, body = request

    async def send(client: TestClient[Any, Any]) -> tuple[int, str, bytes]:
        async with client.request(method, path, headers=headers, data=body) as answer:
            return answer.status, answer.content_type, await answer.read()

    for client in (served.hooks, served.client):
        status, content_type, payload = served.loop.run_until_complete(send(client))
        assert status < 500 or status == 503, (status, payload)
        if status >= 400:
            assert content_type == "application/json", (status, content_type, payload)
            assert isinstance(json.loads(payload), dict)


def test_remembered_deliveries_stay_bounded(served: Served) -> None:
    """Thousands of distinct signed deliveries: the replay memory keeps only the newest ones."""
    body = json.dumps({"ref": "refs/heads/main", "repository": {"clone_url": REPO}}).encode()
    signed = signature(body, SECRET)

    async def deliver(delivery: str) -> dict[str, Any]:
        headers = github_headers(signature=signed, delivery=delivery)
        async with served.hooks.post("/hooks/github", data=body, headers=headers) as answer:
            assert answer.status == 202
            return dict(await answer.json())

    async def burst() -> list[dict[str, Any]]:
        ids = [str(uuid.uuid4()) for _ in range(DELIVERY_MEMORY * 2 + 100)]
        for delivery in ids:
            await deliver(delivery)
        return [await deliver(ids[-1]), await deliver(ids[0])]

    newest, oldest = served.loop.run_until_complete(burst())
    assert newest.get("replayed") is True
    assert "replayed" not in oldest  # forgotten long ago: at worst one more pass
    assert len(served.app[DELIVERIES]) == DELIVERY_MEMORY


# --- config --------------------------------------------------------------------------------

VALID = config_text(
    daemon={"listen": "127.0.0.1:8088", "poll_interval": "1m", "state_dir": "/var/lib/reconciler"},
    aws={"region": "eu-west-1", "registry": "127.0.0.1:5000"},
    webhook={"max_body_bytes": 100000},
    apps=[
        app_table(
            "web",
            REPO,
            branch="main",
            paths=["svc/web"],
            build_args={"A": "1"},
            rollout_timeout="10m",
        )
    ],
)
KEYS = [
    *["listen", "poll_interval", "state_dir", "max_concurrent_builds", "log_format"],
    *["api_token_file", "docker_host", "region", "endpoint_url", "registry"],
    *["github_secret_file", "gitlab_token_file", "max_body_bytes", "name", "repo", "branch"],
    *["revision", "paths", "context", "dockerfile", "build_args", "target", "ecr_repository"],
    *["cluster", "service", "containers", "rollout_timeout", "rollback", "suspended"],
    *["git_token_file", "git_ssh_key_file"],
]
SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["30s", "1h30m", "0", "-1", "1e400", "nan", "127.0.0.1:0", "file:///x"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=8,
)


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    """Config-shaped TOML: known sections and keys, any values, some unknown names."""
    lines: list[str] = []
    sections = st.sampled_from(["[daemon]", "[aws]", "[webhook]", "[[apps]]", "[nope]"])
    for header in draw(st.lists(sections, max_size=4)):
        lines.append(header)
        keys = draw(st.lists(st.sampled_from([*KEYS, "unknown"]), max_size=6, unique=True))
        lines.extend(f"{key} = {toml_value(draw(VALUES))}" for key in keys)
    return "\n".join(lines) + "\n"


@st.composite
def mutated_valid(draw: st.DrawFn) -> str:
    """The valid config with one line's value replaced, or one line dropped."""
    lines = VALID.splitlines()
    index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
    key, sep, _ = lines[index].partition(" = ")
    if sep and draw(st.booleans()):
        lines[index] = f"{key} = {toml_value(draw(VALUES))}"
    else:
        del lines[index]
    return "\n".join(lines) + "\n"


def parses_or_refuses(text: str) -> None:
    try:
        config = parse_config(text)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
    else:
        assert isinstance(config, Config)


def test_the_valid_example_parses() -> None:
    """The seed of the mutations is itself valid, so mutations test what they claim to."""
    assert parse_config(VALID).apps[0].name == "web"


@FUZZ
@given(text=st.text(max_size=400))
def test_any_text_parses_or_gives_config_error(text: str) -> None:
    """Arbitrary text: a Config or a ConfigError, never another exception."""
    parses_or_refuses(text)


@FUZZ
@given(text=toml_documents() | mutated_valid())
def test_any_config_shaped_toml_parses_or_gives_config_error(text: str) -> None:
    """Config-shaped TOML, wrong types, bad durations, unknown keys: Config or ConfigError."""
    parses_or_refuses(text)


@settings(max_examples=100, deadline=None)
@given(
    variable=st.sampled_from(
        [
            "RECONCILER_DAEMON__POLL_INTERVAL",
            "RECONCILER_DAEMON__LISTEN",
            "RECONCILER_DAEMON",
            "RECONCILER_AWS",
            "RECONCILER_AWS__REGION",
            "RECONCILER_WEBHOOK__MAX_BODY_BYTES",
            "RECONCILER_APPS",
        ]
    ),
    value=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")),
)
def test_any_environment_override_parses_or_gives_config_error(variable: str, value: str) -> None:
    """RECONCILER_* variables are config too: anything in them is a Config or a ConfigError."""
    previous = os.environ.get(variable)
    os.environ[variable] = value
    try:
        parses_or_refuses(VALID)
    finally:
        if previous is None:
            del os.environ[variable]
        else:
            os.environ[variable] = previous
