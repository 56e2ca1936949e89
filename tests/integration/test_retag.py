"""Registry retag: a second tag for a pushed image, by copying its manifest bytes.

Against the local CNCF registry with images pushed by the docker CLI for the real answers,
and against tiny aiohttp servers on loopback for the auth flows and failures the local
registry (no auth) cannot produce.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest
from aiohttp import web

from reconciler.adapters.registry import MANIFEST_MEDIA_TYPES, Registry, RegistryAuth
from reconciler.errors import RegistryUnavailable, StalledError
from tests.support.net import free_port

PASSWORD = "ecr-password-" + uuid.uuid4().hex
AUTH = RegistryAuth(username="AWS", password=PASSWORD, server="127.0.0.1")
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def registry_client() -> AsyncIterator[Registry]:
    client = Registry(timeout=5.0)
    yield client
    await client.close()


@pytest.fixture
def repository(registry: str, docker_engine: str) -> Iterator[str]:
    """A repository of the test's own in the local registry; its local images go afterwards."""
    name = f"reconciler-test/retag-{uuid.uuid4().hex[:12]}"
    yield name
    listed = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", f"{registry}/{name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    for image in listed.stdout.split():
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)


def push_tiny_image(registry: str, repository: str, tag: str) -> None:
    """Import a one-file image (no base image, no build) and push it as `repository:tag`."""
    content = f"{repository}:{tag} {uuid.uuid4()}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    image = f"{registry}/{repository}:{tag}"
    subprocess.run(
        ["docker", "import", "-", image], input=buffer.getvalue(), capture_output=True, check=True
    )
    subprocess.run(["docker", "push", image], capture_output=True, check=True)


async def head(registry: str, repository: str, tag: str) -> tuple[str, str]:
    """Digest and media type `repository:tag` resolves to now."""
    url = f"http://{registry}/v2/{repository}/manifests/{tag}"
    async with (
        aiohttp.ClientSession() as session,
        session.head(url, headers={"Accept": ACCEPT}) as response,
    ):
        assert response.status == 200, (url, response.status)
        return response.headers["Docker-Content-Digest"], response.headers["Content-Type"]


async def test_retagged_latest_resolves_to_the_same_digest(
    registry: str, repository: str, registry_client: Registry
) -> None:
    push_tiny_image(registry, repository, "one")
    pushed, media_type = await head(registry, repository, "one")
    assert media_type == DOCKER_V2

    digest = await registry_client.retag(
        registry=registry, repository=repository, tag="one", new_tag="latest", auth=None
    )
    assert digest == pushed
    assert await head(registry, repository, "latest") == (pushed, DOCKER_V2)
    assert await registry_client.has_tag(
        registry=registry, repository=repository, tag="latest", auth=None
    )


async def test_retagging_after_a_second_push_moves_latest(
    registry: str, repository: str, registry_client: Registry
) -> None:
    push_tiny_image(registry, repository, "one")
    first = await registry_client.retag(
        registry=registry, repository=repository, tag="one", new_tag="latest", auth=None
    )
    push_tiny_image(registry, repository, "two")
    second = await registry_client.retag(
        registry=registry, repository=repository, tag="two", new_tag="latest", auth=None
    )
    assert second != first
    assert (await head(registry, repository, "latest"))[0] == second
    assert (await head(registry, repository, "one"))[0] == first
    # Retagging onto the digest a tag already has is a no-op, not an error.
    again = await registry_client.retag(
        registry=registry, repository=repository, tag="two", new_tag="latest", auth=None
    )
    assert again == second


