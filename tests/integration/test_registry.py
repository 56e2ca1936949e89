"""The registry adapter: whether a tag exists is asked of the registry itself, never assumed.

Against the local CNCF registry for the real answers, and against tiny aiohttp servers on
loopback for the auth flows and failures the local registry (no auth) cannot produce.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from reconciler.adapters.registry import (
    MANIFEST_MEDIA_TYPES,
    TRANSPORT_ERRORS,
    Registry,
    RegistryAuth,
    parse_bearer_challenge,
    registry_errors,
    registry_url,
)
from reconciler.aio.loopback import is_loopback
from reconciler.errors import RegistryUnavailable, StalledError
from tests.support.net import free_port

PASSWORD = "ecr-password-" + uuid.uuid4().hex
AUTH = RegistryAuth(username="AWS", password=PASSWORD, server="127.0.0.1")
TOKEN = "token-" + uuid.uuid4().hex

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a loopback HTTP server answering every path with `handler`; yields host:port."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def registry_client() -> AsyncIterator[Registry]:
    client = Registry(timeout=5.0)
    yield client
    await client.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def token_registry(*, allow_anonymous: bool = False) -> Handler:
    """A registry with token auth, like the CNCF registry's `auth.token` or Docker Hub.

    Manifests answer 401 with a Bearer challenge unless the request carries the token; the
    token service at /token hands it out for the right Basic credentials (or to anyone when
    `allow_anonymous`). Only tag `present` of repository `app` exists.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        host = request.host
        if request.path == "/token":
            given = request.headers.get("Authorization")
            ok_scope = request.query.get("scope") == "repository:app:pull"
            ok_service = request.query.get("service") == "test-registry"
            if not (ok_scope and ok_service):
                return web.Response(status=400)
            if given != basic(AUTH.username, AUTH.password) and not allow_anonymous:
                return web.Response(status=401)
            return web.json_response({"token": TOKEN})
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            challenge = (
                f'Bearer realm="http://{host}/token",service="test-registry",'
                f'scope="repository:app:pull"'
            )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        if request.path == "/v2/app/manifests/present":
            return web.Response(status=200)
        return web.Response(status=404)

    return handle