async def test_the_digest_a_tag_names_is_read_and_follows_a_push_over_it(
    registry: str, repository: str, registry_client: Registry
) -> None:
    """An approval binds the digest (SPEC 21): it is the registry's, and a tag pushed over
    names another; a tag not there has none."""
    push_tiny_image(registry, repository, "one")
    first = await registry_client.digest(
        registry=registry, repository=repository, tag="one", auth=None
    )
    assert first == (await head(registry, repository, "one"))[0]
    push_tiny_image(registry, repository, "one")
    second = await registry_client.digest(
        registry=registry, repository=repository, tag="one", auth=None
    )
    assert second is not None and second != first
    assert (
        await registry_client.digest(registry=registry, repository=repository, tag="no", auth=None)
        is None
    )


async def test_an_index_stays_an_index(
    registry: str, repository: str, registry_client: Registry
) -> None:
    """A multi-arch tag is an OCI index: it is copied as one, never resolved to a platform."""
    push_tiny_image(registry, repository, "amd64")
    child, _ = await head(registry, repository, "amd64")
    async with aiohttp.ClientSession() as session:
        url = f"http://{registry}/v2/{repository}/manifests/amd64"
        async with session.get(url, headers={"Accept": DOCKER_V2}) as response:
            size = len(await response.read())
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": DOCKER_V2,
                        "digest": child,
                        "size": size,
                        "platform": {"architecture": "amd64", "os": "linux"},
                    }
                ],
            },
            indent=3,  # unusual whitespace: a re-serialised copy would get another digest
        ).encode()
        url = f"http://{registry}/v2/{repository}/manifests/multi"
        async with session.put(url, data=index, headers={"Content-Type": OCI_INDEX}) as response:
            assert response.status == 201, await response.text()

    digest = await registry_client.retag(
        registry=registry, repository=repository, tag="multi", new_tag="latest", auth=None
    )
    assert digest == "sha256:" + hashlib.sha256(index).hexdigest()
    assert await head(registry, repository, "latest") == (digest, OCI_INDEX)


async def test_missing_source_tag_is_a_stalled_error_naming_it(
    registry: str, repository: str, registry_client: Registry
) -> None:
    push_tiny_image(registry, repository, "one")
    with pytest.raises(StalledError, match=rf"{repository}:nope\b") as caught:
        await registry_client.retag(
            registry=registry, repository=repository, tag="nope", new_tag="latest", auth=None
        )
    assert "latest" in str(caught.value)
    with pytest.raises(StalledError, match="no-such-repo:one"):
        await registry_client.retag(
            registry=registry, repository="no-such-repo", tag="one", new_tag="latest", auth=None
        )


async def test_closed_port_is_registry_unavailable(registry_client: Registry) -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnavailable, match=host) as caught:
        await registry_client.retag(
            registry=host, repository="app", tag="one", new_tag="latest", auth=AUTH
        )
    assert PASSWORD not in str(caught.value)


# --- auth flows and failures, against fakes ---------------------------------------------


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


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_V2, "layers": []}).encode()


class FakeRegistry:
    """Manifests in memory, served and stored as bytes with their media types."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[bytes, str]] = {"one": (MANIFEST, DOCKER_V2)}
        self.puts: list[tuple[str, str]] = []  # (tag, Authorization) of each accepted PUT

    async def manifests_route(self, request: web.Request, authorization: str) -> web.Response:
        tag = request.path.rpartition("/")[2]
        if request.method == "GET":
            if tag not in self.manifests:
                return web.Response(status=404)
            body, media_type = self.manifests[tag]
            return web.Response(body=body, headers={"Content-Type": media_type})
        self.manifests[tag] = (await request.read(), request.headers["Content-Type"])
        self.puts.append((tag, authorization))
        return web.Response(status=201)


def token_registry(fake: FakeRegistry) -> Handler:
    """Token auth as the CNCF registry and Docker Hub do it: a pull token cannot push."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/token":
            if request.headers.get("Authorization") != basic(AUTH.username, AUTH.password):
                return web.Response(status=401)
            return web.json_response({"token": "t:" + request.query["scope"]})
        needed = "pull" if request.method == "GET" else "pull,push"
        scope = f"repository:app:{needed}"
        given = request.headers.get("Authorization", "")
        if given != f"Bearer t:{scope}":
            challenge = f'Bearer realm="http://{request.host}/token",scope="{scope}"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return await fake.manifests_route(request, given)

    return handle