def basic_registry() -> Handler:
    """A registry that wants Basic credentials on every request, as ECR does."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != basic(AUTH.username, AUTH.password):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="ecr"'})
        accepted = request.headers.get("Accept", "")
        # A multi-arch tag is an index: a registry only serves it to a client that accepts it.
        if request.path == "/v2/app/manifests/multiarch" and MANIFEST_MEDIA_TYPES[0] in accepted:
            return web.Response(status=200)
        return web.Response(status=404)

    return handle


def status_registry(status: int) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status)

    return handle


async def test_local_registry_answers_false_for_unknown_repository_and_tag(
    registry: str, registry_client: Registry
) -> None:
    """A repository that was never pushed is a plain 'no', not an error."""
    repository = f"reconciler-test/{uuid.uuid4().hex}"
    found = await registry_client.has_tag(
        registry=registry, repository=repository, tag="0" * 40, auth=None
    )
    assert found is False


async def test_bearer_challenge_is_answered_with_a_token(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    """A 401 Bearer challenge: fetch a token with the credentials, retry once with it."""
    host = await serve(token_registry())
    assert await registry_client.has_tag(registry=host, repository="app", tag="present", auth=AUTH)
    assert not await registry_client.has_tag(
        registry=host, repository="app", tag="absent", auth=AUTH
    )


async def test_bearer_token_for_anonymous_pulls(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    """Without credentials the token is requested anonymously, as docker does for public images."""
    host = await serve(token_registry(allow_anonymous=True))
    assert await registry_client.has_tag(registry=host, repository="app", tag="present", auth=None)


async def test_token_service_refusing_credentials_stalls_without_leaking_them(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    """Wrong credentials need a human; the password is not in the error."""
    host = await serve(token_registry())
    wrong = RegistryAuth(username="AWS", password=PASSWORD + "-stale", server=host)
    with pytest.raises(StalledError) as caught:
        await registry_client.has_tag(registry=host, repository="app", tag="present", auth=wrong)
    assert "refused credentials (HTTP 401)" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(caught.value)


async def test_token_is_not_sent_credentials_over_plain_http_elsewhere(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    """A challenge pointing at a plain-HTTP realm off this host gets no password."""

    async def handle(request: web.Request) -> web.StreamResponse:
        challenge = 'Bearer realm="http://tokens.example.invalid/token",service="x"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    host = await serve(handle)
    with pytest.raises(StalledError, match="plain-HTTP token service"):
        await registry_client.has_tag(registry=host, repository="app", tag="t", auth=AUTH)


async def test_basic_auth_on_every_request_like_ecr(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    """ECR takes Basic credentials directly; an index-only tag is found (Accept includes it)."""
    host = await serve(basic_registry())
    assert await registry_client.has_tag(
        registry=host, repository="app", tag="multiarch", auth=AUTH
    )
    assert not await registry_client.has_tag(
        registry=host, repository="app", tag="absent", auth=AUTH
    )


async def test_missing_credentials_for_a_basic_registry_stall(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    """No Bearer challenge to answer: a 401 means the credentials are missing or wrong."""
    host = await serve(basic_registry())
    with pytest.raises(StalledError, match=r"refused credentials \(HTTP 401\)"):
        await registry_client.has_tag(registry=host, repository="app", tag="multiarch", auth=None)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_and_throttling_are_transient(
    status: int, serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    host = await serve(status_registry(status))
    with pytest.raises(RegistryUnavailable, match=f"HTTP {status}"):
        await registry_client.has_tag(registry=host, repository="app", tag="t", auth=AUTH)


@pytest.mark.parametrize("status", [403, 400])
async def test_refusals_that_retrying_cannot_fix_stall(
    status: int, serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    host = await serve(status_registry(status))
    with pytest.raises(StalledError, match=f"HTTP {status}"):
        await registry_client.has_tag(registry=host, repository="app", tag="t", auth=AUTH)


async def test_closed_port_is_registry_unavailable(registry_client: Registry) -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnavailable, match=host):
        await registry_client.has_tag(registry=host, repository="app", tag="t", auth=AUTH)


async def test_registry_that_never_answers_is_unavailable(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    """A hung registry ends in RegistryUnavailable after the client's timeout, not a hang."""

    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200)

    host = await serve(hang)
    client = Registry(timeout=0.5)
    try:
        with pytest.raises(RegistryUnavailable):
            await client.has_tag(registry=host, repository="app", tag="t", auth=None)
    finally:
        release.set()
        await client.close()


# One instance per kind of exception the mapper claims; a kind added to TRANSPORT_ERRORS without
# a case here fails test_every_claimed_error_kind_has_a_case.
TRANSPORT_CASES: list[Exception] = [
    aiohttp.ClientConnectionError("connection lost"),
    aiohttp.ClientOSError(104, "Connection reset by peer"),
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError("payload is not completed"),
    aiohttp.InvalidURL("http://["),
    TimeoutError(),
    ConnectionRefusedError(111, "Connection refused"),
    OSError(101, "Network is unreachable"),
]


def test_every_claimed_error_kind_has_a_case() -> None:
    for kind in TRANSPORT_ERRORS:
        assert any(isinstance(case, kind) for case in TRANSPORT_CASES), kind


@pytest.mark.parametrize("error", TRANSPORT_CASES, ids=lambda e: type(e).__name__)
def test_transport_errors_become_registry_unavailable(error: Exception) -> None:
    with pytest.raises(RegistryUnavailable) as caught, registry_errors("r.example:5000"):
        raise error
    assert caught.value.__cause__ is error
    assert "r.example:5000" in str(caught.value)


def test_auth_repr_hides_the_password() -> None:
    assert PASSWORD not in repr(AUTH)
    assert PASSWORD not in str(AUTH)
    assert "AWS" in repr(AUTH)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.1.2.3", "http://127.1.2.3"),
        ("localhost:5000", "http://localhost:5000"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("123.dkr.ecr.us-east-1.amazonaws.com", "https://123.dkr.ecr.us-east-1.amazonaws.com"),
        ("10.0.0.5:5000", "https://10.0.0.5:5000"),
        ("localhost.example.com", "https://localhost.example.com"),
    ],
)
def test_plain_http_only_for_loopback_registries(host: str, url: str) -> None:
    """Docker pushes to loopback registries over HTTP without configuration, so we ask there."""
    assert registry_url(host) == url
    assert is_loopback(host) == url.startswith("http:")


def test_bearer_challenge_parsing() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert parse_bearer_challenge(header) == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull",
    }
    assert parse_bearer_challenge('Basic realm="ecr"') is None