async def test_push_scope_token_is_fetched_for_the_put(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    fake = FakeRegistry()
    host = await serve(token_registry(fake))
    digest = await registry_client.retag(
        registry=host, repository="app", tag="one", new_tag="latest", auth=AUTH
    )
    assert digest == "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    assert fake.manifests["latest"] == (MANIFEST, DOCKER_V2)
    assert fake.puts == [("latest", "Bearer t:repository:app:pull,push")]


async def test_basic_auth_on_every_request_like_ecr(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    fake = FakeRegistry()

    async def handle(request: web.Request) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if given != basic(AUTH.username, AUTH.password):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="ecr"'})
        return await fake.manifests_route(request, given)

    host = await serve(handle)
    await registry_client.retag(
        registry=host, repository="app", tag="one", new_tag="latest", auth=AUTH
    )
    assert fake.manifests["latest"] == (MANIFEST, DOCKER_V2)
    with pytest.raises(StalledError, match="refused credentials") as caught:
        await registry_client.retag(
            registry=host,
            repository="app",
            tag="one",
            new_tag="latest",
            auth=RegistryAuth(username="AWS", password=PASSWORD + "-old", server=host),
        )
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_push_stalls_without_the_password(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry, status: int
) -> None:
    """Credentials that may pull but not push (an ECR policy without PutImage, say)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.Response(body=MANIFEST, headers={"Content-Type": DOCKER_V2})
        body = {"errors": [{"code": "DENIED", "message": f"denied for {PASSWORD}"}]}
        return web.json_response(body, status=status)

    host = await serve(handle)
    with pytest.raises(StalledError, match=f"HTTP {status}") as caught:
        await registry_client.retag(
            registry=host, repository="app", tag="one", new_tag="latest", auth=AUTH
        )
    assert PASSWORD not in str(caught.value)


async def test_rejected_put_names_the_registry_error_and_never_the_password(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.Response(body=MANIFEST, headers={"Content-Type": DOCKER_V2})
        error = {"code": "TAG_INVALID", "message": f"immutable tag (auth {PASSWORD})"}
        return web.json_response({"errors": [error]}, status=400)

    host = await serve(handle)
    with pytest.raises(StalledError, match="TAG_INVALID: immutable tag") as caught:
        await registry_client.retag(
            registry=host, repository="app", tag="one", new_tag="latest", auth=AUTH
        )
    assert not isinstance(caught.value, RegistryUnavailable)
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(("method", "status"), [("GET", 503), ("PUT", 500), ("PUT", 429)])
async def test_server_errors_and_throttling_are_transient(
    serve: Callable[[Handler], Awaitable[str]],
    registry_client: Registry,
    method: str,
    status: int,
) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == method:
            return web.Response(status=status)
        return web.Response(body=MANIFEST, headers={"Content-Type": DOCKER_V2})

    host = await serve(handle)
    with pytest.raises(RegistryUnavailable, match=f"HTTP {status}"):
        await registry_client.retag(
            registry=host, repository="app", tag="one", new_tag="latest", auth=None
        )


async def test_a_manifest_of_an_unknown_media_type_is_not_copied(
    serve: Callable[[Handler], Awaitable[str]], registry_client: Registry
) -> None:
    """A schema 1 manifest is signed for its tag: copying it under another tag breaks it."""
    puts: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "PUT":
            puts.append(request.path)
            return web.Response(status=201)
        schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
        return web.Response(body=b'{"schemaVersion": 1}', headers={"Content-Type": schema1})

    host = await serve(handle)
    with pytest.raises(StalledError, match="v1\\+prettyjws"):
        await registry_client.retag(
            registry=host, repository="app", tag="one", new_tag="latest", auth=None
        )
    assert puts == []
